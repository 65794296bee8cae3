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
//! * Records are read back in the order written, up to the first one that
//!   is torn, belongs to an older generation, or is out of sequence; nothing
//!   after that point is ever returned.
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
//! is right, because the database already holds everything. No header is
//! rewritten at a checkpoint, so there is no torn header to reason about.
//!
//! # Record layout
//!
//! | bytes | field |
//! |---|---|
//! | 8 | generation (big-endian) |
//! | 8 | sequence within the generation, from 0 (big-endian) |
//! | 8 | payload length (big-endian) |
//! | n | payload |
//! | 32 | checksum: BLAKE3 `derive_key` with [`grompi_proto::context::WAL_RECORD`] over the 24 + n bytes before it |
//!
//! The checksum input is the canonical encoding of (generation, sequence,
//! bytes(payload)); `proto/vectors/v1.json` publishes a vector
//! (`wal_record_checksum`). The checksum detects torn and stale records; it
//! is not a defence against someone who can write the file.
//!
//! A batch's payload is opaque here; [`KvBatch`] is the encoding both
//! servers use: a list of puts and deletes on numbered tables.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: usize = 24;
const CHECKSUM: usize = 32;

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

/// The checksum of a record: BLAKE3 `derive_key` over its first 24 + n bytes.
pub fn checksum(generation: u64, sequence: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(grompi_proto::context::WAL_RECORD);
    h.update(&generation.to_be_bytes());
    h.update(&sequence.to_be_bytes());
    h.update(&(payload.len() as u64).to_be_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

/// An append-only log file that grows to a fixed capacity.
pub struct Wal {
    file: File,
    path: PathBuf,
    capacity: u64,
    allocated: u64,
    generation: u64,
    next_sequence: u64,
    offset: u64,
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

impl Wal {
    /// Opens the log at `path` (creating it if it does not exist) and
    /// returns it with the payloads of `generation`'s records, in order.
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
    ///
    /// `expected`: the database records that it was written through a log
    /// before; then a missing file is an error ([`WalError::Missing`]), not
    /// an empty log. A new file is created readable by its owner only (the
    /// router's records include secrets).
    pub fn open(
        path: &Path,
        generation: u64,
        capacity: u64,
        expected: bool,
    ) -> Result<(Self, Vec<Vec<u8>>), WalError> {
        use std::os::unix::fs::OpenOptionsExt;
        let exists = path.exists();
        if expected && !exists {
            return Err(WalError::Missing {
                path: path.to_path_buf(),
            });
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io(path, "open"))?;
        if !exists {
            // Make the new file's directory entry durable.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(path, "sync the directory"))?;
            }
        }
        let allocated = file.metadata().map_err(io(path, "stat"))?.len();
        // A file larger than the capacity (the capacity was lowered) is used
        // at its full length: every record in it must still be readable.
        let capacity = capacity.max(MIN_CAPACITY).max(allocated);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(path, "read"))?;
        let (payloads, offset) = read_records(&bytes, generation);
        let wal = Self {
            file,
            path: path.to_path_buf(),
            capacity,
            allocated,
            generation,
            next_sequence: payloads.len() as u64,
            offset,
            scratch: Vec::new(),
        };
        Ok((wal, payloads))
    }

    /// Appends one record and waits until it is on disk (`fdatasync`),
    /// with every record appended before it.
    pub fn append(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.write_record(payload)?;
        self.file.sync_data().map_err(io(&self.path, "fdatasync"))
    }

    /// Appends one record without waiting for the disk: it is on disk once
    /// a later [`Wal::append`] returns. A crash before that may lose it
    /// (with every deferred record after it; never one before it that was
    /// synced, since replay stops at the first record that does not check).
    pub fn append_deferred(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.write_record(payload)
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<(), WalError> {
        let needed = record_len(payload.len());
        if !self.fits(payload.len()) {
            return Err(WalError::Full {
                needed,
                free: self.capacity - self.offset,
            });
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&self.generation.to_be_bytes());
        self.scratch
            .extend_from_slice(&self.next_sequence.to_be_bytes());
        self.scratch
            .extend_from_slice(&(payload.len() as u64).to_be_bytes());
        self.scratch.extend_from_slice(payload);
        let sum = checksum(self.generation, self.next_sequence, payload);
        self.scratch.extend_from_slice(&sum);
        self.grow_to(self.offset + needed)?;
        self.file
            .write_all_at(&self.scratch, self.offset)
            .map_err(io(&self.path, "write"))?;
        self.offset += needed;
        self.next_sequence += 1;
        Ok(())
    }

    /// Whether a payload of `len` bytes fits in what is left.
    pub fn fits(&self, len: usize) -> bool {
        record_len(len) <= self.capacity - self.offset
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

    /// Bytes written since the last restart.
    pub fn used(&self) -> u64 {
        self.offset
    }

    /// The file's usable length.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The generation records are written under.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Starts writing from the beginning of the file under `generation`.
    /// Call only after everything in the log is durable elsewhere *and* the
    /// new generation number is durably recorded there too.
    pub fn restart(&mut self, generation: u64) {
        self.generation = generation;
        self.next_sequence = 0;
        self.offset = 0;
    }
}

fn record_len(payload: usize) -> u64 {
    (HEADER + payload + CHECKSUM) as u64
}

/// The payloads of `generation`'s records from the start of `bytes`, and
/// the offset after the last one.
fn read_records(bytes: &[u8], generation: u64) -> (Vec<Vec<u8>>, u64) {
    let mut payloads = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[i * 8..i * 8 + 8]);
            u64::from_be_bytes(b)
        };
        let (g, seq, len) = (field(0), field(1), field(2));
        if g != generation || seq != payloads.len() as u64 {
            break;
        }
        let Ok(len) = usize::try_from(len) else {
            break;
        };
        let Some(end) = (at + HEADER)
            .checked_add(len)
            .and_then(|e| e.checked_add(CHECKSUM))
        else {
            break;
        };
        let Some(record) = bytes.get(at..end) else {
            break;
        };
        let payload = &record[HEADER..HEADER + len];
        let sum = &record[HEADER + len..];
        if sum != checksum(g, seq, payload) {
            break;
        }
        payloads.push(payload.to_vec());
        at = end;
    }
    (payloads, at as u64)
}

