//! Conversions between generated protobuf types ([`crate::pb`]) and domain
//! types. Parsing is the only way into a domain type from the wire, and it
//! checks everything a type promises: required fields present, fixed-length
//! fields exactly 32 bytes, lists and blobs within [`crate::limits`], enums
//! known. Conversions back to the wire cannot fail.

use crate::WireError;
use crate::chain::Head;
use crate::envelope::{
    BlockDigest, BodyHash, Envelope, EnvelopeHeader, EnvelopeKind, EnvelopeSummary, HeaderFields,
    HeaderKey, KeyCommitment, KeyId, KeyStart, RecipientBlock, Rn1Commitment, ShareServers,
};
use crate::ids::{ConversationId, Epoch, Index, ProofNonce, Sequence, SlotIndex};
use crate::limits::{MAX_BLOCK_BYTES, MAX_BLOCKS, MAX_BODY_BYTES, MAX_SLOTS};
use crate::mac::{Attestation, HeadProof, HeadProofStatement, Tag};
use crate::pb;
use crate::slots::{SlotEntry, SlotKey, SlotRole, SlotSet, SlotSetHash};

/// The gRPC metadata key that carries a client's session token to the
/// router (64 hex digits) on every authenticated call.
pub const SESSION_METADATA: &str = "x-grompi-session";

/// Decodes protobuf bytes and parses them into a domain type.
pub fn decode<P, T>(bytes: &[u8]) -> Result<T, WireError>
where
    P: prost::Message + Default,
    T: TryFrom<P, Error = WireError>,
{
    T::try_from(P::decode(bytes)?)
}

/// Encodes a domain type as protobuf bytes.
pub fn encode<P, T>(value: &T) -> Vec<u8>
where
    P: prost::Message + for<'a> From<&'a T>,
{
    prost::Message::encode_to_vec(&P::from(value))
}

fn required<T>(field: &'static str, value: Option<T>) -> Result<T, WireError> {
    value.ok_or(WireError::MissingField(field))
}

fn at_most<T>(field: &'static str, items: &[T], max: usize) -> Result<(), WireError> {
    if items.len() > max {
        Err(WireError::TooMany {
            field,
            max,
            got: items.len(),
        })
    } else {
        Ok(())
    }
}

fn blob_at_most(field: &'static str, bytes: &[u8], max: usize) -> Result<(), WireError> {
    if bytes.len() > max {
        Err(WireError::TooLarge {
            field,
            max,
            got: bytes.len(),
        })
    } else {
        Ok(())
    }
}

fn tags(field: &'static str, raw: &[Vec<u8>]) -> Result<Vec<Tag>, WireError> {
    at_most(field, raw, MAX_SLOTS)?;
    raw.iter().map(|t| Tag::parse(field, t)).collect()
}

fn key_shares(
    field: &'static str,
    raw: &[Vec<u8>],
) -> Result<Vec<crate::key_share::WrappedShare>, WireError> {
    at_most(field, raw, MAX_SLOTS)?;
    raw.iter()
        .map(|s| {
            crate::key_share::WrappedShare::try_from(&s[..]).map_err(|_| WireError::WrongLength {
                field,
                expected: crate::key_share::WRAPPED_SHARE_BYTES,
                got: s.len(),
            })
        })
        .collect()
}

impl TryFrom<pb::EnvelopeHeader> for EnvelopeHeader {
    type Error = WireError;

