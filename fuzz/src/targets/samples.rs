//! Real values the seed corpora are built from.

use grompi_proto::envelope::HeaderFields;
use grompi_proto::mac::{Attestation, HeadProof, HeadProofStatement};
use grompi_proto::{
    BodyHash, ConversationId, Envelope, EnvelopeHeader, EnvelopeKind, Epoch, Head, Index,
    KeyCommitment, MacKeys, OrderServerSecret, ProofNonce, RecipientBlock, Sequence, SlotEntry,
    SlotIndex, SlotRole, SlotSecret, SlotSet, Tag,
};

/// The conversation every sample belongs to.
pub fn conversation() -> ConversationId {
    ConversationId::from_bytes([0x11; 32])
}

/// The order server secrets of the sample network.
pub fn server_secrets() -> Vec<OrderServerSecret> {
    (1..=3u8)
        .map(|i| OrderServerSecret::from_bytes([i; 32]))
        .collect()
}

/// A slot set of `n` slots (the first an admin).
pub fn slot_set(n: u8) -> Option<SlotSet> {
    SlotSet::new(
        (0..n)
            .map(|i| SlotEntry {
                key: SlotSecret::from_bytes([0x40 + i; 32]).public_key(),
                role: if i == 0 {
                    SlotRole::Admin
                } else {
                    SlotRole::Member
                },
            })
            .collect(),
    )
    .ok()
}

/// A header of `kind` over `body`.
pub fn header(kind: EnvelopeKind, body: &[u8], last_seen: Option<u64>) -> Option<EnvelopeHeader> {
    EnvelopeHeader::new(HeaderFields {
        conversation: conversation(),
        epoch: Epoch(if kind == EnvelopeKind::Setup { 0 } else { 1 }),
        kind,
        sender: SlotIndex(1),
        sequence: Sequence(3),
        last_seen: last_seen.map(Index),
        body_hash: BodyHash::of(body),
        key_commitment: KeyCommitment::to_key(&[0x22; 32]),
        slot_set_hash: kind
            .installs_slot_set()
            .then(|| slot_set(3).map(|s| s.hash()))
            .flatten(),
    })
    .ok()
}

/// Recipient blocks for slots `0..n`.
pub fn blocks(n: u32) -> Vec<RecipientBlock> {
    (0..n)
        .map(|i| RecipientBlock {
            recipient: SlotIndex(i),
            ciphertext: format!("block for slot {i}").into_bytes(),
        })
        .collect()
}

/// One envelope of each kind, with 0 to 3 blocks.
pub fn envelopes() -> Vec<(String, Envelope)> {
    let kinds = [
        EnvelopeKind::Setup,
        EnvelopeKind::Message,
        EnvelopeKind::Update,
        EnvelopeKind::Receipt,
        EnvelopeKind::Noise,
    ];
    kinds
        .iter()
        .zip(0u32..)
        .filter_map(|(kind, i)| {
            let body = format!("{kind:?} body ciphertext").into_bytes();
            let h = header(*kind, &body, (i > 0).then_some(u64::from(i)))?;
            let e = Envelope::new(h, body, blocks(i % 4)).ok()?;
            Some((format!("{kind:?}").to_lowercase(), e))
        })
        .collect()
}

/// The MAC keys between sample server `s` and slot `slot`.
pub fn mac_keys(s: usize, slot: u8) -> Option<MacKeys> {
    let secrets = server_secrets();
    let set = slot_set(3)?;
    let key = set.entries().get(usize::from(slot))?.key;
    secrets.get(s)?.mac_keys(&key).ok()
}

/// An attestation of `index` by server 0 with real tags for every slot.
pub fn attestation(index: u64, next_tags: bool) -> Option<Attestation> {
    let head = Head::genesis(&conversation());
    let tags = (0..3u8)
        .map(|slot| {
            let keys = mac_keys(0, slot)?;
            Some(keys.attest(&grompi_proto::AttestationStatement {
                conversation: conversation(),
                epoch: Epoch(1),
                index: Index(index),
                head,
            }))
        })
        .collect::<Option<Vec<Tag>>>()?;
    Some(Attestation {
        server: 0,
        index: Index(index),
        head,
        next_tags: if next_tags { tags.clone() } else { Vec::new() },
        tags,
        key_shares: Vec::new(),
        log_index: None,
    })
}

/// A head proof by server 1 for slot 0.
pub fn head_proof() -> Option<HeadProof> {
    let statement = HeadProofStatement {
        conversation: conversation(),
        epoch: Epoch(2),
        count: 7,
        head: Head::from_bytes([0x33; 32]),
        nonce: ProofNonce::from_bytes([0x44; 32]),
    };
    Some(HeadProof {
        server: 1,
        tag: mac_keys(1, 0)?.prove_head(&statement),
        statement,
    })
}
