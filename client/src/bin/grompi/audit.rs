//! `grompi audit --network FILE`: checks every order server's audit log
//! as the network descriptor names it (docs/PROTOCOL.md section 13).
//!
//! For each `[[order_server]]` with a `log_key` and an `http://` `log_url`
//! it fetches `<log_url>/checkpoint`, verifies the log's signature, and
//! counts the valid cosignatures by the *other* servers' witnesses
//! (`witness_key`). A checkpoint that does not verify, cannot be fetched,
//! or carries fewer cosignatures than required (default: every other
//! server's witness) is an alert: the server may have been rolled back or
//! forked its log, and its peers refuse to cosign it. Exit status 0 when
//! nothing is alarming, 1 otherwise, 2 on a usage error.
//!
//! With `--network` and no conversation it needs no account: it reads only
//! the descriptor file. `grompi audit CONVERSATION` ([`run_account`]) then
//! checks every index the account accepted in the conversation against
//! each cosigned log ([`grompi_client::log_audit`]).
//!
//! The checks are [`check`] and [`grompi_client::log_audit::audit_server`]
//! (no I/O); [`run`] and [`run_account`] read, fetch and print.

use grompi_client::Client;
use grompi_client::log_audit::{self, HttpLog, ServerAudit};
use grompi_proto::ConversationId;
use grompi_proto::descriptor::{AuditLogEntry, NetworkDescriptor};
use grompi_tlog::checkpoint::Checkpoint;
use grompi_tlog::cosignature::CosignatureVerifier;
use grompi_tlog::merkle::Hash;
use grompi_tlog::note::{Ed25519Verifier, Note, NoteVerifier};
use std::path::Path;

/// Largest checkpoint read.
const MAX_CHECKPOINT: usize = 64 * 1024;

/// What the audit found about one order server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Its checkpoint verifies and carries enough cosignatures.
    Cosigned {
        /// The server's name.
        name: String,
        /// The checkpoint's size.
        size: u64,
        /// The checkpoint's root.
        root: Hash,
        /// The witnesses whose cosignature verified.
        cosigners: Vec<String>,
    },
    /// The descriptor names no audit log (or no `log_url`) for it.
    NotListed {
        /// The server's name.
        name: String,
    },
    /// An alert: the checkpoint could not be fetched, does not verify, or
    /// has too few cosignatures.
    Alert {
        /// The server's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Cosigned {
                name,
                size,
                cosigners,
                ..
            } => write!(
                f,
                "ok     {name}: {size} entries, cosigned by {}",
                if cosigners.is_empty() {
                    "nobody (none required)".to_owned()
                } else {
                    cosigners.join(", ")
                }
            ),
            Finding::NotListed { name } => {
                write!(
                    f,
                    "--     {name}: the descriptor names no audit log to fetch"
                )
            }
            Finding::Alert { name, reason } => write!(f, "ALERT  {name}: {reason}"),
        }
    }
}

