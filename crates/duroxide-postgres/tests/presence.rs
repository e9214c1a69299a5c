//! Provider objects on one schema learn of each other through their listeners: one that is alone
//! on the channel sends no NOTIFY for its writes, and one that hears a newcomer's hello notifies it
//! from then on, so the newcomer's fetches wake for its work at once.

use std::time::{Duration, Instant};

use duroxide_core::provider::Provider;

mod common;

const LOCK: Duration = Duration::from_secs(30);
/// How long a condition that should hold within a few seconds may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// Waits until `condition` holds; fails the test with `what` after [`PATIENCE`].
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_alone_on_its_channel_sends_no_notifications() {
    let schemas = common::Schemas::default();
    let alone = schemas.provider().await;
    assert!(
        alone.stats().notifying,
        "it notifies until peers could have answered its hello"
    );
    until("the warm-up ended", || !alone.stats().notifying).await;

    let before = alone.stats();
    for n in 0..20 {
        alone
            .create_instance(common::start(&format!("alone-{n}")))
            .await
            .expect("create");
    }
    until("the starts' announcements were dropped", || {
        alone.stats().announcements_unsent > before.announcements_unsent
    })
    .await;
    // (Its next ping is due ten seconds after it began listening, well after this.)
    assert_eq!(
        alone.stats().notifications_sent,
        before.notifications_sent,
        "a NOTIFY went out with nobody to hear it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_is_heard_and_woken_for_new_work() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let old = common::connect(&schema).await;
    until("the old object's warm-up ended", || !old.stats().notifying).await;

    let newcomer = common::connect(&schema).await;
    until("the old object heard the newcomer's hello", || {
        old.stats().notifying
    })
    .await;
    let waiting = {
        let newcomer = newcomer.clone();
        tokio::spawn(async move { newcomer.fetch_orchestration_item(LOCK, PATIENCE).await })
    };
    until("the newcomer's fetch waits for work", || {
        newcomer.stats().idle_fetches > 0
    })
    .await;
    old.create_instance(common::start("for-the-newcomer"))
        .await
        .expect("create");
    let item = waiting
        .await
        .expect("the fetch task")
        .expect("fetch")
        .expect("the new instance");
    assert_eq!(item.instance_id, "for-the-newcomer");
    assert_eq!(
        newcomer.stats().found_by_recheck,
        0,
        "the fetch found the instance at the recheck: the old object did not notify"
    );
}
