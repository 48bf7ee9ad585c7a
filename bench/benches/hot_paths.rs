//! Criterion micro-benchmarks of per-message hot paths that `append_fanout` does not cover, so a
//! regression in any of them shows up on its own instead of vanishing in end-to-end numbers:
//! - `frame_decode` / `frame_encode`: the WebSocket wire format. Decoding a client `send` frame
//!   (`decode_client_frame`) runs once per message sent; encoding an `event` frame (through the
//!   `JsonEncoder` the engine calls) once per event, and an `ack` once per accepted send;
//! - `store_page`: a history page of 50 events read from the embedded store, newest and from the
//!   middle of a 10,000-event conversation (REST history, clients scrolling back);
//! - `routing`: the cluster's per-event work: the shard-map owner lookup, grouping 100 recipients
//!   by the remote node they are connected on, and encoding one `Deliver` envelope for 33 users.
//!
//! Run: `cargo bench -p roost-bench --bench hot_paths` (add `-- --quick` for a fast pass).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::criterion_group;
use criterion::criterion_main;
use criterion::BenchmarkGroup;
use criterion::Criterion;
use criterion::Throughput;
use roost_api::encoder::JsonEncoder;
use roost_api::wire::decode_client_frame;
use roost_api::wire::ServerFrame;
use roost_cluster::routing::directory::Directory;
use roost_cluster::routing::wire::DeliverEncoder;
use roost_cluster::shard::DEFAULT_SHARD_COUNT;
use roost_cluster::ShardId;
use roost_cluster::ShardMap;
use roost_engine::conversation::command::Accepted;
use roost_engine::delivery::EventEncoder;
use roost_engine::delivery::Outbound;
use roost_engine::ids::ClientMsgId;
use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;
use roost_engine::ids::Seq;
use roost_engine::ids::UserId;
use roost_engine::model::Event;
use roost_engine::model::EventKind;
use roost_engine::model::MessageBody;
use roost_engine::store::embedded::DurabilityMode;
use roost_engine::store::embedded::EmbeddedOptions;
use roost_engine::store::embedded::EmbeddedStore;
use roost_engine::store::AppendOp;
use roost_engine::store::Direction;
use roost_engine::store::MessageStore;
use roost_engine::store::PageRequest;

/// A 98-byte chat message, the text of every frame and event below.
const TEXT: &str = "Running ten minutes late for the design review; start without me and I will catch up on the notes.";
/// A client `send` frame as docs/protocol.md shows it, with [`TEXT`] as its body.
const SEND_FRAME: &str = r#"{"type":"send","ref":"r42","conversation":12,"client_msg_id":"6f1c2a9e-41d7-4c1b-9a53-0d2f5e7b8c11","body":{"text":"Running ten minutes late for the design review; start without me and I will catch up on the notes."}}"#;
const EVENTS: u64 = 10_000;
const PAGE: usize = 50;

