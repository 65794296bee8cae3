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
//! * When the log passes [`CHECKPOINT_BYTES`], or after
//!   [`CHECKPOINT_COMMITS`] commits, a checkpoint is *due*: a durable
//!   commit (`Durability::Immediate`) that records the next log generation,
//!   after which the log starts again from its beginning. The owner makes
//!   it with [`LoggedDatabase::checkpoint_if_due`] after the commit's
//!   effects are out (its answers sent: they are on disk through the log
//!   already, and need not wait for the database's own sync); if it does
//!   not, its next batch is committed durably, which is the checkpoint. A
//!   batch that does not fit in what is left of the log is committed
//!   durably itself, which is also a checkpoint. A checkpoint that fails
//!   says so ([`LoggedDbError::CheckpointFailed`]: the commits before it
//!   are on disk through the log); the database then refuses further
//!   commits until it is opened again (which replays the log).
//! * [`LoggedDatabase::create`] makes a new database and its log, bound by
//!   a random *database id* that the log's header and every record's
//!   checksum carry. [`LoggedDatabase::open_existing`] opens only an
//!   existing database, replays the current generation's records over the
//!   last durable commit, through the store's own `replay`, and checkpoints
//!   at once. It refuses a log that is missing, empty, zeroed, of another
//!   format or another database, ahead of the database, or damaged in the
//!   middle (see [`crate::wal`]), and a database behind its rollback anchor
//!   ([`crate::anchor`]), when one is configured. [`LoggedDatabase::open`]
//!   (the router, tests, tools) creates the pair when neither file exists
//!   and otherwise opens as above, without an anchor.
//! * Each log record is a step of the commit chain (a batch too large for
//!   the log is a step too); after each *synced* commit the anchor records
//!   the chain's position, without a sync of its own, and each checkpoint
//!   syncs it.
//! * After an append, a redb commit, a checkpoint or an anchor update
//!   fails, the database refuses every further commit
//!   ([`LoggedDbError::Stopped`]): what the log holds is then for the replay
//!   at the next open to decide.
//!
//! The generation, the database id and the commit chain's position live in
//! the tables `wal` and `wal_ids` of the database itself, so that they
//! change atomically with the durable state they describe.
//!
//! # Two-phase commit
//!
//! Durable commits here (creation, checkpoints, the batches too large for
//! the log) use redb's two-phase commit: the new commit slot is synced
//! before the header that selects it is flipped and synced again. With the
//! default one-phase commit, recovery picks the newest slot whose
//! (non-cryptographic) checksum is valid, and redb documents that a writer
//! who controls transaction contents and crash timing could make a partial
//! commit look valid. Order servers store request bytes chosen by others
//! (evidence), so that is not a risk to take to save one `fsync` per
//! checkpoint. The per-batch commits are
//! `Durability::None` and sync nothing; the log is what makes them durable.
//!
//! # Allocator state (bounded opening)
//!
//! Every durable commit here also records redb's allocator state (redb's
//! "quick repair"). redb needs that state to open a file: a file closed
//! cleanly records it at close; otherwise redb rebuilds it by walking every
//! tree of the file ("repair"), which takes time in proportion to the file
//! (seconds to over a minute at a gigabyte) and is what a router killed,
//! crashed, or stopped with commits since its last checkpoint paid at every
//! start. With the state recorded at each checkpoint, opening after a crash
//! loads it like a clean open, and the write-ahead log (at most
//! [`CAPACITY`]) replays the commits since: opening is bounded by the log,
//! not by the database. [`OpenReport::repaired`] says whether an open
//! repaired. The record costs a few pages per checkpoint.

use crate::anchor::{Anchor, AnchorError, ChainPosition};
use crate::wal::{DatabaseId, KvBatch, KvOp, SYNCED, Wal, WalError};
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The largest a log grows to (64 MiB).
pub const CAPACITY: u64 = 64 << 20;
/// Log bytes after which a checkpoint restarts the log (4 MiB), far below
/// the capacity, so that a batch almost never finds the log full.
///
/// A checkpoint is a durable redb commit: it writes every page the
/// commits since the last one changed and waits for the disk, while
/// every request queued behind it waits (the batch that made it due is
/// answered first: [`LoggedDatabase::checkpoint_if_due`]). Its time
/// grows with what changed since the last one: measured here, 7 ms after
/// 100 commits of three scattered 1 KB rows, 44 ms after 1,000, 230 ms
/// after 10,000 (docs/PERFORMANCE.md, "Checkpoint stalls"). So checkpoints
/// come often and short, by bytes and by commits
/// ([`CHECKPOINT_COMMITS`]), whichever comes first; the pages redb frees
/// are also reused only after a durable commit, so the file grows less.
pub const CHECKPOINT_BYTES: u64 = 4 << 20;

/// Commits after which a checkpoint is made even if the log is below
/// [`CHECKPOINT_BYTES`]: each commit changes at least a few pages, however
/// small it is. Of 64, 128, 256 and 512, 64 gave the lowest open-loop p99
/// at every rate, at the same CPU per message; with answers sent before
/// the checkpoint, 256 was no better (docs/PERFORMANCE.md, "Checkpoint
/// stalls" and "answers before the checkpoint").
pub const CHECKPOINT_COMMITS: u32 = 64;

/// The database's page cache. redb's default is 1 GiB, so a process's
/// resident memory would grow with the pages it reads and writes (every
/// envelope fetched, every record replayed) up to that; this bounds it.
/// Reads beyond it go to the operating system's page cache.
pub const PAGE_CACHE_BYTES: usize = 64 << 20;

const WAL_TABLE: redb::TableDefinition<'static, &'static str, u64> =
    redb::TableDefinition::new("wal");
const WAL_IDS: redb::TableDefinition<'static, &'static str, &'static [u8]> =
    redb::TableDefinition::new("wal_ids");
const GENERATION: &str = "generation";
const CHAIN_COUNTER: &str = "chain_counter";
const ANCHORED: &str = "anchored";
const DATABASE_ID: &str = "database_id";
const CHAIN_HASH: &str = "chain_hash";

