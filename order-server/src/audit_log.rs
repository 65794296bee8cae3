//! The shell's side of the audit log: the log key file, signed checkpoints,
//! proofs, the tiles written out, and verifying a copy of them.
//!
//! The log key is an Ed25519 key that signs the log's checkpoints (C2SP
//! tlog-checkpoint, as signed notes). Its file, `audit-log.key` in the
//! data directory (mode `0600`), holds the C2SP signer key string
//! `PRIVATE+KEY+<origin>+<key id>+<base64>`: the key's name is the log's
//! origin line, so the origin is fixed when the key is made. It is never
//! printed; its verifier key (`<origin>+<key id>+<base64>`) is public.
//!
//! Nothing here reads a clock: checkpoints carry no time (C2SP
//! tlog-checkpoint), and the shell decides when to sign one.

use crate::audit_entry::Entry;
use crate::audit_store;
use crate::store::{StoreError, StoreRead};
use grompi_ops::secret_file::{self, SecretFileError};
use grompi_proto::OrderServerKey;
use grompi_tlog::checkpoint::Checkpoint;
use grompi_tlog::error::{
    CheckpointError, LogError, MerkleError, NoteError, StorageError, TileError,
};
use grompi_tlog::merkle::{self, Hash, HashReader};
use grompi_tlog::note::{Ed25519Signer, Ed25519Verifier, NoteVerifier};
use grompi_tlog::tile_reader::TileHashReader;
use grompi_tlog::tiles::{self, Tile};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// File name of the log key in the data directory.
pub const LOG_KEY_FILE: &str = "audit-log.key";

/// File name of the checkpoint in a directory of tiles.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// Why an audit log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log refused (a size beyond it, an index out of range).
    #[error(transparent)]
    Log(#[from] LogError),
    /// A checkpoint could not be made or opened.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A key string is not a key, or a name is not a key name.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// A proof or tile hash computation failed.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// A tile or bundle is malformed.
    #[error(transparent)]
    Tile(#[from] TileError),
    /// The log key file could not be read or written.
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    /// The log key file exists already.
    #[error("{0} already exists; refusing to replace the audit log key")]
    KeyExists(PathBuf),
    /// The log key file does not hold a signer key.
    #[error("{path}: {reason}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The configured origin is not the key's.
    #[error(
        "audit_origin = {configured:?} but the audit log key signs for {key:?}; the origin is \
         fixed when the key is made: remove audit_origin or set it to the key's"
    )]
    OriginMismatch {
        /// The configured origin.
        configured: String,
        /// The key's name.
        key: String,
    },
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A copy of the log does not match its checkpoint.
    #[error("the copy does not match its checkpoint: {0}")]
    Mismatch(String),
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> AuditError {
    move |source| AuditError::Io { what, source }
}

/// The origin a new log gets unless one is given: derived from the order
/// server's public key, so that two servers' logs never share one.
pub fn default_origin(server: &OrderServerKey) -> String {
    let hex = server.to_hex();
    format!(
        "grompi.invalid/order-server/{}",
        hex.get(..16).unwrap_or(&hex)
    )
}

