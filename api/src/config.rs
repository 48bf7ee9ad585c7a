//! NodeConfig: everything an operator configures, in one TOML file.
//!
//! Layers, later wins: built-in defaults < TOML file (`--config`) < environment
//! (`ROOST__SECTION__KEY=value`, `__` splits nesting) < command-line flags. Unknown keys are
//! rejected with the key's name and the layer that set it. The doc comment on each field is the
//! operator documentation; [`NodeConfig::commented_toml`] writes the same text (kept in [`DOCS`],
//! which a test checks against the structs) as comments, and is what `roost genconfig` prints.
//!
//! Loading merges every layer into one `toml::Table` and deserializes that once, so a value set in
//! the environment is checked exactly like the same value written in the file. When
//! deserialization fails, the failing key is found from the error's position in the merged
//! document and reported with the layer that set it ([`Origin`]).
//!
//! [`NodeConfig::validate`] then checks what types cannot (ranges, pairs of settings, readable
//! files) and reports every problem at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;

use roost_engine::presence::PresenceBackend;
use roost_engine::presence::RedisOptions;
use roost_engine::service::MAX_PAGE;
use roost_engine::store::embedded::DurabilityMode;
use roost_engine::store::embedded::EmbeddedOptions;
use roost_engine::store::scylla::CqlConsistency;
use roost_engine::store::scylla::ScyllaOptions;
use roost_engine::EngineConfig;
use serde::Deserialize;
use serde::Serialize;
use toml::Table;
use toml::Value;

/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "ROOST__";

/// Room a WebSocket frame needs around a message body (frame type, ids, ref, JSON escaping
/// slack), so that any body the engine accepts also fits in a frame.
pub const FRAME_OVERHEAD_BYTES: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    /// The ScyllaDB (or Cassandra) cluster, used when `storage.backend = "scylla"`.
    pub scylla: ScyllaOptions,
    pub presence: PresenceConfig,
    /// The Redis server, used when `presence.backend = "redis"`.
    pub redis: RedisOptions,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub engine: EngineConfig,
    pub cluster: ClusterNodeConfig,
}

/// Where presence (online, last seen) and shared counters live.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// `local`: in this process (a single node). `redis`: in the Redis of `[redis]`, shared by
    /// every node. Presence is advisory: if Redis is down, messaging continues and presence
    /// degrades until it returns.
    pub backend: PresenceBackend,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the public listener (REST + WebSocket).
    pub listen: SocketAddr,
    /// Optional internal listener for /healthz, /readyz and /metrics, and the cluster admin
    /// endpoints (/admin/cluster/*, required when cluster.enabled). When unset, the probes are
    /// served on the public listener. Plain HTTP without authentication: bind it to a loopback
    /// or private address.
    pub internal_listen: Option<SocketAddr>,
    /// HTTP worker threads; 0 means half the CPU cores (at least 1).
    pub workers: usize,
    /// Conversation actor event loops; 0 means half the CPU cores (at least 1). Each runs the
    /// registry, actors and delivery shard of its share of conversations; with exactly 1, the
    /// session hub shares it too (measured: docs/performance.md, "Event loops per core").
    pub engine_workers: usize,
    /// Browser origins allowed to open WebSockets (exact match, e.g. "https://chat.example.com").
    /// Requests without an Origin header (native clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Addresses of reverse proxies (nginx) in front of this node. Only for requests from these
    /// peers is `X-Forwarded-For` believed, so login throttling counts real client addresses.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Serve HTTPS/WSS with this certificate chain and key (PEM files). Both or neither.
    /// `roost cert dev` makes a self-signed pair for development.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
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
            trusted_proxies: Vec::new(),
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
    /// A ScyllaDB (or Apache Cassandra 4.1+) cluster, configured in `[scylla]`.
    Scylla,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where messages and accounts are stored. `embedded`: a single file in `data_dir`.
    /// `scylla`: a ScyllaDB or Cassandra cluster, configured in `[scylla]`.
    pub backend: StorageBackend,
    /// Directory of the embedded store (created if missing). Back up its roost.redb file
    /// while the node is stopped. A cluster node keeps its Raft log here too (raft.redb).
    pub data_dir: PathBuf,
    /// `immediate`: every acknowledged write is fsync'd (group commit batches them).
    /// `relaxed`: writes are fsync'd at least every `relaxed_flush_interval_ms`; a crash
    /// (even of the process alone) can then lose up to that interval of acknowledged writes.
    pub durability: DurabilityMode,
    /// Most writes in one group commit.
    pub max_batch: usize,
    /// Relaxed mode only: longest time between fsyncs.
    pub relaxed_flush_interval_ms: u64,
    /// Immediate mode, embedded store: longest time between checkpoints (see the field doc).
    pub checkpoint_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Embedded,
            data_dir: PathBuf::from("./roost-data"),
            durability: DurabilityMode::default(),
            max_batch: 512,
            relaxed_flush_interval_ms: 50,
            checkpoint_interval_ms: 1_000,
        }
    }
}

