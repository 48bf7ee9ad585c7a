//! WsSession: one actor per WebSocket connection (the only user of actix-web-actors).
//!
//! Owns the connection's authenticated identity, its [`DeliveryOrder`], its rate limiter and its
//! heartbeat. Decodes client frames and submits engine commands in arrival order; receives
//! [`Deliver`] from the hub and writes frames. Its mailbox is bounded (`limits.outbound_queue`):
//! when a slow client lets it fill, the hub sends [`Disconnect`] and the client resyncs.
//!
//! Close codes: 1001 shutting down (or the node has left its cluster), 1007 invalid UTF-8, 1009
//! frame too large, 1003 fragmented frames, 4401 session revoked, 4403 account disabled, 4408 idle
//! timeout, 4409 resync needed.

use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use actix::prelude::*;
use actix_web_actors::ws;
use actix_web_actors::ws::CloseCode;
use actix_web_actors::ws::CloseReason;
use bytes::Bytes;
use bytestring::ByteString;
use roost_engine::conversation::command::Command;
use roost_engine::conversation::command::Reply;
use roost_engine::delivery::hub::Connect;
use roost_engine::delivery::hub::ConnectionId;
use roost_engine::delivery::hub::Disconnected;
use roost_engine::delivery::ConnectionHandle;
use roost_engine::delivery::Deliver;
use roost_engine::delivery::Disconnect;
use roost_engine::delivery::DisconnectReason;
use roost_engine::delivery::Outbound;
use roost_engine::ids::ClientMsgId;
use roost_engine::ids::ConversationId;
use roost_engine::ids::Seq;
use roost_engine::service::MAX_PAGE;
use roost_engine::store::Direction;
use roost_engine::store::PageRequest;
use roost_engine::store::StoreError;
use roost_engine::ConversationError;

use super::limiter::TokenBucket;
use super::order::DeliveryOrder;
use super::order::Next;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::state::AppState;
use crate::telemetry;
use crate::wire;
use crate::wire::ClientFrame;
use crate::wire::ServerFrame;
use crate::wire::SyncedConversation;
use crate::wire::WireLimits;

type SyncId = u64;

/// A client `sync` in progress: answered with `synced` once every conversation is done.
struct SyncRun {
    reference: Option<String>,
    remaining: usize,
    done: Vec<SyncedConversation>,
}

pub struct WsSession {
    state: AppState,
    authed: Authenticated,
    connection: Option<ConnectionId>,
    order: DeliveryOrder,
    limiter: TokenBucket,
    last_heard: Instant,
    typing_sent: HashMap<ConversationId, Instant>,
    syncs: HashMap<SyncId, SyncRun>,
    /// Syncs waiting for each conversation's catch-up to finish, with their page limit.
    waiting: HashMap<ConversationId, Vec<SyncId>>,
    next_sync: SyncId,
}

impl WsSession {
    pub fn new(state: AppState, authed: Authenticated) -> Self {
        let limiter = TokenBucket::new(state.config.limits.frames_per_sec, Instant::now());
        Self {
            state,
            authed,
            connection: None,
            order: DeliveryOrder::default(),
            limiter,
            last_heard: Instant::now(),
            typing_sent: HashMap::new(),
            syncs: HashMap::new(),
            waiting: HashMap::new(),
            next_sync: 1,
        }
    }

    fn send_bytes(&self, ctx: &mut ws::WebsocketContext<Self>, bytes: Bytes) {
        match ByteString::try_from(bytes) {
            Ok(text) => ctx.text(text),
            Err(_) => tracing::error!("An encoded frame was not UTF-8; dropped."),
        }
    }

    fn send_error(&self, ctx: &mut ws::WebsocketContext<Self>, reference: Option<&str>, error: &ApiError) {
        telemetry::client_errors(error.code);
        self.send_bytes(ctx, ServerFrame::error(reference, error));
    }

    fn close(&self, ctx: &mut ws::WebsocketContext<Self>, code: CloseCode, description: &str) {
        ctx.close(Some(CloseReason {
            code,
            description: Some(description.to_owned()),
        }));
        ctx.stop();
    }

    fn welcome(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let config = &self.state.config;
        let frame = ServerFrame::Welcome {
            v: wire::PROTOCOL_VERSION,
            user: (&self.authed.user).into(),
            heartbeat_secs: config.server.heartbeat_secs,
            limits: WireLimits {
                max_frame_bytes: config.limits.max_frame_bytes,
                max_body_bytes: config.engine.max_body_bytes,
                max_page: MAX_PAGE,
            },
        };
        self.send_bytes(ctx, frame.to_bytes());
    }

