//! The rollback anchor: a small file, ideally on other storage than the
//! database, that remembers how far the database's commit chain has come,
//! so that an older copy of the database (restored from a backup, or an
//! old disk image) is refused instead of forgetting what came after it.
//!
//! # The commit chain
//!
//! Every record appended to a database's write-ahead log (and every batch
//! committed durably without one) is a step of the chain: a counter that
//! counts the steps, and a hash, `derive_key(`[`COMMIT_CHAIN`]`, previous
//! hash || record checksum)`, starting from the database id. The database
//! keeps the chain's position at each checkpoint; replaying the log
//! recomputes it up to the last record.
//!
//! # The anchor file
//!
//! Two slots, at bytes 0 and 4096 (different pages, so that a torn write
//! of one leaves the other), written in turn:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `grompiRA` |
//! | 32 | database id |
//! | 8 | counter (big-endian) |
//! | 32 | chain hash |
//! | 32 | checksum: BLAKE3 `derive_key` with [`ROLLBACK_ANCHOR`] over the three fields before it |
//!
//! The slot with the higher counter wins. The anchor is written only after
//! what it records is on disk (after the log's `fdatasync`), so it is never
//! ahead of the database; it is written without a sync on each commit and
//! synced at each checkpoint, so after a power loss it may lag a little,
//! which costs protection for that little, never a false refusal.
//!
//! Opening compares the database's position with the anchor's: a lower
//! counter is a rollback ([`AnchorError::Behind`]), an equal counter with a
//! different hash is another history ([`AnchorError::Diverged`]); a higher
//! counter is an anchor that lagged, and it is brought up to date. The
//! anchor only helps if it is *not* restored together with the database:
//! never back it up with the database.
//!
//! [`COMMIT_CHAIN`]: grompi_proto::context::COMMIT_CHAIN
//! [`ROLLBACK_ANCHOR`]: grompi_proto::context::ROLLBACK_ANCHOR

use crate::wal::DatabaseId;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"grompiRA";
const SLOT: usize = 112;
const SLOT_OFFSETS: [u64; 2] = [0, 4096];

/// How far a database's commit chain has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainPosition {
    /// Steps since the database was created.
    pub counter: u64,
    /// The chain hash after the last step.
    pub hash: [u8; 32],
}

impl ChainPosition {
    /// The position of a new database: no steps, the hash is its id.
    pub fn genesis(database: &DatabaseId) -> Self {
        Self {
            counter: 0,
            hash: *database,
        }
    }

    /// The position after one more record, whose checksum is `record`.
    pub fn step(&self, record: &[u8; 32]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(grompi_proto::context::COMMIT_CHAIN);
        h.update(&self.hash);
        h.update(record);
        Self {
            counter: self.counter.saturating_add(1),
            hash: *h.finalize().as_bytes(),
        }
    }
}

/// Why the anchor refused the database, or could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// Reading, writing or syncing the anchor failed.
    #[error("rollback anchor {path}: {what}: {source}")]
    Io {
        /// The anchor file.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The error from the operating system.
        source: std::io::Error,
    },
    /// The database has been anchored before, but the anchor is gone.
    #[error(
        "rollback anchor {path} is missing, but this database was anchored before: it \
         cannot be checked against rollback. If the anchor moved, set its path in the \
         configuration; if it is lost, see docs/OPERATING.md (data directory)"
    )]
    Missing {
        /// The anchor file.
        path: PathBuf,
    },
    /// No slot of the anchor file checks.
    #[error(
        "rollback anchor {path} is unreadable (no valid slot): it cannot be checked against \
         rollback; see docs/OPERATING.md (data directory)"
    )]
    Unreadable {
        /// The anchor file.
        path: PathBuf,
    },
    /// The anchor belongs to another database.
    #[error(
        "rollback anchor {path} belongs to another database: this database is not the one \
         the anchor protects (a database from elsewhere, or a fresh one in place of it)"
    )]
    Foreign {
        /// The anchor file.
        path: PathBuf,
    },
    /// The database is behind the anchor: an older copy.
    #[error(
        "the database is behind its rollback anchor {path}: it has {database} commits, the \
         anchor recorded {anchor}. This is an older copy of the database (restored from a \
         backup?); serving from it could attest a different envelope at an index already \
         attested. Restore the latest database, or retire this server's key"
    )]
    Behind {
        /// The anchor file.
        path: PathBuf,
        /// The database's commit count.
        database: u64,
        /// The anchor's commit count.
        anchor: u64,
    },
    /// Same commit count, different history.
    #[error(
        "the database and its rollback anchor {path} both record {counter} commits, but \
         different ones: this database is not the history the anchor recorded. Restore the \
         latest database, or retire this server's key"
    )]
    Diverged {
        /// The anchor file.
        path: PathBuf,
        /// The commit count both record.
        counter: u64,
    },
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> AnchorError + 'a {
    move |source| AnchorError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn slot_checksum(database: &DatabaseId, position: &ChainPosition) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(grompi_proto::context::ROLLBACK_ANCHOR);
    h.update(database);
    h.update(&position.counter.to_be_bytes());
    h.update(&position.hash);
    *h.finalize().as_bytes()
}

