//! Sessions on the worker queue: the first fetch claims a session for its owner, the owner keeps it
//! while its lease lives (fetches and renewals extend it), others skip its items without being blocked,
//! and an idle or released session can be taken over.

use std::time::{Duration, Instant};

use duroxide_core::provider::*;

use crate::support::*;

fn owner(name: &str, may_claim_new: bool) -> WorkerFetch {
    session_worker(name, LONG_LOCK, may_claim_new)
}

fn owner_with_lease(name: &str, lease: Duration) -> WorkerFetch {
    session_worker(name, lease, true)
}

fn in_session(event_id: u64, session: &str) -> NewWorkItem {
    work_item("i1", event_id).in_session(session)
}

/// A worker without session routing never gets session items; plain items still reach it.
pub async fn session_items_need_session_routing(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1"), work_item("i1", 3)]).await?;
    let lease = fetch_work(&p, &worker_with(TagFilter::Any)).await?;
    ensure_eq!(lease.activity.event_id, 3, "the plain item");
    no_work(
        try_fetch_work(&p, &worker_with(TagFilter::Any)).await?,
        "only a session item is left",
    )
}

/// The first fetch of a session item claims the session: another owner then gets none of its items.
pub async fn first_fetch_claims_the_session(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1"), in_session(3, "s1")]).await?;
    let lease = fetch_work(&p, &owner("A", true)).await?;
    ensure_eq!(lease.session_id.as_deref(), Some("s1"), "session of the lease");
    no_work(try_fetch_work(&p, &owner("B", true)).await?, "s1 belongs to A")
}

/// Affinity: the owner gets all items of its session in enqueue order while another owner, asking in
/// between, gets none.
pub async fn owner_keeps_its_session_items_in_order(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", (2..6).map(|e| in_session(e, "s1")).collect()).await?;
    for expected in 2..6 {
        let lease = fetch_work(&p, &owner("A", true)).await?;
        ensure_eq!(lease.activity.event_id, expected, "A's next item");
        no_work(
            try_fetch_work(&p, &owner("B", true)).await?,
            "B asking between A's fetches",
        )?;
    }
    Ok(())
}

/// Items of a session another owner holds are skipped, not blocking: the other owner gets the plain
/// item behind them.
pub async fn held_session_items_are_skipped_not_blocking(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(
        &p,
        "i1",
        vec![
            in_session(2, "s1"),
            in_session(3, "s1"),
            work_item("i1", 4),
            in_session(5, "s1"),
        ],
    )
    .await?;
    fetch_work(&p, &owner("A", true)).await?;
    let lease = fetch_work(&p, &owner("B", true)).await?;
    ensure_eq!(lease.activity.event_id, 4, "B's item");
    no_work(
        try_fetch_work(&p, &owner("B", true)).await?,
        "the rest belongs to A",
    )
}

/// An owner at its limit (`may_claim_new = false`) still gets items of sessions it already owns.
pub async fn owner_at_its_limit_still_serves_its_sessions(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1"), in_session(3, "s1")]).await?;
    fetch_work(&p, &owner("A", true)).await?;
    let lease = fetch_work(&p, &owner("A", false)).await?;
    ensure_eq!(lease.activity.event_id, 3, "A's second item");
    Ok(())
}

/// With `may_claim_new = false` a fetch claims no session: unowned session items are skipped, plain
/// items are still served, and the session stays free for others.
pub async fn may_claim_new_false_claims_nothing(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1"), work_item("i1", 3)]).await?;
    let lease = fetch_work(&p, &owner("A", false)).await?;
    ensure_eq!(lease.activity.event_id, 3, "the plain item");
    no_work(
        try_fetch_work(&p, &owner("A", false)).await?,
        "A may not claim s1",
    )?;
    let b = fetch_work(&p, &owner("B", true)).await?;
    ensure_eq!(b.session_id.as_deref(), Some("s1"), "B claims the free session");
    Ok(())
}

/// Once its lease ran out, a session counts as unowned even for its old owner: reclaiming it needs
/// `may_claim_new`.
pub async fn expired_session_needs_may_claim_new_even_for_its_old_owner(
    factory: &dyn ProviderFactory,
) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1"), in_session(3, "s1")]).await?;
    let first = fetch_work(&p, &owner_with_lease("A", SHORT_LOCK)).await?;
    p.ack_work_item(&first.lock_token, None).await?;
    outlive(SHORT_LOCK).await;
    no_work(
        try_fetch_work(&p, &owner("A", false)).await?,
        "A's lease ran out and A may not claim",
    )?;
    let again = fetch_work(&p, &owner("A", true)).await?;
    ensure_eq!(again.activity.event_id, 3, "A reclaims s1");
    Ok(())
}

