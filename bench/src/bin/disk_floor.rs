//! `disk_floor`: what this machine's disk charges for an acknowledged write, with and without a
//! checkpoint's bulk write beside it.
//!
//! In `immediate` durability the embedded store acknowledges a batch after one small `write` and
//! `fdatasync` of the append log, and once per checkpoint interval it makes redb durable: a few
//! thousand page writes and one `fdatasync` of the database file. This tool does only that
//! I/O, without a store: one thread appends `--record-bytes` to a log file and `fdatasync`s it at
//! `--rate` per second (open loop, latency from the planned time), while, with `--checkpoint-pages`
//! above 0, a second thread writes that many 4 KiB pages to another file and `fdatasync`s it every
//! `--checkpoint-every-ms`. If the log's p99 stays low with the checkpoint running beside it, the
//! disk can serve both at once, and appends that wait *behind* a checkpoint (as the store's single
//! writer thread makes them do) wait for the software, not the disk. docs/performance.md uses it.

use std::fs::File;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;

const PAGE: usize = 4096;
/// The log file is reused from its start once it holds this much, like the store's log.
const LOG_BYTES: u64 = 64 << 20;

#[derive(Parser, Debug)]
#[command(about = "Small fdatasync'd appends, optionally beside checkpoint-like bulk writes: the disk's floor")]
struct Args {
    /// Directory for the two scratch files (use the store's data disk).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Log appends (each one write + fdatasync) per second, on a fixed schedule.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Bytes per log append (a group commit of a few messages is a few KiB).
    #[arg(long, default_value_t = 2048)]
    record_bytes: usize,
    /// Pages of 4 KiB written per checkpoint (0: no checkpoint thread).
    #[arg(long, default_value_t = 3000)]
    checkpoint_pages: usize,
    /// Milliseconds from the start of one checkpoint to the start of the next.
    #[arg(long, default_value_t = 1000)]
    checkpoint_every_ms: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    duration: u64,
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            "--rate must be a positive number"
        );
        anyhow::ensure!(self.duration > 0, "--duration must be at least 1");
        anyhow::ensure!(
            (1..=1 << 20).contains(&self.record_bytes),
            "--record-bytes must be between 1 and 1 MiB"
        );
        anyhow::ensure!(self.checkpoint_every_ms > 0, "--checkpoint-every-ms must be at least 1");
        Ok(())
    }
}

/// What one run measured.
struct Outcome {
    /// Log append latency from its planned time, in microseconds.
    appends: Histogram<u64>,
    /// Duration of each checkpoint (page writes and the fdatasync), in microseconds.
    checkpoints: Histogram<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.check()?;
    let outcome = run(&args)?;
    report(&args, &outcome);
    Ok(())
}

