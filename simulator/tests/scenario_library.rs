//! The scenario library: every shipped scenario parses, runs, and meets its
//! expectation; integrity holds whenever one order server is honest (at
//! the default quorum) over a sweep of seeds; the quorum bound is tight;
//! the same seed gives the same report byte for byte.

#![allow(clippy::unwrap_used, clippy::panic)] // test code: a failed unwrap is a failed test

use grompi_simulator::scenario::{
    Adversary, Expectation, Network, OrderServerAdversary, OrderServerStrategy, RouterStrategy,
    Scenario, Step,
};
use grompi_simulator::verdict::Outcome;
use grompi_simulator::world::run;
use std::path::PathBuf;

fn shipped() -> Vec<(PathBuf, Scenario)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.display().to_string();
        let s = Scenario::parse(&file, &text).unwrap_or_else(|e| panic!("{e}"));
        out.push((path, s));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether at least one order server follows the protocol.
fn one_server_honest(s: &Scenario) -> bool {
    (0..s.network.order_servers).any(|i| {
        s.adversary
            .order_servers
            .iter()
            .find(|o| o.server == i)
            .is_none_or(|o| o.strategy == OrderServerStrategy::Honest)
    })
}

/// Whether no order server equivocates.
fn no_equivocator(s: &Scenario) -> bool {
    s.adversary
        .order_servers
        .iter()
        .all(|o| o.strategy != OrderServerStrategy::Equivocate)
}

#[test]
fn every_shipped_scenario_parses() {
    let all = shipped();
    for (path, s) in &all {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap();
        assert_eq!(
            s.name,
            stem,
            "{}: name must equal the file's stem",
            path.display()
        );
    }
    assert!(all.len() >= 15, "only {} scenarios shipped", all.len());
}

#[test]
fn every_shipped_scenario_meets_its_expectation() {
    for (_, s) in shipped() {
        for seed in [1, 2] {
            let r = run(&s, seed).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert!(
                r.as_expected,
                "{} with seed {seed}: {:?}\n{}",
                s.name,
                r.mismatches,
                r.to_markdown()
            );
            // The trust assumption: one honest order server at quorum N,
            // or no equivocator at all, keeps integrity.
            if (one_server_honest(&s) && s.network.quorum() == s.network.order_servers)
                || no_equivocator(&s)
            {
                assert!(
                    r.verdicts.integrity.ok(),
                    "{} seed {seed}: integrity broke with an honest server: {:?}",
                    s.name,
                    r.verdicts.integrity
                );
            }
            if !r.verdicts.integrity.ok() {
                assert!(
                    r.finding.contains("A fork was accepted"),
                    "{}: the report must say what became possible: {}",
                    s.name,
                    r.finding
                );
            }
        }
    }
}

#[test]
fn a_sweep_of_seeds_keeps_integrity_whenever_one_server_is_honest() {
    const SEEDS: u64 = 8;
    let mut runs = 0;
    for (_, s) in shipped() {
        for seed in 100..100 + SEEDS {
            let r = run(&s, seed).unwrap();
            runs += 1;
            if one_server_honest(&s) && s.network.quorum() == s.network.order_servers {
                assert!(
                    r.verdicts.integrity.ok(),
                    "{} seed {seed}: {:?}",
                    s.name,
                    r.verdicts.integrity
                );
            }
            assert_eq!(
                r.verdicts.integrity.ok(),
                s.expect.integrity,
                "{} seed {seed}",
                s.name
            );
            assert!(r.as_expected, "{} seed {seed}: {:?}", s.name, r.mismatches);
        }
    }
    assert!(runs >= 15 * SEEDS);
}