/// Checks each server's fetched checkpoint (`fetched[i]`, for the `i`-th
/// server of `servers`; `None` if nothing was fetched) against its log key
/// and the other servers' witness keys, requiring `min_cosignatures`
/// (default: every other server that has a witness key).
pub fn check(
    servers: &[(String, Option<AuditLogEntry>)],
    fetched: &[Option<Result<Vec<u8>, String>>],
    min_cosignatures: Option<usize>,
) -> Vec<Finding> {
    let witnesses: Vec<Option<CosignatureVerifier>> = servers
        .iter()
        .map(|(_, a)| {
            a.as_ref()
                .and_then(|a| a.witness_key.as_deref())
                .and_then(|k| CosignatureVerifier::from_vkey(k).ok())
        })
        .collect();
    let mut out = Vec::new();
    for (i, (name, audit)) in servers.iter().enumerate() {
        let name = name.clone();
        let alert = |reason: String| Finding::Alert {
            name: name.clone(),
            reason,
        };
        let (Some(audit), Some(body)) = (audit, fetched.get(i).and_then(Option::as_ref)) else {
            out.push(Finding::NotListed { name });
            continue;
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                out.push(alert(format!("cannot fetch its checkpoint: {e}")));
                continue;
            }
        };
        let log = match Ed25519Verifier::from_vkey(&audit.log_key) {
            Ok(k) => k,
            Err(e) => {
                out.push(alert(format!("its log_key is not usable: {e}")));
                continue;
            }
        };
        let others: Vec<&CosignatureVerifier> = witnesses
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, w)| w.as_ref())
            .collect();
        let mut known: Vec<&dyn NoteVerifier> = vec![&log];
        known.extend(others.iter().map(|w| *w as &dyn NoteVerifier));
        let opened = match Note::open(body, &known) {
            Ok(n) => n,
            Err(e) => {
                out.push(alert(format!("its checkpoint does not verify: {e}")));
                continue;
            }
        };
        if !opened
            .verified_by
            .iter()
            .any(|(n, id)| n == log.name() && *id == log.key_id())
        {
            out.push(alert("its checkpoint is not signed by its log key".into()));
            continue;
        }
        let checkpoint = match Checkpoint::from_text(opened.note.text()) {
            Ok(c) if c.origin() == audit.origin => c,
            Ok(c) => {
                out.push(alert(format!(
                    "its checkpoint is for origin {:?}, not {:?}",
                    c.origin(),
                    audit.origin
                )));
                continue;
            }
            Err(e) => {
                out.push(alert(format!("its checkpoint is malformed: {e}")));
                continue;
            }
        };
        let cosigners: Vec<String> = opened
            .verified_by
            .iter()
            .filter(|(n, id)| !(n == log.name() && *id == log.key_id()))
            .map(|(n, _)| n.clone())
            .collect();
        let needed = min_cosignatures.unwrap_or(others.len());
        if cosigners.len() < needed {
            out.push(alert(format!(
                "its checkpoint of {} entries has {} of the {needed} cosignatures required \
                 (by: {}): its peers do not vouch for it, it may have been rolled back or \
                 forked its log",
                checkpoint.size(),
                cosigners.len(),
                if cosigners.is_empty() {
                    "nobody".to_owned()
                } else {
                    cosigners.join(", ")
                }
            )));
            continue;
        }
        out.push(Finding::Cosigned {
            name,
            size: checkpoint.size(),
            root: *checkpoint.root(),
            cosigners,
        });
    }
    out
}

/// GETs `<log_url>/checkpoint` (plain `http://` only), within 10 s.
async fn fetch_checkpoint(log_url: &str) -> Result<Vec<u8>, String> {
    let log = HttpLog::new(log_url)?;
    tokio::task::spawn_blocking(move || log.get("checkpoint", MAX_CHECKPOINT))
        .await
        .map_err(|e| e.to_string())?
}

/// Runs the audit of the descriptor at `network`: prints one finding per
/// order server; `Ok(true)` when any is an alert.
pub async fn run(network: &Path, min_cosignatures: Option<usize>) -> Result<bool, String> {
    let text =
        std::fs::read_to_string(network).map_err(|e| format!("read {}: {e}", network.display()))?;
    let findings = audit_text(&text, min_cosignatures)
        .await
        .map_err(|e| format!("{}: {e}", network.display()))?;
    let mut alerts = 0;
    for f in &findings {
        println!("{f}");
        if matches!(f, Finding::Alert { .. }) {
            alerts += 1;
        }
    }
    if alerts > 0 {
        println!("{alerts} alert(s)");
    }
    Ok(alerts > 0)
}

