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
    /// Audit log records ([`crate::audit_store::encode_record`]).
    audit: BTreeMap<u64, Vec<u8>>,
}

/// The number of keys `0..n` in a map that holds exactly those: its last
/// key plus one.
fn count<V>(map: &BTreeMap<u64, V>) -> u64 {
    map.last_key_value().map_or(0, |(k, _)| k.saturating_add(1))
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
}

impl MemTxn<'_> {
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
        Ok(count(&self.committed.audit))
    }
    fn audit_hash_count(&self) -> Result<u64, StoreError> {
        Ok(merkle::stored_hash_count(self.audit_entry_count()?))
    }
    fn audit_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.committed
            .audit
            .get(&index)
            .map(|r| audit_store::record_entry(r))
            .transpose()
    }
    fn audit_hash(&self, index: u64) -> Result<Option<[u8; 32]>, StoreError> {
        let Some((entry, offset)) = audit_store::hash_location(index) else {
            return Ok(None);
        };
        match self.committed.audit.get(&entry) {
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
        Ok(count(&self.overlay.audit).max(count(&self.base.committed.audit)))
    }
    fn audit_hash_count(&self) -> Result<u64, StoreError> {
        Ok(merkle::stored_hash_count(self.audit_entry_count()?))
    }
    fn audit_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        read(&self.overlay.audit, &self.base.committed.audit, &index)
            .map(|r| audit_store::record_entry(r))
            .transpose()
    }
    fn audit_hash(&self, index: u64) -> Result<Option<[u8; 32]>, StoreError> {
        let Some((entry, offset)) = audit_store::hash_location(index) else {
            return Ok(None);
        };
        match read(&self.overlay.audit, &self.base.committed.audit, &entry) {
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
    fn append_audit(
        &mut self,
        index: u64,
        entry: &[u8],
        first_hash_index: u64,
        hashes: &[grompi_tlog::Hash],
    ) -> Result<(), StoreError> {
        let count = self.audit_entry_count()?;
        audit_store::check_append(index, count, first_hash_index, hashes.len())?;
        let record = audit_store::encode_record(entry, hashes)?;
        self.overlay.audit.insert(index, record);
        Ok(())
    }
}
