//! Actor tier: the session hub reporting to a presence directory.
//!
//! The hub stays the owner of this node's connections; these tests check what it tells the
//! directory (first connect, last disconnect, heartbeats), how `QueryPresence` combines the
//! directory with the hub's own view, and that a failing directory blocks nothing. In-process
//! directories only; the Redis one is in `redis_presence.rs`.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use actix::prelude::*;
use async_trait::async_trait;
use bytes::Bytes;
use roost_engine::clock::now_millis;
use roost_engine::delivery::hub::Connect;
use roost_engine::delivery::hub::ConnectionId;
use roost_engine::delivery::hub::Disconnected;
use roost_engine::delivery::hub::Fanout;
use roost_engine::delivery::hub::PresenceState;
use roost_engine::delivery::hub::QueryPresence;
use roost_engine::delivery::hub::SessionHub;
use roost_engine::delivery::ConnectionHandle;
use roost_engine::delivery::Deliver;
use roost_engine::delivery::Disconnect;
use roost_engine::delivery::EventEncoder;
use roost_engine::delivery::Outbound;
use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;
use roost_engine::ids::TokenHash;
use roost_engine::ids::UserId;
use roost_engine::model::Event;
use roost_engine::model::Receipt;
use roost_engine::model::UnixMillis;
use roost_engine::presence::LocalPresence;
use roost_engine::presence::PresenceDirectory;
use roost_engine::presence::PresenceEntry;
use roost_engine::presence::PresenceError;
use roost_engine::presence::RateDecision;
use roost_engine::store::memory::MemoryStore;
use tokio::sync::mpsc;

const NODE: NodeId = NodeId(3);
const OTHER_NODE: NodeId = NodeId(9);

struct NoEncoder;

impl EventEncoder for NoEncoder {
    fn event(&self, _: &Event) -> Bytes {
        Bytes::new()
    }
    fn receipt(&self, _: ConversationId, _: UserId, _: Receipt) -> Bytes {
        Bytes::new()
    }
    fn typing(&self, _: ConversationId, _: UserId) -> Bytes {
        Bytes::new()
    }
    fn presence(&self, _: UserId, _: bool, _: Option<UnixMillis>) -> Bytes {
        Bytes::new()
    }
}

struct Probe {
    tx: mpsc::UnboundedSender<Outbound>,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Probe {
    type Result = ();
    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        let _ = self.tx.send(msg.item);
    }
}

impl Handler<Disconnect> for Probe {
    type Result = ();
    fn handle(&mut self, _: Disconnect, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A directory that is down: every call waits a little, then fails.
#[derive(Default)]
struct DownDirectory {
    calls: AtomicUsize,
}

impl DownDirectory {
    async fn fail<T>(&self) -> Result<T, PresenceError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(PresenceError::Unavailable("down for the test".into()))
    }
}

#[async_trait]
impl PresenceDirectory for DownDirectory {
    async fn user_connected(&self, _: UserId, _: NodeId) -> Result<(), PresenceError> {
        self.fail().await
    }
    async fn user_disconnected(&self, _: UserId, _: NodeId, _: UnixMillis) -> Result<(), PresenceError> {
        self.fail().await
    }
    async fn heartbeat(&self, _: &[UserId], _: NodeId) -> Result<(), PresenceError> {
        self.fail().await
    }
    async fn lookup(&self, _: &[UserId]) -> Result<Vec<PresenceEntry>, PresenceError> {
        self.fail().await
    }
    async fn hit(&self, _: &str, _: Duration, _: u32) -> Result<RateDecision, PresenceError> {
        self.fail().await
    }
    fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(50)
    }
    fn healthy(&self) -> bool {
        false
    }
}

fn hub(presence: Arc<dyn PresenceDirectory>) -> Addr<SessionHub> {
    SessionHub::new(Arc::new(MemoryStore::new()), Arc::new(NoEncoder), 200, presence, NODE).start()
}

async fn connect(hub: &Addr<SessionHub>, user: UserId) -> (ConnectionId, mpsc::UnboundedReceiver<Outbound>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let probe = Probe { tx }.start();
    let handle = ConnectionHandle {
        deliver: probe.clone().recipient(),
        disconnect: probe.recipient(),
    };
    let token = TokenHash([user.0 as u8; 32]);
    let id = hub.send(Connect { user, token, handle }).await.expect("hub");
    (id, rx)
}

async fn query(hub: &Addr<SessionHub>, users: &[u64]) -> Vec<PresenceState> {
    let users = users.iter().copied().map(UserId).collect();
    hub.send(QueryPresence { users }).await.expect("hub")
}

