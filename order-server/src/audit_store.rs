//! The audit log over the order server's own store: [`LogStorage`] for a
//! transaction ([`WriteAudit`]) and for a read snapshot ([`ReadAudit`]).
//!
//! An entry and the stored hashes it completes are written into the
//! caller's open transaction, next to the attestation record they go with,
//! so the single commit that precedes the answer makes both durable, or
//! neither: no tag leaves the server without its log entry on disk, and
//! after a crash the log and the attestations agree.
//!
//! Stores keep one record per entry ([`encode_record`]): the entry and the
//! stored hashes its append computed but its leaf hash (one per subtree it
//! completed; the leaf hash is recomputed from the entry), so an append is
//! one write, and a stored hash is found in the record of the entry that
//! completed it ([`hash_location`]).
//!
//! A write transaction appends through a [`Frontier`]: the hashes of the
//! complete subtrees on the tree's right edge, which are exactly the left
//! siblings the next appends combine with. It belongs to the transaction
//! (created empty with it, dropped with it), is filled from the store the
//! first time a level is needed and from each append after that, so a
//! batch's node hashes are computed in one pass over its entries without
//! reading back what the batch itself wrote, and an aborted transaction
//! takes its frontier with it: nothing held in memory outlives the
//! transaction it was computed in.

use crate::store::{StoreError, StoreRead, StoreWrite};
use grompi_tlog::error::{LogError, StorageError};
use grompi_tlog::merkle::MAX_TREE_SIZE;
use grompi_tlog::{Hash, Log, LogStorage, merkle};
use std::cell::RefCell;

/// The record a store keeps for one entry: `u16(len(entry)) || entry ||`
/// its stored hashes after the first (`hashes[0]`, the leaf hash, is
/// `SHA-256(0x00 || entry)` and is not stored).
pub fn encode_record(entry: &[u8], hashes: &[Hash]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(2 + entry.len() + 32 * hashes.len());
    encode_record_into(&mut out, entry, hashes)?;
    Ok(out)
}

/// [`encode_record`], appended to `out`.
pub fn encode_record_into(
    out: &mut Vec<u8>,
    entry: &[u8],
    hashes: &[Hash],
) -> Result<(), StoreError> {
    let len = entry_len(entry)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(entry);
    for h in hashes.get(1..).unwrap_or_default() {
        out.extend_from_slice(h.as_bytes());
    }
    Ok(())
}

/// An entry's length as its record states it, if it fits.
fn entry_len(entry: &[u8]) -> Result<u16, StoreError> {
    u16::try_from(entry.len()).map_err(|_| {
        StoreError::AuditLog(format!(
            "an entry of {} bytes is longer than the log's limit of {} bytes",
            entry.len(),
            u16::MAX
        ))
    })
}

/// The right edge of the log's tree in one write transaction: for each
/// level `l` whose bit is set in the log's size, the hash of the complete
/// subtree of `2^l` entries that ends the tree there, where known. An
/// append combines its leaf hash with these (its left siblings) and
/// replaces them with the subtree it completes.
///
/// A level is read from the store the first time it is needed and never
/// again in the transaction; so the frontier must be created with the
/// transaction and dropped with it (it is only ever right for the store
/// state of the transaction it appended in).
#[derive(Debug, Clone)]
pub struct Frontier {
    /// The log's size the frontier is for, once known.
    size: Option<u64>,
    /// `levels[l]`: the hash of the right-edge subtree of level `l`,
    /// meaningful only while bit `l` of `size` is set.
    levels: [Option<Hash>; 64],
}

impl Default for Frontier {
    fn default() -> Self {
        Self {
            size: None,
            levels: [None; 64],
        }
    }
}

