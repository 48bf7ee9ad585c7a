//! The ScyllaDB store against a real CQL server: the conformance suite, migrations, a restart,
//! and a pipelined burst.
//!
//! Needs a CQL node at `ROOST_CQL` (default `127.0.0.1:9042`): `scripts/cassandra.sh start` runs
//! a single-node Apache Cassandra 5.0 (same protocol and schema as ScyllaDB). Without one these
//! tests FAIL, they never skip. Each test gets its own keyspace (`rt_<pid>_<n>`), dropped when
//! the test passes (a restarted node starts empty anyway); the conformance cases share one keyspace
//! that is emptied (TRUNCATE) before each case, which is ~8x faster than a keyspace per case.

#![cfg(feature = "scylla")]

use std::net::TcpStream;
use std::net::ToSocketAddrs;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use roost_engine::ids::ClientMsgId;
use roost_engine::ids::ConversationId;
use roost_engine::ids::Seq;
use roost_engine::ids::UserId;
use roost_engine::model::ConversationKind;
use roost_engine::model::Event;
use roost_engine::model::EventKind;
use roost_engine::model::Member;
use roost_engine::model::MemberRole;
use roost_engine::model::MessageBody;
use roost_engine::model::NewConversation;
use roost_engine::model::NewUser;
use roost_engine::model::ServerRole;
use roost_engine::store::scylla::migrate;
use roost_engine::store::scylla::migrations;
use roost_engine::store::scylla::open_session;
use roost_engine::store::scylla::ScyllaOptions;
use roost_engine::store::scylla::ScyllaStore;
use roost_engine::store::testing::run_suite;
use roost_engine::store::AppendError;
use roost_engine::store::AppendOp;
use roost_engine::store::Direction;
use roost_engine::store::MessageStore;
use roost_engine::store::PageRequest;
use roost_engine::store::Store;
use roost_engine::store::StoreError;
use scylla::client::session::Session;

/// Small partitions, so the cases cross partition boundaries (4 events per partition).
const EVENTS_PER_PARTITION: u64 = 4;

fn cql_address() -> String {
    std::env::var("ROOST_CQL").unwrap_or_else(|_| "127.0.0.1:9042".to_owned())
}

fn options(keyspace: &str) -> ScyllaOptions {
    ScyllaOptions {
        contact_points: vec![cql_address()],
        keyspace: keyspace.to_owned(),
        events_per_partition: EVENTS_PER_PARTITION,
        // Cassandra on two busy cores: schema changes and LWTs can be slow.
        request_timeout_ms: 30_000,
        ..ScyllaOptions::default()
    }
}

