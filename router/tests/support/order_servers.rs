//! The real order server's logic ([`OrderCore`] over its in-memory
//! [`MemStore`]) behind the calls the router's tests make: open, attest,
//! prove. Every answer is the core's own, so the router is tested against
//! the real attestation rules. Shared by the core's unit tests and the gRPC
//! tests.
//!
//! Around the core this adds only what a test needs: each Attest request
//! runs in one store transaction committed before its answer (as the
//! server's group commit does), the attested chain is read back from the
//! store ([`OrderServer::convs`]), and the router's ordering rule is
//! checked ([`OrderServer::violations`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use grompi_order_server::core::OrderCore;
use grompi_order_server::limits::Limits;
use grompi_order_server::mem_store::MemStore;
use grompi_order_server::refusal::Refusal;
use grompi_order_server::request::AttestRequest;
use grompi_order_server::service::status_of;
use grompi_order_server::state::IndexRecord;
use grompi_order_server::store::StoreRead;
use grompi_proto::pb;
use grompi_proto::{
    ConversationId, EnvelopeHash, Index, Misbehaviour, OrderServerSecret, ProofNonce, SlotIndex,
    SlotSet,
};
use std::collections::{BTreeSet, HashMap};
use tonic::Status;

/// What the tests read of one conversation: its attested chain, from the
/// store.
pub struct Conversation {
    /// The record of each attested index, by index.
    pub chain: Vec<(EnvelopeHash, IndexRecord)>,
}

/// The position a core echoes in its answers: never the one the router
/// gives it, so a router that forwarded the echoed position instead of
/// setting the server's descriptor position fails the tests.
const ECHOED_POSITION: u32 = 900;

/// One order server: the real core over an in-memory store.
pub struct OrderServer {
    /// Position in the network descriptor.
    pub position: u32,
    /// The long-term secret (the core holds its own copy).
    pub secret: OrderServerSecret,
    core: OrderCore,
    store: MemStore,
    /// The attested chains, read back from the store after every call.
    pub convs: HashMap<ConversationId, Conversation>,
    /// Violations of the router's ordering rule seen.
    pub violations: Vec<String>,
    /// Per conversation, the last index seen on the current ordered
    /// channel (a pipelined stream): a router may send i+1 right after i,
    /// before i is answered, but never skip an index it has not sent.
    pub seen: HashMap<Vec<u8>, u64>,
}

impl OrderServer {
    /// The server at `position` whose secret is 32 bytes of `seed`.
    pub fn new(position: u32, seed: u8) -> Self {
        Self {
            position,
            secret: OrderServerSecret::from_bytes([seed; 32]),
            core: OrderCore::new(
                OrderServerSecret::from_bytes([seed; 32]),
                ECHOED_POSITION + position,
                Limits::default(),
            ),
            store: MemStore::new(),
            convs: HashMap::new(),
            violations: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// What the real service answers ServerInfo with.
    pub fn info(&self) -> pb::ServerInfoResponse {
        let limits = self.core.limits();
        pb::ServerInfoResponse {
            public_key: self.core.public_key().to_vec(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            max_slots: u32::try_from(limits.max_slots).unwrap_or(u32::MAX),
            max_batch: u32::try_from(limits.max_batch_items).unwrap_or(u32::MAX),
        }
    }

    /// The ordered channel broke: jobs in flight on it were lost.
    pub fn reset_stream(&mut self) {
        self.seen.clear();
    }

    /// The committed next index of a conversation (0 when unknown).
    fn next_index(&self, conversation: &[u8]) -> u64 {
        ConversationId::parse("c", conversation)
            .ok()
            .and_then(|c| self.store.conversation(&c).unwrap())
            .map_or(0, |s| s.next_index.0)
    }

    /// Reads the chain of `id` back from the store.
    fn sync(&mut self, id: ConversationId) {
        let Some(state) = self.store.conversation(&id).unwrap() else {
            return;
        };
        let chain = (0..state.next_index.0)
            .map(|i| {
                let record = self
                    .store
                    .record(&id, Index(i))
                    .unwrap()
                    .expect("an attested index has its record");
                (record.envelope, record)
            })
            .collect();
        self.convs.insert(id, Conversation { chain });
    }

    /// Opens a conversation, with the status the real service answers a
    /// refusal with (`ALREADY_EXISTS` for an id already opened).
    pub fn open(
        &mut self,
        r: &pb::OpenConversationRequest,
    ) -> Result<pb::OpenConversationResponse, Status> {
        let id = ConversationId::parse("conversation_id", &r.conversation_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let slots = r
            .slots
            .clone()
            .ok_or_else(|| Status::invalid_argument("missing slots"))
            .and_then(|s| {
                SlotSet::try_from(s).map_err(|e| Status::invalid_argument(e.to_string()))
            })?;
        let mut txn = self.store.begin();
        let head = self
            .core
            .open(&mut txn, &id, &slots)
            .unwrap()
            .map_err(|m| status_of(&m))?;
        txn.commit();
        self.sync(id);
        Ok(pb::OpenConversationResponse {
            genesis_head: head.to_vec(),
        })
    }

    /// The server's head proof for a slot, or the status the real service
    /// refuses with.
    pub fn prove(&self, r: &pb::ProveHeadRequest) -> Result<pb::HeadProof, Status> {
        let id = ConversationId::parse("conversation_id", &r.conversation_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let nonce = ProofNonce::parse("nonce", &r.nonce)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.core
            .prove_head(&self.store, &id, SlotIndex(r.slot), nonce)
            .unwrap()
            .map(|p| pb::HeadProof::from(&p))
            .map_err(|m| status_of(&m))
    }

    /// Answers an Attest request: every item through the core in one
    /// transaction, committed before the answer. An item that does not
    /// parse is refused `MALFORMED`, as the service does.
    pub fn attest(&mut self, req: &pb::AttestRequest) -> Vec<pb::AttestResult> {
        self.check_ordering(req);
        let mut touched = BTreeSet::new();
        let mut txn = self.store.begin();
        let results = req
            .items
            .iter()
            .map(|item| {
                let answer = match AttestRequest::try_from(item.clone()) {
                    Ok(request) => {
                        touched.insert(request.envelope.header.conversation());
                        self.core.attest(&mut txn, &request).unwrap()
                    }
                    Err(e) => Err(Refusal {
                        reason: Misbehaviour::Malformed(e),
                        next_index: Index(0),
                    }),
                };
                pb::AttestResult {
                    outcome: Some(match answer {
                        Ok(a) => pb::attest_result::Outcome::Attested((&a).into()),
                        Err(r) => pb::attest_result::Outcome::Refused((&r).into()),
                    }),
                    log_index: None,
                }
            })
            .collect();
        txn.commit();
        for id in touched {
            self.sync(id);
        }
        results
    }

    /// The router's ordering rule: per conversation, a batch is a
    /// consecutive run that starts at or below the server's next index, or
    /// right after the last index sent on this channel.
    fn check_ordering(&mut self, req: &pb::AttestRequest) {
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
            let next = self.next_index(&conv);
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
    }
}
