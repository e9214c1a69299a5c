//! The `pg-xproc` mode: the runtime in a child process, the client in this one, on one PostgreSQL
//! schema, so hello latency and chain3 throughput include the cross-process wake-ups (NOTIFY to the
//! runtime, the client's polling). Also measures the load an idle runtime puts on the database.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide_core::Provider;
use duroxide_postgres::PostgresProvider;
use duroxide_runtime::{Client, Runtime, RuntimeOptions};

/// Set in the child: the schema it serves.
const ROLE_ENV: &str = "DUROXIDE_BENCH_RUNTIME_SCHEMA";

/// In the child process: serve the schema until stdin closes; on an `idle` line, count this
/// provider's round trips for [`IDLE_WINDOW`] and print the rate. Returns false in the parent.
pub fn serve_if_child(rt: &tokio::runtime::Runtime, url: &str) -> bool {
    let Ok(schema) = std::env::var(ROLE_ENV) else {
        return false;
    };
    rt.block_on(async {
        let provider = Arc::new(
            PostgresProvider::connect_with_schema(url, &schema)
                .await
                .expect("the child connects"),
        );
        let (a, o) = crate::registries();
        let options = RuntimeOptions {
            orchestration_concurrency: 4,
            worker_concurrency: 8,
            ..Default::default()
        };
        let runtime = Runtime::start(provider.clone(), a, o, options).await.unwrap();
        println!("ready");
        std::io::stdout().flush().unwrap();
        let (lines, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(command) = commands.recv().await {
            if command.trim() == "idle" {
                let before = provider.stats().round_trips;
                tokio::time::sleep(IDLE_WINDOW).await;
                let queries = provider.stats().round_trips - before;
                println!("{}", queries as f64 / IDLE_WINDOW.as_secs_f64());
                std::io::stdout().flush().unwrap();
            }
        }
        runtime.shutdown(Duration::from_secs(10)).await;
    });
    true
}

/// How long the idle load is counted.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// The runtime process and its output, once it says it is ready.
fn spawn_runtime(schema: &str) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the runtime process starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready", "the runtime process did not start");
    (child, stdout)
}

pub async fn run(url: &str, schema: &str, n: usize) -> serde_json::Value {
    // Migrations run here, before the child connects.
    let provider: Arc<dyn Provider> =
        Arc::new(PostgresProvider::connect_with_schema(url, schema).await.unwrap());
    let client = Client::new(provider.clone());
    let (mut child, mut stdout) = spawn_runtime(schema);

    let lat = crate::hello_latencies_ms(&client).await;

    let t = Instant::now();
    let ids: Vec<String> = (0..n).map(|i| format!("c-{i}")).collect();
    for id in &ids {
        client.start_orchestration(id, "Chain3", "1").await.unwrap();
    }
    crate::wait_all(&client, &ids).await;
    let chain3 = n as f64 / t.elapsed().as_secs_f64();
    drop(client);
    drop(provider);

    // Idle load: the round trips the runtime's provider makes while nothing happens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stdin = child.stdin.as_mut().unwrap();
    writeln!(stdin, "idle").unwrap();
    stdin.flush().unwrap();
    let mut rate = String::new();
    stdout.read_line(&mut rate).unwrap();
    let idle_qps: f64 = rate.trim().parse().unwrap_or(f64::NAN);

    drop(child.stdin.take());
    let _ = child.wait();
    serde_json::json!({
        "backend": "pg-xproc",
        "n": n,
        "hello_latency_ms_p50": (lat[lat.len() / 2] * 100.0).round() / 100.0,
        "hello_latency_ms_p95": (lat[lat.len() * 95 / 100 - 1] * 100.0).round() / 100.0,
        "chain3_orch_per_s": chain3.round(),
        "idle_runtime_queries_per_s": (idle_qps * 100.0).round() / 100.0,
    })
}
