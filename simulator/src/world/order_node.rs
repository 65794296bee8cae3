//! One order server in the simulated network: the real [`OrderCore`] over
//! an in-memory store, wrapped in the scenario's strategy.
//!
//! An honest server is one core and one store, so it attests at most one
//! envelope per index whatever the router asks. An equivocating server is
//! one core per history the router shows (the stores are copied when the
//! router forks), so it attests every branch. Crashes keep what was
//! committed: a restarted server is a new core over the same store.
//!
//! A server that skips the sender check is the real core fed, in place of
//! the sender's submission tag, the tag the server computes itself with the
//! key it shares with the sender slot (the MAC is symmetric, so that is
//! exactly what skipping the check amounts to); every other check is the
//! core's own.

use crate::scenario::{JobTamper, OrderServerStrategy};
use grompi_order_server::core::OrderCore;
use grompi_order_server::limits::Limits;
use grompi_order_server::mem_store::MemStore;
use grompi_order_server::request::AttestRequest;
use grompi_order_server::store::{StoreRead, StoreWrite};
use grompi_proto::mac::{Attestation, HeadProof};
use grompi_proto::pb;
use grompi_proto::{
    ConversationId, Head, Index, Misbehaviour, OrderServerSecret, SlotIndex, SlotSet,
};
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
    limits: Limits,
    instances: Vec<Instance>,
    down: bool,
    /// With [`OrderServerStrategy::BadKeyShares`]: the registered order
    /// keys of the members whose shares it corrupts (empty: every slot's).
    victim_keys: Vec<grompi_proto::SlotKey>,
    /// Refusals this server gave, by kind (its own detections).
    pub refusals: BTreeMap<String, u64>,
}

impl OrderNode {
    /// A server with `secret` at `position`, enforcing `limits`.
    pub fn new(
        secret: [u8; 32],
        position: u32,
        strategy: OrderServerStrategy,
        limits: Limits,
    ) -> Self {
        let core = OrderCore::new(
            OrderServerSecret::from_bytes(secret),
            position,
            limits.clone(),
        );
        Self {
            public: OrderServerSecret::from_bytes(secret).public_key(),
            secret,
            position,
            strategy,
            limits,
            instances: vec![Instance {
                core,
                store: MemStore::new(),
            }],
            down: false,
            victim_keys: Vec::new(),
            refusals: BTreeMap::new(),
        }
    }

    /// Names the slot keys whose key shares a server with
    /// [`OrderServerStrategy::BadKeyShares`] corrupts: every order key the
    /// victims registered (a slot holding one is a victim's).
    pub fn set_victim_keys(&mut self, keys: Vec<grompi_proto::SlotKey>) {
        self.victim_keys = keys;
    }

    /// The server's public key.
    pub fn public_key(&self) -> grompi_proto::OrderServerKey {
        self.public
    }

    /// Whether this server keeps one state per history.
    pub fn equivocates(&self) -> bool {
        self.strategy == OrderServerStrategy::Equivocate
    }