/// Poll the directory until `check` holds for `user` (bounded for liveness only: reports are
/// asynchronous, and a busy machine may delay them by seconds).
async fn eventually(presence: &dyn PresenceDirectory, user: UserId, check: impl Fn(&PresenceEntry) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let entry = presence.lookup(&[user]).await.expect("lookup").remove(0);
        if check(&entry) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let entry = presence.lookup(&[user]).await.expect("lookup");
    panic!("the directory never reached the expected state: {entry:?}");
}

#[actix_rt::test]
async fn hub_reports_the_first_connect_and_the_last_disconnect() {
    let presence = Arc::new(LocalPresence::start_with(
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    ));
    let hub = hub(presence.clone());
    let alice = UserId(1);

    tracing::info!("--- two connections: online on this node");
    let (first, _rx1) = connect(&hub, alice).await;
    let (second, _rx2) = connect(&hub, alice).await;
    eventually(presence.as_ref(), alice, |e| e.online && e.nodes == vec![NODE]).await;

    tracing::info!("--- one closes: still online");
    hub.send(Disconnected { user: alice, id: first }).await.expect("hub");
    assert!(query(&hub, &[1]).await[0].online);

    tracing::info!("--- the last closes: offline, last seen recorded");
    hub.send(Disconnected {
        user: alice,
        id: second,
    })
    .await
    .expect("hub");
    eventually(presence.as_ref(), alice, |e| !e.online && e.last_seen.is_some()).await;
    let state = query(&hub, &[1]).await.remove(0);
    assert!(!state.online);
    assert!(state.last_seen.is_some());
}

#[actix_rt::test]
async fn heartbeats_keep_this_nodes_entries_alive() {
    let ttl_ms = 600;
    let presence = Arc::new(LocalPresence::start_with(
        Duration::from_millis(50),
        Duration::from_millis(ttl_ms),
    ));
    let hub = hub(presence.clone());
    let connected_at = now_millis();
    let (_id, _rx) = connect(&hub, UserId(1)).await;
    eventually(presence.as_ref(), UserId(1), |e| e.online).await;
    // Several TTLs pass; heartbeats keep refreshing the entry: it is seen online with a last
    // seen (only heartbeats set it while connected) from long after the connect report's own
    // deadline. Polled, not slept on: a stalled thread may let one TTL lapse between a
    // heartbeat and a lookup, and the next heartbeat then repairs it.
    eventually(presence.as_ref(), UserId(1), |e| {
        e.online && e.last_seen.is_some_and(|at| at >= connected_at + 2 * ttl_ms as i64)
    })
    .await;
}

#[actix_rt::test]
async fn query_presence_combines_the_directory_with_this_nodes_view() {
    let presence = Arc::new(LocalPresence::start_with(
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    ));
    let hub = hub(presence.clone());
    let (_id, _rx) = connect(&hub, UserId(1)).await;
    // User 2 is connected to another node; user 4's entry for *this* node is stale (say, a
    // report still in flight): this node knows better.
    presence.user_connected(UserId(2), OTHER_NODE).await.expect("directory");
    presence.user_connected(UserId(4), NODE).await.expect("directory");

    let online: Vec<bool> = query(&hub, &[1, 2, 3, 4]).await.iter().map(|s| s.online).collect();
    assert_eq!(online, vec![true, true, false, false]);
}

#[actix_rt::test]
async fn a_failing_directory_blocks_neither_delivery_nor_queries() {
    let down = Arc::new(DownDirectory::default());
    let hub = hub(down.clone());
    let (id, mut rx) = connect(&hub, UserId(1)).await;

    let item = Outbound::Ephemeral {
        bytes: Bytes::from_static(b"hello"),
    };
    hub.send(Fanout {
        users: Arc::from(vec![UserId(1)]),
        item,
    })
    .await
    .expect("hub");
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("delivered despite the directory")
        .expect("open");
    assert!(matches!(got, Outbound::Ephemeral { bytes } if bytes == "hello"));

    tracing::info!("--- queries fall back to this node's view");
    assert!(query(&hub, &[1]).await[0].online);
    hub.send(Disconnected { user: UserId(1), id }).await.expect("hub");
    let state = query(&hub, &[1]).await.remove(0);
    assert!(!state.online);
    assert!(state.last_seen.is_some());

    tracing::info!("--- the hub keeps trying (heartbeats), one call at a time");
    let before = down.calls.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while down.calls.load(Ordering::Relaxed) <= before {
        assert!(Instant::now() < deadline, "the hub stopped calling the directory");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
