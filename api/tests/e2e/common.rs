//! Test harness: runs the real `roost` binary on a free loopback port with its own data
//! directory, and talks to it over real sockets (HTTP with awc, WebSocket with awc).
//!
//! Storage backend: `ROOST_E2E_BACKEND=embedded` (default) or `scylla`. With `scylla`, every
//! [`Node`] gets a keyspace of its own on the CQL node at `ROOST_CQL` (default
//! `127.0.0.1:9042`; `scripts/cassandra.sh start` runs one), migrated when the node (or the
//! offline CLI) first opens it, and dropped when the `Node` is dropped (kept, with its name
//! printed, when the test is failing). An unreachable CQL node fails the test; it never skips.

use std::io::Write;
use std::net::TcpListener;
use std::net::TcpStream;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use actix_codec::Framed;
use awc::ws;
use awc::BoxedSocket;
use futures_util::SinkExt;
use futures_util::StreamExt;
use serde_json::json;
use serde_json::Value;

pub const PASSWORD: &str = "correct horse battery";

/// Where a [`Node`] keeps its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// The embedded store in the node's temporary directory.
    Embedded,
    /// A fresh keyspace on the CQL node at `contact_point` (`host:port`).
    Scylla { contact_point: String },
}

impl Storage {
    /// The backend chosen by `ROOST_E2E_BACKEND` (`embedded` by default, or `scylla` with the
    /// CQL node at `ROOST_CQL`, default `127.0.0.1:9042`). Any other value fails the test.
    pub fn from_env() -> Storage {
        match std::env::var("ROOST_E2E_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("embedded") => Storage::Embedded,
            Ok("scylla") => Storage::Scylla {
                contact_point: std::env::var("ROOST_CQL").unwrap_or_else(|_| "127.0.0.1:9042".to_owned()),
            },
            Ok(other) => panic!("ROOST_E2E_BACKEND must be `embedded` or `scylla`, not `{other}`"),
        }
    }

    pub fn is_scylla(&self) -> bool {
        matches!(self, Storage::Scylla { .. })
    }
}

/// One `roost` server process and its data directory (and, on `scylla`, its keyspace).
pub struct Node {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub storage: Storage,
    /// The node's own keyspace when `storage` is `Scylla`.
    pub keyspace: Option<String>,
    /// The port of a separate internal listener (health and metrics), when the node has one.
    pub internal_port: Option<u16>,
    extra_config: String,
    child: Option<Child>,
    /// PEM of the node's certificate when it serves HTTPS/WSS.
    tls_cert_pem: Option<Vec<u8>>,
}

/// A port that was free a moment ago. Nothing keeps it free until `roost` binds it (another
/// process may take it first): [`Node::start`] notices and moves to another port.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A keyspace name no other node (of this or another test process) uses: letters, digits and
/// `_`, at most 48 characters.
fn unique_keyspace() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("e2e_{}_{n}_{:08x}", std::process::id(), rand::random::<u32>())
}

/// Fail at once, saying what to do, when nothing accepts connections at the CQL address.
fn require_cql(contact_point: &str) {
    let hint = format!(
        "ROOST_E2E_BACKEND=scylla but no CQL node is reachable at {contact_point}: run \
         `scripts/cassandra.sh start` (or point ROOST_CQL at a ScyllaDB/Cassandra node)"
    );
    let addr = contact_point
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("{hint}; the address does not resolve"));
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        panic!("{hint}; connecting failed: {e}");
    }
}

/// `DROP KEYSPACE` on a thread of its own (`Drop` cannot await, and the test's runtime may be
/// gone). Best effort: Cassandra's state is throwaway, so a failure is only reported.
fn drop_keyspace(contact_point: &str, keyspace: &str) {
    let options = roost_engine::store::scylla::ScyllaOptions {
        contact_points: vec![contact_point.to_owned()],
        keyspace: keyspace.to_owned(),
        request_timeout_ms: 30_000,
        connect_timeout_ms: 2_000,
        ..Default::default()
    };
    let statement = format!("DROP KEYSPACE IF EXISTS {keyspace}");
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let session = roost_engine::store::scylla::open_session(&options)
                .await
                .map_err(|e| e.to_string())?;
            session
                .query_unpaged(statement, ())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
    .join();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("e2e: could not drop keyspace {keyspace}: {e}"),
        Err(_) => eprintln!("e2e: the thread dropping a keyspace panicked"),
    }
}

