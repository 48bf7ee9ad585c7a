//! The store backend benchmark (`store_bench`): append throughput and history-page latency of a
//! [`Store`](roost_engine::store::Store), measured through the store traits only, so the embedded
//! (redb) and the ScyllaDB/Cassandra backends run exactly the same workload.
//!
//! - `workload`: the generated messages, the pipelined append driver and the page readers;
//! - `stats`: HDR latency histograms and their summaries;
//! - `commits`: a `metrics` recorder that counts the stores' group commits (batch sizes);
//! - `machine`: CPU, cores, kernel, memory and load average of the machine;
//! - `report`: the result, as Markdown and JSON.

pub mod commits;
pub mod machine;
pub mod report;
pub mod stats;
pub mod workload;
