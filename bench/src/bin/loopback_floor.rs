//! `loopback_floor`: what this machine charges for the fan-out shape with no chat server at all.
//!
//! The brief's fan-out target (400,000 deliveries/s, p99 <= 50 ms, server and load generator on
//! the same 2 cores) is mostly small writes over loopback TCP. This tool does only that: one
//! process opens `--connections` loopback connections; a "server" runtime writes each planned
//! message (a fixed-size frame carrying its planned send time) to every member of its group,
//! open-loop on a fixed schedule; a "client" runtime reads every connection and records latency
//! from the planned time. No WebSocket, JSON, actors or store: whatever CPU and latency it needs
//! is a floor under Roost plus `roost-loadtest` on the same machine. docs/performance.md uses it
//! to tell the chat server's own cost from the machine's.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(about = "Loopback TCP fan-out with no chat server: the machine's floor for the fan-out target")]
struct Args {
    /// Loopback connections (each is one group member).
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Members per group; every message goes to every member of one group.
    #[arg(long, default_value_t = 100)]
    group_size: usize,
    /// Messages per second over all groups (deliveries/s = rate x group size).
    #[arg(long, default_value_t = 4000.0)]
    rate: f64,
    /// Bytes per delivered frame (a chat event frame is about 200).
    #[arg(long, default_value_t = 200)]
    frame_bytes: usize,
    /// Seconds of load (after a one-second warm-up that is not measured).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Threads writing (the chat server's event loops).
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Threads reading (the load generator's).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Write each connection's due frames at most every this many milliseconds, in one write
    /// (0: one write per frame, at its planned time).
    #[arg(long, default_value_t = 0)]
    coalesce_ms: u64,
}

/// Where every planned time is measured from (both runtimes share the process clock).
struct Clock {
    origin: Instant,
    /// Frames planned before this (nanoseconds from `origin`) are warm-up, counted nowhere.
    measure_from: AtomicU64,
}

impl Clock {
    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_nanos() as u64
    }
}

/// What one run measured.
struct Outcome {
    groups: usize,
    /// Frames written to members with a planned time inside the measured window.
    written: u64,
    /// Of those, frames read back.
    delivered: u64,
    latency: Histogram<u64>,
    cpu_seconds: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let outcome = run(&args)?;
    anyhow::ensure!(
        outcome.delivered == outcome.written,
        "{} frames written but {} read back",
        outcome.written,
        outcome.delivered
    );
    report(&args, &outcome);
    Ok(())
}

fn run(args: &Args) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.frame_bytes >= 16, "--frame-bytes must be at least 16");
    anyhow::ensure!(
        args.group_size > 0 && args.connections >= args.group_size,
        "--connections must be at least --group-size (> 0)"
    );
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number of messages per second"
    );
    anyhow::ensure!(args.duration > 0, "--duration must be at least 1 second");
    let clock = Arc::new(Clock {
        origin: Instant::now(),
        measure_from: AtomicU64::new(u64::MAX),
    });
    let client_rt = runtime(args.client_threads, "floor-client")?;
    let server_rt = runtime(args.server_threads, "floor-server")?;

    let listener = server_rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let connections = args.connections;
    let accepting = server_rt.spawn(async move {
        let mut accepted = Vec::new();
        while accepted.len() < connections {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            accepted.push(stream);
        }
        Ok::<_, std::io::Error>(accepted)
    });
    let mut readers = Vec::new();
    for _ in 0..args.connections {
        let stream = client_rt
            .block_on(TcpStream::connect(addr))
            .context("connecting over loopback")?;
        stream.set_nodelay(true)?;
        readers.push(client_rt.spawn(read_frames(stream, args.frame_bytes, clock.clone())));
    }
    let accepted = server_rt.block_on(accepting)??;

    let groups = args.connections / args.group_size;
    let per_group_rate = args.rate / groups as f64;
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs(1);
    let stop = measure_from + Duration::from_secs(args.duration);
    clock.measure_from.store(clock.nanos(measure_from), Ordering::Relaxed);
    let mut members = accepted.into_iter();
    let writers: Vec<_> = (0..groups)
        .map(|g| {
            let group: Vec<TcpStream> = members.by_ref().take(args.group_size).collect();
            // Stagger the groups so their messages interleave like independent senders.
            let first = start + Duration::from_secs_f64(g as f64 / args.rate);
            let schedule = Schedule {
                first,
                interval: Duration::from_secs_f64(1.0 / per_group_rate),
                stop,
                coalesce: Duration::from_millis(args.coalesce_ms),
            };
            server_rt.spawn(write_group(group, schedule, args.frame_bytes, clock.clone()))
        })
        .collect();
    // Connections left over after whole groups get nothing; closing them ends their readers.
    drop(members);

    let cpu_before = wait_and_read_cpu(measure_from)?;
    let cpu_after = wait_and_read_cpu(stop)?;
    let mut written = 0u64;
    for writer in writers {
        written += server_rt.block_on(writer)??;
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    let mut delivered = 0u64;
    for reader in readers {
        let (histogram, count) = client_rt.block_on(reader)??;
        latency.add(histogram)?;
        delivered += count;
    }
    Ok(Outcome {
        groups,
        written,
        delivered,
        latency,
        cpu_seconds: cpu_after - cpu_before,
    })
}

