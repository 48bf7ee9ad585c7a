//! Pure rules of a conversation: who may do what. No I/O, no actor; plain `#[test]`s.
//!
//! Each function takes the facts it needs and returns either the event kind and effects to
//! append, or the reason for refusal. The actor applies the result.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::ConversationError;
use crate::ids::ConversationId;
use crate::ids::UserId;
use crate::model::ConversationKind;
use crate::model::Event;
use crate::model::EventKind;
use crate::model::Member;
use crate::model::MemberRole;
use crate::model::MessageBody;
use crate::model::UnixMillis;
use crate::store::Effect;

use super::command::GroupChange;

/// The facts about a conversation that rules look at.
pub struct Facts<'a> {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub members: &'a HashMap<UserId, MemberRole>,
    pub max_members: usize,
    pub max_name_bytes: usize,
}

impl Facts<'_> {
    pub fn role_of(&self, user: UserId) -> Result<MemberRole, ConversationError> {
        self.members
            .get(&user)
            .copied()
            .ok_or(ConversationError::NotMember(self.id))
    }
}

pub fn check_body(body: &MessageBody, limit: usize) -> Result<(), ConversationError> {
    let size = body.size_bytes();
    if size > limit {
        return Err(ConversationError::BodyTooLarge { size, limit });
    }
    if body.text.trim().is_empty() && body.attachments.is_empty() {
        return Err(ConversationError::Invalid(
            "message has no text and no attachments".into(),
        ));
    }
    Ok(())
}

/// May `sender` edit `target` now?
pub fn check_edit(sender: UserId, target: &Event, now: UnixMillis, window: Duration) -> Result<(), ConversationError> {
    let EventKind::Message { recalled_by, .. } = &target.kind else {
        return Err(ConversationError::Invalid("only messages can be edited".into()));
    };
    if recalled_by.is_some() {
        return Err(ConversationError::Invalid("message was recalled".into()));
    }
    if target.sender != sender {
        return Err(ConversationError::Forbidden(
            "only the author may edit a message".into(),
        ));
    }
    if !within(target.at, now, window) {
        return Err(ConversationError::EditWindowPassed(window));
    }
    Ok(())
}

/// May a member with `role` recall `target` now? Authors inside the window; group admins and
/// owners any time.
pub fn check_recall(
    facts: &Facts<'_>,
    actor: UserId,
    role: MemberRole,
    target: &Event,
    now: UnixMillis,
    window: Duration,
) -> Result<(), ConversationError> {
    let EventKind::Message { recalled_by, .. } = &target.kind else {
        return Err(ConversationError::Invalid("only messages can be recalled".into()));
    };
    if recalled_by.is_some() {
        return Err(ConversationError::Invalid("message was already recalled".into()));
    }
    let moderator = facts.kind == ConversationKind::Group && role >= MemberRole::Admin;
    if moderator {
        return Ok(());
    }
    if target.sender != actor {
        return Err(ConversationError::Forbidden(
            "only the author or a group admin may recall".into(),
        ));
    }
    if !within(target.at, now, window) {
        return Err(ConversationError::EditWindowPassed(window));
    }
    Ok(())
}

fn within(at: UnixMillis, now: UnixMillis, window: Duration) -> bool {
    now.saturating_sub(at) <= window.as_millis() as i64
}

