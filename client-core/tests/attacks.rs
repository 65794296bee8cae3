//! The attacks that broke the integrity promise when the tests' attacker
//! had less than the threat model's power, each next to an honest control.
//!
//! The router here has its full power: it registers its own accounts
//! ([`Puppet`]), starts Olm sessions with members from their published
//! bundles, composes any envelope with any header, slot set, roles and
//! member list, and empties or rewrites any field of what it relays. A
//! compromised member sends anything its keys allow
//! (`Conversation::compose_unchecked`).
//!
//! Each test checks that the honest member accepts no forgery, raises a
//! typed alert, and is not wedged where a recovery path exists.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use grompi_client_core::content::{Change, Content, MemberEntry, SetupContent, UpdateContent};
use grompi_client_core::conversation::{Conversation, Event, Phase};
use grompi_client_core::head_proof::{HeadProofOutcome, NotProvedReason};
use grompi_client_core::testkit::{Puppet, World, delivery_of};
use grompi_client_core::{Alert, Delivery};
use grompi_proto::mac::{AttestationStatement, HeadProof, HeadProofStatement};
use grompi_proto::{
    AccountId, Epoch, Head, Index, Misbehaviour, Sequence, SlotEntry, SlotIndex, SlotKey, SlotRole,
    SlotSecret, SlotSet, pb,
};
use rand::SeedableRng;

fn msg(s: &str) -> Content {
    Content::Message(s.as_bytes().to_vec())
}

fn kinds(alerts: &[Alert]) -> Vec<Misbehaviour> {
    alerts.iter().map(|a| a.kind.clone()).collect()
}

fn is_member(c: &Conversation, a: &AccountId) -> bool {
    c.membership().is_some_and(|m| m.members().contains_key(a))
}

// ---- Attack 1: a joiner accepts a substituted Update ---------------------

/// Alice (0, Admin), Bob (1), Charlie (2); Alice adds Dave (3) after one
/// message. Returns the world and the Update's index.
fn dave_added(seed: u64) -> (World, Index) {
    let mut w = World::new(seed, 4, 3, 3);
    w.deliver_now = vec![true, true, true, false];
    w.setup_with(0, &[0, 1, 2]);
    w.send(0, msg("before dave"));
    let mut next = w.roster();
    next.insert(3, SlotRole::Member);
    let dave = w.accounts[3];
    let at = w.update(
        0,
        Change::Add {
            account: dave,
            role: SlotRole::Member,
        },
        next,
    );
    (w, at)
}

/// The router's substitute for the Update at `at`: same epoch, sender
/// slot, sequence and causal context, composed by its puppet, with the
/// genuine next members plus the puppet in a padding slot (as an Admin in
/// a slot re-roled Admin when `admin`, which changes the slot set hash; as
/// a Member in the genuine set otherwise).
fn substitute_update(
    w: &World,
    at: Index,
    puppet: &mut Puppet,
    admin: bool,
) -> grompi_proto::Envelope {
    let genuine = &w.log[at.0 as usize].envelope;
    let h = genuine.header();
    let view = &w.views[&Epoch(1)];
    let held: Vec<SlotIndex> = view.holders.values().copied().collect();
    let padding = (0..view.slots.len() as u32)
        .map(SlotIndex)
        .find(|s| !held.contains(s))
        .unwrap();
    let role = if admin {
        SlotRole::Admin
    } else {
        SlotRole::Member
    };
    let mut entries: Vec<SlotEntry> = view.slots.entries().to_vec();
    entries[padding.0 as usize].role = role;
    let next_slots = SlotSet::new(entries).unwrap();
    let mut next_members: Vec<MemberEntry> = view
        .holders
        .iter()
        .map(|(m, slot)| MemberEntry {
            account: w.accounts[*m],
            role: view.roles[m],
            slot: *slot,
        })
        .collect();
    next_members.push(MemberEntry {
        account: puppet.account(),
        role,
        slot: padding,
    });
    let content = Content::Update(UpdateContent {
        change: Change::Add {
            account: w.accounts[3],
            role: SlotRole::Member,
        },
        next_slots,
        next_members,
        history: Default::default(),
    });
    let dave_slot = view.holders[&3];
    puppet.compose(
        &w.config.servers,
        w.conversation,
        h.epoch(),
        h.sender(),
        h.sequence(),
        h.last_seen(),
        &[(dave_slot, w.accounts[3])],
        &content,
    )
}

/// What Dave is handed for the substitute: the genuine attestations (his
/// genuine `next_tags`) and the given previous head.
fn substituted_delivery(
    w: &mut World,
    at: Index,
    env: &grompi_proto::Envelope,
    previous_head: Option<Head>,
) -> Delivery {
    let genuine = w.delivery(at, 3, &[0, 1, 2]).unwrap();
    let slot = w.views[&Epoch(1)].holders[&3];
    delivery_of(
        env,
        w.conversation,
        at,
        slot,
        genuine.attestations,
        previous_head,
    )
}

#[test]
fn attack_1_a_joiner_rejects_a_substituted_update() {
    // (previous head supplied?, puppet listed as Admin?) -> the alert.
    let cases = [
        (
            false,
            true,
            Misbehaviour::Malformed(grompi_proto::WireError::MissingField(
                "delivery.previous_head (required to join)",
            )),
        ),
        (
            true,
            true,
            Misbehaviour::UnattestedEnvelope { index: Index(2) },
        ),
        (
            true,
            false,
            Misbehaviour::UnauthorizedUpdate(
                "the Update adding this member was not sent by an Admin of the list it states",
            ),
        ),
    ];
    for (with_previous, admin, expected) in cases {
        let (mut w, at) = dave_added(71);
        assert_eq!(at, Index(2));
        let (mut secrets, mut dave) = w.replica(3);
        let mut puppet = Puppet::new(5);
        puppet.befriend(&mut secrets);
        let forged = substitute_update(&w, at, &mut puppet, admin);
        let previous = with_previous.then(|| w.previous_head(at));
        let d = substituted_delivery(&mut w, at, &forged, previous);
        dave.receive(d, &mut secrets);
        assert_eq!(dave.phase(), &Phase::AwaitingJoin, "{expected:?}");
        assert!(!is_member(&dave, &puppet.account()));
        assert_eq!(kinds(&dave.drain_alerts()), vec![expected.clone()]);
        // Not wedged: the genuine Update still joins him, with the genuine
        // roster, and nothing more is reported.
        let genuine = w.delivery(at, 3, &[0, 1, 2]).unwrap();
        dave.receive(genuine, &mut secrets);
        assert_eq!(dave.phase(), &Phase::Active, "{expected:?}");
        assert!(!is_member(&dave, &puppet.account()));
        assert_eq!(
            dave.membership().unwrap().members(),
            w.convs[0].as_ref().unwrap().membership().unwrap().members()
        );
        assert_eq!(dave.transcript().entries()[0].head, w.log[2].head);
        assert!(dave.drain_alerts().is_empty(), "{expected:?}");
    }
}

#[test]
fn attack_1_control_the_genuine_update_joins_without_alerts() {
    let (mut w, at) = dave_added(71);
    let (mut secrets, mut dave) = w.replica(3);
    dave.receive(w.delivery(at, 3, &[0, 1, 2]).unwrap(), &mut secrets);
    assert_eq!(dave.phase(), &Phase::Active);
    assert!(dave.drain_alerts().is_empty());
    let joined = dave.drain_events().into_iter().find_map(|e| match e {
        Event::MembershipChanged {
            authorized,
            vouched_by,
            ..
        } => Some((authorized, vouched_by)),
        _ => None,
    });
    // Told plainly whose word the member list rests on.
    assert_eq!(joined, Some((true, Some(w.accounts[0]))));
    // And a joiner's delivery without its previous head never joins.
    let (mut secrets, mut dave) = w.replica(3);
    let mut d = w.delivery(at, 3, &[0, 1, 2]).unwrap();
    d.previous_head = None;
    dave.receive(d, &mut secrets);
    assert_eq!(dave.phase(), &Phase::AwaitingJoin);
    assert_eq!(dave.drain_alerts().len(), 1);
}

