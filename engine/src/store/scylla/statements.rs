//! Every CQL statement of the store, prepared once at connect.
//!
//! Preparing up front means a wrong schema fails the start with a clear message instead of the
//! first request, and each request then sends only the statement id and values. Prepared
//! statements are token-aware: the driver routes each to a replica of its partition (and, on
//! ScyllaDB, to the shard owning it). Reads carry the read consistency and are marked
//! idempotent (the driver may retry them); writes carry the write consistency. Lightweight
//! transactions use `LOCAL_SERIAL` for their Paxos phase (set in the session's profile).
//! Column lists are explicit (no `SELECT *`), so a later `ALTER TABLE` cannot shift them.

use ::scylla::client::session::Session;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::Consistency;
use ::scylla::statement::SerialConsistency;

use super::errors;
use super::options::ScyllaOptions;
use crate::store::StoreError;

/// The event columns after the key, in `codec::EventColumns` order.
pub(super) const EVENT_COLUMNS: &str =
    "seq, sender, at, kind, client_msg_id, body, target, edited_by, recalled_by, detail";

const USER_COLUMNS: &str = "user_id, username, display_name, password_hash, role, disabled, created_at, last_seen";
const SESSION_COLUMNS: &str = "token_hash, user_id, device, created_at, expires_at";
const CONVERSATION_COLUMNS: &str = "conversation_id, kind, name, created_by, created_at";

macro_rules! statements {
    ($($name:ident: $kind:ident => $text:expr;)*) => {
        /// The prepared statements; see the module docs.
        pub(super) struct Statements {
            $(pub(super) $name: PreparedStatement,)*
        }

        impl Statements {
            pub(super) async fn prepare(session: &Session, options: &ScyllaOptions) -> Result<Self, StoreError> {
                let ks = options.keyspace.as_str();
                Ok(Self {
                    $($name: prepare(session, options, Kind::$kind, &format!($text, ks = ks)).await?,)*
                })
            }
        }
    };
}

#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
    /// A lightweight transaction: Paxos at `LOCAL_SERIAL`, commit at the write consistency.
    Lwt,
    /// A linearizable read (`LOCAL_SERIAL`) of a row written by lightweight transactions.
    SerialRead,
}

async fn prepare(
    session: &Session,
    options: &ScyllaOptions,
    kind: Kind,
    text: &str,
) -> Result<PreparedStatement, StoreError> {
    let mut statement = session.prepare(text).await.map_err(|e| errors::prepare(text, e))?;
    match kind {
        Kind::Read => {
            statement.set_consistency(options.read_consistency.to_driver());
            statement.set_is_idempotent(true);
        }
        Kind::Write => statement.set_consistency(options.write_consistency.to_driver()),
        Kind::Lwt => {
            statement.set_consistency(options.write_consistency.to_driver());
            statement.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        }
        Kind::SerialRead => {
            statement.set_consistency(Consistency::LocalSerial);
            statement.set_is_idempotent(true);
        }
    }
    Ok(statement)
}