/// The generation a new database's log starts at.
const FIRST_GENERATION: u64 = 1;

/// Why the database or its log failed.
#[derive(Debug, thiserror::Error)]
pub enum LoggedDbError {
    /// redb failed.
    #[error("database: {0}")]
    Database(String),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] WalError),
    /// The rollback anchor refused the database or failed.
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    /// The log's lock was poisoned by a panic while it was held.
    #[error("the write-ahead log's lock is poisoned")]
    Poisoned,
    /// There is no database file to open.
    #[error("database {path} does not exist")]
    NoDatabase {
        /// The database file.
        path: PathBuf,
    },
    /// Creating refused to replace an existing file.
    #[error("{path} already exists; refusing to create a database over it")]
    Exists {
        /// The file that exists.
        path: PathBuf,
    },
    /// A log exists but its database does not.
    #[error(
        "write-ahead log {log} exists but its database {path} does not: the database was \
         lost or moved. Restore it next to its log; a new database here would forget \
         everything the log's database recorded"
    )]
    LogWithoutDatabase {
        /// The database file.
        path: PathBuf,
        /// The log file.
        log: PathBuf,
    },
    /// The database's records about its log are missing or malformed.
    #[error("database {path}: {what}")]
    Unusable {
        /// The database file.
        path: PathBuf,
        /// What is wrong, and what to do.
        what: &'static str,
    },
    /// A checkpoint ([`LoggedDatabase::checkpoint_if_due`]) failed; every
    /// batch committed before it is on disk (its log record is synced).
    /// The database refuses further commits until it is opened again.
    #[error(
        "the batches before it were committed (their log records are synced), but the \
         checkpoint after them failed: {reason}. No further commits are accepted; restart \
         (opening replays the log)"
    )]
    CheckpointFailed {
        /// What failed.
        reason: String,
    },
    /// The batch was committed and is on disk, but recording it in the
    /// rollback anchor failed. Answer the batch; the database refuses
    /// further commits until it is opened again.
    #[error(
        "the batch was committed (its log record is synced), but the rollback anchor could \
         not record it: {0}. No further commits are accepted"
    )]
    AnchorAfterCommit(AnchorError),
    /// An earlier failure after a commit stopped this database.
    #[error(
        "an earlier checkpoint or anchor update failed; no commits until the database is opened again"
    )]
    Stopped,
}

impl LoggedDbError {
    /// Whether the batch whose commit returned this error is nevertheless
    /// committed and on disk.
    pub fn batch_committed(&self) -> bool {
        matches!(
            self,
            Self::CheckpointFailed { .. } | Self::AnchorAfterCommit(_)
        )
    }
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
    /// Histogram: a checkpoint's seconds (its durable commit, the log's
    /// restart and the anchor's sync), during which nothing commits.
    pub checkpoint_seconds: &'static str,
}

/// The log and what moves with it, under one lock.
struct Log {
    wal: Wal,
    chain: ChainPosition,
    anchor: Option<Anchor>,
    /// A checkpoint or anchor update failed after a commit.
    stopped: bool,
    /// Commits since the last checkpoint.
    commits: u32,
    /// Makes the next checkpoint fail (tests of the failure path).
    #[cfg(test)]
    fail_checkpoint: bool,
}

/// A redb database and its write-ahead log.
pub struct LoggedDatabase {
    db: Database,
    log: Mutex<Log>,
    metrics: LogMetrics,
    opened: OpenReport,
}

impl Log {
    /// Whether the log passed a checkpoint threshold: the owner
    /// checkpoints with [`LoggedDatabase::checkpoint_if_due`] once the
    /// batch's effects are out, or the next commit is itself the
    /// checkpoint.
    fn due(&self) -> bool {
        self.wal.used() >= CHECKPOINT_BYTES || self.commits >= CHECKPOINT_COMMITS
    }
}

/// What [`LoggedDatabase::open_existing`] did, phase by phase (all zero
/// for a database just created). Also logged (`tracing`, info).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenReport {
    /// Whether redb repaired the file while opening it: a walk of every
    /// tree, which it does when the file was not closed cleanly and its
    /// last durable commit recorded no allocator state.
    pub repaired: bool,
    /// redb's open, milliseconds (with the repair, if any).
    pub open_ms: f64,
    /// Reading and checking the write-ahead log, milliseconds.
    pub read_log_ms: f64,
    /// Records in the log since the last checkpoint.
    pub log_records: u64,
    /// Their payload bytes.
    pub log_bytes: u64,
    /// Possible records after them whose checksum was computed
    /// ([`crate::wal::Replay::tail_checks`]).
    pub log_tail_checks: u64,
    /// Applying them to the database, milliseconds.
    pub replay_ms: f64,
    /// The durable commit after the replay, milliseconds.
    pub checkpoint_ms: f64,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

impl std::fmt::Debug for LoggedDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedDatabase").finish_non_exhaustive()
    }
}

/// A durable commit: immediate, two-phase, recording the allocator state
/// (see the module doc).
fn make_durable(txn: &mut WriteTransaction) -> Result<(), LoggedDbError> {
    txn.set_durability(Durability::Immediate).map_err(db)?;
    txn.set_two_phase_commit(true);
    txn.set_quick_repair(true);
    Ok(())
}

fn write_position(
    txn: &WriteTransaction,
    generation: u64,
    chain: &ChainPosition,
) -> Result<(), LoggedDbError> {
    let mut t = txn.open_table(WAL_TABLE).map_err(db)?;
    t.insert(GENERATION, generation).map_err(db)?;
    t.insert(CHAIN_COUNTER, chain.counter).map_err(db)?;
    drop(t);
    txn.open_table(WAL_IDS)
        .map_err(db)?
        .insert(CHAIN_HASH, chain.hash.as_slice())
        .map_err(db)?;
    Ok(())
}

/// What the database records about its log.
struct Recorded {
    database: DatabaseId,
    generation: u64,
    chain: ChainPosition,
    anchored: bool,
}

