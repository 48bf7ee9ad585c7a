//! How the Raft storage lays out and encodes its data in redb.
//!
//! Tables (one redb file per node):
//!
//! | table | key | value |
//! |---|---|---|
//! | `raft_log` | log index | an `Entry<TypeConfig>` |
//! | `raft_meta` | `"vote"`, `"committed"`, `"last_purged"` | a `Vote` / `LogId` |
//! | `raft_snapshot` | `"current"` | the latest snapshot: its meta and the encoded `ControlState` |
//!
//! Every value is [`FORMAT_VERSION`] followed by the postcard encoding of the value (the choice
//! is justified in the `raft` module docs). A value with another version byte is refused as
//! [`RaftStoreError::Format`] rather than misread.

use redb::Database;
use redb::TableDefinition;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";
pub(crate) const KEY_CURRENT_SNAPSHOT: &str = "current";

/// The first byte of every stored value.
pub const FORMAT_VERSION: u8 = 1;

/// Why the Raft storage could not be read or written. Inside openraft's traits it is wrapped in
/// a `StorageError`, which stops the Raft node (storage failures are fatal to Raft).
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("raft storage: {0}")]
    Redb(#[from] redb::Error),
    #[error("raft storage: cannot encode or decode a value: {0}")]
    Codec(#[from] postcard::Error),
    #[error("raft storage: unsupported format version {found} (this build reads {FORMAT_VERSION}); was the file written by a newer roost?")]
    Format { found: u8 },
    #[error("raft storage: the blocking storage task failed: {0}")]
    Task(String),
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for RaftStoreError {
            fn from(error: $error) -> Self {
                RaftStoreError::Redb(redb::Error::from(error))
            }
        }
    )*};
}

from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RaftStoreError> {
    Ok(postcard::to_extend(value, vec![FORMAT_VERSION])?)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RaftStoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&found, _)) => Err(RaftStoreError::Format { found }),
        None => Err(RaftStoreError::Codec(postcard::Error::DeserializeUnexpectedEnd)),
    }
}

/// Creates the tables if missing, so that read transactions can always open them.
pub(crate) fn create_tables(db: &Database) -> Result<(), RaftStoreError> {
    let txn = db.begin_write()?;
    txn.open_table(LOG)?;
    txn.open_table(META)?;
    txn.open_table(SNAPSHOT)?;
    txn.commit()?;
    Ok(())
}

/// Runs redb work on tokio's blocking pool: commits fsync, and openraft calls storage from its
/// core task, which must not block.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, RaftStoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RaftStoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| RaftStoreError::Task(error.to_string()))?
}
