//! The in-memory window of recently used client message ids of one conversation actor.
//!
//! Bounded FIFO: the oldest entry is forgotten first. A miss is not an answer: the actor then
//! asks the store's durable index, so idempotency never depends on this cache.

use std::collections::HashMap;
use std::collections::VecDeque;

use crate::ids::ClientMsgId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::UnixMillis;

type Key = (UserId, ClientMsgId);

pub struct DedupCache {
    capacity: usize,
    entries: HashMap<Key, (Seq, UnixMillis)>,
    order: VecDeque<Key>,
}

impl DedupCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, sender: UserId, id: &ClientMsgId) -> Option<(Seq, UnixMillis)> {
        self.entries.get(&(sender, id.clone())).copied()
    }

    pub fn insert(&mut self, sender: UserId, id: ClientMsgId, seq: Seq, at: UnixMillis) {
        let key = (sender, id);
        if self.entries.insert(key.clone(), (seq, at)).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientMsgId {
        ClientMsgId::parse(s).expect("valid")
    }

    #[test]
    fn forgets_oldest_first_and_keys_by_sender() {
        let mut cache = DedupCache::new(2);
        cache.insert(UserId(1), id("a"), Seq(1), 0);
        cache.insert(UserId(2), id("a"), Seq(2), 0);
        assert_eq!(cache.get(UserId(1), &id("a")), Some((Seq(1), 0)));
        assert_eq!(cache.get(UserId(2), &id("a")), Some((Seq(2), 0)));
        cache.insert(UserId(1), id("b"), Seq(3), 0);
        assert_eq!(cache.get(UserId(1), &id("a")), None);
        assert_eq!(cache.get(UserId(1), &id("b")), Some((Seq(3), 0)));
    }
}
