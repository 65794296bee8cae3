//! Acceptance: the next index is taken when a quorum tagged the head an
//! envelope chains to (the Setup under each candidate's own keys), losers
//! and unattested envelopes are reported, and the accepted index is
//! opened and applied; stalls are reported.

use super::receive::{bit, check_tags};
use super::{Candidate, Conversation, Event, Opened, PendingIndex, Phase, Secrets, TagSet};
use crate::content::Content;
use crate::membership::Membership;
use crate::receipt::{self, ReceiptCheck};
use crate::transcript::Entry;
use grompi_proto::{
    EnvelopeKind, Epoch, Head, Index, Misbehaviour, Sequence, WireError, admission,
};

/// The sender's causal context as shown: `None` when the header claims an
/// index at or after the envelope's own (impossible; reported on
/// acceptance).
pub(super) fn causal_context(index: Index, header: &grompi_proto::EnvelopeHeader) -> Option<Index> {
    header.last_seen().filter(|l| *l < index)
}

impl Conversation {
    /// Accepts every index that can be accepted now, in order.
    pub(super) fn advance(&mut self, secrets: &mut Secrets) {
        if self.phase == Phase::AwaitingJoin {
            self.try_join(secrets);
        }
        loop {
            if !matches!(self.phase, Phase::AwaitingSetup | Phase::Active) {
                return;
            }
            let index = self.transcript.next_index();
            let Some(mut p) = self.pending.remove(&index) else {
                return;
            };
            self.buffered = self
                .buffered
                .saturating_sub(p.candidates.len() + p.unverified.len());
            let candidates = std::mem::take(&mut p.candidates);
            for mut c in candidates {
                if self.admissible(&mut c, secrets) {
                    p.candidates.push(c);
                }
            }
            let last = self.transcript.head();
            let (epoch, winner) = if self.phase == Phase::AwaitingSetup {
                (Epoch(0), self.setup_winner(&mut p, index, last, secrets))
            } else {
                let epoch = self.membership.as_ref().map_or(Epoch(0), Membership::epoch);
                // Tags can arrive before the envelope that gives this member
                // its keys (a tag update overtaking the delivery); they wait.
                if self.keys.contains_key(&epoch) {
                    let fresh = std::mem::take(&mut p.unverified);
                    for (head, servers) in self.verify(epoch, index, &fresh, TagSet::Current) {
                        *p.heads.entry(head).or_default() |= servers;
                    }
                }
                let winner = p.candidates.iter().position(|c| {
                    let head = last.next(&self.id, epoch, index, &c.received.envelope_hash);
                    p.heads.get(&head).is_some_and(|s| self.quorate(*s))
                });
                (epoch, winner)
            };
            // A server with valid tags on two heads at one index equivocated.
            let mut seen = 0u32;
            let mut twice = 0u32;
            for servers in p.heads.values() {
                twice |= seen & servers;
                seen |= servers;
            }
            let new_conflicts = twice & !p.reported;
            p.reported |= twice;
            self.report_conflicts(index, new_conflicts);
            let Some(w) = winner else {
                self.flag_unattested(&mut p, index);
                self.buffered += p.candidates.len() + p.unverified.len();
                if !p.candidates.is_empty() || !p.heads.is_empty() || !p.unverified.is_empty() {
                    self.pending.insert(index, p);
                }
                return;
            };
            let c = p.candidates.swap_remove(w);
            let head = last.next(&self.id, epoch, index, &c.received.envelope_hash);
            let attested_by = p.heads.get(&head).copied().unwrap_or(0);
            self.report_losers(index, &p, head, &c.received.envelope_hash);
            let kind = c.received.delivery.header.kind();
            self.accept(c, head, attested_by, secrets);
            self.note_share_point(index, kind);
            self.take_shares(index, &p.shares);
            self.retry_parked(secrets);
        }
    }

    /// Once `winner` is taken at `index` on `head`: valid tags on any other
    /// head are fork evidence, and any other envelope delivered for the
    /// index was not the one the order servers attested.
    pub(super) fn report_losers(
        &mut self,
        index: Index,
        p: &PendingIndex,
        head: Head,
        winner: &grompi_proto::EnvelopeHash,
    ) {
        let others = p
            .heads
            .iter()
            .filter(|(h, _)| **h != head)
            .fold(0u32, |acc, (_, s)| acc | s)
            & !p.reported;
        self.report_conflicts(index, others);
        if p.candidates
            .iter()
            .any(|o| !o.flagged && o.received.envelope_hash != *winner)
        {
            self.alert(
                Misbehaviour::UnattestedEnvelope { index },
                Some(index),
                None,
            );
        }
    }

