//! The router's strategies, applied to what the real router core emits:
//! deliveries dropped, withheld, stripped of tags, delayed, shuffled,
//! replayed or accompanied by forgeries; crashes timed by the script;
//! malformed requests of its own next to the real jobs; an Update its own
//! puppet account composed, delivered to a joiner in place of the genuine
//! one (`router_puppet`); the puppet accounts it registers before the run;
//! forged head proofs, and a forking router's choices (its groups, when it
//! forks, which servers each history goes to, leaked tags, head proofs
//! relayed from every server). The fork itself is structural (one core per
//! history, see `router_node`).

use super::events::Event;
use super::member_node::MemberNode;
use super::router_node::RouterNode;
use super::router_puppet::{NextSet, Puppet, call_core, join_delivery, substitute_update};
use super::{MS, SimError, World};
use crate::scenario::{
    HistoryTamper, JobTamper, OrderServerStrategy, PreviousHead, RouterStrategy,
};
use crate::schedule::Schedule;
use grompi_proto::mac::Attestation;
use grompi_proto::{BodyHash, SlotRole, SlotSet, pb};
use grompi_router::core::{Call, HistoryPlan, ProvePlan};
use rand::RngExt;
use std::collections::{BTreeMap, BTreeSet};

/// The router adversary's state.
pub struct RouterAdversary {
    strategy: RouterStrategy,
    /// Members the strategy targets.
    targets: BTreeSet<usize>,
    /// Index -> the script step whose envelope it holds.
    index_step: BTreeMap<u64, usize>,
    /// Full deliveries made so far, per member (for replays).
    history: BTreeMap<usize, Vec<pb::Delivery>>,
    /// Indices already used for a forged submission to the order servers.
    rogue_done: BTreeSet<u64>,
    /// Replays made so far (the kind of replay cycles through all kinds).
    replays: u32,
    /// The next slot sets the router handed out (PrepareUpdate), by slot
    /// set hash, with their assignments.
    prepared: BTreeMap<[u8; 32], NextSet>,
    /// (member, index) pairs already given a substituted Update.
    substituted: BTreeSet<(usize, u64)>,
    /// Deliveries handed to a removed member it colludes with.
    handed_to_removed: u64,
    /// Per reader, the tampered copy of the stored history a router
    /// tampering with history pages answers from, and the number of
    /// indices stored when it was made (pages past it are read from the
    /// store as they are).
    tampered_history: BTreeMap<usize, (u64, Vec<pb::HistoryEnvelope>)>,
}

impl RouterAdversary {
    /// The adversary for `strategy` in a network of `names`.
    pub fn new(strategy: &RouterStrategy, names: &[String]) -> Self {
        let listed: &[String] = match strategy {
            RouterStrategy::Drop { members, .. }
            | RouterStrategy::WithholdDelivery { members, .. } => members,
            _ => &[],
        };
        let targets = listed
            .iter()
            .filter_map(|n| names.iter().position(|m| m == n))
            .collect();
        Self {
            strategy: strategy.clone(),
            targets,
            index_step: BTreeMap::new(),
            history: BTreeMap::new(),
            rogue_done: BTreeSet::new(),
            replays: 0,
            prepared: BTreeMap::new(),
            substituted: BTreeSet::new(),
            handed_to_removed: 0,
            tampered_history: BTreeMap::new(),
        }
    }

    /// The tampering a router sending malformed jobs applies to its own
    /// requests next to the real ones.
    pub fn job_tamper(&self) -> Option<JobTamper> {
        match self.strategy {
            RouterStrategy::MalformedJobs { tamper } => Some(tamper),
            _ => None,
        }
    }

    /// Notes a next slot set the router core handed out.
    pub fn prepared(&mut self, response: &pb::PrepareUpdateResponse) {
        let Some(slots) = response
            .slots
            .clone()
            .and_then(|s| SlotSet::try_from(s).ok())
        else {
            return;
        };
        self.prepared.insert(
            *slots.hash().as_bytes(),
            (slots, response.assignments.clone()),
        );
    }
}

/// The group (history) of each of `names` for a forking router (0 for
/// every member otherwise, and for a member in no group).
pub(super) fn fork_groups(strategy: &RouterStrategy, names: &[String]) -> Vec<usize> {
    let mut group_of = vec![0; names.len()];
    if let RouterStrategy::Fork { partition, .. } = strategy {
        for (g, group) in partition.iter().enumerate() {
            for name in group {
                if let Some(i) = names.iter().position(|n| n == name) {
                    group_of[i] = g;
                }
            }
        }
    }
    group_of
}

