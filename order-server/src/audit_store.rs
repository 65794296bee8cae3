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

use crate::store::{StoreError, StoreRead, StoreWrite};
use grompi_tlog::error::{LogError, StorageError};
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
    let len = u16::try_from(entry.len())
        .map_err(|_| StoreError::AuditLog(format!("an entry of {} bytes", entry.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(entry);
    for h in hashes.get(1..).unwrap_or_default() {
        out.extend_from_slice(h.as_bytes());
    }
    Ok(())
}

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

/// Checks that an append continues the log: entry `index` is the next,
/// its hashes start at the hash count, and they are as many as its append
/// computes.
pub fn check_append(
    index: u64,
    count: u64,
    first_hash_index: u64,
    hashes: usize,
) -> Result<(), StoreError> {
    let expected = 1 + (index.saturating_add(1)).trailing_zeros() as usize;
    if index != count || first_hash_index != merkle::stored_hash_count(count) || hashes != expected
    {
        return Err(StoreError::AuditLog(format!(
            "entry {index} with {hashes} hashes from hash {first_hash_index} appended out of \
             order (the log holds {count} entries)"
        )));
    }
    Ok(())
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

    /// The store's own error if one caused `e`, else the log's refusal.
    fn into_error(self, e: LogError) -> StoreError {
        self.0
            .into_inner()
            .unwrap_or_else(|| StoreError::AuditLog(e.to_string()))
    }
}

/// The audit log's storage inside a write transaction.
#[derive(Debug)]
pub struct WriteAudit<'a, S> {
    store: &'a mut S,
    failure: Failure,
}

/// The audit log's storage in a read snapshot (appends are refused).
#[derive(Debug)]
pub struct ReadAudit<'a, S> {
    store: &'a S,
    failure: Failure,
}

macro_rules! reads {
    () => {
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
    };
}

impl<S: StoreWrite> LogStorage for WriteAudit<'_, S> {
    reads!();

    fn append(
        &mut self,
        index: u64,
        entry: &[u8],
        first_hash_index: u64,
        hashes: &[Hash],
    ) -> Result<(), StorageError> {
        let r = self
            .store
            .append_audit(index, entry, first_hash_index, hashes);
        self.failure.keep(r)
    }
}

impl<S: StoreRead> LogStorage for ReadAudit<'_, S> {
    reads!();

    fn append(&mut self, index: u64, _: &[u8], _: u64, _: &[Hash]) -> Result<(), StorageError> {
        Err(StorageError(format!(
            "entry {index} appended to a read snapshot of the audit log"
        )))
    }
}

/// Appends `entry` to the audit log in `store`'s open transaction and
/// returns its index.
pub fn append(store: &mut impl StoreWrite, entry: &[u8]) -> Result<u64, StoreError> {
    let mut log = Log::open(WriteAudit {
        store,
        failure: Failure::default(),
    })
    .map_err(|e| StoreError::AuditLog(e.to_string()))?;
    match log.append(entry) {
        Ok(index) => Ok(index),
        Err(e) => Err(log.into_storage().failure.into_error(e)),
    }
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
        let err = txn.append_audit(5, b"b", 1, &[]).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
        let err = append(&mut txn, &vec![0; 70_000]).unwrap_err();
        assert!(matches!(err, StoreError::AuditLog(_)), "{err}");
        assert!(err.to_string().contains("65535"), "{err}");
        // A snapshot refuses appends.
        let mut log = read(&txn).unwrap();
        assert!(log.append(b"c").is_err());
    }
}
