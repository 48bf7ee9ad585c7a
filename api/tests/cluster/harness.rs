//! `TestCluster`: real `roost` processes forming one cluster, driven only through the operator
//! surface (`roost cluster certs`, `roost cluster init`, `roost serve --join`, `roost cluster
//! status`, `roost cluster remove`, and the internal listener's `/admin/cluster/*`).
//!
//! Every test gets a fresh Cassandra keyspace shared by its nodes (`roost_cl_<pid>_<random>`,
//! dropped at the end unless the test failed), a fresh Redis key prefix, fresh certificates, and
//! small control-plane timings ([`FAST`]) so failover takes about a second. Each node is a
//! `common::Node` used as a handle (data directory, config path, log, and the loopback port the
//! test reaches its public listener on); the process itself is started here, because cluster
//! nodes need `--join` and, in network namespaces, `ip netns exec`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use roost_cluster::shard_of;
use roost_cluster::ClusterConfig;
use roost_engine::ids::ConversationId;
use serde_json::Value;

use crate::common::http;
use crate::common::login;
use crate::common::Node;
use crate::common::Storage;
use crate::netns::Network;

pub const CLUSTER_ID: &str = "roost-test";
/// Certificates are made for this many node ids up front (scale-out adds nodes later).
const MAX_NODES: u64 = 5;
/// Ports inside a namespace (each node has its own address there).
const NS_PORTS: (u16, u16, u16) = (8080, 8081, 7070);

/// The `[cluster.control]` settings of every test node: lease 600 ms, failure timeout 1 s (at
/// least lease * 1.002 + 100 ms, ARCHITECTURE.md ("Fencing across ownership changes")).
pub const FAST: ClusterConfig = ClusterConfig {
    shard_count: 16,
    lease_ms: 600,
    renew_ms: 150,
    failure_timeout_ms: 1_000,
    heartbeat_ms: 50,
    election_min_ms: 250,
    election_max_ms: 500,
    rebalance_interval_ms: 200,
};

/// [`FAST`], or the lease, renewal and failure timeout (ms) given as
/// `ROOST_CLUSTER_TEST_TIMING=lease,renew,failure` (to measure failover with other settings).
fn timing() -> ClusterConfig {
    let mut t = FAST;
    if let Ok(spec) = std::env::var("ROOST_CLUSTER_TEST_TIMING") {
        let ms: Vec<u64> = spec.split(',').filter_map(|v| v.trim().parse().ok()).collect();
        if let [lease, renew, failure] = ms[..] {
            (t.lease_ms, t.renew_ms, t.failure_timeout_ms) = (lease, renew, failure);
        } else {
            panic!("ROOST_CLUSTER_TEST_TIMING must be lease,renew,failure in ms, got {spec:?}");
        }
    }
    t
}

/// Which network the nodes live on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Net {
    Loopback,
    Namespaces,
}

/// One node: its handle (directory, config, log, public port as the test reaches it), its
/// internal listener as the test reaches it, its peer address, and its process.
pub struct ClusterNode {
    pub id: u64,
    pub handle: Node,
    pub admin_port: u16,
    pub peer_addr: String,
    child: Option<Child>,
}