/// The accounts a router substituting a joiner's Update registers for
/// itself before the run (none for any other strategy).
pub(super) fn puppets(
    strategy: &RouterStrategy,
    router: &mut RouterNode,
    sched: &mut Schedule<Event>,
    members: &mut [MemberNode],
    servers: &[grompi_proto::OrderServerKey],
) -> Result<Vec<Puppet>, SimError> {
    if !matches!(strategy, RouterStrategy::SubstituteJoin { .. }) {
        return Ok(Vec::new());
    }
    // Members publish a fresh fallback prekey (making the bundles for the
    // pairwise sessions replaced the one they registered), as a client
    // replenishing its keys does; the router's puppet starts a session
    // with each from what its directory publishes.
    for m in members.iter_mut() {
        let fallback = m.secrets_mut().pairwise.new_fallback_prekey();
        let upload = pb::UploadKeysRequest {
            one_time_prekeys: vec![],
            order_keys: vec![],
            fallback_prekey: Some(pb::SignedPrekey {
                key: fallback.key.to_vec(),
                signature: fallback.signature.to_vec(),
            }),
        };
        let (keys, prekey) = grompi_router::directory::parse_upload(&upload)
            .map_err(|e| SimError::Setup(e.to_string()))?;
        call_core(router, sched, &m.token, Call::UploadKeys(keys, prekey))?;
    }
    let mut puppet = Puppet::register("puppet", router, sched, servers)?;
    for m in members.iter() {
        puppet.start_session(router, sched, m.account)?;
    }
    Ok(vec![puppet])
}

/// Tampers with the stored history's envelopes (from index 0, in order) as
/// `tamper` says, at a seeded place among the old envelopes, those before
/// index `before` (the reader's join); returns the index it tampered at,
/// or `None` when there is nothing it could tamper with.
pub(super) fn tamper_history(
    envelopes: &mut Vec<pb::HistoryEnvelope>,
    tamper: HistoryTamper,
    before: u64,
    rng: &mut rand::rngs::ChaCha20Rng,
) -> Option<u64> {
    let n = envelopes.iter().filter(|e| e.index < before).count();
    let pick = |rng: &mut rand::rngs::ChaCha20Rng, candidates: Vec<usize>| -> Option<usize> {
        if candidates.is_empty() {
            None
        } else {
            candidates
                .get(rng.random_range(0..candidates.len()))
                .copied()
        }
    };
    let flip = |rng: &mut rand::rngs::ChaCha20Rng, bytes: &mut [u8]| {
        if bytes.is_empty() {
            return;
        }
        let at = rng.random_range(0..bytes.len());
        let bit = rng.random_range(0..8u32);
        if let Some(b) = bytes.get_mut(at) {
            *b ^= 1 << bit;
        }
    };
    match tamper {
        HistoryTamper::Drop => {
            let k = pick(rng, (0..n).collect())?;
            let gone = envelopes.remove(k);
            for e in envelopes.iter_mut().skip(k) {
                e.index = e.index.saturating_sub(1);
            }
            Some(gone.index)
        }
        HistoryTamper::AlterBody => {
            let k = pick(
                rng,
                (0..n).filter(|&i| !envelopes[i].body.is_empty()).collect(),
            )?;
            let e = envelopes.get_mut(k)?;
            flip(rng, &mut e.body);
            Some(e.index)
        }
        HistoryTamper::AlterHistoryBlock => {
            let k = pick(
                rng,
                (0..n)
                    .filter(|&i| !envelopes[i].history_block.is_empty())
                    .collect(),
            )?;
            let e = envelopes.get_mut(k)?;
            flip(rng, &mut e.history_block);
            // The digest follows the block, so the envelope looks whole.
            let digest = grompi_proto::RecipientBlock {
                recipient: grompi_proto::envelope::HISTORY_RECIPIENT,
                ciphertext: e.history_block.clone(),
            }
            .digest();
            if let Some(last) = e.block_digests.last_mut() {
                *last = digest.to_vec();
            }
            Some(e.index)
        }
        HistoryTamper::Reorder => {
            let k = pick(rng, (1..n).collect())?;
            envelopes.swap(k - 1, k);
            let (a, b) = (envelopes[k].index, envelopes[k - 1].index);
            envelopes[k - 1].index = a;
            envelopes[k].index = b;
            Some(a)
        }
        HistoryTamper::Inject => {
            let k = pick(rng, (0..n).collect())?;
            let copy = envelopes.get(k)?.clone();
            envelopes.insert(k + 1, copy);
            for e in envelopes.iter_mut().skip(k + 1) {
                e.index = e.index.saturating_add(1);
            }
            Some(envelopes.get(k + 1)?.index)
        }
    }
}

