//! Runtime options with their defaults and validation (invalid values are errors, never fallbacks).

use std::time::Duration;

use duroxide_core::limits::{MAX_TAG_NAME_BYTES, MAX_WORKER_TAGS};
use duroxide_core::provider::TagFilter;

/// How the runtime formats its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
    Compact,
}

impl LogFormat {
    pub fn parse(text: &str) -> Result<LogFormat, OptionsError> {
        match text {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            "compact" => Ok(LogFormat::Compact),
            other => Err(OptionsError::new(
                "log_format",
                format!("{other:?} is not one of pretty, json, compact"),
            )),
        }
    }
}

/// An option has an invalid value. Names the option and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid runtime option {option}: {reason}")]
pub struct OptionsError {
    pub option: &'static str,
    pub reason: String,
}

impl OptionsError {
    pub fn new(option: &'static str, reason: impl Into<String>) -> Self {
        OptionsError {
            option,
            reason: reason.into(),
        }
    }
}

/// Everything a runtime can be tuned with. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Concurrent orchestration turns (0 = this runtime runs no orchestrations).
    pub orchestration_concurrency: usize,
    /// Concurrent activities (0 = this runtime runs no activities).
    pub worker_concurrency: usize,
    /// Longest an idle fetch waits before asking again; wake-ups make work visible sooner.
    pub dispatcher_poll_interval: Duration,
    pub orchestrator_lock_timeout: Duration,
    pub worker_lock_timeout: Duration,
    /// A message or work item fetched more often than this is poison.
    pub max_attempts: u32,
    /// `None`: do not install a log subscriber (the application owns logging).
    pub log_level: Option<String>,
    pub log_format: LogFormat,
    pub service_name: Option<String>,
    pub service_version: Option<String>,
    pub max_sessions_per_runtime: usize,
    pub session_idle_timeout: Duration,
    /// Stable identity for session ownership; random when `None`.
    pub worker_node_id: Option<String>,
    pub worker_tag_filter: TagFilter,
    /// Most instances whose replayed state the runtime keeps.
    pub cache_max_instances: usize,
    /// Most history events, summed over cached instances.
    pub cache_max_events: u64,
    /// How long the orchestration dispatcher waits for activities it runs itself, right after the
    /// turn that schedules them, before it commits that turn and leaves them to the workers (see
    /// the crate docs on inline activities). Capped at a quarter of `orchestrator_lock_timeout`.
    /// Zero: every activity goes through the worker queue.
    pub inline_activity_wait: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            orchestration_concurrency: 4,
            worker_concurrency: 8,
            dispatcher_poll_interval: Duration::from_millis(100),
            orchestrator_lock_timeout: Duration::from_secs(5),
            worker_lock_timeout: Duration::from_secs(30),
            max_attempts: 10,
            log_level: None,
            log_format: LogFormat::Pretty,
            service_name: None,
            service_version: None,
            max_sessions_per_runtime: 10,
            session_idle_timeout: Duration::from_secs(300),
            worker_node_id: None,
            worker_tag_filter: TagFilter::DefaultOnly,
            cache_max_instances: 4096,
            cache_max_events: 2_000_000,
            inline_activity_wait: Duration::from_millis(20),
        }
    }
}

impl RuntimeOptions {
    /// Checks every option; the first invalid one is reported.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let positive = |option: &'static str, d: Duration| {
            if d.is_zero() {
                Err(OptionsError::new(option, "must be greater than zero"))
            } else {
                Ok(())
            }
        };
        positive("dispatcher_poll_interval", self.dispatcher_poll_interval)?;
        positive("orchestrator_lock_timeout", self.orchestrator_lock_timeout)?;
        positive("worker_lock_timeout", self.worker_lock_timeout)?;
        positive("session_idle_timeout", self.session_idle_timeout)?;
        if self.max_attempts == 0 {
            return Err(OptionsError::new("max_attempts", "must be at least 1"));
        }
        if self.cache_max_instances == 0 {
            return Err(OptionsError::new("cache_max_instances", "must be at least 1"));
        }
        if let Some(level) = &self.log_level {
            if tracing_subscriber::EnvFilter::try_new(level).is_err() {
                return Err(OptionsError::new(
                    "log_level",
                    format!("{level:?} is not a valid level or filter"),
                ));
            }
        }
        if let Some(id) = &self.worker_node_id {
            if id.is_empty() || id.len() > 256 {
                return Err(OptionsError::new("worker_node_id", "must be 1 to 256 bytes"));
            }
        }
        validate_tag_filter(&self.worker_tag_filter)
    }
}

/// Checks a tag filter: at most `MAX_WORKER_TAGS` tags, each non-empty and within `MAX_TAG_NAME_BYTES`.
pub fn validate_tag_filter(filter: &TagFilter) -> Result<(), OptionsError> {
    let tags = match filter {
        TagFilter::Tags(tags) | TagFilter::DefaultAnd(tags) => tags,
        _ => return Ok(()),
    };
    if tags.is_empty() {
        return Err(OptionsError::new("worker_tag_filter", "names no tags"));
    }
    if tags.len() > MAX_WORKER_TAGS {
        return Err(OptionsError::new(
            "worker_tag_filter",
            format!("names {} tags; MAX_WORKER_TAGS is {MAX_WORKER_TAGS}", tags.len()),
        ));
    }
    for tag in tags {
        if tag.is_empty() || tag.len() > MAX_TAG_NAME_BYTES {
            return Err(OptionsError::new(
                "worker_tag_filter",
                format!("tag {tag:?} must be 1 to {MAX_TAG_NAME_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        RuntimeOptions::default().validate().unwrap();
    }

    #[test]
    fn invalid_values_name_the_option() {
        let cases = [
            RuntimeOptions {
                max_attempts: 0,
                ..Default::default()
            },
            RuntimeOptions {
                dispatcher_poll_interval: Duration::ZERO,
                ..Default::default()
            },
            RuntimeOptions {
                log_level: Some("[[nonsense".into()),
                ..Default::default()
            },
            RuntimeOptions {
                worker_tag_filter: TagFilter::Tags(vec!["a".into(); 6]),
                ..Default::default()
            },
            RuntimeOptions {
                worker_node_id: Some(String::new()),
                ..Default::default()
            },
        ];
        let names: Vec<&str> = cases.iter().map(|o| o.validate().unwrap_err().option).collect();
        assert_eq!(
            names,
            [
                "max_attempts",
                "dispatcher_poll_interval",
                "log_level",
                "worker_tag_filter",
                "worker_node_id"
            ]
        );
        assert!(LogFormat::parse("xml").is_err());
    }
}
