//! [`MessageStore`] on CQL: the reads of the log (head, dedup index, events, history pages);
//! appends go through `pipeline`.
//!
//! A conversation's events live in partitions `(conversation_id, bucket)` of
//! `events_per_partition` consecutive seqs, so an event's partition follows from its seq, and a
//! history page reads one partition, or two at a boundary, in clustering order, fetched with the
//! driver's paging. The last seq is the `conversation_heads` row written with every batch of
//! events.

use async_trait::async_trait;

use super::codec;
use super::codec::key;
use super::codec::EventRow;
use super::ScyllaStore;
use crate::ids::ClientMsgId;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::Event;
use crate::store::AppendOp;
use crate::store::AppendTicket;
use crate::store::Direction;
use crate::store::MessageStore;
use crate::store::PageRequest;
use crate::store::StoreError;

impl ScyllaStore {
    /// Rows of one partition after (forward) or before (backward) `cursor`, at most `limit`.
    async fn partition_page(
        &self,
        id: ConversationId,
        bucket: i64,
        cursor: u64,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        const OP: &str = "page";
        let inner = &self.inner;
        let s = &inner.statements;
        let statement = match direction {
            Direction::Forward => &s.select_events_after,
            Direction::Backward => &s.select_events_before,
        };
        let values = (
            codec::big(id.0)?,
            bucket,
            codec::big(cursor)?,
            i32::try_from(limit).unwrap_or(i32::MAX),
        );
        let rows = inner.all::<EventRow>(OP, statement, values).await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(event) = codec::event_from_row(id, row)? {
                events.push(event);
            }
        }
        Ok(events)
    }

    async fn forward(&self, id: ConversationId, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let n = self.inner.events_per_partition;
        let mut events = Vec::new();
        let mut cursor = from;
        let mut head = None;
        while events.len() < limit {
            // Seqs after `cursor` start in the partition of `cursor + 1`.
            let bucket = cursor / n;
            let want = (limit - events.len()).min(n as usize);
            let page = self
                .partition_page(id, bucket as i64, cursor, Direction::Forward, want)
                .await?;
            let partition_end = (bucket + 1) * n;
            match page.last() {
                Some(last) => cursor = last.seq.0,
                None => {
                    // Nothing after the cursor here. Normally the end of the log; but if
                    // retention expired this partition, later ones may still hold events.
                    let top = match head {
                        Some(top) => top,
                        None => *head.insert(self.last_seq(id).await?.0),
                    };
                    if top <= partition_end {
                        break;
                    }
                    cursor = partition_end;
                    continue;
                }
            }
            events.extend(page);
            if cursor != partition_end {
                break;
            }
        }
        Ok(events)
    }

    async fn backward(&self, id: ConversationId, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let n = self.inner.events_per_partition;
        let top = self.last_seq(id).await?.0;
        let mut events = Vec::new();
        // Seqs before `cursor`; `from` beyond the head means "from the newest".
        let mut cursor = from.min(top.saturating_add(1));
        while events.len() < limit && cursor > 1 {
            let bucket = codec::bucket(cursor - 1, n);
            let want = (limit - events.len()).min(n as usize);
            let page = self
                .partition_page(id, bucket, cursor, Direction::Backward, want)
                .await?;
            let Some(last) = page.last() else {
                // Older partitions expire first (retention), so nothing older remains.
                break;
            };
            cursor = last.seq.0;
            events.extend(page);
            let partition_start = bucket as u64 * n + 1;
            if cursor != partition_start {
                break;
            }
        }
        Ok(events)
    }
}

#[async_trait]
impl MessageStore for ScyllaStore {
    fn append(&self, op: AppendOp) -> AppendTicket {
        self.enqueue(op)
    }

    async fn last_seq(&self, id: ConversationId) -> Result<Seq, StoreError> {
        match key(id.0) {
            Some(id) => self.inner.stored_head(id).await,
            None => Ok(Seq::ZERO),
        }
    }

    async fn find_client_msg(
        &self,
        id: ConversationId,
        sender: UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Seq>, StoreError> {
        let (Some(id), Some(sender)) = (key(id.0), key(sender.0)) else {
            return Ok(None);
        };
        self.inner.stored_client_msg(id, sender, client_msg_id.as_str()).await
    }

    async fn event(&self, id: ConversationId, seq: Seq) -> Result<Option<Event>, StoreError> {
        let (Some(cid), Some(seq_value)) = (key(id.0), key(seq.0)) else {
            return Ok(None);
        };
        if seq == Seq::ZERO {
            return Ok(None);
        }
        let s = &self.inner.statements;
        let bucket = codec::bucket(seq.0, self.inner.events_per_partition);
        let row = self
            .inner
            .one::<EventRow>("event", &s.select_event, (cid, bucket, seq_value))
            .await?;
        match row {
            Some(row) => codec::event_from_row(id, row),
            None => Ok(None),
        }
    }

    async fn page(&self, id: ConversationId, request: PageRequest) -> Result<Vec<Event>, StoreError> {
        if request.limit == 0 || key(id.0).is_none() {
            return Ok(Vec::new());
        }
        match request.direction {
            // Nothing can be stored beyond i64::MAX.
            Direction::Forward if key(request.from.0).is_none() => Ok(Vec::new()),
            Direction::Forward => self.forward(id, request.from.0, request.limit).await,
            Direction::Backward => self.backward(id, request.from.0, request.limit).await,
        }
    }

    /// Every acknowledged write already reached `write_consistency` replicas (each replica's
    /// commit log makes it durable by its own `commitlog_sync` policy), so there is nothing to
    /// flush client-side.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
