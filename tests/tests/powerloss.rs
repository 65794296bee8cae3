//! Power loss: an order server, and then a router, run on a file system
//! that keeps in memory every write not made durable by `fsync` or
//! `fdatasync` (file data) or by an `fsync` of the directory (names), and
//! loses all of it when its process is killed: `tests/powerloss/lazyfs.py`,
//! a FUSE layer over a backing directory. A *cut* kills that process (the
//! disk stops at that instant), then the server, and mounts the backing
//! directory again, which shows exactly what was durable.
//!
//! * `order_server_power_cuts_never_lose_or_change_an_attestation`: an
//!   order server (data directory and rollback anchor on the layer) under
//!   concurrent load from several conversations, with equivocation attempts
//!   large enough to fill the write-ahead log up to its checkpoint size
//!   every third cut, is cut [`ORDER_CUTS`] times at random moments under
//!   load (and once right after `init`, once right after opening the
//!   conversations): some with the log just below its checkpoint size, some
//!   after a checkpoint under load, the others after a few answers. After every cut, every index it ever answered,
//!   resubmitted with the same envelope, gets byte-equal tags; with a
//!   different envelope it is refused as an equivocation; and no
//!   conversation's count is below an answered index.
//! * `router_power_cuts_lose_no_acknowledged_submission`: a router (data
//!   directory on the layer) with three order servers on ordinary disk,
//!   under three concurrent senders, is cut [`ROUTER_CUTS`] times. After
//!   every cut, every envelope whose Submit was acknowledged is at exactly
//!   one index when fetched, at the index it was seen at before; resuming
//!   a submission the cut left unanswered, or resubmitting any acknowledged
//!   envelope (the sender's newest or an older one that left the router's
//!   memory), is answered with its hash; and no resubmission adds an index.
//!
//! Both need `/dev/fuse`, root (to mount), Debian's `python3-fusepy` and
//! the server binaries built, so `cargo test --workspace` lists them as
//! ignored; `tests/powerloss/run.sh` installs the packages, builds the
//! binaries and runs them (`.ci/run` calls it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use grompi_proto::envelope::HeaderFields;
use grompi_proto::pb::{self, RefusalReason, order_service_client::OrderServiceClient};
use grompi_proto::{
    BodyHash, ConversationId, EnvelopeHeader, EnvelopeKind, EnvelopeSummary, Epoch, KeyCommitment,
    OrderServerKey, Sequence, SlotIndex, SlotSet,
};
use grompi_simulator::live::process::{clear_bound_addrs, find_binary, init_order_server};
use grompi_tests::order_conv::Conv;
use grompi_tests::router_member::{Member, authed, fetch_all, hash_of, register};
use grompi_tests::{BoundAddrs, Process};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const SEED: u64 = 0x0b1a_c000;
/// Power cuts of the order server.
const ORDER_CUTS: usize = 20;
/// Power cuts of the router.
const ROUTER_CUTS: usize = 20;
/// The order server's log checkpoints past this many bytes
/// (`grompi_ops::logged_db::CHECKPOINT_BYTES`).
const CHECKPOINT_BYTES: u64 = grompi_ops::logged_db::CHECKPOINT_BYTES;

// ---- the file system that forgets --------------------------------------------

/// The Python interpreter that has `fusepy` (Debian's, not a user's own).
fn python() -> PathBuf {
    std::env::var_os("LAZYFS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

/// A directory on `lazyfs.py`: `mount` shows the backing directory plus
/// whatever was written since; a cut leaves only what was made durable.
struct LazyDisk {
    dir: tempfile::TempDir,
    backing: PathBuf,
    mount: PathBuf,
    fs: Option<Process>,
    mounted: bool,
    mounts: usize,
}

impl LazyDisk {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("backing");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&mount).unwrap();
        let mut disk = Self {
            dir,
            backing,
            mount,
            fs: None,
            mounted: false,
            mounts: 0,
        };
        disk.start();
        disk
    }

    /// Mounts the backing directory and waits until the file system answers.
    fn start(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("powerloss/lazyfs.py");
        let ready = self.dir.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let args = [
            script.to_str().unwrap(),
            self.backing.to_str().unwrap(),
            self.mount.to_str().unwrap(),
            "--ready",
            ready.to_str().unwrap(),
        ];
        let mut fs = Process::spawn(
            "lazyfs",
            &python(),
            &args,
            &self.dir.path().join("lazyfs.stderr"),
        )
        .unwrap();
        self.mounted = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if let Err(e) = fs.check_running() {
                panic!("lazyfs.py did not mount: {e}");
            }
            assert!(Instant::now() < deadline, "lazyfs.py did not mount in 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.fs = Some(fs);
        self.mounts += 1;
    }

    /// The power cut: the file system's process dies with everything not
    /// yet durable. Anything still using the mount gets errors from now on.
    fn cut(&mut self) {
        if let Some(mut fs) = self.fs.take() {
            fs.kill();
        }
    }

    /// Detaches the dead mount, so that it can be mounted again.
    fn detach(&mut self) {
        self.cut();
        if std::mem::take(&mut self.mounted) {
            let status = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mount)
                .status()
                .unwrap();
            assert!(status.success(), "umount -l {}", self.mount.display());
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mount.join(name)
    }
}

impl Drop for LazyDisk {
    fn drop(&mut self) {
        if let Some(mut fs) = self.fs.take() {
            fs.kill();
        }
        if self.mounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mount)
                .status();
        }
    }
}