impl ClusterNode {
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn ws_url(&self) -> String {
        self.handle.ws_url()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `lines` lines of the node's log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.handle.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The whole cluster; dropping it kills every process, removes the namespaces and (when the test
/// passed) drops the keyspace.
pub struct TestCluster {
    pub nodes: BTreeMap<u64, ClusterNode>,
    pub net: Network,
    pub admin_token: String,
    certs: PathBuf,
    keyspace: String,
    redis_prefix: String,
    cql: SocketAddr,
    redis: SocketAddr,
    next_id: u64,
    /// Nodes cut off by [`TestCluster::isolate`]: `status` does not ask them.
    isolated: Vec<u64>,
    /// Owns the shared directory and, last of all, the keyspace (dropped when it is dropped).
    _shared: Node,
    /// This test's turn: one cluster at a time in this process (see [`ONE_CLUSTER_AT_A_TIME`]).
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// Cluster tests run one at a time even when the test harness runs threads in parallel: each
/// runs several nodes, and failure detection works on timings (a 1 s failure timeout) that two
/// clusters competing for 2 cores would stretch into false failovers.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_addr(var: &str, default: &str) -> SocketAddr {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_owned())
        .parse()
        .unwrap_or_else(|e| panic!("{var}: {e}"))
}

/// The `roost` binary with quiet logs except the cluster's own.
pub fn roost_command(net: &Network, node: Option<u64>) -> Command {
    let bin = env!("CARGO_BIN_EXE_roost");
    let mut cmd = match node {
        Some(id) => net.command(id, bin),
        None => Command::new(bin),
    };
    cmd.env("RUST_LOG", "warn,roost_cluster=info");
    cmd
}

/// Runs a `roost` CLI command to completion; panics with its output when it fails.
pub fn run_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_roost"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run roost");
    assert!(
        out.status.success(),
        "roost {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`run_cli`] on a thread of its own, polled, so the clients on this thread keep running.
pub async fn run_cli_async(args: Vec<String>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(|| run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        let _ = tx.send(result.map_err(|e| e.downcast_ref::<String>().cloned().unwrap_or_default()));
    });
    loop {
        match rx.try_recv() {
            Ok(Ok(out)) => return out,
            Ok(Err(why)) => panic!("{why}"),
            Err(std::sync::mpsc::TryRecvError::Empty) => actix_rt::time::sleep(Duration::from_millis(50)).await,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => panic!("the CLI thread died"),
        }
    }
}

/// Ports a loopback node's listeners get: below the kernel's ephemeral range (32768 and up by
/// default). A port from `bind(0)` is an ephemeral one: once released, the kernel can hand it out
/// again at random before the node binds it (to this process's next `bind(0)`, so two listeners
/// of one cluster could get the same port; to another test binary; as the local port of an
/// outgoing connection). No process gets ports from this range without asking for them by number.
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port for a node's listener, free now and never handed out before by this process (so no
/// two listeners, even of nodes killed and restarted on their ports, can get the same one).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let end = NODE_PORTS.end.min(ephemeral_low);
    assert!(
        end > NODE_PORTS.start + 1_000,
        "the ephemeral port range starts at {ephemeral_low}: no room for node ports below it"
    );
    for _ in 0..10_000 {
        let port = NODE_PORTS.start + rand::random::<u16>() % (end - NODE_PORTS.start);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {}..{end}", NODE_PORTS.start)
}

impl TestCluster {
    /// Node 1 started and initialised, then nodes 2..=n joined; returns once `status` shows `n`
    /// active members each owning shards and no unassigned shard. An admin user `root` exists.
    pub async fn start(n: u64, net: Net) -> TestCluster {
        let turn = ONE_CLUSTER_AT_A_TIME.lock().await;
        let cql = env_addr("ROOST_CQL", "127.0.0.1:9042");
        let redis = env_addr("ROOST_CLUSTER_REDIS", "127.0.0.1:6390");
        let mut shared = Node::with_storage(
            "",
            Storage::Scylla {
                contact_point: cql.to_string(),
            },
        );
        let tag = format!("{}_{:08x}", std::process::id(), rand::random::<u32>());
        let keyspace = format!("roost_cl_{tag}");
        shared.keyspace = Some(keyspace.clone());
        let net = match net {
            Net::Loopback => Network::Loopback,
            Net::Namespaces => Network::namespaces(cql, redis),
        };
        let certs = shared.dir.path().join("certs");
        let mut args = vec!["cluster".to_owned(), "certs".to_owned(), "--out".to_owned()];
        args.push(certs.display().to_string());
        for id in 1..=MAX_NODES {
            args.extend(["--node".to_owned(), format!("{id}:{}", net.host(id))]);
        }
        run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut cluster = TestCluster {
            nodes: BTreeMap::new(),
            net,
            admin_token: String::new(),
            certs,
            keyspace,
            redis_prefix: format!("roost_cl_{tag}:"),
            cql,
            redis,
            next_id: 1,
            isolated: Vec::new(),
            _shared: shared,
            _turn: turn,
        };
        let first = cluster.prepare_node();
        cluster.nodes[&first].handle.add_user_offline("root", true);
        cluster.spawn(first, None).await;
        run_cli(&["cluster", "init", "--admin", &cluster.nodes[&first].admin_url()]);
        cluster.wait_formed(1).await;
        for _ in 1..n {
            cluster.add_node().await;
        }
        cluster.admin_token = login(&cluster.nodes[&first].handle, "root").await;
        let cli = cluster.cli_status(first);
        assert_eq!(
            cli.active().len() as u64,
            n,
            "`roost cluster status --json` agrees: {}",
            cli.raw
        );
        cluster
    }

