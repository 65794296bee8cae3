//! Conversations: epochs, the per-conversation sequencer that gives each
//! admitted envelope the next index and head, noise envelopes, and the
//! conversations' state restored after a restart. Slot sets and their
//! assignment are in [`crate::slots`] (re-exported here).
//!
//! The sequencer admits an envelope only after checking what the router can
//! check (conversation, epoch, sender slot held by the caller, kind at this
//! index, Update authorisation and prepared slot set, sequence above the last
//! one seen). What only order servers can check (submission tags) is decided
//! by their answers: if every server refuses an index for a reason that is
//! the sender's fault and none attested it, [`Conversation::drop_from`] frees
//! the index and re-admits the envelopes that followed it.

use crate::backoff::Backoff;
use crate::error::RouterError;
use crate::record::{Admitted, ConversationRecord, Record, SlotTail, StoredEnvelope};
pub use crate::slots::{EpochSlots, PaddingSecret, Placement, assign_slots, padded_size};
use crate::{Millis, Ticket};
use grompi_proto::envelope::EnvelopeSummary;
use grompi_proto::envelope::HeaderFields;
use grompi_proto::mac::Attestation;
use grompi_proto::pb::RefusalReason;
use grompi_proto::{
    AccountId, BodyHash, ConversationId, Envelope, EnvelopeHash, EnvelopeHeader, EnvelopeKind,
    Epoch, Head, Index, KeyCommitment, OrderServerKey, Sequence, SlotIndex, SlotSet, SlotSetHash,
    Tag, admission,
};
use rand::{CryptoRng, RngExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// An envelope as the router holds it for the order servers: whole until
/// a quorum has attested it and it was delivered (members get it from
/// here), then only its summary (header and block digests: all an attest
/// request and its check need). The whole envelope stays in storage, where
/// Fetch reads it.
#[derive(Debug, Clone)]
pub enum Held {
    /// Not yet delivered.
    Whole(Envelope),
    /// Delivered; waiting for the order servers that have not attested it.
    Summary(EnvelopeSummary),
}

impl Held {
    /// The header, kept in both forms.
    pub fn header(&self) -> &EnvelopeHeader {
        match self {
            Self::Whole(e) => e.header(),
            Self::Summary(s) => &s.header,
        }
    }

    /// The summary an order server is sent.
    pub fn summary(&self) -> EnvelopeSummary {
        match self {
            Self::Whole(e) => e.summary(),
            Self::Summary(s) => s.clone(),
        }
    }

    /// The whole envelope, until it was delivered.
    pub fn whole(&self) -> Option<&Envelope> {
        match self {
            Self::Whole(e) => Some(e),
            Self::Summary(_) => None,
        }
    }

    /// Bytes it holds in memory (an estimate that errs high).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Whole(e) => envelope_bytes(e),
            Self::Summary(s) => HEADER_BYTES + 32 * s.block_digests.len(),
        }
    }
}

/// What the router keeps of an admitted envelope until every order server
/// has attested it.
#[derive(Debug, Clone)]
pub struct HeldEnvelope {
    /// The envelope, whole or summarised.
    pub envelope: Held,
    /// The sender's submission tags, one per order server.
    pub submission_tags: Vec<Tag>,
    /// The head before this index.
    pub previous_head: Head,
    /// The head after it.
    pub head: Head,
    /// Who submitted it (`None` for the router's own noise).
    pub submitter: Option<AccountId>,
    /// For an Update: the slot set it installs.
    pub next_slots: Option<SlotSet>,
}

impl From<StoredEnvelope> for HeldEnvelope {
    fn from(s: StoredEnvelope) -> Self {
        Self {
            envelope: Held::Whole(s.envelope),
            submission_tags: s.submission_tags,
            previous_head: s.previous_head,
            head: s.head,
            submitter: s.submitter,
            next_slots: s.next_slots,
        }
    }
}

