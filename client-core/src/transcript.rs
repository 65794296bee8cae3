//! The accepted transcript of one conversation: for every accepted index,
//! its epoch, envelope hash, head and which order servers have attested it.
//!
//! Indices are appended strictly in order, each head chaining onto the
//! previous one; nothing is ever replaced. A member who joins later starts
//! at the index that added it, from the head before it when known.

use grompi_proto::{ConversationId, EnvelopeHash, Epoch, Head, Index};

/// How well an accepted index is attested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttestationStatus {
    /// Fewer tags than the quorum (only for indices not yet accepted).
    Pending,
    /// At least the quorum, not yet every server.
    Quorum,
    /// Every pinned order server.
    Full,
}

/// One accepted index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The accepted position (0 is the Setup), global across epochs.
    pub index: Index,
    /// The epoch of the envelope.
    pub epoch: Epoch,
    /// The envelope hash accepted at this index, chained into `head`.
    pub envelope_hash: EnvelopeHash,
    /// The head after this index.
    pub head: Head,
    /// Bit `s` is set when order server `s` attested this index.
    pub attested_by: u32,
}

impl Entry {
    /// How many servers attested it.
    pub fn attestations(&self) -> u32 {
        self.attested_by.count_ones()
    }
}

/// The indices this member accepted, in order, each chaining onto the
/// head before it; nothing is ever replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    conversation: ConversationId,
    first: Index,
    anchor: Option<Head>,
    entries: Vec<Entry>,
}

impl Transcript {
    /// An empty transcript starting at index 0 from the genesis head.
    pub fn new(conversation: ConversationId) -> Self {
        Self {
            conversation,
            first: Index(0),
            anchor: Some(Head::genesis(&conversation)),
            entries: Vec::new(),
        }
    }

    /// An empty transcript whose first index is `first`, chaining from
    /// `anchor` (the head before `first`).
    pub fn starting_at(conversation: ConversationId, first: Index, anchor: Head) -> Self {
        Self {
            conversation,
            first,
            anchor: Some(anchor),
            entries: Vec::new(),
        }
    }

    /// A transcript that starts with `entry`, accepted on its attestations
    /// alone (a member that joins without learning the head before it).
    pub fn joined(conversation: ConversationId, entry: Entry) -> Self {
        Self {
            conversation,
            first: entry.index,
            anchor: None,
            entries: vec![entry],
        }
    }

    /// Rebuilds a transcript from its first index, anchor and entries (the
    /// encrypted local store); `None` when the entries do not chain.
    pub fn from_parts(
        conversation: ConversationId,
        first: Index,
        anchor: Option<Head>,
        entries: Vec<Entry>,
    ) -> Option<Self> {
        let mut t = Self {
            conversation,
            first,
            anchor,
            entries: Vec::new(),
        };
        let mut iter = entries.into_iter();
        if anchor.is_none() {
            // A joined transcript: its first entry is taken as attested.
            let e = iter.next()?;
            if e.index != first {
                return None;
            }
            t.entries.push(e);
        }
        for e in iter {
            if !t.append(e) {
                return None;
            }
        }
        Some(t)
    }

    /// The head before the first entry, when known.
    pub fn anchor(&self) -> Option<Head> {
        self.anchor
    }

    /// The conversation this transcript is of; every head chains from it.
    pub fn conversation(&self) -> ConversationId {
        self.conversation
    }

    /// The first index this member can hold.
    pub fn first(&self) -> Index {
        self.first
    }

    /// The index to accept next: `first` plus the number of accepted
    /// entries.
    pub fn next_index(&self) -> Index {
        Index(self.first.0.saturating_add(self.entries.len() as u64))
    }

    /// The last accepted entry; `None` until the first index is accepted.
    pub fn last(&self) -> Option<&Entry> {
        self.entries.last()
    }

    /// The head after the last accepted index (the anchor when none).
    pub fn head(&self) -> Head {
        match self.entries.last() {
            Some(e) => e.head,
            None => self
                .anchor
                .unwrap_or_else(|| Head::genesis(&self.conversation)),
        }
    }

    /// The accepted entry at `index`.
    pub fn get(&self, index: Index) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.first.0)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The head before `index` (for an accepted index or the next one).
    pub fn head_before(&self, index: Index) -> Option<Head> {
        if index == self.first {
            self.anchor
        } else {
            index
                .0
                .checked_sub(1)
                .and_then(|p| self.get(Index(p)))
                .map(|e| e.head)
        }
    }

    /// All accepted entries, in index order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends the next index. Returns false (and changes nothing) unless
    /// `entry` is at the next index and its head chains from the last one.
    pub fn append(&mut self, entry: Entry) -> bool {
        if entry.index != self.next_index()
            || entry.head
                != self.head().next(
                    &self.conversation,
                    entry.epoch,
                    entry.index,
                    &entry.envelope_hash,
                )
        {
            return false;
        }
        self.entries.push(entry);
        true
    }

    /// Records more attesting servers for an accepted index; returns the
    /// servers that were new.
    pub fn add_attesters(&mut self, index: Index, servers: u32) -> u32 {
        let Some(offset) = index.0.checked_sub(self.first.0) else {
            return 0;
        };
        let Some(e) = usize::try_from(offset)
            .ok()
            .and_then(|o| self.entries.get_mut(o))
        else {
            return 0;
        };
        let new = servers & !e.attested_by;
        e.attested_by |= servers;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_only_chaining_entries_in_order() {
        let c = ConversationId::from_bytes([1; 32]);
        let mut t = Transcript::new(c);
        let e = EnvelopeHash::from_bytes([2; 32]);
        let h0 = Head::genesis(&c).next(&c, Epoch(0), Index(0), &e);
        let entry = |index, head| Entry {
            index,
            epoch: Epoch(0),
            envelope_hash: e,
            head,
            attested_by: 1,
        };
        assert!(!t.append(entry(Index(1), h0)), "skips an index");
        assert!(
            !t.append(entry(Index(0), Head::from_bytes([0; 32]))),
            "head does not chain"
        );
        assert!(t.append(entry(Index(0), h0)));
        assert!(!t.append(entry(Index(0), h0)), "duplicate");
        assert_eq!(t.next_index(), Index(1));
        assert_eq!(t.head(), h0);
        assert_eq!(t.head_before(Index(0)), Some(Head::genesis(&c)));
        assert_eq!(t.head_before(Index(1)), Some(h0));
        assert_eq!(t.add_attesters(Index(0), 0b110), 0b110);
        assert_eq!(t.add_attesters(Index(0), 0b110), 0);
        assert_eq!(t.get(Index(0)).unwrap().attestations(), 3);
        assert_eq!(t.add_attesters(Index(5), 1), 0);
        // A joined transcript continues from its first entry.
        let e5 = Entry {
            index: Index(5),
            ..entry(Index(5), h0)
        };
        let mut j = Transcript::joined(c, e5);
        assert_eq!(
            (j.first(), j.next_index(), j.head_before(Index(5))),
            (Index(5), Index(6), None)
        );
        let h6 = h0.next(&c, Epoch(0), Index(6), &e);
        assert!(j.append(entry(Index(6), h6)));
    }
}
