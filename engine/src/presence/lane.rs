//! DirectoryLane: the order in which the hub tells the presence directory what changed.
//!
//! The hub never waits for the directory, but it must not let two of its reports race: a
//! `user_connected` overtaken by the `user_disconnected` that followed it would leave a ghost
//! entry until the TTL ran out, and so would a heartbeat that listed a user who disconnected
//! while it was in flight. So reports go one at a time, in order, through this lane. Users are
//! coalesced: the lane holds *which* users changed, and the hub reads their current state when
//! their turn comes, so during an outage the queue holds at most one item per user and a
//! connect-then-disconnect costs one call. Pure data; the hub drives it.

use std::collections::HashSet;
use std::collections::VecDeque;

use crate::ids::UserId;

/// The next report to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// Refresh every user online on this node.
    Heartbeat,
    /// Tell the directory this user's current state on this node.
    User(UserId),
}

#[derive(Debug, Default)]
pub struct DirectoryLane {
    users: VecDeque<UserId>,
    queued: HashSet<UserId>,
    heartbeat_due: bool,
    busy: bool,
}

impl DirectoryLane {
    /// `user`'s first connection opened or last one closed.
    pub fn user_changed(&mut self, user: UserId) {
        if self.queued.insert(user) {
            self.users.push_back(user);
        }
    }

    /// The heartbeat interval elapsed.
    pub fn heartbeat_due(&mut self) {
        self.heartbeat_due = true;
    }

    /// The report to make now, if none is in flight. Heartbeats go first so that churn cannot
    /// starve them (their entries would expire).
    pub fn start_next(&mut self) -> Option<Report> {
        if self.busy {
            return None;
        }
        let report = if std::mem::take(&mut self.heartbeat_due) {
            Report::Heartbeat
        } else {
            let user = self.users.pop_front()?;
            self.queued.remove(&user);
            Report::User(user)
        };
        self.busy = true;
        Some(report)
    }

    /// The report in flight finished (whatever its outcome).
    pub fn finished(&mut self) {
        self.busy = false;
    }

    /// Reports waiting (for tests and diagnostics).
    pub fn pending(&self) -> usize {
        self.users.len() + usize::from(self.heartbeat_due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_at_a_time_in_order() {
        let mut lane = DirectoryLane::default();
        lane.user_changed(UserId(1));
        lane.user_changed(UserId(2));
        assert_eq!(lane.start_next(), Some(Report::User(UserId(1))));
        assert_eq!(lane.start_next(), None, "one in flight");
        lane.finished();
        assert_eq!(lane.start_next(), Some(Report::User(UserId(2))));
        lane.finished();
        assert_eq!(lane.start_next(), None);
    }

    #[test]
    fn users_are_coalesced_until_their_turn() {
        let mut lane = DirectoryLane::default();
        for _ in 0..3 {
            lane.user_changed(UserId(1));
        }
        lane.user_changed(UserId(2));
        assert_eq!(lane.pending(), 2);
        assert_eq!(lane.start_next(), Some(Report::User(UserId(1))));
        // Changed again while its report is in flight: reported again afterwards.
        lane.user_changed(UserId(1));
        lane.finished();
        assert_eq!(lane.start_next(), Some(Report::User(UserId(2))));
        lane.finished();
        assert_eq!(lane.start_next(), Some(Report::User(UserId(1))));
    }

    #[test]
    fn heartbeats_go_first_and_collapse() {
        let mut lane = DirectoryLane::default();
        lane.user_changed(UserId(1));
        lane.heartbeat_due();
        lane.heartbeat_due();
        assert_eq!(lane.start_next(), Some(Report::Heartbeat));
        lane.finished();
        assert_eq!(lane.start_next(), Some(Report::User(UserId(1))));
        lane.finished();
        assert_eq!(lane.start_next(), None);
    }
}
