//! The slice of Roost's protocol v1 (docs/protocol.md) the loader speaks, and the stamp it puts
//! in every message.
//!
//! A message's `client_msg_id` is `m<slot>.<k>` (stream and message number, see `schedule`),
//! which also serves as the `ref` of its `send` so the `ack` can be matched. Its text is
//! `rlt1 <planned unix nanos> <client_msg_id> xxxx...` padded to the payload size, so every
//! receiver can compute send->deliver latency from the planned send time. Frames are written by
//! hand (the values are ASCII without quotes) and read into a borrowed struct that ignores
//! fields the loader does not need: the loader must stay cheaper than the server it measures.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Deserialize;

/// Identifies one logical message of the run: stream `slot`, message `k` of that stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgKey {
    pub slot: u32,
    pub k: u64,
}

impl MsgKey {
    pub fn client_msg_id(&self) -> String {
        format!("m{}.{}", self.slot, self.k)
    }

    /// The key of a `client_msg_id` this loader made; `None` for anything else.
    pub fn parse(id: &str) -> Option<MsgKey> {
        let (slot, k) = id.strip_prefix('m')?.split_once('.')?;
        Some(MsgKey {
            slot: slot.parse().ok()?,
            k: k.parse().ok()?,
        })
    }
}

const STAMP: &str = "rlt1 ";

/// The message text: the stamp, then `x` up to `payload_bytes` (at least the stamp itself).
pub fn message_text(planned_unix_ns: u64, key: MsgKey, payload_bytes: usize) -> String {
    let mut text = String::with_capacity(payload_bytes.max(48));
    let _ = write!(text, "{STAMP}{planned_unix_ns} m{}.{} ", key.slot, key.k);
    while text.len() < payload_bytes {
        text.push('x');
    }
    text
}

/// The planned send time in a stamped text.
pub fn planned_of(text: &str) -> Option<u64> {
    text.strip_prefix(STAMP)?.split(' ').next()?.parse().ok()
}

/// A `send` frame; `ref` is the `client_msg_id`.
pub fn send_frame(conversation: u64, key: MsgKey, text: &str) -> String {
    let id = key.client_msg_id();
    format!(
        r#"{{"type":"send","ref":"{id}","conversation":{conversation},"client_msg_id":"{id}","body":{{"text":"{text}"}}}}"#
    )
}

/// A `sync` frame listing every conversation with the seq the client has.
pub fn sync_frame(reference: &str, cursors: &BTreeMap<u64, u64>, limit: usize) -> String {
    let mut frame = format!(r#"{{"type":"sync","ref":"{reference}","limit":{limit},"conversations":{{"#);
    for (i, (conversation, seq)) in cursors.iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        let _ = write!(frame, r#""{conversation}":{seq}"#);
    }
    frame.push_str("}}");
    frame
}

/// One entry of a `synced` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SyncedEntry {
    pub conversation: u64,
    pub synced_to: u64,
    pub limited: bool,
}

/// What the loader cares about in a server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Welcome,
    /// A timeline event; `planned_ns` is set for the loader's stamped messages.
    Event {
        conversation: u64,
        seq: u64,
        is_message: bool,
        planned_ns: Option<u64>,
    },
    Ack {
        reference: Option<String>,
        conversation: u64,
        seq: u64,
        duplicate: bool,
    },
    Error {
        reference: Option<String>,
        code: String,
        retryable: bool,
        retry_after_ms: Option<u64>,
    },
    Synced {
        reference: Option<String>,
        entries: Vec<SyncedEntry>,
    },
    /// Presence, typing, receipts, pongs and anything newer.
    Other,
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    frame_type: Cow<'a, str>,
    conversation: Option<u64>,
    seq: Option<u64>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    retryable: Option<bool>,
    retry_after_ms: Option<u64>,
    duplicate: Option<bool>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    body: Option<RawBody<'a>>,
    #[serde(default)]
    conversations: Option<Vec<SyncedEntry>>,
}

#[derive(Deserialize)]
struct RawBody<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// Why a server frame could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("`{0}` frame lacks a field the protocol promises")]
    Missing(&'static str),
}

