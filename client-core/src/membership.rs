//! Membership as a deterministic state machine. Every member runs this same
//! code over the same accepted transcript and the same decrypted bodies, so
//! every honest member reaches the same member list after every index.
//!
//! Rules:
//! * a Setup lists the creator as an Admin holding the sender slot, every
//!   member once, each in a distinct slot of the slot set it carries (whose
//!   hash is the header's), with the slot's role equal to the member's role;
//! * only Admins send Updates: they add, remove, change roles, change the
//!   history policy, or leave themselves (order servers attest Updates from Admin slots only, so a
//!   Member cannot rekey the conversation; a Member who wants to go asks an
//!   Admin to remove it);
//! * no change may leave the conversation without an Admin, or empty;
//! * an Update's next member list must be exactly the current list with the
//!   change applied, and its slot set must hash to the header's;
//! * every Admin slot of a slot set has an Admin holder (a padding slot with
//!   the Admin role would let the router, which holds the padding secrets,
//!   send Updates the order servers attest and no member can open);
//! * a member added by an Update checks what it can without the list before
//!   it: the change adds it, the next list is well formed, and the
//!   authenticated sender is an Admin both before and after the change. It
//!   cannot check that the rest of the list is unchanged, and is told so
//!   ([`crate::Event::MembershipChanged`]'s `vouched_by`).
//!
//! An Update that breaks a rule is still part of the chain (it was ordered
//! and attested, and the order servers have moved to the next epoch), so the
//! epoch and slot set advance, but the member list does not change: members
//! keep their roles, and slots assigned to non-members are treated as
//! padding. Every member raises the same `UnauthorizedUpdate`.

use crate::content::{Change, MemberEntry, SetupContent, UpdateContent};
use grompi_proto::{AccountId, Epoch, Misbehaviour, SlotIndex, SlotRole, SlotSet, SlotSetHash};
use std::collections::{BTreeMap, BTreeSet};

/// The members of a conversation and who holds which slot in the current
/// epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    epoch: Epoch,
    roster: BTreeMap<AccountId, SlotRole>,
    slots: SlotSet,
    holders: BTreeMap<SlotIndex, AccountId>,
}

/// What an Update did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The membership of the next epoch; `None` when the Update cannot be
    /// followed at all (its slot set does not match the header, or its slot
    /// assignments are malformed).
    pub next: Option<Membership>,
    /// Why the change was refused, if it was.
    pub refusal: Option<Misbehaviour>,
}

fn rule(reason: &'static str) -> Misbehaviour {
    Misbehaviour::UnauthorizedUpdate(reason)
}

/// Checks slot assignments against a slot set; returns slot -> account.
fn assignments(
    slots: &SlotSet,
    members: &[MemberEntry],
) -> Result<BTreeMap<SlotIndex, AccountId>, &'static str> {
    let mut holders = BTreeMap::new();
    let mut accounts = BTreeSet::new();
    for m in members {
        let entry = slots
            .get(m.slot)
            .ok_or("a member is assigned a slot outside the slot set")?;
        if entry.role != m.role {
            return Err("a member's role differs from its slot's role");
        }
        if !accounts.insert(m.account) {
            return Err("an account is listed twice");
        }
        if holders.insert(m.slot, m.account).is_some() {
            return Err("two members are assigned the same slot");
        }
    }
    if members.is_empty() {
        return Err("the member list is empty");
    }
    Ok(holders)
}

/// Every Admin slot must have a holder (whose role then is Admin too).
fn admin_slots_held(
    slots: &SlotSet,
    holders: &BTreeMap<SlotIndex, AccountId>,
) -> Result<(), &'static str> {
    if crate::conversation::switches::get().admin_slots {
        return Ok(());
    }
    let unheld = slots.entries().iter().enumerate().any(|(i, e)| {
        e.role == SlotRole::Admin
            && u32::try_from(i).is_ok_and(|i| !holders.contains_key(&SlotIndex(i)))
    });
    if unheld {
        Err("an Admin slot has no Admin holder (a padding slot with the Admin role)")
    } else {
        Ok(())
    }
}

