//! The pool and the schema together: pooled connections and SQL text rendered for the schema.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deadpool_postgres::{GenericClient, Object, Pool, Transaction};
use duroxide_core::provider::ProviderError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::batch::{Committer, Completion, Failure, Param, Sent};
use crate::durability::Durability;
use crate::error::{pool_error, sql_err};
use crate::lock_token::Owner;
use crate::mux::{Conn, Lease, Mux};
use crate::schema::Schema;

/// SQL of the hot paths, rendered once for the schema (the statement cache is keyed by text).
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) create_instance: String,
    pub(crate) create_instance_leasing: String,
    pub(crate) enqueue_message: String,
    pub(crate) fetch_orchestration_items: String,
    pub(crate) ack_turn: String,
    pub(crate) abandon_orchestration_item: String,
    pub(crate) release_orchestration_item: String,
    pub(crate) renew_orchestration_item: String,
    pub(crate) fetch_work_items: String,
    pub(crate) ack_work_item: String,
    pub(crate) complete_work_item: String,
    pub(crate) complete_work_items: String,
    pub(crate) abandon_work_item: String,
    pub(crate) release_work_item: String,
    pub(crate) release_unsettled_work_items: String,
    pub(crate) renew_work_item: String,
    pub(crate) renew_sessions: String,
    pub(crate) release_session: String,
}

impl Statements {
    fn new(schema: &Schema) -> Statements {
        let placeholders = |n: usize| (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let call = |function: &str, n: usize| {
            schema.render(&format!(
                "SELECT * FROM __schema__.{function}({})",
                placeholders(n)
            ))
        };
        Statements {
            create_instance: call("create_instance", 6),
            create_instance_leasing: call("create_instance_leasing", 7),
            enqueue_message: schema.render(
                "INSERT INTO __schema__.orchestrator_queue (instance_id, payload, visible_at_ms)
                 SELECT $1, $2, coalesce($3, __schema__.now_ms())
                 WHERE EXISTS (SELECT 1 FROM __schema__.instances WHERE instance_id = $1 FOR KEY SHARE)",
            ),
            fetch_orchestration_items: call("fetch_orchestration_items", 3),
            ack_turn: call("ack_turn", 40),
            abandon_orchestration_item: call("abandon_orchestration_item", 3),
            release_orchestration_item: call("release_orchestration_item", 2),
            renew_orchestration_item: schema.render(
                "UPDATE __schema__.instances SET locked_until_ms = __schema__.now_ms() + $3
                 WHERE instance_id = $1 AND lock_token = $2 AND locked_until_ms > __schema__.now_ms()",
            ),
            fetch_work_items: call("fetch_work_items_with_extras", 10),
            ack_work_item: call("ack_work_item", 9),
            complete_work_item: call("complete_work_item", 6),
            complete_work_items: call("complete_work_items", 6),
            abandon_work_item: schema.render(
                "UPDATE __schema__.worker_queue
                 SET lock_token = NULL, locked_until_ms = NULL,
                     visible_at_ms = greatest(visible_at_ms, __schema__.now_ms() + $3)
                 WHERE id = $1 AND lock_token = $2 AND locked_until_ms > __schema__.now_ms()",
            ),
            // A hand-back (see `handoff`): fetchable again at once, and not an attempt.
            release_work_item: schema.render(
                "UPDATE __schema__.worker_queue
                 SET lock_token = NULL, locked_until_ms = NULL, attempt = greatest(attempt - 1, 0)
                 WHERE id = $1 AND lock_token = $2 AND locked_until_ms > __schema__.now_ms()",
            ),
            release_unsettled_work_items: schema.render(
                "UPDATE __schema__.worker_queue
                 SET lock_token = NULL, locked_until_ms = NULL, attempt = greatest(attempt - 1, 0)
                 WHERE instance_id = $1 AND lock_token = $2 AND locked_until_ms > __schema__.now_ms()",
            ),
            renew_work_item: schema.render(
                "UPDATE __schema__.worker_queue SET locked_until_ms = __schema__.now_ms() + $3
                 WHERE id = $1 AND lock_token = $2 AND locked_until_ms > __schema__.now_ms()",
            ),
            renew_sessions: schema.render(
                "UPDATE __schema__.sessions SET locked_until_ms = __schema__.now_ms() + $3
                 WHERE owner_id = $1 AND session_id = ANY ($2) AND locked_until_ms > __schema__.now_ms()",
            ),
            release_session: schema
                .render("DELETE FROM __schema__.sessions WHERE session_id = $1 AND owner_id = $2"),
        }
    }
}

/// Connections to one schema: shared ones for single statements (see `mux`), ones that commit acks
/// in batches (see `batch`), pooled ones for transactions and slow statements.
#[derive(Debug)]
pub(crate) struct Db {
    pool: Pool,
    mux: Mux,
    committer: Committer,
    schema: Schema,
    pub(crate) sql: Statements,
    /// Which acks wait for their WAL flush.
    pub(crate) durability: Durability,
    /// Statements sent to the server (see [`Db::round_trips`]).
    round_trips: AtomicU64,
    /// The prefix of this object's lock secrets, named on its connections (see `lock_token`).
    owner: Owner,
}

impl Db {
    pub(crate) fn new(
        pool: Pool,
        mux: Mux,
        committer: Committer,
        schema: Schema,
        durability: Durability,
        owner: Owner,
    ) -> Db {
        let sql = Statements::new(&schema);
        Db {
            pool,
            mux,
            committer,
            schema,
            sql,
            durability,
            round_trips: AtomicU64::new(0),
            owner,
        }
    }

