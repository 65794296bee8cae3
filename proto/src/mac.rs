//! Tags: the three MACs of the protocol.
//!
//! | MAC | key | message |
//! |---|---|---|
//! | attestation | attestation subkey of (server, slot) | conv, epoch, index, head |
//! | submission | submission subkey of (server, sender slot) | envelope hash, sequence |
//! | head proof | head-proof subkey of (server, asking slot) | conv, epoch, count, head, nonce |
//!
//! Every comparison of a received tag is in constant time.

use crate::chain::Head;
use crate::encoding::Canonical;
use crate::envelope::EnvelopeHash;
use crate::fixed::fixed32;
use crate::ids::{ConversationId, Epoch, Index, ProofNonce, Sequence};
use crate::keys::MacKeys;
use subtle::ConstantTimeEq;

fixed32!(
    /// A 32-byte MAC tag. Compare received tags with [`Tag::verify`], which
    /// runs in constant time.
    Tag
);

impl Tag {
    /// Whether `self` equals `expected`, in constant time.
    pub fn verify(&self, expected: &Tag) -> bool {
        self.as_bytes().ct_eq(expected.as_bytes()).into()
    }
}

/// What an attestation says: "in this conversation and epoch, index `index`
/// has head `head`".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttestationStatement {
    /// The conversation the attested index belongs to; the MAC binds it,
    /// so a tag cannot be replayed into another conversation.
    pub conversation: ConversationId,
    /// The epoch of the envelope at `index`.
    pub epoch: Epoch,
    /// The position attested (0 is the Setup), global across epochs.
    pub index: Index,
    /// The chain head after `index` (see [`crate::chain`]): it commits to
    /// every envelope up to and including `index`.
    pub head: Head,
}

impl AttestationStatement {
    /// The canonical encoding that is MACed.
    pub fn canonical(&self) -> Canonical {
        Canonical::new()
            .fixed(self.conversation.as_bytes())
            .u64(self.epoch.0)
            .u64(self.index.0)
            .fixed(self.head.as_bytes())
    }
}

/// What a head proof says: "when asked with `nonce`, I had attested `count`
/// indices of this conversation, the last with head `head`, in `epoch`".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadProofStatement {
    /// The conversation whose attested indices are counted; a member
    /// rejects a proof for any other conversation.
    pub conversation: ConversationId,
    /// The server's current epoch for it.
    pub epoch: Epoch,
    /// How many indices the server has attested.
    pub count: u64,
    /// The head after the last of them (the genesis head when none).
    pub head: Head,
    /// The asking member's fresh nonce.
    pub nonce: ProofNonce,
}

impl HeadProofStatement {
    /// The canonical encoding that is MACed.
    pub fn canonical(&self) -> Canonical {
        Canonical::new()
            .fixed(self.conversation.as_bytes())
            .u64(self.epoch.0)
            .u64(self.count)
            .fixed(self.head.as_bytes())
            .fixed(self.nonce.as_bytes())
    }
}

/// The canonical encoding of a submission: envelope hash and sequence.
pub fn submission_canonical(envelope: &EnvelopeHash, sequence: Sequence) -> Canonical {
    Canonical::new().fixed(envelope.as_bytes()).u64(sequence.0)
}

impl MacKeys {
    /// The order server's attestation tag for a slot.
    pub fn attest(&self, statement: &AttestationStatement) -> Tag {
        Tag::from_bytes(statement.canonical().mac(self.attestation.as_bytes()))
    }

    /// Whether `tag` is this key's attestation of `statement`.
    pub fn verify_attestation(&self, statement: &AttestationStatement, tag: &Tag) -> bool {
        tag.verify(&self.attest(statement))
    }

    /// The sender's submission tag for one order server.
    pub fn submit(&self, envelope: &EnvelopeHash, sequence: Sequence) -> Tag {
        Tag::from_bytes(submission_canonical(envelope, sequence).mac(self.submission.as_bytes()))
    }

