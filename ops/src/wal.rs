//! A write-ahead log: the cheap durable step in front of a database commit.
//!
//! Both servers keep their state in redb. A durable redb commit rewrites the
//! pages it touched at new places in the file and then fsyncs; on a shared
//! disk that costs about as much as a network round trip. With this log a
//! server instead appends the batch's changes to a zero-filled file, calls
//! `fdatasync` once, and only then commits the same changes to redb without
//! an fsync (`Durability::None`). Every so often it makes redb durable on its
//! own (a *checkpoint*) and starts the log again from the beginning.
//!
//! # Guarantees
//!
//! * When [`Wal::append`] returns `Ok`, the batch is on disk.
//! * A log belongs to one database: its header and every record's checksum
//!   carry the database's random id, and [`Wal::open`] refuses a file that
//!   is missing, empty, zeroed, of another format or of another database.
//! * Records are read back in the order written, up to the first one that
//!   is torn, belongs to an older generation, or is out of sequence; nothing
//!   after that point is ever returned. If a valid record of the same
//!   generation that was written *after a sync* follows that point, the bad
//!   record cannot be a torn write (see below) and opening fails with
//!   [`WalError::Corrupt`] instead of forgetting the rest.
//! * A valid record of a *later* generation than the database's (the first
//!   record, or any after the replay ends) means the database is older
//!   than its log (restored from a backup next to a newer log): such
//!   records are written only after the database recorded their
//!   generation. [`WalError::AheadOfDatabase`].
//! * Once the file has grown to its capacity (zero-filled, synced), an
//!   append changes no file metadata and `fdatasync` has only data to flush.
//!
//! # Generations
//!
//! The caller owns the *generation* number and keeps it in its database. A
//! checkpoint commits durably the next generation number together with the
//! state, then calls [`Wal::restart`], which writes the following records
//! from the start of the file under that generation. Whatever the file still
//! holds from the previous generation is then never read again: a crash
//! right after the checkpoint finds no record of the new generation, which
//! is right, because the database already holds everything. The file header
//! is written once, when the file is created, and never again, so there is
//! no torn header to reason about.
//!
//! # Torn writes and corruption
//!
//! Each record's header says whether it was written by a synced append
//! ([`SYNCED`]) and whether every earlier record of its generation had been
//! synced when it was written ([`AFTER_SYNC`]). A crash can tear only what
//! was not yet synced. So when a record does not check but a later valid
//! record of the same generation carries [`AFTER_SYNC`], the bad one was
//! on disk whole and has been damaged since: corruption. A later valid
//! [`SYNCED`] record is treated the same way: its append promised it, and
//! keeping only the prefix would forget it silently. (Only one crash can
//! produce that picture without damage: power lost during that record's own
//! `fdatasync`, with the disk having written it before an earlier deferred
//! record. The order server never defers, so for it the picture is always
//! damage.) Later valid records carrying neither flag follow a torn deferred
//! record legitimately ([`Wal::append_deferred`]: the page cache writes
//! pages back in any order) and are dropped with it.
//!
//! # File layout (format 2)
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `grompiWL` |
//! | 4 | format, `2` (big-endian) |
//! | 4 | zero |
//! | 32 | database id |
//! | ... | records |
//!
//! Format 1 (the first release) had no header; such a file is refused by
//! name ([`WalError::Format`]) rather than misread.
//!
//! # Record layout
//!
//! | bytes | field |
//! |---|---|
//! | 8 | generation (big-endian) |
//! | 8 | sequence within the generation, from 0 (big-endian) |
//! | 4 | flags: [`SYNCED`], [`AFTER_SYNC`] (big-endian) |
//! | 8 | payload length (big-endian) |
//! | n | payload |
//! | 32 | checksum: BLAKE3 `derive_key` with [`grompi_proto::context::WAL_RECORD`] over the database id and the 28 + n bytes before it |
//!
//! The checksum input is the canonical encoding of (database id,
//! generation, sequence, flags, bytes(payload)); `proto/vectors/v1.json`
//! publishes a vector (`wal_record_checksum`). The checksum detects torn,
//! stale and foreign records; it is not a defence against someone who can
//! write the file and read the database id from it.
//!
//! A batch's payload is opaque here; [`KvBatch`] is the encoding both
//! servers use: a list of puts and deletes on numbered tables.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: usize = 28;
const CHECKSUM: usize = 32;

/// The random id of a database, which its log carries.
pub type DatabaseId = [u8; 32];

/// The log format this code writes and reads.
pub const FORMAT: u32 = 2;
const MAGIC: &[u8; 8] = b"grompiWL";
/// Length of the file header; records start after it.
pub const FILE_HEADER: usize = 48;

/// Record flag: written by [`Wal::append`], which returns only once it is
/// on disk.
pub const SYNCED: u32 = 1;
/// Record flag: every earlier record of the generation had been synced
/// when this one was written.
pub const AFTER_SYNC: u32 = 2;

