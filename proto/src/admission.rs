//! Envelope admission: the rules an envelope must meet to take an index of
//! its conversation, each written once, over plain inputs.
//!
//! The order server refuses with them (`docs/PROTOCOL.md` sections 7.3, 7.5
//! and 8), the router checks them early so that a sender hears at once what
//! every order server would refuse, and a member reuses the stateless ones
//! ([`kind_at`], [`epoch`]) before accepting an index. Each rule returns
//! the [`Misbehaviour`] it detects; what a caller does with it (a refusal
//! code, a gRPC status, an alert) is the caller's business.
//!
//! | rule | input | refusal |
//! |---|---|---|
//! | [`epoch`] | the conversation's current epoch | [`Misbehaviour::WrongEpoch`] |
//! | [`sender_slot`] | the sender slot looked up in the current slot set | [`Misbehaviour::UnknownSlot`] |
//! | [`sequence`] | the last sequence admitted from the slot in this epoch | [`Misbehaviour::SequenceNotIncreasing`] |
//! | [`kind_at`] | the index | [`Misbehaviour::UnexpectedKind`] |
//! | [`setup_slot_set`] | the hash of the slot set the conversation opened with | [`Misbehaviour::SlotSetMismatch`] |
//! | [`update_sender`] | the sender slot's role (Update and Rekey) | [`Misbehaviour::NotAuthorized`] |
//! | [`update_next_slots`] | the next slot set an Update installs | [`Misbehaviour::SlotSetMismatch`], [`Misbehaviour::UnauthorizedUpdate`] |
//!
//! The rules are independent; where an envelope breaks several, the caller
//! decides the order it checks them in (the order server's order is that
//! of section 7.3, with the submission tag checked between the sender slot
//! and the sequence).

use crate::envelope::{EnvelopeHeader, EnvelopeKind};
use crate::error::Misbehaviour;
use crate::ids::{Epoch, Index, Sequence};
use crate::slots::{SlotRole, SlotSet, SlotSetHash};

/// Why an envelope other than a Setup is refused at index 0.
pub const INDEX_0_MUST_BE_A_SETUP: &str = "index 0 must be a Setup";

/// Why a Setup is refused at any index but 0.
pub const SETUP_ONLY_AT_INDEX_0: &str = "a Setup is allowed only at index 0";

/// Why an Update is refused whose next slot set has no Admin slot.
pub const NEXT_SLOTS_WITHOUT_ADMIN: &str =
    "the next slot set has no Admin slot, so its membership could never change again";

/// The envelope is in the conversation's `current` epoch.
pub fn epoch(header: &EnvelopeHeader, current: Epoch) -> Result<(), Misbehaviour> {
    if header.epoch() == current {
        Ok(())
    } else {
        Err(Misbehaviour::WrongEpoch {
            expected: current,
            got: header.epoch(),
        })
    }
}

/// The sender slot exists in the current slot set. `found` is the caller's
/// lookup of `header.sender()` in that set (its entry, or whatever the
/// caller keeps per slot), `slot_count` the set's size; returns what was
/// found.
pub fn sender_slot<T>(
    header: &EnvelopeHeader,
    found: Option<T>,
    slot_count: usize,
) -> Result<T, Misbehaviour> {
    found.ok_or(Misbehaviour::UnknownSlot {
        slot: header.sender(),
        slot_count,
    })
}

/// The sequence is above `last`, the last one admitted from the sender slot
/// in this epoch (`None` if none was): sequences strictly increase per
/// (epoch, slot), so a replay is refused.
pub fn sequence(header: &EnvelopeHeader, last: Option<Sequence>) -> Result<(), Misbehaviour> {
    match last {
        Some(last) if header.sequence() <= last => Err(Misbehaviour::SequenceNotIncreasing {
            slot: header.sender(),
            last,
            got: header.sequence(),
        }),
        _ => Ok(()),
    }
}

