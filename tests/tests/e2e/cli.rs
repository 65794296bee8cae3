//! The `grompi` command line with the real router and three real order
//! servers over TLS: four people create accounts, register, name each
//! other, talk in a group, compare safety numbers, and one of them is
//! removed and can read nothing sent after.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// One person: a home directory and how it is unlocked.
struct User {
    name: &'static str,
    home: PathBuf,
    /// A key file, or `None` for the passphrase.
    key_file: Option<PathBuf>,
    account: String,
}

fn run(bin: &Path, u: &User, args: &[&str]) -> Output {
    let mut c = Command::new(bin);
    c.arg("--home").arg(&u.home);
    c.env_remove("GROMPI_HOME").env_remove("GROMPI_KEY_FILE");
    match &u.key_file {
        Some(k) => {
            c.arg("--key-file").arg(k).env_remove("GROMPI_PASSPHRASE");
        }
        None => {
            c.env(
                "GROMPI_PASSPHRASE",
                format!("{} correct horse battery", u.name),
            );
        }
    }
    c.args(args).output().unwrap()
}

/// Runs `grompi` as `u`; the command must succeed; returns stdout.
fn ok(bin: &Path, u: &User, args: &[&str]) -> String {
    let started = Instant::now();
    let out = run(bin, u, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{} `grompi {}` failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        u.name,
        args.join(" "),
        out.status
    );
    eprintln!(
        "{} $ grompi {}  ({} ms)\n{stdout}",
        u.name,
        args.join(" "),
        started.elapsed().as_millis()
    );
    stdout
}

/// Runs `grompi` as `u`; the command must fail with exit code 1; returns
/// stderr.
fn fails(bin: &Path, u: &User, args: &[&str]) -> String {
    let out = run(bin, u, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{} `grompi {}` should fail; stdout:\n{}\nstderr:\n{stderr}",
        u.name,
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("error: "), "{stderr}");
    stderr
}

