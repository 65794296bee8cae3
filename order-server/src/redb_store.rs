//! The durable store: one redb database file and its write-ahead log.
//!
//! Commits go through [`grompi_ops::logged_db`]: a batch's changes are
//! appended to the write-ahead log (`order.wal` next to `order.redb`) and
//! synced (`fdatasync`) *before* the same changes are committed to redb
//! without an fsync. So when [`RedbStore::commit`] returns, the batch is on
//! disk, and no reader (a head proof, a `GetProgress`) can see a change that
//! a crash could still undo. Checkpoints (durable redb commits) restart the
//! log; opening the store replays it. A redb durable commit leaves either
//! the previous or the new state after a crash, never a mix; the log's
//! records are checksummed and read up to the first torn one.
//!
//! Only `order-server init` creates the database ([`RedbStore::create`]);
//! `serve` opens it with [`RedbStore::open_existing`], which refuses a
//! missing database, a log that does not belong to it (missing, empty,
//! zeroed, another database's, ahead of it, damaged in the middle), and a
//! database behind its rollback anchor: each of these would otherwise let
//! the server forget attestations and attest a different envelope at an
//! index it already attested.
//!
//! The log exists because a durable redb commit costs about three times an
//! `fdatasync` of an append when several processes share a disk. sled was
//! considered and rejected: its
//! `flush` is `sync_file_range`, not an fsync, and it has had no stable
//! release since 2021; an order server that forgets its last attestation
//! after a power loss could re-attest a different envelope at that index.
//!
//! | table | key | value |
//! |---|---|---|
//! | `chain` | conversation id, `0x00`, index (BE) | [`IndexRecord`] layout |
//! | `chain` | conversation id, `0x01` | [`ConversationState`] layout |
//! | `chain` | conversation id, `0x02`, epoch (BE), slot (BE) | last sequence (BE) |
//! | `opened` | conversation id | nothing: the conversation was opened |
//! | `slot_sets` | conversation id, epoch (BE) | slot set layout |
//! | `evidence` | number | encoded `AttestItem` of a refused equivocation |
//! | `meta` | name | value (`evidence_total`, `server_public_key`) |
//! | `audit_log` | index of a transaction's first audit log entry | `u32(count)`, then per entry of the transaction the entry ([`crate::audit_entry`]) and the node hashes its append computed ([`crate::audit_store::encode_record`]) |
//! | `wal` | `generation`, `chain_counter`, `anchored` | the log's generation, the commit chain's counter, whether a rollback anchor was made (owned by [`grompi_ops::logged_db`]) |
//! | `wal_ids` | `database_id`, `chain_hash` | the id the log is bound to, the commit chain's hash (same owner) |
//!
//! Everything one attestation writes lives in `chain` under keys that start
//! with its conversation id, and the state key sorts right after the newest
//! record: a batch touches about one leaf page per conversation, which is
//! what makes group commit cheap.

use crate::state::{ConversationState, IndexRecord, decode_slot_set, encode_slot_set};
use crate::store::{StoreError, StoreRead, StoreWrite};
use grompi_ops::logged_db::{LogMetrics, LoggedDatabase, LoggedDbError};
use grompi_ops::wal::{KvBatch, KvOp};
use grompi_proto::{ConversationId, Epoch, Index, OrderServerKey, Sequence, SlotIndex, SlotSet};
use redb::{
    ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use std::path::Path;

const CHAIN: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chain");
const OPENED: TableDefinition<&[u8; 32], ()> = TableDefinition::new("opened");
const SLOT_SETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("slot_sets");
const EVIDENCE: TableDefinition<u64, &[u8]> = TableDefinition::new("evidence");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const AUDIT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_log");

const EVIDENCE_TOTAL: &str = "evidence_total";
const SERVER_PUBLIC_KEY: &str = "server_public_key";

// Table numbers in the write-ahead log.
const T_CHAIN: u8 = 0;
const T_OPENED: u8 = 1;
const T_SLOT_SETS: u8 = 2;
const T_EVIDENCE: u8 = 3;
const T_META: u8 = 4;
const T_AUDIT_LOG: u8 = 5;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl From<LoggedDbError> for StoreError {
    fn from(e: LoggedDbError) -> Self {
        if e.batch_committed() {
            StoreError::CommittedThenFailed(e.to_string())
        } else {
            backend(e)
        }
    }
}

fn epoch_key(id: &ConversationId, epoch: Epoch) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(id.as_bytes());
    k[32..].copy_from_slice(&epoch.0.to_be_bytes());
    k
}

const RECORD_TAG: u8 = 0;
const STATE_TAG: u8 = 1;
const SEQUENCE_TAG: u8 = 2;

fn record_key(id: &ConversationId, index: Index) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[..32].copy_from_slice(id.as_bytes());
    k[32] = RECORD_TAG;
    k[33..].copy_from_slice(&index.0.to_be_bytes());
    k
}

fn state_key(id: &ConversationId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..32].copy_from_slice(id.as_bytes());
    k[32] = STATE_TAG;
    k
}

fn sequence_key(id: &ConversationId, epoch: Epoch, slot: SlotIndex) -> [u8; 45] {
    let mut k = [0u8; 45];
    k[..32].copy_from_slice(id.as_bytes());
    k[32] = SEQUENCE_TAG;
    k[33..41].copy_from_slice(&epoch.0.to_be_bytes());
    k[41..].copy_from_slice(&slot.0.to_be_bytes());
    k
}

fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Inconsistent("a stored counter is not 8 bytes"))
}

/// The redb database of an order server, with its write-ahead log.
pub struct RedbStore {
    db: LoggedDatabase,
}

pub use grompi_ops::wal::path_for as wal_path;

fn metrics() -> LogMetrics {
    LogMetrics {
        bytes: crate::telemetry::WAL_BYTES,
        checkpoints: crate::telemetry::WAL_CHECKPOINTS,
        checkpoint_seconds: crate::telemetry::WAL_CHECKPOINT_SECONDS,
    }
}

fn replay(txn: &WriteTransaction, ops: Vec<KvOp>) -> Result<(), StoreError> {
    let mut w = RedbWrite::open(txn)?;
    for op in ops {
        w.replay(op)?;
    }
    Ok(())
}