/// The kind is allowed at `index`: a Setup if and only if index 0.
pub fn kind_at(header: &EnvelopeHeader, index: Index) -> Result<(), Misbehaviour> {
    let setup = header.kind() == EnvelopeKind::Setup;
    match (index == Index(0), setup) {
        (true, true) | (false, false) => Ok(()),
        (true, false) => Err(Misbehaviour::UnexpectedKind(INDEX_0_MUST_BE_A_SETUP)),
        (false, true) => Err(Misbehaviour::UnexpectedKind(SETUP_ONLY_AT_INDEX_0)),
    }
}

/// A Setup names the slot set the conversation was opened with (`opened`
/// is its hash). Other kinds pass.
pub fn setup_slot_set(header: &EnvelopeHeader, opened: &SlotSetHash) -> Result<(), Misbehaviour> {
    if header.kind() == EnvelopeKind::Setup && header.slot_set_hash() != Some(*opened) {
        return Err(Misbehaviour::SlotSetMismatch);
    }
    Ok(())
}

/// An Update or a Rekey comes from an Admin slot (`role` is the sender
/// slot's role in the current set). Other kinds pass.
pub fn update_sender(header: &EnvelopeHeader, role: SlotRole) -> Result<(), Misbehaviour> {
    if header.kind().needs_admin() && role != SlotRole::Admin {
        return Err(Misbehaviour::NotAuthorized {
            slot: header.sender(),
        });
    }
    Ok(())
}

