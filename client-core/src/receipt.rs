//! Receipts: "processed through index i with head h, could not decrypt
//! these". A member checks every accepted receipt against its own
//! transcript, and keeps per member the latest index it processed.

use crate::content::ReceiptContent;
use crate::transcript::Transcript;
use grompi_proto::{Index, Misbehaviour};

/// What checking a receipt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiptCheck {
    /// The head matches ours at that index.
    Consistent,
    /// The index is before this member's first index: nothing to compare.
    Unknown,
    /// The receipt contradicts our transcript.
    Mismatch(Misbehaviour),
}

/// Checks a receipt accepted at `at` against `transcript`.
///
/// A receipt cannot report an index at or after its own position (its
/// sender had not seen it), and must name our head at `through`.
pub fn check(receipt: &ReceiptContent, at: Index, transcript: &Transcript) -> ReceiptCheck {
    let mismatch = ReceiptCheck::Mismatch(Misbehaviour::ReceiptMismatch {
        index: receipt.through,
    });
    if receipt.through >= at {
        return mismatch;
    }
    if receipt.through < transcript.first() {
        return ReceiptCheck::Unknown;
    }
    match transcript.get(receipt.through) {
        Some(e) if e.head == receipt.head => ReceiptCheck::Consistent,
        _ => mismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::Entry;
    use grompi_proto::{ConversationId, EnvelopeHash, Epoch, Head};

    #[test]
    fn receipts_are_checked_against_the_transcript() {
        let c = ConversationId::from_bytes([1; 32]);
        let mut t = Transcript::new(c);
        let e = EnvelopeHash::from_bytes([2; 32]);
        let h = Head::genesis(&c).next(&c, Epoch(0), Index(0), &e);
        assert!(t.append(Entry {
            index: Index(0),
            epoch: Epoch(0),
            envelope_hash: e,
            head: h,
            attested_by: 1
        }));
        let r = |through, head| ReceiptContent {
            through: Index(through),
            head,
            undecryptable: vec![],
        };
        assert_eq!(check(&r(0, h), Index(1), &t), ReceiptCheck::Consistent);
        assert!(matches!(
            check(&r(0, Head::from_bytes([0; 32])), Index(1), &t),
            ReceiptCheck::Mismatch(_)
        ));
        assert!(
            matches!(check(&r(1, h), Index(1), &t), ReceiptCheck::Mismatch(_)),
            "not before itself"
        );
        let joined = Transcript::starting_at(c, Index(5), h);
        assert_eq!(check(&r(0, h), Index(6), &joined), ReceiptCheck::Unknown);
    }
}
