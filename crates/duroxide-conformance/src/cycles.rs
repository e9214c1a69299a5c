//! The provider cycle workload that the providers' `provider_cycle` benches time, through the
//! `Provider` trait alone: instances created with one start message, turns that each ack a first
//! turn (2 history records, 1 work item), and work items that each complete with one result.
//!
//! It lives here so that every provider's bench measures the same cycle; the raw transaction rates
//! each bench compares it with are its own database's.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide_core::provider::{
    ActivityRef, HistoryRecord, InstanceCreation, NewMessage, NewWorkItem, Provider, ProviderError,
    TagFilter, TurnAck, WorkerFetch,
};

/// The lease of every fetch: longer than any run, so nothing comes back while one lasts.
const LEASE: Duration = Duration::from_secs(300);

/// Why a cycle run failed: a provider call, or the provider handing back something the workload
/// never stored.
#[derive(Debug)]
pub struct CycleError(String);

impl fmt::Display for CycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CycleError {}

impl From<ProviderError> for CycleError {
    fn from(err: ProviderError) -> Self {
        CycleError(err.to_string())
    }
}

/// Creates `count` instances named `{prefix}-00000` onwards, each with its start message.
pub async fn create_instances(provider: &dyn Provider, prefix: &str, count: usize) -> Result<(), CycleError> {
    for i in 0..count {
        let instance_id = format!("{prefix}-{i:05}");
        let start = NewMessage {
            payload: format!(
                r#"{{"kind":"StartOrchestration","instance":"{instance_id}","input":"\"hello\""}}"#
            ),
            instance_id,
            visible_at_ms: None,
            creates: Some(InstanceCreation {
                name: "BenchFlow".into(),
                version: None,
                parent_instance_id: None,
            }),
        };
        if !provider.create_instance(start).await? {
            return Err(CycleError(format!("instance {prefix}-{i:05} was created twice")));
        }
    }
    Ok(())
}

/// The ack of a first turn: started + activity scheduled, and the activity's work item.
pub fn first_turn_ack(instance_id: &str) -> TurnAck {
    TurnAck {
        execution_id: 1,
        history: vec![
            HistoryRecord {
                event_id: 1,
                kind: "OrchestrationStarted".into(),
                payload: r#"{"name":"BenchFlow","version":"1.0.0","input":"\"hello\""}"#.into(),
            },
            HistoryRecord {
                event_id: 2,
                kind: "ActivityScheduled".into(),
                payload: r#"{"name":"Greet","input":"\"hello\""}"#.into(),
            },
        ],
        name: Some("BenchFlow".into()),
        version: Some("1.0.0".into()),
        worker_items: vec![NewWorkItem {
            activity: ActivityRef {
                instance_id: instance_id.to_owned(),
                execution_id: 1,
                event_id: 2,
            },
            payload: r#"{"name":"Greet","input":"\"hello\""}"#.into(),
            session_id: None,
            tag: None,
        }],
        ..TurnAck::default()
    }
}

/// `tasks` tasks fetching and acking first turns until no instance is left; the turns done.
pub async fn turn_cycles(provider: Arc<dyn Provider>, tasks: usize) -> Result<usize, CycleError> {
    run_tasks(tasks, move || {
        let provider = provider.clone();
        async move {
            let mut cycles = 0;
            while let Some(item) = provider.fetch_orchestration_item(LEASE, Duration::ZERO).await? {
                if item.messages.len() != 1 {
                    return Err(CycleError(format!(
                        "instance {} came with {} messages, not its one start",
                        item.instance_id,
                        item.messages.len()
                    )));
                }
                let ack = first_turn_ack(&item.instance_id);
                provider.ack_orchestration_item(&item.lock_token, ack).await?;
                cycles += 1;
            }
            Ok(cycles)
        }
    })
    .await
}

/// `tasks` tasks fetching work items and acking each with its result until none is left; the items
/// done.
pub async fn worker_cycles(provider: Arc<dyn Provider>, tasks: usize) -> Result<usize, CycleError> {
    run_tasks(tasks, move || {
        let provider = provider.clone();
        async move {
            let request = WorkerFetch {
                lock_timeout: LEASE,
                tag_filter: TagFilter::Any,
                session: None,
            };
            let mut cycles = 0;
            while let Some(lease) = provider.fetch_work_item(&request, Duration::ZERO).await? {
                let completion = NewMessage {
                    instance_id: lease.activity.instance_id.clone(),
                    payload: r#"{"kind":"ActivityCompleted","id":2,"result":"\"Hello, hello!\""}"#.into(),
                    visible_at_ms: None,
                    creates: None,
                };
                provider
                    .ack_work_item(&lease.lock_token, Some(completion))
                    .await?;
                cycles += 1;
            }
            Ok(cycles)
        }
    })
    .await
}

/// Runs `run` and returns its count with the count per second it took.
pub async fn timed<E>(run: impl Future<Output = Result<usize, E>>) -> Result<(usize, f64), E> {
    let started = Instant::now();
    let cycles = run.await?;
    Ok((cycles, cycles as f64 / started.elapsed().as_secs_f64()))
}

/// Spawns `tasks` tasks made by `task` and sums their counts.
async fn run_tasks<F, T>(tasks: usize, task: F) -> Result<usize, CycleError>
where
    F: Fn() -> T,
    T: Future<Output = Result<usize, CycleError>> + Send + 'static,
{
    let handles: Vec<_> = (0..tasks).map(|_| tokio::spawn(task())).collect();
    let mut total = 0;
    for handle in handles {
        total += handle
            .await
            .map_err(|err| CycleError(format!("a cycle task panicked: {err}")))??;
    }
    Ok(total)
}
