//! This server as a C2SP tlog-witness of its peers' audit logs: the
//! witness key file, the peers' configuration, and [`WitnessService`], the
//! `add-checkpoint` handler that persists what it cosigned before it
//! answers and keeps the evidence of every refusal that shows a log
//! misbehaving.
//!
//! The decisions are [`grompi_tlog::witness::Witness`]'s (sans-IO); this
//! module adds only the files, the lock and the metrics. The HTTP side is
//! in [`crate::audit_http`], the other direction (submitting this server's
//! checkpoints to its peers) in [`crate::witness_submit`].
//!
//! # Files, under `<data_dir>/witness/`
//!
//! | path | contents |
//! |---|---|
//! | `latest/<blake3(origin), 32 hex>` | the signed checkpoint last cosigned for that log, as submitted |
//! | `evidence/<n>-<kind>/reason` | what was refused and why (text) |
//! | `evidence/<n>-<kind>/cosigned` | the log's checkpoint this witness had cosigned |
//! | `evidence/<n>-<kind>/submitted` | the whole `add-checkpoint` body refused |
//!
//! `kind` is `fork` (same size, another root: two signed checkpoints that
//! prove the log forked), `inconsistent` (a larger checkpoint whose
//! consistency proof from the cosigned one fails) or `behind` (a validly
//! signed checkpoint smaller than the one cosigned: a log restored from an
//! old copy, or someone replaying its old checkpoints, which carry no
//! time). Every file is written to a temporary name, synced, renamed and
//! its directory synced; a cosignature is answered only after the new
//! `latest` file is on disk, so a restart never forgets what was cosigned.

use crate::audit_http::Answer;
use crate::config::PeerConfig;
use grompi_ops::secret_file::{self, SecretFileError};
use grompi_tlog::checkpoint::Checkpoint;
use grompi_tlog::cosignature::{CosignatureSigner, CosignatureVerifier};
use grompi_tlog::note::{Ed25519Verifier, Note};
use grompi_tlog::witness::{self, LatestCheckpoint, Refusal, Witness};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use zeroize::Zeroizing;

/// File name of the witness key in the data directory.
pub const WITNESS_KEY_FILE: &str = "witness.key";
/// Directory of the witness's state in the data directory.
pub const WITNESS_DIR: &str = "witness";
/// Most `fork` and `inconsistent` evidence records kept (only the log's
/// key can make them, so only a misbehaving log fills them).
pub const MAX_MISBEHAVIOUR_EVIDENCE: u64 = 1000;
/// Most `behind` records kept (anyone can replay a log's old checkpoints,
/// so they are capped lower).
pub const MAX_BEHIND_EVIDENCE: u64 = 100;

use crate::telemetry::{WITNESS_ANSWERS, WITNESS_MISBEHAVIOUR};

/// Why the witness could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// The witness key file could not be read or written.
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    /// The witness key file exists already.
    #[error("{0} already exists; refusing to replace the witness key")]
    KeyExists(PathBuf),
    /// The witness key file does not hold a cosigner key.
    #[error("{path}: {reason}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file or directory could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A persisted checkpoint no longer verifies under the configured key.
    #[error(
        "{path}: the checkpoint last cosigned for {origin:?} is not valid under its configured \
         log_key ({reason}). If the log's key really changed, move the file away to forget \
         what was cosigned under the old key"
    )]
    Restore {
        /// The state file.
        path: PathBuf,
        /// The log's origin.
        origin: String,
        /// What is wrong.
        reason: String,
    },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> WitnessError {
    move |source| WitnessError::Io { what, source }
}

/// The witness name a new key gets: the log origin's, with `/witness`.
pub fn default_name(log_origin: &str) -> String {
    format!("{log_origin}/witness")
}