impl World {
    /// The router's answer to a FetchHistory whose plan is `plan`, for
    /// member `to`: the page read from the branch's store, as the
    /// service's shell builds it. A tampering router answers from one
    /// tampered copy of the whole stored history per reader, made at the
    /// reader's first page (so a page asked for again, or the next one,
    /// shows the same tampering: the reader cannot get around it by asking
    /// again).
    pub(super) fn answer_history(&mut self, branch: usize, to: usize, plan: &HistoryPlan) {
        let max = grompi_router::limits::Limits::default().max_fetch_bytes;
        let tamper = match self.adversary.strategy {
            RouterStrategy::TamperHistory { tamper } => Some(tamper),
            _ => None,
        };
        let whole = HistoryPlan {
            from: grompi_proto::Index(0),
            to: plan.stored,
            ..plan.clone()
        };
        let fresh = plan.from.0 == 0 || !self.adversary.tampered_history.contains_key(&to);
        let read = self.stored_history(branch, plan, max).and_then(|page| {
            match tamper.filter(|_| fresh) {
                Some(t) => Ok((
                    page,
                    Some((t, self.stored_history(branch, &whole, usize::MAX)?)),
                )),
                None => Ok((page, None)),
            }
        });
        let (mut page, tampered) = match read {
            Ok(read) => read,
            Err(e) => {
                self.send(Event::Reply {
                    to,
                    purpose: super::events::Purpose::History,
                    result: Err(e),
                });
                return;
            }
        };
        if let Some((tamper, whole)) = tampered {
            let mut envelopes = whole.envelopes;
            // The router knows where it added the reader (it delivered the
            // Update): it tampers with what came before.
            let join = self
                .members
                .get(to)
                .and_then(MemberNode::conversation)
                .map_or(0, |c| c.transcript().first().0);
            let name = self
                .members
                .get(to)
                .map(|m| m.name.clone())
                .unwrap_or_default();
            match tamper_history(&mut envelopes, tamper, join, self.sched.rng()) {
                Some(at) => self.notes.push(format!(
                    "the router tampers with the history it returns to {name} ({tamper:?}, at index {at})"
                )),
                None => self.notes.push(format!(
                    "the router found nothing to tamper with in the history it returns to {name}"
                )),
            }
            self.adversary
                .tampered_history
                .insert(to, (plan.stored.0, envelopes));
        }
        if let Some((end, envelopes)) = self.adversary.tampered_history.get(&to)
            && plan.from.0 < *end
        {
            page.envelopes = envelopes
                .iter()
                .filter(|e| e.index >= plan.from.0 && e.index < plan.to.0)
                .cloned()
                .collect();
        }
        self.send(Event::HistoryPage { to, page });
    }

    /// A history page of `branch`'s committed store, as the service's shell
    /// reads it (`build_history_page`), at most `max` bytes.
    fn stored_history(
        &self,
        branch: usize,
        plan: &HistoryPlan,
        max: usize,
    ) -> Result<pb::FetchHistoryResponse, String> {
        let store = self
            .router
            .store(branch)
            .ok_or("this history of the router keeps no store")?;
        grompi_router::fetch::build_history_page(store, plan, max).map_err(|e| e.to_string())
    }

