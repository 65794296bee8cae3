//! A rolled-back order server, end to end with members: the real router,
//! three real order servers keeping audit logs and witnessing each
//! other's (quorum t = N = 3), three members on the client library and
//! the `grompi` CLI.
//!
//! Order server 0's data directory is copied at time T (stopped for the
//! copy), the server runs on (members exchange messages it attests, and
//! its peers cosign its grown log), then it restarts from the copy. Then:
//!
//! * every honest witness (order servers 1 and 2) refuses its next
//!   checkpoint (`behind`, and once its log has grown past what was
//!   cosigned, `fork` or `inconsistent`), with the evidence kept and the
//!   refusal in both sides' metrics;
//! * `grompi audit CONVERSATION` exits non-zero with an alert for order0
//!   alone (the other two logs still hold every accepted index), and
//!   `grompi status` shows it, with the member's own head proof of order0
//!   refused as rolled back;
//! * the router does not bring the rolled-back server forward in a
//!   conversation it had attested past the copy: it asks it for the index
//!   after the last one it attested before the restart, the server
//!   answers `INDEX_MISMATCH` with its older next index, and the router
//!   retries that for ever. At t = N a new message there is never
//!   attested by a quorum (the sender is told so, and it stays queued);
//!   a conversation opened after the restart works at t = N, attested by
//!   all three;
//! * every member accepted exactly one envelope per index, the same ones
//!   as every other member, and nothing accepted before the rollback
//!   changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use grompi_client::client::Client;
use grompi_client::local_store::StoreSecret;
use grompi_client_core::head_proof::HeadProofOutcome;
use grompi_proto::{ConversationId, EnvelopeHash, Epoch, Head, Index, Misbehaviour};
use grompi_tests::audit_log::{
    await_witness_alarm, copy_dir, eventually, evidence, log_verifier, metric, metrics_text,
    served, witness_verifier,
};
use grompi_tests::{Network, audit_addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Store secrets of the members are `[KEY_BASE + position; 32]`.
const KEY_BASE: u8 = 70;
const NAMES: [&str; 3] = ["alice", "bob", "carol"];
/// How long the router waits for a quorum before answering a Submit.
const SUBMIT_TIMEOUT_MS: u64 = 6000;
/// Every order server attested it (bits 0, 1 and 2).
const ALL_THREE: u32 = 0b111;

/// One accepted index as a member holds it.
type Accepted = (Index, EnvelopeHash, Head, u32);

fn secret(i: usize) -> StoreSecret {
    StoreSecret::KeyFile(zeroize::Zeroizing::new([KEY_BASE + i as u8; 32]))
}

/// Opens member `i`'s home again (a CLI command in between held its store).
fn open(homes: &Path, i: usize) -> Client {
    Client::open(&homes.join(NAMES[i]), &secret(i)).unwrap()
}

/// The key file the CLI reads for member `i` (owner-only, 64 hex digits).
fn key_file(homes: &Path, i: usize) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = homes.join(format!("{}.key", NAMES[i]));
    if !path.exists() {
        std::fs::write(&path, hex::encode([KEY_BASE + i as u8; 32])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// Runs `grompi` as member `i`: whether it exited 0, and what it printed.
fn grompi(homes: &Path, i: usize, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(grompi_tests::binary("grompi").unwrap())
        .arg("--home")
        .arg(homes.join(NAMES[i]))
        .arg("--key-file")
        .arg(key_file(homes, i))
        .env_remove("GROMPI_HOME")
        .env_remove("GROMPI_KEY_FILE")
        .env_remove("GROMPI_PASSPHRASE")
        .args(args)
        .output()
        .unwrap();
    grompi_tests::exit_and_text(&out)
}

/// The envelope and head at each index (the attestation bits may grow
/// while late tags arrive; these may not change).
fn chain(v: &[Accepted]) -> Vec<(Index, EnvelopeHash, Head)> {
    v.iter().map(|e| (e.0, e.1, e.2)).collect()
}

/// What `c` accepted in `id`, index by index.
fn accepted(c: &Client, id: &ConversationId) -> Vec<Accepted> {
    c.conversation(id)
        .map(|conv| {
            conv.transcript()
                .entries()
                .iter()
                .map(|e| (e.index, e.envelope_hash, e.head, e.attested_by))
                .collect()
        })
        .unwrap_or_default()
}

/// Syncs every member in `id` and checks their transcripts: one envelope
/// per index, from index 0 on, the same envelopes and heads at every
/// member, and `count` of them, each attested by all three servers.
/// Returns the transcript.
async fn synced_and_agreed(
    m: &mut [Client],
    id: ConversationId,
    count: usize,
    what: &str,
) -> Vec<Accepted> {
    for c in m.iter_mut() {
        c.sync(id).await.unwrap();
    }
    let first = accepted(&m[0], &id);
    for (n, e) in first.iter().enumerate() {
        assert_eq!(
            e.0,
            Index(n as u64),
            "{what}: one entry per index: {first:?}"
        );
        assert_eq!(
            e.3, ALL_THREE,
            "{what}: index {n} not attested by all three"
        );
    }
    assert_eq!(first.len(), count, "{what}: {first:?}");
    for (i, c) in m.iter().enumerate().skip(1) {
        assert_eq!(
            chain(&accepted(c, &id)),
            chain(&first),
            "{what}: {} accepted other envelopes than {}",
            NAMES[i],
            NAMES[0]
        );
    }
    first
}

/// Runs `grompi audit CONVERSATION` as member `i` until `settled` holds
/// for what it returned, for at most 30 s, and returns the last run.
/// Checkpoints are signed on a timer, so a run before the next one sees
/// indices waiting for it. (A new checkpoint is served only once its
/// peers were asked to cosign it, so a healthy log never shows one
/// without its cosignatures: the first caller asserts it on every run.)
async fn audit_settled(
    homes: &Path,
    i: usize,
    conversation: &str,
    settled: impl Fn(bool, &str) -> bool,
) -> (bool, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = grompi(homes, i, &["audit", conversation]);
        if settled(ok, &out) || std::time::Instant::now() > deadline {
            return (ok, out);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Stops order server `s` and starts it again from its configuration.
async fn restart(net: &mut Network, s: usize, between: impl FnOnce(&Path)) {
    net.servers[s].process.stop(Duration::from_secs(15));
    between(&net.nodes[s].data_dir);
    net.servers[s] = net.nodes[s].start_again().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_order_server_is_caught_and_members_never_accept_two_envelopes_at_one_index()
{
    let mut net = grompi_tests::start_network_with_witnessing(
        3,
        3,
        &format!("submit_timeout_ms = {SUBMIT_TIMEOUT_MS}\n"),
    )
    .await
    .unwrap();
    let homes = tempfile::tempdir().unwrap();
    let homes = homes.path();
    let text = std::fs::read_to_string(&net.client_descriptor).unwrap();
    let mut m = crate::registered_clients(homes, &text, &NAMES, KEY_BASE).await;
    let accounts: Vec<_> = m.iter().map(Client::account).collect();
    let logs: Vec<_> = net
        .nodes
        .iter()
        .map(|n| log_verifier(&n.data_dir))
        .collect();
    let witnesses: Vec<_> = net
        .nodes
        .iter()
        .map(|n| witness_verifier(&n.data_dir))
        .collect();
    let audit0 = audit_addr(&net.nodes[0].data_dir).unwrap();

    // Before T: a conversation of the three, a message from each.
    let a = m[0]
        .create_conversation(Some("before"), &accounts[1..])
        .await
        .unwrap();
    for (i, c) in m.iter_mut().enumerate() {
        c.send(a, &format!("{} before T", NAMES[i])).await.unwrap();
    }
    synced_and_agreed(&mut m, a, 4, "before T").await;

    // Time T: a copy of order server 0's data directory.
    let snapshot = net.nodes[0].dir.path().join("snapshot-at-T");
    restart(&mut net, 0, |data| copy_dir(data, &snapshot)).await;

    // It runs on: more messages, accepted (t = N: attested by all three).
    for (i, c) in m.iter_mut().enumerate() {
        c.send(a, &format!("{} after T", NAMES[i])).await.unwrap();
    }
    let before_rollback = synced_and_agreed(&mut m, a, 7, "after T").await;
    // Alice's head proofs: every server consistent at 7 (she keeps the
    // highest each proved).
    let (proofs, _) = m[0].prove_heads(a).await.unwrap();
    assert_eq!(proofs.len(), 3, "{proofs:?}");
    assert!(
        proofs
            .iter()
            .all(|p| matches!(p, HeadProofOutcome::Consistent { count: 7, .. })),
        "{proofs:?}"
    );
    // Every index Alice accepted is in every log's checkpoint, cosigned by
    // both peers: `grompi audit` as Alice (her store closed meanwhile).
    let alice = m.remove(0);
    drop(alice);
    let (ok, out) = audit_settled(homes, 0, "before", |ok, out| {
        assert!(
            !out.contains("ALERT"),
            "an alert while every server is healthy:\n{out}"
        );
        ok && !out.contains("waiting for its next checkpoint")
    })
    .await;
    assert!(ok && !out.contains("ALERT"), "{out}");
    assert!(!out.contains("waiting for its next checkpoint"), "{out}");
    for s in ["order0", "order1", "order2"] {
        assert!(
            out.contains(&format!("ok     {s}: 7 of 7 indices logged")),
            "{out}"
        );
    }
    m.insert(0, open(homes, 0));
    let (cosigned, n) = served(audit0, &logs[0], &[&witnesses[1], &witnesses[2]]).await;
    assert_eq!(n, 2, "order0's grown log is cosigned by both peers");

    // Restarted from the copy at T.
    restart(&mut net, 0, |data| {
        std::fs::remove_dir_all(data).unwrap();
        copy_dir(&snapshot, data);
    })
    .await;
    let (rolled, _) = served(audit0, &logs[0], &[]).await;
    assert!(
        rolled.size() < cosigned.size(),
        "{} < {}",
        rolled.size(),
        cosigned.size()
    );

    // Members keep sending. In the conversation order0 attested past T,
    // the router asks it for index 7, while it holds only indices 0 to 3:
    // at t = N no quorum, ever. The sender is told, and the
    // envelope stays queued at the router and in Carol's outbox.
    let err = m[2].send(a, "carol after the rollback").await.unwrap_err();
    assert!(
        err.to_string().contains("not attested by a quorum"),
        "{err}"
    );
    assert_eq!(m[2].pending_sends(Some(a)).unwrap().len(), 1);
    let router_log = std::fs::read_to_string(net.router.log()).unwrap();
    let refusal = router_log
        .lines()
        .find(|l| {
            l.contains("order server refused an item")
                && l.contains("server=0")
                && l.contains("INDEX_MISMATCH")
                && l.contains("index=7")
        })
        .unwrap_or_else(|| panic!("no INDEX_MISMATCH of order0 at index 7 in {router_log}"));
    // order0 names the next index it has: 4, where the copy at T stopped.
    assert!(refusal.contains("server_next=4"), "{refusal}");
    eprintln!("router: {refusal}");

    // A conversation opened after the restart: order0 knows it from its
    // start, and everything in it is accepted at t = N.
    let d = m[0]
        .create_conversation(Some("after"), &accounts[1..])
        .await
        .unwrap();
    for round in 0..2 {
        for (i, c) in m.iter_mut().enumerate() {
            c.send(d, &format!("{} after the rollback, {round}", NAMES[i]))
                .await
                .unwrap();
        }
    }
    let after = synced_and_agreed(&mut m, d, 7, "a conversation after the rollback").await;

    // The first conversation: still exactly what was accepted before the
    // rollback, at every member (Alice and Bob fetch again; Carol would
    // resubmit her queued message first, so she reads what she holds).
    for c in m.iter_mut().take(2) {
        c.sync(a).await.unwrap();
    }
    for (i, c) in m.iter().enumerate() {
        assert_eq!(
            chain(&accepted(c, &a)),
            chain(&before_rollback),
            "{} accepted something else in the first conversation",
            NAMES[i]
        );
    }

    // Every honest witness refuses order0's checkpoints: first as behind
    // what it cosigned, then (its log grew past that size from another
    // history) as a fork or inconsistent.
    for j in [1, 2] {
        let data = &net.nodes[j].data_dir;
        eventually(
            "a behind and a fork or inconsistent record",
            Duration::from_secs(30),
            || async {
                !evidence(data, "behind").is_empty()
                    && (!evidence(data, "fork").is_empty()
                        || !evidence(data, "inconsistent").is_empty())
            },
        )
        .await;
        eprintln!(
            "order{j} kept: {:?}",
            std::fs::read_dir(data.join("witness/evidence"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>()
        );
        let text = metrics_text(net.servers[j].addrs.metrics.unwrap()).await;
        assert!(
            metric(
                &text,
                "grompi_order_witness_misbehaviour_total",
                &["kind=\"behind\""]
            ) >= 1.0,
            "{text}"
        );
        assert!(
            metric(&text, "grompi_order_witness_misbehaviour_total", &[]) >= 2.0,
            "{text}"
        );
    }
    await_witness_alarm(
        net.servers[0].addrs.metrics.unwrap(),
        net.servers[0].process.log(),
        &["order1", "order2"],
    )
    .await;
    assert_eq!(
        served(audit0, &logs[0], &[&witnesses[1], &witnesses[2]])
            .await
            .1,
        0,
        "nobody cosigns order0's log any more"
    );

    // Alice's audit of the first conversation: an alert for order0, and
    // only for it; the other two logs hold every index she accepted.
    drop(m.remove(0));
    let only_order0 = |out: &str| {
        out.lines().filter(|l| l.contains("ALERT")).count() == 1
            && ["order1", "order2"]
                .iter()
                .all(|s| out.contains(&format!("ok     {s}: 7 of 7 indices logged")))
    };
    let (ok, out) = audit_settled(homes, 0, "before", |_, out| only_order0(out)).await;
    assert!(!ok, "{out}");
    let alerts: Vec<&str> = out.lines().filter(|l| l.contains("ALERT")).collect();
    assert_eq!(alerts.len(), 1, "{out}");
    assert!(
        alerts[0].contains("ALERT  order0: its checkpoint of")
            && alerts[0].contains("has 0 of the 2 cosignatures required"),
        "{out}"
    );
    assert!(out.contains("--     order0: not checked"), "{out}");
    for s in ["order1", "order2"] {
        assert!(
            out.contains(&format!("ok     {s}: 7 of 7 indices logged")),
            "{out}"
        );
    }
    assert!(out.contains("1 alert(s)"), "{out}");
    // `grompi status`: the audit log alert for order0; Alice's head proof
    // of order0 in the first conversation is refused as rolled back
    // (it proved 7 before, 4 now). Order servers 1 and 2 prove 8: they attested
    // Carol's queued message, which the router does not deliver without
    // order0's tag (t = N); a count beyond what was delivered is
    // `Withheld` (PROTOCOL.md 7.7), which here is true of the router and
    // caused by the rolled-back server.
    let (ok, status) = grompi(homes, 0, &["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains("ALERT: order server order0's audit log: its checkpoint of"),
        "{status}"
    );
    let rolled_back = Misbehaviour::RolledBack {
        server: 0,
        proved: 7,
        proved_epoch: Epoch(0),
        count: 4,
    };
    assert!(status.contains(&rolled_back.to_string()), "{status}");
    let withheld = |server| Misbehaviour::Withheld {
        server,
        attested: 8,
        delivered: 7,
    };
    assert!(status.contains(&withheld(1).to_string()), "{status}");
    assert!(status.contains(&withheld(2).to_string()), "{status}");
    assert!(status.contains("alerts: 4"), "{status}");
    // In the conversation opened after the rollback, every head proof
    // is consistent.
    assert_eq!(
        status.matches("attested 7 indices, consistent").count(),
        3,
        "{status}"
    );
    m.insert(0, open(homes, 0));
    // Those are the only alerts any member raised: none about the
    // envelopes accepted.
    let alice: Vec<String> = m[0].alerts().unwrap().into_iter().map(|a| a.text).collect();
    assert_eq!(alice.len(), 3, "{alice:?}");
    for want in [rolled_back, withheld(1), withheld(2)] {
        assert!(
            alice.iter().any(|a| a.contains(&want.to_string())),
            "{alice:?}"
        );
    }
    for c in &m[1..] {
        assert!(c.alerts().unwrap().is_empty());
    }

    // The router still asks order0 for index 7, with backoff, for ever.
    let router_log = std::fs::read_to_string(net.router.log()).unwrap();
    eprintln!(
        "router: {} INDEX_MISMATCH refusals by order0 logged",
        router_log
            .lines()
            .filter(|l| l.contains("server=0") && l.contains("INDEX_MISMATCH"))
            .count()
    );
    // And after all that, every member still holds what it accepted:
    // in both conversations, one envelope per index, the same everywhere.
    for (i, c) in m.iter().enumerate() {
        assert_eq!(
            chain(&accepted(c, &a)),
            chain(&before_rollback),
            "{}",
            NAMES[i]
        );
        assert_eq!(chain(&accepted(c, &d)), chain(&after), "{}", NAMES[i]);
    }
    drop(m);
    drop(net);
}
