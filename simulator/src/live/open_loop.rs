//! `bench --open-loop`: an operator's capacity figure. Many conversations
//! at once, messages arriving as a Poisson process whose rate is stepped
//! up until the 99th percentile latency passes a limit (or the network no
//! longer keeps up), once against the attested network and once against
//! the same router as a plain relay.
//!
//! Each arm starts a fresh [`Devnet`], registers `conversations × group`
//! accounts (each a member of exactly one conversation), creates the
//! conversations, subscribes every account once, and has each conversation's
//! creator submit its Setup. Then, per step, arrival times are drawn from
//! a seeded RNG (exponential gaps at the step's rate); at each arrival a
//! random member of a random conversation submits a Message without waiting
//! for anything else (a member's own messages go out one after the other,
//! since the router requires its sequence numbers in order: a message that
//! arrives while the member's previous one is unacknowledged waits, and
//! that wait is part of its latency). The latency of a message runs from its
//! scheduled arrival (so a load generator that falls behind on a busy
//! machine counts against the step instead of hiding the queue) to the
//! moment the last member of its conversation accepted it
//! (the head chain and a quorum of its own attestation tags checked, the
//! [`Acceptor`] of the closed-loop benchmark).
//!
//! Client design, to keep its own cost low: one TLS connection per 200
//! subscriptions (the router allows 256 streams per connection) and a few
//! for submissions; one task per subscription that checks each delivery
//! and counts acceptances in a shared table; no Olm and no body cipher
//! (they are the members' own cost, the same in both arms). What the client
//! spends is reported as its own CPU column.

use super::LiveError;
use super::bench::{CpuPerMessage, Storage, cpu_times, machine, percentile};
use super::bench_client::{Acceptor, BenchAccount, MemberSlot, NotAccepted, connect_router};
use super::devnet::{Devnet, DevnetOptions};
use super::probes::{
    Histogram, ORDER_CHECKPOINT, ORDER_COMMIT, Probes, ROUTER_CHECKPOINT, ROUTER_COMMIT,
    ROUTER_SUBMIT, Scrape, between, scrape_all,
};
use grompi_proto::pb::{self, router_client::RouterClient};
use grompi_proto::{ConversationId, EnvelopeHash, EnvelopeKind, OrderServerKey};
use rand::rngs::ChaCha20Rng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tonic::transport::Channel;

/// Subscriptions per TLS connection (the router's default allows 256
/// concurrent streams on one).
const SUBSCRIPTIONS_PER_CONNECTION: usize = 200;
/// Concurrent calls while setting up (registrations, creations, Setups).
const SETUP_CONCURRENCY: usize = 64;

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopOptions {
    /// Scratch directory for the devnets (removed arm by arm).
    #[serde(skip)]
    pub dir: PathBuf,
    /// Directory with the `router` and `order-server` binaries, or this
    /// `grompi-sim` executable, which then runs every server itself
    /// (self-hosted: the same library code; what the crate's tests use).
    #[serde(skip)]
    pub binaries: PathBuf,
    /// N of each attested arm (one arm per N, plus the relay).
    pub servers: Vec<usize>,
    /// Conversations, all active at once.
    pub conversations: usize,
    /// Members per conversation (every member is its own account).
    pub group: usize,
    /// Offered rates, messages per second over all conversations, in order.
    pub rates: Vec<f64>,
    /// How long each step offers its rate, in seconds.
    pub step_seconds: f64,
    /// A step is sustained while its p99 stays at or below this (ms).
    pub p99_limit_ms: f64,
    /// ... and it completes at least (1 - margin) of the offered rate.
    pub rate_margin: f64,
    /// Connections for submissions.
    pub submit_connections: usize,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// Per-recipient block size in bytes.
    pub block_bytes: usize,
    /// The RNG seed for arrivals and the choice of sender.
    pub seed: u64,
    /// Smallest majority quorum instead of t = N.
    pub majority: bool,
    /// The order servers' `commit_gather_us`: one attested arm per N and
    /// per value, in this order (empty: one arm per N, at the
    /// configuration's default).
    pub order_gather_us: Vec<u64>,
    /// How many times every arm runs (at least 1). Round r runs the relay,
    /// then every attested arm (odd rounds in the reverse order), with the
    /// seed `seed + r`, so that arms compared within a round saw the
    /// machine at the same time; the summary gives each attested arm's
    /// median ratio over the rounds.
    pub rounds: usize,
}

/// One step of one arm.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The Poisson rate asked for, messages per second.
    pub offered_per_s: f64,
    /// Arrivals actually drawn for the step, per second of the step.
    pub arrivals_per_s: f64,
    /// Messages dispatched.
    pub sent: u64,
    /// Messages accepted by every member of their conversation.
    pub completed: u64,
    /// Submissions the router refused or failed (counted as incomplete).
    pub failed: u64,
    /// Dispatched, neither completed nor failed when the drain ended.
    pub incomplete: u64,
    /// Acceptances by every member that happened within the step's window,
    /// per second: the rate the network kept up with.
    pub achieved_per_s: f64,
    /// Median latency (scheduled arrival to accepted by every member), ms.
    pub latency_p50_ms: f64,
    /// 99th percentile, ms; messages never completed count as the time
    /// until the drain gave up (a lower bound).
    pub latency_p99_ms: f64,
    /// The largest delay of a dispatch behind its arrival time, ms: the
    /// load generator keeping up (a few ms at most on an idle machine).
    pub dispatch_lag_max_ms: f64,
    /// CPU per completed message over the step and its drain.
    pub cpu_per_message: Option<CpuPerMessage>,
    /// Order-server commit and router round-trip probes (attested arms).
    pub probes: Option<Probes>,
    /// Where the latency goes, both arms.
    pub split: LatencySplit,
    /// The slowest commits of the step and its drain (a checkpoint, a
    /// stalled disk): what a p99 tail waits behind.
    pub commit_tail: CommitTail,
    /// Whether the step held: p99 within the limit, the achieved rate
    /// within the margin of the arrivals, nothing failed or left over.
    pub sustained: bool,
    /// Why not, when it did not.
    pub note: String,
}

/// Where a step's latency goes, both arms: from the scheduled arrival to
/// the Submit reply at the client (which the router sends once the
/// envelope is committed, for the relay, or attested by a quorum), the
/// part of it the router spent inside Submit, and what follows the reply
/// until the last member accepted.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySplit {
    /// Scheduled arrival to the Submit reply at the client, p50, ms.
    pub reply_p50_ms: Option<f64>,
    /// ... p99, ms.
    pub reply_p99_ms: Option<f64>,
    /// The router's Submit handling (`router_quorum_wait_seconds`: the
    /// call's arrival to its reply), p50, ms.
    pub router_submit_p50_ms: Option<f64>,
    /// ... p99, ms.
    pub router_submit_p99_ms: Option<f64>,
    /// The client's part before the router's: arrival to the call reaching
    /// the router and the reply back (building the envelope, waiting for
    /// the sender's previous message, the connections, the client's and
    /// the router's queues for a core): `reply_p50_ms -
    /// router_submit_p50_ms`.
    pub outside_router_p50_ms: Option<f64>,
}