/// A server binary, built by `tests/powerloss/run.sh` next to this test.
fn server_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().and_then(Path::parent).unwrap();
    find_binary(target, name).unwrap_or_else(|e| {
        panic!(
            "{e}; tests/powerloss/run.sh builds it (cargo build --bins -p grompi-order-server \
             -p grompi-router)"
        )
    })
}

async fn wait_bound(data_dir: &Path, p: &mut Process) -> BoundAddrs {
    grompi_tests::wait_for_bound_addrs(data_dir, p, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(p.log())))
}

fn tail(log: &Path) -> String {
    grompi_simulator::live::process::tail(log, 30)
}

/// `GET /metrics` of a server: the value of each sample named in `names`.
async fn metrics(addr: std::net::SocketAddr, names: &[&str]) -> Option<Vec<f64>> {
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .await
    .ok()??;
    Some(
        names
            .iter()
            .map(|n| {
                text.lines()
                    .find_map(|l| l.strip_prefix(n)?.strip_prefix(' ')?.trim().parse().ok())
                    .unwrap_or(0.0)
            })
            .collect(),
    )
}

// ---- an order server's conversations (grompi_tests::order_conv) ---------------

type OrderClient = OrderServiceClient<Channel>;

/// Every attestation answered: the item sent and the attestation got, per
/// (conversation, index).
type Answered = Arc<Mutex<BTreeMap<(u8, u64), (pb::AttestItem, pb::Attestation)>>>;

/// A request sent without an answer (the power was cut): resent after the
/// restart.
type Pending = (Vec<pb::AttestItem>, Vec<EnvelopeSummary>);

/// Records `a` as the answer for (`tag`, its index), failing if that index
/// was answered before with anything else.
fn record(answered: &Answered, tag: u8, item: pb::AttestItem, a: pb::Attestation) {
    let mut map = answered.lock().unwrap();
    if let Some((prev_item, prev)) = map.get(&(tag, a.index)) {
        assert_eq!(
            prev_item.envelope, item.envelope,
            "conversation {tag} index {}: answered for two envelopes",
            a.index
        );
        assert_eq!(
            prev, &a,
            "conversation {tag} index {}: the tags changed",
            a.index
        );
    }
    map.insert((tag, a.index), (item, a));
}

/// One conversation's load: three items per request until the server stops
/// answering (the power was cut). Returns the conversation and the request
/// that got no answer.
async fn load(
    mut client: OrderClient,
    mut c: Conv,
    tag: u8,
    mut pending: Option<Pending>,
    answered: Answered,
) -> (Conv, Option<Pending>) {
    let mut body = c.next * 1000 + 1;
    loop {
        let (items, summaries) = match pending.take() {
            Some(p) => p,
            None => {
                let mut probe = c.clone();
                let mut items = vec![];
                let mut summaries = vec![];
                for _ in 0..3 {
                    let (item, s) = probe.item((body % 3) as u32, body);
                    probe.accept(&s);
                    body += 1;
                    items.push(item);
                    summaries.push(s);
                }
                (items, summaries)
            }
        };
        let r = client
            .attest(pb::AttestRequest {
                items: items.clone(),
            })
            .await;
        let Ok(r) = r else {
            return (c, Some((items, summaries)));
        };
        for ((result, item), s) in r.into_inner().results.into_iter().zip(items).zip(summaries) {
            match result.outcome.unwrap() {
                pb::attest_result::Outcome::Attested(a) => {
                    assert_eq!(a.index, c.next, "conversation {tag}");
                    record(&answered, tag, item, a);
                    c.seq = c.seq.max(s.header.sequence().0);
                    c.accept(&s);
                }
                pb::attest_result::Outcome::Refused(r) => {
                    panic!("conversation {tag}: refused under load: {}", r.message)
                }
            }
        }
    }
}

