//! Slots: the anonymous, single-use keys under which members (and padding)
//! appear to order servers in one conversation epoch.

use crate::WireError;
use crate::context;
use crate::encoding::Canonical;
use crate::fixed::fixed32;
use crate::ids::SlotIndex;
use crate::limits::MAX_SLOTS;

fixed32!(
    /// A slot's X25519 public key (an order key, used for one conversation
    /// epoch only).
    SlotKey
);

fixed32!(
    /// Hash of a slot set's keys and roles, in slot order: what a Setup's or Update's header names.
    SlotSetHash
);

/// The role a slot holds in its epoch. Padding slots hold [`SlotRole::Member`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotRole {
    /// May send messages and receipts.
    Member,
    /// May also send Update envelopes.
    Admin,
}

impl SlotRole {
    /// The code used in the canonical encoding and on the wire.
    pub const fn code(self) -> u8 {
        match self {
            Self::Member => 1,
            Self::Admin => 2,
        }
    }

    /// The role with this code, if any.
    pub const fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(Self::Member),
            2 => Some(Self::Admin),
            _ => None,
        }
    }
}

/// One slot: its key and role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotEntry {
    /// The slot's public order key.
    pub key: SlotKey,
    /// The slot's role.
    pub role: SlotRole,
}

/// The padded, shuffled slot set of one epoch: non-empty, at most
/// [`MAX_SLOTS`] entries, no key twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotSet {
    entries: Vec<SlotEntry>,
}

impl SlotSet {
    /// Builds a slot set, checking size and distinct keys.
    pub fn new(entries: Vec<SlotEntry>) -> Result<Self, WireError> {
        if entries.is_empty() {
            return Err(WireError::Invalid {
                field: "slots",
                reason: "a slot set has at least one slot",
            });
        }
        if entries.len() > MAX_SLOTS {
            return Err(WireError::TooMany {
                field: "slots",
                max: MAX_SLOTS,
                got: entries.len(),
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        if !entries.iter().all(|e| seen.insert(e.key)) {
            return Err(WireError::Invalid {
                field: "slots",
                reason: "the same key appears in two slots",
            });
        }
        Ok(Self { entries })
    }

    /// The entries in slot order.
    pub fn entries(&self) -> &[SlotEntry] {
        &self.entries
    }

    /// Whether some slot is an Admin's: without one no Update could ever
    /// be sent, so the membership could never change.
    pub fn has_admin(&self) -> bool {
        self.entries.iter().any(|e| e.role == SlotRole::Admin)
    }

    /// Number of slots, padding included: from 1 to [`MAX_SLOTS`].
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a slot set is never empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at `slot`, if it exists.
    pub fn get(&self, slot: SlotIndex) -> Option<&SlotEntry> {
        self.entries.get(slot.0 as usize)
    }

    /// The position of `key`, if present.
    pub fn position(&self, key: &SlotKey) -> Option<SlotIndex> {
        self.entries
            .iter()
            .position(|e| &e.key == key)
            .and_then(|p| u32::try_from(p).ok())
            .map(SlotIndex)
    }

    /// The hash that Setup and Update headers carry.
    pub fn hash(&self) -> SlotSetHash {
        let mut c = Canonical::new().count(self.entries.len());
        for e in &self.entries {
            c = c.fixed(e.key.as_bytes()).u8(e.role.code());
        }
        SlotSetHash::from_bytes(c.hash(context::SLOT_SET))
    }
}
