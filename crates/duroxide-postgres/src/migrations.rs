//! Versioned, forward-only schema migrations, applied when a provider connects.
//!
//! All pending migrations run in one transaction that first takes a transaction-level advisory lock
//! derived from the schema name, so any number of processes starting at once on an empty database
//! serialise here: the first creates everything, the others find it done. A schema whose recorded
//! version is newer than this build knows is refused before anything is written, and a failing
//! migration rolls back whole, so a failed connect never leaves a half-made schema behind.

use tokio_postgres::Client;

use crate::connection::Target;
use crate::error::{describe, is_transient, ConnectError};
use crate::schema::Schema;

/// One migration: its version, what it does, and its SQL (with `__schema__` placeholders).
#[derive(Debug)]
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema: tables, indexes, fetch and ack functions",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "cheaper fetches and acks; acks count the work they make fetchable",
        sql: include_str!("migrations/0002_fast_paths.sql"),
    },
    Migration {
        version: 3,
        description: "fetches that lease several items in one call",
        sql: include_str!("migrations/0003_batched_fetches.sql"),
    },
    Migration {
        version: 4,
        description: "one flat function for an activity's plain completion; hand-backs that are not attempts",
        sql: include_str!("migrations/0004_plain_completions.sql"),
    },
    Migration {
        version: 5,
        description: "several activities' plain completions in one call",
        sql: include_str!("migrations/0005_merged_completions.sql"),
    },
    Migration {
        version: 6,
        description: "a turn leaves out the history its fetching provider already holds",
        sql: include_str!("migrations/0006_cached_histories.sql"),
    },
    Migration {
        version: 7,
        description: "a work fetch that also leases a few queued plain items for its provider's stock",
        sql: include_str!("migrations/0007_work_extras.sql"),
    },
    Migration {
        version: 8,
        description: "work fetches walk the worker queue in visibility order, through an index",
        sql: include_str!("migrations/0008_worker_visibility_order.sql"),
    },
];

/// The schema version this build creates and understands.
pub const LATEST_VERSION: i64 = 8;

/// The table that records applied migrations. Prefixed so it cannot collide with an application's
/// own `schema_migrations` table when the schema is shared.
const VERSION_TABLE: &str = "_duroxide_migrations";

/// Brings `schema` up to [`LATEST_VERSION`] on a connection of its own.
pub(crate) async fn run(target: &Target, schema: &Schema) -> Result<(), ConnectError> {
    let mut client = target.connect_one().await?;
    let result = migrate(&mut client, target, schema).await;
    drop(client);
    result
}

async fn migrate(client: &mut Client, target: &Target, schema: &Schema) -> Result<(), ConnectError> {
    let step_error = |step: &str, err: tokio_postgres::Error| ConnectError::Schema {
        target: target.description.clone(),
        schema: schema.name().to_owned(),
        step: step.to_owned(),
        reason: describe(&err),
        retryable: is_transient(&err),
    };
    let quoted = schema.quoted();

    // Dropping the transaction without commit rolls everything back, on every early return below.
    let tx = client.transaction().await.map_err(|e| step_error("begin", e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&schema.migration_lock_key()],
    )
    .await
    .map_err(|e| step_error("take the migration lock", e))?;

    // CREATE SCHEMA needs the CREATE privilege even with IF NOT EXISTS, so look first: an existing
    // schema must work for a role that may only use it.
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema.name()])
        .await
        .map_err(|e| step_error("look for the schema", e))?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {quoted}"))
            .await
            .map_err(|e| step_error("create the schema", e))?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {quoted}.{VERSION_TABLE} (
             version     integer     NOT NULL PRIMARY KEY,
             description text        NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(|e| step_error("create the migrations table", e))?;

    let current: i64 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0)::bigint FROM {quoted}.{VERSION_TABLE}"),
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| step_error("read the schema version", e))?;
    if current > LATEST_VERSION {
        return Err(ConnectError::SchemaTooNew {
            target: target.description.clone(),
            schema: schema.name().to_owned(),
            found: current,
            supported: LATEST_VERSION,
        });
    }

    for migration in MIGRATIONS.iter().filter(|m| i64::from(m.version) > current) {
        let step = format!("migration {}: {}", migration.version, migration.description);
        tx.batch_execute(&schema.render(migration.sql))
            .await
            .map_err(|e| step_error(&step, e))?;
        tx.execute(
            &format!("INSERT INTO {quoted}.{VERSION_TABLE} (version, description) VALUES ($1, $2)"),
            &[&migration.version, &migration.description],
        )
        .await
        .map_err(|e| step_error(&step, e))?;
    }
    tx.commit().await.map_err(|e| step_error("commit", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_and_end_at_the_latest() {
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                i64::from(migration.version),
                i as i64 + 1,
                "{}",
                migration.description
            );
        }
        assert_eq!(
            MIGRATIONS.last().map(|m| i64::from(m.version)),
            Some(LATEST_VERSION)
        );
    }

    /// An unqualified name would resolve through the caller's search_path, i.e. possibly into another
    /// schema's tables.
    #[test]
    fn created_and_written_objects_are_schema_qualified() {
        for migration in MIGRATIONS {
            for line in migration
                .sql
                .lines()
                .map(str::trim_start)
                .filter(|l| !l.starts_with("--"))
            {
                for keyword in [
                    "CREATE TABLE ",
                    "CREATE FUNCTION ",
                    "INSERT INTO ",
                    "DELETE FROM ",
                    "UPDATE ",
                ] {
                    let Some(at) = line.find(keyword) else { continue };
                    if keyword == "UPDATE " && at != 0 {
                        continue; // FOR NO KEY UPDATE, DO UPDATE
                    }
                    let rest = &line[at + keyword.len()..];
                    assert!(
                        rest.starts_with("__schema__."),
                        "unqualified object in migration {}: {line}",
                        migration.version
                    );
                }
            }
        }
    }
}
