//! Submitting this server's checkpoints to its witnesses, sans-IO: for
//! each witness, what to send next ([`Submitter::plan`]) and what its
//! answer means ([`Submitter::answer`]). The shell (in [`crate::server`])
//! reads the checkpoint, computes the consistency proof, POSTs the
//! request, serves the cosignatures with the checkpoint and exports the
//! state as metrics.
//!
//! A witness says, with `409`, the size it last cosigned; a size beyond
//! this server's log means the log was rolled back (restored from an old
//! copy) or forked, and a `422` that the witness holds a checkpoint this
//! log is not consistent with. Both raise an [`Alarm`] that stays until
//! the witness cosigns again.

use grompi_tlog::checkpoint::Checkpoint;
use grompi_tlog::cosignature::CosignatureVerifier;
use grompi_tlog::merkle::Hash;
use grompi_tlog::note::NoteSignature;

/// Why a witness does not cosign this log: what an operator must look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alarm {
    /// The witness has cosigned a larger tree than this log holds.
    Behind {
        /// The size the witness cosigned.
        witness_size: u64,
        /// This log's size.
        log_size: u64,
    },
    /// The witness refused the checkpoint as inconsistent with what it
    /// cosigned (`422`).
    Refused {
        /// Its answer's body.
        reason: String,
    },
}

impl std::fmt::Display for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Alarm::Behind {
                witness_size,
                log_size,
            } => write!(
                f,
                "the witness has cosigned {witness_size} entries of this log, which holds \
                 {log_size}: the log was rolled back (restored from an old copy?) or forked"
            ),
            Alarm::Refused { reason } => write!(
                f,
                "the witness refuses this log's checkpoint as inconsistent with the one it \
                 cosigned: {reason}"
            ),
        }
    }
}

/// What to do next for one witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// It has cosigned this checkpoint.
    UpToDate,
    /// Send the checkpoint with a consistency proof from `old`.
    Submit {
        /// The size it last cosigned, as far as is known (0 at first).
        old: u64,
    },
    /// It cosigned a larger tree than this log: nothing can be sent.
    Behind(Alarm),
}

/// What a witness's answer meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It cosigned: the line to serve with the checkpoint.
    Cosigned(NoteSignature),
    /// It knows another size: submit again (with [`Submitter::plan`]).
    Retry,
    /// It refused in a way that shows this log rolled back or forked.
    Alarm(Alarm),
    /// Anything else: its status and body.
    Failed {
        /// The HTTP status.
        status: u16,
        /// Why, in words.
        reason: String,
    },
}

/// One witness and what is known of it.
#[derive(Debug, Clone)]
pub struct WitnessPeer {
    /// The peer's name.
    pub name: String,
    /// Its cosigner key.
    pub verifier: CosignatureVerifier,
    /// The size it last cosigned, as far as is known.
    pub known: Option<u64>,
    /// The checkpoint (size, root) it last cosigned for this server.
    pub cosigned: Option<(u64, Hash)>,
    /// Why it does not cosign, if it does not.
    pub alarm: Option<Alarm>,
}

/// The witnesses of this server's log.
#[derive(Debug, Clone, Default)]
pub struct Submitter {
    /// One per witness, in configuration order.
    pub peers: Vec<WitnessPeer>,
}

fn short(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    t.chars().take(300).collect()
}

impl Submitter {
    /// Witnesses named with their cosigner keys; nothing known yet.
    pub fn new(peers: impl IntoIterator<Item = (String, CosignatureVerifier)>) -> Self {
        Self {
            peers: peers
                .into_iter()
                .map(|(name, verifier)| WitnessPeer {
                    name,
                    verifier,
                    known: None,
                    cosigned: None,
                    alarm: None,
                })
                .collect(),
        }
    }

    /// What to send witness `peer` for `checkpoint` (this log's latest).
    pub fn plan(&mut self, peer: usize, checkpoint: &Checkpoint) -> Plan {
        let Some(p) = self.peers.get_mut(peer) else {
            return Plan::UpToDate;
        };
        if p.cosigned == Some((checkpoint.size(), *checkpoint.root())) {
            return Plan::UpToDate;
        }
        let old = p.known.unwrap_or(0);
        if old > checkpoint.size() {
            let alarm = Alarm::Behind {
                witness_size: old,
                log_size: checkpoint.size(),
            };
            p.alarm = Some(alarm.clone());
            return Plan::Behind(alarm);
        }
        Plan::Submit { old }
    }

