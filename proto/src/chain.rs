//! The head chain: every index's head commits to the whole conversation
//! before it, so agreeing on a head means agreeing on the entire history.
//!
//! ```text
//! genesis  = H_genesis(conv)
//! head_i   = H_chain(conv, epoch_i, i, head_{i-1}, envelope_hash_i)
//! ```
//!
//! The chain runs across epochs: an Update at index i is hashed with its own
//! epoch, and index i+1 with the next.

use crate::context;
use crate::encoding::Canonical;
use crate::envelope::EnvelopeHash;
use crate::fixed::fixed32;
use crate::ids::{ConversationId, Epoch, Index};

fixed32!(
    /// A head of the chain: 32 bytes that commit to the conversation, and to
    /// every index up to the one it follows with its epoch and envelope hash.
    Head
);

impl Head {
    /// The head before index 0.
    pub fn genesis(conversation: &ConversationId) -> Self {
        Self(
            Canonical::new()
                .fixed(conversation.as_bytes())
                .hash(context::GENESIS_HEAD),
        )
    }

    /// The head after appending `envelope` at `index` in `epoch` to `self`.
    pub fn next(
        &self,
        conversation: &ConversationId,
        epoch: Epoch,
        index: Index,
        envelope: &EnvelopeHash,
    ) -> Self {
        Self(
            Canonical::new()
                .fixed(conversation.as_bytes())
                .u64(epoch.0)
                .u64(index.0)
                .fixed(&self.0)
                .fixed(envelope.as_bytes())
                .hash(context::HEAD_CHAIN),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_head() {
        let c = ConversationId::from_bytes([1; 32]);
        let g = Head::genesis(&c);
        let e = EnvelopeHash::from_bytes([2; 32]);
        let h = g.next(&c, Epoch(0), Index(0), &e);
        assert_ne!(
            h,
            g.next(&ConversationId::from_bytes([3; 32]), Epoch(0), Index(0), &e)
        );
        assert_ne!(h, g.next(&c, Epoch(1), Index(0), &e));
        assert_ne!(h, g.next(&c, Epoch(0), Index(1), &e));
        assert_ne!(h, h.next(&c, Epoch(0), Index(0), &e));
        assert_ne!(
            h,
            g.next(&c, Epoch(0), Index(0), &EnvelopeHash::from_bytes([4; 32]))
        );
        assert_ne!(g, Head::genesis(&ConversationId::from_bytes([3; 32])));
    }
}
