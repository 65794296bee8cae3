//! One order server in the simulated network: the real [`OrderCore`] over
//! an in-memory store, wrapped in the scenario's strategy.
//!
//! An honest server is one core and one store, so it attests at most one
//! envelope per index whatever the router asks. An equivocating server is
//! one core per history the router shows (the stores are copied when the
//! router forks), so it attests every branch. Crashes keep what was
//! committed: a restarted server is a new core over the same store.

use crate::scenario::OrderServerStrategy;
use grompi_order_server::core::OrderCore;
use grompi_order_server::limits::Limits;
use grompi_order_server::mem_store::MemStore;
use grompi_order_server::request::AttestRequest;
use grompi_proto::mac::HeadProof;
use grompi_proto::pb;
use grompi_proto::{ConversationId, OrderServerSecret, SlotIndex, SlotSet};
use grompi_router::fanout::{JobResult, OpenOutcome, ServerJob};
use std::collections::BTreeMap;

/// One instance: a core and its committed store.
struct Instance {
    core: OrderCore,
    store: MemStore,
}

/// An order server and its strategy.
pub struct OrderNode {
    /// The long-term secret's bytes (a restarted core loads it again).
    secret: [u8; 32],
    public: grompi_proto::OrderServerKey,
    position: u32,
    strategy: OrderServerStrategy,
    instances: Vec<Instance>,
    down: bool,
    /// Refusals this server gave, by kind (its own detections).
    pub refusals: BTreeMap<String, u64>,
}

impl OrderNode {
    /// A server with `secret` at `position`.
    pub fn new(secret: [u8; 32], position: u32, strategy: OrderServerStrategy) -> Self {
        let core = OrderCore::new(
            OrderServerSecret::from_bytes(secret),
            position,
            Limits::default(),
        );
        Self {
            public: OrderServerSecret::from_bytes(secret).public_key(),
            secret,
            position,
            strategy,
            instances: vec![Instance {
                core,
                store: MemStore::new(),
            }],
            down: false,
            refusals: BTreeMap::new(),
        }
    }

    /// The server's public key.
    pub fn public_key(&self) -> grompi_proto::OrderServerKey {
        self.public
    }

    /// Whether this server keeps one state per history.
    pub fn equivocates(&self) -> bool {
        self.strategy == OrderServerStrategy::Equivocate
    }

    /// The strategy.
    pub fn strategy(&self) -> &OrderServerStrategy {
        &self.strategy
    }

    /// The router forks into `branches` histories: an equivocating server
    /// copies its state for each.
    pub fn fork(&mut self, branches: usize) {
        if !self.equivocates() {
            return;
        }
        let Some(first) = self.instances.first() else {
            return;
        };
        let store = first.store.clone();
        while self.instances.len() < branches {
            self.instances.push(Instance {
                core: OrderCore::new(
                    OrderServerSecret::from_bytes(self.secret),
                    self.position,
                    Limits::default(),
                ),
                store: store.clone(),
            });
        }
    }

    /// Crashes: uncommitted work is lost (there is none between events) and
    /// the process is down until [`OrderNode::restart`].
    pub fn crash(&mut self) {
        self.down = true;
    }

    /// Restarts from the committed store with a fresh core.
    pub fn restart(&mut self) {
        for i in &mut self.instances {
            i.core = OrderCore::new(
                OrderServerSecret::from_bytes(self.secret),
                self.position,
                Limits::default(),
            );
        }
        self.down = false;
    }

    fn instance(&mut self, branch: usize) -> Option<&mut Instance> {
        let i = if self.instances.len() > 1 { branch } else { 0 };
        self.instances.get_mut(i)
    }

    fn unreachable(job: &ServerJob, why: &str) -> JobResult {
        JobResult {
            id: job.id,
            server: job.server,
            opens: job
                .opens
                .iter()
                .map(|_| OpenOutcome::Failed(why.to_owned()))
                .collect(),
            attest: Err(why.to_owned()),
        }
    }

