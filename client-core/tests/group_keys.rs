//! Group-keyed conversations (`docs/PROTOCOL.md` section 4.5) through the
//! in-memory world with the real order server cores: every member reads
//! every Message from one body without blocks, across key periods, a
//! Rekey, a join and a removal; keys change at every period boundary; what
//! the order servers and the router know opens nothing; a bad or missing
//! share raises its typed alert.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use grompi_client_core::body::{self, BodyContext};
use grompi_client_core::content::{Change, Content};
use grompi_client_core::conversation::{Event, Phase};
use grompi_client_core::group_key::{GroupKeys, KeyGeneration, PeriodKey, Rn1};
use grompi_client_core::testkit::World;
use grompi_client_core::{Alert, Conversation};
use grompi_proto::key_share::{KeyPeriod, KeyShare};
use grompi_proto::{EnvelopeKind, HeaderKey, Index, Misbehaviour, SlotIndex, SlotRole};
use std::collections::BTreeMap;

fn msg(s: &str) -> Content {
    Content::Message(s.as_bytes().to_vec())
}

fn read(conv: &mut Conversation) -> Vec<(Index, Vec<u8>)> {
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

fn alerts(w: &mut World, m: usize) -> Vec<Alert> {
    w.convs[m].as_mut().unwrap().drain_alerts()
}

/// A group-keyed world of `members`, all added at the Setup by member 0.
fn group_world(seed: u64, members: usize, period: u64) -> World {
    let mut w = World::new(seed, members, 3, 3);
    w.group_period = Some(period);
    w.setup(0);
    w
}

/// The period key of the Message at `index`, mixed from the real shares
/// of the servers its key id names: what the order servers know, and the
/// router too (it unwraps the padding slots' shares).
fn servers_period_key(w: &World, index: Index) -> PeriodKey {
    let h = w.log[index.0 as usize].envelope.header();
    let HeaderKey::Id(id) = h.key() else {
        panic!("index {index} has no key id")
    };
    let shares: Vec<(u32, KeyShare)> = id
        .servers
        .servers()
        .map(|s| {
            let share =
                w.servers[s as usize].key_share(&w.conversation, h.epoch(), KeyPeriod(id.period));
            (s, share)
        })
        .collect();
    let refs: Vec<(u32, &KeyShare)> = shares.iter().map(|(s, k)| (*s, k)).collect();
    PeriodKey::mix(&w.conversation, h.epoch(), KeyPeriod(id.period), &refs).unwrap()
}

/// A real attempt to open the Message at `index` under the key a schedule
/// started from `rn1` derives (chained once through a Rekey with the same
/// RN1 when the key id names generation 1) with `pk`; `None` when the
/// schedule yields no key for it.
fn opens_with(w: &World, index: Index, rn1: &Rn1, pk: &PeriodKey) -> Option<bool> {
    let o = &w.log[index.0 as usize];
    let h = o.envelope.header();
    let HeaderKey::Id(id) = h.key() else {
        panic!("index {index} has no key id")
    };
    let mut keys = GroupKeys::start_epoch(w.conversation, h.epoch(), rn1, (0..16).map(SlotIndex));
    if id.generation == 1 {
        keys.rekey(
            KeyGeneration(1),
            rn1,
            (0..16).map(|s| (SlotIndex(s), grompi_proto::Sequence(1))),
        )
        .ok()?;
    }
    let key = keys
        .message_key(
            KeyGeneration(id.generation),
            KeyPeriod(id.period),
            pk,
            h.sender(),
            h.sequence(),
        )
        .ok()?;
    Some(
        body::open(
            &key,
            &h.key_commitment(),
            &BodyContext::of(h),
            o.envelope.body(),
        )
        .is_ok(),
    )
}

#[test]
fn every_member_reads_every_message_from_one_body_without_blocks() {
    let mut w = group_world(1, 3, 2);
    let mut sent = Vec::new();
    for i in 0..7 {
        let from = i % 3;
        let text = format!("message {i}");
        let index = w.send(from, msg(&text));
        sent.push((index, text));
    }
    for m in 0..3 {
        assert!(alerts(&mut w, m).is_empty(), "member {m} raised alerts");
        let conv = w.convs[m].as_mut().unwrap();
        assert!(conv.is_group_keyed());
        let got: BTreeMap<Index, Vec<u8>> = read(conv).into_iter().collect();
        for (index, text) in &sent {
            let from = (index.0 as usize - 1) % 3;
            if from == m {
                continue; // a member's own message comes from its outbox
            }
            assert_eq!(
                got.get(index),
                Some(&text.as_bytes().to_vec()),
                "member {m} at {index}"
            );
        }
    }
    // Each Message has one body, no blocks, and names its key: the period
    // advances every 2 indices (the period of the index before it).
    let mut periods = Vec::new();
    for o in &w.log[1..] {
        let h = o.envelope.header();
        assert_eq!(h.kind(), EnvelopeKind::Message);
        assert!(
            o.envelope.blocks().is_empty(),
            "a group-keyed Message has no blocks"
        );
        let HeaderKey::Id(id) = h.key() else {
            panic!("no key id at {}", o.index)
        };
        assert_eq!(id.servers.bits(), 0b111, "every server's share is mixed");
        periods.push(id.period);
    }
    assert_eq!(periods, vec![0, 0, 1, 1, 2, 2, 3]);
}

#[test]
fn envelope_bytes_do_not_grow_with_the_group() {
    let size = |members: usize, period: Option<u64>| {
        let mut w = World::new(7, members, 3, 3);
        w.group_period = period;
        w.setup(0);
        let index = w.send(1, msg("the same text"));
        let env = &w.log[index.0 as usize].envelope;
        (env.blocks().len(), env.body().len())
    };
    let (blocks_small, body_small) = size(3, Some(100));
    let (blocks_large, body_large) = size(9, Some(100));
    assert_eq!((blocks_small, blocks_large), (0, 0));
    assert_eq!(body_small, body_large);
    // Pairwise wrapping: one block per other member.
    assert_eq!(size(3, None).0, 2);
    assert_eq!(size(9, None).0, 8);
}

#[test]
fn a_rekey_starts_the_next_generation_at_every_member() {
    let mut w = group_world(2, 3, 100);
    w.send(1, msg("before"));
    let rekey = w.send(0, Content::Rekey);
    let after = w.send(2, msg("after"));
    for m in 0..3 {
        assert!(alerts(&mut w, m).is_empty(), "member {m} raised alerts");
        let conv = w.convs[m].as_mut().unwrap();
        let (_, generation, _, _) = conv.key_position().unwrap();
        assert_eq!(generation, Some(KeyGeneration(1)), "member {m}");
        if m != 2 {
            assert!(read(conv).iter().any(|(i, t)| *i == after && t == b"after"));
        }
    }
    let HeaderKey::Start(start) = w.log[rekey.0 as usize].envelope.header().key() else {
        panic!("a Rekey carries a key start")
    };
    assert_eq!(start.generation(), 1);
    let HeaderKey::Id(id) = w.log[after.0 as usize].envelope.header().key() else {
        panic!()
    };
    assert_eq!(id.generation, 1);
}

#[test]
fn a_member_cannot_rekey() {
    let mut w = group_world(3, 3, 100);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let conv = w.convs[1].as_mut().unwrap();
    let refused = conv.rekey(&mut rng, &mut w.secrets[1]);
    assert!(matches!(
        refused,
        Err(grompi_client_core::ClientError::InvalidMembership(_))
    ));
}

#[test]
fn a_joiner_reads_from_its_join_and_a_removed_member_gets_no_rn1() {
    let mut w = World::new(4, 4, 3, 3);
    w.group_period = Some(3);
    w.setup_with(0, &[0, 1, 2]);
    w.send(1, msg("before the join"));
    // Member 3 joins.
    let mut next = w.roster();
    next.insert(3, SlotRole::Member);
    w.update(
        0,
        Change::Add {
            account: w.accounts[3],
            role: SlotRole::Member,
        },
        next,
    );
    let joined = w.send(2, msg("after the join"));
    // Member 2 is removed.
    let mut next = w.roster();
    next.remove(&2);
    let removal = w.update(
        0,
        Change::Remove {
            account: w.accounts[2],
        },
        next,
    );
    let later = w.send(1, msg("after the removal"));
    for m in [0, 1, 3] {
        assert!(alerts(&mut w, m).is_empty(), "member {m} raised alerts");
    }
    assert!(
        alerts(&mut w, 2).is_empty(),
        "the removed member is not misled"
    );
    let joiner = w.convs[3].as_mut().unwrap();
    let got: BTreeMap<Index, Vec<u8>> = read(joiner).into_iter().collect();
    assert_eq!(got.get(&joined), Some(&b"after the join".to_vec()));
    assert_eq!(got.get(&later), Some(&b"after the removal".to_vec()));
    let removed = w.convs[2].as_mut().unwrap();
    assert_eq!(*removed.phase(), Phase::Removed);
    assert!(!read(removed).iter().any(|(i, _)| *i == later));
    // The removal's block for member 2 carries no RN1; the others' do.
    let removal_env = &w.log[removal.0 as usize].envelope;
    let HeaderKey::Start(start) = removal_env.header().key() else {
        panic!("the Update carries a key start")
    };
    assert_eq!(start.generation(), 0);
    assert_eq!(
        removal_env.blocks().len(),
        3,
        "blocks for members 1, 2 (removed) and 3"
    );
}

/// Everything the order servers know (every share, from their secrets)
/// and everything the router stores (the envelopes; it holds the padding
/// slots, so it can unwrap shares too) opens no Message: RN1 travels only
/// in pairwise blocks. The attempt is real: each body is opened under the
/// key a schedule without RN1 derives.
#[test]
fn every_share_and_the_routers_store_open_no_body() {
    let mut w = group_world(5, 3, 2);
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(w.send(i % 3, msg(&format!("secret {i}"))));
    }
    for index in sent {
        let pk = servers_period_key(&w, index);
        let commitment = *w.log[index.0 as usize]
            .envelope
            .header()
            .key_commitment()
            .as_bytes();
        for guess in [[0u8; 32], [0xff; 32], commitment] {
            assert_eq!(
                opens_with(&w, index, &Rn1::from_bytes(guess), &pk),
                Some(false),
                "index {index}"
            );
        }
    }
}

