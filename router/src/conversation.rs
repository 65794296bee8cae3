//! Conversations: slot assignment with padding tiers, epochs, and the
//! per-conversation sequencer that gives each admitted envelope the next
//! index and head.
//!
//! The sequencer admits an envelope only after checking what the router can
//! check (conversation, epoch, sender slot held by the caller, kind at this
//! index, Update authorisation and prepared slot set, sequence above the last
//! one seen). What only order servers can check (submission tags) is decided
//! by their answers: if every server refuses an index for a reason that is
//! the sender's fault and none attested it, [`Conversation::drop_from`] frees
//! the index and re-admits the envelopes that followed it.

use crate::error::RouterError;
use crate::fanout::Backoff;
use crate::record::{ConversationRecord, Record, SlotTail, StoredEnvelope};
use crate::{Millis, Ticket};
use grompi_proto::mac::Attestation;
use grompi_proto::pb::RefusalReason;
use grompi_proto::{
    AccountId, ConversationId, Envelope, EnvelopeHash, EnvelopeKind, Epoch, Head, Index, Sequence,
    SlotEntry, SlotIndex, SlotKey, SlotRole, SlotSecret, SlotSet, SlotSetHash, Tag, admission,
};
use rand::{CryptoRng, RngExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The secret key of a padding slot, held by the router (it sends noise
/// envelopes from padding slots). Zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PaddingSecret([u8; 32]);

impl PaddingSecret {
    /// Wraps secret bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The bytes, for the store.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    /// The slot secret.
    pub fn slot_secret(&self) -> SlotSecret {
        SlotSecret::from_bytes(self.0)
    }
}

impl std::fmt::Debug for PaddingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaddingSecret(..)")
    }
}

/// One epoch's slot set and who holds each slot.
#[derive(Debug, Clone)]
pub struct EpochSlots {
    /// The epoch.
    pub epoch: Epoch,
    /// The first index in this epoch (`None` while only prepared).
    pub first_index: Option<Index>,
    /// The padded, shuffled slot set.
    pub slots: SlotSet,
    /// Per slot: the member holding it, `None` for padding.
    pub holders: Vec<Option<AccountId>>,
    /// Padding slots and their secrets.
    pub padding: Vec<(SlotIndex, PaddingSecret)>,
}

impl EpochSlots {
    /// The slot an account holds, if any.
    pub fn slot_of(&self, account: &AccountId) -> Option<SlotIndex> {
        self.holders
            .iter()
            .position(|h| h.as_ref() == Some(account))
            .and_then(|p| u32::try_from(p).ok())
            .map(SlotIndex)
    }

    /// The member holding a slot.
    pub fn holder(&self, slot: SlotIndex) -> Option<AccountId> {
        self.holders.get(slot.0 as usize).copied().flatten()
    }

    /// Members and their slots.
    pub fn members(&self) -> impl Iterator<Item = (AccountId, SlotIndex)> + '_ {
        self.holders.iter().enumerate().filter_map(|(i, h)| {
            let slot = u32::try_from(i).ok()?;
            h.map(|a| (a, SlotIndex(slot)))
        })
    }

    /// The assignments told to members.
    pub fn assignments(&self) -> Vec<grompi_proto::pb::SlotAssignment> {
        self.members()
            .filter_map(|(account, slot)| {
                self.slots
                    .get(slot)
                    .map(|e| grompi_proto::pb::SlotAssignment {
                        account: account.to_vec(),
                        slot: slot.0,
                        key: e.key.to_vec(),
                    })
            })
            .collect()
    }
}

/// The smallest tier that fits `members`, or an error naming the largest.
pub fn padded_size(members: usize, tiers: &[usize]) -> Result<usize, RouterError> {
    placed_size(members, &Placement::default(), tiers)
}

/// Where the members an Update adds may sit.
///
/// The Update is sent in the current epoch, but a joiner's block is
/// addressed by its slot in the next one (it holds no current slot). So a
/// joiner's next slot must not be a slot a current member holds, or two
/// blocks of the Update would name the same recipient.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Accounts that join with this epoch.
    pub joiners: BTreeSet<AccountId>,
    /// Slots joiners must not take: those held by current members.
    pub reserved: BTreeSet<SlotIndex>,
}

impl Placement {
    /// The placement for the epoch after `current`: every member of the
    /// next list that holds no slot in `current` is a joiner.
    pub fn after(current: &EpochSlots, next_members: &[(AccountId, SlotRole)]) -> Self {
        Self {
            joiners: next_members
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| current.slot_of(a).is_none())
                .collect(),
            reserved: current.members().map(|(_, s)| s).collect(),
        }
    }

    fn free_slots(&self, size: usize) -> usize {
        size - self
            .reserved
            .iter()
            .filter(|s| (s.0 as usize) < size)
            .count()
    }

    fn is_reserved(&self, position: usize) -> bool {
        u32::try_from(position).is_ok_and(|p| self.reserved.contains(&SlotIndex(p)))
    }
}

