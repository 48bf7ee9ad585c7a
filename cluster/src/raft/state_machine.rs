//! The control plane's state machine: a pure [`apply`] and the openraft adapter around it.
//!
//! [`ControlState`] (members, shard map, settings) is changed only by [`apply`], a deterministic
//! function of the state and one committed [`ControlCommand`]; it is unit-tested without Raft
//! (`tests/t30_state_machine.rs`). [`StateMachineStore`] is openraft's `RaftStateMachine`: it owns
//! the state in memory, applies committed entries, builds and installs snapshots, and publishes
//! the shard map to [`StateMachineStore::subscribe`] whenever it changes.
//!
//! Durability: the state is not written on every apply. The latest snapshot is persisted in redb
//! (fsync'd) and restored on open; openraft then re-applies the committed log after it. openraft
//! purges the log only up to a snapshot it has built, and a snapshot is durable before
//! `build_snapshot` returns, so nothing committed is ever only in memory and purged.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StorageIOError;
use openraft::StoredMembership;
use redb::Database;
use redb::ReadableDatabase;
use redb::ReadableTable;
use roost_engine::ids::NodeId;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use super::codec;
use super::codec::RaftStoreError;
use super::command::ControlCommand;
use super::command::ControlResponse;
use super::command::FencedMove;
use super::command::MoveOutcome;
use super::command::Rejection;
use super::command::MAX_SETTING_KEY_BYTES;
use super::command::MAX_SETTING_VALUE_BYTES;
use super::ControlEntry;
use super::Node;
use super::RaftNodeId;
use super::TypeConfig;
use crate::member::MemberState;
use crate::member::MemberStatus;
use crate::shard::ShardId;
use crate::shard::ShardMap;

/// A member of the cluster: where to reach it and where it is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: Node,
    pub status: MemberStatus,
}

/// Everything the control plane agrees on. The snapshot is this value, encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    pub members: BTreeMap<NodeId, Member>,
    /// Empty until `CreateShardMap`.
    pub shards: ShardMap,
    pub settings: BTreeMap<String, String>,
}

impl ControlState {
    /// The members as the rebalancing planner takes them, in node-id order.
    pub fn member_states(&self) -> Vec<MemberState> {
        self.members
            .iter()
            .map(|(&id, member)| MemberState::new(id, member.status))
            .collect()
    }

    fn is_active(&self, id: NodeId) -> bool {
        self.members
            .get(&id)
            .is_some_and(|member| member.status == MemberStatus::Active)
    }
}

/// Applies one committed command. Deterministic: no clock, no randomness, no I/O, and iteration
/// only over ordered maps, so every node computes the same state from the same log.
pub fn apply(state: &mut ControlState, command: ControlCommand) -> ControlResponse {
    let rejected = |reason| ControlResponse::Rejected { reason };
    match command {
        ControlCommand::CreateShardMap { shard_count } => {
            let existing = state.shards.shard_count();
            if existing == shard_count && existing != 0 {
                return ControlResponse::Done;
            }
            if existing != 0 {
                return rejected(Rejection::ShardMapExists { shard_count: existing });
            }
            match ShardMap::new(shard_count) {
                Ok(map) => {
                    state.shards = map;
                    ControlResponse::Done
                }
                Err(_) => rejected(Rejection::InvalidShardCount { shard_count }),
            }
        }
        ControlCommand::AddMember { id, node } => {
            if id.0 == 0 {
                return rejected(Rejection::ReservedNodeId);
            }
            state.members.insert(
                id,
                Member {
                    node,
                    status: MemberStatus::Active,
                },
            );
            ControlResponse::Done
        }
        ControlCommand::MarkLeaving { id } => match state.members.get_mut(&id) {
            None => rejected(Rejection::UnknownMember { id }),
            Some(member) if member.status == MemberStatus::Dead => rejected(Rejection::MemberIsDead { id }),
            Some(member) => {
                member.status = MemberStatus::Leaving;
                ControlResponse::Done
            }
        },
        ControlCommand::MarkDead { id } => match state.members.get_mut(&id) {
            None => rejected(Rejection::UnknownMember { id }),
            Some(member) => {
                member.status = MemberStatus::Dead;
                ControlResponse::Done
            }
        },
        ControlCommand::Remove { id } => {
            let shards = state.shards.owned_by(id).len() as u32;
            if shards > 0 {
                return rejected(Rejection::StillOwnsShards { id, shards });
            }
            state.members.remove(&id);
            ControlResponse::Done
        }
        ControlCommand::ApplyMoves { moves } => {
            let outcomes = moves.into_iter().map(|fenced| apply_move(state, fenced)).collect();
            ControlResponse::MovesApplied { outcomes }
        }
        ControlCommand::SetSetting { key, value } => {
            if key.is_empty() || key.len() > MAX_SETTING_KEY_BYTES || value.len() > MAX_SETTING_VALUE_BYTES {
                return rejected(Rejection::InvalidSetting);
            }
            let previous = state.settings.insert(key, value);
            ControlResponse::SettingSet { previous }
        }
        ControlCommand::Reclaim { shard, expected_epoch } => ControlResponse::MovesApplied {
            outcomes: vec![reclaim(state, shard, expected_epoch)],
        },
    }
}

