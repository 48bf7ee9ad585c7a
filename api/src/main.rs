//! `roost`: the Roost chat server binary.
//!
//! `roost` alone runs the server (`roost serve`). The other subcommands help operators: write a
//! commented config (`genconfig`), check one (`checkconfig`), apply the ScyllaDB schema
//! (`migrate`), create a user while the server is stopped (`user add`), make a development TLS
//! certificate (`cert dev`), and run a cluster (`cluster certs|init|status|remove`, implemented in
//! `roost_api::cluster::cli`).

use std::io::BufRead;
use std::io::IsTerminal;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clap::Parser;
use clap::Subcommand;
use roost_api::auth;
use roost_api::auth::NewAccount;
use roost_api::config::NodeConfig;
use roost_api::config::StorageBackend;
use roost_api::server;
use roost_api::tls;
use roost_api::wire::PROTOCOL_VERSION;
use roost_engine::ids::NodeId;

/// Roost: a self-hosted chat server.
#[derive(Debug, Parser)]
#[command(
    name = "roost",
    version,
    propagate_version = true,
    after_help = "Without a command, runs `roost serve`.\n\
                  Configuration: defaults < --config FILE < ROOST__<SECTION>__<KEY> environment \
                  variables < flags; `roost genconfig` shows every key."
)]
struct Cli {
    /// What to do; without one, `serve`.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Write a complete, commented configuration file with the defaults.
    Genconfig {
        /// Where to write it; `-` or nothing prints it.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Load and validate the configuration; print every problem. Exit code 1 if any. With
    /// storage.backend = "scylla", also try to reach the cluster.
    Checkconfig(ConfigArgs),
    /// Apply pending schema migrations to the ScyllaDB keyspace (creating it if missing) and
    /// print the versions applied. Safe to run again; the embedded store needs none.
    Migrate(ConfigArgs),
    /// Manage users directly in the data directory.
    #[command(subcommand)]
    User(UserCommand),
    /// TLS certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Run a cluster: certificates, init, status, remove.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print the version and the protocol version.
    Version,
}

/// Where the configuration comes from: the file, then `ROOST__SECTION__KEY` environment
/// variables, then these flags.
#[derive(Debug, Default, Args)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(short, long, value_name = "FILE", env = "ROOST_CONFIG")]
    config: Option<PathBuf>,
    /// Public listen address (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Join the cluster through this member's peer address (its cluster.advertise_peer, e.g.
    /// 10.0.0.1:7070). Retries for up to 60 s, then serves. Needs cluster.enabled.
    #[arg(long, value_name = "PEER_ADDR")]
    join: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Make the cluster CA and a certificate per node (ca.pem, ca.key, node-<id>.pem,
    /// node-<id>.key). An existing CA in DIR signs the new certificates, so nodes can be added
    /// later; nothing is overwritten without --force.
    Certs {
        /// Directory to write to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A node: its id and, after a colon, the host names or addresses it is reached by
        /// (repeatable), e.g. `--node 1:10.0.0.1,chat1.internal`.
        #[arg(long = "node", value_name = "ID[:HOST,...]", required = true)]
        nodes: Vec<roost_api::cluster::cli::NodeSpec>,
        /// The cluster's name, written into the CA (use the same as cluster.cluster_id).
        #[arg(long, value_name = "NAME", default_value = "roost")]
        cluster_id: String,
        /// Replace an existing CA (and the listed nodes' files) with new ones.
        #[arg(long)]
        force: bool,
    },
    /// Make the node at --admin a new cluster of one; it takes every shard.
    Init(AdminArgs),
    /// Show the members, their shards and the leader.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the JSON the node answers instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Hand a node's shards to the others, then remove it; waits until done.
    Remove {
        /// The id of the node to remove.
        #[arg(value_name = "NODE")]
        node: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// A node's internal listener (server.internal_listen), e.g. http://127.0.0.1:9090.
    #[arg(long, value_name = "URL", env = "ROOST_ADMIN")]
    admin: String,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user in the embedded store and print its id.
    ///
    /// Opens the store in storage.data_dir directly, so run it while the server is stopped. On a
    /// running server, an administrator uses `POST /v1/admin/users` instead.
    Add(UserAddArgs),
}

#[derive(Debug, Args)]
struct UserAddArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Login name (unique, case-insensitive).
    #[arg(long)]
    username: String,
    /// Name shown to others; defaults to the username.
    #[arg(long)]
    display_name: Option<String>,
    /// Make the user a server administrator.
    #[arg(long)]
    admin: bool,
    /// Read the password from the first line of standard input (for scripts).
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Make a self-signed certificate and key for development (cert.pem, key.pem).
    Dev {
        /// Directory to write cert.pem and key.pem to.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: PathBuf,
        /// Host names or IP addresses the certificate is valid for (repeatable).
        #[arg(long = "host", value_name = "NAME", default_values = ["localhost", "127.0.0.1", "::1"])]
        hosts: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or_else(|| Command::Serve(ServeArgs::default()));
    match run(command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("roost: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turn off glibc malloc's fast bins (`M_MXFAST = 0`), before any thread starts.
///
/// With fast bins, every allocation too large for them first runs `malloc_consolidate` over the
/// fast bins of the arena, and the store writer (redb's per-commit buffers) and the event loops
/// (per-delivery boxes) kept hitting it: it was 27% of the store writer's CPU under group
/// fan-out. Small blocks are still served by the per-thread cache. Measured in
/// docs/performance.md ("Allocator"): store writer 0.20-0.24 -> 0.16-0.20 cores in fan-out, with
/// the idle memory per connection unchanged (mimalloc, tried too, saves as much but needs 22 KiB
/// per idle connection instead of 13). If glibc refuses the setting, the defaults stay: nothing
/// depends on it but speed.
#[allow(unsafe_code)]
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; no allocation is in flight while the
    // single main thread calls it.
    unsafe {
        let _ = libc::mallopt(libc::M_MXFAST, 0);
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(&args),
        Command::Genconfig { output, force } => genconfig(output.as_deref(), force),
        Command::Checkconfig(args) => checkconfig(&args),
        Command::Migrate(args) => migrate(&args),
        Command::User(UserCommand::Add(args)) => user_add(args),
        Command::Cert(CertCommand::Dev { out_dir, hosts, force }) => cert_dev(&out_dir, &hosts, force),
        Command::Cluster(command) => cluster(command),
        Command::Version => {
            println!("roost {} (protocol v{PROTOCOL_VERSION})", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Defaults < file < `ROOST__*` environment < flags.
fn load(args: &ConfigArgs) -> anyhow::Result<NodeConfig> {
    let mut overrides = Vec::new();
    if let Some(listen) = args.listen {
        overrides.push(("server.listen".to_owned(), listen.to_string()));
    }
    if let Some(dir) = &args.data_dir {
        overrides.push(("storage.data_dir".to_owned(), dir.display().to_string()));
    }
    // Variables that are not UTF-8 cannot be configuration values; skip rather than panic.
    let env =
        std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    Ok(NodeConfig::load(args.config.as_deref(), env, &overrides)?)
}

/// Load and validate, or fail listing every problem.
fn load_valid(args: &ConfigArgs) -> anyhow::Result<NodeConfig> {
    let config = load(args)?;
    let problems = config.validate();
    if !problems.is_empty() {
        anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "));
    }
    Ok(config)
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load_valid(&args.config)?;
    actix_web::rt::System::new().block_on(server::run(config, args.join.clone()))?;
    Ok(ExitCode::SUCCESS)
}

fn cluster(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    use roost_api::cluster::cli;
    match command {
        ClusterCommand::Certs {
            out,
            nodes,
            cluster_id,
            force,
        } => cli::certs(&out, &nodes, &cluster_id, force)?,
        ClusterCommand::Init(args) => cli::init(&args.admin)?,
        ClusterCommand::Status { admin, json } => cli::status(&admin.admin, json)?,
        ClusterCommand::Remove { node, admin } => cli::remove(&admin.admin, NodeId(node))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn genconfig(output: Option<&Path>, force: bool) -> anyhow::Result<ExitCode> {
    let text = NodeConfig::commented_toml();
    match output {
        None => print!("{text}"),
        Some(path) if path == Path::new("-") => print!("{text}"),
        Some(path) => {
            if path.exists() && !force {
                anyhow::bail!("{} exists; pass --force to overwrite it", path.display());
            }
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("Wrote {}.", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn checkconfig(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = match load(args) {
        Ok(config) => config,
        Err(error) => {
            println!("{error:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in config.warnings() {
        println!("warning: {warning}");
    }
    let mut problems = config.validate();
    if problems.is_empty() && config.storage.backend == StorageBackend::Scylla {
        if let Err(problem) = probe_scylla(&config) {
            problems.push(problem);
        }
    }
    if problems.is_empty() {
        println!("configuration OK");
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        println!("problem: {problem}");
    }
    println!("{} problem(s) found", problems.len());
    Ok(ExitCode::FAILURE)
}

/// Connect to the configured CQL cluster with a short timeout and report its schema version.
fn probe_scylla(config: &NodeConfig) -> Result<(), String> {
    use roost_engine::store::scylla;
    let mut options = config.scylla.clone();
    options.connect_timeout_ms = options.connect_timeout_ms.min(3_000);
    options.request_timeout_ms = options.request_timeout_ms.min(5_000);
    actix_web::rt::System::new().block_on(async move {
        let session = scylla::open_session(&options)
            .await
            .map_err(|e| format!("the ScyllaDB backend is unreachable: {e}"))?;
        let versions = scylla::migrations::applied_versions(&session, &options)
            .await
            .map_err(|e| format!("the ScyllaDB backend answered but reading the schema failed: {e}"))?;
        let current = versions.last().copied().unwrap_or(0);
        println!(
            "scylla: reached {}; keyspace `{}` at schema version {current} (this build needs {})",
            options.contact_points.join(", "),
            options.keyspace,
            scylla::migrations::LATEST
        );
        if current < scylla::migrations::LATEST && !options.apply_migrations_on_start {
            return Err(
                "the keyspace needs migrations and scylla.apply_migrations_on_start is false: \
                        run `roost migrate`"
                    .to_owned(),
            );
        }
        Ok(())
    })
}

fn migrate(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    use roost_engine::store::scylla;
    let config = load_valid(args)?;
    if config.storage.backend != StorageBackend::Scylla {
        println!("storage.backend is not \"scylla\": nothing to migrate (the embedded store checks its format when it opens)");
        return Ok(ExitCode::SUCCESS);
    }
    let options = config.scylla.clone();
    let (applied, versions) = actix_web::rt::System::new().block_on(async move {
        let session = scylla::open_session(&options).await?;
        let applied = scylla::migrate(&session, &options).await?;
        let versions = scylla::migrations::applied_versions(&session, &options).await?;
        anyhow::Ok((applied, versions))
    })?;
    let keyspace = &config.scylla.keyspace;
    if applied.is_empty() {
        println!("keyspace `{keyspace}` is up to date (schema versions {versions:?})");
    } else {
        println!("keyspace `{keyspace}`: applied schema versions {applied:?} (now {versions:?})");
    }
    Ok(ExitCode::SUCCESS)
}

fn user_add(args: UserAddArgs) -> anyhow::Result<ExitCode> {
    let config = load_valid(&args.config)?;
    let password = read_password(args.password_stdin)?;
    let account = NewAccount {
        username: args.username,
        display_name: args.display_name,
        password,
        admin: args.admin,
    };
    let user = actix_web::rt::System::new().block_on(async move {
        let store = server::open_store(&config).await.map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\n`roost user add` opens the store directly: stop the server first, or use \
                 POST /v1/admin/users on the running server"
            )
        })?;
        let user = auth::create_account(store.as_ref(), &config.auth, account)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the user: {}", e.message))?;
        store.flush().await.context("flushing the store")?;
        anyhow::Ok(user)
    })?;
    println!("{}", user.id);
    Ok(ExitCode::SUCCESS)
}

/// The password from the first line of standard input (prompting first on a terminal).
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !from_stdin && stdin.is_terminal() {
        eprint!("Password (shown as typed; use --password-stdin in scripts): ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        anyhow::bail!("no password given on standard input");
    }
    Ok(password)
}

fn cert_dev(out_dir: &Path, hosts: &[String], force: bool) -> anyhow::Result<ExitCode> {
    let cert_path = out_dir.join("cert.pem");
    let key_path = out_dir.join("key.pem");
    for path in [&cert_path, &key_path] {
        if path.exists() && !force {
            anyhow::bail!("{} exists; pass --force to overwrite it", path.display());
        }
    }
    let (cert_pem, key_pem) = tls::make_dev_cert(hosts)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    std::fs::write(&cert_path, cert_pem).with_context(|| format!("cannot write {}", cert_path.display()))?;
    write_private(&key_path, key_pem.as_bytes()).with_context(|| format!("cannot write {}", key_path.display()))?;
    let cert_path = cert_path.canonicalize().unwrap_or(cert_path);
    let key_path = key_path.canonicalize().unwrap_or(key_path);
    eprintln!(
        "Wrote a self-signed development certificate for {} (not for production).",
        hosts.join(", ")
    );
    eprintln!("Use it with these lines in the [server] section:");
    println!("tls_cert = {}", toml::Value::from(cert_path.display().to_string()));
    println!("tls_key = {}", toml::Value::from(key_path.display().to_string()));
    Ok(ExitCode::SUCCESS)
}

/// Write a file only its owner can read (a private key).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_serve() {
        let cli = Cli::try_parse_from(["roost"]).expect("parses");
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["roost", "serve", "--listen", "0.0.0.0:9000"]).expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::Serve(ServeArgs {
                config: ConfigArgs { listen: Some(_), .. },
                join: None
            }))
        ));
    }

    #[test]
    fn cluster_commands_parse() {
        let cli = Cli::try_parse_from(["roost", "serve", "--join", "10.0.0.1:7070"]).expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::Serve(ServeArgs { join: Some(_), .. }))
        ));
        let certs = [
            "roost", "cluster", "certs", "--out", "d", "--node", "1", "--node", "2:a,b",
        ];
        let cli = Cli::try_parse_from(certs).expect("parses");
        let Some(Command::Cluster(ClusterCommand::Certs { nodes, cluster_id, .. })) = cli.command else {
            panic!("not certs");
        };
        assert_eq!(
            (nodes.len(), nodes[1].hosts.len(), cluster_id.as_str()),
            (2, 2, "roost")
        );
        let remove = ["roost", "cluster", "remove", "3", "--admin", "http://127.0.0.1:9090"];
        let cli = Cli::try_parse_from(remove).expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::Cluster(ClusterCommand::Remove { node: 3, .. }))
        ));
        assert!(
            Cli::try_parse_from(["roost", "cluster", "certs", "--out", "d"]).is_err(),
            "needs a node"
        );
    }
}