fn runtime(threads: usize, name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// When one group's messages are planned, and how its writes are grouped.
struct Schedule {
    first: Instant,
    interval: Duration,
    stop: Instant,
    coalesce: Duration,
}

/// Write every planned message of one group to each member, on schedule, until `stop`: each
/// frame at its planned time, or every `coalesce` all frames due by then in one write. Returns
/// how many frames it wrote to members inside the measured window.
async fn write_group(
    mut members: Vec<TcpStream>,
    schedule: Schedule,
    frame_bytes: usize,
    clock: Arc<Clock>,
) -> std::io::Result<u64> {
    let measure_from = clock.measure_from.load(Ordering::Relaxed);
    let mut measured = 0u64;
    let mut batch = Vec::new();
    let mut planned = schedule.first;
    let mut wake = schedule.first;
    while planned < schedule.stop {
        tokio::time::sleep_until(wake.into()).await;
        let due = Instant::now().max(wake);
        batch.clear();
        while planned <= due && planned < schedule.stop {
            let at = batch.len();
            batch.resize(at + frame_bytes, 0);
            let nanos = clock.nanos(planned);
            batch[at..at + 8].copy_from_slice(&nanos.to_le_bytes());
            if nanos >= measure_from {
                measured += members.len() as u64;
            }
            planned += schedule.interval;
        }
        for member in &mut members {
            member.write_all(&batch).await?;
        }
        wake = planned.max(wake + schedule.coalesce);
    }
    Ok(measured)
}

/// Read fixed-size frames until the writer closes; latency from each frame's planned time.
/// Reads take whatever is buffered (up to 64 KiB), so a backlog costs one syscall, not one per
/// frame, as in any efficient client.
async fn read_frames(
    mut stream: TcpStream,
    frame_bytes: usize,
    clock: Arc<Clock>,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut latency = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut filled = 0usize;
    let mut count = 0u64;
    loop {
        let read = stream.read(&mut buffer[filled..]).await?;
        if read == 0 {
            return Ok((latency, count));
        }
        filled += read;
        let now = clock.nanos(Instant::now());
        let measure_from = clock.measure_from.load(Ordering::Relaxed);
        let whole = filled - filled % frame_bytes;
        for frame in buffer[..whole].chunks_exact(frame_bytes) {
            let mut planned = [0u8; 8];
            planned.copy_from_slice(&frame[..8]);
            let planned = u64::from_le_bytes(planned);
            if planned >= measure_from {
                latency.saturating_record(now.saturating_sub(planned).max(1_000));
                count += 1;
            }
        }
        buffer.copy_within(whole..filled, 0);
        filled -= whole;
    }
}

/// Sleep until `at`, then return this process's CPU seconds (user + system) so far.
fn wait_and_read_cpu(at: Instant) -> anyhow::Result<f64> {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the command name.
    Ok((ticks(11) + ticks(12)) / 100.0)
}

fn report(args: &Args, outcome: &Outcome) {
    let secs = args.duration as f64;
    let latency = &outcome.latency;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1e6;
    println!(
        "loopback_floor: {} connections, {} groups of {}, {} msgs/s offered, {} B frames, {} server / {} client threads, coalesce {} ms",
        args.connections,
        outcome.groups,
        args.group_size,
        args.rate,
        args.frame_bytes,
        args.server_threads,
        args.client_threads,
        args.coalesce_ms
    );
    println!("  delivered/s   {:.0}", outcome.delivered as f64 / secs);
    println!(
        "  cpu           {:.2} cores ({:.2} µs per delivery)",
        outcome.cpu_seconds / secs,
        outcome.cpu_seconds * 1e6 / outcome.delivered.max(1) as f64
    );
    println!(
        "  latency ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1e6
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(coalesce_ms: u64) -> Args {
        Args {
            connections: 25,
            group_size: 10,
            rate: 200.0,
            frame_bytes: 64,
            duration: 1,
            server_threads: 1,
            client_threads: 1,
            coalesce_ms,
        }
    }

    #[test]
    fn every_frame_written_in_the_window_is_read_back_once() {
        for coalesce_ms in [0, 20] {
            let outcome = run(&small(coalesce_ms)).expect("run");
            // 2 groups of 10 (5 connections left over), 200 msgs/s for 1 s: about 2,000 frames.
            assert_eq!(outcome.groups, 2);
            assert!(
                (1_900..=2_100).contains(&outcome.written),
                "written {}",
                outcome.written
            );
            assert_eq!(outcome.delivered, outcome.written, "coalesce {coalesce_ms} ms");
            assert_eq!(outcome.latency.len(), outcome.delivered);
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        let mut args = small(0);
        args.group_size = 0;
        assert!(run(&args).is_err());
        let mut args = small(0);
        args.frame_bytes = 8;
        assert!(run(&args).is_err());
        let mut args = small(0);
        args.rate = 0.0;
        assert!(run(&args).is_err(), "a zero rate is refused, not a panic");
        let mut args = small(0);
        args.duration = 0;
        assert!(run(&args).is_err());
    }
}
