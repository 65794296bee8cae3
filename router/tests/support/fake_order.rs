//! A fake order server with the real one's semantics, in memory, built on
//! proto's MACs. Shared by the core's unit tests and the gRPC tests.
#![allow(dead_code, clippy::unwrap_used)]

use grompi_proto::mac::{AttestationStatement, HeadProof, HeadProofStatement};
use grompi_proto::pb::{self, RefusalReason};
use grompi_proto::{
    ConversationId, EnvelopeHash, EnvelopeKind, Epoch, Head, Index, OrderServerSecret, ProofNonce,
    SlotIndex, SlotRole, SlotSet, Tag,
};
use std::collections::HashMap;

pub struct FakeConv {
    /// Slot sets by epoch.
    pub epochs: Vec<SlotSet>,
    /// Attested envelopes.
    pub chain: Vec<(EnvelopeHash, pb::Attestation)>,
    head: Head,
    last_seq: HashMap<(u64, u32), u64>,
}

/// An order server with the real server's semantics, in memory.
pub struct FakeServer {
    pub position: u32,
    pub secret: OrderServerSecret,
    pub convs: HashMap<ConversationId, FakeConv>,
    /// Violations of the ordering rule seen.
    pub violations: Vec<String>,
    /// Per conversation, the last index seen on the current ordered
    /// channel (a pipelined stream): a router may send i+1 right after i,
    /// before i is answered, but never skip an index it has not sent.
    pub seen: HashMap<Vec<u8>, u64>,
}

fn refuse(reason: RefusalReason, next: usize) -> pb::AttestResult {
    pb::AttestResult {
        outcome: Some(pb::attest_result::Outcome::Refused(pb::Refusal {
            reason: reason as i32,
            message: reason.as_str_name().into(),
            next_index: next as u64,
        })),
    }
}

