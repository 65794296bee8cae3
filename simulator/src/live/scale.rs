//! `bench --scale`: what the servers cost as the work grows. One devnet is
//! grown in stages through the real router's gRPC API (registrations,
//! conversation creations and attested submissions, many at once), and at
//! each point the router and an order server are measured: resident memory
//! while running, then stopped (SIGTERM) and started again on the same
//! data, the time from the process start to healthy (its store loaded,
//! listeners bound: the moment it writes `bound-addrs.toml`), and its
//! resident memory once settled after the restart, which is what the state
//! itself costs.
//!
//! Why the real API and not the stores directly: a restart is measured
//! faithfully only over state exactly as the servers write it (the
//! router's records, the order servers' chains, the write-ahead logs and
//! their checkpoints), and the API reaches it at thousands of operations a
//! second when many are in flight (minutes for the default sizes), with no
//! second writer of the formats to keep in step.
//!
//! The stages, cumulative: the first account count with the first
//! conversation count; stored Messages to a quarter, a half and all of
//! `envelopes` (spread over those first conversations, each of which
//! starts with its Setup); then every further account count; then every
//! further conversation count (created, not written to). So the points
//! give memory against stored history, against accounts, and against
//! conversations, each with the others fixed.

use super::LiveError;
use super::bench::{Storage, machine};
use super::bench_client::{BenchAccount, MemberSlot, connect_router};
use super::devnet::{Devnet, DevnetOptions};
use super::open_loop::router_extra;
use super::process::ServerProcess;
use grompi_proto::pb::{self, router_client::RouterClient};
use grompi_proto::{ConversationId, EnvelopeKind, OrderServerKey};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Calls in flight while growing the state.
const CONCURRENCY: usize = 128;
/// How long a restarted server may take to load its state.
const RESTART_TIMEOUT: Duration = Duration::from_secs(1800);

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleOptions {
    /// Scratch directory for the devnet.
    #[serde(skip)]
    pub dir: PathBuf,
    /// Directory with the `router` and `order-server` binaries, or this
    /// `grompi-sim` executable, which then runs every server itself
    /// (self-hosted: the same library code; what the crate's tests use).
    #[serde(skip)]
    pub binaries: PathBuf,
    /// N.
    pub servers: usize,
    /// Members per conversation.
    pub group: usize,
    /// Account counts, ascending.
    pub accounts: Vec<usize>,
    /// Conversation counts, ascending.
    pub conversations: Vec<usize>,
    /// Stored Messages to reach.
    pub envelopes: usize,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// Per-recipient block size in bytes.
    pub block_bytes: usize,
    /// How long a restarted server is left before its memory is read
    /// again, ms.
    pub settle_ms: u64,
}

/// One server at one point.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerFigures {
    /// Resident memory while running, just before the restart, bytes.
    pub rss_running_bytes: u64,
    /// Process start to healthy on restart, ms.
    pub restart_ms: f64,
    /// Resident memory once settled after the restart, bytes.
    pub rss_restarted_bytes: u64,
    /// Bytes in its data directory.
    pub data_bytes: u64,
}

/// One measured state.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// What grew to reach it.
    pub stage: String,
    /// Registered accounts.
    pub accounts: usize,
    /// Conversations.
    pub conversations: usize,
    /// Messages stored (and attested).
    pub envelopes: usize,
    /// Indices each order server has attested (Setups and Messages).
    pub attested_indices: usize,
    /// Seconds spent growing the state from the previous point.
    pub grow_seconds: f64,
    /// The router.
    pub router: ServerFigures,
    /// Order server 0 (the others hold the same state).
    pub order_server: ServerFigures,
}

/// Growth of resident memory after a restart, bytes per unit, from the
/// first and last point of each curve.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Growth {
    /// Router, per account.
    pub router_per_account: Option<f64>,
    /// Router, per conversation.
    pub router_per_conversation: Option<f64>,
    /// Router, per stored envelope (should be about zero).
    pub router_per_envelope: Option<f64>,
    /// Order server, per conversation.
    pub order_per_conversation: Option<f64>,
    /// Order server, per attested index (should be about zero).
    pub order_per_index: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// CPU model and count.
    pub machine: String,
    /// The filesystem of the data directories.
    pub storage: Storage,
    /// What was asked.
    pub options: ScaleOptions,
    /// Every point, in order.
    pub points: Vec<Point>,
    /// Growth per unit.
    pub growth: Growth,
}

