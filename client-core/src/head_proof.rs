//! Head proofs: with a fresh nonce, a member learns how many indices each
//! order server has attested and the head after the last one, MACed with
//! the member's own slot key, and compares that with its transcript. A
//! different head at a count the member has accepted is a fork; a count
//! beyond what was delivered means indices are being withheld; a count or
//! epoch below what the same server proved before, or another head at a
//! count it proved before, means the server was rolled back (or
//! equivocates).
//!
//! The order of checks matters, because the router relays every proof and
//! can rewrite any of its fields:
//!
//! 1. the MAC, under this member's slot key of the epoch the proof names,
//!    before anything else is read (a proof for an epoch whose key this
//!    member does not hold is [`NotProved`](HeadProofOutcome::NotProved),
//!    never fine);
//! 2. the nonce (a valid MAC over another nonce is a replayed proof);
//! 3. rollback against the highest proof this server gave before;
//! 4. the count against what was delivered and accepted, and the head
//!    against the transcript.

use crate::keyring::SlotMacKeys;
use crate::transcript::Transcript;
use grompi_proto::mac::HeadProof;
use grompi_proto::{ConversationId, Epoch, Head, Misbehaviour, ProofNonce, WireError};
use std::collections::BTreeMap;

/// Why a server's head was not proved to this member. None of these is
/// "fine": the application shows them next to the servers that did prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotProvedReason {
    /// The router returned no proof for this pinned server.
    NoAnswer,
    /// The proof relayed for this server did not parse.
    Unparseable(WireError),
    /// The proof is for an epoch whose slot key this member does not hold
    /// (a later epoch whose Update has not reached it, or a rewritten
    /// epoch): its MAC cannot be checked.
    UnknownEpoch(Epoch),
    /// The count lies before this member's first index: there is no head
    /// of ours to compare with.
    BeforeJoin,
}

impl std::fmt::Display for NotProvedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoAnswer => f.write_str("no proof was returned for it"),
            Self::Unparseable(e) => write!(f, "its proof did not parse: {e}"),
            Self::UnknownEpoch(e) => write!(
                f,
                "its proof is for epoch {}, whose key this member does not hold",
                e.0
            ),
            Self::BeforeJoin => f.write_str("its count is before this member joined"),
        }
    }
}

/// What one head proof showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadProofOutcome {
    /// The server's head matches ours at its count.
    Consistent {
        /// The order server's position (from 0) in the network descriptor.
        server: u32,
        /// The number of indices it proves it attested, all accepted here.
        count: u64,
    },
    /// The server attested indices that were delivered to us but that we
    /// have not accepted yet (waiting for tags or earlier indices).
    AheadOfAccepted {
        /// The order server's position (from 0) in the network descriptor.
        server: u32,
        /// The number of indices it proves it attested: delivered here, but
        /// more than this member has accepted.
        count: u64,
    },
    /// Nothing was proved for this server; the reason says why.
    NotProved {
        /// The order server's position (from 0) in the network descriptor.
        server: u32,
        /// Why the proof was missing, unusable or not comparable.
        reason: NotProvedReason,
    },
    /// Misbehaviour (also raised as an alert).
    Misbehaviour(Misbehaviour),
}

impl HeadProofOutcome {
    /// The server the outcome is about, when it names one.
    pub fn server(&self) -> Option<u32> {
        match self {
            Self::Consistent { server, .. }
            | Self::AheadOfAccepted { server, .. }
            | Self::NotProved { server, .. } => Some(*server),
            Self::Misbehaviour(
                Misbehaviour::BadHeadProof { server }
                | Misbehaviour::HeadProofFork { server, .. }
                | Misbehaviour::Withheld { server, .. }
                | Misbehaviour::RolledBack { server, .. },
            ) => Some(*server),
            Self::Misbehaviour(_) => None,
        }
    }
}

/// The highest proof a server gave this member for one conversation: what
/// a later proof from it must not go below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProvedHead {
    /// The epoch the proof names; a later proof in an earlier epoch is a
    /// rollback.
    pub epoch: Epoch,
    /// The number of indices the server proved it had attested.
    pub count: u64,
    /// The head after the last of them (the genesis head when `count` is
    /// 0); another head at the same count later is a rollback.
    pub head: Head,
}