/// Creates the witness key file at `path` with the cosigner name `name`,
/// from the operating system's random generator, and returns its verifier
/// key. Refuses to replace an existing key.
pub fn create_key(path: &Path, name: &str) -> Result<CosignatureVerifier, WitnessError> {
    if path.exists() {
        return Err(WitnessError::KeyExists(path.to_path_buf()));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::fill(&mut seed[..]);
    let signer = CosignatureSigner::from_seed(name, &seed).map_err(|e| WitnessError::BadKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut text = signer.skey();
    text.push('\n');
    secret_file::write_secret(path, text.as_bytes())?;
    Ok(signer.verifier())
}

/// Loads the witness key from `path`.
pub fn load_key(path: &Path) -> Result<CosignatureSigner, WitnessError> {
    let bytes = secret_file::read_secret(path)?;
    let bad = |reason: String| WitnessError::BadKey {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not text".into()))?;
    CosignatureSigner::from_skey(text.trim()).map_err(|e| bad(e.to_string()))
}

/// The logs a peer list asks this server to witness: `(origin, key)`.
pub fn witnessed_logs(peers: &[PeerConfig]) -> Vec<(String, Ed25519Verifier)> {
    peers
        .iter()
        .filter_map(|p| p.log_key.clone())
        .map(|k| (grompi_tlog::note::NoteVerifier::name(&k).to_owned(), k))
        .collect()
}

/// What kind of evidence a refusal leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceKind {
    /// Two checkpoints of one size with different roots.
    Fork,
    /// A larger checkpoint not consistent with the cosigned one.
    Inconsistent,
    /// A checkpoint smaller than the cosigned one.
    Behind,
}

impl EvidenceKind {
    /// The name used in paths and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Fork => "fork",
            EvidenceKind::Inconsistent => "inconsistent",
            EvidenceKind::Behind => "behind",
        }
    }
}

/// One evidence record, as kept under `evidence/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRecord {
    /// Its directory.
    pub dir: PathBuf,
    /// What it shows.
    pub kind: EvidenceKind,
    /// The `reason` file.
    pub reason: String,
    /// The checkpoint this witness had cosigned.
    pub cosigned: Vec<u8>,
    /// The refused `add-checkpoint` body.
    pub submitted: Vec<u8>,
}

struct Inner {
    witness: Witness,
    dir: PathBuf,
    next_evidence: u64,
    misbehaviour_kept: u64,
    behind_kept: u64,
}

/// The `add-checkpoint` handler: the witness state machine, its files and
/// one lock held across checking, persisting and answering (as C2SP
/// tlog-witness requires, or two requests could roll the size back).
pub struct WitnessService {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for WitnessService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WitnessService")
    }
}

fn state_file(dir: &Path, origin: &str) -> PathBuf {
    let h = blake3::hash(origin.as_bytes());
    dir.join("latest")
        .join(hex::encode(h.as_bytes().get(..16).unwrap_or_default()))
}

fn make_dir(path: &Path) -> Result<(), WitnessError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).map_err(io(format!("create {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("chmod {}", path.display())))
}

fn sync_dir(path: &Path) -> Result<(), WitnessError> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("fsync {}", path.display())))
}

