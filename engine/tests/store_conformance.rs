//! The store conformance suite on `MemoryStore` and `EmbeddedStore`, plus what only the embedded
//! store promises: data survives a reopen and a crash, relaxed durability plus `flush` is durable,
//! and a burst of writes is group-committed.
//!
//! Crashes are real: a test re-runs this binary as a child (`crash_child`) that writes, prints
//! what was acknowledged and calls `abort()`, which, like `kill -9`, runs no destructor.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

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
use roost_engine::store::embedded::DurabilityMode;
use roost_engine::store::embedded::EmbeddedOptions;
use roost_engine::store::embedded::EmbeddedStore;
use roost_engine::store::memory::MemoryStore;
use roost_engine::store::testing::run_suite;
use roost_engine::store::AccountStore;
use roost_engine::store::AppendOp;
use roost_engine::store::Direction;
use roost_engine::store::MessageStore;
use roost_engine::store::PageRequest;
use roost_engine::store::Store;
use roost_engine::store::StoreError;
use tempfile::TempDir;

const CHILD_DIR_ENV: &str = "ROOST_CRASH_CHILD_DIR";
const CHILD_MODE_ENV: &str = "ROOST_CRASH_CHILD_MODE";

fn options(path: &Path, durability: DurabilityMode) -> EmbeddedOptions {
    EmbeddedOptions {
        path: path.to_owned(),
        durability,
        ..EmbeddedOptions::default()
    }
}

fn open(path: &Path, durability: DurabilityMode) -> EmbeddedStore {
    EmbeddedStore::open(options(path, durability)).expect("open the embedded store")
}

fn message(conversation: ConversationId, seq: u64) -> AppendOp {
    let kind = EventKind::Message {
        client_msg_id: ClientMsgId::parse(&format!("m-{seq}")).expect("valid id"),
        body: MessageBody {
            text: format!("message {seq}"),
            ..MessageBody::default()
        },
        edited_by: None,
        recalled_by: None,
    };
    let event = Event {
        conversation,
        seq: Seq(seq),
        sender: UserId(1),
        at: seq as i64,
        kind,
    };
    AppendOp {
        event,
        effects: Vec::new(),
    }
}

async fn group(store: &dyn Store) -> ConversationId {
    let new = NewConversation {
        kind: ConversationKind::Group,
        name: "g".to_owned(),
        created_by: UserId(1),
        created_at: 0,
        members: vec![Member {
            user: UserId(1),
            role: MemberRole::Owner,
        }],
    };
    store.create_conversation(new).await.expect("create_conversation").id
}

/// Append `seqs` to `id` pipelined (all submitted before any is awaited).
async fn append_all(store: &dyn Store, id: ConversationId, seqs: std::ops::RangeInclusive<u64>) {
    let tickets: Vec<_> = seqs.map(|seq| store.append(message(id, seq))).collect();
    for ticket in tickets {
        ticket.await.expect("append");
    }
}

