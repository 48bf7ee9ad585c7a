//! Typed metric events of the routing layer. Only this module names them, so the catalogue can be
//! checked against one file.

use metrics::counter;

/// A command was sent to the node that owns its conversation.
pub fn forwarded() {
    counter!("roost_cluster_forwarded_total").increment(1);
}

/// One fan-out envelope for `recipients` users was queued for a peer.
pub fn deliver_queued(recipients: usize) {
    counter!("roost_cluster_deliver_envelopes_total").increment(1);
    counter!("roost_cluster_deliver_recipients_total").increment(recipients as u64);
}

/// A fan-out envelope was not queued (`reason`: `backpressure` or `unreachable`); the peer's
/// sessions recover through the gap check or the next resync.
pub fn fanout_dropped(reason: &'static str) {
    counter!("roost_peer_fanout_dropped_total", "reason" => reason).increment(1);
}