    /// What the router does at the start of script step `k`: a forking
    /// router splits at the first step; crashes and outages due then.
    pub(super) fn adversary_step(&mut self, k: usize) -> Result<(), SimError> {
        if !self.forked
            && let RouterStrategy::Fork { partition, .. } = &self.adversary.strategy
        {
            let groups = partition.len();
            self.fork(groups)?;
        }
        if let RouterStrategy::CrashRestart { after_step } = self.adversary.strategy
            && after_step == k
        {
            let at = self.sched.rng().random_range(0..=150 * MS);
            self.sched.after(at, Event::RouterCrash);
        }
        let outages: Vec<(usize, bool)> = self
            .servers
            .iter()
            .enumerate()
            .filter_map(|(s, server)| match server.strategy() {
                OrderServerStrategy::CrashRestart { after_step } if *after_step == k => {
                    Some((s, true))
                }
                OrderServerStrategy::Offline { after_step } if *after_step == k => Some((s, false)),
                _ => None,
            })
            .collect();
        for (server, restart) in outages {
            let at = if restart {
                self.sched.rng().random_range(0..=150 * MS)
            } else {
                0
            };
            self.sched.after(at, Event::ServerCrash { server, restart });
        }
        Ok(())
    }

    /// Relays the head proofs of `plan` to member `to`: from the order
    /// servers its history goes to (a careless forking router relays every
    /// server's), forged if the strategy says so.
    pub(super) fn relay_head_proofs(&mut self, to: usize, plan: &ProvePlan) {
        let branch = self.branch_of(to);
        let all = matches!(
            self.adversary.strategy,
            RouterStrategy::Fork {
                relay_all_proofs: true,
                ..
            }
        );
        let forge = self.adversary.strategy == RouterStrategy::ForgeHeadProofs;
        let mut serves = self.serves(branch);
        if all {
            serves.fill(true);
        }
        let mut proofs = Vec::new();
        for (s, server) in self.servers.iter_mut().enumerate() {
            if !serves.get(s).copied().unwrap_or(false) {
                continue;
            }
            self.measure.messages += 2;
            if let Some(mut p) = server.prove(branch, &plan.conversation, plan.slot, plan.nonce) {
                if forge {
                    let mut t = *p.tag.as_bytes();
                    t[0] ^= 0x01;
                    p.tag = grompi_proto::Tag::from_bytes(t);
                }
                proofs.push(p);
            }
        }
        self.send(Event::Proofs { to, proofs });
    }

    pub(super) fn fork(&mut self, groups: usize) -> Result<(), SimError> {
        let n = self.servers.len();
        let naive = matches!(
            self.adversary.strategy,
            RouterStrategy::Fork { naive: true, .. }
        );
        let mut serves = vec![vec![naive; n]; groups.max(1)];
        let mut honest_seen = 0;
        for (s, server) in self.servers.iter_mut().enumerate() {
            if server.equivocates() {
                server.fork(groups);
                for b in &mut serves {
                    b[s] = true;
                }
            } else {
                // The honest servers are shared out among the histories.
                if let Some(b) = serves.get_mut(honest_seen % groups.max(1)) {
                    b[s] = true;
                }
                honest_seen += 1;
            }
        }
        // The router finishes its commits (their effects belong to the
        // history before the fork), then forks from its committed state.
        let settled = self.router.commit_now(0);
        self.effects(0, settled);
        self.router
            .fork(serves)
            .map_err(|e| SimError::Setup(e.to_string()))?;
        self.forked = true;
        self.notes.push(format!(
            "the router forked into {groups} histories at {} ms",
            self.now_ms()
        ));
        Ok(())
    }

    /// The script step whose envelope a delivery carries, if known.
    fn step_of(&mut self, delivery: &pb::Delivery) -> Option<usize> {
        if delivery.header.is_some() {
            let hash = grompi_client_core::Delivery::try_from(delivery.clone())
                .ok()
                .and_then(|d| d.check().ok())
                .map(|r| r.envelope_hash);
            if let Some(step) = hash
                .and_then(|h| self.composed.get(h.as_bytes()))
                .and_then(|c| c.step)
            {
                self.adversary.index_step.insert(delivery.index, step);
            }
        }
        self.adversary.index_step.get(&delivery.index).copied()
    }

