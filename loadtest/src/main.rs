//! `roost-loadtest`: the command line. `run` loads a Roost deployment with a scenario, checks
//! the delivery contract, writes summary.json and report.html, and exits 0 (pass), 99 (a
//! threshold breached), 98 (a correctness violation), 1 (the run could not be done) or 2 (bad
//! command line).

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clap::Parser;
use clap::Subcommand;
use roost_loadtest::config::RunConfig;
use roost_loadtest::config::RunOptions;
use roost_loadtest::report;
use roost_loadtest::runner;
use roost_loadtest::scenario::GroupSpec;
use roost_loadtest::scenario::Scenario;
use roost_loadtest::summary::Summary;

/// Open-loop load generator and correctness checker for Roost.
#[derive(Debug, Parser)]
#[command(name = "roost-loadtest", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario; flags override the scenario file's fields.
    #[command(
        after_help = "Exit codes: 0 pass, 99 a --fail-if threshold breached, 98 a correctness \
                            violation (lost, duplicated, reordered, gaps, undelivered, ack mismatch), \
                            1 the run could not be done, 2 bad command line."
    )]
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario file (TOML, see loadtest/scenarios/).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Name shown in reports (default: the scenario file's name, else "adhoc").
    #[arg(long)]
    name: Option<String>,
    /// Target node, repeatable; users are spread round-robin. Default http://127.0.0.1:8080.
    #[arg(long = "url", value_name = "URL")]
    urls: Vec<String>,
    /// Scrape server CPU and memory here instead of each target's /metrics (e.g. a cluster
    /// node's internal listener), repeatable; http://HOST:PORT[/PATH], the path defaulting to
    /// /metrics. Need not match the --url count.
    #[arg(long = "metrics-url", value_name = "URL")]
    metrics_urls: Vec<String>,
    /// Refuse nothing: allow targets and metrics URLs outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    allow_remote: bool,
    /// Administrator that provisions the users (default admin).
    #[arg(long, value_name = "NAME")]
    admin_user: Option<String>,
    /// The administrator's password.
    #[arg(
        long,
        env = "ROOST_ADMIN_PASSWORD",
        default_value = "admin-password",
        hide_env_values = true
    )]
    admin_password: String,
    /// Virtual users (one WebSocket each).
    #[arg(long)]
    users: Option<usize>,
    /// Connections opened per second during the ramp.
    #[arg(long, value_name = "PER_SEC")]
    connect_rate: Option<f64>,
    /// Direct (1:1) conversations.
    #[arg(long, value_name = "N")]
    direct_pairs: Option<usize>,
    /// Groups as SIZExCOUNT (e.g. 100x20), repeatable.
    #[arg(long = "groups", value_name = "SIZExCOUNT")]
    groups: Vec<GroupSpec>,
    /// Sending streams (default one per conversation when --rate is set).
    #[arg(long, value_name = "N")]
    senders: Option<usize>,
    /// Messages per second in total, on a fixed open-loop schedule.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    rate: Option<f64>,
    /// Message text size in bytes.
    #[arg(long, value_name = "N")]
    payload_bytes: Option<usize>,
    /// Measured seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Seconds of sending before measuring.
    #[arg(long, value_name = "SECS")]
    warmup: Option<u64>,
    /// Longest wait for outstanding acks and deliveries after sending (default 10).
    #[arg(long, value_name = "SECS")]
    drain: Option<u64>,
    /// Connections closed and reopened per second while sending.
    #[arg(long, value_name = "PER_SEC")]
    churn: Option<f64>,
    /// Seed of random choices.
    #[arg(long)]
    seed: Option<u64>,
    /// Resend (same client_msg_id) a send unanswered for this long.
    #[arg(long, value_name = "MS")]
    ack_timeout_ms: Option<u64>,
    /// Username prefix (default lt + a random run id); reusing one reuses its users.
    #[arg(long, value_name = "PREFIX")]
    user_prefix: Option<String>,
    /// Concurrent REST requests while provisioning and checking (default 16).
    #[arg(long, value_name = "N")]
    setup_concurrency: Option<usize>,
    /// Fail (exit 99) if this holds, e.g. 'p99_deliver_ms>50'; repeatable.
    #[arg(long = "fail-if", value_name = "EXPR")]
    fail_if: Vec<String>,
    /// Ignore the scenario file's thresholds (keep only --fail-if ones), e.g. when scaling a
    /// scenario down for a trial run.
    #[arg(long)]
    no_scenario_thresholds: bool,
    /// Report correctness violations without failing the run because of them.
    #[arg(long)]
    no_fail_on_correctness: bool,
    /// Directory for summary.json and report.html.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

