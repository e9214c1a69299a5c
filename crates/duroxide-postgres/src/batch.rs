//! Group commit for acks: concurrent acks share one transaction, so one WAL flush makes all of them
//! durable, and an ack that fails in a shared transaction never fails another.
//!
//! Why: every ack commits with `synchronous_commit` on, and a commit waits for its WAL flush (about
//! 0.1 to 0.2 ms here). On shared connections (see `mux`) statements run one after another, so a
//! connection spent a third of its time waiting for flushes, with the fetches queued behind each ack
//! waiting too (sampled `pg_stat_activity` in a chain of activities: IO:WALSync and LWLock:WALWrite in
//! 46% of the samples). Here acks go to connections of their own, and the acks that arrive while one
//! batch commits wait for the next and are sent together, pipelined: `BEGIN`, each ack's own
//! statement, `COMMIT`. Nothing about an ack changes but its transaction: the same statement, the
//! same checks, the same effects, and it returns only once the shared commit is durable.
//!
//! Isolation: if any statement of a batch fails (an ack for a history event that already exists, a
//! deadlock between stale acks), the whole transaction rolls back and every ack of the batch runs
//! again on its own, so each gets exactly the outcome it would have had alone. If the connection fails
//! before the commit is known, every ack of the batch fails as retryable; acks are idempotent, so a
//! retry of an ack that did commit succeeds.
//!
//! Ack connections also carry other statements: a fetch routed after an ack runs on its connection,
//! and two batches may share one. A batch's requests therefore go out as one group through the
//! connection's send gate (`Conn::send_together`): a statement sent in the middle of the group would
//! run inside the batch's transaction, return before it committed (or with it rolled back), and a
//! fetch's `synchronous_commit = off` would apply to the whole batch's commit.
//!
//! A batch holds the row locks of its acks' instances until its commit, so batches stay small
//! ([`MAX_BATCH`]) and a lone ack runs as it would alone (no `BEGIN`, no `COMMIT`).
//!
//! Activities' plain completions, the most common ack, are merged: a batch with two or more sends
//! them as one statement that takes each completion's arguments as elements of arrays and tags every
//! row it returns with the completion's position (its last column), so each ack still gets its own
//! rows (`Completion`, migration 5). Most of a call's server time is the call itself, not its rows.
//! When the batch fails, each completion runs alone as its own statement, as every other ack does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use duroxide_core::provider::ProviderError;
use tokio::sync::{oneshot, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::mux::{Conn, Mux, Step};

/// A statement parameter the batch owns (a batch runs other callers' statements).
pub(crate) type Param = Box<dyn ToSql + Send + Sync>;

/// Most acks in one transaction.
const MAX_BATCH: usize = 32;

/// What a caller gets back: its rows, or why its statement (or the batch) failed.
pub(crate) enum Failure {
    Sql(tokio_postgres::Error),
    Provider(ProviderError),
}

type Reply = Result<Vec<Row>, Failure>;

/// Called once a job's statement was sent, with the connection it was sent on.
pub(crate) type Sent = Box<dyn FnOnce(&Arc<Conn>) + Send + Sync>;

/// An activity's plain completion, which a batch merges with the others it carries (see the module
/// documentation). The ack's own statement (`Committer::run`'s `sql`) does the same for one.
pub(crate) struct Completion {
    /// The merged statement: `(ids, secrets, instances, payloads, lease secrets, lease ms)`, each an
    /// array with one element per completion, returning rows whose last column is the 1-based
    /// position of the completion they answer.
    pub(crate) merged_sql: String,
    pub(crate) id: i64,
    pub(crate) secret: Uuid,
    pub(crate) instance_id: String,
    pub(crate) payload: String,
    pub(crate) lease_secret: Option<Uuid>,
    pub(crate) lease_ms: Option<i64>,
}

struct Job {
    operation: &'static str,
    completion: Option<Completion>,
    /// Its commit must wait for the WAL flush (see `durability`).
    waits: bool,
    sent: Option<Sent>,
    sql: String,
    params: Vec<Param>,
    reply: oneshot::Sender<Reply>,
}

/// The acks waiting for a batch, and the connections they commit on.
pub(crate) struct Committer {
    mux: Mux,
    queue: Mutex<VecDeque<Job>>,
    /// One permit per batch in flight (per ack connection).
    permits: Semaphore,
    /// Batches whose transaction failed, whose acks then ran one by one.
    reruns: AtomicU64,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("mux", &self.mux)
            .finish_non_exhaustive()
    }
}