impl Node {
    /// A node with test-friendly settings plus `extra` TOML appended (e.g. a `[limits]` table),
    /// on the backend `ROOST_E2E_BACKEND` selects.
    pub fn new(extra: &str) -> Node {
        Node::with_storage(extra, Storage::from_env())
    }

    /// A node on an explicit storage backend (the fault tests use their own Cassandra).
    pub fn with_storage(extra: &str, storage: Storage) -> Node {
        let keyspace = match &storage {
            Storage::Embedded => None,
            Storage::Scylla { contact_point } => {
                require_cql(contact_point);
                Some(unique_keyspace())
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node {
            dir,
            port: free_port(),
            storage,
            keyspace,
            internal_port: None,
            extra_config: extra.to_owned(),
            child: None,
            tls_cert_pem: None,
        };
        node.write_config();
        node
    }

    /// A node whose health and metrics are served on a separate internal listener.
    pub fn with_internal_listener() -> Node {
        let mut node = Node::new("");
        node.internal_port = Some(free_port());
        node.write_config();
        node
    }

    /// A node serving HTTPS/WSS with a development certificate made by `roost cert dev`.
    pub fn new_tls() -> Node {
        let mut node = Node::new("");
        let tls_dir = node.dir.path().join("tls");
        let out = node
            .roost()
            .args(["cert", "dev", "--out-dir"])
            .arg(&tls_dir)
            .args(["--host", "127.0.0.1"])
            .output()
            .expect("roost cert dev");
        assert!(
            out.status.success(),
            "cert dev: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = tls_dir.join("cert.pem");
        let key = tls_dir.join("key.pem");
        node.extra_config = format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        );
        node.tls_cert_pem = Some(std::fs::read(&cert).expect("cert.pem"));
        node.write_config();
        node
    }

    /// An HTTP client for this node (trusting its certificate when it has one).
    pub fn client(&self) -> awc::Client {
        let builder = awc::Client::builder().timeout(Duration::from_secs(30));
        let Some(pem) = &self.tls_cert_pem else {
            return builder.finish();
        };
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            roots.add(cert.expect("pem")).expect("add root");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        builder
            .connector(awc::Connector::new().rustls_0_23(std::sync::Arc::new(config)))
            .finish()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("roost.toml")
    }

    fn write_config(&self) {
        let data = self.dir.path().join("data");
        let internal = self
            .internal_port
            .map(|port| format!("internal_listen = \"127.0.0.1:{port}\"\n"))
            .unwrap_or_default();
        let mut sections = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n{internal}shutdown_grace_secs = 2\n{}\n",
            self.port,
            section_body(&self.extra_config, "server")
        );
        let backend = if self.storage.is_scylla() { "scylla" } else { "embedded" };
        sections.push_str(&format!(
            "[storage]\nbackend = \"{backend}\"\ndata_dir = \"{}\"\n{}\n",
            data.display(),
            section_body(&self.extra_config, "storage")
        ));
        if let (Storage::Scylla { contact_point }, Some(keyspace)) = (&self.storage, &self.keyspace) {
            // Extra `[scylla]` keys override these defaults (a key may appear only once in TOML).
            let extra = section_body(&self.extra_config, "scylla");
            let mut body = String::new();
            for (key, value) in [
                ("contact_points", format!("[\"{contact_point}\"]")),
                ("keyspace", format!("\"{keyspace}\"")),
                ("apply_migrations_on_start", "true".to_owned()),
                ("replication", "{ datacenter1 = 1 }".to_owned()),
                // Cassandra on two busy cores (shared with benchmarks): schema changes, LWTs and
                // the driver's first metadata fetch can be slow.
                ("request_timeout_ms", "20000".to_owned()),
                ("connect_timeout_ms", "10000".to_owned()),
            ] {
                if !extra
                    .lines()
                    .any(|line| line.split('=').next().map(str::trim) == Some(key))
                {
                    body.push_str(&format!("{key} = {value}\n"));
                }
            }
            sections.push_str(&format!("[scylla]\n{body}{extra}\n"));
        }
        // Cheap password hashing: tests log in often; production defaults are OWASP's.
        sections.push_str(&format!(
            "[auth]\nargon2_memory_kib = 1024\nargon2_iterations = 1\n{}\n",
            section_body(&self.extra_config, "auth")
        ));
        for other in ["limits", "engine", "log", "presence", "redis"] {
            let body = section_body(&self.extra_config, other);
            if !body.is_empty() {
                sections.push_str(&format!("[{other}]\n{body}\n"));
            }
        }
        std::fs::write(self.config_path(), sections).expect("write config");
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls_cert_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{}", self.port, path)
    }

    /// A URL on the internal listener (see [`Node::with_internal_listener`]).
    pub fn internal_url(&self, path: &str) -> String {
        let port = self.internal_port.expect("the node has an internal listener");
        format!("http://127.0.0.1:{port}{path}")
    }

    pub fn ws_url(&self) -> String {
        let scheme = if self.tls_cert_pem.is_some() { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}/v1/ws", self.port)
    }

    fn roost(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roost"));
        cmd.env("RUST_LOG", "warn");
        cmd
    }

    /// Create a user with the offline CLI (the server must be stopped).
    pub fn add_user_offline(&self, username: &str, admin: bool) -> u64 {
        let mut cmd = self.roost();
        cmd.args(["user", "add", "--config"]).arg(self.config_path()).args([
            "--username",
            username,
            "--password-stdin",
        ]);
        if admin {
            cmd.arg("--admin");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn roost user add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .expect("write password");
        let out = child.wait_with_output().expect("roost user add");
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(|c: char| !c.is_ascii_digit())
            .rfind(|s| !s.is_empty())
            .and_then(|s| s.parse().ok())
            .expect("user id printed")
    }

    /// Start the server and wait until it is ready. The ports were free when the node was made,
    /// but another process (another test's server, any outgoing connection) may have taken one
    /// since: then `roost` exits with "address in use" and it is started again on a fresh port.
    /// Readiness counts only once this child has logged that it listens, so a server of another
    /// test that happens to answer on the same port is never taken for this one.
    pub async fn start(&mut self) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            match self.try_start().await {
                Ok(()) => return,
                Err(taken) if attempt < ATTEMPTS => {
                    eprintln!("e2e: {taken} was taken before roost could bind it; trying another port");
                    match taken {
                        Taken::Public => self.port = free_port(),
                        Taken::Internal => self.internal_port = Some(free_port()),
                    }
                    self.write_config();
                }
                Err(taken) => panic!("{taken} taken {ATTEMPTS} times in a row: {}", self.log()),
            }
        }
    }

