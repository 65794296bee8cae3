//! Head proofs: asking order servers how far they attested, and checking
//! their answers against the transcript (forks, rollbacks, withheld tags).

use super::Conversation;
use super::receive::bit;
use crate::head_proof::{self, HeadProofOutcome, NotProvedReason, ProvedHead};
use grompi_proto::mac::HeadProof;
use grompi_proto::{Index, Misbehaviour, ProofNonce};
use std::collections::BTreeMap;

impl Conversation {
    /// Starts a head query with a fresh nonce from the caller's RNG; send it
    /// with `ProveHeads`.
    pub fn head_proof_nonce(&mut self, rng: &mut impl rand::CryptoRng) -> ProofNonce {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        let nonce = ProofNonce::from_bytes(b);
        self.head_nonce = Some(nonce);
        nonce
    }

    /// Whether a valid tag from `server` is held for the buffered `index`.
    fn has_valid_tag(&self, index: Index, server: u32) -> bool {
        self.pending
            .get(&index)
            .is_some_and(|p| p.heads.values().any(|s| s & bit(server) != 0))
    }

    /// Checks the proofs the router returned for the last nonce, as they
    /// came off the wire: a proof that does not parse is reported (an
    /// alert, and [`NotProvedReason::Unparseable`] for its server) instead
    /// of being dropped; the rest go to [`Conversation::check_head_proofs`].
    pub fn check_head_proof_answers(
        &mut self,
        answers: Vec<grompi_proto::pb::HeadProof>,
    ) -> Vec<HeadProofOutcome> {
        let mut proofs = Vec::new();
        let mut unparseable = Vec::new();
        for raw in answers {
            let server = raw.server;
            match HeadProof::try_from(raw) {
                Ok(p) => proofs.push(p),
                Err(e) => unparseable.push((server, e)),
            }
        }
        let mut out = Vec::new();
        for (server, e) in &unparseable {
            self.alert(Misbehaviour::Malformed(e.clone()), None, Some(*server));
            out.push(HeadProofOutcome::NotProved {
                server: *server,
                reason: NotProvedReason::Unparseable(e.clone()),
            });
        }
        let answered: Vec<u32> = unparseable.iter().map(|(s, _)| *s).collect();
        out.extend(self.check_proofs(&proofs, &answered));
        out
    }

    /// Checks the proofs answering the last nonce (which is then spent).
    /// Every pinned server that returned no proof is
    /// [`NotProvedReason::NoAnswer`]. After a reported stall, a server that
    /// proves it attested the index this member is stuck on, while no
    /// valid tag of it reached the member, had its tag withheld:
    /// `Withheld`. A server that proves less than it proved before, or
    /// another head at a count it proved before, is `RolledBack`.
    pub fn check_head_proofs(&mut self, proofs: &[HeadProof]) -> Vec<HeadProofOutcome> {
        self.check_proofs(proofs, &[])
    }

    fn check_proofs(&mut self, proofs: &[HeadProof], answered: &[u32]) -> Vec<HeadProofOutcome> {
        let Some(nonce) = self.head_nonce.take() else {
            for p in proofs {
                self.alert(
                    Misbehaviour::BadHeadProof { server: p.server },
                    None,
                    Some(p.server),
                );
            }
            return proofs
                .iter()
                .map(|p| {
                    HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof { server: p.server })
                })
                .collect();
        };
        let delivered = self
            .pending
            .keys()
            .next_back()
            .map_or(0, |i| i.0.saturating_add(1))
            .max(self.transcript.next_index().0);
        let next = self.transcript.next_index();
        let stalled = self.stalled_at == Some(next);
        let mut out = Vec::with_capacity(proofs.len());
        for p in proofs {
            let o = head_proof::check(
                p,
                self.id,
                &nonce,
                &self.keys,
                &self.transcript,
                delivered,
                self.proved.get(&p.server),
            );
            // A proof whose MAC and nonce verified raises the bar the same
            // server must not go below later.
            let verified = matches!(
                &o,
                HeadProofOutcome::Consistent { .. }
                    | HeadProofOutcome::AheadOfAccepted { .. }
                    | HeadProofOutcome::NotProved {
                        reason: NotProvedReason::BeforeJoin,
                        ..
                    }
                    | HeadProofOutcome::Misbehaviour(
                        Misbehaviour::Withheld { .. } | Misbehaviour::HeadProofFork { .. }
                    )
            );
            if verified {
                let now = ProvedHead {
                    epoch: p.statement.epoch,
                    count: p.statement.count,
                    head: p.statement.head,
                };
                let higher = self
                    .proved
                    .get(&p.server)
                    .is_none_or(|b| (now.epoch, now.count) > (b.epoch, b.count));
                // (Only a pinned server's key verifies, so this map holds
                // at most one entry per pinned server.)
                if higher {
                    self.proved.insert(p.server, now);
                }
            }
            out.push(match o {
                // Stalled at `next`, holding what was delivered for it,
                // while a server proves it attested `next`: that server's
                // tag was withheld (it is not in flight any more).
                HeadProofOutcome::AheadOfAccepted { server, count }
                    if stalled && count > next.0 && !self.has_valid_tag(next, server) =>
                {
                    HeadProofOutcome::Misbehaviour(Misbehaviour::Withheld {
                        server,
                        attested: count,
                        delivered: next.0,
                    })
                }
                o => o,
            });
        }
        // A pinned server the router returned nothing for.
        let servers = u32::try_from(self.config.servers.len()).unwrap_or(u32::MAX);
        for server in 0..servers {
            if !proofs.iter().any(|p| p.server == server) && !answered.contains(&server) {
                out.push(HeadProofOutcome::NotProved {
                    server,
                    reason: NotProvedReason::NoAnswer,
                });
            }
        }
        for o in &out {
            if let HeadProofOutcome::Misbehaviour(m) = o {
                self.alert(m.clone(), None, o.server());
            }
        }
        out
    }

    /// Per order server, the highest head it proved to this member (what a
    /// later proof from it must not go below).
    pub fn proved_heads(&self) -> &BTreeMap<u32, ProvedHead> {
        &self.proved
    }
}