    /// Takes witness `peer`'s answer (`status`, `body`) to `checkpoint`.
    pub fn answer(
        &mut self,
        peer: usize,
        checkpoint: &Checkpoint,
        status: u16,
        body: &[u8],
    ) -> Outcome {
        let Some(p) = self.peers.get_mut(peer) else {
            return Outcome::Failed {
                status,
                reason: "no such witness".into(),
            };
        };
        let text = checkpoint.to_text();
        match status {
            200 => {
                let found = String::from_utf8_lossy(body)
                    .lines()
                    .filter_map(|l| NoteSignature::parse_line(l).ok())
                    .find(|s| {
                        s.name == grompi_tlog::note::NoteVerifier::name(&p.verifier)
                            && s.key_id == grompi_tlog::note::NoteVerifier::key_id(&p.verifier)
                            && p.verifier
                                .verify_cosignature(text.as_bytes(), &s.signature)
                                .is_ok()
                    });
                match found {
                    Some(sig) => {
                        p.known = Some(checkpoint.size());
                        p.cosigned = Some((checkpoint.size(), *checkpoint.root()));
                        p.alarm = None;
                        Outcome::Cosigned(sig)
                    }
                    None => Outcome::Failed {
                        status,
                        reason: "the answer holds no valid cosignature by the configured key"
                            .into(),
                    },
                }
            }
            409 => {
                let known = std::str::from_utf8(body)
                    .ok()
                    .and_then(|b| b.trim().parse::<u64>().ok());
                match known {
                    Some(k) if Some(k) == p.known => Outcome::Failed {
                        status,
                        reason: format!("the witness says {k} again"),
                    },
                    Some(k) => {
                        p.known = Some(k);
                        if k > checkpoint.size() {
                            let alarm = Alarm::Behind {
                                witness_size: k,
                                log_size: checkpoint.size(),
                            };
                            p.alarm = Some(alarm.clone());
                            Outcome::Alarm(alarm)
                        } else {
                            Outcome::Retry
                        }
                    }
                    None => Outcome::Failed {
                        status,
                        reason: format!("a 409 whose body is not a size: {}", short(body)),
                    },
                }
            }
            422 => {
                let alarm = Alarm::Refused {
                    reason: short(body),
                };
                p.alarm = Some(alarm.clone());
                Outcome::Alarm(alarm)
            }
            _ => Outcome::Failed {
                status,
                reason: short(body),
            },
        }
    }
}