    /// Hands a delivery from the router core of `branch` to the network,
    /// through the router's strategy.
    pub(super) fn deliver(&mut self, branch: usize, to: usize, mut delivery: pb::Delivery) {
        // A forking router shows each group only its history (a careless
        // one leaks the other histories' tags).
        if self.branch_of(to) != branch {
            if let RouterStrategy::Fork {
                leak_tags: true, ..
            } = self.adversary.strategy
            {
                let leak = pb::Delivery {
                    conversation_id: delivery.conversation_id,
                    index: delivery.index,
                    attestations: delivery.attestations,
                    ..Default::default()
                };
                self.send(Event::Deliver { to, delivery: leak });
            }
            return;
        }
        let step = self.step_of(&delivery);
        let strategy = self.adversary.strategy.clone();
        let targeted = self.adversary.targets.contains(&to);
        match strategy {
            RouterStrategy::Honest
            | RouterStrategy::Fork { .. }
            | RouterStrategy::ForgeHeadProofs
            | RouterStrategy::MalformedJobs { .. }
            | RouterStrategy::TamperHistory { .. }
            | RouterStrategy::CrashRestart { .. } => self.send(Event::Deliver { to, delivery }),
            RouterStrategy::ColludeWithRemoved { member } => {
                // The removed member gets a copy of everything, tags and
                // the recipient's key shares included.
                let accomplice = self.members.iter().position(|m| m.name == member);
                if let Some(a) = accomplice
                    && a != to
                    && self.members[a].removed()
                {
                    if self.adversary.handed_to_removed == 0 {
                        self.notes.push(format!(
                            "the router hands {member} deliveries after the removal"
                        ));
                    }
                    self.adversary.handed_to_removed += 1;
                    self.send(Event::Deliver {
                        to: a,
                        delivery: delivery.clone(),
                    });
                }
                self.send(Event::Deliver { to, delivery });
            }
            RouterStrategy::CorruptDeliveries => {
                if delivery.header.is_some() {
                    let mut bad = delivery.clone();
                    let flip = self.adversary.replays.is_multiple_of(2);
                    self.adversary.replays += 1;
                    match bad.block.as_mut().and_then(|b| b.ciphertext.first_mut()) {
                        Some(byte) if flip => *byte ^= 0x01,
                        _ => bad.conversation_id.truncate(5),
                    }
                    self.send(Event::Deliver { to, delivery: bad });
                    self.send_after(5 * MS, Event::Deliver { to, delivery });
                } else {
                    self.send(Event::Deliver { to, delivery });
                }
            }
            RouterStrategy::Drop { steps, .. } => {
                if !(targeted && step.is_some_and(|s| steps.contains(&s))) {
                    self.send(Event::Deliver { to, delivery });
                }
            }
            RouterStrategy::WithholdDelivery { after_step, .. } => {
                if !(targeted && step.is_some_and(|s| s > after_step)) {
                    self.send(Event::Deliver { to, delivery });
                }
            }
            RouterStrategy::WithholdTags => {
                // The Setup goes through, so members are following the
                // conversation; every later index comes without tags.
                if step.is_some() {
                    if delivery.header.is_some() {
                        delivery.attestations.clear();
                        self.send(Event::Deliver { to, delivery });
                    }
                } else {
                    self.send(Event::Deliver { to, delivery });
                }
            }
            RouterStrategy::Reorder => {
                let extra = self.sched.rng().random_range(0..=1_500 * MS);
                self.send_after(extra, Event::Deliver { to, delivery });
            }
            RouterStrategy::Delay { max_ms } => {
                let extra = self.sched.rng().random_range(0..=max_ms.saturating_mul(MS));
                self.send_after(extra, Event::Deliver { to, delivery });
            }
            RouterStrategy::Replay => {
                if delivery.header.is_some() {
                    self.replay(branch, to, &delivery);
                    self.adversary
                        .history
                        .entry(to)
                        .or_default()
                        .push(delivery.clone());
                }
                self.send(Event::Deliver { to, delivery });
            }
            RouterStrategy::SubstituteJoin { previous_head } => {
                match self.substitute_join(to, &delivery, previous_head) {
                    Some(fake) => {
                        // The genuine Update follows once the substitute
                        // has surely arrived (latencies are at most 30 ms).
                        self.send(Event::Deliver { to, delivery: fake });
                        self.send_after(40 * MS, Event::Deliver { to, delivery });
                    }
                    None => self.send(Event::Deliver { to, delivery }),
                }
            }
            RouterStrategy::Inject => {
                if delivery.header.is_some() {
                    let fake = self.forge(&delivery);
                    self.rogue(branch, &fake, None);
                    self.send(Event::Deliver { to, delivery: fake });
                    self.send_after(5 * MS, Event::Deliver { to, delivery });
                } else {
                    self.send(Event::Deliver { to, delivery });
                }
            }
        }
    }

