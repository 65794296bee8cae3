//! RFC 6962 Merkle tree math over SHA-256.
//!
//! Leaves hash as `SHA-256(0x00 || entry)`, interior nodes as
//! `SHA-256(0x01 || left || right)`, and the tree of `n` leaves splits at the
//! largest power of two smaller than `n` (RFC 6962 §2.1). The empty tree's
//! hash is `SHA-256("")`.
//!
//! Hashes are *stored* in one flat sequence, numbered as Go's
//! `golang.org/x/mod/sumdb/tlog` numbers them ([`stored_hash_index`]): when
//! leaf `n` is appended, its leaf hash is stored, followed by the hash of
//! every complete subtree that leaf closes. Storage only ever grows at its
//! end, and the hash of every complete subtree `[k·2^l, (k+1)·2^l)` is at a
//! fixed index. Every other hash (the root of a tree whose size is not a power
//! of two, and the proofs) is computed from those on demand through a
//! [`HashReader`].
//!
//! Proofs are RFC 6962's: an inclusion proof is `PATH(m, D[n])` (§2.1.1) and
//! a consistency proof `PROOF(m, D[n])` (§2.1.2), produced by the recursive
//! definitions and checked by the iterative verifiers of RFC 9162 §2.1.3.2 and
//! §2.1.4.2. Sizes are limited to [`MAX_TREE_SIZE`] so that no index
//! arithmetic can overflow.

use sha2::{Digest, Sha256};

use crate::error::MerkleError;

/// The size in bytes of every hash in the tree.
pub const HASH_SIZE: usize = 32;

/// The largest tree size (and so entry index + 1) this crate handles: 2^48
/// entries. Stored-hash indices stay below 2^50, far from overflow.
pub const MAX_TREE_SIZE: u64 = 1 << 48;

/// The most hashes an inclusion or consistency proof can hold for a tree of
/// at most [`MAX_TREE_SIZE`] entries (one per level, plus one).
pub const MAX_PROOF_HASHES: usize = 64;

/// A SHA-256 Merkle tree hash (leaf, node, subtree or root).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; HASH_SIZE]);

impl Hash {
    /// The hash as bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_SIZE] {
        &self.0
    }

    /// Parses a hash from exactly [`HASH_SIZE`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, MerkleError> {
        let array: [u8; HASH_SIZE] = bytes
            .try_into()
            .map_err(|_| MerkleError::HashLength { got: bytes.len() })?;
        Ok(Self(array))
    }

    /// The lowercase hex encoding.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

/// The hash of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// The leaf hash of an entry: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    Hash(h.finalize().into())
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// Reads stored hashes by their [`stored_hash_index`].
pub trait HashReader {
    /// The stored hash at `index`. A hash that is not stored is an error
    /// ([`MerkleError::MissingHash`] or a storage error), never a default.
    fn read_hash(&self, index: u64) -> Result<Hash, MerkleError>;
}

impl<F> HashReader for F
where
    F: Fn(u64) -> Result<Hash, MerkleError>,
{
    fn read_hash(&self, index: u64) -> Result<Hash, MerkleError> {
        self(index)
    }
}

/// The storage index of the hash of the `n`-th complete subtree at `level`
/// (the subtree covering leaves `[n·2^level, (n+1)·2^level)`).
///
/// Level 0 holds leaf hashes. The numbering is Go tlog's `StoredHashIndex`:
/// the hashes appear in the order appending the leaves creates them. The
/// caller keeps `(n+1)·2^level` within [`MAX_TREE_SIZE`]; beyond it the
/// arithmetic saturates (no such hash is ever stored), it does not wrap.
pub fn stored_hash_index(level: u32, n: u64) -> u64 {
    // Level L's n-th hash is stored right after level L+1's (2n+1)-th hash:
    // walk down to the last leaf it covers, then add back the level.
    let mut n = n;
    for _ in 0..level.min(64) {
        n = n.saturating_mul(2).saturating_add(1);
    }
    // Leaf n's hash is stored at n + n/2 + n/4 + ...
    let mut index = 0u64;
    let mut m = n;
    while m > 0 {
        index = index.saturating_add(m);
        m >>= 1;
    }
    index.saturating_add(u64::from(level))
}

