//! Tests of the group key schedule: both sides derive one key, used keys
//! are gone, periods and share sets change keys, the published vectors,
//! and a property test over random schedules.

use super::*;
use grompi_proto::keys::{MacKeys, OrderServerSecret, SlotSecret};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn conv() -> ConversationId {
    ConversationId::from_bytes([3; 32])
}

fn period_key(period: u64, servers: &[u32]) -> PeriodKey {
    let shares: Vec<(u32, KeyShare)> = servers
        .iter()
        .map(|s| {
            let secret = OrderServerSecret::from_bytes([*s as u8 + 1; 32]);
            (*s, secret.key_share(&conv(), Epoch(0), KeyPeriod(period)))
        })
        .collect();
    let refs: Vec<(u32, &KeyShare)> = shares.iter().map(|(s, k)| (*s, k)).collect();
    PeriodKey::mix(&conv(), Epoch(0), KeyPeriod(period), &refs).unwrap()
}

fn slots(n: u32) -> impl Iterator<Item = SlotIndex> {
    (0..n).map(SlotIndex)
}

#[test]
fn sender_and_receiver_derive_the_same_key_once() {
    let rn1 = Rn1::from_bytes([1; 32]);
    let mut alice = GroupKeys::start_epoch(conv(), Epoch(0), &rn1, slots(3));
    let mut bob = alice.clone();
    let pk = period_key(0, &[0, 1, 2]);
    let g = KeyGeneration(0);
    let sent = alice
        .message_key(g, KeyPeriod(0), &pk, SlotIndex(0), Sequence(1))
        .unwrap();
    let got = bob
        .message_key(g, KeyPeriod(0), &pk, SlotIndex(0), Sequence(1))
        .unwrap();
    assert_eq!(sent, got);
    // The key is gone at both once used.
    assert!(matches!(
        bob.message_key(g, KeyPeriod(0), &pk, SlotIndex(0), Sequence(1)),
        Err(GroupKeyError::KeyGone { .. })
    ));
    // Another slot's chain is independent.
    let other = bob
        .message_key(g, KeyPeriod(0), &pk, SlotIndex(1), Sequence(1))
        .unwrap();
    assert_ne!(other, got);
}

#[test]
fn a_later_snapshot_cannot_open_earlier_messages() {
    let rn1 = Rn1::from_bytes([1; 32]);
    let mut bob = GroupKeys::start_epoch(conv(), Epoch(0), &rn1, slots(2));
    let fresh = bob.clone();
    let g = KeyGeneration(0);
    let early = bob
        .message_key(
            g,
            KeyPeriod(0),
            &period_key(0, &[0]),
            SlotIndex(0),
            Sequence(1),
        )
        .unwrap();
    // A period boundary: the next message's key mixes other shares.
    let late = bob
        .message_key(
            g,
            KeyPeriod(1),
            &period_key(1, &[0]),
            SlotIndex(0),
            Sequence(2),
        )
        .unwrap();
    assert_ne!(early, late);
    let snapshot = bob.clone();
    for seq in [1, 2] {
        assert!(matches!(
            snapshot.clone().message_key(
                g,
                KeyPeriod(0),
                &period_key(0, &[0]),
                SlotIndex(0),
                Sequence(seq)
            ),
            Err(GroupKeyError::KeyGone { .. })
        ));
    }
    // Only a state from before the message (which a snapshot taken
    // later is not) had the key.
    assert_eq!(
        fresh
            .clone()
            .message_key(
                g,
                KeyPeriod(0),
                &period_key(0, &[0]),
                SlotIndex(0),
                Sequence(1)
            )
            .unwrap(),
        early
    );
}

