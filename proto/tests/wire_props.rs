//! Property tests of the wire boundary: every domain type round-trips through
//! its protobuf form, and truncated, oversized, wrong-length, unknown-enum and
//! missing-field inputs are rejected with a typed error, never a panic.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use grompi_proto::envelope::HeaderFields;
use grompi_proto::limits::{MAX_BLOCK_BYTES, MAX_BLOCKS, MAX_SLOTS};
use grompi_proto::mac::{Attestation, HeadProof};
use grompi_proto::wire::{decode, encode};
use grompi_proto::*;
use proptest::prelude::*;

fn b32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn kind() -> impl Strategy<Value = EnvelopeKind> {
    prop_oneof![
        Just(EnvelopeKind::Setup),
        Just(EnvelopeKind::Message),
        Just(EnvelopeKind::Update),
        Just(EnvelopeKind::Receipt),
        Just(EnvelopeKind::Noise),
    ]
}

fn header() -> impl Strategy<Value = EnvelopeHeader> {
    (
        b32(),
        any::<u64>(),
        kind(),
        any::<u32>(),
        1..u64::MAX,
        proptest::option::of(any::<u64>()),
        b32(),
        b32(),
        b32(),
    )
        .prop_map(|(c, e, k, s, q, l, b, kc, ss)| {
            EnvelopeHeader::new(HeaderFields {
                conversation: ConversationId::from_bytes(c),
                epoch: Epoch(e),
                kind: k,
                sender: SlotIndex(s),
                sequence: Sequence(q),
                last_seen: l.map(Index),
                body_hash: BodyHash::from_bytes(b),
                key_commitment: KeyCommitment::from_bytes(kc),
                slot_set_hash: k.installs_slot_set().then(|| SlotSetHash::from_bytes(ss)),
            })
            .unwrap()
        })
}