/// The inverse of [`stored_hash_index`]: the `(level, n)` stored at `index`,
/// or `None` for an index beyond a tree of [`MAX_TREE_SIZE`] leaves.
pub fn split_stored_hash_index(index: u64) -> Option<(u32, u64)> {
    if index >= stored_hash_count(MAX_TREE_SIZE) {
        return None;
    }
    // stored_hash_index(0, n) <= 2n, so the leaf whose append stored `index`
    // is at or after index/2, and each leaf n adds 1 + trailing_ones(n) hashes.
    let mut n = index / 2;
    let mut index_n = stored_hash_index(0, n);
    loop {
        let next = index_n + 1 + u64::from((n + 1).trailing_zeros());
        if next > index {
            break;
        }
        n += 1;
        index_n = next;
    }
    // The hash is one of (0, n), (1, n/2), (2, n/4), ... appended with leaf n;
    // a leaf appends at most 49 hashes below MAX_TREE_SIZE.
    let level = u32::try_from(index - index_n).ok()?;
    Some((level, n.checked_shr(level)?))
}

/// How many hashes a tree of `size` leaves stores.
pub fn stored_hash_count(size: u64) -> u64 {
    if size == 0 {
        return 0;
    }
    // Hashes up to the last leaf's, then one per subtree that leaf closes.
    stored_hash_index(0, size - 1) + 1 + u64::from((size - 1).trailing_ones())
}

/// The hashes to store when leaf `n` (0-based) with leaf hash `leaf` is
/// appended to a tree of size `n`, in storage order starting at
/// [`stored_hash_index(0, n)`](stored_hash_index): the leaf hash, then one
/// hash per complete subtree the leaf closes.
pub fn stored_hashes_for_leaf(
    n: u64,
    leaf: Hash,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, MerkleError> {
    check_size(n.saturating_add(1))?;
    let closes = (n + 1).trailing_zeros();
    let mut hashes = Vec::with_capacity(1 + closes as usize);
    hashes.push(leaf);
    let mut h = leaf;
    for level in 0..closes {
        // The left sibling at `level` is the complete subtree just before ours.
        let sibling = reader.read_hash(stored_hash_index(level, (n >> level) - 1))?;
        h = node_hash(&sibling, &h);
        hashes.push(h);
    }
    Ok(hashes)
}

fn check_size(size: u64) -> Result<(), MerkleError> {
    if size > MAX_TREE_SIZE {
        return Err(MerkleError::TreeTooLarge { size });
    }
    Ok(())
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The Merkle tree hash of leaves `[lo, hi)`, where `lo` is a multiple of
/// the largest power of two not above `hi - lo` (true of every subtree the
/// RFC 6962 recursion visits, and of `[0, n)`).
///
/// The range is covered greedily by complete subtrees (each one stored
/// hash), and those are folded right to left as the RFC's split does.
pub fn subtree_hash(lo: u64, hi: u64, reader: &impl HashReader) -> Result<Hash, MerkleError> {
    check_size(hi)?;
    if lo >= hi {
        return Err(MerkleError::EmptyRange { lo, hi });
    }
    let mut parts = Vec::new();
    let mut at = lo;
    while at < hi {
        // The largest complete subtree starting at `at` that fits.
        let mut level = if at == 0 { 63 } else { at.trailing_zeros() };
        while level > 0 && (1u64 << level) > hi - at {
            level -= 1;
        }
        parts.push(reader.read_hash(stored_hash_index(level, at >> level))?);
        at += 1u64 << level;
    }
    let mut acc = parts.pop().ok_or(MerkleError::EmptyRange { lo, hi })?;
    while let Some(left) = parts.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// The root hash of the tree of the first `size` leaves.
pub fn tree_hash(size: u64, reader: &impl HashReader) -> Result<Hash, MerkleError> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree_hash(0, size, reader)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves
/// (RFC 6962 `PATH(index, D[size])`), leaf-side first.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, MerkleError> {
    check_size(size)?;
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(index, 0, size, reader, &mut proof)?;
    Ok(proof)
}

/// `PATH(m, D[lo..hi])`, appending to `out` in the RFC's order.
fn path(
    m: u64,
    lo: u64,
    hi: u64,
    reader: &impl HashReader,
    out: &mut Vec<Hash>,
) -> Result<(), MerkleError> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(m, lo, lo + k, reader, out)?;
        out.push(subtree_hash(lo + k, hi, reader)?);
    } else {
        path(m - k, lo + k, hi, reader, out)?;
        out.push(subtree_hash(lo, lo + k, reader)?);
    }
    Ok(())
}

