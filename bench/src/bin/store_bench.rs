//! `store_bench`: append throughput and history-page latency of a store backend.
//!
//! ```text
//! cargo run --release -p roost-bench --bin store_bench -- --backend embedded --durability immediate
//! cargo run --release -p roost-bench --bin store_bench -- --backend scylla --cql 127.0.0.1:9042
//! ```
//!
//! 1. Appends: `--appends` messages (after `--warmup` unmeasured ones) over `--conversations`
//!    conversations, `--in-flight` outstanding at once and pipelined per conversation as the
//!    conversation actor does; appends/s, and each append's latency from submission to durable
//!    acknowledgement (HDR histogram).
//! 2. History pages: `--pages` reads of `--page-size` events per page kind (newest page, backward
//!    from a random seq, forward from a random seq), first by one reader (one read at a time),
//!    then by `--readers` concurrent readers; every page is checked (length and seqs).
//!
//! The embedded store runs in a fresh temporary directory (under `--data-dir`), removed at the end.
//! The scylla store runs in a fresh keyspace (`store_bench_<time>_<pid>`, `datacenter1` = 1,
//! migrations applied), dropped at the end, also on failure or Ctrl-C. A Markdown report goes to
//! stdout (progress to stderr); `--json` writes the same result as JSON.

use std::net::TcpStream;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use anyhow::anyhow;
use anyhow::bail;
use anyhow::Context as _;
use clap::Parser;
use clap::ValueEnum;
use roost_bench::store_bench::commits::CommitRecorder;
use roost_bench::store_bench::machine;
use roost_bench::store_bench::machine::MachineInfo;
use roost_bench::store_bench::report::AppendResult;
use roost_bench::store_bench::report::Config;
use roost_bench::store_bench::report::PageResult;
use roost_bench::store_bench::report::Report;
use roost_bench::store_bench::stats::LatencySummary;
use roost_bench::store_bench::workload;
use roost_bench::store_bench::workload::Messages;
use roost_bench::store_bench::workload::PageKind;
use roost_engine::store::embedded::DurabilityMode;
use roost_engine::store::embedded::EmbeddedOptions;
use roost_engine::store::embedded::EmbeddedStore;
use roost_engine::store::embedded::DATABASE_FILE;
use roost_engine::store::scylla::open_session;
use roost_engine::store::scylla::ScyllaOptions;
use roost_engine::store::scylla::ScyllaStore;
use roost_engine::store::MessageStore;
use roost_engine::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The embedded redb store (one file, group commit).
    Embedded,
    /// The CQL store on ScyllaDB or Apache Cassandra.
    Scylla,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Durability {
    /// fsync every group commit before acknowledging it.
    Immediate,
    /// Acknowledge without fsync; a durable commit at least every 50 ms.
    Relaxed,
}

