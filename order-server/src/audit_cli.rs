//! `order-server log ...`: the audit log's commands, returning their
//! output as text (the binary prints it).
//!
//! `checkpoint`, `prove-inclusion`, `prove-consistency` and `export` open
//! the database, so they run while the server is stopped (redb locks the
//! file); the running server serves its checkpoint and tiles on
//! `audit_listen`. `verify` reads only a directory of tiles. `init-key`
//! makes the log key for a data directory made before the audit log.

use crate::audit_log::{self, AuditError};
use crate::config::{Config, ConfigError};
use crate::init::{self, DB_FILE, InitError};
use crate::redb_store::{RedbRead, RedbStore};
use crate::store::StoreError;
use clap::Subcommand;
use grompi_tlog::note::Ed25519Verifier;
use std::path::{Path, PathBuf};

/// An `order-server log` command.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum LogCommand {
    /// Print the log's checkpoint as it stands, signed with the log key.
    Checkpoint {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print entry N and its inclusion proof in the tree of S entries.
    ProveInclusion {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The entry's index.
        #[arg(long)]
        index: u64,
        /// The tree size (default: the log's size).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Print the consistency proof from the tree of A entries to that of B.
    ProveConsistency {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The older size.
        #[arg(long)]
        from: u64,
        /// The newer size.
        #[arg(long)]
        to: u64,
    },
    /// Write the whole log as tlog-tiles (checkpoint, tile/...) under DIR.
    Export {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The directory to write into.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Verify a copy of a log's tiles under DIR against its checkpoint.
    Verify {
        /// The directory holding `checkpoint` and `tile/...`.
        #[arg(long)]
        dir: PathBuf,
        /// The log's verifier key, `<origin>+<key id>+<base64>` (what
        /// `init` printed as `log_key`).
        #[arg(long)]
        key: String,
    },
    /// List the evidence this server's witness kept of peers' checkpoints
    /// it refused (forks, inconsistent, behind), with both checkpoints.
    /// Reads only files, so it also runs while the server runs.
    WitnessEvidence {
        /// The server's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Make the audit log key and the witness key of a data directory made
    /// before them, whichever is missing. Never replaces a key.
    InitKey {
        /// The server's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The log's origin line (default: derived from the server's
        /// public key).
        #[arg(long)]
        origin: Option<String>,
    },
}

/// Why a log command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration did not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database did not open or read.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The audit log refused.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The server's key did not load.
    #[error(transparent)]
    Init(#[from] InitError),
    /// The verifier key is not one.
    #[error("--key: {0}")]
    Key(grompi_tlog::error::NoteError),
    /// The witness key could not be made.
    #[error(transparent)]
    Witness(#[from] crate::witness::WitnessError),
}

fn with_log<T>(
    config: &Config,
    f: impl FnOnce(&RedbRead) -> Result<T, AuditError>,
) -> Result<T, CliError> {
    let store =
        RedbStore::open_existing(&config.data_dir.join(DB_FILE), Some(&config.anchor_path()))?;
    let txn = store.begin_read()?;
    let read = RedbRead::open(&txn)?;
    Ok(f(&read)?)
}

/// Runs `command` and returns what it prints.
pub fn run(command: LogCommand) -> Result<String, CliError> {
    match command {
        LogCommand::Checkpoint { config } => {
            let config = Config::load(&config)?;
            let key = audit_log::load_key(&config.log_key_path(), config.audit_origin.as_deref())?;
            with_log(&config, |r| Ok(audit_log::sign_checkpoint(r, &key)?.0))
        }
        LogCommand::ProveInclusion {
            config,
            index,
            size,
        } => {
            let config = Config::load(&config)?;
            with_log(&config, |r| {
                let proof = audit_log::prove_inclusion(r, index, size)?;
                proof.verify().map_err(AuditError::Merkle)?;
                Ok(proof.to_string())
            })
        }
        LogCommand::ProveConsistency { config, from, to } => {
            let config = Config::load(&config)?;
            with_log(&config, |r| {
                Ok(audit_log::prove_consistency(r, from, to)?.to_string())
            })
        }
        LogCommand::Export { config, dir } => {
            let config = Config::load(&config)?;
            let key = audit_log::load_key(&config.log_key_path(), config.audit_origin.as_deref())?;
            let size = with_log(&config, |r| audit_log::export(r, &key, &dir))?;
            Ok(format!("exported {size} entries to {}\n", dir.display()))
        }
        LogCommand::Verify { dir, key } => {
            let verifier = Ed25519Verifier::from_vkey(key.trim()).map_err(CliError::Key)?;
            let v = audit_log::verify_dir(&dir, &verifier)?;
            Ok(format!(
                "verified {} entries: {} attestations, {} refusals, {} security events\n",
                v.size, v.attestations, v.refusals, v.events
            ))
        }
        LogCommand::InitKey { data_dir, origin } => init_key(&data_dir, origin.as_deref()),
        LogCommand::WitnessEvidence { data_dir } => witness_evidence(&data_dir),
    }
}

fn witness_evidence(data_dir: &Path) -> Result<String, CliError> {
    let dir = data_dir.join(crate::witness::WITNESS_DIR).join("evidence");
    if !dir.exists() {
        return Ok(format!(
            "no evidence: {} does not exist (this server witnesses no log, or never has)\n",
            dir.display()
        ));
    }
    let records = crate::witness::read_evidence(&dir)?;
    let mut out = format!(
        "{} evidence record(s) in {}\n",
        records.len(),
        dir.display()
    );
    for r in records {
        out.push_str(&format!(
            "\n== {} ({})\n{}-- cosigned:\n{}-- submitted (add-checkpoint body):\n{}",
            r.dir.display(),
            r.kind.as_str(),
            r.reason,
            String::from_utf8_lossy(&r.cosigned),
            String::from_utf8_lossy(&r.submitted)
        ));
    }
    Ok(out)
}

fn init_key(data_dir: &Path, origin: Option<&str>) -> Result<String, CliError> {
    let secret = init::load_secret(data_dir)?;
    let path = data_dir.join(audit_log::LOG_KEY_FILE);
    let witness_path = data_dir.join(crate::witness::WITNESS_KEY_FILE);
    if path.exists() && witness_path.exists() {
        return Err(AuditError::KeyExists(path).into());
    }
    let mut out = String::new();
    let origin = if path.exists() {
        audit_log::load_key(&path, origin)?.name().to_owned()
    } else {
        let origin = origin
            .map(str::to_owned)
            .unwrap_or_else(|| audit_log::default_origin(&secret.public_key()));
        let verifier = audit_log::create_key(&path, &origin)?;
        out.push_str(&format!(
            "# The audit log's verifier key (its checkpoints' signer):\nlog_key = \"{}\"\n",
            verifier.vkey()
        ));
        origin
    };
    if !witness_path.exists() {
        let w = crate::witness::create_key(&witness_path, &crate::witness::default_name(&origin))?;
        out.push_str(&format!(
            "# The witness's verifier key (its cosignatures' signer):\nwitness_key = \"{}\"\n",
            w.vkey()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_tlog::checkpoint::Checkpoint;
    use grompi_tlog::merkle;
    use grompi_tlog::note::NoteVerifier;

    /// A data directory made by `init`, with a configuration, after one
    /// start of the server (its security event) and some entries.
    async fn served_once(dir: &Path) -> (PathBuf, String) {
        let data = dir.join("data");
        let out = init::init_with_origin(&data, &[], Some("example.org/order-1")).unwrap();
        let config = dir.join("order.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nrouter_certificate = \"{}\"\n",
                out.certificate.display()
            ),
        )
        .unwrap();
        let cfg = Config::load(&config).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::server::serve_until(cfg, async {
            let _ = rx.await;
        }));
        // The start event is written before the listener is bound.
        let bound = data.join(init::BOUND_ADDRS_FILE);
        for _ in 0..200 {
            if bound.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
        (config, out.log_key)
    }

    #[tokio::test]
    async fn checkpoint_and_proofs_from_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let (config, vkey) = served_once(dir.path()).await;
        let text = run(LogCommand::Checkpoint {
            config: config.clone(),
        })
        .unwrap();
        let verifier = Ed25519Verifier::from_vkey(&vkey).unwrap();
        let known: [&dyn NoteVerifier; 1] = [&verifier];
        let cp = Checkpoint::open(text.as_bytes(), &known)
            .unwrap()
            .checkpoint;
        assert_eq!(cp.origin(), "example.org/order-1");
        assert_eq!(cp.size(), 1, "one start, one security event");

        let proof = run(LogCommand::ProveInclusion {
            config: config.clone(),
            index: 0,
            size: None,
        })
        .unwrap();
        assert!(proof.starts_with("index 0\nsize 1\nroot "), "{proof}");
        assert!(
            proof.contains("# security event\n# event = \"start\""),
            "{proof}"
        );
        assert!(proof.contains(&format!("log_key = \"{vkey}\"")), "{proof}");
        // The entry's leaf is the checkpoint's root (a tree of one).
        let entry = proof
            .lines()
            .find_map(|l| l.strip_prefix("entry "))
            .unwrap();
        assert_eq!(merkle::leaf_hash(&hex::decode(entry).unwrap()), *cp.root());
        let err = run(LogCommand::ProveInclusion {
            config: config.clone(),
            index: 1,
            size: None,
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("out of range") || err.to_string().contains("index 1"),
            "{err}"
        );

        let out = dir.path().join("copy");
        run(LogCommand::Export {
            config: config.clone(),
            dir: out.clone(),
        })
        .unwrap();
        let text = run(LogCommand::Verify {
            dir: out,
            key: vkey.clone(),
        })
        .unwrap();
        assert_eq!(
            text,
            "verified 1 entries: 0 attestations, 0 refusals, 1 security events\n"
        );
        let text = run(LogCommand::ProveConsistency {
            config,
            from: 0,
            to: 1,
        })
        .unwrap();
        assert!(text.starts_with("from 0 root "), "{text}");
    }

    #[test]
    fn witness_evidence_lists_the_records() {
        use grompi_tlog::cosignature::CosignatureSigner;
        use grompi_tlog::log::Log;
        use grompi_tlog::note::Ed25519Signer;
        use grompi_tlog::storage::MemoryStorage;
        use grompi_tlog::witness::AddCheckpointRequest;
        let dir = tempfile::tempdir().unwrap();
        let text = run(LogCommand::WitnessEvidence {
            data_dir: dir.path().to_path_buf(),
        })
        .unwrap();
        assert!(text.starts_with("no evidence"), "{text}");
        let key = Ed25519Signer::from_seed("example.org/o", &[1; 32]).unwrap();
        let w = crate::witness::WitnessService::open(
            &dir.path().join(crate::witness::WITNESS_DIR),
            CosignatureSigner::from_seed("w", &[2; 32]).unwrap(),
            &[("example.org/o".into(), key.verifier())],
        )
        .unwrap();
        let body = |entries: &[&[u8]]| {
            let mut log = Log::open(MemoryStorage::new()).unwrap();
            for e in entries {
                log.append(e).unwrap();
            }
            let note = log.checkpoint("example.org/o").unwrap().sign(&key).unwrap();
            (log, note)
        };
        let (_, honest) = body(&[b"a"]);
        let (_, fork) = body(&[b"b"]);
        for (old, note, status) in [(0, &honest, 200), (1, &fork, 422)] {
            let req = AddCheckpointRequest {
                old_size: old,
                proof: vec![],
                checkpoint: note.clone().into_bytes(),
            };
            assert_eq!(
                w.add_checkpoint(&req.to_bytes(), 1_800_000_000).status,
                status
            );
        }
        let text = run(LogCommand::WitnessEvidence {
            data_dir: dir.path().to_path_buf(),
        })
        .unwrap();
        assert!(text.starts_with("1 evidence record(s)"), "{text}");
        assert!(
            text.contains("(fork)\nkind fork\norigin example.org/o\n"),
            "{text}"
        );
        assert!(text.contains(&format!("-- cosigned:\n{honest}")), "{text}");
        assert!(text.contains(&format!("old 1\n\n{fork}")), "{text}");
    }

    #[test]
    fn init_key_makes_a_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        init::init(&data, &[]).unwrap();
        std::fs::remove_file(data.join(audit_log::LOG_KEY_FILE)).unwrap();
        std::fs::remove_file(data.join(crate::witness::WITNESS_KEY_FILE)).unwrap();
        let text = run(LogCommand::InitKey {
            data_dir: data.clone(),
            origin: Some("example.org/o".into()),
        })
        .unwrap();
        assert!(text.contains("log_key = \"example.org/o+"), "{text}");
        assert!(
            text.contains("witness_key = \"example.org/o/witness+"),
            "{text}"
        );
        let err = run(LogCommand::InitKey {
            data_dir: data,
            origin: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("refusing to replace"), "{err}");
    }
}