impl RedbStore {
    /// Creates the database of a new order server at `path` and its
    /// write-ahead log, with every table, recording the server's public
    /// key. Refuses if either file exists. Only `order-server init` calls
    /// this: a database that disappeared is never silently replaced.
    pub fn create(path: &Path, key: &OrderServerKey) -> Result<Self, StoreError> {
        let db = LoggedDatabase::create(path, metrics(), |txn| {
            RedbWrite::open(txn)?;
            txn.open_table(META)
                .map_err(backend)?
                .insert(SERVER_PUBLIC_KEY, key.as_bytes().as_slice())
                .map_err(backend)?;
            Ok::<_, StoreError>(())
        })?;
        Ok(Self { db })
    }

    /// Opens the existing database at `path` and its write-ahead log for
    /// serving: replays the log over the last durable commit, checks the
    /// result against the rollback anchor at `anchor` (creating it on the
    /// first anchored open), and checkpoints. Refuses a missing database
    /// ([`StoreError::NoDatabase`]), a missing, damaged or foreign log, a
    /// database older than its log, and one behind the anchor; each refusal
    /// says what is wrong. redb recovers from an unclean shutdown here if it
    /// must.
    pub fn open_existing(path: &Path, anchor: Option<&Path>) -> Result<Self, StoreError> {
        if !path.exists() && !wal_path(path).exists() {
            return Err(StoreError::NoDatabase(path.display().to_string()));
        }
        let db = LoggedDatabase::open_existing(path, metrics(), anchor, replay)?;
        Ok(Self { db })
    }

    /// Opens the database at `path`, creating it (and its log) when neither
    /// exists; no rollback anchor. For tests, benchmarks and tools; a
    /// serving order server opens with [`RedbStore::open_existing`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = LoggedDatabase::open(path, metrics(), replay)?;
        Ok(Self { db })
    }

    /// Records the server's public key on first use; afterwards refuses to
    /// run with any other key (a replaced key file would make every earlier
    /// tag unverifiable and is almost certainly an operator mistake).
    pub fn check_server_key(&self, key: &OrderServerKey) -> Result<(), StoreError> {
        // Durable on its own (a new transaction's default), outside the log.
        let txn = self.db.database().begin_write().map_err(backend)?;
        {
            let mut meta = txn.open_table(META).map_err(backend)?;
            let stored = meta
                .get(SERVER_PUBLIC_KEY)
                .map_err(backend)?
                .map(|g| g.value().to_vec());
            match stored {
                Some(s) if s.as_slice() == key.as_bytes() => {}
                Some(_) => {
                    return Err(StoreError::Inconsistent(
                        "the database was written under a different order server key; \
                         restore the original key file",
                    ));
                }
                None => {
                    meta.insert(SERVER_PUBLIC_KEY, key.as_bytes().as_slice())
                        .map_err(backend)?;
                }
            }
        }
        txn.commit().map_err(backend)
    }

    /// How many conversations were ever opened.
    pub fn conversation_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.begin_read()?;
        let table = txn.open_table(OPENED).map_err(backend)?;
        table.len().map_err(backend)
    }

    /// Begins a write transaction. Write through [`RedbWrite`], which
    /// records every change for the log, and finish with
    /// [`RedbStore::commit`].
    pub fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        Ok(self.db.begin_write()?)
    }

    /// Commits a write transaction whose changes are `log` (from
    /// [`RedbWrite::into_log`]); when this returns `Ok`, they are on disk.
    pub fn commit(&self, txn: WriteTransaction, log: KvBatch) -> Result<(), StoreError> {
        Ok(self.db.commit(txn, &log)?)
    }

    /// Makes the checkpoint the commits since the last one made due, if
    /// any ([`LoggedDatabase::checkpoint_if_due`]): call it after a
    /// commit's answers are sent.
    pub fn checkpoint_if_due(&self) -> Result<bool, StoreError> {
        Ok(self.db.checkpoint_if_due()?)
    }

    /// Makes everything committed durable in the database itself and
    /// empties the write-ahead log, so that the next open replays nothing
    /// (a graceful stop).
    pub fn checkpoint_now(&self) -> Result<(), StoreError> {
        Ok(self.db.checkpoint_now()?)
    }

    /// What opening found: the log records replayed, whether redb repaired.
    pub fn open_report(&self) -> &grompi_ops::logged_db::OpenReport {
        self.db.open_report()
    }

    /// Begins a read snapshot of the last commit.
    pub fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.database().begin_read().map_err(backend)
    }
}

/// The tables of one write transaction, implementing [`StoreWrite`].
pub struct RedbWrite<'t> {
    chain: Table<'t, &'static [u8], &'static [u8]>,
    opened: Table<'t, &'static [u8; 32], ()>,
    slot_sets: Table<'t, &'static [u8], &'static [u8]>,
    evidence: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, &'static [u8]>,
    audit: Table<'t, u64, &'static [u8]>,
    /// The audit log's entry count, once read (this transaction is its
    /// only writer).
    audit_count: std::cell::Cell<Option<u64>>,
    /// The tree's right edge as this transaction's appends left it: each
    /// append reads its left siblings from here (from the table only the
    /// first time a level is needed in the transaction). Dropped with the
    /// transaction, committed or not.
    audit_frontier: crate::audit_store::Frontier,
    /// The audit log records appended in this transaction, written as one
    /// row by [`RedbWrite::into_log`]: its first entry's index, the count,
    /// and the row (four bytes for the count, then the records).
    audit_pending: Option<(u64, u32, Vec<u8>)>,
    log: KvBatch,
}

