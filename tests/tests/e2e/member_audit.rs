//! A member audits its conversation against the order servers' audit logs
//! with the real router, three real order servers keeping logs (a
//! checkpoint a second) and the `grompi` CLI: every index it accepted is
//! found in every server's log (at the position the server gave, relayed
//! by the router) and proved included in the server's checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(bin: &Path, home: &Path, key: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--home")
        .arg(home)
        .arg("--key-file")
        .arg(key)
        .env_remove("GROMPI_HOME")
        .env_remove("GROMPI_KEY_FILE")
        .env_remove("GROMPI_PASSPHRASE")
        .args(args)
        .output()
        .unwrap()
}

fn ok(bin: &Path, home: &Path, key: &Path, args: &[&str]) -> String {
    let out = run(bin, home, key, args);
    assert!(
        out.status.success(),
        "grompi {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_audits_its_conversation_in_every_log() {
    let net = grompi_tests::start_network_with_audit_logs(3, 3)
        .await
        .unwrap();
    let bin = grompi_tests::binary("grompi").unwrap();
    let homes = tempfile::tempdir().unwrap();
    let descriptor = net.client_descriptor.to_string_lossy().into_owned();
    let users: Vec<(PathBuf, PathBuf, String)> = ["alice", "bob"]
        .iter()
        .map(|name| {
            let home = homes.path().join(name);
            let key = homes.path().join(format!("{name}.key"));
            let out = ok(&bin, &home, &key, &["init", "--network", &descriptor]);
            let account = out
                .lines()
                .find_map(|l| l.strip_prefix("account: "))
                .unwrap()
                .to_owned();
            ok(&bin, &home, &key, &["register"]);
            (home, key, account)
        })
        .collect();
    let (alice, alice_key, _) = &users[0];
    let (bob, bob_key, bob_account) = &users[1];
    ok(
        &bin,
        alice,
        alice_key,
        &["contacts", "add", "bob", bob_account],
    );
    let out = ok(
        &bin,
        alice,
        alice_key,
        &["create", "--name", "audited", "bob"],
    );
    let id = out
        .split_whitespace()
        .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no conversation id in {out:?}"))
        .to_owned();
    for i in 0..5 {
        ok(
            &bin,
            alice,
            alice_key,
            &["send", "audited", &format!("message {i}")],
        );
    }
    ok(&bin, bob, bob_key, &["join", &id, "--name", "audited"]);
    ok(&bin, bob, bob_key, &["send", "audited", "bob was here"]);

    // Checkpoints are signed every second: wait until every index is in
    // one (the audit says how many still wait), then expect no alert.
    let started = Instant::now();
    let out = loop {
        let out = run(&bin, alice, alice_key, &["audit", "audited"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("ALERT"), "{text}");
        assert!(out.status.success(), "{text}");
        if !text.contains("waiting for its next checkpoint") {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "indices still wait for a checkpoint after 30 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Setup, five messages, Bob's message: 7 indices accepted by Alice
    // (at least; noise may add more), each in all three logs.
    let accepted: usize = out
        .lines()
        .find_map(|l| {
            l.split_once(": ")
                .and_then(|(_, rest)| rest.strip_suffix(" accepted indices"))
        })
        .unwrap_or_else(|| panic!("no count in {out}"))
        .parse()
        .unwrap();
    eprintln!("{out}");
    assert!(accepted >= 7, "{out}");
    for server in ["order0", "order1", "order2"] {
        let line = out
            .lines()
            .find(|l| {
                l.contains(&format!(
                    "{server}: {accepted} of {accepted} indices logged"
                ))
            })
            .unwrap_or_else(|| panic!("{server} not fully logged: {out}"));
        assert!(line.trim_start().starts_with("ok"), "{line}");
        // The router relayed where each server logged each index.
        assert!(!line.contains("found only by reading the log"), "{line}");
    }
    drop(net);
}