/// The smallest tier that fits `members` and leaves room for the joiners
/// outside the reserved slots, or an error naming the largest tier.
fn placed_size(
    members: usize,
    placement: &Placement,
    tiers: &[usize],
) -> Result<usize, RouterError> {
    tiers
        .iter()
        .copied()
        .filter(|t| *t >= members && placement.free_slots(*t) >= placement.joiners.len())
        .min()
        .ok_or_else(|| RouterError::GroupTooLarge {
            members,
            joining: placement.joiners.len(),
            largest: tiers.iter().max().copied().unwrap_or(0),
        })
}

/// Builds an epoch's slot set: one slot per member with its order key and
/// role, padded to the tier with fresh router keys, shuffled, with every
/// joiner outside the slots `placement` reserves.
pub fn assign_slots(
    epoch: Epoch,
    members: Vec<(AccountId, SlotRole, SlotKey)>,
    placement: &Placement,
    tiers: &[usize],
    rng: &mut impl CryptoRng,
) -> Result<EpochSlots, RouterError> {
    let size = placed_size(members.len(), placement, tiers)?;
    let mut entries: Vec<(SlotEntry, Option<AccountId>, Option<PaddingSecret>)> = members
        .into_iter()
        .map(|(a, role, key)| (SlotEntry { key, role }, Some(a), None))
        .collect();
    while entries.len() < size {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let secret = PaddingSecret::new(bytes);
        bytes.zeroize();
        entries.push((
            SlotEntry {
                key: secret.slot_secret().public_key(),
                role: SlotRole::Member,
            },
            None,
            Some(secret),
        ));
    }
    // Fisher-Yates with the caller's RNG.
    for i in (1..entries.len()).rev() {
        let j = rng.random_range(0..=i);
        entries.swap(i, j);
    }
    // Move joiners out of reserved slots, each to a random free slot that
    // holds no joiner. `placed_size` guarantees one exists: fewer joiners
    // than free slots sit in free slots while this one is in a reserved one.
    let is_joiner =
        |h: &Option<AccountId>| h.as_ref().is_some_and(|a| placement.joiners.contains(a));
    for i in 0..entries.len() {
        if !(placement.is_reserved(i) && is_joiner(&entries[i].1)) {
            continue;
        }
        let targets: Vec<usize> = (0..entries.len())
            .filter(|j| !placement.is_reserved(*j) && !is_joiner(&entries[*j].1))
            .collect();
        if targets.is_empty() {
            return Err(RouterError::NoFreeSlot);
        }
        let j = targets[rng.random_range(0..targets.len())];
        entries.swap(i, j);
    }
    let mut holders = Vec::with_capacity(size);
    let mut padding = Vec::new();
    let mut slot_entries = Vec::with_capacity(size);
    for (i, (entry, holder, secret)) in entries.into_iter().enumerate() {
        slot_entries.push(entry);
        holders.push(holder);
        if let (Some(s), Ok(i)) = (secret, u32::try_from(i)) {
            padding.push((SlotIndex(i), s));
        }
    }
    let slots = SlotSet::new(slot_entries)?;
    Ok(EpochSlots {
        epoch,
        first_index: None,
        slots,
        holders,
        padding,
    })
}

/// An envelope admitted at an index and not yet attested by every server.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The envelope and what goes with it.
    pub stored: StoredEnvelope,
    /// Its hash.
    pub hash: EnvelopeHash,
    /// Per order server: its attestation, once in.
    pub attestations: Vec<Option<Attestation>>,
    /// Per order server: its latest refusal, if any.
    pub refusals: Vec<Option<(RefusalReason, String)>>,
    /// Submitters waiting for the acknowledgement.
    pub tickets: Vec<Ticket>,
    /// Whether it has been delivered to members (quorum reached).
    pub delivered: bool,
}

impl Pending {
    /// Number of attestations in.
    pub fn attested(&self) -> usize {
        self.attestations.iter().filter(|a| a.is_some()).count()
    }
}

/// What an admitted envelope needs beyond its own content.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The envelope.
    pub envelope: Envelope,
    /// One submission tag per order server.
    pub submission_tags: Vec<Tag>,
    /// Submitter (`None` for noise).
    pub submitter: Option<AccountId>,
}