/// The findings of the audit of the descriptor `text`: one per order
/// server, after fetching every listed checkpoint.
pub async fn audit_text(
    text: &str,
    min_cosignatures: Option<usize>,
) -> Result<Vec<Finding>, String> {
    let (descriptor, logs) =
        NetworkDescriptor::parse_with_audit_logs(text).map_err(|e| e.to_string())?;
    let servers: Vec<(String, Option<AuditLogEntry>)> = descriptor
        .order_servers
        .iter()
        .map(|s| s.name.clone())
        .zip(logs)
        .collect();
    let mut fetched = Vec::new();
    for (_, a) in &servers {
        fetched.push(match a.as_ref().and_then(|a| a.log_url.as_deref()) {
            Some(url) => Some(fetch_checkpoint(url).await),
            None => None,
        });
    }
    Ok(check(&servers, &fetched, min_cosignatures))
}

/// Runs the audit of the account's descriptor `text` and, with a
/// conversation, of every index the account accepted in it against each
/// cosigned log: prints one finding per order server; `Ok(true)` when any
/// is an alert.
pub async fn run_account(
    client: &mut Client,
    text: &str,
    conversation: Option<ConversationId>,
    min_cosignatures: Option<usize>,
) -> Result<bool, String> {
    let findings = audit_text(text, min_cosignatures).await?;
    let mut alerts = 0usize;
    println!("checkpoints:");
    for f in &findings {
        println!("  {f}");
        if matches!(f, Finding::Alert { .. }) {
            alerts += 1;
        }
    }
    if let Some(id) = conversation {
        let (_, logs) =
            NetworkDescriptor::parse_with_audit_logs(text).map_err(|e| e.to_string())?;
        let input = client.audit_input(id).await.map_err(|e| e.to_string())?;
        println!(
            "conversation {}: {} accepted indices",
            id.to_hex(),
            input.accepted.len()
        );
        if let Some(e) = &input.positions_error {
            println!("  note: the router gave no log positions ({e}); the logs are searched");
        }
        for (i, f) in findings.iter().enumerate() {
            let (name, size, root) = match f {
                Finding::Cosigned {
                    name, size, root, ..
                } => (name.clone(), *size, *root),
                Finding::NotListed { name } => {
                    println!("  --     {name}: no audit log to check");
                    continue;
                }
                Finding::Alert { name, .. } => {
                    println!("  --     {name}: not checked (its checkpoint is an alert above)");
                    continue;
                }
            };
            let Some(url) = logs
                .get(i)
                .and_then(Option::as_ref)
                .and_then(|a| a.log_url.clone())
            else {
                continue;
            };
            let positions = input.positions.get(i).cloned().unwrap_or_default();
            let expected =
                log_audit::expected_entries(&id, input.accepted.iter().copied(), &positions);
            let audited = tokio::task::spawn_blocking(move || {
                HttpLog::new(&url).map(|log| log_audit::audit_server(&expected, size, root, &log))
            })
            .await
            .map_err(|e| e.to_string())?;
            alerts += print_server(&name, size, audited);
        }
    }
    if alerts > 0 {
        println!("{alerts} alert(s)");
    }
    Ok(alerts > 0)
}

