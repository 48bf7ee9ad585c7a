//! Errors of conversation operations, named after what the caller does next.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::store::StoreError;

/// Why a conversation operation (send, edit, recall, membership, receipt) was refused.
/// Serializable: a node forwards it back to the node that forwarded the command.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
pub enum ConversationError {
    #[error("conversation {0} not found")]
    NotFound(ConversationId),
    #[error("not a member of conversation {0}")]
    NotMember(ConversationId),
    #[error("not allowed: {0}")]
    Forbidden(Cow<'static, str>),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("message body is {size} bytes, the limit is {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("group would exceed {limit} members")]
    GroupFull { limit: usize },
    #[error("message {0} not found")]
    TargetNotFound(Seq),
    #[error("the edit window of {0:?} has passed")]
    EditWindowPassed(Duration),
    /// The conversation is owned by another node (cluster placement).
    #[error("conversation {0} is owned by another node")]
    NotOwner(ConversationId),
    /// Too many requests are queued; retry after a short pause.
    #[error("overloaded, retry later")]
    Overloaded,
    /// The store could not persist or read; nothing was acknowledged. Safe to retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ConversationError {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConversationError::Overloaded | ConversationError::Unavailable(_) | ConversationError::NotOwner(_)
        )
    }
}

impl From<StoreError> for ConversationError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(why) => ConversationError::Unavailable(why),
            StoreError::NotFound { what } => ConversationError::Invalid(format!("{what} not found")),
            other => ConversationError::Internal(other.to_string()),
        }
    }
}
