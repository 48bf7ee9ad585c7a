//! [`ConversationStore`] on CQL: headers, direct pairs, members (both directions), receipts.
//!
//! Membership is kept twice, `members_by_conversation` and `conversations_by_user`, always
//! written together in one logged batch (denormalized tables instead of a view or an index). A
//! direct pair is claimed with a lightweight transaction before its rows are written; whoever
//! finds a claimed pair whose conversation rows are missing (its creator stopped half-way)
//! writes them, which is idempotent because a direct conversation is fully determined by its
//! pair.

use async_trait::async_trait;

use super::codec;
use super::codec::key;
use super::ScyllaStore;
use super::WriteBatch;
use super::CONVERSATION_IDS;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::Conversation;
use crate::model::ConversationKind;
use crate::model::Member;
use crate::model::NewConversation;
use crate::model::Receipt;
use crate::store::memory::direct_pair;
use crate::store::ConversationStore;
use crate::store::StoreError;

/// Members written per logged batch when a conversation is created (keeps batches small).
const MEMBERS_PER_BATCH: usize = 100;

type ConversationRow = (i64, Option<String>, Option<String>, Option<i64>, Option<i64>);

fn conversation_from_row(row: ConversationRow) -> Result<Conversation, StoreError> {
    const OP: &str = "decoding a conversation";
    let (id, kind, name, created_by, created_at) = row;
    Ok(Conversation {
        id: ConversationId(codec::unsigned(OP, id)?),
        kind: codec::parse_conversation_kind(OP, &codec::required(OP, "kind", kind)?)?,
        name: name.unwrap_or_default(),
        created_by: UserId(codec::unsigned(OP, codec::required(OP, "created_by", created_by)?)?),
        created_at: created_at.unwrap_or(0),
    })
}

impl ScyllaStore {
    /// Write a new conversation's members, then its header (so a conversation whose creation
    /// stopped half-way has no header and reads as missing).
    async fn write_conversation(&self, conversation: &Conversation, members: &[Member]) -> Result<(), StoreError> {
        const OP: &str = "create_conversation";
        let inner = &self.inner;
        let s = &inner.statements;
        let id = codec::big(conversation.id.0)?;
        for chunk in members.chunks(MEMBERS_PER_BATCH) {
            let mut batch = WriteBatch::logged(&inner.options);
            for member in chunk {
                let user = codec::big(member.user.0)?;
                batch.push(&s.insert_member, (id, user, codec::member_role(member.role)));
                batch.push(&s.insert_conversation_of_user, (user, id));
            }
            inner.write(OP, batch).await?;
        }
        let values = (
            id,
            codec::conversation_kind(conversation.kind),
            conversation.name.clone(),
            codec::big(conversation.created_by.0)?,
            conversation.created_at,
        );
        inner.execute(OP, &s.insert_conversation, values).await?;
        Ok(())
    }

    /// The direct conversation a claimed pair points at, completing it if its creator stopped
    /// before writing it.
    async fn complete_direct(&self, id: u64, new: &NewConversation) -> Result<Conversation, StoreError> {
        if let Some(existing) = self.conversation(ConversationId(id)).await? {
            return Ok(existing);
        }
        let conversation = Conversation {
            id: ConversationId(id),
            kind: ConversationKind::Direct,
            name: new.name.clone(),
            created_by: new.created_by,
            created_at: new.created_at,
        };
        self.write_conversation(&conversation, &new.members).await?;
        Ok(conversation)
    }
}

