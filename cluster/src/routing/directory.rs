//! The user directory: which users are connected on which other node, so that a fan-out sends
//! one envelope per node that has recipients and none to the others.
//!
//! One writer, many readers. [`Directory`] is owned by the directory task (see
//! `directory_task`), the only code that changes it: it applies the deltas and snapshots the
//! peers send and forgets a node whose link dropped. [`DirectoryView`] is the read side that
//! `fan_out` uses on the engine's actix threads, for every event the owner sequences. That read
//! must be synchronous and cheap, so the user-to-nodes map sits behind a std `RwLock`: readers
//! share it and never wait for each other, the task takes the write lock only for the few
//! microseconds of applying one batch, and no lock is ever held across an await or a send. The
//! alternatives cost more per event: a message round trip to the task would make fan-out async
//! (and reorder it against the local fan-out), and copying the map into a fresh `Arc` per change
//! would copy every entry for each 10 ms batch. The per-node index (`by_node`) is private to the
//! task and needs no lock at all.
//!
//! Only remote nodes appear here: this node's own users are the engine's `SessionHub`'s.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::RwLock;

use roost_engine::ids::NodeId;
use roost_engine::ids::UserId;

use super::wire::UsersDelta;

/// The nodes one user is connected on. Almost always one node, so a small sorted vector beats a
/// hash set in size and lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSet(Vec<NodeId>);

impl NodeSet {
    pub fn insert(&mut self, node: NodeId) {
        if let Err(at) = self.0.binary_search(&node) {
            self.0.insert(at, node);
        }
    }

    pub fn remove(&mut self, node: NodeId) {
        if let Ok(at) = self.0.binary_search(&node) {
            self.0.remove(at);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.0.iter().copied()
    }
}

type UserNodes = HashMap<UserId, NodeSet>;

/// The read side of the directory, shared with every `fan_out` caller.
#[derive(Clone, Debug, Default)]
pub struct DirectoryView {
    users: Arc<RwLock<UserNodes>>,
}

impl DirectoryView {
    /// The recipients among `users` grouped by the remote node they are connected on, each node
    /// once, its users in the order given. Users connected nowhere else are left out.
    pub fn group(&self, users: &[UserId]) -> BTreeMap<NodeId, Vec<UserId>> {
        // A poisoned lock only means a writer panicked between two whole-entry updates; every
        // entry is still a valid set, so reading on is safe.
        let map = self.users.read().unwrap_or_else(PoisonError::into_inner);
        let mut by_node: BTreeMap<NodeId, Vec<UserId>> = BTreeMap::new();
        for user in users {
            if let Some(nodes) = map.get(user) {
                for node in nodes.iter() {
                    by_node.entry(node).or_default().push(*user);
                }
            }
        }
        by_node
    }

    /// The remote nodes `user` is connected on, in id order.
    pub fn nodes_of(&self, user: UserId) -> Vec<NodeId> {
        let map = self.users.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&user).map(|nodes| nodes.iter().collect()).unwrap_or_default()
    }
}

/// The write side: applies what peers report. Owned by one task.
#[derive(Debug, Default)]
pub struct Directory {
    view: DirectoryView,
    by_node: HashMap<NodeId, HashSet<UserId>>,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The read side to hand to `fan_out` callers.
    pub fn view(&self) -> DirectoryView {
        self.view.clone()
    }

    /// `node` reported users whose first connection opened or whose last closed.
    pub fn apply_delta(&mut self, node: NodeId, delta: &UsersDelta) {
        let on_node = self.by_node.entry(node).or_default();
        let mut map = self.view.users.write().unwrap_or_else(PoisonError::into_inner);
        for user in &delta.connected {
            on_node.insert(*user);
            map.entry(*user).or_default().insert(node);
        }
        for user in &delta.disconnected {
            on_node.remove(user);
            remove_entry(&mut map, *user, node);
        }
    }

    /// `node` reported every user connected on it: this replaces all that was known of it.
    pub fn replace(&mut self, node: NodeId, users: &[UserId]) {
        let fresh: HashSet<UserId> = users.iter().copied().collect();
        let old = self.by_node.remove(&node).unwrap_or_default();
        let mut map = self.view.users.write().unwrap_or_else(PoisonError::into_inner);
        for user in old.difference(&fresh) {
            remove_entry(&mut map, *user, node);
        }
        for user in fresh.difference(&old) {
            map.entry(*user).or_default().insert(node);
        }
        drop(map);
        if !fresh.is_empty() {
            self.by_node.insert(node, fresh);
        }
    }