/// One conversation's state.
#[derive(Debug)]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// Its creator.
    pub creator: AccountId,
    /// Installed epochs (epoch n at position n).
    pub epochs: Vec<EpochSlots>,
    /// Prepared epochs not yet installed.
    pub prepared: Vec<EpochSlots>,
    /// Per order server: opened there.
    pub opened: Vec<bool>,
    /// The next index to assign.
    pub next: Index,
    /// The head before `next`.
    pub head: Head,
    /// Envelopes not yet attested by every server, by index.
    pub pending: BTreeMap<Index, Pending>,
    /// Per order server: how many indices it has attested.
    pub progress: Vec<Index>,
    /// How many indices have been delivered (reached the quorum).
    pub delivered: Index,
    /// Last sequence admitted per (epoch, slot): early replay refusal.
    pub last_seq: HashMap<(Epoch, SlotIndex), Sequence>,
    /// Envelopes admitted since start, by hash: resubmission is idempotent.
    pub known: HashMap<EnvelopeHash, Index>,
    /// Per order server: retry state for this conversation.
    pub backoff: Vec<Backoff>,
    /// CreateConversation callers waiting for a quorum of opens.
    pub create_tickets: Vec<Ticket>,
    /// When the next noise envelope is due.
    pub next_noise: Millis,
}

impl Conversation {
    /// A new conversation, or one restored from its record.
    pub fn from_record(r: ConversationRecord, servers: usize) -> Self {
        let mut opened = r.opened;
        opened.resize(servers, false);
        Self {
            head: Head::genesis(&r.id),
            id: r.id,
            creator: r.creator,
            epochs: r.epochs,
            prepared: r.prepared,
            opened,
            next: Index(0),
            pending: BTreeMap::new(),
            progress: vec![Index(0); servers],
            delivered: Index(0),
            last_seq: HashMap::new(),
            known: HashMap::new(),
            backoff: vec![Backoff::default(); servers],
            create_tickets: Vec::new(),
            next_noise: 0,
        }
    }

    /// The record that persists this conversation's slot sets.
    pub fn record(&self) -> ConversationRecord {
        ConversationRecord {
            id: self.id,
            creator: self.creator,
            epochs: self.epochs.clone(),
            prepared: self.prepared.clone(),
            opened: self.opened.clone(),
        }
    }

    /// The epoch new envelopes must be in.
    pub fn tail_epoch(&self) -> Option<&EpochSlots> {
        self.epochs.last()
    }

    /// An installed epoch.
    pub fn epoch(&self, e: Epoch) -> Option<&EpochSlots> {
        usize::try_from(e.0).ok().and_then(|i| self.epochs.get(i))
    }

    /// Whether an account holds a slot in any epoch.
    pub fn has_member(&self, account: &AccountId) -> bool {
        self.epochs.iter().any(|e| e.slot_of(account).is_some())
    }

    /// The number of indices that a quorum of servers has attested.
    pub fn quorate(&self, quorum: usize) -> Index {
        if quorum == 0 {
            // Relay-only mode: every admitted index is deliverable.
            return self.next;
        }
        let mut p = self.progress.clone();
        p.sort_unstable_by(|a, b| b.cmp(a));
        p.get(quorum.saturating_sub(1)).copied().unwrap_or(Index(0))
    }

    /// Checks an envelope against what the router knows; returns the slot
    /// set an Update installs. `submitter` is `None` for the router's noise.
    pub fn check(
        &self,
        submitter: Option<&AccountId>,
        envelope: &Envelope,
    ) -> Result<Option<SlotSet>, RouterError> {
        let h = envelope.header();
        let tail = self.tail_epoch().ok_or(RouterError::NoEpoch)?;
        admission::epoch(h, tail.epoch).map_err(RouterError::Inadmissible)?;
        let entry = admission::sender_slot(h, tail.slots.get(h.sender()), tail.slots.len())
            .map_err(RouterError::Inadmissible)?;
        match submitter {
            Some(a) if tail.holder(h.sender()) != Some(*a) => {
                return Err(RouterError::NotTheSlotHolder {
                    slot: h.sender(),
                    epoch: tail.epoch,
                });
            }
            None if !tail.padding.iter().any(|(s, _)| *s == h.sender()) => {
                return Err(RouterError::NoiseFromMemberSlot);
            }
            _ => {}
        }
        let last = self.last_seq.get(&(h.epoch(), h.sender())).copied();
        admission::kind_at(h, self.next)
            .and_then(|()| admission::sequence(h, last))
            // Hashing the set is only needed for a Setup (the rule passes
            // every other kind).
            .and_then(|()| match h.kind() {
                EnvelopeKind::Setup => admission::setup_slot_set(h, &tail.slots.hash()),
                _ => Ok(()),
            })
            .and_then(|()| admission::update_sender(h, entry.role))
            .map_err(RouterError::Inadmissible)?;
        if h.kind() != EnvelopeKind::Update {
            return Ok(None);
        }
        // The next slot set is one the router prepared for the next epoch.
        let want = h.slot_set_hash();
        let next = self
            .prepared
            .iter()
            .find(|p| Some(p.slots.hash()) == want && p.epoch.next_of(tail.epoch))
            .ok_or(RouterError::UpdateNotPrepared)?;
        admission::update_next_slots(h, &next.slots).map_err(RouterError::Inadmissible)?;
        Ok(Some(next.slots.clone()))
    }

