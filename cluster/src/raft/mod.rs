//! The Raft-replicated control plane: type configuration, commands, state machine and storage.
//!
//! Every node runs one openraft 0.9 instance ([`ControlRaft`]) over the same small state:
//! members, the shard map and cluster settings ([`state_machine::ControlState`]). Nothing a user
//! writes goes through Raft; messages live in the data store. The leader is the only node that
//! plans rebalancing and proposes [`command::ControlCommand`]s; every node applies the committed
//! commands in the same order, and publishes the resulting shard map to its `RaftPlacement`.
//!
//! - [`command`]: the application requests and responses carried in the log.
//! - [`state_machine`]: the pure `apply` and the `RaftStateMachine` adapter with snapshots.
//! - [`log_store`]: the `RaftLogStorage` (log, vote, committed, purge) on redb.
//! - [`open_storage`]: one redb file per node (`raft.redb` in the data directory) holding the log,
//!   the vote and the latest snapshot. The state machine itself lives in memory: on start it is
//!   restored from the persisted snapshot and openraft re-applies the committed log after it.
//!
//! Encoding: values inside redb are one format-version byte followed by postcard (see [`codec`]).
//! postcard because the engine's embedded store already uses it (one encoding to know), it is
//! compact and fast, and it needs no schema compiler. It is not self-describing, so the version
//! byte is there to migrate explicitly rather than misread: new `ControlCommand` variants are
//! appended at the end (postcard numbers variants by position), and a changed record shape bumps
//! the version. serde_json would have been readable in a hex dump, but the log is read by code,
//! not people, and `roost cluster status` will show the decoded state.
//!
//! Architecture invariant: this crate is the only one that depends on openraft. Engine types
//! cross into it only as ids (`NodeId`, `ConversationId`) and leave it only through
//! `roost_engine::placement::Placement`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use redb::Database;
use serde::Deserialize;
use serde::Serialize;

pub mod codec;
pub mod command;
pub mod log_store;
pub mod state_machine;

pub use codec::RaftStoreError;
use command::ControlCommand;
use command::ControlResponse;
use log_store::LogStore;
use state_machine::StateMachineStore;

openraft::declare_raft_types!(
    /// openraft's type configuration for Roost's control plane.
    pub TypeConfig:
        D = ControlCommand,
        R = ControlResponse,
        NodeId = RaftNodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// openraft's node id: the raw value of the engine's `NodeId`. Ids start at 1; 0 is reserved
/// (it means "no owner" in placement answers).
pub type RaftNodeId = u64;

/// A running Raft instance of the control plane.
pub type ControlRaft = openraft::Raft<TypeConfig>;

/// A log entry of the control plane.
pub type ControlEntry = openraft::Entry<TypeConfig>;

/// Where to reach a node: carried in openraft's membership (the transport dials `peer_addr`) and
/// in the control plane's member table (clients are redirected to `client_addr`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Node {
    /// The internal listener: Raft RPCs and node-to-node actor traffic, e.g. `10.0.0.5:7070`.
    pub peer_addr: String,
    /// The public listener clients connect to, e.g. `chat-2.example.com:443`.
    pub client_addr: String,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}, clients {}", self.peer_addr, self.client_addr)
    }
}

/// Opens (or creates) the node's Raft storage at `path`, one redb file, and returns the log store
/// and the state machine restored from the latest persisted snapshot.
///
/// Blocking: call it before starting the runtime or on a blocking thread. A file can be open only
/// once per process (redb locks it).
pub fn open_storage(path: &Path) -> Result<(LogStore, StateMachineStore), RaftStoreError> {
    let db = Arc::new(Database::create(path)?);
    codec::create_tables(&db)?;
    let state_machine = StateMachineStore::load(Arc::clone(&db))?;
    Ok((LogStore::new(db), state_machine))
}
