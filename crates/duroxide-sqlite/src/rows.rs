//! Decoding stored rows into contract types, failing cleanly (never panicking) on values that do not decode.

use duroxide_core::provider::{CustomStatus, ExecutionStatus, InstanceInfo, InstanceStatus, KvEntry};
use rusqlite::types::Type;
use rusqlite::Row;

/// The instance columns every instance read selects, in the order [`instance_from_row`] expects.
pub(crate) const INSTANCE_COLUMNS: &str =
    "instance_id, name, version, current_execution_id, status, output, \
     created_at_ms, updated_at_ms, parent_instance_id, custom_status, custom_status_version";

/// A stored text value that the code does not recognise.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} {value:?}")]
struct UnknownValue {
    what: &'static str,
    value: String,
}

fn parse_column<T>(
    row: &Row<'_>,
    idx: usize,
    what: &'static str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Text,
            Box::new(UnknownValue { what, value: text }),
        )
    })
}

pub(crate) fn instance_status(row: &Row<'_>, idx: usize) -> rusqlite::Result<InstanceStatus> {
    parse_column(row, idx, "instance status", InstanceStatus::parse)
}

pub(crate) fn execution_status(row: &Row<'_>, idx: usize) -> rusqlite::Result<ExecutionStatus> {
    parse_column(row, idx, "execution status", ExecutionStatus::parse)
}

/// Decodes a row selected with [`INSTANCE_COLUMNS`].
pub(crate) fn instance_from_row(row: &Row<'_>) -> rusqlite::Result<(InstanceInfo, CustomStatus)> {
    let info = InstanceInfo {
        instance_id: row.get(0)?,
        name: row.get(1)?,
        version: row.get(2)?,
        current_execution_id: row.get(3)?,
        status: instance_status(row, 4)?,
        output: row.get(5)?,
        created_at_ms: row.get(6)?,
        updated_at_ms: row.get(7)?,
        parent_instance_id: row.get(8)?,
    };
    let custom = CustomStatus {
        status: row.get(9)?,
        version: row.get(10)?,
    };
    Ok((info, custom))
}

/// A stored payload as text, whatever type the column holds. Stored data written by something else
/// (a blob, invalid UTF-8) must reach the runtime, which fails that one instance as unreadable,
/// rather than fail the fetch and block every other instance behind it. The row itself is untouched.
pub(crate) fn text_lossy(row: &Row<'_>, idx: usize) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    Ok(match row.get_ref(idx)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        ValueRef::Null => String::new(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => x.to_string(),
    })
}

/// Decodes `key, value, updated_at_ms`.
pub(crate) fn kv_from_row(row: &Row<'_>) -> rusqlite::Result<KvEntry> {
    Ok(KvEntry {
        key: row.get(0)?,
        value: row.get(1)?,
        updated_at_ms: row.get(2)?,
    })
}