impl LatencySplit {
    fn of(replies: &mut [Duration], router_before: &[Scrape], router_after: &[Scrape]) -> Self {
        replies.sort_unstable();
        let reply = |q| (!replies.is_empty()).then(|| percentile(replies, q));
        let submit = between(router_before, router_after, ROUTER_SUBMIT, "");
        let reply_p50_ms = reply(0.5);
        let router_submit_p50_ms = submit.quantile_ms(0.5);
        LatencySplit {
            reply_p50_ms,
            reply_p99_ms: reply(0.99),
            router_submit_p50_ms,
            router_submit_p99_ms: submit.quantile_ms(0.99),
            outside_router_p50_ms: reply_p50_ms
                .zip(router_submit_p50_ms)
                .map(|(c, r)| (c - r).max(0.0)),
        }
    }
}

/// The slowest commits of one step, from the servers' commit histograms:
/// the router's (synced and deferred) and every order server's.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CommitTail {
    /// The router's slowest commit, ms: the upper edge of the highest
    /// histogram bucket that gained an observation (none without commits).
    pub router_max_ms: Option<f64>,
    /// The router's commits that took more than 10 ms.
    pub router_over_10ms: u64,
    /// The slowest commit of any order server, ms (as above).
    pub order_max_ms: Option<f64>,
    /// Order-server commits, all servers, that took more than 10 ms.
    pub order_over_10ms: u64,
    /// The router's checkpoints (which its commit thread waits for).
    pub router_checkpoints: u64,
    /// Their total duration, ms.
    pub router_checkpoint_ms: f64,
    /// Checkpoints of every order server together.
    pub order_checkpoints: u64,
    /// Their total duration, ms, summed over the servers.
    pub order_checkpoint_ms: f64,
}

/// The upper edge of the highest bucket holding an observation, ms (the
/// lower edge for the `+Inf` bucket).
fn max_ms(h: &Histogram) -> Option<f64> {
    if h.count <= 0.0 {
        return None;
    }
    let mut lower = 0.0;
    for (le, cumulative) in &h.buckets {
        if *cumulative >= h.count {
            return Some(if le.0.is_finite() { le.0 } else { lower } * 1000.0);
        }
        lower = le.0;
    }
    Some(lower * 1000.0)
}

/// Observations above `seconds` (a bucket edge).
fn over(h: &Histogram, seconds: f64) -> u64 {
    let within = h
        .buckets
        .iter()
        .find(|(le, _)| (le.0 - seconds).abs() < 1e-12)
        .map_or(0.0, |(_, c)| *c);
    (h.count - within).max(0.0) as u64
}

impl CommitTail {
    fn between(
        router_before: &[Scrape],
        router_after: &[Scrape],
        order_before: &[Scrape],
        order_after: &[Scrape],
    ) -> CommitTail {
        let router = between(router_before, router_after, ROUTER_COMMIT, "");
        let order = between(order_before, order_after, ORDER_COMMIT, "");
        let router_checkpoints = between(router_before, router_after, ROUTER_CHECKPOINT, "");
        let order_checkpoints = between(order_before, order_after, ORDER_CHECKPOINT, "");
        CommitTail {
            router_max_ms: max_ms(&router),
            router_over_10ms: over(&router, 0.01),
            order_max_ms: max_ms(&order),
            order_over_10ms: over(&order, 0.01),
            router_checkpoints: router_checkpoints.count.max(0.0) as u64,
            router_checkpoint_ms: router_checkpoints.sum.max(0.0) * 1000.0,
            order_checkpoints: order_checkpoints.count.max(0.0) as u64,
            order_checkpoint_ms: order_checkpoints.sum.max(0.0) * 1000.0,
        }
    }
}

/// One arm: the relay, or the attested network with N order servers.
#[derive(Debug, Clone, Serialize)]
pub struct Arm {
    /// The round it ran in (0 first).
    pub round: usize,
    /// `attested` or `relay`.
    pub mode: String,
    /// Order servers (0 for the relay).
    pub servers: usize,
    /// The order servers' gathering window, when the run set one.
    pub order_gather_us: Option<u64>,
    /// Tags a member requires (0 for the relay).
    pub quorum: usize,
    /// Seconds to register every account.
    pub register_seconds: f64,
    /// Seconds to create every conversation.
    pub create_seconds: f64,
    /// Seconds to subscribe every account.
    pub subscribe_seconds: f64,
    /// Seconds until every conversation's Setup was accepted by every member.
    pub setup_seconds: f64,
    /// The steps measured, in order (stepping stops after the first that
    /// did not hold).
    pub steps: Vec<Step>,
    /// The highest offered rate that held (0 when none did).
    pub sustained_offered_per_s: f64,
    /// The achieved rate of that step.
    pub sustained_achieved_per_s: f64,
}

impl Arm {
    /// Whether the arm measured steps and none of them held: its capacity
    /// is below the lowest rate offered (reported as 0).
    pub fn held_nothing(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| !s.sustained)
    }

    /// The highest offered rate held, for the report: "none (below R)"
    /// when the first step, at R, did not hold.
    fn highest_held(&self) -> String {
        match (self.held_nothing(), self.steps.first()) {
            (true, Some(first)) => format!("none (below {:.0})", first.offered_per_s),
            _ => format!("{:.0}", self.sustained_offered_per_s),
        }
    }
}

/// The report's note on arms that held none of the rates offered (empty
/// when every arm held one): their 0 is "below the first step", not zero.
fn held_nothing_note(arms: &[Arm]) -> String {
    arms.iter()
        .filter(|a| a.held_nothing())
        .filter_map(|a| a.steps.first())
        .map(|st| st.offered_per_s)
        .reduce(f64::min)
        .map_or_else(String::new, |lowest| {
            format!(
                "\nA rate of 0 (ratio 0.00x) is an arm that held none of the rates offered: \
                 its capacity is below its first step (down to {lowest:.0}/s), not zero. \
                 Run it again with lower `--rates` to measure it.\n"
            )
        })
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopReport {
    /// CPU model and count.
    pub machine: String,
    /// The filesystem of the servers' data directories.
    pub storage: Storage,
    /// What was asked.
    pub options: OpenLoopOptions,
    /// Round by round, in the order run: the relay, then one arm per N
    /// (and window); odd rounds in the reverse order.
    pub arms: Vec<Arm>,
    /// Per attested arm: its sustained achieved rate over the relay's of
    /// the same round.
    pub ratios: Vec<CapacityRatio>,
    /// Per attested arm (N and window): the ratios of every round and
    /// their median.
    pub summary: Vec<CapacitySummary>,
}

/// An attested arm's capacity next to the relay's.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityRatio {
    /// The round of both arms.
    pub round: usize,
    /// N of the attested arm.
    pub servers: usize,
    /// Its order servers' gathering window, when the run set one.
    pub order_gather_us: Option<u64>,
    /// The relay's highest sustained achieved rate in that round.
    pub relay_per_s: f64,
    /// This arm's.
    pub attested_per_s: f64,
    /// Its highest sustained achieved rate over the relay's (target 2:
    /// at least 0.6).
    pub ratio: f64,
}

