//! AppState: what every handler and connection of a node shares, cheaply cloneable.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use roost_cluster::node::ClusterNode;
use roost_engine::Engine;

use crate::auth::Auth;
use crate::config::NodeConfig;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub auth: Arc<Auth>,
    pub config: Arc<NodeConfig>,
    pub lifecycle: Arc<Lifecycle>,
    /// This node's cluster runtime when `cluster.enabled`; `None` on a single node.
    pub cluster: Option<ClusterNode>,
}

/// Readiness of the node: ready once started, not ready while draining on shutdown or once the
/// node has left its cluster.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    draining: AtomicBool,
    left: AtomicBool,
}

impl Lifecycle {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// This node has left its cluster (no shards, or removed): its clients are sent elsewhere.
    pub fn set_left(&self) {
        self.left.store(true, Ordering::SeqCst);
    }

    pub fn has_left(&self) -> bool {
        self.left.load(Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst) && !self.has_left()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
