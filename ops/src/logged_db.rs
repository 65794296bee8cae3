//! A redb database committed through a write-ahead log ([`crate::wal`]):
//! the commit protocol both servers' stores share.
//!
//! * [`LoggedDatabase::commit`] appends the transaction's changes (a
//!   [`KvBatch`] the store recorded while writing) to the log and syncs it,
//!   *then* commits the transaction without an fsync (`Durability::None`).
//!   When it returns, the changes are on disk, and no reader sees them
//!   before the log record is.
//! * [`LoggedDatabase::commit_deferred`] appends without the sync, for
//!   changes the owner can obtain again: they become durable with the next
//!   synced commit (the log is sequential, so a sync covers every record
//!   before it), and a crash before that loses a suffix of them.
//! * When the log passes [`CHECKPOINT_BYTES`], a durable commit
//!   (`Durability::Immediate`) records the next log generation and the log
//!   starts again from its beginning. A batch that does not fit in what is
//!   left of the log is committed durably itself, which is also a
//!   checkpoint.
//! * [`LoggedDatabase::open`] replays the current generation's records over
//!   the last durable commit, through the store's own `replay`, and
//!   checkpoints at once. A database that records a generation but whose
//!   log file is gone is refused ([`WalError::Missing`]).
//!
//! The generation lives in the table `wal` of the database itself, so that
//! it changes atomically with the durable state it describes.

use crate::wal::{KvBatch, KvOp, Wal, WalError};
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// The largest a log grows to (64 MiB).
pub const CAPACITY: u64 = 64 << 20;
/// Log bytes after which a checkpoint restarts the log: half the capacity,
/// so that a batch almost never finds the log full.
pub const CHECKPOINT_BYTES: u64 = CAPACITY / 2;

const WAL_TABLE: redb::TableDefinition<'static, &'static str, u64> =
    redb::TableDefinition::new("wal");
const GENERATION: &str = "generation";

/// Why the database or its log failed.
#[derive(Debug, thiserror::Error)]
pub enum LoggedDbError {
    /// redb failed.
    #[error("database: {0}")]
    Database(String),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] WalError),
    /// The log's lock was poisoned by a panic while it was held.
    #[error("the write-ahead log's lock is poisoned")]
    Poisoned,
}

fn db(e: impl std::fmt::Display) -> LoggedDbError {
    LoggedDbError::Database(e.to_string())
}

/// The Prometheus names under which a server reports its log.
#[derive(Debug, Clone, Copy)]
pub struct LogMetrics {
    /// Gauge: bytes in the log since the last checkpoint.
    pub bytes: &'static str,
    /// Counter: checkpoints.
    pub checkpoints: &'static str,
}

/// A redb database and its write-ahead log.
pub struct LoggedDatabase {
    db: Database,
    wal: Mutex<Wal>,
    metrics: LogMetrics,
}

impl std::fmt::Debug for LoggedDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedDatabase")
            .field("wal", &self.wal)
            .finish_non_exhaustive()
    }
}

impl LoggedDatabase {
    /// Opens (or creates) the database at `path` and its log
    /// ([`crate::wal::path_for`]), hands every change the log holds since
    /// the last durable commit to `replay` (in order, inside one write
    /// transaction, which is where the store also creates its tables), and
    /// checkpoints.
    pub fn open<E: From<LoggedDbError>>(
        path: &Path,
        metrics: LogMetrics,
        replay: impl FnOnce(&WriteTransaction, Vec<KvOp>) -> Result<(), E>,
    ) -> Result<Self, E> {
        let database = Database::create(path).map_err(db)?;
        let txn = database.begin_write().map_err(db)?;
        let recorded = txn
            .open_table(WAL_TABLE)
            .map_err(db)?
            .get(GENERATION)
            .map_err(db)?
            .map(|g| g.value());
        let generation = recorded.unwrap_or(0);
        let (mut wal, payloads) = Wal::open(
            &crate::wal::path_for(path),
            generation,
            CAPACITY,
            recorded.is_some(),
        )
        .map_err(LoggedDbError::from)?;
        let mut ops = Vec::new();
        for (sequence, payload) in payloads.iter().enumerate() {
            let batch = KvBatch::decode(payload).map_err(|what| {
                LoggedDbError::from(WalError::Malformed {
                    generation,
                    sequence: sequence as u64,
                    what,
                })
            })?;
            ops.extend(batch);
        }
        replay(&txn, ops)?;
        if !payloads.is_empty() {
            tracing::info!(
                records = payloads.len(),
                "replayed the write-ahead log over the last checkpoint"
            );
        }
        let next = generation + 1;
        txn.open_table(WAL_TABLE)
            .map_err(db)?
            .insert(GENERATION, next)
            .map_err(db)?;
        txn.commit().map_err(db)?;
        wal.restart(next);
        Ok(Self {
            db: database,
            wal: Mutex::new(wal),
            metrics,
        })
    }

