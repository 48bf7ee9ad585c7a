//! The fault tests' own database servers, started and stopped with the project's scripts on
//! ports and state directories of their own, so the shared Cassandra (9042) and Redis (6390)
//! that other suites use are never disturbed. Each is a guard: dropping it stops the server.

use std::io::BufRead;
use std::io::BufReader;
use std::io::Read;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

/// The workspace root (scripts/ and target/ live there).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("api/ has a parent")
        .to_path_buf()
}

/// Run a project script with `env`; panic with its output unless it succeeds.
fn run_script(script: &str, action: &str, env: &[(&str, String)]) -> String {
    let root = workspace_root();
    let mut command = Command::new(root.join("scripts").join(script));
    command.arg(action).current_dir(&root);
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/{script} {action}: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/{script} {action} failed ({}):\n{said}",
        out.status
    );
    eprintln!(
        "faults: scripts/{script} {action} took {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        said.trim()
    );
    said
}

/// A single-node Cassandra 5.0 of the fault tests: `scripts/cassandra.sh` with
/// `CASSANDRA_CQL_PORT`, `CASSANDRA_STORAGE_PORT` and `CASSANDRA_STATE_DIR` of its own
/// (`ROOST_FAULTS_CQL_PORT` [19042], `ROOST_FAULTS_STORAGE_PORT` [17000], state in
/// `target/cassandra-faults`). Restarts keep the data (`CASSANDRA_KEEP_DATA=1`).
pub struct FaultCassandra {
    cql_port: u16,
    storage_port: u16,
    state_dir: PathBuf,
}

fn port_from_env(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{var} must be a port, not {v}")))
        .unwrap_or(default)
}

impl FaultCassandra {
    /// Start it on empty data (the script wipes the node directory), waiting until CQL accepts
    /// connections.
    pub fn start() -> FaultCassandra {
        let cassandra = FaultCassandra {
            cql_port: port_from_env("ROOST_FAULTS_CQL_PORT", 19042),
            storage_port: port_from_env("ROOST_FAULTS_STORAGE_PORT", 17000),
            state_dir: workspace_root().join("target").join("cassandra-faults"),
        };
        cassandra.script("start", false);
        cassandra
    }

    pub fn contact_point(&self) -> String {
        format!("127.0.0.1:{}", self.cql_port)
    }

    /// Graceful stop (SIGTERM: Cassandra's shutdown hook drains, so every write it acknowledged
    /// is on disk); returns once the JVM has exited.
    pub fn stop(&self) {
        self.script("stop", false);
    }

    /// Start again on the same data directory.
    pub fn restart(&self) {
        self.script("start", true);
    }

    fn script(&self, action: &str, keep_data: bool) -> String {
        let mut env = vec![
            ("CASSANDRA_CQL_PORT", self.cql_port.to_string()),
            ("CASSANDRA_STORAGE_PORT", self.storage_port.to_string()),
            ("CASSANDRA_STATE_DIR", self.state_dir.display().to_string()),
        ];
        if keep_data {
            env.push(("CASSANDRA_KEEP_DATA", "1".to_owned()));
        }
        run_script("cassandra.sh", action, &env)
    }
}

impl Drop for FaultCassandra {
    fn drop(&mut self) {
        let root = workspace_root();
        let _ = Command::new(root.join("scripts").join("cassandra.sh"))
            .arg("stop")
            .current_dir(&root)
            .env("CASSANDRA_CQL_PORT", self.cql_port.to_string())
            .env("CASSANDRA_STORAGE_PORT", self.storage_port.to_string())
            .env("CASSANDRA_STATE_DIR", &self.state_dir)
            .output();
    }
}

/// A redis-server of the fault tests on `ROOST_FAULTS_REDIS_PORT` [6392], started with
/// `scripts/redis.sh` (no persistence: every start is empty).
pub struct FaultRedis {
    pub port: u16,
}

impl FaultRedis {
    pub fn start() -> FaultRedis {
        let redis = FaultRedis {
            port: port_from_env("ROOST_FAULTS_REDIS_PORT", 6392),
        };
        redis.script("start");
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pidfile(&self) -> PathBuf {
        workspace_root()
            .join("target")
            .join("redis")
            .join(self.port.to_string())
            .join("redis.pid")
    }

    /// SIGKILL the server (no shutdown, no goodbye to clients) and wait until it is gone.
    pub fn kill9(&self) {
        let pid = std::fs::read_to_string(self.pidfile()).expect("redis pidfile");
        let pid = pid.trim();
        let status = Command::new("kill").args(["-9", pid]).status().expect("kill -9");
        assert!(status.success(), "kill -9 {pid}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis still answers after kill -9");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start it again (empty: nothing was persisted).
    pub fn restart(&self) {
        self.script("start");
    }

    fn script(&self, action: &str) -> String {
        run_script("redis.sh", action, &[("ROOST_REDIS_PORT", self.port.to_string())])
    }
}

impl Drop for FaultRedis {
    fn drop(&mut self) {
        let root = workspace_root();
        let _ = Command::new(root.join("scripts").join("redis.sh"))
            .arg("stop")
            .current_dir(&root)
            .env("ROOST_REDIS_PORT", self.port.to_string())
            .output();
    }
}

/// One Redis command over a raw RESP connection (the tests look at Redis directly, not through
/// Roost). Returns the reply's bulk strings (an array reply flattened; a simple or bulk string
/// as one element); an error reply panics.
pub fn redis_command(port: u16, args: &[&str]) -> Vec<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).expect("write to redis");
    let mut reader = BufReader::new(stream);
    let mut out = Vec::new();
    read_reply(&mut reader, &mut out);
    out
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read from redis");
    line.trim_end_matches("\r\n").to_owned()
}

fn read_reply(reader: &mut BufReader<TcpStream>, out: &mut Vec<String>) {
    let line = read_line(reader);
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => out.push(rest.to_owned()),
        "-" => panic!("redis error: {rest}"),
        "$" => {
            let len: i64 = rest.parse().expect("bulk length");
            if len >= 0 {
                let mut buf = vec![0u8; len as usize + 2];
                reader.read_exact(&mut buf).expect("bulk string");
                buf.truncate(len as usize);
                out.push(String::from_utf8_lossy(&buf).into_owned());
            }
        }
        "*" => {
            let len: i64 = rest.parse().expect("array length");
            for _ in 0..len.max(0) {
                read_reply(reader, out);
            }
        }
        other => panic!("unexpected RESP reply type {other:?} in {line:?}"),
    }
}