    /// Makes the directory, configuration and network place of the next node id.
    fn prepare_node(&mut self) -> u64 {
        let id = self.next_id;
        assert!(id <= MAX_NODES, "certificates exist for {MAX_NODES} nodes only");
        self.next_id += 1;
        self.net.attach(id);
        let (public, internal, peer) = match self.net {
            Network::Loopback => (free_port(), free_port(), free_port()),
            Network::Namespaces(_) => NS_PORTS,
        };
        let mut handle = Node::with_storage(
            "",
            Storage::Scylla {
                contact_point: self.cql.to_string(),
            },
        );
        handle.keyspace = None; // the shared handle drops the keyspace, once
        handle.port = self.net.expose(id, public);
        let admin_port = self.net.expose(id, internal);
        let peer_addr = SocketAddr::new(self.net.host(id), peer).to_string();
        let node = ClusterNode {
            id,
            handle,
            admin_port,
            peer_addr,
            child: None,
        };
        std::fs::write(node.handle.config_path(), self.config_toml(&node, public, internal)).expect("config");
        self.nodes.insert(id, node);
        id
    }

    fn config_toml(&self, node: &ClusterNode, public: u16, internal: u16) -> String {
        let host = self.net.host(node.id);
        let store = self.net.storage_host();
        let dir = node.handle.dir.path();
        let t = timing();
        format!(
            "[server]\nlisten = \"{host}:{public}\"\ninternal_listen = \"{host}:{internal}\"\nshutdown_grace_secs = 2\n\
             [storage]\nbackend = \"scylla\"\ndata_dir = \"{data}\"\n\
             [scylla]\ncontact_points = [\"{store}:{cql}\"]\nkeyspace = \"{ks}\"\napply_migrations_on_start = true\n\
             replication = {{ datacenter1 = 1 }}\nrequest_timeout_ms = 20000\nconnect_timeout_ms = 10000\n\
             [presence]\nbackend = \"redis\"\n\
             [redis]\nurl = \"redis://{store}:{redis}\"\nkey_prefix = \"{prefix}\"\nheartbeat_secs = 1\npresence_ttl_secs = 3\n\
             [auth]\nargon2_memory_kib = 1024\nargon2_iterations = 1\n\
             [cluster]\nenabled = true\nnode_id = {id}\ncluster_id = \"{CLUSTER_ID}\"\npeer_listen = \"{peer}\"\n\
             advertise_peer = \"{peer}\"\nadvertise_client = \"127.0.0.1:{client}\"\n\
             ca_cert = \"{certs}/ca.pem\"\nnode_cert = \"{certs}/node-{id}.pem\"\nnode_key = \"{certs}/node-{id}.key\"\n\
             [cluster.control]\n{control}",
            control = toml::to_string(&t).expect("control settings as TOML"),
            data = dir.join("data").display(),
            cql = self.cql.port(),
            ks = self.keyspace,
            redis = self.redis.port(),
            prefix = self.redis_prefix,
            id = node.id,
            peer = node.peer_addr,
            client = node.handle.port,
            certs = self.certs.display(),
        )
    }

