//! The duroxide provider conformance suite: public async checks that prove a
//! [`Provider`](duroxide_core::Provider) keeps the contract documented in `duroxide_core::provider`.
//!
//! # Running the suite against your provider
//!
//! 1. Add the suite as a dev-dependency of your provider crate (the generated tests bring their own
//!    tokio runtime):
//!
//!    ```toml
//!    [dev-dependencies]
//!    duroxide-conformance = "0.1"
//!    ```
//!
//! 2. Implement [`ProviderFactory`]: `create` returns a provider on a **fresh, empty** store (a new
//!    database, schema or temporary directory) each time it is called. Keep whatever must outlive the
//!    provider (a temp dir, a container handle) in the factory. Override
//!    [`create_pair`](ProviderFactory::create_pair) if two provider objects can share one store (as two
//!    processes sharing a database do), and [`capabilities`](ProviderFactory::capabilities) for
//!    behaviour beyond the common contract (see [`Capabilities`]).
//!
//! 3. In `tests/conformance.rs`, generate one test per check:
//!
//!    ```text
//!    use std::sync::Arc;
//!    use duroxide_conformance::{async_trait, Capabilities, ProviderFactory};
//!    use duroxide_core::Provider;
//!
//!    struct FreshSchema;
//!
//!    #[async_trait]
//!    impl ProviderFactory for FreshSchema {
//!        async fn create(&self) -> Arc<dyn Provider> {
//!            Arc::new(MyProvider::connect(&new_schema_name()).await.expect("database"))
//!        }
//!
//!        async fn create_pair(&self) -> Option<(Arc<dyn Provider>, Arc<dyn Provider>)> {
//!            let schema = new_schema_name();
//!            let a = MyProvider::connect(&schema).await.expect("database");
//!            let b = MyProvider::connect(&schema).await.expect("database");
//!            Some((Arc::new(a), Arc::new(b)))
//!        }
//!
//!        fn capabilities(&self) -> Capabilities {
//!            Capabilities::default().with_cross_object_wakeups(true)
//!        }
//!    }
//!
//!    duroxide_conformance::conformance_tests!(FreshSchema);
//!    ```
//!
//!    `cargo test --test conformance` then shows every check as its own test, named
//!    `<category>::<check>`, e.g. `peek_lock::second_ack_is_lock_lost`. A failure message names what was
//!    expected and what the provider did, and repeats the check's doc comment (what it proves). Checks
//!    that need a capability your factory does not declare pass with a note on stderr. Invoke the macro
//!    once per configuration, each in its own module (the SQLite provider runs it in `mod in_memory`
//!    and `mod file`).
//!
//! To run everything from one test instead (for a custom harness or a report), call
//! [`run_all`] and then [`Report::assert_passed`], which lists every failure by name:
//!
//! ```text
//! #[tokio::test(flavor = "multi_thread")]
//! async fn conformance() {
//!     duroxide_conformance::run_all(&FreshSchema).await.assert_passed();
//! }
//! ```
//!
//! [`checks()`] returns the registry (category, name, doc, function) to pick your own subset, and each
//! check is also a plain `pub async fn` in [`checks`](mod@checks), e.g.
//! `duroxide_conformance::checks::sessions::release_session_frees_it_at_once(&factory)`.
//!
//! # What the checks assume
//!
//! * Every check starts from an empty store it created through the factory, and checks never share a
//!   store, so they may run in parallel (as `cargo test` does).
//! * Timing: leases in the checks are 150 ms to a few seconds, and a "prompt" wake-up must arrive within
//!   one second of the work. Checks wait on conditions with bounded polling, never on fixed sleeps,
//!   except to let a lease run out, where sleeping past the lease is exactly the condition.
//! * The provider's clock and the test process's clock agree within a minute (timestamps) and within
//!   50 ms when comparing visibility times (timers). A database on another host needs its clock synced.
//!
//! # Categories
//!
//! orchestrator and worker queue semantics and FIFO, peek-lock, exclusive instance locks, atomic ack,
//! lock expiry/renewal/abandon, attempt counts, timer visibility, multiple executions, buffered events,
//! sessions, tag filters, custom status, KV, management, wake-ups. The module of each category in
//! [`checks`](mod@checks) says what its checks cover.