    /// The link to `node` dropped: its users are unknown until it sends a snapshot again.
    pub fn forget(&mut self, node: NodeId) {
        let Some(old) = self.by_node.remove(&node) else {
            return;
        };
        let mut map = self.view.users.write().unwrap_or_else(PoisonError::into_inner);
        for user in old {
            remove_entry(&mut map, user, node);
        }
    }

    /// How many users `node` has, as far as this node knows.
    pub fn users_on(&self, node: NodeId) -> usize {
        self.by_node.get(&node).map_or(0, HashSet::len)
    }
}

fn remove_entry(map: &mut UserNodes, user: UserId, node: NodeId) {
    if let Some(nodes) = map.get_mut(&user) {
        nodes.remove(node);
        if nodes.is_empty() {
            map.remove(&user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(ids: &[u64]) -> Vec<UserId> {
        ids.iter().copied().map(UserId).collect()
    }

    fn delta(connected: &[u64], disconnected: &[u64]) -> UsersDelta {
        UsersDelta {
            connected: users(connected),
            disconnected: users(disconnected),
        }
    }

    #[test]
    fn groups_users_by_node_one_entry_per_node() {
        let mut directory = Directory::new();
        let view = directory.view();
        directory.apply_delta(NodeId(2), &delta(&[1, 2, 3], &[]));
        directory.apply_delta(NodeId(3), &delta(&[3, 4], &[]));

        let grouped = view.group(&users(&[4, 3, 2, 1, 9]));
        let expected: BTreeMap<NodeId, Vec<UserId>> = [(NodeId(2), users(&[3, 2, 1])), (NodeId(3), users(&[4, 3]))]
            .into_iter()
            .collect();
        assert_eq!(grouped, expected);
        assert!(view.group(&users(&[9, 10])).is_empty());
        assert_eq!(view.nodes_of(UserId(3)), vec![NodeId(2), NodeId(3)]);
    }

    #[test]
    fn delta_disconnect_removes_only_that_node() {
        let mut directory = Directory::new();
        let view = directory.view();
        directory.apply_delta(NodeId(2), &delta(&[1], &[]));
        directory.apply_delta(NodeId(3), &delta(&[1], &[]));
        directory.apply_delta(NodeId(2), &delta(&[], &[1]));
        assert_eq!(view.nodes_of(UserId(1)), vec![NodeId(3)]);
        directory.apply_delta(NodeId(3), &delta(&[], &[1, 7]));
        assert!(view.nodes_of(UserId(1)).is_empty());
        assert_eq!(directory.users_on(NodeId(2)), 0);
    }

    #[test]
    fn snapshot_replaces_what_the_node_reported_before() {
        let mut directory = Directory::new();
        let view = directory.view();
        directory.apply_delta(NodeId(2), &delta(&[1, 2, 3], &[]));
        directory.apply_delta(NodeId(3), &delta(&[2], &[]));

        directory.replace(NodeId(2), &users(&[3, 4]));
        assert!(view.nodes_of(UserId(1)).is_empty());
        assert_eq!(view.nodes_of(UserId(2)), vec![NodeId(3)], "other nodes' entries stay");
        assert_eq!(view.nodes_of(UserId(3)), vec![NodeId(2)]);
        assert_eq!(view.nodes_of(UserId(4)), vec![NodeId(2)]);
        assert_eq!(directory.users_on(NodeId(2)), 2);

        directory.replace(NodeId(2), &[]);
        assert_eq!(directory.users_on(NodeId(2)), 0);
        assert!(view.group(&users(&[1, 3, 4])).is_empty());
    }

    #[test]
    fn peer_down_forgets_the_node() {
        let mut directory = Directory::new();
        let view = directory.view();
        directory.apply_delta(NodeId(2), &delta(&[1, 2], &[]));
        directory.apply_delta(NodeId(3), &delta(&[2], &[]));

        directory.forget(NodeId(2));
        directory.forget(NodeId(5));
        assert!(view.nodes_of(UserId(1)).is_empty());
        assert_eq!(view.nodes_of(UserId(2)), vec![NodeId(3)]);
        assert_eq!(
            view.group(&users(&[1, 2])).keys().copied().collect::<Vec<_>>(),
            vec![NodeId(3)]
        );
    }

    #[test]
    fn node_set_stays_sorted_and_unique() {
        let mut set = NodeSet::default();
        for node in [3, 1, 2, 3, 1] {
            set.insert(NodeId(node));
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![NodeId(1), NodeId(2), NodeId(3)]);
        set.remove(NodeId(2));
        set.remove(NodeId(9));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![NodeId(1), NodeId(3)]);
    }
}