/// Why the log failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Reading, writing or syncing the file failed.
    #[error("write-ahead log {path}: {what}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The error from the operating system.
        source: std::io::Error,
    },
    /// A batch does not fit in what is left of the file; checkpoint first.
    #[error("the write-ahead log has {free} bytes free, a record of {needed} bytes does not fit")]
    Full {
        /// Bytes needed for the record.
        needed: u64,
        /// Bytes left.
        free: u64,
    },
    /// The database says a log was written, but the file is gone: the
    /// database alone may lack the latest commits.
    #[error(
        "write-ahead log {path} is missing, but the database was written through one: \
         the database alone may lack the latest commits. Restore the log together with \
         the database it belongs to (they are one unit for backups and copies)"
    )]
    Missing {
        /// The log file.
        path: PathBuf,
    },
    /// The file exists but holds no log header: it is empty, zeroed, cut
    /// short, of another format, or not a log.
    #[error(
        "write-ahead log {path} {what}; a log's header is written when its database is \
         created and never changes, so its latest commits cannot be recovered from this \
         file. Restore the log together with the database it belongs to"
    )]
    Format {
        /// The log file.
        path: PathBuf,
        /// What is wrong with the header.
        what: String,
    },
    /// The log belongs to another database.
    #[error(
        "write-ahead log {path} belongs to database {found}, not to this database \
         ({expected}): the two were not copied together. Restore the log that belongs \
         to this database"
    )]
    ForeignLog {
        /// The log file.
        path: PathBuf,
        /// The database id the database records (hex).
        expected: String,
        /// The database id the log's header records (hex).
        found: String,
    },
    /// The log holds a record of a later generation than the database's:
    /// the database is older than its log.
    #[error(
        "write-ahead log {path} holds a record of generation {log}, but the database \
         is at generation {database}: the database is older than its log (restored from a \
         backup without its log?). Replaying nothing would forget every commit since; \
         restore the database that belongs to this log"
    )]
    AheadOfDatabase {
        /// The log file.
        path: PathBuf,
        /// The generation of the log's record.
        log: u64,
        /// The generation the database records.
        database: u64,
    },
    /// A record in the middle of the log is damaged: a valid record written
    /// after it was synced follows it.
    #[error(
        "write-ahead log {path} is corrupt: record {record} of generation {generation} at \
         byte {offset} does not check, but record {later_record} at byte {later_offset}, \
         written after record {record} was on disk, does. This is damage, not a torn \
         write, and replaying only the records before it would forget the rest. Stop, \
         keep the files for inspection, and restore the database and its log from an \
         intact copy"
    )]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// The generation being replayed.
        generation: u64,
        /// The number (sequence) of the damaged record.
        record: u64,
        /// Where the damaged record starts in the file.
        offset: u64,
        /// The number of the valid record found after it.
        later_record: u64,
        /// Where that record starts.
        later_offset: u64,
    },
    /// A record's checksum is valid but its payload does not decode: the
    /// file was written by something else, or by an incompatible version.
    #[error("write-ahead log record {sequence} of generation {generation} is malformed: {what}")]
    Malformed {
        /// Generation of the record.
        generation: u64,
        /// Sequence of the record.
        sequence: u64,
        /// What is wrong.
        what: &'static str,
    },
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// The log of the database file at `database`: the same name with the
/// extension `wal` (`order.redb` -> `order.wal`).
pub fn path_for(database: &Path) -> PathBuf {
    database.with_extension("wal")
}

/// Copies a database file and its log (when it has one) to `to` and
/// [`path_for`]`(to)`: the two are one unit, and a copy of the database
/// alone may lack its latest commits. Copy only what no process is writing,
/// or a crash image is what you get (which opening then recovers).
pub fn copy_database(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::copy(from, to)?;
    let log = path_for(from);
    if log.exists() {
        std::fs::copy(&log, path_for(to))?;
    }
    Ok(())
}

/// A fresh database id from the operating system's random generator.
pub fn new_database_id() -> std::io::Result<DatabaseId> {
    let mut id = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut id)?;
    Ok(id)
}

/// The checksum of a record: BLAKE3 `derive_key` over the database id and
/// the record's first 28 + n bytes.
pub fn checksum(
    database: &DatabaseId,
    generation: u64,
    sequence: u64,
    flags: u32,
    payload: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(grompi_proto::context::WAL_RECORD);
    h.update(database);
    h.update(&generation.to_be_bytes());
    h.update(&sequence.to_be_bytes());
    h.update(&flags.to_be_bytes());
    h.update(&(payload.len() as u64).to_be_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

fn file_header(database: &DatabaseId) -> [u8; FILE_HEADER] {
    let mut h = [0u8; FILE_HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_be_bytes());
    h[16..].copy_from_slice(database);
    h
}

/// An append-only log file that grows to a fixed capacity.
pub struct Wal {
    file: File,
    path: PathBuf,
    database: DatabaseId,
    capacity: u64,
    allocated: u64,
    generation: u64,
    next_sequence: u64,
    offset: u64,
    /// Whether every record of this generation written so far is synced.
    synced: bool,
    last_checksum: Option<[u8; 32]>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("path", &self.path)
            .field("capacity", &self.capacity)
            .field("allocated", &self.allocated)
            .field("generation", &self.generation)
            .field("next_sequence", &self.next_sequence)
            .field("offset", &self.offset)
            .finish()
    }
}

/// The smallest capacity accepted (one page).
pub const MIN_CAPACITY: u64 = 4096;

/// The file grows in steps of this many bytes (or to the capacity).
pub const GROWTH: u64 = 1 << 20;

/// What [`Wal::open`] read: the payloads of the generation's records, in
/// order, and their checksums (the commit chain is built from them).
#[derive(Debug, Default)]
pub struct Replay {
    /// Each record's payload as appended, record n at position n.
    pub payloads: Vec<Vec<u8>>,
    /// The checksum of each record, in the same order.
    pub checksums: Vec<[u8; 32]>,
    /// How many possible records after the last one replayed had their
    /// checksum computed, in the search for a damaged record or one of a
    /// later generation.
    pub tail_checks: u64,
    /// The payload bytes those checksums covered.
    pub tail_check_bytes: u64,
}

fn sync_dir(path: &Path) -> Result<(), WalError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(path, "sync the directory"))?;
    }
    Ok(())
}

