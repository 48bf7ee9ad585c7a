//! DeliveryShard: the fan-out of one engine event loop, next to the conversation actors on it.
//!
//! Each engine worker runs one shard. Conversation actors on that worker hand it their encoded
//! items ([`ShardFanout`]) and it `try_send`s them to every connection of every recipient, so an
//! event's way from its actor to the recipients' connections needs no thread hand-off before the
//! last one, and the fan-out work is spread over the workers instead of one thread.
//!
//! The [`SessionHub`](super::hub::SessionHub) stays the owner of the node's connections: it
//! registers each new connection with every shard *before* answering the connection's `Connect`,
//! and tells every shard when one goes away. A shard's map is therefore a copy that can only lag
//! behind on removals, never on additions a connection has been told about: an event released
//! after a connection's welcome is queued behind its registration. A connection whose mailbox is
//! full is told to resync ([`DisconnectReason::SlowConsumer`]) and dropped here; the hub hears of
//! it when the connection stops.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::hub::ConnectionId;
use super::ConnectionHandle;
use super::Outbound;
use crate::ids::UserId;
use crate::metrics;

#[derive(Default)]
pub struct DeliveryShard {
    connections: HashMap<UserId, Vec<(ConnectionId, ConnectionHandle)>>,
}

impl DeliveryShard {
    fn remove(&mut self, user: UserId, id: ConnectionId) {
        if let Some(list) = self.connections.get_mut(&user) {
            list.retain(|(c, _)| *c != id);
            if list.is_empty() {
                self.connections.remove(&user);
            }
        }
    }

    fn deliver(&mut self, users: &[UserId], item: &Outbound) {
        let mut delivered = 0;
        let mut gone: Vec<(UserId, ConnectionId)> = Vec::new();
        for user in users {
            let Some(list) = self.connections.get(user) else {
                continue;
            };
            for (id, handle) in list {
                if handle.try_deliver(item) {
                    delivered += 1;
                } else {
                    gone.push((*user, *id));
                }
            }
        }
        for (user, id) in gone {
            self.remove(user, id);
        }
        metrics::delivered(delivered);
    }
}

impl Actor for DeliveryShard {
    type Context = Context<Self>;
}

/// A connection opened; sent by the hub before it answers the connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddConnection {
    pub user: UserId,
    pub id: ConnectionId,
    pub handle: ConnectionHandle,
}

impl Handler<AddConnection> for DeliveryShard {
    type Result = ();

    fn handle(&mut self, msg: AddConnection, _ctx: &mut Context<Self>) {
        self.connections.entry(msg.user).or_default().push((msg.id, msg.handle));
    }
}

/// A connection is gone (closed, kicked); `None` removes every connection (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveConnection {
    pub which: Option<(UserId, ConnectionId)>,
}

impl Handler<RemoveConnection> for DeliveryShard {
    type Result = ();

    fn handle(&mut self, msg: RemoveConnection, _ctx: &mut Context<Self>) {
        match msg.which {
            Some((user, id)) => self.remove(user, id),
            None => self.connections.clear(),
        }
    }
}

/// Deliver one encoded item to every connection of `users` known to this shard.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShardFanout {
    pub users: Arc<[UserId]>,
    pub item: Outbound,
}

impl Handler<ShardFanout> for DeliveryShard {
    type Result = ();

    fn handle(&mut self, msg: ShardFanout, _ctx: &mut Context<Self>) {
        self.deliver(&msg.users, &msg.item);
    }
}
