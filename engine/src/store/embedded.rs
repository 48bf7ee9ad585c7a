//! `EmbeddedStore`: the durable single-node store, on redb plus an append log (no server).
//!
//! - `writer`: every mutation goes through one writer thread that group-commits: one redb
//!   write transaction for up to `max_batch` queued writes, answered only after the commit.
//!   Appends are queued inside [`MessageStore::append`] itself, so submission order is application
//!   order. In immediate durability, appends and receipts are made durable by one `fdatasync` of
//!   the append log per batch, and redb by a periodic durable commit (a checkpoint).
//! - `wal`: the append log's file and frame format; `replay`: its recovery at open.
//! - `mutations`: the mutations, each validated before it writes so a refused one fails alone.
//! - `tables`: the layout, the record encoding (postcard) and the reads.
//!
//! Reads run on tokio's blocking pool in their own read transaction (redb readers never wait for
//! the writer), so they must be called from inside a tokio runtime, current-thread ones included.
//!
//! The database is `<path>/roost.redb`, with its append log `<path>/roost.wal`. redb locks the
//! database against a second opener and recovers the last durable commit after a crash (`kill -9`,
//! power loss); the open then replays the log's frames the database does not hold, and makes the
//! result durable. Opening after a crash repairs the file first (redb walks it to rebuild its
//! allocator state), so that open takes longer on a large database.

mod mutations;
mod replay;
mod tables;
mod wal;
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use redb::Database;
use redb::ReadTransaction;
use redb::ReadableDatabase;
use serde::Deserialize;
use serde::Serialize;

use self::mutations::Heads;
use self::mutations::Step;
use self::mutations::WriteTables;
use self::wal::AppendLog;
use self::wal::LogBuffer;
use self::writer::Command;
use self::writer::Writer;
use super::AccountStore;
use super::AppendError;
use super::AppendOp;
use super::AppendTicket;
use super::ConversationStore;
use super::MessageStore;
use super::PageRequest;
use super::StoreError;
use crate::ids::ClientMsgId;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::TokenHash;
use crate::ids::UserId;
use crate::metrics;
use crate::model::Conversation;
use crate::model::Event;
use crate::model::Member;
use crate::model::NewConversation;
use crate::model::NewUser;
use crate::model::Receipt;
use crate::model::SessionRecord;
use crate::model::UnixMillis;
use crate::model::User;

/// Name of the database file inside [`EmbeddedOptions::path`].
pub const DATABASE_FILE: &str = "roost.redb";
pub use self::wal::LOG_FILE;

/// Settings of the embedded store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedOptions {
    /// Directory of the data; created if missing. The database is the file `roost.redb` inside
    /// it, next to its append log `roost.wal`. A clean stop leaves everything in `roost.redb`:
    /// back up that file (while the node is stopped) to back up the node.
    pub path: PathBuf,
    /// When a write is acknowledged relative to reaching the disk; see [`DurabilityMode`].
    pub durability: DurabilityMode,
    /// Most writes committed together by one group commit. Larger batches amortize the fsync over
    /// more writes under load; an idle store commits each write as soon as it arrives. At least 1.
    pub max_batch: usize,
    /// In `relaxed` durability, the longest time, in milliseconds, between durable commits while
    /// there are acknowledged writes that are not yet on disk: the window of writes a crash may
    /// lose. Ignored in `immediate` durability.
    pub relaxed_flush_interval_ms: u64,
    /// In `immediate` durability, the longest time, in milliseconds, between checkpoints (the
    /// durable redb commit after which the append log starts over) while there are writes only
    /// the log holds. Appends queued behind a checkpoint wait for it (tens of ms under load), so
    /// a longer interval means rarer but longer pauses: below saturation that lowers the p99 of
    /// acks, at saturation the longer pauses leave backlogs (docs/performance.md). The log is
    /// also checkpointed whenever it holds 64 MiB, which bounds the replay after a crash
    /// whatever the interval. Ignored in `relaxed` durability. At least 1.
    pub checkpoint_interval_ms: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data"),
            durability: DurabilityMode::default(),
            max_batch: 512,
            relaxed_flush_interval_ms: 50,
            checkpoint_interval_ms: 1_000,
        }
    }
}

