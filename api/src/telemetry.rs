//! Logging and metrics: the tracing subscriber, the Prometheus recorder, and the API's typed
//! metric events.
//!
//! Metric names are `roost_api_*` (counters end in `_total`, histograms in `_seconds`); only this
//! module names them, as `engine::metrics` does for `roost_engine_*`. Histograms get explicit
//! buckets, so they render as Prometheus histograms (aggregatable across nodes) rather than
//! summaries.

use std::io::IsTerminal;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::counter;
use metrics::describe_counter;
use metrics::describe_gauge;
use metrics::describe_histogram;
use metrics::gauge;
use metrics::histogram;
use metrics::Unit;
use metrics_exporter_prometheus::Matcher;
use metrics_exporter_prometheus::PrometheusBuilder;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;
use crate::config::LogFormat;
use crate::error::ErrorCode;

/// Upper bounds of latency histograms (`*_seconds`): 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of group-commit sizes (`*_batch_writes`).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// Upper bounds of size histograms (`*_bytes`).
pub const SIZE_BUCKETS: &[f64] = &[256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0];

/// Install the global tracing subscriber: `RUST_LOG` if set and valid, else `config.level`.
/// Does nothing if a subscriber is already installed (a second call, or a test harness).
pub fn init_tracing(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // An error here means a subscriber is already installed; the first one stays.
    let _ = match config.format {
        LogFormat::Pretty => builder.with_ansi(std::io::stdout().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the Prometheus recorder as the global `metrics` recorder, once per process, and
/// return a handle that renders the scrape text. Later calls return the same handle.
///
/// If another recorder was installed first (by a test), the handle renders a recorder that
/// receives nothing, rather than failing.
pub fn install_metrics() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => describe(),
                Err(error) => {
                    tracing::warn!(%error, "Another metrics recorder is installed; /metrics will be empty.")
                }
            }
            handle
        })
        .clone()
}

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_batch_writes".into()), BATCH_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), SIZE_BUCKETS))
        .expect("bucket lists are constant and not empty")
}

fn describe() {
    describe_counter!("roost_api_ws_connects_total", "WebSocket sessions opened.");
    describe_counter!("roost_api_ws_disconnects_total", "WebSocket sessions closed.");
    describe_gauge!("roost_api_ws_connections", "WebSocket sessions open now.");
    describe_counter!(
        "roost_api_ws_frames_received_total",
        "Frames received from WebSocket clients, by type."
    );
    describe_counter!(
        "roost_api_client_errors_total",
        "Errors returned to clients, by stable error code."
    );
    describe_counter!(
        "roost_api_http_requests_total",
        "HTTP requests answered, by route pattern and status."
    );
    describe_histogram!(
        "roost_api_http_request_seconds",
        Unit::Seconds,
        "Time to produce an HTTP response, by route pattern."
    );
}

/// Run the recorder's periodic upkeep (draining histogram buffers) forever; spawn it once.
pub async fn run_metrics_upkeep(handle: PrometheusHandle, every: Duration) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        handle.run_upkeep();
    }
}

/// Record the process's CPU time and resident memory as `process_cpu_seconds_total` and
/// `process_resident_memory_bytes` (the Prometheus conventions), read from /proc. Called when
/// /metrics is rendered so the values are current; a no-op where /proc is missing.
pub fn record_process_metrics() {
    // Linux reports CPU time in clock ticks (USER_HZ, 100 on every mainstream architecture) and
    // memory in pages (4 KiB on x86_64 and aarch64 defaults).
    const TICKS_PER_SEC: f64 = 100.0;
    const PAGE_BYTES: f64 = 4096.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which is in parentheses and may contain spaces).
        if let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
            // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
            gauge!("process_cpu_seconds_total").set((ticks(11) + ticks(12)) / TICKS_PER_SEC);
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        if let Some(pages) = statm.split_whitespace().nth(1).and_then(|f| f.parse::<f64>().ok()) {
            gauge!("process_resident_memory_bytes").set(pages * PAGE_BYTES);
        }
    }
}

/// WebSocket sessions open in this process, counted by [`ws_connected`]/[`ws_disconnected`];
/// shutdown waits for it to reach zero.
static WS_OPEN: AtomicI64 = AtomicI64::new(0);

/// A WebSocket session started.
pub fn ws_connected() {
    WS_OPEN.fetch_add(1, Ordering::Relaxed);
    counter!("roost_api_ws_connects_total").increment(1);
    gauge!("roost_api_ws_connections").increment(1.0);
}

/// A WebSocket session ended (call once per [`ws_connected`]).
pub fn ws_disconnected() {
    WS_OPEN.fetch_sub(1, Ordering::Relaxed);
    counter!("roost_api_ws_disconnects_total").increment(1);
    gauge!("roost_api_ws_connections").decrement(1.0);
}

/// WebSocket sessions open now.
pub fn ws_open() -> i64 {
    WS_OPEN.load(Ordering::Relaxed)
}

/// An HTTP request was answered. `route` is the matched pattern (`/v1/conversations/{id}`),
/// never the raw path, so label cardinality stays bounded.
pub fn http_request(route: &str, status: u16, elapsed: Duration) {
    let route = route.to_owned();
    counter!("roost_api_http_requests_total", "route" => route.clone(), "status" => status.to_string()).increment(1);
    histogram!("roost_api_http_request_seconds", "route" => route).record(elapsed.as_secs_f64());
}

/// A frame arrived from a WebSocket client; `kind` is its `type` (`"send"`, ...), or `"text"`
/// when counted before decoding.
pub fn frames_received(kind: &'static str) {
    counter!("roost_api_ws_frames_received_total", "type" => kind).increment(1);
}

/// An error was returned to a client (REST or WebSocket).
pub fn client_errors(code: ErrorCode) {
    counter!("roost_api_client_errors_total", "code" => code_label(code)).increment(1);
}

/// The stable snake_case name of an error code, as clients see it.
fn code_label(code: ErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{code:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_renders_histograms_with_buckets() {
        let first = install_metrics();
        let second = install_metrics();
        http_request("/v1/test", 200, Duration::from_millis(3));
        client_errors(ErrorCode::RateLimited);
        let text = second.render();
        // Only meaningful when this test installed the global recorder, which it does unless
        // another test in this binary installed a different one first.
        if text.contains("roost_api_http_request_seconds") {
            assert!(text.contains("roost_api_http_request_seconds_bucket"), "{text}");
            assert!(text.contains("code=\"rate_limited\""), "{text}");
        }
        assert_eq!(first.render().is_empty(), text.is_empty());
    }

    #[test]
    fn error_codes_are_labelled_as_on_the_wire() {
        assert_eq!(code_label(ErrorCode::EditWindowPassed), "edit_window_passed");
    }
}
