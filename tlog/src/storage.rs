//! Where a [`crate::log::Log`] keeps its entries and stored hashes: a trait
//! the caller implements over its own database, and an in-memory
//! implementation for tests and small tools.

use crate::error::StorageError;
use crate::merkle::Hash;

/// Storage for an append-only log's entries and stored hashes.
///
/// Entries are numbered from 0; stored hashes by
/// [`crate::merkle::stored_hash_index`]. Both only ever grow at their end,
/// and one [`LogStorage::append`] adds one entry and its hashes together:
/// an implementation must make that all-or-nothing (one database
/// transaction), or a crash between the two leaves the log unopenable
/// ([`crate::error::LogError::Inconsistent`]) rather than silently wrong.
pub trait LogStorage {
    /// How many entries are stored.
    fn entry_count(&self) -> Result<u64, StorageError>;

    /// How many hashes are stored.
    fn hash_count(&self) -> Result<u64, StorageError>;

    /// The stored hash at `index`, if stored.
    fn read_hash(&self, index: u64) -> Result<Option<Hash>, StorageError>;

    /// The entry at `index`, if stored.
    fn read_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError>;

    /// Appends entry number `index` (equal to the entry count) and its
    /// stored hashes, the first of which has stored-hash index
    /// `first_hash_index` (equal to the hash count), all or nothing.
    fn append(
        &mut self,
        index: u64,
        entry: &[u8],
        first_hash_index: u64,
        hashes: &[Hash],
    ) -> Result<(), StorageError>;
}

/// A [`LogStorage`] in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStorage {
    entries: Vec<Vec<u8>>,
    hashes: Vec<Hash>,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overwrites stored hash `index`, to test that tampering is caught.
    /// Returns whether the hash existed.
    pub fn overwrite_hash(&mut self, index: u64, hash: Hash) -> bool {
        match usize::try_from(index)
            .ok()
            .and_then(|i| self.hashes.get_mut(i))
        {
            Some(slot) => {
                *slot = hash;
                true
            }
            None => false,
        }
    }
}

fn position(index: u64) -> Result<usize, StorageError> {
    usize::try_from(index).map_err(|_| StorageError(format!("index {index} is beyond memory")))
}

impl LogStorage for MemoryStorage {
    fn entry_count(&self) -> Result<u64, StorageError> {
        Ok(self.entries.len() as u64)
    }

    fn hash_count(&self) -> Result<u64, StorageError> {
        Ok(self.hashes.len() as u64)
    }

    fn read_hash(&self, index: u64) -> Result<Option<Hash>, StorageError> {
        Ok(self.hashes.get(position(index)?).copied())
    }

    fn read_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.entries.get(position(index)?).cloned())
    }

    fn append(
        &mut self,
        index: u64,
        entry: &[u8],
        first_hash_index: u64,
        hashes: &[Hash],
    ) -> Result<(), StorageError> {
        if position(index)? != self.entries.len() {
            return Err(StorageError(format!(
                "entry {index} appended after {} entries",
                self.entries.len()
            )));
        }
        if position(first_hash_index)? != self.hashes.len() {
            return Err(StorageError(format!(
                "hash {first_hash_index} appended after {} hashes",
                self.hashes.len()
            )));
        }
        self.entries.push(entry.to_vec());
        self.hashes.extend_from_slice(hashes);
        Ok(())
    }
}