impl EmbeddedOptions {
    /// Every problem with the values, so an operator can fix them in one go.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.path.as_os_str().is_empty() {
            problems.push("embedded store: path must not be empty".to_owned());
        }
        if self.max_batch == 0 {
            problems.push("embedded store: max_batch must be at least 1".to_owned());
        }
        if self.checkpoint_interval_ms == 0 {
            problems.push("embedded store: checkpoint_interval_ms must be at least 1".to_owned());
        }
        problems
    }
}

/// When the embedded store acknowledges a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityMode {
    /// Every group commit is on disk before any of its writes is acknowledged (appends and
    /// receipts in the append log, `fdatasync`ed; other writes by a durable redb commit): an
    /// acknowledged message survives a process crash and a power loss. The safe default.
    #[default]
    Immediate,
    /// Commits are not fsynced; a durable commit is made at least every
    /// `relaxed_flush_interval_ms`, on `flush` and on a clean shutdown. Acknowledged writes are
    /// visible at once but are not on disk until the next durable commit: redb keeps non-durable
    /// commits in process memory, so a crash of the process (`kill -9`, OOM kill, abort), not only
    /// of the machine, reopens the database at its last durable commit and loses up to one
    /// interval of acknowledged writes. (redb documents that a crash returns to the last durable
    /// commit or a later non-durable one; with redb 4.6 a killed process loses them, and the
    /// crash tests check only that the flushed writes survive.) The store stays consistent: a lost
    /// write takes every later write with it, so a log never has a gap, but clients that saw the
    /// lost messages acknowledged will not find them again, and their seqs are reused.
    /// For benchmarks and disposable data only.
    Relaxed,
}

/// The redb-backed [`Store`](super::Store). See the module docs.
pub struct EmbeddedStore {
    db: Arc<Database>,
    commands_tx: mpsc::Sender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
    commits: Arc<AtomicU64>,
}

impl EmbeddedStore {
    /// Open (or create) the database in `options.path` and start the writer thread.
    pub fn open(options: EmbeddedOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.path)
            .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", options.path.display())))?;
        let file = options.path.join(DATABASE_FILE);
        let db = Database::create(&file).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "{} is already open in another process (or store)",
                file.display()
            )),
            other => StoreError::from(other),
        })?;
        let db = Arc::new(db);
        initialize(&db)?;
        let (log, lsn) = recover(&db, &options)?;

        let (commands_tx, commands_rx) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            db: db.clone(),
            commands_rx,
            durability: options.durability,
            max_batch: options.max_batch.max(1),
            relaxed_flush_interval: Duration::from_millis(options.relaxed_flush_interval_ms),
            checkpoint_interval: Duration::from_millis(options.checkpoint_interval_ms.max(1)),
            commits: commits.clone(),
            log,
            lsn,
            heads: Heads::default(),
            records: LogBuffer::default(),
        };
        let handle = std::thread::Builder::new()
            .name("roost-store-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        tracing::info!(path = %file.display(), durability = ?options.durability, "Opened the embedded store.");
        Ok(Self {
            db,
            commands_tx,
            writer: Mutex::new(Some(handle)),
            commits,
        })
    }

    /// Number of group commits made since open (a cheap counter, for tests and benchmarks).
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Stop the writer once it has applied every write queued so far and made them durable.
    /// Later writes fail with `Unavailable`; reads keep working, and the file is released when
    /// the store is dropped. Dropping the store closes it too.
    pub fn close(&self) -> Result<(), StoreError> {
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(handle) = handle else {
            return Ok(());
        };
        // If the writer is already gone the send fails, and join reports why.
        let _ = self.commands_tx.send(Command::Shutdown);
        handle
            .join()
            .map_err(|_| StoreError::Unavailable("the store writer panicked".to_owned()))
    }

    /// Queue a mutation now; the returned future waits for its group commit.
    fn submit<T, E, F>(&self, durable: bool, mutation: F) -> impl Future<Output = Result<T, E>> + Send + 'static
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'t> FnOnce(&mut WriteTables<'t>) -> Step<T, E> + Send + 'static,
    {
        let (job, reply_rx) = writer::job(mutation);
        let sent = self.commands_tx.send(Command::Write { job, durable }).is_ok();
        async move {
            if !sent {
                return Err(E::from(StoreError::Unavailable("the store is closed".to_owned())));
            }
            reply_rx
                .await
                .unwrap_or_else(|_| Err(E::from(StoreError::Unavailable("the store writer stopped".to_owned()))))
        }
    }

    /// Run `read` in a read transaction on the blocking pool.
    async fn read<T, F>(&self, operation: &'static str, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        let task = tokio::task::spawn_blocking(move || {
            let txn = db.begin_read()?;
            read(&txn)
        });
        let result = task
            .await
            .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("the read task failed: {e}"))));
        if result.is_err() {
            metrics::store_error(operation);
        }
        result
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "Closing the embedded store failed.");
        }
    }
}