/// One change in a [`KvBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` in `table` to `value`.
    Put {
        /// The caller's table number.
        table: u8,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key` from `table`.
    Delete {
        /// The caller's table number.
        table: u8,
        /// The key.
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

    fn open(path: &Path, g: u64) -> (Wal, Vec<Vec<u8>>) {
        Wal::open(path, g, 8192, false).unwrap()
    }

    #[test]
    fn records_come_back_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut wal, got) = open(&path, 0);
        assert!(got.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
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
    fn a_missing_log_that_was_expected_is_an_error_and_new_ones_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let err = Wal::open(&path, 3, 8192, true).unwrap_err();
        assert!(matches!(err, WalError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(!path.exists(), "a refused open created the file");
        let (mut wal, _) = Wal::open(&path, 3, 8192, false).unwrap();
        wal.append(b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            Wal::open(&path, 3, 8192, true).unwrap().1,
            vec![b"x".to_vec()]
        );
    }

    #[test]
    fn a_restart_hides_every_earlier_record_even_longer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path, 7);
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
        // but are never read as 7's either: the first record is now 8's.
        assert!(open(&path, 7).1.is_empty());
    }

    #[test]
    fn a_torn_or_flipped_record_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path, 1);
        wal.append(b"kept").unwrap();
        let at = wal.used();
        wal.append(b"torn").unwrap();
        wal.append(b"after").unwrap();
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize + HEADER] ^= 1; // one bit of the second payload
        std::fs::write(&path, &bytes).unwrap();
        let (mut wal, got) = open(&path, 1);
        assert_eq!(got, vec![b"kept".to_vec()]);
        assert_eq!(wal.used(), at);
        // The next append overwrites the torn record.
        wal.append(b"again").unwrap();
        assert_eq!(open(&path, 1).1, vec![b"kept".to_vec(), b"again".to_vec()]);
    }

    #[test]
    fn a_full_log_refuses_and_says_how_much_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut wal, _) = Wal::open(&path, 0, 10, false).unwrap(); // raised to MIN_CAPACITY
        assert_eq!(wal.capacity(), MIN_CAPACITY);
        let big = vec![0u8; 4000];
        wal.append(&big).unwrap();
        assert!(!wal.fits(100));
        match wal.append(&[0u8; 100]) {
            Err(WalError::Full { needed, free }) => {
                assert_eq!(needed, 156);
                assert_eq!(free, MIN_CAPACITY - 4056);
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
        let (mut wal, _) = Wal::open(&path, 0, 3 * GROWTH + 10, false).unwrap();
        let len = || std::fs::metadata(&path).unwrap().len();
        let chunk = vec![7u8; 200_000];
        wal.append(&chunk).unwrap();
        assert_eq!(len(), GROWTH);
        while wal.used() < GROWTH {
            wal.append(&chunk).unwrap();
        }
        assert_eq!(len(), 2 * GROWTH);
        while wal.fits(chunk.len()) {
            wal.append(&chunk).unwrap();
        }
        assert!(wal.used() > 3 * GROWTH + 10 - 200_056);
        // Never past the capacity, and no further than the records need.
        assert_eq!(len(), 3 * GROWTH);
        drop(wal);
        let (_, got) = Wal::open(&path, 0, GROWTH, true).unwrap();
        assert_eq!(got.len(), (3 * GROWTH / 200_056) as usize);
    }

    #[test]
    fn the_checksum_matches_the_published_vector() {
        let v = grompi_proto::vectors::find("wal_record_checksum").unwrap();
        assert_eq!(
            v.context.as_deref(),
            Some(grompi_proto::context::WAL_RECORD)
        );
        let generation = v.fields["generation"].as_u64().unwrap();
        let sequence = v.fields["sequence"].as_u64().unwrap();
        let payload = v.field_bytes("payload").unwrap();
        let sum = checksum(generation, sequence, &payload);
        assert_eq!(sum.to_vec(), v.output_bytes().unwrap());
        // And the input is the record's first 24 + n bytes as written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut wal, _) = Wal::open(&path, generation, 8192, false).unwrap();
        for _ in 0..sequence {
            wal.append(b"").unwrap();
        }
        let at = wal.used() as usize;
        wal.append(&payload).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let input = &bytes[at..at + HEADER + payload.len()];
        assert_eq!(input, v.input_bytes().unwrap().as_slice());
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
        /// and crashes that tear the last record at any byte or lose any
        /// suffix of the deferred records since the last synced one; what
        /// reopening returns is exactly what was appended since the last
        /// restart, minus what the crash lost.
        #[test]
        fn the_log_returns_what_was_appended_since_the_last_restart(
            steps in proptest::collection::vec(
                prop_oneof![
                    3 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Step::Append),
                    2 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Step::AppendDeferred),
                    1 => Just(Step::Restart),
                    1 => (0usize..400).prop_map(Step::CrashTearingLast),
                    1 => any::<usize>().prop_map(Step::CrashLosingDeferred),
                ],
                1..40,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log");
            let mut generation = 0;
            let (mut wal, _) = Wal::open(&path, generation, 8192, false).unwrap();
            // What was appended since the last restart, where each record
            // starts, and how many of them a sync made durable.
            let mut model: Vec<Vec<u8>> = Vec::new();
            let mut starts: Vec<u64> = Vec::new();
            let mut synced = 0;
            for step in steps {
                if let Step::Append(p) | Step::AppendDeferred(p) = &step
                    && !wal.fits(p.len())
                {
                    generation += 1;
                    wal.restart(generation);
                    model.clear();
                    starts.clear();
                    synced = 0;
                }
                match step {
                    Step::Append(p) => {
                        starts.push(wal.used());
                        wal.append(&p).unwrap();
                        model.push(p);
                        synced = model.len();
                    }
                    Step::AppendDeferred(p) => {
                        starts.push(wal.used());
                        wal.append_deferred(&p).unwrap();
                        model.push(p);
                    }
                    Step::Restart => {
                        generation += 1;
                        wal.restart(generation);
                        model.clear();
                        starts.clear();
                        synced = 0;
                    }
                    Step::CrashTearingLast(_) | Step::CrashLosingDeferred(_) => {
                        drop(wal);
                        let mut bytes = std::fs::read(&path).unwrap();
                        let end = wal_end(&starts, &model);
                        // The first byte the disk did not keep, if any.
                        let lost_from = match step {
                            Step::CrashTearingLast(cut) => starts
                                .last()
                                .map(|s| *s as usize + cut)
                                .filter(|at| *at < end),
                            Step::CrashLosingDeferred(k) if model.len() > synced => {
                                let first = synced + k % (model.len() - synced);
                                Some(starts[first] as usize)
                            }
                            _ => None,
                        };
                        if let Some(from) = lost_from {
                            for b in &mut bytes[from..end] {
                                *b ^= 0xa5;
                            }
                            std::fs::write(&path, &bytes).unwrap();
                            let kept = starts
                                .iter()
                                .zip(&model)
                                .take_while(|(s, p)| **s as usize + HEADER + p.len() + CHECKSUM <= from)
                                .count();
                            model.truncate(kept);
                        }
                        let (w, got) = Wal::open(&path, generation, 8192, false).unwrap();
                        prop_assert_eq!(&got, &model);
                        wal = w;
                        // As the servers do: checkpoint and restart after recovery.
                        generation += 1;
                        wal.restart(generation);
                        model.clear();
                        starts.clear();
                        synced = 0;
                    }
                }
            }
            drop(wal);
            let (_, got) = Wal::open(&path, generation, 8192, false).unwrap();
            prop_assert_eq!(got, model);
        }
    }

    /// Where the last record in the model ends (0 if none).
    fn wal_end(starts: &[u64], model: &[Vec<u8>]) -> usize {
        match (starts.last(), model.last()) {
            (Some(s), Some(p)) => *s as usize + HEADER + p.len() + CHECKSUM,
            _ => 0,
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Append(Vec<u8>),
        AppendDeferred(Vec<u8>),
        Restart,
        CrashTearingLast(usize),
        CrashLosingDeferred(usize),
    }
}
