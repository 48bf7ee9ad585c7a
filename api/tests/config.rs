//! Configuration loading: layer precedence, error messages that name the key and its layer,
//! validation that reports every problem, and the shipped example file, which must stay equal to
//! the defaults so it never rots.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;

use roost_api::config::ConfigError;
use roost_api::config::LogFormat;
use roost_api::config::NodeConfig;
use roost_api::config::Origin;

const EXAMPLE: &str = include_str!("../../deploy/config/example.toml");

fn write_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    file
}

fn env(vars: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>()
        .into_iter()
}

fn flags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load_file(text: &str) -> (tempfile::NamedTempFile, Result<NodeConfig, ConfigError>) {
    let file = write_file(text);
    let result = NodeConfig::load(Some(file.path()), env(&[]), &[]);
    (file, result)
}

#[test]
fn defaults_are_valid_and_load_from_nothing() {
    assert_eq!(NodeConfig::default().validate(), Vec::<String>::new());
    let loaded = NodeConfig::load(None, env(&[]), &[]).expect("loads");
    assert_eq!(loaded, NodeConfig::default());
}

#[test]
fn file_then_env_then_flags() {
    let file = write_file(
        r#"
        [server]
        listen = "127.0.0.1:1000"
        heartbeat_secs = 5

        [limits]
        sync_page = 10

        [log]
        level = "warn"
        format = "json"
        "#,
    );
    let config = NodeConfig::load(
        Some(file.path()),
        env(&[
            ("ROOST__SERVER__LISTEN", "127.0.0.1:2000"),
            ("roost__Limits__SYNC_PAGE", "20"),
            ("ROOST__STORAGE__DATA_DIR", "/from/env"),
            ("ROOST__LOG__FORMAT", ""),
            ("UNRELATED", "1"),
        ]),
        &flags(&[("server.listen", "127.0.0.1:3000")]),
    )
    .expect("loads");

    assert_eq!(
        config.server.listen,
        SocketAddr::from(([127, 0, 0, 1], 3000)),
        "flag wins"
    );
    assert_eq!(config.limits.sync_page, 20, "env beats file");
    assert_eq!(config.storage.data_dir, PathBuf::from("/from/env"));
    assert_eq!(config.server.heartbeat_secs, 5, "file beats defaults");
    assert_eq!(config.log.level, "warn");
    assert_eq!(config.log.format, LogFormat::Json, "an empty env value counts as unset");
    assert_eq!(
        config.auth,
        NodeConfig::default().auth,
        "untouched sections keep defaults"
    );
}

#[test]
fn unknown_key_in_file_is_named_with_the_file() {
    let (file, result) = load_file("[server]\nlisen = \"127.0.0.1:1\"\n");
    let err = result.expect_err("unknown key");
    assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
    assert_eq!(err.key(), Some("server.lisen"));
    assert_eq!(err.origin(), Some(&Origin::File(file.path().to_owned())));
    let message = err.to_string();
    assert!(message.contains("`server.lisen`"), "{message}");
    assert!(message.contains(&file.path().display().to_string()), "{message}");
    assert!(message.contains("`listen`"), "lists what is expected: {message}");

    let (_file, result) = load_file("[sever]\nlisten = \"127.0.0.1:1\"\n");
    let err = result.expect_err("unknown section");
    assert_eq!(err.key(), Some("sever"), "{err}");
}

#[test]
fn unknown_key_in_env_is_named_with_the_variable() {
    let err = NodeConfig::load(None, env(&[("ROOST__SERVER__LISEN", "x")]), &[]).expect_err("unknown key");
    assert_eq!(err.key(), Some("server.lisen"));
    assert_eq!(err.origin(), Some(&Origin::Env("ROOST__SERVER__LISEN".into())));
    let message = err.to_string();
    assert!(message.contains("ROOST__SERVER__LISEN"), "{message}");
    assert!(message.contains("server.lisen"), "{message}");
}

#[test]
fn bad_value_types_are_named() {
    let (file, result) = load_file("[limits]\nsync_page = \"many\"\n");
    let err = result.expect_err("bad type");
    assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err:?}");
    assert_eq!(err.key(), Some("limits.sync_page"));
    assert_eq!(err.origin(), Some(&Origin::File(file.path().to_owned())));

    let err = NodeConfig::load(None, env(&[("ROOST__SERVER__HEARTBEAT_SECS", "soon")]), &[]).expect_err("bad type");
    assert_eq!(err.key(), Some("server.heartbeat_secs"));
    assert!(err.to_string().contains("ROOST__SERVER__HEARTBEAT_SECS"), "{err}");

    let err = NodeConfig::load(None, env(&[]), &flags(&[("server.listen", "nowhere")])).expect_err("bad address");
    assert_eq!(err.key(), Some("server.listen"));
    assert_eq!(err.origin(), Some(&Origin::Flag("server.listen".into())));

    let err = NodeConfig::load(None, env(&[("ROOST__STORAGE__DURABILITY", "sometimes")]), &[]).expect_err("bad enum");
    assert_eq!(err.key(), Some("storage.durability"));
}