/// Create every table and check the format version, durably, before the writer starts.
fn initialize(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    let mut heads = Heads::default();
    WriteTables::open(&txn, &mut heads, None)?.check_format()?;
    txn.commit()?;
    Ok(())
}

/// Replay the append log into the database; return the log to write (immediate durability only)
/// and the lsn the database is at.
fn recover(db: &Database, options: &EmbeddedOptions) -> Result<(Option<AppendLog>, u64), StoreError> {
    let (log, contents) = AppendLog::open(&options.path)?;
    if contents.ignored_bytes > 0 {
        tracing::warn!(
            bytes = contents.ignored_bytes,
            "The append log ends in a torn or corrupt frame (a crash during a write); it was never \
             acknowledged and is ignored."
        );
    }
    let replayed = replay::replay(db, &contents)?;
    if replayed.frames > 0 {
        tracing::info!(
            frames = replayed.frames,
            records = replayed.records,
            "Replayed the append log into the database."
        );
    }
    if replayed.refused > 0 {
        tracing::error!(
            refused = replayed.refused,
            "Writes of the append log were refused on replay; the database kept its own state."
        );
    }
    let log = (options.durability == DurabilityMode::Immediate).then_some(log);
    Ok((log, replayed.lsn))
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        self.submit(false, move |t| t.create_user(new)).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read("user", move |txn| {
            let users = txn.open_table(tables::USERS)?;
            let bytes = users.get(id.0)?;
            bytes.map(|b| tables::decode(b.value(), "a user")).transpose()
        })
        .await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let username = username.to_lowercase();
        self.read("user_by_name", move |txn| {
            let Some(id) = txn
                .open_table(tables::USERNAMES)?
                .get(username.as_str())?
                .map(|v| v.value())
            else {
                return Ok(None);
            };
            let bytes = txn.open_table(tables::USERS)?.get(id)?;
            bytes.map(|b| tables::decode(b.value(), "a user")).transpose()
        })
        .await
    }

    async fn set_last_seen(&self, user: UserId, at: UnixMillis) -> Result<(), StoreError> {
        self.submit(false, move |t| t.set_last_seen(user, at)).await
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let user = user.clone();
        self.submit(false, move |t| t.update_user(user)).await
    }

    async fn list_users(&self, after: Option<UserId>, limit: usize) -> Result<Vec<User>, StoreError> {
        self.read("list_users", move |txn| {
            let users = txn.open_table(tables::USERS)?;
            let start = after.map_or(std::ops::Bound::Unbounded, |a| std::ops::Bound::Excluded(a.0));
            let range = users.range::<u64>((start, std::ops::Bound::Unbounded))?;
            range
                .take(limit)
                .map(|entry| tables::decode(entry?.1.value(), "a user"))
                .collect()
        })
        .await
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let session = session.clone();
        self.submit(false, move |t| t.insert_session(session)).await
    }

    async fn session(&self, token_hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        let hash = *token_hash;
        self.read("session", move |txn| {
            let bytes = txn.open_table(tables::SESSIONS)?.get(&hash.0[..])?;
            bytes.map(|b| tables::decode(b.value(), "a session")).transpose()
        })
        .await
    }

    async fn delete_session(&self, token_hash: &TokenHash) -> Result<bool, StoreError> {
        let hash = *token_hash;
        self.submit(false, move |t| t.delete_session(&hash)).await
    }

    async fn delete_user_sessions(&self, user: UserId) -> Result<usize, StoreError> {
        self.submit(false, move |t| t.delete_user_sessions(user)).await
    }

    async fn purge_expired_sessions(&self, now: UnixMillis) -> Result<usize, StoreError> {
        self.submit(false, move |t| t.purge_expired_sessions(now)).await
    }
}