/// Prints one server's conversation audit; returns its number of alerts.
fn print_server(name: &str, size: u64, audited: Result<ServerAudit, String>) -> usize {
    let a = match audited {
        Ok(a) => a,
        Err(e) => {
            println!("  ALERT  {name}: cannot read its log: {e}");
            return 1;
        }
    };
    let alerts = a.alerts();
    let waiting = a.waiting();
    let mut line = format!(
        "{} of {} indices logged in its cosigned checkpoint of {size} entries",
        a.logged(),
        a.verdicts.len()
    );
    if let (Some(first), Some(last)) = (waiting.first(), waiting.last()) {
        line.push_str(&format!(
            ", {} waiting for its next checkpoint (indices {}..={})",
            waiting.len(),
            first.0,
            last.0
        ));
    }
    if a.searched > 0 {
        line.push_str(&format!(
            "; {} found only by reading the log (the position given was missing or wrong)",
            a.searched
        ));
    }
    let mut count = alerts.len();
    if alerts.is_empty() && a.incomplete.is_none() {
        println!("  ok     {name}: {line}");
    } else {
        println!("  ALERT  {name}: {line}");
        for alert in &alerts {
            println!("           {alert}");
        }
        if let Some(why) = &a.incomplete {
            println!("           its log could not be read in full: {why}");
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
    use super::*;
    use grompi_tlog::cosignature::CosignatureSigner;
    use grompi_tlog::note::Ed25519Signer;

    struct Server {
        log: Ed25519Signer,
        witness: CosignatureSigner,
    }

    fn server(i: u8) -> Server {
        let origin = format!("o{i}.example/log");
        Server {
            log: Ed25519Signer::from_seed(&origin, &[i; 32]).unwrap(),
            witness: CosignatureSigner::from_seed(&format!("{origin}/witness"), &[i + 100; 32])
                .unwrap(),
        }
    }

    fn entry(s: &Server) -> AuditLogEntry {
        AuditLogEntry {
            origin: s.log.name().to_owned(),
            log_key: s.log.verifier().vkey(),
            log_url: Some("http://x:1".into()),
            witness_key: Some(s.witness.verifier().vkey()),
        }
    }

    /// `s`'s checkpoint of `size`, cosigned by `by`.
    fn checkpoint(s: &Server, size: u64, by: &[&Server]) -> Vec<u8> {
        let c = Checkpoint::new(s.log.name(), size, Hash([size as u8; 32]), vec![]).unwrap();
        let mut note = Note::parse(c.sign(&s.log).unwrap().as_bytes()).unwrap();
        for w in by {
            note.add_signature(w.witness.cosign(&c.to_text(), 1_800_000_000).unwrap());
        }
        note.to_text().into_bytes()
    }

    #[test]
    fn checkpoints_need_their_log_key_and_the_peers_cosignatures() {
        let s: Vec<Server> = (1..=3).map(server).collect();
        let servers: Vec<(String, Option<AuditLogEntry>)> = s
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("order{i}"), Some(entry(x))))
            .collect();
        let fetched = vec![
            Some(Ok(checkpoint(&s[0], 7, &[&s[1], &s[2]]))),
            // Rolled back: its peers no longer cosign it.
            Some(Ok(checkpoint(&s[1], 3, &[]))),
            // Signed by another server's key.
            Some(Ok(checkpoint(&s[0], 7, &[]))),
        ];
        let f = check(&servers, &fetched, None);
        assert_eq!(
            f[0],
            Finding::Cosigned {
                name: "order0".into(),
                size: 7,
                root: Hash([7; 32]),
                cosigners: vec![
                    "o2.example/log/witness".into(),
                    "o3.example/log/witness".into()
                ],
            }
        );
        assert!(
            matches!(&f[1], Finding::Alert { reason, .. } if reason.contains("0 of the 2")),
            "{:?}",
            f[1]
        );
        assert!(matches!(&f[2], Finding::Alert { .. }), "{:?}", f[2]);
        // One cosignature suffices when one is required.
        let f = check(
            &servers,
            &[Some(Ok(checkpoint(&s[0], 7, &[&s[2]])))],
            Some(1),
        );
        assert!(matches!(f[0], Finding::Cosigned { .. }), "{:?}", f[0]);
        assert!(matches!(f[1], Finding::NotListed { .. }));
        // A server's own witness does not count for its own log.
        let f = check(
            &servers,
            &[Some(Ok(checkpoint(&s[0], 7, &[&s[0]])))],
            Some(1),
        );
        assert!(matches!(f[0], Finding::Alert { .. }), "{:?}", f[0]);
        // A fetch error is an alert; a broken cosignature too.
        let f = check(&servers, &[Some(Err("refused".into()))], None);
        assert!(f[0].to_string().starts_with("ALERT  order0: cannot fetch"));
        let mut bad = checkpoint(&s[0], 7, &[&s[1], &s[2]]);
        let at = bad.len() - 5;
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let f = check(&servers, &[Some(Ok(bad))], None);
        assert!(matches!(f[0], Finding::Alert { .. }), "{:?}", f[0]);
    }
}