pub mod checks;
pub mod cycles;
mod factory;
pub mod faults;
mod runner;
mod support;

pub use async_trait::async_trait;
pub use factory::{Capabilities, ProviderFactory};
pub use runner::{
    run_all, run_check, run_matching, Check, CheckError, CheckFn, CheckFuture, CheckReport, CheckResult,
    Outcome, Report, CHECK_TIMEOUT,
};

#[doc(hidden)]
pub use runner::run_test;

/// The list of every check, by category. The one place a check is registered: both [`checks()`] and
/// [`conformance_tests!`] expand from it, and a unit test proves it names every `pub async fn` of the
/// category modules.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_check_list {
    ($mode:ident { $($args:tt)* }) => {
        $crate::__expand_check_list! {
            $mode { $($args)* }
            orchestrator_queue [
                create_instance_enqueues_start_message,
                create_instance_is_idempotent,
                create_instance_without_creates_is_invalid_input,
                create_instance_records_metadata,
                create_instance_creates_execution_one,
                enqueue_to_missing_instance_is_not_found,
                messages_are_delivered_in_enqueue_order,
                items_hold_only_their_own_instance_messages,
                every_instance_with_work_is_fetched,
                fetch_on_empty_store_returns_none,
                payloads_round_trip_verbatim,
                instance_ids_are_opaque_text,
                fetched_item_carries_instance_info,
                first_fetch_has_empty_state,
                fetch_returns_the_acked_history,
                cached_fetch_leaves_out_only_a_history_held_whole,
                cached_fetch_returns_history_the_cache_lacks,
                ack_delivers_messages_to_other_instances,
                ack_drops_messages_to_missing_instances,
                ack_message_with_creates_starts_the_instance,
                ack_message_with_creates_for_existing_instance_is_dropped,
                ack_message_to_own_instance_arrives_next_turn,
                missing_instance_messages_never_block_work,
            ]
            worker_queue [
                work_items_are_fetched_in_enqueue_order,
                lease_carries_the_enqueued_item,
                locked_work_item_is_not_fetched_again,
                ack_work_item_deletes_it,
                ack_work_item_enqueues_the_completion,
                ack_work_item_enqueues_a_failure,
                ack_without_completion_enqueues_nothing,
                completion_for_missing_instance_is_dropped,
                ack_work_item_twice_is_lock_lost,
                ack_work_item_with_unknown_token_is_lock_lost,
                renew_work_item_with_unknown_token_is_lock_lost,
                cancelled_work_item_ack_is_lock_lost,
                cancelled_work_item_renew_is_lock_lost,
                fetch_work_on_empty_queue_returns_none,
                items_of_all_instances_are_served,
                concurrent_workers_never_share_an_item,
            ]
            peek_lock [
                abandoned_messages_are_fetched_again,
                ack_keeps_messages_enqueued_after_the_fetch,
                locked_instance_is_not_fetched_again,
                acked_instance_without_messages_is_idle,
                second_ack_is_lock_lost,
                abandon_after_ack_is_lock_lost,
                renew_after_ack_is_lock_lost,
                ack_with_unknown_token_is_lock_lost,
                abandon_with_unknown_token_is_lock_lost,
                renew_with_unknown_token_is_lock_lost,
                token_acks_only_its_own_instance,
                lock_tokens_are_distinct_and_long_enough,
                lock_tokens_differ_across_stores,
                relocked_instance_gets_a_new_token,
                abandon_keeps_message_order,
            ]
            instance_locks [
                concurrent_fetchers_never_share_an_instance,
                fetchers_on_two_objects_never_share_an_instance,
                one_instance_many_fetchers_one_winner,
                one_work_item_many_workers_one_winner,
                locks_are_per_instance,
                concurrent_enqueue_and_turns_deliver_each_message_once,
            ]
            atomic_ack [
                ack_appends_history,
                duplicate_event_id_fails_and_leaves_nothing,
                duplicate_ids_within_one_ack_leave_nothing,
                refused_ack_keeps_the_messages,
                ack_with_wrong_token_leaves_nothing,
                ack_completes_execution_and_instance,
                ack_fails_execution_and_instance,
                ack_without_status_keeps_the_status,
                running_execution_has_no_completed_at,
                ack_writes_name_and_version,
                ack_enqueues_worker_items,
                ack_applies_every_part,
                cancel_activities_removes_only_matching_items,
                ack_without_events_consumes_messages,
                ack_deletes_exactly_the_fetched_messages,
            ]
            lock_expiry [
                expired_instance_lock_is_fetched_again,
                ack_after_expiry_is_lock_lost,
                stale_holder_cannot_ack_after_relock,
                stale_holder_cannot_abandon_or_renew,
                renew_extends_the_instance_lease,
                renew_after_expiry_is_lock_lost,
                abandon_releases_at_once,
                abandon_with_delay_hides_messages_for_the_delay,
                abandon_twice_is_lock_lost,
                expired_work_item_is_fetched_again,
                work_item_ack_after_expiry_is_lock_lost,
                renew_extends_the_work_item_lease,
                work_item_renew_after_expiry_is_lock_lost,
                work_item_abandon_releases_at_once,
                work_item_abandon_with_delay_hides_it,
            ]
            attempts [
                first_fetch_is_attempt_one,
                abandon_and_refetch_counts_attempts,
                lease_expiry_counts_an_attempt,
                attempt_is_the_highest_among_messages,
                new_messages_start_at_attempt_one,
                provider_never_drops_repeatedly_abandoned_messages,
                delayed_abandon_keeps_the_count,
                attempts_are_counted_per_instance,
                work_item_attempts_count_every_fetch,
                provider_never_drops_repeatedly_abandoned_work,
            ]
            timers [
                future_message_is_invisible,
                timer_becomes_visible_when_due,
                past_due_message_is_visible_at_once,
                pending_timer_does_not_hold_back_visible_messages,
                only_due_timers_are_returned,
                due_timer_keeps_its_enqueue_position,
                client_message_with_visibility_time_is_delayed,
                delayed_start_creates_but_waits,
                timer_for_another_instance_waits,
                queue_depths_split_visible_and_future,
            ]
            executions [
                continue_as_new_creates_the_next_execution,
                history_is_kept_per_execution,
                fetch_after_continue_as_new_returns_new_history,
                continued_execution_is_closed,
                later_execution_completes_the_instance,
                messages_survive_continue_as_new,
                many_executions_in_a_row,
                completion_for_an_old_execution_is_delivered,
                ack_with_next_execution_id_switches_execution,
                event_counts_are_per_execution,
            ]
            events [
                events_during_a_turn_wait_for_the_next_fetch,
                early_events_are_buffered_behind_the_start,
                events_during_an_abandoned_turn_follow_its_messages,
                queue_messages_keep_their_order,
                cancel_request_during_a_turn_is_kept,
                messages_to_a_finished_instance_are_fetchable,
                concurrent_senders_lose_nothing,
                messages_from_other_turns_wait_for_the_lock,
                large_backlog_arrives_in_one_fetch,
                completion_during_a_turn_waits,
            ]
            sessions [
                session_items_need_session_routing,
                first_fetch_claims_the_session,
                owner_keeps_its_session_items_in_order,
                held_session_items_are_skipped_not_blocking,
                owner_at_its_limit_still_serves_its_sessions,
                may_claim_new_false_claims_nothing,
                expired_session_needs_may_claim_new_even_for_its_old_owner,
                idle_session_is_taken_over_after_its_lease,
                previous_owner_is_locked_out_after_takeover,
                fetch_extends_the_session_lease,
                renew_session_leases_extends_owned_sessions,
                renew_session_leases_counts_only_own_sessions,
                release_session_frees_it_at_once,
                release_by_another_owner_is_a_no_op,
                release_of_unknown_session_is_a_no_op,
                owner_may_hold_several_items_of_its_session,
                session_ownership_outlives_its_items,
                sessions_are_independent,
                session_items_obey_the_tag_filter,
            ]
            tags [
                default_only_admits_untagged_items,
                tags_admit_only_the_listed_tag,
                tags_admit_every_listed_tag,
                default_and_admits_untagged_and_listed,
                any_admits_everything,
                none_admits_nothing,
                empty_tag_lists_admit_no_tags,
                tags_are_case_sensitive,
                filtering_keeps_order_among_admitted_items,
                disjoint_filters_partition_the_queue,
            ]
            custom_status [
                new_instance_has_version_zero,
                set_stores_the_value_and_increments_the_version,
                unchanged_keeps_value_and_version,
                set_none_clears_and_increments,
                setting_the_same_value_increments,
                fetched_item_carries_the_custom_status,
                refused_ack_keeps_the_custom_status,
                version_counts_every_change,
                custom_status_survives_continue_as_new,
                instance_state_is_the_info_and_the_custom_status,
            ]
            kv [
                set_is_visible_to_clients,
                current_execution_changes_are_not_in_the_snapshot,
                snapshot_is_frozen_for_the_execution,
                next_execution_snapshot_has_previous_changes,
                starting_ack_changes_stay_out_of_the_new_snapshot,
                delete_removes_the_key,
                set_overwrites_value_and_timestamp,
                missing_key_reads_none,
                kv_is_per_instance,
                refused_ack_applies_no_kv_change,
                changes_within_one_ack_apply_in_order,
                delete_of_a_missing_key_is_harmless,
                snapshot_reflects_earlier_deletes,
                snapshots_accumulate_over_executions,
            ]
            management [
                list_instances_lists_every_instance,
                list_instances_filters_by_status,
                instance_info_of_unknown_is_none,
                instance_info_has_real_timestamps,
                updated_at_advances_with_turns,
                list_executions_lists_in_order,
                execution_info_of_unknown_is_none,
                execution_info_reports_a_completed_execution,
                read_history_returns_events_in_id_order,
                instance_tree_lists_root_then_descendants,
                instance_tree_of_a_subtree_and_a_leaf,
                delete_unknown_instance_is_not_found,
                delete_running_without_force_is_still_running,
                forced_delete_removes_everything,
                delete_reports_what_it_removed,
                delete_cascades_to_descendants,
                running_descendant_needs_force,
                deleting_a_child_leaves_the_parent,
                deleted_id_can_be_created_again,
                worker_lease_of_a_deleted_instance_is_lost,
                bulk_delete_without_criteria_is_invalid_input,
                bulk_delete_takes_only_terminal_roots,
                bulk_delete_by_completion_time,
                bulk_delete_respects_the_limit,
                bulk_delete_cascades_to_descendants,
                prune_without_options_is_invalid_input,
                bulk_prune_without_criteria_is_invalid_input,
                prune_keep_last_keeps_the_newest,
                prune_never_deletes_the_current_execution,
                prune_by_completion_time,
                prune_needs_both_criteria_to_hold,
                bulk_prune_covers_every_selected_instance,
                empty_store_reports_zeros,
                system_metrics_count_instances_executions_and_events,
                queue_depths_count_messages_and_work,
                instance_stats_of_unknown_is_none,
                instance_stats_report_history_queue_and_kv,
            ]
            wakeups [
                create_instance_wakes_a_waiting_fetch,
                enqueue_message_wakes_a_waiting_fetch,
                ack_with_messages_wakes_a_waiting_fetch,
                work_completion_wakes_a_waiting_fetch,
                abandon_wakes_a_waiting_fetch,
                new_work_wakes_a_waiting_worker,
                due_timer_wakes_a_waiting_fetch,
                wake_all_ends_a_waiting_fetch,
                wake_all_ends_a_waiting_worker_fetch,
                idle_fetch_waits_for_its_poll_timeout,
                waiting_worker_ignores_refused_work,
                work_from_another_object_wakes_a_waiting_fetch,
            ]        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __expand_check_list {
    (registry {} $($category:ident [ $($check:ident),* $(,)? ])*) => {
        /// Every check of the suite, in category order.
        pub fn checks() -> Vec<$crate::Check> {
            vec![$($(
                $crate::Check {
                    category: stringify!($category),
                    name: stringify!($check),
                    source: include_str!(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/src/checks/",
                        stringify!($category),
                        ".rs"
                    )),
                    run: {
                        fn run(factory: &dyn $crate::ProviderFactory) -> $crate::CheckFuture<'_> {
                            Box::pin($crate::checks::$category::$check(factory))
                        }
                        run
                    },
                },
            )*)*]
        }
    };
    (tests { $factory:expr } $($category:ident [ $($check:ident),* $(,)? ])*) => {
        $(
            mod $category {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[test]
                    fn $check() {
                        $crate::run_test(
                            concat!(stringify!($category), "::", stringify!($check)),
                            || $factory,
                        );
                    }
                )*
            }
        )*
    };
}

