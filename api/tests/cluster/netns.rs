//! Where the nodes of a test cluster live on the network: all on loopback, or each in a network
//! namespace of its own, so that a partition can cut one node off from its peers.
//!
//! Namespaces: a bridge in the root namespace (`10.213.N.1/24`) and, per node, a namespace with a
//! veth pair whose inside end is `10.213.N.(10 + id)`. A partition is blackhole routes inside the
//! namespaces, between the isolated node and every other node only: the isolated node keeps its
//! clients and its store (the dangerous case: an owner that can still write but lost its lease).
//! Cassandra and Redis listen on 127.0.0.1 of the root namespace, which a namespace cannot reach,
//! so TCP relays in this process forward `bridge:9042` and `bridge:6390` to them (no change to the
//! scripts). The CQL driver then learns the node's address from Cassandra itself (`127.0.0.1:9042`,
//! its rpc_address) and connects there, so each namespace also gets a relay thread of its own
//! (entered with setns) listening on its 127.0.0.1:9042 and forwarding to the bridge. The test itself reaches each node's listeners through relays on 127.0.0.1 as well,
//! so every node has a loopback address for the test whatever the network.

use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// All nodes on 127.0.0.1, or each in its own namespace.
pub enum Network {
    Loopback,
    Namespaces(Namespaces),
}

/// The bridge, the namespaces made so far, and the relays.
pub struct Namespaces {
    tag: String,
    subnet: [u8; 3],
    nodes: Vec<u64>,
    relays: Relays,
    cql: SocketAddr,
    /// Stops the relay threads inside the namespaces (so the namespaces can go away).
    inside: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// Run `ip` with `args`; panics with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Network {
    /// Nodes in network namespaces (needs root and `ip`): makes the bridge and the storage relays.
    pub fn namespaces(cql: SocketAddr, redis: SocketAddr) -> Network {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("rc{}{}", pid % 10_000, n % 10);
        let subnet = [10, 213, ((pid + n * 37) % 250) as u8];
        let bridge = format!("{tag}br");
        let gateway = format!("{}.{}.{}.1", subnet[0], subnet[1], subnet[2]);
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let relays = Relays::new();
        let gateway_ip: IpAddr = gateway.parse().expect("gateway");
        relays.relay(SocketAddr::new(gateway_ip, cql.port()), cql);
        relays.relay(SocketAddr::new(gateway_ip, redis.port()), redis);
        Network::Namespaces(Namespaces {
            tag,
            subnet,
            nodes: Vec::new(),
            relays,
            cql,
            inside: Vec::new(),
        })
    }

    /// The address node `id` listens on.
    pub fn host(&self, id: u64) -> IpAddr {
        match self {
            Network::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Network::Namespaces(ns) => ns.node_ip(id),
        }
    }

    /// Where the nodes reach Cassandra and Redis (ports unchanged).
    pub fn storage_host(&self) -> IpAddr {
        match self {
            Network::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Network::Namespaces(ns) => ns.gateway(),
        }
    }

    /// Gives node `id` a place on the network (a namespace) before its first start.
    pub fn attach(&mut self, id: u64) {
        if let Network::Namespaces(ns) = self {
            ns.attach(id);
        }
    }

    /// A port on 127.0.0.1 that reaches `port` of node `id` (itself on loopback, else a relay).
    pub fn expose(&self, id: u64, port: u16) -> u16 {
        match self {
            Network::Loopback => port,
            Network::Namespaces(ns) => {
                let local = SocketAddr::from(([127, 0, 0, 1], 0));
                ns.relays.relay(local, SocketAddr::new(ns.node_ip(id), port))
            }
        }
    }

    /// `program` run inside node `id`'s namespace, or as is.
    pub fn command(&self, id: u64, program: &str) -> Command {
        match self {
            Network::Loopback => Command::new(program),
            Network::Namespaces(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns.name(id), program]);
                cmd
            }
        }
    }

    /// Cuts node `id` off from every other node (both directions), or heals that cut.
    pub fn partition(&self, id: u64, cut: bool) {
        let Network::Namespaces(ns) = self else {
            panic!("partitions need network namespaces");
        };
        let verb = if cut { "add" } else { "del" };
        for &other in ns.nodes.iter().filter(|&&o| o != id) {
            for (inside, target) in [(id, other), (other, id)] {
                let route = format!("{}/32", ns.node_ip(target));
                ip(&["-n", &ns.name(inside), "route", verb, "blackhole", &route]);
            }
        }
    }
}

impl Namespaces {
    fn name(&self, id: u64) -> String {
        format!("{}n{id}", self.tag)
    }

    fn gateway(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], 1))
    }

    fn node_ip(&self, id: u64) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(
            self.subnet[0],
            self.subnet[1],
            self.subnet[2],
            10 + id as u8,
        ))
    }

    fn attach(&mut self, id: u64) {
        if self.nodes.contains(&id) {
            return;
        }
        let (name, veth, bridge) = (self.name(id), format!("{}v{id}", self.tag), format!("{}br", self.tag));
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&["link", "set", &veth, "master", &bridge, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{}/24", self.node_ip(id)),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &name,
            "route",
            "add",
            "default",
            "via",
            &self.gateway().to_string(),
        ]);
        let listen = SocketAddr::from(([127, 0, 0, 1], self.cql.port()));
        let upstream = SocketAddr::new(self.gateway(), self.cql.port());
        self.inside.push(relay_inside(&name, listen, upstream));
        self.nodes.push(id);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for stop in self.inside.drain(..) {
            let _ = stop.send(());
        }
        for &id in &self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &self.name(id)]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}br", self.tag)])
            .status();
    }
}

/// TCP relays on a runtime of their own (one thread), stopped when dropped.
pub struct Relays {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Relays {
    pub fn new() -> Relays {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("relay runtime");
        Relays { runtime: Some(runtime) }
    }

    /// Accepts on `listen` (port 0: any) and forwards each connection to `upstream`; returns the
    /// port it listens on.
    pub fn relay(&self, listen: SocketAddr, upstream: SocketAddr) -> u16 {
        let runtime = self.runtime.as_ref().expect("running");
        let std_listener = std::net::TcpListener::bind(listen).unwrap_or_else(|e| panic!("relay bind {listen}: {e}"));
        let port = std_listener.local_addr().expect("local addr").port();
        std_listener.set_nonblocking(true).expect("nonblocking");
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
        runtime.spawn(serve(listener, upstream));
        port
    }
}

/// Accepts forever, forwarding each connection to `upstream`.
async fn serve(listener: tokio::net::TcpListener, upstream: SocketAddr) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            let connect = tokio::net::TcpStream::connect(upstream);
            if let Ok(Ok(mut outbound)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// A relay on a thread that moved into namespace `ns`: listens on `listen` there and connects to
/// `upstream` from there. Returns once it listens; sending on the answer (or dropping it) stops it.
fn relay_inside(ns: &str, listen: SocketAddr, upstream: SocketAddr) -> tokio::sync::oneshot::Sender<()> {
    use std::os::fd::AsFd;
    let path = format!("/var/run/netns/{ns}");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .expect("bind inside the namespace");
            let _ = ready_tx.send(());
            tokio::select! {
                _ = serve(listener, upstream) => {}
                _ = stop_rx => {}
            }
        });
    });
    ready_rx.recv().expect("relay inside the namespace started");
    stop_tx
}

impl Drop for Relays {
    fn drop(&mut self) {
        // Dropped inside the test's async context: a blocking shutdown would panic there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
