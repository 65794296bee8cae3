//! The malicious-member toolkit: what a compromised member sends with the
//! keys the adversary copied from it (its pairwise sessions and its order
//! key secrets), envelopes the client's public API would never compose.
//!
//! Each is built from the client's own pieces (`Conversation::compose`,
//! `compose::compose`, the block plaintext, the slot's MAC keys) and then
//! changed in the one way the attack needs; the detection is always the
//! real cores': the other members' clients or the order servers.
//!
//! * Through the router (which cannot see what is wrong): a message whose
//!   blocks carry a body key the header does not commit to, a message
//!   whose blocks are framed as another member's, a receipt naming a head
//!   the conversation never had, an admin's Update that swaps two members'
//!   next slots, the only admin's Update that leaves (the servers refuse
//!   its next slot set without an admin slot), an admin's Rekey whose
//!   blocks carry another RN1 than its header commits to.
//! * Straight to every order server, as a router colluding with the member
//!   would pass it on (the honest router refuses each of these itself): an
//!   envelope of the next epoch, one from a slot outside the slot set, a
//!   non-admin's Update, a second Setup, a message with more blocks than
//!   the servers' limit. Each is offered at the server's own next index on
//!   its own head, so the one thing it gets wrong is what is refused.

use super::World;
use crate::scenario::Misbehave;
use crate::view::SentRecord;
use grompi_client_core::body::{BlockPlaintext, BodyKey};
use grompi_client_core::compose::{self, Composed, Sending};
use grompi_client_core::content::{Change, Content, MemberEntry, SetupContent, UpdateContent};
use grompi_client_core::group_key::{KeyGeneration, Rn1};
use grompi_client_core::keyring::SlotMacKeys;
use grompi_proto::limits::MAX_BLOCKS;
use grompi_proto::{
    AccountId, ConversationId, Envelope, Epoch, Head, Index, KeyStart, RecipientBlock, Sequence,
    SlotIndex, SlotRole, SlotSecret, SlotSet, pb,
};