// ---- Attack 2: an Admin-role padding slot ---------------------------------

/// A slot set for Alice (Admin, slot 0), Bob (slot 1) and one padding slot
/// with `padding`.
fn setup_slots(w: &World, padding: SlotRole) -> (SlotSet, Vec<MemberEntry>) {
    let slots = SlotSet::new(vec![
        SlotEntry {
            key: w.spare_key(0, 0),
            role: SlotRole::Admin,
        },
        SlotEntry {
            key: w.spare_key(1, 0),
            role: SlotRole::Member,
        },
        SlotEntry {
            key: SlotSecret::from_bytes([9; 32]).public_key(),
            role: padding,
        },
    ])
    .unwrap();
    let members = vec![
        MemberEntry {
            account: w.accounts[0],
            role: SlotRole::Admin,
            slot: SlotIndex(0),
        },
        MemberEntry {
            account: w.accounts[1],
            role: SlotRole::Member,
            slot: SlotIndex(1),
        },
    ];
    (slots, members)
}

#[test]
fn attack_2_an_admin_padding_slot_is_refused_by_creator_receivers_and_update_senders() {
    let mut w = World::new(72, 2, 3, 3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    // The creator refuses the router's slot set; the control is created.
    let (slots, members) = setup_slots(&w, SlotRole::Admin);
    let refused = Conversation::create(
        w.conversation,
        w.config.clone(),
        slots.clone(),
        members.clone(),
        &mut rng,
        &mut w.secrets[0],
    );
    assert!(
        matches!(refused, Err(grompi_client_core::ClientError::InvalidMembership(r)) if r.contains("Admin slot")),
        "{refused:?}"
    );
    let (good, good_members) = setup_slots(&w, SlotRole::Member);
    assert!(
        Conversation::create(
            w.conversation,
            w.config.clone(),
            good,
            good_members,
            &mut rng,
            &mut w.secrets[0],
        )
        .is_ok()
    );

    // A receiver refuses such a Setup (sent by a creator whose client does
    // not check), even fully attested; the control is accepted.
    for (padding, accepted) in [(SlotRole::Admin, false), (SlotRole::Member, true)] {
        let mut w = World::new(73, 2, 3, 3);
        let (slots, members) = setup_slots(&w, padding);
        let content = Content::Setup(SetupContent {
            creator: w.accounts[0],
            slots: slots.clone(),
            members,
            history: Default::default(),
        });
        let keys = w.secrets[0]
            .order_keys
            .peek(&w.spare_key(0, 0), &w.config.servers)
            .unwrap();
        let composed = grompi_client_core::compose::compose(
            &grompi_client_core::compose::Sending {
                conversation: w.conversation,
                epoch: Epoch(0),
                sender: SlotIndex(0),
                sequence: Sequence(1),
                last_seen: None,
                recipients: &[(SlotIndex(1), w.accounts[1])],
                mac_keys: &keys,
            },
            &content,
            &mut rng,
            &mut w.secrets[0].pairwise,
        )
        .unwrap();
        let env = composed.envelope;
        let head =
            Head::genesis(&w.conversation).next(&w.conversation, Epoch(0), Index(0), &env.hash());
        let bob_key = w.spare_key(1, 0);
        let attestations = (0..3u32)
            .map(|s| {
                let tag = w
                    .raw_mac_keys(s as usize, bob_key)
                    .attest(&AttestationStatement {
                        conversation: w.conversation,
                        epoch: Epoch(0),
                        index: Index(0),
                        head,
                    });
                grompi_proto::mac::Attestation {
                    server: s,
                    index: Index(0),
                    head,
                    tags: vec![tag],
                    next_tags: vec![],
                    key_shares: Vec::new(),
                    log_index: None,
                }
            })
            .collect();
        let d = delivery_of(
            &env,
            w.conversation,
            Index(0),
            SlotIndex(1),
            attestations,
            Some(Head::genesis(&w.conversation)),
        );
        let mut bob = Conversation::invited(w.conversation, w.accounts[1], w.config.clone());
        bob.receive(d, &mut w.secrets[1]);
        if accepted {
            assert_eq!(bob.phase(), &Phase::Active);
            assert!(bob.drain_alerts().is_empty());
        } else {
            assert_eq!(bob.phase(), &Phase::AwaitingSetup);
            let alerts = kinds(&bob.drain_alerts());
            assert!(
                matches!(alerts.as_slice(), [Misbehaviour::UnauthorizedUpdate(r)] if r.contains("Admin slot")),
                "{alerts:?}"
            );
        }
    }

    // An Admin refuses to send an Update whose next set has an Admin
    // padding slot; sent anyway (a compromised Admin), every member raises
    // the same alert, keeps the member list and keeps following.
    let mut w = World::new(74, 3, 3, 3);
    w.setup(0);
    let next = w.roster();
    let change = Change::SetRole {
        account: w.accounts[2],
        role: SlotRole::Member,
    };
    let u = w.prepare_update(change, next.clone(), SlotRole::Admin);
    let mut alice = w.convs[0].clone().unwrap();
    let refused = alice.compose(Content::Update(u.clone()), &mut rng, &mut w.secrets[0]);
    assert!(
        matches!(refused, Err(grompi_client_core::ClientError::InvalidMembership(r)) if r.contains("Admin slot")),
        "{refused:?}"
    );
    let before = w.convs[1].as_ref().unwrap().membership().unwrap().clone();
    let at = w.send_update(0, u);
    for m in 0..3 {
        let c = w.convs[m].as_mut().unwrap();
        assert_eq!(c.phase(), &Phase::Active, "member {m}");
        assert_eq!(c.membership().unwrap().members(), before.members());
        let alerts = c.drain_alerts();
        assert!(
            matches!(kinds(&alerts).as_slice(), [Misbehaviour::UnauthorizedUpdate(r)] if r.contains("Admin slot")),
            "member {m}: {alerts:?}"
        );
        assert_eq!(alerts[0].index, Some(at));
    }
    // Control: the same change with Member padding applies cleanly.
    let u = w.prepare_update(change, next, SlotRole::Member);
    let mut alice = w.convs[0].clone().unwrap();
    assert!(
        alice
            .compose(Content::Update(u), &mut rng, &mut w.secrets[0])
            .is_ok()
    );
}

// ---- Attack 3: head proofs that cannot be neutralised --------------------

struct Prover {
    keys: Vec<grompi_proto::MacKeys>,
    conversation: grompi_proto::ConversationId,
}

impl Prover {
    fn new(w: &mut World, slot_key: SlotKey) -> Self {
        Self {
            keys: (0..3).map(|s| w.raw_mac_keys(s, slot_key)).collect(),
            conversation: w.conversation,
        }
    }
    fn proof(
        &self,
        server: u32,
        epoch: Epoch,
        count: u64,
        head: Head,
        nonce: grompi_proto::ProofNonce,
    ) -> HeadProof {
        let statement = HeadProofStatement {
            conversation: self.conversation,
            epoch,
            count,
            head,
            nonce,
        };
        HeadProof {
            server,
            statement,
            tag: self.keys[server as usize].prove_head(&statement),
        }
    }
}

fn bob_with_two_messages(seed: u64) -> (World, Prover) {
    let mut w = World::new(seed, 3, 3, 3);
    w.setup(0);
    w.send(0, msg("a"));
    w.send(0, msg("b"));
    let key = w.slot_key(Epoch(0), 1).unwrap().1;
    let prover = Prover::new(&mut w, key);
    w.convs[1].as_mut().unwrap().drain_alerts();
    (w, prover)
}

#[test]
fn attack_3_head_proofs_cannot_be_neutralised() {
    let (mut w, p) = bob_with_two_messages(75);
    let head = w.log[2].head;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let bob = w.convs[1].as_mut().unwrap();

    // Control: three honest proofs are consistent.
    let nonce = bob.head_proof_nonce(&mut rng);
    let honest: Vec<_> = (0..3)
        .map(|s| p.proof(s, Epoch(0), 3, head, nonce))
        .collect();
    let out = bob.check_head_proofs(&honest);
    assert!(
        out.iter()
            .all(|o| matches!(o, HeadProofOutcome::Consistent { count: 3, .. })),
        "{out:?}"
    );
    assert!(bob.drain_alerts().is_empty());

    // A rewritten epoch: the MAC is checked first, so a proof relabelled
    // with an epoch whose key Bob holds fails, and one with an epoch he
    // cannot check is "not proved", never consistent.
    let nonce = bob.head_proof_nonce(&mut rng);
    let mut relabelled = p.proof(0, Epoch(0), 3, head, nonce);
    relabelled.statement.epoch = Epoch(7);
    let mut rewritten_count = p.proof(1, Epoch(0), 3, head, nonce);
    rewritten_count.statement.count = 2;
    let fine = p.proof(2, Epoch(0), 3, head, nonce);
    let out = bob.check_head_proofs(&[relabelled, rewritten_count, fine]);
    assert_eq!(
        out,
        vec![
            HeadProofOutcome::NotProved {
                server: 0,
                reason: NotProvedReason::UnknownEpoch(Epoch(7))
            },
            HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof { server: 1 }),
            HeadProofOutcome::Consistent {
                server: 2,
                count: 3
            },
        ]
    );
    // The alert does not pretend to know who broke the proof: the router
    // chose the slot and relayed the bytes.
    let alerts = bob.drain_alerts();
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].to_string().contains("router"), "{}", alerts[0]);

    // Dropped and unparseable proofs are reported, never silently skipped.
    let nonce = bob.head_proof_nonce(&mut rng);
    let mut garbled = pb::HeadProof::from(&p.proof(1, Epoch(0), 3, head, nonce));
    garbled.tag.truncate(5);
    let only = pb::HeadProof::from(&p.proof(0, Epoch(0), 3, head, nonce));
    let out = bob.check_head_proof_answers(vec![garbled, only]);
    assert!(matches!(
        &out[0],
        HeadProofOutcome::NotProved {
            server: 1,
            reason: NotProvedReason::Unparseable(_)
        }
    ));
    assert_eq!(
        out[1..],
        [
            HeadProofOutcome::Consistent {
                server: 0,
                count: 3
            },
            HeadProofOutcome::NotProved {
                server: 2,
                reason: NotProvedReason::NoAnswer
            },
        ]
    );
    assert!(matches!(
        kinds(&bob.drain_alerts()).as_slice(),
        [Misbehaviour::Malformed(_)]
    ));
    // An empty answer leaves every pinned server unproved.
    bob.head_proof_nonce(&mut rng);
    let out = bob.check_head_proof_answers(Vec::new());
    assert_eq!(
        out,
        (0..3)
            .map(|server| HeadProofOutcome::NotProved {
                server,
                reason: NotProvedReason::NoAnswer
            })
            .collect::<Vec<_>>()
    );

    // The router makes an honest server answer for another member's slot:
    // the proof fails, and the alert names the router as a suspect.
    let charlie_key = w.slot_key(Epoch(0), 2).unwrap().1;
    let other = Prover::new(&mut w, charlie_key);
    let bob = w.convs[1].as_mut().unwrap();
    let nonce = bob.head_proof_nonce(&mut rng);
    let out = bob.check_head_proofs(&[
        other.proof(0, Epoch(0), 3, head, nonce),
        p.proof(1, Epoch(0), 3, head, nonce),
        p.proof(2, Epoch(0), 3, head, nonce),
    ]);
    assert_eq!(
        out[0],
        HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof { server: 0 })
    );
    let alerts = bob.drain_alerts();
    assert!(alerts[0].to_string().contains("the router or that server"));
}

