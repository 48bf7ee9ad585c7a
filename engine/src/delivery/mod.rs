//! Delivery: how events reach the connections on this node.
//!
//! Conversation actors encode each outgoing item once (through the API's [`EventEncoder`]) and
//! hand the bytes to the [`shard::DeliveryShard`] of their event loop, which looks up the
//! recipients' connections and `try_send`s a [`Deliver`] to each; the [`hub::SessionHub`] owns
//! the connections and keeps every shard's copy of them current. Connections are actors owned by the API layer; the engine
//! sees them only as [`ConnectionHandle`]s. A connection whose mailbox is full is told to
//! [`DisconnectReason::SlowConsumer`] and resyncs from history, so no queue grows without bound.

pub mod hub;
pub mod shard;

use actix::prelude::SendError;
use actix::Message;
use actix::Recipient;
use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::metrics;
use crate::model::Event;
use crate::model::Receipt;
use crate::model::UnixMillis;

/// Turns outgoing items into the client wire format. Implemented by the API layer; called once
/// per item, never once per recipient.
pub trait EventEncoder: Send + Sync + 'static {
    fn event(&self, event: &Event) -> Bytes;
    fn receipt(&self, conversation: ConversationId, user: UserId, receipt: Receipt) -> Bytes;
    fn typing(&self, conversation: ConversationId, user: UserId) -> Bytes;
    fn presence(&self, user: UserId, online: bool, last_seen: Option<UnixMillis>) -> Bytes;
}

/// What a connection receives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outbound {
    /// A timeline event: the connection keeps per-conversation order and fills gaps by `seq`.
    Event {
        conversation: ConversationId,
        seq: Seq,
        bytes: Bytes,
    },
    /// Receipts, typing and presence: advisory, not sequenced.
    Ephemeral { bytes: Bytes },
    /// Events may have been lost on their way to this node (a peer node went away, or
    /// conversations changed owner): re-read every live conversation from the store after the
    /// last seq sent. Sent by the hub to every local connection; never sent between nodes.
    Resync,
}

#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    pub item: Outbound,
}

/// Why the server closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The connection's session token was revoked (logout).
    Revoked,
    /// The user was disabled by an administrator.
    UserDisabled,
    /// The connection could not keep up; its events stay in history, reconnect and sync.
    SlowConsumer,
    /// The node is shutting down; reconnect (to another node, or later).
    ShuttingDown,
}

#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub reason: DisconnectReason,
}

/// How the hub reaches one connection.
#[derive(Clone, Debug)]
pub struct ConnectionHandle {
    pub deliver: Recipient<Deliver>,
    pub disconnect: Recipient<Disconnect>,
}

impl ConnectionHandle {
    /// Queue `item` on the connection without waiting. A full mailbox gets the connection told
    /// to resync ([`DisconnectReason::SlowConsumer`]). Returns whether the item was queued; if not,
    /// the connection is gone or going and its holder should forget it.
    pub fn try_deliver(&self, item: &Outbound) -> bool {
        match self.deliver.try_send(Deliver { item: item.clone() }) {
            Ok(()) => true,
            Err(SendError::Full(_)) => {
                metrics::slow_consumer();
                self.disconnect.do_send(Disconnect {
                    reason: DisconnectReason::SlowConsumer,
                });
                false
            }
            Err(SendError::Closed(_)) => false,
        }
    }
}
