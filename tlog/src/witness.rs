//! C2SP tlog-witness, sans-IO: the `add-checkpoint` request body and the
//! witness's state machine.
//!
//! A request body is an `old <size>` line, up to 63 base64 consistency
//! proof lines, a blank line, then the signed checkpoint. [`Witness`]
//! checks it against the logs it knows (keyed by origin, each with its
//! verifier key) and the last checkpoint it cosigned for that origin, and
//! answers either [`Cosigned`] (the cosignature line to return with
//! `200`) or a [`Refusal`], whose [`Refusal::status`] is the spec's HTTP
//! status and [`Refusal::body`] the response body.
//!
//! The caller brings the time, and must persist
//! [`Witness::latest`] for the origin before it returns the cosignature
//! (and hold one lock across [`Witness::add_checkpoint`] and the write,
//! as the spec requires, or two requests can roll the size back).
//!
//! A checkpoint with the size last cosigned and another root is a fork:
//! it is refused, and both signed checkpoints are kept as evidence
//! ([`Witness::evidence`] and in the refusal).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::checkpoint::Checkpoint;
use crate::cosignature::CosignatureSigner;
use crate::error::{CheckpointError, CosignatureError, MerkleError, NoteError};
use crate::merkle::{self, Hash};
use crate::note::{Ed25519Verifier, Note, NoteVerifier};

/// The most consistency proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;

/// The `Content-Type` of a `409 Conflict` body.
pub const CONFLICT_CONTENT_TYPE: &str = "text/x.tlog.size";

/// An `add-checkpoint` request as C2SP tlog-witness frames it: the size the log says the witness last cosigned (`old`), the consistency proof from it, and the new checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpointRequest {
    /// The size of the checkpoint the client believes the witness last
    /// cosigned (0 if none).
    pub old_size: u64,
    /// The consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: Vec<u8>,
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

impl AddCheckpointRequest {
    /// The request body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size).into_bytes();
        for h in &self.proof {
            out.extend_from_slice(BASE64.encode(h.as_bytes()).as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        let bad = |why: &str| Refusal::Malformed(why.to_owned());
        let mut rest = body;
        let mut next_line = |what: &str| -> Result<&[u8], Refusal> {
            let at = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| bad(what))?;
            let (line, tail) = rest.split_at(at);
            rest = &tail[1..];
            Ok(line)
        };
        let old = next_line("no old size line")?;
        let old = std::str::from_utf8(old)
            .ok()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(parse_decimal)
            .ok_or_else(|| bad("the first line is not `old <size>`"))?;
        let mut proof = Vec::new();
        loop {
            let line = next_line("no blank line before the checkpoint")?;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let h = BASE64
                .decode(line)
                .ok()
                .and_then(|b| Hash::from_slice(&b).ok())
                .ok_or_else(|| bad("a proof line is not base64 of a 32-byte hash"))?;
            proof.push(h);
        }
        Ok(Self {
            old_size: old,
            proof,
            checkpoint: rest.to_vec(),
        })
    }
}

/// The last checkpoint a witness cosigned for one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestCheckpoint {
    /// Its tree size.
    pub size: u64,
    /// Its root hash.
    pub root: Hash,
    /// The signed checkpoint note as submitted.
    pub note: Vec<u8>,
}

/// Two checkpoints of one log at one size with different roots, both
/// validly signed by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkEvidence {
    /// The log's origin.
    pub origin: String,
    /// The tree size of both.
    pub size: u64,
    /// The checkpoint the witness cosigned.
    pub cosigned: Vec<u8>,
    /// The checkpoint submitted since.
    pub submitted: Vec<u8>,
}

