//! What the order server keeps per conversation and per attested index, and
//! the fixed byte layouts in which the stores keep them.

use grompi_proto::{
    ConversationId, EnvelopeHash, EnvelopeKind, Epoch, Head, Index, SlotEntry, SlotKey, SlotRole,
    SlotSet, SlotSetHash,
};

/// A stored value that does not decode: the database is damaged or was
/// written by an incompatible version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored {what} does not decode: {reason}")]
pub struct CorruptRecord {
    /// The kind of record that failed, such as `conversation state`, for
    /// the operator's log.
    pub what: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

const LAYOUT_VERSION: u8 = 1;

/// What an order server keeps for one conversation it opened, updated
/// with each index it attests; a store keeps it in a fixed layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConversationState {
    /// The conversation's current epoch: the one the next envelope must
    /// name. It goes up by one with each attested Update.
    pub epoch: Epoch,
    /// The next index to attest (the number of attested indices).
    pub next_index: Index,
    /// The head after the last attested index (the genesis head at first).
    pub head: Head,
    /// Hash of the current epoch's slot set.
    pub slot_set_hash: SlotSetHash,
    /// Number of slots in the current epoch.
    pub slot_count: u32,
}

impl ConversationState {
    /// The state right after opening `conversation` with `slots`.
    pub fn opened(conversation: &ConversationId, slots: &SlotSet) -> Self {
        Self {
            epoch: Epoch(0),
            next_index: Index(0),
            head: Head::genesis(conversation),
            slot_set_hash: slots.hash(),
            slot_count: u32::try_from(slots.len()).unwrap_or(u32::MAX),
        }
    }

    /// Encoded length.
    pub const ENCODED_LEN: usize = 1 + 8 + 8 + 32 + 32 + 4;

    /// The fixed layout: version, epoch, next index, head, slot set hash,
    /// slot count.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        out.push(LAYOUT_VERSION);
        out.extend_from_slice(&self.epoch.0.to_be_bytes());
        out.extend_from_slice(&self.next_index.0.to_be_bytes());
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(self.slot_set_hash.as_bytes());
        out.extend_from_slice(&self.slot_count.to_be_bytes());
        out
    }

    /// Decodes [`ConversationState::encode`]'s layout.
    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader::new("conversation state", bytes)?;
        let s = Self {
            epoch: Epoch(r.u64()?),
            next_index: Index(r.u64()?),
            head: Head::from_bytes(r.fixed()?),
            slot_set_hash: SlotSetHash::from_bytes(r.fixed()?),
            slot_count: r.u32()?,
        };
        r.end()?;
        Ok(s)
    }
}

/// What is kept for each attested index: enough to re-derive exactly the
/// tags that were returned for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexRecord {
    /// The epoch of the envelope (its attestation statement's epoch).
    pub epoch: Epoch,
    /// Its kind (an Update is also attested for the next epoch's slots).
    pub kind: EnvelopeKind,
    /// The envelope hash the server attested at this index. A request with
    /// the same hash gets the same tags again; another hash at this index is
    /// refused as `Equivocation`.
    pub envelope: EnvelopeHash,
    /// The chain head after this index, as returned in its tags.
    pub head: Head,
}

impl IndexRecord {
    /// Encoded length.
    pub const ENCODED_LEN: usize = 1 + 8 + 1 + 32 + 32;

    /// The fixed layout: version, epoch, kind code, envelope hash, head.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        out.push(LAYOUT_VERSION);
        out.extend_from_slice(&self.epoch.0.to_be_bytes());
        out.push(self.kind.code());
        out.extend_from_slice(self.envelope.as_bytes());
        out.extend_from_slice(self.head.as_bytes());
        out
    }

    /// Decodes [`IndexRecord::encode`]'s layout.
    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader::new("index record", bytes)?;
        let epoch = Epoch(r.u64()?);
        let kind = EnvelopeKind::from_code(i32::from(r.u8()?)).ok_or(CorruptRecord {
            what: "index record",
            reason: "unknown envelope kind",
        })?;
        let s = Self {
            epoch,
            kind,
            envelope: EnvelopeHash::from_bytes(r.fixed()?),
            head: Head::from_bytes(r.fixed()?),
        };
        r.end()?;
        Ok(s)
    }
}

