//! ConversationRegistry: the one path to the conversation actors of one engine event loop.
//!
//! Each engine worker runs one registry, and the conversations are split between them by id
//! ([`Engine::submit`](crate::service::Engine::submit) picks the registry). Every command for a
//! conversation passes through its registry, in order, so a connection's commands reach the
//! conversation actor in the order it sent them, even across an actor restart. The registry starts
//! an actor on first use on its own event loop (so handing a command to the actor wakes no other
//! thread), refuses conversations that [`Placement`] says belong to another node, answers
//! `Overloaded` when an actor's mailbox is full, and retires actors that have been idle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use actix::prelude::*;

use super::actor::ConversationActor;
use super::actor::Retire;
use super::command::Envelope;
use super::Deps;
use crate::error::ConversationError;
use crate::ids::ConversationId;
use crate::metrics;
use crate::placement::Owner;
use crate::placement::Placement;

const SWEEP_EVERY: Duration = Duration::from_secs(5);

struct Entry {
    addr: Addr<ConversationActor>,
    last_used: Instant,
}

pub struct ConversationRegistry {
    deps: Arc<Deps>,
    placement: Arc<dyn Placement>,
    actors: HashMap<ConversationId, Entry>,
}

impl ConversationRegistry {
    /// A registry whose actors run on the event loop it is started on, sharing `deps`.
    pub fn new(deps: Arc<Deps>, placement: Arc<dyn Placement>) -> Self {
        Self {
            deps,
            placement,
            actors: HashMap::new(),
        }
    }

    fn spawn_actor(&mut self, id: ConversationId, ctx: &mut Context<Self>) -> Addr<ConversationActor> {
        let deps = self.deps.clone();
        let registry = ctx.address();
        let capacity = deps.config.conversation_mailbox;
        let make = move |actor_ctx: &mut Context<ConversationActor>| {
            actor_ctx.set_mailbox_capacity(capacity);
            ConversationActor::new(id, deps, Some(registry))
        };
        let addr = ConversationActor::create(make);
        self.actors.insert(
            id,
            Entry {
                addr: addr.clone(),
                last_used: Instant::now(),
            },
        );
        metrics::conversation_actors_changed(1);
        addr
    }

    fn sweep(&mut self) {
        let idle = self.deps.config.conversation_idle();
        let now = Instant::now();
        let before = self.actors.len();
        self.actors.retain(|_, entry| {
            let keep = now.duration_since(entry.last_used) < idle;
            if !keep {
                entry.addr.do_send(Retire);
            }
            keep
        });
        metrics::conversation_actors_changed(self.actors.len() as i64 - before as i64);
    }
}

impl Actor for ConversationRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = SWEEP_EVERY.min(self.deps.config.conversation_idle());
        ctx.run_interval(every, |registry, _| registry.sweep());
    }
}

impl Handler<Envelope> for ConversationRegistry {
    type Result = ();

    fn handle(&mut self, envelope: Envelope, ctx: &mut Context<Self>) {
        let id = envelope.conversation;
        if matches!(self.placement.owner(id), Owner::Remote(_) | Owner::Unassigned) {
            let _ = envelope.reply.send(Err(ConversationError::NotOwner(id)));
            return;
        }
        let mut envelope = envelope;
        // Two tries: the cached actor may have just stopped; a fresh one then takes over.
        for _ in 0..2 {
            let addr = match self.actors.get_mut(&id) {
                Some(entry) => {
                    entry.last_used = Instant::now();
                    entry.addr.clone()
                }
                None => self.spawn_actor(id, ctx),
            };
            match addr.try_send(envelope) {
                Ok(()) => return,
                Err(SendError::Full(back)) => {
                    let _ = back.reply.send(Err(ConversationError::Overloaded));
                    return;
                }
                Err(SendError::Closed(back)) => {
                    if self.actors.remove(&id).is_some() {
                        metrics::conversation_actors_changed(-1);
                    }
                    envelope = back;
                }
            }
        }
        let _ = envelope.reply.send(Err(ConversationError::Unavailable(
            "conversation actor unavailable".into(),
        )));
    }
}

/// Sent by a conversation actor when it stops, so the registry forgets it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ActorStopped {
    pub conversation: ConversationId,
    pub addr: Addr<ConversationActor>,
}

impl Handler<ActorStopped> for ConversationRegistry {
    type Result = ();

    fn handle(&mut self, msg: ActorStopped, _ctx: &mut Context<Self>) {
        if self.actors.get(&msg.conversation).is_some_and(|e| e.addr == msg.addr) {
            self.actors.remove(&msg.conversation);
            metrics::conversation_actors_changed(-1);
        }
    }
}

/// Retire the actors of the conversations `matches` selects (their shard is moving to another
/// node). Each finishes its in-flight appends first; the answer lists them so the caller can wait
/// until they have stopped. The placement must already refuse these conversations, or a new
/// command would start a fresh actor next to the retiring one.
#[derive(Message)]
#[rtype(result = "Vec<Addr<ConversationActor>>")]
pub struct Drain {
    pub matches: Box<dyn Fn(ConversationId) -> bool + Send>,
}

impl Handler<Drain> for ConversationRegistry {
    type Result = Vec<Addr<ConversationActor>>;

    fn handle(&mut self, msg: Drain, _ctx: &mut Context<Self>) -> Self::Result {
        let draining: Vec<ConversationId> = self.actors.keys().copied().filter(|id| (msg.matches)(*id)).collect();
        let mut stopping = Vec::with_capacity(draining.len());
        for id in draining {
            if let Some(entry) = self.actors.remove(&id) {
                entry.addr.do_send(Retire);
                stopping.push(entry.addr);
            }
        }
        metrics::conversation_actors_changed(-(stopping.len() as i64));
        stopping
    }
}

/// How many conversation actors are live (for tests and metrics).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountActors;

impl Handler<CountActors> for ConversationRegistry {
    type Result = usize;

    fn handle(&mut self, _msg: CountActors, _ctx: &mut Context<Self>) -> usize {
        self.actors.len()
    }
}