impl Committer {
    /// `connections`: batches in flight at once, each on a connection of its own.
    pub(crate) fn new(mux: Mux, connections: usize) -> Committer {
        Committer {
            mux,
            queue: Mutex::new(VecDeque::new()),
            permits: Semaphore::new(connections.max(1)),
            reruns: AtomicU64::new(0),
        }
    }

    /// Batches so far whose transaction failed as a whole (a statement of one of its acks failed),
    /// whose acks then ran one by one.
    pub(crate) fn reruns(&self) -> u64 {
        self.reruns.load(Ordering::Relaxed)
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `sql` in the next batch and returns its rows once the batch committed; with `waits`, once
    /// the commit is flushed (a batch waits for its flush if any of its acks does). `prepared` counts
    /// a round trip for each statement prepared on a connection for the first time, `sent` one per
    /// round trip of a batch.
    /// `sent` runs as soon as the statement is on its way (before its commit), with its connection:
    /// a statement sent there afterwards runs after this one's commit.
    /// `completion`: the same ack as arguments that a batch merges (see [`Completion`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run(
        &self,
        operation: &'static str,
        sql: &str,
        params: Vec<Param>,
        completion: Option<Completion>,
        waits: bool,
        sent: Option<Sent>,
        counter: &(dyn Fn() + Sync),
    ) -> Reply {
        let (reply, mut replied) = oneshot::channel();
        self.queue().push_back(Job {
            operation,
            completion,
            waits,
            sent,
            sql: sql.to_owned(),
            params,
            reply,
        });
        loop {
            // Whoever gets a permit sends what is queued (its own ack, if nobody took it yet).
            tokio::select! {
                biased;
                result = &mut replied => {
                    return result.unwrap_or_else(|_| Err(Failure::Provider(ProviderError::retryable(
                        operation,
                        "the batch carrying this ack was dropped",
                    ))));
                }
                permit = self.permits.acquire() => {
                    let Ok(_permit) = permit else {
                        continue;
                    };
                    let jobs: Vec<Job> = {
                        let mut queue = self.queue();
                        let take = queue.len().min(MAX_BATCH);
                        queue.drain(..take).collect()
                    };
                    if jobs.is_empty() {
                        // Another batch took this ack; wait for it.
                        drop(_permit);
                        return (&mut replied).await.unwrap_or_else(|_| {
                            Err(Failure::Provider(ProviderError::retryable(
                                operation,
                                "the batch carrying this ack was dropped",
                            )))
                        });
                    }
                    self.send(jobs, counter).await;
                }
            }
        }
    }