fn has_admin(roster: &BTreeMap<AccountId, SlotRole>) -> bool {
    roster.values().any(|r| *r == SlotRole::Admin)
}

impl Membership {
    /// The membership a Setup establishes. `sender` is the account that
    /// authenticated the Setup's block (or this member, for its own Setup).
    pub fn from_setup(
        epoch: Epoch,
        slot_set_hash: Option<SlotSetHash>,
        sender_slot: SlotIndex,
        sender: AccountId,
        content: &SetupContent,
    ) -> Result<Self, Misbehaviour> {
        if epoch != Epoch(0) {
            return Err(rule("a Setup must be in epoch 0"));
        }
        if slot_set_hash != Some(content.slots.hash()) {
            return Err(Misbehaviour::SlotSetMismatch);
        }
        let holders = assignments(&content.slots, &content.members).map_err(rule)?;
        admin_slots_held(&content.slots, &holders).map_err(rule)?;
        let roster: BTreeMap<_, _> = content
            .members
            .iter()
            .map(|m| (m.account, m.role))
            .collect();
        if roster.get(&content.creator) != Some(&SlotRole::Admin) {
            return Err(rule("the creator is not an Admin member"));
        }
        if sender != content.creator || holders.get(&sender_slot) != Some(&sender) {
            return Err(rule(
                "the Setup was not sent by its creator from the creator's slot",
            ));
        }
        Ok(Self {
            epoch,
            roster,
            slots: content.slots.clone(),
            holders,
        })
    }

