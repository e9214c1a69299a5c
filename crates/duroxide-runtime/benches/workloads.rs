//! Rust-level runtime workloads (as in shared/bench/py_workloads.py), printed as one JSON line per
//! backend: hello latency, chain3 throughput, fan-out throughput, timer throughput, and the resident
//! memory of 10,000 orchestrations waiting on an event.
//!
//! Run: `cargo bench -p duroxide-runtime --bench workloads [-- mem|file|pg|pg-xproc [N]]`. `pg` reads
//! `DUROXIDE_PG_URL` (default: the local server) and uses a fresh schema, dropped afterwards;
//! `pg-xproc` runs the runtime in a child process and the client here (see `workloads/xproc.rs`).

#[path = "workloads/xproc.rs"]
mod xproc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide_core::Provider;
use duroxide_runtime::{
    ActivityContext, ActivityRegistry, Client, OrchestrationContext, OrchestrationRegistry, Runtime,
    RuntimeOptions,
};
use duroxide_sqlite::SqliteProvider;

pub(crate) fn registries() -> (ActivityRegistry, OrchestrationRegistry) {
    let mut a = ActivityRegistry::new();
    a.register("Echo", |_ctx: ActivityContext, x: String| async move { Ok(x) })
        .unwrap();
    let mut o = OrchestrationRegistry::new();
    o.register("Hello", |ctx: OrchestrationContext, x: String| async move {
        ctx.schedule_activity("Echo", x).await
    })
    .unwrap();
    o.register("Chain3", |ctx: OrchestrationContext, x: String| async move {
        let a = ctx.schedule_activity("Echo", x).await?;
        let b = ctx.schedule_activity("Echo", a).await?;
        ctx.schedule_activity("Echo", b).await
    })
    .unwrap();
    o.register("FanOut", |ctx: OrchestrationContext, n: String| async move {
        let n: usize = n.parse().map_err(|e| format!("{e}"))?;
        let tasks = (0..n)
            .map(|i| ctx.schedule_activity("Echo", i.to_string()))
            .collect();
        let results = ctx.join(tasks).await;
        Ok(results.len().to_string())
    })
    .unwrap();
    o.register("Sleep", |ctx: OrchestrationContext, ms: String| async move {
        ctx.schedule_timer(Duration::from_millis(ms.parse().unwrap_or(50)))
            .await;
        Ok("ok".into())
    })
    .unwrap();
    o.register("Wait", |ctx: OrchestrationContext, _x: String| async move {
        Ok(ctx.wait_for_event("go").await)
    })
    .unwrap();
    (a, o)
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) async fn wait_all(client: &Client, ids: &[String]) {
    for id in ids {
        let s = client
            .wait_for_orchestration(id, Duration::from_secs(600))
            .await
            .expect("completes");
        assert_eq!(s.status.as_str(), "Completed", "{id}: {:?}", s.error);
    }
}

/// 100 hello orchestrations one after the other (after a warm-up): start-to-completed latency in ms,
/// sorted.
pub(crate) async fn hello_latencies_ms(client: &Client) -> Vec<f64> {
    client.start_orchestration("warm", "Hello", "w").await.unwrap();
    wait_all(client, &["warm".into()]).await;
    let mut lat = Vec::new();
    for i in 0..100 {
        let id = format!("lat-{i}");
        let t = Instant::now();
        client.start_orchestration(&id, "Hello", "x").await.unwrap();
        client
            .wait_for_orchestration(&id, Duration::from_secs(30))
            .await
            .unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    lat
}

async fn run(backend: &str, n: usize) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let pg_url = std::env::var("DUROXIDE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let pg_schema = format!("bench_{}", std::process::id());
    let provider: Arc<dyn Provider> = match backend {
        "file" => Arc::new(SqliteProvider::open(dir.path().join("bench.db")).unwrap()),
        "pg" => Arc::new(
            duroxide_postgres::PostgresProvider::connect_with_schema(&pg_url, &pg_schema)
                .await
                .unwrap(),
        ),
        _ => Arc::new(SqliteProvider::in_memory().unwrap()),
    };
    let (a, o) = registries();
    let options = RuntimeOptions {
        orchestration_concurrency: 4,
        worker_concurrency: 8,
        ..Default::default()
    };
    let runtime = Runtime::start(provider.clone(), a, o, options).await.unwrap();
    let client = Client::new(provider.clone());

    let lat = hello_latencies_ms(&client).await;

    let t = Instant::now();
    let ids: Vec<String> = (0..n).map(|i| format!("c-{i}")).collect();
    for id in &ids {
        client.start_orchestration(id, "Chain3", "1").await.unwrap();
    }
    wait_all(&client, &ids).await;
    let chain3 = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    client
        .start_orchestration("fan", "FanOut", &n.to_string())
        .await
        .unwrap();
    wait_all(&client, &["fan".into()]).await;
    let fanout = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let ids: Vec<String> = (0..n).map(|i| format!("s-{i}")).collect();
    for id in &ids {
        client.start_orchestration(id, "Sleep", "50").await.unwrap();
    }
    wait_all(&client, &ids).await;
    let timers = n as f64 / t.elapsed().as_secs_f64();

    // 10,000 orchestrations parked on an event: memory of the whole process.
    let rss_before = rss_mb();
    let waiting = 10_000;
    for i in 0..waiting {
        client
            .start_orchestration(&format!("w-{i}"), "Wait", "")
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let depths = client.get_queue_depths().await.unwrap();
        if depths.orchestrator_queue == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_waiting = rss_mb();
    runtime.shutdown(Duration::from_secs(10)).await;
    if backend == "pg" {
        drop_schema(&pg_url, &pg_schema);
    }

    serde_json::json!({
        "backend": backend,
        "n": n,
        "hello_latency_ms_p50": (lat[lat.len() / 2] * 100.0).round() / 100.0,
        "hello_latency_ms_p95": (lat[lat.len() * 95 / 100 - 1] * 100.0).round() / 100.0,
        "chain3_orch_per_s": chain3.round(),
        "fanout_activities_per_s": fanout.round(),
        "timer_orch_per_s": timers.round(),
        "waiting_10k_rss_mb": (rss_waiting * 10.0).round() / 10.0,
        "rss_before_waiting_mb": (rss_before * 10.0).round() / 10.0,
    })
}

/// Removes the benchmark's PostgreSQL schema (best effort, through psql).
fn drop_schema(url: &str, schema: &str) {
    let _ = std::process::Command::new("psql")
        .env("PGOPTIONS", "--client-min-messages=warning")
        .args([
            url,
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
        ])
        .status();
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let backends: Vec<String> = match args.first() {
        Some(b) => vec![b.clone()],
        None => vec!["mem".into(), "file".into()],
    };
    let n = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg_url = std::env::var("DUROXIDE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    if xproc::serve_if_child(&rt, &pg_url) {
        return;
    }
    for backend in backends {
        let out = if backend == "pg-xproc" {
            let schema = format!("bench_x{}", std::process::id());
            let out = rt.block_on(xproc::run(&pg_url, &schema, n));
            drop_schema(&pg_url, &schema);
            out
        } else {
            rt.block_on(run(&backend, n))
        };
        println!("{out}");
    }
}