fn quick(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

fn message(conversation: ConversationId, seq: u64) -> Event {
    Event {
        conversation,
        seq: Seq(seq),
        sender: UserId(7),
        at: 1_764_310_000_123,
        kind: EventKind::Message {
            client_msg_id: ClientMsgId::parse(&format!("m{seq}")).expect("valid client_msg_id"),
            body: MessageBody {
                text: TEXT.into(),
                ..Default::default()
            },
            edited_by: None,
            recalled_by: None,
        },
    }
}

fn frame_codec(c: &mut Criterion) {
    decode_client_frame(SEND_FRAME).expect("the send frame decodes");
    let mut group = c.benchmark_group("frame_decode");
    quick(&mut group);
    group.throughput(Throughput::Bytes(SEND_FRAME.len() as u64));
    group.bench_function("send", |b| b.iter(|| decode_client_frame(black_box(SEND_FRAME))));
    group.finish();

    let mut group = c.benchmark_group("frame_encode");
    quick(&mut group);
    // What the conversation actor calls per event: `Arc<dyn EventEncoder>` = `JsonEncoder`, whose
    // `event` is `ServerFrame::event`.
    let encoder: Arc<dyn EventEncoder> = Arc::new(JsonEncoder);
    let event = message(ConversationId(12), 42);
    group.bench_function("event", |b| b.iter(|| encoder.event(black_box(&event))));
    let accepted = Accepted {
        conversation: ConversationId(12),
        seq: Seq(42),
        at: 1_764_310_000_123,
        duplicate: false,
    };
    group.bench_function("ack", |b| {
        b.iter(|| ServerFrame::ack(black_box(Some("r42")), black_box(&accepted)))
    });
    group.finish();
}

fn store_page(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        path: dir.path().to_path_buf(),
        durability: DurabilityMode::Relaxed,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(options).expect("open store");
    let conversation = ConversationId(1);
    runtime.block_on(async {
        // Submitted 500 at a time (in seq order, as appends must be) so group commit batches them.
        for chunk in (1..=EVENTS).collect::<Vec<_>>().chunks(500) {
            let tickets: Vec<_> = chunk
                .iter()
                .map(|&seq| {
                    store.append(AppendOp {
                        event: message(conversation, seq),
                        effects: Vec::new(),
                    })
                })
                .collect();
            for ticket in tickets {
                ticket.await.expect("append");
            }
        }
    });
    let mut group = c.benchmark_group("store_page");
    quick(&mut group);
    group.throughput(Throughput::Elements(PAGE as u64));
    // Newest first, as REST history pages: without `before` (the newest page) and `before=5001`.
    for (name, from) in [("newest_50", u64::MAX), ("middle_50", EVENTS / 2 + 1)] {
        let request = PageRequest {
            from: Seq(from),
            direction: Direction::Backward,
            limit: PAGE,
        };
        let page = runtime.block_on(store.page(conversation, request)).expect("page");
        assert_eq!(page.len(), PAGE, "{name}: a full page");
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime
                    .block_on(store.page(conversation, black_box(request)))
                    .expect("page")
            })
        });
    }
    group.finish();
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    quick(&mut group);

    // The default shard count, shards dealt round-robin to nodes 1..=3.
    let mut map = ShardMap::new(DEFAULT_SHARD_COUNT).expect("shard map");
    for shard in 0..DEFAULT_SHARD_COUNT {
        map.set_owner(ShardId(shard), Some(NodeId(u64::from(shard % 3) + 1)));
    }
    group.bench_function("owner_of", |b| {
        b.iter(|| map.owner_of(black_box(ConversationId(123_456))))
    });

    // 100 recipients, each connected on one of the remote nodes 2..=4.
    let recipients: Vec<UserId> = (1..=100).map(UserId).collect();
    let mut directory = Directory::new();
    for node in 0..3u64 {
        let users: Vec<UserId> = recipients.iter().copied().filter(|u| u.0 % 3 == node).collect();
        directory.replace(NodeId(node + 2), &users);
    }
    let view = directory.view();
    assert_eq!(view.group(&recipients).len(), 3, "recipients on 3 nodes");
    group.throughput(Throughput::Elements(recipients.len() as u64));
    group.bench_function("directory_group_100_users_3_nodes", |b| {
        b.iter(|| view.group(black_box(&recipients)))
    });

    // One event's envelope for the 33 users one node has (the item encoded, then the body).
    let item = Outbound::Event {
        conversation: ConversationId(12),
        seq: Seq(42),
        bytes: JsonEncoder.event(&message(ConversationId(12), 42)),
    };
    let users: Vec<UserId> = (1..=33).map(UserId).collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function("deliver_encode_33_users", |b| {
        b.iter(|| {
            let encoder = DeliverEncoder::new(black_box(&item)).expect("item encodes");
            encoder.body(black_box(&users)).expect("body encodes")
        })
    });
    group.finish();
}

criterion_group!(benches, frame_codec, store_page, routing);
criterion_main!(benches);