    /// What the scenario makes this server do; the adversary reads it for crashes and outages.
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
                    self.limits.clone(),
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
                self.limits.clone(),
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
    /// Attest batch, committed before the answer leaves. A router that
    /// tampers (`tamper`) sends its own malformed requests next to each
    /// real one; the server answers them like any request (they are
    /// refused and leave no trace but the refusal), and the router drops
    /// their answers.
    pub fn run_job(
        &mut self,
        branch: usize,
        job: &ServerJob,
        tamper: Option<JobTamper>,
    ) -> JobResult {
        if self.down {
            return Self::unreachable(job, "connection refused");
        }
        let strategy = self.strategy.clone();
        let forge_with = (strategy == OrderServerStrategy::SkipSenderCheck).then_some(self.secret);
        let bad_shares = match &strategy {
            OrderServerStrategy::BadKeyShares { victims } => {
                Some((victims.is_empty(), self.victim_keys.clone()))
            }
            _ => None,
        };
        let mut refused: Vec<String> = Vec::new();
        let Some(inst) = self.instance(branch) else {
            return Self::unreachable(job, "no such instance");
        };
        let mut txn = inst.store.begin();
        let mut opens = Vec::with_capacity(job.opens.len());
        for o in &job.opens {
            if let Some(bad) = tamper.and_then(|t| super::adversary::tampered_open(t, o, true)) {
                open_one(&inst.core, &mut txn, &bad, &mut refused);
            }
            opens.push(open_one(&inst.core, &mut txn, o, &mut refused));
            if let Some(bad) = tamper.and_then(|t| super::adversary::tampered_open(t, o, false)) {
                open_one(&inst.core, &mut txn, &bad, &mut refused);
            }
        }
        let mut results = Vec::with_capacity(job.request.items.len());
        let mut store_failed = None;
        'items: for item in &job.request.items {
            let extra = tamper.map_or_else(Vec::new, |t| super::adversary::tampered_items(t, item));
            for bad in extra {
                if let Err(e) =
                    attest_one(&inst.core, &mut txn, bad, forge_with.as_ref(), &mut refused)
                {
                    store_failed = Some(e);
                    break 'items;
                }
            }
            let outcome = match attest_one(
                &inst.core,
                &mut txn,
                item.clone(),
                forge_with.as_ref(),
                &mut refused,
            ) {
                Err(e) => {
                    store_failed = Some(e);
                    break;
                }
                Ok(Answer::Refused(r)) => pb::attest_result::Outcome::Refused(r),
                Ok(Answer::Attested(a)) => {
                    let mut wire = pb::Attestation::from(&a);
                    if let Some((every, victims)) = &bad_shares {
                        corrupt_shares(&txn, item, *every, victims, &mut wire.key_shares);
                    }
                    if strategy == OrderServerStrategy::ForgeTags {
                        for t in wire.tags.iter_mut().chain(wire.next_tags.iter_mut()) {
                            if let Some(b) = t.first_mut() {
                                *b ^= 0x5a;
                            }
                        }
                    }
                    pb::attest_result::Outcome::Attested(wire)
                }
            };
            results.push(pb::AttestResult {
                outcome: Some(outcome),
                log_index: None,
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

    /// The next index and the head of `conversation` as history `branch`
    /// of this server has it (what a router learns from its answers).
    pub fn tip(&mut self, branch: usize, conversation: &ConversationId) -> Option<(Index, Head)> {
        if self.down {
            return None;
        }
        let inst = self.instance(branch)?;
        let state = inst.store.conversation(conversation).ok()??;
        Some((state.next_index, state.head))
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
    /// fan-out (an adversary's own submission); returns the attestation if
    /// it was attested.
    pub fn rogue_item(&mut self, branch: usize, item: pb::AttestItem) -> Option<Attestation> {
        if self.down {
            return None;
        }
        let forge_with =
            (self.strategy == OrderServerStrategy::SkipSenderCheck).then_some(self.secret);
        let mut refused = Vec::new();
        let inst = self.instance(branch)?;
        let mut txn = inst.store.begin();
        let answer = attest_one(
            &inst.core,
            &mut txn,
            item,
            forge_with.as_ref(),
            &mut refused,
        );
        let attested = match answer {
            Ok(Answer::Attested(a)) => {
                txn.commit();
                Some(a)
            }
            Ok(Answer::Refused(_)) | Err(_) => None,
        };
        for r in refused {
            *self.refusals.entry(r).or_default() += 1;
        }
        attested
    }
}

/// What the core answered one attest item.
enum Answer {
    Attested(Attestation),
    Refused(pb::Refusal),
}

/// Opens one conversation as the service does: an id already seen is
/// "already open", any other refusal a failure; every refusal is recorded.
fn open_one(
    core: &OrderCore,
    txn: &mut impl StoreWrite,
    o: &pb::OpenConversationRequest,
    refused: &mut Vec<String>,
) -> OpenOutcome {
    let parsed = ConversationId::parse("conversation_id", &o.conversation_id)
        .ok()
        .zip(o.slots.clone().and_then(|s| SlotSet::try_from(s).ok()));
    let Some((id, slots)) = parsed else {
        refused.push("malformed".into());
        return OpenOutcome::Failed("malformed open".into());
    };
    match core.open(txn, &id, &slots) {
        Ok(Ok(head)) => OpenOutcome::Opened(head.to_vec()),
        Ok(Err(m)) => {
            refused.push(m.kind().name().to_owned());
            if m == Misbehaviour::ConversationExists {
                OpenOutcome::AlreadyOpen
            } else {
                OpenOutcome::Failed(m.to_string())
            }
        }
        Err(e) => OpenOutcome::Failed(e.to_string()),
    }
}

/// Runs one attest item through the core; a refusal is recorded, a store
/// failure returned as the error. With `forge_with` (a server that skips
/// the sender check) the submission tag is replaced by the one the server
/// computes itself for the sender slot the header names.
fn attest_one(
    core: &OrderCore,
    txn: &mut impl StoreWrite,
    item: pb::AttestItem,
    forge_with: Option<&[u8; 32]>,
    refused: &mut Vec<String>,
) -> Result<Answer, String> {
    let mut req = match AttestRequest::try_from(item) {
        Ok(r) => r,
        Err(e) => {
            refused.push("malformed".into());
            return Ok(Answer::Refused(pb::Refusal {
                reason: pb::RefusalReason::Malformed as i32,
                message: e.to_string(),
                next_index: 0,
            }));
        }
    };
    if let Some(secret) = forge_with {
        forge_submission_tag(secret, txn, &mut req);
    }
    match core.attest(txn, &req) {
        Ok(Ok(a)) => Ok(Answer::Attested(a)),
        Ok(Err(refusal)) => {
            refused.push(refusal.reason.kind().name().to_owned());
            Ok(Answer::Refused(pb::Refusal::from(&refusal)))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Flips a bit in the key shares of `wire` (one per slot, in slot order)
/// sealed for a slot whose key is one of `victims`, or in every share when
/// `every`. The slots are the next epoch's for an Update (whose shares are
/// sealed for them), the header epoch's otherwise.
fn corrupt_shares(
    store: &impl StoreRead,
    item: &pb::AttestItem,
    every: bool,
    victims: &[grompi_proto::SlotKey],
    wire: &mut [Vec<u8>],
) {
    let slots = if every {
        None
    } else {
        let Ok(req) = AttestRequest::try_from(item.clone()) else {
            return;
        };
        let h = &req.envelope.header;
        match req.next_slots {
            Some(next) => Some(next),
            None => match store.slot_set(&h.conversation(), h.epoch()) {
                Ok(Some(set)) => Some(set),
                _ => return,
            },
        }
    };
    for (i, share) in wire.iter_mut().enumerate() {
        let victim = slots.as_ref().is_none_or(|set| {
            u32::try_from(i)
                .ok()
                .and_then(|i| set.get(SlotIndex(i)))
                .is_some_and(|e| victims.contains(&e.key))
        });
        if victim && let Some(b) = share.first_mut() {
            *b ^= 0x01;
        }
    }
}

/// The submission tag the sender slot named in `req`'s header would have
/// made, computed by the server from the key it shares with that slot.
/// Leaves the tag alone when the slot or its set is unknown (the core then
/// refuses for that reason).
fn forge_submission_tag(secret: &[u8; 32], store: &impl StoreRead, req: &mut AttestRequest) {
    let h = &req.envelope.header;
    let Ok(Some(slots)) = store.slot_set(&h.conversation(), h.epoch()) else {
        return;
    };
    let Some(entry) = slots.get(h.sender()) else {
        return;
    };
    let Ok(keys) = OrderServerSecret::from_bytes(*secret).mac_keys(&entry.key) else {
        return;
    };
    req.submission_tag = keys.submit(&req.envelope.hash(), h.sequence());
}
