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

use crate::content::{Change, Content, MemberEntry, SetupContent, UpdateContent};
use crate::conversation::{Conversation, Event, Phase};
use crate::head_proof::{HeadProofOutcome, NotProvedReason};
use crate::world::{Puppet, World, delivery_of};
use crate::{Alert, Delivery};
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
        matches!(refused, Err(crate::ClientError::InvalidMembership(r)) if r.contains("Admin slot")),
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
        });
        let keys = w.secrets[0]
            .order_keys
            .peek(&w.spare_key(0, 0), &w.config.servers)
            .unwrap();
        let composed = crate::compose::compose(
            &crate::compose::Sending {
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
                let tag = w.mac(s as usize, bob_key).attest(&AttestationStatement {
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
        matches!(refused, Err(crate::ClientError::InvalidMembership(r)) if r.contains("Admin slot")),
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
            keys: (0..3).map(|s| w.mac(s, slot_key)).collect(),
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
    let limit = crate::conversation::MAX_CANDIDATE_PEERS;
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