    fn quorate(&self, servers: u32) -> bool {
        servers.count_ones() as usize >= self.config.quorum
    }

    /// Enough servers attested a head for `index`, yet no envelope
    /// delivered for it chains to that head: each such envelope is reported
    /// (once) as not the attested one.
    fn flag_unattested(&mut self, p: &mut PendingIndex, index: Index) {
        if !p.heads.values().any(|s| self.quorate(*s)) {
            return;
        }
        let mut fresh = false;
        for c in &mut p.candidates {
            fresh |= !c.flagged;
            c.flagged = true;
        }
        if fresh {
            self.alert(
                Misbehaviour::UnattestedEnvelope { index },
                Some(index),
                None,
            );
        }
    }

    /// In the Setup phase each candidate Setup names this member's slot, so
    /// the tags are checked under each candidate's own keys; the first
    /// candidate whose head a quorum tagged under its keys wins, and only
    /// then do the tags that fail under the winner's keys become alerts. A
    /// forged Setup (from a router's puppet, assigning another of this
    /// member's keys) therefore neither pins a wrong key nor blames honest
    /// servers.
    fn setup_winner(
        &mut self,
        p: &mut PendingIndex,
        index: Index,
        last: Head,
        secrets: &Secrets,
    ) -> Option<usize> {
        let mut found = None;
        for (pos, c) in p.candidates.iter().enumerate() {
            let Some(prep) = &c.setup else { continue };
            // A key another conversation used meanwhile is not ours to use.
            if !secrets.order_keys.contains(&prep.keys.slot_key()) {
                continue;
            }
            let head = last.next(&self.id, Epoch(0), index, &c.received.envelope_hash);
            let (heads, bad) = check_tags(
                self.id,
                &prep.keys,
                Epoch(0),
                index,
                &p.unverified,
                TagSet::Current,
            );
            if heads.get(&head).is_some_and(|s| self.quorate(*s)) {
                found = Some((pos, heads, bad));
                break;
            }
        }
        let (pos, heads, bad) = found?;
        p.unverified.clear();
        p.heads = heads;
        let fresh: Vec<u32> = bad
            .into_iter()
            .filter(|s| p.blamed & bit(*s) == 0)
            .collect();
        self.report_bad_tags(index, &fresh);
        Some(pos)
    }

    /// After a stall in the Setup phase: the candidate Setup whose head the
    /// most servers tagged under its own keys is the best evidence of which
    /// slot is this member's, so tags that fail under its keys are reported
    /// (once per server). Without this a server forging its tag at t = N
    /// would stop the conversation unnamed. A candidate no server tagged
    /// (a forged Setup) blames nobody.
    fn blame_setup_tags(&mut self) {
        let index = Index(0);
        let Some(mut p) = self.pending.remove(&index) else {
            return;
        };
        let genesis = Head::genesis(&self.id);
        let best = p
            .candidates
            .iter()
            .filter_map(|c| {
                let prep = c.setup.as_ref()?;
                let head = genesis.next(&self.id, Epoch(0), index, &c.received.envelope_hash);
                let (heads, bad) = check_tags(
                    self.id,
                    &prep.keys,
                    Epoch(0),
                    index,
                    &p.unverified,
                    TagSet::Current,
                );
                let good = heads.get(&head).copied().unwrap_or(0);
                (good != 0).then_some((good.count_ones(), bad))
            })
            .max_by_key(|(n, _)| *n);
        if let Some((_, bad)) = best {
            let mut fresh = Vec::new();
            for s in bad {
                if p.blamed & bit(s) == 0 {
                    p.blamed |= bit(s);
                    fresh.push(s);
                }
            }
            self.report_bad_tags(index, &fresh);
        }
        self.pending.insert(index, p);
    }

    /// Whether a candidate for the next index may be accepted at all (kind
    /// and epoch); prepares a Setup.
    fn admissible(&mut self, c: &mut Candidate, secrets: &mut Secrets) -> bool {
        let index = c.received.delivery.index;
        let header = &c.received.delivery.header;
        match self.phase {
            // The candidate is for index 0, the transcript's next.
            Phase::AwaitingSetup => {
                if let Err(m) = admission::kind_at(header, index) {
                    self.alert(m, Some(index), None);
                    return false;
                }
                if c.setup.is_none() {
                    match self.prepare_setup(&c.received, secrets) {
                        Ok(p) => c.setup = Some(p),
                        Err(m) => {
                            self.alert(m, Some(index), None);
                            return false;
                        }
                    }
                }
                true
            }
            // The candidate is for an index after 0: the only kind refused
            // there is a Setup, and an envelope of another epoch is not
            // one this member can place.
            Phase::Active => {
                let alert = if admission::kind_at(header, index).is_err() {
                    Misbehaviour::UnexpectedKind("a Setup after index 0")
                } else if self
                    .membership
                    .as_ref()
                    .is_none_or(|m| admission::epoch(header, m.epoch()).is_err())
                {
                    Misbehaviour::WrongContext
                } else {
                    return true;
                };
                self.alert(alert, Some(index), None);
                false
            }
            _ => false,
        }
    }