#[test]
fn syntax_errors_name_the_file() {
    let (file, result) = load_file("[server\nlisten = 1\n");
    let err = result.expect_err("syntax");
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().contains(&file.path().display().to_string()));

    let missing = Path::new("/nonexistent/roost.toml");
    let err = NodeConfig::load(Some(missing), env(&[]), &[]).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
}

#[test]
fn commented_toml_round_trips_to_defaults() {
    let text = NodeConfig::commented_toml();
    let parsed: NodeConfig = toml::from_str(&text).expect("parses");
    assert_eq!(parsed, NodeConfig::default());
    // Every set key is preceded by its documentation.
    for line in text.lines().filter(|l| !l.starts_with('#') && l.contains(" = ")) {
        let before = text.split(line).next().expect("found");
        assert!(
            before.trim_end().lines().last().is_some_and(|l| l.starts_with("# ")),
            "{line} is undocumented"
        );
    }
}

#[test]
fn example_toml_is_the_defaults() {
    let parsed: NodeConfig = toml::from_str(EXAMPLE).expect("example.toml parses");
    assert_eq!(parsed, NodeConfig::default());
    assert!(
        EXAMPLE == NodeConfig::commented_toml(),
        "deploy/config/example.toml is stale; regenerate it with \
         `cargo run -p roost-api -- genconfig --output deploy/config/example.toml --force`"
    );
}

#[test]
fn the_checkpoint_interval_reaches_the_embedded_store() {
    let config: NodeConfig = toml::from_str("[storage]\ncheckpoint_interval_ms = 5000\n").expect("parses");
    assert_eq!(config.storage.embedded_options().checkpoint_interval_ms, 5000);
    assert_eq!(
        NodeConfig::default().storage.embedded_options().checkpoint_interval_ms,
        1000
    );
}

#[test]
fn validate_reports_every_problem_at_once() {
    let mut config = NodeConfig::default();
    config.server.tls_cert = Some("/nonexistent/cert.pem".into());
    config.server.heartbeat_secs = 100;
    config.server.client_timeout_secs = 50;
    config.server.allowed_origins = vec!["https://chat.example.com/".into()];
    config.limits.max_frame_bytes = 1024;
    config.limits.outbound_queue = 0;
    config.auth.argon2_parallelism = 0;
    config.engine.max_group_members = 1;
    config.storage.checkpoint_interval_ms = 0;
    config.log.level = "info,=,".into();

    let problems = config.validate();
    for needle in [
        "server.tls_key",
        "server.heartbeat_secs",
        "server.allowed_origins",
        "limits.max_frame_bytes",
        "limits.outbound_queue",
        "auth.argon2",
        "engine.max_group_members",
        "storage.checkpoint_interval_ms",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem mentions {needle}: {problems:#?}"
        );
    }
}

#[test]
fn tls_files_must_be_readable() {
    let mut config = NodeConfig::default();
    config.server.tls_cert = Some("/nonexistent/cert.pem".into());
    config.server.tls_key = Some("/nonexistent/key.pem".into());
    let problems = config.validate();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("server.tls_cert") && problems[1].contains("server.tls_key"));
}

#[test]
fn frame_limit_follows_the_body_limit() {
    let mut config = NodeConfig::default();
    config.engine.max_body_bytes = 1024 * 1024;
    let problems = config.validate();
    assert!(
        problems.iter().any(|p| p.contains("limits.max_frame_bytes")),
        "{problems:#?}"
    );
    config.limits.max_frame_bytes = 1024 * 1024 + 4096;
    assert_eq!(config.validate(), Vec::<String>::new());
    // A smaller REST body limit only keeps the largest messages off REST: a warning.
    let warnings = config.warnings();
    assert!(
        warnings.iter().any(|w| w.contains("limits.max_request_body_bytes")),
        "{warnings:#?}"
    );
}