/// Creates the log key file at `path` for a log with `origin`, from the
/// operating system's random generator, and returns its verifier key.
/// Refuses to replace an existing key.
pub fn create_key(path: &Path, origin: &str) -> Result<Ed25519Verifier, AuditError> {
    if path.exists() {
        return Err(AuditError::KeyExists(path.to_path_buf()));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::fill(&mut seed[..]);
    let signer = Ed25519Signer::from_seed(origin, &seed)?;
    let mut text = signer.skey();
    text.push('\n');
    secret_file::write_secret(path, text.as_bytes())?;
    Ok(signer.verifier())
}

/// Loads the log key from `path`; with `origin`, refuses a key made for
/// another origin.
pub fn load_key(path: &Path, origin: Option<&str>) -> Result<Ed25519Signer, AuditError> {
    let bytes = secret_file::read_secret(path)?;
    let bad = |reason: String| AuditError::BadKey {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not text".into()))?;
    let signer = Ed25519Signer::from_skey(text.trim()).map_err(|e| bad(e.to_string()))?;
    if let Some(o) = origin
        && o != signer.name()
    {
        return Err(AuditError::OriginMismatch {
            configured: o.to_owned(),
            key: signer.name().to_owned(),
        });
    }
    Ok(signer)
}

/// The checkpoint of the log in `store` as it stands, signed with `key`,
/// and its size.
pub fn sign_checkpoint(
    store: &impl StoreRead,
    key: &Ed25519Signer,
) -> Result<(String, u64), AuditError> {
    let log = audit_store::read(store)?;
    let checkpoint = log.checkpoint(key.name())?;
    Ok((checkpoint.sign(key)?, log.size()))
}

fn b64(h: &Hash) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(h.as_bytes())
}

/// An entry, and the proof that it is in the tree of `size` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The entry's index.
    pub index: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// That tree's root.
    pub root: Hash,
    /// The entry.
    pub entry: Vec<u8>,
    /// The proof's hashes, leaf to root.
    pub proof: Vec<Hash>,
}

impl InclusionProof {
    /// Checks the proof against its own root (a verifier checks it against
    /// the root of a signed checkpoint of `size`).
    pub fn verify(&self) -> Result<(), MerkleError> {
        merkle::verify_inclusion(
            &merkle::leaf_hash(&self.entry),
            self.index,
            self.size,
            &self.proof,
            &self.root,
        )
    }
}

impl std::fmt::Display for InclusionProof {
    /// `index`, `size`, `root` (base64), `entry` (hex), what the entry is,
    /// then one proof hash (base64) per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "index {}", self.index)?;
        writeln!(f, "size {}", self.size)?;
        writeln!(f, "root {}", b64(&self.root))?;
        writeln!(f, "entry {}", hex::encode(&self.entry))?;
        match Entry::parse(&self.entry) {
            Ok(e) => writeln!(f, "# {}", e.to_string().replace('\n', "\n# "))?,
            Err(e) => writeln!(f, "# not an entry of this server: {e}")?,
        }
        writeln!(f, "proof")?;
        for h in &self.proof {
            writeln!(f, "{}", b64(h))?;
        }
        Ok(())
    }
}

/// The inclusion proof of entry `index` in the tree of `size` entries
/// (default: the log's size).
pub fn prove_inclusion(
    store: &impl StoreRead,
    index: u64,
    size: Option<u64>,
) -> Result<InclusionProof, AuditError> {
    let log = audit_store::read(store)?;
    let size = size.unwrap_or(log.size());
    Ok(InclusionProof {
        index,
        size,
        root: log.tree_hash(size)?,
        entry: log.entry(index)?,
        proof: log.inclusion_proof(index, size)?,
    })
}

/// A proof that the tree of `from` entries is a prefix of that of `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The older size.
    pub from: u64,
    /// The newer size.
    pub to: u64,
    /// The older tree's root.
    pub from_root: Hash,
    /// The newer tree's root.
    pub to_root: Hash,
    /// The proof's hashes.
    pub proof: Vec<Hash>,
}

impl std::fmt::Display for ConsistencyProof {
    /// `from`, `to`, both roots (base64), then one proof hash per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "from {} root {}", self.from, b64(&self.from_root))?;
        writeln!(f, "to {} root {}", self.to, b64(&self.to_root))?;
        writeln!(f, "proof")?;
        for h in &self.proof {
            writeln!(f, "{}", b64(h))?;
        }
        Ok(())
    }
}

