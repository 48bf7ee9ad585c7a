//! Probes and metrics: `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Served on the internal listener when `server.internal_listen` is set, else on the public one.
//! Liveness never checks dependencies (a slow store must not get every node restarted);
//! readiness follows the node's [`Lifecycle`](crate::state::Lifecycle): not ready while starting
//! and once draining for shutdown, so load balancers stop routing new clients here.

use std::time::Duration;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::web;
use actix_web::HttpResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use roost_engine::ids::ConversationId;
use serde_json::json;

use crate::cluster;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(get_healthz))
        .route("/readyz", web::get().to(get_readyz))
        .route("/metrics", web::get().to(get_metrics));
}

/// # `GET /healthz`
///
/// Liveness: 200 `{"status":"ok"}` whenever the process can answer.
async fn get_healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// # `GET /readyz`
///
/// Readiness: 200 `{"status":"ready","storage":"ok","presence":"ok"|"degraded"}` when serving;
/// 503 with `"status":"starting"` before the listeners are up, `"draining"` once shutdown has
/// begun, `"left"` once the node has left its cluster, or `"storage_unavailable"` when a probe
/// read of the store fails (within 2 s). Presence is advisory: a degraded directory (Redis down)
/// is reported but keeps the node ready. A cluster node also reports `"cluster"`
/// ([`ClusterReadiness`](cluster::ClusterReadiness): `ok`, `not_member`, `leaving`, `left`,
/// `no_leader`, `unavailable`) and is ready only when it is `ok` (a member, with a known leader);
/// else 503 `"cluster_unavailable"`.
async fn get_readyz(state: web::Data<AppState>) -> HttpResponse {
    let lifecycle = &state.lifecycle;
    if !lifecycle.is_ready() {
        let status = if lifecycle.is_draining() {
            "draining"
        } else if lifecycle.has_left() {
            "left"
        } else {
            "starting"
        };
        return HttpResponse::ServiceUnavailable().json(json!({ "status": status }));
    }
    let presence = if state.engine.presence().healthy() {
        "ok"
    } else {
        "degraded"
    };
    let cluster = match &state.cluster {
        Some(node) => Some(cluster::readiness(&state, node).await),
        None => None,
    };
    let probe = state.engine.store().last_seq(ConversationId(0));
    let storage = match tokio::time::timeout(STORAGE_PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => "ok",
        Ok(Err(error)) => {
            tracing::warn!(%error, "Readiness probe: the store is unavailable.");
            "unavailable"
        }
        Err(_) => "unavailable",
    };
    let status = match (storage, cluster) {
        ("ok", None) => "ready",
        ("ok", Some(c)) if c.is_ready() => "ready",
        ("ok", Some(_)) => "cluster_unavailable",
        _ => "storage_unavailable",
    };
    let mut body = json!({ "status": status, "storage": storage, "presence": presence });
    if let Some(cluster) = cluster {
        body["cluster"] = json!(cluster);
    }
    match status {
        "ready" => HttpResponse::Ok().json(body),
        _ => HttpResponse::ServiceUnavailable().json(body),
    }
}

/// How long readiness waits for the store to answer a probe read.
const STORAGE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// # `GET /metrics`
///
/// Prometheus text exposition of every `roost_*` metric, plus the process's CPU time and
/// resident memory.
async fn get_metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    crate::telemetry::record_process_metrics();
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(handle.render())
}

#[cfg(test)]
mod tests {
    use actix_web::test;
    use actix_web::App;

    use super::*;

    #[actix_web::test]
    async fn healthz_needs_no_state() {
        let app = test::init_service(App::new().configure(configure)).await;
        let req = test::TestRequest::get().uri("/healthz").to_request();
        let body: serde_json::Value = test::call_and_read_body_json(&app, req).await;
        assert_eq!(body, json!({ "status": "ok" }));
    }
}