fn read_recorded(txn: &WriteTransaction, path: &Path) -> Result<Recorded, LoggedDbError> {
    let unusable = |what| LoggedDbError::Unusable {
        path: path.to_path_buf(),
        what,
    };
    let t = txn.open_table(WAL_TABLE).map_err(db)?;
    let get = |k: &str| t.get(k).map(|g| g.map(|v| v.value())).map_err(db);
    let (generation, counter, anchored) = (get(GENERATION)?, get(CHAIN_COUNTER)?, get(ANCHORED)?);
    drop(t);
    let ids = txn.open_table(WAL_IDS).map_err(db)?;
    let bytes = |k: &str| {
        ids.get(k)
            .map(|g| g.map(|v| v.value().to_vec()))
            .map_err(db)
    };
    let (database, hash) = (bytes(DATABASE_ID)?, bytes(CHAIN_HASH)?);
    let Some(database) = database else {
        return Err(unusable(if generation.is_some() {
            "written by an earlier version (write-ahead log format 1), which this version \
             does not open; see docs/OPERATING.md (data directory)"
        } else {
            "its creation was interrupted (it records no database id); it never served: \
             remove it and its .wal file and create it again"
        }));
    };
    let database: DatabaseId = database
        .try_into()
        .map_err(|_| unusable("the recorded database id is not 32 bytes"))?;
    let (Some(generation), Some(counter), Some(hash)) = (generation, counter, hash) else {
        return Err(unusable(
            "it records a database id but not its log position",
        ));
    };
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| unusable("the recorded chain hash is not 32 bytes"))?;
    Ok(Recorded {
        database,
        generation,
        chain: ChainPosition { counter, hash },
        anchored: anchored.is_some(),
    })
}

impl LoggedDatabase {
    /// Creates a new database at `path` and its log
    /// ([`crate::wal::path_for`]) under a fresh random database id, lets
    /// `init` write its first state (at least: create its tables), and
    /// commits durably. Refuses if the database or its log exists.
    pub fn create<E: From<LoggedDbError>>(
        path: &Path,
        metrics: LogMetrics,
        init: impl FnOnce(&WriteTransaction) -> Result<(), E>,
    ) -> Result<Self, E> {
        let log_path = crate::wal::path_for(path);
        for p in [path, &log_path] {
            if p.exists() {
                return Err(LoggedDbError::Exists {
                    path: p.to_path_buf(),
                }
                .into());
            }
        }
        let database_id = crate::wal::new_database_id().map_err(|e| {
            LoggedDbError::Database(format!("cannot read the random generator: {e}"))
        })?;
        let database = Database::builder()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(path)
            .map_err(db)?;
        // The log first: a database that records an id always has its log.
        let wal = Wal::create(&log_path, &database_id, FIRST_GENERATION, CAPACITY)
            .map_err(LoggedDbError::from)?;
        let chain = ChainPosition::genesis(&database_id);
        let mut txn = database.begin_write().map_err(db)?;
        write_position(&txn, FIRST_GENERATION, &chain)?;
        txn.open_table(WAL_IDS)
            .map_err(db)?
            .insert(DATABASE_ID, database_id.as_slice())
            .map_err(db)?;
        init(&txn)?;
        make_durable(&mut txn)?;
        txn.commit().map_err(db)?;
        Ok(Self {
            db: database,
            log: Mutex::new(Log {
                wal,
                chain,
                anchor: None,
                stopped: false,
                commits: 0,
                #[cfg(test)]
                fail_checkpoint: false,
            }),
            metrics,
            opened: OpenReport::default(),
        })
    }

    /// Opens the database at `path`, or creates it ([`LoggedDatabase::create`],
    /// with `replay` given no changes) when neither it nor its log exists.
    /// For processes whose database may start empty (the router) and for
    /// tests; an order server opens with [`LoggedDatabase::open_existing`].
    pub fn open<E: From<LoggedDbError>>(
        path: &Path,
        metrics: LogMetrics,
        replay: impl FnOnce(&WriteTransaction, Vec<KvOp>) -> Result<(), E>,
    ) -> Result<Self, E> {
        if !path.exists() && !crate::wal::path_for(path).exists() {
            return Self::create(path, metrics, |txn| replay(txn, Vec::new()));
        }
        Self::open_existing(path, metrics, None, replay)
    }

