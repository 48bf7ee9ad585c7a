//! Conversation endpoints: list, create, describe, membership, history paging, REST sends and
//! receipts, plus the user directory and presence lookups that clients need alongside them.
//!
//! The acting user always comes from the session ([`Authed`]), never from the body. Membership
//! and permission rules are the conversation actor's; these handlers only translate. Changes and
//! sends answer with the `seq` of the event that records them, so a REST client can sync past it.

use std::collections::HashSet;

use actix_web::web;
use actix_web::HttpResponse;
use roost_engine::conversation::command::Accepted;
use roost_engine::conversation::command::Command;
use roost_engine::conversation::command::GroupChange;
use roost_engine::conversation::command::Reply;
use roost_engine::delivery::hub::QueryPresence;
use roost_engine::ids::ClientMsgId;
use roost_engine::ids::ConversationId;
use roost_engine::ids::Seq;
use roost_engine::ids::UserId;
use roost_engine::store::Direction;
use roost_engine::store::PageRequest;
use serde::Deserialize;
use serde::Serialize;

use super::extract::Authed;
use super::page_limit;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::state::AppState;
use crate::wire::WireBody;
use crate::wire::WireConversation;
use crate::wire::WireEvent;
use crate::wire::WireMember;
use crate::wire::WireReceipt;
use crate::wire::WireRole;
use crate::wire::WireSummary;

