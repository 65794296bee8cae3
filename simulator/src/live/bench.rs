//! `bench`: end-to-end latency and throughput of the real binaries over TLS
//! with durable storage, against a plain relay measured in the same run.
//!
//! Each cell starts a fresh [`Devnet`] with N order servers, registers g
//! accounts, creates one conversation and subscribes every member. Then:
//!
//! * latency: one message at a time (members take turns), from just before
//!   `Submit` to the moment the last of the g members accepted it (head
//!   chain and a quorum of its own attestation tags checked);
//! * throughput: every member sends at once, each waiting for its own
//!   acknowledgement before the next message; messages accepted by every
//!   member per second. Around this phase the CPU time of the router, the
//!   order servers and this client is read from `/proc` and reported per
//!   message: on one machine it bounds throughput whatever the latency.
//!
//! The baseline is the same router with `relay_only = true`: no order
//! server is contacted and deliveries leave with the router's commit. It
//! does not depend on N, so it is measured once per group size.

use super::LiveError;
use super::bench_client::{Acceptor, BenchAccount, MemberSlot, NotAccepted, connect_router};
use super::devnet::{Devnet, DevnetOptions, Launcher};
use super::probes::{Probes, scrape_all};
use super::process;
use grompi_proto::pb::{self, router_client::RouterClient};
use grompi_proto::{ConversationId, EnvelopeHash, EnvelopeKind};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tonic::transport::Channel;

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct BenchOptions {
    /// Scratch directory for the devnets (removed cell by cell; not part
    /// of the report).
    #[serde(skip)]
    pub dir: PathBuf,
    /// Directory with the `router` and `order-server` binaries, or this
    /// `grompi-sim` executable, which then runs every server itself
    /// (self-hosted: the same library code; what the crate's tests use).
    #[serde(skip)]
    pub binaries: PathBuf,
    /// N of the attested cells; each N is measured at every group size.
    pub servers: Vec<usize>,
    /// Members per conversation; each size also gets one relay baseline cell.
    pub groups: Vec<usize>,
    /// Messages in the latency phase of each cell.
    pub latency_messages: usize,
    /// Messages in the throughput phase of each cell.
    pub throughput_messages: usize,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// Per-recipient block size in bytes.
    pub block_bytes: usize,
    /// Run each cell at the smallest majority quorum (t = N/2 + 1) instead
    /// of t = N: members then wait for the fastest t answers, not all.
    pub majority: bool,
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// `attested` or `relay` (the baseline).
    pub mode: String,
    /// Order servers (0 for the relay).
    pub servers: usize,
    /// t: tags a member requires per index (N, N/2 + 1 with `majority`, 0 for the relay).
    pub quorum: usize,
    /// Members in the conversation, each sending and checking.
    pub group: usize,
    /// Median end-to-end latency, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile end-to-end latency, ms.
    pub latency_p99_ms: f64,
    /// Messages accepted by every member per second.
    pub throughput_per_s: f64,
    /// CPU time per message in the throughput phase, per process (where
    /// the system tells: Linux).
    pub cpu_per_message: Option<CpuPerMessage>,
    /// The servers' own histograms over the latency phase (order-server
    /// commit, router↔order-server round trip, the router's Submit; the
    /// relay's cell has the router's only).
    pub probes: Probes,
}

/// CPU time (user and system) per message accepted in the throughput
/// phase, in microseconds: what one message costs the machine, whichever
/// process spends it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuPerMessage {
    /// Spent by the router process.
    pub router_us: f64,
    /// Every order server together.
    pub order_servers_us: f64,
    /// This benchmark client: every member's sending and checking.
    pub client_us: f64,
}

impl CpuPerMessage {
    /// All processes together.
    pub fn total_us(&self) -> f64 {
        self.router_us + self.order_servers_us + self.client_us
    }
}