    /// Attack 1: for the delivery of an Update to a member it adds (the
    /// router sees next-epoch tags and no current ones), the same Update
    /// as the router's puppet composes it ([`substitute_update`]: the
    /// genuine header fields, the next slot set with a padding slot
    /// re-roled Admin, the genuine member list plus the puppet as that
    /// slot's Admin, a block for the joiner only), delivered with the
    /// genuine attestations and the chosen previous head. Once per member
    /// and index.
    fn substitute_join(
        &mut self,
        to: usize,
        genuine: &pb::Delivery,
        previous_head: PreviousHead,
    ) -> Option<pb::Delivery> {
        let (header, _) = join_delivery(genuine)?;
        let next = self
            .adversary
            .prepared
            .get(header.slot_set_hash()?.as_bytes())?
            .clone();
        if !self.adversary.substituted.insert((to, genuine.index)) {
            return None;
        }
        let account = self.members.get(to)?.account;
        let Self { sched, puppets, .. } = self;
        let made = substitute_update(
            puppets.first_mut()?,
            genuine,
            account,
            &next,
            previous_head == PreviousHead::Genuine,
            sched.rng(),
        );
        match made {
            Ok(Some((fake, padding))) => {
                self.notes.push(format!(
                    "the router delivered to {} an Update its puppet composed at index {}, listing the puppet as the Admin of padding slot {}",
                    self.members.get(to).map_or("?", |m| m.name.as_str()),
                    genuine.index,
                    padding.0
                ));
                Some(fake)
            }
            Ok(None) => {
                self.notes.push(format!(
                    "index {}: no padding slot in the next slot set for the puppet",
                    genuine.index
                ));
                None
            }
            Err(e) => {
                self.notes
                    .push(format!("the puppet could not compose the Update: {e}"));
                None
            }
        }
    }

    /// A made-up envelope in place of `real`: another body (so another
    /// header and envelope hash) and the next sequence number of the same
    /// sender slot, with made-up tags.
    fn forge(&mut self, real: &pb::Delivery) -> pb::Delivery {
        let mut fake = real.clone();
        let mut body = vec![0u8; 64];
        rand::Rng::fill_bytes(self.sched.rng(), &mut body);
        if let Some(h) = fake.header.as_mut() {
            h.body_hash = BodyHash::of(&body).to_vec();
            h.sequence = h.sequence.saturating_add(1);
        }
        fake.body = body;
        for a in &mut fake.attestations {
            for t in a.tags.iter_mut().chain(a.next_tags.iter_mut()) {
                let mut b = vec![0u8; 32];
                rand::Rng::fill_bytes(self.sched.rng(), &mut b);
                *t = b;
            }
        }
        fake
    }

    /// Old deliveries again: verbatim, relabelled to a later index, or
    /// relabelled to another conversation.
    fn replay(&mut self, branch: usize, to: usize, now: &pb::Delivery) {
        let Some(old) = self.adversary.history.get(&to).cloned() else {
            return;
        };
        if old.is_empty() {
            return;
        }
        let pick = self.sched.rng().random_range(0..old.len());
        let Some(mut copy) = old.get(pick).cloned() else {
            return;
        };
        // Which old delivery and when are drawn from the seed; the kind of
        // replay cycles, so every run exercises each kind.
        let kind = self.adversary.replays % 3;
        self.adversary.replays += 1;
        let wait = self.sched.rng().random_range(50 * MS..=1_500 * MS);
        match kind {
            0 => self.send_after(wait, Event::Deliver { to, delivery: copy }),
            1 => {
                copy.index = now.index.saturating_add(1);
                self.send_after(wait, Event::Deliver { to, delivery: copy });
            }
            _ => {
                let mut id = vec![0u8; 32];
                rand::Rng::fill_bytes(self.sched.rng(), &mut id);
                copy.conversation_id = id;
                self.send_after(wait, Event::Deliver { to, delivery: copy });
            }
        }
        // The old envelope, with its genuine submission tags, offered to
        // the order servers again at the next index.
        let tags = grompi_client_core::Delivery::try_from(copy_of(&old, pick))
            .ok()
            .and_then(|d| d.check().ok())
            .and_then(|r| self.composed.get(r.envelope_hash.as_bytes()))
            .map(|c| c.tags.clone());
        if let (Some(tags), Some(old)) = (tags, old.get(pick)) {
            let mut resent = old.clone();
            resent.index = now.index;
            resent.attestations = now.attestations.clone();
            self.rogue(branch, &resent, Some(tags));
        }
    }

