//! The audit log entry of an attested index (`docs/PROTOCOL.md` section
//! 13): what an order server appends to its log for each index it attests,
//! and what a member recomputes from its own transcript to find and check
//! it. The entry names no conversation: only someone who knows the
//! conversation id can recompute it, so nobody else learns which entries
//! belong together.
//!
//! ```text
//! entry = 0x01 || derive_key("grompi v1 audit entry",
//!                            conversation_id || u64(epoch) || u64(index) || head)
//! ```

use crate::{ConversationId, Epoch, Head, Index, context};

/// Type byte of an attested index's entry.
pub const ATTESTATION: u8 = 0x01;

/// Length of an attested index's entry.
pub const ATTESTATION_LEN: usize = 33;

/// The entry of `index` of `conversation`, attested in `epoch` with the
/// chain head `head` after it.
pub fn attestation_entry(
    conversation: &ConversationId,
    epoch: Epoch,
    index: Index,
    head: &Head,
) -> [u8; ATTESTATION_LEN] {
    // The canonical encoding of four fixed-size fields, laid out in place.
    let mut input = [0u8; 80];
    input[..32].copy_from_slice(conversation.as_bytes());
    input[32..40].copy_from_slice(&epoch.0.to_be_bytes());
    input[40..48].copy_from_slice(&index.0.to_be_bytes());
    input[48..].copy_from_slice(head.as_bytes());
    let blinded = blake3::derive_key(context::AUDIT_ENTRY, &input);
    let mut out = [0u8; ATTESTATION_LEN];
    out[0] = ATTESTATION;
    out[1..].copy_from_slice(&blinded);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
    use super::*;
    use crate::encoding::Canonical;

    /// The in-place layout is the canonical encoding the vector
    /// `audit_entry_attestation` publishes.
    #[test]
    fn the_entry_is_the_type_byte_and_the_published_derivation() {
        let conv = ConversationId::from_bytes([0x44; 32]);
        let head = Head::from_bytes([7; 32]);
        let entry = attestation_entry(&conv, Epoch(2), Index(17), &head);
        let want = Canonical::new()
            .fixed(conv.as_bytes())
            .u64(2)
            .u64(17)
            .fixed(head.as_bytes())
            .hash(context::AUDIT_ENTRY);
        assert_eq!(entry[0], ATTESTATION);
        assert_eq!(entry[1..], want);
        assert_ne!(
            attestation_entry(&conv, Epoch(2), Index(18), &head),
            entry,
            "the index is bound"
        );
    }
}
