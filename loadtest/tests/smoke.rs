//! Smoke: runs the real `roost` server binary on a free loopback port with an admin user, runs a
//! short scenario in-process (with reconnect churn), and asserts the delivery contract held
//! (nothing lost, duplicated, reordered or skipped; something acked). Never asserts speed.
//!
//! The server binary is found next to this test's own build (`target/<profile>/roost`); the
//! workspace test command builds it. This test does not build it.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use roost_loadtest::config::RunConfig;
use roost_loadtest::config::RunOptions;
use roost_loadtest::provision;
use roost_loadtest::runner;
use roost_loadtest::scenario::GroupSpec;
use roost_loadtest::scenario::Scenario;
use roost_loadtest::target::Target;

const ADMIN_PASSWORD: &str = "smoke admin password";

/// `target/<profile>/roost`, from this test binary's location (`target/<profile>/deps/...`).
fn roost_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let binary = profile_dir.join("roost");
    assert!(
        binary.exists(),
        "the roost server binary is missing at {}; build it first with \
         `cargo build -p roost-api --bin roost` (scripts/test builds the whole workspace)",
        binary.display()
    );
    binary
}

/// A port that was free a moment ago. Nothing keeps it free until `roost` binds it (another
/// process may take it first): [`start_server`] notices and moves to another port.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `roost serve`, killed on drop.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let config = dir.join("roost.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 1\n\
         [storage]\ndata_dir = \"{}\"\n\
         [auth]\nregistration_open = false\nargon2_memory_kib = 1024\nargon2_iterations = 1\n\
         [limits]\nframes_per_sec = 10000\n[log]\nlevel = \"warn\"\n",
        dir.join("data").display()
    );
    std::fs::write(&config, toml).expect("write config");
    config
}

/// Start `roost serve` with an admin user, on a port of its own: once this returns, the server
/// that answers on `port` is this one (it logged that it listens). If another process took the
/// port first, the server exits with "address in use" and is started again on another port.
async fn start_server() -> Server {
    let binary = roost_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut port = free_port();
    let config = write_config(dir.path(), port);
    let mut add = Command::new(&binary)
        .args(["user", "add", "--config"])
        .arg(&config)
        .args(["--username", "admin", "--admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn roost user add");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
        .expect("password");
    let out = add.wait_with_output().expect("roost user add");
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log_path = dir.path().join("server.log");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    for attempt in 1..=5 {
        if attempt > 1 {
            port = free_port();
            write_config(dir.path(), port);
        }
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new(&binary)
            .args(["serve", "--config"])
            .arg(&config)
            // "Roost is listening." (info) proves that this child bound the port.
            .env("RUST_LOG", "warn,roost_api::server=info")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn roost serve");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = read_log();
            if log.contains("Roost is listening.") {
                return Server { child, dir, port };
            }
            if let Ok(Some(status)) = child.try_wait() {
                if log.contains("(server.listen): ") && log.contains("in use") {
                    eprintln!("smoke: port {port} was taken before roost could bind it; trying another");
                    break;
                }
                panic!("roost exited during start ({status}): {log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("roost did not start in time: {log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("the port was taken five times in a row: {}", read_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_keeps_the_delivery_contract() {
    let server = start_server().await;
    let url = format!("http://127.0.0.1:{}", server.port);
    let target = Target::resolve(&url, false).expect("loopback target");
    assert!(
        provision::wait_ready(&target, Duration::from_secs(30)).await,
        "roost did not become ready: {}",
        server.log()
    );

    let scenario = Scenario {
        name: Some("smoke-test".into()),
        urls: Some(vec![url]),
        users: Some(12),
        connect_rate: Some(100.0),
        direct_pairs: Some(3),
        groups: Some(vec![GroupSpec { size: 4, count: 2 }]),
        rate: Some(40.0),
        payload_bytes: Some(64),
        warmup_secs: Some(1),
        duration_secs: Some(4),
        drain_secs: Some(10),
        // Reconnects mid-run: resent sends must stay exactly-once, syncs must resume cleanly.
        churn_per_sec: Some(2.0),
        seed: Some(7),
        ..Scenario::default()
    };
    let options = RunOptions {
        admin_password: ADMIN_PASSWORD.into(),
        allow_remote: false,
        fail_on_correctness: true,
        default_prefix: "smoke".into(),
    };
    let config = RunConfig::build(scenario, options).expect("valid scenario");
    let summary = runner::run(config, true).await.expect("the run completes");

    let c = &summary.results.correctness;
    assert!(c.acked_messages > 0, "nothing was acked: {c:?}\n{}", server.log());
    assert_eq!(
        (c.lost, c.duplicated, c.reordered, c.gaps, c.undelivered, c.ack_mismatch),
        (0, 0, 0, 0, 0, 0),
        "contract violations: {:?}",
        c.examples
    );
    assert_eq!(summary.setup.connected, 12);
    assert!(summary.results.total.connects > 12, "churn reconnected some users");
    assert!(summary.results.total.delivered > 0);
    assert_eq!(summary.schema, "roost-loadtest/1");
    let json = serde_json::to_value(&summary).expect("summary serializes");
    assert!(json["results"]["latency_ms"]["deliver"]["p99_ms"].is_number());
}