fn run(args: &Args) -> anyhow::Result<Outcome> {
    let log = scratch_file(&args.dir.join("disk_floor.log"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let checkpointer = (args.checkpoint_pages > 0)
        .then(|| -> anyhow::Result<_> {
            let file = scratch_file(&args.dir.join("disk_floor.db"))?;
            let (pages, every, stop) = (
                args.checkpoint_pages,
                Duration::from_millis(args.checkpoint_every_ms),
                stop.clone(),
            );
            Ok(std::thread::spawn(move || checkpoints(&file, pages, every, &stop)))
        })
        .transpose()?;
    let appends = appends(&log, args);
    stop.store(true, Ordering::Relaxed);
    let checkpoints = match checkpointer {
        Some(thread) => thread
            .join()
            .map_err(|_| anyhow::anyhow!("the checkpoint thread panicked"))??,
        None => Histogram::new(3)?,
    };
    let _ = std::fs::remove_file(args.dir.join("disk_floor.log"));
    let _ = std::fs::remove_file(args.dir.join("disk_floor.db"));
    Ok(Outcome {
        appends: appends?,
        checkpoints,
    })
}

fn scratch_file(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// The log thread: open loop on a fixed schedule, latency measured from each planned time.
fn appends(log: &File, args: &Args) -> anyhow::Result<Histogram<u64>> {
    let mut latency = Histogram::new(3)?;
    let record = vec![0x5a_u8; args.record_bytes];
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    let mut planned = start;
    let mut offset = 0_u64;
    while planned < end {
        if let Some(wait) = planned.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        log.write_all_at(&record, offset).context("log write")?;
        log.sync_data().context("log fdatasync")?;
        latency.record(planned.elapsed().as_micros() as u64)?;
        offset = next_offset(offset, record.len() as u64);
        planned += interval;
    }
    Ok(latency)
}

/// Where the next record goes: after this one, or at the start once the log is full.
fn next_offset(offset: u64, record: u64) -> u64 {
    match offset + 2 * record > LOG_BYTES {
        true => 0,
        false => offset + record,
    }
}

/// The checkpoint thread: `pages` page writes and one fdatasync, every `every`, until `stop`.
fn checkpoints(file: &File, pages: usize, every: Duration, stop: &AtomicBool) -> anyhow::Result<Histogram<u64>> {
    let mut took = Histogram::new(3)?;
    let page: Vec<u8> = (0..PAGE).map(|i| (i * 31 % 251) as u8).collect();
    let mut round = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        // Spread over a file ten times the checkpoint, as a B-tree's dirty pages are.
        for i in 0..pages as u64 {
            let slot = (i * 10 + round % 10) * PAGE as u64;
            file.write_all_at(&page, slot).context("checkpoint write")?;
        }
        file.sync_data().context("checkpoint fdatasync")?;
        took.record(started.elapsed().as_micros() as u64)?;
        round += 1;
        while started.elapsed() < every && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5).min(every));
        }
    }
    Ok(took)
}

fn report(args: &Args, outcome: &Outcome) {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let a = &outcome.appends;
    println!(
        "log appends: {} at {}/s of {} B; latency from the planned time p50 {:.2} / p90 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.2} ms",
        a.len(),
        args.rate,
        args.record_bytes,
        ms(a, 0.5),
        ms(a, 0.9),
        ms(a, 0.99),
        ms(a, 0.999),
        a.max() as f64 / 1000.0
    );
    let c = &outcome.checkpoints;
    match c.is_empty() {
        true => println!("checkpoints: none (--checkpoint-pages 0)"),
        false => println!(
            "checkpoints: {} of {} pages every {} ms, beside the log; each took p50 {:.1} / max {:.1} ms",
            c.len(),
            args.checkpoint_pages,
            args.checkpoint_every_ms,
            ms(c, 0.5),
            c.max() as f64 / 1000.0
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["disk_floor"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("parses")
    }

    #[test]
    fn every_planned_append_is_written_and_measured_and_checkpoints_run_beside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir_arg = dir.path().to_str().expect("utf-8 path");
        let args = args(&[
            "--dir",
            dir_arg,
            "--rate",
            "50",
            "--duration",
            "1",
            "--checkpoint-pages",
            "8",
            "--checkpoint-every-ms",
            "100",
        ]);
        let outcome = run(&args).expect("runs");
        assert_eq!(outcome.appends.len(), 50, "one append per planned slot");
        assert!(!outcome.checkpoints.is_empty(), "the checkpoint thread ran");
        assert!(!dir.path().join("disk_floor.log").exists(), "scratch files are removed");
    }

    #[test]
    fn the_log_wraps_before_it_outgrows_its_size() {
        assert_eq!(next_offset(0, 100), 100);
        assert_eq!(next_offset(LOG_BYTES - 150, 100), 0);
        assert_eq!(next_offset(LOG_BYTES - 200, 100), LOG_BYTES - 100);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(args(&["--rate", "0"]).check().is_err());
        assert!(args(&["--duration", "0"]).check().is_err());
        assert!(args(&["--record-bytes", "0"]).check().is_err());
        assert!(args(&["--checkpoint-every-ms", "0"]).check().is_err());
        assert!(args(&[]).check().is_ok());
    }
}
