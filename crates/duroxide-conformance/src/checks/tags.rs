//! Tag filters on the worker queue: every `TagFilter` variant admits exactly the items its definition
//! says, and filtering keeps enqueue order among the admitted items.

use duroxide_core::provider::*;

use crate::support::*;

/// Seeds one untagged item (event 2) and items tagged `gpu` (3), `io` (4) and `GPU` (5).
async fn seed_tagged(p: &P) -> CheckResult {
    seed_work(
        p,
        "i1",
        vec![
            work_item("i1", 2),
            work_item("i1", 3).tagged("gpu"),
            work_item("i1", 4).tagged("io"),
            work_item("i1", 5).tagged("GPU"),
        ],
    )
    .await
}

/// Fetches until the filter finds nothing more and returns the event ids it admitted, in fetch order.
async fn drain(p: &P, filter: TagFilter) -> Result<Vec<u64>, CheckError> {
    let request = worker_with(filter);
    let mut ids = Vec::new();
    while let Some(lease) = try_fetch_work(p, &request).await? {
        ids.push(lease.activity.event_id);
        ensure!(ids.len() <= 10, "the filter keeps returning items: {ids:?}");
    }
    Ok(ids)
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

/// `DefaultOnly` admits untagged items only.
pub async fn default_only_admits_untagged_items(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_tagged(&p).await?;
    ensure_eq!(
        drain(&p, TagFilter::DefaultOnly).await?,
        vec![2],
        "admitted items"
    );
    Ok(())
}

/// `Tags([gpu])` admits items tagged `gpu` only, neither untagged nor other tags.
pub async fn tags_admit_only_the_listed_tag(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_tagged(&p).await?;
    ensure_eq!(
        drain(&p, TagFilter::Tags(tags(&["gpu"]))).await?,
        vec![3],
        "admitted items"
    );
    Ok(())
}

/// `Tags([gpu, io])` admits items with either tag, in enqueue order.
pub async fn tags_admit_every_listed_tag(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_tagged(&p).await?;
    ensure_eq!(
        drain(&p, TagFilter::Tags(tags(&["io", "gpu"]))).await?,
        vec![3, 4],
        "admitted items"
    );
    Ok(())
}

/// `DefaultAnd([io])` admits untagged items and items tagged `io`.
pub async fn default_and_admits_untagged_and_listed(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_tagged(&p).await?;
    ensure_eq!(
        drain(&p, TagFilter::DefaultAnd(tags(&["io"]))).await?,
        vec![2, 4],
        "admitted items"
    );
    Ok(())
}

/// `Any` admits every item, tagged or not, in enqueue order.
pub async fn any_admits_everything(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_tagged(&p).await?;
    ensure_eq!(
        drain(&p, TagFilter::Any).await?,
        vec![2, 3, 4, 5],
        "admitted items"
    );
    Ok(())
}

/// `None` admits nothing, even with a full queue, and the items stay for other workers.
pub async fn none_admits_nothing(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_tagged(&p).await?;
    ensure_eq!(
        drain(&p, TagFilter::None).await?,
        Vec::<u64>::new(),
        "admitted items"
    );
    ensure_eq!(p.get_queue_depths().await?.worker_queue, 4, "items left");
    Ok(())
}

/// An empty tag list admits nothing (`Tags([])`), and `DefaultAnd([])` admits untagged items only.
pub async fn empty_tag_lists_admit_no_tags(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_tagged(&p).await?;
    ensure_eq!(
        drain(&p, TagFilter::Tags(Vec::new())).await?,
        Vec::<u64>::new(),
        "Tags([]) admitted"
    );
    ensure_eq!(
        drain(&p, TagFilter::DefaultAnd(Vec::new())).await?,
        vec![2],
        "DefaultAnd([]) admitted"
    );
    Ok(())
}

/// Tags compare exactly: `GPU` is not `gpu`.
pub async fn tags_are_case_sensitive(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_tagged(&p).await?;
    ensure_eq!(
        drain(&p, TagFilter::Tags(tags(&["GPU"]))).await?,
        vec![5],
        "admitted items"
    );
    Ok(())
}

/// A filter skips refused items without being blocked by them and keeps enqueue order among the
/// admitted ones.
pub async fn filtering_keeps_order_among_admitted_items(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let items = (2..12)
        .map(|e| {
            if e % 2 == 0 {
                work_item("i1", e).tagged("slow")
            } else {
                work_item("i1", e).tagged("fast")
            }
        })
        .collect();
    seed_work(&p, "i1", items).await?;
    ensure_eq!(
        drain(&p, TagFilter::Tags(tags(&["fast"]))).await?,
        vec![3, 5, 7, 9, 11],
        "fast items"
    );
    Ok(())
}

/// Workers with disjoint filters partition the queue: each gets only what its filter admits, and
/// together they lease every item.
pub async fn disjoint_filters_partition_the_queue(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_tagged(&p).await?;
    let default = drain(&p, TagFilter::DefaultOnly).await?;
    let gpu = drain(&p, TagFilter::Tags(tags(&["gpu", "GPU"]))).await?;
    let io = drain(&p, TagFilter::Tags(tags(&["io"]))).await?;
    ensure_eq!(
        (default, gpu, io),
        (vec![2], vec![3, 5], vec![4]),
        "items per worker"
    );
    ensure_eq!(
        p.get_queue_depths().await?.worker_queue,
        4,
        "every item is leased, none lost"
    );
    no_work(
        try_fetch_work(&p, &worker_with(TagFilter::Any)).await?,
        "everything is leased",
    )
}
