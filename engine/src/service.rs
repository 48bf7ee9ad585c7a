//! Engine: the handle the API layer holds. Starts the node's actors and offers the operations
//! that need more than one actor or store call (create a group, list conversations, read
//! history for a member).
//!
//! Each engine worker (an actix arbiter) runs a [`ConversationRegistry`] and a [`DeliveryShard`];
//! a conversation belongs to the worker `id % workers`, where its registry starts its actor and
//! its shard delivers its events. Commands for one conversation go through [`Engine::submit`],
//! which enqueues synchronously on that registry: commands submitted one after another by the
//! same caller reach the conversation in that order.
//! In a cluster, `submit` sends a command whose conversation another node owns to that node
//! ([`RemoteNodes::forward`]); the owner runs it with [`Engine::submit_local`].

use std::collections::BTreeSet;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::clock::now_millis;
use crate::config::EngineConfig;
use crate::conversation::command::Accepted;
use crate::conversation::command::Command;
use crate::conversation::command::ConversationView;
use crate::conversation::command::Envelope;
use crate::conversation::command::Reply;
use crate::conversation::registry::ConversationRegistry;
use crate::conversation::registry::CountActors;
use crate::conversation::registry::Drain;
use crate::conversation::Deps;
use crate::delivery::hub::Fanout;
use crate::delivery::hub::ResyncAll;
use crate::delivery::hub::SessionHub;
use crate::delivery::shard::DeliveryShard;
use crate::delivery::shard::ShardFanout;
use crate::delivery::EventEncoder;
use crate::delivery::Outbound;
use crate::error::ConversationError;
use crate::ids::ConversationId;
use crate::ids::NodeId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::Conversation;
use crate::model::ConversationKind;
use crate::model::Event;
use crate::model::EventKind;
use crate::model::Member;
use crate::model::MemberRole;
use crate::model::NewConversation;
use crate::model::Receipt;
use crate::placement::Owner;
use crate::placement::Placement;
use crate::presence::LocalPresence;
use crate::presence::PresenceDirectory;
use crate::remote::RemoteNodes;
use crate::remote::Topology;
use crate::store::Direction;
use crate::store::PageRequest;
use crate::store::Store;

/// Largest page of events a caller may ask for.
pub const MAX_PAGE: usize = 200;

/// A conversation as it appears in a user's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationSummary {
    pub conversation: Conversation,
    pub member_count: usize,
    pub last_seq: Seq,
    /// The newest message that is not recalled, if any among the latest events.
    pub last_message: Option<Event>,
    /// Messages from others after the user's read cursor (capped at [`MAX_PAGE`]).
    pub unread: u64,
    pub receipt: Receipt,
}

/// A page of events after a cursor, with `limited` set when more exist beyond the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncPage {
    pub events: Vec<Event>,
    pub limited: bool,
    pub last_seq: Seq,
}

#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    /// One per engine worker; conversation `id` goes to `registries[id % len]`.
    registries: Arc<[Addr<ConversationRegistry>]>,
    /// One per engine worker, beside the registry of the same index.
    shards: Arc<[Addr<DeliveryShard>]>,
    hub: Addr<SessionHub>,
    config: Arc<EngineConfig>,
    arbiters: Arc<Vec<ArbiterHandle>>,
    presence: Arc<dyn PresenceDirectory>,
    node: NodeId,
    placement: Arc<dyn Placement>,
    remote: Arc<dyn RemoteNodes>,
}

impl Engine {
    /// Start a node alone with `placement`: [`Engine::start_with`] an in-process
    /// [`LocalPresence`] (started on the current arbiter) as [`NodeId::STANDALONE`], with no
    /// remote nodes. Must run inside an actix `System`.
    pub fn start(
        store: Arc<dyn Store>,
        encoder: Arc<dyn EventEncoder>,
        placement: Arc<dyn Placement>,
        config: EngineConfig,
        workers: usize,
    ) -> Engine {
        let presence = Arc::new(LocalPresence::start());
        let topology = Topology {
            placement,
            ..Topology::standalone()
        };
        Self::start_with(store, encoder, config, workers, presence, topology)
    }