fn reclaim(state: &mut ControlState, shard: ShardId, expected_epoch: u64) -> MoveOutcome {
    let Some(current) = state.shards.get(shard).copied() else {
        return MoveOutcome::UnknownShard { shard };
    };
    if current.epoch != expected_epoch {
        return MoveOutcome::StaleEpoch {
            shard,
            expected: expected_epoch,
            actual: current.epoch,
        };
    }
    match state.shards.bump_epoch(shard) {
        Some(epoch) => MoveOutcome::Applied { shard, epoch },
        None => MoveOutcome::UnknownShard { shard },
    }
}

fn apply_move(state: &mut ControlState, fenced: FencedMove) -> MoveOutcome {
    let shard = fenced.planned.shard;
    let Some(current) = state.shards.get(shard).copied() else {
        return MoveOutcome::UnknownShard { shard };
    };
    if current.epoch != fenced.expected_epoch {
        return MoveOutcome::StaleEpoch {
            shard,
            expected: fenced.expected_epoch,
            actual: current.epoch,
        };
    }
    if current.owner != fenced.planned.from {
        return MoveOutcome::OwnerMismatch {
            shard,
            expected: fenced.planned.from,
            actual: current.owner,
        };
    }
    if !state.is_active(fenced.planned.to) {
        return MoveOutcome::TargetNotActive {
            shard,
            to: fenced.planned.to,
        };
    }
    match state.shards.set_owner(shard, Some(fenced.planned.to)) {
        Some(epoch) => MoveOutcome::Applied { shard, epoch },
        None => MoveOutcome::UnknownShard { shard },
    }
}

/// What the state machine has applied: the control state and openraft's bookkeeping.
#[derive(Clone, Debug, Default)]
struct Applied {
    last_applied: Option<LogId<RaftNodeId>>,
    last_membership: StoredMembership<RaftNodeId, Node>,
    control: ControlState,
}

/// A snapshot as persisted: openraft's metadata and the encoded [`ControlState`].
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftNodeId, Node>,
    data: Vec<u8>,
}

/// openraft's `RaftStateMachine` for the control plane. Owns the [`ControlState`]; others read the
/// shard map through [`StateMachineStore::subscribe`].
pub struct StateMachineStore {
    db: Arc<Database>,
    applied: Applied,
    shard_map_tx: watch::Sender<Arc<ShardMap>>,
    state_tx: watch::Sender<Arc<ControlState>>,
}

impl StateMachineStore {
    /// Restores the state from the persisted snapshot, if any (blocking).
    pub(crate) fn load(db: Arc<Database>) -> Result<Self, RaftStoreError> {
        let mut applied = Applied::default();
        if let Some(stored) = read_snapshot(&db)? {
            applied = Applied {
                last_applied: stored.meta.last_log_id,
                last_membership: stored.meta.last_membership,
                control: codec::decode(&stored.data)?,
            };
        }
        let (shard_map_tx, _) = watch::channel(Arc::new(applied.control.shards.clone()));
        let (state_tx, _) = watch::channel(Arc::new(applied.control.clone()));
        Ok(Self {
            db,
            applied,
            shard_map_tx,
            state_tx,
        })
    }

