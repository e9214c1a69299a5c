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
//! A batch holds the row locks of its acks' instances until its commit, so batches stay small
//! ([`MAX_BATCH`]) and a lone ack runs as it would alone (no `BEGIN`, no `COMMIT`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use duroxide_core::provider::ProviderError;
use tokio::sync::{oneshot, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::mux::{Conn, Mux};

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

struct Job {
    operation: &'static str,
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
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `sql` in the next batch and returns its rows once the batch committed. `prepared` counts
    /// a round trip for each statement prepared on a connection for the first time, `sent` one per
    /// round trip of a batch.
    /// `sent` runs as soon as the statement is on its way (before its commit), with its connection:
    /// a statement sent there afterwards runs after this one's commit.
    pub(crate) async fn run(
        &self,
        operation: &'static str,
        sql: &str,
        params: Vec<Param>,
        sent: Option<Sent>,
        counter: &(dyn Fn() + Sync),
    ) -> Reply {
        let (reply, mut replied) = oneshot::channel();
        self.queue().push_back(Job {
            operation,
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
        if jobs.len() == 1 {
            let job = jobs.into_iter().next().expect("one job");
            let param_refs = params(&job.params);
            let step: Step<'_> = Box::pin(client.query(&statements[0], &param_refs));
            let result = join_in_order(vec![step], on_sent)
                .await
                .pop()
                .expect("the statement's result")
                .map_err(Failure::Sql);
            let _ = job.reply.send(result);
            return;
        }

        // BEGIN; every ack; COMMIT — sent back to back in this order.
        let param_refs: Vec<Vec<&(dyn ToSql + Sync)>> = jobs.iter().map(|job| params(&job.params)).collect();
        let mut steps: Vec<Step<'_>> = Vec::with_capacity(jobs.len() + 2);
        steps.push(Box::pin(simple(client, "BEGIN")));
        for (statement, params) in statements.iter().zip(&param_refs) {
            steps.push(Box::pin(client.query(statement, params)));
        }
        steps.push(Box::pin(simple(client, "COMMIT")));
        let mut results = join_in_order(steps, on_sent).await;
        let commit = results.pop().expect("the commit's result");
        let begin = results.remove(0);
        let all_ok = results.iter().all(Result::is_ok);
        match (begin, commit) {
            (Ok(_), Ok(_)) if all_ok => {
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result.map_err(Failure::Sql));
                }
            }
            (Ok(_), Ok(_)) => {
                // A statement failed and the transaction rolled back: each ack again, on its own.
                // (Each statement is its own transaction; they are still sent back to back.)
                counter();
                let steps: Vec<Step<'_>> = statements
                    .iter()
                    .zip(&param_refs)
                    .map(|(statement, params)| -> Step<'_> { Box::pin(client.query(statement, params)) })
                    .collect();
                let results = join_in_order(steps, || {}).await;
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

type Step<'a> = Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

fn params(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

async fn simple(client: &Client, sql: &'static str) -> Result<Vec<Row>, tokio_postgres::Error> {
    client.batch_execute(sql).await.map(|()| Vec::new())
}

/// Polls the futures in order until all are done. Each sends its request on its first poll, so the
/// requests reach the connection in this order, without waiting for one another's replies; `sent`
/// runs once they all went out.
async fn join_in_order<T>(
    mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>,
    sent: impl FnOnce(),
) -> Vec<T> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut sent = Some(sent);
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, result) in futures.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *result = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if let Some(sent) = sent.take() {
            sent();
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

fn reply_all(jobs: Vec<Job>, error: &ProviderError) {
    for job in jobs {
        let _ = job.reply.send(Err(Failure::Provider(error.clone())));
    }
}
