//! Actor tier: the conversation actor, registry and hub over the in-memory store.
//!
//! Each test tells one story: sequencing, idempotency, outage handling, permissions, edits, and
//! a property test of random interleavings. No sockets, no wall-clock assertions.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use proptest::prelude::*;
use roost_engine::clock::now_millis;
use roost_engine::conversation::command::Accepted;
use roost_engine::conversation::command::Command;
use roost_engine::conversation::command::GroupChange;
use roost_engine::delivery::hub::Connect;
use roost_engine::delivery::ConnectionHandle;
use roost_engine::delivery::Deliver;
use roost_engine::delivery::Disconnect;
use roost_engine::delivery::EventEncoder;
use roost_engine::delivery::Outbound;
use roost_engine::ids::ClientMsgId;
use roost_engine::ids::ConversationId;
use roost_engine::ids::Seq;
use roost_engine::ids::TokenHash;
use roost_engine::ids::UserId;
use roost_engine::model::Event;
use roost_engine::model::EventKind;
use roost_engine::model::MessageBody;
use roost_engine::model::NewUser;
use roost_engine::model::Receipt;
use roost_engine::model::ServerRole;
use roost_engine::model::UnixMillis;
use roost_engine::placement::SingleNode;
use roost_engine::store::memory::MemoryStore;
use roost_engine::store::AccountStore;
use roost_engine::store::Direction;
use roost_engine::store::MessageStore;
use roost_engine::store::PageRequest;
use roost_engine::store::Store;
use roost_engine::ConversationError;
use roost_engine::Engine;
use roost_engine::EngineConfig;
use tokio::sync::mpsc;

/// Encodes events as "conversation:seq" so probes can check order.
struct TestEncoder;

impl EventEncoder for TestEncoder {
    fn event(&self, event: &Event) -> Bytes {
        Bytes::from(format!("{}:{}", event.conversation, event.seq))
    }
    fn receipt(&self, c: ConversationId, u: UserId, r: Receipt) -> Bytes {
        Bytes::from(format!("receipt {c} {u} {}", r.read))
    }
    fn typing(&self, c: ConversationId, u: UserId) -> Bytes {
        Bytes::from(format!("typing {c} {u}"))
    }
    fn presence(&self, u: UserId, online: bool, _: Option<UnixMillis>) -> Bytes {
        Bytes::from(format!("presence {u} {online}"))
    }
}

/// A stand-in connection that forwards what it receives to the test.
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

struct Fixture {
    store: Arc<MemoryStore>,
    engine: Engine,
}

impl Fixture {
    fn start() -> Self {
        let store = Arc::new(MemoryStore::new());
        Self::on(store)
    }

    fn on(store: Arc<MemoryStore>) -> Self {
        Self::with_config(store, EngineConfig::default())
    }

    fn with_config(store: Arc<MemoryStore>, config: EngineConfig) -> Self {
        let engine = Engine::start(
            store.clone() as Arc<dyn Store>,
            Arc::new(TestEncoder),
            Arc::new(SingleNode),
            config,
            2,
        );
        Fixture { store, engine }
    }

    async fn user(&self, name: &str) -> UserId {
        let new = NewUser {
            username: name.into(),
            display_name: name.into(),
            password_hash: "x".into(),
            role: ServerRole::User,
            created_at: now_millis(),
        };
        self.store.create_user(new).await.expect("create user").id
    }

    async fn connect(&self, user: UserId) -> mpsc::UnboundedReceiver<Outbound> {
        let (tx, rx) = mpsc::unbounded_channel();
        let probe = Probe::create(|ctx| {
            ctx.set_mailbox_capacity(4096);
            Probe { tx }
        });
        self.register(user, probe).await;
        rx
    }

    /// Tell the hub that `probe` is a connection of `user`.
    async fn register(&self, user: UserId, probe: Addr<Probe>) {
        let handle = ConnectionHandle {
            deliver: probe.clone().recipient(),
            disconnect: probe.recipient(),
        };
        self.engine
            .hub()
            .send(Connect {
                user,
                token: TokenHash([user.0 as u8; 32]),
                handle,
            })
            .await
            .expect("hub");
    }