/// A cluster node's configuration that passes validation: the shared backends, the internal
/// listener, and readable (here: empty) certificate files.
fn cluster_config(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.storage.backend = roost_api::config::StorageBackend::Scylla;
    config.presence.backend = roost_engine::presence::PresenceBackend::Redis;
    config.server.internal_listen = Some(SocketAddr::from(([127, 0, 0, 1], 9090)));
    let c = &mut config.cluster;
    c.enabled = true;
    c.node_id = Some(1);
    for (name, slot) in [
        ("ca.pem", &mut c.ca_cert),
        ("node-1.pem", &mut c.node_cert),
        ("node-1.key", &mut c.node_key),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, "").expect("write");
        *slot = Some(path);
    }
    config
}

#[test]
fn a_complete_cluster_config_is_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = cluster_config(dir.path());
    assert_eq!(config.validate(), Vec::<String>::new());
    assert_eq!(config.cluster.advertised_peer().as_deref(), Some("127.0.0.1:7070"));
    assert_eq!(
        config.cluster.advertised_client(config.server.listen).as_deref(),
        Some("127.0.0.1:8080")
    );
    // Disabled, nothing of it is checked (the defaults are a single node).
    assert!(!NodeConfig::default().cluster.enabled);
}

#[test]
fn bad_cluster_configs_are_rejected_with_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = cluster_config(dir.path());
    config.cluster.node_id = Some(0);
    config.cluster.cluster_id = " ".into();
    config.cluster.node_key = None;
    config.cluster.ca_cert = Some("/nonexistent/ca.pem".into());
    config.storage.backend = roost_api::config::StorageBackend::Embedded;
    config.presence.backend = roost_engine::presence::PresenceBackend::Local;
    config.server.internal_listen = None;
    config.cluster.control.renew_ms = 1_000;
    let problems = config.validate();
    for needle in [
        "cluster.node_id must be set",
        "cluster.cluster_id",
        "cluster.node_key must be set",
        "cluster.ca_cert: cannot read /nonexistent/ca.pem",
        "storage.backend = \"scylla\"",
        "presence.backend = \"redis\"",
        "server.internal_listen",
        "cluster.control.renew_ms must be at most a third of cluster.control.lease_ms",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem mentions {needle}: {problems:#?}"
        );
    }
    assert!(problems.iter().all(|p| !p.contains("advertise")), "{problems:#?}");
}

#[test]
fn cluster_addresses_must_be_dialable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = cluster_config(dir.path());
    config.cluster.peer_listen = SocketAddr::from(([0, 0, 0, 0], 7070));
    config.server.listen = SocketAddr::from(([0, 0, 0, 0], 8080));
    let problems = config.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("cluster.advertise_peer must be set")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("cluster.advertise_client must be set")),
        "{problems:#?}"
    );
    config.cluster.advertise_peer = Some("10.0.0.1:7070".into());
    config.cluster.advertise_client = Some("chat.example.com".into());
    let problems = config.validate();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("cluster.advertise_client `chat.example.com` is not host:port"));
    config.cluster.advertise_client = Some("chat.example.com:443".into());
    assert_eq!(config.validate(), Vec::<String>::new());

    config.cluster.peer_listen = SocketAddr::from(([127, 0, 0, 1], 9090));
    let problems = config.validate();
    assert!(
        problems.iter().any(|p| p.contains("cluster.peer_listen")),
        "{problems:#?}"
    );
}

#[test]
fn cluster_control_settings_load_from_a_sub_table_and_the_environment() {
    let (_file, result) = load_file("[cluster]\nnode_id = 3\n\n[cluster.control]\nlease_ms = 3000\n");
    let config = result.expect("loads");
    assert_eq!(
        (config.cluster.node_id, config.cluster.control.lease_ms),
        (Some(3), 3000)
    );

    let vars = [
        ("ROOST__CLUSTER__CONTROL__FAILURE_TIMEOUT_MS", "5000"),
        ("ROOST__CLUSTER__ADVERTISE_PEER", "node2.internal:7070"),
        ("ROOST__CLUSTER__NODE_ID", "2"),
    ];
    let config = NodeConfig::load(None, env(&vars), &[]).expect("loads");
    assert_eq!(config.cluster.control.failure_timeout_ms, 5000);
    assert_eq!(config.cluster.advertise_peer.as_deref(), Some("node2.internal:7070"));
    assert_eq!(config.cluster.node_id, Some(2));

    let (file, result) = load_file("[cluster.control]\nlease = 1\n");
    let err = result.expect_err("unknown key");
    assert_eq!(err.key(), Some("cluster.control.lease"), "{err}");
    assert_eq!(err.origin(), Some(&Origin::File(file.path().to_owned())));
    assert!(err.to_string().contains("`lease_ms`"), "lists what is expected: {err}");
}
