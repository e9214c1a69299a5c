//! Acks whose reply is lost after they committed: the provider reaches the server through a TCP proxy
//! that can swallow the server's replies and then cut every connection, as a network failure would.
//! What such an ack leased for this object's waiting fetches must not wait out its lease once the ack
//! is repeated.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide_core::provider::{
    ActivityRef, HistoryRecord, NewMessage, NewWorkItem, OrchestrationItem, Provider, ProviderError,
    ProviderErrorKind, TagFilter, TurnAck, WorkItemLease, WorkerFetch,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod common;

/// Forwards connections to the server; can swallow what the server sends (`mute`) and cut every open
/// connection (`cut`). New connections are forwarded normally after a cut.
struct Proxy {
    port: u16,
    mute: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    /// Cuts so far: a connection opened before the latest cut forwards nothing more, even when the
    /// cut ends the mute before the connection's task has seen it.
    cut_count: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let mute = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let cut_count = Arc::new(AtomicU64::new(0));
        let (mute_flag, cut_signal, cut_counter) = (mute.clone(), cuts.clone(), cut_count.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let mut cut = cut_signal.subscribe();
                cut.borrow_and_update();
                let mute = mute_flag.clone();
                let (cut_counter, opened_after) = (cut_counter.clone(), cut_counter.load(Ordering::SeqCst));
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = tokio::io::copy(&mut client_read, &mut server_write);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = server_read.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<(), std::io::Error>(());
                            }
                            let was_cut = cut_counter.load(Ordering::SeqCst) != opened_after;
                            if !mute.load(Ordering::SeqCst) && !was_cut {
                                client_write.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    // Either side closing, or a cut, drops both sockets.
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            mute,
            cuts,
            cut_count,
        }
    }

    fn cut(&self) {
        self.cut_count.fetch_add(1, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
        self.mute.store(false, Ordering::SeqCst);
    }
}

/// The server's address (from `DUROXIDE_PG_URL`).
fn server() -> SocketAddr {
    let config = server_config();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .expect("resolve the server")
        .next()
        .expect("an address")
}

/// A connection string for the server's database and role, through the proxy at `port`.
fn through_proxy(port: u16) -> String {
    let config = server_config();
    let mut conninfo = format!("host=127.0.0.1 port={port}");
    if let Some(user) = config.get_user() {
        conninfo.push_str(&format!(" user={user}"));
    }
    if let Some(db) = config.get_dbname() {
        conninfo.push_str(&format!(" dbname={db}"));
    }
    if let Some(password) = config.get_password() {
        let password = String::from_utf8_lossy(password)
            .replace('\\', "\\\\")
            .replace('\'', "\\'");
        conninfo.push_str(&format!(" password='{password}'"));
    }
    conninfo
}

fn server_config() -> tokio_postgres::Config {
    common::url().parse().expect("DUROXIDE_PG_URL")
}

fn worker(lock_timeout: Duration) -> WorkerFetch {
    WorkerFetch {
        lock_timeout,
        tag_filter: TagFilter::DefaultOnly,
        session: None,
    }
}