/// `history --json` as (index, kind, sender, text) tuples, and the
/// statuses.
fn transcript(bin: &Path, u: &User, conv: &str) -> Vec<(u64, String, String, String, String)> {
    ok(bin, u, &["history", conv, "--json"])
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["index"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_owned(),
                v["sender"].as_str().unwrap_or("").to_owned(),
                v["text"].as_str().unwrap_or("").to_owned(),
                v["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn texts(t: &[(u64, String, String, String, String)]) -> Vec<String> {
    t.iter()
        .filter(|e| e.1 == "message")
        .map(|e| e.3.clone())
        .collect()
}

fn safety_number(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("safety number: "))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_people_talk_and_a_removed_member_reads_nothing_after() {
    let started = Instant::now();
    let net = grompi_tests::start_network(3, 3).await.unwrap();
    let bin = grompi_tests::binary("grompi").unwrap();
    eprintln!("network up after {:?}", started.elapsed());
    let started = Instant::now();
    let homes = tempfile::tempdir().unwrap();
    let descriptor = net.client_descriptor.to_string_lossy().into_owned();

    // Alice unlocks with a passphrase, the others with key files.
    let mut users: Vec<User> = ["alice", "bob", "carol", "dave"]
        .iter()
        .enumerate()
        .map(|(i, name)| User {
            name,
            home: homes.path().join(name),
            key_file: (i > 0).then(|| homes.path().join(format!("{name}.key"))),
            account: String::new(),
        })
        .collect();
    for u in &mut users {
        let out = ok(&bin, u, &["init", "--network", &descriptor]);
        let account = out
            .lines()
            .find_map(|l| l.strip_prefix("account: "))
            .unwrap()
            .to_owned();
        assert_eq!(account.len(), 64);
        let out = ok(&bin, u, &["register"]);
        assert!(out.contains(&account), "{out}");
        assert_eq!(ok(&bin, u, &["id"]).trim(), account);
        u.account = account;
    }
    let [alice, bob, carol, dave] = &users[..] else {
        unreachable!()
    };

    // Nothing is readable without the secret, and a wrong one is refused.
    let raw = std::fs::read(alice.home.join("state.redb")).unwrap();
    assert!(
        !raw.windows(12)
            .any(|w| w == &alice.account.as_bytes()[..12])
    );
    let wrong = User {
        name: "mallory",
        home: alice.home.clone(),
        key_file: None,
        account: String::new(),
    };
    let err = fails(&bin, &wrong, &["id"]);
    assert!(err.contains("does not open"), "{err}");
    assert!(init_twice_fails(&bin, alice, &descriptor));

    // Everyone names everyone (trust on first use).
    for u in &users {
        for v in &users {
            if u.name != v.name {
                let out = ok(&bin, u, &["contacts", "add", v.name, &v.account]);
                assert!(out.contains("trusted on first use"), "{out}");
            }
        }
    }
    let list = ok(&bin, alice, &["contacts"]);
    assert!(
        list.contains("bob") && list.contains("unverified"),
        "{list}"
    );

    // Safety numbers match both ways, and differ between pairs.
    let ab = safety_number(&ok(&bin, alice, &["verify", "bob"]));
    let ba = safety_number(&ok(&bin, bob, &["verify", "alice"]));
    let ac = safety_number(&ok(&bin, alice, &["verify", "carol"]));
    assert_eq!(ab, ba);
    assert_ne!(ab, ac);
    assert_eq!(ab.split(' ').count(), 12);
    ok(&bin, alice, &["verify", "bob", "--confirm"]);
    assert!(ok(&bin, alice, &["verify", "bob"]).contains("status: verified"));
    // A known name bound to another identity: a loud warning, refused.
    let out = run(&bin, alice, &["contacts", "add", "bob", &carol.account]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("WARNING: THE IDENTITY OF \"bob\" HAS CHANGED"),
        "{stderr}"
    );
    assert!(stderr.contains("You had verified"), "{stderr}");
    assert!(ok(&bin, alice, &["verify", "bob"]).contains(&bob.account));

    // Alice creates the group; the others join by its id.
    let out = ok(
        &bin,
        alice,
        &["create", "--name", "team", "bob", "carol", "dave"],
    );
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    for u in [bob, carol, dave] {
        let out = ok(&bin, u, &["join", &id, "--name", "team"]);
        assert!(out.contains("active"), "{out}");
        assert!(out.contains("conversation created"), "{out}");
    }

    // Several people send; each sees what came before (causal context).
    let out = ok(&bin, alice, &["send", "team", "hello", "from", "alice"]);
    assert!(
        out.contains("sent as #1 [fully attested] (having seen up to #0)"),
        "{out}"
    );
    let out = ok(&bin, bob, &["send", "team", "hi from bob"]);
    assert!(
        out.contains("sent as #2 [fully attested] (having seen up to #1)"),
        "{out}"
    );
    ok(&bin, carol, &["send", "team", "carol here"]);
    ok(&bin, dave, &["send", "team", "dave too"]);
    let watched = ok(&bin, alice, &["watch", "team", "--once"]);
    assert!(watched.contains("dave: dave too"), "{watched}");
    assert!(watched.contains("sent having seen up to #3"), "{watched}");
    assert!(watched.contains("[fully attested]"), "{watched}");
    let before: Vec<_> = users.iter().map(|u| transcript(&bin, u, "team")).collect();
    assert_eq!(
        texts(&before[0]),
        ["hello from alice", "hi from bob", "carol here", "dave too"]
    );
    for t in &before {
        assert_eq!(t, &before[0], "every member has the same transcript");
        assert!(t.iter().all(|e| e.4 == "Full"), "{t:?}");
    }
    assert_eq!(before[0][2].2, bob.account, "authenticated sender");

    // Receipts: who has processed what.
    ok(&bin, bob, &["receipt", "team"]);
    let status = ok(&bin, alice, &["status", "team"]);
    assert!(status.contains("bob has processed through #"), "{status}");
    assert_eq!(
        status.matches("consistent").count(),
        3,
        "every order server's head proof matches: {status}"
    );
    assert!(status.contains("alerts: none"), "{status}");

    // Dave is removed.
    let out = ok(&bin, alice, &["members", "team", "remove", "dave"]);
    assert!(out.contains("removed"), "{out}");
    assert!(!ok(&bin, bob, &["members", "team"]).contains("dave"));
    let out = ok(&bin, alice, &["send", "team", "plans dave must not see"]);
    assert!(out.contains("[fully attested]"), "{out}");
    ok(&bin, bob, &["send", "team", "agreed, after dave"]);
    ok(&bin, carol, &["send", "team", "carol after dave"]);

    // The remaining members agree; Dave has nothing after his removal.
    let after: Vec<_> = [alice, bob, carol]
        .iter()
        .map(|u| transcript(&bin, u, "team"))
        .collect();
    for t in &after {
        assert_eq!(t, &after[0]);
    }
    let secret = [
        "plans dave must not see",
        "agreed, after dave",
        "carol after dave",
    ];
    for s in secret {
        assert!(texts(&after[0]).contains(&s.to_owned()));
    }
    let daves = transcript(&bin, dave, "team");
    let removal = daves
        .iter()
        .find(|e| e.1 == "update")
        .expect("dave saw his removal");
    assert!(daves.iter().all(|e| e.0 <= removal.0), "{daves:?}");
    assert_eq!(daves[..], after[0][..daves.len()], "dave's prefix agrees");
    for s in secret {
        assert!(!texts(&daves).contains(&s.to_owned()));
    }
    let history = ok(&bin, dave, &["history", "team"]);
    assert!(history.contains("you are no longer a member"), "{history}");
    for s in secret {
        assert!(!history.contains(s), "{history}");
    }
    let watched = ok(&bin, dave, &["watch", "--once"]);
    for s in secret {
        assert!(!watched.contains(s), "{watched}");
    }
    let err = fails(&bin, dave, &["send", "team", "let me back in"]);
    assert!(err.contains("no longer a member"), "{err}");
    // Nothing Dave stores holds the plaintexts (the store is encrypted,
    // and he never had the keys): no trace in his files either.
    for entry in std::fs::read_dir(&dave.home).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for s in secret {
            assert!(!bytes.windows(s.len()).any(|w| w == s.as_bytes()));
        }
    }

    // Usage errors exit with 2, unknown things with 1 and a clear message.
    let out = run(&bin, alice, &["send"]);
    assert_eq!(out.status.code(), Some(2));
    let err = fails(&bin, alice, &["send", "nosuch", "x"]);
    assert!(err.contains("no conversation named \"nosuch\""), "{err}");
    let err = fails(&bin, carol, &["members", "team", "remove", "bob"]);
    assert!(err.contains("only an Admin"), "{err}");

    eprintln!("cli test took {:?}", started.elapsed());
    drop(net);
}

fn init_twice_fails(bin: &Path, u: &User, descriptor: &str) -> bool {
    let err = fails(bin, u, &["init", "--network", descriptor]);
    err.contains("already holds a grompi account")
}

/// Two people; the member who is not an admin leaves, and reads nothing
/// sent after.
/// Leaving is an Update, and only Admins send Updates (order servers attest
/// Updates from Admin slots only): a Member's `leave` is refused locally
/// with what to do instead, and changes nothing; an Admin added later by
/// Update joins, reads, then leaves and reads nothing sent after; the last
/// Admin cannot leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_asks_an_admin_and_an_admin_leaves() {
    let net = grompi_tests::start_network(3, 2).await.unwrap();
    let bin = grompi_tests::binary("grompi").unwrap();
    let homes = tempfile::tempdir().unwrap();
    let descriptor = net.client_descriptor.to_string_lossy().into_owned();
    let mut users: Vec<User> = ["erin", "frank", "gina"]
        .iter()
        .map(|name| User {
            name,
            home: homes.path().join(name),
            key_file: Some(homes.path().join(format!("{name}.key"))),
            account: String::new(),
        })
        .collect();
    for u in &mut users {
        ok(&bin, u, &["init", "--network", &descriptor]);
        ok(&bin, u, &["register"]);
        u.account = ok(&bin, u, &["id"]).trim().to_owned();
    }
    let [erin, frank, gina] = &users[..] else {
        unreachable!()
    };
    ok(&bin, erin, &["contacts", "add", "frank", &frank.account]);
    ok(&bin, erin, &["contacts", "add", "gina", &gina.account]);
    let out = ok(&bin, erin, &["create", "--name", "pair", "frank"]);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    ok(&bin, frank, &["join", &id, "--name", "pair"]);
    ok(&bin, frank, &["send", "pair", "hello"]);

    // A Member cannot leave by itself; nothing changes.
    let err = fails(&bin, frank, &["members", "pair", "leave"]);
    assert!(err.contains("asks an Admin to remove it"), "{err}");
    // Nor can the last Admin.
    let err = fails(&bin, erin, &["members", "pair", "leave"]);
    assert!(err.contains("last Admin"), "{err}");

    // An Admin added by Update joins and reads what follows.
    ok(&bin, erin, &["members", "pair", "add", "gina", "--admin"]);
    ok(&bin, gina, &["join", &id, "--name", "pair"]);
    ok(&bin, erin, &["send", "pair", "welcome gina"]);
    let ginas = transcript(&bin, gina, "pair");
    assert!(
        texts(&ginas).contains(&"welcome gina".to_owned()),
        "{ginas:?}"
    );
    assert!(
        !texts(&ginas).contains(&"hello".to_owned()),
        "gina read history from before she joined"
    );

    // Gina leaves; she reads nothing sent after.
    let out = ok(&bin, gina, &["members", "pair", "leave"]);
    assert!(out.contains("you are no longer a member"), "{out}");
    ok(&bin, erin, &["send", "pair", "after gina left"]);
    let erins = transcript(&bin, erin, "pair");
    assert!(texts(&erins).contains(&"after gina left".to_owned()));
    let what = |t: &[(u64, String, String, String, String)]| {
        t.iter()
            .map(|e| (e.0, e.1.clone(), e.3.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(what(&transcript(&bin, frank, "pair")), what(&erins));
    let ginas = transcript(&bin, gina, "pair");
    assert!(!texts(&ginas).contains(&"after gina left".to_owned()));
    drop(net);
}

/// With a quorum of 2 of 3 and one order server down, a message is
/// accepted with the quorum only; when the server returns and catches up,
/// `watch` shows the late tags upgrade it to fully attested, live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_late_tags_upgrade_a_quorum_message() {
    use std::io::{BufRead, BufReader};
    let mut net = grompi_tests::start_network(3, 2).await.unwrap();
    let bin = grompi_tests::binary("grompi").unwrap();
    let homes = tempfile::tempdir().unwrap();
    let descriptor = net.client_descriptor.to_string_lossy().into_owned();
    let mut users: Vec<User> = ["gina", "hank"]
        .iter()
        .map(|name| User {
            name,
            home: homes.path().join(name),
            key_file: Some(homes.path().join(format!("{name}.key"))),
            account: String::new(),
        })
        .collect();
    for u in &mut users {
        ok(&bin, u, &["init", "--network", &descriptor]);
        ok(&bin, u, &["register"]);
        u.account = ok(&bin, u, &["id"]).trim().to_owned();
    }
    let [gina, hank] = &users[..] else {
        unreachable!()
    };
    let out = ok(&bin, gina, &["create", "--name", "g", &hank.account]);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    ok(&bin, hank, &["join", &id, "--name", "g"]);

    // One order server stops: messages are accepted with 2 of 3 tags.
    net.servers[2]
        .process
        .terminate(std::time::Duration::from_secs(20))
        .unwrap();
    let out = ok(&bin, gina, &["send", "g", "while one server is down"]);
    assert!(out.contains("sent as #1 [quorum]"), "{out}");
    let t = transcript(&bin, hank, "g");
    assert_eq!(t[1].3, "while one server is down");
    assert_eq!(t[1].4, "Quorum");

    // Hank watches live; the server returns and is caught up.
    let mut watch = Command::new(&bin)
        .arg("--home")
        .arg(&hank.home)
        .arg("--key-file")
        .arg(hank.key_file.as_ref().unwrap())
        .args(["watch", "--timeout", "20"])
        .env_remove("GROMPI_PASSPHRASE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = watch.stderr.take().unwrap();
    let mut stderr = BufReader::new(stderr);
    let mut line = String::new();
    while !line.contains("watching") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "watch exited");
    }
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    net.servers[2] = net.nodes[2].start().await.unwrap();
    let mut seen = Vec::new();
    loop {
        let l = rx
            .recv_timeout(std::time::Duration::from_secs(25))
            .unwrap_or_else(|_| panic!("no upgrade shown; watch printed {seen:?}"));
        let done = l.contains("#1 is now fully attested");
        seen.push(l);
        if done {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let t = transcript(&bin, hank, "g");
    assert_eq!(t[1].4, "Full", "{t:?}");
    // Back to all three: a new message is accepted with the quorum at
    // once and becomes fully attested when the third tag arrives.
    let out = ok(&bin, hank, &["send", "g", "all back"]);
    assert!(out.contains("sent as #2 ["), "{out}");
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let t = transcript(&bin, gina, "g");
        if t.get(2).is_some_and(|e| e.3 == "all back" && e.4 == "Full") {
            break;
        }
        assert!(Instant::now() < deadline, "#2 never fully attested: {t:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(net);
}

/// On a 2-of-3 network, `init`, `status` and `members` say what the quorum
/// tolerates; a `network.toml` changed after `init` is refused until it is
/// accepted deliberately with `network accept`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_states_the_fork_bound_and_a_changed_descriptor_is_refused() {
    let net = grompi_tests::start_network(3, 2).await.unwrap();
    let bin = grompi_tests::binary("grompi").unwrap();
    let homes = tempfile::tempdir().unwrap();
    let descriptor = net.client_descriptor.to_string_lossy().into_owned();
    let bound = "quorum 2 of 3: the router together with 1 dishonest order server \
                 can fork a conversation";
    let mut users: Vec<User> = ["ivy", "jack"]
        .iter()
        .map(|name| User {
            name,
            home: homes.path().join(name),
            key_file: Some(homes.path().join(format!("{name}.key"))),
            account: String::new(),
        })
        .collect();
    for u in &mut users {
        let out = ok(&bin, u, &["init", "--network", &descriptor]);
        assert!(out.contains(bound), "{out}");
        ok(&bin, u, &["register"]);
        u.account = ok(&bin, u, &["id"]).trim().to_owned();
    }
    let [ivy, jack] = &users[..] else {
        unreachable!()
    };
    let out = ok(&bin, ivy, &["status"]);
    assert!(out.lines().any(|l| l == bound), "{out}");
    ok(&bin, ivy, &["contacts", "add", "jack", &jack.account]);
    ok(&bin, ivy, &["create", "--name", "pair", "jack"]);
    let out = ok(&bin, ivy, &["members", "pair"]);
    assert!(out.contains(bound), "{out}");
    let out = ok(&bin, ivy, &["status", "pair"]);
    assert!(out.contains(bound), "{out}");

    // Someone who can write ivy's home raises the quorum's tolerance by
    // rewriting network.toml: every command refuses it.
    let text = std::fs::read_to_string(&net.client_descriptor).unwrap();
    let changed = text.replacen("quorum = 2", "quorum = 3", 1);
    assert_ne!(changed, text);
    std::fs::write(ivy.home.join("network.toml"), &changed).unwrap();
    for args in [&["status"][..], &["id"], &["send", "pair", "hello"]] {
        let err = fails(&bin, ivy, args);
        assert!(
            err.contains("differs from the one this account trusts")
                && err.contains("grompi network accept"),
            "{err}"
        );
    }
    // Accepting it deliberately works, and says what changed.
    let new_file = homes.path().join("new-network.toml");
    std::fs::write(&new_file, &changed).unwrap();
    let out = ok(
        &bin,
        ivy,
        &["network", "accept", &new_file.to_string_lossy()],
    );
    assert!(out.contains("replaced the trusted network"), "{out}");
    assert!(out.contains(bound), "{out}");
    assert!(
        out.contains("quorum 3 of 3: any one honest order server is enough"),
        "{out}"
    );
    let out = ok(&bin, ivy, &["status"]);
    assert!(
        out.contains("quorum 3 of 3: any one honest order server is enough"),
        "{out}"
    );
    // Putting the old file back is now the change.
    std::fs::write(ivy.home.join("network.toml"), &text).unwrap();
    let err = fails(&bin, ivy, &["status"]);
    assert!(err.contains("differs from the one"), "{err}");
    drop(net);
}
