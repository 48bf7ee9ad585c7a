//! The composition root of a node: open the store, start the engine and auth, bind the
//! listeners, and shut down in order on SIGTERM/SIGINT.
//!
//! Startup: telemetry, store, engine, auth, [`AppState`], listeners; readiness turns on only once
//! every listener is bound. Shutdown (mini-redis style, but driven by the hub instead of a
//! broadcast): readiness turns off (`/readyz` answers 503), every WebSocket is told to reconnect
//! elsewhere (`KickAll { ShuttingDown }`), the node waits up to `server.shutdown_grace_secs` for
//! them to close, the listeners stop gracefully (in-flight requests finish, bounded by the same
//! grace), and the store flushes. A second signal skips the wait.
//!
//! A cluster node (`cluster.enabled`) starts its `ClusterNode` before the engine, which runs on
//! the node's placement and routing ([`cluster::topology`]); joins through a seed before binding
//! (`roost serve --join`); serves the `/admin/cluster` routes on the internal listener only; and
//! stops the cluster node after the HTTP drain, without leaving the cluster (the others fail its
//! shards over; `roost cluster remove` first hands them over gracefully).
//!
//! actix's own signal handling is disabled: it would stop the listeners at once, before clients
//! were told anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use actix_web::dev::ServerHandle;
use actix_web::dev::Service;
use actix_web::dev::ServiceResponse;
use actix_web::error::JsonPayloadError;
use actix_web::error::PayloadError;
use actix_web::rt::task::JoinHandle;
use actix_web::web;
use actix_web::App;
use actix_web::HttpRequest;
use actix_web::HttpServer;
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use roost_engine::delivery::hub::CountConnections;
use roost_engine::delivery::hub::KickAll;
use roost_engine::delivery::DisconnectReason;
use roost_engine::presence::LocalPresence;
use roost_engine::presence::PresenceBackend;
use roost_engine::presence::PresenceDirectory;
use roost_engine::presence::RedisPresence;
use roost_engine::remote::Topology;
use roost_engine::store::embedded::EmbeddedStore;
use roost_engine::store::scylla::ScyllaStore;
use roost_engine::store::Store;
use roost_engine::Engine;

use crate::auth::Auth;
use crate::cluster;
use crate::config::NodeConfig;
use crate::config::StorageBackend;
use crate::encoder::JsonEncoder;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::http;
use crate::http::health;
use crate::state::AppState;
use crate::state::Lifecycle;
use crate::telemetry;
use crate::tls;
use crate::ws;

/// How often drain re-checks the open connections.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Run a node until SIGTERM or SIGINT, then drain and stop. Must run inside an actix `System`.
/// `join`: the peer address of a cluster member to join through (`roost serve --join`).
pub async fn run(config: NodeConfig, join: Option<String>) -> anyhow::Result<()> {
    telemetry::init_tracing(&config.log);
    let problems = config.validate();
    if !problems.is_empty() {
        anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "));
    }
    if join.is_some() && !config.cluster.enabled {
        anyhow::bail!("`--join` needs a cluster node: set cluster.enabled = true (and the rest of [cluster])");
    }
    for warning in config.warnings() {
        tracing::warn!(%warning, "Configuration warning.");
    }
    // Listen for signals before anything starts, so an early SIGTERM is not lost.
    let mut signals = Signals::new().context("cannot install the signal handlers")?;
    let metrics = telemetry::install_metrics();
    actix_web::rt::spawn(telemetry::run_metrics_upkeep(metrics.clone(), Duration::from_secs(5)));

    let config = Arc::new(config);
    let store = open_store(&config).await?;
    let presence = open_presence(&config).await?;
    // The cluster node starts before the engine, which runs on its placement and routing. Starting
    // blocks this thread briefly (opening the Raft log, binding the peer listener); nothing is
    // served yet.
    let node = match config.cluster.enabled {
        true => Some(cluster::start(&config)?),
        false => None,
    };
    let topology = node.as_ref().map_or_else(Topology::standalone, cluster::topology);
    let mut state = build_state(config.clone(), store, presence, topology);
    if let Some(node) = &node {
        node.attach_engine(state.engine.clone());
        state.cluster = Some(node.clone());
    }
    let served = serve(&state, &metrics, &mut signals, join.as_deref()).await;
    if let Some(node) = &node {
        node.shutdown().await;
    }
    let flushed = state.engine.store().flush().await;
    if let Err(error) = &flushed {
        tracing::error!(%error, "Flushing the store failed; recent writes may be lost.");
    }
    tracing::info!("Roost stopped.");
    served?;
    flushed.context("flushing the store on shutdown")?;
    Ok(())
}