fn rpc(what: &'static str) -> impl Fn(tonic::Status) -> LiveError {
    move |s| LiveError::Setup(format!("{what}: {:?} {}", s.code(), s.message()))
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Runs `count` jobs, `concurrency` at a time, over tasks; job(i) for each.
async fn in_parallel<F, Fut>(count: usize, concurrency: usize, job: F) -> Result<(), LiveError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), LiveError>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let next = next.clone();
        let job = job.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), LiveError>(());
                }
                job(i).await?;
            }
        }));
    }
    for w in workers {
        w.await
            .map_err(|e| LiveError::Setup(format!("load task: {e}")))??;
    }
    Ok(())
}

/// The members of conversation `c` among `accounts` accounts.
fn members(c: usize, group: usize, accounts: usize) -> Vec<usize> {
    (0..group).map(|j| (c * group + j) % accounts).collect()
}

fn conversation_id(c: usize) -> ConversationId {
    let mut b = [0x5cu8; 32];
    b[..8].copy_from_slice(&(c as u64).to_le_bytes());
    ConversationId::from_bytes(b)
}

/// The stages: (name, accounts, conversations, envelopes).
fn plan(o: &ScaleOptions) -> Vec<(String, usize, usize, usize)> {
    let a0 = o.accounts.first().copied().unwrap_or(0);
    let c0 = o.conversations.first().copied().unwrap_or(0);
    let mut out = vec![("start".to_owned(), a0, c0, 0)];
    let mut e_steps = vec![o.envelopes / 4, o.envelopes / 2, o.envelopes];
    e_steps.dedup();
    for e in e_steps.into_iter().filter(|e| *e > 0) {
        out.push(("envelopes".into(), a0, c0, e));
    }
    let e = o.envelopes;
    let mut a_last = a0;
    for &a in o.accounts.iter().skip(1) {
        out.push(("accounts".into(), a, c0, e));
        a_last = a;
    }
    for &c in o.conversations.iter().skip(1) {
        out.push(("conversations".into(), a_last, c, e));
    }
    out
}

/// Order keys each account needs for every conversation the plan puts it
/// in (conversations are created while the account count of their stage
/// holds).
fn order_keys_needed(o: &ScaleOptions) -> Vec<usize> {
    let stages = plan(o);
    let max_accounts = stages.iter().map(|s| s.1).max().unwrap_or(0);
    let mut need = vec![0usize; max_accounts];
    let mut created = 0;
    for (_, a, c, _) in &stages {
        while created < *c {
            for m in members(created, o.group, *a) {
                if let Some(n) = need.get_mut(m) {
                    *n += 1;
                }
            }
            created += 1;
        }
    }
    need
}

/// A written conversation: per member, its slot and last sequence.
type Writer = Arc<Mutex<Vec<(MemberSlot, u64)>>>;

/// The state the client keeps while growing the network.
struct Grower {
    accounts: Vec<Arc<BenchAccount>>,
    /// Per conversation: its creation answer.
    created: Vec<Arc<pb::CreateConversationResponse>>,
    /// Per written conversation: per member, its slot and last sequence.
    writers: Vec<Writer>,
    envelopes: usize,
    attested_indices: usize,
}

