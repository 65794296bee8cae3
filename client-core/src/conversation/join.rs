//! Joining: a member added by an Update finds that Update, bound to the
//! head before it and attested for its next-epoch slot, and starts its
//! transcript there.

use super::accept::causal_context;
use super::receive::check_tags;
use super::{Candidate, Conversation, Event, JoinPrep, Phase, Secrets, TagSet};
use crate::content::Content;
use crate::delivery::Received;
use crate::membership::Membership;
use crate::transcript::{Entry, Transcript};
use grompi_proto::{EnvelopeKind, Head, Index, Misbehaviour, Sequence, WireError};

impl Conversation {
    /// A joining member looks for the Update that adds it: one it can open,
    /// that lists it (checked as far as a joiner can, see
    /// [`Membership::joined`]), delivered with the head before it, and whose
    /// head, chained from that previous head, a quorum tagged for this
    /// member's next-epoch slot (`next_tags`). The binding to the previous
    /// head is what ties the opened envelope to the attested one: without
    /// it a router could pair the genuine tags with an envelope of its own.
    pub(super) fn try_join(&mut self, secrets: &mut Secrets) {
        let indices: Vec<Index> = self.pending.keys().copied().collect();
        for index in indices {
            let Some(mut p) = self.pending.remove(&index) else {
                continue;
            };
            // Tags for a slot in the Update's own epoch mean this member
            // already belongs to the conversation and is missing the
            // indices before (its Setup among them): it does not open the
            // Update out of order, it waits for them.
            let member_already = p.unverified.iter().any(|a| !a.tags.is_empty());
            let mut joined = None;
            let mut alerts = Vec::new();
            for (pos, c) in p.candidates.iter_mut().enumerate() {
                if member_already {
                    break;
                }
                let header = c.received.delivery.header.clone();
                if header.kind() != EnvelopeKind::Update {
                    continue;
                }
                if c.join.is_none() {
                    match self.prepare_join(&c.received, secrets) {
                        Ok(j) => c.join = Some(j),
                        // An Update with a block for this member that does
                        // not validly add it (its rules, as far as a joiner
                        // can check them): reported once, never joined.
                        Err(
                            m @ (Misbehaviour::UnauthorizedUpdate(_)
                            | Misbehaviour::SlotSetMismatch),
                        ) => {
                            if !c.flagged {
                                c.flagged = true;
                                alerts.push(m);
                            }
                            continue;
                        }
                        // Not for this member (no block, another slot).
                        Err(_) => continue,
                    }
                }
                let Some(j) = &c.join else { continue };
                let unbound = super::switches::get().join_binding;
                if c.previous_heads.is_empty() && !unbound {
                    // An Update that adds this member, delivered without the
                    // head before it: it cannot be bound to the chain.
                    if !c.flagged {
                        c.flagged = true;
                        alerts.push(Misbehaviour::Malformed(WireError::MissingField(
                            "delivery.previous_head (required to join)",
                        )));
                    }
                    continue;
                }
                let (heads, bad) = check_tags(
                    self.id,
                    &j.keys,
                    header.epoch(),
                    index,
                    &p.unverified,
                    TagSet::Next,
                );
                let quorum = self.config.quorum;
                let bound = c.previous_heads.iter().find_map(|prev| {
                    let head =
                        prev.next(&self.id, header.epoch(), index, &c.received.envelope_hash);
                    heads
                        .get(&head)
                        .filter(|s| s.count_ones() as usize >= quorum)
                        .map(|s| (Some(*prev), head, *s))
                });
                // Undone fix (test-only switch): any head a quorum tagged.
                let bound = bound.or_else(|| {
                    unbound
                        .then(|| {
                            heads
                                .iter()
                                .find(|(_, s)| s.count_ones() as usize >= quorum)
                                .map(|(h, s)| (None, *h, *s))
                        })
                        .flatten()
                });
                if let Some((prev, head, servers)) = bound {
                    joined = Some((pos, prev, head, servers, heads, bad));
                    break;
                }
                // A quorum tagged a head for this member's next slot that
                // this envelope does not chain to: the envelope (or the
                // previous head it came with) is not the attested one.
                if !c.flagged && heads.values().any(|s| s.count_ones() as usize >= quorum) {
                    c.flagged = true;
                    alerts.push(Misbehaviour::UnattestedEnvelope { index });
                }
            }
            for m in alerts {
                self.alert(m, Some(index), None);
            }
            let Some((pos, prev, head, servers, heads, bad)) = joined else {
                self.pending.insert(index, p);
                continue;
            };
            let c = p.candidates.swap_remove(pos);
            // The key must still be unused (another conversation may have
            // been given it and accepted first).
            let key_free = c
                .join
                .as_ref()
                .is_some_and(|j| secrets.order_keys.remove(&j.keys.slot_key()));
            if !key_free {
                self.alert(Misbehaviour::ForeignSlotKey, Some(index), None);
                self.buffered = self.buffered.saturating_sub(1);
                self.pending.insert(index, p);
                continue;
            }
            self.buffered = self
                .buffered
                .saturating_sub(p.candidates.len() + p.unverified.len() + 1);
            self.report_bad_tags(index, &bad);
            p.heads = heads;
            self.report_losers(index, &p, head, &c.received.envelope_hash);
            self.join(c, head, servers, prev);
            self.take_shares(index, &p.shares);
            self.retry_parked(secrets);
            return;
        }
    }

