//! The simulated network: the real router, order server and client cores,
//! message passing as scheduled events with seeded latencies, adversary
//! strategies wrapped around the router and the order servers, and the
//! scenario's conversation script. [`run`] plays one scenario with one seed
//! and judges it.
//!
//! # Model
//!
//! * Time is virtual ([`crate::schedule`]); every message between parties
//!   (a call to the router, its reply, an order server job and its result,
//!   a delivery, head proofs) is an event with a latency drawn from the
//!   seed, so the seed fixes the interleaving.
//! * Accounts register with the router core (signed challenge, order keys).
//!   Pairwise Olm sessions are set up directly between the members' client
//!   states before the run (the router's prekey directory is not on the
//!   path being judged).
//! * The script's steps run at seeded times; a step whose actor cannot send
//!   yet is retried. After the script every member that still follows the
//!   conversation audits it: it reports a stall if it holds deliveries it
//!   cannot accept (`Conversation::stuck`, as the real client does) and
//!   asks every order server for a head proof (PROTOCOL.md 7.7).
//! * Compromised members are the adversary's: a copy of their order key
//!   secrets is taken before the run, and script steps can have them send
//!   what the client's public API would not compose (`member_toolkit`).
//! * Reports never contain ciphertext-derived bytes: Olm draws from the
//!   operating system's RNG, so only outcomes are reproducible from a seed.

mod adversary;
mod events;
pub mod measure;
mod member_node;
mod member_toolkit;
mod order_node;
mod router_node;
pub mod router_puppet;

use crate::report::RunReport;
use crate::scenario::{OrderServerStrategy, RouterStrategy, Scenario, Step};
use crate::schedule::Schedule;
use crate::verdict::judge;
use crate::view::{AcceptedEntry, AlertRecord, MemberView, SentRecord};
use events::{Event, Purpose};
use grompi_client::content::{Change, Content, MemberEntry, UpdateContent};
use grompi_client::{Conversation, ConversationConfig, Secrets};
use grompi_proto::pb;
use grompi_proto::{AccountId, ConversationId, SlotIndex, SlotRole, SlotSet};
use grompi_router::core::{Call, Command, CoreConfig, Effect, Response, Submission};
use grompi_router::fanout::StreamOrder;
use grompi_router::limits::Limits;
use grompi_router::store::Durability;
use measure::Measure;
use member_node::MemberNode;
use order_node::OrderNode;
use rand::RngExt;
use rand::rngs::ChaCha20Rng;
use router_node::{RouterNode, RouterOut};
use std::collections::{BTreeMap, BTreeSet};

/// Why a run could not be played (as opposed to an attack succeeding).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Setting up the network failed.
    #[error("setting up the network: {0}")]
    Setup(String),
    /// The scenario asks for something the simulator does not model.
    #[error("not modelled: {0}")]
    Unsupported(String),
}

/// Virtual microseconds per millisecond.
const MS: u64 = 1_000;
/// Fastest and slowest one-way latency between parties.
const LATENCY: (u64, u64) = (2 * MS, 30 * MS);
/// When the first script step may run.
const SCRIPT_START: u64 = 2_000 * MS;
/// Gap between script steps.
const STEP_GAP: (u64, u64) = (150 * MS, 1_200 * MS);
/// How long the network settles after the last step before the audit.
const SETTLE: u64 = 4_000 * MS;
/// How long after the audit the run ends.
const AFTER_AUDIT: u64 = 2_000 * MS;
/// Router timer period.
const POLL: u64 = 100 * MS;
/// Shortest and longest router commit that syncs to disk, and one that
/// does not (only order servers' answers: deferred). Batches the router
/// makes meanwhile are folded into its next commit.
const COMMIT_SYNCED: (u64, u64) = (MS, 15 * MS);
const COMMIT_DEFERRED: (u64, u64) = (100, 2 * MS);
/// How long a crashed server stays down.
const DOWNTIME: u64 = 400 * MS;
/// How often a step whose actor cannot act yet is retried.
const STEP_RETRIES: u32 = 30;

/// One envelope a member composed: the ground truth.
struct Composed {
    step: Option<usize>,
    sender: usize,
    submitted_at: u64,
    tags: Vec<grompi_proto::Tag>,
    /// Every order server refused it and the sender was told so.
    refused: bool,
}

/// The network and everything the run records.
struct World {
    scenario: Scenario,
    sched: Schedule<Event>,
    router: RouterNode,
    servers: Vec<OrderNode>,
    members: Vec<MemberNode>,
    by_account: BTreeMap<AccountId, usize>,
    conversation: ConversationId,
    /// Group per member when the router forks.
    group_of: Vec<usize>,
    forked: bool,
    /// Envelope hash (bytes) -> ground truth.
    composed: BTreeMap<[u8; 32], Composed>,
    sent: Vec<SentRecord>,
    step_attempts: BTreeMap<usize, u32>,
    adversary: adversary::RouterAdversary,
    /// Calls waiting for the router's answer.
    /// Calls waiting for the router's answer, with the call itself (a call
    /// the router crashes under fails, and the client makes it again).
    tickets: BTreeMap<grompi_router::Ticket, (usize, Purpose, Call)>,
    measure: Measure,
    notes: Vec<String>,
    horizon: u64,
    /// Accounts the router registered for itself.
    puppets: Vec<router_puppet::Puppet>,
    /// Per ordered stream (router incarnation, branch, order server): when
    /// the last job reaches the server and the last answer the router.
    streams: BTreeMap<(u64, usize, u32), [u64; 2]>,
    /// Per stream: the order the router's worker keeps on it (a job whose
    /// predecessor's stream broke fails unsent).
    stream_order: BTreeMap<(u64, usize, u32), StreamOrder>,
    /// Per stream: jobs sent whose answers have not reached the router.
    in_flight: BTreeMap<(u64, usize, u32), usize>,
    /// The most jobs one stream had in flight at once.
    max_in_flight: usize,
}