    /// A fresh lock secret of this object (see `lock_token`).
    pub(crate) fn new_secret(&self) -> uuid::Uuid {
        self.owner.new_secret()
    }

    pub(crate) fn schema(&self) -> &Schema {
        &self.schema
    }

    /// How many round trips this object's pool has made: executed statements, transaction control,
    /// and statements prepared on a connection for the first time.
    pub(crate) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Batches of acks whose transaction failed, whose acks then ran one by one (see `batch`).
    pub(crate) fn batch_reruns(&self) -> u64 {
        self.committer.reruns()
    }

    fn count(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// `template` with the schema filled in (for statements off the hot paths).
    pub(crate) fn render(&self, template: &str) -> String {
        self.schema.render(template)
    }

    /// A pooled connection; taking one costs no round trip.
    pub(crate) async fn client(&self, operation: &'static str) -> Result<Object, ProviderError> {
        self.pool.get().await.map_err(|err| pool_error(operation, err))
    }

    /// The connection's prepared statement for `sql`, preparing it (one round trip) the first time.
    pub(crate) async fn prepare(
        &self,
        client: &Object,
        operation: &'static str,
        sql: &str,
    ) -> Result<Statement, ProviderError> {
        let cached = client.statement_cache.size();
        let statement = client.prepare_cached(sql).await.map_err(sql_err(operation))?;
        if client.statement_cache.size() != cached {
            self.count();
        }
        Ok(statement)
    }

    /// Starts a transaction on a pooled connection.
    pub(crate) async fn begin<'a>(
        &self,
        client: &'a mut Object,
        operation: &'static str,
    ) -> Result<Transaction<'a>, ProviderError> {
        self.count();
        client.transaction().await.map_err(sql_err(operation))
    }

    pub(crate) async fn commit(
        &self,
        tx: Transaction<'_>,
        operation: &'static str,
    ) -> Result<(), ProviderError> {
        self.count();
        tx.commit().await.map_err(sql_err(operation))
    }