#[test]
fn a_rolled_back_server_is_caught_with_evidence_across_restarts() {
    let (mut w, p) = bob_with_two_messages(76);
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let bob = w.convs[1].as_mut().unwrap();
    let nonce = bob.head_proof_nonce(&mut rng);
    let out = bob.check_head_proofs(&[p.proof(0, Epoch(0), 3, w.log[2].head, nonce)]);
    assert!(matches!(
        out[0],
        HeadProofOutcome::Consistent { count: 3, .. }
    ));
    bob.drain_alerts();
    // Control: the same proof again, and a server proving less that never
    // proved more, raise nothing.
    let nonce = bob.head_proof_nonce(&mut rng);
    bob.check_head_proofs(&[
        p.proof(0, Epoch(0), 3, w.log[2].head, nonce),
        p.proof(1, Epoch(0), 2, w.log[1].head, nonce),
    ]);
    assert!(bob.drain_alerts().is_empty());
    // Saved and restored: the bar survives.
    let saved = bob.save_state();
    let mut bob = Conversation::restore_state(&saved, w.config.clone()).unwrap();
    // Server 0, restored from an old snapshot, proves count 2: its head at
    // count 2 is ours, so without memory it would look consistent.
    let nonce = bob.head_proof_nonce(&mut rng);
    let out = bob.check_head_proofs(&[
        p.proof(0, Epoch(0), 2, w.log[1].head, nonce),
        p.proof(1, Epoch(0), 2, Head::from_bytes([1; 32]), nonce),
    ]);
    let rolled = Misbehaviour::RolledBack {
        server: 0,
        proved: 3,
        proved_epoch: Epoch(0),
        count: 2,
    };
    assert_eq!(out[0], HeadProofOutcome::Misbehaviour(rolled.clone()));
    // Another head at a count it proved before.
    assert_eq!(
        out[1],
        HeadProofOutcome::Misbehaviour(Misbehaviour::RolledBack {
            server: 1,
            proved: 2,
            proved_epoch: Epoch(0),
            count: 2,
        })
    );
    let alerts = bob.drain_alerts();
    assert_eq!(alerts[0].kind, rolled);
    assert_eq!(alerts[0].server, Some(0));
}

// ---- Attack 4: a withheld tag at t = N -------------------------------------

