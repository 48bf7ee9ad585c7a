//! SessionHub: the node's directory of live connections, by user, and the local fan-out.
//!
//! Owns `user -> connections` and derives presence from it (a user is online while they have at
//! least one connection here). Conversation actors deliver through the
//! [`DeliveryShard`](super::shard::DeliveryShard) of their own event loop; the hub registers every
//! connection with every shard before answering its `Connect`, and removes it from all of them
//! when it goes. The hub itself delivers what has no conversation actor here ([`Fanout`]:
//! presence, items other nodes sent) with `try_send`. Kicks connections on revocation, disable,
//! slow consumption and shutdown.
//!
//! Reports to the node-independent [`PresenceDirectory`] (local or Redis): a user's first
//! connection here, their last disconnect, and a heartbeat of everyone online here every
//! [`PresenceDirectory::heartbeat_interval`]. Reports go one at a time through a
//! [`DirectoryLane`] so they cannot overtake each other, run off the delivery path, and only
//! log when they fail: the directory is advisory. `QueryPresence` answers from the directory,
//! with this node's own connections taking precedence, and from local knowledge alone when the
//! directory fails.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;

use actix::prelude::*;

use super::shard::AddConnection;
use super::shard::DeliveryShard;
use super::shard::RemoveConnection;
use super::ConnectionHandle;
use super::Disconnect;
use super::DisconnectReason;
use super::EventEncoder;
use super::Outbound;
use crate::clock::now_millis;
use crate::ids::NodeId;
use crate::ids::TokenHash;
use crate::ids::UserId;
use crate::metrics;
use crate::model::UnixMillis;
use crate::presence::lane::DirectoryLane;
use crate::presence::lane::Report;
use crate::presence::PresenceDirectory;
use crate::presence::PresenceEntry;
use crate::presence::PresenceError;
use crate::remote::NoRemoteNodes;
use crate::remote::RemoteNodes;
use crate::store::Store;

/// Identifies one connection within the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

struct Connection {
    id: ConnectionId,
    token: TokenHash,
    handle: ConnectionHandle,
}

pub struct SessionHub {
    store: Arc<dyn Store>,
    encoder: Arc<dyn EventEncoder>,
    presence_fanout_max_members: usize,
    connections: HashMap<UserId, Vec<Connection>>,
    last_seen: HashMap<UserId, UnixMillis>,
    next_id: u64,
    presence: Arc<dyn PresenceDirectory>,
    node: NodeId,
    lane: DirectoryLane,
    remote: Arc<dyn RemoteNodes>,
    shards: Vec<Addr<DeliveryShard>>,
}

impl SessionHub {
    /// A hub for node `node` that reports to `presence`.
    pub fn new(
        store: Arc<dyn Store>,
        encoder: Arc<dyn EventEncoder>,
        presence_fanout_max_members: usize,
        presence: Arc<dyn PresenceDirectory>,
        node: NodeId,
    ) -> Self {
        Self {
            store,
            encoder,
            presence_fanout_max_members,
            connections: HashMap::new(),
            last_seen: HashMap::new(),
            next_id: 1,
            presence,
            node,
            lane: DirectoryLane::default(),
            remote: Arc::new(NoRemoteNodes),
            shards: Vec::new(),
        }
    }

    /// The delivery shards of the engine's event loops, kept in step with this hub's connections.
    pub fn with_shards(mut self, shards: Vec<Addr<DeliveryShard>>) -> Self {
        self.shards = shards;
        self
    }

    fn tell_shards(&self, which: Option<(UserId, ConnectionId)>) {
        for shard in &self.shards {
            shard.do_send(RemoveConnection { which });
        }
    }

    /// Reports users whose first connection opened or last one closed to the other nodes of a
    /// cluster, so events of conversations owned elsewhere are sent here.
    pub fn with_remote(mut self, remote: Arc<dyn RemoteNodes>) -> Self {
        self.remote = remote;
        self
    }

    fn remove_where(&mut self, user: UserId, mut predicate: impl FnMut(&Connection) -> bool) -> bool {
        let Some(list) = self.connections.get_mut(&user) else {
            return false;
        };
        let mut removed = Vec::new();
        list.retain(|c| {
            let remove = predicate(c);
            if remove {
                removed.push(c.id);
            }
            !remove
        });
        let emptied = list.is_empty();
        if emptied {
            self.connections.remove(&user);
        }
        for id in removed {
            self.tell_shards(Some((user, id)));
        }
        emptied
    }

