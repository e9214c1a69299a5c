//! Runtime counters and their snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Live counters of one runtime.
        #[derive(Debug, Default)]
        pub(crate) struct Metrics {
            $(pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of a runtime's counters.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct MetricsSnapshot {
            $(pub $name: u64,)*
        }

        impl Metrics {
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl MetricsSnapshot {
            /// Every counter with its name, in declaration order.
            pub fn entries(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters!(
    orch_starts,
    orch_completions,
    orch_failures,
    orch_application_errors,
    orch_infrastructure_errors,
    orch_configuration_errors,
    orch_poison,
    activity_success,
    activity_app_errors,
    activity_infra_errors,
    activity_config_errors,
    activity_poison,
    activity_inline_runs,
    orch_dispatcher_items_fetched,
    worker_dispatcher_items_fetched,
    orch_continue_as_new,
    suborchestration_calls,
    provider_errors,
);

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