/// Options of a run that are not part of the scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Skip the end-of-run audit (stall report and head proofs).
    pub no_audit: bool,
}

/// Plays `scenario` with `seed` and judges it.
pub fn run(scenario: &Scenario, seed: u64) -> Result<RunReport, SimError> {
    run_with(scenario, seed, RunOptions::default())
}

/// [`run`] with options.
pub fn run_with(
    scenario: &Scenario,
    seed: u64,
    options: RunOptions,
) -> Result<RunReport, SimError> {
    let mut world = World::build(scenario, seed)?;
    world.play(options)?;
    Ok(world.report(seed))
}

fn everyone(scenario: &Scenario) -> Vec<String> {
    let mut names = scenario.network.members.clone();
    for step in &scenario.script {
        if let Some(a) = &step.add
            && !names.contains(a)
        {
            names.push(a.clone());
        }
    }
    names
}

fn random32(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::Rng::fill_bytes(rng, &mut b);
    b
}

impl World {
    fn build(scenario: &Scenario, seed: u64) -> Result<Self, SimError> {
        let mut sched: Schedule<Event> = Schedule::new(seed);
        let n = scenario.network.order_servers;
        let mut servers = Vec::with_capacity(n);
        for s in 0..n {
            let secret = random32(sched.rng());
            let strategy = scenario
                .adversary
                .order_servers
                .iter()
                .find(|o| o.server == s)
                .map_or(OrderServerStrategy::Honest, |o| o.strategy.clone());
            let position =
                u32::try_from(s).map_err(|_| SimError::Setup("too many servers".into()))?;
            servers.push(OrderNode::new(
                secret,
                position,
                strategy,
                scenario.network.server_limits(),
            ));
        }
        let keys: Vec<_> = servers.iter().map(|s: &OrderNode| s.public_key()).collect();
        let quorum = scenario.network.quorum();
        let core_config = CoreConfig {
            servers: keys.clone(),
            quorum,
            limits: Limits {
                requests_per_second: 1_000_000,
                request_burst: 1_000_000,
                ..Limits::default()
            },
            padding_tiers: vec![4, 8, 16, 32, 64, 128],
            noise_interval_ms: None,
            max_batch: 16,
            backoff_base_ms: 50,
            backoff_max_ms: 1_000,
        };
        let mut router =
            RouterNode::new(core_config).map_err(|e| SimError::Setup(e.to_string()))?;
        let client_config = ConversationConfig::new(keys, quorum);
        let names = everyone(scenario);
        let compromised: BTreeSet<&String> =
            scenario.adversary.compromised_members.iter().collect();
        let mut members = Vec::with_capacity(names.len());
        for name in &names {
            let mut secrets = Secrets::default();
            let order_keys = secrets.order_keys.generate(sched.rng(), 16);
            let token = register(&mut router, &mut sched, &mut secrets, &order_keys)?;
            let honest = !compromised.contains(name);
            // The adversary holds a compromised member's keys.
            let stolen: Vec<[u8; 32]> = if honest {
                Vec::new()
            } else {
                secrets.order_keys.export().iter().map(|k| **k).collect()
            };
            let mut node =
                MemberNode::new(name.clone(), honest, secrets, token, client_config.clone());
            node.stolen_order_keys = stolen;
            members.push(node);
        }
        // Pairwise sessions, each from a bundle with its own one-time key.
        for i in 0..members.len() {
            for j in 0..members.len() {
                if i == j {
                    continue;
                }
                let bundle = members[j].secrets_mut().pairwise.bundle(true);
                members[i]
                    .secrets_mut()
                    .pairwise
                    .start_session(&bundle)
                    .map_err(|e| SimError::Setup(e.to_string()))?;
            }
        }
        let mut puppets = Vec::new();
        if matches!(
            scenario.adversary.router,
            RouterStrategy::SubstituteJoin { .. }
        ) {
            // Members publish a fresh fallback prekey (making the bundles
            // above replaced the one they registered), as a client
            // replenishing its keys does; the router's puppet starts a
            // session with each from what its directory publishes.
            for m in &mut members {
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
                router_puppet::call_core(
                    &mut router,
                    &mut sched,
                    &m.token,
                    Call::UploadKeys(keys, prekey),
                )?;
            }
            let servers = client_config.servers.clone();
            let mut puppet =
                router_puppet::Puppet::register("puppet", &mut router, &mut sched, &servers)?;
            for m in &members {
                puppet.start_session(&mut router, &mut sched, m.account)?;
            }
            puppets.push(puppet);
        }
        let by_account = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.account, i))
            .collect();
        let conversation = ConversationId::from_bytes(random32(sched.rng()));
        for m in &mut members {
            m.follow(conversation);
        }
        let mut group_of = vec![0; members.len()];
        if let RouterStrategy::Fork { partition, .. } = &scenario.adversary.router {
            for (g, group) in partition.iter().enumerate() {
                for name in group {
                    if let Some(i) = names.iter().position(|n| n == name) {
                        group_of[i] = g;
                    }
                }
            }
        }
        let adversary = adversary::RouterAdversary::new(&scenario.adversary.router, &names);
        Ok(Self {
            scenario: scenario.clone(),
            sched,
            router,
            servers,
            members,
            by_account,
            conversation,
            group_of,
            forked: false,
            composed: BTreeMap::new(),
            sent: Vec::new(),
            step_attempts: BTreeMap::new(),
            adversary,
            tickets: BTreeMap::new(),
            measure: Measure::default(),
            notes: Vec::new(),
            horizon: u64::MAX,
            puppets,
            streams: BTreeMap::new(),
            stream_order: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            max_in_flight: 0,
        })
    }

    fn now(&self) -> u64 {
        self.sched.now().0
    }

    fn now_ms(&self) -> u64 {
        self.now() / MS
    }

    /// Sends `event` over the network: one message, one seeded latency.
    fn send(&mut self, event: Event) {
        self.measure.messages += 1;
        self.sched.after_jitter(LATENCY.0, LATENCY.1, event);
    }

    /// Sends `event` over the ordered stream (router incarnation, branch,
    /// order server) to the server (`to_server`) or back: a seeded latency,
    /// but never ahead of what was sent before it on the stream.
    fn send_on_stream(&mut self, stream: (u64, usize, u32), to_server: bool, event: Event) {
        self.measure.messages += 1;
        let l = self.sched.rng().random_range(LATENCY.0..=LATENCY.1);
        let flying = self.in_flight.entry(stream).or_default();
        if to_server {
            *flying += 1;
            self.max_in_flight = self.max_in_flight.max(*flying);
        }
        let last = self.streams.entry(stream).or_default();
        let slot = &mut last[usize::from(!to_server)];
        let at = self.sched.now().0.saturating_add(l).max(*slot);
        *slot = at;
        self.sched.at(crate::schedule::VirtualTime(at), event);
    }

    /// Performs what the router's event produced, and times the commit it
    /// started, if any.
    fn router_out(&mut self, branch: usize, out: RouterOut) {
        self.effects(branch, out.effects);
        if let Some(durability) = out.commit {
            let (low, high) = match durability {
                Durability::Now => COMMIT_SYNCED,
                Durability::Deferred => COMMIT_DEFERRED,
            };
            let incarnation = self.router.incarnation;
            self.sched.after_jitter(
                low,
                high,
                Event::RouterCommitted {
                    branch,
                    incarnation,
                },
            );
        }
    }

    fn send_after(&mut self, extra: u64, event: Event) {
        self.measure.messages += 1;
        let l = self.sched.rng().random_range(LATENCY.0..=LATENCY.1);
        self.sched.after(l.saturating_add(extra), event);
    }

    fn play(&mut self, options: RunOptions) -> Result<(), SimError> {
        // The creator (the first admin) creates the conversation.
        let admins = self.scenario.network.admins();
        let creator = admins
            .first()
            .and_then(|a| self.members.iter().position(|m| &m.name == a))
            .unwrap_or(0);
        let initial: Vec<(AccountId, SlotRole)> = self
            .scenario
            .network
            .members
            .iter()
            .filter_map(|name| {
                let i = self.members.iter().position(|m| &m.name == name)?;
                let role = if admins.contains(name) {
                    SlotRole::Admin
                } else {
                    SlotRole::Member
                };
                Some((self.members[i].account, role))
            })
            .collect();
        let roster: Vec<AccountId> = initial.iter().map(|(a, _)| *a).collect();
        for m in &mut self.members {
            if roster.contains(&m.account) {
                m.initial_roster = Some(roster.clone());
            }
        }
        self.send(Event::ToRouter {
            from: creator,
            call: Call::CreateConversation(self.conversation, initial),
            purpose: Purpose::Create,
        });
        let mut at = SCRIPT_START;
        for k in 0..self.scenario.script.len() {
            self.sched
                .at(crate::schedule::VirtualTime(at), Event::Step(k));
            let gap = self.sched.rng().random_range(STEP_GAP.0..=STEP_GAP.1);
            at = at.saturating_add(gap);
        }
        let audit = at.saturating_add(SETTLE);
        if !options.no_audit {
            self.sched
                .at(crate::schedule::VirtualTime(audit), Event::Audit);
        }
        self.horizon = audit.saturating_add(AFTER_AUDIT);
        self.sched.after(POLL, Event::Poll);
        while let Some(event) = self.sched.next_event() {
            if self.now() > self.horizon {
                break;
            }
            self.handle(event)?;
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), SimError> {
        match event {
            Event::Step(k) => self.step(k)?,
            Event::ToRouter {
                from,
                call,
                purpose,
            } => self.call_router(from, call, purpose),
            Event::Reply {
                to,
                purpose,
                result,
            } => self.reply(to, purpose, result),
            Event::Job {
                branch,
                job,
                incarnation,
            } => {
                let s = job.server as usize;
                let tamper = match self.scenario.adversary.router {
                    RouterStrategy::MalformedJobs { tamper } => Some(tamper),
                    _ => None,
                };
                let stream = (incarnation, branch, job.server);
                let order = self.stream_order.entry(stream).or_default();
                if !order.admits(&job) {
                    // Its predecessor went on a stream that broke since.
                    let event = Event::JobDone {
                        branch,
                        result: StreamOrder::unsent(&job),
                        incarnation,
                    };
                    self.send_on_stream(stream, false, event);
                } else if let Some(server) = self.servers.get_mut(s) {
                    let result = server.run_job(branch, &job, tamper);
                    if !job.request.items.is_empty() {
                        order.sent(&job);
                    }
                    if result.attest.is_err() {
                        // A failed answer breaks the stream: what follows
                        // it fails unsent, as over the real AttestStream.
                        order.broke();
                    }
                    let event = Event::JobDone {
                        branch,
                        result,
                        incarnation,
                    };
                    // The answer goes back on the stream the job came on.
                    self.send_on_stream((incarnation, branch, job.server), false, event);
                }
            }
            Event::JobDone {
                branch,
                result,
                incarnation,
            } => {
                if let Some(flying) = self
                    .in_flight
                    .get_mut(&(incarnation, branch, result.server))
                {
                    *flying = flying.saturating_sub(1);
                }
                if !self.router.down && incarnation == self.router.incarnation {
                    let now = self.now_ms();
                    let ticket = self.router.ticket();
                    let out = self.router.handle(
                        branch,
                        ticket,
                        Command::JobDone(result),
                        now,
                        self.sched.rng(),
                    );
                    self.router_out(branch, out);
                }
            }
            Event::RouterCommitted {
                branch,
                incarnation,
            } => {
                let out = self.router.committed(branch, incarnation);
                self.router_out(branch, out);
            }
            Event::Deliver { to, delivery } => {
                let now = self.now();
                if let Some(m) = self.members.get_mut(to) {
                    m.receive(delivery, now);
                }
            }
            Event::Proofs { to, proofs } => {
                let now = self.now();
                if let Some(m) = self.members.get_mut(to) {
                    if let Some(c) = m.conversation_mut() {
                        c.check_head_proofs(&proofs);
                    }
                    m.drain(now);
                }
            }
            Event::Poll => {
                if !self.router.down {
                    let now = self.now_ms();
                    for b in 0..self.router.branches.len() {
                        let out = self.router.poll(b, now, self.sched.rng());
                        self.router_out(b, out);
                    }
                }
                if self.now().saturating_add(POLL) <= self.horizon {
                    self.sched.after(POLL, Event::Poll);
                }
            }
            Event::RouterRestart => {
                self.router
                    .restart()
                    .map_err(|e| SimError::Setup(e.to_string()))?;
                self.notes
                    .push(format!("router restarted at {} ms", self.now_ms()));
            }
            Event::ServerRestart(s) => {
                if let Some(server) = self.servers.get_mut(s) {
                    server.restart();
                }
                self.notes.push(format!(
                    "order server {s} restarted at {} ms",
                    self.now_ms()
                ));
            }
            Event::Audit => self.audit(),
            Event::Recompose {
                actor,
                step,
                content,
                attempt,
            } => self.compose_and_submit(actor, step, *content, attempt),
            Event::RouterCrash => {
                self.router.crash();
                // Every call waiting for an answer fails with the
                // connection (its answer, or the commit it waits for, died
                // with the process); the client calls again later.
                for (_, (to, purpose, call)) in std::mem::take(&mut self.tickets) {
                    self.send(Event::Reply {
                        to,
                        purpose: Purpose::Retry {
                            call: Box::new(call),
                            inner: Box::new(purpose),
                        },
                        result: Err("unavailable: the router crashed".into()),
                    });
                }
                self.notes
                    .push(format!("router crashed at {} ms", self.now_ms()));
                self.sched.after(DOWNTIME, Event::RouterRestart);
            }
            Event::ServerCrash { server, restart } => {
                if let Some(s) = self.servers.get_mut(server) {
                    s.crash();
                }
                self.notes.push(format!(
                    "order server {server} went down at {} ms",
                    self.now_ms()
                ));
                if restart {
                    self.sched.after(DOWNTIME, Event::ServerRestart(server));
                }
            }
        }
        Ok(())
    }

    /// The router's branch a member talks to.
    fn branch_of(&self, member: usize) -> usize {
        if self.forked {
            self.group_of.get(member).copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// Which order servers the router's branch `branch` talks to.
    fn serves(&self, branch: usize) -> Vec<bool> {
        self.router
            .branches
            .get(branch)
            .map(|b| b.serves.clone())
            .unwrap_or_default()
    }

    fn call_router(&mut self, from: usize, call: Call, purpose: Purpose) {
        if self.router.down {
            self.send(Event::Reply {
                to: from,
                purpose: Purpose::Retry {
                    call: Box::new(call),
                    inner: Box::new(purpose),
                },
                result: Err("unavailable: the router is down".into()),
            });
            return;
        }
        let Some(token) = self.members.get(from).map(|m| m.token.clone()) else {
            return;
        };
        let branch = self.branch_of(from);
        let ticket = self.router.ticket();
        self.tickets.insert(ticket, (from, purpose, call.clone()));
        let now = self.now_ms();
        let out = self.router.handle(
            branch,
            ticket,
            Command::Authed { token, call },
            now,
            self.sched.rng(),
        );
        self.router_out(branch, out);
    }

    /// Performs a branch's effects, through the router's strategy.
    ///
    /// The core emits one index's deliveries in account-id order, and
    /// account ids come from identity keys the operating system's RNG
    /// made; so deliveries are put in member order (stably) before any
    /// latency is drawn, keeping the run a function of the seed alone.
    fn effects(&mut self, branch: usize, mut effects: Vec<Effect>) {
        let rank = |e: &Effect| match e {
            Effect::Deliver { account, .. } => self.by_account.get(account).copied(),
            _ => None,
        };
        let mut ranked: Vec<(usize, Option<usize>)> = effects
            .iter()
            .enumerate()
            .map(|(i, e)| (i, rank(e)))
            .collect();
        // Only runs of consecutive deliveries are reordered.
        let mut start = 0;
        while start < ranked.len() {
            let mut end = start;
            while end < ranked.len() && ranked[end].1.is_some() {
                end += 1;
            }
            if end > start {
                ranked[start..end].sort_by_key(|(_, r)| *r);
                start = end;
            } else {
                start += 1;
            }
        }
        let mut slots: Vec<Option<Effect>> = effects.drain(..).map(Some).collect();
        let effects: Vec<Effect> = ranked
            .iter()
            .filter_map(|(i, _)| slots.get_mut(*i).and_then(Option::take))
            .collect();
        for e in effects {
            match e {
                Effect::Reply(ticket, r) => {
                    if let Ok(Response::Prepared(p)) = &r {
                        self.adversary.prepared(p);
                    }
                    if let Some((to, purpose, _)) = self.tickets.remove(&ticket) {
                        self.send(Event::Reply {
                            to,
                            purpose,
                            result: r.map_err(|e| e.to_string()),
                        });
                    }
                }
                Effect::Job(job) => {
                    let serves = self
                        .router
                        .branches
                        .get(branch)
                        .and_then(|b| b.serves.get(job.server as usize).copied())
                        .unwrap_or(false);
                    // A forking router never shows a branch to the honest
                    // servers of another: the job simply never completes.
                    if serves {
                        let incarnation = self.router.incarnation;
                        self.send_on_stream(
                            (incarnation, branch, job.server),
                            true,
                            Event::Job {
                                branch,
                                job,
                                incarnation,
                            },
                        );
                    }
                }
                Effect::Deliver { account, delivery } => {
                    let Some(&to) = self.by_account.get(&account) else {
                        continue;
                    };
                    // A forking router shows each group only its history (a
                    // careless one leaks the other histories' tags).
                    if self.branch_of(to) != branch {
                        if let RouterStrategy::Fork {
                            leak_tags: true, ..
                        } = self.scenario.adversary.router
                        {
                            let leak = pb::Delivery {
                                conversation_id: delivery.conversation_id,
                                index: delivery.index,
                                attestations: delivery.attestations,
                                ..Default::default()
                            };
                            self.send(Event::Deliver { to, delivery: leak });
                        }
                        continue;
                    }
                    self.deliver(branch, to, delivery);
                }
            }
        }
    }

    fn step(&mut self, k: usize) -> Result<(), SimError> {
        let Some(step) = self.scenario.script.get(k).cloned() else {
            return Ok(());
        };
        if !self.forked
            && let RouterStrategy::Fork { partition, .. } = &self.scenario.adversary.router
        {
            self.fork(partition.len())?;
        }
        self.adversary_step(k);
        let Some(actor) = self.members.iter().position(|m| m.name == step.from) else {
            return Ok(());
        };
        if step.prove_heads {
            self.prove_heads(actor);
            return Ok(());
        }
        if !self.members[actor].active() {
            let tries = self.step_attempts.entry(k).or_default();
            *tries += 1;
            if *tries <= STEP_RETRIES {
                self.sched.after(200 * MS, Event::Step(k));
            } else {
                self.notes
                    .push(format!("step {k}: {} never became able to send", step.from));
            }
            return Ok(());
        }
        if let Some(what) = step.misbehave {
            self.misbehave(actor, k, what);
            return Ok(());
        }
        if let Some(change) = self.change_of(actor, &step) {
            self.prepare_update(actor, k, change, false, false);
            return Ok(());
        }
        let content = if let Some(text) = &step.send {
            self.sent.push(SentRecord {
                from: step.from.clone(),
                plaintext: text.clone(),
            });
            Content::Message(text.as_bytes().to_vec())
        } else if step.receipt {
            match self.members[actor]
                .conversation()
                .and_then(Conversation::receipt)
            {
                Some(c) => c,
                None => return Ok(()),
            }
        } else {
            return Ok(());
        };
        self.compose_and_submit(actor, Some(k), content, 0);
        Ok(())
    }

    /// Asks the router for the next slot set of `change`; `swap` (a
    /// compromised admin) swaps two members' slots in the Update it sends;
    /// `unchecked` (a compromised admin) sends it even if its client's
    /// rules refuse it.
    fn prepare_update(
        &mut self,
        actor: usize,
        step: usize,
        change: Change,
        swap: bool,
        unchecked: bool,
    ) {
        let Some(next) = self.next_members(actor, &change) else {
            self.notes
                .push(format!("step {step}: the change does not apply"));
            return;
        };
        self.send(Event::ToRouter {
            from: actor,
            call: Call::PrepareUpdate(self.conversation, next),
            purpose: Purpose::Prepare {
                step,
                change,
                swap,
                unchecked,
            },
        });
    }

    fn change_of(&self, actor: usize, step: &Step) -> Option<Change> {
        let account_of = |name: &String| {
            self.members
                .iter()
                .find(|m| &m.name == name)
                .map(|m| m.account)
        };
        if let Some(name) = &step.add {
            return Some(Change::Add {
                account: account_of(name)?,
                role: SlotRole::Member,
            });
        }
        if let Some(name) = &step.remove {
            return Some(Change::Remove {
                account: account_of(name)?,
            });
        }
        if step.leave {
            let _ = actor;
            return Some(Change::Leave);
        }
        None
    }

    /// The complete next member list after `change`, from the actor's view.
    fn next_members(&self, actor: usize, change: &Change) -> Option<Vec<(AccountId, SlotRole)>> {
        let m = self.members.get(actor)?;
        let mut roster = m.conversation()?.membership()?.members().clone();
        match change {
            Change::Add { account, role } => {
                roster.insert(*account, *role);
            }
            Change::Remove { account } => {
                roster.remove(account)?;
            }
            Change::Leave => {
                roster.remove(&m.account)?;
            }
            Change::SetRole { account, role } => {
                roster.insert(*account, *role);
            }
        }
        // In member order, not account-id order (see `effects`).
        let mut list: Vec<(AccountId, SlotRole)> = roster.into_iter().collect();
        list.sort_by_key(|(a, _)| self.by_account.get(a).copied());
        Some(list)
    }

    fn compose_and_submit(
        &mut self,
        actor: usize,
        step: Option<usize>,
        content: Content,
        attempt: u32,
    ) {
        let now = self.now();
        let Self { sched, members, .. } = self;
        let Some(m) = members.get_mut(actor) else {
            return;
        };
        let composed = match m.compose(content.clone(), sched.rng()) {
            Ok(c) => c,
            Err(e) => {
                self.notes.push(format!(
                    "{} could not compose step {:?}: {e}",
                    self.members[actor].name, step
                ));
                return;
            }
        };
        self.submit_composed(actor, step, Some(content), attempt, composed, now);
    }

    fn submit_composed(
        &mut self,
        actor: usize,
        step: Option<usize>,
        content: Option<Content>,
        attempt: u32,
        composed: grompi_client::compose::Composed,
        now: u64,
    ) {
        let hash = composed.envelope.hash();
        self.composed.insert(
            *hash.as_bytes(),
            Composed {
                step,
                sender: actor,
                submitted_at: now,
                tags: composed.submission_tags.clone(),
                refused: false,
            },
        );
        self.send(Event::ToRouter {
            from: actor,
            call: Call::Submit(Submission {
                envelope: composed.envelope,
                tags: composed.submission_tags,
            }),
            purpose: Purpose::Submit {
                step,
                content: content.map(Box::new),
                attempt,
                hash: *hash.as_bytes(),
            },
        });
    }

    fn reply(&mut self, to: usize, purpose: Purpose, result: Result<Response, String>) {
        match (purpose, result) {
            (Purpose::Retry { call, inner }, _) => {
                // The router was down: the client tries again later.
                self.measure.messages += 1;
                self.sched.after(
                    DOWNTIME,
                    Event::ToRouter {
                        from: to,
                        call: *call,
                        purpose: *inner,
                    },
                );
            }
            (Purpose::Create, Ok(Response::Created(resp))) => self.created(to, resp),
            (
                Purpose::Prepare {
                    step,
                    change,
                    swap,
                    unchecked,
                },
                Ok(Response::Prepared(resp)),
            ) => {
                let Some(mut update) = update_content(change, resp.slots, &resp.assignments) else {
                    self.notes.push(format!(
                        "step {step}: the router's next slot set is unusable"
                    ));
                    return;
                };
                if swap {
                    // A compromised admin: two members get each other's slots.
                    let by_account = &self.by_account;
                    let actor = self.members.get(to).map(|m| m.account);
                    let swapped = actor.is_some_and(|a| {
                        member_toolkit::swap_slots(&mut update, a, |x| {
                            by_account.get(x).copied().unwrap_or(usize::MAX)
                        })
                    });
                    if !swapped {
                        self.notes
                            .push(format!("step {step}: no two members to swap"));
                        return;
                    }
                }
                if unchecked {
                    self.submit_unchecked_update(to, step, update);
                    return;
                }
                self.compose_and_submit(to, Some(step), Content::Update(update), 0);
            }
            (Purpose::Submit { .. }, Ok(_)) => {}
            (
                Purpose::Submit {
                    step,
                    content,
                    attempt,
                    hash,
                },
                Err(e),
            ) => {
                if let Some(c) = self.composed.get_mut(&hash) {
                    c.refused = true;
                }
                // Refused by every order server (e.g. composed in an epoch
                // that ended meanwhile): compose again once caught up.
                let retry = content.filter(|c| {
                    attempt < 3 && matches!(**c, Content::Message(_) | Content::Receipt(_))
                });
                if let Some(content) = retry {
                    self.sched.after(
                        500 * MS,
                        Event::Recompose {
                            actor: to,
                            step,
                            content,
                            attempt: attempt + 1,
                        },
                    );
                } else {
                    self.notes
                        .push(format!("submission of step {step:?} failed: {e}"));
                }
            }
            (Purpose::Prove, Ok(Response::ProveHeads(plan))) => {
                let branch = self.branch_of(to);
                let all = matches!(
                    self.scenario.adversary.router,
                    RouterStrategy::Fork {
                        relay_all_proofs: true,
                        ..
                    }
                );
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
                    if let Some(mut p) =
                        server.prove(branch, &plan.conversation, plan.slot, plan.nonce)
                    {
                        if self.scenario.adversary.router == RouterStrategy::ForgeHeadProofs {
                            let mut t = *p.tag.as_bytes();
                            t[0] ^= 0x01;
                            p.tag = grompi_proto::Tag::from_bytes(t);
                        }
                        proofs.push(p);
                    }
                }
                self.send(Event::Proofs { to, proofs });
            }
            (purpose, Err(e)) => {
                self.notes.push(format!(
                    "{}: {:?} failed: {e}",
                    self.members[to].name,
                    purpose.name()
                ));
            }
            (purpose, Ok(_)) => {
                self.notes.push(format!(
                    "{}: unexpected reply to {}",
                    self.members[to].name,
                    purpose.name()
                ));
            }
        }
    }

    fn created(&mut self, creator: usize, resp: pb::CreateConversationResponse) {
        let Some(slots) = resp.slots.and_then(|s| SlotSet::try_from(s).ok()) else {
            self.notes.push("the router's slot set is unusable".into());
            return;
        };
        let Some(members) = member_entries(&slots, &resp.assignments) else {
            self.notes
                .push("the router's assignments are unusable".into());
            return;
        };
        let now = self.now();
        let Self {
            sched,
            members: nodes,
            ..
        } = self;
        let Some(m) = nodes.get_mut(creator) else {
            return;
        };
        match m.create(slots, members, sched.rng()) {
            Ok(composed) => {
                self.submit_composed(creator, None, None, 0, composed, now);
            }
            Err(e) => self
                .notes
                .push(format!("creating the conversation failed: {e}")),
        }
    }

    fn prove_heads(&mut self, actor: usize) {
        let Self { sched, members, .. } = self;
        let Some(conv) = members
            .get_mut(actor)
            .and_then(MemberNode::conversation_mut)
        else {
            return;
        };
        let nonce = conv.head_proof_nonce(sched.rng());
        let id = self.conversation;
        self.send(Event::ToRouter {
            from: actor,
            call: Call::ProveHeads {
                conversation: id,
                nonce,
            },
            purpose: Purpose::Prove,
        });
    }

    fn audit(&mut self) {
        let now = self.now();
        for m in 0..self.members.len() {
            let node = &mut self.members[m];
            if !node.active() {
                continue;
            }
            // As the real client does: a stall is reported only when the
            // member holds deliveries it cannot accept.
            if let Some(c) = node.conversation_mut()
                && c.stuck()
            {
                c.report_stall();
            }
            node.drain(now);
            self.prove_heads(m);
        }
    }

    fn fork(&mut self, groups: usize) -> Result<(), SimError> {
        let n = self.servers.len();
        let naive = matches!(
            self.scenario.adversary.router,
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
}

/// Registers an account with the router core: challenge, signature, order
/// keys. Returns the session token.
fn register(
    router: &mut RouterNode,
    sched: &mut Schedule<Event>,
    secrets: &mut Secrets,
    order_keys: &[grompi_proto::SlotKey],
) -> Result<Vec<u8>, SimError> {
    let setup = |m: &str| SimError::Setup(m.to_owned());
    let t = router.ticket();
    let effects = router.handle_now(0, t, Command::GetChallenge, 0, sched.rng());
    let challenge = effects
        .into_iter()
        .find_map(|e| match e {
            Effect::Reply(_, Ok(Response::Challenge(c))) => Some(c.challenge),
            _ => None,
        })
        .ok_or_else(|| setup("no challenge"))?;
    let parsed = grompi_proto::Challenge::parse("challenge", &challenge)
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let identity = secrets.pairwise.identity();
    let fallback = secrets.pairwise.new_fallback_prekey();
    let request = pb::RegisterRequest {
        identity: Some(pb::IdentityKeys {
            signing_key: identity.signing.to_vec(),
            session_key: identity.session.to_vec(),
        }),
        challenge: challenge.clone(),
        signature: secrets.pairwise.sign(&parsed.signing_message()).to_vec(),
        fallback_prekey: Some(pb::SignedPrekey {
            key: fallback.key.to_vec(),
            signature: fallback.signature.to_vec(),
        }),
        one_time_prekeys: vec![],
        order_keys: order_keys.iter().map(|k| k.to_vec()).collect(),
    };
    let new = grompi_router::directory::parse_register(&request)
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let t = router.ticket();
    let effects = router.handle_now(0, t, Command::Register(new), 0, sched.rng());
    effects
        .into_iter()
        .find_map(|e| match e {
            Effect::Reply(_, Ok(Response::Registered(r))) => Some(r.session_token),
            _ => None,
        })
        .ok_or_else(|| setup("registration refused"))
}

/// The member list of a slot set and the router's assignments.
fn member_entries(slots: &SlotSet, assignments: &[pb::SlotAssignment]) -> Option<Vec<MemberEntry>> {
    assignments
        .iter()
        .map(|a| {
            let account = AccountId::parse("assignment.account", &a.account).ok()?;
            let slot = SlotIndex(a.slot);
            let role = slots.get(slot)?.role;
            Some(MemberEntry {
                account,
                role,
                slot,
            })
        })
        .collect()
}

fn update_content(
    change: Change,
    slots: Option<pb::SlotSet>,
    assignments: &[pb::SlotAssignment],
) -> Option<UpdateContent> {
    let next_slots = SlotSet::try_from(slots?).ok()?;
    let next_members = member_entries(&next_slots, assignments)?;
    Some(UpdateContent {
        change,
        next_slots,
        next_members,
    })
}

/// Labels distinct heads at each index "A", "B", ... by first appearance
/// over the members in order.
fn history_labels(members: &[MemberNode]) -> Vec<BTreeMap<u64, String>> {
    let mut seen: BTreeMap<u64, Vec<[u8; 32]>> = BTreeMap::new();
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let mut labels = BTreeMap::new();
        if let Some(c) = m.conversation() {
            for e in c.transcript().entries() {
                let heads = seen.entry(e.index.0).or_default();
                let head = *e.head.as_bytes();
                let pos = match heads.iter().position(|h| *h == head) {
                    Some(p) => p,
                    None => {
                        heads.push(head);
                        heads.len() - 1
                    }
                };
                labels.insert(e.index.0, label(pos));
            }
        }
        out.push(labels);
    }
    out
}

fn label(pos: usize) -> String {
    let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    match letters.get(pos) {
        Some(c) => char::from(*c).to_string(),
        None => format!("#{pos}"),
    }
}

impl World {
    fn report(&mut self, seed: u64) -> RunReport {
        let labels = history_labels(&self.members);
        let names: BTreeMap<AccountId, String> = self
            .members
            .iter()
            .map(|m| (m.account, m.name.clone()))
            .chain(self.puppets.iter().map(|p| (p.account, p.name.clone())))
            .collect();
        let mut views = Vec::with_capacity(self.members.len());
        for (i, m) in self.members.iter().enumerate() {
            let mut roster: BTreeSet<AccountId> = m
                .initial_roster
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            let mut accepted = Vec::new();
            let entries = m
                .conversation()
                .map(|c| c.transcript().entries().to_vec())
                .unwrap_or_default();
            if m.initial_roster.is_none()
                && let Some(c) = m.conversation()
                && let Some(ms) = c.membership()
            {
                // A joiner starts from the list the Update that added it set.
                roster = ms.members().keys().copied().collect();
            }
            for e in &entries {
                let info = m.info.get(&e.index.0).cloned().unwrap_or_default();
                match info.change {
                    Some(Change::Add { account, .. }) => {
                        roster.insert(account);
                    }
                    Some(Change::Remove { account }) => {
                        roster.remove(&account);
                    }
                    Some(Change::Leave) => {
                        let sender = self
                            .composed
                            .get(e.envelope_hash.as_bytes())
                            .and_then(|c| self.members.get(c.sender))
                            .map(|s| s.account);
                        if let Some(a) = sender {
                            roster.remove(&a);
                        }
                    }
                    _ => {}
                }
                let mut members_after: Vec<String> = roster
                    .iter()
                    .filter_map(|a| names.get(a).cloned())
                    .collect();
                members_after.sort();
                accepted.push(AcceptedEntry {
                    index: e.index.0,
                    epoch: e.epoch.0,
                    envelope_hash: e.envelope_hash.to_hex(),
                    head: e.head.to_hex(),
                    history: labels
                        .get(i)
                        .and_then(|l| l.get(&e.index.0))
                        .cloned()
                        .unwrap_or_default(),
                    kind: info.kind.map_or("unknown", kind_name).to_owned(),
                    sender: info.sender.and_then(|a| names.get(&a).cloned()),
                    plaintext: info.plaintext.clone(),
                    members_after,
                    accepted_ms: info.accepted_at / MS,
                });
                if let Some(c) = self.composed.get(e.envelope_hash.as_bytes())
                    && c.step.is_some()
                    && i != c.sender
                {
                    self.measure
                        .latencies_us
                        .push(info.accepted_at.saturating_sub(c.submitted_at));
                }
            }
            let alerts = m
                .alerts
                .iter()
                .map(|(_, a)| AlertRecord {
                    kind: a.kind.kind().name().to_owned(),
                    index: a.index.map(|i| i.0),
                    server: a.server,
                    message: a.kind.to_string(),
                })
                .collect();
            // Own envelopes that no honest member ever accepted: the sender
            // was censored and must know it.
            let censored = self
                .composed
                .iter()
                .filter(|(h, c)| {
                    c.sender == i
                        && c.step.is_some()
                        && !c.refused
                        && !self.members.iter().any(|o| {
                            o.honest
                                && o.conversation().is_some_and(|conv| {
                                    conv.transcript()
                                        .entries()
                                        .iter()
                                        .any(|e| e.envelope_hash.as_bytes() == *h)
                                })
                        })
                })
                .count();
            let listed_puppets = self
                .puppets
                .iter()
                .filter(|p| m.ever_listed.contains(&p.account))
                .map(|p| p.name.clone())
                .collect();
            views.push(MemberView {
                name: m.name.clone(),
                honest: m.honest,
                removed: m.removed(),
                joined_late: m.initial_roster.is_none(),
                accepted,
                alerts,
                censored,
                listed_puppets,
            });
        }
        let accepted_indices: BTreeSet<(String, u64)> = views
            .iter()
            .flat_map(|v| {
                v.accepted
                    .iter()
                    .map(|e| (e.history.clone(), e.index))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.measure.accepted_envelopes = accepted_indices.len() as u64;
        let verdicts = judge(&views, &self.sent);
        let refusals = self
            .servers
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.refusals.is_empty())
            .map(|(i, s)| (format!("order server {i}"), s.refusals.clone()))
            .collect();
        let mut report = RunReport::new(&self.scenario, seed, verdicts, views)
            .with_refusals(&self.scenario, refusals);
        report.notes = std::mem::take(&mut self.notes);
        report.sent = self.sent.clone();
        report.metrics = self.measure.summary(self.now() / MS);
        report
    }
}

fn kind_name(k: grompi_proto::EnvelopeKind) -> &'static str {
    use grompi_proto::EnvelopeKind as K;
    match k {
        K::Setup => "setup",
        K::Message => "message",
        K::Update => "update",
        K::Receipt => "receipt",
        K::Noise => "noise",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_router::driver::DriverConfig;

    /// The router runs production's driver configuration, and the runs
    /// exercise it: batches wait behind a running commit (folded into the
    /// next one: `router_node`'s tests), early effects leave before their
    /// commit, and an order server has several jobs in flight at once.
    #[test]
    fn the_router_runs_the_production_configuration() {
        assert_eq!(router_node::DRIVER, DriverConfig::PRODUCTION);
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/");
        let mut stats = router_node::DriverStats::default();
        let mut max_in_flight = 0;
        for name in ["protest-honest", "router-crash", "order-server-crash"] {
            let path = format!("{dir}{name}.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let scenario = Scenario::parse(&path, &text).unwrap();
            for seed in 0..3 {
                let mut world = World::build(&scenario, seed).unwrap();
                world.play(RunOptions::default()).unwrap();
                let s = world.router.stats;
                stats.commits += s.commits;
                stats.queued += s.queued;
                stats.folded += s.folded;
                stats.early += s.early;
                max_in_flight = max_in_flight.max(world.max_in_flight);
            }
        }
        assert!(stats.queued > 0, "{stats:?}");
        assert!(stats.early > 0, "{stats:?}");
        assert!(max_in_flight > 1, "at most {max_in_flight} job in flight");
    }

    #[test]
    fn labels_run_a_to_z_then_number() {
        assert_eq!(label(0), "A");
        assert_eq!(label(1), "B");
        assert_eq!(label(26), "#26");
    }
}
