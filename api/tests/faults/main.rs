//! Fault tests: the real `roost` binary while a backing server fails under it. Each test runs its
//! own Cassandra or Redis (other ports and state directories than the shared ones the other
//! suites use), started and stopped with the project's scripts (`scripts/cassandra.sh`,
//! `scripts/redis.sh`, which install Java/Maven and redis-server when missing).
//!
//! - `cassandra_outage`: Cassandra stopped in the middle of a send burst, then started again.
//! - `redis_outage`: Redis killed (SIGKILL) and restarted during a chat.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../e2e/common.rs"]
mod common;

mod cassandra_outage;
mod redis_outage;
mod servers;
