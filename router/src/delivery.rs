//! Per-member views of an envelope: what one member receives for one index.
//!
//! A member gets the header, the body, its own block (by the slot it holds
//! in the envelope's epoch, or for an Update that adds it, in the next
//! epoch), the digests of all blocks, and from each order server only its
//! own tag (and its next-epoch tag on an Update). Never another member's
//! block or tag.
//!
//! Tags that arrive after an index was delivered are sent as a *tag update*:
//! a `Delivery` with the same conversation and index, no header, body, block
//! or digests, and only the new attestations.

use crate::conversation::Pending;
use crate::record::StoredEnvelope;
use crate::slots::EpochSlots;
use grompi_proto::mac::Attestation;
use grompi_proto::{AccountId, EnvelopeKind, Epoch};
use grompi_proto::{ConversationId, Envelope, Head, Index, SlotIndex, pb};
use std::collections::BTreeMap;

/// Where a member sits for one index: its slot in the envelope's epoch and,
/// for an Update, in the next epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberSlots {
    /// Slot in the envelope's epoch.
    pub slot: Option<SlotIndex>,
    /// Slot in the epoch an Update installs.
    pub next_slot: Option<SlotIndex>,
}

impl MemberSlots {
    /// Whether the member receives this index at all.
    pub fn receives(&self) -> bool {
        self.slot.is_some() || self.next_slot.is_some()
    }
}

/// One server's attestation reduced to this member's tags and key share.
pub fn member_attestation(a: &Attestation, member: MemberSlots) -> pb::Attestation {
    let pick = |tags: &[grompi_proto::Tag], slot: Option<SlotIndex>| -> Vec<Vec<u8>> {
        slot.and_then(|s| tags.get(s.0 as usize))
            .map(|t| vec![t.to_vec()])
            .unwrap_or_default()
    };
    pb::Attestation {
        server: a.server,
        index: a.index.0,
        head: a.head.to_vec(),
        tags: pick(&a.tags, member.slot),
        next_tags: pick(&a.next_tags, member.next_slot),
        // The key share sealed for the member's slot (group-keyed
        // conversations, where a key period starts): an Update's shares are
        // the next epoch's, sealed for the next slots.
        key_shares: if a.next_tags.is_empty() {
            member.slot
        } else {
            member.next_slot
        }
        .and_then(|s| a.key_shares.get(s.0 as usize))
        .map(|k| vec![k.0.to_vec()])
        .unwrap_or_default(),
        log_index: a.log_index,
    }
}

/// The delivery of an envelope to one member.
pub fn view(
    conversation: &ConversationId,
    index: Index,
    envelope: &Envelope,
    previous_head: &Head,
    member: MemberSlots,
    attestations: &[Attestation],
) -> pb::Delivery {
    Views::new(conversation, index, envelope, previous_head).into_member(member, attestations)
}

/// What every member's delivery of one envelope shares (the header and the
/// block digests, one hash per block), computed once for all members.
#[derive(Debug)]
pub struct Views<'a> {
    shared: pb::Delivery,
    envelope: &'a Envelope,
}

impl<'a> Views<'a> {
    /// The shared part of the deliveries of `envelope` at `index`.
    pub fn new(
        conversation: &ConversationId,
        index: Index,
        envelope: &'a Envelope,
        previous_head: &Head,
    ) -> Self {
        let shared = pb::Delivery {
            conversation_id: conversation.to_vec(),
            index: index.0,
            header: Some(envelope.header().into()),
            body: envelope.body().to_vec(),
            block: None,
            block_position: 0,
            block_digests: envelope
                .blocks()
                .iter()
                .map(|b| b.digest().to_vec())
                .collect(),
            attestations: Vec::new(),
            previous_head: previous_head.to_vec(),
            history_block: envelope
                .history_block()
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        };
        Self { shared, envelope }
    }

    /// One member's delivery: the shared part, its own block and its own
    /// tags.
    pub fn member(&self, member: MemberSlots, attestations: &[Attestation]) -> pb::Delivery {
        own_part(self.envelope, self.shared.clone(), member, attestations)
    }