    /// Appends an index that reached the quorum, then opens and applies it.
    fn accept(&mut self, c: Candidate, head: Head, attested_by: u32, secrets: &mut Secrets) {
        let index = c.received.delivery.index;
        let header = c.received.delivery.header.clone();
        let entry = Entry {
            index,
            epoch: header.epoch(),
            envelope_hash: c.received.envelope_hash,
            head,
            attested_by,
        };
        if !self.transcript.append(entry) {
            // Unreachable by construction: the head was computed from the
            // transcript's own last head at its next index.
            self.phase = Phase::Halted("internal: an accepted index did not chain");
            return;
        }
        let holders = c
            .setup
            .as_ref()
            .map(|p| &p.membership)
            .or(self.membership.as_ref());
        let sender = holders.and_then(|m| m.holder(header.sender()));
        if header.last_seen().is_some_and(|l| l >= index) {
            // A sender can only have seen indices before its own.
            self.alert(
                Misbehaviour::Malformed(WireError::Invalid {
                    field: "header.last_seen_index",
                    reason: "at or after the index the envelope was accepted at",
                }),
                Some(index),
                None,
            );
        }
        self.event(Event::Accepted {
            index,
            kind: header.kind(),
            status: self.config.status(attested_by),
            last_seen: causal_context(index, &header),
            sender,
        });
        self.check_sequence(index, &header);
        let history_block = c.received.delivery.history_block.clone();
        let before = self.history_before(header.kind());
        let own = self.outbox.contains_key(&header.core_hash());
        if let Some(prep) = c.setup {
            // Checked free when the Setup won (`setup_winner`).
            secrets.order_keys.remove(&prep.keys.slot_key());
            self.keys.insert(Epoch(0), prep.keys);
            self.membership = Some(prep.membership);
            self.prepared.clear();
            self.early_blocks.clear();
            self.candidate_peers.clear();
            self.phase = Phase::Active;
            self.outbox.remove(&header.core_hash());
            self.sent_rn1.remove(&header.core_hash());
            self.start_group_epoch(index, &header, prep.rn1);
            self.set_history(prep.history);
            if !own {
                self.check_history_block(index, &header, history_block.as_deref(), before);
            }
            self.event(Event::MembershipChanged {
                index,
                epoch: Epoch(0),
                change: None,
                authorized: true,
                vouched_by: None,
            });
            return;
        }
        let membership = self.membership.clone();
        // A group-keyed Message or Receipt from another member: no block,
        // the body is sealed under its sender chain's key (it may wait for
        // a share still on its way).
        let group_keyed = matches!(header.key(), grompi_proto::HeaderKey::Id(_))
            || (self.group.is_some() && header.kind().uses_group_key());
        if group_keyed && !self.outbox.contains_key(&header.core_hash()) {
            let holder = membership.as_ref().and_then(|m| m.holder(header.sender()));
            let result = if holder.is_none() || holder == Some(self.me) {
                Err(Misbehaviour::UnauthenticatedSender { index })
            } else {
                self.group_open(index, &header, &c.received.delivery.body, holder)
            };
            match result {
                Ok(super::group::GroupOpen::Opened(o)) => self.apply(index, &header, o, secrets),
                Ok(super::group::GroupOpen::Parked) => {}
                Err(m) => {
                    self.alert(m, Some(index), None);
                    self.undecryptable.insert(index);
                }
            }
            self.check_history_block(index, &header, history_block.as_deref(), before);
            return;
        }
        let opened = self.open(&c.received, membership.as_ref(), secrets);
        match (opened, header.kind()) {
            (Err(m), kind) => {
                self.alert(m, Some(index), None);
                self.undecryptable.insert(index);
                if kind == EnvelopeKind::Update {
                    self.phase = Phase::Halted("an Update could not be opened");
                }
            }
            (Ok(o), _) => {
                self.apply(index, &header, o, secrets);
                if !own && self.phase == Phase::Active {
                    self.check_history_block(index, &header, history_block.as_deref(), before);
                }
            }
        }
    }

