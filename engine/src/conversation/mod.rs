//! Conversations: one actor per active conversation, spawned and retired by the registry.

pub mod actor;
pub mod command;
pub mod dedup;
pub mod registry;
pub mod rules;

use std::sync::Arc;

use actix::Addr;

use crate::config::EngineConfig;
use crate::delivery::shard::DeliveryShard;
use crate::delivery::shard::ShardFanout;
use crate::delivery::EventEncoder;
use crate::delivery::Outbound;
use crate::ids::UserId;
use crate::placement::Placement;
use crate::remote::RemoteNodes;
use crate::store::Store;

/// What the conversation actors of one engine event loop share.
pub struct Deps {
    pub store: Arc<dyn Store>,
    /// The delivery shard of the event loop these actors run on.
    pub shard: Addr<DeliveryShard>,
    pub encoder: Arc<dyn EventEncoder>,
    pub config: Arc<EngineConfig>,
    pub remote: Arc<dyn RemoteNodes>,
    /// Checked again right before a seq is assigned: a command may wait in an actor's mailbox
    /// while this node's lease on the conversation lapses.
    pub placement: Arc<dyn Placement>,
}

impl Deps {
    /// Delivers an encoded item to every connection of `users`: other nodes first (one envelope
    /// per node with connected recipients), then this node's sessions.
    pub fn fan_out(&self, users: Arc<[UserId]>, item: Outbound) {
        self.remote.fan_out(&users, &item);
        self.shard.do_send(ShardFanout { users, item });
    }
}
