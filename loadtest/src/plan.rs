//! Plan: who is in which conversation and who sends where, decided before anything is created.
//!
//! Pure and deterministic. Users are numbered `0..users`. Direct pairs are distinct unordered
//! pairs, disjoint first ((0,1), (2,3), ...), so a 1:1 scenario puts each user in one
//! conversation when it can. Groups take consecutive blocks of users, wrapping around.
//! Sending streams (slots) are dealt round-robin over conversations: slot `i` goes to
//! conversation `i % C` and its `i / C`-th member, so 20 senders over 20 groups is one sender
//! per group rather than twenty senders in the first group.

use std::collections::HashSet;

use crate::scenario::GroupSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Group,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedConversation {
    pub kind: Kind,
    /// User numbers; the first one creates the conversation.
    pub members: Vec<usize>,
}

/// One sending stream: a user sending to one of its conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub user: usize,
    pub conversation: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub users: usize,
    pub conversations: Vec<PlannedConversation>,
    pub slots: Vec<Slot>,
    /// Per user: the conversations it is a member of.
    pub memberships: Vec<Vec<usize>>,
}

impl Plan {
    pub fn build(users: usize, direct_pairs: usize, groups: &[GroupSpec], senders: usize) -> Plan {
        let mut conversations = Vec::new();
        for (a, b) in direct_pair_list(users, direct_pairs) {
            conversations.push(PlannedConversation {
                kind: Kind::Direct,
                members: vec![a, b],
            });
        }
        let mut offset = 0;
        for spec in groups {
            for _ in 0..spec.count {
                let size = spec.size.min(users);
                let members = (0..size).map(|j| (offset + j) % users.max(1)).collect();
                offset = (offset + size) % users.max(1);
                conversations.push(PlannedConversation {
                    kind: Kind::Group,
                    members,
                });
            }
        }
        let mut memberships = vec![Vec::new(); users];
        for (index, c) in conversations.iter().enumerate() {
            for &user in &c.members {
                if let Some(list) = memberships.get_mut(user) {
                    list.push(index);
                }
            }
        }
        let slots = deal_slots(&conversations, senders);
        Plan {
            users,
            conversations,
            slots,
            memberships,
        }
    }

    /// The slots (indices into `slots`) user `user` sends on.
    pub fn slots_of(&self, user: usize) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.user == user)
            .map(|(i, _)| i)
            .collect()
    }
}

/// Up to `wanted` distinct unordered pairs of `0..users`: (0,1), (2,3), ... then (1,2),
/// (3,4), ... then pairs at distance 2, 3, and so on.
fn direct_pair_list(users: usize, wanted: usize) -> Vec<(usize, usize)> {
    let mut pairs = Vec::with_capacity(wanted);
    let mut seen = HashSet::new();
    if users < 2 || wanted == 0 {
        return pairs;
    }
    'outer: for distance in 1..users {
        for start in [0, 1] {
            let step = if distance == 1 { 2 } else { 1 };
            if distance > 1 && start == 1 {
                continue;
            }
            let mut a = start;
            while a < users {
                let b = (a + distance) % users;
                let key = (a.min(b), a.max(b));
                if a != b && seen.insert(key) {
                    pairs.push((a, b));
                    if pairs.len() == wanted {
                        break 'outer;
                    }
                }
                a += step;
            }
        }
    }
    pairs
}

/// Round-robin over conversations, one member deeper each round.
fn deal_slots(conversations: &[PlannedConversation], senders: usize) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(senders);
    let deepest = conversations.iter().map(|c| c.members.len()).max().unwrap_or(0);
    for round in 0..deepest {
        for (index, c) in conversations.iter().enumerate() {
            if slots.len() == senders {
                return slots;
            }
            if let Some(&user) = c.members.get(round) {
                slots.push(Slot {
                    user,
                    conversation: index,
                });
            }
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_pairs_are_disjoint_first_and_never_repeat() {
        let plan = Plan::build(6, 3, &[], 0);
        let pairs: Vec<Vec<usize>> = plan.conversations.iter().map(|c| c.members.clone()).collect();
        assert_eq!(pairs, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
        let all = direct_pair_list(5, 100);
        assert_eq!(all.len(), 10, "every unordered pair of 5 users once");
    }

    #[test]
    fn groups_take_consecutive_blocks() {
        let plan = Plan::build(5, 0, &[GroupSpec { size: 3, count: 2 }], 0);
        assert_eq!(plan.conversations[0].members, vec![0, 1, 2]);
        assert_eq!(plan.conversations[1].members, vec![3, 4, 0]);
        assert_eq!(plan.memberships[0], vec![0, 1]);
    }

    #[test]
    fn senders_are_spread_over_conversations() {
        let plan = Plan::build(2000, 0, &[GroupSpec { size: 100, count: 20 }], 20);
        let conversations: HashSet<usize> = plan.slots.iter().map(|s| s.conversation).collect();
        assert_eq!(conversations.len(), 20, "one sender per group");
        let plan = Plan::build(4, 2, &[], 4);
        let users: Vec<usize> = plan.slots.iter().map(|s| s.user).collect();
        assert_eq!(users, vec![0, 2, 1, 3], "both sides of each pair send");
        assert_eq!(plan.slots_of(1), vec![2]);
    }
}
