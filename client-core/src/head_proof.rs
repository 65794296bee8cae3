//! Head proofs: with a fresh nonce, a member learns how many indices each
//! order server has attested and the head after the last one, MACed with
//! the member's own slot key, and compares that with its transcript. A
//! different head at a count the member has accepted is a fork; a count
//! beyond what was delivered means indices are being withheld.

use crate::keyring::SlotMacKeys;
use crate::transcript::Transcript;
use grompi_proto::mac::HeadProof;
use grompi_proto::{ConversationId, Epoch, Head, Misbehaviour, ProofNonce};
use std::collections::BTreeMap;

/// What one head proof showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadProofOutcome {
    /// The server's head matches ours at its count.
    Consistent {
        /// The server.
        server: u32,
        /// Its count.
        count: u64,
    },
    /// The server attested indices that were delivered to us but that we
    /// have not accepted yet (waiting for tags or earlier indices).
    AheadOfAccepted {
        /// The server.
        server: u32,
        /// Its count.
        count: u64,
    },
    /// The proof is for an epoch whose keys this member does not hold, or
    /// a count before this member joined: nothing to compare.
    Unverifiable {
        /// The server.
        server: u32,
    },
    /// Misbehaviour (also raised as an alert).
    Misbehaviour(Misbehaviour),
}

/// Checks one proof answering `nonce` against `transcript`. `delivered` is
/// how many indices have reached this member (accepted or buffered).
pub fn check(
    proof: &HeadProof,
    conversation: ConversationId,
    nonce: &ProofNonce,
    keys: &BTreeMap<Epoch, SlotMacKeys>,
    transcript: &Transcript,
    delivered: u64,
) -> HeadProofOutcome {
    let server = proof.server;
    let bad = HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof { server });
    let s = &proof.statement;
    if s.conversation != conversation || s.nonce != *nonce {
        return bad;
    }
    let Some(epoch_keys) = keys.get(&s.epoch) else {
        return HeadProofOutcome::Unverifiable { server };
    };
    let Some(k) = epoch_keys.server(server) else {
        return bad;
    };
    if !k.verify_head_proof(s, &proof.tag) {
        return bad;
    }
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
        None => HeadProofOutcome::Unverifiable { server },
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