/// Decode one server text frame.
pub fn decode(text: &str) -> Result<Incoming, DecodeError> {
    let raw: RawFrame<'_> = serde_json::from_str(text)?;
    let reference = || raw.reference.as_deref().map(str::to_owned);
    Ok(match raw.frame_type.as_ref() {
        "event" => Incoming::Event {
            conversation: raw.conversation.ok_or(DecodeError::Missing("event"))?,
            seq: raw.seq.ok_or(DecodeError::Missing("event"))?,
            is_message: raw.kind.as_deref() == Some("message"),
            planned_ns: raw.body.as_ref().and_then(|b| b.text.as_deref()).and_then(planned_of),
        },
        "ack" => Incoming::Ack {
            reference: reference(),
            conversation: raw.conversation.ok_or(DecodeError::Missing("ack"))?,
            seq: raw.seq.ok_or(DecodeError::Missing("ack"))?,
            duplicate: raw.duplicate.unwrap_or(false),
        },
        "error" => Incoming::Error {
            reference: reference(),
            code: raw.code.as_deref().unwrap_or("unknown").to_owned(),
            retryable: raw.retryable.unwrap_or(false),
            retry_after_ms: raw.retry_after_ms,
        },
        "synced" => Incoming::Synced {
            reference: reference(),
            entries: raw.conversations.unwrap_or_default(),
        },
        "welcome" => Incoming::Welcome,
        _ => Incoming::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_foreign_ids_are_ignored() {
        let key = MsgKey { slot: 12, k: 34 };
        assert_eq!(key.client_msg_id(), "m12.34");
        assert_eq!(MsgKey::parse("m12.34"), Some(key));
        assert_eq!(MsgKey::parse("6f1c2a"), None);
        assert_eq!(MsgKey::parse("m1.x"), None);
    }

    #[test]
    fn texts_carry_the_planned_time_and_have_the_payload_size() {
        let text = message_text(1_764_310_000_123_456_789, MsgKey { slot: 1, k: 2 }, 100);
        assert_eq!(text.len(), 100);
        assert_eq!(planned_of(&text), Some(1_764_310_000_123_456_789));
        assert_eq!(planned_of("hello"), None);
    }

    #[test]
    fn frames_are_valid_json() {
        let key = MsgKey { slot: 3, k: 9 };
        let send: serde_json::Value =
            serde_json::from_str(&send_frame(7, key, &message_text(5, key, 40))).expect("send json");
        assert_eq!(send["client_msg_id"], "m3.9");
        assert_eq!(send["ref"], "m3.9");
        let sync: serde_json::Value =
            serde_json::from_str(&sync_frame("s1", &BTreeMap::from([(12, 40), (13, 0)]), 200)).expect("sync json");
        assert_eq!(sync["conversations"]["12"], 40);
    }

    #[test]
    fn server_frames_decode() {
        let event = r#"{"type":"event","conversation":12,"seq":41,"sender":7,"at":1,"kind":"message",
            "client_msg_id":"m1.2","body":{"text":"rlt1 99 m1.2 xx","mentions":[]},"edited_by":null,"recalled":false}"#;
        assert_eq!(
            decode(event).expect("event"),
            Incoming::Event {
                conversation: 12,
                seq: 41,
                is_message: true,
                planned_ns: Some(99)
            }
        );
        let ack = r#"{"type":"ack","ref":"m1.2","conversation":12,"seq":42,"at":5,"duplicate":true}"#;
        assert!(matches!(
            decode(ack).expect("ack"),
            Incoming::Ack {
                seq: 42,
                duplicate: true,
                ..
            }
        ));
        let err = r#"{"type":"error","ref":"m1.3","code":"overloaded","message":"busy","retryable":true}"#;
        assert!(matches!(
            decode(err).expect("error"),
            Incoming::Error { retryable: true, .. }
        ));
        let synced = r#"{"type":"synced","ref":"s1","conversations":[{"conversation":12,"last_seq":42,"synced_to":42,"limited":false}]}"#;
        assert!(matches!(decode(synced).expect("synced"), Incoming::Synced { entries, .. } if entries.len() == 1));
        let welcome = r#"{"type":"welcome","v":1,"user":{"id":7},"heartbeat_secs":30,"limits":{}}"#;
        assert_eq!(decode(welcome).expect("welcome"), Incoming::Welcome);
        assert_eq!(
            decode(r#"{"type":"presence","user":3,"online":true}"#).expect("p"),
            Incoming::Other
        );
        assert!(decode(r#"{"type":"event","seq":1}"#).is_err());
    }
}