/// Validate a group change by `actor` and turn it into the event and effects to append.
/// `Ok(None)` means there is nothing to do (for example, adding only existing members).
pub fn plan_change(
    facts: &Facts<'_>,
    actor: UserId,
    change: &GroupChange,
) -> Result<Option<(EventKind, Vec<Effect>)>, ConversationError> {
    if facts.kind != ConversationKind::Group {
        return Err(ConversationError::Forbidden(
            "direct conversations have fixed members".into(),
        ));
    }
    let role = facts.role_of(actor)?;
    match change {
        GroupChange::AddMembers { users } => {
            require(role >= MemberRole::Admin, "only admins may add members")?;
            let mut added: Vec<Member> = Vec::new();
            for user in users {
                if !facts.members.contains_key(user) && !added.iter().any(|m| m.user == *user) {
                    added.push(Member {
                        user: *user,
                        role: MemberRole::Member,
                    });
                }
            }
            if added.is_empty() {
                return Ok(None);
            }
            if facts.members.len() + added.len() > facts.max_members {
                return Err(ConversationError::GroupFull {
                    limit: facts.max_members,
                });
            }
            let effects = added.iter().copied().map(Effect::PutMember).collect();
            Ok(Some((EventKind::MembersAdded { members: added }, effects)))
        }
        GroupChange::RemoveMember { user } => {
            let target_role = facts.role_of(*user)?;
            if *user == actor {
                return Err(ConversationError::Invalid("use leave to remove yourself".into()));
            }
            require(role >= MemberRole::Admin, "only admins may remove members")?;
            require(role > target_role, "you may only remove members below your role")?;
            Ok(Some((
                EventKind::MemberRemoved { user: *user },
                vec![Effect::RemoveMember(*user)],
            )))
        }
        GroupChange::Leave => {
            if role == MemberRole::Owner && facts.members.len() > 1 {
                return Err(ConversationError::Forbidden(
                    "the owner must hand ownership to another member before leaving".into(),
                ));
            }
            Ok(Some((
                EventKind::MemberLeft { user: actor },
                vec![Effect::RemoveMember(actor)],
            )))
        }
        GroupChange::SetRole { user, role: new_role } => {
            require(role == MemberRole::Owner, "only the owner may change roles")?;
            facts.role_of(*user)?;
            if *user == actor {
                return Err(ConversationError::Invalid(
                    "the owner cannot change their own role".into(),
                ));
            }
            let mut effects = vec![Effect::PutMember(Member {
                user: *user,
                role: *new_role,
            })];
            if *new_role == MemberRole::Owner {
                // Ownership moves: the previous owner becomes an admin.
                effects.push(Effect::PutMember(Member {
                    user: actor,
                    role: MemberRole::Admin,
                }));
            }
            Ok(Some((
                EventKind::RoleChanged {
                    user: *user,
                    role: *new_role,
                },
                effects,
            )))
        }
        GroupChange::Rename { name } => {
            require(role >= MemberRole::Admin, "only admins may rename the group")?;
            let name = name.trim();
            if name.is_empty() || name.len() > facts.max_name_bytes {
                return Err(ConversationError::Invalid(format!(
                    "group name must be 1 to {} bytes",
                    facts.max_name_bytes
                )));
            }
            Ok(Some((
                EventKind::Renamed { name: name.to_owned() },
                vec![Effect::Rename(name.to_owned())],
            )))
        }
    }
}