    /// Commits `jobs` together (or alone, after a failure) and replies to each.
    async fn send(&self, mut jobs: Vec<Job>, counter: &(dyn Fn() + Sync)) {
        let operation = jobs[0].operation;
        let conn = match self.mux.lease(operation).await {
            Ok(conn) => conn,
            Err(err) => return reply_all(jobs, &err),
        };
        let mut statements = Vec::with_capacity(jobs.len());
        for job in &jobs {
            match conn.statement(&job.sql).await {
                Ok((statement, prepared)) => {
                    if prepared {
                        counter();
                    }
                    statements.push(statement);
                }
                Err(err) => return reply_all(jobs, &crate::error::db_error(operation, err)),
            }
        }
        counter();
        let client = conn.client();
        let hooks: Vec<Sent> = jobs.iter_mut().filter_map(|job| job.sent.take()).collect();
        let shared = conn.conn().clone();
        let on_sent = move || {
            for hook in hooks {
                hook(&shared);
            }
        };
        let waits = jobs.iter().any(|job| job.waits);
        if jobs.len() == 1 && waits {
            let job = jobs.into_iter().next().expect("one job");
            let param_refs = params(&job.params);
            let step: Step<'_, _> = Box::pin(client.query(&statements[0], &param_refs));
            let result = conn
                .send_together(vec![step], on_sent)
                .await
                .pop()
                .expect("the statement's result")
                .map_err(Failure::Sql);
            let _ = job.reply.send(result);
            return;
        }

        // Two or more completions go as one statement, in the place of the first.
        let merged = Merged::of(&mut jobs);
        let merged_statement = match &merged {
            Some(merged) => match conn.statement(&merged.sql).await {
                Ok((statement, prepared)) => {
                    if prepared {
                        counter();
                    }
                    Some(statement)
                }
                Err(err) => return reply_all(jobs, &crate::error::db_error(operation, err)),
            },
            None => None,
        };
        let merged_params = merged.as_ref().map(Merged::params);

        // BEGIN; every ack; COMMIT — sent back to back in this order. (A lone ack that need not wait
        // for its flush goes this way too: the setting is the transaction's.)
        let param_refs: Vec<Vec<&(dyn ToSql + Sync)>> = jobs.iter().map(|job| params(&job.params)).collect();
        let mut steps: Vec<Step<'_, _>> = Vec::with_capacity(jobs.len() + 2);
        let begin = if waits {
            "BEGIN"
        } else {
            "BEGIN; SET LOCAL synchronous_commit TO off"
        };
        steps.push(Box::pin(simple(client, begin)));
        // Which step answers each job: its own, or the merged one.
        let mut answered_by = Vec::with_capacity(jobs.len());
        let mut merged_step = None;
        for (i, (statement, params)) in statements.iter().zip(&param_refs).enumerate() {
            match (&merged, &merged_statement, &merged_params) {
                (Some(merged), Some(statement), Some(params)) if merged.positions.contains(&i) => {
                    if merged_step.is_none() {
                        merged_step = Some(steps.len() - 1);
                        steps.push(Box::pin(client.query(statement, params)));
                    }
                }
                _ => {
                    answered_by.push((i, steps.len() - 1));
                    steps.push(Box::pin(client.query(statement, params)));
                }
            }
        }
        steps.push(Box::pin(simple(client, "COMMIT")));
        let mut results = conn.send_together(steps, on_sent).await;
        let commit = results.pop().expect("the commit's result");
        let begin = results.remove(0);
        let all_ok = results.iter().all(Result::is_ok);
        match (begin, commit) {
            (Ok(_), Ok(_)) if all_ok => {
                let mut replies: Vec<Option<Reply>> = jobs.iter().map(|_| None).collect();
                let mut results: Vec<Option<Vec<Row>>> = results.into_iter().map(Result::ok).collect();
                for (job, step) in answered_by {
                    replies[job] = results[step].take().map(Ok);
                }
                if let (Some(merged), Some(step)) = (&merged, merged_step) {
                    let rows = results[step].take().unwrap_or_default();
                    for (job, rows) in merged.split(rows) {
                        replies[job] = Some(rows);
                    }
                }
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let reply = reply.unwrap_or_else(|| {
                        Err(Failure::Provider(ProviderError::permanent(
                            job.operation,
                            "the batch returned no result for this ack (a bug in the provider)",
                        )))
                    });
                    let _ = job.reply.send(reply);
                }
            }
            (Ok(_), Ok(_)) => {
                // A statement failed and the transaction rolled back: each ack again, on its own.
                self.reruns.fetch_add(1, Ordering::Relaxed);
                // (Each statement is its own transaction, waiting for its flush; they are still sent
                // back to back.)
                counter();
                let steps: Vec<Step<'_, _>> = statements
                    .iter()
                    .zip(&param_refs)
                    .map(|(statement, params)| -> Step<'_, _> { Box::pin(client.query(statement, params)) })
                    .collect();
                let results = conn.send_together(steps, || {}).await;
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result.map_err(Failure::Sql));
                }
            }
            (Err(err), _) | (_, Err(err)) => {
                // The connection failed: whether the batch committed is unknown.
                reply_all(jobs, &crate::error::db_error(operation, err));
            }
        }
    }
}