/// The consistency proof from the tree of `from` entries to that of `to`.
pub fn prove_consistency(
    store: &impl StoreRead,
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, AuditError> {
    let log = audit_store::read(store)?;
    let proof = ConsistencyProof {
        from,
        to,
        from_root: log.tree_hash(from)?,
        to_root: log.tree_hash(to)?,
        proof: log.consistency_proof(from, to)?,
    };
    merkle::verify_consistency(from, to, &proof.from_root, &proof.to_root, &proof.proof)?;
    Ok(proof)
}

/// The contents served at `path` (relative, `checkpoint` excluded): a hash
/// tile or an entry bundle of the log as it stands.
pub fn tile(store: &impl StoreRead, path: &str) -> Result<Vec<u8>, AuditError> {
    let log = audit_store::read(store)?;
    Ok(match tiles::parse_path(path)? {
        tiles::TilePath::Hashes(t) => log.tile(t)?,
        tiles::TilePath::Entries(b) => log.bundle(b)?,
    })
}

/// Writes the whole log as C2SP tlog-tiles under `dir`: a checkpoint
/// signed with `key` and every tile and entry bundle of its size.
/// Returns the size.
pub fn export(store: &impl StoreRead, key: &Ed25519Signer, dir: &Path) -> Result<u64, AuditError> {
    let log = audit_store::read(store)?;
    let signed = log.checkpoint(key.name())?.sign(key)?;
    for (path, bytes) in log.publish(0)? {
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        std::fs::write(&file, bytes).map_err(io(format!("write {}", file.display())))?;
    }
    let file = dir.join(CHECKPOINT_FILE);
    std::fs::write(&file, signed).map_err(io(format!("write {}", file.display())))?;
    Ok(log.size())
}

/// What [`verify_dir`] checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// The checkpoint's size: every entry below it was checked.
    pub size: u64,
    /// Attestation entries.
    pub attestations: u64,
    /// Refusal entries.
    pub refusals: u64,
    /// Security event entries.
    pub events: u64,
}

