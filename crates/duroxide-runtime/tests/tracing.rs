//! Tracing from orchestrations and activities: every level works, and replay does not repeat
//! orchestration trace lines. In its own test binary because it installs the global subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{recorded, Env, Registries};

/// Collects formatted log output in memory.
#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_lines_appear_once_even_across_a_replay() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber of this binary");

    let mut reg = Registries::new();
    reg.activity("FetchData", |ctx, id| async move {
        ctx.trace_info(&format!("fetching data for {id}"));
        ctx.trace_debug("activity debug line");
        ctx.trace_warn("activity warn line");
        ctx.trace_error("activity error line");
        Ok(format!("data-{id}"))
    })
    .orchestration("Traced", |ctx, input| async move {
        ctx.trace_info("[v1.0.0] starting workflow");
        ctx.trace_debug(format!("input: {input}"));
        let result = ctx.schedule_activity("FetchData", input).await?;
        ctx.trace_warn("orchestration warn line");
        let _ = ctx.wait_for_event("resume").await;
        ctx.trace_error("orchestration error line");
        ctx.trace_info(format!("[v1.0.0] completed: {result}"));
        Ok(result)
    });

    let provider = common::memory();
    let first = Env::start(provider.clone(), &reg, common::options()).await;
    first
        .client
        .start_orchestration("traced-1", "Traced", "42")
        .await
        .unwrap();
    recorded(&first.client, "traced-1", "ExternalSubscribed").await;
    first.shutdown().await;

    // A new runtime has no cached state: it replays the first part, which must stay silent.
    let second = Env::start(provider, &reg, common::options()).await;
    second.client.raise_event("traced-1", "resume", "").await.unwrap();
    assert_eq!(second.completed("traced-1").await, "data-42");
    second.shutdown().await;

    let text = capture.text();
    for line in [
        "[v1.0.0] starting workflow",
        "input: 42",
        "orchestration warn line",
        "orchestration error line",
        "[v1.0.0] completed: data-42",
        "fetching data for 42",
        "activity debug line",
        "activity warn line",
        "activity error line",
    ] {
        assert_eq!(capture.count(line), 1, "{line:?} in:\n{text}");
    }
    // Orchestration lines carry the instance; activity lines the activity's name.
    let start_line = text.lines().find(|l| l.contains("starting workflow")).unwrap();
    assert!(
        start_line.contains("traced-1") && start_line.contains("INFO"),
        "{start_line}"
    );
    let fetch_line = text.lines().find(|l| l.contains("fetching data")).unwrap();
    assert!(fetch_line.contains("FetchData"), "{fetch_line}");
}