/// Runs the plan; `progress` hears one line per point.
pub async fn run(
    options: &ScaleOptions,
    mut progress: impl FnMut(&str),
) -> Result<ScaleReport, LiveError> {
    if options.group < 2
        || options.accounts.first().is_none_or(|a| *a < options.group)
        || options.conversations.is_empty()
    {
        return Err(LiveError::Setup(
            "the scale run needs two members per conversation, at least that many accounts and a conversation count".into(),
        ));
    }
    if options.accounts.windows(2).any(|w| w[0] > w[1])
        || options.conversations.windows(2).any(|w| w[0] > w[1])
    {
        return Err(LiveError::Setup(
            "--scale-accounts and --scale-conversations must be ascending".into(),
        ));
    }
    let keys = order_keys_needed(options);
    if keys.iter().any(|k| *k > 250) {
        return Err(LiveError::Setup(
            "more than 250 conversations per account: give more accounts or fewer conversations"
                .into(),
        ));
    }
    let dir = options.dir.join("scale");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(LiveError::io(format!("create {}", dir.display())))?;
    let storage = Storage::of(&dir);
    let devnet_options = DevnetOptions {
        dir: dir.clone(),
        order_servers: options.servers,
        quorum: None,
        binaries: options.binaries.clone(),
        router_extra: router_extra(false),
        order_extra: String::new(),
        evil: std::collections::BTreeMap::new(),
    };
    let mut net = tokio::task::block_in_place(|| {
        Devnet::start_with(
            &devnet_options,
            &super::bench::launcher(&devnet_options.binaries),
            None,
        )
    })?;
    let result = grow_and_measure(options, &mut net, &keys, &mut progress).await;
    drop(net);
    let points = match result {
        Ok(points) => points,
        Err(e) => {
            // Kept for its servers' logs.
            progress(&format!(
                "failed; the devnet (logs: */server.log) is kept in {}",
                dir.display()
            ));
            return Err(e);
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let growth = growth(&points);
    Ok(ScaleReport {
        machine: machine(),
        storage,
        options: options.clone(),
        points,
        growth,
    })
}

fn slope(points: &[&Point], x: impl Fn(&Point) -> usize, y: impl Fn(&Point) -> u64) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    let dx = x(last) as f64 - x(first) as f64;
    (dx > 0.0).then(|| (y(last) as f64 - y(first) as f64) / dx)
}

fn growth(points: &[Point]) -> Growth {
    let by = |stages: &[&str]| -> Vec<&Point> {
        // A curve: the point before the stage's first, and the stage's points.
        let mut out = Vec::new();
        for (i, p) in points.iter().enumerate() {
            if stages.contains(&p.stage.as_str()) {
                if out.is_empty()
                    && let Some(prev) = i.checked_sub(1).and_then(|j| points.get(j))
                {
                    out.push(prev);
                }
                out.push(p);
            }
        }
        out
    };
    let envelopes = by(&["envelopes"]);
    let accounts = by(&["accounts"]);
    let conversations = by(&["conversations"]);
    Growth {
        router_per_account: slope(&accounts, |p| p.accounts, |p| p.router.rss_restarted_bytes),
        router_per_conversation: slope(
            &conversations,
            |p| p.conversations,
            |p| p.router.rss_restarted_bytes,
        ),
        router_per_envelope: slope(
            &envelopes,
            |p| p.envelopes,
            |p| p.router.rss_restarted_bytes,
        ),
        order_per_conversation: slope(
            &conversations,
            |p| p.conversations,
            |p| p.order_server.rss_restarted_bytes,
        ),
        order_per_index: slope(
            &envelopes,
            |p| p.attested_indices,
            |p| p.order_server.rss_restarted_bytes,
        ),
    }
}

async fn grow_and_measure(
    options: &ScaleOptions,
    net: &mut Devnet,
    keys: &[usize],
    progress: &mut impl FnMut(&str),
) -> Result<Vec<Point>, LiveError> {
    let mut grower = Grower {
        accounts: Vec::new(),
        created: Vec::new(),
        writers: Vec::new(),
        envelopes: 0,
        attested_indices: 0,
    };
    let mut points = Vec::new();
    let servers: Vec<OrderServerKey> = net
        .descriptor
        .order_servers
        .iter()
        .map(|s| s.public_key)
        .collect();
    for (stage, a, c, e) in plan(options) {
        let started = Instant::now();
        let pool = pool(net).await?;
        register(&mut grower, &pool, net, a, keys).await?;
        create(options, &mut grower, &pool, c, a).await?;
        write(options, &mut grower, &pool, &servers, e).await?;
        let grow_seconds = started.elapsed().as_secs_f64();
        drop(pool);
        let settle = Duration::from_millis(options.settle_ms);
        let router = measure_router(net, settle).await?;
        let order_server = measure_order_server(net, settle)?;
        let point = Point {
            stage,
            accounts: grower.accounts.len(),
            conversations: grower.created.len(),
            envelopes: grower.envelopes,
            attested_indices: grower.attested_indices,
            grow_seconds,
            router,
            order_server,
        };
        progress(&format!(
            "{} accounts, {} conversations, {} envelopes (grown in {:.1} s): router {:.1} MiB, restart {:.0} ms; order server {:.1} MiB, restart {:.0} ms",
            point.accounts,
            point.conversations,
            point.envelopes,
            point.grow_seconds,
            point.router.rss_restarted_bytes as f64 / 1048576.0,
            point.router.restart_ms,
            point.order_server.rss_restarted_bytes as f64 / 1048576.0,
            point.order_server.restart_ms,
        ));
        points.push(point);
    }
    Ok(points)
}

async fn pool(net: &Devnet) -> Result<Vec<RouterClient<Channel>>, LiveError> {
    let mut out = Vec::new();
    for _ in 0..4 {
        out.push(connect_router(&net.descriptor).await?);
    }
    Ok(out)
}

async fn register(
    grower: &mut Grower,
    pool: &[RouterClient<Channel>],
    net: &Devnet,
    target: usize,
    keys: &[usize],
) -> Result<(), LiveError> {
    let from = grower.accounts.len();
    if target <= from {
        return Ok(());
    }
    let network = grompi_proto::ids::NetworkBinding::of_descriptor(&net.descriptor);
    let slots: Arc<Vec<Mutex<Option<Arc<BenchAccount>>>>> =
        Arc::new((from..target).map(|_| Mutex::new(None)).collect());
    let pool = pool.to_vec();
    let keys: Arc<Vec<u8>> = Arc::new(
        keys.iter()
            .map(|k| u8::try_from((*k).max(1)).unwrap_or(u8::MAX))
            .collect(),
    );
    {
        let slots = slots.clone();
        in_parallel(target - from, CONCURRENCY, move |k| {
            let i = from + k;
            let mut client = pool[i % pool.len()].clone();
            let slots = slots.clone();
            let order_keys = keys.get(i).copied().unwrap_or(1);
            async move {
                let a =
                    BenchAccount::register(&mut client, &network, 5_000_000 + i as u64, order_keys)
                        .await?;
                if let Some(s) = slots.get(k) {
                    *s.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(Arc::new(a));
                }
                Ok(())
            }
        })
        .await?;
    }
    for s in slots.iter() {
        let a = s
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| LiveError::Setup("an account was not registered".into()))?;
        grower.accounts.push(a);
    }
    Ok(())
}

