//! Durable storage behind a narrow trait: commit a batch of [`Record`]s
//! atomically and durably, load a [`Snapshot`] at start, read envelopes for
//! Fetch.
//!
//! [`RedbStore`] is the production store: redb behind a write-ahead log
//! ([`grompi_ops::logged_db`], `router.wal` next to `router.redb`). A
//! commit appends the records to the log and syncs it (`fdatasync`) before
//! redb commits them without an fsync, so they are on disk when `commit`
//! returns and no reader sees them earlier; checkpoints restart the log,
//! and opening replays it over the last durable commit. [`MemStore`] keeps the same tables in
//! memory and, for crash tests, forgets everything not committed.

use crate::record::{
    self, AccountRecord, Admitted, ConversationRecord, Record, RecordError, StoredEnvelope, Table,
};
use grompi_ops::anchor::AnchorError;
use grompi_ops::logged_db::{LogMetrics, LoggedDatabase, LoggedDbError};
use grompi_ops::wal::{KvBatch, KvOp};
use grompi_proto::mac::Attestation;
use grompi_proto::{AccountId, ConversationId, Epoch, Head, Index, Sequence, SlotIndex};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("storage failed: {0}")]
    Backend(String),
    /// A stored value is corrupt.
    #[error(transparent)]
    Corrupt(#[from] RecordError),
    /// The database or its log failed, or refused to open.
    #[error("storage failed: {0}")]
    Database(#[from] LoggedDbError),
    /// The database is an older copy than its rollback anchor recorded.
    #[error(
        "the router database {database} is behind its rollback anchor {anchor}: it has \
         {commits} commits, the anchor recorded {anchored}. It is an older copy (restored \
         from a backup, an old disk image or snapshot?): starting from it would forget \
         acknowledged messages, accounts and sessions, and give new envelopes indices the \
         order servers have attested for others. Put the latest router.redb back with its \
         router.wal; see docs/OPERATING.md (router, rollback anchor)"
    )]
    BehindAnchor {
        /// The database file.
        database: PathBuf,
        /// The anchor file.
        anchor: PathBuf,
        /// The database's commit count.
        commits: u64,
        /// The anchor's commit count.
        anchored: u64,
    },
    /// The database has as many commits as the anchor recorded, other ones.
    #[error(
        "the router database {database} and its rollback anchor {anchor} both record \
         {commits} commits, but different ones: this database is not the history the anchor \
         recorded. Put the latest router.redb back with its router.wal; see docs/OPERATING.md \
         (router, rollback anchor)"
    )]
    DivergedFromAnchor {
        /// The database file.
        database: PathBuf,
        /// The anchor file.
        anchor: PathBuf,
        /// The commit count both record.
        commits: u64,
    },
    /// The database was anchored before and its anchor is gone.
    #[error(
        "the router database {database} was anchored before, but its rollback anchor \
         {anchor} is missing: whether this is the latest database cannot be checked. If the \
         anchor moved, set rollback_anchor to it; see docs/OPERATING.md (router, rollback \
         anchor)"
    )]
    AnchorMissing {
        /// The database file.
        database: PathBuf,
        /// Where the anchor should be.
        anchor: PathBuf,
    },
    /// The anchor exists but the database (and its log) do not.
    #[error(
        "the router database {database} does not exist, but its rollback anchor {anchor} \
         does: the database and its log were lost or moved, and a new one would forget every \
         account, conversation and message, and give new envelopes indices the order servers \
         have attested for others. Put router.redb and router.wal back; see docs/OPERATING.md \
         (router, rollback anchor)"
    )]
    DatabaseMissing {
        /// The database file.
        database: PathBuf,
        /// The anchor file.
        anchor: PathBuf,
    },
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Everything the core needs at start: the directory, every conversation's
/// slot sets and tail, per-server progress, and the envelopes not yet
/// attested by every server, with their attestations.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every account, with its identity keys and fallback prekey.
    pub accounts: Vec<AccountRecord>,
    /// Unused one-time prekeys.
    pub one_time_prekeys: Vec<(AccountId, [u8; 32])>,
    /// Unused order keys.
    pub order_keys: Vec<(AccountId, [u8; 32])>,
    /// Sessions by token hash.
    pub sessions: Vec<record::StoredSession>,
    /// Every conversation's creator, installed and prepared slot sets, and open state.
    pub conversations: Vec<ConversationRecord>,
    /// Next index and head per conversation.
    pub tails: Vec<(ConversationId, Index, Head)>,
    /// Attested count per conversation and server.
    pub progress: Vec<(ConversationId, u32, Index)>,
    /// Envelopes from the lowest server progress on, with attestations.
    pub envelopes: Vec<(ConversationId, Index, StoredEnvelope, Vec<Attestation>)>,
    /// The last envelope admitted per conversation, epoch and sender slot.
    pub slot_tails: Vec<(ConversationId, Epoch, SlotIndex, record::SlotTail)>,
    /// Per conversation whose oldest envelopes the retention setting
    /// removed: the first index still stored (none listed: 0).
    pub first_stored: Vec<(ConversationId, Index)>,
}

/// Raw `(key, value)` rows of a table.
pub type KvRows = Vec<(Vec<u8>, Vec<u8>)>;

/// Reading raw tables; implemented by both stores so loading is shared.
pub trait KvRead {
    /// Every `(key, value)` of `table` with `from <= key < to` (`to` empty:
    /// no upper bound), in key order.
    fn scan(&self, table: Table, from: &[u8], to: &[u8]) -> Result<KvRows, StoreError>;
}

/// When a commit must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before `commit` returns (with every deferred commit before it).
    Now,
    /// With the next [`Durability::Now`] commit; readers see the records at
    /// once, and a crash before that loses them (and every deferred commit
    /// after them, never one before). Only for records the router obtains
    /// again after a restart: what order servers answered (see
    /// [`crate::core::Output::durability`]).
    Deferred,
}