impl StorageConfig {
    /// The options to open the embedded store with.
    pub fn embedded_options(&self) -> EmbeddedOptions {
        EmbeddedOptions {
            path: self.data_dir.clone(),
            durability: self.durability,
            max_batch: self.max_batch,
            relaxed_flush_interval_ms: self.relaxed_flush_interval_ms,
            checkpoint_interval_ms: self.checkpoint_interval_ms,
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
    /// Length of the failed-login counting window, in seconds.
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
    /// Largest WebSocket frame accepted, in bytes (larger: close 1009). At least
    /// engine.max_body_bytes + 4096.
    pub max_frame_bytes: usize,
    /// Largest HTTP request body, in bytes. Below engine.max_body_bytes + 4096, the largest
    /// messages can only be sent over the WebSocket.
    pub max_request_body_bytes: usize,
    /// Frames per second a connection may send (token bucket; burst = 2x).
    pub frames_per_sec: u32,
    /// Outgoing items queued per connection before it is told to resync.
    pub outbound_queue: usize,
    /// Typing indicators forwarded per connection per conversation, at most one per this many ms.
    pub typing_interval_ms: u64,
    /// Default and largest number of events per conversation in one sync answer (at most 200).
    pub sync_page: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_request_body_bytes: 64 * 1024,
            frames_per_sec: 50,
            outbound_queue: 1024,
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
    /// `pretty`: one human-readable line per event. `json`: one JSON object per line.
    pub format: LogFormat,
    /// A tracing filter, e.g. "info" or "roost_api=debug,info". RUST_LOG overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

/// This node's place in a cluster of Roost nodes (`[cluster]`).
///
/// The control-plane settings are `roost_cluster::ClusterConfig`, embedded whole as the sub-table
/// `[cluster.control]` rather than mirrored here field by field: the cluster crate owns their
/// meaning, defaults and checks, and `#[serde(flatten)]` cannot be combined with
/// `deny_unknown_fields`. The sub-table also says what the settings are: one value for the whole
/// cluster (the same on every node), while the keys of `[cluster]` differ per node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterNodeConfig {
    /// Run as a member of a cluster. Needs storage.backend = "scylla", presence.backend = "redis"
    /// and server.internal_listen (where the /admin/cluster endpoints are served).
    pub enabled: bool,
    /// This node's id, unique in the cluster and never reused (1 or more). Its certificate must be
    /// made for the same id (`roost cluster certs --node ID`).
    pub node_id: Option<u64>,
    /// Name of the cluster. Nodes refuse peers that give another name, so two clusters sharing a
    /// network (or a CA) never mix.
    pub cluster_id: String,
    /// Address of the node-to-node listener (mutual TLS; Raft and forwarded conversation traffic).
    pub peer_listen: SocketAddr,
    /// `host:port` the other nodes dial to reach this one. Unset: `peer_listen`, which then must
    /// not be an unspecified address (0.0.0.0 or ::).
    pub advertise_peer: Option<String>,
    /// `host:port` clients are told to connect to for this node. Unset: `server.listen`, which then
    /// must not be an unspecified address.
    pub advertise_client: Option<String>,
    /// The cluster CA certificate (PEM); peers must present a certificate it signed.
    pub ca_cert: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the cluster CA. `roost cluster certs` makes them.
    pub node_cert: Option<PathBuf>,
    /// The private key (PEM) of `node_cert`.
    pub node_key: Option<PathBuf>,
    /// Control-plane settings: shard count, leases and failure detection. The same on every node.
    pub control: roost_cluster::ClusterConfig,
}

impl Default for ClusterNodeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node_id: None,
            cluster_id: "roost".into(),
            peer_listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            advertise_peer: None,
            advertise_client: None,
            ca_cert: None,
            node_cert: None,
            node_key: None,
            control: roost_cluster::ClusterConfig::default(),
        }
    }
}

impl ClusterNodeConfig {
    /// The address other nodes dial: `advertise_peer`, else `peer_listen` when it names a host.
    pub fn advertised_peer(&self) -> Option<String> {
        advertised(self.advertise_peer.as_deref(), self.peer_listen)
    }

    /// The address clients are told: `advertise_client`, else `server_listen` when it names a host.
    pub fn advertised_client(&self, server_listen: SocketAddr) -> Option<String> {
        advertised(self.advertise_client.as_deref(), server_listen)
    }
}

/// `host:port` with a non-empty host and a numeric port (IPv6 hosts in brackets).
fn is_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains(['/', ' ']) && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

fn advertised(explicit: Option<&str>, listen: SocketAddr) -> Option<String> {
    match explicit {
        Some(address) => Some(address.to_owned()),
        None if listen.ip().is_unspecified() => None,
        None => Some(listen.to_string()),
    }
}

// ----- loading ------------------------------------------------------------------------------

/// The layer a configuration value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    /// The environment variable's name as it was set.
    Env(String),
    /// The dotted key a command-line flag sets.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the built-in defaults"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(key) => write!(f, "the command-line flag for {key}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {} is not valid TOML:\n{source}", path.display())]
    Syntax { path: PathBuf, source: toml::de::Error },
    /// An environment variable or flag whose name does not spell a key.
    #[error("{origin} does not name a configuration key (expected {ENV_PREFIX}<SECTION>__<KEY>, e.g. ROOST__SERVER__LISTEN)")]
    BadName { origin: Origin },
    #[error("unknown configuration key `{key}` (set by {origin}); {expected}")]
    UnknownKey {
        key: String,
        origin: Origin,
        /// What is accepted there, e.g. "expected one of `listen`, `workers`, ...".
        expected: String,
    },
    #[error("invalid value for `{key}` (set by {origin}): {message}")]
    InvalidValue {
        key: String,
        origin: Origin,
        message: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::InvalidValue { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The layer that set the offending value, if known.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            ConfigError::BadName { origin }
            | ConfigError::UnknownKey { origin, .. }
            | ConfigError::InvalidValue { origin, .. } => Some(origin),
            ConfigError::Syntax { .. } | ConfigError::Read { .. } => None,
        }
    }
}

/// The merged layers, and which layer set each leaf (dotted path).
#[derive(Default)]
struct Layers {
    table: Table,
    origins: BTreeMap<String, Origin>,
    /// The defaults as a table: tells which keys are strings, so `ROOST__LOG__LEVEL=true`
    /// stays the string "true".
    defaults: Table,
}

impl NodeConfig {
    /// Load the configuration: defaults < `path` (TOML) < `env` (only `ROOST__*` variables are
    /// read; empty values count as unset) < `overrides` (dotted keys such as `server.listen`,
    /// from command-line flags).
    ///
    /// Environment and flag values are read as TOML values when they parse as one (`8080`,
    /// `true`, `["a", "b"]`), else as strings (`0.0.0.0:8080`). Keys whose default is a string
    /// always take the raw string, and list keys also accept a comma-separated list.
    pub fn load(
        path: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<NodeConfig, ConfigError> {
        let mut layers = Layers {
            defaults: Table::try_from(NodeConfig::default()).unwrap_or_default(),
            ..Layers::default()
        };
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let file: Table = toml::from_str(&text).map_err(|source| ConfigError::Syntax {
                path: path.to_owned(),
                source,
            })?;
            layers.merge_file(file, &Origin::File(path.to_owned()));
        }

        // Sorted, so that two spellings of one key (ROOST__LOG__LEVEL, roost__log__level)
        // resolve the same way every time.
        let mut vars: Vec<(String, String)> = env
            .filter(|(name, value)| {
                !value.is_empty()
                    && name.len() >= ENV_PREFIX.len()
                    && name.is_char_boundary(ENV_PREFIX.len())
                    && name[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX)
            })
            .collect();
        vars.sort();
        for (name, value) in vars {
            let origin = Origin::Env(name.clone());
            let path = split_key(&name[ENV_PREFIX.len()..], "__")
                .ok_or_else(|| ConfigError::BadName { origin: origin.clone() })?;
            layers.set(&path, &value, origin);
        }

        for (key, value) in overrides {
            if value.is_empty() {
                continue;
            }
            let origin = Origin::Flag(key.clone());
            let path = split_key(key, ".").ok_or_else(|| ConfigError::BadName { origin: origin.clone() })?;
            layers.set(&path, value, origin);
        }

        layers.deserialize()
    }
}