/// A witness's refusal to cosign, mapped to the spec's HTTP statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The body, note or checkpoint is malformed (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The old size is larger than the checkpoint's size (400).
    #[error("old size {old_size} is larger than the checkpoint's size {size}")]
    OldSizeAfterCheckpoint {
        /// The size the request says the witness last cosigned.
        old_size: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The witness does not know the checkpoint's origin (404).
    #[error("unknown log origin {0:?}")]
    UnknownOrigin(String),
    /// No valid signature from the log's key, or a failing one (403).
    #[error("checkpoint signature: {0}")]
    BadSignature(NoteError),
    /// The old size is not the size last cosigned (409); the body says the
    /// size last cosigned.
    #[error("old size {old_size} is not the size last cosigned, {known_size}")]
    Conflict {
        /// The old size the client sent.
        old_size: u64,
        /// The size the witness last cosigned (0 if none).
        known_size: u64,
        /// The submitted checkpoint's size: below `known_size`, the log
        /// (or someone replaying its old checkpoints) is behind what was
        /// cosigned.
        size: u64,
    },
    /// A checkpoint of size 0 whose root is not the empty tree's (422).
    #[error("a checkpoint of size 0 must have the empty tree's root")]
    EmptyTreeRoot,
    /// A non-empty proof from old size 0 (422).
    #[error("the consistency proof from size 0 must be empty")]
    ProofFromZero,
    /// The consistency proof does not verify (422).
    #[error("consistency proof from {old_size} to {size}: {error}")]
    Inconsistent {
        /// The size the proof starts from (the witness's last cosigned size).
        old_size: u64,
        /// The checkpoint's size.
        size: u64,
        /// Why it failed.
        error: MerkleError,
    },
    /// The same size as last cosigned with another root: the log forked
    /// (422). Both checkpoints are the evidence.
    #[error("fork: another root at size {}, the size already cosigned", .0.size)]
    Fork(Box<ForkEvidence>),
    /// The caller's clock gave a time a cosignature cannot carry (500).
    #[error("cannot cosign at this time: {0}")]
    Clock(CosignatureError),
}

impl Refusal {
    /// The HTTP status the spec gives this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) | Refusal::OldSizeAfterCheckpoint { .. } => 400,
            Refusal::UnknownOrigin(_) => 404,
            Refusal::BadSignature(_) => 403,
            Refusal::Conflict { .. } => 409,
            Refusal::EmptyTreeRoot
            | Refusal::ProofFromZero
            | Refusal::Inconsistent { .. }
            | Refusal::Fork(_) => 422,
            Refusal::Clock(_) => 500,
        }
    }

    /// The response body: for `409 Conflict`, the size last cosigned and a
    /// newline (with [`CONFLICT_CONTENT_TYPE`]); otherwise the reason.
    pub fn body(&self) -> String {
        match self {
            Refusal::Conflict { known_size, .. } => format!("{known_size}\n"),
            other => format!("{other}\n"),
        }
    }
}

/// A successful `add-checkpoint`: the response body and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// The response body: the cosignature line.
    pub body: String,
    /// The cosignature's timestamp.
    pub timestamp: u64,
    /// The checkpoint cosigned.
    pub checkpoint: Checkpoint,
}

#[derive(Debug, Clone)]
struct KnownLog {
    verifier: Ed25519Verifier,
    latest: Option<LatestCheckpoint>,
}

/// A witness: its cosigning key, the logs it knows, what it last cosigned
/// for each, and the forks it has seen.
#[derive(Debug)]
pub struct Witness {
    signer: CosignatureSigner,
    logs: BTreeMap<String, KnownLog>,
    evidence: Vec<ForkEvidence>,
}

impl Witness {
    /// A witness cosigning with `signer`, knowing no log yet.
    pub fn new(signer: CosignatureSigner) -> Self {
        Self {
            signer,
            logs: BTreeMap::new(),
            evidence: Vec::new(),
        }
    }

    /// Trusts the log of `origin`, whose checkpoints `verifier` signs.
    /// Replaces the key of a known origin, keeping what was cosigned.
    pub fn add_log(&mut self, origin: &str, verifier: Ed25519Verifier) {
        match self.logs.get_mut(origin) {
            Some(log) => log.verifier = verifier,
            None => {
                self.logs.insert(
                    origin.to_owned(),
                    KnownLog {
                        verifier,
                        latest: None,
                    },
                );
            }
        }
    }

    /// Restores the last checkpoint cosigned for a known origin, as
    /// persisted; the note must still verify and match.
    pub fn restore(&mut self, origin: &str, latest: LatestCheckpoint) -> Result<(), Refusal> {
        let log = self
            .logs
            .get_mut(origin)
            .ok_or_else(|| Refusal::UnknownOrigin(origin.to_owned()))?;
        let opened = Checkpoint::open(&latest.note, &[&log.verifier as &dyn NoteVerifier])
            .map_err(checkpoint_refusal)?;
        let c = opened.checkpoint;
        if c.origin() != origin || c.size() != latest.size || *c.root() != latest.root {
            return Err(Refusal::Malformed(
                "the restored checkpoint does not match its size and root".into(),
            ));
        }
        log.latest = Some(latest);
        Ok(())
    }