/// Durable storage.
pub trait Store: Send {
    /// Commits records atomically, in order, durable as `durability` says.
    fn commit(&mut self, records: &[Record], durability: Durability) -> Result<(), StoreError>;
    /// Loads the snapshot the core restarts from.
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// A reader for Fetch that may be used from other threads.
    fn reader(&self) -> Arc<dyn EnvelopeReader>;
    /// Called once at a graceful stop, after the last commit: makes
    /// everything durable in a way the next start is quickest to load
    /// (the redb store checkpoints, so that there is no log to replay).
    fn close(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Called after each commit's effects are performed: makes the
    /// checkpoint the commits since the last one made due, if any (the
    /// redb store), so that those effects did not wait for it.
    fn checkpoint_if_due(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Reads stored envelopes and attestations.
pub trait EnvelopeReader: Send + Sync {
    /// Envelopes `from..to` of a conversation with their attestations.
    fn read(
        &self,
        conversation: &ConversationId,
        from: Index,
        to: Index,
    ) -> Result<Vec<(Index, StoredEnvelope, Vec<Attestation>)>, StoreError>;

    /// Where the envelope a member sent from `slot` of `epoch` with
    /// `sequence` was admitted, while it is stored
    /// ([`Record::SlotSequence`]).
    fn admitted(
        &self,
        conversation: &ConversationId,
        epoch: Epoch,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<Option<Admitted>, StoreError>;
}

/// The slot sequence row of one key, from raw tables.
fn read_admitted(
    kv: &impl KvRead,
    c: &ConversationId,
    epoch: Epoch,
    slot: SlotIndex,
    sequence: Sequence,
) -> Result<Option<Admitted>, StoreError> {
    let key = record::slot_sequence_key(c, epoch, slot, sequence);
    // The smallest key after `key`: the range holds `key` alone.
    let mut end = key.clone();
    end.push(0);
    kv.scan(Table::SlotSequences, &key, &end)?
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| record::decode_admitted(&v))
        .transpose()
        .map_err(StoreError::from)
}

/// The row that goes with an envelope row the retention setting removes
/// (`record`, whose removed value was `removed`): its slot sequence row
/// ([`record::removed_with_envelope`]). A removed value that does not
/// decode leaves its slot sequence row behind, which is logged: the row
/// then only takes space (it still names the envelope admitted there).
fn removed_with(record: &Record, removed: &[u8]) -> Option<(Table, Vec<u8>)> {
    let Record::EnvelopeRemoved {
        conversation,
        index,
    } = record
    else {
        return None;
    };
    match record::removed_with_envelope(conversation, removed) {
        Ok(row) => row,
        Err(e) => {
            tracing::error!(
                conversation = %conversation,
                index = index.0,
                error = %e,
                "a removed envelope row does not decode: its slot sequence row stays"
            );
            None
        }
    }
}

fn read_range(
    kv: &impl KvRead,
    c: &ConversationId,
    from: Index,
    to: Index,
) -> Result<Vec<(Index, StoredEnvelope, Vec<Attestation>)>, StoreError> {
    if to <= from {
        return Ok(Vec::new());
    }
    let envs = kv.scan(
        Table::Envelopes,
        &record::envelope_key(c, from),
        &record::envelope_key(c, to),
    )?;
    let atts = kv.scan(
        Table::Attestations,
        &record::envelope_key(c, from),
        &record::envelope_key(c, to),
    )?;
    let mut by_index: BTreeMap<Index, Vec<Attestation>> = BTreeMap::new();
    for (_, v) in atts {
        let a = record::decode_attestation(&v)?;
        by_index.entry(a.index).or_default().push(a);
    }
    envs.into_iter()
        .map(|(k, v)| {
            let i = k
                .get(32..40)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Backend("envelope key is not 40 bytes".into()))?;
            let stored = record::decode_envelope(&v)?;
            Ok((
                Index(i),
                stored,
                by_index.remove(&Index(i)).unwrap_or_default(),
            ))
        })
        .collect()
}

/// Each order server's progress in each conversation (how many indices it
/// has attested), from the attestation rows: one past the server's
/// highest row, or the first index still stored if that is higher, or a
/// progress row of an older store (`rows`) if that is higher still.
///
/// The router writes no progress rows: it stores a server's attestation
/// of index i only once that server has attested every index before it,
/// so the row implies progress i + 1. The retention setting removes rows
/// only below every server's progress, and records the first index it
/// kept ([`Record::FirstStored`]), so a server whose rows were all removed
/// has attested at least that far. Rows are read from the conversation's
/// tail downwards, in windows that double, until every server's highest
/// row or the first index still stored is reached: about as many rows as
/// the indices some server has not attested, which [`load`] reads anyway.
fn derive_progress(
    kv: &impl KvRead,
    s: &Snapshot,
    rows: Vec<(ConversationId, u32, Index)>,
) -> Result<Vec<(ConversationId, u32, Index)>, StoreError> {
    let servers: HashMap<ConversationId, usize> = s
        .conversations
        .iter()
        .map(|c| (c.id, c.opened.len()))
        .collect();
    let first: HashMap<ConversationId, Index> = s.first_stored.iter().copied().collect();
    let mut progress: BTreeMap<(ConversationId, u32), Index> = BTreeMap::new();
    for (c, server, next) in rows {
        let e = progress.entry((c, server)).or_insert(next);
        *e = (*e).max(next);
    }
    for (c, next, _) in &s.tails {
        let n = servers.get(c).copied().unwrap_or(0);
        let first = first.get(c).copied().unwrap_or(Index(0));
        let mut highest: Vec<Option<Index>> = vec![None; n];
        let mut hi = *next;
        let mut width: u64 = 8;
        while hi > first && highest.iter().any(Option::is_none) {
            let lo = Index(hi.0.saturating_sub(width).max(first.0));
            for (k, _) in kv.scan(
                Table::Attestations,
                &record::envelope_key(c, lo),
                &record::envelope_key(c, hi),
            )? {
                let (index, server) = record::attestation_key_parts(&k)?;
                if let Some(h) = highest.get_mut(server as usize)
                    && h.is_none_or(|h| index > h)
                {
                    *h = Some(index);
                }
            }
            hi = lo;
            width = width.saturating_mul(2);
        }
        for (server, h) in (0u32..).zip(highest) {
            let derived = h.map_or(first, |i| Index(i.0.saturating_add(1)).max(first));
            let e = progress.entry((*c, server)).or_insert(derived);
            *e = (*e).max(derived);
        }
    }
    Ok(progress
        .into_iter()
        .filter(|(_, next)| *next > Index(0))
        .map(|((c, server), next)| (c, server, next))
        .collect())
}

/// Loads a snapshot from raw tables.
pub fn load(kv: &impl KvRead) -> Result<Snapshot, StoreError> {
    let mut s = Snapshot::default();
    for (k, v) in kv.scan(Table::Accounts, &[], &[])? {
        s.accounts.push(record::decode_account(&k, &v)?);
    }
    for (k, _) in kv.scan(Table::OneTimePrekeys, &[], &[])? {
        s.one_time_prekeys
            .push(record::decode_pair("one_time_prekeys", &k)?);
    }
    for (k, _) in kv.scan(Table::OrderKeys, &[], &[])? {
        s.order_keys.push(record::decode_pair("order_keys", &k)?);
    }
    for (k, v) in kv.scan(Table::Sessions, &[], &[])? {
        s.sessions.push(record::decode_session(&k, &v)?);
    }
    for (k, v) in kv.scan(Table::Conversations, &[], &[])? {
        s.conversations.push(record::decode_conversation(&k, &v)?);
    }
    for (k, v) in kv.scan(Table::Tails, &[], &[])? {
        s.tails.push(record::decode_tail(&k, &v)?);
    }
    for (k, v) in kv.scan(Table::Progress, &[], &[])? {
        s.progress.push(record::decode_progress(&k, &v)?);
    }
    for (k, v) in kv.scan(Table::SlotTails, &[], &[])? {
        s.slot_tails.push(record::decode_slot_tail(&k, &v)?);
    }
    for (k, v) in kv.scan(Table::FirstStored, &[], &[])? {
        s.first_stored.push(record::decode_first_stored(&k, &v)?);
    }
    let rows = std::mem::take(&mut s.progress);
    s.progress = derive_progress(kv, &s, rows)?;
    // Envelopes still needed in memory: from the lowest progress of any
    // server (a server with no progress entry has attested nothing). The
    // retention setting removes only envelopes every server has attested,
    // so none of these was removed.
    let servers_per_conv: HashMap<ConversationId, usize> = s
        .conversations
        .iter()
        .map(|c| (c.id, c.opened.len()))
        .collect();
    let mut low: HashMap<ConversationId, (usize, Index)> = HashMap::new();
    for (c, _, next) in &s.progress {
        let e = low.entry(*c).or_insert((0, *next));
        e.0 += 1;
        e.1 = e.1.min(*next);
    }
    for (c, next, _) in &s.tails {
        let n = servers_per_conv.get(c).copied().unwrap_or(0);
        let from = match low.get(c) {
            Some((count, min)) if *count >= n => *min,
            _ => Index(0),
        };
        for (i, stored, atts) in read_range(kv, c, from, *next)? {
            s.envelopes.push((*c, i, stored, atts));
        }
    }
    Ok(s)
}

type Tables = HashMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>;

fn apply(tables: &mut Tables, records: &[Record]) {
    for r in records {
        let (t, k, v) = r.to_kv();
        let table = tables.entry(t).or_default();
        match v {
            Some(v) => {
                table.insert(k, v);
            }
            None => {
                let removed = table.remove(&k);
                if let Some((t, k)) = removed.and_then(|old| removed_with(r, &old)) {
                    tables.entry(t).or_default().remove(&k);
                }
            }
        }
    }
}

fn scan_map(tables: &Tables, table: Table, from: &[u8], to: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(t) = tables.get(&table) else {
        return Vec::new();
    };
    t.range(from.to_vec()..)
        .take_while(|(k, _)| to.is_empty() || k.as_slice() < to)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// An in-memory store. Clones share the committed state, so a test can
/// "crash" a core (drop it with its uncommitted output) and restart a new
/// one from the same store; [`MemStore::lose_deferred`] is what the crash
/// does to deferred commits.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    committed: Arc<Mutex<MemTables>>,
}

#[derive(Debug, Default)]
struct MemTables {
    /// What a crash keeps.
    durable: Tables,
    /// Deferred commits since the last [`Durability::Now`] one, in order.
    deferred: Vec<Record>,
    /// `durable` with `deferred` applied: what readers see.
    visible: Tables,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> Result<std::sync::MutexGuard<'_, MemTables>, StoreError> {
        self.committed
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned".into()))
    }

    /// A crash: the deferred commits since the last durable one are lost.
    pub fn lose_deferred(&self) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        t.deferred.clear();
        t.visible = t.durable.clone();
        Ok(())
    }
}