    /// Connect `user` through a connection whose event loop (an arbiter of its own) is stalled
    /// until the returned sender is dropped: nothing drains its mailbox of `capacity` meanwhile.
    async fn connect_stalled(
        &self,
        user: UserId,
        capacity: usize,
    ) -> (mpsc::UnboundedReceiver<Outbound>, std::sync::mpsc::Sender<()>, Arbiter) {
        let arbiter = Arbiter::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let probe = Probe::start_in_arbiter(&arbiter.handle(), move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            Probe { tx }
        });
        // Runs after the probe's creation (same arbiter, in order) and blocks its thread.
        let (stalled_tx, stalled_rx) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        arbiter.spawn_fn(move || {
            let _ = stalled_tx.send(());
            let _ = released.recv();
        });
        stalled_rx.await.expect("the connection's event loop is stalled");
        self.register(user, probe).await;
        (rx, release, arbiter)
    }

    async fn send(
        &self,
        conversation: ConversationId,
        sender: UserId,
        id: &str,
        text: &str,
    ) -> Result<Accepted, ConversationError> {
        self.engine.accepted(conversation, send_command(sender, id, text)).await
    }

    async fn history(&self, conversation: ConversationId) -> Vec<Event> {
        let all = PageRequest {
            from: Seq::ZERO,
            direction: Direction::Forward,
            limit: 10_000,
        };
        self.store.page(conversation, all).await.expect("page")
    }
}

fn send_command(sender: UserId, id: &str, text: &str) -> Command {
    Command::Send {
        sender,
        client_msg_id: ClientMsgId::parse(id).expect("valid id"),
        body: MessageBody {
            text: text.into(),
            ..Default::default()
        },
    }
}

/// Next timeline event (conversation, seq) a probe receives, skipping ephemeral items.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> (u64, u64) {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("delivery in time")
            .expect("open");
        if let Outbound::Event { conversation, seq, .. } = item {
            return (conversation.0, seq.0);
        }
    }
}

fn assert_dense(events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, Seq(i as u64 + 1), "seqs must be dense from 1");
    }
}

#[actix_rt::test]
async fn pipelined_sends_are_acked_dense_and_delivered_in_order() {
    let f = Fixture::start();
    let (alice, bob, carol) = (f.user("alice").await, f.user("bob").await, f.user("carol").await);
    let group = f
        .engine
        .create_group(alice, "team", &[bob, carol])
        .await
        .expect("group");
    let mut bob_rx = f.connect(bob).await;

    tracing::info!("--- alice pipelines 50 sends without waiting for acks");
    let receivers: Vec<_> = (0..50)
        .map(|i| f.engine.submit(group.id, send_command(alice, &format!("m{i}"), "hi")))
        .collect();
    let mut seqs = Vec::new();
    for rx in receivers {
        let reply = rx.await.expect("answered").expect("accepted");
        let roost_engine::conversation::command::Reply::Accepted(a) = reply else {
            panic!("not an ack")
        };
        seqs.push(a.seq.0);
    }
    // Seq 1 is the group's announcement; messages follow in submission order.
    assert_eq!(seqs, (2..=51).collect::<Vec<_>>());

    for expected in 2..=51 {
        assert_eq!(next_event(&mut bob_rx).await, (group.id.0, expected));
    }
    assert_dense(&f.history(group.id).await);
}

#[actix_rt::test]
async fn a_connection_hears_the_conversations_of_every_engine_worker() {
    // The fixture runs two engine workers; conversation ids alternate between them, and each
    // worker's delivery shard must know the connection as soon as the hub has answered.
    let f = Fixture::start();
    let bob = f.user("bob").await;
    let mut peers = Vec::new();
    for name in ["alice", "carol", "dave", "erin"] {
        peers.push(f.user(name).await);
    }
    let mut conversations = Vec::new();
    for peer in &peers {
        conversations.push(f.engine.open_direct(*peer, bob).await.expect("direct").id);
    }
    let workers: std::collections::BTreeSet<u64> = conversations.iter().map(|c| c.0 % 2).collect();
    assert_eq!(workers.len(), 2, "the conversations cover both workers");
    let mut bob_rx = f.connect(bob).await;
    for (peer, conversation) in peers.iter().zip(&conversations) {
        f.send(*conversation, *peer, "hello", "hi").await.expect("send");
        // Seq 1 is the announcement, sent before bob connected.
        assert_eq!(next_event(&mut bob_rx).await, (conversation.0, 2));
    }
}