    async fn try_start(&mut self) -> Result<(), Taken> {
        assert!(self.child.is_none(), "already running");
        let log_path = self.dir.path().join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log");
        // The log is appended to across restarts: only what this child writes counts.
        let log_start = log.metadata().expect("log metadata").len() as usize;
        let child = self
            .roost()
            // "Roost is listening." (info) proves that this child bound its ports; info is also
            // the default level, so the log keeps everything a failing test may need.
            .env("RUST_LOG", "info")
            .args(["serve", "--config"])
            .arg(self.config_path())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn roost serve");
        self.child = Some(child);
        let ready = match self.internal_port {
            Some(_) => self.internal_url("/readyz"),
            None => self.url("/readyz"),
        };
        self.wait_ready(&ready, log_start).await
    }

    async fn wait_ready(&mut self, ready: &str, log_start: usize) -> Result<(), Taken> {
        // A scylla node connects to Cassandra and checks its schema first.
        let limit = Duration::from_secs(if self.storage.is_scylla() { 60 } else { 30 });
        let deadline = Instant::now() + limit;
        let client = self.client();
        loop {
            let this_child_listens = self
                .log()
                .get(log_start..)
                .is_some_and(|written| written.contains("Roost is listening."));
            if this_child_listens {
                if let Ok(resp) = client.get(ready).send().await {
                    if resp.status().is_success() {
                        if self.storage.is_scylla() {
                            // Proof that the node really runs on CQL: no embedded store was made.
                            let redb = self.dir.path().join("data").join("roost.redb");
                            assert!(!redb.exists(), "a scylla node created {}", redb.display());
                        }
                        return Ok(());
                    }
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = self.log();
                    let written = log.get(log_start..).unwrap_or_default();
                    let in_use = |key: &str| written.contains(&format!("({key}): ")) && written.contains("in use");
                    if in_use("server.listen") {
                        return Err(Taken::Public);
                    }
                    if in_use("server.internal_listen") {
                        return Err(Taken::Internal);
                    }
                    panic!("roost exited during start ({status}): {log}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "roost not ready in {limit:?}: {}",
                self.log()
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The server's process id while it runs.
    #[allow(dead_code)] // used by the faults binary
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process started by [`Node::start`] is still alive.
    #[allow(dead_code)] // used by the faults binary
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if let (Storage::Scylla { contact_point }, Some(keyspace)) = (&self.storage, &self.keyspace) {
            if std::thread::panicking() {
                eprintln!("e2e: the test failed; keeping keyspace {keyspace} on {contact_point} for inspection");
            } else {
                drop_keyspace(contact_point, keyspace);
            }
        }
    }
}

/// Which of a node's ports another process took before `roost` could bind it.
#[derive(Debug)]
enum Taken {
    Public,
    Internal,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Taken::Public => "the public port",
            Taken::Internal => "the internal port",
        })
    }
}

/// The lines of `[name]` in a small TOML snippet (tests pass flat sections only).
fn section_body(toml: &str, name: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in toml.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            inside = trimmed == format!("[{name}]");
            continue;
        }
        if inside && !trimmed.is_empty() {
            out.push_str(trimmed);
            out.push('\n');
        }
    }
    out
}