    /// Starts node `id` (`roost serve`, with `--join seed` for a new member) and waits until its
    /// internal listener answers `/healthz`.
    async fn spawn(&mut self, id: u64, join: Option<String>) {
        let node = self.nodes.get_mut(&id).expect("node");
        assert!(node.child.is_none(), "node {id} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.handle.dir.path().join("server.log"))
            .expect("log");
        let mut cmd = roost_command(&self.net, Some(id));
        cmd.args(["serve", "--config"]).arg(node.handle.config_path());
        if let Some(seed) = join {
            cmd.args(["--join", &seed]);
        }
        let child = cmd
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn roost serve");
        node.child = Some(child);
        let url = format!("{}/healthz", node.admin_url());
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = awc::Client::builder().timeout(Duration::from_secs(2)).finish();
        loop {
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    return;
                }
            }
            let node = self.nodes.get_mut(&id).expect("node");
            assert!(
                node.is_running(),
                "node {id} exited during start:\n{}",
                node.log_tail(60)
            );
            assert!(
                Instant::now() < deadline,
                "node {id} not healthy in 60 s:\n{}",
                node.log_tail(60)
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One member as `/admin/cluster/status` lists it.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub status: String,
    /// How many shards it owns.
    pub shards: usize,
    /// Which, when the status lists them (`shard_ids`, or `shards` as a list).
    pub shard_ids: Option<Vec<u32>>,
}

/// A parsed `/admin/cluster/status` answer (the raw JSON is kept for messages).
#[derive(Clone, Debug)]
pub struct Status {
    pub raw: Value,
}

/// A shard number from a list entry: a number, or an object with `shard` or `id`.
fn shard_number(entry: &Value) -> Option<u32> {
    let n = entry
        .as_u64()
        .or_else(|| entry["shard"].as_u64())
        .or_else(|| entry["id"].as_u64())?;
    u32::try_from(n).ok()
}

impl Status {
    pub fn members(&self) -> Vec<Member> {
        let list = self.raw["members"].as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|m| {
                let ids = [&m["shard_ids"], &m["shards"]].into_iter().find_map(|v| {
                    v.as_array()
                        .map(|a| a.iter().filter_map(shard_number).collect::<Vec<_>>())
                });
                Member {
                    id: m["id"].as_u64().expect("member id"),
                    status: m["status"].as_str().unwrap_or("?").to_ascii_lowercase(),
                    shards: m["shards"]
                        .as_u64()
                        .map_or_else(|| ids.as_ref().map_or(0, Vec::len), |n| n as usize),
                    shard_ids: ids,
                }
            })
            .collect()
    }

    pub fn active(&self) -> Vec<Member> {
        self.members().into_iter().filter(|m| m.status == "active").collect()
    }

    pub fn leader(&self) -> Option<u64> {
        self.raw["leader"].as_u64()
    }

    pub fn unassigned(&self) -> usize {
        match &self.raw["unassigned"] {
            Value::Array(list) => list.len(),
            value => value.as_u64().unwrap_or(0) as usize,
        }
    }

    pub fn shard_count(&self) -> NonZeroU32 {
        let n = self.raw["shard_count"].as_u64().unwrap_or(u64::from(FAST.shard_count));
        NonZeroU32::new(n as u32).expect("shards")
    }

    /// The member owning `conversation`'s shard; `None` when unowned or when the status does not
    /// say which shards each member owns (only how many).
    pub fn owner_of(&self, conversation: u64) -> Option<u64> {
        let shard = shard_of(ConversationId(conversation), self.shard_count()).0;
        self.members()
            .into_iter()
            .find(|m| m.shard_ids.as_ref().is_some_and(|ids| ids.contains(&shard)))
            .map(|m| m.id)
    }

    /// Whether the status names the shards of each member (so owners can be found).
    pub fn lists_shards(&self) -> bool {
        self.members().iter().all(|m| m.shard_ids.is_some())
    }

    /// A node owning some of `conversations`, not the leader if possible, and the conversations
    /// it owns. When the status gives only shard counts: any non-leader member owning shards, and
    /// all `conversations` (which ones it owns cannot be told).
    pub fn pick_owner(&self, conversations: &[u64]) -> (u64, Vec<u64>) {
        let leader = self.leader();
        if self.lists_shards() {
            let owners: Vec<u64> = conversations.iter().filter_map(|&c| self.owner_of(c)).collect();
            let victim = owners.iter().copied().find(|&o| Some(o) != leader).unwrap_or(owners[0]);
            let owned = conversations
                .iter()
                .copied()
                .filter(|&c| self.owner_of(c) == Some(victim))
                .collect();
            return (victim, owned);
        }
        let owning: Vec<u64> = self.active().iter().filter(|m| m.shards > 0).map(|m| m.id).collect();
        let victim = owning.iter().copied().find(|&o| Some(o) != leader).unwrap_or(owning[0]);
        println!("note: the status gives shard counts only; all conversations counted as affected");
        (victim, conversations.to_vec())
    }
}

impl TestCluster {
    /// The status as some running node's admin endpoint answers it (the first that does).
    pub async fn status(&mut self) -> Option<Status> {
        let client = awc::Client::builder().timeout(Duration::from_secs(2)).finish();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes.get_mut(&id).expect("node");
            if !node.is_running() || self.isolated.contains(&id) {
                continue;
            }
            let url = format!("{}/admin/cluster/status", node.admin_url());
            let Ok(mut resp) = client.get(&url).send().await else {
                continue;
            };
            if !resp.status().is_success() {
                continue;
            }
            if let Ok(raw) = resp.json::<Value>().await {
                return Some(Status { raw });
            }
        }
        None
    }