    fn check_sequence(&mut self, index: Index, header: &grompi_proto::EnvelopeHeader) {
        let key = (header.epoch(), header.sender());
        let last = self.last_sequences.get(&key).copied();
        match admission::sequence(header, last) {
            Err(m) => self.alert(m, Some(index), None),
            Ok(()) => {
                self.last_sequences.insert(key, header.sequence());
            }
        }
    }

    pub(super) fn apply(
        &mut self,
        index: Index,
        header: &grompi_proto::EnvelopeHeader,
        o: Opened,
        secrets: &mut Secrets,
    ) {
        let sender = o.sender;
        match o.content {
            Content::Noise | Content::Setup(_) => {}
            Content::Rekey => self.rekeyed(index, header, o.rn1),
            Content::Message(plaintext) => {
                if let Some(sender) = sender {
                    self.event(Event::Message {
                        index,
                        sender,
                        plaintext,
                        last_seen: causal_context(index, header),
                    });
                }
            }
            Content::Receipt(r) => {
                let Some(from) = sender else { return };
                match receipt::check(&r, index, &self.transcript) {
                    ReceiptCheck::Mismatch(m) => self.alert(m, Some(index), None),
                    ReceiptCheck::Consistent | ReceiptCheck::Unknown => {
                        let e = self.processed.entry(from).or_insert(r.through);
                        if *e < r.through {
                            *e = r.through;
                        }
                        self.event(Event::Receipt {
                            index,
                            from,
                            through: r.through,
                        });
                    }
                }
            }
            Content::Update(u) => {
                let (Some(sender), Some(current)) = (sender, self.membership.clone()) else {
                    self.phase = Phase::Halted("an Update without an authenticated sender");
                    return;
                };
                let outcome = current.apply_update(&sender, header.slot_set_hash(), &u);
                let authorized = outcome.refusal.is_none();
                if let Some(m) = outcome.refusal {
                    self.alert(m, Some(index), None);
                }
                let Some(next) = outcome.next else {
                    self.phase = Phase::Halted("an Update installs a slot set that cannot be used");
                    return;
                };
                let epoch = next.epoch();
                let my_slot = next.slot_of(&self.me);
                let removed = !next.members().contains_key(&self.me);
                self.event(Event::MembershipChanged {
                    index,
                    epoch,
                    change: Some(u.change),
                    authorized,
                    vouched_by: None,
                });
                let key = my_slot.and_then(|s| next.slots().get(s)).map(|e| e.key);
                self.membership = Some(next);
                self.next_sequence = Sequence(1);
                match key {
                    None if removed => self.phase = Phase::Removed,
                    None => self.phase = Phase::Halted("this member has no slot in the next epoch"),
                    Some(k) => match secrets.order_keys.take(&k, &self.config.servers) {
                        Ok(keys) => {
                            self.keys.insert(epoch, keys);
                        }
                        Err(_) => {
                            self.alert(Misbehaviour::ForeignSlotKey, Some(index), None);
                            self.phase =
                                Phase::Halted("the next epoch's slot is not one of our order keys");
                        }
                    },
                }
                if self.phase == Phase::Active {
                    self.start_group_epoch(index, header, o.rn1);
                    if authorized {
                        self.set_history(u.history);
                    }
                }
            }
        }
    }

    /// Whether this member holds something delivered at or after its next
    /// index that it cannot accept (an index behind a hole, or an index
    /// whose tags have not all arrived): the shell then fetches again and,
    /// if that changes nothing, calls [`Conversation::report_stall`].
    pub fn stuck(&self) -> bool {
        matches!(self.phase, Phase::Active | Phase::AwaitingSetup)
            && (self
                .pending
                .range(self.transcript.next_index()..)
                .next()
                .is_some()
                || self.group.as_ref().is_some_and(|g| !g.parked.is_empty()))
    }

    /// Tells the state machine that fetching did not let it advance. Raises
    /// [`Misbehaviour::Gap`] (once per call) when later indices are
    /// buffered behind a missing one, and returns whether it did; from now
    /// on head proofs that show the next index attested expose withheld
    /// tags. Before the Setup is accepted it also reports the tags that fail
    /// under the best-attested candidate Setup's keys (see
    /// `blame_setup_tags`). Drain the alerts afterwards.
    pub fn report_stall(&mut self) -> bool {
        let next = self.transcript.next_index();
        self.stalled_at = Some(next);
        // Shares still missing after a fetch will not come.
        self.give_up_parked();
        if self.phase == Phase::AwaitingSetup {
            self.blame_setup_tags();
        }
        let behind = self.pending.keys().any(|i| *i > next) && !self.pending.contains_key(&next);
        if behind {
            let after = self.transcript.last().map_or(Index(0), |e| e.index);
            self.alert(Misbehaviour::Gap { after }, Some(next), None);
        }
        behind
    }
}
