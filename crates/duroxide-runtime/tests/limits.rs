//! Limits at the edges, on a SQLite file: 1 MiB payloads, a 100,000-event history replayed from the
//! store, 10,000 KV operations in one execution, instance ids at the 256-byte limit and one past it,
//! and 1,000 queue messages waiting before the first dequeue. Each either works or fails with an error
//! that names the limit; nothing hangs (every wait is bounded) and nothing crashes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, Registries};
use duroxide_core::limits::{
    MAX_CUSTOM_STATUS_BYTES, MAX_INSTANCE_ID_BYTES, MAX_KV_KEYS, MAX_KV_VALUE_BYTES,
};
use duroxide_runtime::{ClientError, RuntimeOptions, Status};

const MIB: usize = 1 << 20;

/// Generous bound for the big cases in an unoptimised build on two cores; a hang fails here.
const BIG_PATIENCE: Duration = Duration::from_secs(90);

/// A deterministic 1 MiB text that is not one repeated byte (so truncation or mixing shows).
fn mebibyte(tag: char) -> String {
    let mut s = String::with_capacity(MIB);
    let mut i = 0u32;
    while s.len() < MIB {
        s.push(tag);
        s.push_str(&i.to_string());
        i += 1;
    }
    s.truncate(MIB);
    s
}

/// Peak resident memory of this process, for the report (Linux only; `None` elsewhere).
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

