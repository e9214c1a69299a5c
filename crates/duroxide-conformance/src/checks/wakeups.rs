//! Wake-ups: a fetch waiting for work returns promptly when work arrives (through the same provider
//! object, a timer coming due, or, with the capability, another object), and `wake_all` ends it.
//!
//! Each check starts a fetch with a long poll timeout, gives it a moment to begin waiting, makes work
//! available and measures from that moment to the fetch's return. If the fetch had not begun waiting
//! yet it finds the work at once, which passes too: the checks can only fail when a wake-up is missing.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use duroxide_core::provider::*;

use crate::support::*;

/// Long enough that returning within [`PROMPT`] can only be a wake-up.
const LONG_POLL: Duration = Duration::from_secs(10);
/// Time for a spawned fetch to start waiting before work is made available.
const SETTLE: Duration = Duration::from_millis(200);

type Waiting<T> = JoinHandle<Result<(Option<T>, Instant), ProviderError>>;

fn wait_for_instance(p: &P) -> Waiting<OrchestrationItem> {
    let p = p.clone();
    tokio::spawn(async move {
        let item = p.fetch_orchestration_item(LONG_LOCK, LONG_POLL).await?;
        Ok((item, Instant::now()))
    })
}

fn wait_for_work(p: &P, request: WorkerFetch, poll: Duration) -> Waiting<WorkItemLease> {
    let p = p.clone();
    tokio::spawn(async move {
        let lease = p.fetch_work_item(&request, poll).await?;
        Ok((lease, Instant::now()))
    })
}

async fn finished<T>(waiting: Waiting<T>) -> Result<(Option<T>, Instant), CheckError> {
    Ok(waiting
        .await
        .map_err(|e| fail(format!("the waiting fetch panicked: {e}")))??)
}

/// Expects the waiting fetch to have returned something within [`PROMPT`] of `work_at`.
async fn ensure_woken<T>(waiting: Waiting<T>, work_at: Instant, what: &str) -> Result<T, CheckError> {
    let (found, returned_at) = finished(waiting).await?;
    let found = found.ok_or_else(|| fail(format!("{what}: the waiting fetch returned nothing")))?;
    let delay = returned_at.saturating_duration_since(work_at);
    ensure!(
        delay < PROMPT,
        "{what}: the waiting fetch returned {delay:?} after the work arrived"
    );
    Ok(found)
}

/// `create_instance` wakes a fetch waiting on the same provider object.
pub async fn create_instance_wakes_a_waiting_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let waiting = wait_for_instance(&p);
    tokio::time::sleep(SETTLE).await;
    create(&p, "i1").await?;
    let item = ensure_woken(waiting, Instant::now(), "create_instance").await?;
    ensure_eq!(item.instance_id, "i1", "instance");
    Ok(())
}

/// `enqueue_message` wakes a waiting fetch.
pub async fn enqueue_message_wakes_a_waiting_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    let waiting = wait_for_instance(&p);
    tokio::time::sleep(SETTLE).await;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    ensure_woken(waiting, Instant::now(), "enqueue_message").await?;
    Ok(())
}

/// An ack that sends a message to another instance wakes a fetch waiting for it.
pub async fn ack_with_messages_wakes_a_waiting_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "b").await?;
    create(&p, "a").await?;
    let a = fetch_instance(&p, "a").await?;
    let waiting = wait_for_instance(&p);
    tokio::time::sleep(SETTLE).await;
    Turn::after(&a)
        .message(external_event("b", "from-a", "1"))
        .commit(&p, &a)
        .await?;
    let item = ensure_woken(waiting, Instant::now(), "ack with a message").await?;
    ensure_eq!(item.instance_id, "b", "instance");
    Ok(())
}

/// An activity completion (`ack_work_item`) wakes a fetch waiting for orchestration work.
pub async fn work_completion_wakes_a_waiting_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    let waiting = wait_for_instance(&p);
    tokio::time::sleep(SETTLE).await;
    p.ack_work_item(&lease.lock_token, Some(activity_completion("i1", 1, 2)))
        .await?;
    ensure_woken(waiting, Instant::now(), "activity completion").await?;
    Ok(())
}

/// Abandoning an instance makes its messages available again and wakes a waiting fetch.
pub async fn abandon_wakes_a_waiting_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    let waiting = wait_for_instance(&p);
    tokio::time::sleep(SETTLE).await;
    p.abandon_orchestration_item(&item.lock_token, None).await?;
    ensure_woken(waiting, Instant::now(), "abandon").await?;
    Ok(())
}

/// An ack that enqueues a worker item wakes a waiting worker fetch.
pub async fn new_work_wakes_a_waiting_worker(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    let waiting = wait_for_work(&p, worker(), LONG_POLL);
    tokio::time::sleep(SETTLE).await;
    add_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = ensure_woken(waiting, Instant::now(), "new worker item").await?;
    ensure_eq!(lease.activity.event_id, 2, "activity");
    Ok(())
}