    fn heartbeat(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let every = Duration::from_secs(self.state.config.server.heartbeat_secs.max(1));
        let timeout = Duration::from_secs(self.state.config.server.client_timeout_secs.max(1));
        ctx.run_interval(every, move |session, ctx| {
            if session.last_heard.elapsed() > timeout {
                session.close(ctx, CloseCode::Other(4408), "idle timeout");
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let frame = match wire::decode_client_frame(text) {
            Ok(frame) => frame,
            Err(bad) => {
                self.send_error(ctx, bad.reference.as_deref(), &bad.error);
                return;
            }
        };
        if let Err(wait_ms) = self.limiter.take(Instant::now()) {
            self.send_error(ctx, frame.reference(), &ApiError::rate_limited(wait_ms));
            return;
        }
        let reference = frame.reference().map(str::to_owned);
        if let Err(error) = self.dispatch(frame, ctx) {
            self.send_error(ctx, reference.as_deref(), &error);
        }
    }

    fn dispatch(&mut self, frame: ClientFrame, ctx: &mut ws::WebsocketContext<Self>) -> Result<(), ApiError> {
        let user = self.authed.user.id;
        match frame {
            ClientFrame::Send {
                reference,
                conversation,
                client_msg_id,
                body,
            } => {
                let command = Command::Send {
                    sender: user,
                    client_msg_id: msg_id(&client_msg_id)?,
                    body: body.into_body()?,
                };
                self.submit(ConversationId(conversation), command, reference, ctx);
            }
            ClientFrame::Edit {
                reference,
                conversation,
                client_msg_id,
                target,
                body,
            } => {
                let command = Command::Edit {
                    sender: user,
                    client_msg_id: msg_id(&client_msg_id)?,
                    target: Seq(target),
                    body: body.into_body()?,
                };
                self.submit(ConversationId(conversation), command, reference, ctx);
            }
            ClientFrame::Recall {
                reference,
                conversation,
                client_msg_id,
                target,
            } => {
                let command = Command::Recall {
                    sender: user,
                    client_msg_id: msg_id(&client_msg_id)?,
                    target: Seq(target),
                };
                self.submit(ConversationId(conversation), command, reference, ctx);
            }
            ClientFrame::Receipt {
                reference,
                conversation,
                delivered,
                read,
            } => {
                if delivered.is_none() && read.is_none() {
                    return Err(ApiError::invalid("receipt needs `delivered` or `read`"));
                }
                let command = Command::Receipt {
                    user,
                    delivered: delivered.map(Seq),
                    read: read.map(Seq),
                };
                self.submit(ConversationId(conversation), command, reference, ctx);
            }
            ClientFrame::Typing {
                reference,
                conversation,
            } => {
                let conversation = ConversationId(conversation);
                let interval = Duration::from_millis(self.state.config.limits.typing_interval_ms);
                let now = Instant::now();
                if self
                    .typing_sent
                    .get(&conversation)
                    .is_some_and(|at| now.duration_since(*at) < interval)
                {
                    return Ok(());
                }
                self.typing_sent.insert(conversation, now);
                self.submit_quiet(conversation, Command::Typing { user }, reference, ctx);
            }
            ClientFrame::Sync {
                reference,
                conversations,
                limit,
            } => {
                let limit = limit.unwrap_or(self.state.config.limits.sync_page);
                if limit == 0 || limit > MAX_PAGE {
                    return Err(ApiError::invalid(format!("limit must be 1 to {MAX_PAGE}")));
                }
                let mut cursors = HashMap::new();
                for (key, seq) in conversations {
                    cursors.insert(wire::parse_conversation_key(&key)?, Seq(seq));
                }
                self.start_sync(reference, cursors, limit, ctx);
            }
            ClientFrame::Ping { reference } => {
                self.send_bytes(
                    ctx,
                    ServerFrame::Pong {
                        reference: reference.as_deref(),
                    }
                    .to_bytes(),
                );
            }
        }
        Ok(())
    }

    /// Submit now (so order is kept) and answer with an ack, ok or error when it completes.
    fn submit(
        &mut self,
        conversation: ConversationId,
        command: Command,
        reference: Option<String>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let rx = self.state.engine.submit(conversation, command);
        // Await the outcome in a task and hand the encoded answer back as a message: an actor
        // future per request would be polled on every wake-up of this actor.
        let addr = ctx.address();
        actix::spawn(async move {
            let result = rx
                .await
                .unwrap_or_else(|_| Err(ConversationError::Unavailable("conversation restarted, retry".into())));
            let bytes = match result {
                Ok(Reply::Accepted(accepted)) => ServerFrame::ack(reference.as_deref(), &accepted),
                Ok(_) => ServerFrame::Ok {
                    reference: reference.as_deref(),
                }
                .to_bytes(),
                Err(error) => {
                    let error = ApiError::from(error);
                    telemetry::client_errors(error.code);
                    ServerFrame::error(reference.as_deref(), &error)
                }
            };
            addr.do_send(Answer { bytes });
        });
    }

    /// Submit and report only errors (typing indicators have no answer).
    fn submit_quiet(
        &mut self,
        conversation: ConversationId,
        command: Command,
        reference: Option<String>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let rx = self.state.engine.submit(conversation, command);
        ctx.spawn(rx.into_actor(self).map(move |result, session, ctx| {
            if let Ok(Err(error)) = result {
                session.send_error(ctx, reference.as_deref(), &error.into());
            }
        }));
    }

    fn start_sync(
        &mut self,
        reference: Option<String>,
        cursors: HashMap<ConversationId, Seq>,
        limit: usize,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let store = self.state.engine.store().clone();
        let user = self.authed.user.id;
        let lookup = async move { store.conversations_of(user).await };
        ctx.spawn(lookup.into_actor(self).map(move |result, session, ctx| {
            let conversations = match result {
                Ok(conversations) => conversations,
                Err(error) => {
                    session.send_error(ctx, reference.as_deref(), &error.into());
                    return;
                }
            };
            let id = session.next_sync;
            session.next_sync += 1;
            session.syncs.insert(
                id,
                SyncRun {
                    reference,
                    remaining: conversations.len(),
                    done: Vec::new(),
                },
            );
            for conversation in &conversations {
                let has = cursors.get(conversation).copied().unwrap_or(Seq::ZERO);
                session.waiting.entry(*conversation).or_default().push(id);
                if let Next::Read { after } = session.order.begin_sync(*conversation, has) {
                    session.read(*conversation, after, limit, ctx);
                }
            }
            for (conversation, after) in session.order.release_unsynced(&conversations) {
                session.read(conversation, after, MAX_PAGE, ctx);
            }
            session.finish_sync_if_done(id, ctx);
        }));
    }

    fn read(&mut self, conversation: ConversationId, after: Seq, limit: usize, ctx: &mut ws::WebsocketContext<Self>) {
        let store = self.state.engine.store().clone();
        let request = PageRequest {
            from: after,
            direction: Direction::Forward,
            limit,
        };
        let read = async move {
            let events = store.page(conversation, request).await?;
            let last = store.last_seq(conversation).await?;
            Ok::<_, StoreError>((events, last))
        };
        ctx.spawn(
            read.into_actor(self)
                .map(move |result, session, ctx| session.page_arrived(conversation, limit, result, ctx)),
        );
    }

    fn page_arrived(
        &mut self,
        conversation: ConversationId,
        limit: usize,
        result: Result<(Vec<roost_engine::model::Event>, Seq), StoreError>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let (events, last_seq) = match result {
            Ok(ok) => ok,
            Err(error) => {
                let sent = self.order.on_read_failed(conversation);
                self.send_error(ctx, None, &error.into());
                self.complete_waiting(
                    conversation,
                    SyncedConversation {
                        conversation: conversation.0,
                        last_seq: sent.0,
                        synced_to: sent.0,
                        limited: true,
                    },
                    ctx,
                );
                return;
            }
        };
        let full = events.len() >= limit;
        let page = events.iter().map(|e| (e.seq, ServerFrame::event(e))).collect();
        let outcome = self.order.on_page(conversation, page, full);
        for bytes in outcome.send {
            self.send_bytes(ctx, bytes);
        }
        match outcome.next {
            Next::Read { after } => self.read(conversation, after, MAX_PAGE, ctx),
            Next::Idle => {
                let synced = SyncedConversation {
                    conversation: conversation.0,
                    last_seq: last_seq.max(outcome.sent).0,
                    synced_to: outcome.sent.0,
                    limited: outcome.limited,
                };
                self.complete_waiting(conversation, synced, ctx);
            }
        }
    }

    fn complete_waiting(
        &mut self,
        conversation: ConversationId,
        synced: SyncedConversation,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        for id in self.waiting.remove(&conversation).unwrap_or_default() {
            if let Some(run) = self.syncs.get_mut(&id) {
                run.remaining = run.remaining.saturating_sub(1);
                run.done.push(synced.clone());
            }
            self.finish_sync_if_done(id, ctx);
        }
    }

    fn finish_sync_if_done(&mut self, id: SyncId, ctx: &mut ws::WebsocketContext<Self>) {
        if self.syncs.get(&id).is_some_and(|run| run.remaining == 0) {
            if let Some(mut run) = self.syncs.remove(&id) {
                run.done.sort_by_key(|s| s.conversation);
                let frame = ServerFrame::Synced {
                    reference: run.reference.as_deref(),
                    conversations: run.done,
                };
                self.send_bytes(ctx, frame.to_bytes());
            }
        }
    }

    fn on_live(&mut self, conversation: ConversationId, seq: Seq, bytes: Bytes, ctx: &mut ws::WebsocketContext<Self>) {
        let (now, next) = self.order.on_live(conversation, seq, bytes);
        if let Some(bytes) = now {
            self.send_bytes(ctx, bytes);
        }
        if let Next::Read { after } = next {
            self.read(conversation, after, MAX_PAGE, ctx);
        }
    }
}

fn msg_id(raw: &str) -> Result<ClientMsgId, ApiError> {
    ClientMsgId::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.state.config.limits.outbound_queue);
        telemetry::ws_connected();
        let handle = ConnectionHandle {
            deliver: ctx.address().recipient(),
            disconnect: ctx.address().recipient(),
        };
        let connect = Connect {
            user: self.authed.user.id,
            token: self.authed.session.token_hash,
            handle,
        };
        let register = self.state.engine.hub().send(connect);
        ctx.wait(register.into_actor(self).map(|result, session, ctx| match result {
            Ok(id) => {
                session.connection = Some(id);
                session.welcome(ctx);
                session.heartbeat(ctx);
            }
            Err(_) => session.close(ctx, CloseCode::Away, "server shutting down, reconnect"),
        }));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        telemetry::ws_disconnected();
        if let Some(id) = self.connection {
            self.state.engine.hub().do_send(Disconnected {
                user: self.authed.user.id,
                id,
            });
        }
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        match msg.item {
            Outbound::Event {
                conversation,
                seq,
                bytes,
            } => self.on_live(conversation, seq, bytes, ctx),
            Outbound::Ephemeral { bytes } => self.send_bytes(ctx, bytes),
            Outbound::Resync => {
                for (conversation, after) in self.order.resync_live() {
                    self.read(conversation, after, MAX_PAGE, ctx);
                }
            }
        }
    }
}

/// The encoded answer to one of this connection's requests.
#[derive(Message)]
#[rtype(result = "()")]
struct Answer {
    bytes: Bytes,
}

impl Handler<Answer> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Answer, ctx: &mut Self::Context) {
        self.send_bytes(ctx, msg.bytes);
    }
}

