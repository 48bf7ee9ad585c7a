//! The peer transport over real TLS on real loopback sockets: ordered requests and messages,
//! refusal of foreign certificates, of cluster ids and of node ids a certificate is not for, the
//! frame limit, reconnecting after a peer restarts, failing requests in flight when a peer dies,
//! and backpressure. Each test runs on a multi-thread runtime like the cluster node's. Waits are
//! bounded polls, never fixed sleeps.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::join_all;
use roost_cluster::certs::make_ca;
use roost_cluster::certs::make_node_cert;
use roost_cluster::certs::CaBundle;
use roost_cluster::transport::frame;
use roost_cluster::transport::Inbound;
use roost_cluster::transport::InboundHandler;
use roost_cluster::transport::PeerTls;
use roost_cluster::transport::Responder;
use roost_cluster::transport::Transport;
use roost_cluster::transport::TransportConfig;
use roost_cluster::transport::TransportError;
use roost_engine::ids::NodeId;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

const CLUSTER: &str = "t50";
const KIND: u8 = 16;

/// Records everything the transport hands up; answers requests with their body unless holding.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(NodeId, bool, Bytes)>>,
    events: Mutex<Vec<String>>,
    hold: AtomicBool,
    held: Mutex<Vec<Responder>>,
}

impl InboundHandler for Recorder {
    fn inbound(&self, inbound: Inbound) {
        match inbound {
            Inbound::Message { from, body, .. } => self.seen.lock().expect("lock").push((from, false, body)),
            Inbound::Request { from, body, reply, .. } => {
                self.seen.lock().expect("lock").push((from, true, body.clone()));
                match self.hold.load(Ordering::SeqCst) {
                    true => self.held.lock().expect("lock").push(reply),
                    false => reply.ok(body),
                }
            }
        }
    }
    fn peer_up(&self, node: NodeId) {
        self.events.lock().expect("lock").push(format!("up {node}"));
    }
    fn peer_down(&self, node: NodeId) {
        self.events.lock().expect("lock").push(format!("down {node}"));
    }
}

impl Recorder {
    fn seen_count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
    fn events(&self) -> Vec<String> {
        self.events.lock().expect("lock").clone()
    }
}

fn tls(ca: &CaBundle, node: u64) -> PeerTls {
    let (cert, key) = make_node_cert(ca, NodeId(node), &[]).expect("node cert");
    PeerTls::from_pem(&ca.cert_pem, &cert, &key).expect("peer tls")
}