fn block() -> impl Strategy<Value = RecipientBlock> {
    (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(r, c)| {
        RecipientBlock {
            recipient: SlotIndex(r),
            ciphertext: c,
        }
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        header(),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(block(), 0..8),
    )
        .prop_map(|(h, body, mut blocks)| {
            let mut f = h.fields();
            f.body_hash = BodyHash::of(&body);
            let mut seen = std::collections::HashSet::new();
            blocks.retain(|b| seen.insert(b.recipient));
            Envelope::new(EnvelopeHeader::new(f).unwrap(), body, blocks).unwrap()
        })
}

fn summary() -> impl Strategy<Value = EnvelopeSummary> {
    (header(), proptest::collection::vec(b32(), 0..10)).prop_map(|(header, d)| EnvelopeSummary {
        header,
        block_digests: d.into_iter().map(BlockDigest::from_bytes).collect(),
    })
}

fn slot_set() -> impl Strategy<Value = SlotSet> {
    proptest::collection::btree_map(b32(), any::<bool>(), 1..20).prop_map(|m| {
        SlotSet::new(
            m.into_iter()
                .map(|(k, admin)| SlotEntry {
                    key: SlotKey::from_bytes(k),
                    role: if admin {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    },
                })
                .collect(),
        )
        .unwrap()
    })
}

fn attestation() -> impl Strategy<Value = Attestation> {
    (
        any::<u32>(),
        any::<u64>(),
        b32(),
        proptest::collection::vec(b32(), 0..10),
        proptest::collection::vec(b32(), 0..10),
    )
        .prop_map(|(server, index, head, tags, next)| Attestation {
            server,
            index: Index(index),
            head: Head::from_bytes(head),
            tags: tags.into_iter().map(Tag::from_bytes).collect(),
            next_tags: next.into_iter().map(Tag::from_bytes).collect(),
            key_shares: Vec::new(),
            log_index: None,
        })
}

fn head_proof() -> impl Strategy<Value = HeadProof> {
    (
        any::<u32>(),
        b32(),
        any::<u64>(),
        any::<u64>(),
        b32(),
        b32(),
        b32(),
    )
        .prop_map(|(server, c, e, n, h, nonce, tag)| HeadProof {
            server,
            statement: HeadProofStatement {
                conversation: ConversationId::from_bytes(c),
                epoch: Epoch(e),
                count: n,
                head: Head::from_bytes(h),
                nonce: ProofNonce::from_bytes(nonce),
            },
            tag: Tag::from_bytes(tag),
        })
}

/// Round-trips `value` through protobuf bytes, and checks that every strict
/// prefix of those bytes either fails to parse or parses to something else.
fn round_trip<P, T>(value: &T)
where
    P: prost::Message + Default + for<'a> From<&'a T>,
    T: TryFrom<P, Error = WireError> + PartialEq + std::fmt::Debug,
{
    let bytes = encode::<P, T>(value);
    let back: T = decode::<P, T>(&bytes).unwrap();
    assert_eq!(&back, value);
    for cut in 0..bytes.len() {
        match decode::<P, T>(&bytes[..cut]) {
            Err(_) => {}
            Ok(other) => assert_ne!(&other, value, "a truncated encoding parsed to the original"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn headers_round_trip(h in header()) {
        round_trip::<pb::EnvelopeHeader, _>(&h);
    }

    #[test]
    fn blocks_round_trip(b in block()) {
        round_trip::<pb::RecipientBlock, _>(&b);
    }

    #[test]
    fn envelopes_round_trip(e in envelope()) {
        round_trip::<pb::Envelope, _>(&e);
        // The summary an order server sees hashes to the same envelope hash.
        let s = e.summary();
        prop_assert_eq!(s.hash(), e.hash());
    }

    #[test]
    fn summaries_round_trip(s in summary()) {
        round_trip::<pb::EnvelopeSummary, _>(&s);
    }

    #[test]
    fn slot_sets_round_trip(s in slot_set()) {
        round_trip::<pb::SlotSet, _>(&s);
        for e in s.entries() {
            round_trip::<pb::SlotEntry, _>(e);
        }
    }

    #[test]
    fn attestations_round_trip(a in attestation()) {
        round_trip::<pb::Attestation, _>(&a);
    }

    #[test]
    fn head_proofs_round_trip(p in head_proof()) {
        round_trip::<pb::HeadProof, _>(&p);
    }

    /// Any 32-byte field given any other length is refused, naming the field.
    #[test]
    fn wrong_length_fixed_fields_are_refused(h in header(), len in (0usize..100).prop_filter("not 32", |l| *l != 32), which in 0usize..4) {
        let mut p = pb::EnvelopeHeader::from(&h);
        let bad = vec![7u8; len];
        let field = match which {
            0 => { p.conversation_id = bad; "header.conversation_id" }
            1 => { p.body_hash = bad; "header.body_hash" }
            2 => { p.key_commitment = bad; "header.key_commitment" }
            _ => {
                // An empty slot set hash means "absent", which is its own error.
                if len == 0 { return Ok(()); }
                p.kind = i32::from(EnvelopeKind::Setup.code());
                p.slot_set_hash = bad;
                "header.slot_set_hash"
            }
        };
        let err = EnvelopeHeader::try_from(p).unwrap_err();
        prop_assert_eq!(err, WireError::WrongLength { field, expected: 32, got: len });
    }

    #[test]
    fn wrong_length_tags_and_heads_are_refused(a in attestation(), len in (0usize..100).prop_filter("not 32", |l| *l != 32)) {
        let mut p = pb::Attestation::from(&a);
        p.head = vec![1; len];
        prop_assert_eq!(Attestation::try_from(p.clone()).unwrap_err(), WireError::WrongLength { field: "attestation.head", expected: 32, got: len });
        p.head = a.head.to_vec();
        p.tags.push(vec![1; len]);
        prop_assert_eq!(Attestation::try_from(p).unwrap_err(), WireError::WrongLength { field: "attestation.tags", expected: 32, got: len });
    }

    /// Unknown and unspecified enum values are refused.
    #[test]
    fn unknown_enums_are_refused(h in header(), k in prop_oneof![Just(0i32), 6i32..i32::MAX, i32::MIN..0]) {
        let mut p = pb::EnvelopeHeader::from(&h);
        p.kind = k;
        prop_assert_eq!(EnvelopeHeader::try_from(p).unwrap_err(), WireError::UnknownEnum { field: "header.kind", value: k });
        let entry = pb::SlotEntry { key: vec![0; 32], role: k };
        let is_unknown_role = matches!(SlotEntry::try_from(entry), Err(WireError::UnknownEnum { field: "slot.role", .. }));
        prop_assert!(is_unknown_role);
    }

    /// Arbitrary bytes never panic any decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<pb::Envelope, Envelope>(&bytes);
        let _ = decode::<pb::EnvelopeSummary, EnvelopeSummary>(&bytes);
        let _ = decode::<pb::SlotSet, SlotSet>(&bytes);
        let _ = decode::<pb::Attestation, Attestation>(&bytes);
        let _ = decode::<pb::HeadProof, HeadProof>(&bytes);
        let _ = decode::<pb::EnvelopeHeader, EnvelopeHeader>(&bytes);
    }
}

#[test]
fn missing_required_fields_are_named() {
    let e = pb::Envelope::default();
    assert_eq!(
        Envelope::try_from(e).unwrap_err(),
        WireError::MissingField("envelope.header")
    );
    assert_eq!(
        EnvelopeSummary::try_from(pb::EnvelopeSummary::default()).unwrap_err(),
        WireError::MissingField("summary.header")
    );
}

fn sample_header() -> pb::EnvelopeHeader {
    pb::EnvelopeHeader {
        conversation_id: vec![1; 32],
        epoch: 0,
        kind: i32::from(EnvelopeKind::Message.code()),
        sender_slot: 0,
        sequence: 1,
        last_seen_index: None,
        body_hash: BodyHash::of(b"").to_vec(),
        key_commitment: vec![3; 32],
        slot_set_hash: vec![],
        key_start: None,
        key_id: None,
    }
}

#[test]
fn group_key_fields_round_trip_and_are_refused_where_they_do_not_belong() {
    let mut keyed = sample_header();
    keyed.key_id = Some(pb::KeyId {
        generation: 2,
        period: 7,
        servers: 0b101,
    });
    let h = grompi_proto::EnvelopeHeader::try_from(keyed.clone()).unwrap();
    assert_eq!(pb::EnvelopeHeader::from(&h), keyed);
    let plain = grompi_proto::EnvelopeHeader::try_from(sample_header()).unwrap();
    assert_ne!(h.core_hash(), plain.core_hash());

    let mut no_servers = keyed.clone();
    no_servers.key_id = Some(pb::KeyId {
        generation: 2,
        period: 7,
        servers: 0,
    });
    assert!(matches!(
        grompi_proto::EnvelopeHeader::try_from(no_servers).unwrap_err(),
        WireError::Invalid {
            field: "header.key_id.servers",
            ..
        }
    ));

    let start = pb::KeyStart {
        generation: 0,
        period_length: 100,
        rn1_commitment: vec![9; 32],
    };
    let mut both = keyed.clone();
    both.key_start = Some(start.clone());
    assert!(matches!(
        grompi_proto::EnvelopeHeader::try_from(both).unwrap_err(),
        WireError::Invalid {
            field: "header.key_id",
            ..
        }
    ));
    // A key start on a Message, a key id on a Setup.
    let mut start_on_message = sample_header();
    start_on_message.key_start = Some(start.clone());
    assert!(matches!(
        grompi_proto::EnvelopeHeader::try_from(start_on_message).unwrap_err(),
        WireError::Invalid {
            field: "header.key_start",
            ..
        }
    ));
    let mut setup = sample_header();
    setup.kind = i32::from(EnvelopeKind::Setup.code());
    setup.slot_set_hash = vec![4; 32];
    let mut id_on_setup = setup.clone();
    id_on_setup.key_id = keyed.key_id;
    assert!(matches!(
        grompi_proto::EnvelopeHeader::try_from(id_on_setup).unwrap_err(),
        WireError::Invalid {
            field: "header.key_id",
            ..
        }
    ));
    let mut zero_period = setup.clone();
    zero_period.key_start = Some(pb::KeyStart {
        period_length: 0,
        ..start.clone()
    });
    assert!(matches!(
        grompi_proto::EnvelopeHeader::try_from(zero_period).unwrap_err(),
        WireError::Invalid {
            field: "header.key_start.period_length",
            ..
        }
    ));
    let mut short = setup.clone();
    short.key_start = Some(pb::KeyStart {
        rn1_commitment: vec![9; 31],
        ..start.clone()
    });
    assert!(grompi_proto::EnvelopeHeader::try_from(short).is_err());
    let mut started = setup;
    started.key_start = Some(start);
    let h = grompi_proto::EnvelopeHeader::try_from(started.clone()).unwrap();
    assert_eq!(pb::EnvelopeHeader::from(&h), started);
    // A Rekey carries a key start too.
    let mut rekey = started.clone();
    rekey.kind = i32::from(EnvelopeKind::Rekey.code());
    rekey.slot_set_hash = vec![];
    assert!(grompi_proto::EnvelopeHeader::try_from(rekey).is_ok());
}

#[test]
fn oversized_fields_are_refused() {
    let big_block = pb::Envelope {
        header: Some(sample_header()),
        body: vec![],
        blocks: vec![pb::RecipientBlock {
            recipient_slot: 0,
            ciphertext: vec![0; MAX_BLOCK_BYTES + 1],
        }],
    };
    assert_eq!(
        Envelope::try_from(big_block).unwrap_err(),
        WireError::TooLarge {
            field: "block.ciphertext",
            max: MAX_BLOCK_BYTES,
            got: MAX_BLOCK_BYTES + 1
        }
    );
    let body = vec![0; grompi_proto::limits::MAX_BODY_BYTES + 1];
    let mut h = sample_header();
    h.body_hash = BodyHash::of(&body).to_vec();
    let big_body = pb::Envelope {
        header: Some(h),
        body,
        blocks: vec![],
    };
    assert!(matches!(
        Envelope::try_from(big_body).unwrap_err(),
        WireError::TooLarge {
            field: "envelope.body",
            ..
        }
    ));
    let many_blocks = pb::Envelope {
        header: Some(sample_header()),
        body: vec![],
        blocks: (0..=MAX_BLOCKS as u32)
            .map(|i| pb::RecipientBlock {
                recipient_slot: i,
                ciphertext: vec![],
            })
            .collect(),
    };
    assert_eq!(
        Envelope::try_from(many_blocks).unwrap_err(),
        WireError::TooMany {
            field: "envelope.blocks",
            max: MAX_BLOCKS,
            got: MAX_BLOCKS + 1
        }
    );
    let many_digests = pb::EnvelopeSummary {
        header: Some(sample_header()),
        block_digests: vec![vec![0; 32]; MAX_BLOCKS + 1],
    };
    assert!(matches!(
        EnvelopeSummary::try_from(many_digests).unwrap_err(),
        WireError::TooMany {
            field: "summary.block_digests",
            ..
        }
    ));
    let many_slots = pb::SlotSet {
        slots: (0..=MAX_SLOTS)
            .map(|i| pb::SlotEntry {
                key: {
                    let mut k = vec![0; 32];
                    k[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    k
                },
                role: 1,
            })
            .collect(),
    };
    assert!(matches!(
        SlotSet::try_from(many_slots).unwrap_err(),
        WireError::TooMany { field: "slots", .. }
    ));
}

#[test]
fn protocol_rules_are_checked_at_parse_time() {
    // A Message must not carry a slot set hash; a Setup must.
    let mut h = sample_header();
    h.slot_set_hash = vec![5; 32];
    assert!(matches!(
        EnvelopeHeader::try_from(h).unwrap_err(),
        WireError::Invalid {
            field: "header.slot_set_hash",
            ..
        }
    ));
    let mut h = sample_header();
    h.kind = i32::from(EnvelopeKind::Setup.code());
    assert!(matches!(
        EnvelopeHeader::try_from(h).unwrap_err(),
        WireError::Invalid {
            field: "header.slot_set_hash",
            ..
        }
    ));
    // Sequence numbers start at 1.
    let mut h = sample_header();
    h.sequence = 0;
    assert!(matches!(
        EnvelopeHeader::try_from(h).unwrap_err(),
        WireError::Invalid {
            field: "header.sequence",
            ..
        }
    ));
    // The body must match its hash.
    let e = pb::Envelope {
        header: Some(sample_header()),
        body: b"not empty".to_vec(),
        blocks: vec![],
    };
    assert!(matches!(
        Envelope::try_from(e).unwrap_err(),
        WireError::Invalid {
            field: "envelope.body",
            ..
        }
    ));
    // Two blocks for one recipient.
    let e = pb::Envelope {
        header: Some(sample_header()),
        body: vec![],
        blocks: vec![
            pb::RecipientBlock {
                recipient_slot: 1,
                ciphertext: vec![1],
            },
            pb::RecipientBlock {
                recipient_slot: 1,
                ciphertext: vec![2],
            },
        ],
    };
    assert!(matches!(
        Envelope::try_from(e).unwrap_err(),
        WireError::Invalid {
            field: "envelope.blocks",
            ..
        }
    ));
    // Duplicate keys and empty slot sets.
    let dup = pb::SlotSet {
        slots: vec![
            pb::SlotEntry {
                key: vec![9; 32],
                role: 1,
            },
            pb::SlotEntry {
                key: vec![9; 32],
                role: 2,
            },
        ],
    };
    assert!(matches!(
        SlotSet::try_from(dup).unwrap_err(),
        WireError::Invalid { field: "slots", .. }
    ));
    assert!(matches!(
        SlotSet::try_from(pb::SlotSet::default()).unwrap_err(),
        WireError::Invalid { field: "slots", .. }
    ));
    // Garbage bytes are a decode error.
    assert!(matches!(
        decode::<pb::Envelope, Envelope>(&[0xff, 0xff, 0xff]).unwrap_err(),
        WireError::Decode(_)
    ));
}
