//! Scenario and property tests of the conversation state machine, driven
//! through the in-memory [`grompi_client_core::testkit::World`].
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use grompi_client_core::body::{BlockPlaintext, BodyKey};
use grompi_client_core::content::{Change, Content, ReceiptContent};
use grompi_client_core::conversation::{Event, Phase};
use grompi_client_core::head_proof::HeadProofOutcome;
use grompi_client_core::testkit::World;
use grompi_client_core::transcript::AttestationStatus;
use grompi_client_core::{Alert, Conversation};
use grompi_proto::mac::{HeadProof, HeadProofStatement, Tag};
use grompi_proto::{
    Envelope, EnvelopeHash, Epoch, Head, Index, Misbehaviour, RecipientBlock, SlotRole,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn msg(s: &str) -> Content {
    Content::Message(s.as_bytes().to_vec())
}

fn messages(conv: &mut Conversation) -> Vec<(Index, Vec<u8>)> {
    conv.drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message {
                index, plaintext, ..
            } => Some((index, plaintext)),
            _ => None,
        })
        .collect()
}

fn kinds(alerts: &[Alert]) -> Vec<Misbehaviour> {
    alerts.iter().map(|a| a.kind.clone()).collect()
}

/// Setup by 0, messages, a receipt, a role change, more messages, the
/// removal of member 2, and messages after it.
fn scripted(seed: u64) -> World {
    let mut w = World::new(seed, 3, 3, 3);
    w.setup(0);
    w.send(1, msg("one"));
    w.send(2, msg("two"));
    let r = w.convs[1].as_ref().unwrap().receipt().unwrap();
    w.send(1, r);
    let mut next = w.roster();
    next.insert(1, SlotRole::Admin);
    w.update(
        0,
        Change::SetRole {
            account: w.accounts[1],
            role: SlotRole::Admin,
        },
        next,
    );
    w.send(2, msg("three"));
    w.send(0, msg("four"));
    let mut next = w.roster();
    next.remove(&2);
    w.update(
        1,
        Change::Remove {
            account: w.accounts[2],
        },
        next,
    );
    w.send(0, msg("five"));
    w.send(1, msg("six"));
    w
}

#[test]
fn honest_run_members_agree_on_everything() {
    let mut w = scripted(1);
    let log: Vec<_> = w
        .log
        .iter()
        .map(|o| (o.index, o.envelope.hash(), o.head))
        .collect();
    assert_eq!(log.len(), 10);
    for m in 0..3 {
        let c = w.convs[m].as_mut().unwrap();
        assert!(c.drain_alerts().is_empty(), "member {m} raised alerts");
    }
    assert_eq!(w.accepted(0), log);
    assert_eq!(w.accepted(1), log);
    // Member 2 was removed at index 7 and accepted through it.
    assert_eq!(w.accepted(2), log[..8].to_vec());
    assert_eq!(w.convs[2].as_ref().unwrap().phase(), &Phase::Removed);
    let m0 = w.convs[0].as_ref().unwrap().membership().unwrap().clone();
    assert_eq!(m0.epoch(), Epoch(2));
    assert_eq!(m0.role(&w.accounts[1]), Some(SlotRole::Admin));
    assert_eq!(m0.role(&w.accounts[2]), None);
    assert_eq!(w.convs[1].as_ref().unwrap().membership(), Some(&m0));
    // Everyone read the same plaintexts; each member sees others' messages
    // and its own.
    let texts: Vec<_> = (0..3)
        .map(|m| messages(w.convs[m].as_mut().unwrap()))
        .collect();
    let want = |idx: &[u64]| -> Vec<u64> { idx.to_vec() };
    assert_eq!(
        texts[0].iter().map(|(i, _)| i.0).collect::<Vec<_>>(),
        want(&[1, 2, 5, 6, 8, 9])
    );
    assert_eq!(texts[0], texts[1]);
    assert_eq!(texts[2], texts[0][..4].to_vec());
    assert_eq!(texts[0][2].1, b"three");
    // The receipt was recorded by the others.
    let c0 = w.convs[0].as_ref().unwrap();
    assert_eq!(c0.processed().get(&w.accounts[1]), Some(&Index(2)));
    assert_eq!(c0.status(Index(3)), AttestationStatus::Full);
}

