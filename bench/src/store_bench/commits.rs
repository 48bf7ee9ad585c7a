//! Group commits of the store under test, read from the engine's own metrics.
//!
//! Both stores report every commit through `roost_engine::metrics::store_commit` (the embedded
//! writer per write transaction, the CQL pipeline per logged batch): how many writes it carried
//! and how long it took. This recorder keeps those two histograms and ignores every other metric,
//! so the benchmark can say how many appends shared a commit.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use hdrhistogram::Histogram;
use metrics::Counter;
use metrics::Gauge;
use metrics::HistogramFn;
use metrics::Key;
use metrics::KeyName;
use metrics::Metadata;
use metrics::Recorder;
use metrics::SharedString;
use metrics::Unit;
use serde::Serialize;

use super::stats;
use super::stats::LatencySummary;

const BATCH_WRITES: &str = "roost_engine_store_commit_batch_writes";
const COMMIT_SECONDS: &str = "roost_engine_store_commit_seconds";

/// What the commits of one phase looked like.
#[derive(Clone, Debug, Serialize)]
pub struct CommitSummary {
    pub commits: u64,
    pub writes: u64,
    pub writes_per_commit: f64,
    pub largest_commit: u64,
    /// Time of one commit (embedded: apply + commit + fsync; CQL: the checks and the batch write).
    pub commit_latency: LatencySummary,
}

#[derive(Default)]
struct Tally {
    commits: AtomicU64,
    writes: AtomicU64,
    largest: AtomicU64,
    seconds: Mutex<Option<Histogram<u64>>>,
}

struct BatchWrites(Arc<Tally>);

impl HistogramFn for BatchWrites {
    fn record(&self, value: f64) {
        let writes = value as u64;
        self.0.commits.fetch_add(1, Ordering::Relaxed);
        self.0.writes.fetch_add(writes, Ordering::Relaxed);
        self.0.largest.fetch_max(writes, Ordering::Relaxed);
    }
}

struct CommitSeconds(Arc<Tally>);

impl HistogramFn for CommitSeconds {
    fn record(&self, value: f64) {
        let mut seconds = self.0.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        stats::record(
            seconds.get_or_insert_with(stats::histogram),
            Duration::from_secs_f64(value.max(0.0)),
        );
    }
}

/// The recorder; [`CommitRecorder::install`] makes it the process's global one.
#[derive(Clone, Default)]
pub struct CommitRecorder {
    tally: Arc<Tally>,
}

impl CommitRecorder {
    /// Install as the global `metrics` recorder (once per process).
    pub fn install() -> anyhow::Result<Self> {
        let recorder = Self::default();
        metrics::set_global_recorder(recorder.clone())
            .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
        Ok(recorder)
    }

    /// The commits since the last call (or since install), and start counting afresh.
    pub fn take(&self) -> CommitSummary {
        let t = &self.tally;
        let commits = t.commits.swap(0, Ordering::Relaxed);
        let writes = t.writes.swap(0, Ordering::Relaxed);
        let largest = t.largest.swap(0, Ordering::Relaxed);
        let seconds = t
            .seconds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(stats::histogram);
        CommitSummary {
            commits,
            writes,
            writes_per_commit: if commits == 0 {
                0.0
            } else {
                writes as f64 / commits as f64
            },
            largest_commit: largest,
            commit_latency: LatencySummary::of(&seconds),
        }
    }
}

impl Recorder for CommitRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        match key.name() {
            BATCH_WRITES => metrics::Histogram::from_arc(Arc::new(BatchWrites(self.tally.clone()))),
            COMMIT_SECONDS => metrics::Histogram::from_arc(Arc::new(CommitSeconds(self.tally.clone()))),
            _ => metrics::Histogram::noop(),
        }
    }
}
