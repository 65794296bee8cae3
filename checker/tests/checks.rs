//! The checker's findings, as tests: each undone fix is found by the
//! search itself (with a shortest trace that replays), and with every fix
//! in place nothing is found within the same bounds. At t = 2 of 3 one
//! colluding server is enough for a fork; at t = 3 of 3 two are not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use grompi_checker::cores::Weaken;
use grompi_checker::{Action, Bounds, Previous, Property, Report, RouterMode, Trace, explore};

const SEED: u64 = 7;
const MAX_STATES: usize = 200_000;

fn run(bounds: &Bounds) -> Report {
    let report = explore(bounds, SEED, MAX_STATES).unwrap();
    println!("{report}");
    report
}

/// The violation found, checked to be the expected property, and its
/// trace replayed from scratch to the same property at its last step.
fn found(bounds: &Bounds, property: Property) -> Trace {
    let report = run(bounds);
    let (v, trace) = report.violation.expect("the checker finds the attack");
    assert_eq!(v.property, property, "{v}");
    let replay = trace.replay().unwrap();
    assert_eq!(replay.no_ops, 0);
    let (at, again) = replay
        .violation
        .expect("the trace replays to the violation");
    assert_eq!(at, trace.actions.len());
    assert_eq!(again.property, property);
    trace
}

fn clean(bounds: &Bounds) -> Report {
    let report = run(bounds);
    assert!(report.states > 1, "{report}");
    assert!(
        report.violation.is_none(),
        "{}",
        report
            .violation
            .as_ref()
            .map(|(v, t)| format!("{v}\n{t}"))
            .unwrap_or_default()
    );
    assert!(report.complete, "the search must cover its bounds");
    report
}

fn joined(report: &Report) {
    let n = report.coverage.get("the joiner joined").copied();
    assert!(n.is_some_and(|n| n > 0), "{report}");
}

fn join_bounds(weaken: Weaken) -> Bounds {
    Bounds {
        joiner: true,
        puppet: true,
        messages: 0,
        depth: 6,
        weaken,
        ..Bounds::small()
    }
}

#[test]
fn join_path_holds_and_undoing_the_binding_lets_a_substituted_update_in() {
    joined(&clean(&join_bounds(Weaken::default())));
    let trace = found(
        &join_bounds(Weaken {
            join_binding: true,
            ..Weaken::default()
        }),
        Property::NoInjectedMember,
    );
    // The attack: the genuine Update's tags with the puppet's substitute.
    assert!(
        trace
            .actions
            .iter()
            .any(|a| matches!(a, Action::Substitute { .. }))
    );
    assert!(trace.actions.len() <= 5, "{trace}");
}

fn admin_padding_bounds(weaken: Weaken) -> Bounds {
    Bounds {
        members: 3,
        joiner: true,
        removal: true,
        puppet: true,
        admin_padding: true,
        messages: 0,
        depth: 7,
        weaken,
        ..Bounds::small()
    }
}

#[test]
fn admin_padding_is_refused_and_undoing_the_check_lets_the_router_add_itself() {
    joined(&clean(&admin_padding_bounds(Weaken::default())));
    let trace = found(
        &admin_padding_bounds(Weaken {
            admin_slots: true,
            ..Weaken::default()
        }),
        Property::NoInjectedMember,
    );
    assert!(
        trace
            .actions
            .iter()
            .any(|a| matches!(a, Action::PaddingUpdate { .. }))
    );
}

fn head_proof_bounds(weaken: Weaken) -> Bounds {
    Bounds {
        head_proofs: true,
        depth: 6,
        weaken,
        ..Bounds::small()
    }
}

#[test]
fn withholding_is_detected_and_undoing_the_nonce_check_hides_it() {
    clean(&head_proof_bounds(Weaken::default()));
    let trace = found(
        &head_proof_bounds(Weaken {
            head_proof_nonce: true,
            ..Weaken::default()
        }),
        Property::WithholdingDetected,
    );
    assert!(trace.actions.iter().any(|a| matches!(
        a,
        Action::ProofAnswer { stale, .. } if *stale != 0
    )));
}

fn quorum_bounds(quorum: usize, equivocating: Vec<u32>) -> Bounds {
    Bounds {
        servers: 3,
        quorum,
        equivocating,
        members: 3,
        messages: 2,
        depth: 8,
        ..Bounds::small()
    }
}

/// Section 9's bound, both ways: with fewer than 2t - N colluding servers
/// no fork within the bounds; with 2t - N a fork, found.
#[test]
fn the_quorum_bound_is_tight() {
    // t = 2 of 3: 2t - N = 1.
    let report = clean(&quorum_bounds(2, vec![]));
    let both = "a member accepted two indices after the Setup";
    assert!(
        report.coverage.get(both).is_some_and(|n| *n > 0),
        "{report}"
    );
    let trace = found(&quorum_bounds(2, vec![2]), Property::SameEnvelope);
    assert_eq!(trace.actions.len(), 6, "{trace}");
    // t = 3 of 3: 2t - N = 3; two colluding servers are not enough.
    clean(&quorum_bounds(3, vec![1, 2]));
    found(&quorum_bounds(3, vec![0, 1, 2]), Property::SameEnvelope);
}