#[test]
fn the_same_chain_position_in_another_period_is_another_key() {
    let rn1 = Rn1::from_bytes([1; 32]);
    let keys = GroupKeys::start_epoch(conv(), Epoch(0), &rn1, slots(1));
    let g = KeyGeneration(0);
    let a = keys
        .clone()
        .message_key(
            g,
            KeyPeriod(0),
            &period_key(0, &[0, 1]),
            SlotIndex(0),
            Sequence(1),
        )
        .unwrap();
    let b = keys
        .clone()
        .message_key(
            g,
            KeyPeriod(1),
            &period_key(1, &[0, 1]),
            SlotIndex(0),
            Sequence(1),
        )
        .unwrap();
    let c = keys
        .clone()
        .message_key(
            g,
            KeyPeriod(0),
            &period_key(0, &[0]),
            SlotIndex(0),
            Sequence(1),
        )
        .unwrap();
    assert_ne!(a, b);
    assert_ne!(a, c, "the share set is part of the key");
}

#[test]
fn knowing_every_share_without_rn1_gives_other_keys() {
    // The router learns every period key (padding slots); without RN1 it
    // derives keys that open nothing.
    let mut real = GroupKeys::start_epoch(conv(), Epoch(0), &Rn1::from_bytes([1; 32]), slots(2));
    let pk = period_key(0, &[0, 1, 2]);
    let g = KeyGeneration(0);
    let key = real
        .message_key(g, KeyPeriod(0), &pk, SlotIndex(0), Sequence(1))
        .unwrap();
    let context = crate::body::BodyContext {
        conversation: conv(),
        epoch: Epoch(0),
        kind: grompi_proto::EnvelopeKind::Message,
        sender: SlotIndex(0),
        sequence: Sequence(1),
    };
    let body = crate::body::seal(&key, &context, b"meet at noon");
    for guess in [[0u8; 32], [2; 32], [0xff; 32]] {
        let mut attacker =
            GroupKeys::start_epoch(conv(), Epoch(0), &Rn1::from_bytes(guess), slots(2));
        let wrong = attacker
            .message_key(g, KeyPeriod(0), &pk, SlotIndex(0), Sequence(1))
            .unwrap();
        assert!(crate::body::open(&wrong, &key.commitment(), &context, &body).is_err());
    }
    assert_eq!(
        crate::body::open(&key, &key.commitment(), &context, &body)
            .unwrap()
            .as_slice(),
        b"meet at noon"
    );
}

#[test]
fn a_rekey_needs_the_previous_generation() {
    let rn1 = Rn1::from_bytes([1; 32]);
    let mut member = GroupKeys::start_epoch(conv(), Epoch(0), &rn1, slots(2));
    let rn1b = Rn1::from_bytes([2; 32]);
    member
        .rekey(KeyGeneration(1), &rn1b, slots(2).map(|s| (s, Sequence(1))))
        .unwrap();
    // An outsider with the new RN1 but another history cannot follow.
    let mut outsider =
        GroupKeys::start_epoch(conv(), Epoch(0), &Rn1::from_bytes([9; 32]), slots(2));
    outsider
        .rekey(KeyGeneration(1), &rn1b, slots(2).map(|s| (s, Sequence(1))))
        .unwrap();
    let pk = period_key(0, &[0]);
    let g = KeyGeneration(1);
    assert_ne!(
        member
            .message_key(g, KeyPeriod(0), &pk, SlotIndex(0), Sequence(1))
            .unwrap(),
        outsider
            .message_key(g, KeyPeriod(0), &pk, SlotIndex(0), Sequence(1))
            .unwrap()
    );
    assert_ne!(*member.export("history"), *outsider.export("history"));
    assert_eq!(
        member.rekey(KeyGeneration(3), &rn1b, slots(2).map(|s| (s, Sequence(1)))),
        Err(GroupKeyError::GenerationOutOfOrder {
            current: KeyGeneration(1),
            got: KeyGeneration(3)
        })
    );
}