__with_check_list!(registry {});

/// Generates one `#[test]` per conformance check, grouped in one module per category, each running its
/// check on a fresh provider from the factory expression (evaluated once per test, inside the test's
/// tokio runtime). See the crate documentation for a complete example.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::__with_check_list!(tests { $factory });
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const CATEGORY_SOURCES: &[(&str, &str)] = &[
        ("orchestrator_queue", include_str!("checks/orchestrator_queue.rs")),
        ("worker_queue", include_str!("checks/worker_queue.rs")),
        ("peek_lock", include_str!("checks/peek_lock.rs")),
        ("instance_locks", include_str!("checks/instance_locks.rs")),
        ("atomic_ack", include_str!("checks/atomic_ack.rs")),
        ("lock_expiry", include_str!("checks/lock_expiry.rs")),
        ("attempts", include_str!("checks/attempts.rs")),
        ("timers", include_str!("checks/timers.rs")),
        ("executions", include_str!("checks/executions.rs")),
        ("events", include_str!("checks/events.rs")),
        ("sessions", include_str!("checks/sessions.rs")),
        ("tags", include_str!("checks/tags.rs")),
        ("custom_status", include_str!("checks/custom_status.rs")),
        ("kv", include_str!("checks/kv.rs")),
        ("management", include_str!("checks/management.rs")),
        ("wakeups", include_str!("checks/wakeups.rs")),
    ];

    #[test]
    fn every_public_check_is_registered_once() {
        let mut in_source = BTreeSet::new();
        for (category, source) in CATEGORY_SOURCES {
            for line in source.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    let name = rest.split('(').next().expect("a function name");
                    in_source.insert(format!("{category}::{name}"));
                }
            }
        }
        let registered: Vec<String> = checks().iter().map(Check::id).collect();
        let unique: BTreeSet<String> = registered.iter().cloned().collect();
        assert_eq!(unique.len(), registered.len(), "a check is registered twice");
        assert_eq!(
            unique, in_source,
            "the registry and the category modules disagree"
        );
        let categories: BTreeSet<&str> = checks().iter().map(|c| c.category).collect();
        assert_eq!(
            categories.len(),
            CATEGORY_SOURCES.len(),
            "a category module is not registered"
        );
    }

    #[test]
    fn every_check_says_what_it_proves() {
        for check in checks() {
            assert!(
                check.doc().len() > 20,
                "{} has no meaningful doc comment",
                check.id()
            );
        }
    }
}
