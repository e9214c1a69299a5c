//! Bulk retention filters: an empty filter is refused, `limit` alone is a criterion.

use std::time::Duration;

use duroxide_core::provider::{ExecutionStatus, InstanceFilter, ProviderErrorKind, PruneOptions, TurnAck};
use duroxide_core::Provider;
use duroxide_sqlite::SqliteProvider;

mod common;
use common::{start, turn, LEASE};

async fn completed(p: &SqliteProvider, id: &str) {
    p.create_instance(start(id)).await.expect("create");
    let item = p
        .fetch_orchestration_item(LEASE, Duration::ZERO)
        .await
        .expect("fetch")
        .expect("item");
    let ack = TurnAck {
        status: Some(ExecutionStatus::Completed),
        output: Some("done".into()),
        ..turn(&[1])
    };
    p.ack_orchestration_item(&item.lock_token, ack)
        .await
        .expect("ack");
}

#[tokio::test]
async fn an_empty_filter_is_refused_and_a_limit_alone_selects() {
    let p = SqliteProvider::in_memory().expect("memory");
    for id in ["a", "b", "c"] {
        completed(&p, id).await;
    }
    let keep_one = PruneOptions {
        keep_last: Some(1),
        ..PruneOptions::default()
    };
    let empty = InstanceFilter::default();
    let err = p.delete_instances_bulk(&empty).await.expect_err("empty filter");
    assert_eq!(err.kind, ProviderErrorKind::InvalidInput);
    let err = p
        .prune_executions_bulk(&empty, &keep_one)
        .await
        .expect_err("empty filter");
    assert_eq!(err.kind, ProviderErrorKind::InvalidInput);

    let two = InstanceFilter {
        limit: Some(2),
        ..InstanceFilter::default()
    };
    let pruned = p
        .prune_executions_bulk(&two, &keep_one)
        .await
        .expect("limit alone");
    assert_eq!(pruned.instances_processed, 2);
    let deleted = p.delete_instances_bulk(&two).await.expect("limit alone");
    assert_eq!(deleted.instances_deleted, 2);
    assert_eq!(p.list_instances(None).await.expect("list").len(), 1);
}