impl FakeServer {
    pub fn new(position: u32, seed: u8) -> Self {
        Self {
            position,
            secret: OrderServerSecret::from_bytes([seed; 32]),
            convs: HashMap::new(),
            violations: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// The ordered channel broke: jobs in flight on it were lost.
    pub fn reset_stream(&mut self) {
        self.seen.clear();
    }

    /// Opens a conversation; `Err` for an id already seen.
    pub fn open(
        &mut self,
        r: &pb::OpenConversationRequest,
    ) -> Result<pb::OpenConversationResponse, String> {
        let id = ConversationId::parse("c", &r.conversation_id).unwrap();
        if self.convs.contains_key(&id) {
            return Err("conversation already exists".into());
        }
        let set = SlotSet::try_from(r.slots.clone().unwrap()).unwrap();
        self.convs.insert(
            id,
            FakeConv {
                epochs: vec![set],
                chain: Vec::new(),
                head: Head::genesis(&id),
                last_seq: HashMap::new(),
            },
        );
        Ok(pb::OpenConversationResponse {
            genesis_head: Head::genesis(&id).to_vec(),
        })
    }

    /// The server's head proof for a slot.
    pub fn prove(&self, r: &pb::ProveHeadRequest) -> Option<pb::HeadProof> {
        let id = ConversationId::parse("c", &r.conversation_id).ok()?;
        let c = self.convs.get(&id)?;
        let entry = c.epochs.last()?.get(SlotIndex(r.slot))?;
        let st = HeadProofStatement {
            conversation: id,
            epoch: Epoch(c.epochs.len() as u64 - 1),
            count: c.chain.len() as u64,
            head: c.head,
            nonce: ProofNonce::parse("n", &r.nonce).ok()?,
        };
        let tag = self.secret.mac_keys(&entry.key).ok()?.prove_head(&st);
        Some(pb::HeadProof::from(&HeadProof {
            server: 77,
            statement: st,
            tag,
        }))
    }

    pub fn attest(&mut self, req: &pb::AttestRequest) -> Vec<pb::AttestResult> {
        // The ordering rule: per conversation, a batch is a consecutive run
        // that starts at or below the server's next index, or right after
        // the last index sent on this channel.
        let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
        for item in &req.items {
            let conv = item
                .envelope
                .as_ref()
                .unwrap()
                .header
                .as_ref()
                .unwrap()
                .conversation_id
                .clone();
            let next = ConversationId::parse("c", &conv)
                .ok()
                .and_then(|c| self.convs.get(&c))
                .map_or(0, |c| c.chain.len() as u64);
            let after_sent = self.seen.get(&conv).map_or(0, |s| s + 1);
            match last.get(&conv) {
                None if item.index > next.max(after_sent) => self.violations.push(format!(
                    "server {} sent index {} while its next index is {next} and {after_sent} was the next to send",
                    self.position, item.index
                )),
                Some(prev) if item.index != prev + 1 => self.violations.push(format!(
                    "server {} sent index {} after {prev} in one batch",
                    self.position, item.index
                )),
                _ => {}
            }
            last.insert(conv.clone(), item.index);
            self.seen.insert(conv, item.index);
        }
        req.items.iter().map(|i| self.attest_one(i)).collect()
    }

    fn attest_one(&mut self, item: &pb::AttestItem) -> pb::AttestResult {
        use RefusalReason as R;
        let summary =
            grompi_proto::EnvelopeSummary::try_from(item.envelope.clone().unwrap()).unwrap();
        let h = &summary.header;
        let hash = summary.hash();
        let Some(c) = self.convs.get_mut(&h.conversation()) else {
            return refuse(R::UnknownConversation, 0);
        };
        let next = c.chain.len();
        if (item.index as usize) < next {
            let (hh, att) = &c.chain[item.index as usize];
            return if *hh == hash {
                pb::AttestResult {
                    outcome: Some(pb::attest_result::Outcome::Attested(att.clone())),
                }
            } else {
                refuse(R::Equivocation, next)
            };
        }
        if item.index as usize > next {
            return refuse(R::IndexMismatch, next);
        }
        if item.previous_head != c.head.to_vec() {
            return refuse(R::HeadMismatch, next);
        }
        let epoch = c.epochs.len() as u64 - 1;
        if h.epoch().0 != epoch {
            return refuse(R::WrongEpoch, next);
        }
        let set = c.epochs.last().unwrap().clone();
        let Some(entry) = set.get(h.sender()) else {
            return refuse(R::UnknownSlot, next);
        };
        let keys = self.secret.mac_keys(&entry.key).unwrap();
        let tag = Tag::parse("t", &item.submission_tag).unwrap();
        if !keys.verify_submission(&hash, h.sequence(), &tag) {
            return refuse(R::BadSubmissionTag, next);
        }
        if c.last_seq
            .get(&(epoch, h.sender().0))
            .is_some_and(|l| *l >= h.sequence().0)
        {
            return refuse(R::SequenceNotIncreasing, next);
        }
        if (next == 0) != (h.kind() == EnvelopeKind::Setup) {
            return refuse(R::UnexpectedKind, next);
        }
        if h.kind() == EnvelopeKind::Setup && h.slot_set_hash() != Some(set.hash()) {
            return refuse(R::SlotSetMismatch, next);
        }
        let mut next_set = None;
        if h.kind() == EnvelopeKind::Update {
            if entry.role != SlotRole::Admin {
                return refuse(R::NotAuthorized, next);
            }
            let ns = SlotSet::try_from(item.next_slots.clone().unwrap_or_default());
            match ns {
                Ok(ns) if Some(ns.hash()) == h.slot_set_hash() => next_set = Some(ns),
                _ => return refuse(R::SlotSetMismatch, next),
            }
        }
        let head = c
            .head
            .next(&h.conversation(), h.epoch(), Index(item.index), &hash);
        let st = AttestationStatement {
            conversation: h.conversation(),
            epoch: h.epoch(),
            index: Index(item.index),
            head,
        };
        let tags_for = |set: &SlotSet, st: &AttestationStatement| -> Vec<Vec<u8>> {
            set.entries()
                .iter()
                .map(|e| self.secret.mac_keys(&e.key).unwrap().attest(st).to_vec())
                .collect()
        };
        let tags = tags_for(&set, &st);
        let next_tags = next_set
            .as_ref()
            .map(|s| tags_for(s, &st))
            .unwrap_or_default();
        let att = pb::Attestation {
            server: 99, // the router must overwrite this with the position
            index: item.index,
            head: head.to_vec(),
            tags,
            next_tags,
        };
        c.last_seq.insert((epoch, h.sender().0), h.sequence().0);
        c.chain.push((hash, att.clone()));
        c.head = head;
        if let Some(ns) = next_set {
            c.epochs.push(ns);
        }
        pb::AttestResult {
            outcome: Some(pb::attest_result::Outcome::Attested(att)),
        }
    }
}
