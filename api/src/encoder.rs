//! JsonEncoder: the API's implementation of the engine's `EventEncoder`. Each outgoing item is
//! serialized once here and the bytes are shared by all recipients.

use bytes::Bytes;
use roost_engine::delivery::EventEncoder;
use roost_engine::ids::ConversationId;
use roost_engine::ids::UserId;
use roost_engine::model::Event;
use roost_engine::model::Receipt;
use roost_engine::model::UnixMillis;

use crate::wire::ServerFrame;

#[derive(Debug, Default, Clone, Copy)]
pub struct JsonEncoder;

impl EventEncoder for JsonEncoder {
    fn event(&self, event: &Event) -> Bytes {
        ServerFrame::event(event)
    }

    fn receipt(&self, conversation: ConversationId, user: UserId, receipt: Receipt) -> Bytes {
        ServerFrame::Receipt {
            conversation: conversation.0,
            user: user.0,
            delivered: receipt.delivered.0,
            read: receipt.read.0,
        }
        .to_bytes()
    }

    fn typing(&self, conversation: ConversationId, user: UserId) -> Bytes {
        ServerFrame::Typing {
            conversation: conversation.0,
            user: user.0,
        }
        .to_bytes()
    }

    fn presence(&self, user: UserId, online: bool, last_seen: Option<UnixMillis>) -> Bytes {
        ServerFrame::Presence {
            user: user.0,
            online,
            last_seen,
        }
        .to_bytes()
    }
}