#[test]
fn a_share_that_does_not_open_raises_bad_key_share_and_the_rest_carry_on() {
    let mut w = group_world(6, 3, 2);
    w.deliver_now[1] = false;
    let a = w.send(0, msg("one"));
    let b = w.send(2, msg("two")); // index 2 starts period 1
    // Member 1 gets index 2 with server 1's share flipped.
    let d1 = w.delivery(a, 1, &[0, 1, 2]).unwrap();
    let mut d2 = w.delivery(b, 1, &[0, 1, 2]).unwrap();
    assert!(
        !d2.attestations[1].key_shares.is_empty(),
        "index 2 carries shares"
    );
    d2.attestations[1].key_shares[0].0[0] ^= 1;
    w.receive(1, d1);
    w.receive(1, d2);
    let raised = alerts(&mut w, 1);
    assert!(
        raised
            .iter()
            .any(|a| a.kind == Misbehaviour::BadKeyShare { server: 1 } && a.server == Some(1)),
        "{raised:?}"
    );
    // Member 1 sends in period 1 with the two shares it holds; everyone
    // reads it.
    w.deliver_now[1] = true;
    let c = w.send(1, msg("three"));
    let HeaderKey::Id(id) = w.log[c.0 as usize].envelope.header().key() else {
        panic!()
    };
    assert_eq!((id.period, id.servers.bits()), (1, 0b101));
    for m in [0, 2] {
        assert!(alerts(&mut w, m).is_empty());
        let conv = w.convs[m].as_mut().unwrap();
        assert!(read(conv).iter().any(|(i, t)| *i == c && t == b"three"));
    }
}