    /// Runs `sql` (prepared and cached per connection) on a connection or in a transaction.
    pub(crate) async fn query_on<C: GenericClient>(
        &self,
        client: &C,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ProviderError> {
        let statement = client.prepare_cached(sql).await.map_err(sql_err(operation))?;
        self.count();
        client.query(&statement, params).await.map_err(sql_err(operation))
    }

    /// Like [`query_on`](Self::query_on), for exactly one row.
    pub(crate) async fn query_one_on<C: GenericClient>(
        &self,
        client: &C,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ProviderError> {
        let statement = client.prepare_cached(sql).await.map_err(sql_err(operation))?;
        self.count();
        client
            .query_one(&statement, params)
            .await
            .map_err(sql_err(operation))
    }

    /// Runs one statement (a transaction by itself) on a shared connection and returns its rows,
    /// mapping errors with `on_error`.
    pub(crate) async fn query_mapped(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        on_error: impl FnOnce(tokio_postgres::Error) -> ProviderError,
    ) -> Result<Vec<Row>, ProviderError> {
        self.query_via(None, operation, sql, params, on_error).await
    }

    /// Like [`query_mapped`](Self::query_mapped), on `via` when given and still open: a wake-up
    /// says that the write it announces was sent there, so this statement runs right after it.
    pub(crate) async fn query_via(
        &self,
        via: Option<Arc<Conn>>,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        on_error: impl FnOnce(tokio_postgres::Error) -> ProviderError,
    ) -> Result<Vec<Row>, ProviderError> {
        let conn = match via.filter(|conn| !conn.is_closed()) {
            Some(conn) => Lease::new(conn),
            None => self.mux.lease(operation).await?,
        };
        let (statement, prepared) = conn.statement(sql).await.map_err(sql_err(operation))?;
        if prepared {
            self.count();
        }
        self.count();
        conn.query(&statement, params).await.map_err(on_error)
    }

    /// Runs one statement that must be durable (an ack) in the next batch of acks (see `batch`) and
    /// returns its rows once the batch committed (with `waits`, once the commit is flushed; see
    /// `durability`), mapping its own errors with `on_error`. `completion`: the same ack as
    /// arguments a batch can merge with other completions (see `batch`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn commit_query(
        &self,
        operation: &'static str,
        sql: &str,
        params: Vec<Param>,
        completion: Option<Completion>,
        waits: bool,
        sent: Option<Sent>,
        on_error: impl FnOnce(tokio_postgres::Error) -> ProviderError,
    ) -> Result<Vec<Row>, ProviderError> {
        match self
            .committer
            .run(operation, sql, params, completion, waits, sent, &|| self.count())
            .await
        {
            Ok(rows) => Ok(rows),
            Err(Failure::Sql(err)) => Err(on_error(err)),
            Err(Failure::Provider(err)) => Err(err),
        }
    }

    /// Runs one statement (a transaction by itself) and returns its rows.
    pub(crate) async fn query(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ProviderError> {
        self.query_mapped(operation, sql, params, sql_err(operation))
            .await
    }

    /// Runs one statement that returns exactly one row.
    pub(crate) async fn query_one(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ProviderError> {
        exactly_one(operation, self.query(operation, sql, params).await?)
    }

    /// Runs one statement that returns at most one row.
    pub(crate) async fn query_opt(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, ProviderError> {
        at_most_one(operation, self.query(operation, sql, params).await?)
    }

    /// Runs one statement and returns how many rows it changed.
    pub(crate) async fn execute(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, ProviderError> {
        let conn = self.mux.lease(operation).await?;
        let (statement, prepared) = conn.statement(sql).await.map_err(sql_err(operation))?;
        if prepared {
            self.count();
        }
        self.count();
        conn.execute(&statement, params).await.map_err(sql_err(operation))
    }

    /// Like [`query`](Self::query) on a pooled connection of its own, for statements slow enough to
    /// hold up the calls queued behind them on a shared one (scans over whole tables).
    pub(crate) async fn query_pooled(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ProviderError> {
        let client = self.client(operation).await?;
        let statement = self.prepare(&client, operation, sql).await?;
        self.count();
        client.query(&statement, params).await.map_err(sql_err(operation))
    }

    /// Like [`query_one`](Self::query_one) on a pooled connection.
    pub(crate) async fn query_one_pooled(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ProviderError> {
        exactly_one(operation, self.query_pooled(operation, sql, params).await?)
    }
}

fn exactly_one(operation: &'static str, mut rows: Vec<Row>) -> Result<Row, ProviderError> {
    match (rows.pop(), rows.is_empty()) {
        (Some(row), true) => Ok(row),
        _ => Err(ProviderError::permanent(
            operation,
            "the statement did not return exactly one row",
        )),
    }
}

fn at_most_one(operation: &'static str, mut rows: Vec<Row>) -> Result<Option<Row>, ProviderError> {
    if rows.len() > 1 {
        return Err(ProviderError::permanent(
            operation,
            "the statement returned more than one row",
        ));
    }
    Ok(rows.pop())
}
