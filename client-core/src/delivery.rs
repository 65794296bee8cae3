//! What a member receives for one index, moved through typed stages:
//!
//! ```text
//! pb::Delivery --TryFrom--> Incoming::Envelope(Delivery) --check--> Received
//!                                        --(tags)--> accepted --(open)--> opened
//!              --TryFrom--> Incoming::Tags(TagUpdate)   (late tags for an index)
//! ```
//!
//! [`Delivery`] is well-formed (lengths, limits, known enums). [`Received`]
//! is self-consistent: the header names the conversation, the body matches
//! the header's body hash, the member's own block matches its digest, and
//! the envelope hash is recomputed from the header and all digests. Tags are
//! verified against the member's own chain in [`crate::conversation`].

use grompi_proto::limits::{MAX_BLOCK_BYTES, MAX_BLOCKS, MAX_BODY_BYTES, MAX_ORDER_SERVERS};
use grompi_proto::mac::Attestation;
use grompi_proto::{
    BlockDigest, BodyHash, ConversationId, EnvelopeHash, EnvelopeHeader, Head, Index, Misbehaviour,
    RecipientBlock, WireError, pb,
};

/// One envelope as the router delivers it to this member, well-formed
/// (lengths, limits, known enums) but not yet checked for consistency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The conversation the router files the delivery under;
    /// [`Delivery::check`] requires the header to name the same one.
    pub conversation: ConversationId,
    /// The position the router says the envelope was ordered at; the
    /// header does not carry it, the attested head binds it.
    pub index: Index,
    /// The envelope header as the sender made it.
    pub header: EnvelopeHeader,
    /// The body ciphertext, at most `MAX_BODY_BYTES`; [`Delivery::check`]
    /// requires it to match the header's body hash.
    pub body: Vec<u8>,
    /// This member's block and its position among all blocks, if any.
    pub block: Option<(u32, RecipientBlock)>,
    /// Digests of all blocks, in block order.
    pub block_digests: Vec<BlockDigest>,
    /// Attestations carrying this member's tags.
    pub attestations: Vec<Attestation>,
    /// The head before this index, when the router supplies it (used only
    /// by a member who joins at this index; everyone else uses its own).
    pub previous_head: Option<Head>,
    /// The envelope's history block (`docs/PROTOCOL.md` section 4.6), if
    /// the router delivered one; [`Delivery::check`] requires it to be the
    /// last digest's block.
    pub history_block: Option<Vec<u8>>,
}

/// Tags that arrived after an index was delivered: a delivery with no
/// header, body, block or digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagUpdate {
    /// The conversation of the index the tags are for.
    pub conversation: ConversationId,
    /// The already delivered index the tags are for.
    pub index: Index,
    /// Attestations carrying this member's tags for `index`, checked
    /// against its own head as on first delivery.
    pub attestations: Vec<Attestation>,
}

/// What the router sends for one index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// An envelope with the tags known so far.
    Envelope(Box<Delivery>),
    /// Later tags for an index.
    Tags(TagUpdate),
}

impl Incoming {
    /// The conversation the router files this under, whichever variant.
    pub fn conversation(&self) -> ConversationId {
        match self {
            Self::Envelope(d) => d.conversation,
            Self::Tags(t) => t.conversation,
        }
    }
}

/// Most attestations in one delivery: each server may repeat its tags a few
/// times (late tags), no more.
pub const MAX_ATTESTATIONS: usize = 4 * MAX_ORDER_SERVERS;

fn attestations(raw: Vec<pb::Attestation>) -> Result<Vec<Attestation>, WireError> {
    if raw.len() > MAX_ATTESTATIONS {
        return Err(WireError::TooMany {
            field: "delivery.attestations",
            max: MAX_ATTESTATIONS,
            got: raw.len(),
        });
    }
    raw.into_iter().map(Attestation::try_from).collect()
}

impl TryFrom<pb::Delivery> for Incoming {
    type Error = WireError;

    fn try_from(d: pb::Delivery) -> Result<Self, WireError> {
        if d.header.is_some() {
            return Delivery::try_from(d).map(|d| Self::Envelope(Box::new(d)));
        }
        if !d.body.is_empty() || d.block.is_some() || !d.block_digests.is_empty() {
            return Err(WireError::Invalid {
                field: "delivery.header",
                reason: "a delivery with a body, block or digests needs a header",
            });
        }
        Ok(Self::Tags(TagUpdate {
            conversation: ConversationId::parse("delivery.conversation_id", &d.conversation_id)?,
            index: Index(d.index),
            attestations: attestations(d.attestations)?,
        }))
    }
}

