//! Exclusive instance locks: under concurrent fetchers no instance is ever handed out twice while it is
//! locked, and every message is consumed by exactly one turn.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duroxide_core::provider::*;

use crate::support::*;

const INSTANCES: usize = 12;
const TURNS_PER_INSTANCE: u64 = 5;

/// Runs `fetchers` concurrent turn loops over `providers` (round robin) until every instance has had
/// its turns. Each turn asserts that no other fetcher holds its instance, appends one event (a second
/// concurrent turn would collide on its id) and sends itself the message for the next turn.
async fn race_turns(providers: Vec<P>, fetchers: usize) -> CheckResult {
    let held = Arc::new(Mutex::new(HashSet::<String>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let total = INSTANCES * TURNS_PER_INSTANCE as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for n in 0..fetchers {
        let p = providers[n % providers.len()].clone();
        let (held, done) = (held.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < total {
                if Instant::now() > deadline {
                    return Err(CheckError::failed("the turns did not finish within 60 s"));
                }
                let Some(item) = p
                    .fetch_orchestration_item(LONG_LOCK, Duration::from_millis(20))
                    .await?
                else {
                    continue;
                };
                if !held
                    .lock()
                    .expect("not poisoned")
                    .insert(item.instance_id.clone())
                {
                    return Err(CheckError::failed(format!(
                        "{} was handed out while another fetcher held its lock",
                        item.instance_id
                    )));
                }
                // Hold the lock across a scheduling point so overlapping fetches have a chance to occur.
                tokio::time::sleep(Duration::from_millis(1)).await;
                let turns_so_far = item.history.len() as u64;
                let mut t = Turn::after(&item);
                // A first turn appends OrchestrationStarted by itself; later turns add one event each.
                if !item.history.is_empty() {
                    t = t.events(1);
                }
                if turns_so_far + 1 < TURNS_PER_INSTANCE {
                    t = t.message(external_event(
                        &item.instance_id,
                        "next",
                        &turns_so_far.to_string(),
                    ));
                }
                held.lock().expect("not poisoned").remove(&item.instance_id);
                t.commit(&p, &item).await?;
                done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| fail(format!("fetcher task panicked: {e}")))??;
    }
    Ok(())
}

async fn create_racers(p: &P) -> CheckResult {
    for n in 0..INSTANCES {
        create(p, &format!("i{n}")).await?;
    }
    Ok(())
}

async fn verify_race(p: &P) -> CheckResult {
    for n in 0..INSTANCES {
        let id = format!("i{n}");
        let ids: Vec<u64> = p.read_history(&id, 1).await?.iter().map(|r| r.event_id).collect();
        ensure_eq!(
            ids,
            (1..=TURNS_PER_INSTANCE).collect::<Vec<_>>(),
            "event ids of {id}"
        );
    }
    no_item(try_fetch(p).await?, "every message was consumed")
}

/// Eight concurrent fetchers over twelve instances with five turns each: no instance is ever handed out
/// while another fetcher holds it, and each history ends up with exactly one event per turn.
pub async fn concurrent_fetchers_never_share_an_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create_racers(&p).await?;
    race_turns(vec![p.clone()], 8).await?;
    verify_race(&p).await
}

/// The same race through two provider objects on one store (two processes): locks hold across
/// objects, not only within one.
pub async fn fetchers_on_two_objects_never_share_an_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let (a, b) = pair(factory).await?;
    create_racers(&a).await?;
    race_turns(vec![a.clone(), b], 6).await?;
    verify_race(&a).await
}

/// Eight fetchers racing for one instance with one message: exactly one wins.
pub async fn one_instance_many_fetchers_one_winner(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.fetch_orchestration_item(LONG_LOCK, Duration::from_millis(200))
                .await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task
            .await
            .map_err(|e| fail(format!("fetcher panicked: {e}")))??
            .is_some()
        {
            winners += 1;
        }
    }
    ensure_eq!(winners, 1, "fetchers that got the instance");
    Ok(())
}

/// Eight workers racing for one worker item: exactly one wins.
pub async fn one_work_item_many_workers_one_winner(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.fetch_work_item(&worker(), Duration::from_millis(200)).await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task
            .await
            .map_err(|e| fail(format!("worker panicked: {e}")))??
            .is_some()
        {
            winners += 1;
        }
    }
    ensure_eq!(winners, 1, "workers that got the item");
    Ok(())
}

/// Locks are per instance: while `a` is locked, `b` is fetchable, and both can be acked independently.
pub async fn locks_are_per_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "a").await?;
    let a = fetch_instance(&p, "a").await?;
    create(&p, "b").await?;
    let b = fetch_instance(&p, "b").await?;
    Turn::after(&b).commit(&p, &b).await?;
    Turn::after(&a).commit(&p, &a).await
}

/// Messages enqueued concurrently with running turns are each consumed by exactly one turn, in order:
/// none is lost between fetch and ack, none is delivered twice.
pub async fn concurrent_enqueue_and_turns_deliver_each_message_once(
    factory: &dyn ProviderFactory,
) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    const COUNT: usize = 60;
    let producer = {
        let p = p.clone();
        tokio::spawn(async move {
            for n in 0..COUNT {
                p.enqueue_message(queue_message("i1", "q", &n.to_string()))
                    .await?;
                if n % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<_, ProviderError>(())
        })
    };
    let expected: Vec<String> = (0..COUNT)
        .map(|n| queue_message("i1", "q", &n.to_string()).payload)
        .collect();
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.len() < COUNT {
        ensure!(
            Instant::now() < deadline,
            "only {} of {COUNT} messages arrived",
            received.len()
        );
        let Some(item) = p
            .fetch_orchestration_item(LONG_LOCK, Duration::from_millis(50))
            .await?
        else {
            continue;
        };
        received.extend(payloads(&item));
        Turn::after(&item).events(1).commit(&p, &item).await?;
    }
    producer
        .await
        .map_err(|e| fail(format!("producer panicked: {e}")))??;
    ensure_eq!(
        received,
        expected,
        "messages in the order the turns consumed them"
    );
    no_item(try_fetch(&p).await?, "nothing is left")
}
