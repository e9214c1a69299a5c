//! A join of 10,000 activities completes (the reference implementation's join hung above 30).
//! In its own test binary so its load does not skew the timing assertions of other tests.

mod common;

use std::time::Duration;

use common::{Env, Registries};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_of_ten_thousand_activities_completes() {
    const N: u64 = 10_000;
    let mut reg = Registries::new();
    reg.activity("Square", |_, input| async move {
        let n: u64 = input.parse().map_err(|e| format!("{e}"))?;
        Ok((n * n).to_string())
    })
    .orchestration("BigJoin", |ctx, input| async move {
        let n: u64 = input.parse().map_err(|e| format!("{e}"))?;
        let tasks = (0..n)
            .map(|i| ctx.schedule_activity("Square", i.to_string()))
            .collect();
        let results = ctx.join(tasks).await;
        let mut sum = 0u64;
        for (i, result) in results.into_iter().enumerate() {
            let value: u64 = result?.parse().map_err(|e| format!("{e}"))?;
            // Outputs come back in input order.
            if value != (i as u64) * (i as u64) {
                return Err(format!("result {i} is {value}"));
            }
            sum += value;
        }
        Ok(sum.to_string())
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("join-10k", "BigJoin", &N.to_string())
        .await
        .unwrap();
    // A correctness test, not a benchmark: the timeout only guards against a hang.
    let state = env
        .client
        .wait_for_orchestration("join-10k", Duration::from_secs(120))
        .await
        .expect("the join completes");
    let expected: u64 = (0..N).map(|i| i * i).sum();
    assert_eq!(state.output, Some(expected.to_string()), "{state:?}");
    let history = env.history("join-10k", 1).await;
    // Started, N scheduled, N completed, completed.
    assert_eq!(history.len() as u64, 2 * N + 2);
    env.shutdown().await;
}