    /// Admits a checked envelope at the next index; returns the index.
    pub fn admit(
        &mut self,
        a: Admission,
        next_slots: Option<SlotSet>,
        servers: usize,
        out: &mut Vec<Record>,
    ) -> Result<Index, RouterError> {
        let index = self.next;
        let hash = a.envelope.hash();
        let h = a.envelope.header().clone();
        let head = self.head.next(&self.id, h.epoch(), index, &hash);
        let next = index.next().ok_or(RouterError::IndexSpaceExhausted)?;
        if let Some(set) = &next_slots {
            let want: SlotSetHash = set.hash();
            let pos = self
                .prepared
                .iter()
                .position(|p| p.slots.hash() == want)
                .ok_or(RouterError::PreparedEpochVanished)?;
            let mut e = self.prepared.remove(pos);
            e.first_index = Some(next);
            self.epochs.push(e);
            self.prepared.clear();
            out.push(Record::Conversation(Box::new(self.record())));
        }
        if a.submitter.is_some() {
            // Outlives the envelope's time in memory: a resubmission after
            // every server attested it and the router restarted is still
            // recognised (and a different envelope with its sequence refused).
            out.push(Record::SlotTail {
                conversation: self.id,
                epoch: h.epoch(),
                slot: h.sender(),
                last: Some(SlotTail {
                    sequence: h.sequence(),
                    index,
                    hash,
                }),
            });
        }
        let stored = StoredEnvelope {
            envelope: a.envelope,
            submission_tags: a.submission_tags,
            previous_head: self.head,
            head,
            submitter: a.submitter,
            next_slots,
        };
        out.push(Record::Envelope {
            conversation: self.id,
            index,
            stored: Some(Box::new(stored.clone())),
        });
        out.push(Record::Tail {
            conversation: self.id,
            next,
            head,
        });
        self.pending.insert(
            index,
            Pending {
                stored,
                hash,
                attestations: vec![None; servers],
                refusals: vec![None; servers],
                tickets: Vec::new(),
                delivered: false,
            },
        );
        self.last_seq.insert((h.epoch(), h.sender()), h.sequence());
        self.known.insert(hash, index);
        self.next = next;
        self.head = head;
        Ok(index)
    }

    /// Drops the envelope at `index` (refused by every server, attested by
    /// none) and re-admits those after it at shifted indices. Returns the
    /// dropped envelope's waiters and, for each later envelope that no longer
    /// fits, its waiters and why.
    pub fn drop_from(
        &mut self,
        index: Index,
        reason: &RouterError,
        servers: usize,
        out: &mut Vec<Record>,
    ) -> Vec<(Vec<Ticket>, RouterError, Option<AccountId>)> {
        let mut failed = Vec::new();
        let later: Vec<(Index, Pending)> = {
            let keys: Vec<Index> = self.pending.range(index..).map(|(i, _)| *i).collect();
            keys.into_iter()
                .filter_map(|i| self.pending.remove(&i).map(|p| (i, p)))
                .collect()
        };
        let Some((_, first)) = later.first() else {
            return failed;
        };
        self.next = index;
        self.head = first.stored.previous_head;
        // Un-install epochs that an Update at or after `index` installed.
        let mut changed = false;
        while self
            .epochs
            .last()
            .and_then(|e| e.first_index)
            .is_some_and(|f| f > index)
        {
            if let Some(mut e) = self.epochs.pop() {
                e.first_index = None;
                self.prepared.push(e);
                changed = true;
            }
        }
        if changed {
            out.push(Record::Conversation(Box::new(self.record())));
        }
        for (i, p) in &later {
            out.push(Record::Envelope {
                conversation: self.id,
                index: *i,
                stored: None,
            });
            self.known.remove(&p.hash);
            let h = p.stored.envelope.header();
            if self.last_seq.get(&(h.epoch(), h.sender())) == Some(&h.sequence()) {
                self.last_seq.remove(&(h.epoch(), h.sender()));
                out.push(Record::SlotTail {
                    conversation: self.id,
                    epoch: h.epoch(),
                    slot: h.sender(),
                    last: None,
                });
            }
        }
        out.push(Record::Tail {
            conversation: self.id,
            next: self.next,
            head: self.head,
        });
        let mut iter = later.into_iter();
        if let Some((_, dropped)) = iter.next() {
            failed.push((dropped.tickets, reason.clone(), dropped.stored.submitter));
        }
        for (_, p) in iter {
            let submitter = p.stored.submitter;
            let readmit =
                self.check(submitter.as_ref(), &p.stored.envelope)
                    .and_then(|next_slots| {
                        self.admit(
                            Admission {
                                envelope: p.stored.envelope.clone(),
                                submission_tags: p.stored.submission_tags.clone(),
                                submitter,
                            },
                            next_slots,
                            servers,
                            out,
                        )
                    });
            match readmit {
                Ok(i) => {
                    if let Some(np) = self.pending.get_mut(&i) {
                        np.tickets = p.tickets;
                    }
                }
                Err(e) => {
                    failed.push((p.tickets, RouterError::NoLongerFits(Box::new(e)), submitter))
                }
            }
        }
        failed
    }
}

