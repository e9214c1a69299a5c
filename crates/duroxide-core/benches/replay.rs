//! Replay benchmarks: a long chain of sequential activities and joins of growing width, replayed by a
//! fresh engine (what a runtime does on an instance-cache miss).
//!
//! Targets: 5,000 sequential activities (10,001 events) in ≤ 20 ms; a join of 10,000 activities in
//! ≤ 50 ms, with cost linear in the width (compare the per-element times of the `join` group).
//!
//! Run: `cargo bench -p duroxide-core --features testing --bench replay`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use duroxide_core::testing::{canned, replay};
use duroxide_core::{Event, OrchestrationContext, OrchestrationHandler, TurnStatus};

/// Matches `canned::sequential(n)`: `n` steps, each fed the previous result.
///
/// The canned history ends with the last completion and no terminal event, so the code parks there
/// instead of returning (returning would be "finished where history went on").
fn chain(n: usize) -> impl OrchestrationHandler + Clone {
    move |ctx: OrchestrationContext, _input: String| async move {
        for i in 0..n {
            ctx.schedule_activity("Step", i.to_string()).await?;
        }
        std::future::pending().await
    }
}

/// Matches `canned::join_completed_in_reverse(n)`: a join of `n` activities `Work(i)`; parks after it
/// for the same reason as [`chain`], once the results are known to be in input order.
fn fan_out(n: usize) -> impl OrchestrationHandler + Clone {
    move |ctx: OrchestrationContext, _input: String| async move {
        let tasks = (0..n)
            .map(|i| ctx.schedule_activity("Work", i.to_string()))
            .collect();
        let results = ctx.join(tasks).await;
        for (i, result) in results.into_iter().enumerate() {
            if result? != i.to_string() {
                return Err(format!("result {i} out of order"));
            }
        }
        std::future::pending().await
    }
}

/// Replays once outside the measurement and insists the history matched the code, so the benchmark
/// never times a replay that stopped early at a nondeterminism error.
fn check(handler: impl OrchestrationHandler, history: &[Event]) {
    let out = replay(handler, history);
    assert_eq!(out.status, TurnStatus::Running, "replay must match the history");
    assert!(out.actions.is_empty() && out.new_events.is_empty());
}

fn sequential(c: &mut Criterion) {
    let n = 5_000;
    let history = canned::sequential(n);
    assert_eq!(history.len(), 2 * n + 1);
    check(chain(n), &history);
    let mut group = c.benchmark_group("sequential");
    group.throughput(Throughput::Elements(history.len() as u64));
    group.bench_function(BenchmarkId::new("activities", n), |b| {
        b.iter(|| replay(chain(n), black_box(&history)))
    });
    group.finish();
}

fn join(c: &mut Criterion) {
    let mut group = c.benchmark_group("join");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    for n in [1_000, 10_000, 100_000] {
        let history = canned::join_completed_in_reverse(n);
        check(fan_out(n), &history);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("activities", n), &history, |b, history| {
            b.iter(|| replay(fan_out(n), black_box(history)))
        });
    }
    group.finish();
}

criterion_group!(benches, sequential, join);
criterion_main!(benches);
