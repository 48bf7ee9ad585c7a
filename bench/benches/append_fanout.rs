//! Criterion benchmarks of the two hot paths of a send:
//! - `store_append`: durable appends to the embedded store, one at a time (each waits for its
//!   own fsync) and 64 in flight (group commit shares the fsync);
//! - `conversation_send_fanout`: submit a message to a conversation actor, wait for the ack,
//!   and for its delivery to every connected member (JSON encoded once, shared bytes).
//!
//! Run: `cargo bench -p roost-bench --bench append_fanout`.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use actix::prelude::*;
use criterion::criterion_group;
use criterion::criterion_main;
use criterion::BenchmarkId;
use criterion::Criterion;
use criterion::Throughput;
use roost_api::encoder::JsonEncoder;
use roost_engine::clock::now_millis;
use roost_engine::conversation::command::Command;
use roost_engine::delivery::hub::Connect;
use roost_engine::delivery::ConnectionHandle;
use roost_engine::delivery::Deliver;
use roost_engine::delivery::Disconnect;
use roost_engine::ids::ClientMsgId;
use roost_engine::ids::ConversationId;
use roost_engine::ids::Seq;
use roost_engine::ids::TokenHash;
use roost_engine::ids::UserId;
use roost_engine::model::Event;
use roost_engine::model::EventKind;
use roost_engine::model::Member;
use roost_engine::model::MemberRole;
use roost_engine::model::MessageBody;
use roost_engine::model::NewConversation;
use roost_engine::model::NewUser;
use roost_engine::model::ServerRole;
use roost_engine::placement::SingleNode;
use roost_engine::store::embedded::DurabilityMode;
use roost_engine::store::embedded::EmbeddedOptions;
use roost_engine::store::embedded::EmbeddedStore;
use roost_engine::store::AccountStore;
use roost_engine::store::AppendOp;
use roost_engine::store::ConversationStore;
use roost_engine::store::MessageStore;
use roost_engine::store::Store;
use roost_engine::Engine;
use roost_engine::EngineConfig;
use tokio::sync::mpsc;

fn open_store(dir: &tempfile::TempDir, durability: DurabilityMode) -> Arc<EmbeddedStore> {
    let options = EmbeddedOptions {
        path: dir.path().to_path_buf(),
        durability,
        ..EmbeddedOptions::default()
    };
    Arc::new(EmbeddedStore::open(options).expect("open store"))
}

fn message(conversation: ConversationId, seq: u64) -> AppendOp {
    let body = MessageBody {
        text: "a typical chat message of about sixty bytes of text.".into(),
        ..Default::default()
    };
    let kind = EventKind::Message {
        client_msg_id: ClientMsgId::parse(&format!("m{seq}")).expect("id"),
        body,
        edited_by: None,
        recalled_by: None,
    };
    AppendOp {
        event: Event {
            conversation,
            seq: Seq(seq),
            sender: UserId(1),
            at: now_millis(),
            kind,
        },
        effects: Vec::new(),
    }
}

fn store_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("store_append");
    group.sample_size(20).measurement_time(Duration::from_secs(8));
    for (name, durability) in [
        ("immediate", DurabilityMode::Immediate),
        ("relaxed", DurabilityMode::Relaxed),
    ] {
        for in_flight in [1usize, 64] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = open_store(&dir, durability);
            let mut next = [0u64; 64];
            group.throughput(Throughput::Elements(in_flight as u64));
            group.bench_function(BenchmarkId::new(name, format!("{in_flight}_in_flight")), |b| {
                b.iter(|| {
                    // Each in-flight append goes to its own conversation, as with many users.
                    let tickets: Vec<_> = (0..in_flight)
                        .map(|lane| {
                            next[lane] += 1;
                            store.append(message(ConversationId(lane as u64 + 1), next[lane]))
                        })
                        .collect();
                    runtime.block_on(async {
                        for ticket in tickets {
                            ticket.await.expect("append");
                        }
                    });
                });
            });
        }
    }
    group.finish();
}

struct Counter {
    tx: mpsc::UnboundedSender<()>,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Counter {
    type Result = ();
    fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {
        let _ = self.tx.send(());
    }
}

impl Handler<Disconnect> for Counter {
    type Result = ();
    fn handle(&mut self, _: Disconnect, _: &mut Context<Self>) {}
}

fn conversation_send_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("conversation_send_fanout");
    group.sample_size(20).measurement_time(Duration::from_secs(8));
    for members in [2usize, 100] {
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(BenchmarkId::from_parameter(format!("{members}_members")), |b| {
            b.iter_custom(|iterations| {
                actix_rt::System::new().block_on(async move {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let store = open_store(&dir, DurabilityMode::Relaxed);
                    let (conversation, sender) = setup_group(store.clone(), members).await;
                    let engine = Engine::start(
                        store as Arc<dyn Store>,
                        Arc::new(JsonEncoder),
                        Arc::new(SingleNode),
                        EngineConfig::default(),
                        1,
                    );
                    let mut rx_connect = Vec::new();
                    let (tx, mut delivered) = mpsc::unbounded_channel();
                    for user in 1..=members as u64 {
                        let counter = Counter::create(|ctx| {
                            ctx.set_mailbox_capacity(1 << 20);
                            Counter { tx: tx.clone() }
                        });
                        let handle = ConnectionHandle {
                            deliver: counter.clone().recipient(),
                            disconnect: counter.recipient(),
                        };
                        rx_connect.push(engine.hub().send(Connect {
                            user: UserId(user),
                            token: TokenHash([0; 32]),
                            handle,
                        }));
                    }
                    for r in rx_connect {
                        r.await.expect("connect");
                    }
                    let start = Instant::now();
                    for i in 0..iterations {
                        let command = Command::Send {
                            sender,
                            client_msg_id: ClientMsgId::parse(&format!("b{i}")).expect("id"),
                            body: MessageBody {
                                text: "benchmark message".into(),
                                ..Default::default()
                            },
                        };
                        engine.accepted(conversation, command).await.expect("ack");
                        for _ in 0..members {
                            delivered.recv().await.expect("delivery");
                        }
                    }
                    let elapsed = start.elapsed();
                    engine.shutdown();
                    elapsed
                })
            });
        });
    }
    group.finish();
}

/// Users 1..=members and one group with all of them; returns (group, sender).
async fn setup_group(store: Arc<EmbeddedStore>, members: usize) -> (ConversationId, UserId) {
    for i in 1..=members {
        let new = NewUser {
            username: format!("user{i}"),
            display_name: format!("User {i}"),
            password_hash: "x".into(),
            role: ServerRole::User,
            created_at: now_millis(),
        };
        store.create_user(new).await.expect("user");
    }
    let members: Vec<Member> = (1..=members as u64)
        .map(|u| Member {
            user: UserId(u),
            role: if u == 1 { MemberRole::Owner } else { MemberRole::Member },
        })
        .collect();
    let new = NewConversation {
        kind: roost_engine::model::ConversationKind::Group,
        name: "bench".into(),
        created_by: UserId(1),
        created_at: now_millis(),
        members,
    };
    let conversation = store.create_conversation(new).await.expect("group");
    (conversation.id, UserId(1))
}

criterion_group!(benches, store_append, conversation_send_fanout);
criterion_main!(benches);