    /// [`Views::member`] for the only member asked for: the shared part is
    /// moved, not copied.
    pub fn into_member(self, member: MemberSlots, attestations: &[Attestation]) -> pb::Delivery {
        own_part(self.envelope, self.shared, member, attestations)
    }
}

/// `shared` completed with `member`'s own block and tags.
fn own_part(
    envelope: &Envelope,
    shared: pb::Delivery,
    member: MemberSlots,
    attestations: &[Attestation],
) -> pb::Delivery {
    let own = member.slot.or(member.next_slot);
    let blocks = envelope.blocks();
    let position = own.and_then(|s| blocks.iter().position(|b| b.recipient == s));
    pb::Delivery {
        block: position
            .and_then(|p| blocks.get(p))
            .map(pb::RecipientBlock::from),
        block_position: position.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        attestations: attestations
            .iter()
            .map(|a| member_attestation(a, member))
            .collect(),
        ..shared
    }
}

/// A tag update: later attestations of an index already delivered.
pub fn tag_update(
    conversation: &ConversationId,
    index: Index,
    member: MemberSlots,
    attestations: &[Attestation],
) -> pb::Delivery {
    pb::Delivery {
        conversation_id: conversation.to_vec(),
        index: index.0,
        attestations: attestations
            .iter()
            .map(|a| member_attestation(a, member))
            .collect(),
        ..Default::default()
    }
}

/// Converts a stored envelope and its attestations into a member's delivery.
pub fn stored_view(
    conversation: &ConversationId,
    index: Index,
    stored: &StoredEnvelope,
    member: MemberSlots,
    attestations: &[Attestation],
) -> pb::Delivery {
    view(
        conversation,
        index,
        &stored.envelope,
        &stored.previous_head,
        member,
        attestations,
    )
}