impl TryFrom<pb::Delivery> for Delivery {
    type Error = WireError;

    fn try_from(d: pb::Delivery) -> Result<Self, WireError> {
        let header =
            EnvelopeHeader::try_from(d.header.ok_or(WireError::MissingField("delivery.header"))?)?;
        if d.body.len() > MAX_BODY_BYTES {
            return Err(WireError::TooLarge {
                field: "delivery.body",
                max: MAX_BODY_BYTES,
                got: d.body.len(),
            });
        }
        if d.block_digests.len() > MAX_BLOCKS {
            return Err(WireError::TooMany {
                field: "delivery.block_digests",
                max: MAX_BLOCKS,
                got: d.block_digests.len(),
            });
        }
        let block = match d.block {
            None => None,
            Some(b) => {
                if b.ciphertext.len() > MAX_BLOCK_BYTES {
                    return Err(WireError::TooLarge {
                        field: "delivery.block.ciphertext",
                        max: MAX_BLOCK_BYTES,
                        got: b.ciphertext.len(),
                    });
                }
                Some((d.block_position, RecipientBlock::try_from(b)?))
            }
        };
        Ok(Self {
            conversation: ConversationId::parse("delivery.conversation_id", &d.conversation_id)?,
            index: Index(d.index),
            header,
            body: d.body,
            block,
            block_digests: d
                .block_digests
                .iter()
                .map(|b| BlockDigest::parse("delivery.block_digests", b))
                .collect::<Result<_, _>>()?,
            attestations: attestations(d.attestations)?,
            history_block: if d.history_block.is_empty() {
                None
            } else if d.history_block.len() > crate::history::HISTORY_BLOCK_LINK_LEN {
                return Err(WireError::TooLarge {
                    field: "delivery.history_block",
                    max: crate::history::HISTORY_BLOCK_LINK_LEN,
                    got: d.history_block.len(),
                });
            } else {
                Some(d.history_block)
            },
            previous_head: if d.previous_head.is_empty() {
                None
            } else {
                Some(Head::parse("delivery.previous_head", &d.previous_head)?)
            },
        })
    }
}

impl From<&Delivery> for pb::Delivery {
    fn from(d: &Delivery) -> Self {
        Self {
            conversation_id: d.conversation.to_vec(),
            index: d.index.0,
            header: Some((&d.header).into()),
            body: d.body.clone(),
            block: d.block.as_ref().map(|(_, b)| b.into()),
            block_position: d.block.as_ref().map_or(0, |(p, _)| *p),
            block_digests: d.block_digests.iter().map(BlockDigest::to_vec).collect(),
            attestations: d.attestations.iter().map(Into::into).collect(),
            history_block: d.history_block.clone().unwrap_or_default(),
            previous_head: d.previous_head.map(|h| h.to_vec()).unwrap_or_default(),
        }
    }
}

/// A self-consistent delivery with its recomputed envelope hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The delivery, unchanged, now known to be self-consistent.
    pub delivery: Delivery,
    /// The envelope hash recomputed from the header and all digests.
    pub envelope_hash: EnvelopeHash,
}