/// An Update's next slot set hashes to the header's `slot_set_hash` and
/// keeps an Admin slot: a set without one could never change again, and
/// whoever it leaves out could never be let back in. Other kinds pass.
pub fn update_next_slots(header: &EnvelopeHeader, next: &SlotSet) -> Result<(), Misbehaviour> {
    if header.kind() != EnvelopeKind::Update {
        return Ok(());
    }
    if header.slot_set_hash() != Some(next.hash()) {
        return Err(Misbehaviour::SlotSetMismatch);
    }
    if !next.has_admin() {
        return Err(Misbehaviour::UnauthorizedUpdate(NEXT_SLOTS_WITHOUT_ADMIN));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::HeaderFields;
    use crate::ids::{ConversationId, SlotIndex};
    use crate::slots::{SlotEntry, SlotKey};
    use crate::{BodyHash, KeyCommitment};
    use proptest::prelude::*;

    const KINDS: [EnvelopeKind; 6] = [
        EnvelopeKind::Setup,
        EnvelopeKind::Message,
        EnvelopeKind::Update,
        EnvelopeKind::Receipt,
        EnvelopeKind::Noise,
        EnvelopeKind::Rekey,
    ];

    fn set(roles: &[SlotRole]) -> SlotSet {
        let entries = roles
            .iter()
            .enumerate()
            .map(|(i, role)| SlotEntry {
                key: SlotKey::from_bytes([u8::try_from(i).unwrap_or(u8::MAX); 32]),
                role: *role,
            })
            .collect();
        SlotSet::new(entries).unwrap()
    }

    fn header(
        kind: EnvelopeKind,
        epoch: u64,
        sender: u32,
        sequence: u64,
        slots: Option<&SlotSet>,
    ) -> EnvelopeHeader {
        let slot_set_hash = kind
            .installs_slot_set()
            .then(|| slots.map_or(SlotSetHash::from_bytes([9; 32]), SlotSet::hash));
        EnvelopeHeader::new(HeaderFields {
            conversation: ConversationId::from_bytes([1; 32]),
            epoch: Epoch(epoch),
            kind,
            sender: SlotIndex(sender),
            sequence: Sequence(sequence),
            last_seen: None,
            body_hash: BodyHash::from_bytes([2; 32]),
            key_commitment: KeyCommitment::from_bytes([3; 32]),
            slot_set_hash,
        })
        .unwrap()
    }

    #[test]
    fn epoch_must_be_the_current_one() {
        let h = header(EnvelopeKind::Message, 2, 0, 1, None);
        assert_eq!(epoch(&h, Epoch(2)), Ok(()));
        assert_eq!(
            epoch(&h, Epoch(3)),
            Err(Misbehaviour::WrongEpoch {
                expected: Epoch(3),
                got: Epoch(2)
            })
        );
    }

    #[test]
    fn sender_slot_must_exist() {
        let s = set(&[SlotRole::Admin, SlotRole::Member]);
        let h = header(EnvelopeKind::Message, 0, 1, 1, None);
        assert_eq!(
            sender_slot(&h, s.get(h.sender()), s.len()),
            Ok(&s.entries()[1])
        );
        let h = header(EnvelopeKind::Message, 0, 2, 1, None);
        assert_eq!(
            sender_slot(&h, s.get(h.sender()), s.len()),
            Err(Misbehaviour::UnknownSlot {
                slot: SlotIndex(2),
                slot_count: 2
            })
        );
    }

    #[test]
    fn sequence_must_increase() {
        let h = header(EnvelopeKind::Message, 0, 1, 5, None);
        assert_eq!(sequence(&h, None), Ok(()));
        assert_eq!(sequence(&h, Some(Sequence(4))), Ok(()));
        for last in [5, 6] {
            assert_eq!(
                sequence(&h, Some(Sequence(last))),
                Err(Misbehaviour::SequenceNotIncreasing {
                    slot: SlotIndex(1),
                    last: Sequence(last),
                    got: Sequence(5)
                })
            );
        }
    }

    #[test]
    fn a_setup_exactly_at_index_0() {
        let setup = header(EnvelopeKind::Setup, 0, 0, 1, None);
        let message = header(EnvelopeKind::Message, 0, 0, 1, None);
        assert_eq!(kind_at(&setup, Index(0)), Ok(()));
        assert_eq!(kind_at(&message, Index(1)), Ok(()));
        assert_eq!(
            kind_at(&setup, Index(1)),
            Err(Misbehaviour::UnexpectedKind(SETUP_ONLY_AT_INDEX_0))
        );
        assert_eq!(
            kind_at(&message, Index(0)),
            Err(Misbehaviour::UnexpectedKind(INDEX_0_MUST_BE_A_SETUP))
        );
    }

    #[test]
    fn a_setup_names_the_opened_set() {
        let opened = set(&[SlotRole::Admin]);
        let other = set(&[SlotRole::Admin, SlotRole::Member]);
        let h = header(EnvelopeKind::Setup, 0, 0, 1, Some(&opened));
        assert_eq!(setup_slot_set(&h, &opened.hash()), Ok(()));
        assert_eq!(
            setup_slot_set(&h, &other.hash()),
            Err(Misbehaviour::SlotSetMismatch)
        );
        let m = header(EnvelopeKind::Message, 0, 0, 1, None);
        assert_eq!(setup_slot_set(&m, &other.hash()), Ok(()));
    }

    #[test]
    fn an_update_from_an_admin_to_a_matching_set_with_an_admin() {
        let next = set(&[SlotRole::Member, SlotRole::Admin]);
        let h = header(EnvelopeKind::Update, 0, 3, 1, Some(&next));
        assert_eq!(update_sender(&h, SlotRole::Admin), Ok(()));
        assert_eq!(
            update_sender(&h, SlotRole::Member),
            Err(Misbehaviour::NotAuthorized { slot: SlotIndex(3) })
        );
        assert_eq!(update_next_slots(&h, &next), Ok(()));
        let other = set(&[SlotRole::Admin]);
        assert_eq!(
            update_next_slots(&h, &other),
            Err(Misbehaviour::SlotSetMismatch)
        );
        let headless = set(&[SlotRole::Member, SlotRole::Member]);
        let h = header(EnvelopeKind::Update, 0, 3, 1, Some(&headless));
        assert_eq!(
            update_next_slots(&h, &headless),
            Err(Misbehaviour::UnauthorizedUpdate(NEXT_SLOTS_WITHOUT_ADMIN))
        );
        // Other kinds are not Updates: neither rule applies.
        let m = header(EnvelopeKind::Message, 0, 3, 1, None);
        assert_eq!(update_sender(&m, SlotRole::Member), Ok(()));
        assert_eq!(update_next_slots(&m, &headless), Ok(()));
    }

    fn kind() -> impl Strategy<Value = EnvelopeKind> {
        proptest::sample::select(KINDS.to_vec())
    }

    fn role() -> impl Strategy<Value = SlotRole> {
        prop_oneof![Just(SlotRole::Member), Just(SlotRole::Admin)]
    }

    proptest! {
        /// Every rule accepts exactly what its statement in PROTOCOL.md
        /// section 7.3 allows, and refuses with the variant it names.
        #[test]
        fn rules_match_their_statements(
            kind in kind(),
            header_epoch in 0u64..4,
            current in 0u64..4,
            sender in 0u32..6,
            roles in proptest::collection::vec(role(), 1..5),
            got in 1u64..6,
            last in proptest::option::of(1u64..6),
            index in 0u64..3,
            next_roles in proptest::collection::vec(role(), 1..5),
            next_matches in any::<bool>(),
        ) {
            let current_set = set(&roles);
            let next = set(&next_roles);
            let named = if next_matches { next.clone() } else { set(&[SlotRole::Admin; 6]) };
            let h = header(kind, header_epoch, sender, got, Some(&named));

            prop_assert_eq!(epoch(&h, Epoch(current)).is_ok(), header_epoch == current);

            let found = current_set.get(h.sender());
            let exists = (sender as usize) < roles.len();
            let entry = sender_slot(&h, found, current_set.len());
            prop_assert_eq!(entry.is_ok(), exists);
            if let Err(m) = &entry {
                prop_assert_eq!(m, &Misbehaviour::UnknownSlot { slot: SlotIndex(sender), slot_count: roles.len() });
            }

            let replay = last.is_some_and(|l| got <= l);
            match sequence(&h, last.map(Sequence)) {
                Ok(()) => prop_assert!(!replay),
                Err(m) => {
                    prop_assert!(replay);
                    prop_assert_eq!(m.kind(), crate::MisbehaviourKind::SequenceNotIncreasing);
                }
            }

            let setup = kind == EnvelopeKind::Setup;
            match kind_at(&h, Index(index)) {
                Ok(()) => prop_assert_eq!(setup, index == 0),
                Err(m) => {
                    prop_assert_ne!(setup, index == 0);
                    prop_assert_eq!(m.kind(), crate::MisbehaviourKind::UnexpectedKind);
                }
            }

            let opened = if next_matches { named.hash() } else { current_set.hash() };
            let setup_ok = !setup || h.slot_set_hash() == Some(opened);
            prop_assert_eq!(setup_slot_set(&h, &opened).is_ok(), setup_ok);

            let update = kind == EnvelopeKind::Update;
            let admin_only = update || kind == EnvelopeKind::Rekey;
            if let Ok(e) = entry {
                prop_assert_eq!(
                    update_sender(&h, e.role).is_ok(),
                    !admin_only || e.role == SlotRole::Admin
                );
            }
            let next_ok = !update || (next_matches && next.has_admin());
            match update_next_slots(&h, &next) {
                Ok(()) => prop_assert!(next_ok),
                Err(Misbehaviour::SlotSetMismatch) => prop_assert!(update && !next_matches),
                Err(Misbehaviour::UnauthorizedUpdate(_)) => {
                    prop_assert!(update && next_matches && !next.has_admin());
                }
                Err(m) => prop_assert!(false, "unexpected {m:?}"),
            }
        }
    }
}