    /// Offers an envelope to every order server serving `branch` outside
    /// the fan-out, once per index: at the index after `d`'s, on `d`'s head.
    /// An honest server refuses it; if some server attests it anyway (one
    /// that skips the sender check), the router delivers it to every member
    /// of the branch with those tags, as its injection.
    fn rogue(&mut self, branch: usize, d: &pb::Delivery, tags: Option<Vec<grompi_proto::Tag>>) {
        if !self.adversary.rogue_done.insert(d.index) {
            return;
        }
        let Some(head) = d.attestations.first().map(|a| a.head.clone()) else {
            return;
        };
        let serves = self.serves(branch);
        let mut attested: Vec<Attestation> = Vec::new();
        for (s, server) in self.servers.iter_mut().enumerate() {
            if !serves.get(s).copied().unwrap_or(false) {
                continue;
            }
            let tag = match tags.as_ref().and_then(|t| t.get(s)) {
                Some(t) => t.to_vec(),
                None => {
                    let mut b = vec![0u8; 32];
                    rand::Rng::fill_bytes(self.sched.rng(), &mut b);
                    b
                }
            };
            self.measure.messages += 2;
            attested.extend(server.rogue_item(
                branch,
                pb::AttestItem {
                    envelope: Some(pb::EnvelopeSummary {
                        header: d.header.clone(),
                        block_digests: d.block_digests.clone(),
                    }),
                    submission_tag: tag,
                    index: d.index.saturating_add(1),
                    previous_head: head.clone(),
                    next_slots: None,
                },
            ));
        }
        if !attested.is_empty() {
            self.deliver_injection(branch, d, &head, &attested);
        }
    }

    /// Delivers the envelope of `d` (its header, body and digests, no
    /// block) at the index after `d`'s to every member of `branch`, each
    /// with its own tags from `attested`.
    fn deliver_injection(
        &mut self,
        branch: usize,
        d: &pb::Delivery,
        previous_head: &[u8],
        attested: &[Attestation],
    ) {
        self.notes.push(format!(
            "an injected envelope was attested at index {} by {} order server(s)",
            d.index.saturating_add(1),
            attested.len()
        ));
        for to in 0..self.members.len() {
            if self.branch_of(to) != branch {
                continue;
            }
            let m = &self.members[to];
            let slot = m
                .conversation()
                .and_then(|c| c.membership())
                .and_then(|ms| ms.slot_of(&m.account));
            let member = grompi_router::delivery::MemberSlots {
                slot,
                next_slot: None,
            };
            let delivery = pb::Delivery {
                conversation_id: d.conversation_id.clone(),
                index: d.index.saturating_add(1),
                header: d.header.clone(),
                body: d.body.clone(),
                block: None,
                block_position: 0,
                block_digests: d.block_digests.clone(),
                attestations: attested
                    .iter()
                    .map(|a| grompi_router::delivery::member_attestation(a, member))
                    .collect(),
                previous_head: previous_head.to_vec(),
                history_block: d.history_block.clone(),
            };
            self.send(Event::Deliver { to, delivery });
        }
    }
}

/// A router's own open sent next to the real open `o` (`before` or after
/// it), if `tamper` adds one.
pub(super) fn tampered_open(
    tamper: JobTamper,
    o: &pb::OpenConversationRequest,
    before: bool,
) -> Option<pb::OpenConversationRequest> {
    match (tamper, before) {
        (JobTamper::LowOrderKey, true) => {
            let mut bad = o.clone();
            // The all-zero point is of low order: key agreement with it
            // gives the all-zero secret.
            let first = bad.slots.as_mut()?.slots.first_mut()?;
            first.key = vec![0u8; 32];
            Some(bad)
        }
        (JobTamper::NoAdmin, true) => {
            let mut bad = o.clone();
            for slot in &mut bad.slots.as_mut()?.slots {
                slot.role = i32::from(SlotRole::Member.code());
            }
            Some(bad)
        }
        (JobTamper::Reopen, false) => Some(o.clone()),
        _ => None,
    }
}