#[test]
fn attack_4_a_withheld_tag_at_full_quorum_is_reported() {
    for withhold in [true, false] {
        let (mut w, p) = bob_with_two_messages(77);
        let (mut secrets, mut bob) = w.replica(1);
        bob.receive(w.delivery(Index(0), 1, &[0, 1, 2]).unwrap(), &mut secrets);
        let servers: &[u32] = if withhold { &[0, 1] } else { &[0, 1, 2] };
        bob.receive(w.delivery(Index(1), 1, servers).unwrap(), &mut secrets);
        bob.receive(w.delivery(Index(2), 1, &[0, 1, 2]).unwrap(), &mut secrets);
        // No hole: every index was delivered.
        assert!(bob.missing_indices(8).is_empty());
        // What the shell does after a fetch that changed nothing.
        assert_eq!(bob.stuck(), withhold);
        if bob.stuck() {
            bob.report_stall();
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let nonce = bob.head_proof_nonce(&mut rng);
        let proofs: Vec<_> = (0..3)
            .map(|s| p.proof(s, Epoch(0), 3, w.log[2].head, nonce))
            .collect();
        let out = bob.check_head_proofs(&proofs);
        if withhold {
            assert_eq!(bob.next_expected(), Index(1));
            assert_eq!(
                out[2],
                HeadProofOutcome::Misbehaviour(Misbehaviour::Withheld {
                    server: 2,
                    attested: 3,
                    delivered: 1
                })
            );
            let alerts = bob.drain_alerts();
            assert_eq!(alerts.len(), 1, "{alerts:?}");
            assert_eq!(alerts[0].server, Some(2));
        } else {
            assert_eq!(bob.next_expected(), Index(3));
            assert!(
                out.iter()
                    .all(|o| matches!(o, HeadProofOutcome::Consistent { .. }))
            );
            assert!(bob.drain_alerts().is_empty());
        }
    }
}

// ---- Attack 5: a compromised Admin splits a joiner's view -----------------

#[test]
fn attack_5_a_joiner_is_told_what_it_cannot_check_and_learns_of_the_split() {
    for honest in [false, true] {
        let mut w = World::new(78, 4, 3, 3);
        w.setup_with(0, &[0, 1, 2]);
        let mut next = w.roster();
        next.insert(3, SlotRole::Member);
        if !honest {
            // Also promotes Bob, which the change does not say.
            next.insert(1, SlotRole::Admin);
        }
        let at = w.update(
            0,
            Change::Add {
                account: w.accounts[3],
                role: SlotRole::Member,
            },
            next,
        );
        let vouched = w.convs[3]
            .as_mut()
            .unwrap()
            .drain_events()
            .into_iter()
            .find_map(|e| match e {
                Event::MembershipChanged { vouched_by, .. } => Some(vouched_by),
                _ => None,
            });
        assert_eq!(vouched, Some(Some(w.accounts[0])));
        for m in 0..3 {
            let alerts = kinds(&w.convs[m].as_mut().unwrap().drain_alerts());
            if honest {
                assert!(alerts.is_empty());
            } else {
                assert!(
                    matches!(alerts.as_slice(), [Misbehaviour::UnauthorizedUpdate(_)]),
                    "member {m}: {alerts:?}"
                );
            }
        }
        assert!(w.convs[3].as_mut().unwrap().drain_alerts().is_empty());
        // Alice writes: members who refused the Update send Dave no block,
        // so Dave learns he is not a member in their eyes.
        w.send(0, msg("after"));
        let dave = w.convs[3].as_mut().unwrap();
        let alerts = kinds(&dave.drain_alerts());
        if honest {
            assert!(alerts.is_empty());
            let rosters: Vec<_> = (0..4)
                .map(|m| {
                    w.convs[m]
                        .as_ref()
                        .unwrap()
                        .membership()
                        .unwrap()
                        .members()
                        .clone()
                })
                .collect();
            assert!(rosters.windows(2).all(|r| r[0] == r[1]));
        } else {
            assert_eq!(
                alerts,
                vec![Misbehaviour::Undecryptable("no block for this member")]
            );
        }
        assert_eq!(w.log[at.0 as usize].epoch, Epoch(0));
    }
}

#[test]
fn attack_5_an_update_listing_a_joiner_without_adding_it_is_refused_by_the_joiner() {
    let mut w = World::new(79, 4, 3, 3);
    w.setup_with(0, &[0, 1, 2]);
    let mut next = w.roster();
    next.insert(3, SlotRole::Member);
    let bob = w.accounts[1];
    w.update(
        0,
        Change::SetRole {
            account: bob,
            role: SlotRole::Member,
        },
        next,
    );
    let dave = w.convs[3].as_mut().unwrap();
    assert_eq!(dave.phase(), &Phase::AwaitingJoin);
    assert!(matches!(
        kinds(&dave.drain_alerts()).as_slice(),
        [Misbehaviour::UnauthorizedUpdate(_)]
    ));
}

// ---- Attack 6: a forged Setup cannot wedge an invitee ---------------------

#[test]
fn attack_6_a_forged_setup_neither_pins_a_wrong_key_nor_blames_honest_servers() {
    for forge in [true, false] {
        let mut w = World::new(80, 3, 3, 3);
        w.deliver_now = vec![true, false, true];
        w.setup_with(0, &[0, 1, 2]);
        let (mut secrets, mut bob) = w.replica(1);
        let other_key = w.spare_key(1, 0);
        let keys_before = secrets.order_keys.len();
        if forge {
            let mut puppet = Puppet::new(6);
            puppet.befriend(&mut secrets);
            let slots = SlotSet::new(vec![
                SlotEntry {
                    key: SlotSecret::from_bytes([4; 32]).public_key(),
                    role: SlotRole::Admin,
                },
                SlotEntry {
                    key: other_key,
                    role: SlotRole::Member,
                },
            ])
            .unwrap();
            let content = Content::Setup(SetupContent {
                creator: puppet.account(),
                slots,
                members: vec![
                    MemberEntry {
                        account: puppet.account(),
                        role: SlotRole::Admin,
                        slot: SlotIndex(0),
                    },
                    MemberEntry {
                        account: w.accounts[1],
                        role: SlotRole::Member,
                        slot: SlotIndex(1),
                    },
                ],
                history: Default::default(),
            });
            let env = puppet.compose(
                &w.config.servers,
                w.conversation,
                Epoch(0),
                SlotIndex(0),
                Sequence(1),
                None,
                &[(SlotIndex(1), w.accounts[1])],
                &content,
            );
            let genuine = w.delivery(Index(0), 1, &[0, 1, 2]).unwrap();
            let d = delivery_of(
                &env,
                w.conversation,
                Index(0),
                SlotIndex(1),
                genuine.attestations,
                genuine.previous_head,
            );
            bob.receive(d, &mut secrets);
            assert_eq!(bob.phase(), &Phase::AwaitingSetup);
            // Nothing is consumed by a candidate.
            assert_eq!(secrets.order_keys.len(), keys_before);
        }
        bob.receive(w.delivery(Index(0), 1, &[0, 1, 2]).unwrap(), &mut secrets);
        assert_eq!(bob.phase(), &Phase::Active, "forge {forge}");
        assert_eq!(bob.transcript().entries()[0].head, w.log[0].head);
        let alerts = kinds(&bob.drain_alerts());
        if forge {
            assert_eq!(
                alerts,
                vec![Misbehaviour::UnattestedEnvelope { index: Index(0) }]
            );
        } else {
            assert!(alerts.is_empty());
        }
        // The genuine slot's key is used, the forged one's is not.
        assert_eq!(secrets.order_keys.len(), keys_before - 1);
        assert!(secrets.order_keys.contains(&other_key));
        // And Bob follows on.
        w.send(0, msg("hello"));
        bob.receive(w.delivery(Index(1), 1, &[0, 1, 2]).unwrap(), &mut secrets);
        assert_eq!(bob.next_expected(), Index(2));
        assert!(bob.drain_alerts().is_empty());
    }
}

#[test]
fn puppets_cannot_grow_an_invitees_sessions_without_bound() {
    let mut w = World::new(81, 2, 3, 3);
    w.deliver_now = vec![true, false];
    w.setup(0);
    let (mut secrets, mut bob) = w.replica(1);
    let genuine = w.delivery(Index(0), 1, &[0, 1, 2]).unwrap();
    let limit = grompi_client_core::conversation::MAX_CANDIDATE_PEERS;
    let mut limited = 0;
    for n in 0..(limit + 3) {
        let mut puppet = Puppet::new(100 + n as u64);
        puppet.befriend(&mut secrets);
        let content = Content::Setup(SetupContent {
            creator: puppet.account(),
            slots: SlotSet::new(vec![SlotEntry {
                key: w.spare_key(1, 0),
                role: SlotRole::Admin,
            }])
            .unwrap(),
            members: vec![MemberEntry {
                account: puppet.account(),
                role: SlotRole::Admin,
                slot: SlotIndex(0),
            }],
            history: Default::default(),
        });
        let env = puppet.compose(
            &w.config.servers,
            w.conversation,
            Epoch(0),
            SlotIndex(0),
            Sequence(1),
            None,
            &[(SlotIndex(0), w.accounts[1])],
            &content,
        );
        let d = delivery_of(&env, w.conversation, Index(0), SlotIndex(0), vec![], None);
        bob.receive(d, &mut secrets);
        limited += bob
            .drain_alerts()
            .iter()
            .filter(|a| matches!(a.kind, Misbehaviour::LimitExceeded(_)))
            .count();
    }
    assert_eq!(limited, 3);
    // The genuine Setup is still accepted.
    bob.receive(genuine, &mut secrets);
    assert_eq!(bob.phase(), &Phase::Active);
}

// ---- What the router and a member can put in front of a client -----------
//
// One test per row of the tables in SECURITY.md ("What the router and a
// member can put in front of a client") whose check had no test of its own.

use grompi_client_core::keyring::SlotMacKeys;
use grompi_proto::envelope::HeaderFields;
use grompi_proto::mac::{Attestation, Tag};
use grompi_proto::{Envelope, EnvelopeHeader, KeyCommitment, SlotSetHash};

/// Alice (0, Admin), Bob (1) and Charlie (2) after the Setup and one
/// message of Alice's: a fresh replica of Bob that accepted index 0, and the
/// genuine delivery of index 1 to him.
fn bob_before_index_1(seed: u64) -> (World, grompi_client_core::Secrets, Conversation, Delivery) {
    let mut w = World::new(seed, 3, 3, 3);
    w.setup(0);
    w.send(0, msg("a"));
    let (mut secrets, mut bob) = w.replica(1);
    bob.receive(w.delivery(Index(0), 1, &[0, 1, 2]).unwrap(), &mut secrets);
    assert_eq!(bob.next_expected(), Index(1));
    bob.drain_alerts();
    bob.drain_events();
    let genuine = w.delivery(Index(1), 1, &[0, 1, 2]).unwrap();
    (w, secrets, bob, genuine)
}

/// The genuine delivery then completes index 1, with no further alert.
fn genuine_completes_index_1(
    w: &World,
    secrets: &mut grompi_client_core::Secrets,
    bob: &mut Conversation,
    genuine: Delivery,
    case: &str,
) {
    bob.receive(genuine, secrets);
    assert_eq!(bob.next_expected(), Index(2), "{case}");
    assert_eq!(bob.transcript().get(Index(1)).unwrap().head, w.log[1].head);
    assert!(bob.drain_alerts().is_empty(), "{case}");
}

#[test]
fn router_rewriting_any_header_field_is_not_accepted() {
    type Rewrite = fn(&mut HeaderFields, &mut Vec<u8>);
    let unattested = Misbehaviour::UnattestedEnvelope { index: Index(1) };
    let cases: Vec<(&str, Rewrite, Misbehaviour)> = vec![
        (
            "conversation",
            |f, _| f.conversation = grompi_proto::ConversationId::from_bytes([7; 32]),
            Misbehaviour::WrongContext,
        ),
        (
            "epoch",
            |f, _| f.epoch = Epoch(1),
            Misbehaviour::WrongContext,
        ),
        (
            "kind",
            |f, _| f.kind = grompi_proto::EnvelopeKind::Receipt,
            unattested.clone(),
        ),
        (
            "kind and slot_set_hash",
            |f, _| {
                f.kind = grompi_proto::EnvelopeKind::Update;
                f.slot_set_hash = Some(SlotSetHash::from_bytes([3; 32]));
            },
            unattested.clone(),
        ),
        (
            "sender_slot",
            |f, _| f.sender = SlotIndex((f.sender.0 + 1) % 4),
            unattested.clone(),
        ),
        (
            "sequence",
            |f, _| f.sequence = Sequence(f.sequence.0 + 1),
            unattested.clone(),
        ),
        (
            "last_seen_index",
            |f, _| f.last_seen = None,
            unattested.clone(),
        ),
        (
            "body and body_hash",
            |f, body| {
                body.push(0);
                f.body_hash = grompi_proto::BodyHash::of(body);
            },
            unattested.clone(),
        ),
        (
            "key_commitment",
            |f, _| f.key_commitment = KeyCommitment::from_bytes([9; 32]),
            unattested.clone(),
        ),
    ];
    for (case, rewrite, expected) in cases {
        let (w, mut secrets, mut bob, genuine) = bob_before_index_1(95);
        let mut forged = genuine.clone();
        let mut fields = forged.header.fields();
        rewrite(&mut fields, &mut forged.body);
        forged.header = EnvelopeHeader::new(fields).unwrap();
        bob.receive(forged, &mut secrets);
        assert_eq!(bob.next_expected(), Index(1), "{case}");
        assert_eq!(kinds(&bob.drain_alerts()), vec![expected], "{case}");
        genuine_completes_index_1(&w, &mut secrets, &mut bob, genuine, case);
    }
}

#[test]
fn router_relabelled_repeated_or_rewritten_attestations_make_no_quorum() {
    let bad = |server| Misbehaviour::BadAttestation {
        server,
        index: Index(1),
    };
    type Tamper = fn(&[Attestation]) -> Vec<Attestation>;
    let cases: Vec<(&str, Tamper, Vec<Misbehaviour>)> = vec![
        (
            "one server's attestation three times",
            |a| vec![a[0].clone(), a[0].clone(), a[0].clone()],
            vec![],
        ),
        (
            "server 0's attestation relabelled as servers 1 and 2",
            |a| {
                let mut one = a[0].clone();
                one.server = 1;
                let mut two = a[0].clone();
                two.server = 2;
                vec![a[0].clone(), one, two]
            },
            vec![bad(1), bad(2)],
        ),
        (
            "a server the descriptor does not pin",
            |a| {
                let mut seven = a[2].clone();
                seven.server = 7;
                vec![a[0].clone(), a[1].clone(), seven]
            },
            vec![bad(7)],
        ),
        (
            "the index field rewritten",
            |a| {
                let mut x = a[2].clone();
                x.index = Index(2);
                vec![a[0].clone(), a[1].clone(), x]
            },
            vec![bad(2)],
        ),
        (
            "the head rewritten",
            |a| {
                let mut x = a[2].clone();
                x.head = Head::from_bytes([4; 32]);
                vec![a[0].clone(), a[1].clone(), x]
            },
            vec![bad(2)],
        ),
        (
            "two tags for one slot",
            |a| {
                let mut x = a[2].clone();
                x.tags.push(x.tags[0]);
                vec![a[0].clone(), a[1].clone(), x]
            },
            vec![bad(2)],
        ),
        (
            "the tag moved to next_tags (not checked for a current member)",
            |a| {
                let mut x = a[2].clone();
                x.next_tags = std::mem::take(&mut x.tags);
                vec![a[0].clone(), a[1].clone(), x]
            },
            vec![],
        ),
    ];
    for (case, tamper, expected) in cases {
        let (w, mut secrets, mut bob, genuine) = bob_before_index_1(96);
        let mut d = genuine.clone();
        d.attestations = tamper(&genuine.attestations);
        bob.receive(d, &mut secrets);
        assert_eq!(bob.next_expected(), Index(1), "{case}");
        assert_eq!(kinds(&bob.drain_alerts()), expected, "{case}");
        genuine_completes_index_1(&w, &mut secrets, &mut bob, genuine, case);
    }
}

#[test]
fn router_previous_head_means_nothing_to_a_member_that_holds_the_chain() {
    for previous in [None, Some(Head::from_bytes([2; 32]))] {
        let (w, mut secrets, mut bob, mut genuine) = bob_before_index_1(97);
        genuine.previous_head = previous;
        bob.receive(genuine, &mut secrets);
        // Accepted on Bob's own head before index 1, whatever came with it.
        assert_eq!(bob.next_expected(), Index(2), "{previous:?}");
        assert_eq!(bob.transcript().get(Index(1)).unwrap().head, w.log[1].head);
        assert_eq!(bob.transcript().head_before(Index(1)), Some(w.log[0].head));
        assert!(bob.drain_alerts().is_empty());
    }
}

#[test]
fn router_a_head_proof_for_another_conversation_or_server_is_refused() {
    let (mut w, p) = bob_with_two_messages(98);
    let head = w.log[2].head;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let elsewhere = Prover {
        keys: p.keys.clone(),
        conversation: grompi_proto::ConversationId::from_bytes([6; 32]),
    };
    let bob = w.convs[1].as_mut().unwrap();
    let nonce = bob.head_proof_nonce(&mut rng);
    // A proof whose MAC is valid under Bob's slot key but that states
    // another conversation; server 2's proof relabelled as server 0's;
    // control: server 1's proof as it was made.
    let mut relabelled = p.proof(2, Epoch(0), 3, head, nonce);
    relabelled.server = 0;
    let out = bob.check_head_proofs(&[
        elsewhere.proof(0, Epoch(0), 3, head, nonce),
        relabelled,
        p.proof(1, Epoch(0), 3, head, nonce),
    ]);
    assert_eq!(
        out,
        vec![
            HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof { server: 0 }),
            HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof { server: 0 }),
            HeadProofOutcome::Consistent {
                server: 1,
                count: 3
            },
            HeadProofOutcome::NotProved {
                server: 2,
                reason: NotProvedReason::NoAnswer
            },
        ]
    );
}