impl<'t> RedbWrite<'t> {
    /// Opens (creating if needed) every table in `txn`.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            chain: txn.open_table(CHAIN).map_err(backend)?,
            opened: txn.open_table(OPENED).map_err(backend)?,
            slot_sets: txn.open_table(SLOT_SETS).map_err(backend)?,
            evidence: txn.open_table(EVIDENCE).map_err(backend)?,
            meta: txn.open_table(META).map_err(backend)?,
            audit: txn.open_table(AUDIT_LOG).map_err(backend)?,
            audit_count: std::cell::Cell::new(None),
            audit_frontier: crate::audit_store::Frontier::new(),
            audit_pending: None,
            log: KvBatch::new(),
        })
    }

    fn audit_table(&self) -> Option<&Table<'t, u64, &'static [u8]>> {
        Some(&self.audit)
    }

    fn cached_audit_count(&self) -> Option<u64> {
        self.audit_count.get()
    }

    fn cache_audit_count(&self, count: u64) {
        self.audit_count.set(Some(count));
    }

    fn audit_record(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending_record(index)? {
            Some(r) => Ok(Some(r)),
            None => audit_table_record(&self.audit, index),
        }
    }

    /// Every change made, for [`RedbStore::commit`].
    pub fn into_log(mut self) -> Result<KvBatch, StoreError> {
        if let Some((first, count, mut row)) = self.audit_pending.take()
            && count > 0
        {
            row.get_mut(..4)
                .ok_or(StoreError::Inconsistent("an audit log row lost its count"))?
                .copy_from_slice(&count.to_be_bytes());
            self.audit.insert(first, row.as_slice()).map_err(backend)?;
            self.log.put(T_AUDIT_LOG, &first.to_be_bytes(), &row);
        }
        Ok(self.log)
    }

    fn pending_record(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.audit_pending {
            Some((first, count, row)) if (*first..first + u64::from(*count)).contains(&index) => {
                let (_, records) = audit_row(row)?;
                audit_row_record(*first, records, index).map(|r| r.map(<[u8]>::to_vec))
            }
            _ => Ok(None),
        }
    }

    fn put_chain(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.chain.insert(key, value).map_err(backend)?;
        self.log.put(T_CHAIN, key, value);
        Ok(())
    }

    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key, value).map_err(backend)?;
        self.log.put(T_META, key.as_bytes(), value);
        Ok(())
    }

    /// Applies one change read back from the log.
    fn replay(&mut self, op: KvOp) -> Result<(), StoreError> {
        const BAD: StoreError =
            StoreError::Inconsistent("a write-ahead log record names a key that cannot exist");
        match op {
            KvOp::Put { table, key, value } => match table {
                T_CHAIN => self
                    .chain
                    .insert(key.as_slice(), value.as_slice())
                    .map(drop),
                T_OPENED => {
                    let key = <&[u8; 32]>::try_from(key.as_slice()).map_err(|_| BAD)?;
                    self.opened.insert(key, ()).map(drop)
                }
                T_SLOT_SETS => self
                    .slot_sets
                    .insert(key.as_slice(), value.as_slice())
                    .map(drop),
                T_EVIDENCE => self
                    .evidence
                    .insert(decode_u64(&key)?, value.as_slice())
                    .map(drop),
                T_META => {
                    let key = std::str::from_utf8(&key).map_err(|_| BAD)?;
                    self.meta.insert(key, value.as_slice()).map(drop)
                }
                T_AUDIT_LOG => self
                    .audit
                    .insert(decode_u64(&key)?, value.as_slice())
                    .map(drop),
                _ => return Err(BAD),
            },
            // This store never deletes.
            KvOp::Delete { .. } => return Err(BAD),
        }
        .map_err(backend)
    }
}

/// The record of entry `index` in a row of records starting at entry
/// `first` (without the row's count).
fn audit_row_record(
    first: u64,
    mut records: &[u8],
    index: u64,
) -> Result<Option<&[u8]>, StoreError> {
    const BAD: StoreError = StoreError::Inconsistent("a stored audit log row is malformed");
    let mut at = first;
    while !records.is_empty() {
        let (len, _) = records.split_at_checked(2).ok_or(BAD)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let nodes = at.saturating_add(1).trailing_zeros() as usize;
        let size = 2 + len + 32 * nodes;
        let (record, rest) = records.split_at_checked(size).ok_or(BAD)?;
        if at == index {
            return Ok(Some(record));
        }
        records = rest;
        at += 1;
    }
    Ok(None)
}

/// The count and records of a stored row.
fn audit_row(row: &[u8]) -> Result<(u32, &[u8]), StoreError> {
    let (count, records) = row.split_at_checked(4).ok_or(StoreError::Inconsistent(
        "a stored audit log row is malformed",
    ))?;
    Ok((
        u32::from_be_bytes([count[0], count[1], count[2], count[3]]),
        records,
    ))
}

/// The record of entry `index` from a table of rows.
fn audit_table_record<T: ReadableTable<u64, &'static [u8]>>(
    t: &T,
    index: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(found) = t.range(..=index).map_err(backend)?.next_back() else {
        return Ok(None);
    };
    let (first, row) = found.map_err(backend)?;
    let (_, records) = audit_row(row.value())?;
    Ok(audit_row_record(first.value(), records, index)?.map(<[u8]>::to_vec))
}

/// Stored hash `index` from a table of rows.
fn table_audit_hash<T: ReadableTable<u64, &'static [u8]>>(
    t: &T,
    index: u64,
) -> Result<Option<[u8; 32]>, StoreError> {
    let Some((entry, offset)) = crate::audit_store::hash_location(index) else {
        return Ok(None);
    };
    match audit_table_record(t, entry)? {
        Some(r) => crate::audit_store::record_hash(&r, offset),
        None => Ok(None),
    }
}

/// The tables of one read snapshot, implementing [`StoreRead`].
pub struct RedbRead {
    chain: ReadOnlyTable<&'static [u8], &'static [u8]>,
    slot_sets: ReadOnlyTable<&'static [u8], &'static [u8]>,
    evidence: ReadOnlyTable<u64, &'static [u8]>,
    meta: ReadOnlyTable<&'static str, &'static [u8]>,
    // Absent from a database no audit log was written to yet.
    audit: Option<ReadOnlyTable<u64, &'static [u8]>>,
}

/// Opens a table that a database written before the audit log lacks.
fn optional_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(backend(e)),
    }
}