/// Member 1 gets index 2 (which carries period 1's shares) with server
/// 2's share stripped, as when that server's tag comes late, then index 3,
/// whose key mixes all three servers' shares.
fn late_share_world() -> (World, Index, Index) {
    let mut w = group_world(8, 3, 2);
    w.deliver_now[1] = false;
    let a = w.send(0, msg("one"));
    let b = w.send(2, msg("two"));
    let c = w.send(0, msg("three")); // names period 1, all three servers
    let d1 = w.delivery(a, 1, &[0, 1, 2]).unwrap();
    w.receive(1, d1);
    let mut d2 = w.delivery(b, 1, &[0, 1, 2]).unwrap();
    d2.attestations[2].key_shares.clear();
    w.receive(1, d2);
    let d3 = w.delivery(c, 1, &[0, 1, 2]).unwrap();
    w.receive(1, d3);
    (w, b, c)
}

#[test]
fn a_message_waits_for_a_share_that_comes_as_a_late_tag() {
    let (mut w, b, c) = late_share_world();
    // Accepted, not opened yet, not an alert: the share may still come.
    assert!(alerts(&mut w, 1).is_empty());
    let conv = w.convs[1].as_mut().unwrap();
    assert_eq!(conv.next_expected(), Index(4));
    assert!(read(conv).iter().all(|(i, _)| *i != c));
    assert!(conv.stuck(), "a parked message makes the shell fetch again");
    // Server 2's tag for index 2 arrives late, with its share.
    let late = w.delivery(b, 1, &[2]).unwrap();
    let update = grompi_client_core::delivery::TagUpdate {
        conversation: w.conversation,
        index: b,
        attestations: late.attestations,
    };
    let conv = w.convs[1].as_mut().unwrap();
    conv.receive_tags(update, &mut w.secrets[1]);
    assert!(conv.drain_alerts().is_empty());
    assert!(read(conv).iter().any(|(i, t)| *i == c && t == b"three"));
    assert!(!conv.stuck());
    assert!(!conv.undecryptable().contains(&c));
    // The chains stayed in step.
    w.deliver_now[1] = true;
    let d = w.send(2, msg("four"));
    let conv = w.convs[1].as_mut().unwrap();
    assert!(read(conv).iter().any(|(i, t)| *i == d && t == b"four"));
}

