//! Runner: the phases of a run, in order, under one hard time limit.
//!
//! 1 provision users and conversations over REST; 2 ramp: each user connects at its planned
//! time and syncs; 3 send on the schedule (warmup, then the measurement window, which starts on
//! a whole second of the time series), with churn if asked; 4 drain until nothing is in flight
//! and deliveries have been quiet for a second (at most `drain_secs`); 5 stop the users, page
//! every history and run the checker; 6 build the summary. `/metrics` (of the targets, or of
//! the `--metrics-url` endpoints) is scraped before and after the ramp and at both ends of the
//! window.

use std::sync::atomic::AtomicU8;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checker;
use crate::checker::Evidence;
use crate::clock::Clock;
use crate::config::RunConfig;
use crate::env_info::Environment;
use crate::failover::PerTarget;
use crate::history;
use crate::history::HistoryError;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::provision;
use crate::provision::ProvisionError;
use crate::provision::Provisioned;
use crate::schedule::Schedule;
use crate::scrape;
use crate::stats::recorder::Recorder;
use crate::stats::series;
use crate::stats::series::LatencySummary;
use crate::stats::series::Series;
use crate::summary;
use crate::summary::Summary;
use crate::user;
use crate::user::Churn;
use crate::user::Shared;
use crate::user::UserReport;
use crate::user::UserSpec;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("the run exceeded its hard limit of {0:?} and was stopped")]
    TimedOut(Duration),
}

/// Phase numbers stored for the time series (see `series::Phase::from_u8`).
const WARMUP: u8 = 1;
const MEASURE: u8 = 2;
const DRAIN: u8 = 3;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Run the whole load test. `quiet` silences the progress lines.
pub async fn run(config: RunConfig, quiet: bool) -> Result<Summary, RunError> {
    let limit = config.hard_limit();
    tokio::time::timeout(limit, run_phases(config, quiet))
        .await
        .map_err(|_| RunError::TimedOut(limit))?
}