/// The fork found at t = 2 of 3, written down: it replays to the same
/// violation, step by step.
#[test]
fn the_fork_trace_replays() {
    let trace = Trace {
        bounds: quorum_bounds(2, vec![2]),
        seed: 99,
        actions: vec![
            Action::Message { member: 0 },
            Action::Message { member: 0 },
            Action::Attest { server: 0, env: 1 },
            Action::Attest { server: 1, env: 2 },
            Action::Deliver {
                member: 0,
                env: 1,
                tagged: 1,
                after: 0,
                previous: Previous::Genuine,
            },
            Action::Deliver {
                member: 1,
                env: 2,
                tagged: 2,
                after: 0,
                previous: Previous::Genuine,
            },
        ],
        described: Vec::new(),
    };
    let replay = trace.replay().unwrap();
    assert_eq!(replay.no_ops, 0);
    let (at, v) = replay.violation.unwrap();
    assert_eq!((at, v.property), (6, Property::SameEnvelope), "{v}");
    // One step short, nothing is violated: the last delivery makes the fork.
    let mut short = trace.clone();
    short.actions.pop();
    assert_eq!(short.replay().unwrap().violation, None);
}

/// Every power at once, at t = 3 of 3 with two colluding servers: each
/// attack above fits in five actions here (a colluding server's tags come
/// with every delivery), and with every fix in place none is found.
#[test]
fn every_power_at_once_finds_nothing_with_the_fixes_in_place() {
    let report = clean(&Bounds {
        servers: 3,
        quorum: 3,
        equivocating: vec![1, 2],
        members: 3,
        joiner: true,
        removal: true,
        messages: 1,
        receipts: 1,
        puppet: true,
        admin_padding: true,
        head_proofs: true,
        compromised_admin: false,
        router: RouterMode::Adversary,
        depth: 5,
        weaken: Weaken::default(),
    });
    assert!(report.states > 1_000, "{report}");
    // Not vacuous: the search joined, removed, reported and halted.
    for event in [
        "the joiner joined",
        "a member was removed",
        "a member adopted a second roster",
        "a member raised an alert",
    ] {
        assert!(
            report.coverage.get(event).is_some_and(|n| *n > 0),
            "{event}: {report}"
        );
    }
}

/// Deduplication merges the same actions in another order, and only
/// those: a different action leads to a different fingerprint.
#[test]
fn fingerprints_ignore_order_but_not_content() {
    use grompi_checker::Model;
    let bounds = Bounds {
        messages: 2,
        ..Bounds::small()
    };
    let (model, init) = Model::new(bounds, SEED).unwrap();
    let path = |actions: &[Action]| {
        let mut s = init.clone();
        for a in actions {
            s = model
                .step(&s, a)
                .unwrap()
                .expect("the action changes the state");
        }
        s.fingerprint()
    };
    let m0 = Action::Message { member: 0 };
    let m1 = Action::Message { member: 1 };
    let a0 = Action::Attest { server: 0, env: 1 };
    let a1 = Action::Attest { server: 1, env: 1 };
    assert_eq!(path(&[m0, m1]), path(&[m1, m0]));
    assert_eq!(path(&[m0, a0, a1]), path(&[m0, a1, a0]));
    assert_ne!(path(&[m0, a0]), path(&[m0, a1]));
    assert_ne!(path(&[m0, m0]), path(&[m0, m1]));
    // The real order server decides: the same envelope again at its next
    // index is a replay (its sequence does not increase), refused, and
    // the step changes nothing.
    let s = [m0, a0]
        .iter()
        .fold(init.clone(), |s, a| model.step(&s, a).unwrap().unwrap());
    assert!(model.step(&s, &a0).unwrap().is_none());
}

/// A compromised Admin can add a member and change something else at once:
/// every current member refuses the Update while the joiner follows the
/// list it was shown (PROTOCOL.md 7.5, a documented limitation). The
/// checker finds exactly that split, and the honest member has an alert.
#[test]
fn a_compromised_admin_splits_only_a_joiner_and_is_reported() {
    let bounds = Bounds {
        members: 3,
        joiner: true,
        messages: 0,
        compromised_admin: true,
        depth: 6,
        ..Bounds::small()
    };
    let trace = found(&bounds, Property::SameRoster);
    assert!(
        trace
            .actions
            .iter()
            .any(|a| matches!(a, Action::RogueUpdate { .. }))
    );
    let (model, mut s) = grompi_checker::Model::new(bounds.clone(), trace.seed).unwrap();
    for a in &trace.actions {
        s = model.step(&s, a).unwrap().unwrap();
    }
    let refused = s.members[1..bounds.members]
        .iter()
        .flat_map(|m| m.alerts.iter())
        .any(|a| a.contains("not the current list with the change applied"));
    assert!(refused, "{:?}", s.members[1].alerts);
    // Without the compromised Admin, the same bounds hold.
    clean(&Bounds {
        compromised_admin: false,
        ..bounds
    });
}