/// An item for the index of `item` with another envelope: the same header
/// and tag, `digests` block digests of its own (1024 make about 33 KiB of
/// evidence).
fn other_envelope(item: &pb::AttestItem, digests: usize, rng: &mut StdRng) -> pb::AttestItem {
    let mut changed = item.clone();
    let env = changed.envelope.as_mut().unwrap();
    env.block_digests = (0..digests)
        .map(|_| {
            let mut d = [0u8; 32];
            rng.fill(&mut d[..]);
            d.to_vec()
        })
        .collect();
    changed
}

fn expect_equivocation(result: pb::AttestResult, what: &str) {
    match result.outcome.unwrap() {
        pb::attest_result::Outcome::Refused(r) => assert_eq!(
            RefusalReason::try_from(r.reason).unwrap(),
            RefusalReason::Equivocation,
            "{what}: {}",
            r.message
        ),
        pb::attest_result::Outcome::Attested(a) => {
            panic!("{what}: another envelope was attested at index {}", a.index)
        }
    }
}

/// Equivocation attempts at answered indices, 16 items per request (with
/// `digests` block digests each: 1024 make about 33 KiB), until the server
/// stops answering: each must be refused, and each is kept as evidence,
/// which is what fills the log. Returns how many were refused.
async fn equivocate(mut client: OrderClient, answered: Answered, digests: usize, seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut refused = 0;
    loop {
        let picks: Vec<((u8, u64), pb::AttestItem)> = {
            let map = answered.lock().unwrap();
            if map.is_empty() {
                Vec::new()
            } else {
                (0..16)
                    .map(|_| {
                        let n = rng.random_range(0..map.len());
                        let (k, (item, _)) = map.iter().nth(n).unwrap();
                        (*k, item.clone())
                    })
                    .collect()
            }
        };
        if picks.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let items = picks
            .iter()
            .map(|(_, item)| other_envelope(item, digests, &mut rng))
            .collect();
        let Ok(r) = client.attest(pb::AttestRequest { items }).await else {
            return refused;
        };
        for (((tag, index), _), result) in picks.iter().zip(r.into_inner().results) {
            expect_equivocation(
                result,
                &format!("under load, conversation {tag} index {index}"),
            );
            refused += 1;
        }
    }
}

/// After a restart: every answered index gets byte-equal tags for the same
/// envelope and is refused for another; no conversation's count is below an
/// answered index.
async fn check_answered(client: &mut OrderClient, answered: &Answered, cut: usize) {
    let all: Vec<_> = answered
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    let mut rng = StdRng::seed_from_u64(SEED ^ cut as u64);
    for chunk in all.chunks(512) {
        let items = chunk.iter().map(|(_, (item, _))| item.clone()).collect();
        let r = client
            .attest(pb::AttestRequest { items })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.results.len(), chunk.len());
        for (((tag, index), (_, want)), got) in chunk.iter().zip(r.results) {
            match got.outcome.unwrap() {
                pb::attest_result::Outcome::Attested(a) => assert_eq!(
                    &a, want,
                    "after cut {cut}: conversation {tag} index {index} answered other tags \
                     for the same envelope"
                ),
                pb::attest_result::Outcome::Refused(r) => panic!(
                    "after cut {cut}: conversation {tag} index {index}, answered before, \
                     refused for the same envelope: {}",
                    r.message
                ),
            }
        }
        let items = chunk
            .iter()
            .map(|(_, (item, _))| other_envelope(item, 1, &mut rng))
            .collect();
        let r = client
            .attest(pb::AttestRequest { items })
            .await
            .unwrap()
            .into_inner();
        for (((tag, index), _), got) in chunk.iter().zip(r.results) {
            expect_equivocation(
                got,
                &format!("after cut {cut}: conversation {tag} index {index}"),
            );
        }
    }
    let mut max: BTreeMap<u8, u64> = BTreeMap::new();
    for ((tag, index), _) in &all {
        let m = max.entry(*tag).or_default();
        *m = (*m).max(*index);
    }
    for (tag, max) in max {
        let p = client
            .prove_head(pb::ProveHeadRequest {
                conversation_id: vec![tag; 32],
                slot: 0,
                nonce: vec![3; 32],
            })
            .await
            .unwrap()
            .into_inner()
            .proof
            .unwrap();
        assert!(
            p.count > max,
            "after cut {cut}: conversation {tag} counts {} indices, but index {max} was answered",
            p.count
        );
    }
}

