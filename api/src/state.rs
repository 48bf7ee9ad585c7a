//! AppState: what every handler and connection of a node shares, cheaply cloneable.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use roost_engine::Engine;

use crate::auth::Auth;
use crate::config::NodeConfig;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub auth: Arc<Auth>,
    pub config: Arc<NodeConfig>,
    pub lifecycle: Arc<Lifecycle>,
}

/// Readiness of the node: ready once started, not ready while draining on shutdown.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
