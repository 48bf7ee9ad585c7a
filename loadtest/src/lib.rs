//! roost-loadtest: an open-loop load generator and correctness checker for Roost.
//!
//! A run provisions users and conversations over REST (`provision`), ramps up one WebSocket
//! connection per virtual user (`user`, `conn`), sends on a fixed schedule (`schedule`) while
//! measuring connect, ack and delivery latency from planned times into HDR histograms (`stats`),
//! then drains, pages every conversation's history (`history`) and reconciles it with what was
//! acknowledged and delivered (`checker`, `tracker`). Against a cluster, users and history reads
//! move to the next target when a node fails (`failover`). `runner` orchestrates the phases;
//! `summary` and `report` write summary.json and report.html. The binary (`main.rs`) is the
//! command line around `runner::run`.

pub mod checker;
pub mod clock;
pub mod config;
pub mod conn;
pub mod env_info;
pub mod failover;
pub mod history;
pub mod http;
pub mod plan;
pub mod pool;
pub mod progress;
pub mod provision;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod scrape;
pub mod stats;
pub mod summary;
pub mod svg;
pub mod target;
pub mod threshold;
pub mod tracker;
pub mod user;
pub mod wire;