impl WitnessService {
    /// Opens the witness state under `dir` (created if missing) for
    /// `signer`, witnessing `logs`, and restores what was cosigned for
    /// each of them.
    pub fn open(
        dir: &Path,
        signer: CosignatureSigner,
        logs: &[(String, Ed25519Verifier)],
    ) -> Result<Self, WitnessError> {
        make_dir(dir)?;
        make_dir(&dir.join("latest"))?;
        make_dir(&dir.join("evidence"))?;
        let mut witness = Witness::new(signer);
        for (origin, key) in logs {
            witness.add_log(origin, key.clone());
            let path = state_file(dir, origin);
            if !path.exists() {
                continue;
            }
            let bad = |reason: String| WitnessError::Restore {
                path: path.clone(),
                origin: origin.clone(),
                reason,
            };
            let note = secret_file::read_secret(&path)?.to_vec();
            let parsed = Note::parse(&note).map_err(|e| bad(e.to_string()))?;
            let c = Checkpoint::from_text(parsed.text()).map_err(|e| bad(e.to_string()))?;
            witness
                .restore(
                    origin,
                    LatestCheckpoint {
                        size: c.size(),
                        root: *c.root(),
                        note,
                    },
                )
                .map_err(|e| bad(e.to_string()))?;
        }
        let (mut next, mut misbehaviour, mut behind) = (0u64, 0u64, 0u64);
        let evidence = dir.join("evidence");
        let listing =
            std::fs::read_dir(&evidence).map_err(io(format!("list {}", evidence.display())))?;
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((n, kind)) = name.split_once('-') else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            next = next.max(n.saturating_add(1));
            if kind == EvidenceKind::Behind.as_str() {
                behind += 1;
            } else {
                misbehaviour += 1;
            }
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                witness,
                dir: dir.to_path_buf(),
                next_evidence: next,
                misbehaviour_kept: misbehaviour,
                behind_kept: behind,
            }),
        })
    }

    /// The checkpoint last cosigned for `origin`, if any.
    pub fn latest(&self, origin: &str) -> Option<LatestCheckpoint> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.witness.latest(origin).cloned()
    }

    /// Every evidence record kept, oldest first.
    pub fn evidence(&self) -> Result<Vec<EvidenceRecord>, WitnessError> {
        let dir = {
            let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.dir.join("evidence")
        };
        read_evidence(&dir)
    }

    /// Handles an `add-checkpoint` body at `now` (POSIX seconds): the
    /// answer to send. A cosignature is returned only once the checkpoint
    /// it cosigns is on disk as the one last cosigned.
    pub fn add_checkpoint(&self, body: &[u8], now: u64) -> Answer {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let answer = inner.add_checkpoint(body, now);
        metrics::counter!(WITNESS_ANSWERS, "status" => answer.status.to_string()).increment(1);
        answer
    }
}

impl Inner {
    fn add_checkpoint(&mut self, body: &[u8], now: u64) -> Answer {
        // What was cosigned before, for the evidence and to undo an
        // update that could not be persisted.
        let submitted = witness::submitted_checkpoint(body);
        let origin = submitted.as_ref().map(|c| c.origin().to_owned());
        let before = origin
            .as_deref()
            .and_then(|o| self.witness.latest(o))
            .cloned();
        match self.witness.add_checkpoint(body, now) {
            Ok(cosigned) => {
                let origin = cosigned.checkpoint.origin().to_owned();
                let Some(latest) = self.witness.latest(&origin).cloned() else {
                    return Answer::text(500, "the cosigned checkpoint was not recorded\n");
                };
                let path = state_file(&self.dir, &origin);
                // The same tree again (a retry, or a replay): already on
                // disk, so no write and no fsync for anyone who repeats it.
                let unchanged = before
                    .as_ref()
                    .is_some_and(|b| (b.size, b.root) == (latest.size, latest.root));
                if unchanged {
                    return Answer::text(200, cosigned.body);
                }
                if let Err(e) = secret_file::write_secret(&path, &latest.note) {
                    // Nothing is promised: the state goes back to what is on
                    // disk (for a first checkpoint it stays ahead in memory
                    // only, so it may refuse what the disk would take, never
                    // cosign what the disk contradicts).
                    tracing::error!(error = %e, origin, "persisting a cosigned checkpoint failed");
                    if let Some(b) = before {
                        let _ = self.witness.restore(&origin, b);
                    }
                    return Answer::text(500, "could not persist the cosigned checkpoint\n");
                }
                tracing::debug!(origin, size = cosigned.checkpoint.size(), "cosigned");
                Answer::text(200, cosigned.body)
            }
            Err(refusal) => {
                let kind = match &refusal {
                    Refusal::Fork(_) => Some(EvidenceKind::Fork),
                    Refusal::Inconsistent { .. } => Some(EvidenceKind::Inconsistent),
                    Refusal::Conflict {
                        known_size, size, ..
                    } if size < known_size => Some(EvidenceKind::Behind),
                    Refusal::OldSizeAfterCheckpoint { size, .. }
                        if before.as_ref().is_some_and(|b| b.size > *size) =>
                    {
                        Some(EvidenceKind::Behind)
                    }
                    _ => None,
                };
                if let (Some(kind), Some(before), Some(origin)) = (kind, &before, &origin) {
                    metrics::counter!(
                        WITNESS_MISBEHAVIOUR,
                        "kind" => kind.as_str(),
                        "origin" => origin.clone()
                    )
                    .increment(1);
                    tracing::error!(
                        origin,
                        kind = kind.as_str(),
                        cosigned_size = before.size,
                        submitted_size = submitted.as_ref().map_or(0, Checkpoint::size),
                        %refusal,
                        "refused a checkpoint that is not consistent with the one cosigned"
                    );
                    if let Err(e) = self.keep_evidence(kind, &refusal, origin, &before.note, body) {
                        tracing::error!(error = %e, "keeping the evidence failed");
                    }
                } else {
                    tracing::info!(status = refusal.status(), %refusal, "refused a checkpoint");
                }
                let mut answer = Answer::text(refusal.status(), refusal.body());
                if matches!(refusal, Refusal::Conflict { .. }) {
                    answer.content_type = witness::CONFLICT_CONTENT_TYPE;
                }
                answer
            }
        }
    }