    /// Opens the existing database at `path` and its log, hands every
    /// change the log holds since the last durable commit to `replay` (in
    /// order, inside one write transaction, which is where the store also
    /// creates its tables), checks the result against the rollback anchor
    /// at `anchor` (creating the anchor if this database has none yet), and
    /// checkpoints.
    pub fn open_existing<E: From<LoggedDbError>>(
        path: &Path,
        metrics: LogMetrics,
        anchor: Option<&Path>,
        replay: impl FnOnce(&WriteTransaction, Vec<KvOp>) -> Result<(), E>,
    ) -> Result<Self, E> {
        let log_path = crate::wal::path_for(path);
        if !path.exists() {
            return Err(if log_path.exists() {
                LoggedDbError::LogWithoutDatabase {
                    path: path.to_path_buf(),
                    log: log_path,
                }
            } else {
                LoggedDbError::NoDatabase {
                    path: path.to_path_buf(),
                }
            }
            .into());
        }
        let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        tracing::info!(path = %path.display(), file_bytes, "opening the database");
        let started = Instant::now();
        // redb calls this when the file needs a repair (it was not closed
        // cleanly and its last durable commit recorded no allocator state):
        // a walk of every tree in the file.
        let repair_seen = Arc::new(AtomicBool::new(false));
        let database = {
            let seen = repair_seen.clone();
            Database::builder()
                .set_cache_size(PAGE_CACHE_BYTES)
                .set_repair_callback(move |_| seen.store(true, Ordering::Relaxed))
                .open(path)
                .map_err(db)?
        };
        let mut report = OpenReport {
            repaired: repair_seen.load(Ordering::Relaxed),
            open_ms: ms(started),
            ..OpenReport::default()
        };
        tracing::info!(
            ms = report.open_ms,
            repaired = report.repaired,
            "opened the database{}",
            if report.repaired {
                " (repaired: it was not closed cleanly and records no allocator state)"
            } else {
                ""
            }
        );
        let phase = Instant::now();
        let mut txn = database.begin_write().map_err(db)?;
        let recorded = read_recorded(&txn, path)?;
        let generation = recorded.generation;
        let (mut wal, read) = Wal::open(&log_path, &recorded.database, generation, CAPACITY)
            .map_err(LoggedDbError::from)?;
        report.log_records = read.payloads.len() as u64;
        report.log_bytes = read.payloads.iter().map(|p| p.len() as u64).sum();
        report.log_tail_checks = read.tail_checks;
        report.read_log_ms = ms(phase);
        tracing::info!(
            ms = report.read_log_ms,
            records = report.log_records,
            bytes = report.log_bytes,
            tail_checks = report.log_tail_checks,
            tail_check_bytes = read.tail_check_bytes,
            generation,
            "read the write-ahead log"
        );
        let phase = Instant::now();
        let mut ops = Vec::new();
        let mut chain = recorded.chain;
        for (sequence, (payload, sum)) in read.payloads.iter().zip(&read.checksums).enumerate() {
            let batch = KvBatch::decode(payload).map_err(|what| {
                LoggedDbError::from(WalError::Malformed {
                    generation,
                    sequence: sequence as u64,
                    what,
                })
            })?;
            ops.extend(batch);
            chain = chain.step(sum);
        }
        let mut anchor = match anchor {
            None => None,
            Some(a) => match Anchor::open(a, &recorded.database).map_err(LoggedDbError::from)? {
                Some((anchor, at)) => {
                    anchor.check(&at, &chain).map_err(LoggedDbError::from)?;
                    Some(anchor)
                }
                None if recorded.anchored => {
                    return Err(LoggedDbError::from(AnchorError::Missing {
                        path: a.to_path_buf(),
                    })
                    .into());
                }
                // First anchored open: the anchor starts at the last
                // durable position, never ahead of what is on disk.
                None => Some(
                    Anchor::create(a, &recorded.database, &recorded.chain)
                        .map_err(LoggedDbError::from)?,
                ),
            },
        };
        let changes = ops.len();
        replay(&txn, ops)?;
        report.replay_ms = ms(phase);
        tracing::info!(
            ms = report.replay_ms,
            records = read.payloads.len(),
            changes,
            "replayed the write-ahead log over the last checkpoint"
        );
        let phase = Instant::now();
        let next = generation + 1;
        write_position(&txn, next, &chain)?;
        if anchor.is_some() {
            txn.open_table(WAL_TABLE)
                .map_err(db)?
                .insert(ANCHORED, 1)
                .map_err(db)?;
        }
        make_durable(&mut txn)?;
        txn.commit().map_err(db)?;
        wal.restart(next);
        if let Some(a) = &mut anchor {
            a.record_synced(&chain).map_err(LoggedDbError::from)?;
        }
        report.checkpoint_ms = ms(phase);
        tracing::info!(ms = report.checkpoint_ms, generation = next, "checkpointed");
        tracing::info!(
            ms = ms(started),
            open_ms = report.open_ms,
            read_log_ms = report.read_log_ms,
            replay_ms = report.replay_ms,
            checkpoint_ms = report.checkpoint_ms,
            "database ready"
        );
        Ok(Self {
            db: database,
            log: Mutex::new(Log {
                wal,
                chain,
                anchor,
                stopped: false,
                commits: 0,
                #[cfg(test)]
                fail_checkpoint: false,
            }),
            metrics,
            opened: report,
        })
    }

    /// What opening this database did: whether redb repaired the file,
    /// and how long each phase took.
    pub fn open_report(&self) -> &OpenReport {
        &self.opened
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

    fn log(&self) -> Result<MutexGuard<'_, Log>, LoggedDbError> {
        self.log.lock().map_err(|_| LoggedDbError::Poisoned)
    }

    /// Commits `txn`, whose changes are `log`; when this returns `Ok` they
    /// are on disk. The log is synced first: until then readers see the
    /// previous state. When the error says
    /// [`batch_committed`](LoggedDbError::batch_committed), the changes are
    /// on disk too, but nothing more will be committed.
    pub fn commit(&self, txn: WriteTransaction, log: &KvBatch) -> Result<(), LoggedDbError> {
        self.commit_with(txn, log, true)
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
        self.commit_with(txn, log, false)
    }