impl CapacityRatio {
    /// Each attested arm of one round's `arms` against that round's relay.
    fn of_round(round: usize, arms: &[Arm]) -> Vec<CapacityRatio> {
        let relay_per_s = arms
            .iter()
            .find(|a| a.mode == "relay")
            .map_or(0.0, |a| a.sustained_achieved_per_s);
        arms.iter()
            .filter(|a| a.mode == "attested")
            .map(|a| CapacityRatio {
                round,
                servers: a.servers,
                order_gather_us: a.order_gather_us,
                relay_per_s,
                attested_per_s: a.sustained_achieved_per_s,
                ratio: a.sustained_achieved_per_s / relay_per_s.max(f64::MIN_POSITIVE),
            })
            .collect()
    }
}

/// One attested arm over every round.
#[derive(Debug, Clone, Serialize)]
pub struct CapacitySummary {
    /// N.
    pub servers: usize,
    /// The order servers' gathering window, when the run set one.
    pub order_gather_us: Option<u64>,
    /// The relay's sustained achieved rate, round by round.
    pub relay_per_s: Vec<f64>,
    /// This arm's, round by round.
    pub attested_per_s: Vec<f64>,
    /// Their ratios, round by round.
    pub ratios: Vec<f64>,
    /// The median of the ratios (of the middle two for an even count).
    pub median_ratio: f64,
    /// The median of the relay's rates.
    pub median_relay_per_s: f64,
    /// The median of this arm's rates.
    pub median_attested_per_s: f64,
}

/// The median of `values` (the mean of the middle two for an even count;
/// 0 for none).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl CapacitySummary {
    /// One summary per attested arm (N and window, in the order first
    /// run), over the rounds of `ratios`.
    fn of(ratios: &[CapacityRatio]) -> Vec<CapacitySummary> {
        let mut kinds: Vec<(usize, Option<u64>)> = Vec::new();
        for r in ratios {
            if !kinds.contains(&(r.servers, r.order_gather_us)) {
                kinds.push((r.servers, r.order_gather_us));
            }
        }
        kinds
            .into_iter()
            .map(|(servers, window)| {
                let rounds: Vec<&CapacityRatio> = ratios
                    .iter()
                    .filter(|r| r.servers == servers && r.order_gather_us == window)
                    .collect();
                let relay_per_s: Vec<f64> = rounds.iter().map(|r| r.relay_per_s).collect();
                let attested_per_s: Vec<f64> = rounds.iter().map(|r| r.attested_per_s).collect();
                let ratios: Vec<f64> = rounds.iter().map(|r| r.ratio).collect();
                CapacitySummary {
                    servers,
                    order_gather_us: window,
                    median_ratio: median(&ratios),
                    median_relay_per_s: median(&relay_per_s),
                    median_attested_per_s: median(&attested_per_s),
                    relay_per_s,
                    attested_per_s,
                    ratios,
                }
            })
            .collect()
    }
}

/// What the client knows of every message in flight.
#[derive(Default)]
struct Tracker {
    inner: Mutex<TrackerInner>,
    notify: Notify,
}

#[derive(Default)]
struct TrackerInner {
    /// Messages not yet accepted by every member: step, dispatch, acceptances still missing.
    pending: HashMap<EnvelopeHash, (usize, Instant, usize)>,
    /// Completed messages: step, dispatch, done.
    done: Vec<(usize, Instant, Instant)>,
    /// Failed submissions per step.
    failed: HashMap<usize, u64>,
    /// Per step, each successful Submit's reply: time since its arrival.
    replies: HashMap<usize, Vec<Duration>>,
    /// Messages dispatched whose task has not yet built and registered
    /// its envelope, per step.
    unregistered: HashMap<usize, usize>,
    /// A subscription that ended or a delivery a member refused.
    broken: Option<String>,
}

/// The step number of the Setups.
const SETUP_STEP: usize = usize::MAX;

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A message of `step` is on its way (its envelope not yet built).
    fn dispatched(&self, step: usize) {
        *self.lock().unregistered.entry(step).or_default() += 1;
    }

    fn expect(&self, hash: EnvelopeHash, step: usize, start: Instant, members: usize) {
        let mut inner = self.lock();
        inner.pending.insert(hash, (step, start, members));
        if let Some(n) = inner.unregistered.get_mut(&step) {
            *n = n.saturating_sub(1);
        }
    }

    fn accepted(&self, hash: &EnvelopeHash) {
        let now = Instant::now();
        let finished = {
            let mut inner = self.lock();
            let finished = match inner.pending.get_mut(hash) {
                Some(p) if p.2 <= 1 => Some((p.0, p.1)),
                Some(p) => {
                    p.2 -= 1;
                    None
                }
                None => None,
            };
            if let Some((step, start)) = finished {
                inner.pending.remove(hash);
                inner.done.push((step, start, now));
            }
            finished.is_some()
        };
        if finished {
            self.notify.notify_waiters();
        }
    }

    fn replied(&self, step: usize, since_arrival: Duration) {
        self.lock()
            .replies
            .entry(step)
            .or_default()
            .push(since_arrival);
    }

    fn failed(&self, hash: &EnvelopeHash, step: usize) {
        let mut inner = self.lock();
        inner.pending.remove(hash);
        *inner.failed.entry(step).or_default() += 1;
        drop(inner);
        self.notify.notify_waiters();
    }

    fn broken(&self, why: String) {
        self.lock().broken.get_or_insert(why);
        self.notify.notify_waiters();
    }

    fn outstanding(&self, step: usize) -> usize {
        let inner = self.lock();
        inner.pending.values().filter(|p| p.0 == step).count()
            + inner.unregistered.get(&step).copied().unwrap_or(0)
    }

    /// Waits until no message of `step` is outstanding or `deadline`.
    async fn drain(&self, step: usize, deadline: tokio::time::Instant) -> Result<(), LiveError> {
        loop {
            let notified = self.notify.notified();
            if let Some(b) = self.lock().broken.clone() {
                return Err(LiveError::Setup(b));
            }
            if self.outstanding(step) == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// A member that sends: its slot and its next sequence number.
struct Sender {
    account: Arc<BenchAccount>,
    slot: MemberSlot,
    sequence: u64,
}

/// A conversation's members, as account positions.
struct Setup {
    senders: Vec<Arc<tokio::sync::Mutex<Sender>>>,
    subscriptions: Vec<tokio::task::JoinHandle<()>>,
    register_seconds: f64,
    create_seconds: f64,
    subscribe_seconds: f64,
    setup_seconds: f64,
}

fn rpc(what: &'static str) -> impl Fn(tonic::Status) -> LiveError {
    move |s| LiveError::Setup(format!("{what}: {:?} {}", s.code(), s.message()))
}

/// Runs `count` jobs over `concurrency` tasks; `job(i)` for each i.
async fn in_parallel<T, F, Fut>(
    count: usize,
    concurrency: usize,
    job: F,
) -> Result<Vec<T>, LiveError>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, LiveError>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let next = next.clone();
        let job = job.clone();
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, LiveError>(out);
                }
                out.push((i, job(i).await?));
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for w in workers {
        all.extend(
            w.await
                .map_err(|e| LiveError::Setup(format!("setup task: {e}")))??,
        );
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// The router configuration of a bench devnet: the limits that protect a
/// public router from one abusive address lifted, since every account of
/// the benchmark registers and connects from 127.0.0.1.
pub fn router_extra(relay: bool) -> String {
    format!(
        "{}[limits]\npeer_requests_per_second = 1000000\npeer_request_burst = 1000000\n\
         requests_per_second = 1000000\nrequest_burst = 1000000\n\
         max_connections = 100000\nmax_connections_per_address = 100000\n\
         max_subscribers = 10000000\nmax_challenges = 10000000\n\
         max_conversations_per_account = 1000000\n",
        if relay { "relay_only = true\n" } else { "" }
    )
}

async fn connections(net: &Devnet, count: usize) -> Result<Vec<RouterClient<Channel>>, LiveError> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        out.push(connect_router(&net.descriptor).await?);
    }
    Ok(out)
}