/// Most user ids in one presence query.
pub const MAX_PRESENCE_USERS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    pub name: String,
    /// Other members; the caller becomes the owner.
    #[serde(default)]
    pub members: Vec<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenDirectRequest {
    pub peer: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMembersRequest {
    pub users: Vec<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRoleRequest {
    pub role: WireRole,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    /// Idempotency key: resending the same id returns the original `seq`.
    pub client_msg_id: String,
    pub body: WireBody,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    pub delivered: Option<u64>,
    pub read: Option<u64>,
}

/// Query of `GET /v1/conversations/{id}/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

/// Query of `GET /v1/presence`: comma-separated user ids.
#[derive(Debug, Deserialize)]
pub struct PresenceQuery {
    pub users: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConversationResponse {
    pub conversation: WireConversation,
    pub members: Vec<WireMember>,
    pub receipts: Vec<WireReceipt>,
    pub last_seq: u64,
}

/// A durable send: the event's position, and whether the `client_msg_id` was seen before.
#[derive(Debug, Serialize, Deserialize)]
pub struct AckResponse {
    pub conversation: u64,
    pub seq: u64,
    pub at: i64,
    pub duplicate: bool,
}

impl From<Accepted> for AckResponse {
    fn from(a: Accepted) -> Self {
        AckResponse {
            conversation: a.conversation.0,
            seq: a.seq.0,
            at: a.at,
            duplicate: a.duplicate,
        }
    }
}

/// A membership or name change: the `seq` of the event recording it, `null` if nothing changed.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChangeResponse {
    pub conversation: u64,
    pub seq: Option<u64>,
    pub at: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EventsResponse {
    /// Newest first when paging backward (`before` or no cursor), oldest first with `after`.
    pub events: Vec<WireEvent>,
    /// More events exist beyond this page in the direction of paging.
    pub limited: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReceiptResponse {
    pub conversation: u64,
    pub delivered: u64,
    pub read: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PublicUserResponse {
    pub id: u64,
    pub username: String,
    pub display_name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PresenceResponse {
    pub users: Vec<WirePresence>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WirePresence {
    pub user: u64,
    pub online: bool,
    pub last_seen: Option<i64>,
}

/// # `GET /v1/conversations`
///
/// The caller's conversations, most recent activity first.
pub async fn list_conversations(
    state: web::Data<AppState>,
    Authed(me): Authed,
) -> Result<web::Json<Vec<WireSummary>>, ApiError> {
    let summaries = state.engine.conversation_list(me.user.id).await?;
    Ok(web::Json(summaries.iter().map(WireSummary::from).collect()))
}

/// # `POST /v1/conversations/groups`
///
/// Create a group owned by the caller. Answers `201`.
pub async fn create_group(
    state: web::Data<AppState>,
    Authed(me): Authed,
    body: web::Json<CreateGroupRequest>,
) -> Result<HttpResponse, ApiError> {
    let members: Vec<UserId> = body.members.iter().copied().map(UserId).collect();
    let conversation = state.engine.create_group(me.user.id, &body.name, &members).await?;
    Ok(HttpResponse::Created().json(WireConversation::from(&conversation)))
}

/// # `POST /v1/conversations/direct`
///
/// The direct conversation with `peer`, created on first use.
pub async fn open_direct(
    state: web::Data<AppState>,
    Authed(me): Authed,
    body: web::Json<OpenDirectRequest>,
) -> Result<web::Json<WireConversation>, ApiError> {
    let conversation = state.engine.open_direct(me.user.id, UserId(body.peer)).await?;
    Ok(web::Json(WireConversation::from(&conversation)))
}

/// # `GET /v1/conversations/{id}`
///
/// Header, members, receipt cursors and newest seq, for a member.
pub async fn get_conversation(
    state: web::Data<AppState>,
    Authed(me): Authed,
    path: web::Path<u64>,
) -> Result<web::Json<ConversationResponse>, ApiError> {
    let view = state.engine.describe(me.user.id, ConversationId(*path)).await?;
    Ok(web::Json(ConversationResponse {
        conversation: WireConversation::from(&view.conversation),
        members: view.members.iter().map(WireMember::from).collect(),
        receipts: view
            .receipts
            .iter()
            .map(|(user, r)| WireReceipt::new(*user, *r))
            .collect(),
        last_seq: view.last_seq.0,
    }))
}

/// # `PATCH /v1/conversations/{id}`
///
/// Rename a group.
pub async fn rename_conversation(
    state: web::Data<AppState>,
    Authed(me): Authed,
    path: web::Path<u64>,
    body: web::Json<RenameRequest>,
) -> Result<web::Json<ChangeResponse>, ApiError> {
    let change = GroupChange::Rename {
        name: body.into_inner().name,
    };
    apply_change(&state, &me, *path, change).await
}

/// # `POST /v1/conversations/{id}/members`
pub async fn add_members(
    state: web::Data<AppState>,
    Authed(me): Authed,
    path: web::Path<u64>,
    body: web::Json<AddMembersRequest>,
) -> Result<web::Json<ChangeResponse>, ApiError> {
    let users = body.users.iter().copied().map(UserId).collect();
    apply_change(&state, &me, *path, GroupChange::AddMembers { users }).await
}

/// # `DELETE /v1/conversations/{id}/members/{user}`
pub async fn remove_member(
    state: web::Data<AppState>,
    Authed(me): Authed,
    path: web::Path<(u64, u64)>,
) -> Result<web::Json<ChangeResponse>, ApiError> {
    let (conversation, user) = path.into_inner();
    apply_change(
        &state,
        &me,
        conversation,
        GroupChange::RemoveMember { user: UserId(user) },
    )
    .await
}

/// # `POST /v1/conversations/{id}/leave`
pub async fn leave_conversation(
    state: web::Data<AppState>,
    Authed(me): Authed,
    path: web::Path<u64>,
) -> Result<web::Json<ChangeResponse>, ApiError> {
    apply_change(&state, &me, *path, GroupChange::Leave).await
}

/// # `PUT /v1/conversations/{id}/members/{user}/role`
pub async fn set_member_role(
    state: web::Data<AppState>,
    Authed(me): Authed,
    path: web::Path<(u64, u64)>,
    body: web::Json<SetRoleRequest>,
) -> Result<web::Json<ChangeResponse>, ApiError> {
    let (conversation, user) = path.into_inner();
    let change = GroupChange::SetRole {
        user: UserId(user),
        role: body.role.into(),
    };
    apply_change(&state, &me, conversation, change).await
}

async fn apply_change(
    state: &AppState,
    me: &crate::auth::Authenticated,
    conversation: u64,
    change: GroupChange,
) -> Result<web::Json<ChangeResponse>, ApiError> {
    let command = Command::Change {
        actor: me.user.id,
        change,
    };
    let (seq, at) = match state.engine.call(ConversationId(conversation), command).await? {
        Reply::Accepted(a) => (Some(a.seq.0), Some(a.at)),
        _ => (None, None),
    };
    Ok(web::Json(ChangeResponse { conversation, seq, at }))
}

/// # `GET /v1/conversations/{id}/events?before=&after=&limit=`
///
/// History paging. `before`: older than that seq, newest first. `after`: newer than that seq,
/// oldest first. Neither: the newest events, newest first. `limit` is 1 to 200 (default 50).
pub async fn list_events(
    state: web::Data<AppState>,
    Authed(me): Authed,
    path: web::Path<u64>,
    query: web::Query<EventsQuery>,
) -> Result<web::Json<EventsResponse>, ApiError> {
    let conversation = ConversationId(*path);
    let limit = page_limit(query.limit)?;
    let (events, limited) = match (query.before, query.after) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give `before` or `after`, not both")),
        (None, Some(after)) => {
            let page = state
                .engine
                .events_after(me.user.id, conversation, Seq(after), limit)
                .await?;
            (page.events, page.limited)
        }
        (before, None) => {
            let from = Seq(before.unwrap_or(u64::MAX));
            let request = PageRequest {
                from,
                direction: Direction::Backward,
                limit,
            };
            let events = state.engine.history(me.user.id, conversation, request).await?;
            // Seqs are dense from 1, so older events exist exactly when the oldest here is not 1.
            let limited = events.len() == limit && events.last().is_some_and(|e| e.seq > Seq(1));
            (events, limited)
        }
    };
    Ok(web::Json(EventsResponse {
        events: events.iter().map(WireEvent::from).collect(),
        limited,
    }))
}

/// # `POST /v1/conversations/{id}/messages`
///
/// Send a message over REST (bots). Idempotent by `client_msg_id`; answers once it is durable.
pub async fn send_message(
    state: web::Data<AppState>,
    Authed(me): Authed,
    path: web::Path<u64>,
    body: web::Json<SendMessageRequest>,
) -> Result<web::Json<AckResponse>, ApiError> {
    let SendMessageRequest { client_msg_id, body } = body.into_inner();
    let client_msg_id = ClientMsgId::parse(&client_msg_id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let command = Command::Send {
        sender: me.user.id,
        client_msg_id,
        body: body.into_body()?,
    };
    let accepted = state.engine.accepted(ConversationId(*path), command).await?;
    Ok(web::Json(accepted.into()))
}

/// # `POST /v1/conversations/{id}/receipts`
///
/// Advance the caller's delivered/read cursors (monotonic; lower values change nothing).
pub async fn post_receipt(
    state: web::Data<AppState>,
    Authed(me): Authed,
    path: web::Path<u64>,
    body: web::Json<ReceiptRequest>,
) -> Result<web::Json<ReceiptResponse>, ApiError> {
    if body.delivered.is_none() && body.read.is_none() {
        return Err(ApiError::invalid("give `delivered`, `read` or both"));
    }
    let command = Command::Receipt {
        user: me.user.id,
        delivered: body.delivered.map(Seq),
        read: body.read.map(Seq),
    };
    let receipt = match state.engine.call(ConversationId(*path), command).await? {
        Reply::Receipt(receipt) => receipt,
        other => return Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    };
    let (delivered, read) = (receipt.delivered.0, receipt.read.0);
    Ok(web::Json(ReceiptResponse {
        conversation: *path,
        delivered,
        read,
    }))
}

/// # `GET /v1/users/{id}`
///
/// A user's public profile.
pub async fn get_user(
    state: web::Data<AppState>,
    _me: Authed,
    path: web::Path<u64>,
) -> Result<web::Json<PublicUserResponse>, ApiError> {
    let user = state
        .engine
        .store()
        .user(UserId(*path))
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(web::Json(PublicUserResponse {
        id: user.id.0,
        username: user.username,
        display_name: user.display_name,
    }))
}

/// # `GET /v1/presence?users=1,2,3`
///
/// Whether each user is online on this node, and when they were last seen. Advisory.
pub async fn get_presence(
    state: web::Data<AppState>,
    _me: Authed,
    query: web::Query<PresenceQuery>,
) -> Result<web::Json<PresenceResponse>, ApiError> {
    let users = parse_user_list(&query.users)?;
    let states = state
        .engine
        .hub()
        .send(QueryPresence { users })
        .await
        .map_err(|_| ApiError::new(ErrorCode::Unavailable, "presence is unavailable; retry"))?;
    let mut answer = Vec::with_capacity(states.len());
    for s in states {
        let last_seen = match s.last_seen {
            Some(at) => Some(at),
            None => state.engine.store().user(s.user).await?.and_then(|u| u.last_seen),
        };
        answer.push(WirePresence {
            user: s.user.0,
            online: s.online,
            last_seen,
        });
    }
    Ok(web::Json(PresenceResponse { users: answer }))
}

/// Parse `1,2,3` into distinct user ids, in order: 1 to [`MAX_PRESENCE_USERS`] of them.
fn parse_user_list(raw: &str) -> Result<Vec<UserId>, ApiError> {
    let mut seen = HashSet::new();
    let mut users = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id = part
            .parse::<u64>()
            .map_err(|_| ApiError::invalid(format!("`{part}` is not a user id")))?;
        if seen.insert(id) {
            users.push(UserId(id));
        }
        if users.len() > MAX_PRESENCE_USERS {
            return Err(ApiError::invalid(format!(
                "at most {MAX_PRESENCE_USERS} users per query"
            )));
        }
    }
    if users.is_empty() {
        return Err(ApiError::invalid("`users` needs at least one user id"));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_lists_are_parsed_deduplicated_and_bounded() {
        let users = parse_user_list(" 3,1, 3 ,2,").expect("valid");
        assert_eq!(users, vec![UserId(3), UserId(1), UserId(2)]);
        assert!(parse_user_list("").is_err());
        assert!(parse_user_list("1,-2").is_err());
        let hundred: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
        assert!(parse_user_list(&hundred.join(",")).is_ok());
        let too_many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
        assert!(parse_user_list(&too_many.join(",")).is_err());
    }
}