    fn keep_evidence(
        &mut self,
        kind: EvidenceKind,
        refusal: &Refusal,
        origin: &str,
        cosigned: &[u8],
        submitted: &[u8],
    ) -> Result<(), WitnessError> {
        let (kept, cap) = match kind {
            EvidenceKind::Behind => (&mut self.behind_kept, MAX_BEHIND_EVIDENCE),
            _ => (&mut self.misbehaviour_kept, MAX_MISBEHAVIOUR_EVIDENCE),
        };
        if *kept >= cap {
            tracing::warn!(
                cap,
                kind = kind.as_str(),
                "evidence not kept: the cap is reached"
            );
            return Ok(());
        }
        let parent = self.dir.join("evidence");
        let n = self.next_evidence;
        let name = format!("{n:06}-{}", kind.as_str());
        let tmp = parent.join(format!(".tmp-{name}"));
        let _ = std::fs::remove_dir_all(&tmp);
        make_dir(&tmp)?;
        let reason = format!(
            "kind {}\norigin {origin}\nstatus {}\nreason {refusal}\n",
            kind.as_str(),
            refusal.status()
        );
        for (file, bytes) in [
            ("reason", reason.as_bytes()),
            ("cosigned", cosigned),
            ("submitted", submitted),
        ] {
            secret_file::write_secret(&tmp.join(file), bytes)?;
        }
        let dest = parent.join(&name);
        std::fs::rename(&tmp, &dest).map_err(io(format!("rename to {}", dest.display())))?;
        sync_dir(&parent)?;
        self.next_evidence = n.saturating_add(1);
        *kept += 1;
        tracing::warn!(evidence = %dest.display(), "evidence kept");
        Ok(())
    }
}