/// Lowercased, non-empty key segments, or `None` if the name does not spell a key.
fn split_key(name: &str, separator: &str) -> Option<Vec<String>> {
    let segments: Vec<String> = name.split(separator).map(str::to_ascii_lowercase).collect();
    let valid = segments
        .iter()
        .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    valid.then_some(segments)
}

impl Layers {
    fn merge_file(&mut self, file: Table, origin: &Origin) {
        let mut leaves = Vec::new();
        collect_leaves(&file, "", &mut leaves);
        for leaf in leaves {
            self.origins.insert(leaf, origin.clone());
        }
        merge_tables(&mut self.table, file);
    }

    /// Set one key from the environment or a flag, replacing whatever lower layers set there.
    fn set(&mut self, path: &[String], raw: &str, origin: Origin) {
        let dotted = path.join(".");
        let expected = lookup(&self.defaults, path);
        let value = parse_value(raw, expected);
        // A later layer replaces a whole subtree: forget the origins of what it hides.
        let hidden = format!("{dotted}.");
        self.origins.retain(|k, _| !k.starts_with(&hidden));
        self.origins.insert(dotted, origin);

        let (last, parents) = path.split_last().expect("split_key never returns an empty path");
        let mut table = &mut self.table;
        for segment in parents {
            let entry = table
                .entry(segment.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            table = match entry {
                Value::Table(inner) => inner,
                _ => unreachable!("just made a table"),
            };
        }
        table.insert(last.clone(), value);
    }

    fn deserialize(self) -> Result<NodeConfig, ConfigError> {
        // Serialize the merged layers and parse them back: the parser reports the position of
        // an error, which `key_at` turns back into the key.
        let text = toml::to_string(&self.table).map_err(|e| ConfigError::InvalidValue {
            key: "(configuration)".into(),
            origin: Origin::Default,
            message: e.to_string(),
        })?;
        toml::from_str::<NodeConfig>(&text).map_err(|error| {
            let key = error
                .span()
                .and_then(|span| key_at(&text, span.start))
                .unwrap_or_else(|| "(configuration)".into());
            let origin = self.origin_of(&key);
            let message = error.message().to_owned();
            match message.strip_prefix("unknown field `") {
                Some(rest) => ConfigError::UnknownKey {
                    key,
                    origin,
                    expected: rest
                        .split_once("`, ")
                        .map_or_else(|| message.clone(), |(_, e)| e.to_owned()),
                },
                None => ConfigError::InvalidValue { key, origin, message },
            }
        })
    }

    /// The layer that set `key`: the key itself, a table above it, or a key below it.
    fn origin_of(&self, key: &str) -> Origin {
        if let Some(origin) = self.origins.get(key) {
            return origin.clone();
        }
        let mut prefix = key;
        while let Some((parent, _)) = prefix.rsplit_once('.') {
            if let Some(origin) = self.origins.get(parent) {
                return origin.clone();
            }
            prefix = parent;
        }
        let below = format!("{key}.");
        self.origins
            .iter()
            .find(|(k, _)| k.starts_with(&below))
            .map_or(Origin::Default, |(_, origin)| origin.clone())
    }
}

fn collect_leaves(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(inner) => collect_leaves(inner, &path, out),
            _ => out.push(path),
        }
    }
}

fn merge_tables(base: &mut Table, upper: Table) {
    for (key, value) in upper {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(below)), Value::Table(above)) => merge_tables(below, above),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    lookup(value.as_table()?, rest)
}

/// Read an environment or flag value; see [`NodeConfig::load`].
fn parse_value(raw: &str, expected: Option<&Value>) -> Value {
    match expected {
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(Value::Array(_)) => match parse_toml_value(raw) {
            Some(array @ Value::Array(_)) => array,
            _ => Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
        },
        _ => parse_toml_value(raw).unwrap_or_else(|| Value::String(raw.to_owned())),
    }
}

/// `raw` as a single TOML value (`8080`, `true`, `"x"`, `[1, 2]`), if it is one.
fn parse_toml_value(raw: &str) -> Option<Value> {
    let mut table: Table = toml::from_str(&format!("v = {}", raw.trim())).ok()?;
    if table.len() != 1 {
        return None;
    }
    table.remove("v")
}

/// The dotted key whose name or value covers byte `offset` of the TOML document `text`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_key(document.get_ref(), offset, &mut path).then(|| path.join("."))
}

fn find_key(table: &toml::de::DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    let covers = |span: std::ops::Range<usize>| span.start <= offset && offset < span.end;
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        if covers(key.span()) {
            return true;
        }
        // Table spans need not cover their keys (a `[header]` table), so search every table.
        let inside = match value.get_ref().as_table() {
            Some(inner) => find_key(inner, offset, path),
            None => false,
        };
        if inside || covers(value.span()) {
            return true;
        }
        path.pop();
    }
    false
}

// ----- validation ---------------------------------------------------------------------------

