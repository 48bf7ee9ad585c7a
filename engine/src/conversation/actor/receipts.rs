//! Receipts and typing: the conversation actor's ephemeral signals. Cursors are merged in
//! memory, fanned out at once, and persisted in one flush at a time; a request is answered once
//! the flush carrying it is durable.

use std::sync::Arc;

use actix::prelude::*;

use super::ConversationActor;
use crate::conversation::command::Reply;
use crate::delivery::Outbound;
use crate::error::ConversationError;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::metrics;
use crate::model::Receipt;

impl ConversationActor {
    /// Advance a member's cursors; returns them and whether they changed (and so must be saved
    /// before the request is answered).
    pub(super) fn receipt(
        &mut self,
        user: UserId,
        delivered: Option<Seq>,
        read: Option<Seq>,
    ) -> Result<(Receipt, bool), ConversationError> {
        self.check_member(user)?;
        let small_group = self.deps.config.presence_fanout_max_members;
        let deps = self.deps.clone();
        let id = self.id;
        let loaded = self.loaded()?;
        let current = loaded.receipts.get(&user).copied().unwrap_or_default();
        let next = current.advance(delivered, read, loaded.durable);
        if next == current {
            return Ok((next, false));
        }
        loaded.receipts.insert(user, next);
        if loaded.members.len() <= small_group {
            let bytes = deps.encoder.receipt(id, user, next);
            let users = loaded.recipients.clone();
            deps.fan_out(users, Outbound::Ephemeral { bytes });
        }
        self.dirty_receipts.insert(user, next);
        Ok((next, true))
    }

    /// Persist dirty receipts, one flush at a time; cursors are cumulative, so the newest wins.
    pub(super) fn flush_receipts(&mut self, ctx: &mut Context<Self>) {
        if self.receipt_flush_running || self.dirty_receipts.is_empty() {
            return;
        }
        self.receipt_flush_running = true;
        let batch: Vec<(UserId, Receipt)> = self.dirty_receipts.drain().collect();
        let waiters = std::mem::take(&mut self.receipt_waiters);
        let store = self.deps.store.clone();
        let id = self.id;
        let save = async move {
            let mut outcome = Ok(());
            for (user, receipt) in batch {
                if let Err(error) = store.save_receipt(id, user, receipt).await {
                    metrics::store_error("save_receipt");
                    tracing::warn!(conversation = %id, %error, "Saving a receipt failed.");
                    outcome = Err(ConversationError::from(error));
                }
            }
            outcome
        };
        ctx.spawn(save.into_actor(self).map(move |outcome, act, ctx| {
            for (reply, receipt) in waiters {
                let answer = match &outcome {
                    Ok(()) => Ok(Reply::Receipt(receipt)),
                    Err(error) => Err(ConversationError::Unavailable(error.to_string())),
                };
                let _ = reply.send(answer);
            }
            act.receipt_flush_running = false;
            act.flush_receipts(ctx);
        }));
    }

    pub(super) fn typing(&mut self, user: UserId) -> Result<(), ConversationError> {
        self.check_member(user)?;
        let loaded = self.loaded()?;
        let others: Arc<[UserId]> = loaded.recipients.iter().copied().filter(|u| *u != user).collect();
        let bytes = self.deps.encoder.typing(self.id, user);
        self.deps.fan_out(others, Outbound::Ephemeral { bytes });
        Ok(())
    }
}