impl Wal {
    /// Creates the log of a new database `database` at `path`: writes the
    /// header and makes it and the file's directory entry durable. Refuses
    /// (`Io`, `AlreadyExists`) to replace an existing file. The file is
    /// readable by its owner only (the router's records include secrets).
    pub fn create(
        path: &Path,
        database: &DatabaseId,
        generation: u64,
        capacity: u64,
    ) -> Result<Self, WalError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path, "create"))?;
        file.write_all_at(&file_header(database), 0)
            .map_err(io(path, "write the header"))?;
        file.sync_all().map_err(io(path, "sync the header"))?;
        sync_dir(path)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            database: *database,
            capacity: capacity.max(MIN_CAPACITY),
            allocated: FILE_HEADER as u64,
            generation,
            next_sequence: 0,
            offset: FILE_HEADER as u64,
            synced: true,
            last_checksum: None,
            scratch: Vec::new(),
        })
    }

    /// Opens the existing log of database `database` at `path` and returns
    /// it with the records of `generation`, in order.
    ///
    /// Refuses a missing file ([`WalError::Missing`]), one without a valid
    /// header or of another format ([`WalError::Format`]), one of another
    /// database ([`WalError::ForeignLog`]), one that starts with a record of
    /// a later generation ([`WalError::AheadOfDatabase`]), and one with a
    /// damaged record followed by a valid one written after it was synced
    /// ([`WalError::Corrupt`]). Syncs the file's directory, so that the
    /// entry of a file created just before a crash is durable too.
    ///
    /// The file grows, in zero-filled and synced steps of [`GROWTH`] bytes,
    /// up to `capacity` bytes; after that appends fail with
    /// [`WalError::Full`] until the caller checkpoints and restarts. Since
    /// restarts write from the start again, the file is grown only while it
    /// first fills, and appends after that change no metadata.
    ///
    /// The returned log appends after the last record read. Callers normally
    /// apply the payloads, checkpoint and [`Wal::restart`] at once, so that a
    /// record torn by the crash is overwritten under a new generation.
    pub fn open(
        path: &Path,
        database: &DatabaseId,
        generation: u64,
        capacity: u64,
    ) -> Result<(Self, Replay), WalError> {
        if !path.exists() {
            return Err(WalError::Missing {
                path: path.to_path_buf(),
            });
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path, "open"))?;
        sync_dir(path)?;
        let allocated = file.metadata().map_err(io(path, "stat"))?.len();
        // A file larger than the capacity (the capacity was lowered) is used
        // at its full length: every record in it must still be readable.
        let capacity = capacity.max(MIN_CAPACITY).max(allocated);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(path, "read"))?;
        check_header(path, &bytes, database)?;
        let (replay, offset) = read_records(path, &bytes, database, generation)?;
        let wal = Self {
            file,
            path: path.to_path_buf(),
            database: *database,
            capacity,
            allocated,
            generation,
            next_sequence: replay.payloads.len() as u64,
            offset,
            // What was read back may still be only in the page cache.
            synced: replay.payloads.is_empty(),
            last_checksum: replay.checksums.last().copied(),
            scratch: Vec::new(),
        };
        Ok((wal, replay))
    }

    /// Appends one record and waits until it is on disk (`fdatasync`),
    /// with every record appended before it.
    pub fn append(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.write_record(payload, SYNCED)?;
        self.file.sync_data().map_err(io(&self.path, "fdatasync"))?;
        self.synced = true;
        Ok(())
    }

    /// Appends one record without waiting for the disk: it is on disk once
    /// a later [`Wal::append`] returns. A crash before that may lose it
    /// (with every deferred record after it; never one before it that was
    /// synced, since replay stops at the first record that does not check,
    /// and refuses to start when a record written after a sync follows it).
    pub fn append_deferred(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.write_record(payload, 0)?;
        self.synced = false;
        Ok(())
    }

    fn write_record(&mut self, payload: &[u8], flags: u32) -> Result<(), WalError> {
        let needed = record_len(payload.len());
        if !self.fits(payload.len()) {
            return Err(WalError::Full {
                needed,
                free: self.capacity.saturating_sub(self.offset),
            });
        }
        let flags = if self.synced {
            flags | AFTER_SYNC
        } else {
            flags
        };
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&self.generation.to_be_bytes());
        self.scratch
            .extend_from_slice(&self.next_sequence.to_be_bytes());
        self.scratch.extend_from_slice(&flags.to_be_bytes());
        self.scratch
            .extend_from_slice(&(payload.len() as u64).to_be_bytes());
        self.scratch.extend_from_slice(payload);
        let sum = checksum(
            &self.database,
            self.generation,
            self.next_sequence,
            flags,
            payload,
        );
        self.scratch.extend_from_slice(&sum);
        self.grow_to(self.offset + needed)?;
        self.file
            .write_all_at(&self.scratch, self.offset)
            .map_err(io(&self.path, "write"))?;
        self.offset += needed;
        self.next_sequence += 1;
        self.last_checksum = Some(sum);
        Ok(())
    }

    /// Whether a payload of `len` bytes fits in what is left.
    pub fn fits(&self, len: usize) -> bool {
        record_len(len) <= self.capacity.saturating_sub(self.offset)
    }

    /// Zero-fills the file up to at least `end` (a [`GROWTH`] step, at most
    /// the capacity) and syncs it, data and length.
    fn grow_to(&mut self, end: u64) -> Result<(), WalError> {
        if end <= self.allocated {
            return Ok(());
        }
        let target = end
            .div_ceil(GROWTH)
            .saturating_mul(GROWTH)
            .min(self.capacity);
        // Real zeros, not `set_len`: a sparse file would allocate blocks (a
        // metadata change, so a journal commit) on every later append.
        let zeros = vec![0u8; (target - self.allocated) as usize];
        self.file
            .write_all_at(&zeros, self.allocated)
            .map_err(io(&self.path, "grow"))?;
        self.file
            .sync_all()
            .map_err(io(&self.path, "sync after growing"))?;
        self.allocated = target;
        Ok(())
    }

    /// Bytes of records written since the last restart.
    pub fn used(&self) -> u64 {
        self.offset - FILE_HEADER as u64
    }

    /// The file's usable length.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The generation records are written under.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The database the log belongs to.
    pub fn database(&self) -> &DatabaseId {
        &self.database
    }

    /// The checksum of the last record written or read back, if any since
    /// the last restart.
    pub fn last_checksum(&self) -> Option<[u8; 32]> {
        self.last_checksum
    }

    /// Starts writing from the beginning of the file under `generation`.
    /// Call only after everything in the log is durable elsewhere *and* the
    /// new generation number is durably recorded there too.
    pub fn restart(&mut self, generation: u64) {
        self.generation = generation;
        self.next_sequence = 0;
        self.offset = FILE_HEADER as u64;
        self.synced = true;
        self.last_checksum = None;
    }
}

fn record_len(payload: usize) -> u64 {
    (HEADER + payload + CHECKSUM) as u64
}