impl KvRead for MemStore {
    fn scan(&self, table: Table, from: &[u8], to: &[u8]) -> Result<KvRows, StoreError> {
        Ok(scan_map(&self.tables()?.visible, table, from, to))
    }
}

impl EnvelopeReader for MemStore {
    fn read(
        &self,
        c: &ConversationId,
        from: Index,
        to: Index,
    ) -> Result<Vec<(Index, StoredEnvelope, Vec<Attestation>)>, StoreError> {
        read_range(self, c, from, to)
    }

    fn admitted(
        &self,
        c: &ConversationId,
        epoch: Epoch,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<Option<Admitted>, StoreError> {
        read_admitted(self, c, epoch, slot, sequence)
    }
}

impl Store for MemStore {
    fn commit(&mut self, records: &[Record], durability: Durability) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        apply(&mut t.visible, records);
        match durability {
            Durability::Deferred => t.deferred.extend_from_slice(records),
            Durability::Now => {
                let deferred = std::mem::take(&mut t.deferred);
                apply(&mut t.durable, &deferred);
                apply(&mut t.durable, records);
            }
        }
        Ok(())
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        load(self)
    }

    fn reader(&self) -> Arc<dyn EnvelopeReader> {
        Arc::new(self.clone())
    }
}

type RawTable = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

fn definition(t: Table) -> RawTable {
    redb::TableDefinition::new(t.name())
}