    /// Start the hub (reporting to `presence` as `topology.node`) and `workers` event loops, each
    /// with a registry of conversation actors and a delivery shard. Must run inside an actix
    /// `System`.
    pub fn start_with(
        store: Arc<dyn Store>,
        encoder: Arc<dyn EventEncoder>,
        config: EngineConfig,
        workers: usize,
        presence: Arc<dyn PresenceDirectory>,
        topology: Topology,
    ) -> Engine {
        let Topology {
            node,
            placement,
            remote,
        } = topology;
        let config = Arc::new(config);
        let workers: Vec<ArbiterHandle> = (0..workers.max(1)).map(|_| Arbiter::new().handle()).collect();
        let shards: Vec<Addr<DeliveryShard>> = workers
            .iter()
            .map(|worker| DeliveryShard::start_in_arbiter(worker, |_| DeliveryShard::default()))
            .collect();
        // One engine worker: the hub shares its event loop, so even presence needs no hand-off.
        let hub_arbiter = if workers.len() == 1 {
            workers[0].clone()
        } else {
            Arbiter::new().handle()
        };
        let hub = {
            let (store, encoder, presence, remote) = (store.clone(), encoder.clone(), presence.clone(), remote.clone());
            let presence_max = config.presence_fanout_max_members;
            let shards = shards.clone();
            SessionHub::start_in_arbiter(&hub_arbiter, move |_| {
                SessionHub::new(store, encoder, presence_max, presence, node)
                    .with_remote(remote)
                    .with_shards(shards)
            })
        };
        let registries: Vec<Addr<ConversationRegistry>> = workers
            .iter()
            .zip(&shards)
            .map(|(worker, shard)| {
                let deps = Arc::new(Deps {
                    store: store.clone(),
                    shard: shard.clone(),
                    encoder: encoder.clone(),
                    config: config.clone(),
                    remote: remote.clone(),
                    placement: placement.clone(),
                });
                let placement = placement.clone();
                ConversationRegistry::start_in_arbiter(worker, move |_| ConversationRegistry::new(deps, placement))
            })
            .collect();
        let mut arbiters = workers;
        if arbiters.len() > 1 {
            arbiters.push(hub_arbiter);
        }
        Engine {
            store,
            registries: registries.into(),
            shards: shards.into(),
            hub,
            config,
            arbiters: Arc::new(arbiters),
            presence,
            node,
            placement,
            remote,
        }
    }

