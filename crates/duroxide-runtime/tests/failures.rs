//! Failures end to end: unregistered names, failing and panicking code, client errors for unknown or
//! invalid ids, invalid options, and wait timeouts.

mod common;

use std::time::Duration;

use common::{recorded, Env, Registries};
use duroxide_core::limits::MAX_INSTANCE_ID_BYTES;
use duroxide_runtime::{
    Client, ClientError, LogFormat, Runtime, RuntimeError, RuntimeOptions, Status, TagFilter,
};

/// Unregistered names are retried with backoff until `max_attempts`; two keeps these tests short.
fn two_attempts() -> RuntimeOptions {
    RuntimeOptions {
        max_attempts: 2,
        ..common::options()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_activity_fails_clearly_naming_it() {
    let mut reg = Registries::new();
    reg.orchestration("CallsMissing", |ctx, _| async move {
        ctx.schedule_activity("NoSuchActivity", "").await
    });
    let env = Env::start(common::memory(), &reg, two_attempts()).await;
    env.client
        .start_orchestration("missing-act", "CallsMissing", "")
        .await
        .unwrap();
    let error = env.failed("missing-act").await;
    assert!(
        error.contains("\"NoSuchActivity\"") && error.contains("not registered"),
        "{error}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_orchestration_fails_clearly_naming_it() {
    let reg = Registries::new();
    let env = Env::start(common::memory(), &reg, two_attempts()).await;
    env.client
        .start_orchestration("missing-orch", "NoSuchOrchestration", "")
        .await
        .unwrap();
    let error = env.failed("missing-orch").await;
    assert!(
        error.contains("\"NoSuchOrchestration\"") && error.contains("not registered"),
        "{error}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_version_fails_clearly_naming_it() {
    let mut reg = Registries::new();
    reg.orchestration("Versioned", |_, _| async move { Ok("v1".to_string()) });
    let env = Env::start(common::memory(), &reg, two_attempts()).await;
    env.client
        .start_orchestration_versioned("missing-ver", "Versioned", "", "9.9.9")
        .await
        .unwrap();
    let error = env.failed("missing-ver").await;
    assert!(
        error.contains("\"Versioned\"") && error.contains("9.9.9"),
        "{error}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_error_fails_the_await_with_its_message() {
    let mut reg = Registries::new();
    reg.activity("Broken", |_, _| async move { Err("disk full".to_string()) })
        .orchestration("Propagates", |ctx, _| async move {
            // `?` hands the activity's message to the orchestration's own failure.
            let value = ctx.schedule_activity("Broken", "").await?;
            Ok(value)
        })
        .orchestration("Fails", |_, input| async move { Err(format!("refused {input}")) });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("propagates-1", "Propagates", "")
        .await
        .unwrap();
    env.client
        .start_orchestration("fails-1", "Fails", "x")
        .await
        .unwrap();
    assert_eq!(env.failed("propagates-1").await, "disk full");
    assert_eq!(env.failed("fails-1").await, "refused x");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_never_started_instances_are_not_found_and_block_nothing() {
    let mut reg = Registries::new();
    reg.orchestration("Echo", |ctx, _| async move { Ok(ctx.wait_for_event("e").await) });
    let env = Env::memory(&reg).await;
    let client = &env.client;
    assert!(matches!(
        client.raise_event("ghost", "e", "").await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        client.enqueue_event("ghost", "q", "").await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        client.cancel_instance("ghost", "why").await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        client.get_instance_info("ghost").await,
        Err(ClientError::NotFound(_))
    ));
    assert_eq!(client.get_status("ghost").await.unwrap().status, Status::NotFound);
    assert!(client.get_orchestration_stats("ghost").await.unwrap().is_none());
    // The refused messages left nothing behind that could hold up real instances.
    client.start_orchestration("real", "Echo", "").await.unwrap();
    client.raise_event("real", "e", "delivered").await.unwrap();
    assert_eq!(env.completed("real").await, "delivered");
    assert_eq!(client.get_status("ghost").await.unwrap().status, Status::NotFound);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_and_names_are_invalid_input() {
    let client = Client::new(common::memory());
    // One byte over the documented 256-byte limit.
    let too_long = "x".repeat(257);
    for id in ["", too_long.as_str()] {
        let invalid = |r: Result<(), ClientError>| matches!(r, Err(ClientError::InvalidInput(_)));
        assert!(
            invalid(client.start_orchestration(id, "W", "").await),
            "start {id:?}"
        );
        assert!(invalid(client.raise_event(id, "e", "").await), "raise {id:?}");
        assert!(invalid(client.enqueue_event(id, "q", "").await), "enqueue {id:?}");
        assert!(invalid(client.cancel_instance(id, "r").await), "cancel {id:?}");
        assert!(matches!(
            client.get_status(id).await,
            Err(ClientError::InvalidInput(_))
        ));
        assert!(matches!(
            client.wait_for_orchestration(id, Duration::from_millis(10)).await,
            Err(ClientError::InvalidInput(_))
        ));
    }
    // The longest valid id works.
    let longest = "y".repeat(MAX_INSTANCE_ID_BYTES);
    client.start_orchestration(&longest, "W", "").await.unwrap();
    assert_eq!(client.get_status(&longest).await.unwrap().status, Status::Running);
    // Empty names and bad versions are refused too.
    for result in [
        client.start_orchestration("ok-id", "", "").await,
        client.raise_event(&longest, "", "").await,
        client.enqueue_event(&longest, "", "").await,
        client
            .start_orchestration_versioned("ok-id", "W", "", "1.x")
            .await,
    ] {
        assert!(matches!(result, Err(ClientError::InvalidInput(_))), "{result:?}");
    }
    assert!(matches!(
        client.list_instances_by_status("Sleeping").await,
        Err(ClientError::InvalidInput(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_runtime_options_are_errors() {
    let cases = [
        (
            "max_attempts",
            RuntimeOptions {
                max_attempts: 0,
                ..Default::default()
            },
        ),
        (
            "dispatcher_poll_interval",
            RuntimeOptions {
                dispatcher_poll_interval: Duration::ZERO,
                ..Default::default()
            },
        ),
        (
            "orchestrator_lock_timeout",
            RuntimeOptions {
                orchestrator_lock_timeout: Duration::ZERO,
                ..Default::default()
            },
        ),
        (
            "worker_lock_timeout",
            RuntimeOptions {
                worker_lock_timeout: Duration::ZERO,
                ..Default::default()
            },
        ),
        (
            "session_idle_timeout",
            RuntimeOptions {
                session_idle_timeout: Duration::ZERO,
                ..Default::default()
            },
        ),
        (
            "log_level",
            RuntimeOptions {
                log_level: Some("[[not a level".into()),
                log_format: LogFormat::Json,
                ..Default::default()
            },
        ),
        (
            "worker_node_id",
            RuntimeOptions {
                worker_node_id: Some(String::new()),
                ..Default::default()
            },
        ),
        (
            "worker_tag_filter",
            RuntimeOptions {
                worker_tag_filter: TagFilter::Tags(Vec::new()),
                ..Default::default()
            },
        ),
        (
            "worker_tag_filter",
            RuntimeOptions {
                worker_tag_filter: TagFilter::DefaultAnd(vec![String::new()]),
                ..Default::default()
            },
        ),
    ];
    for (option, options) in cases {
        let result = Runtime::start(common::memory(), Default::default(), Default::default(), options).await;
        match result {
            Err(RuntimeError::InvalidOptions(e)) => assert_eq!(e.option, option, "{e}"),
            Ok(runtime) => {
                runtime.shutdown(Duration::from_secs(1)).await;
                panic!("{option}: accepted an invalid value");
            }
        }
    }
    assert!(LogFormat::parse("yaml").is_err());
    assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_time_out() {
    let mut reg = Registries::new();
    reg.orchestration("Forever", |ctx, _| async move {
        Ok(ctx.wait_for_event("never").await)
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("forever", "Forever", "")
        .await
        .unwrap();
    recorded(&env.client, "forever", "ExternalSubscribed").await;
    let short = Duration::from_millis(100);
    assert_eq!(
        env.client.wait_for_orchestration("forever", short).await,
        Err(ClientError::Timeout)
    );
    assert_eq!(
        env.client.wait_for_kv_value("forever", "missing", short).await,
        Err(ClientError::Timeout)
    );
    assert_eq!(
        env.client
            .wait_for_status_change("forever", 0, Duration::from_millis(10), short)
            .await,
        Ok(None)
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_an_existing_instance_keeps_the_first_input() {
    let mut reg = Registries::new();
    reg.orchestration("Echo", |ctx, input| async move {
        let _ = ctx.wait_for_event("go").await;
        Ok(input)
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("dup", "Echo", "first")
        .await
        .unwrap();
    env.client
        .start_orchestration("dup", "Echo", "second")
        .await
        .unwrap();
    env.client.raise_event("dup", "go", "").await.unwrap();
    assert_eq!(env.completed("dup").await, "first");
    assert_eq!(env.client.list_executions("dup").await.unwrap(), [1]);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_breached_by_orchestration_code_fail_it() {
    let mut reg = Registries::new();
    reg.orchestration("HugeStatus", |ctx, _| async move {
        ctx.set_custom_status("x".repeat(duroxide_core::limits::MAX_CUSTOM_STATUS_BYTES + 1));
        Ok("unreachable".to_string())
    })
    .orchestration("HugeKv", |ctx, _| async move {
        ctx.set_kv_value("big", "x".repeat(duroxide_core::limits::MAX_KV_VALUE_BYTES + 1));
        Ok("unreachable".to_string())
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("huge-status", "HugeStatus", "")
        .await
        .unwrap();
    env.client
        .start_orchestration("huge-kv", "HugeKv", "")
        .await
        .unwrap();
    let status = env.failed("huge-status").await;
    assert!(
        status.starts_with("limit exceeded:") && status.contains("MAX_CUSTOM_STATUS_BYTES"),
        "{status}"
    );
    let kv = env.failed("huge-kv").await;
    assert!(
        kv.starts_with("limit exceeded:") && kv.contains("MAX_KV_VALUE_BYTES"),
        "{kv}"
    );
    env.shutdown().await;
}

/// Long enough for lock expiry (2 s below) and two attempts; without a live slot it never finishes.
const PANIC_PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_activity_fails_and_the_worker_keeps_running() {
    // One worker slot: if a panic took the slot down, nothing after it could run.
    let mut reg = Registries::new();
    reg.activity("Panics", |_, _| async move { panic!("activity exploded") })
        .activity("Fine", |_, _| async move { Ok("fine".to_string()) })
        .orchestration("SurvivesPanic", |ctx, _| async move {
            let failure = match ctx.schedule_activity("Panics", "").await {
                Ok(v) => return Err(format!("panicking activity returned {v}")),
                Err(e) => e,
            };
            let after = ctx.schedule_activity("Fine", "").await?;
            Ok(format!("{after} after: {failure}"))
        });
    let options = RuntimeOptions {
        worker_concurrency: 1,
        max_attempts: 2,
        worker_lock_timeout: Duration::from_secs(2),
        ..common::options()
    };
    let env = Env::start(common::memory(), &reg, options).await;
    env.client
        .start_orchestration("panic-act", "SurvivesPanic", "")
        .await
        .unwrap();
    let state = env
        .client
        .wait_for_orchestration("panic-act", PANIC_PATIENCE)
        .await
        .expect("the orchestration goes on after the panic");
    let output = state.output.unwrap_or_default();
    assert!(
        output.starts_with("fine after:") && output.contains("activity exploded"),
        "{output}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_orchestration_fails_and_the_dispatcher_keeps_running() {
    // One orchestration slot: if a panic took the slot down, no other instance could progress.
    let mut reg = Registries::new();
    reg.orchestration("Explodes", |_, _| async move { panic!("orchestration exploded") })
        .orchestration("Fine", |_, _| async move { Ok("fine".to_string()) });
    let options = RuntimeOptions {
        orchestration_concurrency: 1,
        max_attempts: 2,
        orchestrator_lock_timeout: Duration::from_secs(2),
        ..common::options()
    };
    let env = Env::start(common::memory(), &reg, options).await;
    env.client
        .start_orchestration("panic-orch", "Explodes", "")
        .await
        .unwrap();
    env.client
        .start_orchestration("after-panic", "Fine", "")
        .await
        .unwrap();
    let after = env
        .client
        .wait_for_orchestration("after-panic", PANIC_PATIENCE)
        .await
        .expect("other instances go on after the panic");
    assert_eq!(after.output.as_deref(), Some("fine"));
    let error = env.failed("panic-orch").await;
    assert!(error.contains("orchestration exploded"), "{error}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_later_turn_of_a_cached_instance_fails_it_after_its_history() {
    // The second turn runs on the cached engine with the history left out of the fetch; failing it
    // must still append after the stored events (the dispatcher reads the history it needs).
    let mut reg = Registries::new();
    reg.activity("Step", |_, x: String| async move { Ok(x) })
        .orchestration("LaterPanic", |ctx, _| async move {
            let first = ctx.schedule_activity("Step", "one").await?;
            if first == "one" {
                panic!("exploded in turn two");
            }
            Ok(first)
        });
    let env = Env::start(common::memory(), &reg, common::options()).await;
    env.client
        .start_orchestration("later-panic", "LaterPanic", "")
        .await
        .unwrap();
    let error = env.failed("later-panic").await;
    assert!(error.contains("exploded in turn two"), "{error}");
    let history = env.client.read_execution_history("later-panic", 1).await.unwrap();
    let ids: Vec<u64> = history.iter().map(|e| e.event_id).collect();
    // Started and scheduled from turn one; the failure follows them (the panicking turn's own events
    // are not committed).
    assert_eq!(ids, [1, 2, 3], "{history:?}");
    // Right the first time: no failed ack (a failure written at a wrong event id) on the way.
    assert_eq!(env.runtime.metrics_snapshot().provider_errors, 0);
    env.shutdown().await;
}