/// An order server whose data directory (and so its rollback anchor) is on
/// a [`LazyDisk`], its configuration and the router identity on ordinary
/// disk.
struct OrderOnDisk {
    disk: LazyDisk,
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    config: PathBuf,
    key: OrderServerKey,
    cert_pem: String,
    router: grompi_ops::tls::TlsIdentity,
}

impl OrderOnDisk {
    fn init() -> Self {
        grompi_ops::tls::install_crypto_provider();
        let disk = LazyDisk::new();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = disk.path("order");
        let key_hex = init_order_server(&server_binary("order-server"), &data_dir).unwrap();
        let key = OrderServerKey::parse("key", &hex::decode(key_hex).unwrap()).unwrap();
        let cert_pem = std::fs::read_to_string(data_dir.join("tls.crt")).unwrap();
        let router = grompi_ops::tls::TlsIdentity::generate(&[]).unwrap();
        router.write_to(dir.path(), "router").unwrap();
        let config = dir.path().join("order.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
                 data_dir = \"{}\"\nrouter_certificate = \"router.crt\"\nlog = \"info\"\n",
                data_dir.display()
            ),
        )
        .unwrap();
        Self {
            disk,
            dir,
            data_dir,
            config,
            key,
            cert_pem,
            router,
        }
    }

    async fn start(&self) -> (Process, BoundAddrs, OrderClient) {
        clear_bound_addrs(&self.data_dir);
        let config = self.config.to_string_lossy().into_owned();
        let mut p = Process::spawn(
            "order-server",
            &server_binary("order-server"),
            &["serve", "--config", &config],
            &self.dir.path().join("order-server.stderr"),
        )
        .unwrap();
        let addrs = wait_bound(&self.data_dir, &mut p).await;
        let channel = grompi_tests::connect(addrs.grpc, &self.cert_pem, Some(&self.router))
            .await
            .unwrap();
        grompi_tests::wait_healthy(
            &channel,
            grompi_tests::ORDER_SERVICE,
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(p.log())));
        (p, addrs, OrderServiceClient::new(channel))
    }

    /// Cuts the power under `server`: the file system first, the process a
    /// moment later (anything it answers in between must be durable too).
    async fn cut(&mut self, server: &mut Process, rng: &mut StdRng) {
        self.disk.cut();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        server.kill();
        self.disk.detach();
        self.disk.start();
    }
}

/// When a cycle of load ends in a cut.
#[derive(Debug, Clone, Copy)]
enum CutAt {
    /// After this many new answers.
    Answers(usize),
    /// Once the log holds at least this many bytes (just below the
    /// checkpoint size: the cut falls before, in or after the checkpoint).
    LogBytes(u64),
    /// This long after the first checkpoint under load.
    AfterCheckpoint(Duration),
}