fn fork_scenario(n: usize, t: usize, equivocators: usize) -> Scenario {
    Scenario {
        name: format!("bound-n{n}-t{t}-f{equivocators}"),
        description: "quorum bound".into(),
        network: Network {
            order_servers: n,
            quorum: Some(t),
            members: ["alice", "bob", "charlie", "dave"]
                .map(String::from)
                .to_vec(),
            admins: None,
            order_server_limits: None,
            group_period: None,
            history: Default::default(),
        },
        adversary: Adversary {
            router: RouterStrategy::Fork {
                partition: vec![
                    vec!["alice".into(), "bob".into()],
                    vec!["charlie".into(), "dave".into()],
                ],
                leak_tags: false,
                naive: false,
                relay_all_proofs: false,
            },
            order_servers: (0..equivocators)
                .map(|server| OrderServerAdversary {
                    server,
                    strategy: OrderServerStrategy::Equivocate,
                })
                .collect(),
            compromised_members: vec![],
        },
        script: ["alice", "charlie"]
            .iter()
            .enumerate()
            .map(|(i, from)| Step {
                from: (*from).into(),
                send: Some(format!("history {i}")),
                add: None,
                remove: None,
                leave: false,
                receipt: false,
                prove_heads: false,
                misbehave: None,
                rekey: false,
                read_history: false,
                with_previous: false,
            })
            .collect(),
        expect: Expectation {
            outcome: Outcome::Detected,
            integrity: true,
            alerts: vec![],
            refusals: vec![],
            every_message_read: false,
            read_nothing_after_removal: vec![],
            read_history_before_join: vec![],
            read_nothing_before_join: vec![],
        },
    }
}

