//! History: pages every conversation's full history over REST after the run
//! (`GET /v1/conversations/{id}/events?after=S&limit=200`), as one of its members, for the
//! checker.
//!
//! Each page is asked of the reader's own target first; when that fails (a dead cluster node
//! refuses the connection, times out or answers an error) the same page is asked of the other
//! targets in turn (`failover::rotation`), and the conversation's remaining pages go to the
//! target that answered. Only a page no target can serve fails the run.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use serde::Deserialize;

use crate::checker::HistoryEvent;
use crate::failover;
use crate::http::HttpError;
use crate::pool;
use crate::pool::Clients;
use crate::target::Target;
use crate::wire::MsgKey;

const PAGE: usize = 200;

#[derive(Debug, thiserror::Error)]
#[error("reading the history of conversation {conversation} failed (tried {tried} target(s); last error: {source})")]
pub struct HistoryError {
    pub conversation: u64,
    /// Targets asked for the page that failed.
    pub tried: usize,
    /// What the last of them answered.
    #[source]
    pub source: HttpError,
}

#[derive(Deserialize)]
struct Page {
    events: Vec<PageEvent>,
}

/// One event of a history page, as the server sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct PageEvent {
    pub seq: u64,
    pub kind: String,
    #[serde(default)]
    pub client_msg_id: Option<String>,
}

/// Where history pages come from: one HTTP client per target in a run, a fake in tests.
pub trait PageSource {
    /// The events of `reader`'s conversation after seq `after`, asked of target `target`.
    fn page(
        &mut self,
        target: usize,
        reader: &Reader,
        after: u64,
    ) -> impl Future<Output = Result<Vec<PageEvent>, HttpError>> + Send;
}

impl PageSource for Clients {
    async fn page(&mut self, target: usize, reader: &Reader, after: u64) -> Result<Vec<PageEvent>, HttpError> {
        let path = format!(
            "/v1/conversations/{}/events?after={after}&limit={PAGE}",
            reader.conversation
        );
        let client = self.get_mut(target).ok_or_else(|| HttpError::Malformed {
            method: "GET".into(),
            path: path.clone(),
            detail: format!("no target {target}"),
        })?;
        let page: Page = client.json("GET", &path, Some(&reader.token), None).await?;
        Ok(page.events)
    }
}

/// One conversation to read: its id, and a member's token and target index.
#[derive(Debug, Clone)]
pub struct Reader {
    pub conversation: u64,
    pub token: String,
    pub target: usize,
}

/// Read every history; conversation id -> events ascending by seq.
pub async fn fetch_all(
    targets: &[Target],
    readers: Vec<Reader>,
    concurrency: usize,
) -> Result<BTreeMap<u64, Vec<HistoryEvent>>, HistoryError> {
    let readers = Arc::new(readers);
    let count = readers.len();
    let jobs = Arc::clone(&readers);
    let targets_count = targets.len();
    let pages = pool::run(targets, count, concurrency, move |i, mut clients| {
        let reader = jobs[i].clone();
        async move {
            let result = read_one(&mut clients, targets_count, &reader).await;
            (clients, result)
        }
    })
    .await?;
    Ok(readers.iter().map(|r| r.conversation).zip(pages).collect())
}

/// Page one conversation's whole history, falling back to the other targets page by page.
pub async fn read_one<S: PageSource>(
    source: &mut S,
    targets: usize,
    reader: &Reader,
) -> Result<Vec<HistoryEvent>, HistoryError> {
    let mut events = Vec::new();
    let mut after = 0;
    let mut target = reader.target;
    loop {
        let (page, answered) = page_from_any(source, targets, target, reader, after).await?;
        target = answered;
        let Some(last) = page.last().map(|e| e.seq) else {
            return Ok(events);
        };
        events.extend(page.into_iter().map(history_event));
        if last <= after {
            // A server answering `after=S` with seqs <= S would loop forever; stop here and let
            // the checker see the repeat.
            return Ok(events);
        }
        after = last;
    }
}