/// Append throughput and history-page latency of a Roost store backend.
#[derive(Debug, Parser)]
#[command(name = "store_bench", version)]
struct Args {
    /// The store to measure.
    #[arg(long, value_enum)]
    backend: Backend,
    /// Embedded store only: when an append is acknowledged [default: immediate].
    #[arg(long, value_enum)]
    durability: Option<Durability>,
    /// Scylla backend: the CQL contact point (`scripts/cassandra.sh start` runs one here).
    #[arg(long, default_value = "127.0.0.1:9042")]
    cql: String,
    /// Scylla backend: client-side timeout of one CQL request, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Embedded backend: directory in which the temporary database directory is created
    /// [default: the system's temporary directory].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Conversations the appends are spread over (uniformly at random).
    #[arg(long, default_value_t = 100)]
    conversations: u64,
    /// Measured appends.
    #[arg(long, default_value_t = 100_000)]
    appends: u64,
    /// Appends made before the measured ones (their data stays; their latency is not recorded).
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// Appends outstanding at once, across all conversations.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Events per history page.
    #[arg(long, default_value_t = 50)]
    page_size: usize,
    /// Measured page reads per page kind and reader count.
    #[arg(long, default_value_t = 5_000)]
    pages: u64,
    /// Concurrent readers of the second page round (the first has one).
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}`: the whole chain of causes on one line, without a backtrace.
            eprintln!("store_bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    check(&args)?;
    let recorder = CommitRecorder::install()?;
    let started_utc = machine::utc_now();
    let load_before = machine::loadavg();
    eprintln!("store_bench: load average before the run: {load_before}");
    let (backend_detail, measured, data_bytes) = match args.backend {
        Backend::Embedded => run_embedded(&args, &recorder).await?,
        Backend::Scylla => run_scylla(&args, &recorder).await?,
    };
    let report = Report {
        started_utc,
        command: command_line(),
        backend: format!("{:?}", args.backend).to_lowercase(),
        backend_detail,
        machine: MachineInfo::detect(),
        load_before,
        load_after: machine::loadavg(),
        config: Config {
            conversations: args.conversations,
            appends: args.appends,
            warmup_appends: args.warmup,
            in_flight: args.in_flight,
            page_size: args.page_size,
            pages: args.pages,
            readers: args.readers,
            mean_body_bytes: measured.mean_body_bytes,
            seed: args.seed,
        },
        appends: measured.appends,
        pages: measured.pages,
        data_bytes,
    };
    println!("{}", report.markdown());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("store_bench: wrote {}", path.display());
    }
    Ok(())
}

fn check(args: &Args) -> anyhow::Result<()> {
    for (name, value) in [
        ("--conversations", args.conversations),
        ("--appends", args.appends),
        ("--in-flight", args.in_flight as u64),
        ("--page-size", args.page_size as u64),
        ("--pages", args.pages),
        ("--readers", args.readers as u64),
    ] {
        if value == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if args.backend == Backend::Scylla && args.durability.is_some() {
        bail!("--durability applies to the embedded store only; a CQL node's durability is its commitlog_sync setting");
    }
    if let Some(dir) = args.data_dir.as_ref().filter(|d| !d.is_dir()) {
        bail!("--data-dir {} must be an existing directory", dir.display());
    }
    let per_conversation = (args.appends + args.warmup) / args.conversations;
    if per_conversation < 2 * args.page_size as u64 {
        eprintln!(
            "store_bench: warning: about {per_conversation} events per conversation for pages of {}: \
             many pages will be short (fewer, larger conversations measure pages better)",
            args.page_size
        );
    }
    Ok(())
}

/// The command that reproduces this run.
fn command_line() -> String {
    let mut command = "cargo run --release -p roost-bench --bin store_bench --".to_owned();
    for arg in std::env::args().skip(1) {
        command.push(' ');
        if arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_=.:/,".contains(c)) {
            command.push_str(&arg);
        } else {
            command.push_str(&format!("'{}'", arg.replace('\'', r"'\''")));
        }
    }
    command
}

/// What `measure` found.
struct Measured {
    appends: AppendResult,
    pages: Vec<PageResult>,
    mean_body_bytes: f64,
}

async fn run_embedded(args: &Args, recorder: &CommitRecorder) -> anyhow::Result<(String, Measured, Option<u64>)> {
    let durability = match args.durability.unwrap_or(Durability::Immediate) {
        Durability::Immediate => DurabilityMode::Immediate,
        Durability::Relaxed => DurabilityMode::Relaxed,
    };
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("store_bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    let options = EmbeddedOptions {
        path: dir.path().to_path_buf(),
        durability,
        ..EmbeddedOptions::default()
    };
    let detail = format!(
        "{} durability, max_batch {}, database in {}",
        format!("{durability:?}").to_lowercase(),
        options.max_batch,
        parent.display()
    );
    eprintln!("store_bench: embedded store in {}", dir.path().display());
    let store = Arc::new(EmbeddedStore::open(options).context("opening the embedded store")?);
    let measured = interruptible(measure(store.clone() as Arc<dyn Store>, args, recorder)).await;
    let closed = async {
        store.flush().await?;
        store.close()
    }
    .await;
    let size = std::fs::metadata(dir.path().join(DATABASE_FILE)).ok().map(|m| m.len());
    let measured = measured?;
    closed.context("closing the embedded store")?;
    Ok((detail, measured, size))
}

async fn run_scylla(args: &Args, recorder: &CommitRecorder) -> anyhow::Result<(String, Measured, Option<u64>)> {
    let hint = format!(
        "no CQL node reachable at {}: start one with `scripts/cassandra.sh start` (or pass --cql host:port)",
        args.cql
    );
    let address = args
        .cql
        .to_socket_addrs()
        .with_context(|| format!("{hint}; the address does not resolve"))?
        .next()
        .ok_or_else(|| anyhow!("{hint}; the address does not resolve"))?;
    TcpStream::connect_timeout(&address, Duration::from_secs(3)).with_context(|| hint.clone())?;

    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let keyspace = format!("store_bench_{now}_{}", std::process::id());
    let options = ScyllaOptions {
        contact_points: vec![args.cql.clone()],
        keyspace: keyspace.clone(),
        replication: [("datacenter1".to_owned(), 1)].into(),
        apply_migrations_on_start: true,
        request_timeout_ms: args.request_timeout_ms,
        ..ScyllaOptions::default()
    };
    let session = Arc::new(
        open_session(&options)
            .await
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| hint.clone())?,
    );
    let server = match session
        .query_unpaged("SELECT release_version FROM system.local", ())
        .await
    {
        Ok(result) => result
            .into_rows_result()
            .ok()
            .and_then(|rows| rows.maybe_first_row::<(String,)>().ok().flatten())
            .map_or_else(|| "unknown version".to_owned(), |(v,)| v),
        Err(e) => format!("version unknown ({e})"),
    };
    let detail = format!(
        "CQL server {server} at {}, keyspace {keyspace} (replication datacenter1 = 1, {:?} writes and reads, \
         {} events per partition)",
        args.cql, options.write_consistency, options.events_per_partition
    );
    eprintln!("store_bench: keyspace {keyspace} on {} (server {server})", args.cql);
    let measured = interruptible(async {
        let store = ScyllaStore::open(session.clone(), options)
            .await
            .map_err(|e| anyhow!("opening the store in keyspace {keyspace}: {e}"))?;
        measure(Arc::new(store) as Arc<dyn Store>, args, recorder).await
    })
    .await;
    eprintln!("store_bench: dropping keyspace {keyspace}");
    let dropped = session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await;
    let measured = measured?;
    dropped.map_err(|e| anyhow!("dropping keyspace {keyspace} (drop it by hand): {e}"))?;
    Ok((detail, measured, None))
}

/// Run `work` unless Ctrl-C comes first, so the caller still cleans up.
async fn interruptible<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    }
}

async fn measure(store: Arc<dyn Store>, args: &Args, recorder: &CommitRecorder) -> anyhow::Result<Measured> {
    let mut messages = Messages::new(args.conversations, args.seed);
    if args.warmup > 0 {
        eprintln!("store_bench: {} warm-up appends", args.warmup);
        workload::append(&store, &mut messages, args.warmup, args.in_flight).await?;
    }
    recorder.take();
    eprintln!(
        "store_bench: {} appends over {} conversations, {} in flight",
        args.appends, args.conversations, args.in_flight
    );
    let outcome = workload::append(&store, &mut messages, args.appends, args.in_flight).await?;
    let commits = recorder.take();
    let seconds = outcome.elapsed.as_secs_f64();
    let appends = AppendResult {
        appends: outcome.appends,
        seconds,
        per_second: outcome.appends as f64 / seconds,
        latency: LatencySummary::of(&outcome.latency),
        commits,
    };
    eprintln!(
        "store_bench: {:.0} appends/s, p99 {:.0} µs",
        appends.per_second, appends.latency.p99_us
    );

    let last_seqs = Arc::new(messages.last_seqs());
    let warmup_pages = (args.pages / 10).clamp(1, 500);
    for kind in PageKind::ALL {
        workload::pages(
            &store,
            &last_seqs,
            kind,
            args.page_size,
            warmup_pages,
            1,
            args.seed ^ 0x5eed,
        )
        .await?;
    }
    let mut rounds = vec![1];
    if args.readers > 1 {
        rounds.push(args.readers);
    }
    let mut pages = Vec::new();
    for (round, readers) in rounds.into_iter().enumerate() {
        for (k, kind) in PageKind::ALL.into_iter().enumerate() {
            eprintln!(
                "store_bench: {} pages, {}, {readers} reader(s)",
                args.pages,
                kind.describe()
            );
            let seed = args.seed.wrapping_add(1000 * round as u64 + k as u64);
            let outcome = workload::pages(&store, &last_seqs, kind, args.page_size, args.pages, readers, seed).await?;
            let seconds = outcome.elapsed.as_secs_f64();
            pages.push(PageResult {
                kind,
                readers,
                pages: outcome.pages,
                events: outcome.events,
                seconds,
                per_second: outcome.pages as f64 / seconds,
                latency: LatencySummary::of(&outcome.latency),
            });
        }
    }
    Ok(Measured {
        appends,
        pages,
        mean_body_bytes: messages.mean_body_bytes(),
    })
}