    fn try_from(h: pb::EnvelopeHeader) -> Result<Self, WireError> {
        let kind = EnvelopeKind::from_code(h.kind).ok_or(WireError::UnknownEnum {
            field: "header.kind",
            value: h.kind,
        })?;
        let slot_set_hash = if h.slot_set_hash.is_empty() {
            None
        } else {
            Some(SlotSetHash::parse(
                "header.slot_set_hash",
                &h.slot_set_hash,
            )?)
        };
        let key = match (h.key_start, h.key_id) {
            (None, None) => HeaderKey::None,
            (Some(k), None) => HeaderKey::Start(KeyStart::new(
                k.generation,
                k.period_length,
                Rn1Commitment::parse("header.key_start.rn1_commitment", &k.rn1_commitment)?,
            )?),
            (None, Some(id)) => HeaderKey::Id(KeyId {
                generation: id.generation,
                period: id.period,
                servers: ShareServers::new(id.servers)?,
            }),
            (Some(_), Some(_)) => {
                return Err(WireError::Invalid {
                    field: "header.key_id",
                    reason: "a header carries a key start or a key id, not both",
                });
            }
        };
        EnvelopeHeader::new(HeaderFields {
            conversation: ConversationId::parse("header.conversation_id", &h.conversation_id)?,
            epoch: Epoch(h.epoch),
            kind,
            sender: SlotIndex(h.sender_slot),
            sequence: Sequence(h.sequence),
            last_seen: h.last_seen_index.map(Index),
            body_hash: BodyHash::parse("header.body_hash", &h.body_hash)?,
            key_commitment: KeyCommitment::parse("header.key_commitment", &h.key_commitment)?,
            slot_set_hash,
        })?
        .with_key(key)
    }
}

impl From<&EnvelopeHeader> for pb::EnvelopeHeader {
    fn from(h: &EnvelopeHeader) -> Self {
        Self {
            conversation_id: h.conversation().to_vec(),
            epoch: h.epoch().0,
            kind: i32::from(h.kind().code()),
            sender_slot: h.sender().0,
            sequence: h.sequence().0,
            last_seen_index: h.last_seen().map(|i| i.0),
            body_hash: h.body_hash().to_vec(),
            key_commitment: h.key_commitment().to_vec(),
            slot_set_hash: h.slot_set_hash().map(|s| s.to_vec()).unwrap_or_default(),
            key_start: match h.key() {
                HeaderKey::Start(k) => Some(pb::KeyStart {
                    generation: k.generation(),
                    period_length: k.period_length(),
                    rn1_commitment: k.rn1_commitment().to_vec(),
                }),
                _ => None,
            },
            key_id: match h.key() {
                HeaderKey::Id(id) => Some(pb::KeyId {
                    generation: id.generation,
                    period: id.period,
                    servers: id.servers.bits(),
                }),
                _ => None,
            },
        }
    }
}

impl TryFrom<pb::RecipientBlock> for RecipientBlock {
    type Error = WireError;

    fn try_from(b: pb::RecipientBlock) -> Result<Self, WireError> {
        blob_at_most("block.ciphertext", &b.ciphertext, MAX_BLOCK_BYTES)?;
        Ok(Self {
            recipient: SlotIndex(b.recipient_slot),
            ciphertext: b.ciphertext,
        })
    }
}

impl From<&RecipientBlock> for pb::RecipientBlock {
    fn from(b: &RecipientBlock) -> Self {
        Self {
            recipient_slot: b.recipient.0,
            ciphertext: b.ciphertext.clone(),
        }
    }
}

impl TryFrom<pb::Envelope> for Envelope {
    type Error = WireError;

    fn try_from(e: pb::Envelope) -> Result<Self, WireError> {
        let header = EnvelopeHeader::try_from(required("envelope.header", e.header)?)?;
        blob_at_most("envelope.body", &e.body, MAX_BODY_BYTES)?;
        at_most("envelope.blocks", &e.blocks, MAX_BLOCKS)?;
        let blocks = e
            .blocks
            .into_iter()
            .map(RecipientBlock::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Envelope::new(header, e.body, blocks)
    }
}

impl From<&Envelope> for pb::Envelope {
    fn from(e: &Envelope) -> Self {
        Self {
            header: Some(e.header().into()),
            body: e.body().to_vec(),
            blocks: e.blocks().iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::EnvelopeSummary> for EnvelopeSummary {
    type Error = WireError;

    fn try_from(s: pb::EnvelopeSummary) -> Result<Self, WireError> {
        let header = EnvelopeHeader::try_from(required("summary.header", s.header)?)?;
        at_most("summary.block_digests", &s.block_digests, MAX_BLOCKS)?;
        let block_digests = s
            .block_digests
            .iter()
            .map(|d| BlockDigest::parse("summary.block_digests", d))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            header,
            block_digests,
        })
    }
}

impl From<&EnvelopeSummary> for pb::EnvelopeSummary {
    fn from(s: &EnvelopeSummary) -> Self {
        Self {
            header: Some((&s.header).into()),
            block_digests: s.block_digests.iter().map(BlockDigest::to_vec).collect(),
        }
    }
}

impl TryFrom<pb::SlotEntry> for SlotEntry {
    type Error = WireError;