/// The order server on a file system that loses what is not durable, cut
/// [`ORDER_CUTS`] times under load; see the module doc. Run by
/// `tests/powerloss/run.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs FUSE, root and python3-fusepy: run tests/powerloss/run.sh"]
async fn order_server_power_cuts_never_lose_or_change_an_attestation() {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut node = OrderOnDisk::init();
    // The first cut comes right after init: what init wrote must be durable.
    node.disk.cut();
    node.disk.detach();
    node.disk.start();
    let (mut server, _, mut client) = node.start().await;
    let conversations: u8 = 6;
    let mut convs: Vec<(Conv, Option<Pending>)> = Vec::new();
    for t in 1..=conversations {
        let c = Conv::new(&node.key, t, 3);
        client.open_conversation(c.open_request()).await.unwrap();
        convs.push((c, None));
    }
    // Opening is durable once answered; a cut right after it must keep it.
    node.cut(&mut server, &mut rng).await;
    let (mut server, mut addrs, mut client) = node.start().await;
    let answered: Answered = Arc::default();
    let refused = Arc::new(AtomicU64::new(0));
    let (mut checkpoints, mut near_checkpoint) = (0u64, 0usize);
    for cut in 1..=ORDER_CUTS {
        // Every third cut fills the log up to or past a checkpoint (that
        // takes 4 MiB of evidence, or 64 commits, and the database keeps
        // the evidence, so not more often); the others come after a few answers.
        let plan = match cut % 6 {
            0 => CutAt::AfterCheckpoint(Duration::from_millis(rng.random_range(0..400))),
            3 => CutAt::LogBytes(CHECKPOINT_BYTES - rng.random_range(0..(2 << 20))),
            _ => CutAt::Answers(rng.random_range(10..300)),
        };
        let digests = if matches!(plan, CutAt::Answers(_)) {
            2
        } else {
            1024
        };
        let before = answered.lock().unwrap().len();
        let channel = client.clone();
        let mut tasks: Vec<_> = convs
            .drain(..)
            .enumerate()
            .map(|(i, (c, pending))| {
                tokio::spawn(load(
                    channel.clone(),
                    c,
                    i as u8 + 1,
                    pending,
                    answered.clone(),
                ))
            })
            .collect();
        let equivocators: Vec<_> = (0..2u64)
            .map(|k| {
                let (channel, answered, refused) =
                    (channel.clone(), answered.clone(), refused.clone());
                tokio::spawn(async move {
                    let seed = SEED + cut as u64 * 7 + k;
                    let n = equivocate(channel, answered, digests, seed).await;
                    refused.fetch_add(n, Ordering::Relaxed);
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut checkpoint_seen: Option<Instant> = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "cut {cut} ({plan:?}): the load stalled\n{}",
                tail(server.log())
            );
            assert!(
                !tasks.iter().any(|t| t.is_finished())
                    && !equivocators.iter().any(|t| t.is_finished()),
                "cut {cut}: a load task ended before the cut\n{}",
                tail(server.log())
            );
            let m = metrics(
                addrs.metrics.unwrap(),
                &[
                    "grompi_order_wal_bytes",
                    "grompi_order_wal_checkpoints_total",
                ],
            )
            .await
            .unwrap_or_else(|| vec![0.0, 0.0]);
            let (log_bytes, cps) = (m[0] as u64, m[1] as u64);
            let done = match plan {
                CutAt::Answers(n) => answered.lock().unwrap().len() >= before + n,
                CutAt::LogBytes(b) => {
                    if log_bytes >= b || cps > 0 {
                        near_checkpoint += 1;
                        true
                    } else {
                        false
                    }
                }
                CutAt::AfterCheckpoint(d) => {
                    if cps > 0 && checkpoint_seen.is_none() {
                        checkpoint_seen = Some(Instant::now());
                    }
                    checkpoint_seen.is_some_and(|t| t.elapsed() >= d)
                }
            };
            if done {
                checkpoints += cps;
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..10))).await;
        }
        node.cut(&mut server, &mut rng).await;
        for t in tasks.drain(..) {
            convs.push(t.await.unwrap());
        }
        for e in equivocators {
            e.await.unwrap();
        }
        (server, addrs, client) = node.start().await;
        check_answered(&mut client, &answered, cut).await;
        eprintln!(
            "cut {cut} ({plan:?}): {} indices answered, {} equivocations refused, \
             {checkpoints} checkpoints under load, {:.0?}",
            answered.lock().unwrap().len(),
            refused.load(Ordering::Relaxed),
            started.elapsed()
        );
    }
    let count = answered.lock().unwrap().len();
    assert!(count >= 1000, "only {count} indices answered under load");
    assert!(
        checkpoints >= 3,
        "only {checkpoints} checkpoints under load: the cuts did not cross the log's checkpoints"
    );
    assert!(
        near_checkpoint >= 3,
        "{near_checkpoint} cuts near a checkpoint"
    );
    server.kill();
}

// ---- the router ------------------------------------------------------------------

type RouterClient = pb::router_client::RouterClient<Channel>;

/// The name of the test network, in its descriptor.
const NETWORK_NAME: &str = "powerloss";

/// Three order servers on ordinary disk and a router whose data directory
/// is on a [`LazyDisk`].
struct RouterOnDisk {
    disk: LazyDisk,
    dir: tempfile::TempDir,
    _servers: Vec<Process>,
    keys: Vec<OrderServerKey>,
    router_data: PathBuf,
    router_cert: String,
    router_config: PathBuf,
}

