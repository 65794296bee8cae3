//! The narrow storage interface the core works over.
//!
//! A write goes into the caller's open transaction; it becomes durable only
//! when the caller commits, and a crash before that loses it entirely. The
//! core never commits: the shell runs a whole batch of requests in one
//! transaction, commits it, and only then lets any answer leave.
//!
//! Implementations: [`crate::mem_store`] (tests, simulator; a dropped
//! transaction models a crash) and [`crate::redb_store`] (the server).

use crate::state::{ConversationState, CorruptRecord, IndexRecord};
use grompi_proto::{ConversationId, Epoch, Index, Sequence, SlotIndex, SlotSet};

/// Why the store failed. Any such failure but
/// [`StoreError::CommittedThenFailed`] aborts the whole batch: nothing of it
/// is committed and every request in it gets an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The storage backend failed.
    #[error("storage failed: {0}")]
    Backend(String),
    /// A stored value does not decode.
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    /// The stored data contradicts itself (for example an attested index
    /// without its record).
    #[error("stored state is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// The audit log refused an append or a read (it is full, an entry is
    /// too long, or its stored hashes do not add up).
    #[error("audit log: {0}")]
    AuditLog(String),
    /// There is no database to serve from.
    #[error(
        "database {0} does not exist. Only `order-server init` creates a database, together \
         with the key; a key without its database has attested before and its attestations \
         are lost, so serving from an empty database could attest a different envelope at \
         an index already attested. Restore the database with its write-ahead log, or \
         retire this key: init a new server and replace this one in the network descriptor"
    )]
    NoDatabase(String),
    /// The batch was committed and is on disk, but what follows a commit
    /// (the checkpoint, or the rollback anchor's update) failed: its
    /// answers may leave, and nothing more may be committed.
    #[error("storage failed after the batch was committed: {0}")]
    CommittedThenFailed(String),
}

/// Reads, within a transaction (or a read snapshot).
pub trait StoreRead {
    /// A conversation's state, if it was ever opened.
    fn conversation(&self, id: &ConversationId) -> Result<Option<ConversationState>, StoreError>;
    /// The slot set of one epoch of a conversation.
    fn slot_set(&self, id: &ConversationId, epoch: Epoch) -> Result<Option<SlotSet>, StoreError>;
    /// The last sequence number attested from a slot in an epoch.
    fn last_sequence(
        &self,
        id: &ConversationId,
        epoch: Epoch,
        slot: SlotIndex,
    ) -> Result<Option<Sequence>, StoreError>;
    /// The record of an attested index.
    fn record(&self, id: &ConversationId, index: Index) -> Result<Option<IndexRecord>, StoreError>;
    /// How many equivocation attempts were refused, ever (kept or not).
    fn evidence_total(&self) -> Result<u64, StoreError>;
    /// The evidence kept under `number` (0-based, in arrival order).
    fn evidence(&self, number: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// How many entries the audit log holds.
    fn audit_entry_count(&self) -> Result<u64, StoreError>;
    /// How many stored hashes the audit log holds.
    fn audit_hash_count(&self) -> Result<u64, StoreError>;
    /// Audit log entry `index`.
    fn audit_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Audit log stored hash `index` (numbered as
    /// [`grompi_tlog::merkle::stored_hash_index`]).
    fn audit_hash(&self, index: u64) -> Result<Option<[u8; 32]>, StoreError>;
}

/// Writes into an open transaction.
pub trait StoreWrite: StoreRead {
    /// Sets a conversation's state.
    fn put_conversation(
        &mut self,
        id: &ConversationId,
        state: &ConversationState,
    ) -> Result<(), StoreError>;
    /// Stores the slot set of one epoch.
    fn put_slot_set(
        &mut self,
        id: &ConversationId,
        epoch: Epoch,
        slots: &SlotSet,
    ) -> Result<(), StoreError>;
    /// Sets the last sequence number attested from a slot in an epoch.
    fn put_last_sequence(
        &mut self,
        id: &ConversationId,
        epoch: Epoch,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<(), StoreError>;
    /// Stores the record of a newly attested index.
    fn put_record(
        &mut self,
        id: &ConversationId,
        index: Index,
        record: &IndexRecord,
    ) -> Result<(), StoreError>;
    /// Keeps a refused request as evidence under `number`.
    fn put_evidence(&mut self, number: u64, evidence: &[u8]) -> Result<(), StoreError>;
    /// Sets the count of refused equivocation attempts.
    fn set_evidence_total(&mut self, total: u64) -> Result<(), StoreError>;
    /// Appends `entry` as the audit log's next entry, with the stored
    /// hashes its append completes, in this transaction, and returns its
    /// index: they become durable with the rest of the transaction, or not
    /// at all. Refuses an entry longer than 65535 bytes and a full log.
    fn append_audit_entry(&mut self, entry: &[u8]) -> Result<u64, StoreError>;
}