impl RunArgs {
    fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut file = match &self.scenario {
            Some(path) => Scenario::load(path)?,
            None => Scenario::default(),
        };
        if self.no_scenario_thresholds {
            file.fail_if = None;
        }
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let flags = Scenario {
            name: self.name.clone(),
            urls: non_empty(&self.urls),
            metrics_urls: non_empty(&self.metrics_urls),
            admin_user: self.admin_user.clone(),
            users: self.users,
            connect_rate: self.connect_rate,
            direct_pairs: self.direct_pairs,
            groups: (!self.groups.is_empty()).then(|| self.groups.clone()),
            senders: self.senders,
            rate: self.rate,
            payload_bytes: self.payload_bytes,
            duration_secs: self.duration,
            warmup_secs: self.warmup,
            drain_secs: self.drain,
            churn_per_sec: self.churn,
            seed: self.seed,
            ack_timeout_ms: self.ack_timeout_ms,
            user_prefix: self.user_prefix.clone(),
            setup_concurrency: self.setup_concurrency,
            fail_if: non_empty(&self.fail_if),
            ..Scenario::default()
        };
        Ok(file.overlay(flags))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match run(args) {
            Ok(code) => ExitCode::from(code),
            Err(error) => {
                eprintln!("roost-loadtest: error: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The scenario file overlaid with the flags, validated.
fn config(args: &RunArgs) -> anyhow::Result<RunConfig> {
    let options = RunOptions {
        admin_password: args.admin_password.clone(),
        allow_remote: args.allow_remote,
        fail_on_correctness: !args.no_fail_on_correctness,
        default_prefix: format!("lt{:08x}", rand::random::<u32>()),
    };
    Ok(RunConfig::build(args.scenario()?, options)?)
}

fn run(args: RunArgs) -> anyhow::Result<u8> {
    let config = config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = runtime.block_on(runner::run(config, args.quiet))?;
    if let Some(dir) = &args.out {
        write_outputs(dir, &summary)?;
    }
    print!("{}", report::text(&summary));
    if let Some(dir) = &args.out {
        println!("{:>20}  {}", "reports", dir.display());
    }
    Ok(summary.outcome.exit_code)
}

fn write_outputs(dir: &Path, summary: &Summary) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(summary).context("encoding summary.json")?;
    let path = dir.join("summary.json");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    let path = dir.join("report.html");
    std::fs::write(&path, report::html(summary)).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> RunArgs {
        let argv = ["roost-loadtest", "run"].iter().chain(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(args) => args,
        }
    }

    #[test]
    fn metrics_urls_are_repeatable_and_independent_of_the_targets() {
        let args = run_args(&[
            "--url",
            "http://127.0.0.1:8080",
            "--metrics-url",
            "http://127.0.0.1:9090",
            "--metrics-url",
            "http://[::1]:9091/internal/metrics",
        ]);
        assert_eq!(args.metrics_urls.len(), 2);
        let config = config(&args).expect("valid");
        assert_eq!(config.targets.len(), 1);
        let paths: Vec<_> = config.metrics.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, vec!["/metrics", "/internal/metrics"]);
    }

    #[test]
    fn a_remote_metrics_url_needs_allow_remote() {
        let refused = config(&run_args(&["--metrics-url", "http://192.0.2.9:9090"])).expect_err("remote");
        assert!(format!("{refused:#}").contains("--allow-remote"), "{refused:#}");
        let allowed = config(&run_args(&["--metrics-url", "http://192.0.2.9:9090", "--allow-remote"]));
        assert_eq!(allowed.expect("allowed").metrics[0].target.url, "http://192.0.2.9:9090");
    }

    #[test]
    fn without_metrics_urls_the_targets_are_scraped() {
        let config = config(&run_args(&[
            "--url",
            "http://127.0.0.1:8080",
            "--url",
            "http://127.0.0.1:8081",
        ]))
        .expect("valid");
        let scraped: Vec<_> = config.metrics.iter().map(|m| m.target.url.as_str()).collect();
        assert_eq!(scraped, vec!["http://127.0.0.1:8080", "http://127.0.0.1:8081"]);
    }
}