/// Join the cluster if asked, bind the listeners, serve until a signal, then drain: clients are
/// told to reconnect elsewhere and the listeners stop (the caller then stops the cluster node,
/// after the HTTP drain, and flushes the store).
async fn serve(
    state: &AppState,
    metrics: &PrometheusHandle,
    signals: &mut Signals,
    join: Option<&str>,
) -> anyhow::Result<()> {
    if let (Some(node), Some(seed)) = (&state.cluster, join) {
        tokio::select! {
            joined = cluster::join(node, seed) => joined?,
            signal = signals.recv() => anyhow::bail!("{signal} while joining the cluster"),
        }
    }
    let mut listeners = Listeners::bind(state, metrics)?;
    state.lifecycle.set_ready();
    if let Some(node) = &state.cluster {
        cluster::spawn_leave_watch(state.clone(), node.clone());
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        public = %listeners.public_addrs,
        internal = %listeners.internal_addrs,
        tls = listeners.tls,
        cluster_node = state.cluster.as_ref().map(|n| n.node_id().0),
        "Roost is listening."
    );
    let outcome = listeners.serve(signals).await;
    let forced = drain(state, signals).await;
    listeners.stop(!forced).await;
    outcome
}

/// Open the configured storage backend. For `scylla`, this connects to the cluster and applies
/// pending schema migrations when `scylla.apply_migrations_on_start`; its driver tasks run on the
/// calling runtime.
pub async fn open_store(config: &NodeConfig) -> anyhow::Result<Arc<dyn Store>> {
    let storage = &config.storage;
    match storage.backend {
        StorageBackend::Embedded => {
            let store = EmbeddedStore::open(storage.embedded_options()).with_context(|| {
                format!(
                    "cannot open the embedded store in {} (storage.data_dir)",
                    storage.data_dir.display()
                )
            })?;
            Ok(Arc::new(store))
        }
        StorageBackend::Scylla => {
            let scylla = &config.scylla;
            // Opening runs schema checks and a lightweight transaction; a cluster that is just
            // starting or busy may time them out, so try a few times before giving up.
            let mut attempt = 1;
            let store = loop {
                match ScyllaStore::connect(scylla.clone()).await {
                    Ok(store) => break store,
                    Err(error) if attempt < SCYLLA_OPEN_ATTEMPTS && error.is_retryable() => {
                        tracing::warn!(%error, attempt, "Opening the ScyllaDB store failed; retrying.");
                        tokio::time::sleep(Duration::from_secs(2 * attempt as u64)).await;
                        attempt += 1;
                    }
                    Err(error) => {
                        return Err(error).with_context(|| {
                            format!(
                                "cannot open the ScyllaDB store (keyspace `{}` at {})",
                                scylla.keyspace,
                                scylla.contact_points.join(", ")
                            )
                        })
                    }
                }
            };
            Ok(Arc::new(store))
        }
    }
}

/// How many times a node tries to open the ScyllaDB store at start.
const SCYLLA_OPEN_ATTEMPTS: u32 = 4;

/// The configured presence directory. Redis may be down at start: the directory reconnects by
/// itself, and presence is advisory, so only invalid options stop the node.
pub async fn open_presence(config: &NodeConfig) -> anyhow::Result<Arc<dyn PresenceDirectory>> {
    Ok(match config.presence.backend {
        PresenceBackend::Local => Arc::new(LocalPresence::start()),
        PresenceBackend::Redis => {
            let redis = RedisPresence::connect(&config.redis)
                .await
                .context("cannot set up the Redis presence directory ([redis])")?;
            Arc::new(redis)
        }
    })
}

/// The default number of HTTP workers and of engine workers: half the cores each (at least one),
/// so the two kinds of event loop together have one core each. On the 2-core bench machine this
/// used 14% less CPU per 1:1 message than one of each per core, with a lower fan-out tail
/// (docs/performance.md, "Event loops per core").
fn half_the_cores() -> usize {
    (std::thread::available_parallelism().map_or(1, usize::from) / 2).max(1)
}

/// Start the engine and auth on `store` and bundle them with `config`. Must run inside an actix
/// `System`. The WebSocket ticket secret is random per process: tickets live seconds, so a
/// restart only makes clients fetch a new one.
pub fn build_state(
    config: Arc<NodeConfig>,
    store: Arc<dyn Store>,
    presence: Arc<dyn PresenceDirectory>,
    topology: Topology,
) -> AppState {
    let workers = match config.server.engine_workers {
        0 => half_the_cores(),
        n => n,
    };
    let engine = Engine::start_with(
        store.clone(),
        Arc::new(JsonEncoder),
        config.engine.clone(),
        workers,
        presence,
        topology,
    );
    let ticket_secret: [u8; 32] = rand::random();
    let auth = Auth::new(store, engine.hub().clone(), config.auth.clone(), ticket_secret);
    AppState {
        engine,
        auth: Arc::new(auth),
        config,
        lifecycle: Arc::new(Lifecycle::default()),
        cluster: None,
    }
}