/// What a header takes in memory, at most (with its optional fields).
const HEADER_BYTES: usize = 256;
/// What an entry takes in memory besides its envelope, tags and
/// attestations: the map node, the vectors' headers, the hash, heads.
const ENTRY_BYTES: usize = 320;
/// What one slot of a slot set takes (key, role, padding).
const SLOT_BYTES: usize = 96;

/// Bytes a whole envelope holds in memory (an estimate that errs high):
/// what a submission of it counts against the per-account bound.
pub fn envelope_bytes(e: &Envelope) -> usize {
    HEADER_BYTES
        + e.body().len()
        + e.blocks()
            .iter()
            .map(|b| b.ciphertext.len() + 48)
            .sum::<usize>()
}

/// Bytes an attestation holds in memory.
fn attestation_bytes(a: &Attestation) -> usize {
    96 + 32 * (a.tags.len() + a.next_tags.len()) + 48 * a.key_shares.len()
}

/// An envelope admitted at an index and not yet attested by every server.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The envelope (whole until delivered) and what goes with it.
    pub stored: HeldEnvelope,
    /// The envelope hash, which a job result for this index must match (the index may be re-used).
    pub hash: EnvelopeHash,
    /// Bytes of the whole envelope, counted against its submitter's bound
    /// until it is delivered.
    pub size: usize,
    /// Per order server: its attestation, once in. Once delivered, only
    /// whether it is in: the tags and shares are in storage (Fetch) and
    /// were sent to members.
    pub attestations: Vec<Option<Attestation>>,
    /// Per order server: its latest refusal, if any.
    pub refusals: Vec<Option<(RefusalReason, String)>>,
    /// Submitters waiting for the acknowledgement.
    pub tickets: Vec<Ticket>,
    /// Whether it has been delivered to members (quorum reached).
    pub delivered: bool,
    /// Bytes it holds in memory, as last weighed.
    weight: usize,
}

impl Pending {
    /// An entry for `stored`, not yet attested, weighed.
    fn new(
        stored: HeldEnvelope,
        hash: EnvelopeHash,
        attestations: Vec<Option<Attestation>>,
    ) -> Self {
        let size = stored.envelope.bytes();
        let servers = attestations.len();
        let mut p = Self {
            stored,
            hash,
            size,
            attestations,
            refusals: vec![None; servers],
            tickets: Vec::new(),
            delivered: false,
            weight: 0,
        };
        p.weight = p.weigh();
        p
    }

    /// Number of attestations in.
    pub fn attested(&self) -> usize {
        self.attestations.iter().filter(|a| a.is_some()).count()
    }

    /// Bytes it holds in memory (an estimate that errs high).
    fn weigh(&self) -> usize {
        ENTRY_BYTES
            + self.stored.envelope.bytes()
            + 32 * self.stored.submission_tags.len()
            + self
                .stored
                .next_slots
                .as_ref()
                .map_or(0, |s| SLOT_BYTES * s.len())
            + self
                .attestations
                .iter()
                .flatten()
                .map(attestation_bytes)
                .sum::<usize>()
            + self
                .refusals
                .iter()
                .flatten()
                .map(|(_, m)| 32 + m.len())
                .sum::<usize>()
    }

    /// Once delivered, keeps only what the order servers still need: the
    /// summary, and which servers attested.
    fn compact(&mut self) {
        if !self.delivered {
            return;
        }
        if let Held::Whole(e) = &self.stored.envelope {
            self.stored.envelope = Held::Summary(e.summary());
        }
        for a in self.attestations.iter_mut().flatten() {
            a.tags = Vec::new();
            a.next_tags = Vec::new();
            a.key_shares = Vec::new();
        }
    }
}

/// What an admitted envelope needs beyond its own content.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The envelope, which [`Conversation::check`] passed.
    pub envelope: Envelope,
    /// One submission tag per order server.
    pub submission_tags: Vec<Tag>,
    /// Submitter (`None` for noise).
    pub submitter: Option<AccountId>,
}

