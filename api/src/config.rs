//! NodeConfig: everything an operator configures, in one TOML file.
//!
//! Layers, later wins: built-in defaults < TOML file (`--config`) < environment
//! (`ROOST__SECTION__KEY=value`, `__` splits nesting) < command-line flags. Unknown keys are
//! rejected with the key's name. The doc comment on each field is the operator documentation and
//! is what `roost genconfig` writes as comments.

use std::net::SocketAddr;
use std::path::PathBuf;

use roost_engine::store::embedded::DurabilityMode;
use roost_engine::EngineConfig;
use serde::Deserialize;
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub engine: EngineConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the public listener (REST + WebSocket).
    pub listen: SocketAddr,
    /// Optional internal listener for /healthz, /readyz and /metrics (and, later, cluster
    /// traffic). When unset, they are served on the public listener.
    pub internal_listen: Option<SocketAddr>,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Conversation actor event loops; 0 means one per CPU core.
    pub engine_workers: usize,
    /// Browser origins allowed to open WebSockets (exact match, e.g. "https://chat.example.com").
    /// Requests without an Origin header (native clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Serve HTTPS/WSS with this certificate chain and key (PEM files). Both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Seconds between server pings on a WebSocket.
    pub heartbeat_secs: u64,
    /// A WebSocket with no traffic from the client for this long is closed.
    pub client_timeout_secs: u64,
    /// On SIGTERM: seconds to let clients reconnect elsewhere and requests finish.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            internal_listen: None,
            workers: 0,
            engine_workers: 0,
            allowed_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            heartbeat_secs: 30,
            client_timeout_secs: 75,
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageBackend {
    /// Single node, embedded store in `data_dir`; nothing else to install.
    #[default]
    Embedded,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Directory of the embedded store (created if missing).
    pub data_dir: PathBuf,
    /// `immediate`: every acknowledged write is fsync'd (group commit batches them).
    /// `relaxed`: writes are fsync'd at least every `relaxed_flush_interval_ms`; an ack then
    /// survives a process crash but not a power loss.
    pub durability: DurabilityMode,
    /// Most writes in one group commit.
    pub max_batch: usize,
    /// Relaxed mode only: longest time between fsyncs.
    pub relaxed_flush_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Embedded,
            data_dir: PathBuf::from("./roost-data"),
            durability: DurabilityMode::default(),
            max_batch: 512,
            relaxed_flush_interval_ms: 50,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Let anyone create an account with POST /v1/auth/register.
    pub registration_open: bool,
    /// Lifetime of a login session token, in hours.
    pub session_ttl_hours: u64,
    /// Lifetime of a WebSocket ticket (for browsers), in seconds.
    pub ws_ticket_ttl_secs: u64,
    /// Argon2id memory cost in KiB (OWASP minimum 19456; RFC 9106 second choice 65536).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    pub argon2_parallelism: u32,
    /// Password hashes computed at once; more wait, so a login flood cannot exhaust memory.
    pub max_concurrent_hashes: usize,
    /// Failed logins allowed per (username, client address) per `login_window_secs` before
    /// that pair is throttled. Other addresses are unaffected, so attackers cannot lock out a
    /// victim.
    pub login_failures_per_window: u32,
    /// Failed logins allowed per client address per window, across usernames.
    pub login_failures_per_address: u32,
    pub login_window_secs: u64,
    /// Shortest accepted password, in characters.
    pub min_password_chars: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            registration_open: false,
            session_ttl_hours: 24 * 30,
            ws_ticket_ttl_secs: 30,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            max_concurrent_hashes: 4,
            login_failures_per_window: 5,
            login_failures_per_address: 50,
            login_window_secs: 300,
            min_password_chars: 8,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest WebSocket frame accepted, in bytes (larger: close 1009).
    pub max_frame_bytes: usize,
    /// Largest HTTP request body, in bytes.
    pub max_request_body_bytes: usize,
    /// Frames per second a connection may send (token bucket; burst = 2x).
    pub frames_per_sec: u32,
    /// Outgoing items queued per connection before it is told to resync.
    pub outbound_queue: usize,
    /// Typing indicators forwarded per connection per conversation, at most one per this many ms.
    pub typing_interval_ms: u64,
    /// Default and largest number of events per conversation in one sync answer.
    pub sync_page: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_request_body_bytes: 64 * 1024,
            frames_per_sec: 50,
            outbound_queue: 256,
            typing_interval_ms: 2000,
            sync_page: 100,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. "info" or "roost_api=debug,info". RUST_LOG overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, level: "info".into() }
    }
}