fn encode(database: &DatabaseId, position: &ChainPosition) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[..8].copy_from_slice(MAGIC);
    s[8..40].copy_from_slice(database);
    s[40..48].copy_from_slice(&position.counter.to_be_bytes());
    s[48..80].copy_from_slice(&position.hash);
    s[80..].copy_from_slice(&slot_checksum(database, position));
    s
}

/// A valid slot's database id and position.
fn decode(slot: &[u8]) -> Option<(DatabaseId, ChainPosition)> {
    if slot.len() != SLOT || &slot[..8] != MAGIC {
        return None;
    }
    let mut database = [0u8; 32];
    database.copy_from_slice(&slot[8..40]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&slot[40..48]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&slot[48..80]);
    let position = ChainPosition {
        counter: u64::from_be_bytes(counter),
        hash,
    };
    (slot[80..] == slot_checksum(&database, &position)).then_some((database, position))
}

/// An open anchor file.
#[derive(Debug)]
pub struct Anchor {
    file: File,
    path: PathBuf,
    database: DatabaseId,
    /// The slot the next write goes to.
    next_slot: usize,
}

impl Anchor {
    /// Opens the anchor at `path` for `database`: `Ok(None)` if there is no
    /// file, otherwise the anchor with the position it recorded.
    pub fn open(
        path: &Path,
        database: &DatabaseId,
    ) -> Result<Option<(Self, ChainPosition)>, AnchorError> {
        if !path.exists() {
            return Ok(None);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path, "open"))?;
        let mut best: Option<(usize, ChainPosition)> = None;
        let mut foreign = false;
        for (i, offset) in SLOT_OFFSETS.iter().enumerate() {
            let mut slot = [0u8; SLOT];
            // A slot past the end of a short file is simply not valid.
            if file.read_exact_at(&mut slot, *offset).is_err() {
                continue;
            }
            match decode(&slot) {
                Some((id, position))
                    if id == *database
                        && best.is_none_or(|(_, b)| position.counter > b.counter) =>
                {
                    best = Some((i, position));
                }
                Some((id, _)) if id == *database => {}
                Some(_) => foreign = true,
                None => {}
            }
        }
        match best {
            Some((i, position)) => Ok(Some((
                Self {
                    file,
                    path: path.to_path_buf(),
                    database: *database,
                    next_slot: 1 - i,
                },
                position,
            ))),
            None if foreign => Err(AnchorError::Foreign {
                path: path.to_path_buf(),
            }),
            None => Err(AnchorError::Unreadable {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Creates the anchor of `database` at `path` recording `position`,
    /// durably (file and directory entry). Refuses to replace a file.
    pub fn create(
        path: &Path,
        database: &DatabaseId,
        position: &ChainPosition,
    ) -> Result<Self, AnchorError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path, "create"))?;
        let slot = encode(database, position);
        for offset in SLOT_OFFSETS {
            file.write_all_at(&slot, offset)
                .map_err(io(path, "write"))?;
        }
        file.sync_all().map_err(io(path, "sync"))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(path, "sync the directory"))?;
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            database: *database,
            next_slot: 0,
        })
    }

    /// Compares the database's `position` with the anchor's `recorded` one:
    /// refuses a database behind the anchor or on another history.
    pub fn check(
        &self,
        recorded: &ChainPosition,
        position: &ChainPosition,
    ) -> Result<(), AnchorError> {
        if position.counter < recorded.counter {
            return Err(AnchorError::Behind {
                path: self.path.clone(),
                database: position.counter,
                anchor: recorded.counter,
            });
        }
        if position.counter == recorded.counter && position.hash != recorded.hash {
            return Err(AnchorError::Diverged {
                path: self.path.clone(),
                counter: position.counter,
            });
        }
        Ok(())
    }

    /// Records `position`, which must already be on disk in the database
    /// or its log, without waiting for the anchor's disk.
    pub fn record(&mut self, position: &ChainPosition) -> Result<(), AnchorError> {
        let slot = encode(&self.database, position);
        self.file
            .write_all_at(&slot, SLOT_OFFSETS[self.next_slot])
            .map_err(io(&self.path, "write"))?;
        self.next_slot = 1 - self.next_slot;
        Ok(())
    }

    /// Records `position` and waits until the anchor is on disk.
    pub fn record_synced(&mut self, position: &ChainPosition) -> Result<(), AnchorError> {
        self.record(position)?;
        self.file.sync_data().map_err(io(&self.path, "fdatasync"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: DatabaseId = [5; 32];

    #[test]
    fn the_anchor_keeps_the_latest_position_and_survives_one_torn_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor");
        assert!(Anchor::open(&path, &DB).unwrap().is_none());
        let p0 = ChainPosition::genesis(&DB);
        let p1 = p0.step(&[1; 32]);
        let p2 = p1.step(&[2; 32]);
        let mut a = Anchor::create(&path, &DB, &p0).unwrap();
        a.record(&p1).unwrap();
        a.record_synced(&p2).unwrap();
        drop(a);
        let (a, got) = Anchor::open(&path, &DB).unwrap().unwrap();
        assert_eq!(got, p2);
        a.check(&got, &p2).unwrap();
        a.check(&got, &p2.step(&[3; 32])).unwrap();
        let err = a.check(&got, &p1).unwrap_err();
        assert!(matches!(
            err,
            AnchorError::Behind {
                database: 1,
                anchor: 2,
                ..
            }
        ));
        assert!(err.to_string().contains("behind"), "{err}");
        let other = p1.step(&[9; 32]);
        assert!(matches!(
            a.check(&got, &other).unwrap_err(),
            AnchorError::Diverged { counter: 2, .. }
        ));
        // Tear the newer slot (p2 went to slot 1): the older one remains.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4096 + 50] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Anchor::open(&path, &DB).unwrap().unwrap().1, p1);
        bytes[50] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Anchor::open(&path, &DB).unwrap_err();
        assert!(matches!(err, AnchorError::Unreadable { .. }), "{err}");
        // Another database's anchor is named as such.
        std::fs::remove_file(&path).unwrap();
        Anchor::create(&path, &[6; 32], &p0).unwrap();
        let err = Anchor::open(&path, &DB).unwrap_err();
        assert!(matches!(err, AnchorError::Foreign { .. }), "{err}");
        assert!(
            Anchor::create(&path, &DB, &p0).is_err(),
            "replaced an anchor"
        );
    }

    #[test]
    fn the_chain_and_slot_match_the_published_vectors() {
        let step = grompi_proto::vectors::find("commit_chain_step").unwrap();
        let prev: [u8; 32] = step.field_bytes("previous").unwrap().try_into().unwrap();
        let record: [u8; 32] = step
            .field_bytes("record_checksum")
            .unwrap()
            .try_into()
            .unwrap();
        let p = ChainPosition {
            counter: 6,
            hash: prev,
        }
        .step(&record);
        assert_eq!(p.hash.to_vec(), step.output_bytes().unwrap());
        assert_eq!(p.counter, 7);
        let slot = grompi_proto::vectors::find("rollback_anchor_slot").unwrap();
        let database: DatabaseId = slot.field_bytes("database").unwrap().try_into().unwrap();
        assert_eq!(slot.fields["counter"].as_u64(), Some(7));
        assert_eq!(slot.field_bytes("chain").unwrap(), p.hash.to_vec());
        assert_eq!(
            slot_checksum(&database, &p).to_vec(),
            slot.output_bytes().unwrap()
        );
        assert_eq!(&encode(&database, &p)[8..80], slot.input_bytes().unwrap());
    }
}