fn check_header(path: &Path, bytes: &[u8], database: &DatabaseId) -> Result<(), WalError> {
    let format = |what: String| WalError::Format {
        path: path.to_path_buf(),
        what,
    };
    let Some(header) = bytes.get(..FILE_HEADER) else {
        return Err(format(if bytes.is_empty() {
            "is empty".into()
        } else {
            format!("is {} bytes, shorter than a log header", bytes.len())
        }));
    };
    if header.iter().all(|b| *b == 0) {
        return Err(format("starts with zeros where its header belongs".into()));
    }
    if &header[..8] != MAGIC {
        return Err(format(format!(
            "has no log header (format 1, written by an earlier version, had none; \
             this version reads format {FORMAT} only)"
        )));
    }
    let mut f = [0u8; 4];
    f.copy_from_slice(&header[8..12]);
    let found = u32::from_be_bytes(f);
    if found != FORMAT || header[12..16] != [0; 4] {
        return Err(format(format!(
            "is of log format {found}; this version reads format {FORMAT} only"
        )));
    }
    if &header[16..] != database.as_slice() {
        return Err(WalError::ForeignLog {
            path: path.to_path_buf(),
            expected: hex(database),
            found: hex(&header[16..]),
        });
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record that checks, parsed at some offset.
struct Parsed<'a> {
    generation: u64,
    sequence: u64,
    flags: u32,
    payload: &'a [u8],
    checksum: [u8; 32],
    end: usize,
}

/// A record header as the bytes at some offset read, unchecked.
struct RawHeader {
    generation: u64,
    sequence: u64,
    flags: u32,
    len: u64,
}

/// The [`HEADER`] bytes at `at` read as a record header, if there are
/// that many.
fn header_at(bytes: &[u8], at: usize) -> Option<RawHeader> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[i..i + 8]);
        u64::from_be_bytes(b)
    };
    let mut f = [0u8; 4];
    f.copy_from_slice(&header[16..20]);
    Some(RawHeader {
        generation: u64_at(0),
        sequence: u64_at(8),
        flags: u32::from_be_bytes(f),
        len: u64_at(20),
    })
}

/// The record at `at`, if one is there whose checksum is valid for
/// `database` (of whatever generation).
fn parse_at<'a>(bytes: &'a [u8], at: usize, database: &DatabaseId) -> Option<Parsed<'a>> {
    let RawHeader {
        generation,
        sequence,
        flags,
        len,
    } = header_at(bytes, at)?;
    let len = usize::try_from(len).ok()?;
    let end = (at + HEADER).checked_add(len)?.checked_add(CHECKSUM)?;
    let record = bytes.get(at..end)?;
    let payload = &record[HEADER..HEADER + len];
    let sum = checksum(database, generation, sequence, flags, payload);
    (record[HEADER + len..] == sum).then_some(Parsed {
        generation,
        sequence,
        flags,
        payload,
        checksum: sum,
        end,
    })
}

/// How far ahead of the database's generation a record found past the end
/// of the replay is looked at (a cheap filter before its checksum).
const MAX_GENERATIONS_AHEAD: u64 = 1 << 32;

/// The records of `generation` from the start of `bytes`, and the offset
/// after the last one; or why the log must not be replayed.
fn read_records(
    path: &Path,
    bytes: &[u8],
    database: &DatabaseId,
    generation: u64,
) -> Result<(Replay, u64), WalError> {
    let mut replay = Replay::default();
    let mut at = FILE_HEADER;
    let stop = loop {
        let Some(r) = parse_at(bytes, at, database) else {
            break None;
        };
        if r.generation != generation || r.sequence != replay.payloads.len() as u64 {
            break Some(r);
        }
        if r.flags & !(SYNCED | AFTER_SYNC) != 0 {
            return Err(WalError::Malformed {
                generation,
                sequence: r.sequence,
                what: "unknown record flags",
            });
        }
        replay.payloads.push(r.payload.to_vec());
        replay.checksums.push(r.checksum);
        at = r.end;
    };
    if let Some(r) = stop
        && r.generation > generation
    {
        return Err(WalError::AheadOfDatabase {
            path: path.to_path_buf(),
            log: r.generation,
            database: generation,
        });
    }
    // Is there a record of this generation after the bad one that was
    // written after the bad one was synced (or was synced itself)? Or a
    // record of a later generation anywhere (the first one damaged)?
    //
    // Every offset is a candidate, and a candidate's checksum costs a hash
    // of the payload length its header claims, up to the rest of the file.
    // What follows the replay is mostly what earlier generations left, in
    // which headers that pass a loose filter are common (any 8 bytes that
    // start with four zero bytes read as a generation in range), so the
    // checksums alone took up to minutes for a 64 MiB log. Only a header
    // that a writer of this format could have written at `p`, and whose
    // record would change the outcome, is checked; none of these filters
    // skips such a record.
    let record = replay.payloads.len() as u64;
    let last_start = bytes.len().saturating_sub(HEADER + CHECKSUM);
    for p in at + 1..=last_start {
        let Some(h) = header_at(bytes, p) else {
            continue;
        };
        let g = h.generation;
        if g < generation || g - generation > MAX_GENERATIONS_AHEAD {
            continue;
        }
        // Format 2 writes no other flags.
        if h.flags & !(SYNCED | AFTER_SYNC) != 0 {
            continue;
        }
        // Record `s` of a generation follows its records 0..s, each at
        // least HEADER + CHECKSUM bytes, from the end of the file header
        // (so record 0 is only there, where the loop above looked).
        if h.sequence == 0 || h.sequence > ((p - FILE_HEADER) / (HEADER + CHECKSUM)) as u64 {
            continue;
        }
        // Its payload and checksum end inside the file.
        if h.len > (bytes.len() - p - HEADER - CHECKSUM) as u64 {
            continue;
        }
        // A record of this generation matters only if it is later than the
        // bad one and was written synced or after a sync (see below).
        if g == generation && (h.sequence <= record || h.flags & (SYNCED | AFTER_SYNC) == 0) {
            continue;
        }
        replay.tail_checks += 1;
        replay.tail_check_bytes += h.len;
        let Some(later) = parse_at(bytes, p, database) else {
            continue;
        };
        if later.generation > generation {
            return Err(WalError::AheadOfDatabase {
                path: path.to_path_buf(),
                log: later.generation,
                database: generation,
            });
        }
        if later.sequence > record && later.flags & (SYNCED | AFTER_SYNC) != 0 {
            return Err(WalError::Corrupt {
                path: path.to_path_buf(),
                generation,
                record,
                offset: at as u64,
                later_record: later.sequence,
                later_offset: p as u64,
            });
        }
    }
    Ok((replay, at as u64))
}

/// One change in a [`KvBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` in `table` to `value`.
    Put {
        /// The caller's table number.
        table: u8,
        /// The row key, in the caller's encoding (the log keeps it as is).
        key: Vec<u8>,
        /// The row's new value, kept as is.
        value: Vec<u8>,
    },
    /// Remove `key` from `table`.
    Delete {
        /// The caller's table number.
        table: u8,
        /// The row key, in the caller's encoding.
        key: Vec<u8>,
    },
}