#[test]
fn router_rewriting_a_block_digest_is_not_accepted() {
    let (w, mut secrets, mut bob, genuine) = bob_before_index_1(109);
    let own = genuine.block.as_ref().unwrap().0 as usize;
    let other = (0..genuine.block_digests.len())
        .find(|p| *p != own)
        .unwrap();
    for (case, position) in [("another member's digest", other), ("a dropped digest", 99)] {
        let mut d = genuine.clone();
        if position == 99 {
            d.block_digests.remove(other);
            d.block = d
                .block
                .map(|(p, b)| (if p as usize > other { p - 1 } else { p }, b));
        } else {
            d.block_digests[position] = grompi_proto::BlockDigest::from_bytes([1; 32]);
        }
        bob.receive(d, &mut secrets);
        assert_eq!(bob.next_expected(), Index(1), "{case}");
        assert_eq!(
            kinds(&bob.drain_alerts()),
            vec![Misbehaviour::UnattestedEnvelope { index: Index(1) }],
            "{case}"
        );
    }
    genuine_completes_index_1(&w, &mut secrets, &mut bob, genuine, "digests");
}

#[test]
fn router_a_substituted_one_time_prekey_costs_availability_not_secrecy() {
    use grompi_client_core::pairwise::Pairwise;
    let mut alice = Pairwise::new();
    let mut bob = Pairwise::new();
    let mut router = Pairwise::new();
    for substitute in [false, true] {
        let mut bundle = bob.bundle(true);
        if substitute {
            bundle.one_time_prekey = router.new_one_time_prekeys(1).first().copied();
        }
        // Only the fallback prekey is signed: the bundle still verifies.
        assert!(bundle.verify().is_ok());
        alice.start_session(&bundle).unwrap();
        let frame = alice.encrypt_to(&bob.account_id(), b"secret").unwrap();
        // The router, holding the one-time key's secret, still reads nothing.
        assert!(router.decrypt_from(&frame).is_err());
        let read = bob.decrypt_from(&frame);
        if substitute {
            assert!(read.is_err());
        } else {
            assert_eq!(&read.unwrap().1[..], b"secret");
        }
    }
}