    fn commit_with(
        &self,
        txn: WriteTransaction,
        batch: &KvBatch,
        synced: bool,
    ) -> Result<(), LoggedDbError> {
        let mut guard = self.log()?;
        let log = &mut *guard;
        if log.stopped {
            return Err(LoggedDbError::Stopped);
        }
        if batch.is_empty() {
            return txn.commit().map_err(db);
        }
        // A checkpoint still due (the owner did not make it), or a batch
        // too large for what is left of the log: the batch is committed
        // durably, which is the checkpoint (below).
        if !log.due() && log.wal.fits(batch.as_bytes().len()) {
            let appended = if synced {
                log.wal.append(batch.as_bytes())
            } else {
                log.wal.append_deferred(batch.as_bytes())
            };
            if let Err(e) = appended {
                // The record may be on disk in part or whole: whether it
                // counts is for the replay at the next open to say.
                log.stopped = true;
                return Err(e.into());
            }
            if let Some(sum) = log.wal.last_checksum() {
                log.chain = log.chain.step(&sum);
            }
            if let Err(e) = txn.commit() {
                // The record is in the log: a replay would apply it.
                log.stopped = true;
                return Err(db(e));
            }
            if synced && let Some(anchor) = &mut log.anchor {
                // On disk (the log is synced), so the anchor may say so.
                if let Err(e) = anchor.record(&log.chain) {
                    log.stopped = true;
                    return Err(LoggedDbError::AnchorAfterCommit(e));
                }
            }
            log.commits = log.commits.saturating_add(1);
            metrics::gauge!(self.metrics.bytes).set(log.wal.used() as f64);
            // A checkpoint this made due waits for the owner: the batch is
            // on disk (its record is synced, or becomes so with the next
            // synced one), so its answers need not wait for it.
            return Ok(());
        }
        // Not in the log, but a step of the chain all the same, as if it
        // had been the next record.
        let wal = &log.wal;
        let sum = crate::wal::checksum(
            wal.database(),
            wal.generation(),
            u64::MAX,
            SYNCED,
            batch.as_bytes(),
        );
        log.chain = log.chain.step(&sum);
        match self.checkpoint(log, Some(txn)) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Whether or not redb kept the checkpoint, opening again
                // finds a consistent pair: the old generation with its
                // records, or the new one holding everything.
                log.stopped = true;
                Err(e)
            }
        }
    }

    /// Makes the checkpoint that the commits since the last one have made
    /// due ([`CHECKPOINT_BYTES`], [`CHECKPOINT_COMMITS`]), if any; returns
    /// whether it did. The owner calls this after a commit's effects are
    /// out (answers sent), so that they do not wait for the checkpoint's
    /// durable commit; what they promise is already on disk through the
    /// log. If the owner does not, its next commit is the checkpoint. A
    /// failure stops the database ([`LoggedDbError::CheckpointFailed`]:
    /// every commit before it stays on disk through the log).
    pub fn checkpoint_if_due(&self) -> Result<bool, LoggedDbError> {
        self.checkpoint_when(Log::due)
    }

    /// Checkpoints (a new transaction) when `wanted` says so; returns
    /// whether it did. Refused once the database stopped; a failure stops
    /// it ([`LoggedDbError::CheckpointFailed`]).
    fn checkpoint_when(&self, wanted: fn(&Log) -> bool) -> Result<bool, LoggedDbError> {
        let mut guard = self.log()?;
        let log = &mut *guard;
        if log.stopped {
            return Err(LoggedDbError::Stopped);
        }
        if !wanted(log) {
            return Ok(false);
        }
        match self.checkpoint(log, None) {
            Ok(()) => Ok(true),
            Err(e) => {
                log.stopped = true;
                Err(LoggedDbError::CheckpointFailed {
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Commits durably (`txn`, or a new transaction) the next generation
    /// and the chain's position, restarts the log, and syncs the anchor.
    fn checkpoint(
        &self,
        log: &mut Log,
        txn: Option<WriteTransaction>,
    ) -> Result<(), LoggedDbError> {
        let started = Instant::now();
        let mut txn = match txn {
            Some(t) => t,
            None => self.db.begin_write().map_err(db)?,
        };
        #[cfg(test)]
        if std::mem::take(&mut log.fail_checkpoint) {
            return Err(LoggedDbError::Database(
                "injected checkpoint failure".into(),
            ));
        }
        let next = log.wal.generation() + 1;
        write_position(&txn, next, &log.chain)?;
        make_durable(&mut txn)?;
        txn.commit().map_err(db)?;
        log.wal.restart(next);
        log.commits = 0;
        metrics::counter!(self.metrics.checkpoints).increment(1);
        metrics::gauge!(self.metrics.bytes).set(0.0);
        tracing::debug!(generation = next, "checkpoint");
        if let Some(anchor) = &mut log.anchor {
            anchor.record_synced(&log.chain)?;
        }
        metrics::histogram!(self.metrics.checkpoint_seconds)
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Checkpoints now if the log holds anything since the last
    /// checkpoint: a durable commit of everything, after which the log
    /// starts again empty. For a graceful stop, so that the next open has
    /// nothing to replay. Refused, like a commit, once the database
    /// stopped.
    pub fn checkpoint_now(&self) -> Result<(), LoggedDbError> {
        let started = Instant::now();
        if self.checkpoint_when(|log| log.wal.used() > 0)? {
            tracing::info!(ms = ms(started), "checkpointed");
        }
        Ok(())
    }

    /// The log's generation and the bytes written since its last restart.
    pub fn log_position(&self) -> Result<(u64, u64), LoggedDbError> {
        let log = self.log()?;
        Ok((log.wal.generation(), log.wal.used()))
    }

    /// How far the commit chain has come (what the rollback anchor records).
    pub fn chain_position(&self) -> Result<ChainPosition, LoggedDbError> {
        Ok(self.log()?.chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: redb::TableDefinition<'static, u64, u64> = redb::TableDefinition::new("t");
    const METRICS: LogMetrics = LogMetrics {
        bytes: "test_wal_bytes",
        checkpoints: "test_wal_checkpoints_total",
        checkpoint_seconds: "test_wal_checkpoint_seconds",
    };

    fn open(path: &Path) -> LoggedDatabase {
        LoggedDatabase::open(path, METRICS, replay_t).unwrap()
    }

    fn open_anchored(path: &Path, anchor: &Path) -> Result<LoggedDatabase, LoggedDbError> {
        LoggedDatabase::open_existing(path, METRICS, Some(anchor), replay_t)
    }

    fn replay_t(txn: &WriteTransaction, ops: Vec<KvOp>) -> Result<(), LoggedDbError> {
        {
            let mut t = txn.open_table(T).map_err(db)?;
            for op in ops {
                if let KvOp::Put {
                    table: 0,
                    key,
                    value,
                } = op
                {
                    let k = u64::from_be_bytes(key.try_into().map_err(|_| db("key"))?);
                    let v = u64::from_be_bytes(value.try_into().map_err(|_| db("value"))?);
                    t.insert(k, v).map_err(db)?;
                }
            }
        }
        Ok(())
    }

    /// Puts `k -> k` with a batch padded to `pad` more bytes of log.
    fn put(d: &LoggedDatabase, k: u64, pad: usize) -> Result<(), LoggedDbError> {
        put_with(d, k, pad, true)
    }

    fn put_with(d: &LoggedDatabase, k: u64, pad: usize, synced: bool) -> Result<(), LoggedDbError> {
        let txn = d.begin_write()?;
        let mut batch = KvBatch::new();
        txn.open_table(T).map_err(db)?.insert(k, k).map_err(db)?;
        batch.put(0, &k.to_be_bytes(), &k.to_be_bytes());
        if pad > 0 {
            batch.put(1, b"pad", &vec![0; pad]);
        }
        if synced {
            d.commit(txn, &batch)?;
        } else {
            d.commit_deferred(txn, &batch)?;
        }
        // As the servers do, once the commit's effects are out.
        d.checkpoint_if_due().map(|_| ())
    }

    fn keys(d: &LoggedDatabase) -> Vec<u64> {
        use redb::{ReadableDatabase, ReadableTable};
        let txn = d.database().begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        t.iter().unwrap().map(|e| e.unwrap().0.value()).collect()
    }

    #[derive(Debug, Clone)]
    enum Step {
        Commit,
        CommitDeferred,
        Snapshot,
        Reopen,
        Restore(usize),
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

        /// Commits (synced or deferred), copies of the database with its
        /// log taken at any moment, reopenings against the anchor, and
        /// restores of any earlier copy: a copy is accepted exactly when
        /// it holds at least every commit the anchor has seen on disk, and
        /// what opens holds exactly the commits of the files opened.
        #[test]
        fn the_anchor_refuses_exactly_the_copies_behind_it(
            steps in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::strategy::Just(Step::Commit),
                    2 => proptest::strategy::Just(Step::CommitDeferred),
                    2 => proptest::strategy::Just(Step::Snapshot),
                    1 => proptest::strategy::Just(Step::Reopen),
                    2 => proptest::strategy::Strategy::prop_map(proptest::prelude::any::<usize>(), Step::Restore),
                ],
                1..30,
            )
        ) {
            use proptest::prelude::*;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db.redb");
            let anchor = dir.path().join("anchor");
            drop(open(&path));
            let mut d = open_anchored(&path, &anchor).unwrap();
            // The model: the keys committed (one per commit, so also the
            // history), the history the anchor has recorded, and the copies.
            let mut model: Vec<u64> = Vec::new();
            let mut anchored: Vec<u64> = Vec::new();
            let mut copies: Vec<(std::path::PathBuf, Vec<u64>)> = Vec::new();
            let mut next = 0u64;
            for step in steps {
                match step {
                    Step::Commit | Step::CommitDeferred => {
                        let synced = matches!(step, Step::Commit);
                        put_with(&d, next, 0, synced).unwrap();
                        model.push(next);
                        next += 1;
                        if synced {
                            anchored = model.clone();
                        }
                    }
                    Step::Snapshot => {
                        let to = dir.path().join(format!("copy{}", copies.len()));
                        std::fs::create_dir_all(&to).unwrap();
                        crate::wal::copy_database(&path, &to.join("db.redb")).unwrap();
                        copies.push((to, model.clone()));
                    }
                    Step::Reopen => {
                        drop(d);
                        d = open_anchored(&path, &anchor).unwrap();
                        prop_assert_eq!(keys(&d), model.clone());
                        anchored = model.clone();
                    }
                    Step::Restore(i) => {
                        if copies.is_empty() {
                            continue;
                        }
                        let (from, copy) = copies[i % copies.len()].clone();
                        drop(d);
                        let latest = dir.path().join("latest");
                        std::fs::create_dir_all(&latest).unwrap();
                        crate::wal::copy_database(&path, &latest.join("db.redb")).unwrap();
                        crate::wal::copy_database(&from.join("db.redb"), &path).unwrap();
                        // Ahead of the anchor, or exactly where it is.
                        let accepted = copy.len() > anchored.len() || copy == anchored;
                        match open_anchored(&path, &anchor) {
                            Ok(opened) => {
                                prop_assert!(
                                    accepted,
                                    "a copy of {:?} opened against an anchor at {:?}",
                                    copy,
                                    anchored
                                );
                                prop_assert_eq!(keys(&opened), copy.clone());
                                d = opened;
                                model = copy;
                                anchored = model.clone();
                            }
                            Err(e) => {
                                prop_assert!(
                                    !accepted,
                                    "a copy of {:?} refused against an anchor at {:?}: {}",
                                    copy,
                                    anchored,
                                    e
                                );
                                let behind = copy.len() < anchored.len();
                                prop_assert!(
                                    match &e {
                                        LoggedDbError::Anchor(AnchorError::Behind { .. }) => behind,
                                        LoggedDbError::Anchor(AnchorError::Diverged { .. }) => !behind,
                                        _ => false,
                                    },
                                    "{}",
                                    e
                                );
                                crate::wal::copy_database(&latest.join("db.redb"), &path).unwrap();
                                d = open_anchored(&path, &anchor).unwrap();
                                prop_assert_eq!(keys(&d), model.clone());
                                anchored = model.clone();
                            }
                        }
                    }
                }
            }
        }
    }

    fn get(d: &LoggedDatabase, k: u64) -> Option<u64> {
        use redb::ReadableDatabase;
        let txn = d.database().begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        t.get(k).unwrap().map(|g| g.value())
    }

    #[test]
    fn a_copy_with_as_many_commits_as_the_anchor_but_other_ones_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let anchor = dir.path().join("anchor");
        let (early, late) = (dir.path().join("early"), dir.path().join("late"));
        for d in [&early, &late] {
            std::fs::create_dir_all(d).unwrap();
        }
        drop(open(&path));
        let d = open_anchored(&path, &anchor).unwrap();
        put(&d, 1, 0).unwrap();
        crate::wal::copy_database(&path, &early.join("db.redb")).unwrap();
        // Deferred: on disk in the copy, not yet in the anchor.
        put_with(&d, 2, 0, false).unwrap();
        crate::wal::copy_database(&path, &late.join("db.redb")).unwrap();
        drop(d);
        // The early copy is where the anchor is: accepted, and a new
        // history goes on from it with another second commit.
        crate::wal::copy_database(&early.join("db.redb"), &path).unwrap();
        let d = open_anchored(&path, &anchor).unwrap();
        put(&d, 3, 0).unwrap();
        drop(d);
        // The late copy has two commits too, but not these two.
        crate::wal::copy_database(&late.join("db.redb"), &path).unwrap();
        let err = open_anchored(&path, &anchor).err().unwrap();
        assert!(
            matches!(
                err,
                LoggedDbError::Anchor(AnchorError::Diverged { counter: 2, .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("different ones"), "{err}");
    }

    #[test]
    fn a_failed_checkpoint_after_a_commit_says_the_batch_is_committed_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let d = open(&path);
        put(&d, 1, 0).unwrap();
        d.log().unwrap().fail_checkpoint = true;
        // Past the checkpoint size: committed, then the checkpoint fails.
        let err = put(&d, 2, CHECKPOINT_BYTES as usize).unwrap_err();
        assert!(
            matches!(err, LoggedDbError::CheckpointFailed { .. }),
            "{err}"
        );
        assert!(err.batch_committed());
        assert!(
            err.to_string()
                .contains("the batches before it were committed"),
            "{err}"
        );
        assert_eq!(get(&d, 2), Some(2));
        let err = put(&d, 3, 0).unwrap_err();
        assert!(matches!(err, LoggedDbError::Stopped), "{err}");
        assert!(!err.batch_committed());
        drop(d);
        // Opening again replays the log: the committed batch is there.
        let d = open(&path);
        assert_eq!(
            (get(&d, 1), get(&d, 2), get(&d, 3)),
            (Some(1), Some(2), None)
        );
        put(&d, 3, 0).unwrap();
        // A batch too large for the log is its own checkpoint: if that
        // fails, it was not committed, and the error does not say it was.
        d.log().unwrap().fail_checkpoint = true;
        let err = put(&d, 4, CAPACITY as usize).unwrap_err();
        assert!(!err.batch_committed(), "{err}");
        assert_eq!(get(&d, 4), None);
    }

    #[test]
    fn a_database_closed_cleanly_opens_without_a_repair() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let d = open(&path);
        assert!(!d.open_report().repaired, "a new database needs no repair");
        for k in 0..100 {
            put(&d, k, 0).unwrap();
        }
        drop(d);
        let d = open(&path);
        assert!(!d.open_report().repaired, "{:?}", d.open_report());
        assert_eq!(get(&d, 99), Some(99));
    }

    #[test]
    fn a_checkpoint_now_leaves_nothing_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let d = open(&path);
        d.checkpoint_now().unwrap(); // nothing to do
        let (generation, _) = d.log_position().unwrap();
        for k in 0..10 {
            put(&d, k, 0).unwrap();
        }
        put_with(&d, 10, 0, false).unwrap();
        d.checkpoint_now().unwrap();
        assert_eq!(d.log_position().unwrap(), (generation + 1, 0));
        // Copied now (a crash right after), and closed: neither replays.
        let image = dir.path().join("image");
        std::fs::create_dir_all(&image).unwrap();
        crate::wal::copy_database(&path, &image.join("db.redb")).unwrap();
        drop(d);
        for p in [path, image.join("db.redb")] {
            let d = open(&p);
            assert_eq!(d.open_report().log_records, 0, "{}", p.display());
            assert!(!d.open_report().repaired);
            assert_eq!(keys(&d), (0..=10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_crash_image_opens_without_a_repair_and_replays_the_log() {
        // A crash image (the files copied while the database is open) taken
        // at any point: right after opening, between checkpoints, and after
        // a checkpoint made by a batch too large for the log. Every durable
        // commit records redb's allocator state, so opening the image loads
        // it instead of walking every tree of the file, and the log brings
        // back the commits since.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        drop(open(&path));
        let d = open(&path);
        let mut images = Vec::new();
        let mut image = |d: &LoggedDatabase, k: u64| {
            let to = dir.path().join(format!("image{k}"));
            std::fs::create_dir_all(&to).unwrap();
            crate::wal::copy_database(&path, &to.join("db.redb")).unwrap();
            images.push((to.join("db.redb"), k, d.log_position().unwrap()));
        };
        image(&d, 0);
        for k in 1..=50 {
            put(&d, k, 0).unwrap();
        }
        image(&d, 50);
        put(&d, 51, CHECKPOINT_BYTES as usize).unwrap(); // a checkpoint after it
        put(&d, 52, CAPACITY as usize).unwrap(); // its own checkpoint
        for k in 53..=60 {
            put(&d, k, 0).unwrap();
        }
        image(&d, 60);
        drop(d);
        for (copy, last, (generation, used)) in images {
            let opened = open(&copy);
            let report = opened.open_report().clone();
            assert!(!report.repaired, "image at {last}: {report:?}");
            assert_eq!(
                report.log_records > 0,
                used > 0,
                "image at {last} (generation {generation}, {used} bytes of log): {report:?}"
            );
            assert_eq!(
                keys(&opened),
                (1..=last).collect::<Vec<_>>(),
                "image at {last}"
            );
        }
    }

    #[test]
    fn the_chain_counts_every_commit_across_checkpoints_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let d = open(&path);
        let start = d.chain_position().unwrap();
        assert_eq!(start.counter, 0);
        put(&d, 1, 0).unwrap();
        put(&d, 2, CAPACITY as usize).unwrap(); // committed durably, no record
        put(&d, 3, 0).unwrap();
        let before = d.chain_position().unwrap();
        assert_eq!(before.counter, 3);
        drop(d);
        let d = open(&path);
        assert_eq!(d.chain_position().unwrap(), before);
        assert_eq!(get(&d, 3), Some(3));
    }

    /// A checkpoint made due by a commit waits for the owner's
    /// `checkpoint_if_due`, after the commit returned; an owner that does
    /// not call it gets it with its next commit instead. Either way nothing
    /// is lost, through a reopen or a crash image.
    #[test]
    fn a_due_checkpoint_waits_for_the_owner_or_is_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let d = open(&path);
        let (first, _) = d.log_position().unwrap();
        let commit_only = |d: &LoggedDatabase, k: u64| {
            let txn = d.begin_write().unwrap();
            let mut batch = KvBatch::new();
            txn.open_table(T).unwrap().insert(k, k).unwrap();
            batch.put(0, &k.to_be_bytes(), &k.to_be_bytes());
            d.commit(txn, &batch).unwrap();
        };
        for k in 0..u64::from(CHECKPOINT_COMMITS) {
            commit_only(&d, k);
        }
        // Due, not made: the last commit returned with its record in the
        // log and the generation unchanged.
        let (g, used) = d.log_position().unwrap();
        assert_eq!(g, first);
        assert!(used > 0);
        assert!(d.checkpoint_if_due().unwrap(), "a checkpoint was due");
        assert_eq!(d.log_position().unwrap(), (first + 1, 0));
        assert!(!d.checkpoint_if_due().unwrap(), "nothing due after it");
        // Due again, and the owner commits instead: that commit is the
        // checkpoint (committed durably, not logged).
        for k in 100..100 + u64::from(CHECKPOINT_COMMITS) {
            commit_only(&d, k);
        }
        assert_eq!(d.log_position().unwrap().0, first + 1);
        commit_only(&d, 1_000);
        assert_eq!(d.log_position().unwrap(), (first + 2, 0));
        assert!(!d.checkpoint_if_due().unwrap());
        commit_only(&d, 1_001);
        let image = dir.path().join("image").join("db.redb");
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        crate::wal::copy_database(&path, &image).unwrap();
        let chain = d.chain_position().unwrap();
        drop(d);
        for p in [&path, &image] {
            let d = open(p);
            assert_eq!(d.chain_position().unwrap(), chain);
            let all = keys(&d);
            assert_eq!(all.len(), 2 * CHECKPOINT_COMMITS as usize + 2, "{p:?}");
            assert!(all.contains(&1_000) && all.contains(&1_001), "{p:?}");
        }
    }

    #[test]
    fn small_commits_checkpoint_by_count_and_big_ones_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let d = open(&path);
        let (first, _) = d.log_position().unwrap();
        // Small commits: the log stays far below its byte threshold, and
        // the checkpoint comes after CHECKPOINT_COMMITS of them.
        for k in 0..u64::from(CHECKPOINT_COMMITS) - 1 {
            put(&d, k, 0).unwrap();
        }
        let (g, used) = d.log_position().unwrap();
        assert_eq!(g, first, "no checkpoint yet");
        assert!(used > 0 && used < CHECKPOINT_BYTES / 16, "{used}");
        put(&d, 1_000, 0).unwrap();
        assert_eq!(d.log_position().unwrap(), (first + 1, 0));
        // A few large commits: by bytes, well before the count.
        let pad = usize::try_from(CHECKPOINT_BYTES / 4).unwrap();
        for k in 0..3 {
            put(&d, 2_000 + k, pad).unwrap();
        }
        assert_eq!(d.log_position().unwrap().0, first + 1);
        put(&d, 3_000, pad).unwrap();
        assert_eq!(d.log_position().unwrap(), (first + 2, 0));
        // Both checkpoints kept everything; so does reopening.
        drop(d);
        let d = open(&path);
        assert_eq!(get(&d, 1_000), Some(1_000));
        assert_eq!(get(&d, 3_000), Some(3_000));
    }
}

/// What a checkpoint costs against the commits since the last one: a
/// measurement, not a test (it asserts nothing about time). Run it on the
/// disk to measure, in release:
/// `cargo test --release -p grompi-ops --lib checkpoint_cost -- --ignored --nocapture`
/// (the database goes in a temporary directory under the crate's own).
#[cfg(test)]
mod checkpoint_cost {
    use super::*;

    const ROWS: redb::TableDefinition<'static, &[u8], &[u8]> = redb::TableDefinition::new("rows");

    /// `total` commits without an fsync (as the log's batches are), each
    /// of three rows of 900 bytes under scattered 32-byte keys (as the
    /// router's and the order server's are), and a checkpoint's durable
    /// commit after every `every` of them; prints the durable commit's
    /// median and largest time, its time per commit, and the file's size.
    fn run(every: usize, total: usize) {
        let dir = tempfile::tempdir_in(".").unwrap();
        let path = dir.path().join("cost.redb");
        let d = Database::builder()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(&path)
            .unwrap();
        let mut times = Vec::new();
        for i in 0..total {
            let mut txn = d.begin_write().unwrap();
            txn.set_durability(Durability::None).unwrap();
            let mut t = txn.open_table(ROWS).unwrap();
            for r in 0..3u64 {
                let key = blake3::hash(&(i as u64 * 3 + r).to_le_bytes());
                t.insert(key.as_bytes().as_slice(), [7u8; 900].as_slice())
                    .unwrap();
            }
            drop(t);
            txn.commit().unwrap();
            if (i + 1) % every == 0 {
                let start = std::time::Instant::now();
                let mut txn = d.begin_write().unwrap();
                make_durable(&mut txn).unwrap();
                txn.open_table(WAL_TABLE)
                    .unwrap()
                    .insert(GENERATION, i as u64)
                    .unwrap();
                txn.commit().unwrap();
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "durable commit every {every} commits: {} of them, median {:.1} ms, largest {:.1} ms, \
             {:.1} us per commit; file {} MiB",
            times.len(),
            times[times.len() / 2],
            times[times.len() - 1],
            times.iter().sum::<f64>() * 1e3 / total as f64,
            std::fs::metadata(&path).unwrap().len() >> 20
        );
    }

    #[test]
    #[ignore = "a measurement; run it on purpose (see the module doc)"]
    fn checkpoint_cost() {
        for every in [64, 100, 256, 1_000, 10_000] {
            run(every, 20_000);
        }
    }
}