#[test]
fn a_fork_needs_at_least_2t_minus_n_equivocating_servers() {
    for n in 3..=5usize {
        for t in n / 2 + 1..=n {
            for f in 0..=n {
                let r = run(&fork_scenario(n, t, f), 5).unwrap();
                let possible = f as i64 >= 2 * t as i64 - n as i64;
                assert_eq!(
                    !r.verdicts.integrity.ok(),
                    possible,
                    "N={n} t={t} f={f}: fork possible is {possible}; {:?}\n{}",
                    r.verdicts.integrity,
                    r.to_markdown()
                );
                if possible {
                    assert!(
                        r.finding
                            .contains(&format!("2t - N = {}", 2 * t as i64 - n as i64))
                    );
                } else {
                    // The half without enough tags knows it is left behind.
                    assert_eq!(r.observed, Outcome::Detected, "N={n} t={t} f={f}");
                }
            }
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_report_byte_for_byte() {
    for (_, s) in shipped() {
        let a = run(&s, 42).unwrap();
        let b = run(&s, 42).unwrap();
        assert_eq!(a.to_json(), b.to_json(), "{}", s.name);
        assert_eq!(a.to_markdown(), b.to_markdown(), "{}", s.name);
        let c = run(&s, 43).unwrap();
        assert_eq!(c.seed, 43);
        assert!(
            !a.to_json().contains(&"0".repeat(16)),
            "no hashes in reports"
        );
    }
}

#[test]
fn different_seeds_give_different_interleavings() {
    let s = shipped()
        .into_iter()
        .find(|(_, s)| s.name == "reorder")
        .unwrap()
        .1;
    let timings: std::collections::BTreeSet<String> = (0..4)
        .map(|seed| {
            let r = run(&s, seed).unwrap();
            format!(
                "{:?}",
                r.views
                    .iter()
                    .map(|v| v.accepted.iter().map(|e| e.accepted_ms).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    assert!(timings.len() > 1, "the seed must change the run");
}

/// Misbehaviour kinds that the shipped library exercises: an honest
/// member's alert or an honest order server's refusal in some scenario.
const EXERCISED: &[&str] = &[
    "bad_attestation",
    "bad_key_share",
    "bad_head_proof",
    "bad_submission_tag",
    "block_digest_mismatch",
    "conflicting_heads",
    "conversation_exists",
    "equivocation",
    "foreign_slot_key",
    "gap",
    "head_mismatch",
    "head_proof_fork",
    "history_mismatch",
    "index_mismatch",
    "key_commitment_mismatch",
    "limit_exceeded",
    "low_order_key",
    "malformed",
    "missing_key_share",
    "not_authorized",
    "receipt_mismatch",
    "rewritten_index",
    "rn1_mismatch",
    "bad_history_block",
    "sequence_not_increasing",
    "slot_set_mismatch",
    "unattested_envelope",
    "unauthenticated_sender",
    "unauthorized_update",
    "undecryptable",
    "unexpected_kind",
    "unknown_conversation",
    "unknown_slot",
    "withheld",
    "wrong_context",
    "wrong_epoch",
    "wrong_key_id",
];

/// Misbehaviour kinds no adversary in the model can make any core raise,
/// with the reason. Each must stay unseen: if one shows up, it belongs in
/// `EXERCISED`.
const NOT_EXERCISABLE: &[(&str, &str)] = &[(
    "rolled_back",
    "no order server in the model ever proves less than it proved before: a crashed server restarts from what it committed, none is restored from an older copy, and each member is relayed every proof of a server from the same history",
)];

/// Whether order server `server` follows the protocol in `s`.
fn server_is_honest(s: &Scenario, server: usize) -> bool {
    s.adversary
        .order_servers
        .iter()
        .find(|o| o.server == server)
        .is_none_or(|o| o.strategy == OrderServerStrategy::Honest)
}

#[test]
fn the_library_exercises_these_detection_paths() {
    let mut seen = std::collections::BTreeSet::new();
    for (_, s) in shipped() {
        let r = run(&s, 1).unwrap();
        for v in r.views.iter().filter(|v| v.honest) {
            for a in &v.alerts {
                seen.insert(a.kind.clone());
            }
        }
        // Only honest servers' refusals count: a dishonest server refusing
        // is not a detection anyone can rely on.
        for (server, kinds) in &r.server_refusals {
            let position: usize = server
                .trim_start_matches("order server ")
                .parse()
                .unwrap_or_else(|_| panic!("{}: unexpected server name {server}", s.name));
            if server_is_honest(&s, position) {
                seen.extend(kinds.keys().cloned());
            }
        }
    }
    for k in EXERCISED {
        assert!(seen.contains(*k), "no shipped scenario exercises {k}");
    }
    for k in &seen {
        assert!(
            grompi_proto::MisbehaviourKind::from_name(k).is_some(),
            "{k} is not a misbehaviour kind"
        );
    }
    for (k, why) in NOT_EXERCISABLE {
        assert!(
            !seen.contains(*k),
            "{k} is raised after all (listed as not exercisable: {why})"
        );
    }
    // Every kind is accounted for, exactly once.
    for kind in grompi_proto::MisbehaviourKind::ALL {
        let name = kind.name();
        let listed = usize::from(EXERCISED.contains(&name))
            + usize::from(NOT_EXERCISABLE.iter().any(|(k, _)| *k == name));
        assert_eq!(
            listed, 1,
            "{name} must be listed once, as exercised or as not exercisable"
        );
    }
}

/// Each strategy and toolkit action that names the kind it provokes is
/// shipped in a scenario that expects exactly that kind.
#[test]
fn every_malicious_strategy_has_a_scenario_expecting_its_detection() {
    use grompi_simulator::scenario::{JobTamper, Misbehave};
    let all = shipped();
    for tamper in [
        JobTamper::LowOrderKey,
        JobTamper::Reopen,
        JobTamper::UnknownConversation,
        JobTamper::SkipIndex,
        JobTamper::WrongHead,
        JobTamper::SwapNextSlots,
    ] {
        let used = all.iter().any(|(_, s)| {
            s.adversary.router == RouterStrategy::MalformedJobs { tamper }
                && s.expect.refusals.iter().any(|r| r == tamper.refusal())
        });
        assert!(used, "no scenario ships malformed_jobs {tamper:?}");
    }
    for what in [
        Misbehave::BrokenKeyCommitment,
        Misbehave::Impersonate,
        Misbehave::FalseReceipt,
        Misbehave::SwapSlots,
        Misbehave::RemoveLastAdmin,
        Misbehave::WrongEpoch,
        Misbehave::UnknownSlot,
        Misbehave::NonAdminUpdate,
        Misbehave::SecondSetup,
        Misbehave::Oversize,
        Misbehave::BadHistoryBlock,
        Misbehave::BadRn1,
    ] {
        let used = all.iter().any(|(_, s)| {
            s.script.iter().any(|step| step.misbehave == Some(what))
                && (s.expect.alerts.iter().any(|a| a == what.caught_as())
                    || s.expect.refusals.iter().any(|r| r == what.caught_as()))
        });
        assert!(used, "no scenario ships misbehave {what:?}");
    }
    assert!(all.iter().any(|(_, s)| {
        s.adversary
            .order_servers
            .iter()
            .any(|o| o.strategy == OrderServerStrategy::SkipSenderCheck)
    }));
    // Every way of tampering with a history page: the reader names it.
    use grompi_simulator::scenario::HistoryTamper;
    for tamper in HistoryTamper::ALL {
        let used = all.iter().any(|(_, s)| {
            s.adversary.router == RouterStrategy::TamperHistory { tamper }
                && s.expect.alerts == [tamper.caught_as()]
        });
        assert!(used, "no scenario ships tamper_history {tamper:?}");
    }
    // Attack 1, both variants: the joiner names the substitute.
    use grompi_simulator::scenario::PreviousHead;
    for (previous_head, alert) in [
        (PreviousHead::Empty, "malformed"),
        (PreviousHead::Genuine, "unattested_envelope"),
    ] {
        let used = all.iter().any(|(_, s)| {
            s.adversary.router == RouterStrategy::SubstituteJoin { previous_head }
                && s.expect.alerts.iter().any(|a| a == alert)
                && s.expect.outcome == Outcome::Prevented
        });
        assert!(used, "no scenario ships substitute_join {previous_head:?}");
    }
}

fn shipped_named(name: &str) -> Scenario {
    shipped()
        .into_iter()
        .find(|(_, s)| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not shipped"))
        .1
}

/// The group-keyed scenarios show what their descriptions say, beyond the
/// expectation table: the bad shares are blamed on the server that sealed
/// them, the targeted member is the one left unable to read, the
/// concurrent Rekeys are both ordered, and the removed member saw the
/// later envelopes without reading them.
#[test]
fn group_keyed_scenarios_show_what_they_claim() {
    for seed in [1, 2] {
        for name in ["group-keys-bad-shares", "group-keys-bad-shares-targeted"] {
            let r = run(&shipped_named(name), seed).unwrap();
            let alerts: Vec<_> = r
                .views
                .iter()
                .flat_map(|v| &v.alerts)
                .filter(|a| a.kind == "bad_key_share" || a.kind == "missing_key_share")
                .collect();
            assert!(!alerts.is_empty(), "{name} seed {seed}");
            for a in alerts {
                assert!(
                    a.message.contains("order server 1") && a.server == Some(1),
                    "{name} seed {seed}: {a:?}"
                );
            }
        }
        // Only Bob's shares were corrupted: only Bob misses messages, and
        // the same run with `every_message_read` fails on him alone.
        let mut targeted = shipped_named("group-keys-bad-shares-targeted");
        let r = run(&targeted, seed).unwrap();
        for v in r.views.iter().filter(|v| v.honest) {
            let unread = v
                .accepted
                .iter()
                .filter(|e| e.kind == "message" && e.plaintext.is_none())
                .count();
            assert_eq!(unread > 0, v.name == "bob", "seed {seed}: {}", v.name);
        }
        targeted.expect.every_message_read = true;
        let r = run(&targeted, seed).unwrap();
        assert!(!r.as_expected);
        assert!(
            r.mismatches.iter().all(|m| m.starts_with("bob ")),
            "{:?}",
            r.mismatches
        );
        // Two Rekeys ordered, the second refused identically everywhere.
        let r = run(&shipped_named("group-keys-concurrent-rekeys"), seed).unwrap();
        for v in &r.views {
            let rekeys: Vec<u64> = v
                .accepted
                .iter()
                .filter(|e| e.kind == "rekey")
                .map(|e| e.index)
                .collect();
            assert_eq!(rekeys.len(), 2, "seed {seed}: {}", v.name);
            let wrong: Vec<Option<u64>> = v
                .alerts
                .iter()
                .filter(|a| a.kind == "wrong_key_id")
                .map(|a| a.index)
                .collect();
            assert_eq!(wrong, vec![Some(rekeys[1])], "seed {seed}: {}", v.name);
        }
        // The colluding router did hand Mallory later envelopes; she
        // accepted nothing past her removal and read nothing there.
        let s = shipped_named("group-keys-removed-collusion");
        let r = run(&s, seed).unwrap();
        assert!(r.as_expected, "{:?}", r.mismatches);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("hands mallory deliveries after the removal")),
            "{:?}",
            r.notes
        );
        let mallory = r.views.iter().find(|v| v.name == "mallory").unwrap();
        assert!(mallory.removed);
        let alice = r.views.iter().find(|v| v.name == "alice").unwrap();
        let last = mallory.accepted.last().unwrap().index;
        assert!(alice.accepted.iter().filter(|e| e.index > last).count() >= 4);
    }
}

/// The shared-history scenarios show what they claim: with an honest router
/// the joiner's verified history shows every message before its join as
/// the original members read it and nobody raises anything; with a
/// tampering router the joiner, and only the joiner, raises exactly
/// `history_mismatch` and shows nothing, while every live view is intact;
/// in a `joined` conversation the joiner verifies its history but reads
/// nothing before its join.
#[test]
fn history_scenarios_show_what_they_claim() {
    use grompi_simulator::scenario::HistoryTamper;
    for seed in [1, 2] {
        let r = run(&shipped_named("history-shared"), seed).unwrap();
        assert!(r.as_expected, "seed {seed}: {:?}", r.mismatches);
        assert!(
            r.views.iter().all(|v| v.alerts.is_empty()),
            "seed {seed}: {:?}",
            r.views.iter().map(|v| &v.alerts).collect::<Vec<_>>()
        );
        let dave = r.views.iter().find(|v| v.name == "dave").unwrap();
        let h = dave.history.as_ref().unwrap();
        assert!(h.verified && h.first_own > 0, "seed {seed}: {h:?}");
        let shown: Vec<(String, String)> = h
            .messages_before_join()
            .map(|l| (l.sender.clone().unwrap(), l.plaintext.clone().unwrap()))
            .collect();
        // Every message sent before the join, in the order sent (the
        // script's messages before Alice adds Dave), by its real sender.
        let sent: Vec<(String, String)> = r
            .sent
            .iter()
            .take(4)
            .map(|s| (s.from.clone(), s.plaintext.clone()))
            .collect();
        assert_eq!(shown, sent, "seed {seed}");
        assert_eq!(
            r.verdicts.history_matches,
            grompi_simulator::verdict::Check::Holds
        );

        let r = run(&shipped_named("history-joined"), seed).unwrap();
        assert!(r.as_expected, "seed {seed}: {:?}", r.mismatches);
        let dave = r.views.iter().find(|v| v.name == "dave").unwrap();
        let h = dave.history.as_ref().unwrap();
        assert!(h.verified, "seed {seed}");
        assert_eq!(h.messages_before_join().count(), 0, "seed {seed}");
        assert!(h.shown.len() as u64 > h.first_own, "seed {seed}: {h:?}");

        for tamper in HistoryTamper::ALL {
            let (_, s) = shipped()
                .into_iter()
                .find(|(_, s)| s.adversary.router == RouterStrategy::TamperHistory { tamper })
                .unwrap();
            let r = run(&s, seed).unwrap();
            assert!(r.as_expected, "{} seed {seed}: {:?}", s.name, r.mismatches);
            assert!(
                r.notes
                    .iter()
                    .any(|n| n.contains("the router tampers with the history")),
                "{} seed {seed}: {:?}",
                s.name,
                r.notes
            );
            for v in &r.views {
                let kinds: std::collections::BTreeSet<&str> =
                    v.alerts.iter().map(|a| a.kind.as_str()).collect();
                if v.name == "dave" {
                    assert_eq!(kinds, ["history_mismatch"].into(), "{} seed {seed}", s.name);
                    let h = v.history.as_ref().unwrap();
                    assert!(!h.verified && h.shown.is_empty(), "{} seed {seed}", s.name);
                } else {
                    assert!(
                        kinds.is_empty(),
                        "{} seed {seed}: {}: {kinds:?}",
                        s.name,
                        v.name
                    );
                }
            }
            assert!(r.verdicts.integrity.ok() && r.verdicts.content_consistency.ok());
        }
    }
}
