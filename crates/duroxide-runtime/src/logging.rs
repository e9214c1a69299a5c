//! Log set-up from runtime options, and writing orchestration trace lines.

use duroxide_core::engine::{LogLevel, LogRecord};
use tracing_subscriber::EnvFilter;

use crate::options::{LogFormat, RuntimeOptions};

/// Installs a global subscriber when `log_level` is set. `RUST_LOG` overrides the level. If the
/// process already has a subscriber (the application's, or an earlier runtime's), that one stays.
pub(crate) fn init(options: &RuntimeOptions) {
    let Some(level) = &options.log_level else { return };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_set = match options.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Compact => builder.compact().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Writes one orchestration trace line (already filtered for replay by the engine), tagged with the
/// service's name and version when the options set them.
pub(crate) fn emit(record: &LogRecord, name: &str, options: &RuntimeOptions) {
    let (id, exec, msg) = (&record.instance_id, record.execution_id, &record.message);
    let service = options.service_name.as_deref().unwrap_or("");
    let version = options.service_version.as_deref().unwrap_or("");
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(target: "duroxide::orchestration", instance_id = %id, execution_id = exec,
                orchestration_name = %name, service_name = service, service_version = version, "{msg}")
        };
    }
    match record.level {
        LogLevel::Debug => line!(debug),
        LogLevel::Info => line!(info),
        LogLevel::Warn => line!(warn),
        LogLevel::Error => line!(error),
    }
}