/// Verifies a copy of a log under `dir` (`checkpoint` and `tile/...`, as
/// served or exported): the checkpoint's signature by `verifier`, the root
/// computed from the hash tiles against it, and every entry of every entry
/// bundle against the leaf hashes in the tiles.
pub fn verify_dir(dir: &Path, verifier: &Ed25519Verifier) -> Result<Verified, AuditError> {
    let file = dir.join(CHECKPOINT_FILE);
    let note = std::fs::read(&file).map_err(io(format!("read {}", file.display())))?;
    let known: [&dyn NoteVerifier; 1] = [verifier];
    let checkpoint = Checkpoint::open(&note, &known)?.checkpoint;
    let size = checkpoint.size();
    let reader = TileHashReader::new(size, |t: &Tile| {
        let file = dir.join(t.path());
        std::fs::read(&file).map_err(|e| StorageError(format!("{}: {e}", file.display())))
    });
    let root = merkle::tree_hash(size, &reader)?;
    if &root != checkpoint.root() {
        return Err(AuditError::Mismatch(format!(
            "the tiles give root {} for size {size}, the checkpoint says {}",
            b64(&root),
            b64(checkpoint.root())
        )));
    }
    let mut out = Verified {
        size,
        ..Verified::default()
    };
    for bundle in tiles::bundles_for_size(0, size) {
        let file = dir.join(bundle.path());
        let bytes = std::fs::read(&file).map_err(io(format!("read {}", file.display())))?;
        let entries = tiles::decode_bundle(&bytes, bundle.width())?;
        for (index, entry) in (bundle.first_entry()..).zip(&entries) {
            let stored = reader.read_hash(merkle::stored_hash_index(0, index))?;
            if merkle::leaf_hash(entry) != stored {
                return Err(AuditError::Mismatch(format!(
                    "entry {index} in {} does not hash to its leaf in the tiles",
                    bundle.path()
                )));
            }
            match Entry::parse(entry) {
                Ok(Entry::Attestation(_)) => out.attestations += 1,
                Ok(Entry::Refusal { .. }) => out.refusals += 1,
                Ok(Entry::SecurityEvent(_)) => out.events += 1,
                Err(e) => {
                    return Err(AuditError::Mismatch(format!("entry {index}: {e}")));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_store::MemStore;

    fn store_with(n: u8) -> MemStore {
        let mut store = MemStore::new();
        let mut txn = store.begin();
        for i in 0..n {
            let e = crate::audit_entry::attestation(
                &grompi_proto::ConversationId::from_bytes([i; 32]),
                grompi_proto::Epoch(0),
                grompi_proto::Index(u64::from(i)),
                &grompi_proto::Head::from_bytes([i; 32]),
            );
            audit_store::append(&mut txn, &e).unwrap();
        }
        txn.commit();
        store
    }

    #[test]
    fn the_key_file_is_made_once_and_loads_for_its_origin_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_KEY_FILE);
        let v = create_key(&path, "example.com/log").unwrap();
        assert!(matches!(
            create_key(&path, "example.com/log"),
            Err(AuditError::KeyExists(_))
        ));
        let k = load_key(&path, Some("example.com/log")).unwrap();
        assert_eq!(k.verifier(), v);
        assert!(!format!("{k:?}").contains("PRIVATE"));
        let err = load_key(&path, Some("other.example/log")).unwrap_err();
        assert!(
            err.to_string().contains("fixed when the key is made"),
            "{err}"
        );
        std::fs::write(&path, "PRIVATE+KEY+x+00000000+AAAA\n").unwrap();
        assert!(matches!(
            load_key(&path, None),
            Err(AuditError::BadKey { .. })
        ));
    }

    #[test]
    fn checkpoints_proofs_and_an_exported_copy_verify() {
        let dir = tempfile::tempdir().unwrap();
        let key = Ed25519Signer::from_seed("example.com/log", &[7; 32]).unwrap();
        let store = store_with(20);
        let (note, size) = sign_checkpoint(&store, &key).unwrap();
        assert_eq!(size, 20);
        let known: [&dyn NoteVerifier; 1] = [&key.verifier()];
        let cp = Checkpoint::open(note.as_bytes(), &known)
            .unwrap()
            .checkpoint;
        let p = prove_inclusion(&store, 3, None).unwrap();
        p.verify().unwrap();
        assert_eq!(&p.root, cp.root());
        let text = p.to_string();
        assert!(text.starts_with("index 3\nsize 20\nroot "), "{text}");
        assert!(text.contains("# attestation "), "{text}");
        let older = prove_inclusion(&store, 3, Some(4)).unwrap();
        older.verify().unwrap();
        assert!(prove_inclusion(&store, 20, None).is_err());
        assert!(prove_inclusion(&store, 3, Some(21)).is_err());
        let c = prove_consistency(&store, 5, 20).unwrap();
        assert_eq!(c.to_root, *cp.root());
        assert!(prove_consistency(&store, 5, 21).is_err());

        let out = dir.path().join("copy");
        assert_eq!(export(&store, &key, &out).unwrap(), 20);
        let v = verify_dir(&out, &key.verifier()).unwrap();
        assert_eq!((v.size, v.attestations), (20, 20));
        // Another key's checkpoint, a changed tile, a changed entry.
        let other = Ed25519Signer::from_seed("example.com/log", &[8; 32]).unwrap();
        assert!(verify_dir(&out, &other.verifier()).is_err());
        let t = out.join("tile/0/000.p/20");
        let mut bytes = std::fs::read(&t).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&t, &bytes).unwrap();
        let err = verify_dir(&out, &key.verifier()).unwrap_err();
        assert!(matches!(err, AuditError::Mismatch(_)), "{err}");
        bytes[0] ^= 1;
        std::fs::write(&t, &bytes).unwrap();
        let b = out.join("tile/entries/000.p/20");
        let mut bytes = std::fs::read(&b).unwrap();
        bytes[5] ^= 1;
        std::fs::write(&b, &bytes).unwrap();
        let err = verify_dir(&out, &key.verifier()).unwrap_err();
        assert!(err.to_string().contains("entry 0"), "{err}");
    }

    #[test]
    fn tiles_are_served_by_path() {
        let store = store_with(3);
        assert_eq!(tile(&store, "tile/0/000.p/3").unwrap().len(), 96);
        assert!(tile(&store, "tile/0/000.p/4").is_err());
        assert!(tile(&store, "tile/entries/000.p/3").is_ok());
        assert!(tile(&store, "tile/../etc").is_err());
    }
}