async fn create(
    options: &ScaleOptions,
    grower: &mut Grower,
    pool: &[RouterClient<Channel>],
    target: usize,
    accounts: usize,
) -> Result<(), LiveError> {
    let from = grower.created.len();
    if target <= from {
        return Ok(());
    }
    let g = options.group;
    let all = Arc::new(grower.accounts.clone());
    let slots: Arc<Vec<Mutex<Option<pb::CreateConversationResponse>>>> =
        Arc::new((from..target).map(|_| Mutex::new(None)).collect());
    {
        let pool = pool.to_vec();
        let slots = slots.clone();
        in_parallel(target - from, CONCURRENCY, move |k| {
            let c = from + k;
            let mut client = pool[c % pool.len()].clone();
            let members: Vec<Arc<BenchAccount>> = members(c, g, accounts)
                .into_iter()
                .filter_map(|m| all.get(m).cloned())
                .collect();
            let slots = slots.clone();
            async move {
                let creator = members
                    .first()
                    .ok_or_else(|| LiveError::Setup("a conversation without members".into()))?;
                let r = client
                    .create_conversation(
                        creator.authed(pb::CreateConversationRequest {
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
                    .map_err(rpc("create"))?
                    .into_inner();
                if let Some(s) = slots.get(k) {
                    *s.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
                }
                Ok(())
            }
        })
        .await?;
    }
    for s in slots.iter() {
        let r = s
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| LiveError::Setup("a conversation was not created".into()))?;
        grower.created.push(Arc::new(r));
    }
    Ok(())
}

/// Submits Messages until `target` are stored, round robin over the first
/// conversations (those of the first stage), each Setup first.
async fn write(
    options: &ScaleOptions,
    grower: &mut Grower,
    pool: &[RouterClient<Channel>],
    servers: &[OrderServerKey],
    target: usize,
) -> Result<(), LiveError> {
    if target <= grower.envelopes {
        return Ok(());
    }
    let conversations = options.conversations.first().copied().unwrap_or(0);
    let g = options.group;
    let accounts_at_start = options.accounts.first().copied().unwrap_or(0);
    // Writers, made once: the conversations of the first stage, with
    // their Setups.
    if grower.writers.is_empty() {
        let mut writers = Vec::with_capacity(conversations);
        for c in 0..conversations.min(grower.created.len()) {
            let mut slots = Vec::with_capacity(g);
            for m in members(c, g, accounts_at_start) {
                let account = grower
                    .accounts
                    .get(m)
                    .ok_or_else(|| LiveError::Setup("a member was not registered".into()))?;
                slots.push((
                    MemberSlot::new(account, conversation_id(c), &grower.created[c], servers)?,
                    0u64,
                ));
            }
            writers.push(Arc::new(Mutex::new(slots)));
        }
        grower.writers = writers;
        submit_all(options, grower, pool, None).await?;
        grower.attested_indices += grower.writers.len();
    }
    let count = target - grower.envelopes;
    submit_all(options, grower, pool, Some(count)).await?;
    grower.envelopes = target;
    grower.attested_indices += count;
    Ok(())
}

/// The Setups (`count` None) or `count` Messages over every writer.
async fn submit_all(
    options: &ScaleOptions,
    grower: &Grower,
    pool: &[RouterClient<Channel>],
    count: Option<usize>,
) -> Result<(), LiveError> {
    let writers = Arc::new(grower.writers.clone());
    if writers.is_empty() {
        return Ok(());
    }
    let accounts_at_start = options.accounts.first().copied().unwrap_or(0);
    let accounts = Arc::new(grower.accounts.clone());
    let body = Arc::new(vec![0xa5u8; options.body_bytes]);
    let block_bytes = options.block_bytes;
    let g = options.group;
    let pool = pool.to_vec();
    let conversations = writers.len();
    let total = count.unwrap_or(conversations);
    // Message k goes to conversation k mod C. Each conversation belongs
    // to one worker, which sends its envelopes one after the other (a
    // member's sequence numbers must reach the router in order).
    let workers = CONCURRENCY.min(conversations);
    let share = move |c: usize| total / conversations + usize::from(c < total % conversations);
    in_parallel(workers, workers, move |w| {
        let writers = writers.clone();
        let accounts = accounts.clone();
        let body = body.clone();
        let mut client = pool[w % pool.len()].clone();
        let mine: Vec<usize> = (w..conversations).step_by(workers).collect();
        let rounds = mine.iter().map(|c| share(*c)).max().unwrap_or(0);
        async move {
            for round in 0..rounds {
                for &c in mine.iter().filter(|c| round < share(**c)) {
                    let (req, account) = {
                        let mut slots = writers[c]
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        // Members take turns, the Setup from the creator.
                        let member = match count {
                            None => 0,
                            Some(_) => (slots.iter().map(|s| s.1).sum::<u64>() % g as u64) as usize,
                        };
                        let (slot, seq) = slots
                            .get_mut(member)
                            .ok_or_else(|| LiveError::Setup("no such member".into()))?;
                        *seq += 1;
                        let kind = if count.is_none() {
                            EnvelopeKind::Setup
                        } else {
                            EnvelopeKind::Message
                        };
                        let (req, _) = slot.envelope(kind, *seq, &body, block_bytes)?;
                        let m = members(c, g, accounts_at_start)
                            .get(member)
                            .copied()
                            .unwrap_or(0);
                        (req, accounts.get(m).cloned())
                    };
                    let account = account
                        .ok_or_else(|| LiveError::Setup("a member was not registered".into()))?;
                    match client.submit(account.authed(req)).await {
                        // Unavailable: the router holds the envelope and has
                        // it attested later (its answer only timed out).
                        Ok(_) => {}
                        Err(s) if s.code() == tonic::Code::Unavailable => {}
                        Err(s) => return Err(rpc("submit")(s)),
                    }
                }
            }
            Ok(())
        }
    })
    .await
}

/// Resident memory now, a stop, the restart timed, memory once settled.
fn measure_restart(
    settle: Duration,
    process: impl Fn(&Devnet) -> &ServerProcess,
    data_dir: &Path,
    net: &mut Devnet,
    restart: impl FnOnce(&mut Devnet) -> Result<(), LiveError>,
) -> Result<ServerFigures, LiveError> {
    let rss_running_bytes = process(net).rss_bytes().unwrap_or(0);
    let started = Instant::now();
    restart(net)?;
    let restart_ms = started.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(settle);
    Ok(ServerFigures {
        rss_running_bytes,
        restart_ms,
        rss_restarted_bytes: process(net).rss_bytes().unwrap_or(0),
        data_bytes: dir_bytes(data_dir),
    })
}

async fn measure_router(net: &mut Devnet, settle: Duration) -> Result<ServerFigures, LiveError> {
    let data = net.router.data_dir.clone();
    let figures = tokio::task::block_in_place(|| {
        measure_restart(
            settle,
            |n| &n.router.process,
            &data,
            net,
            |n| {
                // Stopped before the clock starts: only the start is timed.
                n.router.process.stop(Duration::from_secs(30));
                n.restart_router_within(RESTART_TIMEOUT)
            },
        )
    });
    // The clients of the next stage connect again.
    figures
}

fn measure_order_server(net: &mut Devnet, settle: Duration) -> Result<ServerFigures, LiveError> {
    let data = net
        .order_servers
        .first()
        .map(|n| n.data_dir.clone())
        .ok_or_else(|| LiveError::Setup("no order server".into()))?;
    tokio::task::block_in_place(|| {
        measure_restart(
            settle,
            |n| &n.order_servers[0].process,
            &data,
            net,
            |n| {
                n.stop_order_server(0)?;
                n.restart_order_server_within(0, RESTART_TIMEOUT)
            },
        )
    })
}

impl ScaleReport {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let o = &self.options;
        let mib = |b: u64| b as f64 / 1_048_576.0;
        let mut s = format!(
            "## Cost as the work grows\n\nMachine: {}. Storage: {} ({}). N = {}, {} members per \
             conversation, body {} bytes, blocks {} bytes. Restart: process start to healthy \
             (store loaded, listeners bound); memory: resident set (VmRSS) running before the \
             restart, and {} s after it.\n\n\
             | stage | accounts | conversations | envelopes | attested indices | grown in s | router RSS MiB running | router restart ms | router RSS MiB restarted | router data MiB | order RSS MiB running | order restart ms | order RSS MiB restarted | order data MiB |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            self.machine,
            self.storage.filesystem,
            if self.storage.durable() {
                "durable"
            } else {
                "NOT durable"
            },
            o.servers,
            o.group,
            o.body_bytes,
            o.block_bytes,
            o.settle_ms as f64 / 1000.0,
        );
        for p in &self.points {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} |\n",
                p.stage,
                p.accounts,
                p.conversations,
                p.envelopes,
                p.attested_indices,
                p.grow_seconds,
                mib(p.router.rss_running_bytes),
                p.router.restart_ms,
                mib(p.router.rss_restarted_bytes),
                mib(p.router.data_bytes),
                mib(p.order_server.rss_running_bytes),
                p.order_server.restart_ms,
                mib(p.order_server.rss_restarted_bytes),
                mib(p.order_server.data_bytes),
            ));
        }
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        let g = &self.growth;
        s.push_str(&format!(
            "\nResident memory after a restart, growth in bytes: router {} per account, {} per \
             conversation, {} per stored envelope; order server {} per conversation, {} per \
             attested index.\n",
            f(g.router_per_account),
            f(g.router_per_conversation),
            f(g.router_per_envelope),
            f(g.order_per_conversation),
            f(g.order_per_index),
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ScaleOptions {
        ScaleOptions {
            dir: PathBuf::new(),
            binaries: PathBuf::new(),
            servers: 3,
            group: 2,
            accounts: vec![10_000, 100_000],
            conversations: vec![1_000, 10_000, 100_000],
            envelopes: 1_000_000,
            body_bytes: 64,
            block_bytes: 32,
            settle_ms: 0,
        }
    }

    #[test]
    fn the_plan_grows_history_then_accounts_then_conversations() {
        let p = plan(&options());
        let shape: Vec<(usize, usize, usize)> = p.iter().map(|s| (s.1, s.2, s.3)).collect();
        assert_eq!(
            shape,
            vec![
                (10_000, 1_000, 0),
                (10_000, 1_000, 250_000),
                (10_000, 1_000, 500_000),
                (10_000, 1_000, 1_000_000),
                (100_000, 1_000, 1_000_000),
                (100_000, 10_000, 1_000_000),
                (100_000, 100_000, 1_000_000),
            ]
        );
        let keys = order_keys_needed(&options());
        assert_eq!(keys.len(), 100_000);
        assert_eq!(keys.iter().sum::<usize>(), 100_000 * 2);
        assert!(keys.iter().all(|k| *k <= 3), "{:?}", keys.iter().max());
    }
}