fn unique_keyspace() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("rt_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A session to the test node, or a failure that says how to start one.
async fn session() -> Arc<Session> {
    let address = cql_address();
    let hint = format!(
        "no CQL node reachable at {address}: run `scripts/cassandra.sh start` (or set ROOST_CQL to a \
         ScyllaDB/Cassandra node)"
    );
    // Fail at once when nothing listens; retry for a while when the node is still starting.
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)));
    match reachable {
        Some(Ok(_)) => {}
        Some(Err(e)) => panic!("{hint}; connecting failed: {e}"),
        None => panic!("{hint}; the address does not resolve"),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match open_session(&options("unused")).await {
            Ok(session) => return Arc::new(session),
            Err(e) if Instant::now() > deadline => panic!("{hint}; last error: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn drop_keyspace(session: &Session, keyspace: &str) {
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
        .unwrap_or_else(|e| panic!("dropping {keyspace}: {e}"));
}

async fn open(session: &Arc<Session>, keyspace: &str) -> ScyllaStore {
    ScyllaStore::open(session.clone(), options(keyspace))
        .await
        .unwrap_or_else(|e| panic!("opening the store in {keyspace}: {e}"))
}

/// Empty every data table of `keyspace` (all but the schema bookkeeping).
async fn truncate(session: &Session, keyspace: &str) {
    let tables = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .expect("listing tables")
        .into_rows_result()
        .expect("rows")
        .rows::<(String,)>()
        .expect("typed rows")
        .collect::<Result<Vec<_>, _>>()
        .expect("table names");
    for (table,) in tables {
        if table != "schema_version" && table != "store_settings" {
            session
                .query_unpaged(format!("TRUNCATE {keyspace}.{table}"), ())
                .await
                .unwrap_or_else(|e| panic!("truncating {keyspace}.{table}: {e}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_passes_the_conformance_suite() {
    let session = session().await;
    let keyspace = unique_keyspace();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let started = Instant::now();
    run_suite(|| {
        let (session, keyspace, first) = (session.clone(), keyspace.clone(), first.clone());
        async move {
            // Creating a keyspace costs ~3-5 s on Cassandra (2 cores) and dropping one ~2.5 s;
            // emptying its 14 data tables ~0.5-0.8 s. So: one keyspace, emptied between cases,
            // and a new store (fresh id blocks, no pipeline state) for each case.
            if !first.swap(false, Ordering::Relaxed) {
                truncate(&session, &keyspace).await;
            }
            Arc::new(open(&session, &keyspace).await) as Arc<dyn Store>
        }
    })
    .await;
    eprintln!(
        "conformance suite: {} cases in {:.1}s",
        roost_engine::store::testing::cases().len(),
        started.elapsed().as_secs_f64()
    );
    drop_keyspace(&session, &keyspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_recorded() {
    let session = session().await;
    let keyspace = unique_keyspace();
    let options = ScyllaOptions {
        apply_migrations_on_start: false,
        ..options(&keyspace)
    };
    let refused = ScyllaStore::open(session.clone(), options.clone()).await;
    let Err(StoreError::Unavailable(why)) = refused else {
        panic!("opening an unmigrated keyspace must fail");
    };
    assert!(
        why.contains("roost migrate"),
        "the error tells the operator what to run: {why}"
    );

    let latest: Vec<i32> = migrations::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(migrate(&session, &options).await.expect("first migrate"), latest);
    assert_eq!(
        migrate(&session, &options).await.expect("second migrate"),
        Vec::<i32>::new(),
        "a second run applies nothing"
    );
    assert_eq!(
        migrations::applied_versions(&session, &options)
            .await
            .expect("versions"),
        latest
    );
    ScyllaStore::open(session.clone(), options.clone())
        .await
        .expect("opens once migrated");

    let resized = ScyllaOptions {
        events_per_partition: EVENTS_PER_PARTITION + 1,
        ..options
    };
    let Err(StoreError::Unavailable(why)) = ScyllaStore::open(session.clone(), resized).await else {
        panic!("a different events_per_partition must be refused");
    };
    assert!(why.contains("events_per_partition"), "{why}");
    drop_keyspace(&session, &keyspace).await;
}

fn message(conversation: ConversationId, seq: u64, sender: UserId) -> AppendOp {
    AppendOp {
        event: Event {
            conversation,
            seq: Seq(seq),
            sender,
            at: 1_700_000_000_000 + seq as i64,
            kind: EventKind::Message {
                client_msg_id: ClientMsgId::parse(&format!("m-{seq}")).expect("valid"),
                body: MessageBody {
                    text: format!("message {seq}"),
                    ..MessageBody::default()
                },
                edited_by: None,
                recalled_by: None,
            },
        },
        effects: Vec::new(),
    }
}

async fn group_of(store: &dyn Store, owner: UserId) -> ConversationId {
    let new = NewConversation {
        kind: ConversationKind::Group,
        name: "burst".into(),
        created_by: owner,
        created_at: 0,
        members: vec![Member {
            user: owner,
            role: MemberRole::Owner,
        }],
    };
    store.create_conversation(new).await.expect("create_conversation").id
}

async fn new_user(store: &dyn Store, name: &str) -> UserId {
    let new = NewUser {
        username: name.into(),
        display_name: name.into(),
        password_hash: "$argon2id$fake".into(),
        role: ServerRole::User,
        created_at: 0,
    };
    store.create_user(new).await.expect("create_user").id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_last_seq_and_the_dedup_index() {
    let keyspace = unique_keyspace();
    let session = session().await;
    let store = open(&session, &keyspace).await;
    let owner = new_user(&store, "rita").await;
    let id = group_of(&store, owner).await;
    for seq in 1..=6 {
        store.append(message(id, seq, owner)).await.expect("append");
    }
    drop(store);

    // A new session and store, as after a node restart.
    let store = ScyllaStore::connect(options(&keyspace)).await.expect("reconnect");
    assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(6));
    let m3 = ClientMsgId::parse("m-3").expect("valid");
    assert_eq!(store.find_client_msg(id, owner, &m3).await.expect("find"), Some(Seq(3)));
    let mut duplicate = message(id, 7, owner);
    duplicate.event.kind = message(id, 3, owner).event.kind;
    assert!(
        matches!(
            store.append(duplicate).await,
            Err(AppendError::Store(StoreError::AlreadyExists { .. }))
        ),
        "the dedup index survives the restart"
    );
    assert!(
        matches!(
            store.append(message(id, 9, owner)).await,
            Err(AppendError::Conflict { found: Seq(6), .. })
        ),
        "the head survives the restart"
    );
    store.append(message(id, 7, owner)).await.expect("seq 7 follows");
    assert_ne!(
        new_user(&store, "sam").await,
        owner,
        "ids are not reused after a restart"
    );
    drop_keyspace(&session, &keyspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_burst_over_many_conversations_stays_dense() {
    const CONVERSATIONS: u64 = 10;
    const PER_CONVERSATION: u64 = 50;
    let keyspace = unique_keyspace();
    let session = session().await;
    let store = open(&session, &keyspace).await;
    let owner = new_user(&store, "burst").await;
    let mut ids = Vec::new();
    for _ in 0..CONVERSATIONS {
        ids.push(group_of(&store, owner).await);
    }
    // Submit all 500 at once, interleaved across conversations, before awaiting any.
    let started = Instant::now();
    let mut tickets = Vec::new();
    for seq in 1..=PER_CONVERSATION {
        for &id in &ids {
            tickets.push((id, seq, store.append(message(id, seq, owner))));
        }
    }
    for (id, seq, ticket) in tickets {
        ticket
            .await
            .unwrap_or_else(|e| panic!("append {seq} of {id} failed: {e}"));
    }
    eprintln!(
        "burst: {} appends in {:.2}s",
        CONVERSATIONS * PER_CONVERSATION,
        started.elapsed().as_secs_f64()
    );
    let all = PageRequest {
        from: Seq::ZERO,
        direction: Direction::Forward,
        limit: usize::MAX,
    };
    let dense: Vec<u64> = (1..=PER_CONVERSATION).collect();
    for &id in &ids {
        assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(PER_CONVERSATION));
        let events = store.page(id, all).await.expect("page");
        let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
        assert_eq!(seqs, dense, "conversation {id} is dense and in order");
        assert!(events.iter().all(|e| e.conversation == id));
    }
    drop_keyspace(&session, &keyspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_fails_with_a_hint() {
    let options = ScyllaOptions {
        contact_points: vec!["127.0.0.1:1".into()],
        connect_timeout_ms: 500,
        ..ScyllaOptions::default()
    };
    let Err(StoreError::Unavailable(why)) = ScyllaStore::connect(options).await else {
        panic!("connecting to a closed port must fail as unavailable");
    };
    assert!(why.contains("127.0.0.1:1") && why.contains("contact_points"), "{why}");
}