impl NodeConfig {
    /// Every problem that makes this configuration unusable, so an operator fixes them in one
    /// go. Empty means valid. Includes the engine's own checks.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.server.problems(&mut problems);
        self.storage.problems(&mut problems);
        if self.storage.backend == StorageBackend::Scylla {
            problems.extend(self.scylla.problems("scylla."));
        }
        if self.presence.backend == PresenceBackend::Redis {
            problems.extend(self.redis.problems());
        }
        self.auth.problems(&mut problems);
        self.limits_problems(&mut problems);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(format!("log.level `{}` is not a valid filter: {e}", self.log.level));
        }
        problems.extend(self.engine.problems());
        self.cluster_problems(&mut problems);
        problems
    }

    /// A cluster node needs what every node of the cluster can share (the ScyllaDB history and
    /// the Redis presence: the embedded store is one node's disk), its identity and certificates,
    /// and the internal listener its admin endpoints live on.
    fn cluster_problems(&self, problems: &mut Vec<String>) {
        let c = &self.cluster;
        if !c.enabled {
            return;
        }
        if c.node_id.unwrap_or(0) == 0 {
            problems.push("cluster.node_id must be set to 1 or more when cluster.enabled".into());
        }
        if c.cluster_id.trim().is_empty() {
            problems.push("cluster.cluster_id must not be empty".into());
        }
        if self.storage.backend != StorageBackend::Scylla {
            problems.push(
                "cluster.enabled needs storage.backend = \"scylla\": every node must reach the same \
                 history, and the embedded store is one node's disk"
                    .into(),
            );
        }
        if self.presence.backend != PresenceBackend::Redis {
            problems
                .push("cluster.enabled needs presence.backend = \"redis\", so every node sees who is online".into());
        }
        if self.server.internal_listen.is_none() {
            problems.push(
                "cluster.enabled needs server.internal_listen: the /admin/cluster endpoints are served \
                 there (a private address), never on the public listener"
                    .into(),
            );
        }
        self.cluster_address_problems(problems);
        for (name, path) in [
            ("ca_cert", &c.ca_cert),
            ("node_cert", &c.node_cert),
            ("node_key", &c.node_key),
        ] {
            match path {
                None => problems.push(format!(
                    "cluster.{name} must be set when cluster.enabled (`roost cluster certs` makes the files)"
                )),
                Some(path) => {
                    if let Err(e) = std::fs::File::open(path) {
                        problems.push(format!("cluster.{name}: cannot read {}: {e}", path.display()));
                    }
                }
            }
        }
        // The cluster crate names its keys `cluster.<key>`; here they live in `[cluster.control]`.
        problems.extend(
            c.control
                .problems()
                .into_iter()
                .map(|p| p.replace("cluster.", "cluster.control.")),
        );
    }

    fn cluster_address_problems(&self, problems: &mut Vec<String>) {
        let c = &self.cluster;
        let listen = c.peer_listen;
        if listen == self.server.listen || Some(listen) == self.server.internal_listen {
            problems.push(format!(
                "cluster.peer_listen ({listen}) must differ from server.listen and server.internal_listen"
            ));
        }
        match c.advertised_peer() {
            None => problems.push(format!(
                "cluster.advertise_peer must be set: cluster.peer_listen ({listen}) does not say which \
                 address other nodes should dial"
            )),
            Some(address) if !is_host_port(&address) => {
                problems.push(format!("cluster.advertise_peer `{address}` is not host:port"))
            }
            Some(_) => {}
        }
        match c.advertised_client(self.server.listen) {
            None => problems.push(format!(
                "cluster.advertise_client must be set: server.listen ({}) does not say which address \
                 clients should connect to",
                self.server.listen
            )),
            Some(address) if !is_host_port(&address) => {
                problems.push(format!("cluster.advertise_client `{address}` is not host:port"))
            }
            Some(_) => {}
        }
    }

    /// Settings that work but are probably not what a production node wants.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let a = &self.auth;
        if a.argon2_memory_kib < 19 * 1024 {
            warnings.push(format!(
                "auth.argon2_memory_kib = {} is below the OWASP minimum of 19456 KiB",
                a.argon2_memory_kib
            ));
        }
        let needed = self.engine.max_body_bytes.saturating_add(FRAME_OVERHEAD_BYTES);
        if self.limits.max_request_body_bytes < needed {
            warnings.push(format!(
                "limits.max_request_body_bytes ({}) is below engine.max_body_bytes + \
                 {FRAME_OVERHEAD_BYTES} = {needed}: the largest messages can be sent over the \
                 WebSocket but not with POST /v1/conversations/{{id}}/messages",
                self.limits.max_request_body_bytes
            ));
        }
        if self.storage.backend == StorageBackend::Scylla {
            if self.scylla.replication.values().any(|&factor| factor < 3) {
                warnings.push(
                    "scylla.replication: a replication factor below 3 loses data or availability when a \
                     node fails; use 3 per datacenter in production"
                        .into(),
                );
            }
            if matches!(
                self.scylla.write_consistency,
                CqlConsistency::One | CqlConsistency::LocalOne
            ) {
                warnings.push(
                    "scylla.write_consistency: a message acknowledged after one replica is lost if that \
                     replica fails before the others have it; use local_quorum"
                        .into(),
                );
            }
        }
        if self.storage.backend == StorageBackend::Embedded && self.storage.durability == DurabilityMode::Relaxed {
            warnings.push(
                "storage.durability = \"relaxed\": a crash or power loss can lose acknowledged \
                 messages; use it for benchmarks and disposable data only"
                    .into(),
            );
        }
        if let Some(internal) = self.server.internal_listen.filter(|_| self.cluster.enabled) {
            if internal.ip().is_unspecified() {
                warnings.push(format!(
                    "server.internal_listen = {internal} listens on every interface, and its \
                     /admin/cluster endpoints have no authentication: bind it to a loopback or \
                     private address"
                ));
            }
        }
        if self.server.tls_cert.is_none() && !self.server.listen.ip().is_loopback() {
            warnings.push(format!(
                "server.listen = {} is not a loopback address and TLS is off: put a TLS proxy in \
                 front, or set server.tls_cert and server.tls_key",
                self.server.listen
            ));
        }
        warnings
    }

    fn limits_problems(&self, problems: &mut Vec<String>) {
        let l = &self.limits;
        for (name, value) in [
            ("limits.max_frame_bytes", l.max_frame_bytes),
            ("limits.max_request_body_bytes", l.max_request_body_bytes),
            ("limits.frames_per_sec", l.frames_per_sec as usize),
            ("limits.outbound_queue", l.outbound_queue),
            ("limits.sync_page", l.sync_page),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
        if l.sync_page > MAX_PAGE {
            problems.push(format!(
                "limits.sync_page must be at most {MAX_PAGE} (the engine's largest page)"
            ));
        }
        let needed = self.engine.max_body_bytes.saturating_add(FRAME_OVERHEAD_BYTES);
        if l.max_frame_bytes < needed {
            problems.push(format!(
                "limits.max_frame_bytes ({}) must be at least engine.max_body_bytes + \
                 {FRAME_OVERHEAD_BYTES} = {needed}, so that every message the engine accepts fits \
                 in a WebSocket frame",
                l.max_frame_bytes
            ));
        }
    }
}

impl ServerConfig {
    fn problems(&self, problems: &mut Vec<String>) {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                for (name, path) in [("server.tls_cert", cert), ("server.tls_key", key)] {
                    if let Err(e) = std::fs::File::open(path) {
                        problems.push(format!("{name}: cannot read {}: {e}", path.display()));
                    }
                }
            }
            (Some(_), None) => {
                problems.push("server.tls_cert is set but server.tls_key is not: set both or neither".into())
            }
            (None, Some(_)) => {
                problems.push("server.tls_key is set but server.tls_cert is not: set both or neither".into())
            }
            (None, None) => {}
        }
        if self.internal_listen == Some(self.listen) {
            problems.push(format!(
                "server.internal_listen must differ from server.listen ({})",
                self.listen
            ));
        }
        if self.heartbeat_secs == 0 {
            problems.push("server.heartbeat_secs must be greater than 0".into());
        }
        if self.heartbeat_secs >= self.client_timeout_secs {
            problems.push(format!(
                "server.heartbeat_secs ({}) must be less than server.client_timeout_secs ({}), or \
                 live clients are timed out between pings",
                self.heartbeat_secs, self.client_timeout_secs
            ));
        }
        for origin in &self.allowed_origins {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(['/', '*', ' ']) => {}
                _ => problems.push(format!(
                    "server.allowed_origins: `{origin}` is not an origin; write \
                     scheme://host[:port] exactly as browsers send it (no path, no trailing \
                     slash, no wildcard)"
                )),
            }
        }
    }
}