    /// Rebuilds a membership saved with [`Membership::roster_and_holders`]
    /// (the encrypted local store). Checks that every holder is in the
    /// roster and holds a slot of the set.
    pub fn from_parts(
        epoch: Epoch,
        slots: SlotSet,
        roster: BTreeMap<AccountId, SlotRole>,
        holders: BTreeMap<SlotIndex, AccountId>,
    ) -> Result<Self, &'static str> {
        for (slot, account) in &holders {
            if slots.get(*slot).is_none() {
                return Err("a holder's slot is outside the slot set");
            }
            if !roster.contains_key(account) {
                return Err("a slot holder is not a member");
            }
        }
        Ok(Self {
            epoch,
            roster,
            slots,
            holders,
        })
    }

    /// The roster and the slot holders, for the encrypted local store.
    pub fn roster_and_holders(
        &self,
    ) -> (
        &BTreeMap<AccountId, SlotRole>,
        &BTreeMap<SlotIndex, AccountId>,
    ) {
        (&self.roster, &self.holders)
    }

    /// The epoch this membership is in force for: 0 after the Setup, one
    /// more after each applied Update.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// The membership a joining member learns from the Update that adds
    /// it. It never saw the member list before, so it checks what it can:
    /// the slot set matches the header; the next list is well formed and
    /// every Admin slot has an Admin holder; the change is `Add` of `me`
    /// with the role the list gives it; and `sender` (the account that
    /// authenticated the Update's block) is an Admin of the list before the
    /// change (the next list without `me`) and so of the next list. What it
    /// cannot check is that the rest of the list equals the current one;
    /// the caller tells the user so.
    pub fn joined(
        epoch: Epoch,
        slot_set_hash: Option<SlotSetHash>,
        sender: &AccountId,
        me: &AccountId,
        content: &UpdateContent,
    ) -> Result<Self, Misbehaviour> {
        if slot_set_hash != Some(content.next_slots.hash()) {
            return Err(Misbehaviour::SlotSetMismatch);
        }
        let holders = assignments(&content.next_slots, &content.next_members).map_err(rule)?;
        admin_slots_held(&content.next_slots, &holders).map_err(rule)?;
        let roster: BTreeMap<_, _> = content
            .next_members
            .iter()
            .map(|m| (m.account, m.role))
            .collect();
        let Change::Add { account, role } = content.change else {
            return Err(rule("an Update that adds this member must be an Add"));
        };
        if account != *me || roster.get(me) != Some(&role) {
            return Err(rule(
                "the Update does not add this member with the role it lists",
            ));
        }
        let mut before = roster.clone();
        before.remove(me);
        if before.get(sender) != Some(&SlotRole::Admin) {
            return Err(rule(
                "the Update adding this member was not sent by an Admin of the list it states",
            ));
        }
        if !has_admin(&roster) {
            return Err(rule("the last Admin cannot be removed or demoted"));
        }
        Ok(Self {
            epoch,
            roster,
            slots: content.next_slots.clone(),
            holders,
        })
    }
    /// The members and their roles, ordered by account id.
    pub fn members(&self) -> &BTreeMap<AccountId, SlotRole> {
        &self.roster
    }
    /// The padded slot set of this epoch, whose hash the header of the
    /// Setup or Update that made it carries.
    pub fn slots(&self) -> &SlotSet {
        &self.slots
    }
    /// The member holding `slot`, if any (padding slots have none).
    pub fn holder(&self, slot: SlotIndex) -> Option<AccountId> {
        self.holders.get(&slot).copied()
    }
    /// The slot `account` holds in the current epoch.
    pub fn slot_of(&self, account: &AccountId) -> Option<SlotIndex> {
        self.holders
            .iter()
            .find(|(_, a)| *a == account)
            .map(|(s, _)| *s)
    }
    /// The role of `account`, if it is a member.
    pub fn role(&self, account: &AccountId) -> Option<SlotRole> {
        self.roster.get(account).copied()
    }
    /// Members holding a slot this epoch, with their slots, in slot order.
    pub fn holders(&self) -> impl Iterator<Item = (SlotIndex, AccountId)> + '_ {
        self.holders.iter().map(|(s, a)| (*s, *a))
    }

    /// The member list after `change` by `sender`, or why it is refused.
    pub fn roster_after(
        &self,
        sender: &AccountId,
        change: &Change,
    ) -> Result<BTreeMap<AccountId, SlotRole>, Misbehaviour> {
        let sender_role = self
            .role(sender)
            .ok_or(rule("the sender is not a member"))?;
        let admin = sender_role == SlotRole::Admin;
        let mut next = self.roster.clone();
        match *change {
            Change::Add { account, role } => {
                if !admin {
                    return Err(rule("only an Admin may add members"));
                }
                if next.insert(account, role).is_some() {
                    return Err(rule("the account added is already a member"));
                }
            }
            Change::Remove { account } => {
                if !admin {
                    return Err(rule("only an Admin may remove members"));
                }
                if next.remove(&account).is_none() {
                    return Err(rule("the account removed is not a member"));
                }
            }
            Change::Leave => {
                if !admin {
                    return Err(rule(
                        "only an Admin may leave by Update; a Member asks an Admin to remove it",
                    ));
                }
                next.remove(sender);
            }
            Change::SetRole { account, role } => {
                if !admin {
                    return Err(rule("only an Admin may change roles"));
                }
                match next.get_mut(&account) {
                    None => return Err(rule("the account whose role changes is not a member")),
                    Some(r) => *r = role,
                }
            }
            Change::SetHistory => {
                if !admin {
                    return Err(rule("only an Admin may change the history policy"));
                }
            }
        }
        if next.is_empty() {
            return Err(rule("a conversation cannot become empty"));
        }
        if !has_admin(&next) {
            return Err(rule("the last Admin cannot be removed or demoted"));
        }
        Ok(next)
    }

    /// Applies an accepted Update sent by `sender` (authenticated) whose
    /// header carries `slot_set_hash`.
    pub fn apply_update(
        &self,
        sender: &AccountId,
        slot_set_hash: Option<SlotSetHash>,
        content: &UpdateContent,
    ) -> UpdateOutcome {
        let Some(epoch) = self.epoch.next() else {
            return UpdateOutcome {
                next: None,
                refusal: Some(rule("the epoch counter is exhausted")),
            };
        };
        if slot_set_hash != Some(content.next_slots.hash()) {
            return UpdateOutcome {
                next: None,
                refusal: Some(Misbehaviour::SlotSetMismatch),
            };
        }
        let holders = match assignments(&content.next_slots, &content.next_members) {
            Ok(h) => h,
            Err(reason) => {
                return UpdateOutcome {
                    next: None,
                    refusal: Some(rule(reason)),
                };
            }
        };
        let listed: BTreeMap<_, _> = content
            .next_members
            .iter()
            .map(|m| (m.account, m.role))
            .collect();
        let verdict = admin_slots_held(&content.next_slots, &holders)
            .map_err(rule)
            .and_then(|()| self.roster_after(sender, &content.change))
            .and_then(|expected| {
                if expected == listed {
                    Ok(expected)
                } else {
                    Err(rule(
                        "the next member list is not the current list with the change applied",
                    ))
                }
            });
        match verdict {
            Ok(roster) => UpdateOutcome {
                next: Some(Self {
                    epoch,
                    roster,
                    slots: content.next_slots.clone(),
                    holders,
                }),
                refusal: None,
            },
            Err(refusal) => UpdateOutcome {
                next: Some(Self {
                    epoch,
                    roster: self.roster.clone(),
                    slots: content.next_slots.clone(),
                    holders: holders
                        .into_iter()
                        .filter(|(_, a)| self.roster.contains_key(a))
                        .collect(),
                }),
                refusal: Some(refusal),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::{SlotEntry, SlotKey};
    use proptest::prelude::*;

    fn acct(n: u8) -> AccountId {
        AccountId::from_bytes([n; 32])
    }

    fn set(roles: &[SlotRole], salt: u8) -> SlotSet {
        SlotSet::new(
            roles
                .iter()
                .enumerate()
                .map(|(i, r)| SlotEntry {
                    key: SlotKey::from_bytes([i as u8 + 1 + salt; 32]),
                    role: *r,
                })
                .collect(),
        )
        .unwrap()
    }

    /// Members 1 (Admin), 2, 3 (Member) in slots 0..3, one padding slot.
    fn base() -> Membership {
        let slots = set(
            &[
                SlotRole::Admin,
                SlotRole::Member,
                SlotRole::Member,
                SlotRole::Member,
            ],
            0,
        );
        let members = vec![
            MemberEntry {
                account: acct(1),
                role: SlotRole::Admin,
                slot: SlotIndex(0),
            },
            MemberEntry {
                account: acct(2),
                role: SlotRole::Member,
                slot: SlotIndex(1),
            },
            MemberEntry {
                account: acct(3),
                role: SlotRole::Member,
                slot: SlotIndex(2),
            },
        ];
        let c = SetupContent {
            creator: acct(1),
            slots: slots.clone(),
            members,
            history: Default::default(),
        };
        Membership::from_setup(Epoch(0), Some(slots.hash()), SlotIndex(0), acct(1), &c).unwrap()
    }

    /// An Update whose next list is `roster` (in slot order, fresh keys).
    fn update(change: Change, roster: &[(u8, SlotRole)]) -> UpdateContent {
        let mut roles: Vec<_> = roster.iter().map(|(_, r)| *r).collect();
        roles.push(SlotRole::Member);
        let next_slots = set(&roles, 100);
        let next_members = roster
            .iter()
            .enumerate()
            .map(|(i, (a, r))| MemberEntry {
                account: acct(*a),
                role: *r,
                slot: SlotIndex(i as u32),
            })
            .collect();
        UpdateContent {
            change,
            next_slots,
            next_members,
            history: Default::default(),
        }
    }

    fn apply(m: &Membership, sender: u8, u: &UpdateContent) -> UpdateOutcome {
        m.apply_update(&acct(sender), Some(u.next_slots.hash()), u)
    }

    #[test]
    fn setup_rules() {
        let slots = set(&[SlotRole::Admin, SlotRole::Member], 0);
        let good = SetupContent {
            creator: acct(1),
            slots: slots.clone(),
            members: vec![
                MemberEntry {
                    account: acct(1),
                    role: SlotRole::Admin,
                    slot: SlotIndex(0),
                },
                MemberEntry {
                    account: acct(2),
                    role: SlotRole::Member,
                    slot: SlotIndex(1),
                },
            ],
            history: Default::default(),
        };
        let h = Some(slots.hash());
        assert!(Membership::from_setup(Epoch(0), h, SlotIndex(0), acct(1), &good).is_ok());
        // Wrong hash, wrong sender, wrong slot, wrong epoch.
        assert_eq!(
            Membership::from_setup(
                Epoch(0),
                Some(SlotSetHash::from_bytes([0; 32])),
                SlotIndex(0),
                acct(1),
                &good
            ),
            Err(Misbehaviour::SlotSetMismatch)
        );
        assert!(Membership::from_setup(Epoch(0), h, SlotIndex(0), acct(2), &good).is_err());
        assert!(Membership::from_setup(Epoch(0), h, SlotIndex(1), acct(1), &good).is_err());
        assert!(Membership::from_setup(Epoch(1), h, SlotIndex(0), acct(1), &good).is_err());
        // A role that differs from the slot's role.
        let mut bad = good.clone();
        bad.members[1].role = SlotRole::Admin;
        assert!(Membership::from_setup(Epoch(0), h, SlotIndex(0), acct(1), &bad).is_err());
        // Two members in one slot.
        let mut bad = good.clone();
        bad.members[1].slot = SlotIndex(0);
        bad.members[1].role = SlotRole::Admin;
        assert!(Membership::from_setup(Epoch(0), h, SlotIndex(0), acct(1), &bad).is_err());
        // A slot outside the set.
        let mut bad = good;
        bad.members[1].slot = SlotIndex(9);
        assert!(Membership::from_setup(Epoch(0), h, SlotIndex(0), acct(1), &bad).is_err());
    }

    #[test]
    fn authorized_changes_apply() {
        let m = base();
        let add = update(
            Change::Add {
                account: acct(4),
                role: SlotRole::Member,
            },
            &[
                (1, SlotRole::Admin),
                (2, SlotRole::Member),
                (3, SlotRole::Member),
                (4, SlotRole::Member),
            ],
        );
        let out = apply(&m, 1, &add);
        assert_eq!(out.refusal, None);
        let next = out.next.unwrap();
        assert_eq!(next.epoch(), Epoch(1));
        assert_eq!(next.members().len(), 4);
        assert_eq!(next.slot_of(&acct(4)), Some(SlotIndex(3)));
        // An Admin leaves once another Admin exists.
        let promote = update(
            Change::SetRole {
                account: acct(2),
                role: SlotRole::Admin,
            },
            &[
                (1, SlotRole::Admin),
                (2, SlotRole::Admin),
                (3, SlotRole::Member),
            ],
        );
        let out = apply(&m, 1, &promote);
        assert_eq!(out.refusal, None);
        let promoted = out.next.unwrap();
        let leave = update(
            Change::Leave,
            &[(1, SlotRole::Admin), (3, SlotRole::Member)],
        );
        let out = apply(&promoted, 2, &leave);
        assert_eq!(out.refusal, None);
        assert_eq!(out.next.unwrap().role(&acct(2)), None);
    }

    #[test]
    fn unauthorized_changes_keep_the_member_list() {
        let m = base();
        let cases = [
            // A Member leaves by Update (it asks an Admin instead).
            (
                2,
                update(
                    Change::Leave,
                    &[(1, SlotRole::Admin), (3, SlotRole::Member)],
                ),
            ),
            // A Member removes someone.
            (
                2,
                update(
                    Change::Remove { account: acct(3) },
                    &[(1, SlotRole::Admin), (2, SlotRole::Member)],
                ),
            ),
            // A Member promotes itself.
            (
                2,
                update(
                    Change::SetRole {
                        account: acct(2),
                        role: SlotRole::Admin,
                    },
                    &[
                        (1, SlotRole::Admin),
                        (2, SlotRole::Admin),
                        (3, SlotRole::Member),
                    ],
                ),
            ),
            // The last Admin demotes itself.
            (
                1,
                update(
                    Change::SetRole {
                        account: acct(1),
                        role: SlotRole::Member,
                    },
                    &[
                        (1, SlotRole::Member),
                        (2, SlotRole::Member),
                        (3, SlotRole::Member),
                    ],
                ),
            ),
            // The last Admin leaves.
            (
                1,
                update(
                    Change::Leave,
                    &[(2, SlotRole::Member), (3, SlotRole::Member)],
                ),
            ),
            // An Admin adds one member but lists another change.
            (
                1,
                update(
                    Change::Add {
                        account: acct(4),
                        role: SlotRole::Member,
                    },
                    &[
                        (1, SlotRole::Admin),
                        (2, SlotRole::Member),
                        (4, SlotRole::Member),
                    ],
                ),
            ),
        ];
        for (sender, u) in cases {
            let out = apply(&m, sender, &u);
            assert!(
                matches!(out.refusal, Some(Misbehaviour::UnauthorizedUpdate(_))),
                "{out:?}"
            );
            let next = out.next.unwrap();
            assert_eq!(next.epoch(), Epoch(1));
            assert_eq!(
                next.members(),
                m.members(),
                "the member list must not change"
            );
            for (_, a) in next.holders() {
                assert!(m.members().contains_key(&a), "a non-member holds a slot");
            }
        }
        // A slot set that does not match the header cannot be followed.
        let u = update(
            Change::Leave,
            &[(1, SlotRole::Admin), (3, SlotRole::Member)],
        );
        let out = m.apply_update(&acct(2), Some(SlotSetHash::from_bytes([0; 32])), &u);
        assert_eq!(
            out,
            UpdateOutcome {
                next: None,
                refusal: Some(Misbehaviour::SlotSetMismatch)
            }
        );
    }

    proptest! {
        /// The same Update gives the same outcome, and an authorized one
        /// always leaves an Admin and changes exactly what it says.
        #[test]
        fn outcomes_are_deterministic_and_keep_an_admin(
            sender in 1u8..5, kind in 0u8..4, target in 1u8..6, admin in any::<bool>(),
            listed in proptest::collection::btree_map(1u8..6, any::<bool>(), 1..5),
        ) {
            let m = base();
            let role = if admin { SlotRole::Admin } else { SlotRole::Member };
            let change = match kind {
                0 => Change::Add { account: acct(target), role },
                1 => Change::Remove { account: acct(target) },
                2 => Change::Leave,
                _ => Change::SetRole { account: acct(target), role },
            };
            let roster: Vec<_> = listed
                .iter()
                .map(|(a, ad)| (*a, if *ad { SlotRole::Admin } else { SlotRole::Member }))
                .collect();
            let u = update(change, &roster);
            let a = apply(&m, sender, &u);
            let b = apply(&m.clone(), sender, &u.clone());
            prop_assert_eq!(&a, &b);
            let next = a.next.unwrap();
            prop_assert!(next.members().values().any(|r| *r == SlotRole::Admin));
            if a.refusal.is_none() {
                prop_assert_eq!(next.members(), &m.roster_after(&acct(sender), &change).unwrap());
            } else {
                prop_assert_eq!(next.members(), m.members());
            }
        }
    }
}