statements! {
    select_setting: Read => "SELECT value FROM {ks}.store_settings WHERE name = ?";

    select_counter: SerialRead => "SELECT next_id FROM {ks}.id_counters WHERE name = ?";
    create_counter: Lwt => "INSERT INTO {ks}.id_counters (name, next_id) VALUES (?, ?) IF NOT EXISTS";
    advance_counter: Lwt => "UPDATE {ks}.id_counters SET next_id = ? WHERE name = ? IF next_id = ?";
    peek_counter: Read => "SELECT next_id FROM {ks}.id_counters WHERE name = ?";

    insert_user: Write => "INSERT INTO {ks}.users (user_id, username, display_name, password_hash, role, \
        disabled, created_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
    select_user: Read => "SELECT {USER_COLUMNS} FROM {ks}.users WHERE user_id = ?";
    update_user: Write => "UPDATE {ks}.users SET display_name = ?, password_hash = ?, role = ?, disabled = ?, \
        last_seen = ? WHERE user_id = ?";
    set_last_seen: Write => "UPDATE {ks}.users SET last_seen = ? WHERE user_id = ?";
    claim_username: Lwt => "INSERT INTO {ks}.usernames (username, user_id) VALUES (?, ?) IF NOT EXISTS";
    release_username: Lwt => "DELETE FROM {ks}.usernames WHERE username = ? IF user_id = ?";
    select_username: Read => "SELECT user_id FROM {ks}.usernames WHERE username = ?";
    insert_directory: Write => "INSERT INTO {ks}.user_directory (bucket, user_id) VALUES (?, ?)";
    select_directory: Read => "SELECT user_id FROM {ks}.user_directory WHERE bucket = ? AND user_id > ? LIMIT ?";

    insert_session: Write => "INSERT INTO {ks}.sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?) USING TTL ?";
    insert_session_of_user: Write => "INSERT INTO {ks}.sessions_by_user (user_id, token_hash) VALUES (?, ?) \
        USING TTL ?";
    select_session: Read => "SELECT {SESSION_COLUMNS} FROM {ks}.sessions WHERE token_hash = ?";
    select_session_user: Read => "SELECT user_id FROM {ks}.sessions WHERE token_hash = ?";
    delete_session: Write => "DELETE FROM {ks}.sessions WHERE token_hash = ?";
    delete_session_of_user: Write => "DELETE FROM {ks}.sessions_by_user WHERE user_id = ? AND token_hash = ?";
    select_sessions_of_user: Read => "SELECT token_hash FROM {ks}.sessions_by_user WHERE user_id = ?";
    scan_sessions: Read => "SELECT token_hash, user_id, expires_at FROM {ks}.sessions";

    insert_conversation: Write => "INSERT INTO {ks}.conversations ({CONVERSATION_COLUMNS}) VALUES (?, ?, ?, ?, ?)";
    select_conversation: Read => "SELECT {CONVERSATION_COLUMNS} FROM {ks}.conversations WHERE conversation_id = ?";
    select_conversation_kind: Read => "SELECT kind FROM {ks}.conversations WHERE conversation_id = ?";
    rename_conversation: Write => "UPDATE {ks}.conversations SET name = ? WHERE conversation_id = ?";
    claim_pair: Lwt => "INSERT INTO {ks}.direct_pairs (user_low, user_high, conversation_id) VALUES (?, ?, ?) \
        IF NOT EXISTS";
    select_pair: Read => "SELECT conversation_id FROM {ks}.direct_pairs WHERE user_low = ? AND user_high = ?";
    select_pair_serial: SerialRead => "SELECT conversation_id FROM {ks}.direct_pairs WHERE user_low = ? \
        AND user_high = ?";
    insert_member: Write => "INSERT INTO {ks}.members_by_conversation (conversation_id, user_id, role) \
        VALUES (?, ?, ?)";
    delete_member: Write => "DELETE FROM {ks}.members_by_conversation WHERE conversation_id = ? AND user_id = ?";
    select_members: Read => "SELECT user_id, role FROM {ks}.members_by_conversation WHERE conversation_id = ?";
    insert_conversation_of_user: Write => "INSERT INTO {ks}.conversations_by_user (user_id, conversation_id) \
        VALUES (?, ?)";
    delete_conversation_of_user: Write => "DELETE FROM {ks}.conversations_by_user WHERE user_id = ? \
        AND conversation_id = ?";
    select_conversations_of_user: Read => "SELECT conversation_id FROM {ks}.conversations_by_user WHERE user_id = ?";
    insert_receipt: Write => "INSERT INTO {ks}.receipts (conversation_id, user_id, delivered_seq, read_seq) \
        VALUES (?, ?, ?, ?)";
    delete_receipt: Write => "DELETE FROM {ks}.receipts WHERE conversation_id = ? AND user_id = ?";
    select_receipts: Read => "SELECT user_id, delivered_seq, read_seq FROM {ks}.receipts WHERE conversation_id = ?";

    select_head: Read => "SELECT last_seq FROM {ks}.conversation_heads WHERE conversation_id = ?";
    upsert_head: Write => "INSERT INTO {ks}.conversation_heads (conversation_id, last_seq) VALUES (?, ?)";
    insert_event: Write => "INSERT INTO {ks}.events (conversation_id, bucket, {EVENT_COLUMNS}) \
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?";
    revise_event: Write => "UPDATE {ks}.events USING TTL ? SET body = ?, edited_by = ?, recalled_by = ? \
        WHERE conversation_id = ? AND bucket = ? AND seq = ?";
    select_event: Read => "SELECT {EVENT_COLUMNS} FROM {ks}.events WHERE conversation_id = ? AND bucket = ? \
        AND seq = ?";
    select_event_kind: Read => "SELECT kind FROM {ks}.events WHERE conversation_id = ? AND bucket = ? AND seq = ?";
    select_events_after: Read => "SELECT {EVENT_COLUMNS} FROM {ks}.events WHERE conversation_id = ? \
        AND bucket = ? AND seq > ? ORDER BY seq ASC LIMIT ?";
    select_events_before: Read => "SELECT {EVENT_COLUMNS} FROM {ks}.events WHERE conversation_id = ? \
        AND bucket = ? AND seq < ? ORDER BY seq DESC LIMIT ?";
    insert_client_msg: Write => "INSERT INTO {ks}.client_msgs (conversation_id, sender, client_msg_id, seq) \
        VALUES (?, ?, ?, ?) USING TTL ?";
    select_client_msg: Read => "SELECT seq FROM {ks}.client_msgs WHERE conversation_id = ? AND sender = ? \
        AND client_msg_id = ?";
}
