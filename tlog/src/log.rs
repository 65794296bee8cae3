//! The append-only log an order server keeps: entries in, indices, roots,
//! proofs, tiles and entry bundles out.
//!
//! [`Log`] owns a [`LogStorage`] and keeps the stored hashes up to date as
//! entries are appended (each append stores the leaf hash and the hash of
//! every subtree it completes, so appending costs `O(1)` amortised hashes
//! and reads). Roots, proofs and tiles for any size up to the current one
//! are computed from storage on demand. Nothing here reads a clock or
//! touches a file: the caller persists through its storage and publishes
//! the `(path, bytes)` pairs [`Log::publish`] returns.

use crate::checkpoint::Checkpoint;
use crate::error::{LogError, MerkleError, TileError};
use crate::merkle::{self, Hash, HashReader, MAX_TREE_SIZE};
use crate::storage::LogStorage;
use crate::tiles::{self, Bundle, Tile};

/// An append-only RFC 6962 log over a caller-provided storage.
#[derive(Debug)]
pub struct Log<S> {
    storage: S,
    size: u64,
}

/// Reads stored hashes of a tree of `size` leaves from storage; hashes
/// stored for later leaves are out of reach.
struct Reader<'a, S> {
    storage: &'a S,
    hash_count: u64,
}

impl<S: LogStorage> HashReader for Reader<'_, S> {
    fn read_hash(&self, index: u64) -> Result<Hash, MerkleError> {
        if index >= self.hash_count {
            return Err(MerkleError::MissingHash { index });
        }
        self.storage
            .read_hash(index)?
            .ok_or(MerkleError::MissingHash { index })
    }
}

impl<S: LogStorage> Log<S> {
    /// Opens the log kept in `storage` (empty or not). The storage must
    /// hold exactly the hashes its entries call for.
    pub fn open(storage: S) -> Result<Self, LogError> {
        let size = storage.entry_count()?;
        if size > MAX_TREE_SIZE {
            return Err(LogError::Inconsistent(format!(
                "{size} entries is beyond the log's limit"
            )));
        }
        let hashes = storage.hash_count()?;
        let expected = merkle::stored_hash_count(size);
        if hashes != expected {
            return Err(LogError::Inconsistent(format!(
                "{size} entries call for {expected} stored hashes, storage holds {hashes}"
            )));
        }
        Ok(Self { storage, size })
    }

    /// The number of entries, which is also the index the next one gets.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The caller's storage the log reads and writes its hashes through.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Gives the storage back.
    pub fn into_storage(self) -> S {
        self.storage
    }