/// Registers, creates, subscribes and sends every Setup.
async fn set_up(
    options: &OpenLoopOptions,
    net: &Devnet,
    relay: bool,
    tracker: &Arc<Tracker>,
) -> Result<Setup, LiveError> {
    let g = options.group;
    let accounts_n = options.conversations * g;
    let pool = connections(net, options.submit_connections.max(1)).await?;
    let servers: Vec<OrderServerKey> = if relay {
        Vec::new()
    } else {
        net.descriptor
            .order_servers
            .iter()
            .map(|s| s.public_key)
            .collect()
    };
    let quorum = if relay { 0 } else { net.descriptor.quorum };
    let network = grompi_proto::ids::NetworkBinding::of_descriptor(&net.descriptor);

    let started = Instant::now();
    let accounts: Vec<Arc<BenchAccount>> = {
        let pool = pool.clone();
        in_parallel(accounts_n, SETUP_CONCURRENCY, move |i| {
            let mut client = pool[i % pool.len()].clone();
            async move {
                BenchAccount::register(&mut client, &network, 1_000_000 + i as u64, 2)
                    .await
                    .map(Arc::new)
            }
        })
        .await?
    };
    let register_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let created: Vec<pb::CreateConversationResponse> = {
        let pool = pool.clone();
        let accounts = accounts.clone();
        in_parallel(options.conversations, SETUP_CONCURRENCY, move |c| {
            let mut client = pool[c % pool.len()].clone();
            let members: Vec<Arc<BenchAccount>> = accounts[c * g..(c + 1) * g].to_vec();
            async move {
                client
                    .create_conversation(
                        members[0].authed(pb::CreateConversationRequest {
                            conversation_id: conversation_id(c).to_vec(),
                            members: members
                                .iter()
                                .enumerate()
                                .map(|(i, a)| pb::MemberSpec {
                                    account: a.account().to_vec(),
                                    role: if i == 0 { 2 } else { 1 },
                                })
                                .collect(),
                        }),
                    )
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(rpc("create"))
            }
        })
        .await?
    };
    let create_seconds = started.elapsed().as_secs_f64();

    // One subscription per account, checked by its own task.
    let started = Instant::now();
    let sub_pool = connections(net, accounts_n.div_ceil(SUBSCRIPTIONS_PER_CONNECTION)).await?;
    let mut senders = Vec::with_capacity(accounts_n);
    let mut acceptors = Vec::with_capacity(accounts_n);
    for (c, created) in created.iter().enumerate() {
        let id = conversation_id(c);
        for account in &accounts[c * g..(c + 1) * g] {
            acceptors.push(Acceptor::new(
                MemberSlot::new(account, id, created, &servers)?,
                quorum,
            ));
            senders.push(Arc::new(tokio::sync::Mutex::new(Sender {
                account: account.clone(),
                slot: MemberSlot::new(account, id, created, &servers)?,
                sequence: 0,
            })));
        }
    }
    let streams = {
        let accounts = accounts.clone();
        in_parallel(accounts_n, SETUP_CONCURRENCY, move |i| {
            let mut client = sub_pool[i / SUBSCRIPTIONS_PER_CONNECTION % sub_pool.len()].clone();
            let account = accounts[i].clone();
            async move {
                client
                    .subscribe(account.authed(pb::SubscribeRequest {}))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(rpc("subscribe"))
            }
        })
        .await?
    };
    let mut subscriptions = Vec::with_capacity(accounts_n);
    for (mut stream, mut acceptor) in streams.into_iter().zip(acceptors) {
        let tracker = tracker.clone();
        subscriptions.push(tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(d)) => match acceptor.accept(&d) {
                        Ok(hash) => tracker.accepted(&hash),
                        Err(NotAccepted::TagUpdate) => {}
                        Err(e) => {
                            tracker.broken(format!("a member refused a delivery: {e}"));
                            return;
                        }
                    },
                    Ok(None) => {
                        tracker.broken("the router ended a subscription".into());
                        return;
                    }
                    Err(s) => {
                        tracker.broken(format!(
                            "a subscription failed: {:?} {}",
                            s.code(),
                            s.message()
                        ));
                        return;
                    }
                }
            }
        }));
    }
    let subscribe_seconds = started.elapsed().as_secs_f64();

    // Every conversation's Setup, by its creator.
    let started = Instant::now();
    let body = Arc::new(vec![0xa5u8; options.body_bytes]);
    let block_bytes = options.block_bytes;
    {
        let pool = pool.clone();
        let senders = senders.clone();
        let tracker = tracker.clone();
        in_parallel(options.conversations, SETUP_CONCURRENCY, move |c| {
            let mut client = pool[c % pool.len()].clone();
            let sender = senders[c * g].clone();
            let tracker = tracker.clone();
            let body = body.clone();
            async move {
                let mut s = sender.lock().await;
                s.sequence = 1;
                let (req, hash) = s
                    .slot
                    .envelope(EnvelopeKind::Setup, 1, &body, block_bytes)?;
                tracker.expect(hash, SETUP_STEP, Instant::now(), g);
                client
                    .submit(s.account.authed(req))
                    .await
                    .map(|_| ())
                    .map_err(rpc("submit a Setup"))
            }
        })
        .await?;
    }
    tracker
        .drain(
            SETUP_STEP,
            tokio::time::Instant::now() + Duration::from_secs(120),
        )
        .await?;
    if tracker.outstanding(SETUP_STEP) > 0 {
        return Err(LiveError::Timeout(
            "every member to accept its conversation's Setup".into(),
        ));
    }
    tracker.lock().done.clear();
    let setup_seconds = started.elapsed().as_secs_f64();
    Ok(Setup {
        senders,
        subscriptions,
        register_seconds,
        create_seconds,
        subscribe_seconds,
        setup_seconds,
    })
}

fn conversation_id(c: usize) -> ConversationId {
    let mut b = [0x42u8; 32];
    b[..8].copy_from_slice(&(c as u64).to_le_bytes());
    ConversationId::from_bytes(b)
}