/// Ask each target in turn, from `first`, for one page; the page and the target that answered.
async fn page_from_any<S: PageSource>(
    source: &mut S,
    targets: usize,
    first: usize,
    reader: &Reader,
    after: u64,
) -> Result<(Vec<PageEvent>, usize), HistoryError> {
    let mut last_error = None;
    let mut tried = 0;
    for target in failover::rotation(first, targets.max(1)) {
        tried += 1;
        match source.page(target, reader, after).await {
            Ok(page) => return Ok((page, target)),
            Err(e) => last_error = Some(e),
        }
    }
    let source = last_error.unwrap_or_else(|| HttpError::Malformed {
        method: "GET".into(),
        path: format!("/v1/conversations/{}/events", reader.conversation),
        detail: "no target to ask".into(),
    });
    Err(HistoryError {
        conversation: reader.conversation,
        tried,
        source,
    })
}

fn history_event(e: PageEvent) -> HistoryEvent {
    let key = match e.kind.as_str() {
        "message" => e.client_msg_id.as_deref().and_then(MsgKey::parse),
        _ => None,
    };
    HistoryEvent { seq: e.seq, key }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Serves one conversation of `len` message events from every target not in `dead`, and
    /// remembers which target each page was asked of.
    struct FakeSource {
        len: u64,
        dead: BTreeSet<usize>,
        /// Targets that die after answering this many pages.
        dies_after: Option<(usize, usize)>,
        asked: Vec<(usize, u64)>,
    }

    impl FakeSource {
        fn new(len: u64, dead: &[usize]) -> FakeSource {
            FakeSource {
                len,
                dead: dead.iter().copied().collect(),
                dies_after: None,
                asked: Vec::new(),
            }
        }

        fn answered_by(&self, target: usize) -> usize {
            self.asked.iter().filter(|(t, _)| *t == target).count()
        }
    }

    impl PageSource for FakeSource {
        async fn page(&mut self, target: usize, _reader: &Reader, after: u64) -> Result<Vec<PageEvent>, HttpError> {
            if let Some((t, pages)) = self.dies_after {
                if t == target && self.answered_by(t) >= pages {
                    self.dead.insert(t);
                }
            }
            self.asked.push((target, after));
            if self.dead.contains(&target) {
                return Err(HttpError::Io {
                    method: "GET".into(),
                    path: "/v1/conversations/9/events".into(),
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                });
            }
            let end = (after + PAGE as u64).min(self.len);
            Ok((after + 1..=end)
                .map(|seq| PageEvent {
                    seq,
                    kind: "message".into(),
                    client_msg_id: Some(format!("m0.{seq}")),
                })
                .collect())
        }
    }

    fn reader(target: usize) -> Reader {
        Reader {
            conversation: 9,
            token: "t".into(),
            target,
        }
    }

    fn seqs(events: &[HistoryEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[tokio::test]
    async fn a_dead_target_is_skipped_and_the_next_one_serves_every_page() {
        let mut source = FakeSource::new(450, &[1]);
        let events = read_one(&mut source, 3, &reader(1)).await.expect("target 2 answers");
        assert_eq!(seqs(&events), (1..=450).collect::<Vec<_>>());
        assert_eq!(source.answered_by(1), 1, "the dead target is asked once");
        assert_eq!(source.answered_by(2), 4, "three full pages and the empty one");
        assert_eq!(source.answered_by(0), 0);
    }

    #[tokio::test]
    async fn a_target_dying_mid_history_hands_over_at_the_same_page() {
        let mut source = FakeSource::new(450, &[]);
        source.dies_after = Some((0, 1));
        let events = read_one(&mut source, 2, &reader(0)).await.expect("target 1 takes over");
        assert_eq!(seqs(&events), (1..=450).collect::<Vec<_>>());
        assert_eq!(&source.asked[..3], &[(0, 0), (0, 200), (1, 200)]);
    }

    #[tokio::test]
    async fn a_single_healthy_target_is_the_only_one_asked() {
        let mut source = FakeSource::new(5, &[]);
        let events = read_one(&mut source, 1, &reader(0)).await.expect("ok");
        assert_eq!(seqs(&events), vec![1, 2, 3, 4, 5]);
        assert_eq!(source.asked, vec![(0, 0), (0, 5)]);
    }

    #[tokio::test]
    async fn only_a_page_no_target_serves_fails() {
        let mut source = FakeSource::new(10, &[0, 1, 2]);
        let err = read_one(&mut source, 3, &reader(2)).await.expect_err("all dead");
        assert_eq!((err.conversation, err.tried), (9, 3));
        assert_eq!(source.asked, vec![(2, 0), (0, 0), (1, 0)]);
        assert!(err.to_string().contains("conversation 9"), "{err}");
    }
}