/// An idle session is taken over once its lease runs out: another owner then claims it.
pub async fn idle_session_is_taken_over_after_its_lease(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1"), in_session(3, "s1")]).await?;
    let first = fetch_work(&p, &owner_with_lease("A", SHORT_LOCK)).await?;
    p.ack_work_item(&first.lock_token, None).await?;
    let b = owner("B", true);
    let taken = wait_for("B to take over s1", CONDITION_TIMEOUT, || try_fetch_work(&p, &b)).await?;
    ensure_eq!(taken.activity.event_id, 3, "B's item");
    Ok(())
}

/// After a takeover the previous owner is locked out: it gets none of the session's items while the
/// new owner's lease lives.
pub async fn previous_owner_is_locked_out_after_takeover(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", (2..5).map(|e| in_session(e, "s1")).collect()).await?;
    let first = fetch_work(&p, &owner_with_lease("A", SHORT_LOCK)).await?;
    p.ack_work_item(&first.lock_token, None).await?;
    let b = owner("B", true);
    wait_for("B to take over s1", CONDITION_TIMEOUT, || try_fetch_work(&p, &b)).await?;
    no_work(
        try_fetch_work(&p, &owner("A", true)).await?,
        "s1 now belongs to B",
    )?;
    let b = fetch_work(&p, &owner("B", false)).await?;
    ensure_eq!(b.activity.event_id, 4, "B keeps serving s1");
    Ok(())
}

/// A fetch by the owner extends the session lease to now + lease: the session is still the owner's
/// after its first lease would have run out.
pub async fn fetch_extends_the_session_lease(factory: &dyn ProviderFactory) -> CheckResult {
    let lease = Duration::from_millis(1_000);
    let margin = Duration::from_millis(CLOCK_SLACK_MS * 2);
    // The probe must fall after the first lease and before the extended one. A stalled machine can miss
    // that window; such a round proves nothing either way, so it is repeated rather than judged.
    for _ in 0..3 {
        let p = factory.create().await;
        seed_work(&p, "i1", (2..5).map(|e| in_session(e, "s1")).collect()).await?;
        fetch_work(&p, &owner_with_lease("A", lease)).await?;
        let first_done = Instant::now();
        tokio::time::sleep(lease / 2).await;
        let second_start = Instant::now();
        fetch_work(&p, &owner_with_lease("A", lease)).await?;
        tokio::time::sleep((first_done + lease + margin).saturating_duration_since(Instant::now())).await;
        let probe_start = Instant::now();
        let probe = try_fetch_work(&p, &owner("B", true)).await?;
        let probe_end = Instant::now();
        if probe_start < first_done + lease + margin || probe_end + margin > second_start + lease {
            continue;
        }
        return no_work(probe, "A's second fetch extended its lease");
    }
    Err(fail(
        "could not place a probe between the first and the extended lease in three rounds",
    ))
}

/// `renew_session_leases` extends the owner's lease: the session stays the owner's past its first
/// lease, and the call reports one renewed session.
pub async fn renew_session_leases_extends_owned_sessions(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1"), in_session(3, "s1")]).await?;
    fetch_work(&p, &owner_with_lease("A", RENEWABLE_LOCK)).await?;
    let renewed = p
        .renew_session_leases("A", &["s1".to_string()], LONG_LOCK)
        .await?;
    ensure_eq!(renewed, 1, "sessions renewed");
    outlive(RENEWABLE_LOCK).await;
    no_work(
        try_fetch_work(&p, &owner("B", true)).await?,
        "the renewed session is still A's",
    )
}

/// `renew_session_leases` renews only sessions the owner holds: an unowned one and another owner's are
/// not counted, not claimed, and not taken from their owner.
pub async fn renew_session_leases_counts_only_own_sessions(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(
        &p,
        "i1",
        vec![
            in_session(2, "mine"),
            in_session(3, "theirs"),
            in_session(4, "theirs"),
            in_session(5, "free"),
        ],
    )
    .await?;
    ensure_eq!(
        fetch_work(&p, &owner("A", true)).await?.session_id.as_deref(),
        Some("mine"),
        "A's claim"
    );
    ensure_eq!(
        fetch_work(&p, &owner("B", true)).await?.session_id.as_deref(),
        Some("theirs"),
        "B's claim"
    );
    let ids = ["mine", "theirs", "free", "unknown"].map(String::from);
    ensure_eq!(
        p.renew_session_leases("A", &ids, LONG_LOCK).await?,
        1,
        "sessions renewed for A"
    );
    no_work(
        try_fetch_work(&p, &owner("A", false)).await?,
        "A must not own theirs or free",
    )?;
    let c = fetch_work(&p, &owner("C", true)).await?;
    ensure_eq!(
        c.session_id.as_deref(),
        Some("free"),
        "the free session is still free"
    );
    Ok(())
}