#[actix_rt::test]
async fn a_connection_that_cannot_keep_up_is_disconnected_not_buffered() {
    let f = Fixture::start();
    let (alice, bob) = (f.user("alice").await, f.user("bob").await);
    let direct = f.engine.open_direct(alice, bob).await.expect("direct");
    // Bob's connection runs on an event loop of its own, stalled until every send is acked, so
    // its mailbox of 2 fills up. (On this test's own loop it would drain while the test awaits
    // the acks, and could keep up with all 40.)
    let (mut bob_rx, release, bob_loop) = f.connect_stalled(bob, 2).await;
    let receivers: Vec<_> = (0..40)
        .map(|i| f.engine.submit(direct.id, send_command(alice, &format!("m{i}"), "x")))
        .collect();
    for rx in receivers {
        rx.await.expect("answered").expect("accepted");
    }
    drop(release);
    let mut received = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), bob_rx.recv()).await {
            Ok(Some(_)) => received += 1,
            Ok(None) => break,
            Err(_) => panic!("the slow connection was never disconnected (got {received})"),
        }
    }
    bob_loop.stop();
    assert!(
        received < 40,
        "a full mailbox must not queue everything (got {received})"
    );
    assert_eq!(
        f.history(direct.id).await.len(),
        41,
        "everything stays in history for the resync"
    );
}