/// Runs every arm; `progress` hears one line per arm and step.
pub async fn run(
    options: &OpenLoopOptions,
    mut progress: impl FnMut(&str),
) -> Result<OpenLoopReport, LiveError> {
    if options.conversations == 0 || options.group < 2 || options.rates.is_empty() {
        return Err(LiveError::Setup(
            "the open loop needs a conversation, two members and a rate".into(),
        ));
    }
    std::fs::create_dir_all(&options.dir)
        .map_err(LiveError::io(format!("create {}", options.dir.display())))?;
    let storage = Storage::of(&options.dir);
    let windows: Vec<Option<u64>> = if options.order_gather_us.is_empty() {
        vec![None]
    } else {
        options.order_gather_us.iter().copied().map(Some).collect()
    };
    let mut arms = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..options.rounds.max(1) {
        let mut specs: Vec<ArmSpec> = options
            .servers
            .iter()
            .flat_map(|&servers| {
                windows.iter().map(move |&order_gather_us| ArmSpec {
                    round,
                    servers,
                    relay: false,
                    order_gather_us,
                })
            })
            .collect();
        // Odd rounds run their arms in the reverse order, so that no arm
        // always follows another (the previous arm's data removed, a disk
        // still busy with it).
        specs.insert(0, ArmSpec::relay(round));
        if round % 2 == 1 {
            specs.reverse();
        }
        let mut round_arms = Vec::with_capacity(specs.len());
        for spec in specs {
            round_arms.push(arm(options, spec, &mut progress).await?);
        }
        ratios.extend(CapacityRatio::of_round(round, &round_arms));
        arms.extend(round_arms);
    }
    let summary = CapacitySummary::of(&ratios);
    Ok(OpenLoopReport {
        machine: machine(),
        storage,
        options: options.clone(),
        arms,
        ratios,
        summary,
    })
}

/// Which arm to run.
#[derive(Debug, Clone, Copy)]
struct ArmSpec {
    round: usize,
    /// N (1 for the relay's devnet, which has one order server it never
    /// uses).
    servers: usize,
    relay: bool,
    order_gather_us: Option<u64>,
}

impl ArmSpec {
    fn relay(round: usize) -> Self {
        ArmSpec {
            round,
            servers: 1,
            relay: true,
            order_gather_us: None,
        }
    }
}

async fn arm(
    options: &OpenLoopOptions,
    spec: ArmSpec,
    progress: &mut impl FnMut(&str),
) -> Result<Arm, LiveError> {
    let ArmSpec {
        round,
        servers: n,
        relay,
        order_gather_us,
    } = spec;
    let mode = if relay { "relay" } else { "attested" };
    let dir = options.dir.join(format!("open-loop-{mode}-n{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    let devnet_options = DevnetOptions {
        dir: dir.clone(),
        order_servers: n,
        quorum: options
            .majority
            .then(|| grompi_proto::descriptor::min_quorum(n)),
        binaries: options.binaries.clone(),
        router_extra: router_extra(relay),
        order_extra: order_gather_us
            .map(|us| format!("commit_gather_us = {us}\n"))
            .unwrap_or_default(),
        evil: std::collections::BTreeMap::new(),
    };
    progress(&format!(
        "round {round}, {mode}{}{}: setting up {} conversations of {}",
        if relay {
            String::new()
        } else {
            format!(", N = {n}")
        },
        order_gather_us.map_or_else(String::new, |us| format!(", window {us} us")),
        options.conversations,
        options.group
    ));
    let net = tokio::task::block_in_place(|| {
        Devnet::start_with(
            &devnet_options,
            &super::bench::launcher(&devnet_options.binaries),
            None,
        )
    })?;
    let seed = options.seed.wrapping_add(round as u64);
    let result = measure_arm(options, &net, relay, seed, progress).await;
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
    let (setup, steps) = result?;
    let best = steps.iter().filter(|s| s.sustained).max_by(|a, b| {
        a.offered_per_s
            .total_cmp(&b.offered_per_s)
            .then(a.achieved_per_s.total_cmp(&b.achieved_per_s))
    });
    Ok(Arm {
        round,
        mode: mode.into(),
        servers: if relay { 0 } else { n },
        order_gather_us,
        quorum: if relay {
            0
        } else if options.majority {
            grompi_proto::descriptor::min_quorum(n)
        } else {
            n
        },
        register_seconds: setup.0,
        create_seconds: setup.1,
        subscribe_seconds: setup.2,
        setup_seconds: setup.3,
        sustained_offered_per_s: best.map_or(0.0, |s| s.offered_per_s),
        sustained_achieved_per_s: best.map_or(0.0, |s| s.achieved_per_s),
        steps,
    })
}

fn metrics_addrs(net: &Devnet) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    (
        net.router.addrs.metrics.into_iter().collect(),
        net.order_servers
            .iter()
            .filter_map(|s| s.addrs.metrics)
            .collect(),
    )
}

type SetupTimes = (f64, f64, f64, f64);

async fn measure_arm(
    options: &OpenLoopOptions,
    net: &Devnet,
    relay: bool,
    seed: u64,
    progress: &mut impl FnMut(&str),
) -> Result<(SetupTimes, Vec<Step>), LiveError> {
    let tracker = Arc::new(Tracker::default());
    let setup = set_up(options, net, relay, &tracker).await?;
    let times = (
        setup.register_seconds,
        setup.create_seconds,
        setup.subscribe_seconds,
        setup.setup_seconds,
    );
    progress(&format!(
        "  set up in {:.1} s (register {:.1}, create {:.1}, subscribe {:.1}, Setups {:.1})",
        times.0 + times.1 + times.2 + times.3,
        times.0,
        times.1,
        times.2,
        times.3
    ));
    let pool = connections(net, options.submit_connections.max(1)).await?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let body = Arc::new(vec![0xa5u8; options.body_bytes]);
    let (router_metrics, order_metrics) = metrics_addrs(net);
    let mut steps = Vec::new();
    let result = async {
        for (k, &rate) in options.rates.iter().enumerate() {
            let step = run_step(
                options,
                net,
                &StepInput {
                    index: k,
                    rate,
                    senders: &setup.senders,
                    pool: &pool,
                    tracker: &tracker,
                    body: &body,
                    relay,
                    router_metrics: &router_metrics,
                    order_metrics: &order_metrics,
                },
                &mut rng,
            )
            .await?;
            progress(&format!(
                "  {rate:.0}/s offered: {:.0}/s achieved, p50 {:.2} ms, p99 {:.2} ms{}",
                step.achieved_per_s,
                step.latency_p50_ms,
                step.latency_p99_ms,
                if step.sustained {
                    String::new()
                } else {
                    format!(" (not sustained: {})", step.note)
                }
            ));
            let held = step.sustained;
            steps.push(step);
            if !held {
                break;
            }
        }
        Ok::<(), LiveError>(())
    }
    .await;
    for s in &setup.subscriptions {
        s.abort();
    }
    result?;
    Ok((times, steps))
}

struct StepInput<'a> {
    index: usize,
    rate: f64,
    senders: &'a [Arc<tokio::sync::Mutex<Sender>>],
    pool: &'a [RouterClient<Channel>],
    tracker: &'a Arc<Tracker>,
    body: &'a Arc<Vec<u8>>,
    relay: bool,
    router_metrics: &'a [SocketAddr],
    order_metrics: &'a [SocketAddr],
}

fn scrape(addrs: &[SocketAddr]) -> Result<Vec<Scrape>, LiveError> {
    tokio::task::block_in_place(|| scrape_all(addrs))
}