impl Handler<Disconnect> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Self::Context) {
        let (code, why) = match msg.reason {
            DisconnectReason::Revoked => (CloseCode::Other(4401), "session revoked"),
            DisconnectReason::UserDisabled => (CloseCode::Other(4403), "account disabled"),
            DisconnectReason::SlowConsumer => (CloseCode::Other(4409), "resync"),
            // The same close for a node that has left its cluster; only the reason differs.
            DisconnectReason::ShuttingDown if self.state.lifecycle.has_left() => {
                (CloseCode::Away, "node leaving; reconnect")
            }
            DisconnectReason::ShuttingDown => (CloseCode::Away, "server shutting down, reconnect"),
        };
        // `stopped` still reports the close to the hub: a delivery shard that found this
        // connection too slow has told only this connection, and the hub ignores a connection
        // it already forgot (kicks).
        self.close(ctx, code, why);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => {
                telemetry::frames_received("text");
                self.on_text(&text, ctx);
            }
            Ok(ws::Message::Binary(_)) => {
                telemetry::frames_received("binary");
                let error = ApiError::new(
                    ErrorCode::UnsupportedFrame,
                    "binary frames are not supported; send JSON text",
                );
                self.send_error(ctx, None, &error);
            }
            Ok(ws::Message::Continuation(_)) => {
                self.close(ctx, CloseCode::Unsupported, "fragmented messages are not supported");
            }
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ws::ProtocolError::Overflow) => {
                telemetry::client_errors(ErrorCode::FrameTooLarge);
                let limit = self.state.config.limits.max_frame_bytes;
                self.close(ctx, CloseCode::Size, &format!("frame larger than {limit} bytes"));
            }
            Err(ws::ProtocolError::Io(error)) if error.to_string().to_lowercase().contains("utf") => {
                self.close(ctx, CloseCode::Invalid, "text frame is not valid UTF-8");
            }
            Err(error) => {
                tracing::debug!(%error, "WebSocket protocol error.");
                self.close(ctx, CloseCode::Protocol, "protocol error");
            }
        }
    }
}