#[test]
fn quorum_then_late_tags_upgrade_to_full() {
    let mut w = World::new(2, 2, 3, 2);
    w.setup(0);
    let (mut secrets, mut conv) = w.replica(1);
    w.send(0, msg("a"));
    let d0 = w.delivery(Index(0), 1, &[0, 1, 2]).unwrap();
    conv.receive(d0, &mut secrets);
    // Index 1 with only one tag: not enough for a quorum of 2.
    conv.receive(w.delivery(Index(1), 1, &[2]).unwrap(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(1));
    // A second server's tag arrives: accepted at Quorum.
    conv.receive(w.delivery(Index(1), 1, &[0]).unwrap(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(2));
    assert_eq!(conv.status(Index(1)), AttestationStatus::Quorum);
    conv.drain_events();
    // The third arrives late: Full.
    conv.receive(w.delivery(Index(1), 1, &[1]).unwrap(), &mut secrets);
    assert_eq!(conv.status(Index(1)), AttestationStatus::Full);
    assert_eq!(
        conv.drain_events(),
        vec![Event::StatusChanged {
            index: Index(1),
            status: AttestationStatus::Full
        }]
    );
    // A plain re-delivery is a counted duplicate, not an alert.
    conv.receive(w.delivery(Index(1), 1, &[0, 1, 2]).unwrap(), &mut secrets);
    assert_eq!(conv.counters().duplicates, 1);
    assert!(conv.drain_alerts().is_empty());
}

#[test]
fn gaps_are_buffered_fetched_and_reported() {
    let mut w = World::new(3, 2, 3, 3);
    w.setup(0);
    let (mut secrets, mut conv) = w.replica(1);
    for i in 0..4 {
        w.send(0, msg(&format!("m{i}")));
    }
    let all = [0, 1, 2];
    conv.receive(w.delivery(Index(0), 1, &all).unwrap(), &mut secrets);
    conv.receive(w.delivery(Index(3), 1, &all).unwrap(), &mut secrets);
    conv.receive(w.delivery(Index(4), 1, &all).unwrap(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(1));
    assert_eq!(conv.missing_indices(10), vec![Index(1), Index(2)]);
    assert!(conv.report_stall());
    assert_eq!(
        kinds(&conv.drain_alerts()),
        vec![Misbehaviour::Gap { after: Index(0) }]
    );
    conv.receive(w.delivery(Index(2), 1, &all).unwrap(), &mut secrets);
    conv.receive(w.delivery(Index(1), 1, &all).unwrap(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(5));
    assert_eq!(messages(&mut conv).len(), 4);
    assert!(!conv.report_stall());
}

#[test]
fn wrong_context_and_wrong_kind_are_refused() {
    let mut w = World::new(4, 2, 3, 3);
    w.setup(0);
    let mut other = World::new(5, 2, 3, 3);
    other.setup(0);
    let (mut secrets, mut conv) = w.replica(1);
    w.send(0, msg("a"));
    // A delivery of another conversation.
    let foreign = other.delivery(Index(0), 1, &[0, 1, 2]).unwrap();
    conv.receive(foreign, &mut secrets);
    assert_eq!(
        kinds(&conv.drain_alerts()),
        vec![Misbehaviour::WrongContext]
    );
    // A Message offered as index 0.
    let mut d = w.delivery(Index(1), 1, &[0, 1, 2]).unwrap();
    d.index = Index(0);
    conv.receive(d, &mut secrets);
    let k = kinds(&conv.drain_alerts());
    assert!(
        k.contains(&Misbehaviour::UnexpectedKind("index 0 must be a Setup")),
        "{k:?}"
    );
    assert_eq!(conv.next_expected(), Index(0));
    // The real ones are still accepted.
    conv.receive(w.delivery(Index(0), 1, &[0, 1, 2]).unwrap(), &mut secrets);
    conv.receive(w.delivery(Index(1), 1, &[0, 1, 2]).unwrap(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(2));
    // The Setup offered again at index 2.
    let mut d = w.delivery(Index(0), 1, &[0, 1, 2]).unwrap();
    d.index = Index(2);
    conv.receive(d, &mut secrets);
    let k = kinds(&conv.drain_alerts());
    assert!(
        k.contains(&Misbehaviour::UnexpectedKind("a Setup after index 0")),
        "{k:?}"
    );
    // A body that does not match its hash; a block that does not match its digest.
    let mut d = w.delivery(Index(1), 1, &[0, 1, 2]).unwrap();
    d.body.push(0);
    conv.receive(d, &mut secrets);
    let mut d = w.delivery(Index(1), 1, &[0, 1, 2]).unwrap();
    if let Some((_, b)) = &mut d.block {
        b.ciphertext.push(0);
    }
    conv.receive(d, &mut secrets);
    let k = kinds(&conv.drain_alerts());
    assert!(matches!(k[0], Misbehaviour::Malformed(_)), "{k:?}");
    assert_eq!(k[1], Misbehaviour::BlockDigestMismatch);
}

#[test]
fn rewritten_index_and_conflicting_heads_are_detected() {
    let mut w = World::new(6, 2, 3, 3);
    w.setup(0);
    w.send(0, msg("a"));
    let (mut secrets, mut conv) = w.replica(1);
    conv.receive(w.delivery(Index(0), 1, &[0, 1, 2]).unwrap(), &mut secrets);
    conv.receive(w.delivery(Index(1), 1, &[0, 1, 2]).unwrap(), &mut secrets);
    // Servers 1 and 2 attest a fork of index 1 to this member.
    let (env, _, head) = w.forked(Index(1), 9).unwrap();
    let fork = w
        .cut_forged(&env, Index(1), Epoch(0), head, 1, &[1, 2])
        .unwrap();
    conv.receive(fork, &mut secrets);
    let alerts = conv.drain_alerts();
    assert_eq!(
        alerts[0].kind,
        Misbehaviour::RewrittenIndex { index: Index(1) }
    );
    let servers: BTreeSet<_> = alerts[1..]
        .iter()
        .filter(|a| a.kind == Misbehaviour::ConflictingHeads { index: Index(1) })
        .map(|a| a.server.unwrap())
        .collect();
    assert_eq!(servers, [1, 2].into_iter().collect());
    assert_eq!(
        conv.transcript().get(Index(1)).unwrap().envelope_hash,
        w.log[1].envelope.hash()
    );
}

#[test]
fn forged_and_wrong_key_tags_do_not_count() {
    let mut w = World::new(7, 3, 3, 3);
    w.setup(0);
    let (mut secrets, mut conv) = w.replica(1);
    let mut d = w.delivery(Index(0), 1, &[0, 1, 2]).unwrap();
    d.attestations[0].tags[0] = Tag::from_bytes([7; 32]);
    let wrong = w
        .wrong_key_tag(1, 2, Epoch(0), Index(0), w.log[0].head)
        .unwrap();
    d.attestations[1].tags[0] = wrong;
    conv.receive(d, &mut secrets);
    assert_eq!(conv.next_expected(), Index(0));
    // Before a Setup is accepted this member does not know which of its
    // keys is its slot's (a forged Setup could name another), so bad tags
    // are blamed only once the genuine tags complete the index.
    assert!(conv.drain_alerts().is_empty());
    conv.receive(w.delivery(Index(0), 1, &[0, 1]).unwrap(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(1));
    let alerts = conv.drain_alerts();
    assert_eq!(
        alerts
            .iter()
            .map(|a| (a.kind.clone(), a.server))
            .collect::<Vec<_>>(),
        vec![
            (
                Misbehaviour::BadAttestation {
                    server: 0,
                    index: Index(0)
                },
                Some(0)
            ),
            (
                Misbehaviour::BadAttestation {
                    server: 1,
                    index: Index(0)
                },
                Some(1)
            ),
        ]
    );
}

/// At t = N a server forging its tag on the Setup stops the conversation;
/// once the member reports the stall, the forger is named (its tag fails
/// under the keys of the Setup the other servers tagged), and only it. A
/// Setup no server tagged (a router's forgery) names nobody.
#[test]
fn a_stalled_setup_names_the_server_whose_tag_fails() {
    let mut w = World::new(8, 2, 3, 3);
    w.setup(0);
    let (mut secrets, mut conv) = w.replica(1);
    let mut d = w.delivery(Index(0), 1, &[0, 1, 2]).unwrap();
    d.attestations[1].tags[0] = Tag::from_bytes([7; 32]);
    conv.receive(d.clone(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(0));
    assert!(conv.stuck());
    assert!(conv.drain_alerts().is_empty());
    conv.report_stall();
    let alerts = conv.drain_alerts();
    assert_eq!(
        alerts
            .iter()
            .map(|a| (a.kind.clone(), a.server))
            .collect::<Vec<_>>(),
        vec![(
            Misbehaviour::BadAttestation {
                server: 1,
                index: Index(0)
            },
            Some(1)
        )]
    );
    // Reported once, even when the same tags come again.
    conv.receive(d, &mut secrets);
    conv.report_stall();
    assert!(conv.drain_alerts().is_empty());
    // Control: a Setup whose tags no server made under its keys.
    let (mut secrets, mut conv) = w.replica(1);
    let mut d = w.delivery(Index(0), 1, &[0, 1, 2]).unwrap();
    for a in &mut d.attestations {
        a.tags[0] = Tag::from_bytes([9; 32]);
    }
    conv.receive(d, &mut secrets);
    conv.report_stall();
    assert!(conv.drain_alerts().is_empty());
}

/// What a malicious sender puts in one recipient's block.
#[derive(Clone, Copy, Debug)]
enum BlockChoice {
    Honest,
    OtherKey,
    OtherEnvelope,
    Garbage,
    Missing,
}

fn block_choice() -> impl Strategy<Value = BlockChoice> {
    prop_oneof![
        Just(BlockChoice::Honest),
        Just(BlockChoice::OtherKey),
        Just(BlockChoice::OtherEnvelope),
        Just(BlockChoice::Garbage),
        Just(BlockChoice::Missing),
    ]
}

/// Member 0 sends a message to members 1..=3 with the blocks chosen;
/// returns what each recipient read at that index and its alerts.
fn malicious_send(
    seed: u64,
    choices: [BlockChoice; 3],
) -> Vec<(Option<Vec<u8>>, Vec<Misbehaviour>)> {
    let mut w = World::new(seed, 4, 3, 3);
    w.setup(0);
    for m in 0..4 {
        w.convs[m].as_mut().unwrap().drain_events();
    }
    // An honest envelope, then its blocks replaced.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let composed = {
        let conv = w.convs[0].as_mut().unwrap();
        conv.compose(msg("the one plaintext"), &mut rng, &mut w.secrets[0])
            .unwrap()
    };
    let (header, body, blocks) = composed.envelope.into_parts();
    let other_core = {
        let mut f = header.fields();
        f.sequence = grompi_proto::Sequence(f.sequence.0 + 7);
        grompi_proto::EnvelopeHeader::new(f).unwrap().core_hash()
    };
    let mut new_blocks = Vec::new();
    for b in blocks {
        let m = (1..4)
            .find(|m| w.slot_key(Epoch(0), *m).unwrap().0 == b.recipient)
            .unwrap();
        let account = w.accounts[m];
        let plain = |key: BodyKey, core| {
            BlockPlaintext {
                key,
                core,
                rn1: None,
            }
            .encode()
        };
        let ct = match choices[m - 1] {
            BlockChoice::Honest => Some(b.ciphertext.clone()),
            BlockChoice::OtherKey => Some(
                w.secrets[0]
                    .pairwise
                    .encrypt_to(
                        &account,
                        &plain(BodyKey::from_bytes([m as u8; 32]), header.core_hash()),
                    )
                    .unwrap(),
            ),
            BlockChoice::OtherEnvelope => Some(
                w.secrets[0]
                    .pairwise
                    .encrypt_to(
                        &account,
                        &plain(BodyKey::from_bytes([0xee; 32]), other_core),
                    )
                    .unwrap(),
            ),
            BlockChoice::Garbage => Some(vec![1, 2, 3]),
            BlockChoice::Missing => None,
        };
        if let Some(ciphertext) = ct {
            new_blocks.push(RecipientBlock {
                recipient: b.recipient,
                ciphertext,
            });
        }
    }
    let env = Envelope::new(header, body, new_blocks).unwrap();
    let index = w.order_forged(env);
    (1..4)
        .map(|m| {
            let c = w.convs[m].as_mut().unwrap();
            assert_eq!(
                c.next_expected(),
                Index(index.0 + 1),
                "acceptance never depends on blocks"
            );
            let read = messages(c)
                .into_iter()
                .find(|(i, _)| *i == index)
                .map(|(_, p)| p);
            (read, kinds(&c.drain_alerts()))
        })
        .collect()
}

#[test]
fn a_malicious_sender_cannot_split_plaintexts() {
    let out = malicious_send(
        11,
        [
            BlockChoice::Honest,
            BlockChoice::OtherKey,
            BlockChoice::OtherEnvelope,
        ],
    );
    assert_eq!(out[0], (Some(b"the one plaintext".to_vec()), vec![]));
    assert_eq!(out[1], (None, vec![Misbehaviour::KeyCommitmentMismatch]));
    assert_eq!(
        out[2],
        (
            None,
            vec![Misbehaviour::Undecryptable(
                "block bound to another envelope"
            )]
        )
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever blocks a malicious sender hands out, recipients that read
    /// anything at the index read the same plaintext, and every one that
    /// cannot raises an alert.
    #[test]
    fn recipients_never_read_different_plaintexts(
        seed in 0u64..1000, a in block_choice(), b in block_choice(), c in block_choice()
    ) {
        let out = malicious_send(seed, [a, b, c]);
        let read: BTreeSet<_> = out.iter().filter_map(|(r, _)| r.clone()).collect();
        prop_assert!(read.len() <= 1);
        for ((r, alerts), choice) in out.iter().zip([a, b, c]) {
            match choice {
                BlockChoice::Honest => {
                    prop_assert_eq!(r.as_deref(), Some(&b"the one plaintext"[..]));
                    prop_assert!(alerts.is_empty());
                }
                _ => {
                    prop_assert!(r.is_none());
                    prop_assert_eq!(alerts.len(), 1);
                }
            }
        }
    }
}

#[test]
fn an_unauthorized_update_is_refused_identically_by_every_member() {
    let mut w = World::new(12, 3, 3, 3);
    // The real order servers refuse an Update from a Member's slot: only
    // servers that attest it anyway show it to the members.
    w.lax_servers = true;
    w.setup(0);
    w.send(1, msg("before"));
    // Member 1 (not an Admin) removes member 2.
    let mut next = w.roster();
    next.remove(&2);
    let at = w.update(
        1,
        Change::Remove {
            account: w.accounts[2],
        },
        next,
    );
    let before: Vec<_> = (0..3)
        .map(|m| {
            let c = w.convs[m].as_mut().unwrap();
            let a: Vec<_> = c
                .drain_alerts()
                .into_iter()
                .map(|a| (a.kind, a.index))
                .collect();
            (
                a,
                c.membership().unwrap().members().clone(),
                c.membership().unwrap().epoch(),
            )
        })
        .collect();
    let want = vec![(
        Misbehaviour::UnauthorizedUpdate("only an Admin may remove members"),
        Some(at),
    )];
    for b in &before {
        assert_eq!(b.0, want);
        assert_eq!(b.1, before[0].1, "every member keeps the same member list");
        assert_eq!(b.2, Epoch(1));
    }
    assert!(
        before[0].1.contains_key(&w.accounts[2]),
        "member 2 was not removed"
    );
    // Members 0 and 1 continue in epoch 1; member 2 holds no slot there.
    w.send(0, msg("after"));
    assert_eq!(w.accepted(0), w.accepted(1));
    assert_eq!(
        w.convs[2].as_ref().unwrap().phase(),
        &Phase::Halted("this member has no slot in the next epoch")
    );
}

#[test]
fn a_member_cannot_promote_itself() {
    let mut w = World::new(13, 3, 3, 3);
    // As above: servers that attest a Member's Update anyway.
    w.lax_servers = true;
    w.setup(0);
    let mut next = w.roster();
    next.insert(1, SlotRole::Admin);
    w.update(
        1,
        Change::SetRole {
            account: w.accounts[1],
            role: SlotRole::Admin,
        },
        next,
    );
    for m in 0..3 {
        let c = w.convs[m].as_mut().unwrap();
        assert_eq!(
            kinds(&c.drain_alerts()),
            vec![Misbehaviour::UnauthorizedUpdate(
                "only an Admin may change roles"
            )]
        );
        assert_eq!(
            c.membership().unwrap().role(&w.accounts[1]),
            Some(SlotRole::Member)
        );
        assert_eq!(c.phase(), &Phase::Active);
    }
    // Still a Member: its next removal attempt is refused as well.
    let mut next = w.roster();
    next.remove(&0);
    w.update(
        1,
        Change::Remove {
            account: w.accounts[0],
        },
        next,
    );
    for m in 0..3 {
        let c = w.convs[m].as_mut().unwrap();
        assert_eq!(
            kinds(&c.drain_alerts()),
            vec![Misbehaviour::UnauthorizedUpdate(
                "only an Admin may remove members"
            )]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any Update (any sender, change and next list) has the same outcome
    /// at every member: same alerts, same member list, same epoch.
    #[test]
    fn every_member_applies_an_update_identically(
        seed in 0u64..1000, sender in 0usize..3, kind in 0u8..4, target in 0usize..3,
        admin in any::<bool>(), keep in proptest::collection::vec(any::<bool>(), 3),
    ) {
        let mut w = World::new(seed, 3, 3, 3);
        // Servers that attest any Update (the real ones refuse one from a
        // Member's slot or leaving no Admin), so every case reaches the
        // members' rules.
        w.lax_servers = true;
        w.setup(0);
        let role = if admin { SlotRole::Admin } else { SlotRole::Member };
        let change = match kind {
            0 => Change::Remove { account: w.accounts[target] },
            1 => Change::Leave,
            2 => Change::SetRole { account: w.accounts[target], role },
            _ => Change::SetRole { account: w.accounts[target], role: SlotRole::Member },
        };
        let mut next: BTreeMap<usize, SlotRole> = w.roster();
        for (m, k) in keep.iter().enumerate() {
            if !k { next.remove(&m); }
        }
        if let Change::SetRole { role, .. } = change
            && next.contains_key(&target)
        {
            next.insert(target, role);
        }
        if next.is_empty() { next.insert(sender, SlotRole::Member); }
        w.update(sender, change, next);
        let views: Vec<_> = (0..3).map(|m| {
            let c = w.convs[m].as_mut().unwrap();
            (kinds(&c.drain_alerts()), c.membership().cloned())
        }).collect();
        for v in &views {
            prop_assert_eq!(v, &views[0]);
        }
    }
}

#[test]
fn receipts_are_compared_with_our_heads() {
    let mut w = World::new(14, 3, 3, 3);
    w.setup(0);
    w.send(0, msg("a"));
    // Member 1 lies about the head at index 1.
    let lie = Content::Receipt(ReceiptContent {
        through: Index(1),
        head: Head::from_bytes([1; 32]),
        undecryptable: vec![],
    });
    w.send(1, lie);
    for m in [0, 2] {
        let c = w.convs[m].as_mut().unwrap();
        assert_eq!(
            kinds(&c.drain_alerts()),
            vec![Misbehaviour::ReceiptMismatch { index: Index(1) }]
        );
        assert_eq!(c.processed().get(&w.accounts[1]), None);
    }
    let honest = w.convs[2].as_ref().unwrap().receipt().unwrap();
    w.send(2, honest);
    let c = w.convs[0].as_mut().unwrap();
    assert!(c.drain_alerts().is_empty());
    assert_eq!(c.processed().get(&w.accounts[2]), Some(&Index(2)));
}

#[test]
fn head_proofs_detect_forks_and_withholding() {
    let mut w = World::new(15, 2, 3, 3);
    w.setup(0);
    w.send(0, msg("a"));
    w.send(0, msg("b"));
    let (slot_key, conv_id) = (w.slot_key(Epoch(0), 1).unwrap().1, w.conversation);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let c = w.convs[1].as_mut().unwrap();
    c.drain_alerts();
    let nonce = c.head_proof_nonce(&mut rng);
    let servers: Vec<_> = (0..3)
        .map(|s| w.servers[s].mac_keys(&slot_key).unwrap())
        .collect();
    let proof = |server: u32, count: u64, head: Head, nonce| {
        let statement = HeadProofStatement {
            conversation: conv_id,
            epoch: Epoch(0),
            count,
            head,
            nonce,
        };
        HeadProof {
            server,
            statement,
            tag: servers[server as usize].prove_head(&statement),
        }
    };
    let good = proof(0, 3, w.log[2].head, nonce);
    let fork = proof(1, 2, Head::from_bytes([5; 32]), nonce);
    let ahead = proof(2, 5, Head::from_bytes([6; 32]), nonce);
    let mut forged = proof(0, 3, w.log[2].head, nonce);
    forged.tag = Tag::from_bytes([0; 32]);
    let other_nonce = proof(
        1,
        3,
        w.log[2].head,
        grompi_proto::ProofNonce::from_bytes([9; 32]),
    );
    let c = w.convs[1].as_mut().unwrap();
    let out = c.check_head_proofs(&[good, fork, ahead, forged, other_nonce]);
    assert_eq!(
        out,
        vec![
            HeadProofOutcome::Consistent {
                server: 0,
                count: 3
            },
            HeadProofOutcome::Misbehaviour(Misbehaviour::HeadProofFork {
                server: 1,
                count: 2
            }),
            HeadProofOutcome::Misbehaviour(Misbehaviour::Withheld {
                server: 2,
                attested: 5,
                delivered: 3
            }),
            HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof { server: 0 }),
            HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof { server: 1 }),
        ]
    );
    assert_eq!(c.drain_alerts().len(), 4);
    // The nonce is spent: replaying the good proof is refused.
    let again = c.check_head_proofs(&[proof(0, 3, w.log[2].head, nonce)]);
    assert_eq!(
        again,
        vec![HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof {
            server: 0
        })]
    );
}

fn tags_of(d: &grompi_client_core::Delivery) -> grompi_client_core::delivery::TagUpdate {
    grompi_client_core::delivery::TagUpdate {
        conversation: d.conversation,
        index: d.index,
        attestations: d.attestations.clone(),
    }
}

#[test]
fn tag_updates_complete_pending_indices_and_reveal_forks() {
    let mut w = World::new(21, 2, 3, 3);
    w.setup(0);
    w.send(0, msg("a"));
    w.send(0, msg("b"));
    let (mut secrets, mut conv) = w.replica(1);
    // Index 0 with two tags, the third as a tag update.
    conv.receive(w.delivery(Index(0), 1, &[0, 1]).unwrap(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(0));
    conv.receive_tags(
        tags_of(&w.delivery(Index(0), 1, &[2]).unwrap()),
        &mut secrets,
    );
    assert_eq!(conv.next_expected(), Index(1));
    // Index 1: all tags first, then the envelope without tags.
    conv.receive_tags(
        tags_of(&w.delivery(Index(1), 1, &[0, 1, 2]).unwrap()),
        &mut secrets,
    );
    assert_eq!(conv.next_expected(), Index(1));
    conv.receive(w.delivery(Index(1), 1, &[]).unwrap(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(2));
    // A tag update through the wire type.
    let wire = grompi_proto::pb::Delivery {
        conversation_id: w.conversation.to_vec(),
        index: 2,
        attestations: w
            .delivery(Index(2), 1, &[0, 1, 2])
            .unwrap()
            .attestations
            .iter()
            .map(Into::into)
            .collect(),
        ..Default::default()
    };
    let incoming = grompi_client_core::delivery::Incoming::try_from(wire).unwrap();
    conv.receive_incoming(incoming, &mut secrets);
    conv.receive(w.delivery(Index(2), 1, &[]).unwrap(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(3));
    assert!(conv.drain_alerts().is_empty());
    // Server 2 later attests another head at index 1: fork evidence.
    let (_, _, fork_head) = w.forked(Index(1), 3).unwrap();
    let a = w
        .forge_attestation(2, 1, Epoch(0), Index(1), fork_head)
        .unwrap();
    conv.receive_tags(
        grompi_client_core::delivery::TagUpdate {
            conversation: w.conversation,
            index: Index(1),
            attestations: vec![a],
        },
        &mut secrets,
    );
    let alerts = conv.drain_alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].kind.clone(), alerts[0].server),
        (Misbehaviour::ConflictingHeads { index: Index(1) }, Some(2))
    );
}

#[test]
fn an_added_member_joins_at_its_update_and_follows() {
    let mut w = World::new(22, 3, 3, 3);
    w.setup_with(0, &[0, 1]);
    w.send(1, msg("before"));
    let mut next = w.roster();
    next.insert(2, SlotRole::Member);
    let at = w.update(
        0,
        Change::Add {
            account: w.accounts[2],
            role: SlotRole::Member,
        },
        next,
    );
    w.send(2, msg("hello from the new member"));
    w.send(0, msg("welcome"));
    for m in 0..3 {
        let c = w.convs[m].as_mut().unwrap();
        assert!(c.drain_alerts().is_empty(), "member {m}");
        assert_eq!(c.phase(), &Phase::Active);
    }
    let log: Vec<_> = w
        .log
        .iter()
        .map(|o| (o.index, o.envelope.hash(), o.head))
        .collect();
    assert_eq!(w.accepted(0), log);
    assert_eq!(w.accepted(1), log);
    assert_eq!(w.accepted(2), log[at.0 as usize..].to_vec());
    let joiner = w.convs[2].as_ref().unwrap();
    assert_eq!(joiner.transcript().first(), at);
    assert_eq!(
        joiner.membership(),
        w.convs[0].as_ref().unwrap().membership()
    );
    let read = |w: &mut World, m: usize| -> Vec<Vec<u8>> {
        messages(w.convs[m].as_mut().unwrap())
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    };
    assert_eq!(
        read(&mut w, 2),
        vec![b"hello from the new member".to_vec(), b"welcome".to_vec()]
    );
    assert_eq!(read(&mut w, 1)[1], b"hello from the new member".to_vec());
}

#[test]
fn a_joiner_with_the_previous_head_binds_the_update_to_the_chain() {
    let mut w = World::new(23, 3, 3, 3);
    w.deliver_now[2] = false;
    w.setup_with(0, &[0, 1]);
    let mut next = w.roster();
    next.insert(2, SlotRole::Member);
    let at = w.update(
        0,
        Change::Add {
            account: w.accounts[2],
            role: SlotRole::Member,
        },
        next,
    );
    let mut d = w.delivery(at, 2, &[0, 1, 2]).unwrap();
    assert!(
        d.attestations
            .iter()
            .all(|a| a.tags.is_empty() && a.next_tags.len() == 1)
    );
    // A wrong previous head: the attested head does not commit to this
    // envelope after it, so the member does not join.
    d.previous_head = Some(Head::from_bytes([3; 32]));
    w.receive(2, d.clone());
    assert_eq!(w.convs[2].as_ref().unwrap().phase(), &Phase::AwaitingJoin);
    d.previous_head = Some(w.log[at.0 as usize - 1].head);
    w.receive(2, d);
    let c = w.convs[2].as_ref().unwrap();
    assert_eq!(c.phase(), &Phase::Active);
    assert_eq!(
        c.transcript().head_before(at),
        Some(w.log[at.0 as usize - 1].head)
    );
}

#[test]
fn below_all_servers_a_quorum_is_safe_only_within_its_bound() {
    // N = 3, t = 2: two envelopes can both gather t tags once 2t - N = 1
    // server equivocates. With t = N = 3 the same feeds fork no one.
    for (quorum, forked) in [(2, true), (3, false)] {
        let mut w = World::new(24, 3, 3, quorum);
        w.deliver_now = vec![false; 3];
        w.setup(0);
        w.catch_up(1);
        w.catch_up(2);
        w.send(0, msg("real"));
        let (env, hash, head) = w.forked(Index(1), 1).unwrap();
        // Server 2 equivocates: member 1 sees the fork with servers 1 and 2,
        // member 2 the real envelope with servers 0 and 2.
        let fork = w
            .cut_forged(&env, Index(1), Epoch(0), head, 1, &[1, 2])
            .unwrap();
        w.receive(1, fork);
        let real = w.delivery(Index(1), 2, &[0, 2]).unwrap();
        w.receive(2, real);
        let at1 = w.accepted(1).get(1).map(|e| e.1);
        let at2 = w.accepted(2).get(1).map(|e| e.1);
        if forked {
            assert_eq!(at1, Some(hash));
            assert_eq!(at2, Some(w.log[1].envelope.hash()));
        } else {
            assert_eq!((at1, at2), (None, None));
        }
    }
}

// ---- The adversarial feed -------------------------------------------------

use grompi_client_core::delivery::{Incoming, TagUpdate};

/// One manipulation of a member's pending deliveries.
#[derive(Clone, Debug)]
enum Op {
    /// Keep everything pending this step (delay).
    Hold,
    Swap(usize, usize),
    Duplicate(usize),
    Drop(usize),
    /// Send the envelope without tags and the tags later.
    Split(usize),
    ForgeTag(usize, u32),
    WrongKeyTag(usize, u32),
    /// A delivery of another conversation.
    Foreign(usize),
    /// A fork of an ordered index, attested by the malicious servers.
    Fork(usize, u8),
    /// A pending delivery relabelled to another index (a replay at the
    /// wrong position, possibly from another epoch).
    Relabel(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0usize..16;
    prop_oneof![
        3 => Just(Op::Hold),
        3 => (i.clone(), i.clone()).prop_map(|(a, b)| Op::Swap(a, b)),
        2 => i.clone().prop_map(Op::Duplicate),
        2 => i.clone().prop_map(Op::Drop),
        2 => i.clone().prop_map(Op::Split),
        1 => (i.clone(), 0u32..3).prop_map(|(a, s)| Op::ForgeTag(a, s)),
        1 => (i.clone(), 0u32..3).prop_map(|(a, s)| Op::WrongKeyTag(a, s)),
        1 => i.clone().prop_map(Op::Foreign),
        1 => (i.clone(), any::<u8>()).prop_map(|(a, s)| Op::Fork(a, s)),
        1 => (i.clone(), i).prop_map(|(a, b)| Op::Relabel(a, b)),
    ]
}

/// Alert kinds an operation may legitimately cause.
fn allowed(op: &Op, k: &Misbehaviour) -> bool {
    use Misbehaviour as M;
    match op {
        Op::Hold | Op::Swap(..) | Op::Duplicate(_) | Op::Drop(_) | Op::Split(_) => false,
        Op::ForgeTag(..) | Op::WrongKeyTag(..) => matches!(k, M::BadAttestation { .. }),
        Op::Foreign(_) => matches!(k, M::WrongContext),
        Op::Fork(..) => matches!(
            k,
            M::ConflictingHeads { .. }
                | M::RewrittenIndex { .. }
                // The fork delivered next to (or instead of) the attested
                // envelope at an index a quorum attested.
                | M::UnattestedEnvelope { .. }
                // A fork of the Setup is opened before its tags are
                // checked (the member learns its slot from it): the
                // creator has no block in it, the others' blocks are bound
                // to the genuine envelope.
                | M::Undecryptable("block bound to another envelope" | "no block for this member")
        ),
        Op::Relabel(..) => matches!(
            k,
            M::BadAttestation { .. }
                | M::WrongContext
                | M::RewrittenIndex { .. }
                | M::UnexpectedKind(_)
                // An envelope moved to an index a quorum attested for
                // another one.
                | M::UnattestedEnvelope { .. }
        ),
    }
}

/// Servers 1 and 2 are malicious (they also attest forks); server 0 is honest.
const MALICIOUS: [u32; 2] = [1, 2];

fn index_of(i: &Incoming) -> Index {
    match i {
        Incoming::Envelope(d) => d.index,
        Incoming::Tags(t) => t.index,
    }
}

fn attestations_mut(i: &mut Incoming) -> &mut Vec<grompi_proto::mac::Attestation> {
    match i {
        Incoming::Envelope(d) => &mut d.attestations,
        Incoming::Tags(t) => &mut t.attestations,
    }
}

/// Replaces server `s`'s first tag (current or next set) with `tag`.
fn replace_tag(i: &mut Incoming, s: u32, tag: Tag) -> bool {
    let Some(a) = attestations_mut(i).iter_mut().find(|a| a.server == s) else {
        return false;
    };
    match (a.tags.first_mut(), a.next_tags.first_mut()) {
        (Some(t), _) | (None, Some(t)) => {
            *t = tag;
            true
        }
        _ => false,
    }
}

/// Applies `ops` to member `m`'s pending deliveries; returns what to hand
/// over now (everything, unless an op holds it back).
fn manipulate(
    w: &mut World,
    other: &mut World,
    m: usize,
    held: &mut Vec<Incoming>,
    ops: &[Op],
) -> Vec<Incoming> {
    let all = [0, 1, 2];
    let n = w.log.len();
    let mut hold = false;
    for op in ops {
        if held.is_empty() {
            break;
        }
        let at = |i: usize| i % held.len();
        match *op {
            Op::Hold => hold = true,
            Op::Swap(a, b) => {
                let (a, b) = (at(a), at(b));
                held.swap(a, b);
            }
            Op::Duplicate(a) => {
                let d = held[at(a)].clone();
                held.push(d);
            }
            Op::Drop(a) => {
                held.remove(at(a));
            }
            Op::Split(a) => {
                let p = at(a);
                if let Incoming::Envelope(d) = &mut held[p] {
                    let attestations = std::mem::take(&mut d.attestations);
                    let tags = TagUpdate {
                        conversation: d.conversation,
                        index: d.index,
                        attestations,
                    };
                    held.push(Incoming::Tags(tags));
                }
            }
            Op::ForgeTag(a, s) => {
                let mut d = held[at(a)].clone();
                if replace_tag(&mut d, s, Tag::from_bytes([0x5a; 32])) {
                    held.push(d);
                }
            }
            Op::WrongKeyTag(a, s) => {
                let mut d = held[at(a)].clone();
                let Some(o) = w.log.get(index_of(&d).0 as usize).cloned() else {
                    continue;
                };
                let victim = (m + 1) % w.accounts.len();
                if let Some(tag) = w.wrong_key_tag(s, victim, o.epoch, o.index, o.head)
                    && replace_tag(&mut d, s, tag)
                {
                    held.push(d);
                }
            }
            Op::Foreign(a) => {
                let i = a % other.log.len();
                if let Some(d) = other.delivery(Index(i as u64), m % 3, &all) {
                    let p = at(a);
                    held.insert(p, Incoming::Envelope(Box::new(d)));
                }
            }
            Op::Fork(a, salt) => {
                let i = Index((a % n) as u64);
                if let Some((env, _, head)) = w.forked(i, salt) {
                    let epoch = w.log[i.0 as usize].epoch;
                    if let Some(d) = w.cut_forged(&env, i, epoch, head, m, &MALICIOUS) {
                        let p = at(a);
                        held.insert(p, Incoming::Envelope(Box::new(d)));
                    }
                }
            }
            Op::Relabel(a, to) => {
                let mut d = held[at(a)].clone();
                let to = Index((to % n) as u64);
                if index_of(&d) != to {
                    match &mut d {
                        Incoming::Envelope(e) => e.index = to,
                        Incoming::Tags(t) => t.index = to,
                    }
                    held.push(d);
                }
            }
        }
    }
    if hold {
        Vec::new()
    } else {
        std::mem::take(held)
    }
}

/// The script of the adversarial test, after the Setup by member 0 with
/// members 0, 1 and 2. Member 3 is added at step 4, member 2 removed at
/// step 8.
fn step(w: &mut World, i: usize) {
    let promote = |w: &World| Change::SetRole {
        account: w.accounts[1],
        role: SlotRole::Admin,
    };
    match i {
        0 => {
            w.send(1, msg("one"));
        }
        1 => {
            w.send(2, msg("two"));
        }
        2 => {
            w.catch_up(1);
            let r = w.convs[1].as_ref().unwrap().receipt().unwrap();
            w.send(1, r);
        }
        3 => {
            w.catch_up(0);
            let mut next = w.roster();
            next.insert(1, SlotRole::Admin);
            let change = promote(w);
            w.update(0, change, next);
        }
        4 => {
            w.catch_up(1);
            let mut next = w.roster();
            next.insert(3, SlotRole::Member);
            w.update(
                1,
                Change::Add {
                    account: w.accounts[3],
                    role: SlotRole::Member,
                },
                next,
            );
        }
        5 => {
            w.send(3, msg("hi"));
        }
        6 => {
            w.send(2, msg("three"));
        }
        7 => {
            w.send(0, msg("four"));
        }
        8 => {
            w.catch_up(1);
            let mut next = w.roster();
            next.remove(&2);
            w.update(
                1,
                Change::Remove {
                    account: w.accounts[2],
                },
                next,
            );
        }
        9 => {
            w.send(0, msg("five"));
        }
        10 => {
            w.send(1, msg("six"));
        }
        _ => {
            w.send(3, msg("bye"));
        }
    }
}

const STEPS: usize = 12;
/// Index of the Update that adds member 3, and of the one removing member 2.
const ADDED_AT: usize = 5;
const REMOVED_AT: usize = 9;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Under any adversarial feed (delays, reordering, duplicates, drops,
    /// tags split from their envelope, forged and wrong-key tags, deliveries
    /// from another conversation, replays at other indices and epochs,
    /// forks attested by every order server but one), at every moment every
    /// honest member's accepted transcript is a contiguous part of the one
    /// honest chain (so any two members agree wherever both accepted), every
    /// alert is one the manipulation explains, and after a reconnect every
    /// member holds the whole chain from its first index and all current
    /// members agree on the membership. Member 3 joins midway; member 2 is
    /// removed.
    #[test]
    fn accepted_transcripts_are_prefixes_under_adversarial_feeds(
        seed in 0u64..10_000,
        ops in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(op(), 0..4), STEPS + 1), 4),
    ) {
        let members = 4;
        let mut w = World::new(seed, members, 3, 3);
        let mut other = World::new(seed ^ 0xffff, 3, 3, 3);
        other.setup(0);
        other.send(1, msg("elsewhere"));
        w.deliver_now = vec![false; members];
        w.setup_with(0, &[0, 1, 2]);
        let mut held: Vec<Vec<Incoming>> = vec![Vec::new(); members];
        let mut seen = 0usize;
        for s in 0..=STEPS {
            if s > 0 {
                step(&mut w, s - 1);
            }
            // The router hands the adversary every newly ordered index.
            while seen < w.log.len() {
                for (m, h) in held.iter_mut().enumerate() {
                    if let Some(d) = w.delivery(Index(seen as u64), m, &[0, 1, 2]) {
                        h.push(Incoming::Envelope(Box::new(d)));
                    }
                }
                seen += 1;
            }
            let chain: Vec<(Index, EnvelopeHash, Head)> =
                w.log.iter().map(|o| (o.index, o.envelope.hash(), o.head)).collect();
            for (m, member_ops) in ops.iter().enumerate() {
                let feed = manipulate(&mut w, &mut other, m, &mut held[m], &member_ops[s]);
                for d in feed {
                    if let Some(c) = w.convs[m].as_mut() {
                        c.receive_incoming(d, &mut w.secrets[m]);
                    }
                    let accepted = w.accepted(m);
                    let first = accepted.first().map_or(0, |e| e.0.0 as usize);
                    prop_assert!(
                        chain[first..].starts_with(&accepted),
                        "member {} accepted off the honest chain", m
                    );
                }
            }
        }
        prop_assert_eq!(w.log.len(), STEPS + 1);
        for (m, member_ops) in ops.iter().enumerate() {
            w.catch_up(m);
            let used: Vec<&Op> = member_ops.iter().flatten().collect();
            for a in w.convs[m].as_mut().unwrap().drain_alerts() {
                prop_assert!(
                    used.iter().any(|op| allowed(op, &a.kind)),
                    "member {} raised {:?} under {:?}", m, a, used
                );
            }
        }
        let chain: Vec<_> = w.log.iter().map(|o| (o.index, o.envelope.hash(), o.head)).collect();
        prop_assert_eq!(w.accepted(0), chain.clone());
        prop_assert_eq!(w.accepted(1), chain.clone());
        prop_assert_eq!(w.accepted(2), chain[..=REMOVED_AT].to_vec());
        prop_assert_eq!(w.accepted(3), chain[ADDED_AT..].to_vec());
        prop_assert_eq!(w.convs[2].as_ref().unwrap().phase(), &Phase::Removed);
        let membership = |m: usize| w.convs[m].as_ref().unwrap().membership().cloned();
        prop_assert_eq!(membership(0), membership(1));
        prop_assert_eq!(membership(0), membership(3));
    }
}

/// A tag update that overtakes the delivery it belongs to (it arrives
/// before the member holds the keys to check it) waits instead of being
/// lost: with the delivery's own tag it reaches the quorum.
#[test]
fn tags_that_arrive_before_their_envelope_wait_for_it() {
    let mut w = World::new(31, 2, 3, 2);
    w.setup(0);
    let (mut secrets, mut conv) = w.replica(1);
    let early = tags_of(&w.delivery(Index(0), 1, &[0]).unwrap());
    conv.receive_tags(early, &mut secrets);
    assert_eq!(conv.next_expected(), Index(0));
    conv.receive(w.delivery(Index(0), 1, &[2]).unwrap(), &mut secrets);
    assert_eq!(conv.next_expected(), Index(1), "the early tag was lost");
    assert_eq!(conv.status(Index(0)), AttestationStatus::Quorum);
    assert!(conv.drain_alerts().is_empty());
}

/// Tags withheld by the router: a member stuck on an index it holds, once
/// it reports the stall, blames each server that proves it attested that
/// index but whose tag never reached it; before the stall report the same
/// proof only says the tag may still be in flight.
#[test]
fn after_a_stall_a_server_proving_what_it_attested_exposes_withheld_tags() {
    let mut w = World::new(41, 2, 3, 3);
    w.setup(0);
    w.send(0, msg("a"));
    let (slot_key, conv_id) = (w.slot_key(Epoch(0), 1).unwrap().1, w.conversation);
    let (mut secrets, mut c) = w.replica(1);
    c.receive(w.delivery(Index(0), 1, &[0, 1, 2]).unwrap(), &mut secrets);
    // Index 1 arrives with the tags of servers 0 and 1 only.
    c.receive(w.delivery(Index(1), 1, &[0, 1]).unwrap(), &mut secrets);
    assert_eq!(c.next_expected(), Index(1));
    c.drain_alerts();
    let servers: Vec<_> = (0..3)
        .map(|s| w.servers[s].mac_keys(&slot_key).unwrap())
        .collect();
    let head = w.log[1].head;
    let proofs = |nonce| -> Vec<HeadProof> {
        (0..3u32)
            .map(|server| {
                let statement = HeadProofStatement {
                    conversation: conv_id,
                    epoch: Epoch(0),
                    count: 2,
                    head,
                    nonce,
                };
                HeadProof {
                    server,
                    statement,
                    tag: servers[server as usize].prove_head(&statement),
                }
            })
            .collect()
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(2);
    let nonce = c.head_proof_nonce(&mut rng);
    let before = c.check_head_proofs(&proofs(nonce));
    assert!(
        before
            .iter()
            .all(|o| matches!(o, HeadProofOutcome::AheadOfAccepted { count: 2, .. })),
        "{before:?}"
    );
    assert!(c.drain_alerts().is_empty());
    c.report_stall();
    let nonce = c.head_proof_nonce(&mut rng);
    let after = c.check_head_proofs(&proofs(nonce));
    assert_eq!(
        after[2],
        HeadProofOutcome::Misbehaviour(Misbehaviour::Withheld {
            server: 2,
            attested: 2,
            delivered: 1
        })
    );
    assert!(matches!(after[0], HeadProofOutcome::AheadOfAccepted { .. }));
    assert!(matches!(after[1], HeadProofOutcome::AheadOfAccepted { .. }));
    let alerts = c.drain_alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].server, Some(2));
}