impl StorageConfig {
    fn problems(&self, problems: &mut Vec<String>) {
        if self.data_dir.as_os_str().is_empty() {
            problems.push("storage.data_dir must not be empty".into());
        }
        if self.max_batch == 0 {
            problems.push("storage.max_batch must be greater than 0".into());
        }
        if self.durability == DurabilityMode::Relaxed && self.relaxed_flush_interval_ms == 0 {
            problems.push("storage.relaxed_flush_interval_ms must be greater than 0 in relaxed durability".into());
        }
        if self.checkpoint_interval_ms == 0 {
            problems.push("storage.checkpoint_interval_ms must be greater than 0".into());
        }
    }
}

impl AuthConfig {
    fn problems(&self, problems: &mut Vec<String>) {
        if let Err(e) = argon2::Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            None,
        ) {
            problems.push(format!("auth.argon2_* parameters are invalid: {e}"));
        }
        if !(1..=64).contains(&self.argon2_parallelism) {
            problems.push("auth.argon2_parallelism must be between 1 and 64".into());
        }
        if !(1..=100).contains(&self.argon2_iterations) {
            problems.push("auth.argon2_iterations must be between 1 and 100".into());
        }
        // Below 8 KiB per lane argon2 refuses; above 4 GiB a single login could exhaust memory.
        let min_memory = 8 * self.argon2_parallelism.max(1);
        if !(min_memory..=4 * 1024 * 1024).contains(&self.argon2_memory_kib) {
            problems.push(format!(
                "auth.argon2_memory_kib must be between {min_memory} and 4194304"
            ));
        }
        for (name, value) in [
            ("auth.session_ttl_hours", self.session_ttl_hours),
            ("auth.ws_ticket_ttl_secs", self.ws_ticket_ttl_secs),
            ("auth.max_concurrent_hashes", self.max_concurrent_hashes as u64),
            (
                "auth.login_failures_per_window",
                u64::from(self.login_failures_per_window),
            ),
            (
                "auth.login_failures_per_address",
                u64::from(self.login_failures_per_address),
            ),
            ("auth.login_window_secs", self.login_window_secs),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
        if !(1..=128).contains(&self.min_password_chars) {
            problems.push("auth.min_password_chars must be between 1 and 128".into());
        }
    }
}

// ----- the commented configuration ----------------------------------------------------------

/// One documented key of the configuration file.
#[derive(Debug)]
pub struct FieldDoc {
    pub key: &'static str,
    /// The operator documentation, the same text as the field's doc comment.
    pub doc: &'static str,
    /// For keys with no default (optional settings): an example value (TOML), written
    /// commented out.
    pub example: Option<&'static str>,
}

/// One `[section]` of the configuration file.
#[derive(Debug)]
pub struct SectionDoc {
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [FieldDoc],
}

const fn field(key: &'static str, doc: &'static str) -> FieldDoc {
    FieldDoc {
        key,
        doc,
        example: None,
    }
}

const fn optional(key: &'static str, doc: &'static str, example: &'static str) -> FieldDoc {
    FieldDoc {
        key,
        doc,
        example: Some(example),
    }
}