impl RedbRead {
    /// Opens every table in `txn`.
    pub fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            chain: txn.open_table(CHAIN).map_err(backend)?,
            slot_sets: txn.open_table(SLOT_SETS).map_err(backend)?,
            evidence: txn.open_table(EVIDENCE).map_err(backend)?,
            meta: txn.open_table(META).map_err(backend)?,
            audit: optional_table(txn, AUDIT_LOG)?,
        })
    }

    fn audit_table(&self) -> Option<&ReadOnlyTable<u64, &'static [u8]>> {
        self.audit.as_ref()
    }

    fn cached_audit_count(&self) -> Option<u64> {
        None
    }

    fn cache_audit_count(&self, _: u64) {}

    fn audit_record(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.audit {
            Some(t) => audit_table_record(t, index),
            None => Ok(None),
        }
    }
}

macro_rules! impl_read {
    ($ty:ty) => {
        impl StoreRead for $ty {
            fn conversation(
                &self,
                id: &ConversationId,
            ) -> Result<Option<ConversationState>, StoreError> {
                match self.chain.get(state_key(id).as_slice()).map_err(backend)? {
                    Some(g) => Ok(Some(ConversationState::decode(g.value())?)),
                    None => Ok(None),
                }
            }

            fn slot_set(
                &self,
                id: &ConversationId,
                epoch: Epoch,
            ) -> Result<Option<SlotSet>, StoreError> {
                match self
                    .slot_sets
                    .get(epoch_key(id, epoch).as_slice())
                    .map_err(backend)?
                {
                    Some(g) => Ok(Some(decode_slot_set(g.value())?)),
                    None => Ok(None),
                }
            }

            fn last_sequence(
                &self,
                id: &ConversationId,
                epoch: Epoch,
                slot: SlotIndex,
            ) -> Result<Option<Sequence>, StoreError> {
                match self
                    .chain
                    .get(sequence_key(id, epoch, slot).as_slice())
                    .map_err(backend)?
                {
                    Some(g) => Ok(Some(Sequence(decode_u64(g.value())?))),
                    None => Ok(None),
                }
            }

            fn record(
                &self,
                id: &ConversationId,
                index: Index,
            ) -> Result<Option<IndexRecord>, StoreError> {
                match self
                    .chain
                    .get(record_key(id, index).as_slice())
                    .map_err(backend)?
                {
                    Some(g) => Ok(Some(IndexRecord::decode(g.value())?)),
                    None => Ok(None),
                }
            }

            fn evidence_total(&self) -> Result<u64, StoreError> {
                match self.meta.get(EVIDENCE_TOTAL).map_err(backend)? {
                    Some(g) => decode_u64(g.value()),
                    None => Ok(0),
                }
            }

            fn evidence(&self, number: u64) -> Result<Option<Vec<u8>>, StoreError> {
                Ok(self
                    .evidence
                    .get(number)
                    .map_err(backend)?
                    .map(|g| g.value().to_vec()))
            }

            fn audit_entry_count(&self) -> Result<u64, StoreError> {
                if let Some(n) = self.cached_audit_count() {
                    return Ok(n);
                }
                let Some(t) = self.audit_table() else {
                    return Ok(0);
                };
                let n = match t.last().map_err(backend)? {
                    Some((first, row)) => first
                        .value()
                        .saturating_add(u64::from(audit_row(row.value())?.0)),
                    None => 0,
                };
                self.cache_audit_count(n);
                Ok(n)
            }

            fn audit_hash_count(&self) -> Result<u64, StoreError> {
                Ok(grompi_tlog::merkle::stored_hash_count(
                    self.audit_entry_count()?,
                ))
            }

            fn audit_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
                match self.audit_record(index)? {
                    Some(r) => Ok(Some(crate::audit_store::record_entry(&r)?)),
                    None => Ok(None),
                }
            }

            fn audit_hash(&self, index: u64) -> Result<Option<[u8; 32]>, StoreError> {
                let Some((entry, offset)) = crate::audit_store::hash_location(index) else {
                    return Ok(None);
                };
                match self.audit_record(entry)? {
                    Some(r) => crate::audit_store::record_hash(&r, offset),
                    None => Ok(None),
                }
            }
        }
    };
}