async fn file_env(reg: &Registries, options: RuntimeOptions) -> (tempfile::TempDir, Env) {
    let dir = tempfile::tempdir().unwrap();
    let provider = common::file(&dir.path().join("limits.db"));
    let env = Env::start(provider, reg, options).await;
    (dir, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_payloads_travel_intact() {
    let mut reg = Registries::new();
    reg.activity(
        "Reverse",
        |_, input| async move { Ok(input.chars().rev().collect()) },
    )
    .orchestration("BigPayloads", |ctx, input| async move {
        // 1 MiB input in, 1 MiB activity input and output, 1 MiB event, 1 MiB output.
        let reversed = ctx.schedule_activity("Reverse", input.clone()).await?;
        let event = ctx.wait_for_event("big").await;
        if reversed.chars().rev().collect::<String>() != input {
            return Err("the activity's 1 MiB round trip changed the data".into());
        }
        Ok(format!("{}|{}", event.len(), event))
    })
    .orchestration("TooBigStatus", |ctx, _| async move {
        ctx.set_custom_status("s".repeat(MAX_CUSTOM_STATUS_BYTES + 1));
        Ok("unreachable".to_string())
    })
    .orchestration("TooBigKv", |ctx, _| async move {
        ctx.set_kv_value("big", "v".repeat(MAX_KV_VALUE_BYTES + 1));
        Ok("unreachable".to_string())
    });
    let (_dir, env) = file_env(&reg, common::options()).await;
    let input = mebibyte('i');
    let event = mebibyte('e');
    env.client
        .start_orchestration("big-1", "BigPayloads", &input)
        .await
        .unwrap();
    env.client.raise_event("big-1", "big", &event).await.unwrap();
    let state = env
        .client
        .wait_for_orchestration("big-1", BIG_PATIENCE)
        .await
        .unwrap();
    assert_eq!(state.status, Status::Completed, "{:?}", state.error);
    let output = state.output.unwrap();
    assert_eq!(output, format!("{MIB}|{event}"), "the 1 MiB output differs");
    let history = env.history("big-1", 1).await;
    assert!(
        history.iter().any(|e| e.data_json().len() > MIB),
        "history keeps the 1 MiB values"
    );

    // Documented limits below 1 MiB fail the orchestration, naming the limit.
    env.client
        .start_orchestration("big-status", "TooBigStatus", "")
        .await
        .unwrap();
    let error = env.failed("big-status").await;
    assert!(error.contains("MAX_CUSTOM_STATUS_BYTES"), "{error}");
    env.client
        .start_orchestration("big-kv", "TooBigKv", "")
        .await
        .unwrap();
    let error = env.failed("big-kv").await;
    assert!(error.contains("MAX_KV_VALUE_BYTES"), "{error}");
    eprintln!("1 MiB payloads: ok; peak RSS {:?} MiB", peak_rss_mib());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_event_history_is_written_and_replayed_from_the_store() {
    const EVENTS: u64 = 100_000;
    let mut reg = Registries::new();
    reg.orchestration("LongHistory", |ctx, input| async move {
        let n: u64 = input.parse().map_err(|e| format!("{e}"))?;
        // Each KV set is one recorded event; a hundred keys stay far inside MAX_KV_KEYS.
        for i in 0..n {
            ctx.set_kv_value(&format!("k{}", i % 100), i.to_string());
        }
        // A second turn: with the instance cache disabled it replays all n events from the store.
        ctx.schedule_timer(Duration::from_millis(1)).await;
        let all = ctx.get_kv_all_values();
        Ok(format!("{} keys, k99={}", all.len(), all["k99"]))
    });
    // A cache too small for this history forces the full replay the test is about.
    let options = RuntimeOptions {
        cache_max_events: 1_000,
        orchestrator_lock_timeout: Duration::from_secs(60),
        ..common::options()
    };
    let (_dir, env) = file_env(&reg, options).await;
    let started = std::time::Instant::now();
    env.client
        .start_orchestration("long-history", "LongHistory", &EVENTS.to_string())
        .await
        .unwrap();
    let state = env
        .client
        .wait_for_orchestration("long-history", BIG_PATIENCE)
        .await
        .unwrap();
    assert_eq!(state.status, Status::Completed, "{:?}", state.error);
    assert_eq!(
        state.output.as_deref(),
        Some(format!("100 keys, k99={}", EVENTS - 1).as_str())
    );
    let stats = env
        .client
        .get_orchestration_stats("long-history")
        .await
        .unwrap()
        .unwrap();
    // Started + n KV sets + timer created + fired + completed.
    assert_eq!(stats.history_event_count, EVENTS + 4);
    assert_eq!(env.history("long-history", 1).await.len() as u64, EVENTS + 4);
    eprintln!(
        "{}-event history: written, replayed and read back in {:.1?}; peak RSS {:?} MiB",
        stats.history_event_count,
        started.elapsed(),
        peak_rss_mib()
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_kv_operations_in_one_execution() {
    const OPS: u64 = 10_000;
    let mut reg = Registries::new();
    reg.orchestration("KvStorm", |ctx, input| async move {
        let n: u64 = input.parse().map_err(|e| format!("{e}"))?;
        let mut model: BTreeMap<String, String> = BTreeMap::new();
        let mut reads = 0u64;
        for i in 0..n {
            let key = format!("key-{}", (i * 7919) % 120);
            match i % 10 {
                0..=5 => {
                    ctx.set_kv_value(&key, format!("v{i}"));
                    model.insert(key, format!("v{i}"));
                }
                6 | 7 => {
                    reads += 1;
                    if ctx.get_kv_value(&key) != model.get(&key).cloned() {
                        return Err(format!("read {i} of {key} disagrees with the model"));
                    }
                }
                8 => {
                    ctx.clear_kv_value(&key);
                    model.remove(&key);
                }
                // Mid-way through each thousand, so the run ends with keys in place.
                _ if i % 1000 == 499 => {
                    ctx.clear_all_kv_values();
                    model.clear();
                }
                _ => {
                    reads += 1;
                    if ctx.get_kv_length() != model.len() {
                        return Err(format!("length at {i} disagrees with the model"));
                    }
                }
            }
        }
        let digest: Vec<String> = model.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Ok(format!(
            "{reads} reads, {} keys: {}",
            model.len(),
            digest.join(",")
        ))
    })
    .orchestration("KvTooManyKeys", |ctx, _| async move {
        for k in 0..=MAX_KV_KEYS {
            ctx.set_kv_value(&format!("over-{k}"), "x");
        }
        Ok("unreachable".to_string())
    });
    let (_dir, env) = file_env(&reg, common::options()).await;
    env.client
        .start_orchestration("kv-storm", "KvStorm", &OPS.to_string())
        .await
        .unwrap();
    let state = env
        .client
        .wait_for_orchestration("kv-storm", BIG_PATIENCE)
        .await
        .unwrap();
    assert_eq!(state.status, Status::Completed, "{:?}", state.error);
    // What clients read matches what the code saw last.
    let entries = env.client.provider().get_kv_entries("kv-storm").await.unwrap();
    let output = state.output.unwrap();
    let sorted: BTreeMap<&str, &str> = entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    let digest: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert!(
        output.ends_with(&format!("{} keys: {}", entries.len(), digest.join(","))),
        "{output} vs {entries:?}"
    );
    assert!(!entries.is_empty());

    env.client
        .start_orchestration("kv-too-many", "KvTooManyKeys", "")
        .await
        .unwrap();
    let error = env.failed("kv-too-many").await;
    assert!(error.contains("MAX_KV_KEYS"), "{error}");
    let summary = output.split(':').next().unwrap_or_default();
    eprintln!("10,000 KV operations: {summary}; over the key limit: {error}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_ids_at_the_limit_work_and_one_byte_more_is_refused() {
    let mut reg = Registries::new();
    reg.activity(
        "Id",
        |ctx, _| async move { Ok(ctx.instance_id().len().to_string()) },
    )
    .orchestration("AtLimit", |ctx, input| async move {
        let len = ctx.schedule_activity("Id", "").await?;
        if input == "with-child" {
            // A derived child id is longer than the parent's: it must work or fail clearly.
            let child = ctx.schedule_sub_orchestration("Leaf", "").await?;
            return Ok(format!("{len} {child}"));
        }
        Ok(len)
    })
    .orchestration("Leaf", |_, _| async move { Ok("leaf".to_string()) })
    .orchestration("ChildTooLong", |ctx, _| async move {
        let id = "c".repeat(MAX_INSTANCE_ID_BYTES + 1);
        ctx.schedule_sub_orchestration_with_id("Leaf", &id, "").await
    });
    let (_dir, env) = file_env(&reg, common::options()).await;

    // Exactly at the limit, in bytes: multi-byte characters count by their UTF-8 length.
    let ascii = "a".repeat(MAX_INSTANCE_ID_BYTES);
    let multibyte = format!("{}{}", "é".repeat(MAX_INSTANCE_ID_BYTES / 2 - 1), "zz");
    assert_eq!(multibyte.len(), MAX_INSTANCE_ID_BYTES);
    for id in [&ascii, &multibyte] {
        env.client.start_orchestration(id, "AtLimit", "").await.unwrap();
        assert_eq!(env.completed(id).await, MAX_INSTANCE_ID_BYTES.to_string());
        env.client.raise_event(id, "late", "").await.unwrap();
        assert_eq!(env.client.get_instance_info(id).await.unwrap().instance_id, *id);
    }

    // One byte more is refused by every client call, with an error naming the limit; nothing is stored.
    let too_long = "b".repeat(MAX_INSTANCE_ID_BYTES + 1);
    let refused = [
        env.client
            .start_orchestration(&too_long, "AtLimit", "")
            .await
            .unwrap_err(),
        env.client.raise_event(&too_long, "e", "").await.unwrap_err(),
        env.client.get_status(&too_long).await.unwrap_err(),
    ];
    for error in refused {
        assert!(matches!(error, ClientError::InvalidInput(_)), "{error:?}");
        assert!(error.to_string().contains("256"), "{error}");
    }
    assert_eq!(env.client.list_all_instances().await.unwrap().len(), 2);

    // From inside an orchestration: an explicit child id past the limit fails the parent clearly.
    env.client
        .start_orchestration("child-too-long", "ChildTooLong", "")
        .await
        .unwrap();
    let error = env.failed("child-too-long").await;
    assert!(error.contains("256"), "{error}");

    // A parent at the limit: its derived child id is shortened to fit (a cut of the parent id and a
    // hash of all of it), so the child is an ordinary, addressable instance.
    let parent = "p".repeat(MAX_INSTANCE_ID_BYTES);
    env.client
        .start_orchestration(&parent, "AtLimit", "with-child")
        .await
        .unwrap();
    assert_eq!(env.completed(&parent).await, "256 leaf");
    let tree = env.client.get_instance_tree(&parent).await.unwrap();
    let child = tree
        .iter()
        .find(|id| *id != &parent)
        .expect("the child is in the tree");
    assert!(child.len() <= MAX_INSTANCE_ID_BYTES, "{child}");
    assert!(child.contains("::sub::"), "{child}");
    let status = env.client.get_status(child).await.unwrap();
    assert_eq!(status.status, Status::Completed);
    env.client.delete_instance(&parent, false).await.unwrap();
    assert!(env
        .client
        .provider()
        .get_instance_info(child)
        .await
        .unwrap()
        .is_none());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_queued_messages_before_the_first_dequeue() {
    const MESSAGES: usize = 1_000;
    let mut reg = Registries::new();
    reg.orchestration("Drain", |ctx, input| async move {
        let n: usize = input.parse().map_err(|e| format!("{e}"))?;
        // Nothing is dequeued until this event: every message waits in the store first.
        ctx.wait_for_event("start").await;
        let mut previous: Option<usize> = None;
        for _ in 0..n {
            let data = ctx.dequeue_event("q").await;
            let i: usize = data.parse().map_err(|e| format!("{data:?}: {e}"))?;
            if previous.is_some_and(|p| i != p + 1) || (previous.is_none() && i != 0) {
                return Err(format!("message {i} arrived after {previous:?}"));
            }
            previous = Some(i);
        }
        Ok(format!("{n} in order"))
    });
    let dir = tempfile::tempdir().unwrap();
    let provider = common::file(&dir.path().join("limits.db"));
    let client = duroxide_runtime::Client::new(provider.clone());
    // "cold": everything is queued before any runtime exists, so its first turn gets 1,002 messages;
    // "warm": the runtime is already waiting on the gate while the messages arrive.
    let send = |id: &'static str| {
        let client = client.clone();
        async move {
            client
                .start_orchestration(id, "Drain", &MESSAGES.to_string())
                .await
                .unwrap();
            for i in 0..MESSAGES {
                client.enqueue_event(id, "q", &i.to_string()).await.unwrap();
            }
            client.raise_event(id, "start", "").await.unwrap();
        }
    };
    send("drain-cold").await;
    let env = Env::start(provider, &reg, common::options()).await;
    send("drain-warm").await;
    for id in ["drain-cold", "drain-warm"] {
        let state = env.client.wait_for_orchestration(id, BIG_PATIENCE).await.unwrap();
        assert_eq!(state.status, Status::Completed, "{id}: {:?}", state.error);
        assert_eq!(state.output.as_deref(), Some("1000 in order"), "{id}");
    }
    let depths = env.client.get_queue_depths().await.unwrap();
    assert_eq!(depths.orchestrator_queue, 0, "every message was consumed");
    env.shutdown().await;
}