    /// Opens an Update to see whether it adds this member, checks it as far
    /// as a joiner can, and derives the member's next-epoch slot keys
    /// (without using the key yet).
    fn prepare_join(
        &mut self,
        received: &Received,
        secrets: &mut Secrets,
    ) -> Result<JoinPrep, Misbehaviour> {
        let header = &received.delivery.header;
        let opened = self.open(received, None, secrets)?;
        let Content::Update(content) = &opened.content else {
            return Err(Misbehaviour::UnexpectedKind("not an Update"));
        };
        let sender = opened.sender.ok_or(Misbehaviour::UnauthenticatedSender {
            index: received.delivery.index,
        })?;
        let epoch = header.epoch().next().ok_or(Misbehaviour::WrongContext)?;
        let membership =
            Membership::joined(epoch, header.slot_set_hash(), &sender, &self.me, content)?;
        let keys = self.own_slot_keys(&membership, received, secrets)?;
        Ok(JoinPrep {
            change: content.change,
            membership,
            keys,
            sender,
            history: content.history,
            rn1: opened.rn1,
        })
    }

    /// Starts the transcript at the Update that added this member, anchored
    /// at the previous head it was bound to (unanchored only when the
    /// test-only join-binding switch is on).
    fn join(&mut self, c: Candidate, head: Head, attested_by: u32, previous: Option<Head>) {
        let Some(j) = c.join else { return };
        let index = c.received.delivery.index;
        let header = &c.received.delivery.header;
        let entry = Entry {
            index,
            epoch: header.epoch(),
            envelope_hash: c.received.envelope_hash,
            head,
            attested_by,
        };
        let transcript = match previous {
            Some(previous) => {
                let mut t = Transcript::starting_at(self.id, index, previous);
                t.append(entry).then_some(t)
            }
            None => Some(Transcript::joined(self.id, entry)),
        };
        let Some(transcript) = transcript else {
            // Unreachable: the head was computed from `previous`.
            self.phase = Phase::Halted("internal: a joined index did not chain");
            return;
        };
        self.transcript = transcript;
        // Everything buffered before the join is not ours to accept.
        self.pending = self.pending.split_off(&Index(index.0.saturating_add(1)));
        self.buffered = self
            .pending
            .values()
            .map(|p| p.candidates.len() + p.unverified.len())
            .sum();
        let epoch = j.membership.epoch();
        self.keys.insert(epoch, j.keys);
        self.prepared.clear();
        self.early_blocks.clear();
        self.candidate_peers.clear();
        self.membership = Some(j.membership);
        self.phase = Phase::Active;
        self.next_sequence = Sequence(1);
        // A group-keyed conversation, as far as a joiner can tell: the
        // Update that adds it carries a key start.
        if matches!(header.key(), grompi_proto::HeaderKey::Start(_)) {
            self.group = Some(super::group::GroupState {
                epoch,
                period_length: 0,
                epoch_start: index,
                keys: None,
                shares: Default::default(),
                due: Default::default(),
                parked: Default::default(),
            });
        }
        self.start_group_epoch(index, header, j.rn1);
        self.set_history(j.history);
        self.history_root = self.history_root_at(index, head);
        self.event(Event::Accepted {
            index,
            kind: EnvelopeKind::Update,
            status: self.config.status(attested_by),
            last_seen: causal_context(index, header),
            sender: Some(j.sender),
        });
        self.event(Event::MembershipChanged {
            index,
            epoch,
            change: Some(j.change),
            authorized: true,
            vouched_by: Some(j.sender),
        });
    }
}