impl Delivery {
    /// Checks self-consistency and recomputes the envelope hash.
    pub fn check(self) -> Result<Received, Misbehaviour> {
        if self.header.conversation() != self.conversation {
            return Err(Misbehaviour::WrongContext);
        }
        if BodyHash::of(&self.body) != self.header.body_hash() {
            return Err(Misbehaviour::Malformed(WireError::Invalid {
                field: "delivery.body",
                reason: "body does not match the header's body hash",
            }));
        }
        if let Some((pos, block)) = &self.block {
            let listed = usize::try_from(*pos)
                .ok()
                .and_then(|p| self.block_digests.get(p));
            if listed != Some(&block.digest()) {
                return Err(Misbehaviour::BlockDigestMismatch);
            }
        }
        if let Some(history) = &self.history_block {
            let digest = RecipientBlock {
                recipient: grompi_proto::envelope::HISTORY_RECIPIENT,
                ciphertext: history.clone(),
            }
            .digest();
            if self.block_digests.last() != Some(&digest) {
                return Err(Misbehaviour::BlockDigestMismatch);
            }
        }
        let envelope_hash = EnvelopeHash::compute(&self.header.core_hash(), &self.block_digests);
        Ok(Received {
            delivery: self,
            envelope_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::envelope::HeaderFields;
    use grompi_proto::{EnvelopeKind, KeyCommitment, Sequence, SlotIndex};

    fn sample() -> Delivery {
        let body = b"body".to_vec();
        let header = EnvelopeHeader::new(HeaderFields {
            conversation: ConversationId::from_bytes([1; 32]),
            epoch: grompi_proto::Epoch(0),
            kind: EnvelopeKind::Message,
            sender: SlotIndex(0),
            sequence: Sequence(1),
            last_seen: None,
            body_hash: BodyHash::of(&body),
            key_commitment: KeyCommitment::from_bytes([2; 32]),
            slot_set_hash: None,
        })
        .unwrap();
        let block = RecipientBlock {
            recipient: SlotIndex(1),
            ciphertext: vec![3; 10],
        };
        let other = RecipientBlock {
            recipient: SlotIndex(2),
            ciphertext: vec![4; 10],
        };
        Delivery {
            conversation: ConversationId::from_bytes([1; 32]),
            index: Index(3),
            header,
            body,
            block: Some((1, block.clone())),
            block_digests: vec![other.digest(), block.digest()],
            attestations: vec![Attestation {
                server: 0,
                index: Index(3),
                head: Head::from_bytes([5; 32]),
                tags: vec![grompi_proto::Tag::from_bytes([6; 32])],
                next_tags: vec![],
                key_shares: Vec::new(),
                log_index: None,
            }],
            previous_head: None,
            history_block: None,
        }
    }

    #[test]
    fn wire_round_trip_and_tag_updates() {
        let d = sample();
        let wire = pb::Delivery::from(&d);
        assert_eq!(
            Incoming::try_from(wire.clone()).unwrap(),
            Incoming::Envelope(Box::new(d.clone()))
        );
        let tags = pb::Delivery {
            conversation_id: wire.conversation_id.clone(),
            index: 3,
            attestations: wire.attestations.clone(),
            ..Default::default()
        };
        assert_eq!(
            Incoming::try_from(tags).unwrap(),
            Incoming::Tags(TagUpdate {
                conversation: d.conversation,
                index: Index(3),
                attestations: d.attestations.clone()
            })
        );
        let headless_with_body = pb::Delivery {
            header: None,
            ..wire.clone()
        };
        assert!(Incoming::try_from(headless_with_body).is_err());
        let mut many = wire;
        many.attestations = vec![many.attestations[0].clone(); MAX_ATTESTATIONS + 1];
        assert!(matches!(
            Incoming::try_from(many),
            Err(WireError::TooMany { .. })
        ));
    }

    #[test]
    fn self_consistency_is_checked() {
        assert!(sample().check().is_ok());
        let mut d = sample();
        d.body.push(0);
        assert!(matches!(d.check(), Err(Misbehaviour::Malformed(_))));
        let mut d = sample();
        d.block.as_mut().unwrap().0 = 0;
        assert_eq!(d.check(), Err(Misbehaviour::BlockDigestMismatch));
        let mut d = sample();
        d.block.as_mut().unwrap().0 = 9;
        assert_eq!(d.check(), Err(Misbehaviour::BlockDigestMismatch));
        let mut d = sample();
        d.conversation = ConversationId::from_bytes([9; 32]);
        assert_eq!(d.check(), Err(Misbehaviour::WrongContext));
        // A history block must be the last digest's block.
        let mut d = sample();
        d.history_block = Some(vec![7; 49]);
        assert_eq!(d.check(), Err(Misbehaviour::BlockDigestMismatch));
        let mut d = sample();
        let history = RecipientBlock {
            recipient: grompi_proto::envelope::HISTORY_RECIPIENT,
            ciphertext: vec![7; 49],
        };
        d.block_digests.push(history.digest());
        d.history_block = Some(history.ciphertext);
        assert!(d.check().is_ok());
        // The envelope hash covers every digest, not only this member's.
        let a = sample().check().unwrap().envelope_hash;
        let mut d = sample();
        d.block_digests[0] = grompi_proto::BlockDigest::from_bytes([0; 32]);
        assert_ne!(d.check().unwrap().envelope_hash, a);
    }
}