/// One conversation's state.
#[derive(Debug)]
pub struct Conversation {
    /// Chosen by the creator; the head chain starts from its genesis head.
    id: ConversationId,
    /// The creating account: a retry of its create is answered with the same assignment.
    creator: AccountId,
    /// Installed epochs (epoch n at position n).
    epochs: Vec<EpochSlots>,
    /// Prepared epochs not yet installed.
    prepared: Vec<EpochSlots>,
    /// Per order server: opened there.
    pub opened: Vec<bool>,
    /// The next index to assign.
    next: Index,
    /// The head before `next`.
    head: Head,
    /// Envelopes not yet attested by every server, by index. Entries are
    /// added and removed only through the conversation's methods, which
    /// keep `held_bytes`; after changing one in place, call
    /// [`Conversation::reweigh`].
    pub pending: BTreeMap<Index, Pending>,
    /// Bytes `pending` holds in memory.
    held_bytes: usize,
    /// What the core last counted of `held_bytes` in its total.
    pub(crate) counted_bytes: usize,
    /// Per order server: how many indices it has attested.
    pub progress: Vec<Index>,
    /// How many indices have been delivered (reached the quorum).
    pub delivered: Index,
    /// The first index whose envelope is still stored: the retention
    /// setting removed every envelope below it (0: none removed).
    first_stored: Index,
    /// The last envelope admitted per (epoch, slot): its sequence (early
    /// replay refusal), index and hash (its resubmission is recognised).
    /// One entry per slot that ever sent.
    last_seq: HashMap<(Epoch, SlotIndex), SlotTail>,
    /// The envelopes in `pending`, by hash: a resubmission of one is
    /// idempotent. An entry goes when its envelope leaves memory, so this
    /// holds no more than `pending`; older envelopes are recognised from
    /// storage ([`Conversation::sent_before`]).
    known: HashMap<EnvelopeHash, Index>,
    /// Per order server: retry state for this conversation.
    pub backoff: Vec<Backoff>,
    /// CreateConversation callers waiting for a quorum of opens.
    pub create_tickets: Vec<Ticket>,
    /// When the next noise envelope is due.
    pub next_noise: Millis,
    /// When a member last submitted (0 after a restart until one does):
    /// noise stops once this is `noise_idle_ms` old.
    pub last_submission: Millis,
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
            held_bytes: 0,
            counted_bytes: 0,
            progress: vec![Index(0); servers],
            delivered: Index(0),
            first_stored: Index(0),
            last_seq: HashMap::new(),
            known: HashMap::new(),
            backoff: vec![Backoff::default(); servers],
            create_tickets: Vec::new(),
            next_noise: 0,
            last_submission: 0,
        }
    }

    /// The id the creator chose; never reused for another conversation.
    pub fn id(&self) -> ConversationId {
        self.id
    }

    /// The account that created it (counted against its `max_conversations_per_account`).
    pub fn creator(&self) -> AccountId {
        self.creator
    }

    /// Installed epochs (epoch n at position n).
    pub fn epochs(&self) -> &[EpochSlots] {
        &self.epochs
    }

    /// Prepared epochs not yet installed.
    pub fn prepared(&self) -> &[EpochSlots] {
        &self.prepared
    }

    /// The next index to assign.
    pub fn next(&self) -> Index {
        self.next
    }

    /// The head before [`Conversation::next`].
    pub fn head(&self) -> Head {
        self.head
    }

    /// The first index whose envelope is still stored (0 until the
    /// retention setting removes one): Fetch and FetchHistory start there.
    pub fn first_stored(&self) -> Index {
        self.first_stored
    }

    /// Restores the first index still stored, from the store (after a
    /// restart).
    pub(crate) fn restore_first_stored(&mut self, first: Index) {
        self.first_stored = first;
    }

    /// Where the retention setting may remove envelopes up to (exclusive)
    /// when it keeps the last `keep` indices (0: every index, for ever):
    /// `delivered - keep`, but never an index some order server has not
    /// attested (its progress) nor one not delivered. With no order server
    /// (relay-only) every delivered index is attested by all of them.
    pub fn retention_bound(&self, keep: u64) -> Index {
        if keep == 0 {
            return Index(0);
        }
        let attested = self
            .progress
            .iter()
            .copied()
            .min()
            .unwrap_or(self.delivered);
        Index(
            self.delivered
                .0
                .saturating_sub(keep)
                .min(attested.0)
                .min(self.delivered.0),
        )
    }

    /// Removes, durably through `out`, the envelopes and their
    /// attestations (one row per order server of `servers`) from the first
    /// stored index up to [`Conversation::retention_bound`], at most
    /// `budget` indices at a time, and records the new first stored index.
    /// Returns how many indices it removed. Memory holds none of them: an
    /// envelope leaves memory once every server has attested it, which the
    /// bound requires.
    pub fn prune(&mut self, keep: u64, servers: usize, budget: u64, out: &mut Vec<Record>) -> u64 {
        let bound = self.retention_bound(keep);
        let first = self.first_stored;
        if bound <= first || budget == 0 {
            return 0;
        }
        let until = Index(bound.0.min(first.0.saturating_add(budget)));
        for i in first.0..until.0 {
            let index = Index(i);
            out.push(Record::EnvelopeRemoved {
                conversation: self.id,
                index,
            });
            for server in 0..servers {
                out.push(Record::AttestationRemoved {
                    conversation: self.id,
                    index,
                    server: u32::try_from(server).unwrap_or(u32::MAX),
                });
            }
        }
        out.push(Record::FirstStored {
            conversation: self.id,
            first: until,
        });
        self.first_stored = until;
        until.0 - first.0
    }

    /// Bytes its envelopes waiting for order servers hold in memory.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Weighs the entry at `index` again after a change (an attestation or
    /// refusal in, delivered), first reducing a delivered one to what the
    /// order servers still need.
    pub fn reweigh(&mut self, index: Index) {
        if let Some(p) = self.pending.get_mut(&index) {
            p.compact();
            let w = p.weigh();
            self.held_bytes = self.held_bytes.saturating_sub(p.weight) + w;
            p.weight = w;
        }
    }

    /// Checks the weights kept against weighing every entry again, and
    /// that only delivered entries are summarised (tests).
    #[cfg(test)]
    pub(crate) fn audit_held(&self) -> Result<(), String> {
        let sum: usize = self.pending.values().map(Pending::weigh).sum();
        if sum != self.held_bytes {
            return Err(format!(
                "held_bytes {} but the entries weigh {sum}",
                self.held_bytes
            ));
        }
        for (i, p) in &self.pending {
            if p.weight != p.weigh() {
                return Err(format!(
                    "index {}: weight {} but weighs {}",
                    i.0,
                    p.weight,
                    p.weigh()
                ));
            }
            if p.delivered == p.stored.envelope.whole().is_some() {
                return Err(format!(
                    "index {}: delivered {} but whole {}",
                    i.0, p.delivered, !p.delivered
                ));
            }
        }
        Ok(())
    }

    fn insert_pending(&mut self, index: Index, p: Pending) {
        self.held_bytes += p.weight;
        if let Some(old) = self.pending.insert(index, p) {
            self.held_bytes = self.held_bytes.saturating_sub(old.weight);
        }
    }

    fn remove_pending(&mut self, index: &Index) -> Option<Pending> {
        let p = self.pending.remove(index)?;
        self.held_bytes = self.held_bytes.saturating_sub(p.weight);
        Some(p)
    }

    /// Forgets the delivered envelopes that all `servers` order servers
    /// have attested, and their hashes.
    pub fn forget_attested(&mut self, servers: usize) {
        let delivered = self.delivered;
        let mut freed = 0;
        let known = &mut self.known;
        self.pending.retain(|i, p| {
            let keep = !(*i < delivered && p.attested() == servers);
            if !keep {
                freed += p.weight;
                known.remove(&p.hash);
            }
            keep
        });
        self.held_bytes = self.held_bytes.saturating_sub(freed);
    }

    /// The index of an envelope still in memory (in `pending`).
    pub fn index_of(&self, hash: &EnvelopeHash) -> Option<Index> {
        self.known.get(hash).copied()
    }

    /// How many envelope hashes the conversation remembers (tests: no
    /// more than it holds in `pending`).
    #[cfg(test)]
    pub(crate) fn known_len(&self) -> usize {
        self.known.len()
    }

    /// Whether `envelope`, not in memory, may be one `account` sent
    /// before: `account` holds its sender slot in its epoch and its
    /// sequence is not above the last one admitted from that slot. Returns
    /// that slot's last envelope, which decides at once when the sequence
    /// is the last one; an older sequence is looked up in storage
    /// ([`Record::SlotSequence`]). `None`: the envelope is checked as a new
    /// one.
    pub fn sent_before(&self, account: &AccountId, envelope: &Envelope) -> Option<SlotTail> {
        let h = envelope.header();
        let holder = self.epoch(h.epoch()).and_then(|e| e.holder(h.sender()));
        if holder != Some(*account) {
            return None;
        }
        self.last_seq
            .get(&(h.epoch(), h.sender()))
            .copied()
            .filter(|last| h.sequence() <= last.sequence)
    }

    /// Keeps a slot set prepared for the next epoch, with a few
    /// alternatives: those for another epoch go, and the oldest go first.
    pub fn keep_prepared(&mut self, slots: EpochSlots) {
        self.prepared.retain(|p| p.epoch == slots.epoch);
        if self.prepared.len() >= 8 {
            self.prepared.remove(0);
        }
        self.prepared.push(slots);
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
        let last = self
            .last_seq
            .get(&(h.epoch(), h.sender()))
            .map(|t| t.sequence);
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
        let tail = SlotTail {
            sequence: h.sequence(),
            index,
            hash,
        };
        if a.submitter.is_some() {
            // Outlive the envelope's time in memory: a resubmission after
            // every server attested it and it left memory (or the router
            // restarted) is still recognised, and a different envelope
            // with its sequence refused.
            out.push(Record::SlotTail {
                conversation: self.id,
                epoch: h.epoch(),
                slot: h.sender(),
                last: Some(tail),
            });
            out.push(Record::SlotSequence {
                conversation: self.id,
                epoch: h.epoch(),
                slot: h.sender(),
                sequence: h.sequence(),
                admitted: Some(Admitted { index, hash }),
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
        self.insert_pending(
            index,
            Pending::new(stored.into(), hash, vec![None; servers]),
        );
        self.last_seq.insert((h.epoch(), h.sender()), tail);
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
    ) -> Vec<Failed> {
        let mut failed = Vec::new();
        let later: Vec<(Index, Pending)> = {
            let keys: Vec<Index> = self.pending.range(index..).map(|(i, _)| *i).collect();
            keys.into_iter()
                .filter_map(|i| self.remove_pending(&i).map(|p| (i, p)))
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
            if p.stored.submitter.is_some() {
                out.push(Record::SlotSequence {
                    conversation: self.id,
                    epoch: h.epoch(),
                    slot: h.sender(),
                    sequence: h.sequence(),
                    admitted: None,
                });
            }
            if self
                .last_seq
                .get(&(h.epoch(), h.sender()))
                .is_some_and(|t| t.sequence == h.sequence())
            {
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
            failed.push(Failed {
                tickets: dropped.tickets,
                error: reason.clone(),
                submitter: dropped.stored.submitter,
                size: dropped.size,
            });
        }
        for (_, p) in iter {
            let submitter = p.stored.submitter;
            // What follows an index no server attested was never
            // delivered, so it is still whole.
            let readmit = match p.stored.envelope.whole() {
                Some(envelope) => self
                    .check(submitter.as_ref(), envelope)
                    .and_then(|next_slots| {
                        self.admit(
                            Admission {
                                envelope: envelope.clone(),
                                submission_tags: p.stored.submission_tags.clone(),
                                submitter,
                            },
                            next_slots,
                            servers,
                            out,
                        )
                    }),
                None => Err(RouterError::EnvelopeNotHeld),
            };
            match readmit {
                Ok(i) => {
                    if let Some(np) = self.pending.get_mut(&i) {
                        np.tickets = p.tickets;
                    }
                }
                Err(e) => failed.push(Failed {
                    tickets: p.tickets,
                    error: RouterError::NoLongerFits(Box::new(e)),
                    submitter,
                    size: p.size,
                }),
            }
        }
        failed
    }
}

/// A submission [`Conversation::drop_from`] failed.
#[derive(Debug)]
pub struct Failed {
    /// Its waiters.
    pub tickets: Vec<Ticket>,
    /// Why.
    pub error: RouterError,
    /// Who submitted it (`None` for noise): its waiting count and bytes go down by this one.
    pub submitter: Option<AccountId>,
    /// Its bytes, as counted against the submitter ([`Pending::size`]).
    pub size: usize,
}

/// Records `id` under every account holding a slot of `epoch`.
pub(crate) fn index_holders(
    index: &mut HashMap<AccountId, BTreeSet<ConversationId>>,
    id: ConversationId,
    epoch: &EpochSlots,
) {
    for a in epoch.holders.iter().flatten() {
        index.entry(*a).or_default().insert(id);
    }
}

/// The per-account index of conversations, rebuilt from their epochs
/// (installed and prepared) after a restart.
pub(crate) fn member_index<'a>(
    conversations: impl Iterator<Item = &'a Conversation>,
) -> HashMap<AccountId, BTreeSet<ConversationId>> {
    let mut index = HashMap::new();
    for c in conversations {
        for e in c.epochs.iter().chain(c.prepared.iter()) {
            index_holders(&mut index, c.id, e);
        }
    }
    index
}

/// One account's envelopes waiting for a quorum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// How many.
    pub count: usize,
    /// Their bytes ([`Pending::size`]).
    pub bytes: usize,
}

/// The conversations of a store snapshot as they were before the restart
/// (`servers` order servers, `quorum` of them needed for delivery), and per
/// submitter its envelopes that still wait for a quorum. Envelopes already
/// delivered and waiting for lagging servers are kept as summaries.
pub(crate) fn restore_all(
    records: Vec<ConversationRecord>,
    tails: Vec<(ConversationId, Index, Head)>,
    progress: Vec<(ConversationId, u32, Index)>,
    envelopes: Vec<(ConversationId, Index, StoredEnvelope, Vec<Attestation>)>,
    slot_tails: Vec<(ConversationId, Epoch, SlotIndex, SlotTail)>,
    servers: usize,
    quorum: usize,
) -> (
    HashMap<ConversationId, Conversation>,
    HashMap<AccountId, Waiting>,
) {
    let n = servers;
    let mut conversations: HashMap<ConversationId, Conversation> = records
        .into_iter()
        .map(|r| (r.id, Conversation::from_record(r, n)))
        .collect();
    for (c, next, head) in tails {
        if let Some(conv) = conversations.get_mut(&c) {
            conv.next = next;
            conv.head = head;
        }
    }
    for (c, server, next) in progress {
        if let Some(p) = conversations
            .get_mut(&c)
            .and_then(|conv| conv.progress.get_mut(server as usize))
        {
            *p = next;
        }
    }
    let mut pending_per_account: HashMap<AccountId, Waiting> = HashMap::new();
    for (c, index, stored, atts) in envelopes {
        let Some(conv) = conversations.get_mut(&c) else {
            continue;
        };
        let mut attestations = vec![None; n];
        for a in atts {
            if let Some(slot) = attestations.get_mut(a.server as usize) {
                *slot = Some(a);
            }
        }
        let hash = stored.envelope.hash();
        let h = stored.envelope.header();
        let tail = SlotTail {
            sequence: h.sequence(),
            index,
            hash,
        };
        conv.last_seq
            .entry((h.epoch(), h.sender()))
            .and_modify(|t| {
                if tail.sequence > t.sequence {
                    *t = tail;
                }
            })
            .or_insert(tail);
        conv.known.insert(hash, index);
        conv.insert_pending(index, Pending::new(stored.into(), hash, attestations));
    }
    // The last envelope of every sender slot, also once it left memory:
    // its resubmission is answered, not admitted again (older ones are
    // looked up in storage).
    for (c, epoch, slot, tail) in slot_tails {
        if let Some(conv) = conversations.get_mut(&c) {
            conv.last_seq
                .entry((epoch, slot))
                .and_modify(|t| {
                    if tail.sequence > t.sequence {
                        *t = tail;
                    }
                })
                .or_insert(tail);
        }
    }
    for conv in conversations.values_mut() {
        conv.delivered = conv.quorate(quorum);
        let delivered = conv.delivered;
        let mut was_delivered = Vec::new();
        for (i, p) in conv.pending.iter_mut() {
            if *i < delivered {
                p.delivered = true;
                was_delivered.push(*i);
            } else if let Some(a) = p.stored.submitter {
                let w = pending_per_account.entry(a).or_default();
                w.count += 1;
                w.bytes += p.size;
            }
        }
        conv.forget_attested(n);
        // What waits only for lagging servers is kept as a summary.
        for i in was_delivered {
            conv.reweigh(i);
        }
    }
    (conversations, pending_per_account)
}

/// A noise envelope from a random padding slot of the tail epoch, with the
/// submission tags the router computes with that slot's secret.
pub(crate) fn noise_envelope(
    conv: &Conversation,
    now: Millis,
    servers: &[OrderServerKey],
    rng: &mut impl CryptoRng,
) -> Option<Admission> {
    let tail = conv.tail_epoch()?;
    if tail.padding.is_empty() {
        return None;
    }
    let pick = rng.random_range(0..tail.padding.len());
    let (slot, secret) = tail.padding.get(pick)?;
    let last = conv
        .last_seq
        .get(&(tail.epoch, *slot))
        .map_or(0, |t| t.sequence.0);
    // Time-based sequences stay increasing across restarts.
    let sequence = Sequence(last.saturating_add(1).max(now));
    let mut commitment = [0u8; 32];
    rng.fill_bytes(&mut commitment);
    let body = Vec::new();
    let header = EnvelopeHeader::new(HeaderFields {
        conversation: conv.id,
        epoch: tail.epoch,
        kind: EnvelopeKind::Noise,
        sender: *slot,
        sequence,
        last_seen: conv.delivered.0.checked_sub(1).map(Index),
        body_hash: BodyHash::of(&body),
        key_commitment: KeyCommitment::from_bytes(commitment),
        slot_set_hash: None,
    })
    .ok()?;
    let envelope = Envelope::new(header, body, Vec::new()).ok()?;
    let hash = envelope.hash();
    let slot_secret = secret.slot_secret();
    let tags = servers
        .iter()
        .map(|k| {
            slot_secret
                .mac_keys(k)
                .map(|m| m.submit(&hash, sequence))
                .ok()
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Admission {
        envelope,
        submission_tags: tags,
        submitter: None,
    })
}

trait EpochNext {
    fn next_of(self, e: Epoch) -> bool;
}

impl EpochNext for Epoch {
    fn next_of(self, e: Epoch) -> bool {
        e.next() == Some(self)
    }
}
