//! An in-memory store for tests and the simulator.
//!
//! [`MemStore`] holds only committed data. A [`MemTxn`] collects writes in
//! an overlay; [`MemTxn::commit`] applies them, and dropping the transaction
//! without committing discards them, which is exactly what a power loss
//! does to an uncommitted redb transaction.

use crate::audit_store;
use crate::state::{ConversationState, IndexRecord};
use crate::store::{StoreError, StoreRead, StoreWrite};
use grompi_proto::{ConversationId, Epoch, Index, Sequence, SlotIndex, SlotSet};
use grompi_tlog::merkle;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
struct Tables {
    conversations: BTreeMap<ConversationId, ConversationState>,
    slot_sets: BTreeMap<(ConversationId, Epoch), SlotSet>,
    sequences: BTreeMap<(ConversationId, Epoch, SlotIndex), Sequence>,
    records: BTreeMap<(ConversationId, Index), IndexRecord>,
    evidence: BTreeMap<u64, Vec<u8>>,
    evidence_total: Option<u64>,
    /// Audit log records ([`crate::audit_store::encode_record`]): in the
    /// committed tables from entry 0, in a transaction's overlay from the
    /// committed entry count.
    audit: AuditRecords,
}

/// Consecutive audit log records, end to end in one buffer.
#[derive(Clone, Debug, Default)]
struct AuditRecords {
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
}

impl AuditRecords {
    fn len(&self) -> u64 {
        self.ends.len() as u64
    }

    /// Record number `at` (from this buffer's first).
    fn get(&self, at: u64) -> Option<&[u8]> {
        let at = usize::try_from(at).ok()?;
        let end = *self.ends.get(at)?;
        let start = match at.checked_sub(1) {
            Some(before) => *self.ends.get(before)?,
            None => 0,
        };
        self.bytes.get(start..end)
    }

    fn extend(&mut self, o: AuditRecords) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&o.bytes);
        self.ends.extend(o.ends.into_iter().map(|e| e + base));
    }
}

impl Tables {
    fn apply(&mut self, o: Tables) {
        self.conversations.extend(o.conversations);
        self.slot_sets.extend(o.slot_sets);
        self.sequences.extend(o.sequences);
        self.records.extend(o.records);
        self.evidence.extend(o.evidence);
        if o.evidence_total.is_some() {
            self.evidence_total = o.evidence_total;
        }
        self.audit.extend(o.audit);
    }

    /// Audit log record `index`, from an overlay whose records start at
    /// `first` or from the committed `base`.
    fn audit_record<'a>(&'a self, first: u64, base: &'a Tables, index: u64) -> Option<&'a [u8]> {
        match index.checked_sub(first) {
            Some(at) => self.audit.get(at),
            None => base.audit.get(index),
        }
    }
}

/// Committed state, in memory.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    committed: Tables,
    commits: u64,
}

impl MemStore {
    /// An empty store, kept in memory only (tests, benchmarks, the simulator);
    /// nothing survives the process.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins a write transaction.
    pub fn begin(&mut self) -> MemTxn<'_> {
        MemTxn {
            base: self,
            overlay: Tables::default(),
            frontier: audit_store::Frontier::new(),
        }
    }

    /// How many transactions were committed.
    pub fn commits(&self) -> u64 {
        self.commits
    }
}

/// A write transaction over a [`MemStore`].
pub struct MemTxn<'a> {
    base: &'a mut MemStore,
    overlay: Tables,
    /// The audit log's right edge in this transaction (dropped with it).
    frontier: audit_store::Frontier,
}

impl MemTxn<'_> {
    fn audit_record(&self, index: u64) -> Option<&[u8]> {
        self.overlay
            .audit_record(self.base.committed.audit.len(), &self.base.committed, index)
    }

    /// Makes every write of this transaction part of the committed state.
    pub fn commit(self) {
        let overlay = self.overlay;
        self.base.committed.apply(overlay);
        self.base.commits += 1;
    }
}

fn read<'a, K: Ord, V>(
    overlay: &'a BTreeMap<K, V>,
    base: &'a BTreeMap<K, V>,
    key: &K,
) -> Option<&'a V> {
    overlay.get(key).or_else(|| base.get(key))
}

impl StoreRead for MemStore {
    fn conversation(&self, id: &ConversationId) -> Result<Option<ConversationState>, StoreError> {
        Ok(self.committed.conversations.get(id).copied())
    }
    fn slot_set(&self, id: &ConversationId, epoch: Epoch) -> Result<Option<SlotSet>, StoreError> {
        Ok(self.committed.slot_sets.get(&(*id, epoch)).cloned())
    }
    fn last_sequence(
        &self,
        id: &ConversationId,
        epoch: Epoch,
        slot: SlotIndex,
    ) -> Result<Option<Sequence>, StoreError> {
        Ok(self.committed.sequences.get(&(*id, epoch, slot)).copied())
    }
    fn record(&self, id: &ConversationId, index: Index) -> Result<Option<IndexRecord>, StoreError> {
        Ok(self.committed.records.get(&(*id, index)).copied())
    }
    fn evidence_total(&self) -> Result<u64, StoreError> {
        Ok(self.committed.evidence_total.unwrap_or(0))
    }
    fn evidence(&self, number: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.committed.evidence.get(&number).cloned())
    }
    fn audit_entry_count(&self) -> Result<u64, StoreError> {
        Ok(self.committed.audit.len())
    }
    fn audit_hash_count(&self) -> Result<u64, StoreError> {
        Ok(merkle::stored_hash_count(self.audit_entry_count()?))
    }
    fn audit_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.committed
            .audit
            .get(index)
            .map(audit_store::record_entry)
            .transpose()
    }
    fn audit_hash(&self, index: u64) -> Result<Option<[u8; 32]>, StoreError> {
        let Some((entry, offset)) = audit_store::hash_location(index) else {
            return Ok(None);
        };
        match self.committed.audit.get(entry) {
            Some(r) => audit_store::record_hash(r, offset),
            None => Ok(None),
        }
    }
}

