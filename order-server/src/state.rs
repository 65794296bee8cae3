//! What the order server keeps per conversation and per attested index, and
//! the fixed byte layouts in which the stores keep them.

use grompi_proto::key_share::KeyPeriod;
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

/// The layout written before group keys: conversation states without the
/// epoch start and period length, index records without a key period (read
/// as a pairwise-keyed conversation's). Slot sets still use it.
const LAYOUT_VERSION: u8 = 1;
/// The layout with group keys' fields (`docs/PROTOCOL.md` section 4.5).
const LAYOUT_VERSION_2: u8 = 2;
/// An index record's layout with the index of its audit log entry.
const LAYOUT_VERSION_3: u8 = 3;

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
    /// The current epoch's first index (0 for the Setup's epoch; the index
    /// after the Update that opened it): key periods count from it.
    pub epoch_start: Index,
    /// Indices per key period in the current epoch, from the key start in
    /// its Setup or Update header; 0 for a pairwise-keyed epoch (no shares).
    pub period_length: u64,
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
            epoch_start: Index(0),
            period_length: 0,
        }
    }

    /// Encoded length.
    pub const ENCODED_LEN: usize = 1 + 8 + 8 + 32 + 32 + 4 + 8 + 8;

    /// The fixed layout: version (2), epoch, next index, head, slot set
    /// hash, slot count, epoch start, period length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        out.push(LAYOUT_VERSION_2);
        out.extend_from_slice(&self.epoch.0.to_be_bytes());
        out.extend_from_slice(&self.next_index.0.to_be_bytes());
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(self.slot_set_hash.as_bytes());
        out.extend_from_slice(&self.slot_count.to_be_bytes());
        out.extend_from_slice(&self.epoch_start.0.to_be_bytes());
        out.extend_from_slice(&self.period_length.to_be_bytes());
        out
    }

    /// Decodes [`ConversationState::encode`]'s layout, and the first layout
    /// (a pairwise-keyed conversation: no key periods).
    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let (version, mut r) = Reader::versioned("conversation state", bytes, LAYOUT_VERSION_2)?;
        let mut s = Self {
            epoch: Epoch(r.u64()?),
            next_index: Index(r.u64()?),
            head: Head::from_bytes(r.fixed()?),
            slot_set_hash: SlotSetHash::from_bytes(r.fixed()?),
            slot_count: r.u32()?,
            epoch_start: Index(0),
            period_length: 0,
        };
        if version == LAYOUT_VERSION_2 {
            s.epoch_start = Index(r.u64()?);
            s.period_length = r.u64()?;
        }
        r.end()?;
        Ok(s)
    }

    /// The key period `index` starts in the current epoch, if it is the
    /// first index of one: where this server hands out its key shares. The
    /// epoch's first period is handed out earlier, with the Setup (index 0,
    /// which starts epoch 0's first period itself) or with the Update that
    /// opened the epoch, so the first index after an Update starts none.
    pub fn period_started_at(&self, index: Index) -> Option<KeyPeriod> {
        let after_update = self.epoch.0 > 0 && index == self.epoch_start;
        if !after_update && KeyPeriod::starts_at(index, self.epoch_start, self.period_length) {
            KeyPeriod::of(index, self.epoch_start, self.period_length)
        } else {
            None
        }
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
    /// The key period whose shares this index's attestation carries, sealed
    /// for each slot, again on every retry: for a Setup the first period,
    /// for an Update the next epoch's first period (sealed for the next
    /// slots), for another index the period it starts, if it starts one
    /// after the epoch's first. `None` in a pairwise-keyed epoch.
    pub key_period: Option<KeyPeriod>,
    /// The index of this attestation's entry in the server's audit log;
    /// `None` when the server kept no log when it attested.
    pub log_index: Option<u64>,
}

impl IndexRecord {
    /// Encoded length without a log index.
    pub const ENCODED_LEN: usize = 1 + 8 + 1 + 32 + 32 + 1 + 8;
    /// Encoded length with a log index.
    pub const ENCODED_LEN_WITH_LOG: usize = Self::ENCODED_LEN + 8;