#[async_trait]
impl ConversationStore for ScyllaStore {
    async fn create_conversation(&self, new: NewConversation) -> Result<Conversation, StoreError> {
        const OP: &str = "create_conversation";
        let inner = &self.inner;
        let s = &inner.statements;
        let pair = match new.kind {
            ConversationKind::Direct => {
                let (low, high) = direct_pair(&new);
                Some((codec::big(low.0)?, codec::big(high.0)?))
            }
            ConversationKind::Group => None,
        };
        if let Some(pair) = pair {
            // Fast path: the pair exists already (no transaction needed).
            if let Some((Some(existing),)) = inner.one::<(Option<i64>,)>(OP, &s.select_pair, pair).await? {
                return self.complete_direct(codec::unsigned(OP, existing)?, &new).await;
            }
        }
        let id = inner.next_id(CONVERSATION_IDS).await?;
        if let Some((low, high)) = pair {
            if !inner.lwt(OP, &s.claim_pair, (low, high, codec::big(id)?)).await? {
                // Another creator won: read its claim linearizably and return its conversation.
                let claimed = inner
                    .one::<(Option<i64>,)>(OP, &s.select_pair_serial, (low, high))
                    .await?;
                let Some((Some(existing),)) = claimed else {
                    return Err(StoreError::Unavailable(
                        "create_conversation: the direct pair was claimed but cannot be read back; retry".into(),
                    ));
                };
                return self.complete_direct(codec::unsigned(OP, existing)?, &new).await;
            }
        }
        let conversation = Conversation {
            id: ConversationId(id),
            kind: new.kind,
            name: new.name,
            created_by: new.created_by,
            created_at: new.created_at,
        };
        self.write_conversation(&conversation, &new.members).await?;
        Ok(conversation)
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError> {
        let Some(id) = key(id.0) else {
            return Ok(None);
        };
        let s = &self.inner.statements;
        let row = self
            .inner
            .one::<ConversationRow>("conversation", &s.select_conversation, (id,))
            .await?;
        match row {
            // A row without a kind holds only a rename of a conversation that does not exist.
            Some(row) if row.1.is_some() => conversation_from_row(row).map(Some),
            _ => Ok(None),
        }
    }

    async fn members(&self, id: ConversationId) -> Result<Vec<Member>, StoreError> {
        const OP: &str = "members";
        let Some(id) = key(id.0) else {
            return Ok(Vec::new());
        };
        let s = &self.inner.statements;
        let rows = self
            .inner
            .all::<(i64, Option<String>)>(OP, &s.select_members, (id,))
            .await?;
        rows.into_iter()
            .map(|(user, role)| {
                Ok(Member {
                    user: UserId(codec::unsigned(OP, user)?),
                    role: codec::parse_member_role(OP, &codec::required(OP, "role", role)?)?,
                })
            })
            .collect()
    }

    async fn conversations_of(&self, user: UserId) -> Result<Vec<ConversationId>, StoreError> {
        const OP: &str = "conversations_of";
        let Some(user) = key(user.0) else {
            return Ok(Vec::new());
        };
        let s = &self.inner.statements;
        let rows = self
            .inner
            .all::<(i64,)>(OP, &s.select_conversations_of_user, (user,))
            .await?;
        rows.into_iter()
            .map(|(id,)| codec::unsigned(OP, id).map(ConversationId))
            .collect()
    }

    async fn receipts(&self, id: ConversationId) -> Result<Vec<(UserId, Receipt)>, StoreError> {
        const OP: &str = "receipts";
        let Some(id) = key(id.0) else {
            return Ok(Vec::new());
        };
        let s = &self.inner.statements;
        let rows = self
            .inner
            .all::<(i64, Option<i64>, Option<i64>)>(OP, &s.select_receipts, (id,))
            .await?;
        rows.into_iter()
            .map(|(user, delivered, read)| {
                let seq = |v: Option<i64>| codec::unsigned(OP, v.unwrap_or(0)).map(Seq);
                Ok((
                    UserId(codec::unsigned(OP, user)?),
                    Receipt {
                        delivered: seq(delivered)?,
                        read: seq(read)?,
                    },
                ))
            })
            .collect()
    }

    async fn save_receipt(&self, id: ConversationId, user: UserId, receipt: Receipt) -> Result<(), StoreError> {
        let s = &self.inner.statements;
        let values = (
            codec::big(id.0)?,
            codec::big(user.0)?,
            codec::big(receipt.delivered.0)?,
            codec::big(receipt.read.0)?,
        );
        self.inner.execute("save_receipt", &s.insert_receipt, values).await?;
        Ok(())
    }
}