fn require(condition: bool, why: &'static str) -> Result<(), ConversationError> {
    if condition {
        Ok(())
    } else {
        Err(ConversationError::Forbidden(why.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ClientMsgId;
    use crate::ids::Seq;

    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);
    const CAROL: UserId = UserId(3);

    fn group() -> HashMap<UserId, MemberRole> {
        HashMap::from([
            (ALICE, MemberRole::Owner),
            (BOB, MemberRole::Admin),
            (CAROL, MemberRole::Member),
        ])
    }

    fn facts(members: &HashMap<UserId, MemberRole>) -> Facts<'_> {
        Facts {
            id: ConversationId(9),
            kind: ConversationKind::Group,
            members,
            max_members: 4,
            max_name_bytes: 10,
        }
    }

    fn message(sender: UserId, at: UnixMillis) -> Event {
        Event {
            conversation: ConversationId(9),
            seq: Seq(1),
            sender,
            at,
            kind: EventKind::Message {
                client_msg_id: ClientMsgId::parse("m").expect("valid id"),
                body: MessageBody {
                    text: "hi".into(),
                    ..Default::default()
                },
                edited_by: None,
                recalled_by: None,
            },
        }
    }

    #[test]
    fn members_may_not_add_but_admins_may_up_to_the_limit() {
        let members = group();
        let f = facts(&members);
        let add = GroupChange::AddMembers { users: vec![UserId(7)] };
        assert!(matches!(
            plan_change(&f, CAROL, &add),
            Err(ConversationError::Forbidden(_))
        ));
        assert!(plan_change(&f, BOB, &add).expect("admin may add").is_some());
        let too_many = GroupChange::AddMembers {
            users: vec![UserId(7), UserId(8)],
        };
        assert!(matches!(
            plan_change(&f, BOB, &too_many),
            Err(ConversationError::GroupFull { limit: 4 })
        ));
        let existing = GroupChange::AddMembers { users: vec![CAROL] };
        assert!(plan_change(&f, BOB, &existing).expect("no-op").is_none());
    }

    #[test]
    fn removal_follows_rank_and_owner_cannot_just_leave() {
        let members = group();
        let f = facts(&members);
        let remove_owner = GroupChange::RemoveMember { user: ALICE };
        assert!(plan_change(&f, BOB, &remove_owner).is_err());
        let remove_carol = GroupChange::RemoveMember { user: CAROL };
        assert!(plan_change(&f, BOB, &remove_carol)
            .expect("admin removes member")
            .is_some());
        assert!(plan_change(&f, ALICE, &GroupChange::Leave).is_err());
        assert!(plan_change(&f, CAROL, &GroupChange::Leave)
            .expect("member leaves")
            .is_some());
        assert!(matches!(
            plan_change(&f, UserId(99), &GroupChange::Leave),
            Err(ConversationError::NotMember(_))
        ));
    }

    #[test]
    fn ownership_transfer_demotes_the_previous_owner() {
        let members = group();
        let f = facts(&members);
        let change = GroupChange::SetRole {
            user: BOB,
            role: MemberRole::Owner,
        };
        let (_, effects) = plan_change(&f, ALICE, &change).expect("allowed").expect("some");
        assert!(effects.contains(&Effect::PutMember(Member {
            user: ALICE,
            role: MemberRole::Admin
        })));
        assert!(plan_change(&f, BOB, &change).is_err());
    }

    #[test]
    fn rename_limits() {
        let members = group();
        let f = facts(&members);
        assert!(plan_change(&f, BOB, &GroupChange::Rename { name: "  ".into() }).is_err());
        assert!(plan_change(&f, BOB, &GroupChange::Rename { name: "x".repeat(11) }).is_err());
        assert!(plan_change(&f, BOB, &GroupChange::Rename { name: "team".into() }).is_ok());
    }

    #[test]
    fn edit_and_recall_windows() {
        let members = group();
        let f = facts(&members);
        let window = Duration::from_secs(120);
        let msg = message(CAROL, 1_000);
        assert!(check_edit(CAROL, &msg, 1_000 + 119_000, window).is_ok());
        assert!(matches!(
            check_edit(CAROL, &msg, 1_000 + 121_000, window),
            Err(ConversationError::EditWindowPassed(_))
        ));
        assert!(check_edit(BOB, &msg, 2_000, window).is_err());
        // Admin recalls anything, any time; a member only their own within the window.
        assert!(check_recall(&f, BOB, MemberRole::Admin, &msg, 10_000_000, window).is_ok());
        assert!(check_recall(&f, CAROL, MemberRole::Member, &msg, 10_000_000, window).is_err());
        assert!(check_recall(&f, CAROL, MemberRole::Member, &msg, 2_000, window).is_ok());
    }

    #[test]
    fn empty_and_oversized_bodies_are_refused() {
        let empty = MessageBody::default();
        assert!(matches!(check_body(&empty, 100), Err(ConversationError::Invalid(_))));
        let big = MessageBody {
            text: "x".repeat(200),
            ..Default::default()
        };
        assert!(matches!(
            check_body(&big, 100),
            Err(ConversationError::BodyTooLarge { .. })
        ));
    }
}