#[test]
fn a_share_that_never_comes_is_missing_key_share_after_a_stall() {
    let (mut w, _, c) = late_share_world();
    let conv = w.convs[1].as_mut().unwrap();
    conv.report_stall();
    let raised = conv.drain_alerts();
    assert!(
        raised
            .iter()
            .any(|a| a.kind == Misbehaviour::MissingKeyShare { server: 2 }
                && a.index == Some(c)
                && a.server == Some(2)),
        "{raised:?}"
    );
    assert!(conv.undecryptable().contains(&c));
    // The chains stayed in step: once a period whose shares member 1 holds
    // begins (index 4 starts period 2; index 5 names it), member 0's next
    // message opens again; index 4 still names period 1 and waits.
    w.deliver_now[1] = true;
    let _d = w.send(0, msg("four"));
    let e = w.send(0, msg("five"));
    let conv = w.convs[1].as_mut().unwrap();
    assert!(read(conv).iter().any(|(i, t)| *i == e && t == b"five"));
}

/// A parked message survives a restart and opens when its share comes.
#[test]
fn a_parked_message_survives_a_restart() {
    let (mut w, b, c) = late_share_world();
    let saved = w.convs[1].as_ref().unwrap().save_state();
    w.convs[1] = Some(Conversation::restore_state(&saved, w.config.clone()).unwrap());
    let late = w.delivery(b, 1, &[2]).unwrap();
    let conv = w.convs[1].as_mut().unwrap();
    conv.receive_tags(
        grompi_client_core::delivery::TagUpdate {
            conversation: w.conversation,
            index: b,
            attestations: late.attestations,
        },
        &mut w.secrets[1],
    );
    assert!(conv.drain_alerts().is_empty());
    assert!(read(conv).iter().any(|(i, t)| *i == c && t == b"three"));
}

