//! Cluster administration over HTTP: `/admin/cluster/*`, served on the internal listener only.
//!
//! These endpoints change which nodes serve the cluster, and they have no authentication of their
//! own: what protects them is that `server.internal_listen` is a loopback or private address,
//! like `/metrics`. So they are never registered on the public listener (see `server::Listeners`).
//! The `roost cluster` commands call them ([`crate::cluster::cli`]).
//!
//! Removing a node waits until it is gone (its shards handed over, then removed from Raft and
//! from the members), up to two minutes, and answers with the cluster status afterwards; callers
//! follow the progress with `GET /admin/cluster/status` meanwhile. The removal runs as its own task,
//! so a client that hangs up does not stop it halfway. On a node with `cluster.enabled = false`,
//! every route answers `404 cluster_disabled`.

use actix_web::web;
use roost_cluster::node::ClusterError;
use roost_cluster::node::ClusterNode;
use roost_cluster::node::ClusterStatus;
use roost_cluster::raft::command::Rejection;
use roost_engine::ids::NodeId;

use super::resource;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::state::AppState;

/// Register the cluster admin routes (internal listener only).
pub fn configure_internal(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/admin/cluster/init").route(web::post().to(init)))
        .service(resource("/admin/cluster/status").route(web::get().to(status)))
        .service(resource("/admin/cluster/remove/{node}").route(web::post().to(remove)))
        .service(resource("/admin/cluster/leave").route(web::post().to(leave)));
}

/// # `POST /admin/cluster/init`
///
/// Make this node a new cluster of one: it becomes the Raft leader, creates the shard map
/// (`cluster.control.shard_count`) and takes every shard. Answers `200` with the status;
/// `409 conflict` if the node is already part of a cluster.
async fn init(state: web::Data<AppState>) -> Result<web::Json<ClusterStatus>, ApiError> {
    let node = cluster_node(&state)?;
    node.init().await.map_err(cluster_error)?;
    tracing::info!(node = %node.node_id(), "Cluster initialized.");
    Ok(web::Json(node.status().await.map_err(cluster_error)?))
}

/// # `GET /admin/cluster/status`
///
/// The cluster as this node has applied it: `{node_id, leader, term, members: [{id, peer_addr,
/// client_addr, status, shards, voter, reachable}], shard_count, unassigned}`.
async fn status(state: web::Data<AppState>) -> Result<web::Json<ClusterStatus>, ApiError> {
    let node = cluster_node(&state)?;
    Ok(web::Json(node.status().await.map_err(cluster_error)?))
}

/// # `POST /admin/cluster/remove/{node}`
///
/// Hand `node`'s shards over to the other members (each conversation drained first), then remove
/// it from the cluster. Waits until done and answers `200` with the status; `404 not_found` if
/// `node` is not a member.
async fn remove(state: web::Data<AppState>, path: web::Path<u64>) -> Result<web::Json<ClusterStatus>, ApiError> {
    let node = cluster_node(&state)?;
    remove_member(node, NodeId(path.into_inner())).await
}

/// # `POST /admin/cluster/leave`
///
/// `remove` for this node. Once its last shard is handed over, its clients are closed with 1001
/// "node leaving; reconnect" and `/readyz` reports `left`; then stop the process.
async fn leave(state: web::Data<AppState>) -> Result<web::Json<ClusterStatus>, ApiError> {
    let node = cluster_node(&state)?;
    remove_member(node, node.node_id()).await
}

async fn remove_member(node: &ClusterNode, member: NodeId) -> Result<web::Json<ClusterStatus>, ApiError> {
    let before = node.status().await.map_err(cluster_error)?;
    let Some(info) = before.members.iter().find(|m| m.id == member) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("node {member} is not a member of the cluster"),
        ));
    };
    tracing::info!(node = %member, shards = info.shards, "Removing a node from the cluster.");
    let task = node.clone();
    let removal = actix_web::rt::spawn(async move { task.remove(member).await });
    match removal.await {
        Ok(Ok(())) => tracing::info!(node = %member, "Node removed from the cluster."),
        Ok(Err(error)) => {
            tracing::warn!(node = %member, %error, "Removing a node failed.");
            return Err(cluster_error(error));
        }
        Err(error) => return Err(ApiError::internal(format!("the removal task failed: {error}"))),
    }
    Ok(web::Json(node.status().await.map_err(cluster_error)?))
}

fn cluster_node(state: &AppState) -> Result<&ClusterNode, ApiError> {
    state.cluster.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ClusterDisabled,
            "this node does not run in a cluster (cluster.enabled = false)",
        )
    })
}

/// The one mapping from cluster failures to admin answers.
fn cluster_error(error: ClusterError) -> ApiError {
    let message = error.to_string();
    let code = match &error {
        ClusterError::AlreadyInitialized => ErrorCode::Conflict,
        ClusterError::NoLeader | ClusterError::NotLeader(_) => ErrorCode::NoLeader,
        ClusterError::Rejected(Rejection::UnknownMember { .. }) => ErrorCode::NotFound,
        ClusterError::Rejected(
            Rejection::ShardMapExists { .. } | Rejection::MemberIsDead { .. } | Rejection::StillOwnsShards { .. },
        ) => ErrorCode::Conflict,
        ClusterError::Rejected(_) => ErrorCode::InvalidField,
        ClusterError::Transport(_) | ClusterError::Raft(_) | ClusterError::Timeout(_) | ClusterError::Stopped => {
            ErrorCode::Unavailable
        }
        _ => ErrorCode::Internal,
    };
    ApiError::new(code, message)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use actix_web::http::StatusCode;
    use actix_web::test as actix_test;
    use actix_web::App;
    use roost_engine::presence::LocalPresence;
    use roost_engine::remote::Topology;
    use roost_engine::store::memory::MemoryStore;

    use super::*;
    use crate::config::NodeConfig;

    #[actix_web::test]
    async fn a_single_node_answers_cluster_disabled() {
        let mut config = NodeConfig::default();
        config.server.engine_workers = 1;
        let state = crate::server::build_state(
            Arc::new(config),
            Arc::new(MemoryStore::new()),
            Arc::new(LocalPresence::start()),
            Topology::standalone(),
        );
        let app =
            actix_test::init_service(App::new().app_data(web::Data::new(state)).configure(configure_internal)).await;
        for request in [
            actix_test::TestRequest::get().uri("/admin/cluster/status"),
            actix_test::TestRequest::post().uri("/admin/cluster/init"),
            actix_test::TestRequest::post().uri("/admin/cluster/remove/2"),
            actix_test::TestRequest::post().uri("/admin/cluster/leave"),
        ] {
            let response = actix_test::call_service(&app, request.to_request()).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            let body: serde_json::Value = actix_test::read_body_json(response).await;
            assert_eq!(body["error"]["code"], "cluster_disabled");
        }
        let bad = actix_test::TestRequest::post()
            .uri("/admin/cluster/remove/x")
            .to_request();
        let response = actix_test::call_service(&app, bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn cluster_errors_map_to_stable_codes() {
        assert_eq!(cluster_error(ClusterError::NoLeader).code, ErrorCode::NoLeader);
        assert!(cluster_error(ClusterError::NoLeader).retryable());
        assert_eq!(
            cluster_error(ClusterError::AlreadyInitialized).code,
            ErrorCode::Conflict
        );
        let unknown = ClusterError::Rejected(Rejection::UnknownMember { id: NodeId(9) });
        assert_eq!(cluster_error(unknown).status(), StatusCode::NOT_FOUND);
        assert_eq!(cluster_error(ClusterError::Stopped).code, ErrorCode::Unavailable);
    }
}
