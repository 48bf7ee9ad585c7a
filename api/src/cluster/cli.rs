//! The `roost cluster` commands: make certificates, and initialize, inspect and shrink a running
//! cluster through a node's admin endpoints.
//!
//! Certificates are made locally (`roost_cluster::certs`); everything else is an HTTP request to
//! one node's internal listener ([`AdminClient`]), which answers for the cluster (a node forwards
//! what needs the Raft leader). Each command prints what it did for a person and returns an error
//! whose message says what to check; `main` turns it into the exit code.

use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use anyhow::Context;
use roost_cluster::certs;
use roost_cluster::node::ClusterStatus;
use roost_engine::ids::NodeId;

use super::client::AdminClient;
use super::client::Response;

/// How often `remove` checks the progress of a handover.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Longest a remove request may take (the node gives up after two minutes).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(150);

/// A `--node ID[:host,host...]` argument: a node id and the extra names its certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: NodeId,
    pub hosts: Vec<String>,
}

impl std::str::FromStr for NodeSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (id, hosts) = text.split_once(':').unwrap_or((text, ""));
        let id = id
            .parse::<u64>()
            .ok()
            .filter(|&id| id > 0)
            .ok_or_else(|| format!("`{text}`: expected ID[:host,host...] with a node id of 1 or more"))?;
        let hosts = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(NodeSpec { id: NodeId(id), hosts })
    }
}

/// `roost cluster certs`: a CA (or the one already in `out`) and a certificate per node.
pub fn certs(out: &Path, nodes: &[NodeSpec], cluster_id: &str, force: bool) -> anyhow::Result<()> {
    let ca_path = out.join("ca.pem");
    let ca = if ca_path.exists() && !force {
        eprintln!(
            "Using the existing CA in {} (pass --force to replace it with a new one).",
            out.display()
        );
        certs::read_ca(out).context("cannot read the existing CA")?
    } else {
        if ca_path.exists() {
            remove_old(out, nodes)?;
            eprintln!(
                "Replacing the CA in {}: certificates it signed earlier are no longer trusted by nodes \
                 using the new ca.pem.",
                out.display()
            );
        }
        certs::make_ca(cluster_id).context("cannot make the cluster CA")?
    };
    let pairs: Vec<(NodeId, Vec<String>)> = nodes.iter().map(|n| (n.id, n.hosts.clone())).collect();
    certs::write_bundle(out, &ca, &pairs).context("cannot write the certificates")?;

    let dir = out.canonicalize().unwrap_or_else(|_| out.to_owned());
    let path = |name: String| toml::Value::from(dir.join(name).display().to_string());
    eprintln!("Wrote to {}:", dir.display());
    eprintln!("  ca.pem, ca.key   the cluster CA (keep ca.key off the nodes; it signs new members)");
    for node in nodes {
        let names = std::iter::once(certs::node_server_name(node.id))
            .chain(["localhost".to_owned(), "127.0.0.1".to_owned()])
            .chain(node.hosts.iter().cloned())
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!("  node-{0}.pem, node-{0}.key   node {0}, valid for {names}", node.id);
    }
    for node in nodes {
        println!("# node {}: in its [cluster] section", node.id);
        println!("node_id = {}", node.id);
        println!("ca_cert = {}", path("ca.pem".into()));
        println!("node_cert = {}", path(format!("node-{}.pem", node.id)));
        println!("node_key = {}", path(format!("node-{}.key", node.id)));
    }
    Ok(())
}

