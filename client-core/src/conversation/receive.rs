//! Receiving: deliveries and late tags are checked, buffered (bounded)
//! until their index is next, and their attestation tags verified under
//! this member's slot keys.

use super::{Candidate, Conversation, DEFAULT_MAX_CANDIDATES, Event, Phase, Secrets, TagSet};
use crate::delivery::{Delivery, Incoming, MAX_ATTESTATIONS, Received, TagUpdate};
use crate::keyring::SlotMacKeys;
use grompi_proto::key_share::WrappedShare;
use grompi_proto::mac::{Attestation, AttestationStatement};
use grompi_proto::{ConversationId, EnvelopeKind, Epoch, Head, Index, Misbehaviour};
use std::collections::BTreeMap;

/// The key shares in `attestations`, one per server (a member is
/// delivered only the share sealed for its slot; the first counts).
pub(super) fn shares_of(attestations: &[Attestation]) -> BTreeMap<u32, WrappedShare> {
    let mut out = BTreeMap::new();
    for a in attestations {
        if let [share] = a.key_shares.as_slice() {
            out.entry(a.server).or_insert(*share);
        }
    }
    out
}

pub(super) fn bit(server: u32) -> u32 {
    1u32.checked_shl(server).unwrap_or(0)
}

/// Checks attestations for `index` in `epoch` under `keys` (a slot of this
/// member) without raising anything: returns, per head, the servers whose
/// tag verifies, and the servers whose tag does not. A Setup or an Update
/// adding this member is checked under the keys of each candidate envelope
/// before any is known to be genuine; only the winner's verdict becomes
/// alerts, so a forged candidate cannot make honest servers look bad.
pub(super) fn check_tags(
    conversation: ConversationId,
    keys: &SlotMacKeys,
    epoch: Epoch,
    index: Index,
    attestations: &[Attestation],
    set: TagSet,
) -> (BTreeMap<Head, u32>, Vec<u32>) {
    let mut heads: BTreeMap<Head, u32> = BTreeMap::new();
    let mut bad = Vec::new();
    for a in attestations {
        let server = a.server;
        let tags = match set {
            TagSet::Current => &a.tags,
            TagSet::Next => &a.next_tags,
        };
        let tag = match tags.as_slice() {
            // No tag for this member's slot in this set: nothing to check.
            [] => continue,
            [t] => t,
            _ => {
                bad.push(server);
                continue;
            }
        };
        let statement = AttestationStatement {
            conversation,
            epoch,
            index,
            head: a.head,
        };
        match keys.server(server) {
            Some(k) if a.index == index && k.verify_attestation(&statement, tag) => {
                *heads.entry(a.head).or_default() |= bit(server);
            }
            _ => bad.push(server),
        }
    }
    (heads, bad)
}

impl Conversation {
    /// Handles one message from the router: an envelope or late tags.
    pub fn receive_incoming(&mut self, incoming: Incoming, secrets: &mut Secrets) {
        match incoming {
            Incoming::Envelope(d) => self.receive(*d, secrets),
            Incoming::Tags(t) => self.receive_tags(t, secrets),
        }
    }

    /// Handles one delivery: checks it, buffers it, and accepts (and opens)
    /// every index that can now be accepted in order.
    pub fn receive(&mut self, delivery: Delivery, secrets: &mut Secrets) {
        let index = delivery.index;
        if delivery.conversation != self.id {
            self.alert(Misbehaviour::WrongContext, Some(index), None);
            return;
        }
        let received = match delivery.check() {
            Ok(r) => r,
            Err(m) => {
                self.alert(m, Some(index), None);
                return;
            }
        };
        // A member that took itself for a joiner (its first delivery was
        // not index 0) learns otherwise from a Setup.
        if self.phase == Phase::AwaitingJoin
            && index == Index(0)
            && received.delivery.header.kind() == EnvelopeKind::Setup
        {
            self.phase = Phase::AwaitingSetup;
        }
        if self.ignores(index) {
            self.counters.ignored += 1;
            return;
        }
        if self.is_accepted_range(index) {
            self.redelivered(received);
            self.retry_parked(secrets);
            return;
        }
        self.buffer_attestations(index, received.delivery.attestations.clone());
        self.buffer_candidate(received);
        self.advance(secrets);
    }

    /// Handles late tags for an index.
    pub fn receive_tags(&mut self, tags: TagUpdate, secrets: &mut Secrets) {
        let index = tags.index;
        if tags.conversation != self.id {
            self.alert(Misbehaviour::WrongContext, Some(index), None);
            return;
        }
        if self.ignores(index) {
            self.counters.ignored += 1;
            return;
        }
        if self.is_accepted_range(index) {
            self.late_tags(index, &tags.attestations, false);
            self.take_shares(index, &shares_of(&tags.attestations));
            self.retry_parked(secrets);
            return;
        }
        self.buffer_attestations(index, tags.attestations);
        self.advance(secrets);
    }

    fn ignores(&self, index: Index) -> bool {
        matches!(self.phase, Phase::Removed | Phase::Halted(_))
            || (self.phase != Phase::AwaitingJoin && index < self.transcript.first())
    }

    fn is_accepted_range(&self, index: Index) -> bool {
        self.phase != Phase::AwaitingJoin && index < self.transcript.next_index()
    }

