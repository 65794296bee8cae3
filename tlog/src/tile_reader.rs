//! The client side of tlog-tiles: reading stored hashes out of fetched hash
//! tiles, to compute roots and proofs without the log's storage.
//!
//! [`TileHashReader`] is a [`HashReader`] over the tiles of a tree of a
//! given size, fetched by a caller-provided function (from a cache, a file
//! tree, or an HTTP client outside this crate). It does **not** trust the
//! tiles: it only checks their length. Whatever is computed from it is
//! authenticated by checking the result against a signed checkpoint's
//! root: compute the proof from the tiles, then verify it with
//! [`crate::merkle::verify_inclusion`] or
//! [`crate::merkle::verify_consistency`] against the checkpoint (or compare
//! [`crate::merkle::tree_hash`] with its root). Any hash of a tile that a
//! proof depends on is then as good as the signature: a changed hash gives
//! a proof that does not verify.
//!
//! (Go's `sumdb/tlog.TileHashReader` instead authenticates tiles as it
//! reads them, and its loop that checks full tiles against their parents
//! skips some tiles when several subtrees of the tree hash share a tile;
//! checking the final proof against the root has no such gap.)

use crate::error::{MerkleError, StorageError};
use crate::merkle::{HASH_SIZE, Hash, HashReader, node_hash, split_stored_hash_index};
use crate::tiles::{FULL_WIDTH, TILE_HEIGHT, Tile};

/// Reads stored hashes out of the hash tiles of a tree of `size` leaves.
///
/// `fetch` returns the contents of a tile, which is always the tile as it
/// stands at `size` (full, or partial with the width the tree gives it).
/// Hashes of any tree up to `size` can be read, since the tiles of `size`
/// hold every complete subtree of the smaller trees.
pub struct TileHashReader<F> {
    size: u64,
    fetch: F,
}

impl<F> std::fmt::Debug for TileHashReader<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TileHashReader(size {})", self.size)
    }
}

impl<F> TileHashReader<F>
where
    F: Fn(&Tile) -> Result<Vec<u8>, StorageError>,
{
    /// A reader over the tiles of a tree of `size` leaves.
    pub fn new(size: u64, fetch: F) -> Self {
        Self { size, fetch }
    }

    /// The tree size the tiles are read at.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The Merkle hash of a power-of-two run of consecutive tile hashes.
fn fold(hashes: &[u8]) -> Hash {
    let mut level: Vec<Hash> = hashes
        .chunks_exact(HASH_SIZE)
        .filter_map(|c| Hash::from_slice(c).ok())
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| match p {
                [l, r] => node_hash(l, r),
                [one] => *one,
                _ => Hash::default(),
            })
            .collect();
    }
    level.first().copied().unwrap_or_default()
}