    /// Runs one job from the router of history `branch`: opens, then the
    /// Attest batch, committed before the answer leaves.
    pub fn run_job(&mut self, branch: usize, job: &ServerJob) -> JobResult {
        if self.down {
            return Self::unreachable(job, "connection refused");
        }
        let strategy = self.strategy.clone();
        let mut refused: Vec<String> = Vec::new();
        let Some(inst) = self.instance(branch) else {
            return Self::unreachable(job, "no such instance");
        };
        let mut txn = inst.store.begin();
        let mut opens = Vec::with_capacity(job.opens.len());
        for o in &job.opens {
            let parsed = ConversationId::parse("conversation_id", &o.conversation_id)
                .ok()
                .zip(o.slots.clone().and_then(|s| SlotSet::try_from(s).ok()));
            let Some((id, slots)) = parsed else {
                opens.push(OpenOutcome::Failed("malformed open".into()));
                continue;
            };
            opens.push(match inst.core.open(&mut txn, &id, &slots) {
                Ok(Ok(head)) => OpenOutcome::Opened(head.to_vec()),
                Ok(Err(_)) => OpenOutcome::AlreadyOpen,
                Err(e) => OpenOutcome::Failed(e.to_string()),
            });
        }
        let mut results = Vec::with_capacity(job.request.items.len());
        let mut store_failed = None;
        for item in &job.request.items {
            let outcome = match AttestRequest::try_from(item.clone()) {
                Err(e) => {
                    refused.push("malformed".into());
                    pb::attest_result::Outcome::Refused(pb::Refusal {
                        reason: pb::RefusalReason::Malformed as i32,
                        message: e.to_string(),
                        next_index: 0,
                    })
                }
                Ok(req) => match inst.core.attest(&mut txn, &req) {
                    Ok(Ok(a)) => {
                        let mut wire = pb::Attestation::from(&a);
                        if strategy == OrderServerStrategy::ForgeTags {
                            for t in wire.tags.iter_mut().chain(wire.next_tags.iter_mut()) {
                                if let Some(b) = t.first_mut() {
                                    *b ^= 0x5a;
                                }
                            }
                        }
                        pb::attest_result::Outcome::Attested(wire)
                    }
                    Ok(Err(refusal)) => {
                        refused.push(refusal.reason.kind().name().to_owned());
                        pb::attest_result::Outcome::Refused(pb::Refusal::from(&refusal))
                    }
                    Err(e) => {
                        store_failed = Some(e.to_string());
                        break;
                    }
                },
            };
            results.push(pb::AttestResult {
                outcome: Some(outcome),
            });
        }
        if store_failed.is_none() {
            txn.commit();
        }
        for r in refused {
            *self.refusals.entry(r).or_default() += 1;
        }
        let attest = match store_failed {
            Some(e) => Err(e),
            // A server that withholds its tags attests (and keeps the
            // attestation) but its answer never arrives.
            None if strategy == OrderServerStrategy::WithholdTags && !results.is_empty() => {
                Err("timed out".into())
            }
            None => Ok(results),
        };
        JobResult {
            id: job.id,
            server: job.server,
            opens,
            attest,
        }
    }

    /// A head proof for `slot` over `nonce`, as history `branch` sees it.
    pub fn prove(
        &mut self,
        branch: usize,
        conversation: &ConversationId,
        slot: SlotIndex,
        nonce: grompi_proto::ProofNonce,
    ) -> Option<HeadProof> {
        if self.down {
            return None;
        }
        let inst = self.instance(branch)?;
        match inst.core.prove_head(&inst.store, conversation, slot, nonce) {
            Ok(Ok(p)) => Some(p),
            _ => None,
        }
    }

    /// Handles an attest item that did not come through the router's
    /// fan-out (an adversary's own submission); returns whether it was
    /// attested.
    pub fn rogue_item(&mut self, branch: usize, item: pb::AttestItem) -> bool {
        if self.down {
            return false;
        }
        let Ok(req) = AttestRequest::try_from(item) else {
            *self.refusals.entry("malformed".into()).or_default() += 1;
            return false;
        };
        let Some(inst) = self.instance(branch) else {
            return false;
        };
        let mut txn = inst.store.begin();
        let r = inst.core.attest(&mut txn, &req);
        match r {
            Ok(Ok(_)) => {
                txn.commit();
                true
            }
            Ok(Err(refusal)) => {
                let name = refusal.reason.kind().name().to_owned();
                *self.refusals.entry(name).or_default() += 1;
                false
            }
            Err(_) => false,
        }
    }
}