/// The changes of one database transaction, as a log payload.
///
/// Encoding: for each op, one byte (`1` put, `2` delete), the table number,
/// the key as `u32` length (big-endian) and bytes, and for a put the value
/// the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvBatch {
    bytes: Vec<u8>,
    ops: usize,
}

const PUT: u8 = 1;
const DELETE: u8 = 2;

impl KvBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a put.
    pub fn put(&mut self, table: u8, key: &[u8], value: &[u8]) {
        self.bytes.push(PUT);
        self.bytes.push(table);
        self.field(key);
        self.field(value);
        self.ops += 1;
    }

    /// Records a delete.
    pub fn delete(&mut self, table: u8, key: &[u8]) {
        self.bytes.push(DELETE);
        self.bytes.push(table);
        self.field(key);
        self.ops += 1;
    }

    fn field(&mut self, b: &[u8]) {
        // Keys and values of both servers are far below 4 GiB (bounded by
        // their message limits); saturate rather than wrap, so an absurd
        // one fails to decode instead of decoding as something else.
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(b);
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// How many ops were recorded.
    pub fn len(&self) -> usize {
        self.ops
    }

    /// The encoded payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Empties the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ops = 0;
    }

    /// Decodes a payload read back from the log.
    pub fn decode(payload: &[u8]) -> Result<Vec<KvOp>, &'static str> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
            if b.len() < n {
                return Err("the payload ends inside an op");
            }
            let (head, rest) = b.split_at(n);
            *b = rest;
            Ok(head)
        }
        fn field(b: &mut &[u8]) -> Result<Vec<u8>, &'static str> {
            let mut len = [0u8; 4];
            len.copy_from_slice(take(b, 4)?);
            let len = usize::try_from(u32::from_be_bytes(len))
                .map_err(|_| "a length does not fit in memory")?;
            Ok(take(b, len)?.to_vec())
        }
        let mut b = payload;
        let mut ops = Vec::new();
        while !b.is_empty() {
            let head = take(&mut b, 2)?;
            let (kind, table) = (head[0], head[1]);
            let key = field(&mut b)?;
            ops.push(match kind {
                PUT => KvOp::Put {
                    table,
                    key,
                    value: field(&mut b)?,
                },
                DELETE => KvOp::Delete { table, key },
                _ => return Err("an op is neither put nor delete"),
            });
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DB: DatabaseId = [0x42; 32];

    fn create(path: &Path, g: u64) -> Wal {
        Wal::create(path, &DB, g, 8192).unwrap()
    }

    fn open(path: &Path, g: u64) -> (Wal, Vec<Vec<u8>>) {
        let (wal, replay) = Wal::open(path, &DB, g, 8192).unwrap();
        (wal, replay.payloads)
    }

    /// Where in the file the record that starts `used` bytes into the log is.
    fn file_offset(used: u64) -> usize {
        FILE_HEADER + used as usize
    }

    #[test]
    fn records_come_back_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = create(&path, 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), FILE_HEADER as u64);
        assert!(open(&path, 0).1.is_empty());
        wal.append(b"one").unwrap();
        // Grown once, to the capacity (below one growth step).
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
        wal.append(b"").unwrap();
        wal.append(b"three").unwrap();
        drop(wal);
        let (mut wal, got) = open(&path, 0);
        assert_eq!(got, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        // Appends continue after the last record.
        wal.append(b"four").unwrap();
        let (_, got) = open(&path, 0);
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], b"four");
    }

    #[test]
    fn a_missing_log_is_an_error_and_new_ones_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let err = Wal::open(&path, &DB, 3, 8192).unwrap_err();
        assert!(matches!(err, WalError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(!path.exists(), "a refused open created the file");
        let mut wal = Wal::create(&path, &DB, 3, 8192).unwrap();
        wal.append(b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(open(&path, 3).1, vec![b"x".to_vec()]);
        // An existing log is never replaced.
        let err = Wal::create(&path, &DB, 3, 8192).unwrap_err();
        assert!(err.to_string().contains("create"), "{err}");
        assert_eq!(open(&path, 3).1, vec![b"x".to_vec()]);
    }

    #[test]
    fn stale_bytes_that_only_look_like_headers_are_not_checksummed() {
        // What earlier generations left after the replay's end is full of
        // 8-byte windows that read as a generation in range (big-endian
        // indices and lengths); checksumming each at the length its
        // "header" claims made opening take minutes. Only headers a writer
        // could have written there are checked.
        let header = |g: u64, s: u64, flags: u32, len: u64| {
            let mut h = Vec::new();
            h.extend_from_slice(&g.to_be_bytes());
            h.extend_from_slice(&s.to_be_bytes());
            h.extend_from_slice(&flags.to_be_bytes());
            h.extend_from_slice(&len.to_be_bytes());
            h
        };
        // Each decoy is followed by filler, so that no window across two
        // of them reads as a header by chance.
        let filler = [0xaa; 8];
        let mut payload = Vec::new();
        for _ in 0..500 {
            for decoy in [
                header(7, 1, 0xff, 100),       // flags no writer sets
                header(6, 1 << 32, 0, 100),    // more records than fit before it
                header(7, 1, SYNCED, 1 << 40), // longer than the file
                header(6, 1, SYNCED, 100),     // not after the bad record
                header(6, 5, 0, 100),          // neither synced nor after a sync
            ] {
                payload.extend(decoy);
                payload.extend(filler);
            }
        }
        let plausible = 3; // checked: these could be records
        for _ in 0..plausible {
            payload.extend(header(7, 1, 0, 10));
            payload.extend([0x55u8; 10 + CHECKSUM]);
            payload.extend(filler);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = Wal::create(&path, &DB, 5, 1 << 20).unwrap();
        wal.append(&payload).unwrap();
        wal.restart(6);
        wal.append(b"new").unwrap();
        drop(wal);
        let (_, replay) = Wal::open(&path, &DB, 6, 1 << 20).unwrap();
        assert_eq!(replay.payloads, vec![b"new".to_vec()]);
        // What the search used to checksum: every window that reads as a
        // generation in range with a payload that fits in the file.
        let bytes = std::fs::read(&path).unwrap();
        let start = FILE_HEADER + HEADER + 3 + CHECKSUM;
        let (mut naive, mut naive_bytes) = (0u64, 0u64);
        for p in start + 1..=bytes.len() - HEADER - CHECKSUM {
            let h = header_at(&bytes, p).unwrap();
            if (6..=6 + MAX_GENERATIONS_AHEAD).contains(&h.generation)
                && h.len <= (bytes.len() - p - HEADER - CHECKSUM) as u64
            {
                naive += 1;
                naive_bytes += h.len;
            }
        }
        // The decoys that could be records are still checked; windows made
        // of the decoys' bytes shifted by one also pass (as such windows do
        // in real logs), but a small share of what was checked before.
        assert!(replay.tail_checks >= plausible, "{replay:?}");
        assert!(
            replay.tail_checks * 20 < naive && replay.tail_check_bytes * 20 < naive_bytes,
            "checked {} ({} bytes), before {naive} ({naive_bytes} bytes)",
            replay.tail_checks,
            replay.tail_check_bytes
        );
    }

    #[test]
    fn an_empty_zeroed_foreign_or_format_1_log_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = create(&path, 0);
        wal.append(b"x").unwrap();
        drop(wal);
        let good = std::fs::read(&path).unwrap();
        let refused = |bytes: &[u8], database: &DatabaseId| {
            std::fs::write(&path, bytes).unwrap();
            Wal::open(&path, database, 0, 8192).unwrap_err()
        };
        let err = refused(b"", &DB);
        assert!(matches!(err, WalError::Format { .. }), "{err}");
        assert!(err.to_string().contains("is empty"), "{err}");
        let err = refused(&good[..20], &DB);
        assert!(
            err.to_string().contains("shorter than a log header"),
            "{err}"
        );
        let err = refused(&vec![0u8; good.len()], &DB);
        assert!(err.to_string().contains("zeros"), "{err}");
        // Format 1 started with a record: generation, sequence, length.
        let mut v1 = vec![0u8; 8192];
        v1[7] = 4;
        let err = refused(&v1, &DB);
        assert!(err.to_string().contains("format 1"), "{err}");
        let mut v3 = good.clone();
        v3[11] = 3;
        let err = refused(&v3, &DB);
        assert!(err.to_string().contains("log format 3"), "{err}");
        let err = refused(&good, &[7; 32]);
        assert!(matches!(err, WalError::ForeignLog { .. }), "{err}");
        assert!(err.to_string().contains(&hex(&DB)), "{err}");
        // A foreign log whose header was rewritten still replays nothing:
        // its records' checksums name the other database.
        let mut forged = good.clone();
        forged[16..FILE_HEADER].copy_from_slice(&[7; 32]);
        std::fs::write(&path, &forged).unwrap();
        let (_, replay) = Wal::open(&path, &[7; 32], 0, 8192).unwrap();
        assert!(replay.payloads.is_empty());
        std::fs::write(&path, &good).unwrap();
        assert_eq!(open(&path, 0).1, vec![b"x".to_vec()]);
    }

    #[test]
    fn a_restart_hides_every_earlier_record_even_longer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = create(&path, 7);
        for i in 0..10u8 {
            wal.append(&[i; 100]).unwrap();
        }
        wal.restart(8);
        // Nothing of generation 8 yet: the old records are not read as 8's.
        assert!(open(&path, 8).1.is_empty());
        wal.append(b"new").unwrap();
        let (_, got) = open(&path, 8);
        assert_eq!(got, vec![b"new".to_vec()]);
        // Generation 7's records after the overwritten one remain on disk
        // but are never read as 7's either: the first record is now 8's,
        // which says the reader's database is older than the log.
        let err = Wal::open(&path, &DB, 7, 8192).unwrap_err();
        assert!(
            matches!(
                err,
                WalError::AheadOfDatabase {
                    log: 8,
                    database: 7,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_log_ahead_of_the_database_is_refused_and_a_stale_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = create(&path, 5);
        wal.append(b"a").unwrap();
        drop(wal);
        // A database at generation 4 (an older copy) next to this log.
        let err = Wal::open(&path, &DB, 4, 8192).unwrap_err();
        assert!(err.to_string().contains("older than its log"), "{err}");
        // A database at generation 6 (checkpointed since): stale records.
        assert!(open(&path, 6).1.is_empty());
        // The newer log's first record damaged: a later one still tells.
        let mut wal = Wal::open(&path, &DB, 6, 8192).unwrap().0;
        wal.restart(7);
        wal.append(b"b").unwrap();
        wal.append(b"c").unwrap();
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FILE_HEADER + HEADER] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(&path, &DB, 5, 8192).unwrap_err();
        assert!(
            matches!(
                err,
                WalError::AheadOfDatabase {
                    log: 7,
                    database: 5,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_torn_last_record_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = create(&path, 1);
        wal.append(b"kept").unwrap();
        let at = wal.used();
        wal.append(b"torn").unwrap();
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[file_offset(at) + HEADER] ^= 1; // one bit of the second payload
        std::fs::write(&path, &bytes).unwrap();
        let (mut wal, got) = open(&path, 1);
        assert_eq!(got, vec![b"kept".to_vec()]);
        assert_eq!(wal.used(), at);
        // The next append overwrites the torn record.
        wal.append(b"again").unwrap();
        assert_eq!(open(&path, 1).1, vec![b"kept".to_vec(), b"again".to_vec()]);
    }

    #[test]
    fn a_damaged_record_in_the_middle_is_refused_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = Wal::create(&path, &DB, 1, 1 << 20).unwrap();
        let mut starts = Vec::new();
        for i in 0..100u32 {
            starts.push(file_offset(wal.used()));
            wal.append(&i.to_be_bytes().repeat(10)).unwrap();
        }
        drop(wal);
        let good = std::fs::read(&path).unwrap();
        let mut bytes = good.clone();
        bytes[starts[40] + HEADER + 3] ^= 0x10; // one byte of record 40
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(&path, &DB, 1, 1 << 20).unwrap_err();
        match &err {
            WalError::Corrupt {
                record,
                offset,
                later_record,
                later_offset,
                generation,
                ..
            } => {
                assert_eq!(*generation, 1);
                assert_eq!(*record, 40);
                assert_eq!(*offset, starts[40] as u64);
                assert_eq!(*later_record, 41);
                assert_eq!(*later_offset, starts[41] as u64);
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("record 40"), "{text}");
        assert!(text.contains(&format!("byte {}", starts[40])), "{text}");
        // The refusal changed nothing: the intact file still opens.
        std::fs::write(&path, &good).unwrap();
        let (_, replay) = Wal::open(&path, &DB, 1, 1 << 20).unwrap();
        assert_eq!(replay.payloads.len(), 100);
    }

    #[test]
    fn a_torn_deferred_record_before_valid_deferred_ones_is_a_crash_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = create(&path, 1);
        wal.append(b"synced").unwrap();
        wal.append_deferred(b"first deferred").unwrap();
        let at = file_offset(wal.used());
        wal.append_deferred(b"torn").unwrap();
        wal.append_deferred(b"written back before the torn one")
            .unwrap();
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at + HEADER] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            open(&path, 1).1,
            vec![b"synced".to_vec(), b"first deferred".to_vec()]
        );
        // But a synced record after it means the torn one was on disk.
        let mut wal = create(&dir.path().join("log2"), 1);
        wal.append_deferred(b"deferred").unwrap();
        wal.append(b"synced").unwrap();
        drop(wal);
        let path = dir.path().join("log2");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FILE_HEADER + HEADER] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(&path, &DB, 1, 8192).unwrap_err();
        assert!(
            matches!(
                err,
                WalError::Corrupt {
                    record: 0,
                    later_record: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_full_log_refuses_and_says_how_much_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = Wal::create(&path, &DB, 0, 10).unwrap(); // raised to MIN_CAPACITY
        assert_eq!(wal.capacity(), MIN_CAPACITY);
        let big = vec![0u8; 3900];
        wal.append(&big).unwrap();
        assert!(!wal.fits(100));
        match wal.append(&[0u8; 100]) {
            Err(WalError::Full { needed, free }) => {
                assert_eq!(needed, 160);
                assert_eq!(free, MIN_CAPACITY - FILE_HEADER as u64 - 3960);
            }
            other => panic!("{other:?}"),
        }
        wal.restart(1);
        wal.append(&[0u8; 100]).unwrap();
    }

    #[test]
    fn a_database_is_copied_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("order.redb");
        assert_eq!(path_for(&db), dir.path().join("order.wal"));
        std::fs::write(&db, b"db").unwrap();
        let to = dir.path().join("copy.redb");
        copy_database(&db, &to).unwrap();
        assert!(!path_for(&to).exists(), "a log appeared from nowhere");
        std::fs::write(path_for(&db), b"log").unwrap();
        copy_database(&db, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"db");
        assert_eq!(std::fs::read(path_for(&to)).unwrap(), b"log");
    }

    #[test]
    fn the_file_grows_in_steps_up_to_the_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = Wal::create(&path, &DB, 0, 3 * GROWTH + 10).unwrap();
        let len = || std::fs::metadata(&path).unwrap().len();
        let chunk = vec![7u8; 200_000];
        wal.append(&chunk).unwrap();
        assert_eq!(len(), GROWTH);
        while file_offset(wal.used()) < GROWTH as usize {
            wal.append(&chunk).unwrap();
        }
        assert_eq!(len(), 2 * GROWTH);
        while wal.fits(chunk.len()) {
            wal.append(&chunk).unwrap();
        }
        assert!(file_offset(wal.used()) as u64 > 3 * GROWTH + 10 - 200_060);
        // Never past the capacity, and no further than the records need.
        assert_eq!(len(), 3 * GROWTH);
        drop(wal);
        let (_, got) = Wal::open(&path, &DB, 0, GROWTH).unwrap();
        assert_eq!(
            got.payloads.len(),
            ((3 * GROWTH - FILE_HEADER as u64) / 200_060) as usize
        );
    }

    #[test]
    fn the_checksum_matches_the_published_vector() {
        let v = grompi_proto::vectors::find("wal_record_checksum").unwrap();
        assert_eq!(
            v.context.as_deref(),
            Some(grompi_proto::context::WAL_RECORD)
        );
        let database: DatabaseId = v.field_bytes("database").unwrap().try_into().unwrap();
        let generation = v.fields["generation"].as_u64().unwrap();
        let sequence = v.fields["sequence"].as_u64().unwrap();
        let flags = u32::try_from(v.fields["flags"].as_u64().unwrap()).unwrap();
        let payload = v.field_bytes("payload").unwrap();
        let sum = checksum(&database, generation, sequence, flags, &payload);
        assert_eq!(sum.to_vec(), v.output_bytes().unwrap());
        // And the input is the database id, then the record's first 28 + n
        // bytes as written (the vector's flags: a synced append's first
        // record of a generation would carry both; this one only SYNCED).
        assert_eq!(flags, SYNCED);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut wal = Wal::create(&path, &database, generation, 8192).unwrap();
        for _ in 0..sequence {
            wal.append_deferred(b"").unwrap();
        }
        let at = file_offset(wal.used());
        wal.append(&payload).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut input = database.to_vec();
        input.extend_from_slice(&bytes[at..at + HEADER + payload.len()]);
        assert_eq!(input, v.input_bytes().unwrap());
        assert_eq!(&bytes[at + HEADER + payload.len()..][..32], sum.as_slice());
    }

    fn op() -> impl Strategy<Value = KvOp> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            (any::<u8>(), bytes.clone(), bytes.clone()).prop_map(|(table, key, value)| KvOp::Put {
                table,
                key,
                value
            }),
            (any::<u8>(), bytes).prop_map(|(table, key)| KvOp::Delete { table, key }),
        ]
    }

    proptest! {
        #[test]
        fn kv_batches_decode_to_what_was_recorded(ops in proptest::collection::vec(op(), 0..20)) {
            let mut b = KvBatch::new();
            for op in &ops {
                match op {
                    KvOp::Put { table, key, value } => b.put(*table, key, value),
                    KvOp::Delete { table, key } => b.delete(*table, key),
                }
            }
            prop_assert_eq!(b.len(), ops.len());
            prop_assert_eq!(KvBatch::decode(b.as_bytes()).unwrap(), ops);
        }

        #[test]
        fn any_payload_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = KvBatch::decode(&bytes);
        }

        /// The log against a model: appends (synced or deferred), restarts,
        /// crashes that tear the last record at any byte, lose any suffix
        /// of the deferred records since the last synced one, or lose one
        /// such deferred record while later ones reached the disk; and
        /// damage to one byte of a record that was on disk. What reopening
        /// returns is exactly what was appended since the last restart,
        /// minus what the crash lost; damage is refused whenever a record
        /// written after the damaged one was synced follows it.
        #[test]
        fn the_log_returns_what_was_appended_since_the_last_restart(
            steps in proptest::collection::vec(
                prop_oneof![
                    3 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Step::Append),
                    2 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Step::AppendDeferred),
                    1 => Just(Step::Restart),
                    1 => (0usize..400).prop_map(Step::CrashTearingLast),
                    1 => any::<usize>().prop_map(Step::CrashLosingDeferred),
                    1 => any::<usize>().prop_map(Step::CrashLosingOneDeferred),
                    1 => (any::<usize>(), 0usize..400).prop_map(|(k, b)| Step::Damage(k, b)),
                ],
                1..40,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log");
            let mut generation = 0;
            let mut wal = Wal::create(&path, &DB, generation, 8192).unwrap();
            // What was appended since the last restart, where each record
            // starts (in the file), how many of them a sync made durable,
            // and which were written by a synced append or after a sync.
            let mut model: Vec<Vec<u8>> = Vec::new();
            let mut starts: Vec<usize> = Vec::new();
            let mut synced = 0;
            let mut flagged: Vec<bool> = Vec::new();
            // Whether the log's next record is written after a sync of
            // every earlier one (as the log itself knows it).
            let mut after_sync = true;
            for step in steps {
                if let Step::Append(p) | Step::AppendDeferred(p) = &step
                    && !wal.fits(p.len())
                {
                    generation += 1;
                    wal.restart(generation);
                    model.clear();
                    starts.clear();
                    flagged.clear();
                    synced = 0;
                    after_sync = true;
                }
                match step {
                    Step::Append(p) => {
                        starts.push(file_offset(wal.used()));
                        wal.append(&p).unwrap();
                        model.push(p);
                        flagged.push(true);
                        synced = model.len();
                        after_sync = true;
                    }
                    Step::AppendDeferred(p) => {
                        starts.push(file_offset(wal.used()));
                        wal.append_deferred(&p).unwrap();
                        flagged.push(after_sync);
                        model.push(p);
                        after_sync = false;
                    }
                    Step::Restart => {
                        generation += 1;
                        wal.restart(generation);
                        model.clear();
                        starts.clear();
                        flagged.clear();
                        synced = 0;
                        after_sync = true;
                    }
                    Step::Damage(k, b) => {
                        if synced == 0 {
                            continue;
                        }
                        drop(wal);
                        let k = k % synced;
                        let good = std::fs::read(&path).unwrap();
                        let mut bytes = good.clone();
                        let len = HEADER + model[k].len() + CHECKSUM;
                        bytes[starts[k] + b % len] ^= 0x01;
                        std::fs::write(&path, &bytes).unwrap();
                        let refused = flagged[k + 1..].iter().any(|f| *f);
                        match Wal::open(&path, &DB, generation, 8192) {
                            Err(WalError::Corrupt { record, offset, .. }) => {
                                prop_assert!(refused, "refused damage it cannot tell from a tear");
                                prop_assert_eq!(record, k as u64);
                                prop_assert_eq!(offset, starts[k] as u64);
                            }
                            Ok((_, got)) => {
                                prop_assert!(!refused, "damage to record {} replayed", k);
                                prop_assert_eq!(&got.payloads, &model[..k].to_vec());
                            }
                            Err(e) => prop_assert!(false, "{}", e),
                        }
                        // Undo the damage and carry on where the log was.
                        std::fs::write(&path, &good).unwrap();
                        let (w, got) = Wal::open(&path, &DB, generation, 8192).unwrap();
                        prop_assert_eq!(&got.payloads, &model);
                        wal = w;
                        // Reopened: for all the log knows, what it read may
                        // be in the page cache only.
                        after_sync = model.is_empty();
                    }
                    Step::CrashTearingLast(_) | Step::CrashLosingDeferred(_) | Step::CrashLosingOneDeferred(_) => {
                        drop(wal);
                        let mut bytes = std::fs::read(&path).unwrap();
                        let end = wal_end(&starts, &model);
                        // The bytes the disk did not keep, if any.
                        let lost = match step {
                            Step::CrashTearingLast(cut) => starts
                                .last()
                                .map(|s| s + cut)
                                .filter(|at| *at < end)
                                .map(|at| (at, end)),
                            Step::CrashLosingDeferred(k) if model.len() > synced => {
                                let first = synced + k % (model.len() - synced);
                                Some((starts[first], end))
                            }
                            Step::CrashLosingOneDeferred(k) if model.len() > synced => {
                                let one = synced + k % (model.len() - synced);
                                Some((starts[one], starts[one] + HEADER + model[one].len() + CHECKSUM))
                            }
                            _ => None,
                        };
                        if let Some((from, to)) = lost {
                            for b in &mut bytes[from..to] {
                                *b ^= 0xa5;
                            }
                            std::fs::write(&path, &bytes).unwrap();
                            let kept = starts
                                .iter()
                                .zip(&model)
                                .take_while(|(s, p)| **s + HEADER + p.len() + CHECKSUM <= from)
                                .count();
                            model.truncate(kept);
                        }
                        let (w, got) = Wal::open(&path, &DB, generation, 8192).unwrap();
                        prop_assert_eq!(&got.payloads, &model);
                        wal = w;
                        // As the servers do: checkpoint and restart after recovery.
                        generation += 1;
                        wal.restart(generation);
                        model.clear();
                        starts.clear();
                        flagged.clear();
                        synced = 0;
                        after_sync = true;
                    }
                }
            }
            drop(wal);
            let (_, got) = Wal::open(&path, &DB, generation, 8192).unwrap();
            prop_assert_eq!(got.payloads, model);
        }
    }

    /// Where the last record in the model ends (the start of the records
    /// if none).
    fn wal_end(starts: &[usize], model: &[Vec<u8>]) -> usize {
        match (starts.last(), model.last()) {
            (Some(s), Some(p)) => s + HEADER + p.len() + CHECKSUM,
            _ => FILE_HEADER,
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Append(Vec<u8>),
        AppendDeferred(Vec<u8>),
        Restart,
        CrashTearingLast(usize),
        CrashLosingDeferred(usize),
        CrashLosingOneDeferred(usize),
        Damage(usize, usize),
    }
}