/// Names an anchor's refusal as the router's: what it means for a router
/// and what to do.
fn anchor_refusal(e: StoreError, database: &Path, anchor: &Path) -> StoreError {
    let (database, anchor) = (database.to_path_buf(), anchor.to_path_buf());
    match e {
        StoreError::Database(LoggedDbError::Anchor(AnchorError::Behind {
            database: commits,
            anchor: anchored,
            ..
        })) => StoreError::BehindAnchor {
            database,
            anchor,
            commits,
            anchored,
        },
        StoreError::Database(LoggedDbError::Anchor(AnchorError::Diverged { counter, .. })) => {
            StoreError::DivergedFromAnchor {
                database,
                anchor,
                commits: counter,
            }
        }
        StoreError::Database(LoggedDbError::Anchor(AnchorError::Missing { .. })) => {
            StoreError::AnchorMissing { database, anchor }
        }
        other => other,
    }
}

/// Opens every table (creating those a new version added) and applies the
/// log's changes in order.
fn replay(tx: &redb::WriteTransaction, ops: Vec<KvOp>) -> Result<(), StoreError> {
    let mut tables = HashMap::new();
    for t in Table::ALL {
        tables.insert(t, tx.open_table(definition(t)).map_err(backend)?);
    }
    for op in ops {
        let (n, key, value) = match op {
            KvOp::Put { table, key, value } => (table, key, Some(value)),
            KvOp::Delete { table, key } => (table, key, None),
        };
        let table = table_of(n)
            .and_then(|t| tables.get_mut(&t))
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "a write-ahead log record names table {n}, which does not exist"
                ))
            })?;
        match value {
            Some(v) => table.insert(key.as_slice(), v.as_slice()).map(drop),
            None => table.remove(key.as_slice()).map(drop),
        }
        .map_err(backend)?;
    }
    Ok(())
}

const METRICS: LogMetrics = LogMetrics {
    bytes: "router_wal_bytes",
    checkpoints: "router_wal_checkpoints_total",
    checkpoint_seconds: "router_wal_checkpoint_seconds",
};

pub use grompi_ops::wal::path_for as wal_path;

/// A table's number in write-ahead log records. Fixed for good: a newer
/// router replays the log an older one wrote, so a number never changes
/// meaning, whatever the order of [`Table::ALL`]; a new table takes a new
/// number. (The match is exhaustive: a new table does not compile until it
/// has one.)
const fn table_number(t: Table) -> u8 {
    match t {
        Table::Accounts => 0,
        Table::OneTimePrekeys => 1,
        Table::OrderKeys => 2,
        Table::Sessions => 3,
        Table::Conversations => 4,
        Table::Tails => 5,
        Table::Envelopes => 6,
        Table::Attestations => 7,
        Table::Progress => 8,
        Table::SlotTails => 9,
        Table::FirstStored => 10,
        Table::SlotSequences => 11,
    }
}

/// The table a log record's number names.
fn table_of(number: u8) -> Option<Table> {
    Table::ALL.into_iter().find(|t| table_number(*t) == number)
}

/// The redb store. Clones share the database (for readers on other
/// threads) and the log.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<LoggedDatabase>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

impl RedbStore {
    /// Opens (or creates) the database file, its tables and its
    /// write-ahead log, replays the log over the last durable commit and
    /// checkpoints.
    /// No rollback anchor: for tests and tools; `router serve` opens with
    /// [`RedbStore::open_anchored`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = LoggedDatabase::open(path, METRICS, replay)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Opens the database as [`RedbStore::open`] does, checked against
    /// the rollback anchor at `anchor` ([`grompi_ops::anchor`]), which
    /// records after each synced commit how far the database has come.
    /// Refuses a database behind the anchor (an older copy) or on another
    /// history, an anchored database whose anchor is missing, and a
    /// missing database (with its log) where the anchor exists. A new
    /// database is created only where neither it, its log nor the anchor
    /// exists; its first open creates the anchor.
    pub fn open_anchored(path: &Path, anchor: &Path) -> Result<Self, StoreError> {
        if !path.exists() && !wal_path(path).exists() {
            if anchor.exists() {
                return Err(StoreError::DatabaseMissing {
                    database: path.to_path_buf(),
                    anchor: anchor.to_path_buf(),
                });
            }
            // Created, closed, and opened against the anchor below, which
            // that first anchored open creates. A crash in between leaves
            // a database without an anchor, which the next start anchors.
            drop(LoggedDatabase::create(path, METRICS, |tx| {
                replay(tx, Vec::new())
            })?);
        }
        let db = LoggedDatabase::open_existing(path, METRICS, Some(anchor), replay)
            .map_err(|e| anchor_refusal(e, path, anchor))?;
        Ok(Self { db: Arc::new(db) })
    }
}

impl RedbStore {
    /// What opening the database did ([`grompi_ops::logged_db::OpenReport`]).
    pub fn open_report(&self) -> &grompi_ops::logged_db::OpenReport {
        self.db.open_report()
    }
}

impl KvRead for RedbStore {
    fn scan(&self, table: Table, from: &[u8], to: &[u8]) -> Result<KvRows, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.database().begin_read().map_err(backend)?;
        scan_in(&tx, table, from, to)
    }
}

/// The rows of `table` from `from` (inclusive) to `to` (exclusive; empty:
/// to the end), read in `tx`.
fn scan_in(
    tx: &redb::ReadTransaction,
    table: Table,
    from: &[u8],
    to: &[u8],
) -> Result<KvRows, StoreError> {
    let t = tx.open_table(definition(table)).map_err(backend)?;
    let range = if to.is_empty() {
        t.range::<&[u8]>(from..).map_err(backend)?
    } else {
        t.range::<&[u8]>(from..to).map_err(backend)?
    };
    range
        .map(|e| {
            e.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(backend)
        })
        .collect()
}

/// One read transaction for a whole load: the snapshot is read from one
/// state of the database, and the load, which scans a few ranges per
/// conversation, does not begin a transaction for each.
struct LoadReader(redb::ReadTransaction);

impl KvRead for LoadReader {
    fn scan(&self, table: Table, from: &[u8], to: &[u8]) -> Result<KvRows, StoreError> {
        scan_in(&self.0, table, from, to)
    }
}

impl EnvelopeReader for RedbStore {
    fn read(
        &self,
        c: &ConversationId,
        from: Index,
        to: Index,
    ) -> Result<Vec<(Index, StoredEnvelope, Vec<Attestation>)>, StoreError> {
        read_range(self, c, from, to)
    }