async fn run_step(
    options: &OpenLoopOptions,
    net: &Devnet,
    input: &StepInput<'_>,
    rng: &mut ChaCha20Rng,
) -> Result<Step, LiveError> {
    let g = options.group;
    let duration = Duration::from_secs_f64(options.step_seconds.max(0.001));
    // Arrival offsets and senders, drawn before the step starts.
    let mut arrivals = Vec::new();
    let mut t = 0.0f64;
    let rate = input.rate.max(f64::MIN_POSITIVE);
    loop {
        let u: f64 = rng.random_range(0.0..1.0);
        t += -(1.0 - u).ln() / rate;
        if t >= duration.as_secs_f64() {
            break;
        }
        let sender = rng.random_range(0..input.senders.len());
        arrivals.push((Duration::from_secs_f64(t), sender));
    }
    let router_before = scrape(input.router_metrics)?;
    let order_before = scrape(input.order_metrics)?;
    let cpu_before = cpu_times(net);
    let start = tokio::time::Instant::now();
    let start_std = start.into_std();
    let mut lag_max = Duration::ZERO;
    let mut tasks = Vec::with_capacity(arrivals.len());
    for (k, (offset, sender)) in arrivals.iter().enumerate() {
        let at = start + *offset;
        tokio::time::sleep_until(at).await;
        lag_max = lag_max.max(tokio::time::Instant::now().saturating_duration_since(at));
        let sender = input.senders[*sender].clone();
        let mut client = input.pool[k % input.pool.len()].clone();
        let tracker = input.tracker.clone();
        let body = input.body.clone();
        let step = input.index;
        let block_bytes = options.block_bytes;
        // Latency runs from the arrival as scheduled: a load generator
        // that falls behind counts against the step, never hides it.
        let scheduled = at.into_std();
        input.tracker.dispatched(step);
        tasks.push(tokio::spawn(async move {
            let mut s = sender.lock().await;
            s.sequence += 1;
            let Ok((req, hash)) =
                s.slot
                    .envelope(EnvelopeKind::Message, s.sequence, &body, block_bytes)
            else {
                tracker.broken("could not build an envelope".into());
                return;
            };
            tracker.expect(hash, step, scheduled, g);
            match client.submit(s.account.authed(req)).await {
                Ok(_) => tracker.replied(step, scheduled.elapsed()),
                Err(_) => tracker.failed(&hash, step),
            }
        }));
    }
    let end = start + duration;
    tokio::time::sleep_until(end).await;
    // Drain: everything sent gets the limit and then some to complete.
    let drain = Duration::from_secs_f64((options.p99_limit_ms / 1000.0 * 4.0).max(5.0));
    input
        .tracker
        .drain(input.index, tokio::time::Instant::now() + drain)
        .await?;
    let drained = Instant::now();
    for t in tasks {
        t.abort();
    }
    let cpu_after = cpu_times(net);
    let (router_after, order_after) = (scrape(input.router_metrics)?, scrape(input.order_metrics)?);
    let probes = (!input.relay)
        .then(|| Probes::between(&router_before, &router_after, &order_before, &order_after));
    let commit_tail =
        CommitTail::between(&router_before, &router_after, &order_before, &order_after);

    let sent = arrivals.len() as u64;
    let end_std = end.into_std();
    let (mut latencies, in_window, completed, failed, mut replies) = {
        let mut inner = input.tracker.lock();
        let replies = inner.replies.remove(&input.index).unwrap_or_default();
        let mut latencies = Vec::new();
        let mut in_window = 0u64;
        let mut completed = 0u64;
        for (step, dispatched, done) in &inner.done {
            if *step == input.index {
                completed += 1;
                latencies.push(done.saturating_duration_since(*dispatched));
            }
            if *done >= start_std && *done <= end_std {
                in_window += 1;
            }
        }
        for (step, dispatched, _) in inner.pending.values() {
            if *step == input.index {
                latencies.push(drained.saturating_duration_since(*dispatched));
            }
        }
        inner.pending.retain(|_, p| p.0 != input.index);
        inner.done.retain(|d| d.0 != input.index);
        let failed = inner.failed.get(&input.index).copied().unwrap_or(0);
        (latencies, in_window, completed, failed, replies)
    };
    let split = LatencySplit::of(&mut replies, &router_before, &router_after);

    // Messages whose task never got as far as submitting (a client that
    // fell far behind) count from the step's end, a lower bound.
    let incomplete = sent.saturating_sub(completed + failed);
    while (latencies.len() as u64) < sent.saturating_sub(failed) {
        latencies.push(drained.saturating_duration_since(end_std));
    }
    latencies.sort_unstable();
    let secs = duration.as_secs_f64();
    let arrivals_per_s = sent as f64 / secs;
    let achieved_per_s = in_window as f64 / secs;
    let p50 = percentile(&latencies, 0.5);
    let p99 = percentile(&latencies, 0.99);
    let cpu_per_message = cpu_before.zip(cpu_after).map(|(b, a)| {
        let per =
            |k: usize| a[k].saturating_sub(b[k]).as_secs_f64() * 1e6 / (completed.max(1) as f64);
        CpuPerMessage {
            router_us: per(0),
            order_servers_us: per(1),
            client_us: per(2),
        }
    });
    let mut notes = Vec::new();
    if p99 > options.p99_limit_ms {
        notes.push(format!("p99 {p99:.1} ms > {} ms", options.p99_limit_ms));
    }
    if achieved_per_s < arrivals_per_s * (1.0 - options.rate_margin) {
        notes.push(format!(
            "achieved {achieved_per_s:.0}/s < {:.0}% of {arrivals_per_s:.0}/s arriving",
            (1.0 - options.rate_margin) * 100.0
        ));
    }
    if failed > 0 {
        notes.push(format!("{failed} submissions failed"));
    }
    if incomplete > 0 {
        notes.push(format!("{incomplete} never accepted by every member"));
    }
    if sent == 0 {
        notes.push("no arrival in the step".into());
    }
    Ok(Step {
        offered_per_s: input.rate,
        arrivals_per_s,
        sent,
        completed,
        failed,
        incomplete,
        achieved_per_s,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        dispatch_lag_max_ms: lag_max.as_secs_f64() * 1000.0,
        cpu_per_message,
        probes,
        split,
        commit_tail,
        sustained: notes.is_empty(),
        note: notes.join("; "),
    })
}

