//! The pool and the schema together: pooled connections and SQL text rendered for the schema.

use deadpool_postgres::{Object, Pool};
use duroxide_core::provider::ProviderError;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::error::{pool_error, sql_err};
use crate::schema::Schema;

/// SQL of the hot paths, rendered once for the schema (the statement cache is keyed by text).
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) create_instance: String,
    pub(crate) enqueue_message: String,
    pub(crate) fetch_orchestration_item: String,
    pub(crate) ack_orchestration_item: String,
    pub(crate) abandon_orchestration_item: String,
    pub(crate) renew_orchestration_item: String,
    pub(crate) fetch_work_item: String,
    pub(crate) ack_work_item: String,
    pub(crate) abandon_work_item: String,
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
            enqueue_message: schema.render(
                "INSERT INTO __schema__.orchestrator_queue (instance_id, payload, visible_at_ms)
                 SELECT $1, $2, coalesce($3, __schema__.now_ms())
                 WHERE EXISTS (SELECT 1 FROM __schema__.instances WHERE instance_id = $1 FOR KEY SHARE)",
            ),
            fetch_orchestration_item: call("fetch_orchestration_item", 2),
            ack_orchestration_item: call("ack_orchestration_item", 34),
            abandon_orchestration_item: call("abandon_orchestration_item", 3),
            renew_orchestration_item: schema.render(
                "UPDATE __schema__.instances SET locked_until_ms = __schema__.now_ms() + $3
                 WHERE instance_id = $1 AND lock_token = $2 AND locked_until_ms > __schema__.now_ms()",
            ),
            fetch_work_item: call("fetch_work_item", 8),
            ack_work_item: call("ack_work_item", 9),
            abandon_work_item: schema.render(
                "UPDATE __schema__.worker_queue
                 SET lock_token = NULL, locked_until_ms = NULL,
                     visible_at_ms = greatest(visible_at_ms, __schema__.now_ms() + $3)
                 WHERE id = $1 AND lock_token = $2 AND locked_until_ms > __schema__.now_ms()",
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

/// Pooled connections to one schema.
#[derive(Debug)]
pub(crate) struct Db {
    pool: Pool,
    schema: Schema,
    pub(crate) sql: Statements,
}

impl Db {
    pub(crate) fn new(pool: Pool, schema: Schema) -> Db {
        let sql = Statements::new(&schema);
        Db { pool, schema, sql }
    }

    pub(crate) fn schema(&self) -> &Schema {
        &self.schema
    }

    /// `template` with the schema filled in (for statements off the hot paths).
    pub(crate) fn render(&self, template: &str) -> String {
        self.schema.render(template)
    }

    /// A pooled connection; taking one costs no round trip.
    pub(crate) async fn client(&self, operation: &'static str) -> Result<Object, ProviderError> {
        self.pool.get().await.map_err(|err| pool_error(operation, err))
    }

    /// Runs one prepared (and cached) statement and returns its rows.
    pub(crate) async fn query(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ProviderError> {
        let client = self.client(operation).await?;
        let statement = client.prepare_cached(sql).await.map_err(sql_err(operation))?;
        client.query(&statement, params).await.map_err(sql_err(operation))
    }

    /// Runs one statement that returns exactly one row.
    pub(crate) async fn query_one(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ProviderError> {
        let client = self.client(operation).await?;
        let statement = client.prepare_cached(sql).await.map_err(sql_err(operation))?;
        client
            .query_one(&statement, params)
            .await
            .map_err(sql_err(operation))
    }

    /// Runs one statement that returns at most one row.
    pub(crate) async fn query_opt(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, ProviderError> {
        let client = self.client(operation).await?;
        let statement = client.prepare_cached(sql).await.map_err(sql_err(operation))?;
        client
            .query_opt(&statement, params)
            .await
            .map_err(sql_err(operation))
    }

    /// Runs one statement and returns how many rows it changed.
    pub(crate) async fn execute(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, ProviderError> {
        let client = self.client(operation).await?;
        let statement = client.prepare_cached(sql).await.map_err(sql_err(operation))?;
        client
            .execute(&statement, params)
            .await
            .map_err(sql_err(operation))
    }
}
