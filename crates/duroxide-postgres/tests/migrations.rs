//! Schema migrations under concurrency: ten processes (and ten tasks) connecting at once to an empty
//! schema all succeed and the migrations run exactly once; reconnecting changes nothing; schemas are
//! isolated from each other and their names are case-sensitive.

use std::process::Command;
use std::time::Duration;

use duroxide_core::provider::{InstanceCreation, NewMessage, Provider};
use duroxide_postgres::{PostgresProvider, SCHEMA_VERSION};

mod common;

/// Set for the child processes of `ten_processes_starting_at_once_all_succeed`.
const CHILD_SCHEMA: &str = "DUROXIDE_PG_CHILD_SCHEMA";

async fn recorded_versions(schema: &str) -> Vec<i32> {
    common::plain_client()
        .await
        .query(
            &format!("SELECT version FROM \"{schema}\"._duroxide_migrations ORDER BY version"),
            &[],
        )
        .await
        .expect("read the versions")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn start(instance: &str) -> NewMessage {
    NewMessage {
        instance_id: instance.into(),
        payload: "{\"type\":\"StartOrchestration\"}".into(),
        visible_at_ms: None,
        creates: Some(InstanceCreation {
            name: "Orchestration".into(),
            version: None,
            parent_instance_id: None,
        }),
    }
}

/// In a normal run this does nothing. Started as a child process with [`CHILD_SCHEMA`] set, it
/// connects to that schema (migrating it if needed) and fails the process if that fails.
#[tokio::test]
async fn connect_as_a_child_process() {
    let Ok(schema) = std::env::var(CHILD_SCHEMA) else {
        return;
    };
    let provider = common::connect(&schema).await;
    provider.get_system_metrics().await.expect("the schema works");
}

#[test]
fn ten_processes_starting_at_once_all_succeed() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let exe = std::env::current_exe().expect("the test binary");
    let children: Vec<_> = (0..10)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "connect_as_a_child_process",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(CHILD_SCHEMA, &schema)
                .output_async()
        })
        .collect();
    for (n, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().expect("child process");
        assert!(
            output.status.success(),
            "process {n} failed to connect:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let versions = runtime.block_on(recorded_versions(&schema));
    assert_eq!(
        versions,
        (1..=SCHEMA_VERSION as i32).collect::<Vec<_>>(),
        "each migration ran once"
    );
}

/// `Command::spawn` with captured output, so ten children start before any is waited for.
trait SpawnCaptured {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnCaptured for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start a child process")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tasks_connecting_at_once_all_succeed_and_share_the_schema() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move { PostgresProvider::connect_with_schema(&common::url(), &schema).await })
        })
        .collect();
    let mut providers = Vec::new();
    for task in tasks {
        match task.await.expect("join") {
            Ok(provider) => providers.push(provider),
            Err(err) => common::no_server(&err),
        }
    }
    assert_eq!(
        recorded_versions(&schema).await,
        (1..=SCHEMA_VERSION as i32).collect::<Vec<_>>()
    );
    // They all see one store: what one creates, another fetches.
    assert!(providers[0]
        .create_instance(start("shared"))
        .await
        .expect("create"));
    let item = providers[9]
        .fetch_orchestration_item(Duration::from_secs(30), Duration::from_secs(5))
        .await
        .expect("fetch")
        .expect("the instance created through another object");
    assert_eq!(item.instance_id, "shared");
}

#[tokio::test]
async fn reconnecting_to_a_current_schema_changes_nothing() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let first = common::connect(&schema).await;
    assert!(first.create_instance(start("kept")).await.expect("create"));
    let again = common::connect(&schema).await;
    assert_eq!(
        recorded_versions(&schema).await,
        (1..=SCHEMA_VERSION as i32).collect::<Vec<_>>()
    );
    assert_eq!(
        again.list_instances(None).await.expect("list"),
        vec!["kept".to_owned()]
    );
}

#[tokio::test]
async fn schemas_are_isolated_and_case_sensitive() {
    let schemas = common::Schemas::default();
    let lower = schemas.fresh();
    // The same name in capitals is another schema, because names are always quoted.
    let upper = lower.to_uppercase();
    schemas.adopt(upper.clone());
    let a = common::connect(&lower).await;
    let b = common::connect(&upper).await;
    assert_eq!((a.schema(), b.schema()), (lower.as_str(), upper.as_str()));
    assert!(a.create_instance(start("only-in-a")).await.expect("create"));
    assert!(b.list_instances(None).await.expect("list").is_empty());
    assert!(b
        .fetch_orchestration_item(Duration::from_secs(30), Duration::from_millis(300))
        .await
        .expect("fetch")
        .is_none());
}