/// The consistency proof between the trees of `old_size` and `new_size`
/// leaves (RFC 6962 `PROOF(old_size, D[new_size])`). It is empty when
/// `old_size` is 0 or equals `new_size`.
pub fn consistency_proof(
    old_size: u64,
    new_size: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, MerkleError> {
    check_size(new_size)?;
    if old_size > new_size {
        return Err(MerkleError::OldSizeAfterNewSize { old_size, new_size });
    }
    let mut proof = Vec::new();
    if old_size == 0 || old_size == new_size {
        return Ok(proof);
    }
    subproof(old_size, 0, new_size, true, reader, &mut proof)?;
    Ok(proof)
}

/// `SUBPROOF(m, D[lo..hi], b)`, appending to `out` in the RFC's order.
fn subproof(
    m: u64,
    lo: u64,
    hi: u64,
    b: bool,
    reader: &impl HashReader,
    out: &mut Vec<Hash>,
) -> Result<(), MerkleError> {
    let n = hi - lo;
    if m == n {
        if !b {
            out.push(subtree_hash(lo, hi, reader)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, lo, lo + k, b, reader, out)?;
        out.push(subtree_hash(lo + k, hi, reader)?);
    } else {
        subproof(m - k, lo + k, hi, false, reader, out)?;
        out.push(subtree_hash(lo, lo + k, reader)?);
    }
    Ok(())
}

/// Checks that `leaf` is the leaf hash at `index` in the tree of `size`
/// leaves whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    check_size(size)?;
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(MerkleError::ProofTooLong);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(MerkleError::ProofTooShort);
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root`
/// (RFC 9162 §2.1.4.2). Equal sizes need an empty proof and equal roots; an
/// empty old tree is a prefix of everything and needs an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    check_size(new_size)?;
    if old_size > new_size {
        return Err(MerkleError::OldSizeAfterNewSize { old_size, new_size });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(MerkleError::ProofTooLong);
        }
        if old_root != new_root {
            return Err(MerkleError::RootMismatch);
        }
        return Ok(());
    }
    if old_size == 0 {
        if !proof.is_empty() {
            return Err(MerkleError::ProofTooLong);
        }
        return Ok(());
    }
    // From here 0 < old_size < new_size.
    let mut hashes = proof.iter();
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    // If old_size is a power of two its root is itself the first hash.
    let first = if old_size.is_power_of_two() {
        *old_root
    } else {
        *hashes.next().ok_or(MerkleError::ProofTooShort)?
    };
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = first;
    let mut sr = first;
    for c in hashes {
        if sn == 0 {
            return Err(MerkleError::ProofTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::ProofTooShort);
    }
    if fr != *old_root || sr != *new_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// RFC 6962 `MTH` by its recursive definition, over leaf hashes.
    fn naive_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
            }
        }
    }

    fn naive_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return vec![];
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = naive_path(m, &leaves[..k]);
            p.push(naive_root(&leaves[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &leaves[k..]);
            p.push(naive_root(&leaves[..k]));
            p
        }
    }

    fn naive_subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b { vec![] } else { vec![naive_root(leaves)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = naive_subproof(m, &leaves[..k], b);
            p.push(naive_root(&leaves[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &leaves[k..], false);
            p.push(naive_root(&leaves[..k]));
            p
        }
    }

    /// A stored-hash table built leaf by leaf as a log does.
    #[derive(Default)]
    struct Table(HashMap<u64, Hash>, u64);

    impl Table {
        fn append(&mut self, entry: &[u8]) {
            let n = self.1;
            let hashes = stored_hashes_for_leaf(n, leaf_hash(entry), &|i| self.get(i)).unwrap();
            let start = stored_hash_index(0, n);
            for (k, h) in hashes.into_iter().enumerate() {
                self.0.insert(start + k as u64, h);
            }
            self.1 += 1;
            assert_eq!(self.0.len() as u64, stored_hash_count(self.1));
        }
        fn get(&self, i: u64) -> Result<Hash, MerkleError> {
            self.0
                .get(&i)
                .copied()
                .ok_or(MerkleError::MissingHash { index: i })
        }
    }

    fn build(entries: &[Vec<u8>]) -> (Table, Vec<Hash>) {
        let mut t = Table::default();
        for e in entries {
            t.append(e);
        }
        (t, entries.iter().map(|e| leaf_hash(e)).collect())
    }

    fn h(s: &str) -> Hash {
        Hash::from_slice(&hex::decode(s).unwrap()).unwrap()
    }

    /// The RFC 6962 reference leaves (as used by the Certificate
    /// Transparency implementations' tests).
    fn reference_entries() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|s| hex::decode(s).unwrap())
        .collect()
    }

    const REFERENCE_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn rfc6962_reference_roots() {
        let (t, _) = build(&reference_entries());
        for (size, want) in REFERENCE_ROOTS.iter().enumerate() {
            let got = tree_hash(size as u64, &|i| t.get(i)).unwrap();
            assert_eq!(got, h(want), "size {size}");
        }
    }

    #[test]
    fn rfc6962_reference_inclusion_proofs() {
        let (t, leaves) = build(&reference_entries());
        let r = |i| t.get(i);
        let root = h(REFERENCE_ROOTS[8]);
        for (index, want) in [
            (
                0u64,
                [
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                [
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ] {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(inclusion_proof(index, 8, &r).unwrap(), want);
            verify_inclusion(&leaves[index as usize], index, 8, &want, &root).unwrap();
        }
    }

    #[test]
    fn rfc6962_reference_consistency_proofs() {
        let (t, _) = build(&reference_entries());
        let r = |i| t.get(i);
        for (old, new, want) in [
            (
                2u64,
                8u64,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ] {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(consistency_proof(old, new, &r).unwrap(), want);
            verify_consistency(
                old,
                new,
                &h(REFERENCE_ROOTS[old as usize]),
                &h(REFERENCE_ROOTS[new as usize]),
                &want,
            )
            .unwrap();
        }
    }

    #[test]
    fn stored_hash_index_round_trips() {
        for level in 0..10u32 {
            for n in 0..300u64 {
                let i = stored_hash_index(level, n);
                assert_eq!(split_stored_hash_index(i), Some((level, n)));
            }
        }
        // Go tlog's layout: leaf 0 at 0, leaf 1 at 1, node (1,0) at 2, ...
        assert_eq!(stored_hash_index(0, 0), 0);
        assert_eq!(stored_hash_index(0, 1), 1);
        assert_eq!(stored_hash_index(1, 0), 2);
        assert_eq!(stored_hash_index(0, 2), 3);
        assert_eq!(stored_hash_index(0, 3), 4);
        assert_eq!(stored_hash_index(1, 1), 5);
        assert_eq!(stored_hash_index(2, 0), 6);
        assert_eq!(stored_hash_count(4), 7);
    }

    #[test]
    fn extreme_indices_neither_wrap_nor_panic() {
        assert_eq!(stored_hash_index(200, u64::MAX), u64::MAX);
        assert_eq!(split_stored_hash_index(u64::MAX), None);
        let last = stored_hash_count(MAX_TREE_SIZE) - 1;
        // The root of the largest tree is the last hash its last leaf stores.
        assert_eq!(split_stored_hash_index(last), Some((48, 0)));
        assert!(matches!(
            stored_hashes_for_leaf(u64::MAX, Hash::default(), &|i| Err(
                MerkleError::MissingHash { index: i }
            )),
            Err(MerkleError::TreeTooLarge { .. })
        ));
    }

    #[test]
    fn refuses_out_of_range() {
        let (t, leaves) = build(&reference_entries());
        let r = |i| t.get(i);
        assert!(matches!(
            inclusion_proof(8, 8, &r),
            Err(MerkleError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            consistency_proof(5, 4, &r),
            Err(MerkleError::OldSizeAfterNewSize { .. })
        ));
        assert!(matches!(
            tree_hash(9, &r),
            Err(MerkleError::MissingHash { .. })
        ));
        assert!(matches!(
            verify_inclusion(&leaves[0], 0, MAX_TREE_SIZE + 1, &[], &leaves[0]),
            Err(MerkleError::TreeTooLarge { .. })
        ));
    }

    fn entries(max: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 1..max)
    }

    proptest! {
        #[test]
        fn tree_hash_matches_naive(es in entries(300)) {
            let (t, leaves) = build(&es);
            for size in 0..=leaves.len() {
                prop_assert_eq!(
                    tree_hash(size as u64, &|i| t.get(i)).unwrap(),
                    naive_root(&leaves[..size])
                );
            }
        }

        #[test]
        fn inclusion_proofs_match_naive_and_verify(es in entries(140), pick in any::<prop::sample::Index>()) {
            let (t, leaves) = build(&es);
            let r = |i| t.get(i);
            for size in 1..=leaves.len() {
                let index = pick.index(size);
                let root = naive_root(&leaves[..size]);
                let proof = inclusion_proof(index as u64, size as u64, &r).unwrap();
                prop_assert_eq!(&proof, &naive_path(index, &leaves[..size]));
                verify_inclusion(&leaves[index], index as u64, size as u64, &proof, &root).unwrap();
                // Any other leaf, index, size or a tampered proof fails.
                let other = leaf_hash(b"not in the tree");
                prop_assert!(verify_inclusion(&other, index as u64, size as u64, &proof, &root).is_err());
                if size > 1 {
                    let wrong = (index + 1) % size;
                    if leaves[wrong] != leaves[index] {
                        prop_assert!(verify_inclusion(&leaves[index], wrong as u64, size as u64, &proof, &root).is_err());
                    }
                    let mut bad = proof.clone();
                    bad[0].0[0] ^= 1;
                    prop_assert!(verify_inclusion(&leaves[index], index as u64, size as u64, &bad, &root).is_err());
                    prop_assert!(verify_inclusion(&leaves[index], index as u64, size as u64, &proof[1..], &root).is_err());
                }
                let mut longer = proof.clone();
                longer.push(other);
                prop_assert!(verify_inclusion(&leaves[index], index as u64, size as u64, &longer, &root).is_err());
            }
        }

        #[test]
        fn consistency_proofs_match_naive_and_verify(es in entries(140)) {
            let (t, leaves) = build(&es);
            let r = |i| t.get(i);
            let n = leaves.len();
            for old in 0..=n {
                let proof = consistency_proof(old as u64, n as u64, &r).unwrap();
                if old > 0 && old < n {
                    prop_assert_eq!(&proof, &naive_subproof(old, &leaves, true));
                } else {
                    prop_assert!(proof.is_empty());
                }
                let old_root = naive_root(&leaves[..old]);
                let new_root = naive_root(&leaves);
                verify_consistency(old as u64, n as u64, &old_root, &new_root, &proof).unwrap();
                if old > 0 && old < n {
                    let mut bad = proof.clone();
                    let last = bad.len() - 1;
                    bad[last].0[31] ^= 1;
                    prop_assert!(verify_consistency(old as u64, n as u64, &old_root, &new_root, &bad).is_err());
                    let other = leaf_hash(b"other");
                    prop_assert!(verify_consistency(old as u64, n as u64, &other, &new_root, &proof).is_err());
                }
            }
        }

        /// A consistency proof from a tree verifies iff the old tree is a
        /// prefix of the new one: the claimed old tree is the new tree's
        /// prefix, with one entry changed or not.
        #[test]
        fn consistency_verifies_iff_prefix(
            b in entries(60),
            old in 1usize..60,
            change in any::<Option<(prop::sample::Index, u8)>>(),
        ) {
            let (tb, lb) = build(&b);
            let n = lb.len();
            let old = old.min(n);
            let mut a: Vec<Vec<u8>> = b[..old].to_vec();
            if let Some((at, byte)) = change {
                a[at.index(old)].push(byte);
            }
            let la: Vec<Hash> = a.iter().map(|e| leaf_hash(e)).collect();
            let proof = consistency_proof(old as u64, n as u64, &|i| tb.get(i)).unwrap();
            let claimed_old = naive_root(&la);
            let is_prefix = la[..] == lb[..old];
            let ok = verify_consistency(old as u64, n as u64, &claimed_old, &naive_root(&lb), &proof).is_ok();
            prop_assert_eq!(ok, is_prefix);
        }
    }
}