/// `--force`: remove the old CA and the listed nodes' files, so new ones can be written.
fn remove_old(out: &Path, nodes: &[NodeSpec]) -> anyhow::Result<()> {
    let mut names: Vec<String> = vec!["ca.pem".into(), "ca.key".into()];
    for node in nodes {
        names.push(format!("node-{}.pem", node.id));
        names.push(format!("node-{}.key", node.id));
    }
    for name in names {
        let path: PathBuf = out.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
    Ok(())
}

/// `roost cluster init`: make the node at `admin` a new cluster of one.
pub fn init(admin: &str) -> anyhow::Result<()> {
    let client = AdminClient::new(admin)?;
    let status: ClusterStatus = json(client.post("/admin/cluster/init")?, "initializing the cluster")?;
    println!(
        "Initialized a cluster on node {} with {} shards.",
        status.node_id, status.shard_count
    );
    print!("{}", render_status(&status));
    println!("Start the other nodes with `roost serve --join <this node's cluster.advertise_peer>`.");
    Ok(())
}

/// `roost cluster status`: a table, or the JSON as the node answered it.
pub fn status(admin: &str, as_json: bool) -> anyhow::Result<()> {
    let client = AdminClient::new(admin)?;
    let response = client.get("/admin/cluster/status")?;
    if as_json && response.is_success() {
        println!("{}", String::from_utf8_lossy(&response.body));
        return Ok(());
    }
    let status: ClusterStatus = json(response, "reading the cluster status")?;
    print!("{}", render_status(&status));
    Ok(())
}

/// `roost cluster remove`: hand `node`'s shards over and remove it, printing the progress.
pub fn remove(admin: &str, node: NodeId) -> anyhow::Result<()> {
    let client = AdminClient::new(admin)?;
    let before: ClusterStatus = json(client.get("/admin/cluster/status")?, "reading the cluster status")?;
    let Some(member) = before.members.iter().find(|m| m.id == node) else {
        anyhow::bail!(
            "node {node} is not a member of the cluster (members: {})",
            member_ids(&before)
        );
    };
    println!("Removing node {node}: handing over its {} shards.", member.shards);
    let mut remover = client.clone();
    remover.timeout = Some(REMOVE_TIMEOUT);
    let path = format!("/admin/cluster/remove/{node}");
    let request = thread::spawn(move || remover.post(&path));
    let mut last = None;
    while !request.is_finished() {
        thread::sleep(PROGRESS_EVERY);
        let status = client.get("/admin/cluster/status").ok();
        let Some(status) = status.and_then(|r| json::<ClusterStatus>(r, "").ok()) else {
            continue;
        };
        let now = status
            .members
            .iter()
            .find(|m| m.id == node)
            .map(|m| (m.status, m.shards));
        if now != last {
            match now {
                Some((state, shards)) => println!("  node {node}: {state}, {shards} shards left"),
                None => println!("  node {node}: no longer a member"),
            }
            last = now;
        }
    }
    let response = request
        .join()
        .map_err(|_| anyhow::anyhow!("the remove request thread panicked"))??;
    let after: ClusterStatus = json(response, &format!("removing node {node}"))?;
    println!("Node {node} is removed; its process can be stopped.");
    print!("{}", render_status(&after));
    Ok(())
}

/// The body of a successful answer as `T`, or an error naming `doing` and the node's message.
fn json<T: serde::de::DeserializeOwned>(response: Response, doing: &str) -> anyhow::Result<T> {
    if !response.is_success() {
        anyhow::bail!("{doing} failed: HTTP {}: {}", response.status, response.error_text());
    }
    serde_json::from_slice(&response.body)
        .with_context(|| format!("{doing}: the node's answer is not a cluster status"))
}

fn member_ids(status: &ClusterStatus) -> String {
    let ids: Vec<String> = status.members.iter().map(|m| m.id.to_string()).collect();
    match ids.is_empty() {
        true => "none".into(),
        false => ids.join(", "),
    }
}

/// The status as a table: one line per member, the leader marked `*`.
pub fn render_status(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let leader = status.leader.map_or_else(|| "none".to_owned(), |l| l.to_string());
    let _ = writeln!(
        out,
        "Cluster (as node {} sees it): leader {leader}, term {}, {} shards, {} unassigned",
        status.node_id, status.term, status.shard_count, status.unassigned
    );
    if status.members.is_empty() {
        let _ = writeln!(out, "No members yet: run `roost cluster init` on one node.");
        return out;
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut rows = vec![["ID", "STATUS", "SHARDS", "VOTER", "REACHABLE", "PEER", "CLIENT"].map(String::from)];
    for m in &status.members {
        let mark = if Some(m.id) == status.leader { "*" } else { "" };
        rows.push([
            format!("{}{mark}", m.id),
            m.status.to_string(),
            m.shards.to_string(),
            yes(m.voter).into(),
            yes(m.reachable).into(),
            m.peer_addr.clone(),
            m.client_addr.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use roost_cluster::node::MemberInfo;
    use roost_cluster::MemberStatus;

    use super::*;

    #[test]
    fn node_specs() {
        let spec: NodeSpec = "2:10.0.0.2, node2.example".parse().expect("parses");
        assert_eq!(spec.id, NodeId(2));
        assert_eq!(spec.hosts, ["10.0.0.2", "node2.example"]);
        let spec: NodeSpec = "3".parse().expect("parses");
        assert!(spec.hosts.is_empty());
        let spec: NodeSpec = "4:::1".parse().expect("an IPv6 host");
        assert_eq!(spec.hosts, ["::1"]);
        assert!("0".parse::<NodeSpec>().is_err());
        assert!("x:host".parse::<NodeSpec>().is_err());
    }

    #[test]
    fn certs_reuse_the_ca_unless_forced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = |s: &str| s.parse::<NodeSpec>().expect("spec");
        certs(dir.path(), &[spec("1"), spec("2:node2")], "test", false).expect("first");
        let ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca");
        certs(dir.path(), &[spec("3")], "test", false).expect("a new node, same CA");
        assert_eq!(std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca"), ca);
        assert!(dir.path().join("node-3.key").exists());
        certs(dir.path(), &[spec("1")], "test", true).expect("forced");
        assert_ne!(std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca"), ca);
    }

    #[test]
    fn status_table() {
        let member = |id: u64, status, shards| MemberInfo {
            id: NodeId(id),
            peer_addr: format!("127.0.0.1:707{id}"),
            client_addr: format!("127.0.0.1:808{id}"),
            status,
            shards,
            shard_ids: Vec::new(),
            voter: id < 3,
            reachable: id != 2,
        };
        let status = ClusterStatus {
            node_id: NodeId(1),
            leader: Some(NodeId(1)),
            term: 2,
            members: vec![
                member(1, MemberStatus::Active, 128),
                member(2, MemberStatus::Leaving, 0),
            ],
            shard_count: 256,
            unassigned: 128,
        };
        let table = render_status(&status);
        assert!(
            table.contains("leader 1, term 2, 256 shards, 128 unassigned"),
            "{table}"
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("ID  STATUS"), "{table}");
        assert!(lines[2].starts_with("1*  active   128"), "{table}");
        assert!(lines[3].contains("leaving") && lines[3].contains("no  "), "{table}");
    }
}