/// A first turn that schedules one activity (event 2).
fn turn_with_work(instance: &str, execution_id: u64) -> TurnAck {
    TurnAck {
        execution_id,
        history: vec![HistoryRecord {
            event_id: 1,
            kind: "Recorded".into(),
            payload: "{}".into(),
        }],
        name: Some("Orchestration".into()),
        worker_items: vec![NewWorkItem {
            activity: ActivityRef {
                instance_id: instance.into(),
                execution_id,
                event_id: 2,
            },
            payload: "{\"work\":2}".into(),
            session_id: None,
            tag: None,
        }],
        ..TurnAck::default()
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A provider reaching the server through a proxy, on a fresh schema, with its ack connection open
/// and the acks' statements prepared (so that a muted ack needs nothing but its own round trip), and
/// a direct connection to look at the tables.
struct Setup {
    proxy: Proxy,
    p: Arc<PostgresProvider>,
    direct: tokio_postgres::Client,
    schema: String,
}

impl Setup {
    async fn new(schemas: &common::Schemas) -> Setup {
        let schema = schemas.fresh();
        let proxy = Proxy::start(server()).await;
        let options = PostgresOptions::default().with_schema(schema.clone());
        let p = Arc::new(
            PostgresProvider::connect_with(&through_proxy(proxy.port), options)
                .await
                .unwrap_or_else(|err| common::no_server(&err)),
        );
        let direct = common::plain_client().await;
        let work = running_activity(&p, "warm-up").await;
        p.ack_work_item(&work.lock_token, Some(completion("warm-up")))
            .await
            .expect("the warm-up completion");
        // The turn that takes the completion (it may have gone to the stock), so nothing is left.
        let done = fetch_turn(&p).await;
        assert_eq!(done.instance.instance_id, "warm-up");
        ack_nothing(&p, &done).await;
        Setup {
            proxy,
            p,
            direct,
            schema,
        }
    }

    /// Waits until `sql` (one boolean) returns a row, and returns it.
    async fn when_committed(&self, sql: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(row) = self.direct.query_opt(sql, &[]).await.expect("look at the tables") {
                return row.get(0);
            }
            assert!(Instant::now() < deadline, "the ack never committed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs `ack` with the server's replies swallowed, waits until `committed` (one boolean, true when
    /// the ack leased what it should) returns a row, then cuts the connections: the ack must fail as
    /// retryable.
    async fn commit_without_reply<T: std::fmt::Debug + Send + 'static>(
        &self,
        committed: &str,
        ack: impl std::future::Future<Output = Result<T, ProviderError>> + Send + 'static,
    ) {
        self.proxy.mute.store(true, Ordering::SeqCst);
        let first = tokio::spawn(ack);
        assert!(
            self.when_committed(committed).await,
            "the ack leased for the idle fetch"
        );
        self.proxy.cut();
        let lost = first.await.expect("join");
        assert_eq!(
            lost.err().map(|e| e.kind),
            Some(ProviderErrorKind::Retryable),
            "a lost reply is retryable"
        );
    }
}

/// Repeats `call` while it fails as retryable (connections the cut closed), until `deadline`.
async fn until_answered<T, F, Fut>(deadline: Instant, mut call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    loop {
        match call().await {
            Err(err) if err.kind == ProviderErrorKind::Retryable => {
                assert!(Instant::now() < deadline, "the call kept failing: {err}");
            }
            answer => return answer,
        }
    }
}

/// What the fetch that was waiting (`first`) or the fetches after it (`again`, given the time left)
/// get before `deadline`: a look on a connection the cut closed fails as retryable, and the runtime
/// fetches again, as here.
async fn fetched_by<T, F, Fut>(
    deadline: Instant,
    first: Result<Option<T>, ProviderError>,
    what: &str,
    mut again: F,
) -> T
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, ProviderError>>,
{
    let mut fetched = first;
    loop {
        match fetched {
            Ok(Some(item)) => return item,
            Ok(None) => {}
            Err(err) => assert_eq!(err.kind, ProviderErrorKind::Retryable, "{err}"),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what} did not come well before the lost lease ran out"
        );
        fetched = again(left).await;
    }
}

/// A new instance whose first turn (acked normally) scheduled activity 2, leased to this caller.
async fn running_activity(p: &PostgresProvider, instance: &str) -> WorkItemLease {
    p.create_instance(common::start(instance)).await.expect("create");
    let item = fetch_turn(p).await;
    let first = turn_with_work(instance, item.instance.current_execution_id);
    p.ack_orchestration_item(&item.lock_token, first)
        .await
        .expect("the first turn");
    p.fetch_work_item(&worker(Duration::from_secs(30)), Duration::ZERO)
        .await
        .expect("fetch")
        .expect("the activity")
}

async fn fetch_turn(p: &PostgresProvider) -> OrchestrationItem {
    p.fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO)
        .await
        .expect("fetch")
        .expect("an instance with work")
}

/// Activity 2's completion for `instance`.
/// Acks `turn` with nothing in it (its messages are consumed, its lock released).
async fn ack_nothing(p: &PostgresProvider, turn: &OrchestrationItem) {
    let empty = TurnAck {
        execution_id: turn.instance.current_execution_id,
        ..TurnAck::default()
    };
    p.ack_orchestration_item(&turn.lock_token, empty)
        .await
        .unwrap_or_else(|e| panic!("acking {}: {e}", turn.instance_id));
}

fn completion(instance: &str) -> NewMessage {
    NewMessage {
        instance_id: instance.into(),
        payload: "{\"completed\":2}".into(),
        visible_at_ms: None,
        creates: None,
    }
}

/// What the runtime does after an ack failed as retryable.
#[derive(Clone, Copy)]
enum Then {
    /// Repeats it (it then reports success: the first attempt committed).
    Repeat,
    /// Gives up and abandons the turn (refused: the first attempt already released the instance).
    Abandon,
}

/// A turn's ack leases its new work item to the object's idle worker fetch; the ack commits but its
/// reply never arrives. When the runtime repeats the ack, the work item goes to the waiting fetch at
/// once, not after the lease the lost attempt took (a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_leased_by_an_ack_whose_reply_was_lost_is_handed_back_when_it_is_repeated() {
    work_leased_by_a_lost_ack(Then::Repeat).await;
}

/// As above, when the runtime abandons the turn instead of repeating its ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_leased_by_an_ack_whose_reply_was_lost_is_handed_back_when_the_turn_is_abandoned() {
    work_leased_by_a_lost_ack(Then::Abandon).await;
}