    /// Whether `tag` is this key's submission tag for `envelope` at `sequence`.
    pub fn verify_submission(
        &self,
        envelope: &EnvelopeHash,
        sequence: Sequence,
        tag: &Tag,
    ) -> bool {
        tag.verify(&self.submit(envelope, sequence))
    }

    /// The order server's head proof for a slot.
    pub fn prove_head(&self, statement: &HeadProofStatement) -> Tag {
        Tag::from_bytes(statement.canonical().mac(self.head_proof.as_bytes()))
    }

    /// Whether `tag` is this key's head proof of `statement`.
    pub fn verify_head_proof(&self, statement: &HeadProofStatement, tag: &Tag) -> bool {
        tag.verify(&self.prove_head(statement))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{OrderServerSecret, SlotSecret};

    fn keys() -> (MacKeys, MacKeys) {
        let server = OrderServerSecret::from_bytes([7; 32]);
        let slot = SlotSecret::from_bytes([9; 32]);
        (
            server.mac_keys(&slot.public_key()).unwrap(),
            slot.mac_keys(&server.public_key()).unwrap(),
        )
    }

    #[test]
    fn tags_verify_only_for_their_statement() {
        let (server, member) = keys();
        let s = AttestationStatement {
            conversation: ConversationId::from_bytes([1; 32]),
            epoch: Epoch(0),
            index: Index(3),
            head: Head::from_bytes([2; 32]),
        };
        let tag = server.attest(&s);
        assert!(member.verify_attestation(&s, &tag));
        assert!(!member.verify_attestation(
            &AttestationStatement {
                index: Index(4),
                ..s
            },
            &tag
        ));
        assert!(!member.verify_attestation(
            &AttestationStatement {
                epoch: Epoch(1),
                ..s
            },
            &tag
        ));
        // The same statement under another purpose's key does not verify.
        let p = HeadProofStatement {
            conversation: s.conversation,
            epoch: s.epoch,
            count: 3,
            head: s.head,
            nonce: ProofNonce::from_bytes([5; 32]),
        };
        assert!(member.verify_head_proof(&p, &server.prove_head(&p)));
        let other_nonce = HeadProofStatement {
            nonce: ProofNonce::from_bytes([6; 32]),
            ..p
        };
        assert!(!member.verify_head_proof(&other_nonce, &server.prove_head(&p)));
        // An attestation tag is not a head proof, even over equal fields.
        assert_ne!(server.attest(&s), server.prove_head(&p));
        let e = EnvelopeHash::from_bytes([3; 32]);
        let sub = member.submit(&e, Sequence(1));
        assert!(server.verify_submission(&e, Sequence(1), &sub));
        assert!(!server.verify_submission(&e, Sequence(2), &sub));
    }
}

/// One order server's attestation of one index, as carried on the wire: one
/// tag per slot (all slots from the server, the member's own on delivery).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// The order server's position in the network descriptor.
    pub server: u32,
    /// The position attested (0 is the Setup), global across epochs.
    pub index: Index,
    /// The chain head after `index`, as the server computed it; a member
    /// counts the tag only if it names the head the member computed itself.
    pub head: Head,
    /// Tags for the epoch's slots.
    pub tags: Vec<Tag>,
    /// For Update envelopes: tags for the next epoch's slots.
    pub next_tags: Vec<Tag>,
    /// Group-keyed conversations, at the first index of a key period: the
    /// server's key share sealed for each slot (one per slot, in slot
    /// order; only the member's own on delivery). Empty otherwise.
    pub key_shares: Vec<crate::key_share::WrappedShare>,
    /// From a server that keeps an audit log: where it logged this
    /// attestation's entry, as it said. Not covered by the tags: only a
    /// hint for finding the entry, which an auditor recomputes and proves
    /// against a cosigned checkpoint.
    pub log_index: Option<u64>,
}

/// An order server's head proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadProof {
    /// The order server's position in the network descriptor.
    pub server: u32,
    /// What the server states: its count and head for the conversation,
    /// answering the member's nonce; read only after `tag` verifies.
    pub statement: HeadProofStatement,
    /// The MAC over the statement.
    pub tag: Tag,
}