/// Encodes a slot set: version, then key and role code per slot.
pub fn encode_slot_set(slots: &SlotSet) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + slots.len() * 33);
    out.push(LAYOUT_VERSION);
    for e in slots.entries() {
        out.extend_from_slice(e.key.as_bytes());
        out.push(e.role.code());
    }
    out
}

/// Decodes [`encode_slot_set`]'s layout.
pub fn decode_slot_set(bytes: &[u8]) -> Result<SlotSet, CorruptRecord> {
    const WHAT: &str = "slot set";
    let mut r = Reader::new(WHAT, bytes)?;
    let mut entries = Vec::with_capacity(r.remaining() / 33);
    while r.remaining() > 0 {
        let key = SlotKey::from_bytes(r.fixed()?);
        let role = SlotRole::from_code(i32::from(r.u8()?)).ok_or(CorruptRecord {
            what: WHAT,
            reason: "unknown slot role",
        })?;
        entries.push(SlotEntry { key, role });
    }
    SlotSet::new(entries).map_err(|_| CorruptRecord {
        what: WHAT,
        reason: "not a valid slot set",
    })
}

struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, bytes: &'a [u8]) -> Result<Self, CorruptRecord> {
        match bytes.split_first() {
            Some((&LAYOUT_VERSION, rest)) => Ok(Self { what, bytes: rest }),
            Some(_) => Err(CorruptRecord {
                what,
                reason: "unknown layout version",
            }),
            None => Err(CorruptRecord {
                what,
                reason: "empty",
            }),
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], CorruptRecord> {
        let (head, rest) = self.bytes.split_at_checked(N).ok_or(CorruptRecord {
            what: self.what,
            reason: "truncated",
        })?;
        self.bytes = rest;
        <[u8; N]>::try_from(head).map_err(|_| CorruptRecord {
            what: self.what,
            reason: "truncated",
        })
    }

    fn u8(&mut self) -> Result<u8, CorruptRecord> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, CorruptRecord> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, CorruptRecord> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn fixed(&mut self) -> Result<[u8; 32], CorruptRecord> {
        self.take()
    }

    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn end(&self) -> Result<(), CorruptRecord> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(CorruptRecord {
                what: self.what,
                reason: "trailing bytes",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn layouts_round_trip(e in any::<u64>(), n in any::<u64>(), h in any::<[u8; 32]>(), c in any::<u32>(), kind in 1i32..=5) {
            let s = ConversationState {
                epoch: Epoch(e), next_index: Index(n), head: Head::from_bytes(h),
                slot_set_hash: SlotSetHash::from_bytes([7; 32]), slot_count: c,
            };
            let enc = s.encode();
            prop_assert_eq!(enc.len(), ConversationState::ENCODED_LEN);
            prop_assert_eq!(ConversationState::decode(&enc).unwrap(), s);
            let r = IndexRecord {
                epoch: Epoch(e), kind: EnvelopeKind::from_code(kind).unwrap(),
                envelope: EnvelopeHash::from_bytes(h), head: Head::from_bytes([1; 32]),
            };
            prop_assert_eq!(IndexRecord::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ConversationState::decode(&bytes);
            let _ = IndexRecord::decode(&bytes);
            let _ = decode_slot_set(&bytes);
        }
    }

    #[test]
    fn truncated_and_trailing_are_refused() {
        let s = ConversationState::opened(
            &ConversationId::from_bytes([1; 32]),
            &SlotSet::new(vec![SlotEntry {
                key: SlotKey::from_bytes([2; 32]),
                role: SlotRole::Admin,
            }])
            .unwrap(),
        );
        let enc = s.encode();
        assert_eq!(
            ConversationState::decode(&enc[..enc.len() - 1])
                .unwrap_err()
                .reason,
            "truncated"
        );
        let mut long = enc.clone();
        long.push(0);
        assert_eq!(
            ConversationState::decode(&long).unwrap_err().reason,
            "trailing bytes"
        );
        let set = SlotSet::new(vec![SlotEntry {
            key: SlotKey::from_bytes([2; 32]),
            role: SlotRole::Admin,
        }])
        .unwrap();
        assert_eq!(decode_slot_set(&encode_slot_set(&set)).unwrap(), set);
    }
}