/// The servers of a bench devnet: the binaries in `binaries`, or, when it
/// names a file (a `grompi-sim` executable), every server from it.
pub(crate) fn launcher(binaries: &std::path::Path) -> Launcher {
    if binaries.is_file() {
        Launcher::SelfHosted(binaries.to_path_buf())
    } else {
        Launcher::Binaries(binaries.to_path_buf())
    }
}

/// CPU time used so far by the router, the order servers (together) and
/// this process.
pub(crate) fn cpu_times(net: &Devnet) -> Option<[Duration; 3]> {
    let router = net.router.process.cpu_time()?;
    let mut order = Duration::ZERO;
    for s in &net.order_servers {
        order += s.process.cpu_time()?;
    }
    Some([router, order, process::cpu_time("self")?])
}

/// An attested cell next to the relay baseline of the same group size.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// N of the attested cell.
    pub servers: usize,
    /// Members in the conversation, the same in both cells.
    pub group: usize,
    /// Attested p50 / relay p50.
    pub latency_p50: f64,
    /// Attested throughput / relay throughput.
    pub throughput: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// CPU model and count.
    pub machine: String,
    /// The filesystem the servers' data directories were on.
    pub storage: Storage,
    /// What was asked.
    pub options: BenchOptions,
    /// Every cell, baselines included.
    pub cells: Vec<Cell>,
    /// Attested cells as ratios to their baseline.
    pub ratios: Vec<Ratio>,
}

/// Where the servers kept their data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Storage {
    /// The filesystem type (`ext4`, `tmpfs`, ...), from `/proc/self/mounts`.
    pub filesystem: String,
    /// The mounted device, as `/proc/self/mounts` names it.
    pub device: String,
    /// Where it is mounted: the longest mount point the data directory lies under.
    pub mount_point: String,
}

impl Storage {
    /// Whether fsync there reaches a disk (tmpfs and ramfs keep data in
    /// memory only).
    pub fn durable(&self) -> bool {
        !matches!(self.filesystem.as_str(), "tmpfs" | "ramfs")
    }

    /// The mount holding `path` (the longest mount point it is under).
    pub fn of(path: &std::path::Path) -> Storage {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (device, mount_point, filesystem) = (f.next()?, f.next()?, f.next()?);
                // Mount points escape spaces as \040.
                let mount_point = mount_point.replace("\\040", " ");
                path.starts_with(&mount_point).then(|| Storage {
                    filesystem: filesystem.to_owned(),
                    device: device.to_owned(),
                    mount_point,
                })
            })
            .max_by_key(|s| s.mount_point.len())
            .unwrap_or_else(|| Storage {
                filesystem: "unknown".into(),
                device: "unknown".into(),
                mount_point: "unknown".into(),
            })
    }
}

