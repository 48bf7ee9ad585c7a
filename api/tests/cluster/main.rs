//! Cluster tests: three (or more) real `roost` processes forming one cluster over mutually
//! authenticated TLS, on one Cassandra keyspace and one Redis, with clients spread over the nodes.
//! Each test forms its own cluster (fresh keyspace, fresh Redis key prefix, fresh certificates).
//!
//! - `multi_node`: users on different nodes chat 1:1 and in a group; every member gets every event
//!   once, in order; a member moving to another node resyncs without a gap.
//! - `failover`: under continuous load, the owner of busy conversations and then the Raft leader
//!   are killed with SIGKILL and restarted; nothing acknowledged is lost or duplicated, and the
//!   unavailability per failover is measured.
//! - `partition`: a node cut off from its peers (network namespaces, blackhole routes) for 10 s
//!   while clients keep sending; after healing, the same checks.
//! - `scale_out`: one node grows to three under load and shrinks to two with `roost cluster
//!   remove`; clients only see reconnects (close 1001) and resyncs.
//!
//! The shared pieces: `harness` (processes, certificates, configuration, status), `netns`
//! (namespaces and TCP relays), `traffic` (clients that retry and reconnect, and log everything
//! they see) and `checker` (the history checks, unit-tested on deliberately broken histories).

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../e2e/common.rs"]
mod common;

mod checker;
mod harness;
mod netns;
mod traffic;

mod failover;
mod multi_node;
mod partition;
mod scale_out;
