//! Probes and metrics: `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Served on the internal listener when `server.internal_listen` is set, else on the public one.
//! Liveness never checks dependencies (a slow store must not get every node restarted);
//! readiness follows the node's [`Lifecycle`](crate::state::Lifecycle): not ready while starting
//! and once draining for shutdown, so load balancers stop routing new clients here.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::web;
use actix_web::HttpResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

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
/// Readiness: 200 `{"status":"ready"}` when serving; 503 `{"status":"starting"}` before the
/// listeners are up, 503 `{"status":"draining"}` once shutdown has begun.
async fn get_readyz(state: web::Data<AppState>) -> HttpResponse {
    let lifecycle = &state.lifecycle;
    if lifecycle.is_ready() {
        return HttpResponse::Ok().json(json!({ "status": "ready" }));
    }
    let status = if lifecycle.is_draining() {
        "draining"
    } else {
        "starting"
    };
    HttpResponse::ServiceUnavailable().json(json!({ "status": status }))
}

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