/// The completions of a batch, sent as one statement (see [`Completion`]).
struct Merged {
    sql: String,
    /// The jobs merged, by index in the batch; position `k + 1` in the statement is `positions[k]`.
    positions: Vec<usize>,
    ids: Vec<i64>,
    secrets: Vec<Uuid>,
    instances: Vec<String>,
    payloads: Vec<String>,
    lease_secrets: Vec<Option<Uuid>>,
    lease_ms: Vec<Option<i64>>,
}

impl Merged {
    /// The completions of `jobs` when there are at least two (with the same merged statement),
    /// moved out of them (a job that runs alone uses its own statement and parameters).
    fn of(jobs: &mut [Job]) -> Option<Merged> {
        let sql = jobs
            .iter()
            .find_map(|job| job.completion.as_ref())?
            .merged_sql
            .clone();
        let count = jobs
            .iter()
            .filter(|job| job.completion.as_ref().is_some_and(|c| c.merged_sql == sql))
            .count();
        if count < 2 {
            return None;
        }
        let mut merged = Merged {
            sql,
            positions: Vec::new(),
            ids: Vec::new(),
            secrets: Vec::new(),
            instances: Vec::new(),
            payloads: Vec::new(),
            lease_secrets: Vec::new(),
            lease_ms: Vec::new(),
        };
        for (i, job) in jobs.iter_mut().enumerate() {
            let Some(c) = job.completion.take_if(|c| c.merged_sql == merged.sql) else {
                continue;
            };
            merged.positions.push(i);
            merged.ids.push(c.id);
            merged.secrets.push(c.secret);
            merged.instances.push(c.instance_id);
            merged.payloads.push(c.payload);
            merged.lease_secrets.push(c.lease_secret);
            merged.lease_ms.push(c.lease_ms);
        }
        Some(merged)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.ids,
            &self.secrets,
            &self.instances,
            &self.payloads,
            &self.lease_secrets,
            &self.lease_ms,
        ]
    }

    /// The merged statement's rows, as each merged job's (by index in the batch). A job without
    /// rows gets an error: the statement answers every position.
    fn split(&self, rows: Vec<Row>) -> Vec<(usize, Reply)> {
        let mut split: Vec<Vec<Row>> = self.positions.iter().map(|_| Vec::new()).collect();
        for row in rows {
            let position = row.try_get::<_, i32>(row.len() - 1).ok();
            let slot = position
                .and_then(|p| usize::try_from(p).ok())
                .and_then(|p| p.checked_sub(1))
                .and_then(|k| split.get_mut(k));
            if let Some(slot) = slot {
                slot.push(row);
            }
        }
        self.positions
            .iter()
            .zip(split)
            .map(|(&job, rows)| {
                let reply = if rows.is_empty() {
                    Err(Failure::Provider(ProviderError::permanent(
                        "ack_work_item",
                        "the merged completion returned no row for this ack (a bug in the provider)",
                    )))
                } else {
                    Ok(rows)
                };
                (job, reply)
            })
            .collect()
    }
}

