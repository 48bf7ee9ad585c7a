//! Roost's client-facing API: REST and WebSocket over actix-web, authentication, configuration,
//! and the composition of a node (`server`).
//!
//! - [`wire`]: the versioned JSON wire format (API boundary: the only types clients see).
//! - [`error`]: the one mapping from engine/auth errors to stable error codes.
//! - [`auth`]: passwords (argon2id), opaque session tokens, WebSocket tickets, login throttling.
//! - [`http`]: REST handlers by resource, plus health and metrics.
//! - [`ws`]: the WebSocket session actor (the only module that uses actix-web-actors).
//! - [`config`], [`server`], [`tls`], [`telemetry`]: running a node.
//! - [`cluster`]: this node's place in a cluster (the glue around `roost-cluster`), and the
//!   `roost cluster` operator commands.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod encoder;
pub mod error;
pub mod http;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod wire;
pub mod ws;