/// REST helper: method + path + optional bearer + optional JSON body -> (status, JSON).
pub async fn http(node: &Node, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = node.client();
    let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, node.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let mut resp = match body {
        Some(body) => req.send_json(&body).await,
        None => req.send().await,
    }
    .expect("http request");
    let status = resp.status().as_u16();
    let bytes = resp.body().limit(16 * 1024 * 1024).await.expect("body");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, json)
}

/// Open (or find) the direct conversation of the token's user with `peer`; returns its id.
pub async fn open_direct(node: &Node, token: &str, peer: u64) -> u64 {
    let body = json!({"peer": peer});
    let (status, direct) = http(node, "POST", "/v1/conversations/direct", Some(token), Some(body)).await;
    assert_eq!(status, 200, "open direct conversation: {direct}");
    direct["id"].as_u64().expect("conversation id")
}

pub async fn login(node: &Node, username: &str) -> String {
    let (status, body) = http(
        node,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"username": username, "password": PASSWORD, "device": "test"})),
    )
    .await;
    assert_eq!(status, 200, "login {username}: {body}");
    body["token"].as_str().expect("token").to_owned()
}

/// Create a user through the admin API; returns its id.
pub async fn create_user(node: &Node, admin_token: &str, username: &str) -> u64 {
    let body = json!({"username": username, "password": PASSWORD});
    let (status, body) = http(node, "POST", "/v1/admin/users", Some(admin_token), Some(body)).await;
    assert!(status == 200 || status == 201, "create {username}: {status} {body}");
    body["id"].as_u64().expect("user id")
}

/// A WebSocket client that answers pings and parses JSON text frames.
pub struct WsClient {
    framed: Framed<BoxedSocket, ws::Codec>,
    pub welcome: Value,
}

/// How a connection ended, when it did.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    Eof,
}

impl WsClient {
    /// Connect and sync from nothing (discarding history), so live events flow from here on.
    pub async fn connect(node: &Node, token: &str) -> WsClient {
        let mut client = Self::connect_unsynced(node, token).await;
        client
            .send(json!({"type": "sync", "ref": "connect-sync", "conversations": {}, "limit": 200}))
            .await;
        loop {
            let frame = client.next_json().await.expect("open while syncing");
            if frame["type"] == "synced" && frame["ref"] == "connect-sync" {
                return client;
            }
        }
    }

    /// Connect without syncing: live events are held until this client sends `sync`.
    pub async fn connect_unsynced(node: &Node, token: &str) -> WsClient {
        Self::try_connect(node, token).await.expect("WebSocket connect")
    }

    pub async fn try_connect(node: &Node, token: &str) -> Result<WsClient, u16> {
        let result = node
            .client()
            .ws(node.ws_url())
            .bearer_auth(token)
            .max_frame_size(1 << 20)
            .connect()
            .await;
        let (_, framed) = match result {
            Ok(ok) => ok,
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => return Err(status.as_u16()),
            Err(e) => panic!("ws connect: {e}"),
        };
        let mut client = WsClient {
            framed,
            welcome: Value::Null,
        };
        let welcome = client.next_json().await.expect("welcome frame");
        assert_eq!(welcome["type"], "welcome", "first frame is welcome: {welcome}");
        client.welcome = welcome;
        Ok(client)
    }

    pub async fn send(&mut self, frame: Value) {
        self.framed
            .send(ws::Message::Text(frame.to_string().into()))
            .await
            .expect("ws send");
    }

