//! Reads for clients: instance metadata, custom status, one execution's history, KV as clients see it.

use duroxide_core::provider::{CustomStatus, HistoryRecord, InstanceInfo, KvEntry, ProviderError};

use crate::db::Db;
use crate::rows::{self, get, to_u64, INSTANCE_COLUMNS};

pub(crate) async fn instance_info(db: &Db, instance_id: &str) -> Result<Option<InstanceInfo>, ProviderError> {
    Ok(instance_row(db, "get_instance_info", instance_id)
        .await?
        .map(|(info, _)| info))
}

/// Metadata and custom status from the instance's row, in one statement.
pub(crate) async fn instance_state(
    db: &Db,
    instance_id: &str,
) -> Result<Option<(InstanceInfo, CustomStatus)>, ProviderError> {
    instance_row(db, "get_instance_state", instance_id).await
}

async fn instance_row(
    db: &Db,
    op: &'static str,
    instance_id: &str,
) -> Result<Option<(InstanceInfo, CustomStatus)>, ProviderError> {
    let sql = db.render(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM __schema__.instances WHERE instance_id = $1"
    ));
    db.query_opt(op, &sql, &[&instance_id])
        .await?
        .map(|row| rows::instance(op, &row, 0))
        .transpose()
}

/// Two columns of one row: cheap enough for clients to poll.
pub(crate) async fn custom_status(db: &Db, instance_id: &str) -> Result<Option<CustomStatus>, ProviderError> {
    const OP: &str = "get_custom_status";
    let sql = db.render(
        "SELECT custom_status, custom_status_version FROM __schema__.instances WHERE instance_id = $1",
    );
    db.query_opt(OP, &sql, &[&instance_id])
        .await?
        .map(|row| {
            Ok(CustomStatus {
                status: get(OP, &row, 0)?,
                version: to_u64(OP, "custom status version", get(OP, &row, 1)?)?,
            })
        })
        .transpose()
}

/// One execution's history in event-id order; empty for an unknown instance or execution.
pub(crate) async fn history(
    db: &Db,
    instance_id: &str,
    execution_id: u64,
) -> Result<Vec<HistoryRecord>, ProviderError> {
    const OP: &str = "read_history";
    let Ok(execution_id) = i64::try_from(execution_id) else {
        return Ok(Vec::new());
    };
    let sql = db.render(
        "SELECT event_id, kind, payload FROM __schema__.history
         WHERE instance_id = $1 AND execution_id = $2 ORDER BY event_id",
    );
    db.query(OP, &sql, &[&instance_id, &execution_id])
        .await?
        .iter()
        .map(|row| rows::history_record(OP, row))
        .collect()
}

pub(crate) async fn kv_value(db: &Db, instance_id: &str, key: &str) -> Result<Option<String>, ProviderError> {
    const OP: &str = "get_kv_value";
    let sql = db.render("SELECT value FROM __schema__.kv WHERE instance_id = $1 AND key = $2");
    db.query_opt(OP, &sql, &[&instance_id, &key])
        .await?
        .map(|row| get(OP, &row, 0))
        .transpose()
}

pub(crate) async fn kv_entries(db: &Db, instance_id: &str) -> Result<Vec<KvEntry>, ProviderError> {
    const OP: &str = "get_kv_entries";
    let sql =
        db.render("SELECT key, value, updated_at_ms FROM __schema__.kv WHERE instance_id = $1 ORDER BY key");
    db.query(OP, &sql, &[&instance_id])
        .await?
        .iter()
        .map(|row| rows::kv_entry(OP, row))
        .collect()
}