#[test]
fn a_setup_slot_key_the_member_never_uploaded_leaves_out_only_that_member() {
    for foreign in [true, false] {
        let mut w = World::new(99, 3, 3, 3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let bob_key = if foreign {
            SlotSecret::from_bytes([5; 32]).public_key()
        } else {
            w.spare_key(1, 0)
        };
        let slots = SlotSet::new(vec![
            SlotEntry {
                key: w.spare_key(0, 0),
                role: SlotRole::Admin,
            },
            SlotEntry {
                key: bob_key,
                role: SlotRole::Member,
            },
            SlotEntry {
                key: w.spare_key(2, 0),
                role: SlotRole::Member,
            },
        ])
        .unwrap();
        let members = (0..3)
            .map(|m| MemberEntry {
                account: w.accounts[m],
                role: if m == 0 {
                    SlotRole::Admin
                } else {
                    SlotRole::Member
                },
                slot: SlotIndex(m as u32),
            })
            .collect();
        // The creator cannot tell whose order key a slot holds.
        let (_, composed) = Conversation::create(
            w.conversation,
            w.config.clone(),
            slots.clone(),
            members,
            &mut rng,
            &mut w.secrets[0],
        )
        .unwrap();
        let env = composed.envelope;
        let genesis = Head::genesis(&w.conversation);
        let head = genesis.next(&w.conversation, Epoch(0), Index(0), &env.hash());
        for m in [1usize, 2] {
            let key = slots.get(SlotIndex(m as u32)).unwrap().key;
            let attestations = (0..3u32)
                .map(|s| Attestation {
                    server: s,
                    index: Index(0),
                    head,
                    tags: vec![
                        w.raw_mac_keys(s as usize, key)
                            .attest(&AttestationStatement {
                                conversation: w.conversation,
                                epoch: Epoch(0),
                                index: Index(0),
                                head,
                            }),
                    ],
                    next_tags: vec![],
                    key_shares: Vec::new(),
                    log_index: None,
                })
                .collect();
            let d = delivery_of(
                &env,
                w.conversation,
                Index(0),
                SlotIndex(m as u32),
                attestations,
                Some(genesis),
            );
            let mut c = Conversation::invited(w.conversation, w.accounts[m], w.config.clone());
            c.receive(d, &mut w.secrets[m]);
            let alerts = kinds(&c.drain_alerts());
            if foreign && m == 1 {
                assert_eq!(c.phase(), &Phase::AwaitingSetup);
                assert_eq!(alerts, vec![Misbehaviour::ForeignSlotKey]);
            } else {
                assert_eq!(c.phase(), &Phase::Active, "member {m}");
                assert!(alerts.is_empty(), "member {m}: {alerts:?}");
            }
        }
    }
}

#[test]
fn an_update_giving_a_member_a_key_it_never_uploaded_halts_only_that_member() {
    for foreign in [true, false] {
        let mut w = World::new(100, 3, 3, 3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        w.setup(0);
        let change = Change::SetRole {
            account: w.accounts[2],
            role: SlotRole::Member,
        };
        let next = w.roster();
        let mut u = w.prepare_update(change, next, SlotRole::Member);
        if foreign {
            let bob_next = w.views[&Epoch(1)].holders[&1];
            let mut entries = u.next_slots.entries().to_vec();
            entries[bob_next.0 as usize].key = SlotSecret::from_bytes([6; 32]).public_key();
            u.next_slots = SlotSet::new(entries).unwrap();
        }
        // The Admin cannot tell whose order key a slot holds.
        let mut alice = w.convs[0].clone().unwrap();
        assert!(
            alice
                .compose(Content::Update(u.clone()), &mut rng, &mut w.secrets[0])
                .is_ok()
        );
        let at = w.send_update(0, u);
        let bob = w.convs[1].as_mut().unwrap();
        if foreign {
            assert_eq!(
                bob.phase(),
                &Phase::Halted("the next epoch's slot is not one of our order keys")
            );
            let alerts = bob.drain_alerts();
            assert_eq!(kinds(&alerts), vec![Misbehaviour::ForeignSlotKey]);
            assert_eq!(alerts[0].index, Some(at));
        } else {
            assert_eq!(bob.phase(), &Phase::Active);
            assert!(bob.drain_alerts().is_empty());
        }
        for m in [0, 2] {
            let c = w.convs[m].as_mut().unwrap();
            assert_eq!(c.phase(), &Phase::Active, "member {m}");
            assert!(c.drain_alerts().is_empty(), "member {m}");
        }
        // Alice and Charlie go on in the next epoch.
        w.send(2, msg("after"));
        assert_eq!(w.accepted(0), w.accepted(2));
        assert_eq!(w.accepted(0).len(), at.0 as usize + 2);
    }
}

#[test]
fn an_admin_refuses_next_slots_that_give_a_joiner_a_current_members_slot() {
    let mut w = World::new(101, 4, 3, 3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    w.setup_with(0, &[0, 1, 2]);
    let mut next = w.roster();
    next.insert(3, SlotRole::Member);
    let change = Change::Add {
        account: w.accounts[3],
        role: SlotRole::Member,
    };
    let good = w.prepare_update(change, next, SlotRole::Member);
    let bob_now = w.views[&Epoch(0)].holders[&1];
    let dave_next = good
        .next_members
        .iter()
        .find(|e| e.account == w.accounts[3])
        .unwrap()
        .slot;
    assert_ne!(bob_now, dave_next, "the router avoided it");
    // The router's assignments give Dave the slot number Bob holds now.
    let mut entries = good.next_slots.entries().to_vec();
    entries.swap(bob_now.0 as usize, dave_next.0 as usize);
    let next_members = good
        .next_members
        .iter()
        .map(|e| {
            let mut e = *e;
            if e.slot == bob_now {
                e.slot = dave_next;
            } else if e.slot == dave_next {
                e.slot = bob_now;
            }
            e
        })
        .collect();
    let bad = UpdateContent {
        change,
        next_slots: SlotSet::new(entries).unwrap(),
        next_members,
        history: Default::default(),
    };
    let mut alice = w.convs[0].clone().unwrap();
    let refused = alice.compose(Content::Update(bad), &mut rng, &mut w.secrets[0]);
    assert!(
        matches!(
            refused,
            Err(grompi_client_core::ClientError::InvalidMembership(
                "a joining member's next slot is a slot a current member holds"
            ))
        ),
        "{refused:?}"
    );
    let mut alice = w.convs[0].clone().unwrap();
    assert!(
        alice
            .compose(Content::Update(good), &mut rng, &mut w.secrets[0])
            .is_ok()
    );
}

// ---- Member power ----------------------------------------------------------

/// An envelope member `m` composes with the given header fields in its own
/// Olm sessions (its blocks authenticate as `m`), addressed to every other
/// member of epoch 0, with throwaway submission tags.
fn composed_by(
    w: &mut World,
    m: usize,
    epoch: Epoch,
    sender: SlotIndex,
    sequence: Sequence,
    last_seen: Option<Index>,
    content: &Content,
) -> Envelope {
    let recipients: Vec<(SlotIndex, AccountId)> = w.views[&Epoch(0)]
        .holders
        .iter()
        .filter(|(n, _)| **n != m)
        .map(|(n, s)| (*s, w.accounts[*n]))
        .collect();
    let keys = SlotMacKeys::derive(&SlotSecret::from_bytes([8; 32]), &w.config.servers).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::Rng::next_u64(&mut w.rng));
    grompi_client_core::compose::compose(
        &grompi_client_core::compose::Sending {
            conversation: w.conversation,
            epoch,
            sender,
            sequence,
            last_seen,
            recipients: &recipients,
            mac_keys: &keys,
        },
        content,
        &mut rng,
        &mut w.secrets[m].pairwise,
    )
    .unwrap()
    .envelope
}

/// The messages a conversation read, by index and sender.
fn read(c: &mut Conversation) -> Vec<(Index, AccountId)> {
    c.drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { index, sender, .. } => Some((index, sender)),
            _ => None,
        })
        .collect()
}