#[test]
fn refusals_name_what_is_wrong() {
    let rn1 = Rn1::from_bytes([1; 32]);
    let mut keys = GroupKeys::start_epoch(conv(), Epoch(4), &rn1, slots(2));
    let pk = period_key(0, &[0]);
    assert_eq!(
        keys.message_key(
            KeyGeneration(1),
            KeyPeriod(0),
            &pk,
            SlotIndex(0),
            Sequence(1)
        ),
        Err(GroupKeyError::UnknownGeneration {
            epoch: Epoch(4),
            generation: KeyGeneration(1),
            current: KeyGeneration(0)
        })
    );
    assert_eq!(
        keys.message_key(
            KeyGeneration(0),
            KeyPeriod(0),
            &pk,
            SlotIndex(2),
            Sequence(1)
        ),
        Err(GroupKeyError::UnknownSlot {
            epoch: Epoch(4),
            slot: SlotIndex(2)
        })
    );
    assert_eq!(
        keys.message_key(
            KeyGeneration(0),
            KeyPeriod(0),
            &pk,
            SlotIndex(0),
            Sequence(2 + MAX_CHAIN_SKIP)
        ),
        Err(GroupKeyError::SkipTooFar {
            slot: SlotIndex(0),
            sequence: Sequence(2 + MAX_CHAIN_SKIP),
            next: Sequence(1)
        })
    );
    assert!(
        keys.message_key(
            KeyGeneration(0),
            KeyPeriod(0),
            &pk,
            SlotIndex(0),
            Sequence(1 + MAX_CHAIN_SKIP)
        )
        .is_ok()
    );
    let share = KeyShare::from_bytes([5; 32]);
    assert_eq!(
        PeriodKey::mix(&conv(), Epoch(0), KeyPeriod(0), &[]),
        Err(GroupKeyError::NoShares)
    );
    assert_eq!(
        PeriodKey::mix(&conv(), Epoch(0), KeyPeriod(0), &[(1, &share), (1, &share)]),
        Err(GroupKeyError::SharesOutOfOrder)
    );
    assert_eq!(
        PeriodKey::mix(&conv(), Epoch(0), KeyPeriod(0), &[(2, &share), (1, &share)]),
        Err(GroupKeyError::SharesOutOfOrder)
    );
}

#[test]
fn the_schedule_matches_its_published_vectors() {
    let output = |name: &str| grompi_proto::vectors::find(name).unwrap().output;
    let conv = ConversationId::from_bytes([0x22; 32]);
    let (epoch, period) = (Epoch(1), KeyPeriod(4));
    let rn1 = Rn1::from_bytes([0x11; 32]);
    assert_eq!(
        hex::encode(rn1.commitment(&conv, epoch, KeyGeneration(0)).as_bytes()),
        output("group_rn1_commitment")
    );
    let mut keys = GroupKeys::start_epoch(conv, epoch, &rn1, [SlotIndex(2)]);
    assert_eq!(hex::encode(*keys.export("history")), output("group_export"));
    let share = OrderServerSecret::from_bytes([0x31; 32]).key_share(&conv, epoch, period);
    let share_b = KeyShare::from_bytes([0x52; 32]);
    let pk = PeriodKey::mix(&conv, epoch, period, &[(0, &share), (2, &share_b)]).unwrap();
    assert_eq!(hex::encode(pk.0.0), output("group_period_key"));
    // Sequence 2 is one chain step from the chain's start at 1.
    let key = keys
        .message_key(KeyGeneration(0), period, &pk, SlotIndex(2), Sequence(2))
        .unwrap();
    let v = grompi_proto::vectors::find("group_message_key").unwrap();
    assert_eq!(
        BodyKey::from_bytes(<[u8; 32]>::try_from(hex::decode(&v.output).unwrap()).unwrap()),
        key
    );
    keys.rekey(
        KeyGeneration(1),
        &Rn1::from_bytes([0x12; 32]),
        [(SlotIndex(2), Sequence(3))],
    )
    .unwrap();
    let generation1 = grompi_proto::vectors::find("group_generation_1").unwrap();
    let expected = derive(
        context::GROUP_EXPORTER,
        &[&<[u8; 32]>::try_from(hex::decode(&generation1.output).unwrap()).unwrap()],
    );
    let label = grompi_proto::encoding::Canonical::new().bytes(b"history");
    assert_eq!(
        *keys.export("history"),
        *blake3::keyed_hash(&expected.0, label.as_bytes()).as_bytes()
    );
}