    /// Send a frame; `false` if the connection is gone (for clients that reconnect).
    #[allow(dead_code)] // used by the faults binary
    pub async fn try_send(&mut self, frame: Value) -> bool {
        self.framed
            .send(ws::Message::Text(frame.to_string().into()))
            .await
            .is_ok()
    }

    /// The next JSON frame if one arrives within `wait` (`None`: nothing yet, the connection is
    /// still usable), or how the connection ended. Never panics on a broken connection.
    pub async fn poll_json(&mut self, wait: Duration) -> Option<Result<Value, Closed>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = match actix_rt::time::timeout(left, self.framed.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Err(Closed::Eof)),
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                ws::Frame::Text(bytes) => {
                    return Some(Ok(serde_json::from_slice(&bytes).expect("server frames are JSON")))
                }
                ws::Frame::Ping(payload) => {
                    let _ = self.framed.send(ws::Message::Pong(payload)).await;
                }
                ws::Frame::Close(reason) => {
                    return Some(Err(reason.map_or(Closed::Eof, |r| Closed::Code(u16::from(r.code)))))
                }
                _ => {}
            }
        }
    }

    pub async fn send_raw(&mut self, message: ws::Message) {
        self.framed.send(message).await.expect("ws send raw");
    }

    /// Next JSON frame within 10 s; `Err` with how the connection closed.
    pub async fn next_json(&mut self) -> Result<Value, Closed> {
        self.next_json_within(Duration::from_secs(10)).await
    }

    pub async fn next_json_within(&mut self, wait: Duration) -> Result<Value, Closed> {
        loop {
            let frame = match actix_rt::time::timeout(wait, self.framed.next()).await {
                Err(_) => panic!("no frame within {wait:?}"),
                Ok(None) => return Err(Closed::Eof),
                Ok(Some(Err(e))) => panic!("ws protocol error: {e}"),
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                ws::Frame::Text(bytes) => return Ok(serde_json::from_slice(&bytes).expect("server frames are JSON")),
                ws::Frame::Ping(payload) => {
                    let _ = self.framed.send(ws::Message::Pong(payload)).await;
                }
                ws::Frame::Close(reason) => return Err(reason.map_or(Closed::Eof, |r| Closed::Code(u16::from(r.code)))),
                _ => {}
            }
        }
    }

    /// Next frame of the given type, skipping others (presence, typing, receipts...).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self
                .next_json()
                .await
                .unwrap_or_else(|c| panic!("closed ({c:?}) waiting for {kind}"));
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// The ack (or error) for request `reference`, skipping everything else.
    pub async fn reply_to(&mut self, reference: &str) -> Value {
        loop {
            let frame = self
                .next_json()
                .await
                .unwrap_or_else(|c| panic!("closed ({c:?}) waiting for {reference}"));
            if frame["ref"] == reference {
                return frame;
            }
        }
    }

    /// Send a message and wait for its ack; returns the seq.
    pub async fn send_message(&mut self, conversation: u64, client_msg_id: &str, text: &str) -> u64 {
        self.send(json!({"type": "send", "ref": client_msg_id, "conversation": conversation, "client_msg_id": client_msg_id, "body": {"text": text}})).await;
        let reply = self.reply_to(client_msg_id).await;
        assert_eq!(reply["type"], "ack", "send {client_msg_id}: {reply}");
        reply["seq"].as_u64().expect("seq")
    }

    /// Wait until the connection is closed; returns how.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match self.next_json_within(Duration::from_secs(10)).await {
                Ok(_) => continue,
                Err(closed) => return closed,
            }
        }
    }

    pub async fn ping_pong(&mut self) {
        self.send(json!({"type": "ping", "ref": "alive?"})).await;
        let pong = self.reply_to("alive?").await;
        assert_eq!(pong["type"], "pong");
    }
}

/// The whole history of a conversation over REST, oldest first.
pub async fn history(node: &Node, token: &str, conversation: u64) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/v1/conversations/{conversation}/events?after={after}&limit=200");
        let (status, page) = http(node, "GET", &path, Some(token), None).await;
        assert_eq!(status, 200, "{page}");
        let batch = page["events"].as_array().expect("events").clone();
        if batch.is_empty() {
            return events;
        }
        after = batch.last().expect("an event")["seq"].as_u64().expect("seq");
        events.extend(batch);
    }
}

/// Events with `seq` of one conversation in the order received, from a list of frames.
pub fn seqs_of(frames: &[Value], conversation: u64) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "event" && f["conversation"] == conversation)
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect()
}