    fn try_from(e: pb::SlotEntry) -> Result<Self, WireError> {
        Ok(Self {
            key: SlotKey::parse("slot.key", &e.key)?,
            role: SlotRole::from_code(e.role).ok_or(WireError::UnknownEnum {
                field: "slot.role",
                value: e.role,
            })?,
        })
    }
}

impl From<&SlotEntry> for pb::SlotEntry {
    fn from(e: &SlotEntry) -> Self {
        Self {
            key: e.key.to_vec(),
            role: i32::from(e.role.code()),
        }
    }
}

impl TryFrom<pb::SlotSet> for SlotSet {
    type Error = WireError;

    fn try_from(s: pb::SlotSet) -> Result<Self, WireError> {
        at_most("slots", &s.slots, MAX_SLOTS)?;
        SlotSet::new(
            s.slots
                .into_iter()
                .map(SlotEntry::try_from)
                .collect::<Result<Vec<_>, _>>()?,
        )
    }
}

impl From<&SlotSet> for pb::SlotSet {
    fn from(s: &SlotSet) -> Self {
        Self {
            slots: s.entries().iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::Attestation> for Attestation {
    type Error = WireError;

    fn try_from(a: pb::Attestation) -> Result<Self, WireError> {
        Ok(Self {
            server: a.server,
            index: Index(a.index),
            head: Head::parse("attestation.head", &a.head)?,
            tags: tags("attestation.tags", &a.tags)?,
            next_tags: tags("attestation.next_tags", &a.next_tags)?,
            key_shares: key_shares("attestation.key_shares", &a.key_shares)?,
            log_index: a.log_index,
        })
    }
}

impl From<&Attestation> for pb::Attestation {
    fn from(a: &Attestation) -> Self {
        Self {
            server: a.server,
            index: a.index.0,
            head: a.head.to_vec(),
            tags: a.tags.iter().map(Tag::to_vec).collect(),
            next_tags: a.next_tags.iter().map(Tag::to_vec).collect(),
            key_shares: a.key_shares.iter().map(|s| s.0.to_vec()).collect(),
            log_index: a.log_index,
        }
    }
}

impl TryFrom<pb::HeadProof> for HeadProof {
    type Error = WireError;

    fn try_from(p: pb::HeadProof) -> Result<Self, WireError> {
        Ok(Self {
            server: p.server,
            statement: HeadProofStatement {
                conversation: ConversationId::parse("proof.conversation_id", &p.conversation_id)?,
                epoch: Epoch(p.epoch),
                count: p.count,
                head: Head::parse("proof.head", &p.head)?,
                nonce: ProofNonce::parse("proof.nonce", &p.nonce)?,
            },
            tag: Tag::parse("proof.tag", &p.tag)?,
        })
    }
}

impl From<&HeadProof> for pb::HeadProof {
    fn from(p: &HeadProof) -> Self {
        Self {
            server: p.server,
            conversation_id: p.statement.conversation.to_vec(),
            epoch: p.statement.epoch.0,
            count: p.statement.count,
            head: p.statement.head.to_vec(),
            nonce: p.statement.nonce.to_vec(),
            tag: p.tag.to_vec(),
        }
    }
}