    /// Stop the engine's event loops (actors on them stop without finishing queued work; call
    /// after connections are drained and the store flushed).
    pub fn shutdown(&self) {
        for arbiter in self.arbiters.iter() {
            arbiter.stop();
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn hub(&self) -> &Addr<SessionHub> {
        &self.hub
    }

    /// How many conversation actors are live on this node.
    pub async fn count_actors(&self) -> usize {
        let mut total = 0;
        for registry in self.registries.iter() {
            total += registry.send(CountActors).await.unwrap_or(0);
        }
        total
    }

    fn worker_of(&self, conversation: ConversationId) -> usize {
        (conversation.0 % self.registries.len() as u64) as usize
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The presence directory: shared rate-limit counters ([`PresenceDirectory::hit`]) and its
    /// health ([`PresenceDirectory::healthy`]) for readiness details.
    pub fn presence(&self) -> &Arc<dyn PresenceDirectory> {
        &self.presence
    }

    /// This node's id in the presence directory.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Enqueue a command now, here or at the node that owns the conversation; the receiver
    /// yields its outcome. A conversation between owners answers `NotOwner` (retry shortly).
    pub fn submit(
        &self,
        conversation: ConversationId,
        command: Command,
    ) -> oneshot::Receiver<Result<Reply, ConversationError>> {
        match self.placement.owner(conversation) {
            Owner::Remote(owner) => self.remote.forward(owner, conversation, command),
            Owner::Local | Owner::Unassigned => self.submit_local(conversation, command),
        }
    }

    /// Enqueue a command on this node's conversation actor, never forwarding: for commands
    /// another node forwarded here. Answers `NotOwner` if this node does not own the conversation.
    pub fn submit_local(
        &self,
        conversation: ConversationId,
        command: Command,
    ) -> oneshot::Receiver<Result<Reply, ConversationError>> {
        let (reply, rx) = oneshot::channel();
        self.registries[self.worker_of(conversation)].do_send(Envelope {
            conversation,
            command,
            reply,
        });
        rx
    }

    /// Deliver an item another node fanned out to this node's connections of `users`: an event
    /// through the delivery shard its conversation would use here, anything else through the hub.
    pub fn deliver_local(&self, users: Arc<[UserId]>, item: Outbound) {
        match &item {
            Outbound::Event { conversation, .. } => {
                self.shards[self.worker_of(*conversation)].do_send(ShardFanout { users, item });
            }
            Outbound::Ephemeral { .. } | Outbound::Resync => self.hub.do_send(Fanout { users, item }),
        }
    }

    /// Every local connection re-reads its live conversations from the store (events from a
    /// node that went away, or from before an ownership change, may have been lost).
    pub fn resync_sessions(&self) {
        self.hub.do_send(ResyncAll);
    }

    /// Stop the conversation actors `matches` selects once their in-flight appends are answered
    /// (their shard is being handed to another node). The placement must already refuse them.
    pub async fn drain(&self, matches: impl Fn(ConversationId) -> bool + Send + Sync + 'static) {
        let matches: Arc<dyn Fn(ConversationId) -> bool + Send + Sync> = Arc::new(matches);
        let mut stopping = Vec::new();
        for registry in self.registries.iter() {
            let matches = matches.clone();
            let drained = registry.send(Drain {
                matches: Box::new(move |id| matches(id)),
            });
            stopping.extend(drained.await.unwrap_or_default());
        }
        for actor in stopping {
            while actor.connected() {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    }

    pub async fn call(&self, conversation: ConversationId, command: Command) -> Result<Reply, ConversationError> {
        outcome(self.submit(conversation, command)).await
    }

    pub async fn accepted(
        &self,
        conversation: ConversationId,
        command: Command,
    ) -> Result<Accepted, ConversationError> {
        match self.call(conversation, command).await? {
            Reply::Accepted(accepted) => Ok(accepted),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn describe(
        &self,
        user: UserId,
        conversation: ConversationId,
    ) -> Result<ConversationView, ConversationError> {
        match self.call(conversation, Command::Describe { user }).await? {
            Reply::View(view) => Ok(*view),
            other => Err(unexpected(&other)),
        }
    }

    /// Create a group owned by `creator` with the given other members, and announce it.
    pub async fn create_group(
        &self,
        creator: UserId,
        name: &str,
        others: &[UserId],
    ) -> Result<Conversation, ConversationError> {
        let name = name.trim();
        if name.is_empty() || name.len() > self.config.max_group_name_bytes {
            return Err(ConversationError::Invalid(format!(
                "group name must be 1 to {} bytes",
                self.config.max_group_name_bytes
            )));
        }
        let unique: BTreeSet<UserId> = others.iter().copied().filter(|u| *u != creator).collect();
        if unique.len() + 1 > self.config.max_group_members {
            return Err(ConversationError::GroupFull {
                limit: self.config.max_group_members,
            });
        }
        for user in &unique {
            self.require_active_user(*user).await?;
        }
        let mut members = vec![Member {
            user: creator,
            role: MemberRole::Owner,
        }];
        members.extend(unique.into_iter().map(|user| Member {
            user,
            role: MemberRole::Member,
        }));
        let new = NewConversation {
            kind: ConversationKind::Group,
            name: name.to_owned(),
            created_by: creator,
            created_at: now_millis(),
            members,
        };
        let conversation = self.store.create_conversation(new).await?;
        self.call(conversation.id, Command::Announce { creator }).await?;
        Ok(conversation)
    }

    /// The direct conversation between two users, created (and announced) on first use.
    pub async fn open_direct(&self, user: UserId, peer: UserId) -> Result<Conversation, ConversationError> {
        if user == peer {
            return Err(ConversationError::Invalid(
                "a direct conversation needs two different users".into(),
            ));
        }
        self.require_active_user(peer).await?;
        let new = NewConversation {
            kind: ConversationKind::Direct,
            name: String::new(),
            created_by: user,
            created_at: now_millis(),
            members: vec![
                Member {
                    user,
                    role: MemberRole::Member,
                },
                Member {
                    user: peer,
                    role: MemberRole::Member,
                },
            ],
        };
        let conversation = self.store.create_conversation(new).await?;
        self.call(conversation.id, Command::Announce { creator: user }).await?;
        Ok(conversation)
    }

    async fn require_active_user(&self, user: UserId) -> Result<(), ConversationError> {
        match self.store.user(user).await? {
            Some(u) if !u.disabled => Ok(()),
            _ => Err(ConversationError::Invalid(format!("user {user} does not exist"))),
        }
    }

    /// A page of history for a member (REST paging, newest-first or oldest-first).
    pub async fn history(
        &self,
        user: UserId,
        conversation: ConversationId,
        request: PageRequest,
    ) -> Result<Vec<Event>, ConversationError> {
        self.call(conversation, Command::Authorize { user }).await?;
        let request = PageRequest {
            limit: request.limit.clamp(1, MAX_PAGE),
            ..request
        };
        Ok(self.store.page(conversation, request).await?)
    }

    /// Events after `after`, oldest first, at most `limit`; `limited` when more remain.
    pub async fn events_after(
        &self,
        user: UserId,
        conversation: ConversationId,
        after: Seq,
        limit: usize,
    ) -> Result<SyncPage, ConversationError> {
        self.call(conversation, Command::Authorize { user }).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let request = PageRequest {
            from: after,
            direction: Direction::Forward,
            limit: limit + 1,
        };
        let mut events = self.store.page(conversation, request).await?;
        let limited = events.len() > limit;
        events.truncate(limit);
        let last_seq = self.store.last_seq(conversation).await?;
        Ok(SyncPage {
            events,
            limited,
            last_seq,
        })
    }

    /// The user's conversations with their last message and unread count, newest activity first.
    pub async fn conversation_list(&self, user: UserId) -> Result<Vec<ConversationSummary>, ConversationError> {
        let ids = self.store.conversations_of(user).await?;
        let mut summaries = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(summary) = self.summary(user, id).await? {
                summaries.push(summary);
            }
        }
        summaries
            .sort_by_key(|s| std::cmp::Reverse(s.last_message.as_ref().map_or(s.conversation.created_at, |e| e.at)));
        Ok(summaries)
    }

    async fn summary(
        &self,
        user: UserId,
        id: ConversationId,
    ) -> Result<Option<ConversationSummary>, ConversationError> {
        let Some(conversation) = self.store.conversation(id).await? else {
            return Ok(None);
        };
        let member_count = self.store.members(id).await?.len();
        let last_seq = self.store.last_seq(id).await?;
        let receipt = self
            .store
            .receipts(id)
            .await?
            .into_iter()
            .find(|(u, _)| *u == user)
            .map(|(_, r)| r)
            .unwrap_or_default();
        let newest = PageRequest {
            from: Seq(u64::MAX),
            direction: Direction::Backward,
            limit: 20,
        };
        let last_message = self
            .store
            .page(id, newest)
            .await?
            .into_iter()
            .find(|e| matches!(&e.kind, EventKind::Message { recalled_by: None, .. }));
        let after_read = PageRequest {
            from: receipt.read,
            direction: Direction::Forward,
            limit: MAX_PAGE,
        };
        let unread = if last_seq > receipt.read {
            self.store
                .page(id, after_read)
                .await?
                .iter()
                .filter(|e| e.kind.is_message() && e.sender != user)
                .count() as u64
        } else {
            0
        };
        Ok(Some(ConversationSummary {
            conversation,
            member_count,
            last_seq,
            last_message,
            unread,
            receipt,
        }))
    }
}

async fn outcome(rx: oneshot::Receiver<Result<Reply, ConversationError>>) -> Result<Reply, ConversationError> {
    // A dropped reply channel means the actor stopped with the command unanswered: nothing was
    // acknowledged, so the caller may retry.
    rx.await
        .unwrap_or_else(|_| Err(ConversationError::Unavailable("conversation restarted, retry".into())))
}

fn unexpected(reply: &Reply) -> ConversationError {
    ConversationError::Internal(format!("unexpected reply {reply:?}"))
}