    /// A delivery for an index already accepted: late tags, a harmless
    /// duplicate, or a rewrite.
    fn redelivered(&mut self, received: Received) {
        let index = received.delivery.index;
        let Some(entry) = self.transcript.get(index).copied() else {
            return;
        };
        let rewritten = received.envelope_hash != entry.envelope_hash;
        if rewritten {
            self.alert(Misbehaviour::RewrittenIndex { index }, Some(index), None);
        }
        self.late_tags(index, &received.delivery.attestations, rewritten);
        if !rewritten {
            self.take_shares(index, &shares_of(&received.delivery.attestations));
        }
    }

    /// Tags for an accepted index: new servers upgrade its status; a valid
    /// tag on another head is fork evidence.
    fn late_tags(&mut self, index: Index, attestations: &[Attestation], rewritten: bool) {
        let Some(entry) = self.transcript.get(index).copied() else {
            return;
        };
        let heads = self.verify(entry.epoch, index, attestations, TagSet::Current);
        let mut valid = 0;
        for (head, servers) in heads {
            if head == entry.head {
                valid |= servers;
            } else {
                self.report_conflicts(index, servers);
            }
        }
        let new = self.transcript.add_attesters(index, valid);
        if new == 0 {
            if !rewritten {
                self.counters.duplicates += 1;
            }
            return;
        }
        let before = self.config.status(entry.attested_by);
        let after = self.config.status(entry.attested_by | new);
        if before != after {
            self.event(Event::StatusChanged {
                index,
                status: after,
            });
        }
    }

    pub(super) fn report_conflicts(&mut self, index: Index, servers: u32) {
        for s in 0..32u32 {
            if servers & bit(s) != 0 {
                self.alert(
                    Misbehaviour::ConflictingHeads { index },
                    Some(index),
                    Some(s),
                );
            }
        }
    }

    /// Makes room for one more buffered item at `index`; false when the
    /// item must be dropped instead.
    fn make_room(&mut self, index: Index) -> bool {
        if self.buffered < self.config.max_buffered {
            return true;
        }
        let Some(highest) = self.pending.keys().next_back().copied() else {
            return false;
        };
        if highest <= index {
            self.counters.dropped += 1;
            return false;
        }
        if let Some(p) = self.pending.get_mut(&highest) {
            if p.unverified.pop().is_none() {
                p.candidates.pop();
            }
            if p.candidates.is_empty() && p.unverified.is_empty() {
                self.pending.remove(&highest);
            }
        }
        self.buffered = self.buffered.saturating_sub(1);
        self.counters.dropped += 1;
        true
    }

    fn buffer_attestations(&mut self, index: Index, attestations: Vec<Attestation>) {
        for a in attestations {
            let full = self
                .pending
                .get(&index)
                .is_some_and(|p| p.unverified.len() >= MAX_ATTESTATIONS);
            if full || !self.make_room(index) {
                self.counters.dropped += 1;
                continue;
            }
            let p = self.pending.entry(index).or_default();
            if let [share] = a.key_shares.as_slice() {
                p.shares.entry(a.server).or_insert(*share);
            }
            p.unverified.push(a);
            self.buffered += 1;
        }
    }

    fn buffer_candidate(&mut self, received: Received) {
        let index = received.delivery.index;
        if let Some(c) = self.pending.get_mut(&index).and_then(|p| {
            p.candidates
                .iter_mut()
                .find(|c| c.received.envelope_hash == received.envelope_hash)
        }) {
            if let Some(h) = received.delivery.previous_head
                && !c.previous_heads.contains(&h)
                && c.previous_heads.len() < DEFAULT_MAX_CANDIDATES
            {
                c.previous_heads.push(h);
            }
            return;
        }
        // The per-index bound evicts the oldest envelope for that index.
        if let Some(p) = self.pending.get_mut(&index)
            && p.candidates.len() >= self.config.max_candidates
        {
            p.candidates.remove(0);
            self.buffered = self.buffered.saturating_sub(1);
            self.counters.dropped += 1;
        }
        if !self.make_room(index) {
            return;
        }
        self.pending
            .entry(index)
            .or_default()
            .candidates
            .push(Candidate {
                previous_heads: received.delivery.previous_head.into_iter().collect(),
                received,
                setup: None,
                join: None,
                flagged: false,
            });
        self.buffered += 1;
    }

    /// Verifies attestations for `index` in `epoch` with this member's keys
    /// (its slot in `epoch`, or in the next epoch for [`TagSet::Next`]);
    /// raises an alert for every tag that does not verify; returns, per
    /// head, the servers whose tags on it verify.
    pub(super) fn verify(
        &mut self,
        epoch: Epoch,
        index: Index,
        attestations: &[Attestation],
        set: TagSet,
    ) -> BTreeMap<Head, u32> {
        let key_epoch = match set {
            TagSet::Current => Some(epoch),
            TagSet::Next => epoch.next(),
        };
        let Some(keys) = key_epoch.and_then(|e| self.keys.get(&e)) else {
            return BTreeMap::new();
        };
        let (heads, bad) = check_tags(self.id, keys, epoch, index, attestations, set);
        self.report_bad_tags(index, &bad);
        heads
    }

    pub(super) fn report_bad_tags(&mut self, index: Index, bad: &[u32]) {
        for &server in bad {
            self.alert(
                Misbehaviour::BadAttestation { server, index },
                Some(index),
                Some(server),
            );
        }
    }
}