/// A member's group keys, shares and sent RN1s survive a save and
/// restore: it goes on reading, and sending, after the restart.
#[test]
fn group_key_state_survives_a_restart() {
    let mut w = group_world(10, 3, 2);
    w.send(0, msg("one"));
    w.send(2, msg("two"));
    let saved = w.convs[1].as_ref().unwrap().save_state();
    let restored = Conversation::restore_state(&saved, w.config.clone()).unwrap();
    assert_eq!(
        restored.key_position(),
        w.convs[1].as_ref().unwrap().key_position()
    );
    w.convs[1] = Some(restored);
    let c = w.send(0, msg("three"));
    let d = w.send(1, msg("four"));
    let rekey = w.send(0, Content::Rekey);
    // The application drains events before saving (they are not saved).
    let mut got: BTreeMap<Index, Vec<u8>> =
        read(w.convs[1].as_mut().unwrap()).into_iter().collect();
    assert!(alerts(&mut w, 1).is_empty());
    let saved = w.convs[1].as_ref().unwrap().save_state();
    w.convs[1] = Some(Conversation::restore_state(&saved, w.config.clone()).unwrap());
    let e = w.send(2, msg("five"));
    assert!(rekey < e);
    for m in 0..3 {
        assert!(alerts(&mut w, m).is_empty(), "member {m}");
    }
    got.extend(read(w.convs[1].as_mut().unwrap()));
    assert_eq!(got.get(&c), Some(&b"three".to_vec()));
    assert_eq!(got.get(&e), Some(&b"five".to_vec()));
    let got: BTreeMap<Index, Vec<u8>> = read(w.convs[2].as_mut().unwrap()).into_iter().collect();
    assert_eq!(got.get(&d), Some(&b"four".to_vec()));
}

mod schedules {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// Member `from` (taken modulo the current roster) sends.
        Send { from: usize },
        /// The creator (always an Admin) rekeys.
        Rekey,
        /// Member `who` (1..4) joins if absent, leaves if present (by the
        /// creator's Update), as long as three members stay.
        Toggle { who: usize },
        /// Order server `server` is down (its tags and shares never
        /// reach anyone), or none is.
        Down { server: Option<u32> },
        /// Member `who` saves its state and restarts from it.
        Crash { who: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0usize..4).prop_map(|from| Step::Send { from }),
            1 => Just(Step::Rekey),
            1 => (1usize..4).prop_map(|who| Step::Toggle { who }),
            1 => proptest::option::of(0u32..3).prop_map(|server| Step::Down { server }),
            1 => (0usize..4).prop_map(|who| Step::Crash { who }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Over random schedules of messages, Rekeys, joins and removals,
        /// an order server down at t < N, and crashes (save and restore),
        /// every member of the epoch but the sender reads every message,
        /// byte for byte, and nobody raises an alert: every honest member
        /// derived the same key for each (epoch, generation, period, share
        /// set). A removed member reads nothing after its removal.
        #[test]
        fn honest_members_read_every_message(seed in any::<u64>(), steps in proptest::collection::vec(step(), 1..30)) {
            let mut w = World::new(seed, 4, 3, 2);
            w.group_period = Some(3);
            w.setup_with(0, &[0, 1, 2]);
            let mut read_by: BTreeMap<usize, BTreeMap<Index, Vec<u8>>> = BTreeMap::new();
            let mut expected: Vec<(Index, usize, Vec<u8>, Vec<usize>)> = Vec::new();
            let mut removed_at: BTreeMap<usize, Index> = BTreeMap::new();
            let drain = |w: &mut World, read_by: &mut BTreeMap<usize, BTreeMap<Index, Vec<u8>>>| -> Vec<(usize, Alert)> {
                let mut raised = Vec::new();
                for m in 0..4 {
                    let conv = w.convs[m].as_mut().unwrap();
                    read_by.entry(m).or_default().extend(read(conv));
                    raised.extend(conv.drain_alerts().into_iter().map(|a| (m, a)));
                }
                raised
            };
            for (n, step) in steps.into_iter().enumerate() {
                let roster: Vec<usize> = w.roster().keys().copied().collect();
                match step {
                    Step::Send { from } => {
                        let from = roster[from % roster.len()];
                        let text = format!("step {n}").into_bytes();
                        let index = w.send(from, Content::Message(text.clone()));
                        let readers = roster.iter().copied().filter(|m| *m != from).collect();
                        expected.push((index, from, text, readers));
                    }
                    Step::Rekey => {
                        w.send(0, Content::Rekey);
                    }
                    Step::Toggle { who } => {
                        let mut next = w.roster();
                        if next.remove(&who).is_some() {
                            if next.len() < 3 {
                                continue;
                            }
                            let at = w.update(0, Change::Remove { account: w.accounts[who] }, next);
                            removed_at.insert(who, at);
                        } else if !removed_at.contains_key(&who) {
                            next.insert(who, SlotRole::Member);
                            w.update(0, Change::Add { account: w.accounts[who], role: SlotRole::Member }, next);
                        }
                    }
                    Step::Down { server } => w.down_server = server,
                    Step::Crash { who } => {
                        let raised = drain(&mut w, &mut read_by);
                        prop_assert!(raised.is_empty(), "alerts: {raised:?}");
                        let saved = w.convs[who].as_ref().unwrap().save_state();
                        w.convs[who] = Some(Conversation::restore_state(&saved, w.config.clone()).unwrap());
                    }
                }
            }
            let raised = drain(&mut w, &mut read_by);
            prop_assert!(raised.is_empty(), "alerts: {raised:?}");
            for (index, from, text, readers) in &expected {
                for m in readers {
                    prop_assert_eq!(
                        read_by[m].get(index),
                        Some(text),
                        "member {} did not read index {} from member {}", m, index, from
                    );
                }
            }
            for (who, at) in &removed_at {
                prop_assert!(read_by[who].keys().all(|i| i < at), "member {} read after its removal", who);
            }
        }
    }
}