trait EpochNext {
    fn next_of(self, e: Epoch) -> bool;
}

impl EpochNext for Epoch {
    fn next_of(self, e: Epoch) -> bool {
        e.next() == Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn members(n: u8) -> Vec<(AccountId, SlotRole, SlotKey)> {
        (0..n)
            .map(|i| {
                (
                    AccountId::from_bytes([i; 32]),
                    if i == 0 {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    },
                    SlotSecret::from_bytes([i.wrapping_add(100); 32]).public_key(),
                )
            })
            .collect()
    }

    #[test]
    fn tiers_pick_the_smallest_that_fits() {
        let tiers = [4, 8, 16];
        assert_eq!(padded_size(1, &tiers).unwrap(), 4);
        assert_eq!(padded_size(4, &tiers).unwrap(), 4);
        assert_eq!(padded_size(5, &tiers).unwrap(), 8);
        assert!(matches!(
            padded_size(17, &tiers),
            Err(RouterError::GroupTooLarge {
                members: 17,
                largest: 16,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn slot_sets_are_padded_shuffled_and_complete(n in 1u8..20, seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let tiers = [4, 8, 16, 32];
            let m = members(n);
            let e = assign_slots(Epoch(0), m.clone(), &Placement::default(), &tiers, &mut rng).unwrap();
            prop_assert_eq!(e.slots.len(), padded_size(n as usize, &tiers).unwrap());
            prop_assert_eq!(e.holders.len(), e.slots.len());
            prop_assert_eq!(e.padding.len(), e.slots.len() - n as usize);
            for (a, role, key) in &m {
                let slot = e.slot_of(a).unwrap();
                let entry = e.slots.get(slot).unwrap();
                prop_assert_eq!(entry.key, *key);
                prop_assert_eq!(entry.role, *role);
            }
            for (slot, secret) in &e.padding {
                prop_assert!(e.holder(*slot).is_none());
                prop_assert_eq!(e.slots.get(*slot).unwrap().key, secret.slot_secret().public_key());
            }
        }
    }

    proptest! {
        /// Joiners never take a slot a current member holds, whatever the
        /// sizes, and the tier grows when the smallest one leaves no room.
        #[test]
        fn joiners_avoid_the_slots_current_members_hold(
            stay in 1u8..10, leave in 0u8..6, join in 1u8..8, seed in any::<u64>()
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let tiers = [4, 8, 16, 32];
            let all = members(stay + leave + join);
            let current: Vec<_> = all[..(stay + leave) as usize].to_vec();
            let cur = assign_slots(Epoch(0), current, &Placement::default(), &tiers, &mut rng).unwrap();
            let next: Vec<_> = all[leave as usize..].to_vec();
            let roles: Vec<_> = next.iter().map(|(a, r, _)| (*a, *r)).collect();
            let placement = Placement::after(&cur, &roles);
            prop_assert_eq!(placement.joiners.len(), join as usize);
            let e = assign_slots(Epoch(1), next, &placement, &tiers, &mut rng).unwrap();
            for j in &placement.joiners {
                let slot = e.slot_of(j).unwrap();
                prop_assert!(cur.holder(slot).is_none(), "joiner at a current member's slot {}", slot.0);
            }
        }
    }

    #[test]
    fn padding_secrets_do_not_print() {
        let s = PaddingSecret::new([7; 32]);
        assert!(!format!("{s:?}").contains("07"));
    }
}
