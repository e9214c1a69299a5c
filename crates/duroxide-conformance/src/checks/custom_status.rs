//! Custom status: stored by turns, read cheaply by clients, with a version that every `Set` increments
//! so pollers can tell a change from a repeat.

use duroxide_core::provider::*;

use crate::support::*;

async fn custom(p: &P, instance: &str) -> Result<CustomStatus, CheckError> {
    p.get_custom_status(instance)
        .await?
        .ok_or_else(|| fail(format!("{instance} has no custom status record")))
}

/// A new instance has no custom status at version 0; an unknown instance has none at all.
pub async fn new_instance_has_version_zero(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    ensure_eq!(
        custom(&p, "i1").await?,
        CustomStatus {
            status: None,
            version: 0
        },
        "custom status"
    );
    ensure_eq!(
        p.get_custom_status("ghost").await?,
        None,
        "custom status of an unknown instance"
    );
    Ok(())
}

/// `Set(value)` stores the value and increments the version.
pub async fn set_stores_the_value_and_increments_the_version(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.custom_status(Some("{\"step\":1}"))).await?;
    ensure_eq!(
        custom(&p, "i1").await?,
        CustomStatus {
            status: Some("{\"step\":1}".into()),
            version: 1
        },
        "custom status"
    );
    Ok(())
}

/// `Unchanged` keeps value and version.
pub async fn unchanged_keeps_value_and_version(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.custom_status(Some("a"))).await?;
    turn(&p, "i1", |t| t.events(1)).await?;
    ensure_eq!(
        custom(&p, "i1").await?,
        CustomStatus {
            status: Some("a".into()),
            version: 1
        },
        "custom status"
    );
    Ok(())
}

/// `Set(None)` clears the value and still increments the version.
pub async fn set_none_clears_and_increments(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.custom_status(Some("a"))).await?;
    turn(&p, "i1", |t| t.custom_status(None)).await?;
    ensure_eq!(
        custom(&p, "i1").await?,
        CustomStatus {
            status: None,
            version: 2
        },
        "custom status"
    );
    Ok(())
}

/// Setting the same value again still increments the version: every `Set` counts.
pub async fn setting_the_same_value_increments(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.custom_status(Some("same"))).await?;
    turn(&p, "i1", |t| t.custom_status(Some("same"))).await?;
    ensure_eq!(
        custom(&p, "i1").await?,
        CustomStatus {
            status: Some("same".into()),
            version: 2
        },
        "custom status"
    );
    Ok(())
}

/// The fetched item carries the current custom status and version.
pub async fn fetched_item_carries_the_custom_status(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.custom_status(Some("waiting"))).await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let item = fetch(&p).await?;
    ensure_eq!(
        item.custom_status,
        CustomStatus {
            status: Some("waiting".into()),
            version: 1
        },
        "custom status of the item"
    );
    Ok(())
}

/// A refused ack leaves custom status and version alone.
pub async fn refused_ack_keeps_the_custom_status(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.custom_status(Some("before"))).await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let item = fetch(&p).await?;
    let ack = Turn::after(&item)
        .custom_status(Some("after"))
        .raw_record(1)
        .build();
    expect_kind(
        p.ack_orchestration_item(&item.lock_token, ack).await,
        ProviderErrorKind::Permanent,
        "refused ack",
    )?;
    ensure_eq!(
        custom(&p, "i1").await?,
        CustomStatus {
            status: Some("before".into()),
            version: 1
        },
        "custom status"
    );
    Ok(())
}

/// The version counts every change over many turns.
pub async fn version_counts_every_change(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    for n in 1..=10 {
        turn(&p, "i1", |t| t.custom_status(Some(&format!("step {n}")))).await?;
        ensure_eq!(custom(&p, "i1").await?.version, n, "version after {n} changes");
    }
    ensure_eq!(
        custom(&p, "i1").await?.status.as_deref(),
        Some("step 10"),
        "value"
    );
    Ok(())
}

/// Custom status belongs to the instance: it survives continue-as-new, and the version keeps counting
/// in the next execution instead of restarting (a poller must never see it go backwards).
pub async fn custom_status_survives_continue_as_new(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.custom_status(Some("one"))).await?;
    continue_as_new(&p, "i1").await?;
    ensure_eq!(
        custom(&p, "i1").await?,
        CustomStatus {
            status: Some("one".into()),
            version: 1
        },
        "after continue-as-new"
    );
    turn(&p, "i1", |t| t.custom_status(Some("two"))).await?;
    ensure_eq!(
        custom(&p, "i1").await?,
        CustomStatus {
            status: Some("two".into()),
            version: 2
        },
        "in the new execution"
    );
    Ok(())
}

/// `get_instance_state` reads the instance's metadata and custom status as the two separate reads
/// do, and nothing for an unknown instance.
pub async fn instance_state_is_the_info_and_the_custom_status(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.custom_status(Some("one"))).await?;
    turn(&p, "i1", |t| t.custom_status(Some("two"))).await?;
    let (info, custom_status) = p
        .get_instance_state("i1")
        .await?
        .ok_or_else(|| fail("i1 has no state"))?;
    ensure_eq!(Some(info), p.get_instance_info("i1").await?, "metadata");
    ensure_eq!(
        custom_status,
        CustomStatus {
            status: Some("two".into()),
            version: 2
        },
        "custom status"
    );
    ensure_eq!(
        p.get_instance_state("ghost").await?,
        None,
        "state of an unknown instance"
    );
    Ok(())
}
