//! The smallest complete duroxide program: one orchestration calling one activity, on embedded
//! in-memory SQLite. Run it with `cargo run --example hello_world`.

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
    activities.register("SayHello", |ctx: ActivityContext, name: String| async move {
        ctx.trace_info(&format!("greeting {name}"));
        Ok(format!("Hello, {name}!"))
    })?;

    let mut orchestrations = OrchestrationRegistry::new();
    orchestrations.register(
        "HelloWorkflow",
        |ctx: OrchestrationContext, name: String| async move {
            let greeting = ctx.schedule_activity("SayHello", name).await?;
            ctx.trace_info(format!("got {greeting}"));
            Ok(greeting)
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
        .start_orchestration("hello-1", "HelloWorkflow", "World")
        .await?;
    let state = client
        .wait_for_orchestration("hello-1", Duration::from_secs(10))
        .await?;
    println!("{}: {}", state.status.as_str(), state.output.unwrap_or_default());
    runtime.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