impl Frontier {
    /// An empty frontier, for a new transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `entry` as the log's next entry, whose index is `count`
    /// (the log's size in this transaction): writes its record
    /// ([`encode_record`]) to the end of `out`, and returns the number of
    /// node hashes in it. `read` reads a stored hash (numbered as
    /// [`merkle::stored_hash_index`]) from what the store held before this
    /// frontier's first append. On an error, `out` is as it was and the
    /// frontier still describes the log of `count` entries.
    pub fn append(
        &mut self,
        count: u64,
        entry: &[u8],
        out: &mut Vec<u8>,
        read: impl Fn(u64) -> Result<Option<[u8; 32]>, StoreError>,
    ) -> Result<usize, StoreError> {
        let len = entry_len(entry)?;
        if count >= MAX_TREE_SIZE {
            return Err(StoreError::AuditLog(LogError::Full.to_string()));
        }
        if self.size.is_some_and(|s| s != count) {
            return Err(StoreError::AuditLog(format!(
                "entry {count} appended to a log of {} entries",
                self.size.unwrap_or_default()
            )));
        }
        // Left siblings first, so that a failed read writes nothing. A level
        // read here describes the log of `count` entries whether or not
        // this append then succeeds.
        self.size = Some(count);
        let closes = count.trailing_ones() as usize;
        for (level, slot) in self.levels.iter_mut().enumerate().take(closes) {
            if slot.is_none() {
                let n = (count >> level) - 1;
                let at = merkle::stored_hash_index(level as u32, n);
                *slot = Some(read(at)?.map(Hash).ok_or(MISSING_EDGE)?);
            }
        }
        let mark = out.len();
        out.reserve(2 + entry.len() + 32 * closes);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
        let mut h = merkle::leaf_hash(entry);
        for level in &self.levels[..closes] {
            let Some(sibling) = level else {
                out.truncate(mark);
                return Err(MISSING_EDGE);
            };
            h = merkle::node_hash(sibling, &h);
            out.extend_from_slice(h.as_bytes());
        }
        self.levels[closes] = Some(h);
        self.size = Some(count + 1);
        Ok(closes)
    }
}

const MISSING_EDGE: StoreError =
    StoreError::Inconsistent("an audit log hash on the tree's right edge is missing");

const BAD_RECORD: StoreError = StoreError::Inconsistent("a stored audit log record is malformed");

fn split_record(record: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    let (len, rest) = record.split_at_checked(2).ok_or(BAD_RECORD)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (entry, hashes) = rest.split_at_checked(len).ok_or(BAD_RECORD)?;
    if hashes.len() % 32 != 0 {
        return Err(BAD_RECORD);
    }
    Ok((entry, hashes))
}

/// The entry in a record.
pub fn record_entry(record: &[u8]) -> Result<Vec<u8>, StoreError> {
    Ok(split_record(record)?.0.to_vec())
}

/// Stored hash number `offset` of a record (0: the entry's leaf hash).
pub fn record_hash(record: &[u8], offset: usize) -> Result<Option<[u8; 32]>, StoreError> {
    let (entry, hashes) = split_record(record)?;
    let Some(node) = offset.checked_sub(1) else {
        return Ok(Some(merkle::leaf_hash(entry).0));
    };
    Ok(node
        .checked_mul(32)
        .and_then(|at| hashes.get(at..at.checked_add(32)?))
        .and_then(|h| <[u8; 32]>::try_from(h).ok()))
}

/// Which entry's record holds stored hash `index`, and at which offset:
/// the hash of the subtree of level `l` and number `n` is computed by the
/// append of entry `(n + 1) * 2^l - 1`, as its `l`-th hash.
pub fn hash_location(index: u64) -> Option<(u64, usize)> {
    let (level, n) = merkle::split_stored_hash_index(index)?;
    let entry = n.checked_add(1)?.checked_shl(level)?.checked_sub(1)?;
    Some((entry, usize::try_from(level).ok()?))
}

/// Keeps the first store error a [`LogStorage`] call met, so that it comes
/// back typed rather than as the log's text.
#[derive(Debug, Default)]
struct Failure(RefCell<Option<StoreError>>);

impl Failure {
    fn keep<T>(&self, r: Result<T, StoreError>) -> Result<T, StorageError> {
        r.map_err(|e| {
            let text = e.to_string();
            self.0.borrow_mut().get_or_insert(e);
            StorageError(text)
        })
    }
}

/// The audit log's storage in a read snapshot (appends are refused).
#[derive(Debug)]
pub struct ReadAudit<'a, S> {
    store: &'a S,
    failure: Failure,
}

impl<S: StoreRead> LogStorage for ReadAudit<'_, S> {
    fn entry_count(&self) -> Result<u64, StorageError> {
        self.failure.keep(self.store.audit_entry_count())
    }

    fn hash_count(&self) -> Result<u64, StorageError> {
        self.failure.keep(self.store.audit_hash_count())
    }

    fn read_hash(&self, index: u64) -> Result<Option<Hash>, StorageError> {
        Ok(self.failure.keep(self.store.audit_hash(index))?.map(Hash))
    }

    fn read_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.failure.keep(self.store.audit_entry(index))
    }

    fn append(&mut self, index: u64, _: &[u8], _: u64, _: &[Hash]) -> Result<(), StorageError> {
        Err(StorageError(format!(
            "entry {index} appended to a read snapshot of the audit log"
        )))
    }
}