async fn run_phases(config: RunConfig, quiet: bool) -> Result<Summary, RunError> {
    let started_at_unix_ms = unix_ms();
    let say = |message: String| {
        if !quiet {
            eprintln!("{message}");
        }
    };
    let plan = Plan::build(config.users, config.direct_pairs, &config.groups, config.senders);
    say(format!(
        "roost-loadtest: {} users, {} conversations, {} sending streams at {}/s for {}s (+{}s warmup) against {}",
        config.users,
        plan.conversations.len(),
        plan.slots.len(),
        config.rate,
        config.duration_secs,
        config.warmup_secs,
        config.urls.join(", ")
    ));
    let admin = provision::admin_login(&config.targets[0], &config.admin_user, &config.admin_password).await?;
    let provisioned = provision::provision(&config, &plan, admin).await?;
    say(format!(
        "Provisioned {} users ({:.1}s), logged in ({:.1}s), {} conversations ({:.1}s).",
        provisioned.users.len(),
        provisioned.timings.create_users_secs,
        provisioned.timings.login_secs,
        provisioned.conversations.len(),
        provisioned.timings.conversations_secs
    ));

    let clock = Clock::new();
    let shards = (std::thread::available_parallelism().map_or(2, |n| n.get()) * 4).clamp(4, 32);
    let recorder = Arc::new(Recorder::new(shards, clock));
    let mut cost = summary::ServerCost {
        before_ramp: scrape::scrape(&config.metrics).await,
        ..summary::ServerCost::default()
    };
    let (start_tx, start_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let send_length = Duration::from_secs(config.warmup_secs + config.duration_secs);
    let shared = Arc::new(Shared {
        recorder: Arc::clone(&recorder),
        schedule: Schedule::new(config.rate, plan.slots.len(), send_length),
        payload_bytes: config.payload_bytes,
        ack_timeout: Duration::from_millis(config.ack_timeout_ms),
        send_start: start_rx,
        stop: stop_rx,
        ready: AtomicUsize::new(0),
        targets: config.targets.clone(),
        per_target: PerTarget::new(config.targets.len()),
    });

    // Ramp.
    let series_start = Instant::now();
    let phase = Arc::new(AtomicU8::new(0));
    let (report_stop_tx, report_stop_rx) = watch::channel(false);
    let progress = Progress::new(config.users, quiet);
    let reporter = tokio::spawn(series::report(
        Arc::clone(&recorder),
        Arc::clone(&phase),
        series_start,
        report_stop_rx,
        progress,
    ));
    let (users, churners) = spawn_users(&config, &plan, &provisioned, &shared, series_start);
    let ramp_deadline = series_start + config.ramp() + Duration::from_secs(30);
    while shared.ready.load(Ordering::Relaxed) < config.users && Instant::now() < ramp_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ramp_secs = series_start.elapsed().as_secs_f64();
    let connected = shared.ready.load(Ordering::Relaxed);
    cost.after_ramp = scrape::scrape(&config.metrics).await;

    // Send: start on a whole second of the series, at least 200 ms from now.
    let mut whole = series_start.elapsed().as_secs() + 1;
    if series_start + Duration::from_secs(whole) < Instant::now() + Duration::from_millis(200) {
        whole += 1;
    }
    let send_start = series_start + Duration::from_secs(whole);
    let window_start = send_start + Duration::from_secs(config.warmup_secs);
    let window_end = window_start + Duration::from_secs(config.duration_secs);
    recorder.set_window(clock.ns_at(window_start), clock.ns_at(window_end));
    let _ = start_tx.send(Some(send_start));
    let churn = spawn_churn(&config, churners, send_start, window_end);
    tokio::time::sleep_until(send_start.into()).await;
    phase.store(WARMUP, Ordering::Relaxed);
    tokio::time::sleep_until(window_start.into()).await;
    phase.store(MEASURE, Ordering::Relaxed);
    cost.window_start = scrape::scrape(&config.metrics).await;
    let loader_cpu_start = scrape::own_cpu_seconds();
    tokio::time::sleep_until(window_end.into()).await;
    let loader_cpu = scrape::own_cpu_seconds().zip(loader_cpu_start).map(|(b, a)| b - a);
    cost.window_end = scrape::scrape(&config.metrics).await;
    phase.store(DRAIN, Ordering::Relaxed);
    churn.abort();

    let settled = drain(&recorder, Duration::from_secs(config.drain_secs)).await;
    let _ = stop_tx.send(true);
    let mut reports = Vec::with_capacity(users.len());
    for handle in users {
        if let Ok(report) = handle.await {
            reports.push(report);
        }
    }
    let _ = report_stop_tx.send(true);
    let series = reporter.await.unwrap_or_default();

    if !quiet {
        eprintln!("Checking {} conversation histories.", provisioned.conversations.len());
    }
    let verdict = check(&config, &plan, &provisioned, reports, settled).await?;
    let mut results = results(&config, &recorder, &series, verdict, cost, connected, ramp_secs);
    results.targets = shared.per_target.snapshot(&config.targets);
    results.loader = summary::LoaderCost {
        cpu_seconds_window: loader_cpu,
        cpu_utilization_window: loader_cpu.map(|c| c / config.duration_secs.max(1) as f64),
    };
    let thresholds: Vec<_> = config
        .thresholds
        .iter()
        .map(|t| t.evaluate(|m| results.metric(m)))
        .collect();
    let outcome = summary::outcome(&thresholds, &results.correctness, config.fail_on_correctness);
    Ok(Summary {
        schema: summary::SCHEMA,
        name: config.name.clone(),
        started_at_unix_ms,
        finished_at_unix_ms: unix_ms(),
        environment: Environment::collect(),
        setup: summary::Setup {
            timings: provisioned.timings,
            conversations: provisioned.conversations.len(),
            ramp_secs,
            connected,
        },
        config,
        results,
        thresholds,
        outcome,
        series: series.points,
    })
}

type UserHandles = Vec<JoinHandle<UserReport>>;

fn spawn_users(
    config: &RunConfig,
    plan: &Plan,
    provisioned: &Provisioned,
    shared: &Arc<Shared>,
    start: Instant,
) -> (UserHandles, Vec<mpsc::Sender<Churn>>) {
    let ids = &provisioned.conversations;
    let mut handles = Vec::with_capacity(plan.users);
    let mut churners = Vec::with_capacity(plan.users);
    for (index, u) in provisioned.users.iter().enumerate() {
        let spec = UserSpec {
            index,
            token: u.token.clone(),
            target: u.target,
            conversations: plan.memberships[index].iter().map(|&c| ids[c]).collect(),
            streams: plan
                .slots_of(index)
                .into_iter()
                .map(|slot| (slot, ids[plan.slots[slot].conversation]))
                .collect(),
            connect_at: start + Duration::from_secs_f64(index as f64 / config.connect_rate),
        };
        let (tx, rx) = mpsc::channel(4);
        handles.push(tokio::spawn(user::run(spec, Arc::clone(shared), rx)));
        churners.push(tx);
    }
    (handles, churners)
}

/// Close and reopen random connections at `churn_per_sec` between `from` and `until`.
fn spawn_churn(
    config: &RunConfig,
    churners: Vec<mpsc::Sender<Churn>>,
    from: Instant,
    until: Instant,
) -> JoinHandle<()> {
    let rate = config.churn_per_sec;
    let mut rng = StdRng::seed_from_u64(config.seed);
    tokio::spawn(async move {
        if rate <= 0.0 || churners.is_empty() {
            return;
        }
        let every = Duration::from_secs_f64(1.0 / rate);
        let mut at = from + every;
        while at < until {
            tokio::time::sleep_until(at.into()).await;
            let victim = rng.random_range(0..churners.len());
            let _ = churners[victim].try_send(Churn);
            at += every;
        }
    })
}

/// Wait until nothing is in flight and acks/deliveries have been quiet for a second; `false` if
/// `longest` passed first.
async fn drain(recorder: &Recorder, longest: Duration) -> bool {
    let deadline = Instant::now() + longest;
    let mut last = recorder.activity.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = recorder.activity.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if recorder.in_flight.load(Ordering::Relaxed) <= 0 && quiet_since.elapsed() >= Duration::from_secs(1) {
            return true;
        }
    }
    false
}