/// Reads the evidence records under `dir` (a witness's `evidence/`),
/// oldest first.
pub fn read_evidence(dir: &Path) -> Result<Vec<EvidenceRecord>, WitnessError> {
    let mut names: Vec<(u64, String)> = std::fs::read_dir(dir)
        .map_err(io(format!("list {}", dir.display())))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.split_once('-')?.0.parse().ok()?;
            Some((n, name))
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for (_, name) in names {
        let kind = match name.split_once('-').map(|(_, k)| k) {
            Some("fork") => EvidenceKind::Fork,
            Some("inconsistent") => EvidenceKind::Inconsistent,
            Some("behind") => EvidenceKind::Behind,
            _ => continue,
        };
        let d = dir.join(&name);
        let read = |f: &str| {
            let p = d.join(f);
            std::fs::read(&p).map_err(io(format!("read {}", p.display())))
        };
        out.push(EvidenceRecord {
            kind,
            reason: String::from_utf8_lossy(&read("reason")?).into_owned(),
            cosigned: read("cosigned")?,
            submitted: read("submitted")?,
            dir: d,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_tlog::log::Log;
    use grompi_tlog::note::Ed25519Signer;
    use grompi_tlog::storage::MemoryStorage;
    use grompi_tlog::witness::AddCheckpointRequest;
    use proptest::prelude::*;

    const ORIGIN: &str = "example.org/order-0";
    const NOW: u64 = 1_800_000_000;

    fn log_key() -> Ed25519Signer {
        Ed25519Signer::from_seed(ORIGIN, &[1; 32]).unwrap()
    }

    fn signer() -> CosignatureSigner {
        CosignatureSigner::from_seed("example.org/order-1/witness", &[2; 32]).unwrap()
    }

    fn open(dir: &Path) -> WitnessService {
        WitnessService::open(dir, signer(), &[(ORIGIN.into(), log_key().verifier())]).unwrap()
    }

    fn log_of(entries: &[&[u8]]) -> Log<MemoryStorage> {
        let mut log = Log::open(MemoryStorage::new()).unwrap();
        for e in entries {
            log.append(e).unwrap();
        }
        log
    }

    fn body(log: &Log<MemoryStorage>, old: u64) -> Vec<u8> {
        AddCheckpointRequest {
            old_size: old,
            proof: log
                .consistency_proof(old.min(log.size()), log.size())
                .unwrap(),
            checkpoint: log
                .checkpoint(ORIGIN)
                .unwrap()
                .sign(&log_key())
                .unwrap()
                .into_bytes(),
        }
        .to_bytes()
    }

    #[test]
    fn keys_are_made_once_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WITNESS_KEY_FILE);
        let v = create_key(&path, &default_name(ORIGIN)).unwrap();
        assert!(matches!(
            create_key(&path, "x"),
            Err(WitnessError::KeyExists(_))
        ));
        assert_eq!(load_key(&path).unwrap().verifier(), v);
        assert_eq!(
            v.vkey().split('+').next(),
            Some("example.org/order-0/witness")
        );
        std::fs::write(&path, "PRIVATE+KEY+x+00000000+AAAA\n").unwrap();
        assert!(matches!(load_key(&path), Err(WitnessError::BadKey { .. })));
    }

    #[test]
    fn what_was_cosigned_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_of(&[b"a", b"b", b"c"]);
        let w = open(dir.path());
        let a = w.add_checkpoint(&body(&log, 0), NOW);
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        assert!(
            a.body
                .starts_with("— example.org/order-1/witness ".as_bytes())
        );
        drop(w);
        // After a restart the witness still knows size 3: old 0 is a conflict.
        let w = open(dir.path());
        assert_eq!(w.latest(ORIGIN).unwrap().size, 3);
        let a = w.add_checkpoint(&body(&log, 0), NOW);
        assert_eq!((a.status, a.body.as_slice()), (409, b"3\n".as_slice()));
        assert_eq!(a.content_type, "text/x.tlog.size");
        log.append(b"d").unwrap();
        assert_eq!(w.add_checkpoint(&body(&log, 3), NOW).status, 200);
        assert!(w.evidence().unwrap().is_empty());
        // The same checkpoint again is cosigned without a new write.
        let file = state_file(dir.path(), ORIGIN);
        let written = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(w.add_checkpoint(&body(&log, 4), NOW + 5).status, 200);
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            written
        );
        drop(w);
        assert_eq!(open(dir.path()).latest(ORIGIN).unwrap().size, 4);
    }

    #[test]
    fn a_fork_is_refused_with_422_and_both_checkpoints_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let honest = log_of(&[b"a", b"b", b"c"]);
        let forked = log_of(&[b"a", b"b", b"X"]);
        let w = open(dir.path());
        assert_eq!(w.add_checkpoint(&body(&honest, 0), NOW).status, 200);
        let fork = body(&forked, 3);
        let a = w.add_checkpoint(&fork, NOW);
        assert_eq!(a.status, 422);
        assert!(String::from_utf8_lossy(&a.body).contains("fork"));
        // Kept on disk, found again after a restart.
        drop(w);
        let w = open(dir.path());
        let ev = w.evidence().unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EvidenceKind::Fork);
        assert_eq!(ev[0].submitted, fork);
        let v = log_key().verifier();
        let known: [&dyn grompi_tlog::note::NoteVerifier; 1] = [&v];
        let a = Checkpoint::open(&ev[0].cosigned, &known)
            .unwrap()
            .checkpoint;
        let req = AddCheckpointRequest::parse(&ev[0].submitted).unwrap();
        let b = Checkpoint::open(&req.checkpoint, &known)
            .unwrap()
            .checkpoint;
        assert_eq!((a.size(), b.size()), (3, 3));
        assert_ne!(a.root(), b.root());
        assert!(
            ev[0]
                .reason
                .contains("kind fork\norigin example.org/order-0\nstatus 422\n")
        );
        // The witness still follows the honest log.
        assert_eq!(w.latest(ORIGIN).unwrap().root, honest.root().unwrap());
    }

    #[test]
    fn a_rolled_back_log_is_refused_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let w = open(dir.path());
        let honest = log_of(&[b"a", b"b", b"c", b"d"]);
        assert_eq!(w.add_checkpoint(&body(&honest, 0), NOW).status, 200);
        // Restored from a copy at size 2, then went on differently.
        let mut rolled = log_of(&[b"a", b"b", b"start"]);
        // Behind: a 409 with the size cosigned, and a record.
        let a = w.add_checkpoint(&body(&rolled, 0), NOW);
        assert_eq!((a.status, a.body.as_slice()), (409, b"4\n".as_slice()));
        // Old size 4 with a checkpoint of 3: 400, also behind.
        let mut req = AddCheckpointRequest::parse(&body(&rolled, 0)).unwrap();
        req.old_size = 4;
        assert_eq!(w.add_checkpoint(&req.to_bytes(), NOW).status, 400);
        // Grown past the cosigned size, with a proof from its own tree: 422.
        rolled.append(b"e").unwrap();
        rolled.append(b"f").unwrap();
        let a = w.add_checkpoint(&body(&rolled, 4), NOW);
        assert_eq!(a.status, 422, "{}", String::from_utf8_lossy(&a.body));
        let kinds: Vec<_> = w.evidence().unwrap().iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EvidenceKind::Behind,
                EvidenceKind::Behind,
                EvidenceKind::Inconsistent
            ]
        );
        assert_eq!(w.latest(ORIGIN).unwrap().size, 4);
    }

    #[test]
    fn a_changed_log_key_stops_the_start_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let w = open(dir.path());
        assert_eq!(
            w.add_checkpoint(&body(&log_of(&[b"a"]), 0), NOW).status,
            200
        );
        drop(w);
        let other = Ed25519Signer::from_seed(ORIGIN, &[9; 32]).unwrap();
        let err = WitnessService::open(dir.path(), signer(), &[(ORIGIN.into(), other.verifier())])
            .unwrap_err();
        assert!(matches!(err, WitnessError::Restore { .. }), "{err}");
        assert!(err.to_string().contains("move the file away"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Across restarts at any point, the witness never cosigns two
        /// different roots at one size, and never a size below one it
        /// cosigned before the restart.
        #[test]
        fn restarts_never_forget(
            steps in prop::collection::vec((0u8..4, any::<bool>(), any::<bool>()), 1..24)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut w = open(dir.path());
            let mut honest = log_of(&[]);
            let mut fork = log_of(&[]);
            let mut cosigned: std::collections::BTreeMap<u64, grompi_tlog::Hash> = Default::default();
            let mut high = 0u64;
            let mut n = 0u32;
            for (grow, forked, restart) in steps {
                for _ in 0..grow {
                    n += 1;
                    honest.append(&n.to_be_bytes()).unwrap();
                    fork.append(&(n ^ 0xdead).to_be_bytes()).unwrap();
                }
                if restart {
                    drop(w);
                    w = open(dir.path());
                }
                let log = if forked { &fork } else { &honest };
                let old = w.latest(ORIGIN).map_or(0, |l| l.size);
                let a = w.add_checkpoint(&body(log, old.min(log.size())), NOW);
                if a.status == 200 {
                    let root = log.root().unwrap();
                    prop_assert!(log.size() >= high);
                    high = log.size();
                    if let Some(prev) = cosigned.insert(log.size(), root) {
                        prop_assert_eq!(prev, root);
                    }
                } else {
                    prop_assert!([400, 409, 422].contains(&a.status), "status {}", a.status);
                }
                prop_assert_eq!(w.latest(ORIGIN).map_or(0, |l| l.size), high);
            }
        }
    }
}
