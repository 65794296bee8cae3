//! The order servers' audit logs and witnesses as a test reads them from
//! outside: the served checkpoint and who cosigned it, the Prometheus
//! metrics, the witness's evidence records, a copy of a data directory
//! (to restart a server from an old state), and polling with a deadline.
//! Shared by the witnessing and rollback end-to-end tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test support: a failed step fails the test

use grompi_tlog::checkpoint::Checkpoint;
use grompi_tlog::cosignature::{CosignatureSigner, CosignatureVerifier};
use grompi_tlog::note::{Ed25519Signer, Ed25519Verifier, Note, NoteVerifier};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The trimmed text of a key file.
pub fn read_key(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// The signer of the audit log of the order server whose data directory
/// is `data_dir` (`audit-log.key`).
pub fn log_signer(data_dir: &Path) -> Ed25519Signer {
    Ed25519Signer::from_skey(&read_key(&data_dir.join("audit-log.key"))).unwrap()
}

/// The verifier of the audit log of the order server whose data directory
/// is `data_dir`.
pub fn log_verifier(data_dir: &Path) -> Ed25519Verifier {
    log_signer(data_dir).verifier()
}

/// The cosigner key of the witness of the order server whose data
/// directory is `data_dir` (`witness.key`).
pub fn witness_verifier(data_dir: &Path) -> CosignatureVerifier {
    CosignatureSigner::from_skey(&read_key(&data_dir.join("witness.key")))
        .unwrap()
        .verifier()
}

/// One plain HTTP/1.1 request to `addr`: the status and the body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "{method} /{path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    (status, out[end + 4..].to_vec())
}

/// The Prometheus text served at `addr` (a server's `metrics_listen`).
pub async fn metrics_text(addr: SocketAddr) -> String {
    let (_, body) = http(addr, "GET", "metrics", b"").await;
    String::from_utf8_lossy(&body).into_owned()
}

/// The sum of the values of metric `name` over the series whose labels
/// include every one of `labels` (such as `kind="behind"`).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            let set = l.split('}').next().unwrap_or_default();
            labels.iter().all(|want| set.contains(want))
        })
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// The checkpoint served at `audit` (a server's `audit_listen`), opened
/// with the log's key `log`, and how many of `witnesses` cosigned it.
pub async fn served(
    audit: SocketAddr,
    log: &Ed25519Verifier,
    witnesses: &[&CosignatureVerifier],
) -> (Checkpoint, usize) {
    let (status, body) = http(audit, "GET", "checkpoint", b"").await;
    assert_eq!(status, 200);
    let mut known: Vec<&dyn NoteVerifier> = vec![log];
    known.extend(witnesses.iter().map(|w| *w as &dyn NoteVerifier));
    let opened = Note::open(&body, &known).unwrap();
    let c = Checkpoint::from_text(opened.note.text()).unwrap();
    (c, opened.verified_by.len() - 1)
}

/// Polls `check` every 200 ms until it holds; fails the test after
/// `timeout`, naming `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Copies the directory `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// The evidence records of `kind` (`fork`, `inconsistent`, `behind`) the
/// witness of the order server whose data directory is `data_dir` kept,
/// in order.
pub fn evidence(data_dir: &Path, kind: &str) -> Vec<PathBuf> {
    let dir = data_dir.join("witness/evidence");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    // Not a record still being written (`.tmp-...`).
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        !n.starts_with('.') && n.ends_with(&format!("-{kind}"))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Waits (at most 30 s) until the order server whose metrics are at
/// `metrics` raises its witness alarm for every one of `peers`, then
/// checks that its log (`server_log`) says so.
pub async fn await_witness_alarm(metrics: SocketAddr, server_log: &Path, peers: &[&str]) {
    eventually(
        "the alarm on the rolled-back server",
        Duration::from_secs(30),
        || async {
            let text = metrics_text(metrics).await;
            peers.iter().all(|p| {
                metric(
                    &text,
                    "grompi_order_log_witness_alarm",
                    &[&format!("peer=\"{p}\"")],
                ) == 1.0
            })
        },
    )
    .await;
    assert!(
        std::fs::read_to_string(server_log)
            .unwrap()
            .contains("ALERT: a witness refuses this server's audit log"),
    );
}