impl RouterOnDisk {
    async fn init() -> Self {
        grompi_ops::tls::install_crypto_provider();
        let disk = LazyDisk::new();
        let dir = tempfile::tempdir().unwrap();
        let router_data = disk.path("router");
        grompi_simulator::live::process::run_init(&server_binary("router"), &router_data).unwrap();
        let router_cert = std::fs::read_to_string(router_data.join("router.crt")).unwrap();
        let mut servers = Vec::new();
        let mut entries = Vec::new();
        let mut keys = Vec::new();
        for i in 0..3 {
            let home = dir.path().join(format!("order{i}"));
            std::fs::create_dir(&home).unwrap();
            let data = home.join("data");
            let key_hex = init_order_server(&server_binary("order-server"), &data).unwrap();
            std::fs::write(home.join("router.crt"), &router_cert).unwrap();
            let config = home.join("order.toml");
            std::fs::write(
                &config,
                "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
                 router_certificate = \"router.crt\"\nlog = \"info\"\n",
            )
            .unwrap();
            let mut p = Process::spawn(
                "order-server",
                &server_binary("order-server"),
                &["serve", "--config", config.to_str().unwrap()],
                &home.join("order-server.stderr"),
            )
            .unwrap();
            let addrs = wait_bound(&data, &mut p).await;
            let key = OrderServerKey::parse("k", &hex::decode(key_hex).unwrap()).unwrap();
            entries.push(grompi_proto::descriptor::OrderServerEntry {
                name: format!("order{i}"),
                address: format!("https://localhost:{}", addrs.grpc.port()),
                public_key: key,
                tls_ca_pem: std::fs::read_to_string(data.join("tls.crt")).unwrap(),
            });
            keys.push(key);
            servers.push(p);
        }
        let descriptor = grompi_proto::descriptor::NetworkDescriptor {
            name: NETWORK_NAME.into(),
            router: grompi_proto::descriptor::RouterEntry {
                address: "https://localhost:1".into(),
                tls_ca_pem: router_cert.clone(),
            },
            order_servers: entries,
            quorum: 2,
        };
        std::fs::write(dir.path().join("network.toml"), descriptor.to_toml()).unwrap();
        let router_config = dir.path().join("router.toml");
        std::fs::write(
            &router_config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndescriptor = \"network.toml\"\n\
                 backoff_base_ms = 20\nbackoff_max_ms = 300\n",
                router_data.display()
            ),
        )
        .unwrap();
        Self {
            disk,
            dir,
            _servers: servers,
            keys,
            router_data,
            router_cert,
            router_config,
        }
    }

    async fn start(&self) -> (Process, RouterClient) {
        clear_bound_addrs(&self.router_data);
        let config = self.router_config.to_string_lossy().into_owned();
        let mut p = Process::spawn(
            "router",
            &server_binary("router"),
            &["serve", "--config", &config],
            &self.dir.path().join("router.stderr"),
        )
        .unwrap();
        let addrs = wait_bound(&self.router_data, &mut p).await;
        let ch = grompi_tests::connect(addrs.grpc, &self.router_cert, None)
            .await
            .unwrap();
        grompi_tests::wait_healthy(&ch, "grompi.v1.Router", Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(p.log())));
        (p, RouterClient::new(ch))
    }

    fn network(&self) -> grompi_proto::ids::NetworkBinding {
        grompi_proto::ids::NetworkBinding::of(NETWORK_NAME, &self.router_cert)
    }
}