/// Appends `entry` to the audit log in `store`'s open transaction and
/// returns its index.
pub fn append(store: &mut impl StoreWrite, entry: &[u8]) -> Result<u64, StoreError> {
    store.append_audit_entry(entry)
}

/// The audit log as it stands in `store` (a read snapshot or a
/// transaction), for roots, proofs, checkpoints and tiles.
pub fn read<S: StoreRead>(store: &S) -> Result<Log<ReadAudit<'_, S>>, StoreError> {
    Log::open(ReadAudit {
        store,
        failure: Failure::default(),
    })
    .map_err(|e| StoreError::AuditLog(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_store::MemStore;
    use grompi_tlog::{MemoryStorage, merkle};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    proptest! {
        /// The log kept in the order server's store has the same roots and
        /// proofs as the crate's reference in-memory storage, whatever the
        /// batching into transactions, and aborted transactions leave no
        /// trace.
        #[test]
        fn the_store_keeps_the_same_log_as_memory(batches in proptest::collection::vec((proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20), any::<bool>()), 1..12)) {
            let mut store = MemStore::new();
            let mut reference = Log::open(MemoryStorage::new()).unwrap();
            for (entries, commit) in &batches {
                let mut txn = store.begin();
                for e in entries {
                    let at = append(&mut txn, e).unwrap();
                    prop_assert_eq!(at, read(&txn).unwrap().size() - 1);
                }
                if *commit {
                    txn.commit();
                    for e in entries {
                        reference.append(e).unwrap();
                    }
                }
            }
            let log = read(&store).unwrap();
            prop_assert_eq!(log.size(), reference.size());
            prop_assert_eq!(log.root().unwrap(), reference.root().unwrap());
            let size = log.size();
            for i in 0..size {
                prop_assert_eq!(log.entry(i).unwrap(), reference.entry(i).unwrap());
                let proof = log.inclusion_proof(i, size).unwrap();
                merkle::verify_inclusion(&merkle::leaf_hash(&log.entry(i).unwrap()), i, size, &proof, &log.root().unwrap()).unwrap();
            }
            if size > 1 {
                let c = log.consistency_proof(size / 2, size).unwrap();
                merkle::verify_consistency(size / 2, size, &log.tree_hash(size / 2).unwrap(), &log.root().unwrap(), &c).unwrap();
            }
        }
    }

    #[test]
    fn every_stored_hash_is_found_in_the_record_that_computed_it() {
        for size in 1..300u64 {
            let last = size - 1;
            let first = merkle::stored_hash_index(0, last);
            let closes = (last + 1).trailing_zeros() as usize;
            for offset in 0..=closes {
                assert_eq!(
                    hash_location(first + offset as u64),
                    Some((last, offset)),
                    "entry {last}"
                );
            }
        }
        let leaf = merkle::leaf_hash(b"abc");
        let r = encode_record(b"abc", &[leaf, Hash([2; 32])]).unwrap();
        assert_eq!(r.len(), 2 + 3 + 32, "the leaf hash is not stored");
        assert_eq!(record_entry(&r).unwrap(), b"abc");
        assert_eq!(record_hash(&r, 0).unwrap(), Some(leaf.0));
        assert_eq!(record_hash(&r, 1).unwrap(), Some([2; 32]));
        assert_eq!(record_hash(&r, 2).unwrap(), None);
        assert!(record_entry(&r[..4]).is_err());
        assert!(record_hash(&r[..r.len() - 1], 1).is_err());
    }

    #[test]
    fn appends_out_of_order_and_long_entries_are_refused() {
        let mut store = MemStore::new();
        let mut txn = store.begin();
        assert_eq!(append(&mut txn, b"a").unwrap(), 0);
        let err = append(&mut txn, &vec![0; 70_000]).unwrap_err();
        assert!(matches!(err, StoreError::AuditLog(_)), "{err}");
        assert!(err.to_string().contains("65535"), "{err}");
        // The refused entry left no trace: the next one is entry 1.
        assert_eq!(append(&mut txn, b"b").unwrap(), 1);
        // A snapshot refuses appends.
        let mut log = read(&txn).unwrap();
        assert!(log.append(b"c").is_err());
        // A frontier continues only the log it was appended to.
        let mut f = Frontier::new();
        let mut out = Vec::new();
        f.append(0, b"a", &mut out, |_| Ok(None)).unwrap();
        let err = f.append(5, b"b", &mut out, |_| Ok(None)).unwrap_err();
        assert!(err.to_string().contains("log of 1 entries"), "{err}");
        let err = Frontier::new()
            .append(MAX_TREE_SIZE, b"a", &mut out, |_| Ok(None))
            .unwrap_err();
        assert!(err.to_string().contains("at most 2^48 entries"), "{err}");
    }

    /// The reference log of `n` entries `i.to_be_bytes()`.
    fn reference_log(n: u64) -> Log<MemoryStorage> {
        let mut log = Log::open(MemoryStorage::new()).unwrap();
        for i in 0..n {
            log.append(&i.to_be_bytes()).unwrap();
        }
        log
    }

    #[test]
    fn a_failed_read_leaves_the_frontier_and_the_row_unchanged() {
        // Entry 7 closes three subtrees: it needs leaf 6, (4..6) and (0..4).
        let mut reference = reference_log(7);
        let stored = |at| Ok(reference.storage().read_hash(at).unwrap().map(|h| h.0));
        let mut f = Frontier::new();
        let mut out = b"row".to_vec();
        let err = f
            .append(7, &7u64.to_be_bytes(), &mut out, |at| {
                if at == merkle::stored_hash_index(2, 0) {
                    Err(StoreError::Backend("disk on fire".into()))
                } else {
                    stored(at)
                }
            })
            .unwrap_err();
        assert_eq!(err, StoreError::Backend("disk on fire".into()));
        assert_eq!(out, b"row");
        // A missing hash is an inconsistency, not a default.
        let err = Frontier::new()
            .append(7, &7u64.to_be_bytes(), &mut out, |_| Ok(None))
            .unwrap_err();
        assert!(matches!(err, StoreError::Inconsistent(_)), "{err}");
        assert_eq!(out, b"row");
        // The same frontier then appends as if nothing had failed.
        assert_eq!(
            f.append(7, &7u64.to_be_bytes(), &mut out, stored).unwrap(),
            3
        );
        reference.append(&7u64.to_be_bytes()).unwrap();
        let mut expected = b"row".to_vec();
        let hashes: Vec<Hash> = (merkle::stored_hash_index(0, 7)..merkle::stored_hash_count(8))
            .map(|i| reference.storage().read_hash(i).unwrap().unwrap())
            .collect();
        encode_record_into(&mut expected, &7u64.to_be_bytes(), &hashes).unwrap();
        assert_eq!(out, expected);
    }

    proptest! {
        /// A frontier started at any size over any number of appends
        /// writes exactly the records (the entry and the node hashes) that
        /// appending the entries one by one to the reference log stores,
        /// reading each earlier hash at most once.
        #[test]
        fn a_frontier_appends_as_the_reference_log_does(start in 0u64..1500, n in 0u64..600) {
            let mut reference = reference_log(start);
            let before = reference.storage().clone();
            let reads = RefCell::new(std::collections::HashSet::new());
            let mut f = Frontier::new();
            let mut out = Vec::new();
            for i in start..start + n {
                let e = i.to_be_bytes();
                f.append(i, &e, &mut out, |at| {
                    if !reads.borrow_mut().insert(at) {
                        return Err(StoreError::Backend(format!("hash {at} read twice")));
                    }
                    Ok(before.read_hash(at).unwrap().map(|h| h.0))
                })
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                reference.append(&e).unwrap();
            }
            let mut expected = Vec::new();
            for i in start..start + n {
                let first = merkle::stored_hash_index(0, i);
                let hashes: Vec<Hash> = (first..=first + u64::from((i + 1).trailing_zeros()))
                    .map(|h| reference.storage().read_hash(h).unwrap().unwrap())
                    .collect();
                encode_record_into(&mut expected, &i.to_be_bytes(), &hashes).unwrap();
            }
            prop_assert_eq!(out, expected);
            prop_assert!(reads.borrow().len() as u32 <= 64);
        }
    }
}