impl_read!(RedbWrite<'_>);
impl_read!(RedbRead);

impl StoreWrite for RedbWrite<'_> {
    fn put_conversation(
        &mut self,
        id: &ConversationId,
        state: &ConversationState,
    ) -> Result<(), StoreError> {
        self.put_chain(&state_key(id), &state.encode())?;
        // Only opening writes a state with nothing attested yet.
        if state.next_index == Index(0) {
            self.opened.insert(id.as_bytes(), ()).map_err(backend)?;
            self.log.put(T_OPENED, id.as_bytes(), &[]);
        }
        Ok(())
    }

    fn put_slot_set(
        &mut self,
        id: &ConversationId,
        epoch: Epoch,
        slots: &SlotSet,
    ) -> Result<(), StoreError> {
        let (key, value) = (epoch_key(id, epoch), encode_slot_set(slots));
        self.slot_sets
            .insert(key.as_slice(), value.as_slice())
            .map_err(backend)?;
        self.log.put(T_SLOT_SETS, &key, &value);
        Ok(())
    }

    fn put_last_sequence(
        &mut self,
        id: &ConversationId,
        epoch: Epoch,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<(), StoreError> {
        self.put_chain(&sequence_key(id, epoch, slot), &sequence.0.to_be_bytes())
    }

    fn put_record(
        &mut self,
        id: &ConversationId,
        index: Index,
        record: &IndexRecord,
    ) -> Result<(), StoreError> {
        self.put_chain(&record_key(id, index), &record.encode())
    }

    fn put_evidence(&mut self, number: u64, evidence: &[u8]) -> Result<(), StoreError> {
        self.evidence.insert(number, evidence).map_err(backend)?;
        self.log.put(T_EVIDENCE, &number.to_be_bytes(), evidence);
        Ok(())
    }

    fn set_evidence_total(&mut self, total: u64) -> Result<(), StoreError> {
        self.put_meta(EVIDENCE_TOTAL, &total.to_be_bytes())
    }

    fn append_audit_entry(&mut self, entry: &[u8]) -> Result<u64, StoreError> {
        let count = self.audit_entry_count()?;
        let (first, n, row) = self.audit_pending.get_or_insert_with(|| {
            let mut row = Vec::with_capacity(1 << 16);
            row.extend_from_slice(&[0; 4]);
            (count, 0, row)
        });
        if *first + u64::from(*n) != count {
            return Err(StoreError::AuditLog(format!(
                "entry {count} appended to a transaction's row of entries {first}.. with {n} entries"
            )));
        }
        let next = n
            .checked_add(1)
            .ok_or_else(|| StoreError::AuditLog("too many entries in one transaction".into()))?;
        // Left siblings this transaction has not computed were committed
        // before it: read them from the table.
        let table = &self.audit;
        self.audit_frontier
            .append(count, entry, row, |at| table_audit_hash(table, at))?;
        *n = next;
        self.audit_count.set(Some(count + 1));
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::{EnvelopeHash, EnvelopeKind, Head, SlotEntry, SlotKey, SlotRole};

    #[test]
    fn committed_writes_survive_reopen_and_aborted_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let c = ConversationId::from_bytes([1; 32]);
        let set = SlotSet::new(vec![SlotEntry {
            key: SlotKey::from_bytes([9; 32]),
            role: SlotRole::Admin,
        }])
        .unwrap();
        let rec = IndexRecord {
            epoch: Epoch(0),
            kind: EnvelopeKind::Setup,
            envelope: EnvelopeHash::from_bytes([3; 32]),
            head: Head::from_bytes([4; 32]),
            key_period: None,
            log_index: Some(7),
        };
        {
            let store = RedbStore::open(&path).unwrap();
            let txn = store.begin_write().unwrap();
            let log = {
                let mut w = RedbWrite::open(&txn).unwrap();
                w.put_conversation(&c, &ConversationState::opened(&c, &set))
                    .unwrap();
                w.put_slot_set(&c, Epoch(0), &set).unwrap();
                w.put_record(&c, Index(0), &rec).unwrap();
                w.put_last_sequence(&c, Epoch(0), SlotIndex(0), Sequence(5))
                    .unwrap();
                w.put_evidence(0, b"e").unwrap();
                w.set_evidence_total(1).unwrap();
                assert_eq!(w.record(&c, Index(0)).unwrap(), Some(rec));
                w.into_log().unwrap()
            };
            store.commit(txn, log).unwrap();
            let txn = store.begin_write().unwrap();
            {
                let mut w = RedbWrite::open(&txn).unwrap();
                w.put_record(&c, Index(1), &rec).unwrap();
            }
            drop(txn);
        }
        let store = RedbStore::open(&path).unwrap();
        let r = RedbRead::open(&store.begin_read().unwrap()).unwrap();
        assert_eq!(r.record(&c, Index(0)).unwrap(), Some(rec));
        assert_eq!(r.record(&c, Index(1)).unwrap(), None);
        assert_eq!(r.slot_set(&c, Epoch(0)).unwrap(), Some(set));
        assert_eq!(
            r.last_sequence(&c, Epoch(0), SlotIndex(0)).unwrap(),
            Some(Sequence(5))
        );
        assert_eq!(r.evidence_total().unwrap(), 1);
        assert_eq!(r.evidence(0).unwrap().as_deref(), Some(&b"e"[..]));
    }

    fn state(c: &ConversationId, next: u64) -> ConversationState {
        let set = SlotSet::new(vec![SlotEntry {
            key: SlotKey::from_bytes([9; 32]),
            role: SlotRole::Admin,
        }])
        .unwrap();
        let mut s = ConversationState::opened(c, &set);
        s.next_index = Index(next);
        s
    }

    fn write_state(store: &RedbStore, c: &ConversationId, next: u64) {
        let txn = store.begin_write().unwrap();
        let log = {
            let mut w = RedbWrite::open(&txn).unwrap();
            w.put_conversation(c, &state(c, next)).unwrap();
            w.put_evidence(next, b"e").unwrap();
            w.set_evidence_total(next).unwrap();
            w.into_log().unwrap()
        };
        store.commit(txn, log).unwrap();
    }

    fn next_index(store: &RedbStore, c: &ConversationId) -> Option<u64> {
        let r = RedbRead::open(&store.begin_read().unwrap()).unwrap();
        r.conversation(c).unwrap().map(|s| s.next_index.0)
    }

    /// What a crash of the process leaves: the files as they are on disk
    /// (the page cache included) at this moment, copied elsewhere.
    fn crash_image(from: &Path, to: &Path) -> std::path::PathBuf {
        std::fs::create_dir_all(to).unwrap();
        let db = to.join("order.redb");
        grompi_ops::wal::copy_database(from, &db).unwrap();
        db
    }

    #[test]
    fn commits_survive_a_crash_through_the_log_and_only_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let c = ConversationId::from_bytes([1; 32]);
        let store = RedbStore::open(&path).unwrap();
        for next in 1..=20 {
            write_state(&store, &c, next);
        }
        assert_eq!(next_index(&store, &c), Some(20));
        let image = crash_image(&path, &dir.path().join("crash"));
        // Without the log, redb alone has only its last durable commit
        // (from opening): the log is what made the 20 commits durable. (A
        // log with its header and no records stands in for the lost one,
        // which `open` would refuse, as it refuses an empty file.)
        {
            let bare = dir.path().join("bare");
            let db = crash_image(&path, &bare);
            let log = std::fs::read(wal_path(&db)).unwrap();
            std::fs::write(wal_path(&db), b"").unwrap();
            let err = RedbStore::open(&db).err().unwrap();
            assert!(err.to_string().contains("is empty"), "{err}");
            std::fs::write(wal_path(&db), &log).unwrap();
            records_lost(&db);
            let reopened = RedbStore::open(&db).unwrap();
            assert_eq!(next_index(&reopened, &c), None);
        }
        let reopened = RedbStore::open(&image).unwrap();
        assert_eq!(next_index(&reopened, &c), Some(20));
        let r = RedbRead::open(&reopened.begin_read().unwrap()).unwrap();
        assert_eq!(r.evidence_total().unwrap(), 20);
        assert_eq!(r.evidence(7).unwrap().as_deref(), Some(&b"e"[..]));
        drop(r);
        // Reopening checkpointed: the next crash image has everything even
        // before any new append, and new appends go on from there.
        write_state(&reopened, &c, 21);
        let again = crash_image(&image, &dir.path().join("crash2"));
        assert_eq!(next_index(&RedbStore::open(&again).unwrap(), &c), Some(21));
    }

    /// Keeps the log's header (which binds it to its database) but zeroes
    /// every record: what redb holds alone.
    fn records_lost(db: &Path) {
        let log = wal_path(db);
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[grompi_ops::wal::FILE_HEADER..].fill(0);
        std::fs::write(&log, &bytes).unwrap();
    }

    /// Where each record starts in a log file (format 2: a 48-byte file
    /// header; per record 28 header bytes, the payload, a 32-byte checksum;
    /// the payload length is the header's last 8 bytes). Stops at zeros.
    fn record_offsets(log: &[u8]) -> Vec<usize> {
        let mut at = grompi_ops::wal::FILE_HEADER;
        let mut out = Vec::new();
        while at + 28 <= log.len() && log[at..at + 28] != [0; 28] {
            let len = u64::from_be_bytes(log[at + 20..at + 28].try_into().unwrap()) as usize;
            out.push(at);
            at += 28 + len + 32;
        }
        out
    }

    #[test]
    fn an_older_database_next_to_a_newer_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let c = ConversationId::from_bytes([6; 32]);
        let older = dir.path().join("older.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            write_state(&store, &c, 1);
            // The database file alone, as a backup of it would have it.
            std::fs::copy(&path, &older).unwrap();
        }
        {
            // Opening checkpoints (a new generation); these records are the
            // next generation's, and the older database has never seen
            // either the first commit's checkpoint or them.
            let store = RedbStore::open(&path).unwrap();
            write_state(&store, &c, 2);
        }
        std::fs::copy(&older, &path).unwrap();
        let err = RedbStore::open_existing(&path, None).err().unwrap();
        let text = err.to_string();
        assert!(text.contains("older than its log"), "{text}");
        assert!(text.contains("generation"), "{text}");
    }

    #[test]
    fn an_empty_zeroed_or_foreign_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let other = dir.path().join("other.redb");
        let c = ConversationId::from_bytes([7; 32]);
        {
            let store = RedbStore::open(&path).unwrap();
            write_state(&store, &c, 1);
            let store = RedbStore::open(&other).unwrap();
            write_state(&store, &c, 5);
        }
        let log = std::fs::read(wal_path(&path)).unwrap();
        let refused = |bytes: &[u8]| {
            std::fs::write(wal_path(&path), bytes).unwrap();
            RedbStore::open_existing(&path, None)
                .err()
                .unwrap()
                .to_string()
        };
        let text = refused(b"");
        assert!(text.contains("is empty"), "{text}");
        let text = refused(&vec![0u8; log.len()]);
        assert!(text.contains("zeros where its header belongs"), "{text}");
        let text = refused(&std::fs::read(wal_path(&other)).unwrap());
        assert!(text.contains("belongs to database"), "{text}");
        std::fs::write(wal_path(&path), &log).unwrap();
        let store = RedbStore::open_existing(&path, None).unwrap();
        assert_eq!(next_index(&store, &c), Some(1));
    }

    #[test]
    fn a_damaged_record_in_the_middle_of_the_log_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let c = ConversationId::from_bytes([8; 32]);
        // As many commits as the log holds before a checkpoint restarts it.
        let commits = u64::from(grompi_ops::logged_db::CHECKPOINT_COMMITS) - 1;
        {
            let store = RedbStore::open(&path).unwrap();
            for next in 1..=commits {
                write_state(&store, &c, next);
            }
        }
        let mut log = std::fs::read(wal_path(&path)).unwrap();
        let offsets = record_offsets(&log);
        assert_eq!(offsets.len() as u64, commits);
        // Record 40 (the 41st, numbered from 0), a byte of its payload.
        log[offsets[40] + 28 + 5] ^= 0xff;
        std::fs::write(wal_path(&path), &log).unwrap();
        let err = RedbStore::open_existing(&path, None).err().unwrap();
        let text = err.to_string();
        assert!(text.contains("corrupt"), "{text}");
        assert!(text.contains("record 40 "), "{text}");
        assert!(text.contains(&format!("at byte {}", offsets[40])), "{text}");
        assert!(
            text.contains(&format!("record 41 at byte {}", offsets[41])),
            "{text}"
        );
        // Nothing was replayed or checkpointed: the repaired log still
        // brings back every commit.
        log[offsets[40] + 28 + 5] ^= 0xff;
        std::fs::write(wal_path(&path), &log).unwrap();
        let store = RedbStore::open_existing(&path, None).unwrap();
        assert_eq!(next_index(&store, &c), Some(commits));
    }

    #[test]
    fn a_database_copy_older_than_the_rollback_anchor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let anchor = dir.path().join("elsewhere").join("order.anchor");
        std::fs::create_dir_all(anchor.parent().unwrap()).unwrap();
        let c = ConversationId::from_bytes([9; 32]);
        drop(RedbStore::create(&path, &OrderServerKey::from_bytes([1; 32])).unwrap());
        let backup = dir.path().join("backup");
        {
            let store = RedbStore::open_existing(&path, Some(&anchor)).unwrap();
            for next in 1..=5 {
                write_state(&store, &c, next);
            }
            // A consistent copy of the database and its log.
            crash_image(&path, &backup);
            for next in 6..=10 {
                write_state(&store, &c, next);
            }
        }
        // The latest database restarts against its anchor as usual.
        {
            let store = RedbStore::open_existing(&path, Some(&anchor)).unwrap();
            assert_eq!(next_index(&store, &c), Some(10));
        }
        // The copy comes back in place of the database.
        let copy = backup.join("order.redb");
        grompi_ops::wal::copy_database(&copy, &path).unwrap();
        let err = RedbStore::open_existing(&path, Some(&anchor))
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains("behind its rollback anchor"), "{text}");
        assert!(
            text.contains("5 commits") && text.contains("recorded 10"),
            "{text}"
        );
        // It is the anchor that refuses: the copy itself is consistent.
        assert_eq!(
            next_index(&RedbStore::open_existing(&copy, None).unwrap(), &c),
            Some(5)
        );
        // Without its anchor, an anchored database is refused too.
        grompi_ops::wal::copy_database(&copy, &path).unwrap();
        let moved = dir.path().join("moved.anchor");
        std::fs::rename(&anchor, &moved).unwrap();
        let text = RedbStore::open_existing(&path, Some(&anchor))
            .err()
            .unwrap()
            .to_string();
        assert!(
            text.contains("anchor") && text.contains("is missing"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_database_is_not_created_for_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let err = RedbStore::open_existing(&path, None).err().unwrap();
        assert!(matches!(err, StoreError::NoDatabase(_)), "{err}");
        assert!(err.to_string().contains("retire this key"), "{err}");
        assert!(!path.exists() && !wal_path(&path).exists());
        // A log without its database is not a fresh start either.
        drop(RedbStore::create(&path, &OrderServerKey::from_bytes([1; 32])).unwrap());
        std::fs::remove_file(&path).unwrap();
        let err = RedbStore::open_existing(&path, None).err().unwrap();
        assert!(err.to_string().contains("exists but its database"), "{err}");
        let err = RedbStore::open(&path).err().unwrap();
        assert!(err.to_string().contains("exists but its database"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn a_database_without_its_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let c = ConversationId::from_bytes([4; 32]);
        let store = RedbStore::open(&path).unwrap();
        write_state(&store, &c, 1);
        let image = crash_image(&path, &dir.path().join("crash"));
        std::fs::remove_file(wal_path(&image)).unwrap();
        let err = RedbStore::open(&image).err().unwrap();
        assert!(err.to_string().contains("is missing"), "{err}");
    }

    #[test]
    fn a_checkpoint_restarts_the_log_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let c = ConversationId::from_bytes([2; 32]);
        let store = RedbStore::open(&path).unwrap();
        let generation = |s: &RedbStore| s.db.log_position().unwrap().0;
        let first = generation(&store);
        // Evidence of 1 MiB per commit: 32 commits pass the checkpoint size.
        let big = vec![5u8; 1 << 20];
        let mut next = 0;
        while generation(&store) == first {
            next += 1;
            let txn = store.begin_write().unwrap();
            let log = {
                let mut w = RedbWrite::open(&txn).unwrap();
                w.put_conversation(&c, &state(&c, next)).unwrap();
                w.put_evidence(next, &big).unwrap();
                w.into_log().unwrap()
            };
            store.commit(txn, log).unwrap();
            assert!(next < 64, "no checkpoint after {next} MiB of log");
        }
        assert_eq!(store.db.log_position().unwrap().1, 0);
        write_state(&store, &c, next + 1);
        let image = crash_image(&path, &dir.path().join("crash"));
        let reopened = RedbStore::open(&image).unwrap();
        assert_eq!(next_index(&reopened, &c), Some(next + 1));
        let r = RedbRead::open(&reopened.begin_read().unwrap()).unwrap();
        assert_eq!(r.evidence(1).unwrap().map(|e| e.len()), Some(1 << 20));
    }

    #[test]
    fn a_batch_larger_than_the_log_is_committed_durably_instead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let c = ConversationId::from_bytes([3; 32]);
        let store = RedbStore::open(&path).unwrap();
        let before = store.db.log_position().unwrap().0;
        let txn = store.begin_write().unwrap();
        let log = {
            let mut w = RedbWrite::open(&txn).unwrap();
            w.put_conversation(&c, &state(&c, 1)).unwrap();
            w.put_evidence(0, &vec![1u8; grompi_ops::logged_db::CAPACITY as usize])
                .unwrap();
            w.into_log().unwrap()
        };
        store.commit(txn, log).unwrap();
        assert_eq!(store.db.log_position().unwrap().0, before + 1);
        assert_eq!(store.db.log_position().unwrap().1, 0);
        // Durable in redb alone.
        let db = crash_image(&path, &dir.path().join("crash"));
        records_lost(&db);
        assert_eq!(next_index(&RedbStore::open(&db).unwrap(), &c), Some(1));
    }

    #[test]
    fn the_audit_log_survives_a_crash_with_its_batch_and_an_aborted_batch_leaves_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let store = RedbStore::open(&path).unwrap();
        let append = |n: u8, commit: bool| {
            let txn = store.begin_write().unwrap();
            let log = {
                let mut w = RedbWrite::open(&txn).unwrap();
                for i in 0..n {
                    crate::audit_store::append(&mut w, &[i; 40]).unwrap();
                }
                w.into_log().unwrap()
            };
            if commit {
                store.commit(txn, log).unwrap();
            }
        };
        append(7, true);
        append(5, false);
        append(6, true);
        let size = |s: &RedbStore| {
            let r = RedbRead::open(&s.begin_read().unwrap()).unwrap();
            let log = crate::audit_store::read(&r).unwrap();
            (log.size(), log.root().unwrap())
        };
        let (n, root) = size(&store);
        assert_eq!(n, 13);
        // The same log through the crate's reference storage.
        let mut reference = grompi_tlog::Log::open(grompi_tlog::MemoryStorage::new()).unwrap();
        for i in (0..7u8).chain(0..6) {
            reference.append(&[i; 40]).unwrap();
        }
        assert_eq!(reference.root().unwrap(), root);
        let image = crash_image(&path, &dir.path().join("crash"));
        assert_eq!(size(&RedbStore::open(&image).unwrap()), (13, root));
    }

    #[test]
    fn audit_rows_of_any_size_hold_the_reference_log() {
        use grompi_tlog::LogStorage;
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("order.redb")).unwrap();
        let mut reference = grompi_tlog::Log::open(grompi_tlog::MemoryStorage::new()).unwrap();
        let mut n = 0u32;
        for batch in [1u32, 2, 3, 0, 5, 8, 13, 1, 300, 7] {
            let txn = store.begin_write().unwrap();
            let log = {
                let mut w = RedbWrite::open(&txn).unwrap();
                for _ in 0..batch {
                    let e = n.to_be_bytes().repeat(1 + (n % 5) as usize);
                    crate::audit_store::append(&mut w, &e).unwrap();
                    reference.append(&e).unwrap();
                    n += 1;
                }
                w.into_log().unwrap()
            };
            store.commit(txn, log).unwrap();
        }
        let r = RedbRead::open(&store.begin_read().unwrap()).unwrap();
        let log = crate::audit_store::read(&r).unwrap();
        assert_eq!(log.size(), u64::from(n));
        let mem = reference.storage();
        for i in 0..u64::from(n) {
            assert_eq!(r.audit_entry(i).unwrap(), mem.read_entry(i).unwrap());
        }
        for i in 0..mem.hash_count().unwrap() {
            assert_eq!(
                r.audit_hash(i).unwrap(),
                mem.read_hash(i).unwrap().map(|h| h.0),
                "hash {i}"
            );
        }
        assert_eq!(r.audit_entry(u64::from(n)).unwrap(), None);
        assert_eq!(log.root().unwrap(), reference.root().unwrap());
    }

    /// The log's size, root and every stored hash, as a read snapshot of
    /// `store` has them.
    fn audit_state(store: &RedbStore) -> (u64, grompi_tlog::Hash, Vec<Option<[u8; 32]>>) {
        let r = RedbRead::open(&store.begin_read().unwrap()).unwrap();
        let log = crate::audit_store::read(&r).unwrap();
        let hashes = (0..r.audit_hash_count().unwrap())
            .map(|i| r.audit_hash(i).unwrap())
            .collect();
        (log.size(), log.root().unwrap(), hashes)
    }

    #[test]
    fn a_failed_batch_then_a_good_one_give_the_tree_a_reopen_gives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let store = RedbStore::open(&path).unwrap();
        let mut reference = grompi_tlog::Log::open(grompi_tlog::MemoryStorage::new()).unwrap();
        let mut n = 0u32;
        let mut batch = |len: u32, fail: bool, reference: &mut grompi_tlog::Log<_>| {
            let txn = store.begin_write().unwrap();
            let mut w = RedbWrite::open(&txn).unwrap();
            let mut entries = Vec::new();
            for i in 0..len {
                let e = (n + i).to_be_bytes();
                crate::audit_store::append(&mut w, &e).unwrap();
                entries.push(e);
            }
            if fail {
                // The batch fails after its appends (here: its last
                // entry is refused) and is dropped, as the committer
                // drops a batch that met a store error.
                assert!(crate::audit_store::append(&mut w, &[0; 70_000]).is_err());
                return;
            }
            let log = w.into_log().unwrap();
            store.commit(txn, log).unwrap();
            for e in &entries {
                reference.append(e).unwrap();
            }
            n += len;
        };
        // Sizes that leave and cross subtree boundaries: 5 then 11 entries
        // fail (their appends completed subtrees of up to 16 entries), then
        // 27 good ones must combine with the committed right edge only.
        batch(5, false, &mut reference);
        batch(11, true, &mut reference);
        batch(27, false, &mut reference);
        batch(64, true, &mut reference);
        batch(1, false, &mut reference);
        let (size, root, hashes) = audit_state(&store);
        assert_eq!(size, 33);
        assert_eq!(root, reference.root().unwrap());
        let mem = reference.storage();
        use grompi_tlog::LogStorage;
        let expected: Vec<_> = (0..mem.hash_count().unwrap())
            .map(|i| mem.read_hash(i).unwrap().map(|h| h.0))
            .collect();
        assert_eq!(hashes, expected);
        let image = crash_image(&path, &dir.path().join("crash"));
        assert_eq!(
            audit_state(&RedbStore::open(&image).unwrap()),
            (size, root, hashes)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Batched appends in transactions of random sizes, some aborted,
        /// store the same hashes and root as appending the committed
        /// entries one by one to the reference log (RFC 6962), and a
        /// reopened database holds the same.
        #[test]
        fn batched_appends_equal_one_by_one_appends(
            batches in proptest::collection::vec((0u32..300, proptest::prelude::any::<bool>()), 1..10)
        ) {
            use grompi_tlog::LogStorage;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("order.redb");
            let store = RedbStore::open(&path).unwrap();
            let mut reference = grompi_tlog::Log::open(grompi_tlog::MemoryStorage::new()).unwrap();
            let mut n = 0u32;
            for (len, commit) in batches {
                let txn = store.begin_write().unwrap();
                let log = {
                    let mut w = RedbWrite::open(&txn).unwrap();
                    for i in 0..len {
                        let at = crate::audit_store::append(&mut w, &(n + i).to_be_bytes()).unwrap();
                        proptest::prop_assert_eq!(at, u64::from(n + i));
                    }
                    w.into_log().unwrap()
                };
                if commit {
                    store.commit(txn, log).unwrap();
                    for i in 0..len {
                        reference.append(&(n + i).to_be_bytes()).unwrap();
                    }
                    n += len;
                }
            }
            let (size, root, hashes) = audit_state(&store);
            proptest::prop_assert_eq!(size, u64::from(n));
            proptest::prop_assert_eq!(root, reference.root().unwrap());
            let mem = reference.storage();
            let expected: Vec<_> = (0..mem.hash_count().unwrap())
                .map(|i| mem.read_hash(i).unwrap().map(|h| h.0))
                .collect();
            proptest::prop_assert_eq!(&hashes, &expected);
            drop(store);
            let reopened = RedbStore::open(&path).unwrap();
            proptest::prop_assert_eq!(audit_state(&reopened), (size, root, hashes));
        }
    }

    #[test]
    fn a_different_server_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db")).unwrap();
        store
            .check_server_key(&OrderServerKey::from_bytes([1; 32]))
            .unwrap();
        store
            .check_server_key(&OrderServerKey::from_bytes([1; 32]))
            .unwrap();
        let err = store
            .check_server_key(&OrderServerKey::from_bytes([2; 32]))
            .unwrap_err();
        assert!(err.to_string().contains("different order server key"));
    }
}