/// A submission of `m`'s envelope number `sequence` and its hash.
fn submission(
    keys: &[OrderServerKey],
    m: &Member,
    created: &pb::CreateConversationResponse,
    id: [u8; 32],
    kind: EnvelopeKind,
    sequence: u64,
) -> (pb::SubmitRequest, grompi_proto::EnvelopeHash) {
    let conv = ConversationId::from_bytes(id);
    let set = SlotSet::try_from(created.slots.clone().unwrap()).unwrap();
    let me = created
        .assignments
        .iter()
        .find(|a| a.account == m.account)
        .unwrap();
    let body = format!("{} #{sequence}", hex::encode(&m.account[..4])).into_bytes();
    let header = EnvelopeHeader::new(HeaderFields {
        conversation: conv,
        epoch: Epoch(0),
        kind,
        sender: SlotIndex(me.slot),
        sequence: Sequence(sequence),
        last_seen: None,
        body_hash: BodyHash::of(&body),
        key_commitment: KeyCommitment::from_bytes([7; 32]),
        slot_set_hash: (kind == EnvelopeKind::Setup).then(|| set.hash()),
    })
    .unwrap();
    let blocks = created
        .assignments
        .iter()
        .filter(|a| a.account != m.account)
        .map(|a| grompi_proto::RecipientBlock {
            recipient: SlotIndex(a.slot),
            ciphertext: vec![a.slot as u8; 24],
        })
        .collect();
    let e = grompi_proto::Envelope::new(header, body, blocks).unwrap();
    let hash = e.hash();
    let secret = &m.secrets[&grompi_proto::SlotKey::parse("k", &me.key).unwrap()];
    let tags = keys
        .iter()
        .map(|k| {
            secret
                .mac_keys(k)
                .unwrap()
                .submit(&hash, Sequence(sequence))
                .to_vec()
        })
        .collect();
    (
        pb::SubmitRequest {
            envelope: Some(pb::Envelope::from(&e)),
            submission_tags: tags,
        },
        hash,
    )
}

/// What one sender got acknowledged, and the submission it sent last
/// without an answer (resent first after the restart, as a client resumes).
#[derive(Default)]
struct Sent {
    acked: Vec<(pb::SubmitRequest, grompi_proto::EnvelopeHash)>,
    unanswered: Option<(pb::SubmitRequest, grompi_proto::EnvelopeHash)>,
    next_sequence: u64,
}

/// One sender: submits its next envelope, one at a time, until the router
/// stops answering.
async fn send(
    mut c: RouterClient,
    m: Member,
    keys: Vec<OrderServerKey>,
    created: pb::CreateConversationResponse,
    id: [u8; 32],
    mut sent: Sent,
) -> Sent {
    loop {
        let (req, hash) = match sent.unanswered.take() {
            Some(u) => u,
            None => {
                sent.next_sequence += 1;
                submission(
                    &keys,
                    &m,
                    &created,
                    id,
                    EnvelopeKind::Message,
                    sent.next_sequence,
                )
            }
        };
        match c.submit(authed(&m, req.clone())).await {
            Ok(r) => {
                assert_eq!(r.into_inner().envelope_hash, hash.to_vec());
                sent.acked.push((req, hash));
            }
            Err(status) => {
                // Refused for what it is would be a bug; a cut shows as
                // an unavailable router or a broken connection.
                assert!(
                    !matches!(
                        status.code(),
                        tonic::Code::InvalidArgument
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::PermissionDenied
                            | tonic::Code::Unauthenticated
                    ),
                    "a submission refused: {status:?}"
                );
                sent.unanswered = Some((req, hash));
                return sent;
            }
        }
    }
}