fn config(node: u64, cluster: &str, tls: PeerTls, listen: SocketAddr) -> TransportConfig {
    let mut cfg = TransportConfig::new(NodeId(node), cluster, listen, tls);
    cfg.request_timeout = Duration::from_secs(10);
    cfg
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(node: u64, cluster: &str, tls: PeerTls, handler: Arc<Recorder>) -> Transport {
    Transport::start(config(node, cluster, tls, any_port()), handler)
        .await
        .expect("starts")
}

/// Polls `check` until it holds, failing the test after 10 s.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn number(i: u32) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_messages_to_one_peer_arrive_in_order() {
    let ca = make_ca(CLUSTER).expect("ca");
    let (ha, hb) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let a = start(1, CLUSTER, tls(&ca, 1), ha.clone()).await;
    let b = start(2, CLUSTER, tls(&ca, 2), hb.clone()).await;
    a.set_peer(NodeId(2), b.local_addr().to_string());
    b.set_peer(NodeId(1), a.local_addr().to_string());

    // 1,000 frames, every tenth a request, enqueued back to back before anything is awaited.
    let mut answers = Vec::new();
    for i in 0..1000u32 {
        match i % 10 {
            0 => answers.push((i, a.request(NodeId(2), KIND, number(i)))),
            _ => a.send(NodeId(2), KIND, number(i)).expect("queued"),
        }
    }
    let results = join_all(answers.into_iter().map(|(i, answer)| async move { (i, answer.await) })).await;
    for (i, result) in results {
        assert_eq!(result.expect("answered"), number(i), "request {i}");
    }
    eventually("1000 frames at b", || hb.seen_count() == 1000).await;
    let seen = hb.seen.lock().expect("lock").clone();
    for (i, (from, request, body)) in seen.iter().enumerate() {
        assert_eq!(*from, NodeId(1));
        assert_eq!(*request, i % 10 == 0, "frame {i}");
        assert_eq!(body, &number(i as u32), "frame {i} out of order");
    }

    // The other direction works too, over b's own outbound link.
    let echo = b
        .request(NodeId(1), KIND, Bytes::from_static(b"back"))
        .await
        .expect("b -> a");
    assert_eq!(&echo[..], b"back");
    assert_eq!(a.connected_peers(), vec![NodeId(2)]);
    assert_eq!(b.connected_peers(), vec![NodeId(1)]);
    assert_eq!(ha.events(), vec!["up 2"]);
    assert_eq!(hb.events(), vec!["up 1"]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misuse_is_an_error_not_a_panic() {
    let ca = make_ca(CLUSTER).expect("ca");
    let a = start(1, CLUSTER, tls(&ca, 1), Arc::new(Recorder::default())).await;
    let unknown = a.send(NodeId(9), KIND, Bytes::new());
    assert!(
        matches!(unknown, Err(TransportError::UnknownPeer(NodeId(9)))),
        "{unknown:?}"
    );
    a.set_peer(NodeId(2), "127.0.0.1:1".to_owned());
    let reserved = a.send(NodeId(2), frame::KIND_RESPONSE_OK, Bytes::new());
    assert!(matches!(reserved, Err(TransportError::ReservedKind(1))), "{reserved:?}");
    let huge = Bytes::from(vec![0u8; frame::MAX_FRAME]);
    let too_big = a.request(NodeId(2), KIND, huge).await;
    assert!(matches!(too_big, Err(TransportError::Frame(_))), "{too_big:?}");
    // Nothing listens on port 1: the dial fails and the request fails now, not at the timeout.
    let started = Instant::now();
    let refused = a.request(NodeId(2), KIND, Bytes::new()).await;
    assert!(matches!(refused, Err(TransportError::Unreachable(_))), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "failed fast");
    a.shutdown().await;
}

/// Both directions refused, nothing reached either handler, no peer came up.
async fn assert_refused(a: &Transport, b: &Transport, ha: &Recorder, hb: &Recorder) -> String {
    a.set_peer(NodeId(2), b.local_addr().to_string());
    b.set_peer(NodeId(1), a.local_addr().to_string());
    let ab = a.request(NodeId(2), KIND, Bytes::from_static(b"x")).await;
    let ba = b.request(NodeId(1), KIND, Bytes::from_static(b"y")).await;
    assert!(matches!(ab, Err(TransportError::Unreachable(_))), "{ab:?}");
    assert!(matches!(ba, Err(TransportError::Unreachable(_))), "{ba:?}");
    assert_eq!(ha.seen_count() + hb.seen_count(), 0);
    assert!(ha.events().is_empty() && hb.events().is_empty());
    assert!(a.connected_peers().is_empty() && b.connected_peers().is_empty());
    format!("{ab:?} {ba:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_certificate_from_another_ca_is_refused() {
    let (ca, other_ca) = (make_ca(CLUSTER).expect("ca"), make_ca(CLUSTER).expect("other ca"));
    let (ha, hb) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let a = start(1, CLUSTER, tls(&ca, 1), ha.clone()).await;
    let b = start(2, CLUSTER, tls(&other_ca, 2), hb.clone()).await;
    assert_refused(&a, &b, &ha, &hb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_cluster_is_refused_at_the_hello() {
    let ca = make_ca(CLUSTER).expect("ca");
    let (ha, hb) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let a = start(1, CLUSTER, tls(&ca, 1), ha.clone()).await;
    let b = start(2, "another-cluster", tls(&ca, 2), hb.clone()).await;
    let errors = assert_refused(&a, &b, &ha, &hb).await;
    assert!(errors.contains("cluster id"), "the refusal names the cause: {errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_a_node_id_its_certificate_is_not_for_is_refused() {
    let ca = make_ca(CLUSTER).expect("ca");
    let ha = Arc::new(Recorder::default());
    let a = start(1, CLUSTER, tls(&ca, 1), ha.clone()).await;
    // Node 2's certificate (valid, same CA) in a transport that says it is node 3.
    let impostor = start(3, CLUSTER, tls(&ca, 2), Arc::new(Recorder::default())).await;
    impostor.set_peer(NodeId(1), a.local_addr().to_string());
    for _ in 0..2 {
        let refused = impostor.request(NodeId(1), KIND, Bytes::from_static(b"x")).await;
        match refused {
            Err(TransportError::Unreachable(why)) => {
                assert!(
                    why.contains("roost-node-3"),
                    "the refusal names the claimed node: {why}"
                )
            }
            other => panic!("node 2's certificate spoke for node 3: {other:?}"),
        }
    }
    assert_eq!(ha.seen_count(), 0, "nothing reached a's handler");
    assert!(ha.events().is_empty(), "no peer came up at a: {:?}", ha.events());
    assert!(a.connected_peers().is_empty() && impostor.connected_peers().is_empty());
    impostor.shutdown().await;

    // The control: the same dial with node 3's own certificate is accepted.
    let honest = start(3, CLUSTER, tls(&ca, 3), Arc::new(Recorder::default())).await;
    honest.set_peer(NodeId(1), a.local_addr().to_string());
    let answer = honest
        .request(NodeId(1), KIND, Bytes::from_static(b"y"))
        .await
        .expect("node 3 with its own certificate");
    assert_eq!(&answer[..], b"y");
    assert_eq!(ha.events(), vec!["up 3"]);
    honest.shutdown().await;
    a.shutdown().await;
}

/// A hand-made connection as node 3: TLS with `client`, our hello, then b's hello (or why not).
async fn raw_hello(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("roost-node-2").map_err(|e| e.to_string())?;
    let mut stream = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut out = bytes::BytesMut::new();
    let hello = frame::Hello {
        version: frame::VERSION,
        cluster_id: CLUSTER.to_owned(),
        node_id: 3,
        incarnation: 1,
    };
    frame::encode_hello(&mut out, &hello).map_err(|e| e.to_string())?;
    stream.write_all(&out).await.map_err(|e| format!("send hello: {e}"))?;
    let mut reply = bytes::BytesMut::new();
    loop {
        match frame::decode(&mut reply).map_err(|e| e.to_string())? {
            Some(frame) if frame.kind == frame::KIND_HELLO => return Ok(stream),
            Some(frame) => return Err(format!("frame kind {}", frame.kind)),
            None => match stream.read_buf(&mut reply).await {
                Ok(0) => return Err("closed before the hello".to_owned()),
                Ok(_) => {}
                Err(e) => return Err(format!("read hello: {e}")),
            },
        }
    }
}

/// A client that trusts `ca` but presents a certificate from `foreign` (or none).
fn client_with_foreign_certificate(ca: &CaBundle, foreign: Option<&CaBundle>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("ca"))
        .expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match foreign {
        Some(foreign) => {
            let (cert, key) = make_node_cert(foreign, NodeId(3), &[]).expect("cert");
            let cert = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert");
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
            builder.with_client_auth_cert(vec![cert], key).expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_requires_a_client_certificate_from_the_cluster_ca() {
    let (ca, other_ca) = (make_ca(CLUSTER).expect("ca"), make_ca(CLUSTER).expect("other ca"));
    let hb = Arc::new(Recorder::default());
    let b = start(2, CLUSTER, tls(&ca, 2), hb.clone()).await;
    // The control: the same client code with a proper certificate gets b's hello.
    let proper = raw_hello(b.local_addr(), tls(&ca, 3).client_config())
        .await
        .expect("a proper client is accepted");
    eventually("b sees node 3 up", || hb.events() == vec!["up 3"]).await;
    for client in [
        client_with_foreign_certificate(&ca, Some(&other_ca)),
        client_with_foreign_certificate(&ca, None),
    ] {
        let refused = raw_hello(b.local_addr(), client).await;
        assert!(
            refused.is_err(),
            "b accepted a client without a certificate from its CA"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hb.events(), vec!["up 3"], "only the proper client came up");
    drop(proper);
    eventually("b sees node 3 down", || hb.events() == vec!["up 3", "down 3"]).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_the_connection_and_the_receiver_carries_on() {
    let ca = make_ca(CLUSTER).expect("ca");
    let hb = Arc::new(Recorder::default());
    let b = start(2, CLUSTER, tls(&ca, 2), hb.clone()).await;

    // A hand-made client with a valid certificate and hello, then a frame header over the limit.
    let mut stream = raw_hello(b.local_addr(), tls(&ca, 3).client_config())
        .await
        .expect("hello");
    eventually("b sees node 3 up", || hb.events() == vec!["up 3"]).await;
    let mut header = ((frame::MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    header.extend_from_slice(&[frame::VERSION, KIND, 0, 0, 0, 0, 0, 0, 0, 0]);
    stream.write_all(&header).await.expect("send header");
    stream.flush().await.expect("flush");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "b did not close the connection");
    assert!(rest.is_empty(), "b sent nothing after its hello");
    eventually("b sees node 3 down", || hb.events() == vec!["up 3", "down 3"]).await;
    assert_eq!(hb.seen_count(), 0, "the oversized frame never reached the handler");

    // b still serves other peers.
    let a = start(1, CLUSTER, tls(&ca, 1), Arc::new(Recorder::default())).await;
    a.set_peer(NodeId(2), b.local_addr().to_string());
    let answer = a
        .request(NodeId(2), KIND, Bytes::from_static(b"alive"))
        .await
        .expect("b answers");
    assert_eq!(&answer[..], b"alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_succeed_again_after_the_peer_restarts_on_the_same_port() {
    let ca = make_ca(CLUSTER).expect("ca");
    let ha = Arc::new(Recorder::default());
    let a = start(1, CLUSTER, tls(&ca, 1), ha.clone()).await;
    let b = start(2, CLUSTER, tls(&ca, 2), Arc::new(Recorder::default())).await;
    let b_addr = b.local_addr();
    a.set_peer(NodeId(2), b_addr.to_string());
    a.request(NodeId(2), KIND, Bytes::from_static(b"1"))
        .await
        .expect("first");

    b.shutdown().await;
    drop(b);
    eventually("a sees b down", || ha.events() == vec!["up 2", "down 2"]).await;
    let while_down = a.request(NodeId(2), KIND, Bytes::from_static(b"2")).await;
    assert!(while_down.is_err(), "{while_down:?}");

    // The port was free for a moment: another socket on the machine (a connection's ephemeral
    // port, say) may hold it briefly. Wait for it rather than fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    let b = loop {
        match Transport::start(config(2, CLUSTER, tls(&ca, 2), b_addr), Arc::new(Recorder::default())).await {
            Ok(b) => break b,
            Err(TransportError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("restarts on the same port: {e}"),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match a.request(NodeId(2), KIND, Bytes::from_static(b"3")).await {
            Ok(answer) => break answer,
            Err(e) => assert!(Instant::now() < deadline, "never reconnected: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(&answer[..], b"3");
    assert_eq!(ha.events(), vec!["up 2", "down 2", "up 2"]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_fail_with_disconnected_when_the_peer_dies() {
    let ca = make_ca(CLUSTER).expect("ca");
    let hb = Arc::new(Recorder::default());
    hb.hold.store(true, Ordering::SeqCst);
    let a = start(1, CLUSTER, tls(&ca, 1), Arc::new(Recorder::default())).await;
    let b = start(2, CLUSTER, tls(&ca, 2), hb.clone()).await;
    a.set_peer(NodeId(2), b.local_addr().to_string());
    let in_flight: Vec<_> = (0..3)
        .map(|i| tokio::spawn(a.request(NodeId(2), KIND, number(i))))
        .collect();
    eventually("b holds 3 requests", || hb.held.lock().expect("lock").len() == 3).await;

    let started = Instant::now();
    b.shutdown().await;
    for request in in_flight {
        let result = request.await.expect("task");
        assert!(matches!(result, Err(TransportError::Disconnected)), "{result:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed by the drop, not the 10 s timeout"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_to_a_stalled_peer_answers_backpressure() {
    let ca = make_ca(CLUSTER).expect("ca");
    // A "peer" that accepts TCP and then never answers: the TLS handshake stalls.
    let stalled = tokio::net::TcpListener::bind(any_port()).await.expect("bind");
    let stalled_addr = stalled.local_addr().expect("addr");
    let dialed = Arc::new(AtomicUsize::new(0));
    let keep = tokio::spawn({
        let dialed = dialed.clone();
        async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = stalled.accept().await {
                sockets.push(socket);
                dialed.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let mut cfg = config(1, CLUSTER, tls(&ca, 1), any_port());
    cfg.queue_capacity = 4;
    let a = Transport::start(cfg, Arc::new(Recorder::default()))
        .await
        .expect("starts");
    a.set_peer(NodeId(2), stalled_addr.to_string());

    // The first frame wakes the link task, which takes it off the queue and then sits in the
    // stalled handshake (for the 10 s request timeout): from here on nothing drains the queue.
    a.send(NodeId(2), KIND, number(0)).expect("the first frame is queued");
    eventually("the link dialed the stalled peer", || {
        dialed.load(Ordering::SeqCst) == 1
    })
    .await;
    let mut accepted = 0;
    let refused = loop {
        match a.send(NodeId(2), KIND, number(accepted + 1)) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= 100, "the queue never filled");
    };
    assert!(matches!(refused, TransportError::Backpressure), "{refused:?}");
    assert_eq!(accepted, 4, "the queue holds exactly its capacity");
    let request = a.request(NodeId(2), KIND, Bytes::new()).await;
    assert!(matches!(request, Err(TransportError::Backpressure)), "{request:?}");
    a.shutdown().await;
    keep.abort();
}
