//! Two real transports on loopback with a router each, and no engines: the directory reaches the
//! peer through a snapshot when the link comes up and through deltas afterwards, a lost link
//! forgets the peer's users, and forwarding without an engine or to an unknown node answers
//! `Unavailable`. Lives inside the crate because `ActorTraffic` is crate-internal. Time bounds
//! are only timeouts, never assertions.

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use roost_engine::conversation::command::Command;
use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;
use roost_engine::ids::UserId;
use roost_engine::remote::RemoteNodes;
use roost_engine::ConversationError;

use super::ActorTraffic;
use super::Routing;
use crate::certs;
use crate::transport::Inbound;
use crate::transport::InboundHandler;
use crate::transport::PeerTls;
use crate::transport::Transport;
use crate::transport::TransportConfig;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

/// The node's dispatcher in miniature: every inbound frame goes to the router once it exists.
#[derive(Default)]
struct Dispatch(OnceLock<Routing>);

impl InboundHandler for Dispatch {
    fn inbound(&self, inbound: Inbound) {
        match self.0.get() {
            Some(routing) => routing.inbound(inbound),
            None => panic!("a frame arrived before the router was set"),
        }
    }

    fn peer_up(&self, node: NodeId) {
        if let Some(routing) = self.0.get() {
            routing.peer_up(node);
        }
    }

    fn peer_down(&self, node: NodeId) {
        if let Some(routing) = self.0.get() {
            routing.peer_down(node);
        }
    }
}

async fn start_node(ca: &certs::CaBundle, node: NodeId) -> (Transport, Routing) {
    let (cert, key) = certs::make_node_cert(ca, node, &[]).expect("node certificate");
    let tls = PeerTls::from_pem(&ca.cert_pem, &cert, &key).expect("tls");
    let listen = "127.0.0.1:0".parse().expect("address");
    let dispatch = Arc::new(Dispatch::default());
    let transport = Transport::start(TransportConfig::new(node, "t70", listen, tls), dispatch.clone())
        .await
        .expect("transport starts");
    let routing = Routing::new(transport.clone());
    assert!(dispatch.0.set(routing.clone()).is_ok());
    (transport, routing)
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn targets(routing: &Routing, user: u64) -> Vec<NodeId> {
    routing.directory().group(&[UserId(user)]).into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_follows_the_peer_and_forgets_it_when_the_link_drops() {
    let ca = certs::make_ca("t70").expect("ca");
    let (transport_a, routing_a) = start_node(&ca, A).await;
    let (transport_b, routing_b) = start_node(&ca, B).await;
    transport_a.set_peer(B, transport_b.local_addr().to_string());
    transport_b.set_peer(A, transport_a.local_addr().to_string());

    tracing::info!("--- a user connects on A before the link exists");
    routing_a.local_user(UserId(7), true);

    tracing::info!("--- B forwards to A, which has no engine: Unavailable, and the link is up");
    let command = Command::Typing { user: UserId(1) };
    let answer = routing_b
        .forward(A, ConversationId(3), command)
        .await
        .expect("an answer");
    assert!(matches!(answer, Err(ConversationError::Unavailable(_))), "{answer:?}");

    tracing::info!("--- A's snapshot on peer_up tells B where user 7 is");
    eventually("B targets A for user 7", || targets(&routing_b, 7) == vec![A]).await;
    assert!(targets(&routing_a, 7).is_empty(), "a node never lists its own users");

    tracing::info!("--- deltas after the link is up");
    routing_a.local_user(UserId(8), true);
    routing_a.local_user(UserId(7), false);
    routing_b.local_user(UserId(8), true);
    eventually("B targets A for user 8 only", || {
        targets(&routing_b, 8) == vec![A] && targets(&routing_b, 7).is_empty()
    })
    .await;
    eventually("A targets B for user 8", || targets(&routing_a, 8) == vec![B]).await;

    tracing::info!("--- A goes away: B forgets A's users");
    transport_a.shutdown().await;
    eventually("B forgets user 8 on A", || targets(&routing_b, 8).is_empty()).await;
    transport_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_to_an_unknown_node_is_unavailable() {
    let ca = certs::make_ca("t70").expect("ca");
    let (transport, routing) = start_node(&ca, A).await;
    let answer = routing
        .forward(NodeId(9), ConversationId(3), Command::Typing { user: UserId(1) })
        .await
        .expect("an answer");
    match answer {
        Err(ConversationError::Unavailable(why)) => assert!(why.contains("unreachable"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    transport.shutdown().await;
}