/// The machine, as `/proc/cpuinfo` names it.
pub(crate) fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    format!("{model}, {cpus} CPUs available")
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(rank.min(sorted.len() - 1))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Runs every cell; `progress` hears one line per step.
pub async fn run(
    options: &BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport, LiveError> {
    std::fs::create_dir_all(&options.dir)
        .map_err(LiveError::io(format!("create {}", options.dir.display())))?;
    let storage = Storage::of(&options.dir);
    let mut cells = Vec::new();
    let mut ratios = Vec::new();
    for &g in &options.groups {
        progress(&format!("relay baseline, g = {g}"));
        let base = cell(options, 1, g, true).await?;
        for &n in &options.servers {
            progress(&format!("attested, N = {n}, g = {g}"));
            let c = cell(options, n, g, false).await?;
            ratios.push(Ratio {
                servers: n,
                group: g,
                latency_p50: c.latency_p50_ms / base.latency_p50_ms.max(f64::MIN_POSITIVE),
                throughput: c.throughput_per_s / base.throughput_per_s.max(f64::MIN_POSITIVE),
            });
            cells.push(c);
        }
        cells.push(base);
    }
    Ok(BenchReport {
        machine: machine(),
        storage,
        options: options.clone(),
        cells,
        ratios,
    })
}

/// Completion times of envelopes accepted by every member.
#[derive(Default)]
struct Completions {
    seen: Mutex<HashMap<EnvelopeHash, usize>>,
    done: Mutex<HashMap<EnvelopeHash, Instant>>,
    notify: Notify,
}

impl Completions {
    fn accepted(&self, hash: EnvelopeHash, group: usize) {
        let count = {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let c = seen.entry(hash).or_default();
            *c += 1;
            *c
        };
        if count == group {
            self.done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(hash, Instant::now());
            self.notify.notify_waiters();
        }
    }

    fn done_at(&self, hash: &EnvelopeHash) -> Option<Instant> {
        self.done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(hash)
            .copied()
    }

    fn done_count(&self) -> usize {
        self.done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Waits until `ready()` holds, or fails after `timeout`, or when a
    /// member reported an error.
    async fn wait(
        &self,
        errors: &mut mpsc::UnboundedReceiver<String>,
        timeout: Duration,
        mut ready: impl FnMut(&Self) -> bool,
    ) -> Result<(), LiveError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if ready(self) {
                return Ok(());
            }
            if let Ok(e) = errors.try_recv() {
                return Err(LiveError::Setup(format!(
                    "a member refused a delivery: {e}"
                )));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() && !ready(self) {
                return Err(LiveError::Timeout(
                    "every member to accept the benchmark's messages".into(),
                ));
            }
        }
    }
}

async fn submit(
    client: &mut RouterClient<Channel>,
    account: &BenchAccount,
    req: pb::SubmitRequest,
) -> Result<(), LiveError> {
    client
        .submit(account.authed(req))
        .await
        .map(|_| ())
        .map_err(|s| LiveError::Setup(format!("submit: {:?} {}", s.code(), s.message())))
}

/// One configuration: a fresh devnet, g members, both phases.
async fn cell(options: &BenchOptions, n: usize, g: usize, relay: bool) -> Result<Cell, LiveError> {
    let dir = options.dir.join(format!(
        "{}-n{n}-g{g}",
        if relay { "relay" } else { "attested" }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let devnet_options = DevnetOptions {
        dir: dir.clone(),
        order_servers: n,
        quorum: options
            .majority
            .then(|| grompi_proto::descriptor::min_quorum(n)),
        binaries: options.binaries.clone(),
        // Every benchmark account registers from 127.0.0.1, and each member
        // of a small group submits hundreds of messages a second: lift the
        // per-address budget for unauthenticated calls and the per-account
        // request rate (they protect a public router from abuse; here they
        // would measure the limiter, not the network).
        router_extra: format!(
            "{}[limits]\npeer_requests_per_second = 1000000\npeer_request_burst = 1000000\n\
             requests_per_second = 1000000\nrequest_burst = 1000000\n",
            if relay { "relay_only = true\n" } else { "" }
        ),
        order_extra: String::new(),
        evil: std::collections::BTreeMap::new(),
    };
    let net = tokio::task::block_in_place(|| {
        Devnet::start_with(
            &devnet_options,
            &super::bench::launcher(&devnet_options.binaries),
            None,
        )
    })?;
    let result = measure(options, &net, g, relay).await;
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
    let (latencies, throughput, cpu_per_message, probes) = result?;
    let mut sorted = latencies;
    sorted.sort_unstable();
    Ok(Cell {
        mode: if relay { "relay" } else { "attested" }.into(),
        servers: if relay { 0 } else { n },
        quorum: if relay {
            0
        } else if options.majority {
            grompi_proto::descriptor::min_quorum(n)
        } else {
            n
        },
        group: g,
        latency_p50_ms: percentile(&sorted, 0.5),
        latency_p99_ms: percentile(&sorted, 0.99),
        throughput_per_s: throughput,
        cpu_per_message,
        probes,
    })
}

/// Scrapes of the router's and the order servers' metrics endpoints.
type Scrapes = (Vec<super::probes::Scrape>, Vec<super::probes::Scrape>);

fn scrape_servers(net: &Devnet) -> Result<Scrapes, LiveError> {
    let router: Vec<_> = net.router.addrs.metrics.into_iter().collect();
    let order: Vec<_> = net
        .order_servers
        .iter()
        .filter_map(|s| s.addrs.metrics)
        .collect();
    tokio::task::block_in_place(|| Ok((scrape_all(&router)?, scrape_all(&order)?)))
}

async fn measure(
    options: &BenchOptions,
    net: &Devnet,
    g: usize,
    relay: bool,
) -> Result<(Vec<Duration>, f64, Option<CpuPerMessage>, Probes), LiveError> {
    let mut client = connect_router(&net.descriptor).await?;
    let servers: Vec<_> = if relay {
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
    let mut accounts = Vec::with_capacity(g);
    for i in 0..g {
        accounts.push(Arc::new(
            BenchAccount::register(&mut client, &network, 1000 + i as u64, 2).await?,
        ));
    }
    let id = ConversationId::from_bytes([0x42; 32]);
    let created = client
        .create_conversation(
            accounts[0].authed(pb::CreateConversationRequest {
                conversation_id: id.to_vec(),
                members: accounts
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
        .map_err(|s| LiveError::Setup(format!("create: {:?} {}", s.code(), s.message())))?
        .into_inner();

    // Every member subscribes and checks what it receives.
    let completions = Arc::new(Completions::default());
    let (err_tx, mut errors) = mpsc::unbounded_channel();
    let mut senders = Vec::with_capacity(g);
    let mut tasks = Vec::with_capacity(g);
    for account in &accounts {
        let mut acceptor = Acceptor::new(MemberSlot::new(account, id, &created, &servers)?, quorum);
        let mut stream = client
            .subscribe(account.authed(pb::SubscribeRequest {}))
            .await
            .map_err(|s| LiveError::Setup(format!("subscribe: {s}")))?
            .into_inner();
        let completions = completions.clone();
        let err_tx = err_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(d)) = stream.message().await {
                match acceptor.accept(&d) {
                    Ok(hash) => completions.accepted(hash, g),
                    Err(NotAccepted::TagUpdate) => {}
                    Err(e) => {
                        let _ = err_tx.send(e.to_string());
                        return;
                    }
                }
            }
        }));
        senders.push(MemberSlot::new(account, id, &created, &servers)?);
    }
    let body = vec![0xa5u8; options.body_bytes];
    let timeout = Duration::from_secs(60);
    let mut sequences = vec![0u64; g];

    // The Setup.
    sequences[0] = 1;
    let (req, hash) = senders[0].envelope(EnvelopeKind::Setup, 1, &body, options.block_bytes)?;
    submit(&mut client, &accounts[0], req).await?;
    completions
        .wait(&mut errors, timeout, |c| c.done_at(&hash).is_some())
        .await?;

    // Latency: one message at a time, members taking turns; the servers'
    // histograms read around it.
    // (The relay's cell has no order servers: its probes are the
    // router's.)
    let (router_before, order_before) = scrape_servers(net)?;
    let mut latencies = Vec::with_capacity(options.latency_messages);
    for k in 0..options.latency_messages {
        let m = k % g;
        sequences[m] += 1;
        let (req, hash) = senders[m].envelope(
            EnvelopeKind::Message,
            sequences[m],
            &body,
            options.block_bytes,
        )?;
        let start = Instant::now();
        submit(&mut client, &accounts[m], req).await?;
        completions
            .wait(&mut errors, timeout, |c| c.done_at(&hash).is_some())
            .await?;
        if let Some(at) = completions.done_at(&hash) {
            latencies.push(at.duration_since(start));
        }
    }

    let (router_after, order_after) = scrape_servers(net)?;
    let probes = Probes::between(&router_before, &router_after, &order_before, &order_after);

    // Throughput: every member sends at once.
    let before = completions.done_count();
    let total = options.throughput_messages;
    let cpu_before = cpu_times(net);
    let start = Instant::now();
    let mut sends = Vec::with_capacity(g);
    for (m, slot) in senders.into_iter().enumerate() {
        let share = total / g + usize::from(m < total % g);
        let account = accounts[m].clone();
        let mut client = client.clone();
        let body = body.clone();
        let first = sequences[m] + 1;
        let block_bytes = options.block_bytes;
        sends.push(tokio::spawn(async move {
            for s in first..first + share as u64 {
                let (req, _) = slot.envelope(EnvelopeKind::Message, s, &body, block_bytes)?;
                submit(&mut client, &account, req).await?;
            }
            Ok::<(), LiveError>(())
        }));
    }
    for s in sends {
        s.await
            .map_err(|e| LiveError::Setup(format!("sender task: {e}")))??;
    }
    completions
        .wait(&mut errors, timeout, |c| c.done_count() >= before + total)
        .await?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_per_message = cpu_before.zip(cpu_times(net)).map(|(b, a)| {
        let per = |k: usize| a[k].saturating_sub(b[k]).as_secs_f64() * 1e6 / (total.max(1) as f64);
        CpuPerMessage {
            router_us: per(0),
            order_servers_us: per(1),
            client_us: per(2),
        }
    });
    for t in tasks {
        t.abort();
    }
    Ok((
        latencies,
        total as f64 / elapsed.max(f64::MIN_POSITIVE),
        cpu_per_message,
        probes,
    ))
}

impl BenchReport {
    /// The report as a Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "## End-to-end benchmark\n\nMachine: {}. Storage: {}. TLS on 127.0.0.1. \
             Latency: submit to accepted by every member, {} messages one at a time. \
             Throughput: {} messages, every member sending. Body {} bytes, blocks {} bytes. \
             Quorum: {}. Baseline: the same router with `relay_only = true` (no attestation).\n\n",
            self.machine,
            if self.storage.durable() {
                format!(
                    "durable (fsync on every commit), {} on {}",
                    self.storage.filesystem, self.storage.device
                )
            } else {
                format!(
                    "**{} (in memory: fsync costs nothing; NOT durable, a measurement of \
                     everything but the disk)**",
                    self.storage.filesystem
                )
            },
            self.options.latency_messages,
            self.options.throughput_messages,
            self.options.body_bytes,
            self.options.block_bytes,
            if self.options.majority {
                "the smallest majority, t = N/2 + 1"
            } else {
                "t = N"
            }
        );
        s.push_str(
            "| N | g | p50 ms | p99 ms | msg/s | relay p50 ms | relay msg/s | p50 ratio | throughput ratio |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.ratios {
            let attested = self
                .cells
                .iter()
                .find(|c| c.mode == "attested" && c.servers == r.servers && c.group == r.group);
            let base = self
                .cells
                .iter()
                .find(|c| c.mode == "relay" && c.group == r.group);
            if let (Some(a), Some(b)) = (attested, base) {
                s.push_str(&format!(
                    "| {} | {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2}x | {:.2}x |\n",
                    r.servers,
                    r.group,
                    a.latency_p50_ms,
                    a.latency_p99_ms,
                    a.throughput_per_s,
                    b.latency_p50_ms,
                    b.throughput_per_s,
                    r.latency_p50,
                    r.throughput
                ));
            }
        }
        s.push_str(
            "\nCPU time per message in the throughput phase (user and system, every \
             thread; microseconds). On one machine every process shares its cores, so \
             throughput cannot pass the cores' time divided by the total.\n\n\
             | mode | N | g | router | order servers | client | total | vs relay |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for c in &self.cells {
            let Some(cpu) = c.cpu_per_message else {
                continue;
            };
            let relay = self
                .cells
                .iter()
                .find(|b| b.mode == "relay" && b.group == c.group)
                .and_then(|b| b.cpu_per_message)
                .map(|b| b.total_us());
            s.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} |\n",
                c.mode,
                c.servers,
                c.group,
                cpu.router_us,
                cpu.order_servers_us,
                cpu.client_us,
                cpu.total_us(),
                relay.map_or_else(
                    || "-".to_owned(),
                    |r| format!("{:.2}x", cpu.total_us() / r.max(f64::MIN_POSITIVE))
                ),
            ));
        }
        s.push_str(&self.decomposition());
        s
    }

    /// Target 1's table: per attested cell, the gap to the relay's p50
    /// next to one order-server durable append plus one router↔order-server
    /// round trip, both medians from the servers' own histograms over the
    /// same latency phase.
    pub fn decomposition(&self) -> String {
        let mut s = String::from(
            "\nWhere the gap goes (latency phase; medians from the servers' histograms, \
             interpolated within buckets). Round trip: the router's attest job from sent to \
             answered, less the order server's handling of the request (arrival to answer). \
             Router's Submit: arrival to reply at the router, attested and relay; of the gap, \
             the router's part is their difference (the rest comes after the reply: the \
             deliveries and the members' checks), and the router's own part beyond the attest \
             job is that difference less the job.\n\n\
             | N | g | attested p50 ms | relay p50 ms | gap ms | order commit p50 ms | router attest job p50 ms | order handling p50 ms | round trip p50 ms | commit + round trip ms | gap within it | router commit p50 ms | router's Submit p50 ms, attested / relay | gap in the router ms | of it beyond the job ms | gap after the reply ms |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        for r in &self.ratios {
            let attested = self
                .cells
                .iter()
                .find(|c| c.mode == "attested" && c.servers == r.servers && c.group == r.group);
            let base = self
                .cells
                .iter()
                .find(|c| c.mode == "relay" && c.group == r.group);
            let (Some(a), Some(b)) = (attested, base) else {
                continue;
            };
            let p = &a.probes;
            let gap = a.latency_p50_ms - b.latency_p50_ms;
            let bound = p
                .order_commit_p50_ms
                .zip(p.round_trip_p50_ms)
                .map(|(c, t)| c + t);
            let relay_submit = b.probes.router_submit_p50_ms;
            let in_router = p.router_submit_p50_ms.zip(relay_submit).map(|(a, r)| a - r);
            let beyond_job = in_router.zip(p.router_fanout_p50_ms).map(|(g, j)| g - j);
            s.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |\n",
                r.servers,
                r.group,
                a.latency_p50_ms,
                b.latency_p50_ms,
                gap,
                f(p.order_commit_p50_ms),
                f(p.router_fanout_p50_ms),
                f(p.order_request_p50_ms),
                f(p.round_trip_p50_ms),
                f(bound),
                bound.map_or("-", |b| if gap <= b { "yes" } else { "no" }),
                f(p.router_commit_p50_ms),
                f(p.router_submit_p50_ms),
                f(relay_submit),
                f(in_router),
                f(beyond_job),
                f(in_router.map(|r| gap - r)),
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_names_the_innermost_mount_and_whether_it_is_durable() {
        let root = Storage::of(std::path::Path::new("/"));
        assert_eq!(root.mount_point, "/");
        assert_ne!(root.filesystem, "unknown");
        let proc = Storage::of(std::path::Path::new("/proc/self"));
        assert_eq!(proc.mount_point, "/proc");
        assert_eq!(proc.filesystem, "proc");
        if let Some(shm) = std::path::Path::new("/dev/shm")
            .exists()
            .then(|| Storage::of(std::path::Path::new("/dev/shm")))
            .filter(|s| s.filesystem == "tmpfs")
        {
            assert!(!shm.durable());
        }
    }
}