    /// A user's presence changed: remember it and tell the people who share a conversation.
    fn presence_changed(&mut self, user: UserId, online: bool, ctx: &mut Context<Self>) {
        metrics::online_users(self.connections.len());
        self.remote.local_user(user, online);
        let last_seen = if online {
            None
        } else {
            let now = now_millis();
            self.last_seen.insert(user, now);
            Some(now)
        };
        self.lane.user_changed(user);
        self.report_to_directory(ctx);
        let bytes = self.encoder.presence(user, online, last_seen);
        let store = self.store.clone();
        let max_members = self.presence_fanout_max_members;
        let lookup = async move {
            if let Some(at) = last_seen {
                if let Err(error) = store.set_last_seen(user, at).await {
                    tracing::debug!(%user, %error, "Recording last seen failed.");
                }
            }
            contacts_of(store.as_ref(), user, max_members).await
        };
        ctx.spawn(lookup.into_actor(self).map(move |contacts, hub, ctx| {
            let users: Arc<[UserId]> = contacts.into_iter().collect();
            let item = Outbound::Ephemeral { bytes };
            // Contacts connected to other nodes of a cluster hear of it too (one envelope per node).
            hub.remote.fan_out(&users, &item);
            hub.deliver_to(&users, &item, ctx);
        }));
    }

    /// Start the next directory report, unless one is in flight; each one starts the next.
    fn report_to_directory(&mut self, ctx: &mut Context<Self>) {
        let Some(report) = self.lane.start_next() else {
            return;
        };
        let call = match report {
            Report::Heartbeat => DirectoryCall::Heartbeat(self.connections.keys().copied().collect()),
            Report::User(user) if self.connections.contains_key(&user) => DirectoryCall::Connected(user),
            Report::User(user) => {
                let at = self.last_seen.get(&user).copied().unwrap_or_else(now_millis);
                DirectoryCall::Disconnected(user, at)
            }
        };
        let presence = self.presence.clone();
        let node = self.node;
        let work = async move { call.run(presence.as_ref(), node).await };
        ctx.spawn(work.into_actor(self).map(|(operation, result), hub, ctx| {
            if let Err(error) = result {
                // The directory logs outages itself; the next heartbeat repairs this node's entries.
                tracing::debug!(operation, %error, "Presence directory report failed.");
            }
            hub.lane.finished();
            hub.report_to_directory(ctx);
        }));
    }

    /// Presence as the directory reports it, corrected by what this node knows first-hand.
    fn merge_presence(&self, user: UserId, entry: Option<&PresenceEntry>) -> PresenceState {
        let here = self.connections.contains_key(&user);
        let elsewhere = entry.is_some_and(|e| e.nodes.iter().any(|n| *n != self.node));
        let local_seen = self.last_seen.get(&user).copied();
        PresenceState {
            user,
            online: here || elsewhere,
            last_seen: local_seen.max(entry.and_then(|e| e.last_seen)),
        }
    }

    fn deliver_to(&mut self, users: &[UserId], item: &Outbound, ctx: &mut Context<Self>) -> usize {
        let mut delivered = 0;
        let mut slow: Vec<(UserId, ConnectionId)> = Vec::new();
        for user in users {
            let Some(list) = self.connections.get(user) else {
                continue;
            };
            for conn in list {
                if conn.handle.try_deliver(item) {
                    delivered += 1;
                } else {
                    slow.push((*user, conn.id));
                }
            }
        }
        for (user, id) in slow {
            if self.remove_where(user, |c| c.id == id) {
                // The user's last connection here is gone: offline, like any disconnect.
                self.presence_changed(user, false, ctx);
            }
        }
        metrics::delivered(delivered);
        delivered
    }

    fn kick(
        &mut self,
        user: UserId,
        reason: DisconnectReason,
        mut which: impl FnMut(&Connection) -> bool,
        ctx: &mut Context<Self>,
    ) -> usize {
        let mut kicked = 0;
        if let Some(list) = self.connections.get(&user) {
            for conn in list.iter().filter(|c| which(c)) {
                conn.handle.disconnect.do_send(Disconnect { reason });
                kicked += 1;
            }
        }
        if kicked > 0 && self.remove_where(user, which) {
            self.presence_changed(user, false, ctx);
        }
        kicked
    }
}

/// One report to the presence directory, with the state it carries.
enum DirectoryCall {
    Heartbeat(Vec<UserId>),
    Connected(UserId),
    Disconnected(UserId, UnixMillis),
}

impl DirectoryCall {
    async fn run(self, presence: &dyn PresenceDirectory, node: NodeId) -> (&'static str, Result<(), PresenceError>) {
        match self {
            Self::Heartbeat(users) => ("heartbeat", presence.heartbeat(&users, node).await),
            Self::Connected(user) => ("user_connected", presence.user_connected(user, node).await),
            Self::Disconnected(user, at) => ("user_disconnected", presence.user_disconnected(user, node, at).await),
        }
    }
}

/// Users who share a conversation of at most `max_members` members with `user`.
async fn contacts_of(store: &dyn Store, user: UserId, max_members: usize) -> HashSet<UserId> {
    let mut contacts = HashSet::new();
    let Ok(conversations) = store.conversations_of(user).await else {
        return contacts;
    };
    for conversation in conversations {
        if let Ok(members) = store.members(conversation).await {
            if members.len() <= max_members {
                contacts.extend(members.into_iter().map(|m| m.user).filter(|u| *u != user));
            }
        }
    }
    contacts
}

impl Actor for SessionHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.presence.heartbeat_interval(), |hub, ctx| {
            hub.lane.heartbeat_due();
            hub.report_to_directory(ctx);
        });
    }
}