    fn reader(&self) -> Reader<'_, S> {
        Reader {
            storage: &self.storage,
            hash_count: merkle::stored_hash_count(self.size),
        }
    }

    fn check_size(&self, size: u64) -> Result<(), LogError> {
        if size > self.size {
            return Err(LogError::BeyondSize {
                size,
                log_size: self.size,
            });
        }
        Ok(())
    }

    /// Appends `entry` and returns its index.
    pub fn append(&mut self, entry: &[u8]) -> Result<u64, LogError> {
        if entry.len() > usize::from(u16::MAX) {
            return Err(LogError::EntryTooLong { len: entry.len() });
        }
        let index = self.size;
        if index >= MAX_TREE_SIZE {
            return Err(LogError::Full);
        }
        let hashes =
            merkle::stored_hashes_for_leaf(index, merkle::leaf_hash(entry), &self.reader())?;
        let first = merkle::stored_hash_index(0, index);
        self.storage.append(index, entry, first, &hashes)?;
        self.size += 1;
        Ok(index)
    }

    /// The entry at `index`.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, LogError> {
        if index >= self.size {
            return Err(MerkleError::IndexOutOfRange {
                index,
                size: self.size,
            }
            .into());
        }
        self.storage
            .read_entry(index)?
            .ok_or_else(|| LogError::Inconsistent(format!("entry {index} is missing")))
    }

    /// The root hash at the current size.
    pub fn root(&self) -> Result<Hash, LogError> {
        self.tree_hash(self.size)
    }

    /// The root hash of the tree of the first `size` entries.
    pub fn tree_hash(&self, size: u64) -> Result<Hash, LogError> {
        self.check_size(size)?;
        Ok(merkle::tree_hash(size, &self.reader())?)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        self.check_size(size)?;
        Ok(merkle::inclusion_proof(index, size, &self.reader())?)
    }

    /// The consistency proof from the tree of `old_size` entries to that of
    /// `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, LogError> {
        self.check_size(new_size)?;
        Ok(merkle::consistency_proof(
            old_size,
            new_size,
            &self.reader(),
        )?)
    }

    /// The unsigned checkpoint of the current tree, for `origin`.
    pub fn checkpoint(&self, origin: &str) -> Result<Checkpoint, LogError> {
        let root = self.root()?;
        Ok(Checkpoint::new(origin, self.size, root, Vec::new())?)
    }

    /// The contents of a hash tile, which must lie within the current tree
    /// (a partial tile no wider than the tree's).
    pub fn tile(&self, tile: Tile) -> Result<Vec<u8>, LogError> {
        let within = Tile::at_size(tile.level(), tile.index(), self.size)?;
        if within.is_none_or(|t| t.width() < tile.width()) {
            return Err(TileError::BeyondTree {
                path: tile.path(),
                size: self.size,
            }
            .into());
        }
        Ok(tile.data(&self.reader())?)
    }

    /// The contents of an entry bundle, which must lie within the current
    /// tree.
    pub fn bundle(&self, bundle: Bundle) -> Result<Vec<u8>, LogError> {
        let first = bundle.first_entry();
        let end = first.saturating_add(u64::from(bundle.width()));
        if end > self.size {
            return Err(TileError::BeyondTree {
                path: bundle.path(),
                size: self.size,
            }
            .into());
        }
        let mut entries = Vec::with_capacity(usize::from(bundle.width()));
        for index in first..end {
            entries.push(self.entry(index)?);
        }
        Ok(tiles::encode_bundle(&entries)?)
    }

    /// Every hash tile and entry bundle that is new or wider at the current
    /// size than at `old_size`, as `(path, contents)`: what to publish
    /// alongside the checkpoint of the current size.
    pub fn publish(&self, old_size: u64) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        self.check_size(old_size)?;
        let mut out = Vec::new();
        for tile in tiles::tiles_for_size(old_size, self.size) {
            out.push((tile.path(), self.tile(tile)?));
        }
        for bundle in tiles::bundles_for_size(old_size, self.size) {
            out.push((bundle.path(), self.bundle(bundle)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    #[test]
    fn append_returns_indices_and_roots_match_merkle() {
        let mut log = Log::open(MemoryStorage::new()).unwrap();
        assert_eq!(log.root().unwrap(), merkle::empty_root());
        let mut leaves = Vec::new();
        for i in 0..600u32 {
            let e = i.to_be_bytes();
            assert_eq!(log.append(&e).unwrap(), u64::from(i));
            leaves.push(merkle::leaf_hash(&e));
        }
        // Proofs at an older size verify against that size's root.
        let root300 = log.tree_hash(300).unwrap();
        let p = log.inclusion_proof(299, 300).unwrap();
        merkle::verify_inclusion(&leaves[299], 299, 300, &p, &root300).unwrap();
        let c = log.consistency_proof(300, 600).unwrap();
        merkle::verify_consistency(300, 600, &root300, &log.root().unwrap(), &c).unwrap();
        assert!(log.tree_hash(601).is_err());
    }

    #[test]
    fn reopening_storage_continues_the_log() {
        let mut log = Log::open(MemoryStorage::new()).unwrap();
        for i in 0..10u8 {
            log.append(&[i]).unwrap();
        }
        let root = log.root().unwrap();
        let mut log = Log::open(log.into_storage()).unwrap();
        assert_eq!(log.size(), 10);
        assert_eq!(log.root().unwrap(), root);
        assert_eq!(log.append(b"next").unwrap(), 10);
    }

    #[test]
    fn refuses_long_entries_and_tiles_beyond_the_tree() {
        let mut log = Log::open(MemoryStorage::new()).unwrap();
        assert!(matches!(
            log.append(&vec![0; 65_536]),
            Err(LogError::EntryTooLong { len: 65_536 })
        ));
        log.append(&[0; 65_535]).unwrap();
        assert!(log.tile(Tile::new(0, 0, 2).unwrap()).is_err());
        assert!(log.tile(Tile::new(1, 0, 1).unwrap()).is_err());
        assert_eq!(log.tile(Tile::new(0, 0, 1).unwrap()).unwrap().len(), 32);
        assert!(log.bundle(Bundle::new(0, 2).unwrap()).is_err());
    }

    #[test]
    fn tiles_hash_to_the_level_above() {
        let mut log = Log::open(MemoryStorage::new()).unwrap();
        for i in 0..(256u32 * 3 + 5) {
            log.append(&i.to_le_bytes()).unwrap();
        }
        let level1 = log.tile(Tile::new(1, 0, 3).unwrap()).unwrap();
        for n in 0..3u64 {
            let t0 = log.tile(Tile::new(0, n, 256).unwrap()).unwrap();
            let hashes: Vec<Hash> = t0
                .chunks(32)
                .map(|c| Hash::from_slice(c).unwrap())
                .collect();
            let mut level = hashes;
            while level.len() > 1 {
                level = level
                    .chunks(2)
                    .map(|p| merkle::node_hash(&p[0], &p[1]))
                    .collect();
            }
            let at = n as usize * 32;
            assert_eq!(level[0].as_bytes()[..], level1[at..at + 32]);
        }
        let published = log.publish(0).unwrap();
        let paths: Vec<&str> = published.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "tile/0/000",
                "tile/0/001",
                "tile/0/002",
                "tile/0/003.p/5",
                "tile/1/000.p/3",
                "tile/entries/000",
                "tile/entries/001",
                "tile/entries/002",
                "tile/entries/003.p/5",
            ]
        );
    }

    #[test]
    fn a_changed_stored_hash_breaks_the_proofs() {
        let mut log = Log::open(MemoryStorage::new()).unwrap();
        for i in 0..20u8 {
            log.append(&[i]).unwrap();
        }
        let root = log.root().unwrap();
        let leaf = merkle::leaf_hash(&[3]);
        let proof = log.inclusion_proof(3, 20).unwrap();
        merkle::verify_inclusion(&leaf, 3, 20, &proof, &root).unwrap();
        let mut storage = log.into_storage();
        // Leaf 2's hash is the sibling in entry 3's proof.
        assert!(storage.overwrite_hash(merkle::stored_hash_index(0, 2), Hash([0; 32])));
        let log = Log::open(storage).unwrap();
        let tampered = log.inclusion_proof(3, 20).unwrap();
        assert!(merkle::verify_inclusion(&leaf, 3, 20, &tampered, &root).is_err());
        assert_eq!(
            log.tree_hash(21),
            Err(LogError::BeyondSize {
                size: 21,
                log_size: 20
            })
        );
        assert!(matches!(
            log.checkpoint("two\nlines"),
            Err(LogError::Checkpoint(_))
        ));
    }

    #[test]
    fn open_refuses_inconsistent_storage() {
        let mut s = MemoryStorage::new();
        s.append(0, b"x", 0, &[]).unwrap();
        assert!(matches!(Log::open(s), Err(LogError::Inconsistent(_))));
    }
}