/// The router's and every order server's knowledge plus a removed member's
/// own secrets open nothing sent after the removal. The removed member's
/// Olm sessions (a replica from before the removal) decrypt every block it
/// was ever sent: its RN1s are exactly those of the generations it took part
/// in, the removal's block carries none, and a schedule started from any
/// of them, with every order server's shares, opens no later body.
#[test]
fn a_removed_member_with_every_servers_shares_opens_nothing_after_its_removal() {
    use grompi_client_core::body::BlockPlaintext;
    let mut w = group_world(11, 4, 2);
    w.send(1, msg("all four"));
    w.send(0, Content::Rekey);
    w.send(3, msg("still four"));
    let mut next = w.roster();
    next.remove(&3);
    let removal = w.update(
        0,
        Change::Remove {
            account: w.accounts[3],
        },
        next,
    );
    let mut after = Vec::new();
    for i in 0..4 {
        after.push(w.send(i % 3, msg(&format!("without three {i}"))));
    }
    w.send(0, Content::Rekey);
    after.push(w.send(2, msg("after a rekey")));

    // Every RN1 member 3 ever learned, from the blocks addressed to it.
    let (mut secrets, _) = w.replica(3);
    let mut learned = Vec::new();
    for o in &w.log {
        if o.index > removal {
            break;
        }
        let Some((slot, _)) = w.slot_key(o.epoch, 3) else {
            continue;
        };
        let Some(block) = o.envelope.blocks().iter().find(|b| b.recipient == slot) else {
            continue;
        };
        let (_, plain) = secrets.pairwise.decrypt_from(&block.ciphertext).unwrap();
        let block = BlockPlaintext::decode(&plain).unwrap();
        if o.index == removal {
            assert!(block.rn1.is_none(), "the removal gives member 3 no RN1");
        } else if let Some(rn1) = block.rn1 {
            learned.push((o.epoch, rn1));
        }
    }
    assert_eq!(learned.len(), 2, "the Setup's and the Rekey's RN1");

    // The control: with the RN1 a remaining member got in the removal's
    // block, the same attempt opens the first later message.
    let (mut kept, _) = w.replica(1);
    let mut next_rn1 = None;
    for o in w.log.iter().take(removal.0 as usize + 1) {
        let Some((slot, _)) = w.slot_key(o.epoch, 1) else {
            continue;
        };
        // A member who stays gets an Update's block at its current slot.
        let Some(block) = o.envelope.blocks().iter().find(|b| b.recipient == slot) else {
            continue;
        };
        let (_, plain) = kept.pairwise.decrypt_from(&block.ciphertext).unwrap();
        next_rn1 = BlockPlaintext::decode(&plain).unwrap().rn1;
    }
    let control = servers_period_key(&w, after[0]);
    let next_rn1 = next_rn1.expect("a remaining member gets the next epoch's RN1");
    assert_eq!(
        opens_with(&w, after[0], &next_rn1, &control),
        Some(true),
        "the control must open: the attempt is real"
    );
    for index in after {
        let pk = servers_period_key(&w, index);
        for (_, rn1) in &learned {
            assert_ne!(
                opens_with(&w, index, rn1, &pk),
                Some(true),
                "index {index} opened with a removed member's RN1"
            );
        }
    }
}