/// Register a new authenticated connection.
#[derive(Message)]
#[rtype(result = "ConnectionId")]
pub struct Connect {
    pub user: UserId,
    pub token: TokenHash,
    pub handle: ConnectionHandle,
}

impl Handler<Connect> for SessionHub {
    type Result = MessageResult<Connect>;

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Self::Result {
        let id = ConnectionId(self.next_id);
        self.next_id += 1;
        // Registered with every shard before the answer: see the shard module's invariant.
        for shard in &self.shards {
            shard.do_send(AddConnection {
                user: msg.user,
                id,
                handle: msg.handle.clone(),
            });
        }
        let list = self.connections.entry(msg.user).or_default();
        let first = list.is_empty();
        list.push(Connection {
            id,
            token: msg.token,
            handle: msg.handle,
        });
        if first {
            self.presence_changed(msg.user, true, ctx);
        }
        MessageResult(id)
    }
}

/// A connection closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnected {
    pub user: UserId,
    pub id: ConnectionId,
}

impl Handler<Disconnected> for SessionHub {
    type Result = ();

    fn handle(&mut self, msg: Disconnected, ctx: &mut Context<Self>) {
        let had = self
            .connections
            .get(&msg.user)
            .is_some_and(|list| list.iter().any(|c| c.id == msg.id));
        if had && self.remove_where(msg.user, |c| c.id == msg.id) {
            self.presence_changed(msg.user, false, ctx);
        }
    }
}

/// Deliver one encoded item to every connection of `users`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fanout {
    pub users: Arc<[UserId]>,
    pub item: Outbound,
}

impl Handler<Fanout> for SessionHub {
    type Result = ();

    fn handle(&mut self, msg: Fanout, ctx: &mut Context<Self>) {
        self.deliver_to(&msg.users, &msg.item, ctx);
    }
}

/// Tell every connection on this node to re-read its live conversations from the store
/// ([`Outbound::Resync`]): events from another node may have been lost on the way.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResyncAll;

impl Handler<ResyncAll> for SessionHub {
    type Result = ();

    fn handle(&mut self, _msg: ResyncAll, ctx: &mut Context<Self>) {
        let users: Vec<UserId> = self.connections.keys().copied().collect();
        self.deliver_to(&users, &Outbound::Resync, ctx);
    }
}

/// Close every connection of a user (disable) or of one session token (logout).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Kick {
    pub user: UserId,
    /// `None` closes all of the user's connections.
    pub token: Option<TokenHash>,
    pub reason: DisconnectReason,
}

impl Handler<Kick> for SessionHub {
    type Result = usize;

    fn handle(&mut self, msg: Kick, ctx: &mut Context<Self>) -> usize {
        let token = msg.token;
        self.kick(msg.user, msg.reason, |c| token.is_none_or(|t| c.token == t), ctx)
    }
}

/// Close every connection on this node (shutdown). Returns how many were told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct KickAll {
    pub reason: DisconnectReason,
}

impl Handler<KickAll> for SessionHub {
    type Result = usize;

    fn handle(&mut self, msg: KickAll, ctx: &mut Context<Self>) -> usize {
        let mut told = 0;
        for conn in self.connections.values().flatten() {
            conn.handle.disconnect.do_send(Disconnect { reason: msg.reason });
            told += 1;
        }
        self.tell_shards(None);
        for user in std::mem::take(&mut self.connections).into_keys() {
            self.lane.user_changed(user);
            self.remote.local_user(user, false);
        }
        // Best effort: other nodes otherwise see these users offline once their entries expire.
        self.report_to_directory(ctx);
        metrics::online_users(0);
        told
    }
}

/// Presence of some users: from the directory (every node), this node's own connections taking
/// precedence; from this node alone when the directory fails.
#[derive(Message)]
#[rtype(result = "Vec<PresenceState>")]
pub struct QueryPresence {
    pub users: Vec<UserId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceState {
    pub user: UserId,
    pub online: bool,
    pub last_seen: Option<UnixMillis>,
}

impl Handler<QueryPresence> for SessionHub {
    type Result = ResponseActFuture<Self, Vec<PresenceState>>;

    fn handle(&mut self, msg: QueryPresence, _ctx: &mut Context<Self>) -> Self::Result {
        let presence = self.presence.clone();
        let lookup = async move {
            let found = presence.lookup(&msg.users).await;
            (msg.users, found)
        };
        Box::pin(lookup.into_actor(self).map(|(users, found), hub, _| {
            let entries = found
                .inspect_err(|error| tracing::debug!(%error, "Presence lookup failed; answering from this node."))
                .unwrap_or_default();
            let by_user: HashMap<UserId, &PresenceEntry> = entries.iter().map(|e| (e.user, e)).collect();
            users
                .iter()
                .map(|user| hub.merge_presence(*user, by_user.get(user).copied()))
                .collect()
        }))
    }
}

/// How many connections are open on this node.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountConnections;

impl Handler<CountConnections> for SessionHub {
    type Result = usize;

    fn handle(&mut self, _msg: CountConnections, _ctx: &mut Context<Self>) -> usize {
        self.connections.values().map(Vec::len).sum()
    }
}