    /// The last checkpoint cosigned for `origin`: what to persist.
    pub fn latest(&self, origin: &str) -> Option<&LatestCheckpoint> {
        self.logs.get(origin).and_then(|l| l.latest.as_ref())
    }

    /// Every fork seen.
    pub fn evidence(&self) -> &[ForkEvidence] {
        &self.evidence
    }

    /// Handles an `add-checkpoint` body at time `now` (POSIX seconds).
    pub fn add_checkpoint(&mut self, body: &[u8], now: u64) -> Result<Cosigned, Refusal> {
        let req = AddCheckpointRequest::parse(body)?;
        // The origin picks the key, so read it before verifying.
        let unverified = Note::parse(&req.checkpoint)
            .map_err(|e| Refusal::Malformed(format!("checkpoint note: {e}")))?;
        let origin = Checkpoint::from_text(unverified.text())
            .map_err(|e| Refusal::Malformed(e.to_string()))?
            .origin()
            .to_owned();
        let log = self
            .logs
            .get_mut(&origin)
            .ok_or_else(|| Refusal::UnknownOrigin(origin.clone()))?;
        let opened = Checkpoint::open(&req.checkpoint, &[&log.verifier as &dyn NoteVerifier])
            .map_err(checkpoint_refusal)?;
        let c = opened.checkpoint;
        let size = c.size();
        if req.old_size > size {
            return Err(Refusal::OldSizeAfterCheckpoint {
                old_size: req.old_size,
                size,
            });
        }
        let known_size = log.latest.as_ref().map_or(0, |l| l.size);
        if req.old_size != known_size {
            return Err(Refusal::Conflict {
                old_size: req.old_size,
                known_size,
                size,
            });
        }
        if size == 0 && *c.root() != merkle::empty_root() {
            return Err(Refusal::EmptyTreeRoot);
        }
        if req.old_size == 0 && !req.proof.is_empty() {
            return Err(Refusal::ProofFromZero);
        }
        if let Some(latest) = &log.latest {
            if size == latest.size && *c.root() != latest.root {
                let evidence = ForkEvidence {
                    origin,
                    size,
                    cosigned: latest.note.clone(),
                    submitted: req.checkpoint.clone(),
                };
                self.evidence.push(evidence.clone());
                return Err(Refusal::Fork(Box::new(evidence)));
            }
            merkle::verify_consistency(latest.size, size, &latest.root, c.root(), &req.proof)
                .map_err(|error| Refusal::Inconsistent {
                    old_size: latest.size,
                    size,
                    error,
                })?;
        }
        let sig = self
            .signer
            .cosign(&c.to_text(), now)
            .map_err(Refusal::Clock)?;
        log.latest = Some(LatestCheckpoint {
            size,
            root: *c.root(),
            note: req.checkpoint,
        });
        Ok(Cosigned {
            body: sig.line(),
            timestamp: now,
            checkpoint: c,
        })
    }
}

/// The checkpoint an `add-checkpoint` body carries, parsed but not
/// verified: for a shell to say which log and size a refusal was about
/// (every refusal but 400, 403 and 404 comes after the signature check).
pub fn submitted_checkpoint(body: &[u8]) -> Option<Checkpoint> {
    let req = AddCheckpointRequest::parse(body).ok()?;
    let note = Note::parse(&req.checkpoint).ok()?;
    Checkpoint::from_text(note.text()).ok()
}