/// The documentation `roost genconfig` writes, section by section, in file order. A test checks
/// that it names every field of [`NodeConfig`] and nothing else.
pub const DOCS: &[SectionDoc] = &[
    SectionDoc {
        name: "server",
        doc: "Listeners, TLS, WebSocket timings and shutdown.",
        fields: &[
            field("listen", "Address of the public listener (REST + WebSocket)."),
            optional(
                "internal_listen",
                "Optional internal listener for /healthz, /readyz and /metrics, and the cluster admin\n\
                 endpoints (/admin/cluster/*, required when cluster.enabled). When unset, the probes are\n\
                 served on the public listener. Plain HTTP without authentication: bind it to a loopback\n\
                 or private address.",
                "\"127.0.0.1:9090\"",
            ),
            field(
                "workers",
                "HTTP worker threads; 0 means half the CPU cores (at least 1).",
            ),
            field(
                "engine_workers",
                "Conversation actor event loops; 0 means half the CPU cores (at least 1). Each runs the\n\
                 registry, actors and delivery shard of its share of conversations; with exactly 1, the\n\
                 session hub shares it too (measured: docs/performance.md, \"Event loops per core\").",
            ),
            field(
                "allowed_origins",
                "Browser origins allowed to open WebSockets (exact match, e.g. \"https://chat.example.com\").\n\
                 Requests without an Origin header (native clients) are always allowed.",
            ),
            field(
                "trusted_proxies",
                "Addresses of reverse proxies (nginx) in front of this node. Only for requests from these\n\
                 peers is `X-Forwarded-For` believed, so login throttling counts real client addresses.",
            ),
            optional(
                "tls_cert",
                "Serve HTTPS/WSS with this certificate chain and key (PEM files). Both or neither.\n\
                 `roost cert dev` makes a self-signed pair for development.",
                "\"/etc/roost/tls/cert.pem\"",
            ),
            optional(
                "tls_key",
                "The private key (PEM) of `tls_cert`.",
                "\"/etc/roost/tls/key.pem\"",
            ),
            field("heartbeat_secs", "Seconds between server pings on a WebSocket."),
            field(
                "client_timeout_secs",
                "A WebSocket with no traffic from the client for this long is closed.",
            ),
            field(
                "shutdown_grace_secs",
                "On SIGTERM: seconds to let clients reconnect elsewhere and requests finish.",
            ),
        ],
    },
    SectionDoc {
        name: "storage",
        doc: "Where messages and accounts are kept.",
        fields: &[
            field(
                "backend",
                "Where messages and accounts are stored. `embedded`: a single file in `data_dir`.\n\
                 `scylla`: a ScyllaDB or Cassandra cluster, configured in `[scylla]`.",
            ),
            field(
                "data_dir",
                "Directory of the embedded store (created if missing). Back up its roost.redb file\n\
                 while the node is stopped. A cluster node keeps its Raft log here too (raft.redb).",
            ),
            field(
                "durability",
                "`immediate`: every acknowledged write is fsync'd (group commit batches them).\n\
                 `relaxed`: writes are fsync'd at least every `relaxed_flush_interval_ms`; a crash\n\
                 (even of the process alone) can then lose up to that interval of acknowledged writes.",
            ),
            field("max_batch", "Most writes in one group commit."),
            field(
                "relaxed_flush_interval_ms",
                "Relaxed mode only: longest time between fsyncs.",
            ),
            field(
                "checkpoint_interval_ms",
                "Immediate mode, embedded store: longest time between checkpoints (the durable\n\
                 database commit after which the append log starts over). Writes wait while one\n\
                 runs (tens of ms under load): longer means rarer, longer pauses, a lower p99 below\n\
                 saturation and bigger backlogs at it (docs/performance.md). 64 MiB of log always\n\
                 forces one, which bounds the replay after a crash.",
            ),
        ],
    },
    SectionDoc {
        name: "presence",
        doc: "Where presence (online, last seen) and shared counters live.",
        fields: &[field(
            "backend",
            "`local`: in this process (a single node). `redis`: in the Redis of `[redis]`, shared by\n\
             every node. Presence is advisory: if Redis is down, messaging continues and presence\n\
             degrades until it returns.",
        )],
    },
    SectionDoc {
        name: "redis",
        doc: "The Redis server, used when presence.backend = \"redis\".",
        fields: &[
            field(
                "url",
                "Where Redis listens: `redis://[[user]:password@]host[:port][/db]` or\n\
                 `redis+unix:///path/to/redis.sock`. A single Redis (or a primary); Redis Cluster is not\n\
                 supported. Prefer an environment variable (`ROOST__REDIS__URL`) for a URL with a password.",
            ),
            field(
                "key_prefix",
                "Prepended to every key Roost writes, so several deployments can share one Redis.",
            ),
            field(
                "heartbeat_secs",
                "How often each node refreshes the entries of its online users, in seconds.",
            ),
            field(
                "presence_ttl_secs",
                "How long a user's entry for a node lives without a heartbeat, in seconds: the users of a\n\
                 node that crashed appear offline after at most this long. At least twice `heartbeat_secs`.",
            ),
            field(
                "connect_timeout_ms",
                "Longest wait for a TCP connection to Redis, in milliseconds.",
            ),
            field(
                "command_timeout_ms",
                "Longest wait for any one Redis call, in milliseconds. Presence is advisory: a slower\n\
                 answer counts as a failure and the node carries on without it.",
            ),
        ],
    },
    SectionDoc {
        name: "scylla",
        doc: "The ScyllaDB (or Cassandra 4.1+) cluster, used when storage.backend = \"scylla\".",
        fields: &[
            field(
                "contact_points",
                "Nodes to contact first, as `host:port` (the CQL port, 9042 by default). One reachable node is\n\
                 enough: the driver discovers the rest of the cluster from it.",
            ),
            field(
                "keyspace",
                "Keyspace holding Roost's tables. Letters, digits and `_`, at most 48 characters. Created by\n\
                 the migrations with `replication` if missing.",
            ),
            optional(
                "local_datacenter",
                "Datacenter of this node. Requests go to replicas in it first, and `local_quorum` /\n\
                 `local_one` count replicas in it. Unset: every node is treated as local (single-DC clusters).",
                "\"datacenter1\"",
            ),
            field(
                "replication",
                "Replication of the keyspace, used only when the migrations create it:\n\
                 `NetworkTopologyStrategy` with a replication factor per datacenter name. Production: 3 per\n\
                 datacenter. The default of 1 suits a single development node. Changing it later needs\n\
                 `ALTER KEYSPACE` and a repair, done by an operator.",
            ),
            optional(
                "tablets",
                "ScyllaDB only: create the keyspace with `tablets = {'enabled': <value>}`. Leave unset on\n\
                 Cassandra (which rejects the option) and on ScyllaDB releases whose tablets support\n\
                 lightweight transactions (2025.4 and later). Set `false` on ScyllaDB 6.0 to 2025.3, where\n\
                 lightweight transactions (used for usernames, direct pairs and ids) need vnodes.",
                "false",
            ),
            optional(
                "username",
                "User name for password authentication. Unset: no authentication.",
                "\"roost\"",
            ),
            optional(
                "password",
                "Password for `username`. Never logged. Prefer the ROOST__SCYLLA__PASSWORD environment\n\
                 variable to writing it in this file.",
                "\"change me\"",
            ),
            field(
                "write_consistency",
                "Consistency level of writes, including every append that precedes an acknowledgement:\n\
                 `local_quorum` (default: survives one replica down at RF 3, and a later `local_quorum` read\n\
                 sees it), `quorum`, `each_quorum`, `all`, `local_one`, `one`, `two`, `three`.",
            ),
            field(
                "read_consistency",
                "Consistency level of reads. Keep `local_quorum` with `local_quorum` writes so that a read\n\
                 sees every acknowledged write (R + W > RF).",
            ),
            field(
                "request_timeout_ms",
                "Client-side timeout of one request, in milliseconds. A request that takes longer fails\n\
                 with `unavailable` (retryable), and an append that times out fails every append queued\n\
                 behind it in its conversation.",
            ),
            field(
                "connect_timeout_ms",
                "Timeout of opening a connection, in milliseconds (also bounds `roost checkconfig`'s probe).",
            ),
            field(
                "events_per_partition",
                "Events per message partition: a conversation's events are stored in partitions of this\n\
                 many consecutive seqs, which bounds every partition's size. Fixed when the keyspace is\n\
                 first migrated; a different value later is refused (it would misplace every lookup).",
            ),
            field(
                "id_block_size",
                "User and conversation ids are taken from a shared counter in blocks of this many (one\n\
                 lightweight transaction per block), so ids stay small integers. Ids left in a block when a\n\
                 node stops are skipped.",
            ),
            field(
                "max_batch_bytes",
                "Largest CQL batch the append pipeline writes, in bytes (approximate). Appends of one\n\
                 conversation that queue up while its previous batch is written are coalesced into one\n\
                 logged batch up to this size. Keep it below the server's `batch_size_fail_threshold`\n\
                 (Cassandra 50 KiB by default, ScyllaDB 1 MiB); a single larger append is written alone.",
            ),
            field(
                "message_ttl_secs",
                "Retention: seconds after which events (and their client message ids) expire, written as a\n\
                 per-write TTL. 0 keeps them forever. Applies to events written after the change.",
            ),
            field(
                "apply_migrations_on_start",
                "Apply pending schema migrations when the node starts. When false, run `roost migrate`\n\
                 before starting a new version; the node refuses to start on a keyspace without the schema.",
            ),
        ],
    },
    SectionDoc {
        name: "auth",
        doc: "Accounts, sessions, password hashing and login throttling.",
        fields: &[
            field(
                "registration_open",
                "Let anyone create an account with POST /v1/auth/register.",
            ),
            field("session_ttl_hours", "Lifetime of a login session token, in hours."),
            field(
                "ws_ticket_ttl_secs",
                "Lifetime of a WebSocket ticket (for browsers), in seconds.",
            ),
            field(
                "argon2_memory_kib",
                "Argon2id memory cost in KiB (OWASP minimum 19456; RFC 9106 second choice 65536).",
            ),
            field("argon2_iterations", "Argon2id iterations."),
            field("argon2_parallelism", "Argon2id lanes."),
            field(
                "max_concurrent_hashes",
                "Password hashes computed at once; more wait, so a login flood cannot exhaust memory.",
            ),
            field(
                "login_failures_per_window",
                "Failed logins allowed per (username, client address) per `login_window_secs` before\n\
                 that pair is throttled. Other addresses are unaffected, so attackers cannot lock out a\n\
                 victim.",
            ),
            field(
                "login_failures_per_address",
                "Failed logins allowed per client address per window, across usernames.",
            ),
            field(
                "login_window_secs",
                "Length of the failed-login counting window, in seconds.",
            ),
            field("min_password_chars", "Shortest accepted password, in characters."),
        ],
    },
    SectionDoc {
        name: "limits",
        doc: "Per-connection and per-request limits.",
        fields: &[
            field(
                "max_frame_bytes",
                "Largest WebSocket frame accepted, in bytes (larger: close 1009). At least\n\
                 engine.max_body_bytes + 4096.",
            ),
            field(
                "max_request_body_bytes",
                "Largest HTTP request body, in bytes. Below engine.max_body_bytes + 4096, the largest\n\
                 messages can only be sent over the WebSocket.",
            ),
            field(
                "frames_per_sec",
                "Frames per second a connection may send (token bucket; burst = 2x).",
            ),
            field(
                "outbound_queue",
                "Outgoing items queued per connection before it is told to resync.",
            ),
            field(
                "typing_interval_ms",
                "Typing indicators forwarded per connection per conversation, at most one per this many ms.",
            ),
            field(
                "sync_page",
                "Default and largest number of events per conversation in one sync answer (at most 200).",
            ),
        ],
    },
    SectionDoc {
        name: "log",
        doc: "Logging (to standard output).",
        fields: &[
            field(
                "format",
                "`pretty`: one human-readable line per event. `json`: one JSON object per line.",
            ),
            field(
                "level",
                "A tracing filter, e.g. \"info\" or \"roost_api=debug,info\". RUST_LOG overrides it.",
            ),
        ],
    },
    SectionDoc {
        name: "engine",
        doc: "Limits and timings of conversations, whatever the transport.",
        fields: &[
            field(
                "max_body_bytes",
                "Largest accepted message body (text plus structured fields), in bytes.",
            ),
            field("max_group_members", "Largest group, in members."),
            field("max_group_name_bytes", "Longest group name, in bytes."),
            field(
                "edit_window_secs",
                "How long after sending a member may edit or recall their own message, in seconds.\n\
                 Group admins and owners may recall any message at any time.",
            ),
            field(
                "conversation_idle_secs",
                "A conversation actor with no traffic for this long stops; it is rebuilt from the store on\n\
                 the next use.",
            ),
            field(
                "conversation_mailbox",
                "Capacity of a conversation actor's mailbox before senders are told to back off.",
            ),
            field(
                "max_pending_appends",
                "Appends a conversation may have waiting for the store; beyond, new sends are refused\n\
                 with the retryable `overloaded` error instead of queueing without bound.",
            ),
            field(
                "dedup_cache_entries",
                "Client message ids remembered in memory per conversation actor; older ones are found in\n\
                 the store.",
            ),
            field(
                "presence_fanout_max_members",
                "Presence changes are pushed to members of conversations up to this size; larger groups\n\
                 ask for presence instead.",
            ),
        ],
    },
    SectionDoc {
        name: "cluster",
        doc: "This node's place in a cluster of Roost nodes (off by default: a single node).",
        fields: &[
            field(
                "enabled",
                "Run as a member of a cluster. Needs storage.backend = \"scylla\", presence.backend = \"redis\"\n\
                 and server.internal_listen (where the /admin/cluster endpoints are served).",
            ),
            optional(
                "node_id",
                "This node's id, unique in the cluster and never reused (1 or more). Its certificate must be\n\
                 made for the same id (`roost cluster certs --node ID`).",
                "1",
            ),
            field(
                "cluster_id",
                "Name of the cluster. Nodes refuse peers that give another name, so two clusters sharing a\n\
                 network (or a CA) never mix.",
            ),
            field(
                "peer_listen",
                "Address of the node-to-node listener (mutual TLS; Raft and forwarded conversation traffic).",
            ),
            optional(
                "advertise_peer",
                "`host:port` the other nodes dial to reach this one. Unset: `peer_listen`, which then must\n\
                 not be an unspecified address (0.0.0.0 or ::).",
                "\"10.0.0.1:7070\"",
            ),
            optional(
                "advertise_client",
                "`host:port` clients are told to connect to for this node. Unset: `server.listen`, which then\n\
                 must not be an unspecified address.",
                "\"chat1.example.com:443\"",
            ),
            optional(
                "ca_cert",
                "The cluster CA certificate (PEM); peers must present a certificate it signed.",
                "\"/etc/roost/cluster/ca.pem\"",
            ),
            optional(
                "node_cert",
                "This node's certificate (PEM), signed by the cluster CA. `roost cluster certs` makes them.",
                "\"/etc/roost/cluster/node-1.pem\"",
            ),
            optional(
                "node_key",
                "The private key (PEM) of `node_cert`.",
                "\"/etc/roost/cluster/node-1.key\"",
            ),
        ],
    },
    SectionDoc {
        name: "cluster.control",
        doc: "Control-plane settings of the cluster: shards, leases, failure detection. The same on every node.",
        fields: &[
            field(
                "shard_count",
                "Virtual shards conversations are spread over. Read once, by `roost cluster init`, and then\n\
                 fixed for the life of the cluster (it is stored in the replicated state, and changing it\n\
                 would move every conversation). More shards spread load more evenly over many nodes; 256\n\
                 suits clusters of up to a few dozen nodes.",
            ),
            field(
                "lease_ms",
                "How long a lease granted by the Raft leader lets this node sequence its shards, counted\n\
                 from when the renewal was sent, in milliseconds. A node cut off from the leader stops\n\
                 serving its conversations at most this long after its last successful renewal.",
            ),
            field(
                "renew_ms",
                "How often a node renews its lease, in milliseconds. At most a third of `lease_ms`, so that\n\
                 one lost round trip does not let a healthy node's lease expire.",
            ),
            field(
                "failure_timeout_ms",
                "How long a member may go without renewing its lease before the leader declares it dead and\n\
                 hands its shards to others, in milliseconds. At least `lease_ms * (1 + 2 * 0.001) + 100`\n\
                 (the longest a lease can outlast its grant, with clock drift and a margin); larger values\n\
                 ride out longer pauses at the cost of a longer outage when a node really fails.",
            ),
            field(
                "heartbeat_ms",
                "How often the Raft leader sends heartbeats, in milliseconds.",
            ),
            field(
                "election_min_ms",
                "The shortest time without a heartbeat after which a follower calls an election, in\n\
                 milliseconds. Must be larger than `heartbeat_ms`.",
            ),
            field(
                "election_max_ms",
                "The longest such time (each follower picks a random timeout in between), in milliseconds.",
            ),
            field(
                "rebalance_interval_ms",
                "How often the leader checks for failed members and plans shard moves, in milliseconds.",
            ),
        ],
    },
];