impl OpenLoopReport {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "## Open-loop capacity\n\nMachine: {}. Storage: {} ({}). {} conversations of {} \
             members, Poisson arrivals (seed {}), {} s per step; a step holds while p99 <= {} ms \
             and at least {:.0}% of the arrivals per second are accepted by every member within \
             the step. Body {} bytes, blocks {} bytes.\n\n",
            self.machine,
            self.storage.filesystem,
            if self.storage.durable() {
                "durable"
            } else {
                "NOT durable"
            },
            o.conversations,
            o.group,
            o.seed,
            o.step_seconds,
            o.p99_limit_ms,
            (1.0 - o.rate_margin) * 100.0,
            o.body_bytes,
            o.block_bytes,
        );
        if !o.order_gather_us.is_empty() {
            let list: Vec<String> = o.order_gather_us.iter().map(u64::to_string).collect();
            s.push_str(&format!(
                "Order servers' gathering window (`commit_gather_us`): {} us, one attested arm each.\n\n",
                list.join(", ")
            ));
        }
        if o.rounds > 1 {
            s.push_str(&format!(
                "{} rounds, each running the relay and then every attested arm (odd rounds in the reverse order), with seeds {} to {}.\n\n",
                o.rounds,
                o.seed,
                o.seed.wrapping_add(o.rounds as u64 - 1)
            ));
        }
        s.push_str(
            "| round | mode | N | window us | offered/s | arrivals/s | achieved/s | p50 ms | p99 ms | sent | failed | incomplete | lag max ms | CPU router us | CPU order servers us | CPU client us | order CPU per attestation us | router CPU over the relay us | order commit p50 ms | Submit reply p50/p99 ms | router's Submit p50/p99 ms | outside the router p50 ms | router commit max ms (> 10 ms) | order commit max ms (> 10 ms) | router checkpoints (ms in all) | order checkpoints (ms in all) | holds |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let window = |w: Option<u64>| w.map_or_else(|| "-".to_owned(), |w| w.to_string());
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        let pair = |a: Option<f64>, b: Option<f64>| format!("{}/{}", ms(a), ms(b));
        for a in &self.arms {
            for st in &a.steps {
                let cpu = st.cpu_per_message;
                let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
                let tail = |max: Option<f64>, slow: u64| {
                    max.map_or_else(|| "-".to_owned(), |m| format!("{m:.1} ({slow})"))
                };
                // Target 3: each order server attests every message once.
                let per_attestation = cpu
                    .filter(|_| a.servers > 0)
                    .map(|c| c.order_servers_us / a.servers as f64);
                // The router's extra CPU against the relay at the same offered rate.
                let over_relay = cpu.filter(|_| a.mode == "attested").and_then(|c| {
                    self.arms
                        .iter()
                        .filter(|r| r.mode == "relay" && r.round == a.round)
                        .flat_map(|r| &r.steps)
                        .find(|r| r.offered_per_s == st.offered_per_s)
                        .and_then(|r| r.cpu_per_message)
                        .map(|r| c.router_us - r.router_us)
                });
                let t = &st.commit_tail;
                let router_checkpoints =
                    format!("{} ({:.0})", t.router_checkpoints, t.router_checkpoint_ms);
                let order_checkpoints = if a.servers > 0 {
                    format!("{} ({:.0})", t.order_checkpoints, t.order_checkpoint_ms)
                } else {
                    "-".to_owned()
                };
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    a.round,
                    a.mode,
                    a.servers,
                    window(a.order_gather_us),
                    st.offered_per_s,
                    st.arrivals_per_s,
                    st.achieved_per_s,
                    st.latency_p50_ms,
                    st.latency_p99_ms,
                    st.sent,
                    st.failed,
                    st.incomplete,
                    st.dispatch_lag_max_ms,
                    f(cpu.map(|c| c.router_us)),
                    f(cpu.map(|c| c.order_servers_us)),
                    f(cpu.map(|c| c.client_us)),
                    f(per_attestation),
                    f(over_relay),
                    st.probes
                        .as_ref()
                        .and_then(|p| p.order_commit_p50_ms)
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
                    pair(st.split.reply_p50_ms, st.split.reply_p99_ms),
                    pair(st.split.router_submit_p50_ms, st.split.router_submit_p99_ms),
                    ms(st.split.outside_router_p50_ms),
                    tail(st.commit_tail.router_max_ms, st.commit_tail.router_over_10ms),
                    tail(st.commit_tail.order_max_ms, st.commit_tail.order_over_10ms),
                    router_checkpoints,
                    order_checkpoints,
                    if st.sustained {
                        "yes".to_owned()
                    } else {
                        format!("no: {}", st.note)
                    },
                ));
            }
        }
        s.push_str(
            "\n| round | mode | N | window us | set-up s (register, create, subscribe, Setups) | highest rate held, offered/s | achieved/s | vs relay |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for a in &self.arms {
            let ratio = self
                .ratios
                .iter()
                .find(|r| {
                    a.mode == "attested"
                        && r.round == a.round
                        && r.servers == a.servers
                        && r.order_gather_us == a.order_gather_us
                })
                .map_or_else(|| "1.00x".to_owned(), |r| format!("{:.2}x", r.ratio));
            let held = a.highest_held();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.1}, {:.1}, {:.1}, {:.1} | {} | {:.0} | {} |\n",
                a.round,
                a.mode,
                a.servers,
                window(a.order_gather_us),
                a.register_seconds,
                a.create_seconds,
                a.subscribe_seconds,
                a.setup_seconds,
                held,
                a.sustained_achieved_per_s,
                ratio
            ));
        }
        s.push_str(
            "\n| N | window us | rounds | relay achieved/s, round by round | attested achieved/s | ratios | median relay/s | median attested/s | median ratio |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        let list = |v: &[f64], decimals: usize| {
            v.iter()
                .map(|x| format!("{x:.decimals$}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for m in &self.summary {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | **{:.2}x** |\n",
                m.servers,
                window(m.order_gather_us),
                m.ratios.len(),
                list(&m.relay_per_s, 0),
                list(&m.attested_per_s, 0),
                list(&m.ratios, 2),
                m.median_relay_per_s,
                m.median_attested_per_s,
                m.median_ratio,
            ));
        }
        s.push_str(&held_nothing_note(&self.arms));
        s
    }

    /// Offered rate against p50 and p99, one line each per arm.
    pub fn plot(&self) -> String {
        let mut series = Vec::new();
        for a in &self.arms {
            let mut name = if a.mode == "relay" {
                "relay".to_owned()
            } else {
                format!("N = {}", a.servers)
            };
            if let Some(w) = a.order_gather_us {
                name.push_str(&format!(", window {w} us"));
            }
            if self.options.rounds > 1 {
                name.push_str(&format!(", round {}", a.round));
            }
            for (q, f) in [
                ("p50", (|s: &Step| s.latency_p50_ms) as fn(&Step) -> f64),
                ("p99", |s: &Step| s.latency_p99_ms),
            ] {
                series.push(crate::plot::Series {
                    name: format!("{name} {q}"),
                    points: a.steps.iter().map(|s| (s.offered_per_s, f(s))).collect(),
                });
            }
        }
        crate::plot::line_chart(
            "open loop: latency against offered rate",
            "offered messages/s",
            "ms",
            &series,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "router_commit_seconds_bucket{durability=\"synced\",le=\"0.001\"} 5\n\
        router_commit_seconds_bucket{durability=\"synced\",le=\"0.01\"} 5\n\
        router_commit_seconds_bucket{durability=\"synced\",le=\"0.1\"} 6\n\
        router_commit_seconds_bucket{durability=\"synced\",le=\"+Inf\"} 6\n\
        router_commit_seconds_count{durability=\"synced\"} 6\n";
    const AFTER: &str = "router_commit_seconds_bucket{durability=\"synced\",le=\"0.001\"} 9\n\
        router_commit_seconds_bucket{durability=\"synced\",le=\"0.01\"} 10\n\
        router_commit_seconds_bucket{durability=\"synced\",le=\"0.1\"} 12\n\
        router_commit_seconds_bucket{durability=\"synced\",le=\"+Inf\"} 12\n\
        router_commit_seconds_count{durability=\"synced\"} 12\n\
        router_commit_seconds_bucket{durability=\"deferred\",le=\"0.001\"} 3\n\
        router_commit_seconds_bucket{durability=\"deferred\",le=\"0.01\"} 3\n\
        router_commit_seconds_bucket{durability=\"deferred\",le=\"0.1\"} 3\n\
        router_commit_seconds_bucket{durability=\"deferred\",le=\"+Inf\"} 4\n\
        router_commit_seconds_count{durability=\"deferred\"} 4\n";

    /// The tail covers only the commits between the scrapes, every label
    /// set merged: one synced commit over 10 ms (the one before the step
    /// does not count) and one deferred commit past the last finite bucket.
    #[test]
    fn the_commit_tail_counts_only_the_step_s_slow_commits() {
        let before = [Scrape::parse(BEFORE)];
        let after = [Scrape::parse(AFTER)];
        let synced_only = [Scrape::parse(
            &AFTER
                .lines()
                .filter(|l| l.contains("synced"))
                .collect::<Vec<_>>()
                .join("\n"),
        )];
        let tail = CommitTail::between(&before, &synced_only, &[], &[]);
        assert_eq!(tail.router_max_ms, Some(100.0));
        assert_eq!(tail.router_over_10ms, 1);
        assert_eq!(tail.order_max_ms, None);
        assert_eq!(tail.order_over_10ms, 0);
        // The deferred commit in the +Inf bucket: its lower edge, 100 ms.
        let tail = CommitTail::between(&before, &after, &[], &[]);
        assert_eq!(tail.router_max_ms, Some(100.0));
        assert_eq!(tail.router_over_10ms, 2);
        // Nothing slow between two equal scrapes.
        let tail = CommitTail::between(&after, &after, &after, &after);
        assert_eq!(tail.router_max_ms, None);
        assert_eq!(tail.router_over_10ms, 0);
        assert_eq!((tail.router_checkpoints, tail.order_checkpoints), (0, 0));
    }

    /// Checkpoints between the scrapes: their count and total time, the
    /// order servers' summed.
    #[test]
    fn the_commit_tail_counts_the_step_s_checkpoints() {
        let router = |n: u32, sum: f64| {
            Scrape::parse(&format!(
                "router_wal_checkpoint_seconds_bucket{{le=\"+Inf\"}} {n}\n\
                 router_wal_checkpoint_seconds_sum {sum}\n\
                 router_wal_checkpoint_seconds_count {n}\n"
            ))
        };
        let order = |n: u32, sum: f64| {
            Scrape::parse(&format!(
                "grompi_order_wal_checkpoint_seconds_bucket{{le=\"+Inf\"}} {n}\n\
                 grompi_order_wal_checkpoint_seconds_sum {sum}\n\
                 grompi_order_wal_checkpoint_seconds_count {n}\n"
            ))
        };
        let tail = CommitTail::between(
            &[router(3, 0.020)],
            &[router(5, 0.036)],
            &[order(1, 0.010), order(0, 0.0)],
            &[order(2, 0.018), order(3, 0.030)],
        );
        assert_eq!(tail.router_checkpoints, 2);
        assert!((tail.router_checkpoint_ms - 16.0).abs() < 1e-6, "{tail:?}");
        assert_eq!(tail.order_checkpoints, 4);
        assert!((tail.order_checkpoint_ms - 38.0).abs() < 1e-6, "{tail:?}");
    }

    fn arm(round: usize, servers: usize, window: Option<u64>, rate: f64) -> Arm {
        Arm {
            round,
            mode: if servers == 0 { "relay" } else { "attested" }.into(),
            servers,
            order_gather_us: window,
            quorum: servers,
            register_seconds: 0.0,
            create_seconds: 0.0,
            subscribe_seconds: 0.0,
            setup_seconds: 0.0,
            steps: Vec::new(),
            sustained_offered_per_s: rate,
            sustained_achieved_per_s: rate,
        }
    }

    fn step(offered: f64, sustained: bool) -> Step {
        Step {
            offered_per_s: offered,
            arrivals_per_s: offered,
            sent: 0,
            completed: 0,
            failed: 0,
            incomplete: 0,
            achieved_per_s: offered,
            latency_p50_ms: 1.0,
            latency_p99_ms: 1.0,
            dispatch_lag_max_ms: 0.0,
            cpu_per_message: None,
            probes: None,
            split: LatencySplit::default(),
            commit_tail: CommitTail::default(),
            sustained,
            note: String::new(),
        }
    }

    /// An arm whose first step failed is reported as below that step, and
    /// the report says what its 0 means; an arm that held a step, or
    /// measured none, is not.
    #[test]
    fn an_arm_that_held_no_step_is_reported_below_its_first() {
        let mut failed = arm(0, 3, None, 0.0);
        failed.steps = vec![step(750.0, false)];
        assert!(failed.held_nothing());
        assert_eq!(failed.highest_held(), "none (below 750)");
        let mut held = arm(0, 0, None, 1000.0);
        held.steps = vec![step(750.0, true), step(1000.0, true), step(1250.0, false)];
        assert!(!held.held_nothing());
        assert_eq!(held.highest_held(), "1000");
        let empty = arm(0, 3, None, 0.0);
        assert!(!empty.held_nothing());
        assert_eq!(held_nothing_note(&[held.clone(), empty]), "");
        let note = held_nothing_note(&[held, failed]);
        assert!(
            note.contains("below its first step (down to 750/s)"),
            "{note}"
        );
    }

    #[test]
    fn the_median_of_odd_even_and_no_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    /// Each attested arm (N and window) is summarized over its rounds,
    /// each round's rate against that round's relay, never another's.
    #[test]
    fn the_summary_pairs_each_round_with_its_own_relay() {
        let mut ratios = Vec::new();
        let relay = [2000.0, 1500.0, 2000.0];
        let plain = [1250.0, 750.0, 1000.0];
        let windowed = [1500.0, 1000.0, 1000.0];
        for round in 0..3 {
            // Odd rounds run the relay last.
            let mut round_arms = vec![
                arm(round, 0, None, relay[round]),
                arm(round, 3, None, plain[round]),
                arm(round, 3, Some(3000), windowed[round]),
            ];
            if round % 2 == 1 {
                round_arms.rotate_left(1);
            }
            ratios.extend(CapacityRatio::of_round(round, &round_arms));
        }
        assert_eq!(ratios.len(), 6, "{ratios:?}");
        let summary = CapacitySummary::of(&ratios);
        assert_eq!(summary.len(), 2, "{summary:?}");
        let (a, b) = (&summary[0], &summary[1]);
        assert_eq!((a.order_gather_us, b.order_gather_us), (None, Some(3000)));
        assert_eq!(a.relay_per_s, relay);
        assert_eq!(a.attested_per_s, plain);
        assert_eq!(b.attested_per_s, windowed);
        assert_eq!(a.ratios, vec![0.625, 0.5, 0.5]);
        assert_eq!(a.median_ratio, 0.5);
        assert_eq!(b.median_ratio, 2.0 / 3.0);
        assert_eq!(b.median_attested_per_s, 1000.0);
        assert_eq!(a.median_relay_per_s, 2000.0);
    }
}