/// The checkpoint `note` with `cosignatures` appended: what is served, as
/// a C2SP signed note carrying the log's signature and the witnesses'.
pub fn with_cosignatures(note: &str, cosignatures: &[NoteSignature]) -> String {
    let mut out = note.to_owned();
    for c in cosignatures {
        let line = c.line();
        if !out.contains(&line) {
            out.push_str(&line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_tlog::cosignature::CosignatureSigner;
    use grompi_tlog::log::Log;
    use grompi_tlog::note::{Ed25519Signer, Note, NoteVerifier};
    use grompi_tlog::storage::MemoryStorage;
    use grompi_tlog::witness::{AddCheckpointRequest, Witness};
    use proptest::prelude::*;

    const ORIGIN: &str = "example.org/order-0";

    fn log_key() -> Ed25519Signer {
        Ed25519Signer::from_seed(ORIGIN, &[1; 32]).unwrap()
    }

    fn cosigner() -> CosignatureSigner {
        CosignatureSigner::from_seed("example.org/order-1/witness", &[2; 32]).unwrap()
    }

    fn witness() -> Witness {
        let mut w = Witness::new(cosigner());
        w.add_log(ORIGIN, log_key().verifier());
        w
    }

    fn submitter() -> Submitter {
        Submitter::new([("order1".to_owned(), cosigner().verifier())])
    }

    /// One round against an in-memory witness: plan, send, answer, retry
    /// once as the shell does.
    fn round(s: &mut Submitter, w: &mut Witness, log: &Log<MemoryStorage>) -> Option<Outcome> {
        let c = log.checkpoint(ORIGIN).unwrap();
        let note = c.sign(&log_key()).unwrap();
        let mut last = None;
        for _ in 0..2 {
            let old = match s.plan(0, &c) {
                Plan::UpToDate => return last,
                Plan::Behind(a) => return Some(Outcome::Alarm(a)),
                Plan::Submit { old } => old,
            };
            let body = AddCheckpointRequest {
                old_size: old,
                proof: log.consistency_proof(old, log.size()).unwrap(),
                checkpoint: note.clone().into_bytes(),
            }
            .to_bytes();
            let (status, answer) = match w.add_checkpoint(&body, 1_800_000_000) {
                Ok(c) => (200, c.body.into_bytes()),
                Err(r) => (r.status(), r.body().into_bytes()),
            };
            let outcome = s.answer(0, &c, status, &answer);
            let retry = outcome == Outcome::Retry;
            last = Some(outcome);
            if !retry {
                break;
            }
        }
        last
    }

    fn log_of(entries: &[&[u8]]) -> Log<MemoryStorage> {
        let mut log = Log::open(MemoryStorage::new()).unwrap();
        for e in entries {
            log.append(e).unwrap();
        }
        log
    }

    #[test]
    fn cosignatures_are_collected_and_served_with_the_checkpoint() {
        let mut s = submitter();
        let mut w = witness();
        let mut log = log_of(&[b"a", b"b"]);
        let Some(Outcome::Cosigned(sig)) = round(&mut s, &mut w, &log) else {
            panic!("not cosigned")
        };
        let note = log.checkpoint(ORIGIN).unwrap().sign(&log_key()).unwrap();
        let served = with_cosignatures(&note, &[sig.clone(), sig]);
        let wv = cosigner().verifier();
        let opened = Note::open(served.as_bytes(), &[&log_key().verifier(), &wv]).unwrap();
        assert_eq!(opened.verified_by.len(), 2);
        assert_eq!(served.matches("order-1/witness").count(), 1);
        // Up to date until the log grows.
        assert_eq!(round(&mut s, &mut w, &log), None);
        log.append(b"c").unwrap();
        assert!(matches!(
            round(&mut s, &mut w, &log),
            Some(Outcome::Cosigned(_))
        ));
        assert_eq!(s.peers[0].known, Some(3));
    }

    #[test]
    fn a_new_submitter_learns_the_size_from_409() {
        let mut w = witness();
        let log = log_of(&[b"a", b"b", b"c"]);
        round(&mut submitter(), &mut w, &log);
        // A restarted server knows nothing: 409, then cosigned.
        let mut s = submitter();
        assert!(matches!(
            round(&mut s, &mut w, &log),
            Some(Outcome::Cosigned(_))
        ));
    }

    #[test]
    fn a_rolled_back_log_raises_an_alarm_until_cosigned_again() {
        let mut w = witness();
        let log = log_of(&[b"a", b"b", b"c", b"d"]);
        round(&mut submitter(), &mut w, &log);
        // Restored from a copy of size 2, then a start entry.
        let mut rolled = log_of(&[b"a", b"b", b"start"]);
        let mut s = submitter();
        let out = round(&mut s, &mut w, &rolled);
        assert_eq!(
            out,
            Some(Outcome::Alarm(Alarm::Behind {
                witness_size: 4,
                log_size: 3
            }))
        );
        assert!(
            s.peers[0]
                .alarm
                .as_ref()
                .unwrap()
                .to_string()
                .contains("rolled back")
        );
        // Grown past the witness's size: refused as inconsistent.
        rolled.append(b"x").unwrap();
        rolled.append(b"y").unwrap();
        let out = round(&mut s, &mut w, &rolled);
        assert!(
            matches!(out, Some(Outcome::Alarm(Alarm::Refused { .. }))),
            "{out:?}"
        );
        assert!(s.peers[0].alarm.is_some());
    }

    #[test]
    fn answers_that_are_not_cosignatures_are_failures() {
        let mut s = submitter();
        let c = log_of(&[b"a"]).checkpoint(ORIGIN).unwrap();
        // A cosignature by another key, or over another checkpoint.
        let other = CosignatureSigner::from_seed("example.org/order-1/witness", &[3; 32]).unwrap();
        let line = other.cosign(&c.to_text(), 5).unwrap().line();
        assert!(matches!(
            s.answer(0, &c, 200, line.as_bytes()),
            Outcome::Failed { .. }
        ));
        let c2 = log_of(&[b"b"]).checkpoint(ORIGIN).unwrap();
        let line = cosigner().cosign(&c2.to_text(), 5).unwrap().line();
        assert!(matches!(
            s.answer(0, &c, 200, line.as_bytes()),
            Outcome::Failed { .. }
        ));
        assert!(matches!(
            s.answer(0, &c, 409, b"x\n"),
            Outcome::Failed { .. }
        ));
        assert!(matches!(
            s.answer(0, &c, 500, b"down"),
            Outcome::Failed { status: 500, .. }
        ));
        assert_eq!(s.peers[0].cosigned, None);
        let _ = NoteVerifier::name(&cosigner().verifier());
    }

    proptest! {
        /// An honest log that only grows is always cosigned by the honest
        /// witness, whatever the submitter forgets (restarts) on the way,
        /// and never raises an alarm.
        #[test]
        fn an_honest_growing_log_is_always_cosigned(
            steps in prop::collection::vec((0u8..5, any::<bool>()), 1..20)
        ) {
            let mut w = witness();
            let mut s = submitter();
            let mut log = log_of(&[]);
            let mut n = 0u32;
            for (grow, restart) in steps {
                for _ in 0..grow {
                    n += 1;
                    log.append(&n.to_be_bytes()).unwrap();
                }
                if restart {
                    s = submitter();
                }
                let out = round(&mut s, &mut w, &log);
                prop_assert!(
                    matches!(out, None | Some(Outcome::Cosigned(_))),
                    "{:?}", out
                );
                prop_assert_eq!(s.peers[0].cosigned.map(|c| c.0), Some(log.size()));
                prop_assert!(s.peers[0].alarm.is_none());
            }
        }
    }
}