const HEADER: &str = "\
# Roost node configuration.
#
# Every key is optional: a missing key takes the default shown here. Settings are read in
# layers, later wins:
#   built-in defaults < this file (`roost serve --config FILE`)
#   < environment variables ROOST__<SECTION>__<KEY>, e.g. ROOST__SERVER__LISTEN=0.0.0.0:8080
#   < command-line flags (`--listen`, `--data-dir`).
# Unknown keys are errors. Check a file with `roost checkconfig --config FILE`.
";

impl NodeConfig {
    /// A complete configuration file: every key with its documentation as comments and its
    /// default value (optional keys commented out, with an example). Parses back to
    /// `NodeConfig::default()`.
    pub fn commented_toml() -> String {
        let defaults = Table::try_from(NodeConfig::default()).unwrap_or_default();
        let mut out = String::from(HEADER);
        for section in DOCS {
            out.push_str(&format!("\n# {}\n[{}]\n", section.doc, section.name));
            let values = section_values(&defaults, section.name);
            for (i, field) in section.fields.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                for line in field.doc.lines() {
                    out.push_str(&format!("# {}\n", line.trim_end()));
                }
                match (values.and_then(|v| v.get(field.key)), field.example) {
                    (Some(value), _) => out.push_str(&format!("{} = {value}\n", field.key)),
                    (None, Some(example)) => {
                        out.push_str(&format!("# (unset by default)\n# {} = {example}\n", field.key))
                    }
                    (None, None) => out.push_str(&format!("# {} (unset by default)\n", field.key)),
                }
            }
        }
        out
    }
}