/// The router on a file system that loses what is not durable, cut
/// [`ROUTER_CUTS`] times under three senders; see the module doc. Run by
/// `tests/powerloss/run.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs FUSE, root and python3-fusepy: run tests/powerloss/run.sh"]
async fn router_power_cuts_lose_no_acknowledged_submission() {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(SEED ^ 0x5e7d);
    let mut net = RouterOnDisk::init().await;
    // The first cut comes right after init.
    net.disk.cut();
    net.disk.detach();
    net.disk.start();
    let (mut router, mut c) = net.start().await;
    let network = net.network();
    let members = [
        register(&mut c, &network, 1).await,
        register(&mut c, &network, 2).await,
        register(&mut c, &network, 3).await,
    ];
    let id = [29u8; 32];
    let created = c
        .create_conversation(authed(
            &members[0],
            pb::CreateConversationRequest {
                conversation_id: id.to_vec(),
                members: members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| pb::MemberSpec {
                        account: m.account.clone(),
                        role: if i == 0 { 2 } else { 1 },
                    })
                    .collect(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let (setup, setup_hash) =
        submission(&net.keys, &members[0], &created, id, EnvelopeKind::Setup, 1);
    c.submit(authed(&members[0], setup)).await.unwrap();
    let mut sent: Vec<Sent> = (0..members.len())
        .map(|i| Sent {
            next_sequence: u64::from(i == 0),
            ..Sent::default()
        })
        .collect();
    // Where each acknowledged envelope was seen; it must never move.
    let mut seen: BTreeMap<grompi_proto::EnvelopeHash, u64> = BTreeMap::new();
    let mut total_acked = 0;
    for cut in 0..ROUTER_CUTS {
        let tasks: Vec<_> = sent
            .drain(..)
            .zip(&members)
            .map(|(s, m)| {
                tokio::spawn(send(
                    c.clone(),
                    m.clone(),
                    net.keys.clone(),
                    created.clone(),
                    id,
                    s,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        net.disk.cut();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        router.kill();
        net.disk.detach();
        net.disk.start();
        for t in tasks {
            sent.push(t.await.unwrap());
        }
        (router, c) = net.start().await;
        // Each sender first resumes the submission the cut left without an
        // answer (what a client does): it is answered with its hash, whether
        // the router had committed it or not.
        for (s, m) in sent.iter_mut().zip(&members) {
            if let Some((req, hash)) = s.unanswered.take() {
                let r = c.submit(authed(m, req.clone())).await.unwrap_or_else(|e| {
                    panic!("after cut {cut}: resuming an unanswered submission: {e:?}")
                });
                assert_eq!(&r.into_inner().envelope_hash, &hash.to_vec());
                s.acked.push((req, hash));
            }
        }
        // Every acknowledged envelope is delivered once the servers have
        // attested what the router had committed (it re-sends after a start).
        let mut acked: Vec<grompi_proto::EnvelopeHash> = vec![setup_hash];
        for s in &sent {
            acked.extend(s.acked.iter().map(|(_, h)| *h));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let all = loop {
            let all = fetch_all(&mut c, &members[0], &id).await;
            let have: std::collections::HashSet<_> = all.iter().map(hash_of).collect();
            let missing: Vec<_> = acked.iter().filter(|h| !have.contains(h)).collect();
            if missing.is_empty() {
                break all;
            }
            assert!(
                Instant::now() < deadline,
                "after cut {cut}: {} acknowledged envelopes are not delivered (of {}), \
                 e.g. {:?}\n{}",
                missing.len(),
                acked.len(),
                missing.first(),
                tail(router.log())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut at: BTreeMap<grompi_proto::EnvelopeHash, u64> = BTreeMap::new();
        for (i, d) in all.iter().enumerate() {
            assert_eq!(d.index, i as u64, "after cut {cut}: indices are dense");
            assert!(
                at.insert(hash_of(d), d.index).is_none(),
                "after cut {cut}: an envelope at two indices ({} and another)",
                d.index
            );
        }
        for (h, i) in &seen {
            assert_eq!(
                at.get(h),
                Some(i),
                "after cut {cut}: an envelope seen at index {i} moved"
            );
        }
        for h in &acked {
            seen.insert(*h, at[h]);
        }
        // Resubmitting any acknowledged envelope, the sender's newest or an
        // older one, is answered with its hash (the router keeps where each
        // stored envelope was admitted, by sender slot and sequence, across
        // restarts) and adds no index.
        for (s, m) in sent.iter().zip(&members) {
            let n = s.acked.len();
            let mut picks: Vec<usize> = (n.saturating_sub(1)..n).collect();
            for _ in 0..4 {
                if n > 1 {
                    picks.push(rng.random_range(0..n - 1));
                }
            }
            for i in picks {
                let (req, hash) = &s.acked[i];
                match c.submit(authed(m, req.clone())).await {
                    Ok(r) => assert_eq!(&r.into_inner().envelope_hash, &hash.to_vec()),
                    Err(e) => panic!(
                        "after cut {cut}: resubmitting acknowledged envelope {i} of {n} of a \
                         sender: {e:?}"
                    ),
                }
            }
        }
        let again = fetch_all(&mut c, &members[0], &id).await;
        let mut count: BTreeMap<grompi_proto::EnvelopeHash, usize> = BTreeMap::new();
        for d in &again {
            *count.entry(hash_of(d)).or_default() += 1;
        }
        assert!(
            count.values().all(|n| *n == 1),
            "after cut {cut}: a resubmission added an index"
        );
        total_acked = acked.len();
        eprintln!(
            "router cut {cut}: {total_acked} acknowledged, {} delivered, {:.0?}",
            again.len(),
            started.elapsed()
        );
    }
    assert!(
        total_acked >= 100,
        "only {total_acked} submissions acknowledged"
    );
    router.kill();
}