/// The coverage event `event` was seen in some visited state.
fn covered(report: &Report, event: &str) {
    assert!(
        report.coverage.get(event).is_some_and(|n| *n > 0),
        "{event}: {report}"
    );
}

/// The shipping router driver forwards: honest members submit to the
/// router's core, the order servers answer its jobs (each its oldest, in
/// every interleaving), and members receive the deliveries the core cuts.
/// With no other router move nothing is violated, and every member
/// accepts what the driver delivered, two Messages in a row included.
#[test]
fn the_shipping_driver_forwards_and_members_accept_its_deliveries() {
    let report = clean(&Bounds {
        router: RouterMode::Driver,
        members: 3,
        messages: 2,
        depth: 6,
        ..Bounds::small()
    });
    for event in [
        "every member accepted what the router core delivered",
        "a member accepted two deliveries of the router core",
        "a member accepted two indices after the Setup",
    ] {
        covered(&report, event);
    }
}

/// Membership changes through the driver: the Admin's Update is admitted
/// by the router's core (its next slot set prepared in the router's store,
/// the router restarted from it), and the joiner joins and the removed
/// member leaves by what the core delivers.
#[test]
fn the_shipping_driver_carries_a_join_and_a_removal() {
    let report = clean(&Bounds {
        router: RouterMode::Driver,
        members: 3,
        joiner: true,
        removal: true,
        messages: 0,
        depth: 6,
        ..Bounds::small()
    });
    for event in [
        "the joiner joined",
        "a member was removed",
        "a member adopted a third roster",
        "every member accepted what the router core delivered",
    ] {
        covered(&report, event);
    }
}

/// The driver and the adversary interleaved: the adversary keeps every
/// move while the router's core forwards honest submissions. The join
/// path holds with the fixes in place, and with the join binding undone
/// the substituted Update is still found.
#[test]
fn the_driver_alongside_the_adversary_keeps_the_join_path_and_finds_its_attack() {
    let both = |weaken| Bounds {
        router: RouterMode::Both,
        ..join_bounds(weaken)
    };
    let report = clean(&both(Weaken::default()));
    joined(&report);
    covered(&report, "a member accepted what the router core delivered");
    found(
        &both(Weaken {
            join_binding: true,
            ..Weaken::default()
        }),
        Property::NoInjectedMember,
    );
}

/// Section 9's bound with the driver forwarding beside the adversary: a
/// fork at t = 2 of 3 with one colluding server (the colluding server also
/// answers the core's jobs), none at t = 3 of 3 with two.
#[test]
fn the_quorum_bound_is_tight_with_the_driver_forwarding() {
    let both = |quorum, equivocating| Bounds {
        router: RouterMode::Both,
        members: 2,
        depth: 6,
        ..quorum_bounds(quorum, equivocating)
    };
    found(&both(2, vec![2]), Property::SameEnvelope);
    let report = clean(&both(3, vec![1, 2]));
    covered(&report, "a member accepted what the router core delivered");
}

/// The driver in the model step by step: the Setup's fan-out is fully
/// answered before the search starts; a Message makes one job per server;
/// one server's tags are not a quorum at t = 2 of 2, both are, and then
/// every member accepts the Message the core delivered. The replay is
/// exact: the same path again reaches the same state.
#[test]
fn the_driver_steps_and_replays_exactly() {
    use grompi_checker::Model;
    let bounds = Bounds {
        router: RouterMode::Driver,
        ..Bounds::small()
    };
    let (model, init) = Model::new(bounds, SEED).unwrap();
    assert!(init.router_jobs.is_empty());
    let message = Action::Message { member: 0 };
    let forward = |server| Action::Forward { server };
    let path = |actions: &[Action]| {
        actions
            .iter()
            .fold(init.clone(), |s, a| model.step(&s, a).unwrap().unwrap())
    };
    let sent = path(&[message]);
    assert_eq!(*sent.router_jobs, vec![0, 1]);
    let one = path(&[message, forward(0)]);
    assert_eq!(*one.router_jobs, vec![1]);
    assert!(one.members.iter().all(|m| m.from_router == 0));
    let both = path(&[message, forward(0), forward(1)]);
    assert!(both.router_jobs.is_empty());
    assert!(both.members.iter().all(|m| m.from_router == 1));
    assert!(
        both.members
            .iter()
            .all(|m| m.conv.transcript().entries().len() == 2)
    );
    assert_eq!(
        both.fingerprint(),
        path(&[message, forward(0), forward(1)]).fingerprint()
    );
    // The other order is another router history.
    assert_ne!(
        both.fingerprint(),
        path(&[message, forward(1), forward(0)]).fingerprint()
    );
    // No job in flight for server 0: answering one changes nothing.
    assert!(model.step(&both, &forward(0)).unwrap().is_none());
}