    /// Polls until `ok(status)` holds (60 s at most); returns that status.
    pub async fn wait_status(&mut self, what: &str, ok: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        loop {
            if let Some(status) = self.status().await {
                if ok(&status) {
                    return status;
                }
                last = Some(status.raw);
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .values()
                    .map(|n| format!("--- node {}:\n{}", n.id, n.log_tail(25)))
                    .collect();
                panic!(
                    "cluster never reached `{what}` in 60 s; last status {last:?}\n{}",
                    logs.join("\n")
                );
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `n` active members, each owning shards, nothing unassigned, the shards balanced (the most
    /// and least loaded members differ by one at most), and every running node ready.
    ///
    /// Balanced, not only "each owns some": the leader hands shards over per owner, and a handover
    /// that did not finish is retried in a later round, so a new member can own its first shards
    /// while others are still on their way; a test starting then sees `not_owner` answers.
    pub async fn wait_formed(&mut self, n: usize) -> Status {
        let what = format!("{n} active members owning shards, balanced, none unassigned");
        let status = self
            .wait_status(&what, |s| {
                let active = s.active();
                let most = active.iter().map(|m| m.shards).max().unwrap_or(0);
                let least = active.iter().map(|m| m.shards).min().unwrap_or(0);
                active.len() == n && s.unassigned() == 0 && least > 0 && most - least <= 1
            })
            .await;
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes.get_mut(&id).expect("node").is_running() {
                self.wait_ready(id).await;
            }
        }
        status
    }

    /// Waits until node `id`'s `/readyz` (internal listener) answers 200.
    pub async fn wait_ready(&self, id: u64) {
        let url = format!("{}/readyz", self.nodes[&id].admin_url());
        let client = awc::Client::builder().timeout(Duration::from_secs(2)).finish();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {id} not ready:\n{}",
                self.nodes[&id].log_tail(40)
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new node joined through the lowest running member; returns its id once formed.
    pub async fn add_node(&mut self) -> u64 {
        let seed = self.running()[0];
        let seed = self.nodes[&seed].peer_addr.clone();
        let members = self.status().await.map_or(0, |s| s.active().len());
        let id = self.prepare_node();
        self.spawn(id, Some(seed)).await;
        self.wait_formed(members + 1).await;
        id
    }

    /// SIGKILL node `id`.
    pub fn kill9(&mut self, id: u64) {
        self.nodes.get_mut(&id).expect("node").kill9();
    }

    /// Starts a killed member again, with its data directory (no `--join`: it was a member).
    pub async fn restart(&mut self, id: u64) {
        self.spawn(id, None).await;
    }

    /// `roost cluster remove id` through another member's admin endpoint (clients keep running).
    pub async fn remove(&mut self, id: u64) -> String {
        let via = self.running().into_iter().find(|&n| n != id).expect("another member");
        let via = &self.nodes[&via];
        let args = ["cluster", "remove", &id.to_string(), "--admin", &via.admin_url()];
        run_cli_async(args.iter().map(|s| s.to_string()).collect()).await
    }

    /// Cuts node `id` off from its peers (or heals it); `status` then asks only the others.
    pub fn isolate(&mut self, id: u64, cut: bool) {
        self.net.partition(id, cut);
        if cut {
            self.isolated.push(id);
        } else {
            self.isolated.retain(|&i| i != id);
        }
    }

    /// Whether node `id`'s process runs.
    pub fn is_running(&mut self, id: u64) -> bool {
        self.nodes.get_mut(&id).is_some_and(ClusterNode::is_running)
    }

    /// SIGTERM node `id` and wait (10 s) for it to exit; returns whether it exited cleanly.
    pub async fn terminate(&mut self, id: u64) -> bool {
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(child) = node.child.as_mut() else { return true };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                return status.success();
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        node.kill9();
        false
    }

    /// `roost cluster status --json` through node `id`.
    pub fn cli_status(&self, id: u64) -> Status {
        let out = run_cli(&["cluster", "status", "--json", "--admin", &self.nodes[&id].admin_url()]);
        Status {
            raw: serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}")),
        }
    }

    /// Every node as a client endpoint (peers skip the ones that do not answer).
    pub fn endpoints(&self) -> Vec<crate::traffic::Endpoint> {
        self.nodes
            .values()
            .map(|n| crate::traffic::Endpoint {
                node: n.id,
                ws_url: n.ws_url(),
            })
            .collect()
    }

    /// The lowest-numbered running node (for REST calls that any node answers).
    pub fn any_node(&mut self) -> &Node {
        let id = *self.running().first().expect("a running node");
        &self.nodes[&id].handle
    }

    /// The ids of the nodes whose process runs, in order.
    pub fn running(&mut self) -> Vec<u64> {
        self.nodes
            .values_mut()
            .filter_map(|n| n.is_running().then_some(n.id))
            .collect()
    }

    /// Creates users through the admin API and logs each in; returns (id, token) per name.
    pub async fn users(&mut self, names: &[String]) -> Vec<(u64, String)> {
        let token = self.admin_token.clone();
        let node = self.any_node();
        let mut out = Vec::new();
        for name in names {
            let body = serde_json::json!({"username": name, "password": crate::common::PASSWORD});
            let (status, user) = http_retry(node, "POST", "/v1/admin/users", Some(&token), Some(body)).await;
            assert!(status == 200 || status == 201, "create {name}: {status} {user}");
            out.push((user["id"].as_u64().expect("id"), login(node, name).await));
        }
        out
    }
}

/// `common::http`, retrying answers 503 (not owner, unavailable) for up to 30 s.
pub async fn http_retry(
    node: &Node,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = http(node, method, path, token, body.clone()).await;
        if status != 503 || Instant::now() > deadline {
            return (status, answer);
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            node.kill9();
        }
        if std::thread::panicking() {
            for node in self.nodes.values() {
                eprintln!(
                    "cluster test: node {} log {}",
                    node.id,
                    node.handle.dir.path().join("server.log").display()
                );
            }
            // Keep the directories (logs, raft.redb) of a failing test for inspection: a forgotten
            // handle never deletes its temporary directory.
            for node in std::mem::take(&mut self.nodes).into_values() {
                std::mem::forget(node.handle);
            }
        }
    }
}