async fn check(
    config: &RunConfig,
    plan: &Plan,
    provisioned: &Provisioned,
    reports: Vec<UserReport>,
    settled: bool,
) -> Result<checker::Verdict, RunError> {
    let readers = plan
        .conversations
        .iter()
        .zip(&provisioned.conversations)
        .map(|(c, &id)| {
            let creator = &provisioned.users[c.members[0]];
            history::Reader {
                conversation: id,
                token: creator.token.clone(),
                target: creator.target,
            }
        })
        .collect();
    let histories = history::fetch_all(&config.targets, readers, config.setup_concurrency).await?;
    let mut evidence = Evidence {
        histories,
        settled,
        ..Evidence::default()
    };
    for report in reports {
        evidence.acks.extend(report.acks);
        evidence.unresolved.extend(report.unresolved);
        evidence.streams.add(&report.violations);
        if report.connected_at_end {
            evidence.final_cursors.extend(report.cursors);
        }
    }
    Ok(checker::check(&evidence))
}

fn results(
    config: &RunConfig,
    recorder: &Recorder,
    series: &Series,
    correctness: checker::Verdict,
    mut server: summary::ServerCost,
    connected: usize,
    ramp_secs: f64,
) -> summary::Results {
    let latencies = recorder.window_latencies();
    let secs = if series.window_secs > 0.0 {
        series.window_secs
    } else {
        1.0
    };
    let w = series.window;
    server.derive(connected, w.delivered, series.window_secs);
    summary::Results {
        window_secs: series.window_secs,
        window: w,
        total: series.total,
        offered_rate: config.rate,
        sent_per_sec: w.sent as f64 / secs,
        acked_per_sec: w.acked as f64 / secs,
        delivered_per_sec: w.delivered as f64 / secs,
        connects_per_sec: if ramp_secs > 0.0 {
            connected as f64 / ramp_secs
        } else {
            0.0
        },
        latency_ms: summary::Latencies {
            connect: LatencySummary::of(&latencies.connect),
            ack: LatencySummary::of(&latencies.ack),
            deliver: LatencySummary::of(&latencies.deliver),
        },
        errors: series.total.errors,
        errors_by_code: series.errors_by_code.clone(),
        correctness,
        server,
        loader: summary::LoaderCost::default(),
        targets: Vec::new(),
    }
}