#[test]
fn secrets_do_not_print() {
    let rn1 = Rn1::from_bytes([0xab; 32]);
    let keys = GroupKeys::start_epoch(conv(), Epoch(0), &rn1, slots(1));
    assert!(!format!("{rn1:?}{keys:?}").contains("abab"));
    assert!(!format!("{keys:?}").contains(&hex::encode(&keys.export("x")[..4])));
}

/// What happens to a conversation, as its members accept it.
#[derive(Debug, Clone)]
enum Step {
    /// A member sends; `skip` sequences were used for envelopes that
    /// never got an index; the header names the share set `servers`
    /// (a bit mask over three servers, never empty) and the period
    /// advances by `advance`.
    Message {
        sender: usize,
        skip: u64,
        servers: u8,
        advance: u64,
    },
    /// An Admin rekeys the epoch.
    Rekey { rn1: [u8; 32] },
    /// An Update adds or removes a member: a new epoch.
    Update { toggle: usize, rn1: [u8; 32] },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..5, 0u64..3, 1u8..8, 0u64..2).prop_map(|(sender, skip, servers, advance)| {
            Step::Message { sender, skip, servers, advance }
        }),
        1 => any::<[u8; 32]>().prop_map(|rn1| Step::Rekey { rn1 }),
        1 => (1usize..5, any::<[u8; 32]>()).prop_map(|(toggle, rn1)| Step::Update { toggle, rn1 }),
    ]
}

