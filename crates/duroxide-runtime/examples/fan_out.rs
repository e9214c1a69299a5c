//! Fan-out/fan-in: one orchestration runs an activity per item in parallel and sums the results.
//! Run it with `cargo run --example fan_out`.

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
    activities.register("Square", |_ctx: ActivityContext, n: String| async move {
        let n: u64 = n.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok((n * n).to_string())
    })?;

    let mut orchestrations = OrchestrationRegistry::new();
    orchestrations.register(
        "SumOfSquares",
        |ctx: OrchestrationContext, count: String| async move {
            let count: u64 = count.parse().map_err(|e| format!("not a count: {e}"))?;
            let tasks = (1..=count)
                .map(|n| ctx.schedule_activity("Square", n.to_string()))
                .collect();
            let mut sum = 0u64;
            for result in ctx.join(tasks).await {
                sum += result?.parse::<u64>().map_err(|e| e.to_string())?;
            }
            Ok(sum.to_string())
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
    client
        .start_orchestration("squares", "SumOfSquares", "100")
        .await?;
    let state = client
        .wait_for_orchestration("squares", Duration::from_secs(30))
        .await?;
    println!("sum of squares 1..=100 = {}", state.output.unwrap_or_default());
    runtime.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
