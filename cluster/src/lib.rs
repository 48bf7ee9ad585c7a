//! Roost's cluster control plane: which node owns which conversation, agreed through Raft.
//!
//! A Roost cluster is a set of nodes that all reach the same data store. Every conversation is
//! sequenced by exactly one conversation actor, on the node that owns the conversation's shard.
//! This crate decides and publishes that ownership:
//!
//! ```text
//! conversation --shard_of (fixed hash)--> ShardId --ShardMap (Raft state)--> owner NodeId, epoch
//!                                                      ^
//!       leader: rebalance::plan(map, members) -> moves, fenced by epoch -> ControlCommand::ApplyMoves
//!                                                      |
//!       every node: state machine applies the committed log -> publishes Arc<ShardMap> -> RaftPlacement
//! ```
//!
//! - [`shard`]: `ShardId`, the frozen `shard_of` hash, and `ShardMap` (owner and epoch per shard).
//! - [`member`]: members and their status (active, leaving, dead) as the planner sees them.
//! - [`rebalance`]: the pure planner: balanced, minimal and deterministic moves.
//! - [`raft`]: the openraft 0.9 type configuration, the commands, the state machine (a pure
//!   `apply` plus the openraft adapter with snapshots) and the redb-backed log storage.
//! - [`placement`]: `RaftPlacement`, the engine's `Placement` answered from the published map
//!   and, on a running node, the node's lease.
//! - [`node`]: `ClusterNode`, a running member on its own tokio runtime: Raft over the peer
//!   transport, the control RPCs (join, lease renewal, release, leave), the node's lease and the
//!   leader loop (failure detection, voters, rebalancing with graceful handover, removal).
//! - [`transport`]: the mutually authenticated TLS links between nodes and their framing.
//! - [`routing`]: the engine's `RemoteNodes`: forwarding commands to owners, one delivery
//!   envelope per node, and the directory of which users are connected where.
//! - [`certs`]: the cluster CA and node certificates (`roost cluster certs`).
//! - [`config`]: the cluster settings in the node configuration (`ClusterConfig`).
//!
//! **The control plane** is the Raft state: members, the shard map and cluster-wide settings. It
//! is small (kilobytes) and changes rarely (joins, leaves, failures, rebalancing). User data never
//! goes through Raft; it stays in the data store. The Raft leader is the only node that plans
//! moves; all nodes apply the same committed commands and so agree on every shard's owner and
//! epoch.
//!
//! **Fencing.** A node that lost a shard must stop assigning seqs before the new owner starts.
//! Each shard's epoch, bumped by every ownership change and checked by `ApplyMoves`, is the
//! fencing token; the lease and handover protocol that use it, with their assumptions, are
//! written out in ARCHITECTURE.md ("Fencing across ownership changes").
//!
//! The operator commands (`roost cluster ...`) and the multi-process tests live in the API crate
//! (`api/src/cluster/`, `api/tests/cluster/`).
//!
//! Architecture invariant: this is the only crate that depends on openraft. It uses the engine
//! only through its seams: ids, `Placement`, `RemoteNodes` and the `Engine` handle routing
//! delivers into.

pub mod certs;
pub mod config;
pub mod member;
pub mod node;
pub mod placement;
pub mod raft;
pub mod rebalance;
pub mod routing;
pub mod shard;
pub mod transport;

pub use config::ClusterConfig;
pub use member::MemberState;
pub use member::MemberStatus;
pub use placement::RaftPlacement;
pub use rebalance::plan;
pub use rebalance::Move;
pub use shard::shard_of;
pub use shard::ShardAssignment;
pub use shard::ShardId;
pub use shard::ShardMap;