#[test]
fn member_an_envelope_stamped_with_another_epoch_is_refused_even_if_attested() {
    for epoch in [Epoch(1), Epoch(0)] {
        let mut w = World::new(102, 3, 3, 3);
        w.setup(0);
        let mallory = w.views[&Epoch(0)].holders[&2];
        let env = composed_by(
            &mut w,
            2,
            epoch,
            mallory,
            Sequence(1),
            Some(Index(0)),
            &msg("x"),
        );
        // Tags a quorum would give if it attested whatever it is offered,
        // over the epoch Bob is in.
        let prev = w.log[0].head;
        let head = prev.next(&w.conversation, Epoch(0), Index(1), &env.hash());
        let attestations = (0..3)
            .map(|s| w.forge_attestation(s, 1, Epoch(0), Index(1), head).unwrap())
            .collect();
        let slot = w.views[&Epoch(0)].holders[&1];
        let d = delivery_of(
            &env,
            w.conversation,
            Index(1),
            slot,
            attestations,
            Some(prev),
        );
        let bob = w.convs[1].as_mut().unwrap();
        bob.drain_alerts();
        bob.receive(d, &mut w.secrets[1]);
        if epoch == Epoch(1) {
            assert_eq!(bob.next_expected(), Index(1));
            assert_eq!(kinds(&bob.drain_alerts()), vec![Misbehaviour::WrongContext]);
        } else {
            assert_eq!(bob.next_expected(), Index(2));
            assert!(bob.drain_alerts().is_empty());
        }
    }
}

#[test]
fn member_speaking_from_a_slot_it_does_not_hold_is_not_believed() {
    // 0: Mallory's own slot (control); 1: Alice's; 2: the padding slot;
    // 3: Bob's own.
    for case in 0..4 {
        let mut w = World::new(103, 3, 3, 3);
        w.setup(0);
        let view = w.views[&Epoch(0)].clone();
        let padding = (0..view.slots.len() as u32)
            .map(SlotIndex)
            .find(|s| !view.holders.values().any(|h| h == s))
            .unwrap();
        let sender = [
            view.holders[&2],
            view.holders[&0],
            padding,
            view.holders[&1],
        ][case];
        let env = composed_by(
            &mut w,
            2,
            Epoch(0),
            sender,
            // Above the Setup's sequence (Alice's slot sent it).
            Sequence(2),
            Some(Index(0)),
            &msg("x"),
        );
        let at = w.order_forged(env);
        let bob = w.convs[1].as_mut().unwrap();
        // Accepted either way: acceptance never depends on opening.
        assert_eq!(bob.next_expected(), Index(at.0 + 1), "case {case}");
        let alerts = kinds(&bob.drain_alerts());
        let messages: Vec<_> = read(bob).into_iter().filter(|(i, _)| *i == at).collect();
        if case == 0 {
            assert!(alerts.is_empty());
            assert_eq!(messages, vec![(at, w.accounts[2])]);
        } else {
            assert_eq!(
                alerts,
                vec![Misbehaviour::UnauthenticatedSender { index: at }],
                "case {case}"
            );
            assert!(messages.is_empty(), "case {case}");
        }
    }
}

#[test]
fn member_a_sequence_that_does_not_increase_is_reported() {
    for (second, reported) in [
        (Sequence(2), true),
        (Sequence(3), true),
        (Sequence(4), false),
    ] {
        let mut w = World::new(104, 3, 3, 3);
        w.setup(0);
        let mallory = w.views[&Epoch(0)].holders[&2];
        for sequence in [Sequence(3), second] {
            let env = composed_by(&mut w, 2, Epoch(0), mallory, sequence, None, &msg("x"));
            w.order_forged(env);
        }
        let bob = w.convs[1].as_mut().unwrap();
        assert_eq!(bob.next_expected(), Index(3));
        let alerts = bob.drain_alerts();
        if reported {
            assert_eq!(
                kinds(&alerts),
                vec![Misbehaviour::SequenceNotIncreasing {
                    slot: mallory,
                    last: Sequence(3),
                    got: second
                }]
            );
            assert_eq!(alerts[0].index, Some(Index(2)));
        } else {
            assert!(alerts.is_empty());
        }
    }
}

