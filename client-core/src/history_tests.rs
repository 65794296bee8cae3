use super::*;
use crate::group_key::Rn1;
use grompi_proto::vectors::find;

fn vector_bytes(name: &str) -> Vec<u8> {
    find(name).unwrap().output_bytes().unwrap()
}

fn arr(b: &[u8]) -> [u8; 32] {
    b.try_into().unwrap()
}

#[test]
fn the_history_key_matches_the_published_vector() {
    // group_exporter_secret's generation: conversation 0x22.., epoch 1,
    // RN1 0x11...
    let keys = GroupKeys::start_epoch(
        ConversationId::from_bytes([0x22; 32]),
        Epoch(1),
        &Rn1::from_bytes([0x11; 32]),
        [],
    );
    let key = HistoryKey::of(&keys, KeyGeneration(0)).unwrap();
    assert_eq!(key.expose().to_vec(), vector_bytes("history_key"));
    assert!(HistoryKey::of(&keys, KeyGeneration(1)).is_none());
}

#[test]
fn capsules_match_the_published_vectors_and_seal_as_specified() {
    let key = HistoryKey::from_bytes(arr(&vector_bytes("history_key")));
    let plain = Capsule {
        body_key: BodyKey::from_bytes([0x67; 32]),
        link: None,
    };
    assert_eq!(
        plain.encode().to_vec(),
        find("history_capsule").unwrap().input_bytes().unwrap()
    );
    let linked = Capsule {
        body_key: BodyKey::from_bytes([0x66; 32]),
        link: Some((KeyGeneration(0), key.clone())),
    };
    assert_eq!(
        linked.encode().to_vec(),
        find("history_capsule_link").unwrap().input_bytes().unwrap()
    );
    // Sealed with the raw AEAD from the published capsule key and AAD.
    let core = CoreHash::from_bytes(arr(&find("history_capsule_key")
        .unwrap()
        .field_bytes("core_hash")
        .unwrap()));
    let block = plain.seal(&key, &core);
    assert_eq!(block.recipient, HISTORY_RECIPIENT);
    assert_eq!(block.ciphertext.len(), HISTORY_BLOCK_LEN);
    let raw = ChaCha20Poly1305::new(&Key::from(arr(&vector_bytes("history_capsule_key"))));
    let opened = raw
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: &block.ciphertext,
                aad: &find("history_capsule_aad").unwrap().input_bytes().unwrap(),
            },
        )
        .unwrap();
    assert_eq!(opened, plain.encode().to_vec());
    let back = Capsule::open(&key, &core, &block.ciphertext).unwrap();
    assert!(back.body_key == plain.body_key && back.link.is_none());
    // Bound to its key and its envelope; tampering and wrong lengths fail.
    let other = HistoryKey::from_bytes([9; 32]);
    assert!(Capsule::open(&other, &core, &block.ciphertext).is_err());
    assert!(Capsule::open(&key, &CoreHash::from_bytes([1; 32]), &block.ciphertext).is_err());
    let mut bad = block.ciphertext.clone();
    bad[3] ^= 1;
    assert!(Capsule::open(&key, &core, &bad).is_err());
    assert!(Capsule::open(&key, &core, &block.ciphertext[1..]).is_err());
    let sealed = linked.seal(&key, &core);
    assert_eq!(sealed.ciphertext.len(), HISTORY_BLOCK_LINK_LEN);
    let back = Capsule::open(&key, &core, &sealed.ciphertext).unwrap();
    let (g, k) = back.link.unwrap();
    assert!(g == KeyGeneration(0) && k.matches(&key));
    assert_eq!(format!("{key:?}"), "HistoryKey(..)");
}

#[test]
fn the_sealing_key_follows_from_the_header() {
    let rekey = grompi_proto::wire::decode::<pb::EnvelopeHeader, EnvelopeHeader>(
        &grompi_proto::wire::encode::<pb::EnvelopeHeader, _>(&rekey_header()),
    )
    .unwrap();
    assert_eq!(
        HistoryKeyId::sealing(&rekey),
        Some(HistoryKeyId {
            epoch: Epoch(1),
            generation: KeyGeneration(1)
        })
    );
    // A Rekey links only the generation before it.
    assert!(HistoryKeyId::link_of(&rekey, KeyGeneration(0)).is_some());
    assert!(HistoryKeyId::link_of(&rekey, KeyGeneration(1)).is_none());
}

fn rekey_header() -> EnvelopeHeader {
    use grompi_proto::envelope::HeaderFields;
    use grompi_proto::{BodyHash, KeyCommitment, KeyStart, Rn1Commitment, Sequence};
    EnvelopeHeader::new(HeaderFields {
        conversation: ConversationId::from_bytes([0x22; 32]),
        epoch: Epoch(1),
        kind: EnvelopeKind::Rekey,
        sender: SlotIndex(0),
        sequence: Sequence(3),
        last_seen: Some(Index(41)),
        body_hash: BodyHash::from_bytes([0x63; 32]),
        key_commitment: KeyCommitment::from_bytes([0x64; 32]),
        slot_set_hash: None,
    })
    .unwrap()
    .with_key(HeaderKey::Start(
        KeyStart::new(1, 100, Rn1Commitment::from_bytes([0x65; 32])).unwrap(),
    ))
    .unwrap()
}
