//! Provider cycle benchmark: turn and worker cycles per second on PostgreSQL, next to the raw
//! single-row insert transaction rate of the same server, printed as one JSON line.
//!
//! Run with `cargo bench -p duroxide-postgres --bench provider_cycle` against `DUROXIDE_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`). It works in a fresh schema, dropped at the
//! end. Figures:
//! * `raw_tx_per_s`, `concurrent_raw_tx_per_s`: autocommit `INSERT` of one row (a prepared statement)
//!   from one connection, and from `TASKS` connections at once.
//! * `turn_cycles_per_s`: one task fetching an instance with one message and acking it with 2 history
//!   records and 1 worker item, over pre-created instances; `worker_cycles_per_s`: one task fetching a
//!   work item and acking it with a completion.
//! * `concurrent_turn_cycles_per_s`, `concurrent_worker_cycles_per_s`: the same from `TASKS` tasks at
//!   once (a runtime's shape).
//! * `round_trips_per_turn`, `round_trips_per_worker_cycle`: measured by the provider's counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use duroxide_conformance::cycles::{create_instances, timed, turn_cycles, worker_cycles};
use duroxide_postgres::PostgresProvider;
use tokio_postgres::NoTls;

/// Instances (and so cycles) per measured run.
const INSTANCES: usize = 5_000;
/// Concurrent tasks (and raw connections) in the concurrent measurements.
const TASKS: usize = 8;
const RAW_DURATION: Duration = Duration::from_secs(3);

fn url() -> String {
    std::env::var("DUROXIDE_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let schema = format!("dxbench_{}", std::process::id());
        let concurrent_schema = format!("{schema}_concurrent");
        let result = measure(&schema, &concurrent_schema).await;
        drop_schema(&schema).await?;
        drop_schema(&concurrent_schema).await?;
        println!("{}", result?);
        Ok(())
    })
}

async fn admin() -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(&url(), NoTls).await.with_context(|| {
        "the benchmark needs PostgreSQL: set DUROXIDE_PG_URL or start a server on 127.0.0.1:5432"
    })?;
    tokio::spawn(connection);
    Ok(client)
}

async fn drop_schema(schema: &str) -> Result<()> {
    admin()
        .await?
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}

async fn measure(schema: &str, concurrent_schema: &str) -> Result<serde_json::Value> {
    let raw = raw_tx_per_s(schema, 1).await?;
    let concurrent_raw = raw_tx_per_s(schema, TASKS).await?;

    let provider = Arc::new(PostgresProvider::connect_with_schema(&url(), schema).await?);
    create_instances(provider.as_ref(), "seq", INSTANCES).await?;
    let trips_before = provider.stats().round_trips;
    let (turns, turn_rate) = timed(turn_cycles(provider.clone(), 1)).await?;
    let trips_turns = provider.stats().round_trips - trips_before;
    let (workers, worker_rate) = timed(worker_cycles(provider.clone(), 1)).await?;
    let trips_workers = provider.stats().round_trips - trips_before - trips_turns;
    anyhow::ensure!(
        turns == INSTANCES && workers == INSTANCES,
        "expected {INSTANCES} cycles each"
    );

    // A schema of its own: the single-task run left completions queued for its instances.
    let provider = Arc::new(PostgresProvider::connect_with_schema(&url(), concurrent_schema).await?);
    create_instances(provider.as_ref(), "par", INSTANCES).await?;
    let (concurrent_turns, concurrent_turn_rate) = timed(turn_cycles(provider.clone(), TASKS)).await?;
    let (concurrent_workers, concurrent_worker_rate) = timed(worker_cycles(provider.clone(), TASKS)).await?;
    anyhow::ensure!(
        concurrent_turns == INSTANCES && concurrent_workers == INSTANCES,
        "expected {INSTANCES} concurrent cycles each"
    );

    Ok(serde_json::json!({
        "provider": "postgres",
        "raw_tx_per_s": raw.round(),
        "concurrent_raw_tx_per_s": concurrent_raw.round(),
        "turn_cycles_per_s": turn_rate.round(),
        "worker_cycles_per_s": worker_rate.round(),
        "concurrent_turn_cycles_per_s": concurrent_turn_rate.round(),
        "concurrent_worker_cycles_per_s": concurrent_worker_rate.round(),
        "concurrent_tasks": TASKS,
        "turn_to_raw": ratio(turn_rate, raw),
        "concurrent_turn_to_concurrent_raw": ratio(concurrent_turn_rate, concurrent_raw),
        "round_trips_per_turn": ratio(trips_turns as f64, turns as f64),
        "round_trips_per_worker_cycle": ratio(trips_workers as f64, workers as f64),
        "cycles": INSTANCES,
    }))
}

fn ratio(a: f64, b: f64) -> f64 {
    (a / b * 1000.0).round() / 1000.0
}

/// Autocommit single-row inserts per second from `connections` connections at once.
async fn raw_tx_per_s(schema: &str, connections: usize) -> Result<f64> {
    let setup = admin().await?;
    setup
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS \"{schema}\".raw_insert (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text NOT NULL)"
        ))
        .await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let sql = format!("INSERT INTO \"{schema}\".raw_insert (payload) VALUES ($1)");
            tokio::spawn(async move {
                let client = admin().await?;
                let insert = client.prepare(&sql).await?;
                let payload = r#"{"kind":"ActivityCompleted","result":"\"ok\""}"#;
                let mut count: u64 = 0;
                while started.elapsed() < RAW_DURATION {
                    client.execute(&insert, &[&payload]).await?;
                    count += 1;
                }
                anyhow::Ok(count)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.context("raw insert task panicked")??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
