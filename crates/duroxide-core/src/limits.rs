//! Documented limits, checked by the engine; a breach fails the orchestration naming the limit.

/// Most KV keys one instance may hold.
pub const MAX_KV_KEYS: usize = 150;
/// Largest KV value, in bytes.
pub const MAX_KV_VALUE_BYTES: usize = 65_536;
/// Longest KV key, in bytes.
pub const MAX_KV_KEY_BYTES: usize = 1_024;
/// Largest custom status, in bytes.
pub const MAX_CUSTOM_STATUS_BYTES: usize = 262_144;
/// Longest activity tag, in bytes.
pub const MAX_TAG_NAME_BYTES: usize = 256;
/// Most tags one worker filter may name.
pub const MAX_WORKER_TAGS: usize = 5;
/// Longest instance id, in bytes.
pub const MAX_INSTANCE_ID_BYTES: usize = 256;

/// Checks an instance id: non-empty and at most [`MAX_INSTANCE_ID_BYTES`].
pub fn validate_instance_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("instance id must not be empty".into());
    }
    if id.len() > MAX_INSTANCE_ID_BYTES {
        return Err(format!(
            "instance id is {} bytes; the limit is {MAX_INSTANCE_ID_BYTES}",
            id.len()
        ));
    }
    Ok(())
}

/// Checks a tag: non-empty and at most [`MAX_TAG_NAME_BYTES`].
pub fn validate_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("activity tag must not be empty".into());
    }
    if tag.len() > MAX_TAG_NAME_BYTES {
        return Err(format!(
            "activity tag is {} bytes; MAX_TAG_NAME_BYTES is {MAX_TAG_NAME_BYTES}",
            tag.len()
        ));
    }
    Ok(())
}