/// Everything the public listener serves, except middleware and the default service (which
/// only an `App` can hold): shared data, body limits, REST, WebSocket and, if `with_health`,
/// the probes and metrics. Tests build the same app with
/// `App::new().configure(configure_public_app(state, metrics, true))`.
pub fn configure_public_app(
    state: AppState,
    metrics: PrometheusHandle,
    with_health: bool,
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    let limit = state.config.limits.max_request_body_bytes;
    let state = web::Data::new(state);
    let metrics = web::Data::new(metrics);
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state.clone())
            .app_data(metrics.clone())
            .app_data(json_config(limit))
            .app_data(web::PayloadConfig::new(limit))
            .configure(http::configure_public)
            .configure(ws::configure);
        if with_health {
            cfg.configure(health::configure);
        }
    }
}

/// JSON bodies up to `limit` bytes; every failure is an [`ApiError`]: `payload_too_large`,
/// `invalid_field` (valid JSON of the wrong shape, naming the field) or `malformed_json`.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|error, _req| json_error(error).into())
}

fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is {length} bytes; the limit is {limit}"),
        ),
        JsonPayloadError::Overflow { limit } => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        ),
        JsonPayloadError::Payload(PayloadError::Overflow) => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is larger than the limit")
        }
        JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::MalformedJson,
            "expected a JSON body with Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(error) if error.is_data() => ApiError::invalid(error.to_string()),
        JsonPayloadError::Deserialize(error) => {
            ApiError::new(ErrorCode::MalformedJson, format!("not valid JSON: {error}"))
        }
        other => ApiError::new(ErrorCode::MalformedJson, other.to_string()),
    }
}

