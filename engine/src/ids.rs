//! Newtype identifiers: users, conversations, nodes, sequence numbers and client message ids.
//!
//! Every id that crosses a module boundary is a newtype so a `UserId` can never be passed where a
//! `ConversationId` is expected. Numeric ids are assigned by the store; `ClientMsgId` is chosen by
//! the client and validated here.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// A user account, assigned by the store when the account is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub u64);

/// A conversation (direct 1:1 or group), assigned by the store when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationId(pub u64);

/// A Roost node (a process serving connections). Names where a user's connections live in the
/// presence directory; in a cluster it is the node's configured id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The id of a node that runs alone (no cluster and no configured id).
    pub const STANDALONE: NodeId = NodeId(1);
}

/// Position of an event in its conversation. Dense: 1, 2, 3, ... with no gaps, assigned only by
/// the conversation's owning actor. `Seq(0)` means "nothing yet".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

/// Longest accepted client message id, in bytes.
pub const CLIENT_MSG_ID_MAX_LEN: usize = 64;

/// The client's idempotency key for a send, unique per (conversation, sender).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientMsgId(String);

/// Why a client message id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientMsgIdError {
    #[error("client_msg_id must not be empty")]
    Empty,
    #[error("client_msg_id is longer than {CLIENT_MSG_ID_MAX_LEN} bytes")]
    TooLong,
    #[error("client_msg_id may contain only printable ASCII")]
    BadCharacter,
}

impl ClientMsgId {
    pub fn parse(raw: &str) -> Result<Self, ClientMsgIdError> {
        if raw.is_empty() {
            return Err(ClientMsgIdError::Empty);
        }
        if raw.len() > CLIENT_MSG_ID_MAX_LEN {
            return Err(ClientMsgIdError::TooLong);
        }
        if !raw.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ClientMsgIdError::BadCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 of a session token. Only the hash is ever stored, so a leaked store does not leak
/// usable tokens.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits identify a session in logs without revealing the whole hash.
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_inner!(UserId, ConversationId, NodeId, Seq, ClientMsgId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_msg_id_rules() {
        assert!(ClientMsgId::parse("abc-123").is_ok());
        assert_eq!(ClientMsgId::parse(""), Err(ClientMsgIdError::Empty));
        assert_eq!(ClientMsgId::parse(&"x".repeat(65)), Err(ClientMsgIdError::TooLong));
        assert_eq!(ClientMsgId::parse("a b"), Err(ClientMsgIdError::BadCharacter));
        assert_eq!(ClientMsgId::parse("é"), Err(ClientMsgIdError::BadCharacter));
    }
}
