//! What a conversation actor can be asked to do, and what it answers.
//!
//! Every request names the acting user; the API layer fills it from the authenticated session,
//! never from the client's frame.

use serde::Deserialize;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::ConversationError;
use crate::ids::ClientMsgId;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::Conversation;
use crate::model::Member;
use crate::model::MemberRole;
use crate::model::MessageBody;
use crate::model::Receipt;
use crate::model::UnixMillis;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Append a new message.
    Send {
        sender: UserId,
        client_msg_id: ClientMsgId,
        body: MessageBody,
    },
    /// Replace the body of one of the sender's messages (inside the edit window).
    Edit {
        sender: UserId,
        client_msg_id: ClientMsgId,
        target: Seq,
        body: MessageBody,
    },
    /// Remove a message for everyone (own message inside the window; admins any time).
    Recall {
        sender: UserId,
        client_msg_id: ClientMsgId,
        target: Seq,
    },
    /// Membership and naming changes of a group.
    Change { actor: UserId, change: GroupChange },
    /// Advance the actor's delivered/read cursors.
    Receipt {
        user: UserId,
        delivered: Option<Seq>,
        read: Option<Seq>,
    },
    /// Tell the other members that `user` is typing.
    Typing { user: UserId },
    /// Check that `user` is a member (before reading history); answers `Reply::Done`.
    Authorize { user: UserId },
    /// The conversation's header, members, receipts and top seq, for a member.
    Describe { user: UserId },
    /// Announce a freshly created group by appending its initial `MembersAdded` event.
    Announce { creator: UserId },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupChange {
    AddMembers { users: Vec<UserId> },
    RemoveMember { user: UserId },
    Leave,
    SetRole { user: UserId, role: MemberRole },
    Rename { name: String },
}

/// A durable append: `seq` is the event's position; `duplicate` is true when the client message
/// id had already been used and this is the original seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub conversation: ConversationId,
    pub seq: Seq,
    pub at: UnixMillis,
    pub duplicate: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationView {
    pub conversation: Conversation,
    pub members: Vec<Member>,
    pub receipts: Vec<(crate::ids::UserId, Receipt)>,
    pub last_seq: Seq,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    Accepted(Accepted),
    Receipt(Receipt),
    View(Box<ConversationView>),
    Done,
}

pub type ReplyTx = oneshot::Sender<Result<Reply, ConversationError>>;

/// A command addressed to one conversation, carrying its reply channel.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Envelope {
    pub conversation: ConversationId,
    pub command: Command,
    pub reply: ReplyTx,
}
