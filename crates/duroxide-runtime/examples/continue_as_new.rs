//! Continue-as-new: an eternal monitor that restarts itself with fresh history after each check,
//! carrying its state in the input, until it has checked five times.
//! Run it with `cargo run --example continue_as_new`.

use std::sync::Arc;
use std::time::Duration;

use duroxide_runtime::{
    ActivityContext, ActivityRegistry, Client, OrchestrationContext, OrchestrationRegistry, Runtime,
    RuntimeOptions,
};
use duroxide_sqlite::SqliteProvider;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let provider = Arc::new(SqliteProvider::in_memory()?);

    let mut activities = ActivityRegistry::new();
    activities.register(
        "CheckHealth",
        |_ctx: ActivityContext, target: String| async move { Ok(format!("{target} is healthy")) },
    )?;

    let mut orchestrations = OrchestrationRegistry::new();
    orchestrations.register(
        "Monitor",
        |ctx: OrchestrationContext, checks: String| async move {
            let checks: u32 = checks.parse().map_err(|e| format!("bad state: {e}"))?;
            let health = ctx.schedule_activity("CheckHealth", "db-1").await?;
            ctx.trace_info(format!("check #{checks}: {health}"));
            if checks + 1 == 5 {
                return Ok(format!("done after {} checks", checks + 1));
            }
            ctx.schedule_timer(Duration::from_millis(50)).await;
            ctx.continue_as_new((checks + 1).to_string()).await
        },
    )?;

    let runtime = Runtime::start(
        provider.clone(),
        activities,
        orchestrations,
        RuntimeOptions::default(),
    )
    .await?;
    let client = Client::new(provider);
    client.start_orchestration("monitor", "Monitor", "0").await?;
    let state = client
        .wait_for_orchestration("monitor", Duration::from_secs(30))
        .await?;
    let executions = client.list_executions("monitor").await?;
    println!(
        "{} ({} executions, each with its own short history)",
        state.output.unwrap_or_default(),
        executions.len()
    );
    runtime.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