impl StoreRead for MemTxn<'_> {
    fn conversation(&self, id: &ConversationId) -> Result<Option<ConversationState>, StoreError> {
        Ok(read(
            &self.overlay.conversations,
            &self.base.committed.conversations,
            id,
        )
        .copied())
    }
    fn slot_set(&self, id: &ConversationId, epoch: Epoch) -> Result<Option<SlotSet>, StoreError> {
        Ok(read(
            &self.overlay.slot_sets,
            &self.base.committed.slot_sets,
            &(*id, epoch),
        )
        .cloned())
    }
    fn last_sequence(
        &self,
        id: &ConversationId,
        epoch: Epoch,
        slot: SlotIndex,
    ) -> Result<Option<Sequence>, StoreError> {
        Ok(read(
            &self.overlay.sequences,
            &self.base.committed.sequences,
            &(*id, epoch, slot),
        )
        .copied())
    }
    fn record(&self, id: &ConversationId, index: Index) -> Result<Option<IndexRecord>, StoreError> {
        Ok(read(
            &self.overlay.records,
            &self.base.committed.records,
            &(*id, index),
        )
        .copied())
    }
    fn evidence_total(&self) -> Result<u64, StoreError> {
        Ok(self
            .overlay
            .evidence_total
            .or(self.base.committed.evidence_total)
            .unwrap_or(0))
    }
    fn evidence(&self, number: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(read(
            &self.overlay.evidence,
            &self.base.committed.evidence,
            &number,
        )
        .cloned())
    }
    fn audit_entry_count(&self) -> Result<u64, StoreError> {
        Ok(self.base.committed.audit.len() + self.overlay.audit.len())
    }
    fn audit_hash_count(&self) -> Result<u64, StoreError> {
        Ok(merkle::stored_hash_count(self.audit_entry_count()?))
    }
    fn audit_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.audit_record(index)
            .map(audit_store::record_entry)
            .transpose()
    }
    fn audit_hash(&self, index: u64) -> Result<Option<[u8; 32]>, StoreError> {
        let Some((entry, offset)) = audit_store::hash_location(index) else {
            return Ok(None);
        };
        match self.audit_record(entry) {
            Some(r) => audit_store::record_hash(r, offset),
            None => Ok(None),
        }
    }
}

impl StoreWrite for MemTxn<'_> {
    fn put_conversation(
        &mut self,
        id: &ConversationId,
        state: &ConversationState,
    ) -> Result<(), StoreError> {
        self.overlay.conversations.insert(*id, *state);
        Ok(())
    }
    fn put_slot_set(
        &mut self,
        id: &ConversationId,
        epoch: Epoch,
        slots: &SlotSet,
    ) -> Result<(), StoreError> {
        self.overlay.slot_sets.insert((*id, epoch), slots.clone());
        Ok(())
    }
    fn put_last_sequence(
        &mut self,
        id: &ConversationId,
        epoch: Epoch,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<(), StoreError> {
        self.overlay.sequences.insert((*id, epoch, slot), sequence);
        Ok(())
    }
    fn put_record(
        &mut self,
        id: &ConversationId,
        index: Index,
        record: &IndexRecord,
    ) -> Result<(), StoreError> {
        self.overlay.records.insert((*id, index), *record);
        Ok(())
    }
    fn put_evidence(&mut self, number: u64, evidence: &[u8]) -> Result<(), StoreError> {
        self.overlay.evidence.insert(number, evidence.to_vec());
        Ok(())
    }
    fn set_evidence_total(&mut self, total: u64) -> Result<(), StoreError> {
        self.overlay.evidence_total = Some(total);
        Ok(())
    }
    fn append_audit_entry(&mut self, entry: &[u8]) -> Result<u64, StoreError> {
        let count = self.audit_entry_count()?;
        let committed = &self.base.committed;
        let audit = &mut self.overlay.audit;
        self.frontier.append(count, entry, &mut audit.bytes, |at| {
            let Some((entry, offset)) = audit_store::hash_location(at) else {
                return Ok(None);
            };
            match committed.audit.get(entry) {
                Some(r) => audit_store::record_hash(r, offset),
                None => Ok(None),
            }
        })?;
        audit.ends.push(audit.bytes.len());
        Ok(count)
    }
}