fn checkpoint_refusal(e: CheckpointError) -> Refusal {
    match e {
        CheckpointError::Note(
            e @ (NoteError::NoKnownSignature | NoteError::InvalidSignature { .. }),
        ) => Refusal::BadSignature(e),
        other => Refusal::Malformed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosignature::CosignatureVerifier;
    use crate::log::Log;
    use crate::note::Ed25519Signer;
    use crate::storage::MemoryStorage;
    use proptest::prelude::*;

    const ORIGIN: &str = "example.com/log";
    const NOW: u64 = 1_700_000_000;

    fn log_key() -> Ed25519Signer {
        Ed25519Signer::from_seed(ORIGIN, &[1; 32]).unwrap()
    }

    fn witness() -> Witness {
        let mut w =
            Witness::new(CosignatureSigner::from_seed("witness.example/w", &[2; 32]).unwrap());
        w.add_log(ORIGIN, log_key().verifier());
        w
    }

    fn log_with(entries: &[&[u8]]) -> Log<MemoryStorage> {
        let mut log = Log::open(MemoryStorage::new()).unwrap();
        for e in entries {
            log.append(e).unwrap();
        }
        log
    }

    fn request(log: &Log<MemoryStorage>, old: u64, signer: &Ed25519Signer) -> Vec<u8> {
        let note = log.checkpoint(ORIGIN).unwrap().sign(signer).unwrap();
        AddCheckpointRequest {
            old_size: old,
            proof: log
                .consistency_proof(old.min(log.size()), log.size())
                .unwrap(),
            checkpoint: note.into_bytes(),
        }
        .to_bytes()
    }

    #[test]
    fn spec_example_request_parses_and_round_trips() {
        let body = "old 20852014\n\
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
\n\
example.com/behind-the-sofa\n\
20852163\n\
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
\n\
\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
        let req = AddCheckpointRequest::parse(body.as_bytes()).unwrap();
        assert_eq!(req.old_size, 20_852_014);
        assert_eq!(req.proof.len(), 4);
        assert!(req.checkpoint.starts_with(b"example.com/behind-the-sofa\n"));
        assert_eq!(req.to_bytes(), body.as_bytes());
    }

    #[test]
    fn malformed_requests_are_400() {
        let h = BASE64.encode([0u8; 32]);
        for bad in [
            "".to_owned(),
            "old 1".to_owned(),
            "old 01\n\nx".to_owned(),
            "old -1\n\nx".to_owned(),
            "new 1\n\nx".to_owned(),
            format!("old 1\n{h}\n"),
            "old 1\nAAAA\n\nx".to_owned(),
            format!("old 1\n{}\nx", format!("{h}\n").repeat(64)),
            "old 0\n\nnot a note".to_owned(),
        ] {
            let err = witness().add_checkpoint(bad.as_bytes(), NOW).unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}: {err}");
        }
    }

    #[test]
    fn cosigns_then_follows_the_log() {
        let mut w = witness();
        let key = log_key();
        let mut log = log_with(&[b"a", b"b", b"c"]);
        let ok = w.add_checkpoint(&request(&log, 0, &key), NOW).unwrap();
        // The cosignature verifies on the checkpoint.
        let wv: CosignatureVerifier = w.signer.verifier();
        let mut note = Note::parse(&w.latest(ORIGIN).unwrap().note).unwrap();
        note.add_signature(
            crate::note::NoteSignature::parse_line(ok.body.trim_end_matches('\n')).unwrap(),
        );
        Note::open(note.to_text().as_bytes(), &[&wv]).unwrap();
        log.append(b"d").unwrap();
        log.append(b"e").unwrap();
        w.add_checkpoint(&request(&log, 3, &key), NOW + 1).unwrap();
        assert_eq!(w.latest(ORIGIN).unwrap().size, 5);
        // Same checkpoint again: fine, same root.
        w.add_checkpoint(&request(&log, 5, &key), NOW + 2).unwrap();
    }

    #[test]
    fn refusals_have_the_specs_statuses() {
        let mut w = witness();
        let key = log_key();
        let log = log_with(&[b"a", b"b", b"c"]);
        w.add_checkpoint(&request(&log, 0, &key), NOW).unwrap();

        // Stale old size: 409 with the known size.
        let err = w.add_checkpoint(&request(&log, 0, &key), NOW).unwrap_err();
        assert_eq!(err.status(), 409);
        assert_eq!(err.body(), "3\n");
        assert!(matches!(
            err,
            Refusal::Conflict {
                old_size: 0,
                known_size: 3,
                size: 3
            }
        ));
        assert_eq!(
            submitted_checkpoint(&request(&log, 0, &key))
                .map(|c| (c.size(), c.origin().to_owned())),
            Some((3, ORIGIN.to_owned()))
        );
        assert_eq!(submitted_checkpoint(b"old 0\n\nnot a note"), None);

        // Unknown origin: 404.
        let mut other = Witness::new(CosignatureSigner::from_seed("w2", &[3; 32]).unwrap());
        assert_eq!(
            other
                .add_checkpoint(&request(&log, 0, &key), NOW)
                .unwrap_err()
                .status(),
            404
        );

        // Signed by another key: 403.
        let impostor = Ed25519Signer::from_seed(ORIGIN, &[9; 32]).unwrap();
        assert_eq!(
            w.add_checkpoint(&request(&log, 3, &impostor), NOW)
                .unwrap_err()
                .status(),
            403
        );
        // A known key's broken signature: 403.
        let mut body = request(&log, 3, &key);
        let at = body.len() - 10;
        body[at] = if body[at] == b'A' { b'B' } else { b'A' };
        assert_eq!(w.add_checkpoint(&body, NOW).unwrap_err().status(), 403);

        // Old size above the checkpoint's: 400.
        let small = log_with(&[b"a"]);
        assert_eq!(
            w.add_checkpoint(&request(&small, 3, &key), NOW)
                .unwrap_err()
                .status(),
            400
        );

        // A bad consistency proof: 422.
        let bigger = log_with(&[b"a", b"b", b"c", b"d", b"e"]);
        let mut req = AddCheckpointRequest::parse(&request(&bigger, 3, &key)).unwrap();
        req.proof[0].0[0] ^= 1;
        let err = w.add_checkpoint(&req.to_bytes(), NOW).unwrap_err();
        assert_eq!(err.status(), 422);
        assert!(matches!(err, Refusal::Inconsistent { .. }));

        // A log that rewrote history, proving from its own tree: 422.
        let rewritten = log_with(&[b"a", b"X", b"c", b"d", b"e"]);
        assert!(matches!(
            w.add_checkpoint(&request(&rewritten, 3, &key), NOW),
            Err(Refusal::Inconsistent { .. })
        ));
        assert_eq!(w.latest(ORIGIN).unwrap().size, 3);

        // Clock at 0: nothing cosigned, nothing recorded.
        assert_eq!(
            w.add_checkpoint(&request(&bigger, 3, &key), 0)
                .unwrap_err()
                .status(),
            500
        );
        assert_eq!(w.latest(ORIGIN).unwrap().size, 3);
    }

    #[test]
    fn size_zero_rules() {
        let key = log_key();
        let mut w = witness();
        let empty = log_with(&[]);
        w.add_checkpoint(&request(&empty, 0, &key), NOW).unwrap();
        // Size 0 with a non-empty root: 422.
        let c = Checkpoint::new(ORIGIN, 0, Hash([5; 32]), vec![]).unwrap();
        let body = AddCheckpointRequest {
            old_size: 0,
            proof: vec![],
            checkpoint: c.sign(&key).unwrap().into_bytes(),
        };
        assert_eq!(
            w.add_checkpoint(&body.to_bytes(), NOW),
            Err(Refusal::EmptyTreeRoot)
        );
        // A proof from 0: 422.
        let log = log_with(&[b"a", b"b"]);
        let mut req = AddCheckpointRequest::parse(&request(&log, 0, &key)).unwrap();
        req.proof.push(Hash([1; 32]));
        assert_eq!(
            w.add_checkpoint(&req.to_bytes(), NOW),
            Err(Refusal::ProofFromZero)
        );
    }

    #[test]
    fn a_fork_is_refused_and_kept() {
        let key = log_key();
        let mut w = witness();
        let honest = log_with(&[b"a", b"b", b"c"]);
        let forked = log_with(&[b"a", b"b", b"Z"]);
        w.add_checkpoint(&request(&honest, 0, &key), NOW).unwrap();
        let fork = request(&forked, 3, &key);
        let err = w.add_checkpoint(&fork, NOW).unwrap_err();
        assert_eq!(err.status(), 422);
        let Refusal::Fork(evidence) = err else {
            panic!("not a fork: {err}")
        };
        let v = key.verifier();
        let a = Checkpoint::open(&evidence.cosigned, &[&v])
            .unwrap()
            .checkpoint;
        let b = Checkpoint::open(&evidence.submitted, &[&v])
            .unwrap()
            .checkpoint;
        assert_eq!((a.size(), b.size()), (3, 3));
        assert_ne!(a.root(), b.root());
        assert_eq!(w.evidence(), &[*evidence]);
        // The witness still follows the checkpoint it cosigned.
        assert_eq!(w.latest(ORIGIN).unwrap().root, honest.root().unwrap());
    }

    #[test]
    fn restore_checks_the_note() {
        let key = log_key();
        let mut w = witness();
        let log = log_with(&[b"a"]);
        w.add_checkpoint(&request(&log, 0, &key), NOW).unwrap();
        let saved = w.latest(ORIGIN).unwrap().clone();
        let mut again = witness();
        again.restore(ORIGIN, saved.clone()).unwrap();
        assert_eq!(again.latest(ORIGIN), Some(&saved));
        let mut wrong = saved;
        wrong.size = 2;
        assert!(witness().restore(ORIGIN, wrong).is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Append to the honest log (and to the fork, which diverges once
        /// `Diverge` ran).
        Append(u8),
        /// From now on the fork appends other entries.
        Diverge,
        /// Submit the honest or forked log's checkpoint, with the old size
        /// the witness knows or a random one.
        Submit { forked: bool, old: Option<u8> },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1u8..20).prop_map(Op::Append),
            1 => Just(Op::Diverge),
            4 => (any::<bool>(), proptest::option::weighted(0.2, any::<u8>()))
                .prop_map(|(forked, old)| Op::Submit { forked, old }),
        ]
    }

    proptest! {
        /// Whatever a (possibly forking) log submits, the witness never
        /// cosigns two roots at one size, only ever cosigns checkpoints
        /// consistent with what it cosigned before, and calls a fork a fork.
        #[test]
        fn never_cosigns_two_roots_at_one_size(ops in prop::collection::vec(op(), 1..40)) {
            let key = log_key();
            let mut w = witness();
            let mut honest = log_with(&[]);
            let mut fork = log_with(&[]);
            let mut diverged = false;
            let mut cosigned: BTreeMap<u64, Hash> = BTreeMap::new();
            let mut last: Option<(u64, Hash)> = None;
            let mut counter = 0u32;
            for op in ops {
                match op {
                    Op::Append(n) => {
                        for _ in 0..n {
                            counter += 1;
                            honest.append(&counter.to_be_bytes()).unwrap();
                            let mut e = counter.to_be_bytes().to_vec();
                            if diverged {
                                e.push(0xff);
                            }
                            fork.append(&e).unwrap();
                        }
                    }
                    Op::Diverge => diverged = true,
                    Op::Submit { forked, old } => {
                        let log = if forked { &fork } else { &honest };
                        let known = w.latest(ORIGIN).map_or(0, |l| l.size);
                        let old = old.map_or(known, u64::from);
                        let result = w.add_checkpoint(&request(log, old, &key), NOW);
                        let root = log.root().unwrap();
                        match result {
                            Ok(c) => {
                                prop_assert_eq!(old, known);
                                let size = c.checkpoint.size();
                                if let Some(prev) = cosigned.insert(size, root) {
                                    prop_assert_eq!(prev, root, "two roots cosigned at size {}", size);
                                }
                                if let Some((ls, lr)) = last {
                                    prop_assert!(size >= ls);
                                    let proof = log.consistency_proof(ls, size).unwrap();
                                    prop_assert!(merkle::verify_consistency(ls, size, &lr, &root, &proof).is_ok());
                                }
                                last = Some((size, root));
                            }
                            Err(Refusal::Fork(e)) => {
                                prop_assert_eq!(e.size, log.size());
                                prop_assert_eq!(cosigned.get(&e.size).copied(), Some(w.latest(ORIGIN).unwrap().root));
                                prop_assert_ne!(w.latest(ORIGIN).unwrap().root, root);
                            }
                            Err(Refusal::Conflict { known_size, .. }) => {
                                prop_assert_eq!(known_size, known);
                                prop_assert_ne!(old, known);
                            }
                            Err(Refusal::OldSizeAfterCheckpoint { .. }) => prop_assert!(old > log.size()),
                            Err(Refusal::Inconsistent { .. }) => {
                                // Only a log that is not an extension of what
                                // was cosigned, or is behind it, is refused.
                                let (ls, lr) = last.unwrap();
                                let extends = log.size() >= ls && log.tree_hash(ls).unwrap() == lr;
                                prop_assert!(!extends);
                            }
                            Err(other) => prop_assert!(false, "unexpected refusal {}", other),
                        }
                    }
                }
            }
        }
    }

    proptest! {
        /// Parsing a body never panics, and requests round-trip.
        #[test]
        fn request_parse_is_total_and_round_trips(
            bytes in prop::collection::vec(any::<u8>(), 0..400),
            old in any::<u64>(),
            proof in prop::collection::vec(any::<[u8; 32]>(), 0..=MAX_PROOF_LINES),
            checkpoint in prop::collection::vec(any::<u8>(), 0..100),
        ) {
            let _ = AddCheckpointRequest::parse(&bytes);
            let _ = witness().add_checkpoint(&bytes, NOW);
            let req = AddCheckpointRequest {
                old_size: old,
                proof: proof.into_iter().map(Hash).collect(),
                checkpoint,
            };
            prop_assert_eq!(AddCheckpointRequest::parse(&req.to_bytes()).unwrap(), req);
        }
    }
}