/// Why a malicious envelope could not be built (recorded as a note).
#[derive(Debug, thiserror::Error)]
enum ToolkitError {
    /// The member is not in the conversation (yet, or any more).
    #[error("{0} holds no slot it has the keys of")]
    NoSeat(String),
    /// The client refused to compose the envelope it starts from.
    #[error("composing: {0}")]
    Compose(#[from] grompi_client_core::ClientError),
    /// Reassembling the envelope failed.
    #[error("assembling: {0}")]
    Wire(#[from] grompi_proto::WireError),
    /// Encrypting a block failed.
    #[error("encrypting a block: {0}")]
    Pairwise(#[from] grompi_client_core::pairwise::PairwiseError),
}

/// A compromised member's place in the conversation, as the adversary
/// holding its keys knows it.
struct Seat {
    conversation: ConversationId,
    epoch: Epoch,
    slot: SlotIndex,
    slots: SlotSet,
    members: Vec<MemberEntry>,
    last_seen: Option<Index>,
    keys: SlotMacKeys,
}

/// Swaps the slots of the first two members other than `actor` (in the
/// order `rank` gives) that hold the same role, so each slot's role still
/// matches: the Update then assigns each of them a slot key that is the
/// other's. False when there are no such two.
pub(super) fn swap_slots(
    update: &mut UpdateContent,
    actor: AccountId,
    rank: impl Fn(&AccountId) -> usize,
) -> bool {
    let mut others: Vec<usize> = (0..update.next_members.len())
        .filter(|i| {
            update
                .next_members
                .get(*i)
                .is_some_and(|m| m.account != actor)
        })
        .collect();
    others.sort_by_key(|i| update.next_members.get(*i).map(|m| rank(&m.account)));
    for (n, &i) in others.iter().enumerate() {
        for &j in others.iter().skip(n + 1) {
            let (Some(a), Some(b)) = (update.next_members.get(i), update.next_members.get(j))
            else {
                continue;
            };
            if a.role != b.role {
                continue;
            }
            let (sa, sb) = (a.slot, b.slot);
            if let Some(a) = update.next_members.get_mut(i) {
                a.slot = sb;
            }
            if let Some(b) = update.next_members.get_mut(j) {
                b.slot = sa;
            }
            return true;
        }
    }
    false
}

impl World {
    /// Script step `step`: compromised member `actor` does `what`.
    pub(super) fn misbehave(&mut self, actor: usize, step: usize, what: Misbehave) {
        let done = match what {
            Misbehave::SwapSlots => {
                let Some(account) = self.members.get(actor).map(|m| m.account) else {
                    return;
                };
                // A rekey (an admin re-stating its own role) whose member
                // list swaps two members' slots.
                let change = Change::SetRole {
                    account,
                    role: SlotRole::Admin,
                };
                self.prepare_update(actor, step, change, true, false);
                Ok(())
            }
            // Straight to the order servers: the router refuses this
            // Update itself (`proto::admission`, the same rule), so only
            // a direct offer shows the order servers' check.
            Misbehave::RemoveLastAdmin => self.direct(actor, step, what),
            Misbehave::FalseReceipt => self.false_receipt(actor, step),
            Misbehave::BadRn1 => self.bad_rn1(actor, step),
            Misbehave::BrokenKeyCommitment
            | Misbehave::Impersonate
            | Misbehave::BadHistoryBlock => self.through_router(actor, step, what),
            Misbehave::WrongEpoch
            | Misbehave::UnknownSlot
            | Misbehave::NonAdminUpdate
            | Misbehave::SecondSetup
            | Misbehave::Oversize => self.direct(actor, step, what),
        };
        if let Err(e) = done {
            self.notes
                .push(format!("step {step}: {what:?} failed: {e}"));
        }
    }

    fn name_of(&self, actor: usize) -> String {
        self.members
            .get(actor)
            .map(|m| m.name.clone())
            .unwrap_or_default()
    }

    fn seat(&self, actor: usize) -> Result<Seat, ToolkitError> {
        let m = self.members.get(actor);
        let name = m.map(|m| m.name.clone()).unwrap_or_default();
        let no_seat = || ToolkitError::NoSeat(name.clone());
        let m = m.ok_or_else(no_seat)?;
        let conv = m.conversation().ok_or_else(no_seat)?;
        let ms = conv.membership().ok_or_else(no_seat)?;
        let slot = ms.slot_of(&m.account).ok_or_else(no_seat)?;
        let key = ms.slots().get(slot).ok_or_else(no_seat)?.key;
        let secret = m
            .stolen_order_keys
            .iter()
            .map(|b| SlotSecret::from_bytes(*b))
            .find(|s| s.public_key() == key)
            .ok_or_else(no_seat)?;
        let keys = SlotMacKeys::derive(&secret, &m.config().servers)?;
        let members = ms
            .holders()
            .filter_map(|(slot, account)| {
                Some(MemberEntry {
                    account,
                    role: ms.role(&account)?,
                    slot,
                })
            })
            .collect();
        Ok(Seat {
            conversation: conv.id(),
            epoch: ms.epoch(),
            slot,
            slots: ms.slots().clone(),
            members,
            last_seen: conv.transcript().last().map(|e| e.index),
            keys,
        })
    }

    /// Composes `content` with the member's own client (the next sequence
    /// number, blocks for every member), as the starting point.
    fn compose_as(&mut self, actor: usize, content: Content) -> Result<Composed, ToolkitError> {
        let name = self.name_of(actor);
        let Self { sched, members, .. } = self;
        let m = members
            .get_mut(actor)
            .ok_or_else(|| ToolkitError::NoSeat(name.clone()))?;
        if m.conversation().is_none() {
            return Err(ToolkitError::NoSeat(name));
        }
        Ok(m.compose(content, sched.rng())?)
    }

    /// Composes `update` from the member's keys with the client's envelope
    /// builder (which judges no rule; the member's `Conversation::compose`
    /// would refuse it) and submits it through the router, like any
    /// envelope of the member's.
    pub(super) fn submit_unchecked_update(
        &mut self,
        actor: usize,
        step: usize,
        update: UpdateContent,
    ) {
        if let Err(e) = self.unchecked_update(actor, step, update) {
            self.notes
                .push(format!("step {step}: the unchecked Update failed: {e}"));
        }
    }

    fn unchecked_update(
        &mut self,
        actor: usize,
        step: usize,
        update: UpdateContent,
    ) -> Result<(), ToolkitError> {
        let seat = self.seat(actor)?;
        let name = self.name_of(actor);
        let me = self.members.get(actor).map(|m| m.account);
        let recipients: Vec<(SlotIndex, AccountId)> = seat
            .members
            .iter()
            .filter(|e| Some(e.account) != me)
            .map(|e| (e.slot, e.account))
            .collect();
        let Self { sched, members, .. } = self;
        let m = members
            .get_mut(actor)
            .ok_or_else(|| ToolkitError::NoSeat(name.clone()))?;
        let composed = compose::compose(
            &Sending {
                conversation: seat.conversation,
                epoch: seat.epoch,
                sender: seat.slot,
                // Above any sequence number the member used.
                sequence: Sequence(1 << 40),
                last_seen: seat.last_seen,
                recipients: &recipients,
                mac_keys: &seat.keys,
            },
            &Content::Update(update),
            sched.rng(),
            &mut m.secrets_mut().pairwise,
        )?;
        let now = self.now();
        self.submit_composed(actor, Some(step), None, 0, composed, now);
        Ok(())
    }

    /// An admin's Rekey, composed from the member's keys with the client's
    /// envelope builder, whose key start commits to one fresh RN1 while
    /// every block carries another: each recipient checks its RN1 against
    /// the commitment. Sent with a sequence number above any the member
    /// used (its client does not know of it).
    fn bad_rn1(&mut self, actor: usize, step: usize) -> Result<(), ToolkitError> {
        let seat = self.seat(actor)?;
        let name = self.name_of(actor);
        let no_key = || ToolkitError::NoSeat(name.clone());
        let (epoch, generation, _, period_length) = self
            .members
            .get(actor)
            .and_then(|m| m.conversation())
            .and_then(grompi_client_core::Conversation::key_position)
            .ok_or_else(no_key)?;
        let next = KeyGeneration(generation.ok_or_else(no_key)?.0.saturating_add(1));
        let me = self.members.get(actor).map(|m| m.account);
        let recipients: Vec<(SlotIndex, AccountId)> = seat
            .members
            .iter()
            .filter(|e| Some(e.account) != me)
            .map(|e| (e.slot, e.account))
            .collect();
        let Self { sched, members, .. } = self;
        let committed = Rn1::generate(sched.rng());
        let sent = Rn1::generate(sched.rng());
        let start = KeyStart::new(
            next.0,
            period_length,
            committed.commitment(&seat.conversation, epoch, next),
        )?;
        let m = members.get_mut(actor).ok_or_else(no_key)?;
        let takes_part = |_: &AccountId| true;
        let composed = compose::compose_keyed(
            &Sending {
                conversation: seat.conversation,
                epoch: seat.epoch,
                sender: seat.slot,
                sequence: Sequence(1 << 40),
                last_seen: seat.last_seen,
                recipients: &recipients,
                mac_keys: &seat.keys,
            },
            &Content::Rekey,
            compose::Keying::Start {
                start,
                rn1: &sent,
                takes_part: &takes_part,
            },
            sched.rng(),
            &mut m.secrets_mut().pairwise,
        )?;
        let now = self.now();
        self.submit_composed(actor, Some(step), None, 0, composed, now);
        Ok(())
    }

    /// A receipt through the member's last accepted index naming another
    /// head: every member compares it with its own head there.
    fn false_receipt(&mut self, actor: usize, step: usize) -> Result<(), ToolkitError> {
        let name = self.name_of(actor);
        let receipt = self
            .members
            .get(actor)
            .and_then(|m| m.conversation())
            .and_then(grompi_client_core::Conversation::receipt);
        let Some(Content::Receipt(mut r)) = receipt else {
            return Err(ToolkitError::NoSeat(name));
        };
        let mut head = *r.head.as_bytes();
        for b in &mut head {
            *b ^= 0xa5;
        }
        r.head = Head::from_bytes(head);
        self.compose_and_submit(actor, Some(step), Content::Receipt(r), 0);
        Ok(())
    }

    /// A message changed after composing, its submission tags made again
    /// with the member's slot keys, submitted through the router:
    /// `BrokenKeyCommitment` gives every other recipient a block with
    /// another body key than the header commits to; `Impersonate` frames
    /// every block as coming from another (honest) member.
    fn through_router(
        &mut self,
        actor: usize,
        step: usize,
        what: Misbehave,
    ) -> Result<(), ToolkitError> {
        let seat = self.seat(actor)?;
        let name = self.name_of(actor);
        let text = match what {
            Misbehave::BrokenKeyCommitment => {
                format!("{name}: only some of you can read this")
            }
            Misbehave::BadHistoryBlock => {
                format!("{name}: nobody added later will read this")
            }
            _ => format!("{name}: this is not from {name}"),
        };
        if matches!(
            what,
            Misbehave::BrokenKeyCommitment | Misbehave::BadHistoryBlock
        ) {
            // Whoever reads it reads what the sender really sent.
            self.sent.push(SentRecord {
                from: name.clone(),
                plaintext: text.clone(),
            });
        }
        let composed = self.compose_as(actor, Content::Message(text.into_bytes()))?;
        let (header, body, mut blocks) = composed.envelope.into_parts();
        match what {
            Misbehave::BadHistoryBlock => {
                // The history block (always last) sealed under a key no
                // member holds: same length, so only its key is wrong.
                if let Some(b) = blocks
                    .last_mut()
                    .filter(|b| b.recipient == grompi_proto::envelope::HISTORY_RECIPIENT)
                {
                    let junk = grompi_client_core::history::HistoryKey::from_bytes([0x5a; 32]);
                    let capsule = grompi_client_core::history::Capsule {
                        body_key: BodyKey::generate(self.sched.rng()),
                        link: None,
                    };
                    *b = capsule.seal(&junk, &header.core_hash());
                }
            }
            Misbehave::BrokenKeyCommitment => {
                let holders: Vec<(SlotIndex, AccountId)> =
                    seat.members.iter().map(|m| (m.slot, m.account)).collect();
                let Self { sched, members, .. } = self;
                let m = members
                    .get_mut(actor)
                    .ok_or_else(|| ToolkitError::NoSeat(name.clone()))?;
                for b in blocks.iter_mut().skip(1).step_by(2) {
                    let Some((_, account)) = holders.iter().find(|(s, _)| *s == b.recipient) else {
                        continue;
                    };
                    let other = BlockPlaintext {
                        key: BodyKey::generate(sched.rng()),
                        core: header.core_hash(),
                        rn1: None,
                    };
                    b.ciphertext = m
                        .secrets_mut()
                        .pairwise
                        .encrypt_to(account, &other.encode())?;
                }
            }
            _ => {
                // The frame is version, sender account, then the Olm
                // message: name an honest member as the sender.
                let victim = self
                    .members
                    .iter()
                    .enumerate()
                    .find(|(i, m)| *i != actor && m.honest)
                    .map(|(_, m)| m.account)
                    .ok_or_else(|| ToolkitError::NoSeat(name.clone()))?;
                for b in &mut blocks {
                    if let Some(account) = b.ciphertext.get_mut(1..33) {
                        account.copy_from_slice(victim.as_bytes());
                    }
                }
            }
        }
        let envelope = Envelope::new(header, body, blocks)?;
        let submission_tags = retag(&seat.keys, &envelope);
        let now = self.now();
        self.submit_composed(
            actor,
            Some(step),
            None,
            0,
            Composed {
                envelope,
                submission_tags,
            },
            now,
        );
        Ok(())
    }

    /// Builds the envelope of a direct misbehaviour and offers it to every
    /// order server at its next index.
    fn direct(&mut self, actor: usize, step: usize, what: Misbehave) -> Result<(), ToolkitError> {
        let seat = self.seat(actor)?;
        let name = self.name_of(actor);
        // Far above any sequence number the member used, so only the one
        // thing that is wrong is refused.
        let fresh = Sequence(1 << 40);
        let mut next_slots = None;
        let composed = match what {
            Misbehave::WrongEpoch | Misbehave::UnknownSlot | Misbehave::SecondSetup => {
                let (epoch, sender, content) = match what {
                    Misbehave::WrongEpoch => (
                        seat.epoch.next().unwrap_or(seat.epoch),
                        seat.slot,
                        Content::Message(b"from an epoch that has not begun".to_vec()),
                    ),
                    Misbehave::UnknownSlot => (
                        seat.epoch,
                        SlotIndex(
                            u32::try_from(seat.slots.len())
                                .unwrap_or(u32::MAX)
                                .saturating_add(3),
                        ),
                        Content::Message(b"from a slot that does not exist".to_vec()),
                    ),
                    _ => (
                        seat.epoch,
                        seat.slot,
                        Content::Setup(SetupContent {
                            creator: self
                                .members
                                .get(actor)
                                .map_or(AccountId::from_bytes([0; 32]), |m| m.account),
                            slots: seat.slots.clone(),
                            members: seat.members.clone(),
                            history: Default::default(),
                        }),
                    ),
                };
                let Self { sched, members, .. } = self;
                let m = members
                    .get_mut(actor)
                    .ok_or_else(|| ToolkitError::NoSeat(name.clone()))?;
                compose::compose(
                    &Sending {
                        conversation: seat.conversation,
                        epoch,
                        sender,
                        sequence: fresh,
                        last_seen: seat.last_seen,
                        recipients: &[],
                        mac_keys: &seat.keys,
                    },
                    &content,
                    sched.rng(),
                    &mut m.secrets_mut().pairwise,
                )?
            }
            Misbehave::RemoveLastAdmin | Misbehave::NonAdminUpdate => {
                // Composed from the member's keys with the client's
                // envelope builder (its `Conversation::compose` refuses an
                // Update its rules do not allow).
                let me = self.members.get(actor).map(|m| m.account);
                let update = if what == Misbehave::RemoveLastAdmin {
                    // The only Admin leaves: the next slot set (the current
                    // keys, every slot a Member's) has no admin slot.
                    UpdateContent {
                        change: Change::Leave,
                        next_slots: SlotSet::new(
                            seat.slots
                                .entries()
                                .iter()
                                .map(|e| grompi_proto::SlotEntry {
                                    key: e.key,
                                    role: SlotRole::Member,
                                })
                                .collect(),
                        )?,
                        next_members: seat
                            .members
                            .iter()
                            .filter(|e| Some(e.account) != me)
                            .map(|e| MemberEntry {
                                role: SlotRole::Member,
                                ..*e
                            })
                            .collect(),
                        history: Default::default(),
                    }
                } else {
                    // A non-admin removes the first other member.
                    let victim = seat
                        .members
                        .iter()
                        .find(|e| Some(e.account) != me)
                        .map(|e| e.account)
                        .ok_or_else(|| ToolkitError::NoSeat(name.clone()))?;
                    UpdateContent {
                        change: Change::Remove { account: victim },
                        next_slots: seat.slots.clone(),
                        next_members: seat
                            .members
                            .iter()
                            .filter(|e| e.account != victim)
                            .copied()
                            .collect(),
                        history: Default::default(),
                    }
                };
                next_slots = Some(pb::SlotSet::from(&update.next_slots));
                let Self { sched, members, .. } = self;
                let m = members
                    .get_mut(actor)
                    .ok_or_else(|| ToolkitError::NoSeat(name.clone()))?;
                compose::compose(
                    &Sending {
                        conversation: seat.conversation,
                        epoch: seat.epoch,
                        sender: seat.slot,
                        sequence: fresh,
                        last_seen: seat.last_seen,
                        recipients: &[],
                        mac_keys: &seat.keys,
                    },
                    &Content::Update(update),
                    sched.rng(),
                    &mut m.secrets_mut().pairwise,
                )?
            }
            _ => {
                // A message with dummy blocks beyond the servers' limit.
                let limit = self.scenario.network.server_limits().max_block_digests;
                let composed =
                    self.compose_as(actor, Content::Message(b"too many blocks".to_vec()))?;
                let (header, body, mut blocks) = composed.envelope.into_parts();
                let want = limit.saturating_add(4).min(MAX_BLOCKS);
                let mut dummy = 0u32;
                while blocks.len() < want {
                    let recipient = SlotIndex(1_000_000u32.saturating_add(dummy));
                    dummy = dummy.saturating_add(1);
                    blocks.push(RecipientBlock {
                        recipient,
                        ciphertext: vec![0x42; 16],
                    });
                }
                let envelope = Envelope::new(header, body, blocks)?;
                let submission_tags = retag(&seat.keys, &envelope);
                Composed {
                    envelope,
                    submission_tags,
                }
            }
        };
        let refused = self.offer_to_servers(actor, &composed, next_slots);
        self.notes.push(format!(
            "step {step}: {name} offered its {what:?} envelope straight to the order servers; {refused} refused it"
        ));
        Ok(())
    }

    /// Offers `composed` to every order server serving the actor's branch,
    /// at the server's own next index on its own head; returns how many
    /// refused it.
    fn offer_to_servers(
        &mut self,
        actor: usize,
        composed: &Composed,
        next_slots: Option<pb::SlotSet>,
    ) -> usize {
        let branch = self.branch_of(actor);
        let serves = self.serves(branch);
        let summary = pb::EnvelopeSummary::from(&composed.envelope.summary());
        let id = self.conversation;
        let mut refused = 0;
        for (s, server) in self.servers.iter_mut().enumerate() {
            if !serves.get(s).copied().unwrap_or(false) {
                continue;
            }
            let (Some((index, head)), Some(tag)) =
                (server.tip(branch, &id), composed.submission_tags.get(s))
            else {
                continue;
            };
            self.measure.messages += 2;
            let attested = server.rogue_item(
                branch,
                pb::AttestItem {
                    envelope: Some(summary.clone()),
                    submission_tag: tag.to_vec(),
                    index: index.0,
                    previous_head: head.to_vec(),
                    next_slots: next_slots.clone(),
                },
            );
            if attested.is_none() {
                refused += 1;
            }
        }
        refused
    }
}

/// Submission tags for `envelope` under the slot's MAC keys, one per server.
fn retag(keys: &SlotMacKeys, envelope: &Envelope) -> Vec<grompi_proto::Tag> {
    let hash = envelope.hash();
    let sequence = envelope.header().sequence();
    keys.all()
        .iter()
        .map(|k| k.submit(&hash, sequence))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::{SlotEntry, SlotKey};

    fn entry(n: u8, role: SlotRole, slot: u32) -> MemberEntry {
        MemberEntry {
            account: AccountId::from_bytes([n; 32]),
            role,
            slot: SlotIndex(slot),
        }
    }

    #[test]
    fn a_swap_exchanges_two_other_members_of_one_role_in_rank_order() {
        let slots = SlotSet::new(
            (0..5u8)
                .map(|i| SlotEntry {
                    key: SlotKey::from_bytes([i + 1; 32]),
                    role: if i < 2 {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    },
                })
                .collect(),
        )
        .unwrap();
        let mut update = UpdateContent {
            change: Change::Leave,
            next_slots: slots,
            next_members: vec![
                entry(1, SlotRole::Admin, 0),
                entry(2, SlotRole::Admin, 1),
                entry(4, SlotRole::Member, 4),
                entry(3, SlotRole::Member, 2),
                entry(5, SlotRole::Member, 3),
            ],
            history: Default::default(),
        };
        let actor = AccountId::from_bytes([1; 32]);
        // Ranked by account byte: 3 and 4 are the first two members.
        assert!(swap_slots(&mut update, actor, |a| usize::from(
            a.as_bytes()[0]
        )));
        let slot_of = |n: u8| {
            update
                .next_members
                .iter()
                .find(|m| m.account == AccountId::from_bytes([n; 32]))
                .map(|m| m.slot.0)
        };
        assert_eq!(slot_of(3), Some(4));
        assert_eq!(slot_of(4), Some(2));
        assert_eq!(slot_of(5), Some(3));
        assert_eq!(
            slot_of(2),
            Some(1),
            "the other admin has no admin to swap with"
        );
        let mut alone = UpdateContent {
            next_members: vec![entry(1, SlotRole::Admin, 0), entry(2, SlotRole::Member, 2)],
            ..update
        };
        assert!(!swap_slots(&mut alone, actor, |_| 0));
    }
}
