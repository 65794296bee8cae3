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
use crate::record::{ConversationRecord, Record, SlotTail, StoredEnvelope};
pub use crate::slots::{EpochSlots, PaddingSecret, Placement, assign_slots, padded_size};
use crate::{Millis, Ticket};
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
    id: ConversationId,
    /// Its creator.
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
    /// Envelopes not yet attested by every server, by index.
    pub pending: BTreeMap<Index, Pending>,
    /// Per order server: how many indices it has attested.
    pub progress: Vec<Index>,
    /// How many indices have been delivered (reached the quorum).
    pub delivered: Index,
    /// Last sequence admitted per (epoch, slot): early replay refusal.
    last_seq: HashMap<(Epoch, SlotIndex), Sequence>,
    /// Envelopes admitted since start, by hash: resubmission is idempotent.
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
            progress: vec![Index(0); servers],
            delivered: Index(0),
            last_seq: HashMap::new(),
            known: HashMap::new(),
            backoff: vec![Backoff::default(); servers],
            create_tickets: Vec::new(),
            next_noise: 0,
            last_submission: 0,
        }
    }

    /// Its id.
    pub fn id(&self) -> ConversationId {
        self.id
    }

    /// Its creator.
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

    /// The index of an envelope admitted since start.
    pub fn index_of(&self, hash: &EnvelopeHash) -> Option<Index> {
        self.known.get(hash).copied()
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

/// The conversations of a store snapshot as they were before the restart
/// (`servers` order servers, `quorum` of them needed for delivery), and per
/// submitter how many of its envelopes still wait for a quorum.
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
    HashMap<AccountId, usize>,
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
    let mut pending_per_account: HashMap<AccountId, usize> = HashMap::new();
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
        conv.last_seq.insert((h.epoch(), h.sender()), h.sequence());
        conv.known.insert(hash, index);
        conv.pending.insert(
            index,
            Pending {
                stored,
                hash,
                attestations,
                refusals: vec![None; n],
                tickets: Vec::new(),
                delivered: false,
            },
        );
    }
    // The last envelope of every sender slot, also once it left memory:
    // its resubmission is answered, not admitted again.
    for (c, epoch, slot, tail) in slot_tails {
        if let Some(conv) = conversations.get_mut(&c) {
            let last = conv.last_seq.entry((epoch, slot)).or_insert(tail.sequence);
            *last = (*last).max(tail.sequence);
            conv.known.insert(tail.hash, tail.index);
        }
    }
    for conv in conversations.values_mut() {
        conv.delivered = conv.quorate(quorum);
        let delivered = conv.delivered;
        for (i, p) in conv.pending.iter_mut() {
            if *i < delivered {
                p.delivered = true;
            } else if let Some(a) = p.stored.submitter {
                *pending_per_account.entry(a).or_default() += 1;
            }
        }
        conv.pending
            .retain(|i, p| !(*i < delivered && p.attested() == n));
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
    let last = conv.last_seq.get(&(tail.epoch, *slot)).map_or(0, |s| s.0);
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