    /// The database, for reads and for writes that must be durable on
    /// their own (`Durability::Immediate`, the default of a new write
    /// transaction), outside the log.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Begins a write transaction to finish with [`LoggedDatabase::commit`].
    pub fn begin_write(&self) -> Result<WriteTransaction, LoggedDbError> {
        let mut txn = self.db.begin_write().map_err(db)?;
        txn.set_durability(Durability::None).map_err(db)?;
        Ok(txn)
    }

    fn wal(&self) -> Result<MutexGuard<'_, Wal>, LoggedDbError> {
        self.wal.lock().map_err(|_| LoggedDbError::Poisoned)
    }

    /// Commits `txn`, whose changes are `log`; when this returns `Ok` they
    /// are on disk. The log is synced first: until then readers see the
    /// previous state.
    pub fn commit(&self, txn: WriteTransaction, log: &KvBatch) -> Result<(), LoggedDbError> {
        self.commit_with(txn, log, Wal::append)
    }

    /// Commits `txn`, whose changes are `log`, without waiting for the
    /// disk: readers see the changes at once, and they are on disk once a
    /// later [`LoggedDatabase::commit`] returns (or a checkpoint is made). A
    /// crash before that may lose them, and with them every deferred
    /// commit after them, never a commit before them. Only for changes the
    /// owner can obtain again after such a crash.
    pub fn commit_deferred(
        &self,
        txn: WriteTransaction,
        log: &KvBatch,
    ) -> Result<(), LoggedDbError> {
        self.commit_with(txn, log, Wal::append_deferred)
    }

    fn commit_with(
        &self,
        mut txn: WriteTransaction,
        log: &KvBatch,
        append: fn(&mut Wal, &[u8]) -> Result<(), WalError>,
    ) -> Result<(), LoggedDbError> {
        let mut wal = self.wal()?;
        if log.is_empty() {
            return txn.commit().map_err(db);
        }
        if wal.fits(log.as_bytes().len()) {
            append(&mut wal, log.as_bytes())?;
            txn.commit().map_err(db)?;
            if wal.used() < CHECKPOINT_BYTES {
                metrics::gauge!(self.metrics.bytes).set(wal.used() as f64);
                return Ok(());
            }
            txn = self.db.begin_write().map_err(db)?;
        }
        // A checkpoint: either after the commit above, or this batch itself
        // when it does not fit in what is left of the log.
        let next = wal.generation() + 1;
        txn.open_table(WAL_TABLE)
            .map_err(db)?
            .insert(GENERATION, next)
            .map_err(db)?;
        txn.set_durability(Durability::Immediate).map_err(db)?;
        txn.commit().map_err(db)?;
        wal.restart(next);
        metrics::counter!(self.metrics.checkpoints).increment(1);
        metrics::gauge!(self.metrics.bytes).set(0.0);
        tracing::debug!(generation = next, "checkpoint");
        Ok(())
    }

    /// The log's generation and the bytes written since its last restart.
    pub fn log_position(&self) -> Result<(u64, u64), LoggedDbError> {
        let wal = self.wal()?;
        Ok((wal.generation(), wal.used()))
    }
}