#[test]
fn member_a_causal_context_at_or_after_its_own_index_is_reported() {
    let mut w = World::new(105, 3, 3, 3);
    w.setup(0);
    let mallory = w.views[&Epoch(0)].holders[&2];
    // "Sent having seen up to #9", ordered at index 1.
    let env = composed_by(
        &mut w,
        2,
        Epoch(0),
        mallory,
        Sequence(1),
        Some(Index(9)),
        &msg("x"),
    );
    let at = w.order_forged(env);
    assert_eq!(at, Index(1));
    let bob = w.convs[1].as_mut().unwrap();
    let shown = bob.drain_events().into_iter().find_map(|e| match e {
        Event::Message {
            index, last_seen, ..
        } if index == at => Some(last_seen),
        _ => None,
    });
    // Not shown as the sender's context, and reported, like a receipt
    // through an index at or after its own (`ReceiptMismatch`).
    assert_eq!(shown, Some(None));
    assert_eq!(
        kinds(&bob.drain_alerts()),
        vec![Misbehaviour::Malformed(grompi_proto::WireError::Invalid {
            field: "header.last_seen_index",
            reason: "at or after the index the envelope was accepted at",
        })]
    );
    // Control: "having seen up to #1", ordered at index 2, is shown as is.
    let env = composed_by(
        &mut w,
        2,
        Epoch(0),
        mallory,
        Sequence(2),
        Some(Index(1)),
        &msg("y"),
    );
    let at = w.order_forged(env);
    let bob = w.convs[1].as_mut().unwrap();
    let shown = bob.drain_events().into_iter().find_map(|e| match e {
        Event::Message {
            index, last_seen, ..
        } if index == at => Some(last_seen),
        _ => None,
    });
    assert_eq!(shown, Some(Some(Index(1))));
    assert!(bob.drain_alerts().is_empty());
}

#[test]
fn member_split_submission_tags_stall_the_index_and_split_no_one() {
    for quorum in [3, 2] {
        let mut w = World::new(106, 3, 3, quorum);
        w.deliver_now = vec![true, false, false];
        w.setup(0);
        w.catch_up(1);
        w.catch_up(2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let mut composed = w.convs[2]
            .as_mut()
            .unwrap()
            .compose(msg("split"), &mut rng, &mut w.secrets[2])
            .unwrap();
        // Mallory gives server 2 a tag that does not verify.
        composed.submission_tags[2] = Tag::from_bytes([0; 32]);
        let env = composed.envelope;
        let hash = env.hash();
        let key = w.slot_key(Epoch(0), 2).unwrap().1;
        let attesting: Vec<u32> = (0..3u32)
            .filter(|s| {
                w.raw_mac_keys(*s as usize, key).verify_submission(
                    &hash,
                    env.header().sequence(),
                    &composed.submission_tags[*s as usize],
                )
            })
            .collect();
        assert_eq!(attesting, vec![0, 1]);
        let head = w.log[0]
            .head
            .next(&w.conversation, Epoch(0), Index(1), &hash);
        for m in [0, 1] {
            let d = w
                .cut_forged(&env, Index(1), Epoch(0), head, m, &attesting)
                .unwrap();
            w.receive(m, d);
        }
        let expected = if quorum == 3 { 1 } else { 2 };
        for m in [0, 1] {
            let c = w.convs[m].as_mut().unwrap();
            assert_eq!(c.next_expected(), Index(expected), "member {m}, t {quorum}");
            assert!(c.drain_alerts().is_empty());
        }
        assert_eq!(w.accepted(0), w.accepted(1));
    }
}

#[test]
fn router_another_members_block_or_none_is_not_opened_and_changes_no_acceptance() {
    // 0: the genuine block (control); 1: Charlie's block at its own
    // position; 2: no block.
    for case in 0..3 {
        let (w, mut secrets, mut bob, genuine) = bob_before_index_1(107);
        let mut d = genuine.clone();
        let charlie = w.slot_key(Epoch(0), 2).unwrap().0;
        match case {
            1 => {
                let env = &w.log[1].envelope;
                d.block = env
                    .blocks()
                    .iter()
                    .enumerate()
                    .find(|(_, b)| b.recipient == charlie)
                    .map(|(p, b)| (p as u32, b.clone()));
                assert!(d.block.is_some());
            }
            2 => d.block = None,
            _ => {}
        }
        bob.receive(d, &mut secrets);
        assert_eq!(bob.next_expected(), Index(2), "case {case}");
        assert_eq!(bob.transcript().get(Index(1)).unwrap().head, w.log[1].head);
        let alerts = kinds(&bob.drain_alerts());
        let messages = read(&mut bob);
        match case {
            0 => {
                assert!(alerts.is_empty());
                assert_eq!(messages, vec![(Index(1), w.accounts[0])]);
            }
            1 => {
                assert_eq!(
                    alerts,
                    vec![Misbehaviour::Undecryptable(
                        "block addressed to another slot"
                    )]
                );
                assert!(messages.is_empty());
            }
            _ => {
                assert_eq!(
                    alerts,
                    vec![Misbehaviour::Undecryptable("no block for this member")]
                );
                assert!(messages.is_empty());
            }
        }
    }
}

#[test]
fn router_made_up_conversation_ids_are_bounded() {
    let mut w = World::new(108, 2, 3, 3);
    w.deliver_now = vec![true, false];
    w.setup(0);
    let (secrets, _) = w.replica(1);
    let mut bob = grompi_client_core::Member::new(secrets, w.config.clone());
    let limit = grompi_client_core::member::MAX_WAITING_CONVERSATIONS;
    for n in 0..limit + 3 {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        bob.receive(pb::Delivery {
            conversation_id: id.to_vec(),
            index: 5,
            ..Default::default()
        });
    }
    assert_eq!(bob.conversations().len(), limit);
    assert_eq!(bob.dropped(), 3);
    // Which also shuts out a genuine invitation while they wait: the
    // router can deny service, nothing more.
    let genuine = w.delivery(Index(0), 1, &[0, 1, 2]).unwrap();
    bob.receive(pb::Delivery::from(&genuine));
    assert_eq!(bob.dropped(), 4);
    assert!(bob.conversation(&w.conversation).is_none());
}

#[test]
fn the_creator_refuses_assignments_that_give_an_account_two_slots() {
    for twice in [true, false] {
        let mut w = World::new(110, 3, 3, 3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let slots = SlotSet::new(vec![
            SlotEntry {
                key: w.spare_key(0, 0),
                role: SlotRole::Admin,
            },
            SlotEntry {
                key: w.spare_key(1, 0),
                role: SlotRole::Member,
            },
            SlotEntry {
                key: w.spare_key(2, 0),
                role: SlotRole::Member,
            },
        ])
        .unwrap();
        // The router's assignments name Bob for Charlie's slot too (so as
        // many assignments as members, Charlie left out).
        let third = if twice { w.accounts[1] } else { w.accounts[2] };
        let members = vec![
            MemberEntry {
                account: w.accounts[0],
                role: SlotRole::Admin,
                slot: SlotIndex(0),
            },
            MemberEntry {
                account: w.accounts[1],
                role: SlotRole::Member,
                slot: SlotIndex(1),
            },
            MemberEntry {
                account: third,
                role: SlotRole::Member,
                slot: SlotIndex(2),
            },
        ];
        let created = Conversation::create(
            w.conversation,
            w.config.clone(),
            slots,
            members,
            &mut rng,
            &mut w.secrets[0],
        );
        if twice {
            assert!(
                matches!(
                    created,
                    Err(grompi_client_core::ClientError::InvalidMembership(
                        "an account is listed twice"
                    ))
                ),
                "{:?}",
                created.err()
            );
        } else {
            assert!(created.is_ok());
        }
    }
}
