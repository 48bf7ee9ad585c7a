//! Typed metric events of the engine. Metric names are `roost_engine_*`; only this module names
//! them, so the catalogue in docs/operations.md can be checked against one file.

use std::time::Duration;

use metrics::counter;
use metrics::gauge;
use metrics::histogram;

/// A group commit finished: how many writes it carried and how long the commit took.
pub fn store_commit(batch_len: usize, elapsed: Duration) {
    histogram!("roost_engine_store_commit_seconds").record(elapsed.as_secs_f64());
    histogram!("roost_engine_store_commit_batch_writes").record(batch_len as f64);
}

/// A store operation failed.
pub fn store_error(operation: &'static str) {
    counter!("roost_engine_store_errors_total", "operation" => operation).increment(1);
}

/// An event was durably appended and acknowledged; `elapsed` is from receipt to durable.
pub fn event_appended(elapsed: Duration) {
    counter!("roost_engine_events_appended_total").increment(1);
    histogram!("roost_engine_append_seconds").record(elapsed.as_secs_f64());
}

/// A send was answered from the idempotency index instead of being appended again.
pub fn duplicate_send() {
    counter!("roost_engine_duplicate_sends_total").increment(1);
}

/// Deliveries handed to local connections for one event.
pub fn delivered(recipients: usize) {
    counter!("roost_engine_deliveries_total").increment(recipients as u64);
}

/// A conversation refused work because too many appends were pending (store too slow).
pub fn overloaded() {
    counter!("roost_engine_overloaded_total").increment(1);
}

/// A connection could not keep up and was told to resync.
pub fn slow_consumer() {
    counter!("roost_engine_slow_consumers_total").increment(1);
}

/// Number of live conversation actors on this node.
pub fn conversation_actors_changed(delta: i64) {
    gauge!("roost_engine_conversation_actors").increment(delta as f64);
}

/// Number of users with at least one connection on this node.
pub fn online_users(count: usize) {
    gauge!("roost_engine_online_users").set(count as f64);
}

/// A presence directory call failed or timed out (presence degrades; nothing else does).
pub fn presence_error(operation: &'static str) {
    counter!("roost_engine_presence_errors_total", "operation" => operation).increment(1);
}
