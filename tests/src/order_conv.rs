//! A conversation as a test drives an order server directly over gRPC:
//! slot secrets, the chain so far, and valid attest items (a Setup, then
//! Messages), shared by the order server's end-to-end tests and its
//! power-loss test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a bad fixture fails the test

use grompi_proto::envelope::HeaderFields;
use grompi_proto::pb;
use grompi_proto::{
    BlockDigest, BodyHash, ConversationId, EnvelopeHeader, EnvelopeKind, EnvelopeSummary, Epoch,
    Head, Index, KeyCommitment, MacKeys, OrderServerKey, Sequence, SlotEntry, SlotIndex, SlotRole,
    SlotSecret, SlotSet,
};

/// A conversation as its members see it: slot secrets, the chain so far.
#[derive(Clone)]
pub struct Conv {
    /// The conversation id (`[tag; 32]`).
    pub id: ConversationId,
    /// Each slot's secret.
    pub secrets: Vec<[u8; 32]>,
    /// Each slot's role (slot 0 is the Admin).
    pub roles: Vec<SlotRole>,
    /// Each slot's MAC keys with the server.
    pub keys: Vec<MacKeys>,
    /// The next index to attest.
    pub next: u64,
    /// The head after the last attested index.
    pub head: Head,
    /// The last sequence number used.
    pub seq: u64,
}

impl Conv {
    /// Conversation `[tag; 32]` of `n` slots, known to `server`.
    pub fn new(server: &OrderServerKey, tag: u8, n: usize) -> Self {
        let secrets: Vec<[u8; 32]> = (0..n)
            .map(|i| [tag.wrapping_mul(17).wrapping_add(i as u8 + 1); 32])
            .collect();
        let keys = secrets
            .iter()
            .map(|s| SlotSecret::from_bytes(*s).mac_keys(server).unwrap())
            .collect();
        let id = ConversationId::from_bytes([tag; 32]);
        Self {
            id,
            secrets,
            roles: (0..n)
                .map(|i| {
                    if i == 0 {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    }
                })
                .collect(),
            keys,
            next: 0,
            head: Head::genesis(&id),
            seq: 0,
        }
    }

    /// The slot set (public keys and roles).
    pub fn slot_set(&self) -> SlotSet {
        SlotSet::new(
            self.secrets
                .iter()
                .zip(&self.roles)
                .map(|(s, r)| SlotEntry {
                    key: SlotSecret::from_bytes(*s).public_key(),
                    role: *r,
                })
                .collect(),
        )
        .unwrap()
    }

    /// The request that opens the conversation at the server.
    pub fn open_request(&self) -> pb::OpenConversationRequest {
        pb::OpenConversationRequest {
            conversation_id: self.id.to_vec(),
            slots: Some((&self.slot_set()).into()),
        }
    }

    /// The next valid item from `sender` (a Setup at index 0).
    pub fn item(&mut self, sender: u32, body: u64) -> (pb::AttestItem, EnvelopeSummary) {
        self.seq += 1;
        let (kind, set_hash) = if self.next == 0 {
            (EnvelopeKind::Setup, Some(self.slot_set().hash()))
        } else {
            (EnvelopeKind::Message, None)
        };
        let summary = summary(self.id, Epoch(0), kind, sender, self.seq, body, set_hash);
        let item = pb::AttestItem {
            envelope: Some((&summary).into()),
            submission_tag: self.keys[sender as usize]
                .submit(&summary.hash(), Sequence(self.seq))
                .to_vec(),
            index: self.next,
            previous_head: self.head.to_vec(),
            next_slots: None,
        };
        (item, summary)
    }

    /// Advances the chain after `summary` was attested.
    pub fn accept(&mut self, summary: &EnvelopeSummary) {
        self.head = self
            .head
            .next(&self.id, Epoch(0), Index(self.next), &summary.hash());
        self.next += 1;
    }
}

/// An envelope summary with a body hash made from `body`.
pub fn summary(
    id: ConversationId,
    epoch: Epoch,
    kind: EnvelopeKind,
    sender: u32,
    seq: u64,
    body: u64,
    set_hash: Option<grompi_proto::SlotSetHash>,
) -> EnvelopeSummary {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&body.to_be_bytes());
    EnvelopeSummary {
        header: EnvelopeHeader::new(HeaderFields {
            conversation: id,
            epoch,
            kind,
            sender: SlotIndex(sender),
            sequence: Sequence(seq),
            last_seen: None,
            body_hash: BodyHash::from_bytes(b),
            key_commitment: KeyCommitment::from_bytes([5; 32]),
            slot_set_hash: set_hash,
        })
        .unwrap(),
        block_digests: vec![
            BlockDigest::from_bytes([1; 32]),
            BlockDigest::from_bytes([2; 32]),
        ],
    }
}