/// The router empties or rewrites the group key fields of a Message it
/// relays: they are in the core hash, so the envelope no longer chains to
/// the head the order servers tagged (`UnattestedEnvelope`), nothing is
/// accepted, and the genuine envelope is accepted after.
#[test]
fn router_rewriting_the_key_id_is_not_accepted() {
    use grompi_proto::{KeyId, ShareServers};
    let cases: Vec<(&str, HeaderKey)> = vec![
        ("emptied", HeaderKey::None),
        (
            "another period",
            HeaderKey::Id(KeyId {
                generation: 0,
                period: 1,
                servers: ShareServers::new(0b111).unwrap(),
            }),
        ),
        (
            "fewer servers",
            HeaderKey::Id(KeyId {
                generation: 0,
                period: 0,
                servers: ShareServers::new(0b001).unwrap(),
            }),
        ),
    ];
    for (case, key) in cases {
        let mut w = group_world(12, 3, 100);
        w.deliver_now[1] = false;
        let index = w.send(0, msg("genuine"));
        let genuine = w.delivery(index, 1, &[0, 1, 2]).unwrap();
        let mut forged = genuine.clone();
        forged.header = grompi_proto::EnvelopeHeader::new(forged.header.fields())
            .unwrap()
            .with_key(key)
            .unwrap();
        let conv = w.convs[1].as_mut().unwrap();
        let before = conv.next_expected();
        conv.receive(forged, &mut w.secrets[1]);
        assert_eq!(conv.next_expected(), before, "{case}");
        let raised = conv.drain_alerts();
        assert!(
            raised
                .iter()
                .any(|a| a.kind == Misbehaviour::UnattestedEnvelope { index }),
            "{case}: {raised:?}"
        );
        conv.receive(genuine, &mut w.secrets[1]);
        assert!(conv.drain_alerts().is_empty(), "{case}");
        assert!(
            read(conv)
                .iter()
                .any(|(i, t)| *i == index && t == b"genuine"),
            "{case}"
        );
    }
}

/// The router moves a genuine share to an index where no key period
/// starts: it is refused (`BadKeyShare` naming the server) and not kept.
#[test]
fn a_share_where_none_is_due_is_refused() {
    let mut w = group_world(13, 3, 100);
    w.deliver_now[1] = false;
    let a = w.send(0, msg("one"));
    let setup_share = w.delivery(Index(0), 1, &[2]).unwrap().attestations[0]
        .key_shares
        .clone();
    assert_eq!(setup_share.len(), 1, "the Setup carries period 0's share");
    let mut d = w.delivery(a, 1, &[0, 1, 2]).unwrap();
    d.attestations[2].key_shares = setup_share;
    w.receive(1, d);
    let raised = alerts(&mut w, 1);
    assert!(
        raised
            .iter()
            .any(|x| x.kind == Misbehaviour::BadKeyShare { server: 2 } && x.index == Some(a)),
        "{raised:?}"
    );
}

/// A compromised Member sends a Rekey (servers that check only submission
/// tags order it): every other member refuses to follow it
/// (`UnauthorizedUpdate`) and stays at generation 0.
#[test]
fn a_members_rekey_is_not_followed() {
    let mut w = World::new(14, 3, 3, 3);
    w.group_period = Some(100);
    w.lax_servers = true;
    w.setup(0);
    let index = w.send(1, Content::Rekey);
    for m in [0, 2] {
        let raised = alerts(&mut w, m);
        assert!(
            raised
                .iter()
                .any(|a| matches!(a.kind, Misbehaviour::UnauthorizedUpdate(_))
                    && a.index == Some(index)),
            "member {m}: {raised:?}"
        );
        let (_, generation, _, _) = w.convs[m].as_ref().unwrap().key_position().unwrap();
        assert_eq!(generation, Some(KeyGeneration(0)), "member {m}");
    }
}