/// The default values of a section named by its dotted path (`cluster.control`).
fn section_values<'a>(defaults: &'a Table, name: &str) -> Option<&'a Table> {
    let path: Vec<String> = name.split('.').map(str::to_owned).collect();
    lookup(defaults, &path).and_then(Value::as_table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_env(vars: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
        let env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        NodeConfig::load(None, env.collect::<Vec<_>>().into_iter(), &[])
    }

    #[test]
    fn docs_name_exactly_the_fields() {
        let defaults = Table::try_from(NodeConfig::default()).expect("serializes");
        let mut top: Vec<&str> = DOCS.iter().map(|s| s.name).filter(|n| !n.contains('.')).collect();
        top.sort_unstable();
        let sections: Vec<&str> = defaults.keys().map(String::as_str).collect();
        assert_eq!(top, sections, "every section is documented");
        for section in DOCS {
            let values = section_values(&defaults, section.name).expect("a table");
            for (key, value) in values {
                // A sub-table is a field (`scylla.replication`) or its own section (`[cluster.control]`).
                let documented = section.fields.iter().any(|f| f.key == key)
                    || (value.is_table() && DOCS.iter().any(|s| s.name == format!("{}.{key}", section.name)));
                assert!(documented, "{}.{key} has no entry in config::DOCS", section.name);
            }
            // Optional keys must exist too: set each to its example and deserialize.
            for f in section.fields {
                assert!(!f.doc.is_empty());
                let value = match (values.get(f.key), f.example) {
                    (Some(v), _) => v.to_string(),
                    (None, Some(example)) => example.to_owned(),
                    (None, None) => panic!("{}.{} needs a default or an example", section.name, f.key),
                };
                let doc = format!("[{}]\n{} = {value}\n", section.name, f.key);
                toml::from_str::<NodeConfig>(&doc).unwrap_or_else(|e| panic!("{}.{}: {e}", section.name, f.key));
            }
        }
    }

    #[test]
    fn env_values_are_typed_by_the_defaults() {
        let config = load_env(&[
            ("ROOST__LOG__LEVEL", "true"),
            ("ROOST__SERVER__ALLOWED_ORIGINS", "https://a.example, https://b.example"),
            ("roost__limits__sync_page", "42"),
            ("ROOST__SERVER__TLS_CERT", ""),
        ])
        .expect("loads");
        assert_eq!(config.log.level, "true");
        assert_eq!(
            config.server.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(config.limits.sync_page, 42);
        assert_eq!(config.server.tls_cert, None, "empty values count as unset");
    }

    #[test]
    fn bad_env_names_are_rejected() {
        let err = load_env(&[("ROOST__SERVER____LISTEN", "x")]).expect_err("rejected");
        assert!(matches!(err, ConfigError::BadName { .. }), "{err}");
        // A different prefix is not ours.
        load_env(&[("ROOST_CONFIG", "/etc/roost.toml")]).expect("ignored");
    }

    #[test]
    fn key_at_finds_nested_keys() {
        let text = "top = 1\n\n[server]\nlisten = \"x\"\nallowed_origins = [1, 2]\n\n[log]\nlevel = 3\n";
        let at = |needle: &str| key_at(text, text.find(needle).expect("present"));
        assert_eq!(at("top").as_deref(), Some("top"));
        assert_eq!(at("\"x\"").as_deref(), Some("server.listen"));
        assert_eq!(at("2]").as_deref(), Some("server.allowed_origins"));
        assert_eq!(at("log]").as_deref(), Some("log"));
        assert_eq!(at("3").as_deref(), Some("log.level"));
    }
}