/// `release_session` frees the session at once: another owner claims it without waiting for the
/// lease.
pub async fn release_session_frees_it_at_once(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1"), in_session(3, "s1")]).await?;
    let first = fetch_work(&p, &owner("A", true)).await?;
    p.ack_work_item(&first.lock_token, None).await?;
    p.release_session("A", "s1").await?;
    let b = try_fetch_work(&p, &owner("B", true))
        .await?
        .ok_or_else(|| fail("B cannot claim the released session"))?;
    ensure_eq!(b.activity.event_id, 3, "B's item");
    Ok(())
}

/// `release_session` by an owner that does not hold the session is a no-op: the holder keeps it.
pub async fn release_by_another_owner_is_a_no_op(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1"), in_session(3, "s1")]).await?;
    fetch_work(&p, &owner("A", true)).await?;
    p.release_session("B", "s1").await?;
    no_work(
        try_fetch_work(&p, &owner("B", true)).await?,
        "s1 still belongs to A",
    )?;
    let a = fetch_work(&p, &owner("A", false)).await?;
    ensure_eq!(a.activity.event_id, 3, "A keeps serving s1");
    Ok(())
}

/// `release_session` of a session nobody holds succeeds and changes nothing.
pub async fn release_of_unknown_session_is_a_no_op(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    p.release_session("A", "never-claimed").await?;
    seed_work(&p, "i1", vec![in_session(2, "s1")]).await?;
    p.release_session("A", "s1").await?;
    let lease = fetch_work(&p, &owner("B", true)).await?;
    ensure_eq!(lease.activity.event_id, 2, "the session is still claimable");
    Ok(())
}

/// The owner may hold several items of its session at once: a locked item does not hide the next one
/// from its own owner.
pub async fn owner_may_hold_several_items_of_its_session(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1"), in_session(3, "s1")]).await?;
    let first = fetch_work(&p, &owner("A", true)).await?;
    let second = fetch_work(&p, &owner("A", true)).await?;
    ensure_eq!(
        (first.activity.event_id, second.activity.event_id),
        (2, 3),
        "A's items"
    );
    Ok(())
}

/// Session ownership outlives the items: after the owner acks every item, new items of the session
/// still go to the owner while its lease lives.
pub async fn session_ownership_outlives_its_items(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1")]).await?;
    let first = fetch_work(&p, &owner("A", true)).await?;
    p.ack_work_item(&first.lock_token, None).await?;
    add_work(&p, "i1", vec![in_session(3, "s1")]).await?;
    no_work(
        try_fetch_work(&p, &owner("B", true)).await?,
        "s1 still belongs to A",
    )?;
    let a = fetch_work(&p, &owner("A", false)).await?;
    ensure_eq!(a.activity.event_id, 3, "A's new item");
    Ok(())
}

/// Sessions are independent: two owners each claim one session and each gets only its own items.
pub async fn sessions_are_independent(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(
        &p,
        "i1",
        vec![
            in_session(2, "s1"),
            in_session(3, "s2"),
            in_session(4, "s1"),
            in_session(5, "s2"),
        ],
    )
    .await?;
    let a1 = fetch_work(&p, &owner("A", true)).await?;
    let b1 = fetch_work(&p, &owner("B", true)).await?;
    ensure_eq!(
        (a1.activity.event_id, b1.activity.event_id),
        (2, 3),
        "first claims"
    );
    let a2 = fetch_work(&p, &owner("A", true)).await?;
    let b2 = fetch_work(&p, &owner("B", true)).await?;
    ensure_eq!(
        (a2.session_id, b2.session_id),
        (Some("s1".to_string()), Some("s2".to_string())),
        "sessions of the second items"
    );
    Ok(())
}

/// Session routing does not bypass the tag filter: an owner whose filter refuses the tag gets nothing.
pub async fn session_items_obey_the_tag_filter(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![in_session(2, "s1").tagged("gpu")]).await?;
    let untagged_only = WorkerFetch {
        tag_filter: TagFilter::DefaultOnly,
        ..owner("A", true)
    };
    no_work(
        try_fetch_work(&p, &untagged_only).await?,
        "the item is tagged gpu",
    )?;
    let gpu = WorkerFetch {
        tag_filter: TagFilter::Tags(vec!["gpu".into()]),
        ..owner("A", true)
    };
    ensure_eq!(
        fetch_work(&p, &gpu).await?.activity.event_id,
        2,
        "the gpu owner's item"
    );
    Ok(())
}
