//! Roost's domain engine: conversations, sequencing, delivery and storage.
//!
//! - [`ids`], [`model`]: identifiers and durable records.
//! - [`store`]: the store traits (the only I/O seam), the in-memory and embedded (redb)
//!   implementations, and the conformance suite every implementation passes.
//! - [`conversation`]: one `ConversationActor` per active conversation sequences, de-duplicates,
//!   persists and fans out; `ConversationRegistry` spawns and stops them behind [`placement`].
//! - [`delivery`]: the `SessionHub` that knows which connections each user has on this node.
//! - [`presence`]: the presence directory (who is online on which node, last seen) and shared
//!   rate-limit counters: in process (`LocalPresence`) or in Redis (`RedisPresence`, feature
//!   `redis`).
//!
//! Architecture invariant: this crate knows nothing of HTTP, JSON or openraft. Outgoing events
//! are turned into bytes by an [`delivery::EventEncoder`] that the API layer provides, once per
//! event, and the bytes are shared by every recipient.

pub mod clock;
pub mod config;
pub mod conversation;
pub mod delivery;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod model;
pub mod placement;
pub mod presence;
pub mod remote;
pub mod service;
pub mod store;

pub use config::EngineConfig;
pub use error::ConversationError;
pub use service::Engine;
