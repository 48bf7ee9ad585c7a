//! History: pages every conversation's full history over REST after the run
//! (`GET /v1/conversations/{id}/events?after=S&limit=200`), as one of its members, for the
//! checker.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::checker::HistoryEvent;
use crate::http::HttpError;
use crate::pool;
use crate::target::Target;
use crate::wire::MsgKey;

const PAGE: usize = 200;

#[derive(Debug, thiserror::Error)]
#[error("reading the history of conversation {conversation} failed: {source}")]
pub struct HistoryError {
    pub conversation: u64,
    #[source]
    pub source: HttpError,
}

#[derive(Deserialize)]
struct Page {
    events: Vec<PageEvent>,
}

#[derive(Deserialize)]
struct PageEvent {
    seq: u64,
    kind: String,
    #[serde(default)]
    client_msg_id: Option<String>,
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
    let pages = pool::run(targets, count, concurrency, move |i, mut clients| {
        let reader = jobs[i].clone();
        async move {
            let result = read_one(&mut clients[reader.target], &reader).await;
            (clients, result)
        }
    })
    .await?;
    Ok(readers.iter().map(|r| r.conversation).zip(pages).collect())
}

async fn read_one(client: &mut crate::http::HttpClient, reader: &Reader) -> Result<Vec<HistoryEvent>, HistoryError> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let path = format!(
            "/v1/conversations/{}/events?after={after}&limit={PAGE}",
            reader.conversation
        );
        let page: Page = client
            .json("GET", &path, Some(&reader.token), None)
            .await
            .map_err(|source| HistoryError {
                conversation: reader.conversation,
                source,
            })?;
        let Some(last) = page.events.last().map(|e| e.seq) else {
            return Ok(events);
        };
        for e in page.events {
            let key = match e.kind.as_str() {
                "message" => e.client_msg_id.as_deref().and_then(MsgKey::parse),
                _ => None,
            };
            events.push(HistoryEvent { seq: e.seq, key });
        }
        if last <= after {
            // A server answering `after=S` with seqs <= S would loop forever; stop here and let
            // the checker see the repeat.
            return Ok(events);
        }
        after = last;
    }
}
