//! Conversations: one actor per active conversation, spawned and retired by the registry.

pub mod actor;
pub mod command;
pub mod dedup;
pub mod registry;
pub mod rules;

use std::sync::Arc;

use actix::Addr;

use crate::config::EngineConfig;
use crate::delivery::hub::SessionHub;
use crate::delivery::EventEncoder;
use crate::store::Store;

/// What every conversation actor of a node shares.
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub hub: Addr<SessionHub>,
    pub encoder: Arc<dyn EventEncoder>,
    pub config: Arc<EngineConfig>,
}
