//! Durable timers and external events: an approval that times out unless someone approves in time.
//! Run it with `cargo run --example timers_and_events`.

use std::sync::Arc;
use std::time::Duration;

use duroxide_core::Either;
use duroxide_runtime::{
    ActivityRegistry, Client, OrchestrationContext, OrchestrationRegistry, Runtime, RuntimeOptions,
};
use duroxide_sqlite::SqliteProvider;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let provider = Arc::new(SqliteProvider::in_memory()?);

    let mut orchestrations = OrchestrationRegistry::new();
    orchestrations.register(
        "Approval",
        |ctx: OrchestrationContext, timeout_ms: String| async move {
            let timeout = Duration::from_millis(timeout_ms.parse().map_err(|e| format!("bad timeout: {e}"))?);
            ctx.set_custom_status("waiting for approval");
            match ctx
                .select2(ctx.wait_for_event("approval"), ctx.schedule_timer(timeout))
                .await
            {
                Either::Left(decision) => Ok(format!("decided: {decision}")),
                Either::Right(()) => Ok("timed out".to_string()),
            }
        },
    )?;

    let runtime = Runtime::start(
        provider.clone(),
        ActivityRegistry::new(),
        orchestrations,
        RuntimeOptions::default(),
    )
    .await?;
    let client = Client::new(provider);

    // One request is approved while it waits...
    client
        .start_orchestration("approved", "Approval", "60000")
        .await?;
    client
        .wait_for_status_change("approved", 0, Duration::from_millis(20), Duration::from_secs(5))
        .await?;
    client.raise_event("approved", "approval", "yes").await?;
    // ...the other is left alone and its 200 ms durable timer fires.
    client.start_orchestration("ignored", "Approval", "200").await?;

    for id in ["approved", "ignored"] {
        let state = client.wait_for_orchestration(id, Duration::from_secs(10)).await?;
        println!("{id}: {}", state.output.unwrap_or_default());
    }
    runtime.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