#[async_trait]
impl ConversationStore for EmbeddedStore {
    async fn create_conversation(&self, new: NewConversation) -> Result<Conversation, StoreError> {
        self.submit(false, move |t| t.create_conversation(new)).await
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError> {
        self.read("conversation", move |txn| {
            let bytes = txn.open_table(tables::CONVERSATIONS)?.get(id.0)?;
            bytes.map(|b| tables::decode(b.value(), "a conversation")).transpose()
        })
        .await
    }

    async fn members(&self, id: ConversationId) -> Result<Vec<Member>, StoreError> {
        self.read("members", move |txn| {
            tables::members(&txn.open_table(tables::MEMBERS)?, id)
        })
        .await
    }

    async fn conversations_of(&self, user: UserId) -> Result<Vec<ConversationId>, StoreError> {
        self.read("conversations_of", move |txn| {
            tables::conversations_of(&txn.open_table(tables::USER_CONVERSATIONS)?, user)
        })
        .await
    }

    async fn receipts(&self, id: ConversationId) -> Result<Vec<(UserId, Receipt)>, StoreError> {
        self.read("receipts", move |txn| {
            tables::receipts(&txn.open_table(tables::RECEIPTS)?, id)
        })
        .await
    }

    async fn save_receipt(&self, id: ConversationId, user: UserId, receipt: Receipt) -> Result<(), StoreError> {
        self.submit(false, move |t| t.save_receipt(id, user, receipt)).await
    }
}

#[async_trait]
impl MessageStore for EmbeddedStore {
    fn append(&self, op: AppendOp) -> AppendTicket {
        Box::pin(self.submit::<(), AppendError, _>(false, move |t| t.append(op)))
    }

    async fn last_seq(&self, id: ConversationId) -> Result<Seq, StoreError> {
        self.read("last_seq", move |txn| {
            tables::last_seq(&txn.open_table(tables::EVENTS)?, id)
        })
        .await
    }

    async fn find_client_msg(
        &self,
        id: ConversationId,
        sender: UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Seq>, StoreError> {
        let client_msg_id = client_msg_id.clone();
        self.read("find_client_msg", move |txn| {
            let client_msgs = txn.open_table(tables::CLIENT_MSGS)?;
            tables::find_client_msg(&client_msgs, id, sender, &client_msg_id)
        })
        .await
    }

    async fn event(&self, id: ConversationId, seq: Seq) -> Result<Option<Event>, StoreError> {
        self.read("event", move |txn| {
            tables::event(&txn.open_table(tables::EVENTS)?, id, seq)
        })
        .await
    }

    async fn page(&self, id: ConversationId, request: PageRequest) -> Result<Vec<Event>, StoreError> {
        self.read("page", move |txn| {
            tables::page(&txn.open_table(tables::EVENTS)?, id, request)
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.submit(true, |_| Ok(Ok(()))).await
    }
}
