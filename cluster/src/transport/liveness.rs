//! Which peers are up: connection counts per node, and the `peer_up` / `peer_down` callbacks.
//!
//! Every connection that completes its hello holds a [`LiveGuard`]; the first guard for a node
//! calls `peer_up`, dropping the last calls `peer_down`. Guards carry the peer's incarnation: a
//! hello with a new one (the node restarted) takes over the entry, calls `peer_down` then
//! `peer_up`, and the old connections' guards no longer count when they drop.
//!
//! Two locks: `order` serializes whole transitions including their callbacks, so the handler sees
//! up/down for a node in the order the transitions happened; `nodes` is held only to update the
//! map, never during a callback, so a handler may call `Transport::connected_peers` (or `send`)
//! from inside `peer_up` without deadlocking.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use roost_engine::ids::NodeId;

use super::lock;
use super::InboundHandler;

struct Live {
    incarnation: u64,
    connections: usize,
}

pub(super) struct Liveness {
    handler: Arc<dyn InboundHandler>,
    order: Mutex<()>,
    nodes: Mutex<HashMap<NodeId, Live>>,
}

/// One live connection to `node`; dropping it may call `peer_down`.
pub(super) struct LiveGuard {
    liveness: Arc<Liveness>,
    node: NodeId,
    incarnation: u64,
}

impl Liveness {
    pub(super) fn new(handler: Arc<dyn InboundHandler>) -> Self {
        Self {
            handler,
            order: Mutex::new(()),
            nodes: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection to `node` (incarnation `incarnation`) that just completed its hello.
    pub(super) fn up(self: &Arc<Self>, node: NodeId, incarnation: u64) -> LiveGuard {
        let _order = lock(&self.order);
        let (restarted, first) = {
            let mut nodes = lock(&self.nodes);
            let entry = nodes.entry(node).or_insert(Live {
                incarnation,
                connections: 0,
            });
            let restarted = entry.incarnation != incarnation && entry.connections > 0;
            if entry.incarnation != incarnation {
                *entry = Live {
                    incarnation,
                    connections: 0,
                };
            }
            entry.connections += 1;
            (restarted, entry.connections == 1)
        };
        if restarted {
            tracing::info!(%node, "peer restarted");
            self.handler.peer_down(node);
        }
        if first {
            tracing::info!(%node, "peer up");
            self.handler.peer_up(node);
        }
        LiveGuard {
            liveness: self.clone(),
            node,
            incarnation,
        }
    }

    fn down(&self, node: NodeId, incarnation: u64) {
        let _order = lock(&self.order);
        let last = {
            let mut nodes = lock(&self.nodes);
            match nodes.get_mut(&node) {
                Some(live) if live.incarnation == incarnation => {
                    live.connections = live.connections.saturating_sub(1);
                    let last = live.connections == 0;
                    if last {
                        nodes.remove(&node);
                    }
                    last
                }
                _ => false,
            }
        };
        if last {
            tracing::info!(%node, "peer down");
            self.handler.peer_down(node);
        }
    }

    /// Nodes with at least one live connection, ascending.
    pub(super) fn connected(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = lock(&self.nodes).keys().copied().collect();
        nodes.sort();
        nodes
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.liveness.down(self.node, self.incarnation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Inbound;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl InboundHandler for Log {
        fn inbound(&self, _inbound: Inbound) {}
        fn peer_up(&self, node: NodeId) {
            lock(&self.0).push(format!("up {node}"));
        }
        fn peer_down(&self, node: NodeId) {
            lock(&self.0).push(format!("down {node}"));
        }
    }

    #[test]
    fn up_on_first_down_on_last_and_restart_is_down_then_up() {
        let log = Arc::new(Log::default());
        let liveness = Arc::new(Liveness::new(log.clone()));
        let a = liveness.up(NodeId(2), 10);
        let b = liveness.up(NodeId(2), 10);
        assert_eq!(liveness.connected(), vec![NodeId(2)]);
        drop(a);
        let restarted = liveness.up(NodeId(2), 11);
        drop(b); // a stale connection of the old incarnation: no effect
        assert_eq!(liveness.connected(), vec![NodeId(2)]);
        drop(restarted);
        assert!(liveness.connected().is_empty());
        assert_eq!(*lock(&log.0), vec!["up 2", "down 2", "up 2", "down 2"]);
    }
}