fn params(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

async fn simple(client: &Client, sql: &'static str) -> Result<Vec<Row>, tokio_postgres::Error> {
    client.batch_execute(sql).await.map(|()| Vec::new())
}

fn reply_all(jobs: Vec<Job>, error: &ProviderError) {
    for job in jobs {
        let _ = job.reply.send(Err(Failure::Provider(error.clone())));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

    use super::*;
    use crate::connection::{test_target, Target, NO_TEST_SERVER};

    async fn admin_connection() -> (Target, Client) {
        let target = test_target();
        let admin = target.connect_one().await.expect(NO_TEST_SERVER);
        (target, admin)
    }

    /// `synchronous_commit` as the job's statement saw it.
    async fn setting_seen(committer: &Committer, waits: bool) -> String {
        let rows = committer
            .run(
                "test",
                "SELECT current_setting('synchronous_commit')",
                Vec::new(),
                None,
                waits,
                None,
                &|| {},
            )
            .await
            .unwrap_or_else(|_| panic!("the statement runs"));
        rows[0].get(0)
    }

    /// A batch skips waiting for its flush only when none of its acks must wait: alone, together with
    /// others that need not, but not beside one that must.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_waits_for_its_flush_when_any_of_its_acks_must() {
        let (target, admin) = admin_connection().await;
        let committer = Arc::new(Committer::new(Mux::new(target, 1), 1));
        assert_eq!(setting_seen(&committer, true).await, "on");
        assert_eq!(setting_seen(&committer, false).await, "off");

        for (first, second, expected) in [(false, true, "on"), (false, false, "off")] {
            // A batch in flight that waits for an advisory lock the test holds, so the next two acks
            // queue and then go together.
            let blocked = Blocked::start(&committer, &admin).await;
            let pair = [first, second].map(|waits| {
                let committer = committer.clone();
                tokio::spawn(async move { setting_seen(&committer, waits).await })
            });
            while committer.queue().len() < 2 {
                tokio::task::yield_now().await;
            }
            blocked.release(&admin).await;
            for ack in pair {
                assert_eq!(
                    ack.await.expect("an ack of the pair"),
                    expected,
                    "{first}, {second}"
                );
            }
        }
    }

    /// Completions queued together go as one merged statement, and each gets the rows of its own
    /// position; when the batch fails, each runs alone as its own statement.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn completions_in_one_batch_go_as_one_statement_each_with_its_rows() {
        let (target, admin) = admin_connection().await;
        let committer = Arc::new(Committer::new(Mux::new(target, 1), 1));
        let merged_sql = "SELECT 'merged'::text, u.id, u.position::integer
                          FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::uuid[],
                                      $6::bigint[]) WITH ORDINALITY
                               AS u(id, secret, instance, payload, lease, lease_ms, position)";
        for (other_sql, completions_via) in [
            ("SELECT 'other'::text, $1::bigint", "merged"),
            ("SELECT 'other'::text, 1 / ($1::bigint - $1::bigint)", "alone"),
        ] {
            let blocked = Blocked::start(&committer, &admin).await;
            let completions: Vec<_> = (10..13_i64)
                .map(|id| {
                    let committer = committer.clone();
                    tokio::spawn(async move {
                        let completion = Completion {
                            merged_sql: merged_sql.to_owned(),
                            id,
                            secret: Uuid::new_v4(),
                            instance_id: format!("i{id}"),
                            payload: "{}".to_owned(),
                            lease_secret: None,
                            lease_ms: None,
                        };
                        let params: Vec<Param> = vec![Box::new(id)];
                        let sql = "SELECT 'alone'::text, $1::bigint";
                        let rows = committer
                            .run("test", sql, params, Some(completion), true, None, &|| {})
                            .await
                            .unwrap_or_else(|_| panic!("completion {id} ran"));
                        let rows: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                        (id, rows)
                    })
                })
                .collect();
            let other = tokio::spawn({
                let committer = committer.clone();
                async move {
                    let params: Vec<Param> = vec![Box::new(7_i64)];
                    committer
                        .run("test", other_sql, params, None, true, None, &|| {})
                        .await
                        .is_ok()
                }
            });
            while committer.queue().len() < 4 {
                tokio::task::yield_now().await;
            }
            blocked.release(&admin).await;
            for completion in completions {
                let (id, rows) = completion.await.expect("a completion");
                assert_eq!(rows, vec![(completions_via.to_owned(), id)], "{other_sql}");
            }
            assert_eq!(
                other.await.expect("the other ack"),
                completions_via == "merged",
                "{other_sql}"
            );
        }
    }

    /// A batch in flight on the committer's only connection that waits for an advisory lock the
    /// test holds, so the acks run meanwhile queue up and then go together.
    struct Blocked {
        key: i64,
        batch: tokio::task::JoinHandle<()>,
    }

    impl Blocked {
        async fn start(committer: &Arc<Committer>, admin: &Client) -> Blocked {
            let key: i64 = rand_key();
            admin
                .execute("SELECT pg_advisory_lock($1)", &[&key])
                .await
                .expect("take the advisory lock");
            let batch = tokio::spawn({
                let committer = committer.clone();
                async move {
                    let params: Vec<Param> = vec![Box::new(key)];
                    let sql = "SELECT pg_advisory_xact_lock($1)::text";
                    assert!(committer
                        .run("test", sql, params, None, true, None, &|| {})
                        .await
                        .is_ok());
                }
            });
            while committer.permits.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
            Blocked { key, batch }
        }

        async fn release(self, admin: &Client) {
            admin
                .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
                .await
                .expect("release the advisory lock");
            self.batch.await.expect("the blocking batch");
        }
    }

    fn rand_key() -> i64 {
        i64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// Statements run on an ack connection while batches commit there (a fetch routed after an ack
    /// runs on its connection) are transactions of their own: when one returns, what it wrote is
    /// committed. Sent into the middle of a batch's pipeline, it would run inside the batch's
    /// transaction and return before that committed (or rolled back).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_beside_the_batches_commits_on_its_own() {
        let (target, admin) = admin_connection().await;
        // Named as the integration tests name theirs, so a later run drops it if this one dies.
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let random = uuid::Uuid::new_v4().simple().to_string();
        let schema = format!("dxtest_{secs}_{}_batch_{}", std::process::id(), &random[..8]);
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA \"{schema}\"; CREATE TABLE \"{schema}\".t (id bigint PRIMARY KEY)"
            ))
            .await
            .expect("create the test table");
        let insert = format!("INSERT INTO \"{schema}\".t VALUES ($1)");
        let committer = Arc::new(Committer::new(Mux::new(target.clone(), 1), 1));
        let next_id = Arc::new(AtomicI64::new(1));
        let done = Arc::new(AtomicBool::new(false));
        let batches: Vec<_> = (0..6)
            .map(|_| {
                let (committer, next_id, done, insert) =
                    (committer.clone(), next_id.clone(), done.clone(), insert.clone());
                tokio::spawn(async move {
                    while !done.load(Ordering::SeqCst) {
                        let id = next_id.fetch_add(1, Ordering::SeqCst);
                        let params: Vec<Param> = vec![Box::new(id)];
                        assert!(committer
                            .run("test", &insert, params, None, true, None, &|| {})
                            .await
                            .is_ok());
                    }
                })
            })
            .collect();
        let check = format!("SELECT count(*) FROM \"{schema}\".t WHERE id = $1");
        let mut not_yet_committed = 0;
        for _ in 0..2000 {
            let conn = committer.mux.lease("test").await.expect("connection");
            let id = next_id.fetch_add(1, Ordering::SeqCst);
            let (statement, _) = conn.statement(&insert).await.expect("prepare");
            conn.query(&statement, &[&id]).await.expect("insert");
            drop(conn);
            let seen: i64 = admin.query_one(&check, &[&id]).await.expect("check").get(0);
            if seen == 0 {
                not_yet_committed += 1;
            }
        }
        done.store(true, Ordering::SeqCst);
        for batch in batches {
            batch.await.expect("batch task");
        }
        admin
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await
            .expect("drop the test schema");
        assert_eq!(not_yet_committed, 0, "statements returned before their commit");
    }
}