    /// A receiver of the shard map, updated after every applied change. Take it before handing
    /// the state machine to `Raft::new`.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ShardMap>> {
        self.shard_map_tx.subscribe()
    }

    /// A receiver of the whole control state (members, map, settings), updated after every
    /// applied change. The leader's planner and `status` read it.
    pub fn subscribe_state(&self) -> watch::Receiver<Arc<ControlState>> {
        self.state_tx.subscribe()
    }

    /// The state applied so far.
    pub fn state(&self) -> &ControlState {
        &self.applied.control
    }

    fn publish(&self) {
        let shards = &self.applied.control.shards;
        self.shard_map_tx.send_if_modified(|published| {
            let changed = **published != *shards;
            if changed {
                *published = Arc::new(shards.clone());
            }
            changed
        });
        let control = &self.applied.control;
        self.state_tx.send_if_modified(|published| {
            let changed = **published != *control;
            if changed {
                *published = Arc::new(control.clone());
            }
            changed
        });
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = ControlSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftNodeId>>, StoredMembership<RaftNodeId, Node>), StorageError<RaftNodeId>> {
        Ok((self.applied.last_applied, self.applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ControlResponse>, StorageError<RaftNodeId>>
    where
        I: IntoIterator<Item = ControlEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            self.applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => ControlResponse::Empty,
                EntryPayload::Normal(command) => apply(&mut self.applied.control, command),
                EntryPayload::Membership(membership) => {
                    self.applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    ControlResponse::Empty
                }
            };
            responses.push(response);
        }
        self.publish();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ControlSnapshotBuilder {
            db: Arc::clone(&self.db),
            applied: self.applied.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<RaftNodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftNodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<RaftNodeId>> {
        let data = snapshot.into_inner();
        let io_error = |error: RaftStoreError| StorageIOError::read_snapshot(Some(meta.signature()), &error);
        let control: ControlState = codec::decode(&data).map_err(io_error)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let db = Arc::clone(&self.db);
        codec::blocking(move || persist_snapshot(&db, &stored))
            .await
            .map_err(io_error)?;
        self.applied = Applied {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            control,
        };
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<RaftNodeId>> {
        let db = Arc::clone(&self.db);
        let stored = codec::blocking(move || read_snapshot(&db))
            .await
            .map_err(|error| StorageIOError::read_snapshot(None, &error))?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// Builds a snapshot of the state as it was when openraft asked for the builder, and persists it.
pub struct ControlSnapshotBuilder {
    db: Arc<Database>,
    applied: Applied,
}

impl RaftSnapshotBuilder<TypeConfig> for ControlSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<RaftNodeId>> {
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.last_membership.clone(),
            snapshot_id: snapshot_id(self.applied.last_applied),
        };
        let io_error = |error: RaftStoreError| StorageIOError::write_snapshot(Some(meta.signature()), &error);
        let data = codec::encode(&self.applied.control).map_err(io_error)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let db = Arc::clone(&self.db);
        codec::blocking(move || persist_snapshot(&db, &stored))
            .await
            .map_err(io_error)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// The state machine is deterministic, so two snapshots at the same log id hold the same bytes and
/// may share an id.
fn snapshot_id(last_applied: Option<LogId<RaftNodeId>>) -> String {
    match last_applied {
        Some(log_id) => format!(
            "{}-{}-{}",
            log_id.leader_id.term, log_id.leader_id.node_id, log_id.index
        ),
        None => "empty".to_owned(),
    }
}

fn read_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, RaftStoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(codec::SNAPSHOT)?;
    let stored = table.get(codec::KEY_CURRENT_SNAPSHOT)?;
    stored.map(|bytes| codec::decode(bytes.value())).transpose()
}

/// Stores `snapshot` unless a newer one is already stored (a slow builder finishing after an
/// install must not roll the snapshot back). Durable when it returns.
fn persist_snapshot(db: &Database, snapshot: &StoredSnapshot) -> Result<(), RaftStoreError> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(codec::SNAPSHOT)?;
        let current: Option<StoredSnapshot> = table
            .get(codec::KEY_CURRENT_SNAPSHOT)?
            .map(|bytes| codec::decode(bytes.value()))
            .transpose()?;
        if current.is_some_and(|current| current.meta.last_log_id > snapshot.meta.last_log_id) {
            return Ok(());
        }
        table.insert(codec::KEY_CURRENT_SNAPSHOT, codec::encode(snapshot)?.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}