impl<F> HashReader for TileHashReader<F>
where
    F: Fn(&Tile) -> Result<Vec<u8>, StorageError>,
{
    fn read_hash(&self, index: u64) -> Result<Hash, MerkleError> {
        let (level, n) =
            split_stored_hash_index(index).ok_or(MerkleError::MissingHash { index })?;
        // The hash covers leaves [n·2^level, (n+1)·2^level): it must be a
        // complete subtree of the tree the tiles are of.
        if level >= 64 || n >= self.size >> level {
            return Err(MerkleError::MissingHash { index });
        }
        // It is the fold of 2^r hashes of the tile level below it.
        let tile_level = level / TILE_HEIGHT;
        let r = level % TILE_HEIGHT;
        let first = n << r;
        let count = 1u64 << r;
        let full = u64::from(FULL_WIDTH);
        let level_u8 = u8::try_from(tile_level).map_err(|_| MerkleError::MissingHash { index })?;
        let tile = Tile::at_size(level_u8, first / full, self.size)
            .map_err(|e| MerkleError::Storage(StorageError(e.to_string())))?
            .ok_or(MerkleError::MissingHash { index })?;
        let offset = first % full;
        if offset + count > u64::from(tile.width()) {
            return Err(MerkleError::MissingHash { index });
        }
        let data = (self.fetch)(&tile)?;
        let expected = usize::from(tile.width()) * HASH_SIZE;
        if data.len() != expected {
            return Err(MerkleError::Storage(StorageError(format!(
                "tile {} has {} bytes, expected {expected}",
                tile.path(),
                data.len()
            ))));
        }
        // offset + count <= 256, so these fit.
        let start = offset as usize * HASH_SIZE;
        let stop = (offset + count) as usize * HASH_SIZE;
        Ok(fold(&data[start..stop]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Log;
    use crate::merkle;
    use crate::storage::MemoryStorage;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn published(size: u64) -> (Log<MemoryStorage>, HashMap<String, Vec<u8>>) {
        let mut log = Log::open(MemoryStorage::new()).unwrap();
        for i in 0..size {
            log.append(&i.to_be_bytes()).unwrap();
        }
        let files = log.publish(0).unwrap().into_iter().collect();
        (log, files)
    }

    fn reader(
        size: u64,
        files: &HashMap<String, Vec<u8>>,
    ) -> TileHashReader<impl Fn(&Tile) -> Result<Vec<u8>, StorageError> + '_> {
        TileHashReader::new(size, move |t: &Tile| {
            files
                .get(&t.path())
                .cloned()
                .ok_or_else(|| StorageError(format!("no {}", t.path())))
        })
    }

    #[test]
    fn roots_and_proofs_from_tiles_match_the_log() {
        for size in [1u64, 2, 255, 256, 257, 511, 65_537, 70_000] {
            let (log, files) = published(size);
            let r = reader(size, &files);
            let root = log.root().unwrap();
            assert_eq!(merkle::tree_hash(size, &r).unwrap(), root, "size {size}");
            for index in [0, size / 2, size - 1] {
                let proof = merkle::inclusion_proof(index, size, &r).unwrap();
                assert_eq!(proof, log.inclusion_proof(index, size).unwrap());
                let leaf = merkle::leaf_hash(&index.to_be_bytes());
                merkle::verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
            }
            for old in [1, size / 3, size - 1] {
                if old == 0 {
                    continue;
                }
                assert_eq!(
                    merkle::tree_hash(old, &r).unwrap(),
                    log.tree_hash(old).unwrap()
                );
                assert_eq!(
                    merkle::consistency_proof(old, size, &r).unwrap(),
                    log.consistency_proof(old, size).unwrap()
                );
            }
        }
    }

    #[test]
    fn a_changed_tile_hash_fails_the_final_check() {
        // The case x/mod misses: a tree whose tree-hash subtrees share
        // tiles, and a changed leaf hash in the first level-0 tile.
        let size = 70_000;
        let (log, mut files) = published(size);
        let root = log.root().unwrap();
        files.get_mut("tile/0/000").unwrap()[5 * 32] ^= 1;
        let r = reader(size, &files);
        let leaf = merkle::leaf_hash(&4u64.to_be_bytes());
        // Entry 4's proof uses entry 5's leaf hash.
        let proof = merkle::inclusion_proof(4, size, &r).unwrap();
        assert!(merkle::verify_inclusion(&leaf, 4, size, &proof, &root).is_err());
        // A changed level-1 hash fails an entry's proof in another subtree.
        let (_, mut files) = published(size);
        files.get_mut("tile/1/000").unwrap()[0] ^= 1;
        let r = reader(size, &files);
        let leaf = merkle::leaf_hash(&300u64.to_be_bytes());
        let proof = merkle::inclusion_proof(300, size, &r).unwrap();
        assert!(merkle::verify_inclusion(&leaf, 300, size, &proof, &root).is_err());
    }

    #[test]
    fn refuses_hashes_beyond_the_tiles_and_short_tiles() {
        let (_, mut files) = published(300);
        {
            let r = reader(300, &files);
            assert!(matches!(
                merkle::tree_hash(301, &r),
                Err(MerkleError::MissingHash { .. })
            ));
        }
        files.get_mut("tile/0/001.p/44").unwrap().pop();
        let r = reader(300, &files);
        assert!(matches!(
            merkle::tree_hash(300, &r),
            Err(MerkleError::Storage(_))
        ));
    }

    proptest! {
        #[test]
        fn proofs_from_tiles_equal_proofs_from_storage(size in 1u64..1500, pick in any::<prop::sample::Index>()) {
            let (log, files) = published(size);
            let r = reader(size, &files);
            let index = pick.index(size as usize) as u64;
            prop_assert_eq!(merkle::tree_hash(size, &r).unwrap(), log.root().unwrap());
            prop_assert_eq!(
                merkle::inclusion_proof(index, size, &r).unwrap(),
                log.inclusion_proof(index, size).unwrap()
            );
            if index > 0 {
                prop_assert_eq!(
                    merkle::consistency_proof(index, size, &r).unwrap(),
                    log.consistency_proof(index, size).unwrap()
                );
            }
        }
    }
}