/// Who receives an index, and with which slots.
pub(crate) fn recipients(epochs: &[EpochSlots], p: &Pending) -> BTreeMap<AccountId, MemberSlots> {
    let h = p.stored.envelope.header();
    let at = |e: Epoch| usize::try_from(e.0).ok().and_then(|e| epochs.get(e));
    let mut r: BTreeMap<AccountId, MemberSlots> = BTreeMap::new();
    if let Some(e) = at(h.epoch()) {
        for (a, slot) in e.members() {
            r.entry(a).or_default().slot = Some(slot);
        }
    }
    if h.kind() == EnvelopeKind::Update
        && let Some(e) = h.epoch().next().and_then(at)
    {
        for (a, slot) in e.members() {
            r.entry(a).or_default().next_slot = Some(slot);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::envelope::HeaderFields;
    use grompi_proto::{
        BodyHash, EnvelopeHeader, EnvelopeKind, Epoch, Head, KeyCommitment, RecipientBlock,
        Sequence, Tag,
    };
    use proptest::prelude::*;

    fn envelope(blocks: u32) -> Envelope {
        let body = b"body".to_vec();
        let header = EnvelopeHeader::new(HeaderFields {
            conversation: ConversationId::from_bytes([1; 32]),
            epoch: Epoch(0),
            kind: EnvelopeKind::Message,
            sender: SlotIndex(0),
            sequence: Sequence(1),
            last_seen: None,
            body_hash: BodyHash::of(&body),
            key_commitment: KeyCommitment::from_bytes([2; 32]),
            slot_set_hash: None,
        })
        .unwrap();
        let blocks = (1..=blocks)
            .map(|s| RecipientBlock {
                recipient: SlotIndex(s),
                ciphertext: vec![s as u8; 8],
            })
            .collect();
        Envelope::new(header, body, blocks).unwrap()
    }

    proptest! {
        /// A member's view holds only its own block and its own tag, and is
        /// enough to recompute the envelope hash.
        #[test]
        fn views_hold_only_the_member_s_own_block_and_tag(blocks in 1u32..12, me in 0u32..12, servers in 1u32..5) {
            let e = envelope(blocks);
            let slots = blocks as usize + 1;
            let atts: Vec<Attestation> = (0..servers).map(|s| Attestation {
                server: s,
                index: Index(3),
                head: Head::from_bytes([9; 32]),
                tags: (0..slots).map(|i| Tag::from_bytes([(s as u8) * 16 + i as u8; 32])).collect(),
                next_tags: vec![],
                key_shares: Vec::new(),
                log_index: None,
            }).collect();
            let member = MemberSlots { slot: Some(SlotIndex(me)), next_slot: None };
            let d = view(&ConversationId::from_bytes([1; 32]), Index(3), &e, &Head::from_bytes([8; 32]), member, &atts);
            match &d.block {
                Some(b) => {
                    prop_assert_eq!(b.recipient_slot, me);
                    prop_assert_eq!(e.blocks()[d.block_position as usize].recipient, SlotIndex(me));
                }
                None => prop_assert!(me == 0 || me > blocks),
            }
            for (a, full) in d.attestations.iter().zip(&atts) {
                if (me as usize) < slots {
                    prop_assert_eq!(&a.tags, &vec![full.tags[me as usize].to_vec()]);
                } else {
                    prop_assert!(a.tags.is_empty());
                }
            }
            // A joiner learns the head before this index.
            prop_assert_eq!(&d.previous_head, &vec![8u8; 32]);
            // The member can recompute the envelope hash from its view.
            let header = grompi_proto::EnvelopeHeader::try_from(d.header.clone().unwrap()).unwrap();
            let digests: Vec<_> = d.block_digests.iter().map(|b| grompi_proto::BlockDigest::parse("d", b).unwrap()).collect();
            prop_assert_eq!(grompi_proto::EnvelopeHash::compute(&header.core_hash(), &digests), e.hash());
        }
    }

    #[test]
    fn tag_updates_carry_no_content() {
        let a = Attestation {
            server: 2,
            index: Index(1),
            head: Head::from_bytes([9; 32]),
            tags: vec![Tag::from_bytes([1; 32]), Tag::from_bytes([2; 32])],
            next_tags: vec![Tag::from_bytes([3; 32])],
            key_shares: Vec::new(),
            log_index: None,
        };
        let m = MemberSlots {
            slot: Some(SlotIndex(1)),
            next_slot: Some(SlotIndex(0)),
        };
        let d = tag_update(&ConversationId::from_bytes([1; 32]), Index(1), m, &[a]);
        assert!(d.header.is_none() && d.body.is_empty() && d.block.is_none());
        assert!(d.previous_head.is_empty());
        assert_eq!(d.attestations[0].tags, vec![vec![2; 32]]);
        assert_eq!(d.attestations[0].next_tags, vec![vec![3; 32]]);
        assert_eq!(d.attestations[0].server, 2);
    }

    /// Each member gets only the key share sealed for its slot; an Update's
    /// shares are sealed for the next epoch's slots.
    #[test]
    fn each_member_gets_only_its_own_key_share() {
        use grompi_proto::key_share::WrappedShare;
        let shares = vec![
            WrappedShare([1; 48]),
            WrappedShare([2; 48]),
            WrappedShare([3; 48]),
        ];
        let mut a = Attestation {
            server: 0,
            index: Index(4),
            head: Head::from_bytes([9; 32]),
            tags: vec![Tag::from_bytes([1; 32]); 3],
            next_tags: Vec::new(),
            key_shares: shares.clone(),
            log_index: Some(77),
        };
        let m = MemberSlots {
            slot: Some(SlotIndex(1)),
            next_slot: Some(SlotIndex(2)),
        };
        assert_eq!(member_attestation(&a, m).key_shares, vec![vec![2; 48]]);
        a.next_tags = vec![Tag::from_bytes([4; 32]); 3];
        assert_eq!(member_attestation(&a, m).key_shares, vec![vec![3; 48]]);
        let joiner = MemberSlots {
            slot: None,
            next_slot: Some(SlotIndex(0)),
        };
        assert_eq!(member_attestation(&a, joiner).key_shares, vec![vec![1; 48]]);
        a.next_tags.clear();
        assert!(member_attestation(&a, joiner).key_shares.is_empty());
        assert_eq!(
            member_attestation(&a, joiner).log_index,
            Some(77),
            "the audit log position is relayed"
        );
    }
}
