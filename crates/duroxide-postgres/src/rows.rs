//! Decoding rows into contract types and converting numbers between the contract (`u64`, `u32`) and
//! PostgreSQL (`bigint`, `integer`), failing cleanly (never panicking) on values that do not fit.

use std::time::Duration;

use duroxide_core::provider::{
    CustomStatus, ExecutionStatus, HistoryRecord, InstanceInfo, InstanceStatus, KvEntry, ProviderError,
};
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::error::{corrupt, db_error};

/// The instance columns every instance read selects, in the order [`instance`] expects.
pub(crate) const INSTANCE_COLUMNS: &str =
    "instance_id, name, version, current_execution_id, status, output, \
     created_at_ms, updated_at_ms, parent_instance_id, custom_status, custom_status_version";

/// Column `idx` of `row`, or a `Permanent` error when it has another type or is NULL unexpectedly.
pub(crate) fn get<'a, T: FromSql<'a>>(
    operation: &'static str,
    row: &'a Row,
    idx: usize,
) -> Result<T, ProviderError> {
    row.try_get(idx).map_err(|err| db_error(operation, err))
}

/// A stored `bigint` that the contract holds as `u64`.
pub(crate) fn to_u64(operation: &'static str, what: &str, value: i64) -> Result<u64, ProviderError> {
    u64::try_from(value).map_err(|_| corrupt(operation, format!("{what} is negative ({value})")))
}

pub(crate) fn opt_u64(
    operation: &'static str,
    what: &str,
    value: Option<i64>,
) -> Result<Option<u64>, ProviderError> {
    value.map(|v| to_u64(operation, what, v)).transpose()
}

pub(crate) fn to_u32(operation: &'static str, what: &str, value: i32) -> Result<u32, ProviderError> {
    u32::try_from(value).map_err(|_| corrupt(operation, format!("{what} is negative ({value})")))
}

/// A contract number stored as `bigint`; numbers beyond `i64::MAX` are refused as invalid input.
pub(crate) fn to_i64(operation: &'static str, what: &str, value: u64) -> Result<i64, ProviderError> {
    i64::try_from(value).map_err(|_| {
        ProviderError::invalid_input(
            operation,
            format!("{what} {value} is larger than PostgreSQL's bigint can store"),
        )
    })
}

/// A point in time (epoch ms) for a visibility column: times beyond the range mean "never", which
/// `i64::MAX` expresses just as well.
pub(crate) fn time_to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A duration in whole milliseconds (rounded up, so a 0.5 ms lease is not a 0 ms one), saturating.
pub(crate) fn duration_ms(duration: Duration) -> i64 {
    let ms = duration.as_micros().div_ceil(1000);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A batch size as the fetch functions take it.
pub(crate) fn batch_size(max: usize) -> i32 {
    i32::try_from(max.max(1)).unwrap_or(i32::MAX)
}

/// Splits the rows of a batched fetch into its items and its summary row, which the fetch
/// functions always return last.
pub(crate) fn split_summary(
    operation: &'static str,
    mut rows: Vec<Row>,
) -> Result<(Row, Vec<Row>), ProviderError> {
    let summary = rows
        .pop()
        .ok_or_else(|| corrupt(operation, "the fetch function returned no summary row"))?;
    Ok((summary, rows))
}

pub(crate) fn instance_status(operation: &'static str, text: &str) -> Result<InstanceStatus, ProviderError> {
    InstanceStatus::parse(text).ok_or_else(|| corrupt(operation, format!("unknown instance status {text:?}")))
}

pub(crate) fn execution_status(
    operation: &'static str,
    text: &str,
) -> Result<ExecutionStatus, ProviderError> {
    ExecutionStatus::parse(text)
        .ok_or_else(|| corrupt(operation, format!("unknown execution status {text:?}")))
}

/// Decodes [`INSTANCE_COLUMNS`] starting at column `at`.
pub(crate) fn instance(
    operation: &'static str,
    row: &Row,
    at: usize,
) -> Result<(InstanceInfo, CustomStatus), ProviderError> {
    let status: String = get(operation, row, at + 4)?;
    let info = InstanceInfo {
        instance_id: get(operation, row, at)?,
        name: get(operation, row, at + 1)?,
        version: get(operation, row, at + 2)?,
        current_execution_id: to_u64(operation, "execution id", get(operation, row, at + 3)?)?,
        status: instance_status(operation, &status)?,
        output: get(operation, row, at + 5)?,
        created_at_ms: to_u64(operation, "created_at_ms", get(operation, row, at + 6)?)?,
        updated_at_ms: to_u64(operation, "updated_at_ms", get(operation, row, at + 7)?)?,
        parent_instance_id: get(operation, row, at + 8)?,
    };
    let custom = CustomStatus {
        status: get(operation, row, at + 9)?,
        version: to_u64(operation, "custom status version", get(operation, row, at + 10)?)?,
    };
    Ok((info, custom))
}

/// Decodes `key, value, updated_at_ms`.
pub(crate) fn kv_entry(operation: &'static str, row: &Row) -> Result<KvEntry, ProviderError> {
    Ok(KvEntry {
        key: get(operation, row, 0)?,
        value: get(operation, row, 1)?,
        updated_at_ms: to_u64(operation, "KV updated_at_ms", get(operation, row, 2)?)?,
    })
}

/// Decodes `event_id, kind, payload`.
pub(crate) fn history_record(operation: &'static str, row: &Row) -> Result<HistoryRecord, ProviderError> {
    Ok(HistoryRecord {
        event_id: to_u64(operation, "event id", get(operation, row, 0)?)?,
        kind: get(operation, row, 1)?,
        payload: get(operation, row, 2)?,
    })
}

/// Three aggregated columns of equal length (NULL for none), zipped back into records.
pub(crate) fn zip3<A, B, C>(
    operation: &'static str,
    what: &str,
    a: Option<Vec<A>>,
    b: Option<Vec<B>>,
    c: Option<Vec<C>>,
) -> Result<Vec<(A, B, C)>, ProviderError> {
    let (a, b, c) = (
        a.unwrap_or_default(),
        b.unwrap_or_default(),
        c.unwrap_or_default(),
    );
    if a.len() != b.len() || a.len() != c.len() {
        return Err(corrupt(
            operation,
            format!("{what} columns have different lengths"),
        ));
    }
    Ok(a.into_iter().zip(b).zip(c).map(|((a, b), c)| (a, b, c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_milliseconds() {
        assert_eq!(duration_ms(Duration::ZERO), 0);
        assert_eq!(duration_ms(Duration::from_micros(1)), 1);
        assert_eq!(duration_ms(Duration::from_millis(150)), 150);
        assert_eq!(duration_ms(Duration::MAX), i64::MAX);
    }

    #[test]
    fn out_of_range_numbers_are_errors_not_panics() {
        assert!(to_u64("op", "id", -1).is_err());
        assert!(to_u32("op", "attempt", -5).is_err());
        assert!(to_i64("op", "id", u64::MAX).is_err());
        assert_eq!(time_to_i64(u64::MAX), i64::MAX);
    }

    #[test]
    fn mismatched_aggregates_are_corrupt() {
        let err = zip3("op", "history", Some(vec![1]), Some(vec![2, 3]), Some(vec![4])).expect_err("corrupt");
        assert_eq!(err.kind, duroxide_core::provider::ProviderErrorKind::Permanent);
        assert!(zip3::<i32, i32, i32>("op", "h", None, None, None)
            .expect("empty")
            .is_empty());
    }
}