async fn history(store: &dyn Store, id: ConversationId) -> Vec<u64> {
    let request = PageRequest {
        from: Seq::ZERO,
        direction: Direction::Forward,
        limit: usize::MAX,
    };
    store
        .page(id, request)
        .await
        .expect("page")
        .iter()
        .map(|e| e.seq.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    run_suite(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
}

async fn embedded_conforms(durability: DurabilityMode) {
    // Every store's directory lives until the end of the test.
    let dirs = Arc::new(Mutex::new(Vec::<TempDir>::new()));
    run_suite(|| {
        let dirs = dirs.clone();
        async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = open(dir.path(), durability);
            dirs.lock().expect("dirs lock").push(dir);
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    embedded_conforms(DurabilityMode::Immediate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms_in_relaxed_mode() {
    embedded_conforms(DurabilityMode::Relaxed).await;
}

#[tokio::test]
async fn embedded_store_works_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), DurabilityMode::Immediate);
    let id = group(&store).await;
    append_all(&store, id, 1..=3).await;
    assert_eq!(history(&store, id).await, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_drop_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (user, id) = {
        let store = open(dir.path(), DurabilityMode::Immediate);
        let new = NewUser {
            username: "alice".to_owned(),
            display_name: "Alice".to_owned(),
            password_hash: "hash".to_owned(),
            role: ServerRole::Admin,
            created_at: 0,
        };
        let user = store.create_user(new).await.expect("create_user");
        let id = group(&store).await;
        append_all(&store, id, 1..=20).await;
        (user, id)
    };
    let store = open(dir.path(), DurabilityMode::Immediate);
    assert_eq!(store.user_by_name("alice").await.expect("user_by_name"), Some(user));
    assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(20));
    assert_eq!(history(&store, id).await, (1..=20).collect::<Vec<_>>());
    // Ids keep counting from where they were.
    assert!(
        group(&store).await.0 > id.0,
        "a reopened store does not reuse conversation ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_writes_survive_a_clean_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let store = open(dir.path(), DurabilityMode::Relaxed);
        let id = group(&store).await;
        append_all(&store, id, 1..=10).await;
        store.close().expect("close");
        id
    };
    let store = open(dir.path(), DurabilityMode::Relaxed);
    assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_appends_is_group_committed() {
    const CONVERSATIONS: usize = 20;
    const PER_CONVERSATION: u64 = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path(), DurabilityMode::Immediate));
    let mut ids = Vec::new();
    for _ in 0..CONVERSATIONS {
        ids.push(group(&*store).await);
    }
    let before = store.commit_count();
    let tasks: Vec<_> = ids
        .iter()
        .map(|&id| {
            let store = store.clone();
            tokio::spawn(async move { append_all(&*store, id, 1..=PER_CONVERSATION).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("append task");
    }
    let commits = store.commit_count() - before;
    let writes = CONVERSATIONS as u64 * PER_CONVERSATION;
    assert!(commits >= 1, "the writes were committed");
    assert!(
        commits < writes,
        "{writes} concurrent appends took {commits} commits: no group commit"
    );
    for id in ids {
        assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(PER_CONVERSATION));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_store_refuses_writes_and_keeps_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), DurabilityMode::Immediate);
    let id = group(&store).await;
    append_all(&store, id, 1..=2).await;
    store.close().expect("close");
    store.close().expect("a second close is a no-op");
    let refused = store.append(message(id, 3)).await;
    assert!(
        matches!(
            refused,
            Err(roost_engine::store::AppendError::Store(StoreError::Unavailable(_)))
        ),
        "an append after close must be Unavailable, got {refused:?}"
    );
    assert!(matches!(store.flush().await, Err(StoreError::Unavailable(_))));
    assert_eq!(store.last_seq(id).await.expect("reads still work"), Seq(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = open(dir.path(), DurabilityMode::Immediate);
    let second = EmbeddedStore::open(options(dir.path(), DurabilityMode::Immediate));
    assert!(
        matches!(second, Err(StoreError::Unavailable(_))),
        "the database file is locked by the first store"
    );
}

#[test]
fn options_parse_with_defaults_and_reject_unknown_keys() {
    let parsed: EmbeddedOptions =
        serde_json::from_str(r#"{"path": "/var/lib/roost", "durability": "relaxed"}"#).expect("parse");
    assert_eq!(parsed.path, Path::new("/var/lib/roost"));
    assert_eq!(parsed.durability, DurabilityMode::Relaxed);
    assert_eq!(parsed.max_batch, 512);
    assert_eq!(parsed.relaxed_flush_interval_ms, 50);
    assert_eq!(EmbeddedOptions::default().durability, DurabilityMode::Immediate);
    assert!(serde_json::from_str::<EmbeddedOptions>(r#"{"max_batch": 1, "fsync": true}"#).is_err());
    assert!(EmbeddedOptions::default().problems().is_empty());
    let zero = EmbeddedOptions {
        max_batch: 0,
        ..EmbeddedOptions::default()
    };
    assert_eq!(zero.problems().len(), 1, "max_batch 0 is reported");
    assert_eq!(parsed.checkpoint_interval_ms, 1_000);
    let never = EmbeddedOptions {
        checkpoint_interval_ms: 0,
        ..EmbeddedOptions::default()
    };
    assert_eq!(never.problems().len(), 1, "checkpoint_interval_ms 0 is reported");
}

// Crash tests: the parent runs `crash_child` in a new process, which aborts after printing
// `acked <n>` (libtest may print it after the test's name; the number of appends it saw acknowledged and expects to be durable).

fn run_crash_child(dir: &Path, mode: &str) -> u64 {
    let output = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_MODE_ENV, mode)
        .output()
        .expect("run the crash child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "the child must die by abort, it exited {}",
        output.status
    );
    stdout
        .lines()
        .find_map(|line| line.split_once("acked ").and_then(|(_, n)| n.trim().parse().ok()))
        .unwrap_or_else(|| {
            panic!(
                "the child printed no ack count\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

async fn reopen_after_crash(dir: &Path) -> u64 {
    let store = open(dir, DurabilityMode::Immediate);
    let id = ConversationId(1);
    let last = store.last_seq(id).await.expect("last_seq").0;
    assert_eq!(
        history(&store, id).await,
        (1..=last).collect::<Vec<_>>(),
        "the log has no gap"
    );
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_acks_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acked = run_crash_child(dir.path(), "immediate");
    assert_eq!(
        reopen_after_crash(dir.path()).await,
        acked,
        "every acknowledged append survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_flush_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flushed = run_crash_child(dir.path(), "relaxed_flush");
    // The child acknowledged 5 more appends after the flush without making them durable. redb
    // reopens a crashed database at its last durable commit or at a later non-durable one, so
    // those may or may not be there; the log is a prefix either way.
    let survived = reopen_after_crash(dir.path()).await;
    assert!(
        (flushed..=flushed + 5).contains(&survived),
        "the {flushed} flushed appends must survive (and at most the 5 after them), found {survived}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_interval_commit_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acked = run_crash_child(dir.path(), "relaxed_tick");
    assert_eq!(
        reopen_after_crash(dir.path()).await,
        acked,
        "the timed durable commit kept them"
    );
}

/// The frames of an append log as (offset, length) pairs, read the way the store does (magic and
/// length only: the checksum is the store's business).
fn log_frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    const MAGIC: u32 = 0x4c41_5752;
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let word = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().expect("4 bytes"));
        let len = word(4) as usize;
        if word(0) != MAGIC || at + 12 + len > bytes.len() {
            break;
        }
        frames.push((at, 12 + len));
        at += 12 + len;
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_in_the_log_survive_a_crash_with_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acked = run_crash_child(dir.path(), "immediate");
    let path = dir.path().join(roost_engine::store::embedded::LOG_FILE);
    let log = std::fs::read(&path).expect("read the log");
    let frames = log_frames(&log);
    let &(last_at, last_len) = frames.last().expect("the acknowledged appends are in the log");
    let end = last_at + last_len;
    // What a crash in the middle of writing the next frame leaves: its start, with the lsn of
    // the next frame (so only the checksum can tell), cut short, or whole with one byte changed.
    let mut next = log[last_at..end].to_vec();
    let lsn = u64::from_le_bytes(next[12..20].try_into().expect("8 bytes")) + 1;
    next[12..20].copy_from_slice(&lsn.to_le_bytes());
    for torn in [next[..next.len() / 2].to_vec(), next.clone()] {
        let mut bytes = log[..end].to_vec();
        bytes.extend_from_slice(&torn);
        std::fs::write(&path, &bytes).expect("write the torn log");
        assert_eq!(
            reopen_after_crash(dir.path()).await,
            acked,
            "the acknowledged appends are replayed and the torn frame is ignored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_log_replays_only_its_live_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acked = run_crash_child(dir.path(), "immediate_after_checkpoint");
    assert_eq!(
        reopen_after_crash(dir.path()).await,
        acked,
        "appends before and after the checkpoint survived, stale frames were skipped"
    );
    // A clean reopen after that replays nothing more and keeps appending.
    let store = open(dir.path(), DurabilityMode::Immediate);
    append_all(&store, ConversationId(1), acked + 1..=acked + 3).await;
    drop(store);
    assert_eq!(reopen_after_crash(dir.path()).await, acked + 3);
}

/// Not a test on its own: the process that crashes, run by the crash tests above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the crash tests"]
async fn crash_child() {
    let (Some(dir), Some(mode)) = (std::env::var_os(CHILD_DIR_ENV), std::env::var(CHILD_MODE_ENV).ok()) else {
        return;
    };
    let dir = Path::new(&dir);
    let hour = 3_600_000;
    // Each arm returns its store, so it is still open (not closed cleanly) when the child aborts.
    let (_store, acked) = match mode.as_str() {
        "immediate" => {
            let store = open(dir, DurabilityMode::Immediate);
            let id = group(&store).await;
            append_all(&store, id, 1..=25).await;
            (store, 25)
        }
        "immediate_after_checkpoint" => {
            let options = EmbeddedOptions {
                checkpoint_interval_ms: 200,
                ..options(dir, DurabilityMode::Immediate)
            };
            let store = EmbeddedStore::open(options).expect("open");
            let id = group(&store).await;
            // Many small frames, then the idle checkpoint (`checkpoint_interval_ms` later), then
            // a few frames written over the start of the log: the frames after them are stale.
            for seq in 1..=40 {
                append_all(&store, id, seq..=seq).await;
            }
            let after_writes = store.commit_count();
            for _ in 0..500 {
                if store.commit_count() > after_writes {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(store.commit_count() > after_writes, "no checkpoint was made");
            append_all(&store, id, 41..=45).await;
            (store, 45)
        }
        "relaxed_flush" => {
            let options = EmbeddedOptions {
                relaxed_flush_interval_ms: hour,
                ..options(dir, DurabilityMode::Relaxed)
            };
            let store = EmbeddedStore::open(options).expect("open");
            let id = group(&store).await;
            append_all(&store, id, 1..=10).await;
            store.flush().await.expect("flush");
            append_all(&store, id, 11..=15).await;
            (store, 10)
        }
        "relaxed_tick" => {
            let options = EmbeddedOptions {
                relaxed_flush_interval_ms: 20,
                ..options(dir, DurabilityMode::Relaxed)
            };
            let store = EmbeddedStore::open(options).expect("open");
            let id = group(&store).await;
            append_all(&store, id, 1..=10).await;
            // Wait for a commit with no write in it: the interval's durable commit. (If the
            // appends' own commit was already durable, none comes, and nothing needs it.)
            let after_writes = store.commit_count();
            for _ in 0..500 {
                if store.commit_count() > after_writes {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (store, 10)
        }
        other => panic!("unknown crash child mode {other}"),
    };
    println!("acked {acked}");
    std::process::abort();
}