    fn admitted(
        &self,
        c: &ConversationId,
        epoch: Epoch,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<Option<Admitted>, StoreError> {
        read_admitted(self, c, epoch, slot, sequence)
    }
}

impl Store for RedbStore {
    fn close(&mut self) -> Result<(), StoreError> {
        Ok(self.db.checkpoint_now()?)
    }

    fn checkpoint_if_due(&mut self) -> Result<(), StoreError> {
        self.db.checkpoint_if_due()?;
        Ok(())
    }

    fn commit(&mut self, records: &[Record], durability: Durability) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        let mut log = KvBatch::new();
        {
            let mut open: HashMap<Table, redb::Table<'_, &'static [u8], &'static [u8]>> =
                HashMap::new();
            for r in records {
                let (t, k, v) = r.to_kv();
                let mut with = None;
                let table = match open.entry(t) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(tx.open_table(definition(t)).map_err(backend)?)
                    }
                };
                match v {
                    Some(v) => {
                        table.insert(k.as_slice(), v.as_slice()).map_err(backend)?;
                        log.put(table_number(t), &k, &v);
                    }
                    None => {
                        let removed = table
                            .remove(k.as_slice())
                            .map_err(backend)?
                            .map(|old| old.value().to_vec());
                        log.delete(table_number(t), &k);
                        with = removed.and_then(|old| removed_with(r, &old));
                    }
                }
                // A row that goes with the one removed goes in the same
                // commit, and in the log as a delete of its own.
                if let Some((t, k)) = with {
                    let table = match open.entry(t) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(tx.open_table(definition(t)).map_err(backend)?)
                        }
                    };
                    table.remove(k.as_slice()).map_err(backend)?;
                    log.delete(table_number(t), &k);
                }
            }
        }
        match durability {
            Durability::Now => self.db.commit(tx, &log)?,
            Durability::Deferred => self.db.commit_deferred(tx, &log)?,
        }
        Ok(())
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.database().begin_read().map_err(backend)?;
        load(&LoadReader(tx))
    }

    fn reader(&self) -> Arc<dyn EnvelopeReader> {
        Arc::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prekey(account: u8, key: u8, present: bool) -> Record {
        Record::OneTimePrekey {
            account: AccountId::from_bytes([account; 32]),
            key: [key; 32],
            present,
        }
    }

    fn prekeys(store: &RedbStore) -> Vec<(AccountId, [u8; 32])> {
        store.load().unwrap().one_time_prekeys
    }

    /// What a crash of the process leaves: the files as they are on disk
    /// (the page cache included) at this moment, copied elsewhere.
    fn crash_image(from: &Path, to: &Path) -> std::path::PathBuf {
        std::fs::create_dir_all(to).unwrap();
        let db = to.join("router.redb");
        grompi_ops::wal::copy_database(from, &db).unwrap();
        db
    }

    #[test]
    fn commits_survive_a_crash_through_the_log_puts_and_deletes_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.redb");
        let mut store = RedbStore::open(&path).unwrap();
        for k in 0..10 {
            store
                .commit(&[prekey(1, k, true)], Durability::Now)
                .unwrap();
        }
        // A deferred commit is read at once and replayed in its place.
        store
            .commit(
                &[prekey(1, 3, false), prekey(2, 9, true)],
                Durability::Deferred,
            )
            .unwrap();
        assert_eq!(prekeys(&store).len(), 10);
        store
            .commit(&[prekey(2, 8, true)], Durability::Now)
            .unwrap();
        let expected = prekeys(&store);
        assert_eq!(expected.len(), 11);
        assert!(!expected.contains(&(AccountId::from_bytes([1; 32]), [3; 32])));
        // Without the log, redb alone has none of it. (A log with its
        // header and no records stands in for the lost one; a missing or
        // empty one is refused.)
        let bare = crash_image(&path, &dir.path().join("bare"));
        let log = std::fs::read(wal_path(&bare)).unwrap();
        std::fs::remove_file(wal_path(&bare)).unwrap();
        let err = RedbStore::open(&bare).err().unwrap();
        assert!(err.to_string().contains("is missing"), "{err}");
        std::fs::write(wal_path(&bare), b"").unwrap();
        let err = RedbStore::open(&bare).err().unwrap();
        assert!(err.to_string().contains("is empty"), "{err}");
        let mut header_only = log;
        header_only[grompi_ops::wal::FILE_HEADER..].fill(0);
        std::fs::write(wal_path(&bare), &header_only).unwrap();
        assert!(prekeys(&RedbStore::open(&bare).unwrap()).is_empty());
        // With it, everything, in order (the delete after the put).
        let image = crash_image(&path, &dir.path().join("crash"));
        let mut reopened = RedbStore::open(&image).unwrap();
        assert_eq!(prekeys(&reopened), expected);
        // Reopening checkpointed; later commits go on in the next generation.
        reopened
            .commit(&[prekey(1, 3, true)], Durability::Now)
            .unwrap();
        let again = crash_image(&image, &dir.path().join("crash2"));
        assert_eq!(prekeys(&RedbStore::open(&again).unwrap()).len(), 12);
    }

    /// The numbers are in every router's log on disk: this list may only
    /// grow. A change here means old logs replay into the wrong tables.
    #[test]
    fn log_table_numbers_never_change() {
        let pinned = [
            ("accounts", 0),
            ("one_time_prekeys", 1),
            ("order_keys", 2),
            ("sessions", 3),
            ("conversations", 4),
            ("tails", 5),
            ("envelopes", 6),
            ("attestations", 7),
            ("progress", 8),
            ("slot_tails", 9),
            ("first_stored", 10),
            ("slot_sequences", 11),
        ];
        assert_eq!(
            Table::ALL.len(),
            pinned.len(),
            "a table has no pinned number"
        );
        for t in Table::ALL {
            let n = table_number(t);
            assert!(
                pinned.contains(&(t.name(), n)),
                "table {} has number {n}, not its pinned one",
                t.name()
            );
            assert_eq!(table_of(n), Some(t));
        }
        assert_eq!(table_of(12), None);
    }

    #[test]
    fn a_torn_deferred_commit_before_a_valid_deferred_one_is_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.redb");
        let mut store = RedbStore::open(&path).unwrap();
        store
            .commit(&[prekey(1, 1, true)], Durability::Now)
            .unwrap();
        let (_, at) = store.db.log_position().unwrap();
        store
            .commit(&[prekey(1, 2, true)], Durability::Deferred)
            .unwrap();
        store
            .commit(&[prekey(1, 3, true)], Durability::Deferred)
            .unwrap();
        // The page cache wrote the second deferred record back, not the
        // first: a crash, not damage. The synced commit survives.
        let image = crash_image(&path, &dir.path().join("crash"));
        let mut log = std::fs::read(wal_path(&image)).unwrap();
        log[grompi_ops::wal::FILE_HEADER + at as usize + 40] ^= 1;
        std::fs::write(wal_path(&image), &log).unwrap();
        let kept: Vec<u8> = prekeys(&RedbStore::open(&image).unwrap())
            .iter()
            .map(|(_, k)| k[0])
            .collect();
        assert_eq!(kept, vec![1]);
        // A synced commit after the damaged record: it was on disk whole.
        store
            .commit(&[prekey(1, 4, true)], Durability::Now)
            .unwrap();
        let image = crash_image(&path, &dir.path().join("crash2"));
        let mut log = std::fs::read(wal_path(&image)).unwrap();
        log[grompi_ops::wal::FILE_HEADER + at as usize + 40] ^= 1;
        std::fs::write(wal_path(&image), &log).unwrap();
        let err = RedbStore::open(&image).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn a_router_database_restarts_against_its_rollback_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.redb");
        let anchor = dir.path().join("elsewhere").join("router.anchor");
        std::fs::create_dir_all(anchor.parent().unwrap()).unwrap();
        // The first start creates the database and the anchor.
        let mut store = RedbStore::open_anchored(&path, &anchor).unwrap();
        assert!(anchor.exists(), "the first start made no anchor");
        for k in 0..5 {
            store
                .commit(&[prekey(1, k, true)], Durability::Now)
                .unwrap();
        }
        drop(store);
        // A normal restart: everything is there, and it goes on.
        let mut store = RedbStore::open_anchored(&path, &anchor).unwrap();
        assert_eq!(prekeys(&store).len(), 5);
        store
            .commit(&[prekey(1, 5, true)], Durability::Now)
            .unwrap();
        drop(store);
        let store = RedbStore::open_anchored(&path, &anchor).unwrap();
        assert_eq!(prekeys(&store).len(), 6);
    }

    #[test]
    fn an_older_copy_of_the_router_database_is_refused_by_its_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.redb");
        let anchor = dir.path().join("router.anchor");
        let backup = dir.path().join("backup");
        std::fs::create_dir_all(&backup).unwrap();
        let copy = backup.join("router.redb");
        {
            let mut store = RedbStore::open_anchored(&path, &anchor).unwrap();
            for k in 0..3 {
                store
                    .commit(&[prekey(1, k, true)], Durability::Now)
                    .unwrap();
            }
        }
        // A backup of the database and its log (not of the anchor).
        grompi_ops::wal::copy_database(&path, &copy).unwrap();
        {
            let mut store = RedbStore::open_anchored(&path, &anchor).unwrap();
            for k in 3..6 {
                store
                    .commit(&[prekey(1, k, true)], Durability::Now)
                    .unwrap();
            }
        }
        // The backup comes back in place of the database: refused.
        grompi_ops::wal::copy_database(&copy, &path).unwrap();
        let err = RedbStore::open_anchored(&path, &anchor).err().unwrap();
        assert!(
            matches!(err, StoreError::BehindAnchor { commits, anchored, .. } if commits < anchored),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("behind its rollback anchor")
                && text.contains(&anchor.display().to_string())
                && text.contains("older copy"),
            "{text}"
        );
        // It is the anchor that refuses: the copy itself opens.
        assert_eq!(prekeys(&RedbStore::open(&copy).unwrap()).len(), 3);
        // An anchored database whose anchor is gone is refused too.
        let moved = dir.path().join("moved.anchor");
        std::fs::rename(&anchor, &moved).unwrap();
        let err = RedbStore::open_anchored(&path, &anchor).err().unwrap();
        assert!(matches!(err, StoreError::AnchorMissing { .. }), "{err}");
        assert!(err.to_string().contains("is missing"), "{err}");
    }

    #[test]
    fn a_missing_router_database_with_an_existing_anchor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.redb");
        let anchor = dir.path().join("router.anchor");
        {
            let mut store = RedbStore::open_anchored(&path, &anchor).unwrap();
            store
                .commit(&[prekey(1, 1, true)], Durability::Now)
                .unwrap();
        }
        // The database and its log are lost; the anchor is not.
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(wal_path(&path)).unwrap();
        let err = RedbStore::open_anchored(&path, &anchor).err().unwrap();
        assert!(matches!(err, StoreError::DatabaseMissing { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("does not exist, but its rollback anchor")
                && text.contains(&path.display().to_string()),
            "{text}"
        );
        assert!(!path.exists(), "a refused start created a database");
        // The database alone lost (its log left): refused as well.
        {
            let other = dir.path().join("other.redb");
            let other_anchor = dir.path().join("other.anchor");
            drop(RedbStore::open_anchored(&other, &other_anchor).unwrap());
            std::fs::remove_file(&other).unwrap();
            let err = RedbStore::open_anchored(&other, &other_anchor)
                .err()
                .unwrap();
            assert!(err.to_string().contains("exists but its database"), "{err}");
        }
    }

    fn mem_prekeys(store: &MemStore) -> Vec<(AccountId, [u8; 32])> {
        store.load().unwrap().one_time_prekeys
    }

    #[test]
    fn a_crash_loses_the_deferred_commits_after_the_last_durable_one_only() {
        let mut store = MemStore::new();
        store
            .commit(&[prekey(1, 1, true)], Durability::Now)
            .unwrap();
        store
            .commit(&[prekey(1, 2, true)], Durability::Deferred)
            .unwrap();
        // Made durable by the next durable commit.
        store
            .commit(&[prekey(1, 3, true)], Durability::Now)
            .unwrap();
        store
            .commit(&[prekey(1, 4, true)], Durability::Deferred)
            .unwrap();
        store
            .commit(&[prekey(1, 1, false)], Durability::Deferred)
            .unwrap();
        // Readers see everything committed, deferred or not.
        let seen: Vec<u8> = mem_prekeys(&store).iter().map(|(_, k)| k[0]).collect();
        assert_eq!(seen, vec![2, 3, 4]);
        store.lose_deferred().unwrap();
        let kept: Vec<u8> = mem_prekeys(&store).iter().map(|(_, k)| k[0]).collect();
        assert_eq!(kept, vec![1, 2, 3]);
    }

    #[test]
    fn a_checkpoint_restarts_the_log_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.redb");
        let mut store = RedbStore::open(&path).unwrap();
        let generation = |s: &RedbStore| s.db.log_position().unwrap().0;
        let first = generation(&store);
        // About 100 bytes of log per record, 2000 records per commit.
        let mut commits = 0u32;
        while generation(&store) == first {
            let batch: Vec<Record> = (0..2000u32)
                .map(|i| Record::OneTimePrekey {
                    account: AccountId::from_bytes([7; 32]),
                    key: {
                        let mut k = [0u8; 32];
                        k[..4].copy_from_slice(&(commits * 2000 + i).to_be_bytes());
                        k
                    },
                    present: true,
                })
                .collect();
            store.commit(&batch, Durability::Now).unwrap();
            commits += 1;
            assert!(commits < 1000, "no checkpoint");
        }
        assert_eq!(store.db.log_position().unwrap().1, 0);
        store
            .commit(&[prekey(8, 8, true)], Durability::Now)
            .unwrap();
        let image = crash_image(&path, &dir.path().join("crash"));
        let reopened = RedbStore::open(&image).unwrap();
        assert_eq!(prekeys(&reopened).len(), commits as usize * 2000 + 1);
    }

    /// An envelope at `index` of conversation `c` with an attestation by
    /// each of `servers`, as the core commits them.
    fn envelope_rows(c: ConversationId, index: u64, servers: u32) -> Vec<Record> {
        use grompi_proto::envelope::HeaderFields;
        use grompi_proto::{
            BodyHash, Envelope, EnvelopeHeader, EnvelopeKind, KeyCommitment, Sequence,
        };
        let body = vec![index as u8; 40];
        let header = EnvelopeHeader::new(HeaderFields {
            conversation: c,
            epoch: Epoch(0),
            kind: EnvelopeKind::Message,
            sender: SlotIndex(0),
            sequence: Sequence(index + 1),
            last_seen: None,
            body_hash: BodyHash::of(&body),
            key_commitment: KeyCommitment::from_bytes([7; 32]),
            slot_set_hash: None,
        })
        .unwrap();
        let mut records = vec![Record::Envelope {
            conversation: c,
            index: Index(index),
            stored: Some(Box::new(StoredEnvelope {
                envelope: Envelope::new(header, body, Vec::new()).unwrap(),
                submission_tags: Vec::new(),
                previous_head: Head::genesis(&c),
                head: Head::genesis(&c),
                submitter: None,
                next_slots: None,
            })),
        }];
        for server in 0..servers {
            records.push(Record::Attestation {
                conversation: c,
                attestation: Attestation {
                    server,
                    index: Index(index),
                    head: Head::genesis(&c),
                    tags: Vec::new(),
                    next_tags: Vec::new(),
                    key_shares: Vec::new(),
                    log_index: None,
                },
            });
        }
        records
    }

    /// Removing rows below a first index, as the retention setting does.
    fn removal(c: ConversationId, first: u64, servers: u32) -> Vec<Record> {
        let mut records = Vec::new();
        for i in 0..first {
            records.push(Record::EnvelopeRemoved {
                conversation: c,
                index: Index(i),
            });
            for server in 0..servers {
                records.push(Record::AttestationRemoved {
                    conversation: c,
                    index: Index(i),
                    server,
                });
            }
        }
        records.push(Record::FirstStored {
            conversation: c,
            first: Index(first),
        });
        records
    }

    fn kept(store: &impl EnvelopeReader, c: &ConversationId) -> Vec<(u64, usize)> {
        store
            .read(c, Index(0), Index(100))
            .unwrap()
            .into_iter()
            .map(|(i, _, atts)| (i.0, atts.len()))
            .collect()
    }

    #[test]
    fn removed_envelopes_and_attestations_stay_removed_across_a_crash_in_redb() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.redb");
        let mut store = RedbStore::open(&path).unwrap();
        let c = ConversationId::from_bytes([4; 32]);
        let other = ConversationId::from_bytes([5; 32]);
        for i in 0..10 {
            store
                .commit(&envelope_rows(c, i, 2), Durability::Now)
                .unwrap();
            store
                .commit(&envelope_rows(other, i, 2), Durability::Now)
                .unwrap();
        }
        // Removal commits deferred, with answers: made durable by the next
        // durable commit.
        store
            .commit(&removal(c, 6, 2), Durability::Deferred)
            .unwrap();
        assert_eq!(
            kept(&store, &c),
            (6..10).map(|i| (i, 2)).collect::<Vec<_>>()
        );
        store
            .commit(&[prekey(1, 1, true)], Durability::Now)
            .unwrap();
        let image = crash_image(&path, &dir.path().join("crash"));
        let reopened = RedbStore::open(&image).unwrap();
        assert_eq!(
            kept(&reopened, &c),
            (6..10).map(|i| (i, 2)).collect::<Vec<_>>()
        );
        assert_eq!(
            reopened
                .scan(
                    Table::Attestations,
                    &record::envelope_key(&c, Index(0)),
                    &record::envelope_key(&c, Index(6))
                )
                .unwrap()
                .len(),
            0,
            "attestation rows of removed indices are left"
        );
        assert_eq!(
            kept(&reopened, &other).len(),
            10,
            "another conversation lost rows"
        );
        let snapshot = reopened.load().unwrap();
        assert_eq!(snapshot.first_stored, vec![(c, Index(6))]);
    }

    /// The retention setting removes a member's envelope and, in the same
    /// commit and log record, the slot sequence row the store derives from
    /// the removed value; a crash image replays both.
    #[test]
    fn removing_a_member_envelope_removes_its_slot_sequence_row_in_redb() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.redb");
        let mut store = RedbStore::open(&path).unwrap();
        let c = ConversationId::from_bytes([4; 32]);
        for i in 0..4 {
            let mut rows = envelope_rows(c, i, 1);
            let mut sequence = None;
            if let Some(Record::Envelope {
                stored: Some(s), ..
            }) = rows.first_mut()
            {
                s.submitter = Some(AccountId::from_bytes([6; 32]));
                let h = s.envelope.header();
                sequence = Some(Record::SlotSequence {
                    conversation: c,
                    epoch: h.epoch(),
                    slot: h.sender(),
                    sequence: h.sequence(),
                    admitted: Some(Admitted {
                        index: Index(i),
                        hash: s.envelope.hash(),
                    }),
                });
            }
            rows.extend(sequence);
            store.commit(&rows, Durability::Now).unwrap();
        }
        let sequences = |s: &RedbStore| -> Vec<u64> {
            (1..=4)
                .filter(|q| {
                    s.admitted(&c, Epoch(0), SlotIndex(0), Sequence(*q))
                        .unwrap()
                        .is_some()
                })
                .collect()
        };
        assert_eq!(sequences(&store), vec![1, 2, 3, 4]);
        assert_eq!(
            store
                .admitted(&c, Epoch(0), SlotIndex(0), Sequence(3))
                .unwrap()
                .map(|a| a.index),
            Some(Index(2))
        );
        // Indices 0 and 1 (sequences 1 and 2) go, deferred, made durable
        // by the next synced commit.
        store
            .commit(&removal(c, 2, 1), Durability::Deferred)
            .unwrap();
        assert_eq!(sequences(&store), vec![3, 4]);
        store
            .commit(&[prekey(1, 1, true)], Durability::Now)
            .unwrap();
        let image = crash_image(&path, &dir.path().join("crash"));
        let reopened = RedbStore::open(&image).unwrap();
        assert_eq!(sequences(&reopened), vec![3, 4]);
        assert_eq!(kept(&reopened, &c), vec![(2, 1), (3, 1)]);
    }

    /// A conversation with `servers` order servers and `next` as its tail.
    fn conversation_rows(c: ConversationId, servers: usize, next: u64) -> Vec<Record> {
        vec![
            Record::Conversation(Box::new(ConversationRecord {
                id: c,
                creator: AccountId::from_bytes([1; 32]),
                epochs: Vec::new(),
                prepared: Vec::new(),
                opened: vec![true; servers],
            })),
            Record::Tail {
                conversation: c,
                next: Index(next),
                head: Head::genesis(&c),
            },
        ]
    }

    /// `server`'s attestation rows of `indices` in `c`.
    fn attestation_rows(
        c: ConversationId,
        server: u32,
        indices: std::ops::Range<u64>,
    ) -> Vec<Record> {
        indices
            .map(|i| Record::Attestation {
                conversation: c,
                attestation: Attestation {
                    server,
                    index: Index(i),
                    head: Head::genesis(&c),
                    tags: Vec::new(),
                    next_tags: Vec::new(),
                    key_shares: Vec::new(),
                    log_index: None,
                },
            })
            .collect()
    }

    /// Progress is derived from the attestation rows: one past each
    /// server's highest row however far below the tail it is, the first
    /// index kept once the retention setting removed the rows, and the
    /// higher of that and a progress row an older store wrote.
    #[test]
    fn a_restart_derives_each_servers_progress_from_its_attestation_rows() {
        let mut store = MemStore::new();
        let c = ConversationId::from_bytes([4; 32]);
        let mut records = conversation_rows(c, 3, 40);
        for i in 0..40 {
            records.extend(envelope_rows(c, i, 0));
        }
        // Server 0 attested everything, server 1 the first 13 (27 below
        // the tail: the windows of 8 and 16 miss it), server 2 nothing.
        records.extend(attestation_rows(c, 0, 0..40));
        records.extend(attestation_rows(c, 1, 0..13));
        // Rows an older store wrote: one as high as the rows imply, one
        // stale (a row is never above what the rows imply).
        records.push(Record::Progress {
            conversation: c,
            server: 0,
            next: Index(40),
        });
        records.push(Record::Progress {
            conversation: c,
            server: 1,
            next: Index(9),
        });
        // Everything attested by every server, then removed by retention
        // (no row left); and all attested with only the oldest removed.
        let gone = ConversationId::from_bytes([5; 32]);
        let some = ConversationId::from_bytes([6; 32]);
        for d in [gone, some] {
            records.extend(conversation_rows(d, 3, 10));
            for i in 0..10 {
                records.extend(envelope_rows(d, i, 3));
            }
        }
        store.commit(&records, Durability::Now).unwrap();
        store
            .commit(&removal(gone, 10, 3), Durability::Now)
            .unwrap();
        store.commit(&removal(some, 4, 3), Durability::Now).unwrap();
        let mut progress = store.load().unwrap().progress;
        progress.sort();
        let mut want = vec![(c, 0, Index(40)), (c, 1, Index(13))];
        for d in [gone, some] {
            want.extend((0..3).map(|s| (d, s, Index(10))));
        }
        want.sort();
        assert_eq!(progress, want);
        // Server 2 has attested nothing (no entry above). A row an older
        // store wrote for it counts where it is higher than the rows.
        store
            .commit(
                &[Record::Progress {
                    conversation: c,
                    server: 2,
                    next: Index(2),
                }],
                Durability::Now,
            )
            .unwrap();
        assert!(store.load().unwrap().progress.contains(&(c, 2, Index(2))));
    }

    #[test]
    fn a_crash_loses_a_deferred_removal_whole_in_memory() {
        let mut store = MemStore::new();
        let c = ConversationId::from_bytes([4; 32]);
        for i in 0..8 {
            store
                .commit(&envelope_rows(c, i, 3), Durability::Now)
                .unwrap();
        }
        store.commit(&removal(c, 3, 3), Durability::Now).unwrap();
        store
            .commit(&removal(c, 5, 3), Durability::Deferred)
            .unwrap();
        assert_eq!(store.load().unwrap().first_stored, vec![(c, Index(5))]);
        store.lose_deferred().unwrap();
        // The lost removal is lost whole: rows and first index agree.
        assert_eq!(store.load().unwrap().first_stored, vec![(c, Index(3))]);
        assert_eq!(kept(&store, &c), (3..8).map(|i| (i, 3)).collect::<Vec<_>>());
    }
}