/// Compares a verified proof with the highest one the same server gave
/// before; returns the rollback it shows, if any. A lower epoch or count,
/// or another head at the same count, is a rollback.
pub fn rollback(server: u32, before: &ProvedHead, now: &ProvedHead) -> Option<Misbehaviour> {
    let lower = now.epoch < before.epoch || now.count < before.count;
    let other_head = now.count == before.count && now.head != before.head;
    (lower || other_head).then_some(Misbehaviour::RolledBack {
        server,
        proved: before.count,
        proved_epoch: before.epoch,
        count: now.count,
    })
}

/// Checks one proof answering `nonce` against `transcript`. `delivered` is
/// how many indices have reached this member (accepted or buffered);
/// `proved` is the highest proof this server gave before, if any.
pub fn check(
    proof: &HeadProof,
    conversation: ConversationId,
    nonce: &ProofNonce,
    keys: &BTreeMap<Epoch, SlotMacKeys>,
    transcript: &Transcript,
    delivered: u64,
    proved: Option<&ProvedHead>,
) -> HeadProofOutcome {
    let server = proof.server;
    let bad = HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof { server });
    let s = &proof.statement;
    // 1. The MAC first: nothing the router relays is read before it.
    let Some(epoch_keys) = keys.get(&s.epoch) else {
        return HeadProofOutcome::NotProved {
            server,
            reason: NotProvedReason::UnknownEpoch(s.epoch),
        };
    };
    let Some(k) = epoch_keys.server(server) else {
        return bad;
    };
    if !k.verify_head_proof(s, &proof.tag) {
        return bad;
    }
    // 2. The nonce (and conversation) it answers.
    let fresh = s.nonce == *nonce || crate::conversation::switches::get().head_proof_nonce;
    if s.conversation != conversation || !fresh {
        return bad;
    }
    // 3. Never below what this server proved before.
    let now = ProvedHead {
        epoch: s.epoch,
        count: s.count,
        head: s.head,
    };
    if let Some(m) = proved.and_then(|before| rollback(server, before, &now)) {
        return HeadProofOutcome::Misbehaviour(m);
    }
    // 4. Against what reached this member.
    if s.count > delivered {
        return HeadProofOutcome::Misbehaviour(Misbehaviour::Withheld {
            server,
            attested: s.count,
            delivered,
        });
    }
    let accepted = transcript.next_index().0;
    if s.count > accepted {
        return HeadProofOutcome::AheadOfAccepted {
            server,
            count: s.count,
        };
    }
    let ours: Option<Head> = match s.count.checked_sub(1) {
        None => (transcript.first().0 == 0).then(|| Head::genesis(&conversation)),
        Some(last) => transcript.get(grompi_proto::Index(last)).map(|e| e.head),
    };
    match ours {
        None => HeadProofOutcome::NotProved {
            server,
            reason: NotProvedReason::BeforeJoin,
        },
        Some(h) if h == s.head => HeadProofOutcome::Consistent {
            server,
            count: s.count,
        },
        Some(_) => HeadProofOutcome::Misbehaviour(Misbehaviour::HeadProofFork {
            server,
            count: s.count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, count: u64, head: u8) -> ProvedHead {
        ProvedHead {
            epoch: Epoch(epoch),
            count,
            head: Head::from_bytes([head; 32]),
        }
    }

    #[test]
    fn rollback_is_a_lower_epoch_or_count_or_another_head_at_a_count() {
        let before = at(1, 10, 1);
        assert_eq!(rollback(0, &before, &at(1, 10, 1)), None);
        assert_eq!(rollback(0, &before, &at(1, 11, 2)), None);
        assert_eq!(rollback(0, &before, &at(2, 12, 3)), None);
        for now in [at(1, 9, 1), at(0, 12, 1), at(1, 10, 2)] {
            assert_eq!(
                rollback(3, &before, &now),
                Some(Misbehaviour::RolledBack {
                    server: 3,
                    proved: 10,
                    proved_epoch: Epoch(1),
                    count: now.count
                }),
                "{now:?}"
            );
        }
    }
}