/// A timer coming due wakes a waiting fetch: it returns once the timer is due, not before and not at the
/// end of its poll timeout.
pub async fn due_timer_wakes_a_waiting_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    // Due relative to the enqueue, so a slow set-up cannot make it due before the fetch waits.
    let due = now_ms() + 600;
    p.enqueue_message(timer_message("i1", 2, due)).await?;
    let waiting = wait_for_instance(&p);
    let (found, _) = finished(waiting).await?;
    let fetched_at = now_ms();
    ensure!(
        found.is_some(),
        "the waiting fetch returned nothing although the timer came due"
    );
    ensure!(
        fetched_at + CLOCK_SLACK_MS >= due,
        "the timer was fetched at {fetched_at}, before it was due at {due}"
    );
    ensure!(
        fetched_at < due + PROMPT.as_millis() as u64,
        "the timer was fetched {} ms after it was due",
        fetched_at - due
    );
    Ok(())
}

/// `wake_all` ends a waiting orchestration fetch with `None` at once.
pub async fn wake_all_ends_a_waiting_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let waiting = wait_for_instance(&p);
    tokio::time::sleep(SETTLE).await;
    let woken_at = Instant::now();
    // Repeated because a wake that lands before the fetch starts waiting has nothing to end.
    while !waiting.is_finished() && woken_at.elapsed() < PROMPT * 3 {
        p.wake_all();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (found, returned_at) = finished(waiting).await?;
    ensure!(found.is_none(), "a woken fetch without work must return None");
    let delay = returned_at.saturating_duration_since(woken_at);
    ensure!(delay < PROMPT * 2, "the fetch returned {delay:?} after wake_all");
    Ok(())
}

/// `wake_all` ends a waiting worker fetch with `None` at once.
pub async fn wake_all_ends_a_waiting_worker_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let waiting = wait_for_work(&p, worker(), LONG_POLL);
    tokio::time::sleep(SETTLE).await;
    let woken_at = Instant::now();
    while !waiting.is_finished() && woken_at.elapsed() < PROMPT * 3 {
        p.wake_all();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (found, returned_at) = finished(waiting).await?;
    ensure!(
        found.is_none(),
        "a woken worker fetch without work must return None"
    );
    let delay = returned_at.saturating_duration_since(woken_at);
    ensure!(
        delay < PROMPT * 2,
        "the worker fetch returned {delay:?} after wake_all"
    );
    Ok(())
}

/// A fetch without work really waits for its poll timeout before returning `None` (a provider that
/// returns at once would make runtimes spin), and does return after it.
pub async fn idle_fetch_waits_for_its_poll_timeout(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let poll = Duration::from_millis(500);
    let started = Instant::now();
    no_item(
        p.fetch_orchestration_item(LONG_LOCK, poll).await?,
        "no work exists",
    )?;
    let waited = started.elapsed();
    ensure!(
        waited >= poll / 2,
        "an idle orchestration fetch returned after {waited:?} of a {poll:?} poll"
    );
    ensure!(
        waited < poll + PROMPT * 2,
        "an idle orchestration fetch took {waited:?} for a {poll:?} poll"
    );
    let started = Instant::now();
    no_work(p.fetch_work_item(&worker(), poll).await?, "no work exists")?;
    let waited = started.elapsed();
    ensure!(
        waited >= poll / 2,
        "an idle worker fetch returned after {waited:?} of a {poll:?} poll"
    );
    ensure!(
        waited < poll + PROMPT * 2,
        "an idle worker fetch took {waited:?} for a {poll:?} poll"
    );
    Ok(())
}

/// A waiting worker fetch never returns work its tag filter refuses; work it accepts then wakes it
/// promptly.
pub async fn waiting_worker_ignores_refused_work(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    let gpu_only = worker_with(TagFilter::Tags(vec!["gpu".into()]));
    let mut waiting = wait_for_work(&p, gpu_only.clone(), LONG_POLL);
    tokio::time::sleep(SETTLE).await;
    add_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    tokio::time::sleep(SETTLE).await;
    if waiting.is_finished() {
        if let (Some(lease), _) = finished(waiting).await? {
            return Err(fail(format!(
                "the gpu-only worker got {:?} tagged {:?}",
                lease.activity, lease.tag
            )));
        }
        // Ending the wait early without work is tolerated; wait again for the gpu item.
        waiting = wait_for_work(&p, gpu_only, LONG_POLL);
        tokio::time::sleep(SETTLE).await;
    }
    add_work(&p, "i1", vec![work_item("i1", 3).tagged("gpu")]).await?;
    let lease = ensure_woken(waiting, Instant::now(), "gpu work").await?;
    ensure_eq!(lease.activity.event_id, 3, "the gpu worker's item");
    Ok(())
}

/// With the `cross_object_wakeups` capability, work enqueued through one provider object wakes a fetch
/// waiting on another object of the same store.
pub async fn work_from_another_object_wakes_a_waiting_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    require(
        factory.capabilities().cross_object_wakeups,
        "cross_object_wakeups",
    )?;
    let (a, b) = pair(factory).await?;
    let waiting = wait_for_instance(&b);
    tokio::time::sleep(SETTLE).await;
    create(&a, "i1").await?;
    let item = ensure_woken(waiting, Instant::now(), "create_instance on the other object").await?;
    ensure_eq!(item.instance_id, "i1", "instance");
    Ok(())
}