    /// The fixed layout: version (2, or 3 with a log index), epoch, kind
    /// code, envelope hash, head, then `0` or `1 || u64(period)` padded to 9
    /// bytes, then (version 3) `u64(log index)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN_WITH_LOG);
        out.push(if self.log_index.is_some() {
            LAYOUT_VERSION_3
        } else {
            LAYOUT_VERSION_2
        });
        out.extend_from_slice(&self.epoch.0.to_be_bytes());
        out.push(self.kind.code());
        out.extend_from_slice(self.envelope.as_bytes());
        out.extend_from_slice(self.head.as_bytes());
        match self.key_period {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(&p.0.to_be_bytes());
            }
            None => out.extend_from_slice(&[0; 9]),
        }
        if let Some(at) = self.log_index {
            out.extend_from_slice(&at.to_be_bytes());
        }
        out
    }

    /// Decodes [`IndexRecord::encode`]'s layout, and the first layout (no
    /// key period).
    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        const WHAT: &str = "index record";
        let (version, mut r) = Reader::versioned(WHAT, bytes, LAYOUT_VERSION_3)?;
        let epoch = Epoch(r.u64()?);
        let kind = EnvelopeKind::from_code(i32::from(r.u8()?)).ok_or(CorruptRecord {
            what: WHAT,
            reason: "unknown envelope kind",
        })?;
        let mut s = Self {
            epoch,
            kind,
            envelope: EnvelopeHash::from_bytes(r.fixed()?),
            head: Head::from_bytes(r.fixed()?),
            key_period: None,
            log_index: None,
        };
        if version >= LAYOUT_VERSION_2 {
            let flag = r.u8()?;
            let period = r.u64()?;
            s.key_period = match flag {
                0 if period == 0 => None,
                1 => Some(KeyPeriod(period)),
                _ => {
                    return Err(CorruptRecord {
                        what: WHAT,
                        reason: "bad key period field",
                    });
                }
            };
        }
        if version == LAYOUT_VERSION_3 {
            s.log_index = Some(r.u64()?);
        }
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
    /// A reader of a record in a layout from the first to `newest`, and
    /// which.
    fn versioned(
        what: &'static str,
        bytes: &'a [u8],
        newest: u8,
    ) -> Result<(u8, Self), CorruptRecord> {
        match bytes.split_first() {
            Some((&v, rest)) if (LAYOUT_VERSION..=newest).contains(&v) => {
                Ok((v, Self { what, bytes: rest }))
            }
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
        fn layouts_round_trip(e in any::<u64>(), n in any::<u64>(), h in any::<[u8; 32]>(), c in any::<u32>(), kind in 1i32..=6, start in any::<u64>(), p in any::<u64>(), period in proptest::option::of(any::<u64>())) {
            let s = ConversationState {
                epoch: Epoch(e), next_index: Index(n), head: Head::from_bytes(h),
                slot_set_hash: SlotSetHash::from_bytes([7; 32]), slot_count: c,
                epoch_start: Index(start), period_length: p,
            };
            let enc = s.encode();
            prop_assert_eq!(enc.len(), ConversationState::ENCODED_LEN);
            prop_assert_eq!(ConversationState::decode(&enc).unwrap(), s);
            let r = IndexRecord {
                epoch: Epoch(e), kind: EnvelopeKind::from_code(kind).unwrap(),
                envelope: EnvelopeHash::from_bytes(h), head: Head::from_bytes([1; 32]),
                key_period: period.map(KeyPeriod), log_index: None,
            };
            let enc = r.encode();
            prop_assert_eq!(enc.len(), IndexRecord::ENCODED_LEN);
            prop_assert_eq!(IndexRecord::decode(&enc).unwrap(), r);
            let logged = IndexRecord { log_index: Some(n), ..r };
            let enc = logged.encode();
            prop_assert_eq!(enc.len(), IndexRecord::ENCODED_LEN_WITH_LOG);
            prop_assert_eq!(enc[0], 3);
            prop_assert_eq!(IndexRecord::decode(&enc).unwrap(), logged);
            // A conversation state never takes the index record's layout 3.
            let mut state = s.encode();
            state[0] = 3;
            prop_assert!(ConversationState::decode(&state).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ConversationState::decode(&bytes);
            let _ = IndexRecord::decode(&bytes);
            let _ = decode_slot_set(&bytes);
        }
    }

    /// Records written before group keys still read, as a pairwise-keyed
    /// conversation's.
    #[test]
    fn first_layout_records_still_decode() {
        let mut old = vec![1u8];
        old.extend_from_slice(&3u64.to_be_bytes());
        old.extend_from_slice(&9u64.to_be_bytes());
        old.extend_from_slice(&[4; 32]);
        old.extend_from_slice(&[5; 32]);
        old.extend_from_slice(&2u32.to_be_bytes());
        let s = ConversationState::decode(&old).unwrap();
        assert_eq!(
            (s.epoch, s.next_index, s.slot_count),
            (Epoch(3), Index(9), 2)
        );
        assert_eq!((s.epoch_start, s.period_length), (Index(0), 0));
        assert_eq!(s.period_started_at(Index(9)), None);
        let mut old = vec![1u8];
        old.extend_from_slice(&3u64.to_be_bytes());
        old.push(2);
        old.extend_from_slice(&[6; 32]);
        old.extend_from_slice(&[7; 32]);
        let r = IndexRecord::decode(&old).unwrap();
        assert_eq!((r.kind, r.key_period), (EnvelopeKind::Message, None));
        let mut bad = r.encode();
        let at = bad.len() - 9;
        bad[at] = 2;
        assert_eq!(
            IndexRecord::decode(&bad).unwrap_err().reason,
            "bad key period field"
        );
    }

    #[test]
    fn periods_start_where_the_epoch_and_its_length_say() {
        let mut s = ConversationState::opened(
            &ConversationId::from_bytes([1; 32]),
            &SlotSet::new(vec![SlotEntry {
                key: SlotKey::from_bytes([2; 32]),
                role: SlotRole::Admin,
            }])
            .unwrap(),
        );
        assert_eq!(s.period_started_at(Index(0)), None, "pairwise: no periods");
        s.period_length = 10;
        s.epoch_start = Index(0);
        assert_eq!(s.period_started_at(Index(0)), Some(KeyPeriod(0)));
        s.epoch = Epoch(1);
        s.epoch_start = Index(5);
        assert_eq!(
            s.period_started_at(Index(5)),
            None,
            "an Update handed out the epoch's first period"
        );
        assert_eq!(s.period_started_at(Index(14)), None);
        assert_eq!(s.period_started_at(Index(25)), Some(KeyPeriod(2)));
        assert_eq!(s.period_started_at(Index(4)), None);
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