#[actix_rt::test]
async fn idle_actors_retire_and_come_back_from_the_store() {
    let idle = Duration::from_secs(1);
    let config = EngineConfig {
        conversation_idle_secs: idle.as_secs(),
        ..EngineConfig::default()
    };
    let f = Fixture::with_config(Arc::new(MemoryStore::new()), config);
    let (alice, bob) = (f.user("alice").await, f.user("bob").await);
    let direct = f.engine.open_direct(alice, bob).await.expect("direct");
    let sent = Instant::now();
    let first = f.send(direct.id, alice, "before", "x").await.expect("send");
    let count = || f.engine.count_actors();
    let live = count().await;
    // The actor may already be gone if this thread stalled for the idle time since the send.
    if sent.elapsed() < idle {
        assert_eq!(live, 1, "the send started an actor");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while count().await != 0 {
        assert!(Instant::now() < deadline, "an idle conversation actor stops");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = f
        .send(direct.id, alice, "before", "x")
        .await
        .expect("retry after retirement");
    assert_eq!(
        (again.seq, again.duplicate),
        (first.seq, true),
        "rebuilt actor remembers the id"
    );
    let next = f
        .send(direct.id, alice, "after", "y")
        .await
        .expect("send after retirement");
    assert_eq!(next.seq, first.seq.next());
}

#[actix_rt::test]
async fn idempotency_table() {
    let store = Arc::new(MemoryStore::new());
    let f = Fixture::on(store.clone());
    let (alice, bob) = (f.user("alice").await, f.user("bob").await);
    let direct = f.engine.open_direct(alice, bob).await.expect("direct");

    let first = f.send(direct.id, alice, "same", "hello").await.expect("first");
    assert!(!first.duplicate);

    tracing::info!("--- same id, same body: same seq");
    let again = f.send(direct.id, alice, "same", "hello").await.expect("retry");
    assert_eq!((again.seq, again.duplicate), (first.seq, true));

    tracing::info!("--- same id, different body: still the same seq");
    let changed = f.send(direct.id, alice, "same", "HELLO?").await.expect("retry changed");
    assert_eq!(changed.seq, first.seq);

    tracing::info!("--- same id from another sender: a new message");
    let other = f.send(direct.id, bob, "same", "hi").await.expect("bob");
    assert_eq!(other.seq, first.seq.next());

    tracing::info!("--- same id after the node restarts (fresh actors, same store): same seq");
    f.engine.shutdown();
    let restarted = Fixture::on(store);
    let after = restarted
        .send(direct.id, alice, "same", "hello")
        .await
        .expect("after restart");
    assert_eq!((after.seq, after.duplicate), (first.seq, true));
    assert_eq!(
        restarted.history(direct.id).await.len(),
        3,
        "announcement + two messages, no duplicate"
    );
}

#[actix_rt::test]
async fn storage_outage_fails_without_ack_and_recovers_without_gaps() {
    let f = Fixture::start();
    let (alice, bob) = (f.user("alice").await, f.user("bob").await);
    let group = f.engine.create_group(alice, "ops", &[bob]).await.expect("group");
    f.send(group.id, alice, "before", "one").await.expect("before outage");

    tracing::info!("--- the store goes away: sends fail with a retryable error, nothing is acked");
    f.store.set_unavailable(true);
    for i in 0..5 {
        let error = f
            .send(group.id, alice, &format!("during{i}"), "lost?")
            .await
            .expect_err("must fail");
        assert!(error.is_retryable(), "outage errors are retryable: {error:?}");
    }

    tracing::info!("--- the store returns: the client retries the same ids");
    f.store.set_unavailable(false);
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(
            f.send(group.id, alice, &format!("during{i}"), "retry")
                .await
                .expect("retry succeeds")
                .seq
                .0,
        );
    }
    assert_eq!(seqs, vec![3, 4, 5, 6, 7]);
    let history = f.history(group.id).await;
    assert_dense(&history);
    assert_eq!(history.len(), 7);
}

#[actix_rt::test]
async fn membership_and_limits_are_enforced() {
    let f = Fixture::start();
    let (alice, bob, mallory) = (f.user("alice").await, f.user("bob").await, f.user("mallory").await);
    let group = f.engine.create_group(alice, "team", &[bob]).await.expect("group");

    let error = f
        .send(group.id, mallory, "x", "let me in")
        .await
        .expect_err("non-member");
    assert!(matches!(error, ConversationError::NotMember(_)));
    let error = f
        .send(ConversationId(999), alice, "x", "hello?")
        .await
        .expect_err("unknown");
    assert!(matches!(error, ConversationError::NotFound(_)));
    let big = "x".repeat(EngineConfig::default().max_body_bytes + 1);
    let error = f.send(group.id, alice, "big", &big).await.expect_err("too large");
    assert!(matches!(error, ConversationError::BodyTooLarge { .. }));
    let error = f.send(group.id, alice, "empty", "   ").await.expect_err("empty");
    assert!(matches!(error, ConversationError::Invalid(_)));

    tracing::info!("--- bob (member) may not add; alice (owner) adds mallory, who may then send");
    let add = Command::Change {
        actor: bob,
        change: GroupChange::AddMembers { users: vec![mallory] },
    };
    assert!(matches!(
        f.engine.call(group.id, add).await,
        Err(ConversationError::Forbidden(_))
    ));
    let add = Command::Change {
        actor: alice,
        change: GroupChange::AddMembers { users: vec![mallory] },
    };
    f.engine.call(group.id, add).await.expect("owner adds");
    f.send(group.id, mallory, "now", "thanks").await.expect("member now");

    tracing::info!("--- removed: mallory can no longer send");
    let remove = Command::Change {
        actor: alice,
        change: GroupChange::RemoveMember { user: mallory },
    };
    f.engine.call(group.id, remove).await.expect("owner removes");
    let error = f
        .send(group.id, mallory, "after", "still here?")
        .await
        .expect_err("removed");
    assert!(matches!(error, ConversationError::NotMember(_)));
    let kinds: Vec<_> = f.history(group.id).await.into_iter().map(|e| e.kind).collect();
    assert!(kinds.iter().any(|k| matches!(k, EventKind::MembersAdded { .. })));
    assert!(kinds
        .iter()
        .any(|k| matches!(k, EventKind::MemberRemoved { user } if *user == mallory)));
}

#[actix_rt::test]
async fn edits_and_recalls_are_sequenced_events() {
    let f = Fixture::start();
    let (alice, bob) = (f.user("alice").await, f.user("bob").await);
    let group = f.engine.create_group(alice, "team", &[bob]).await.expect("group");
    let original = f.send(group.id, bob, "m1", "helo").await.expect("send");

    let edit = Command::Edit {
        sender: bob,
        client_msg_id: ClientMsgId::parse("e1").expect("id"),
        target: original.seq,
        body: MessageBody {
            text: "hello".into(),
            ..Default::default()
        },
    };
    let edited = f.engine.accepted(group.id, edit.clone()).await.expect("edit");
    assert_eq!(edited.seq, original.seq.next());
    assert_eq!(f.engine.accepted(group.id, edit).await.expect("retry").seq, edited.seq);

    let not_author = Command::Edit {
        sender: alice,
        client_msg_id: ClientMsgId::parse("e2").expect("id"),
        target: original.seq,
        body: MessageBody {
            text: "hacked".into(),
            ..Default::default()
        },
    };
    assert!(matches!(
        f.engine.accepted(group.id, not_author).await,
        Err(ConversationError::Forbidden(_))
    ));

    tracing::info!("--- the owner recalls bob's message");
    let recall = Command::Recall {
        sender: alice,
        client_msg_id: ClientMsgId::parse("r1").expect("id"),
        target: original.seq,
    };
    let recalled = f.engine.accepted(group.id, recall).await.expect("owner recalls");
    let history = f.history(group.id).await;
    assert_dense(&history);
    let EventKind::Message {
        body,
        edited_by,
        recalled_by,
        ..
    } = &history[original.seq.0 as usize - 1].kind
    else {
        panic!("message expected")
    };
    assert_eq!(*edited_by, Some(edited.seq));
    assert_eq!(*recalled_by, Some(recalled.seq));
    assert!(body.text.is_empty(), "recalled body is removed");
}

#[actix_rt::test]
async fn receipts_are_monotonic_and_bounded_by_the_top() {
    let f = Fixture::start();
    let (alice, bob) = (f.user("alice").await, f.user("bob").await);
    let direct = f.engine.open_direct(alice, bob).await.expect("direct");
    for i in 0..3 {
        f.send(direct.id, alice, &format!("m{i}"), "x").await.expect("send");
    }
    let mark = |read: u64| Command::Receipt {
        user: bob,
        delivered: None,
        read: Some(Seq(read)),
    };
    let reply = f.engine.call(direct.id, mark(3)).await.expect("read 3");
    let roost_engine::conversation::command::Reply::Receipt(r) = reply else {
        panic!("receipt")
    };
    assert_eq!(
        r,
        Receipt {
            delivered: Seq(3),
            read: Seq(3)
        }
    );
    let roost_engine::conversation::command::Reply::Receipt(r) = f.engine.call(direct.id, mark(1)).await.expect("back")
    else {
        panic!("receipt")
    };
    assert_eq!(r.read, Seq(3), "cursors never go back");
    let roost_engine::conversation::command::Reply::Receipt(r) =
        f.engine.call(direct.id, mark(99)).await.expect("beyond")
    else {
        panic!("receipt")
    };
    assert_eq!(r.read, Seq(4), "cursors never pass the top");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random interleavings of sends (and retries) from several clients keep seqs dense and
    /// increasing and each sender's messages in their send order, with no duplicates.
    #[test]
    fn interleavings_keep_order_and_density(
        schedule in proptest::collection::vec((0usize..4, proptest::bool::weighted(0.2)), 1..60)
    ) {
        actix_rt::System::new().block_on(async move {
            let f = Fixture::start();
            let mut users = Vec::new();
            for i in 0..4 {
                users.push(f.user(&format!("user{i}")).await);
            }
            let group = f.engine.create_group(users[0], "prop", &users[1..]).await.expect("group");
            let mut counters = [0usize; 4];
            let mut pending = Vec::new();
            for (who, retry) in schedule {
                // A retry re-sends the sender's previous id; otherwise a new message.
                let n = if retry && counters[who] > 0 { counters[who] - 1 } else { counters[who] += 1; counters[who] - 1 };
                let id = format!("u{who}-{n}");
                pending.push((who, n, f.engine.submit(group.id, send_command(users[who], &id, &id))));
            }
            let mut acked: Vec<(usize, usize, u64)> = Vec::new();
            for (who, n, rx) in pending {
                let reply = rx.await.expect("answered").expect("accepted");
                let roost_engine::conversation::command::Reply::Accepted(a) = reply else { panic!("ack") };
                if let Some(&(_, _, seq)) = acked.iter().find(|(w, m, _)| *w == who && *m == n) {
                    assert_eq!(seq, a.seq.0, "a retry must return the original seq");
                }
                acked.push((who, n, a.seq.0));
            }
            let history = f.history(group.id).await;
            assert_dense(&history);
            let total: usize = counters.iter().sum();
            assert_eq!(history.len(), total + 1, "one event per distinct message plus the announcement");
            for (who, count) in counters.iter().enumerate() {
                let mine: Vec<u64> = (0..*count)
                    .map(|n| acked.iter().find(|(w, m, _)| *w == who && *m == n).expect("acked").2)
                    .collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "sender {who} order kept: {mine:?}");
            }
            f.engine.shutdown();
        });
    }
}