/// One member's view: its keys and each slot's last accepted sequence.
struct Member {
    keys: GroupKeys,
    slot_keys: Vec<MacKeys>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every honest member derives byte-identical keys for each message
    /// (epoch, generation, period, share set), the sender included,
    /// through rekeys, skipped sequences, changing share sets and
    /// membership changes; a member removed from an epoch derives
    /// nothing that opens it.
    #[test]
    fn honest_members_derive_identical_keys(steps in proptest::collection::vec(step(), 1..40)) {
        let servers: Vec<OrderServerSecret> =
            (0..3u8).map(|i| OrderServerSecret::from_bytes([i + 1; 32])).collect();
        let mut roster: BTreeSet<usize> = [0, 1, 2].into_iter().collect();
        let mut epoch = Epoch(0);
        let mut generation = KeyGeneration(0);
        let mut period = 0u64;
        let start = |epoch: Epoch, rn1: &Rn1, roster: &BTreeSet<usize>| -> BTreeMap<usize, Member> {
            roster
                .iter()
                .map(|m| {
                    let slot_secret = SlotSecret::from_bytes([0x40 + *m as u8 + (epoch.0 as u8).wrapping_mul(8); 32]);
                    let slot_keys = servers
                        .iter()
                        .map(|s| slot_secret.mac_keys(&s.public_key()).unwrap())
                        .collect();
                    (*m, Member {
                        keys: GroupKeys::start_epoch(conv(), epoch, rn1, (0..roster.len() as u32).map(SlotIndex)),
                        slot_keys,
                    })
                })
                .collect()
        };
        let mut members = start(epoch, &Rn1::from_bytes([0; 32]), &roster);
        let mut last_seq: BTreeMap<usize, u64> = BTreeMap::new();
        let mut removed: Vec<GroupKeys> = Vec::new();
        for step in steps {
            match step {
                Step::Message { sender, skip, servers: mask, advance } => {
                    let order: Vec<usize> = roster.iter().copied().collect();
                    let sender = order[sender % order.len()];
                    let slot = SlotIndex(order.iter().position(|m| *m == sender).unwrap() as u32);
                    period += advance;
                    let seq = last_seq.get(&sender).copied().unwrap_or(0) + 1 + skip;
                    last_seq.insert(sender, seq);
                    let chosen: Vec<u32> = (0..3u32).filter(|i| mask & (1 << i) != 0).collect();
                    let mut derived = Vec::new();
                    for (m, member) in members.iter_mut() {
                        // Each member unwraps the shares sealed for its own slot.
                        let shares: Vec<(u32, KeyShare)> = chosen
                            .iter()
                            .map(|i| {
                                let server = &servers[*i as usize];
                                let share = server.key_share(&conv(), epoch, KeyPeriod(period));
                                let wrapped = server
                                    .mac_keys(&SlotSecret::from_bytes([0x40 + *m as u8 + (epoch.0 as u8).wrapping_mul(8); 32]).public_key())
                                    .unwrap()
                                    .wrap_share(&conv(), epoch, KeyPeriod(period), &share)
                                    .unwrap();
                                let opened = member.slot_keys[*i as usize]
                                    .unwrap_share(&conv(), epoch, KeyPeriod(period), &wrapped)
                                    .unwrap();
                                (*i, opened)
                            })
                            .collect();
                        let refs: Vec<(u32, &KeyShare)> = shares.iter().map(|(s, k)| (*s, k)).collect();
                        let pk = PeriodKey::mix(&conv(), epoch, KeyPeriod(period), &refs).unwrap();
                        let key = member
                            .keys
                            .message_key(generation, KeyPeriod(period), &pk, slot, Sequence(seq))
                            .unwrap();
                        derived.push(key);
                    }
                    prop_assert!(derived.windows(2).all(|w| w[0] == w[1]), "members derived different keys");
                    // A removed member, with every server's share, derives
                    // nothing that equals the real key.
                    let refs_all: Vec<KeyShare> = (0..3u32)
                        .filter(|i| chosen.contains(i))
                        .map(|i| servers[i as usize].key_share(&conv(), epoch, KeyPeriod(period)))
                        .collect();
                    let refs: Vec<(u32, &KeyShare)> = chosen.iter().copied().zip(refs_all.iter()).collect();
                    let pk = PeriodKey::mix(&conv(), epoch, KeyPeriod(period), &refs).unwrap();
                    for old in removed.iter_mut() {
                        for g in 0..=generation.0 {
                            if let Ok(k) = old.message_key(KeyGeneration(g), KeyPeriod(period), &pk, slot, Sequence(seq)) {
                                prop_assert!(k != derived[0], "a removed member derived a current key");
                            }
                        }
                    }
                }
                Step::Rekey { rn1 } => {
                    generation = KeyGeneration(generation.0 + 1);
                    let order: Vec<usize> = roster.iter().copied().collect();
                    let starts: Vec<(SlotIndex, Sequence)> = order
                        .iter()
                        .enumerate()
                        .map(|(slot, m)| (SlotIndex(slot as u32), Sequence(last_seq.get(m).copied().unwrap_or(0) + 1)))
                        .collect();
                    for member in members.values_mut() {
                        member.keys.rekey(generation, &Rn1::from_bytes(rn1), starts.clone()).unwrap();
                    }
                }
                Step::Update { toggle, rn1 } => {
                    if roster.contains(&toggle) && roster.len() > 2 {
                        roster.remove(&toggle);
                        if let Some(gone) = members.remove(&toggle) {
                            removed.push(gone.keys);
                        }
                    } else {
                        roster.insert(toggle);
                    }
                    epoch = Epoch(epoch.0 + 1);
                    generation = KeyGeneration(0);
                    period = 0;
                    last_seq.clear();
                    members = start(epoch, &Rn1::from_bytes(rn1), &roster);
                }
            }
        }
    }
}
