//! The result of a run, as JSON (`serde`) and as Markdown tables for docs/performance.md.

use std::fmt::Write as _;

use serde::Serialize;

use super::commits::CommitSummary;
use super::machine::MachineInfo;
use super::stats::format_rate;
use super::stats::format_us;
use super::stats::LatencySummary;
use super::workload::PageKind;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When the run started (UTC).
    pub started_utc: String,
    /// The command line that reproduces the run.
    pub command: String,
    /// `embedded` or `scylla`.
    pub backend: String,
    /// What the backend was: durability mode, or the CQL server and keyspace.
    pub backend_detail: String,
    pub machine: MachineInfo,
    /// `/proc/loadavg` (1, 5, 15 min) before the run and at its end.
    pub load_before: String,
    pub load_after: String,
    pub config: Config,
    pub appends: AppendResult,
    pub pages: Vec<PageResult>,
    /// Size of the data at the end (embedded: the redb file), if known.
    pub data_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub conversations: u64,
    pub appends: u64,
    pub warmup_appends: u64,
    pub in_flight: usize,
    pub page_size: usize,
    pub pages: u64,
    pub readers: usize,
    pub mean_body_bytes: f64,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AppendResult {
    pub appends: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// Submission to durable acknowledgement.
    pub latency: LatencySummary,
    /// The store's group commits during the measured appends.
    pub commits: CommitSummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct PageResult {
    pub kind: PageKind,
    pub readers: usize,
    pub pages: u64,
    pub events: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub latency: LatencySummary,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let c = &self.config;
        let m = &self.machine;
        let _ = writeln!(out, "### {} ({})\n", self.backend, self.backend_detail);
        let _ = writeln!(out, "- command: `{}`", self.command);
        let _ = writeln!(out, "- started: {}", self.started_utc);
        let _ = writeln!(
            out,
            "- machine: {}, {} cores, {:.1} GiB, {}, {}",
            m.cpu_model, m.cores, m.memory_gib, m.kernel, m.rustc
        );
        let _ = writeln!(
            out,
            "- load average (1/5/15 min): {} before, {} after",
            self.load_before, self.load_after
        );
        let _ = writeln!(
            out,
            "- data: {} conversations, {} appends measured after {} warm-up appends, {} in flight, \
             message text {:.0} bytes on average{}",
            c.conversations,
            c.appends,
            c.warmup_appends,
            c.in_flight,
            c.mean_body_bytes,
            self.data_bytes
                .map(|b| format!(", {:.1} MiB stored", b as f64 / 1024.0 / 1024.0))
                .unwrap_or_default()
        );
        let _ = writeln!(out);

        let a = &self.appends;
        let _ = writeln!(
            out,
            "| appends | in flight | appends/s | p50 | p90 | p99 | max | appends per commit | commit p50 / p99 |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} / {} |",
            a.appends,
            c.in_flight,
            format_rate(a.per_second),
            format_us(a.latency.p50_us),
            format_us(a.latency.p90_us),
            format_us(a.latency.p99_us),
            format_us(a.latency.max_us),
            a.commits.writes_per_commit,
            format_us(a.commits.commit_latency.p50_us),
            format_us(a.commits.commit_latency.p99_us),
        );
        let _ = writeln!(out);

        let _ = writeln!(
            out,
            "| page of {} | readers | pages | pages/s | p50 | p90 | p99 | p99.9 | max |",
            c.page_size
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for p in &self.pages {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.kind.describe(),
                p.readers,
                p.pages,
                format_rate(p.per_second),
                format_us(p.latency.p50_us),
                format_us(p.latency.p90_us),
                format_us(p.latency.p99_us),
                format_us(p.latency.p999_us),
                format_us(p.latency.max_us),
            );
        }
        out
    }
}
