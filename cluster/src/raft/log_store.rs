//! openraft's `RaftLogStorage` on redb: log entries, the vote, the committed id and purging.
//!
//! Durability: every write is one redb write transaction committed with redb's default
//! `Durability::Immediate`, which fsyncs before `commit` returns. So appended entries are on disk
//! before openraft's `LogFlushed` callback is called, and a vote is on disk before `save_vote`
//! returns, as Raft requires (a node must never forget a vote or an acknowledged entry).
//! The committed log id is the one exception: it is written with `Durability::None` and reaches
//! the disk with the next durable commit. openraft treats it as a hint (it lets a restarted node
//! re-apply its own committed entries before hearing from a leader); losing the latest value only
//! means re-learning it from the leader.
//!
//! All redb work runs on tokio's blocking pool (see `codec::blocking`), because commits fsync and
//! openraft calls the log store from its core task.

use std::fmt::Debug;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogId;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::StorageError;
use openraft::StorageIOError;
use openraft::Vote;
use redb::Database;
use redb::Durability;
use redb::ReadableDatabase;
use redb::ReadableTable;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec;
use super::codec::RaftStoreError;
use super::ControlEntry;
use super::RaftNodeId;
use super::TypeConfig;

type Result<T> = std::result::Result<T, StorageError<RaftNodeId>>;

/// The Raft log of one node. Cloning shares the database: clones are the log readers openraft
/// hands to its replication tasks.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    async fn read_meta<T>(&self, key: &'static str) -> std::result::Result<Option<T>, RaftStoreError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        codec::blocking(move || {
            let txn = db.begin_read()?;
            let table = txn.open_table(codec::META)?;
            let value = table.get(key)?;
            value.map(|bytes| codec::decode(bytes.value())).transpose()
        })
        .await
    }

    async fn write_meta<T>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> std::result::Result<(), RaftStoreError>
    where
        T: Serialize,
    {
        let bytes = codec::encode(value)?;
        let db = Arc::clone(&self.db);
        codec::blocking(move || {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            txn.open_table(codec::META)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<ControlEntry>> {
        let bounds: (Bound<u64>, Bound<u64>) = (range.start_bound().cloned(), range.end_bound().cloned());
        let db = Arc::clone(&self.db);
        codec::blocking(move || {
            let txn = db.begin_read()?;
            let table = txn.open_table(codec::LOG)?;
            let mut entries = Vec::new();
            for row in table.range(bounds)? {
                let (_, bytes) = row?;
                entries.push(codec::decode(bytes.value())?);
            }
            Ok(entries)
        })
        .await
        .map_err(|error| StorageIOError::read_logs(&error).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let db = Arc::clone(&self.db);
        let (last_purged_log_id, last_entry) = codec::blocking(move || {
            let txn = db.begin_read()?;
            let meta = txn.open_table(codec::META)?;
            let last_purged: Option<LogId<RaftNodeId>> = meta
                .get(codec::KEY_LAST_PURGED)?
                .map(|bytes| codec::decode(bytes.value()))
                .transpose()?;
            let log = txn.open_table(codec::LOG)?;
            let last_entry: Option<ControlEntry> =
                log.last()?.map(|(_, bytes)| codec::decode(bytes.value())).transpose()?;
            Ok((last_purged, last_entry))
        })
        .await
        .map_err(|error| StorageIOError::read_logs(&error))?;
        let last_log_id = last_entry.map(|entry| entry.log_id).or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> Result<()> {
        self.write_meta(codec::KEY_VOTE, vote, Durability::Immediate)
            .await
            .map_err(|error| StorageIOError::write_vote(&error).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftNodeId>>> {
        self.read_meta(codec::KEY_VOTE)
            .await
            .map_err(|error| StorageIOError::read_vote(&error).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftNodeId>>) -> Result<()> {
        self.write_meta(codec::KEY_COMMITTED, &committed, Durability::None)
            .await
            .map_err(|error| StorageIOError::write(&error).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftNodeId>>> {
        let committed: Option<Option<LogId<RaftNodeId>>> = self
            .read_meta(codec::KEY_COMMITTED)
            .await
            .map_err(|error| StorageIOError::read(&error))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = ControlEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|entry| Ok((entry.log_id.index, codec::encode(&entry)?)))
            .collect::<std::result::Result<Vec<_>, RaftStoreError>>()
            .map_err(|error| StorageIOError::write_logs(&error))?;
        let db = Arc::clone(&self.db);
        let written = codec::blocking(move || {
            let txn = db.begin_write()?;
            {
                let mut log = txn.open_table(codec::LOG)?;
                for (index, bytes) in &encoded {
                    log.insert(index, bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(StorageIOError::write_logs(&error).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftNodeId>) -> Result<()> {
        let db = Arc::clone(&self.db);
        codec::blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(codec::LOG)?.retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|error| StorageIOError::write_logs(&error).into())
    }

    async fn purge(&mut self, log_id: LogId<RaftNodeId>) -> Result<()> {
        let bytes = codec::encode(&log_id).map_err(|error| StorageIOError::write_logs(&error))?;
        let db = Arc::clone(&self.db);
        codec::blocking(move || {
            let txn = db.begin_write()?;
            // The mark and the deletion commit together: after a crash, either both happened or
            // neither did.
            txn.open_table(codec::META)?
                .insert(codec::KEY_LAST_PURGED, bytes.as_slice())?;
            txn.open_table(codec::LOG)?.retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|error| StorageIOError::write_logs(&error).into())
    }
}