async fn work_leased_by_a_lost_ack(then: Then) {
    let schemas = common::Schemas::default();
    let setup = Setup::new(&schemas).await;
    let (p, schema) = (&setup.p, &setup.schema);
    p.create_instance(common::start("i1")).await.expect("create");
    let item = fetch_turn(p).await;
    let lease_lock = Duration::from_secs(60);
    let waiting = tokio::spawn({
        let p = p.clone();
        async move {
            p.fetch_work_item(&worker(lease_lock), Duration::from_secs(20))
                .await
        }
    });
    wait_until("the worker fetch waits between looks", || {
        p.stats().idle_fetches == 1
    })
    .await;

    let ack = turn_with_work("i1", item.instance.current_execution_id);
    // The ack commits (its work item appears, leased for the waiting fetch); its reply is swallowed.
    setup
        .commit_without_reply(
            &format!("SELECT lock_token IS NOT NULL FROM \"{schema}\".worker_queue WHERE instance_id = 'i1'"),
            {
                let (p, token, ack) = (p.clone(), item.lock_token.clone(), ack.clone());
                async move { p.ack_orchestration_item(&token, ack).await }
            },
        )
        .await;

    // The runtime repeats the ack (recognised as done) or abandons the turn (refused), and the item
    // goes to the fetch.
    let deadline = Instant::now() + Duration::from_secs(10);
    match then {
        Then::Repeat => until_answered(deadline, || {
            p.ack_orchestration_item(&item.lock_token, ack.clone())
        })
        .await
        .expect("the repeated ack is recognised as done"),
        Then::Abandon => {
            let abandoned =
                until_answered(deadline, || p.abandon_orchestration_item(&item.lock_token, None)).await;
            assert_eq!(abandoned.map_err(|e| e.kind), Err(ProviderErrorKind::LockLost));
        }
    }
    let first = waiting.await.expect("join");
    let request = worker(lease_lock);
    let lease = fetched_by(deadline, first, "the work item", |left| {
        p.fetch_work_item(&request, left)
    })
    .await;
    assert_eq!(lease.activity.event_id, 2);
    assert_eq!(lease.attempt, 1, "the lost attempt's lease was not counted");
    p.ack_work_item(&lease.lock_token, None)
        .await
        .expect("the new lease acks");
    assert_eq!(p.get_queue_depths().await.expect("depths").worker_queue, 0);
}

/// An activity's ack locks the instance its completion goes to for the object's idle orchestration
/// fetch; the ack commits but its reply never arrives. When the runtime repeats the ack (the work item
/// is gone, so it reports the lease lost), the instance goes to the waiting fetch at once, not after
/// the lock the lost attempt took (a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_locked_by_an_ack_whose_reply_was_lost_is_handed_back_when_it_is_repeated() {
    let schemas = common::Schemas::default();
    let setup = Setup::new(&schemas).await;
    let (p, schema) = (&setup.p, &setup.schema);
    let work = running_activity(p, "i1").await;
    let lock = Duration::from_secs(60);
    let waiting = tokio::spawn({
        let p = p.clone();
        async move { p.fetch_orchestration_item(lock, Duration::from_secs(20)).await }
    });
    wait_until("the orchestration fetch waits between looks", || {
        p.stats().idle_fetches == 1
    })
    .await;

    // The ack commits (the work item goes, the instance is locked for the waiting fetch); its reply
    // is swallowed.
    setup
        .commit_without_reply(
            &format!(
                "SELECT i.lock_token IS NOT NULL FROM \"{schema}\".instances AS i WHERE i.instance_id = 'i1' \
                 AND NOT EXISTS (SELECT 1 FROM \"{schema}\".worker_queue AS w WHERE w.instance_id = 'i1')"
            ),
            {
                let (p, token) = (p.clone(), work.lock_token.clone());
                async move { p.ack_work_item(&token, Some(completion("i1"))).await }
            },
        )
        .await;

    // The runtime repeats the ack: the completion is stored, so the item is gone (the result is
    // discarded as for a lost lease), and the instance goes to the fetch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let repeated = until_answered(deadline, || {
        p.ack_work_item(&work.lock_token, Some(completion("i1")))
    })
    .await;
    assert_eq!(
        repeated.map_err(|e| e.kind),
        Err(ProviderErrorKind::LockLost),
        "stored once"
    );
    let first = waiting.await.expect("join");
    let turn = fetched_by(deadline, first, "the instance", |left| {
        p.fetch_orchestration_item(lock, left)
    })
    .await;
    assert_eq!(turn.instance.instance_id, "i1");
    assert_eq!(turn.messages.len(), 1, "the completion, stored once");
    assert_eq!(turn.attempt, 1, "the lost attempt's lock was not counted");
    ack_nothing(p, &turn).await;
}