/// The default service: a JSON `not_found` for every unknown route.
async fn no_route(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// Record a finished request: metrics by route pattern, a log line, and the error code if the
/// answer is an `ApiError`.
fn observe(response: &ServiceResponse, started: Instant) {
    let elapsed = started.elapsed();
    let request = response.request();
    let route = request.match_pattern().unwrap_or_else(|| "unmatched".into());
    let status = response.status();
    telemetry::http_request(&route, status.as_u16(), elapsed);
    if let Some(api) = response.response().error().and_then(|e| e.as_error::<ApiError>()) {
        telemetry::client_errors(api.code);
    }
    if status.is_server_error() {
        tracing::warn!(method = %request.method(), %route, status = status.as_u16(), ?elapsed, "Request failed.");
    } else {
        tracing::debug!(method = %request.method(), %route, status = status.as_u16(), ?elapsed, "Request answered.");
    }
}

/// Build an `App` with the request observer and the JSON not-found default service.
macro_rules! app {
    ($configure:expr) => {
        App::new()
            .wrap_fn(|req, service| {
                let started = Instant::now();
                let response = service.call(req);
                async move {
                    let response = response.await?;
                    observe(&response, started);
                    Ok(response)
                }
            })
            .configure($configure)
            .default_service(web::to(no_route))
    };
}

/// The running listeners of a node.
struct Listeners {
    public: Listener,
    internal: Option<Listener>,
    public_addrs: Addrs,
    internal_addrs: Addrs,
    tls: bool,
}

struct Listener {
    handle: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
}

impl Listener {
    fn start(server: actix_web::dev::Server) -> Listener {
        Listener {
            handle: server.handle(),
            task: actix_web::rt::spawn(server),
        }
    }
}

impl Listeners {
    fn bind(state: &AppState, metrics: &PrometheusHandle) -> anyhow::Result<Listeners> {
        let server = &state.config.server;
        let grace = server.shutdown_grace_secs;
        let tls = match (&server.tls_cert, &server.tls_key) {
            (Some(cert), Some(key)) => {
                let mut config = tls::load_server_config(cert, key)?;
                // actix-web adds `http/1.1` itself; keep it from being listed twice.
                config.alpn_protocols.clear();
                Some(config)
            }
            _ => None,
        };
        let separate_internal = server.internal_listen.is_some();

        let app_config = configure_public_app(state.clone(), metrics.clone(), !separate_internal);
        // No Nagle: chat frames are small and latency-sensitive; waiting for the peer's
        // delayed ACK would add up to 40 ms to an ack or a delivery.
        let public = HttpServer::new(move || app!(app_config.clone()))
            .tcp_nodelay(true)
            .shutdown_timeout(grace)
            .disable_signals()
            .workers(match server.workers {
                0 => half_the_cores(),
                n => n,
            });
        let public = match &tls {
            Some(config) => public.bind_rustls_0_23(server.listen, config.clone()),
            None => public.bind(server.listen),
        }
        .map_err(|e| bind_error(e, server.listen, "server.listen"))?;
        let public_addrs = Addrs(public.addrs());

        let internal = match server.internal_listen {
            Some(addr) => {
                let state = web::Data::new(state.clone());
                let metrics = web::Data::new(metrics.clone());
                let internal = HttpServer::new(move || {
                    let (state, metrics) = (state.clone(), metrics.clone());
                    app!(move |cfg: &mut web::ServiceConfig| {
                        cfg.app_data(state)
                            .app_data(metrics)
                            .configure(health::configure)
                            .configure(http::cluster::configure_internal);
                    })
                })
                .workers(1)
                .shutdown_timeout(grace)
                .disable_signals()
                .bind(addr)
                .map_err(|e| bind_error(e, addr, "server.internal_listen"))?;
                Some(internal)
            }
            None => None,
        };
        let internal_addrs = Addrs(internal.as_ref().map(HttpServer::addrs).unwrap_or_default());

        // Both are bound: only now start them, so a failed bind leaves nothing running.
        Ok(Listeners {
            public: Listener::start(public.run()),
            internal: internal.map(|s| Listener::start(s.run())),
            public_addrs,
            internal_addrs,
            tls: tls.is_some(),
        })
    }

    /// Serve until a signal arrives (`Ok`) or a listener stops by itself (`Err`).
    async fn serve(&mut self, signals: &mut Signals) -> anyhow::Result<()> {
        let internal = async {
            match self.internal.as_mut() {
                Some(listener) => (&mut listener.task).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = signals.recv() => {
                tracing::info!(signal, "Shutting down.");
                Ok(())
            }
            result = &mut self.public.task => Err(listener_stopped("public", result)),
            result = internal => Err(listener_stopped("internal", result)),
        }
    }

    /// Stop accepting and close connections: gracefully (in-flight requests finish, bounded by
    /// `shutdown_grace_secs`) or at once. The internal listener stops last, so probes and
    /// metrics answer until the end.
    async fn stop(&self, graceful: bool) {
        self.public.handle.stop(graceful).await;
        if let Some(internal) = &self.internal {
            internal.handle.stop(graceful).await;
        }
    }
}

fn listener_stopped(which: &str, result: Result<std::io::Result<()>, actix_web::rt::task::JoinError>) -> anyhow::Error {
    match result {
        Ok(Ok(())) => anyhow::anyhow!("the {which} listener stopped unexpectedly"),
        Ok(Err(error)) => anyhow::anyhow!("the {which} listener failed: {error}"),
        Err(error) => anyhow::anyhow!("the {which} listener task failed: {error}"),
    }
}

fn bind_error(error: std::io::Error, addr: SocketAddr, key: &str) -> anyhow::Error {
    let hint = match error.kind() {
        std::io::ErrorKind::AddrInUse => "; another process (another roost?) is using it",
        std::io::ErrorKind::PermissionDenied => "; ports below 1024 need root or CAP_NET_BIND_SERVICE",
        std::io::ErrorKind::AddrNotAvailable => "; no local interface has this address",
        _ => "",
    };
    anyhow::anyhow!("cannot listen on {addr} ({key}): {error}{hint}")
}

/// Bound addresses, for the startup log line.
struct Addrs(Vec<SocketAddr>);

impl std::fmt::Display for Addrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "-");
        }
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", list.join(","))
    }
}

/// Tell every WebSocket client to reconnect elsewhere and wait, up to the grace period, for
/// the connections to close. Clients connecting meanwhile (a load balancer that has not yet
/// seen `/readyz` turn 503) are told too. Returns `true` if a second signal cut the wait short.
async fn drain(state: &AppState, signals: &mut Signals) -> bool {
    state.lifecycle.start_draining();
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    let hub = state.engine.hub();
    let kick = || KickAll {
        reason: DisconnectReason::ShuttingDown,
    };
    let told = hub.send(kick()).await.unwrap_or(0);
    tracing::info!(
        connections = told,
        grace_secs = grace.as_secs(),
        "Draining: clients told to reconnect."
    );
    let deadline = Instant::now() + grace;
    loop {
        let registered = hub.send(CountConnections).await.unwrap_or(0);
        let open = telemetry::ws_open();
        if registered == 0 && open <= 0 {
            tracing::info!("Every WebSocket is closed.");
            return false;
        }
        if Instant::now() >= deadline {
            tracing::warn!(open, "Grace period over; closing the remaining connections.");
            return false;
        }
        if registered > 0 {
            hub.do_send(kick());
        }
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_POLL) => {}
            signal = signals.recv() => {
                tracing::warn!(signal, "Second signal; stopping now.");
                return true;
            }
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from startup on.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::signal;
        use tokio::signal::unix::SignalKind;
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(not(unix))]
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    /// The name of the next signal received.
    #[cfg(unix)]
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