/// A router's own attest items sent just before the real `item`, if
/// `tamper` adds any: the server is then at exactly the index and head the
/// real item expects, so each is refused for the one thing it gets wrong.
pub(super) fn tampered_items(tamper: JobTamper, item: &pb::AttestItem) -> Vec<pb::AttestItem> {
    let mut bad = item.clone();
    match tamper {
        JobTamper::LowOrderKey | JobTamper::NoAdmin | JobTamper::Reopen => return Vec::new(),
        JobTamper::UnknownConversation => {
            let Some(id) = bad
                .envelope
                .as_mut()
                .and_then(|e| e.header.as_mut())
                .and_then(|h| h.conversation_id.first_mut())
            else {
                return Vec::new();
            };
            *id ^= 0xff;
        }
        JobTamper::SkipIndex => bad.index = bad.index.saturating_add(1),
        JobTamper::WrongHead => match bad.previous_head.first_mut() {
            Some(b) => *b ^= 0x01,
            None => return Vec::new(),
        },
        JobTamper::SwapNextSlots => match bad.next_slots.as_mut() {
            // The same slots in another order: another hash.
            Some(set) if set.slots.len() > 1 => set.slots.reverse(),
            _ => return Vec::new(),
        },
    }
    vec![bad]
}

fn copy_of(old: &[pb::Delivery], i: usize) -> pb::Delivery {
    old.get(i).cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> pb::AttestItem {
        pb::AttestItem {
            envelope: Some(pb::EnvelopeSummary {
                header: Some(pb::EnvelopeHeader {
                    conversation_id: vec![7; 32],
                    ..Default::default()
                }),
                block_digests: vec![],
            }),
            submission_tag: vec![1; 32],
            index: 5,
            previous_head: vec![2; 32],
            next_slots: Some(pb::SlotSet {
                slots: vec![
                    pb::SlotEntry {
                        key: vec![3; 32],
                        role: 1,
                    },
                    pb::SlotEntry {
                        key: vec![4; 32],
                        role: 2,
                    },
                ],
            }),
        }
    }

    #[test]
    fn each_tampering_changes_one_thing() {
        let real = item();
        let one = |t| {
            let v = tampered_items(t, &real);
            assert_eq!(v.len(), 1, "{t:?}");
            v.into_iter().next().unwrap_or_default()
        };
        let skip = one(JobTamper::SkipIndex);
        assert_eq!(skip.index, 6);
        assert_eq!(
            (skip.previous_head.clone(), skip.envelope.clone()),
            (real.previous_head.clone(), real.envelope.clone())
        );
        let head = one(JobTamper::WrongHead);
        assert_ne!(head.previous_head, real.previous_head);
        assert_eq!(head.index, real.index);
        let conv = one(JobTamper::UnknownConversation);
        assert_ne!(conv.envelope, real.envelope);
        assert_eq!(conv.previous_head, real.previous_head);
        let swapped = one(JobTamper::SwapNextSlots);
        assert_ne!(swapped.next_slots, real.next_slots);
        assert_eq!(swapped.envelope, real.envelope);
        assert!(tampered_items(JobTamper::Reopen, &real).is_empty());
        let update_free = pb::AttestItem {
            next_slots: None,
            ..real
        };
        assert!(tampered_items(JobTamper::SwapNextSlots, &update_free).is_empty());

        let open = pb::OpenConversationRequest {
            conversation_id: vec![7; 32],
            slots: update_free_slots(),
        };
        let low = tampered_open(JobTamper::LowOrderKey, &open, true);
        assert_eq!(
            low.and_then(|o| o.slots)
                .and_then(|s| s.slots.first().map(|e| e.key.clone())),
            Some(vec![0u8; 32])
        );
        assert!(tampered_open(JobTamper::LowOrderKey, &open, false).is_none());
        let no_admin = tampered_open(JobTamper::NoAdmin, &open, true)
            .and_then(|o| o.slots)
            .map(|s| s.slots)
            .unwrap_or_default();
        assert!(!no_admin.is_empty());
        assert!(
            no_admin
                .iter()
                .all(|e| e.role == i32::from(SlotRole::Member.code()))
        );
        assert!(tampered_open(JobTamper::NoAdmin, &open, false).is_none());
        assert!(tampered_items(JobTamper::NoAdmin, &item()).is_empty());
        assert_eq!(
            tampered_open(JobTamper::Reopen, &open, false),
            Some(open.clone())
        );
        assert!(tampered_open(JobTamper::Reopen, &open, true).is_none());
    }

    fn update_free_slots() -> Option<pb::SlotSet> {
        item().next_slots
    }
}
