//! The shell around the core: one core task that runs the
//! [`Driver`] over batches of requests, a committer thread that folds the
//! batches queued behind a running commit into one durable commit (group
//! commit) before performing their effects, one worker task per order
//! server that keeps up to [`PIPELINE_DEPTH`] jobs in flight over an ordered
//! stream, a ticker, and the hub of live subscribers ([`crate::hub`]).
//! Resubmissions the core answers from storage ([`Effect::Lookup`]) are
//! read on tokio's blocking pool after their batch's commit. The loop's logic is
//! the driver's ([`crate::driver`]); this module only moves its inputs and
//! outputs between threads, channels and sockets.

use crate::core::{Command, Effect, Response, RouterCore, SequenceLookup};
use crate::driver::{CommitBatch, Driver, DriverConfig, Input, fold};
use crate::error::RouterError;
use crate::fanout::{JobResult, OpenOutcome, ServerJob, StreamOrder};
use crate::store::{Durability, EnvelopeReader, Store};

pub use crate::driver::PIPELINE_DEPTH;
pub use crate::hub::Hub;
use crate::{Millis, Ticket};
use grompi_proto::pb::order_service_client::OrderServiceClient;
use grompi_proto::{AccountId, pb};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

/// Most requests folded into one commit.
const MAX_BATCH: usize = 1024;

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A reply channel.
pub type Reply = oneshot::Sender<Result<Response, RouterError>>;

/// A message to the core task.
#[derive(Debug)]
pub enum CoreMsg {
    /// A command, with the channel for its answer (none for job results).
    Request(Box<Command>, Option<Reply>),
    /// Time passed: retry, noise.
    Tick,
    /// Stop after this batch.
    Shutdown,
}

/// A batch's effects once its tickets are matched to their reply channels.
enum Ready {
    Reply(Reply, Result<Response, RouterError>),
    Job(ServerJob),
    Lookup(Reply, SequenceLookup),
    Deliver {
        account: AccountId,
        delivery: Box<pb::Delivery>,
    },
}

/// What the core task hands the committer: one batch's records and the
/// effects that wait for them.
type Batch = CommitBatch<Ready>;

/// Most batches queued for the committer before the core task waits.
const COMMIT_QUEUE: usize = 64;

/// Matches an effect to its reply channel (none when the waiter is gone).
fn ready_one(effect: Effect, waiting: &mut HashMap<Ticket, Reply>) -> Option<Ready> {
    match effect {
        Effect::Reply(t, r) => waiting.remove(&t).map(|tx| Ready::Reply(tx, r)),
        Effect::Job(job) => Some(Ready::Job(job)),
        Effect::Lookup(t, l) => waiting.remove(&t).map(|tx| Ready::Lookup(tx, l)),
        Effect::Deliver { account, delivery } => Some(Ready::Deliver { account, delivery }),
    }
}

/// Matches effects to reply channels.
fn ready(effects: Vec<Effect>, waiting: &mut HashMap<Ticket, Reply>) -> Vec<Ready> {
    effects
        .into_iter()
        .filter_map(|effect| ready_one(effect, waiting))
        .collect()
}

/// Where effects go: the order server workers, the hub, and storage for
/// lookups, which run on the blocking pool of the tokio runtime the core
/// was started in (in place, without one).
struct Performer {
    jobs: Vec<mpsc::UnboundedSender<ServerJob>>,
    hub: Arc<Hub>,
    reader: Arc<dyn EnvelopeReader>,
    blocking: Option<tokio::runtime::Handle>,
}

impl Performer {
    fn perform(&self, effects: Vec<Ready>) {
        for effect in effects {
            match effect {
                Ready::Reply(tx, r) => {
                    let _ = tx.send(r);
                }
                Ready::Job(job) => {
                    if let Some(tx) = self.jobs.get(job.server as usize) {
                        let _ = tx.send(job);
                    }
                }
                Ready::Lookup(tx, lookup) => self.look_up(tx, lookup),
                Ready::Deliver { account, delivery } => self.hub.deliver(&account, *delivery),
            }
        }
    }

    /// Performs a step's early effects on the core task: the deliveries
    /// first, and the replies in a task of their own, queued behind the
    /// members' delivery tasks. (The task woken last runs first on the
    /// core's worker: a reply sent last would be handled before the
    /// deliveries it follows.)
    fn perform_early(&self, effects: Vec<Ready>) {
        let delivers = effects.iter().any(|e| matches!(e, Ready::Deliver { .. }));
        if !delivers {
            return self.perform(effects);
        }
        let mut replies = Vec::new();
        let mut rest = Vec::with_capacity(effects.len());
        for effect in effects {
            match effect {
                Ready::Reply(tx, r) => replies.push((tx, r)),
                other => rest.push(other),
            }
        }
        self.perform(rest);
        if !replies.is_empty() {
            tokio::spawn(async move {
                for (tx, r) in replies {
                    let _ = tx.send(r);
                }
            });
        }
    }

    /// Reads what `lookup` needs on the blocking pool (off the core task,
    /// the committer thread and the async workers), then answers.
    fn look_up(&self, tx: Reply, lookup: SequenceLookup) {
        let reader = self.reader.clone();
        let answer = move || {
            let stored = reader.admitted(
                &lookup.conversation,
                lookup.epoch,
                lookup.slot,
                lookup.sequence,
            );
            let _ = tx.send(lookup.answer(stored));
        };
        match &self.blocking {
            Some(handle) => drop(handle.spawn_blocking(answer)),
            None => answer(),
        }
    }
}

/// Starts the core task and its committer thread, running `core` as
/// [`DriverConfig::PRODUCTION`] says. The core task runs the [`Driver`]
/// over batches of requests and never waits for the disk: it performs a
/// batch's early effects at once (see [`crate::core::Output`]) and hands
/// the [`CommitBatch`] to the committer, which [`fold`]s every batch queued
/// behind the running commit into one (group commit), commits it,
/// and only then performs their effects, in order. Returns the core's
/// sender and a handle that yields the result (an error if storage failed).
///
/// The core runs as a task on the calling tokio runtime rather than on a
/// thread of its own: an order server's answer then reaches it, and its
/// reply reaches the waiting call, as a wake-up of a task on the same
/// runtime (tokio runs a task woken by the running one next on the same
/// worker), not as a wake-up of another thread. Its steps are short (a
/// batch of commands on in-memory state); the disk is the committer's.
/// Must be called from within a tokio runtime.
pub fn start_core(
    core: RouterCore,
    store: Box<dyn Store>,
    jobs: Vec<mpsc::UnboundedSender<ServerJob>>,
    hub: Arc<Hub>,
    queue: usize,
) -> (
    mpsc::Sender<CoreMsg>,
    tokio::task::JoinHandle<Result<(), RouterError>>,
) {
    let (tx, rx) = mpsc::channel::<CoreMsg>(queue.max(16));
    let performer = Performer {
        jobs,
        hub,
        reader: store.reader(),
        blocking: tokio::runtime::Handle::try_current().ok(),
    };
    let handle = tokio::spawn(run_core(core, store, performer, rx));
    (tx, handle)
}

/// Hands `batch` to the committer; false if the committer stopped. When
/// [`COMMIT_QUEUE`] batches are already waiting for it, the core waits
/// (without holding its worker thread) until one is taken.
async fn hand_to_committer(tx: &std::sync::mpsc::SyncSender<Batch>, mut batch: Batch) -> bool {
    let mut wait = Duration::from_micros(100);
    loop {
        match tx.try_send(batch) {
            Ok(()) => return true,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
            Err(std::sync::mpsc::TrySendError::Full(b)) => {
                batch = b;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(5));
            }
        }
    }
}

async fn run_core(
    core: RouterCore,
    store: Box<dyn Store>,
    performer: Performer,
    mut rx: mpsc::Receiver<CoreMsg>,
) -> Result<(), RouterError> {
    let performer = Arc::new(performer);
    let (commit_tx, commit_rx) = std::sync::mpsc::sync_channel::<Batch>(COMMIT_QUEUE);
    let committer = {
        let performer = performer.clone();
        std::thread::Builder::new()
            .name("router-commit".into())
            .spawn(move || run_committer(store, commit_rx, &performer, DEFERRED_HOLD))
            .map_err(|e| RouterError::ThreadStart {
                thread: "committer",
                reason: e.to_string(),
            })?
    };
    let mut driver = Driver::new(core, DriverConfig::PRODUCTION);
    let mut waiting: HashMap<Ticket, Reply> = HashMap::new();
    let mut next_ticket = 0u64;
    let mut last_gauges = Instant::now();
    let mut committer_alive = true;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let mut stop = false;
        // The worker thread's generator, taken for this step only (the task
        // may resume on another worker after the next wait).
        let step = {
            let mut rng = rand::rng();
            for m in batch {
                match m {
                    CoreMsg::Request(cmd, reply) => {
                        next_ticket += 1;
                        let t = Ticket(next_ticket);
                        if let Some(r) = reply {
                            waiting.insert(t, r);
                        }
                        driver.input(Input::Command(t, cmd), now, &mut rng);
                    }
                    CoreMsg::Tick => driver.input(Input::Tick, now, &mut rng),
                    CoreMsg::Shutdown => stop = true,
                }
            }
            driver.finish(now, &mut rng)
        };
        performer.perform_early(ready(step.early, &mut waiting));
        let batch = step
            .commit
            .filter_map_effects(|effect| ready_one(effect, &mut waiting));
        if !hand_to_committer(&commit_tx, batch).await {
            // The committer stopped: storage failed. Its result says why.
            committer_alive = false;
            break;
        }
        // Requests whose waiters went away (timeouts) are forgotten.
        waiting.retain(|_, r| !r.is_closed());
        metrics::gauge!("router_waiting_requests").set(waiting.len() as f64);
        if last_gauges.elapsed() >= Duration::from_secs(1) {
            metrics::gauge!("router_pending_envelopes").set(driver.core().pending_count() as f64);
            metrics::gauge!("router_held_bytes").set(driver.core().held_bytes() as f64);
            last_gauges = Instant::now();
        }
        if stop {
            break;
        }
    }
    drop(commit_tx);
    for (_, r) in waiting.drain() {
        let _ = r.send(Err(RouterError::Stopping));
    }
    let committed = tokio::task::spawn_blocking(move || committer.join())
        .await
        .map_err(|_| RouterError::CommitterPanicked)?
        .map_err(|_| RouterError::CommitterPanicked)?;
    if committer_alive {
        committed
    } else {
        committed.and(Err(RouterError::CommitterStopped))
    }
}

/// Answers every request among `effects` with a storage failure (their
/// batch was not committed).
fn fail_effects(effects: Vec<Ready>) {
    for effect in effects {
        if let Ready::Reply(tx, _) | Ready::Lookup(tx, _) = effect {
            let _ = tx.send(Err(RouterError::StorageFailed));
        }
    }
}

/// How long the committer keeps a batch that holds only records restating
/// order servers' answers ([`Durability::Deferred`]) and no effects,
/// waiting for the next batch to fold it into: the answers' effects left
/// before the commit already, and the records are not synced anyway, so
/// a commit of their own would cost a database commit for nothing that
/// waits on it. A batch with effects, or this much time since the first
/// batch held, commits whatever is held.
pub(crate) const DEFERRED_HOLD: Duration = Duration::from_millis(5);
/// At most this many records are held ([`DEFERRED_HOLD`]).
pub(crate) const DEFERRED_HOLD_RECORDS: usize = 1024;

/// Whether `batch` may wait for the next one ([`DEFERRED_HOLD`]): deferred
/// records only, nothing performed after its commit.
fn may_hold(batch: &Batch) -> bool {
    batch.durability == Durability::Deferred
        && batch.effects.is_empty()
        && !batch.records.is_empty()
        && batch.records.len() < DEFERRED_HOLD_RECORDS
}

/// Commits batches in order, folding all that are queued into one commit
/// ([`fold`]), then performs their effects. A batch of deferred records
/// without effects waits up to `hold` ([`DEFERRED_HOLD`] in production)
/// to be folded into the next batch; every effect is still performed
/// only after the records of every batch before it are committed. On a
/// storage failure it stops, failing every queued request, so a restart
/// reloads the committed state.
fn run_committer(
    mut store: Box<dyn Store>,
    rx: std::sync::mpsc::Receiver<Batch>,
    performer: &Performer,
    hold: Duration,
) -> Result<(), RouterError> {
    // A batch waiting for the next, and since when.
    let mut held: Option<(Batch, Instant)> = None;
    loop {
        let (next, stopping) = match &held {
            None => match rx.recv() {
                Ok(b) => (Some(b), false),
                Err(_) => break,
            },
            Some((_, since)) => {
                let left = hold.saturating_sub(since.elapsed());
                match rx.recv_timeout(left) {
                    Ok(b) => (Some(b), false),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => (None, false),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => (None, true),
                }
            }
        };
        let since = held.as_ref().map_or_else(Instant::now, |(_, t)| *t);
        let mut batches: Vec<Batch> = held.take().map(|(b, _)| b).into_iter().collect();
        let waited_enough = next.is_none();
        batches.extend(next);
        while let Ok(b) = rx.try_recv() {
            batches.push(b);
        }
        let batch = fold(batches);
        if !waited_enough && may_hold(&batch) {
            held = Some((batch, since));
            continue;
        }
        let started = Instant::now();
        if let Err(e) = batch.commit_to(store.as_mut()) {
            tracing::error!(error = %e, "commit failed; stopping so a restart reloads the committed state");
            fail_effects(batch.effects);
            while let Ok(b) = rx.try_recv() {
                fail_effects(b.effects);
            }
            return Err(RouterError::Storage(e.to_string()));
        }
        if !batch.records.is_empty() {
            let kind = match batch.durability {
                Durability::Now => "synced",
                Durability::Deferred => "deferred",
            };
            metrics::histogram!("router_commit_seconds", "durability" => kind)
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("router_commit_batch_commands").record(batch.inputs as f64);
        }
        performer.perform(batch.effects);
        // The effects are out (what they promise is on disk through the
        // log); a checkpoint the commit made due comes now, not before.
        if let Err(e) = store.checkpoint_if_due() {
            tracing::error!(error = %e, "checkpoint failed; stopping so a restart replays the log");
            while let Ok(b) = rx.try_recv() {
                fail_effects(b.effects);
            }
            return Err(RouterError::Storage(e.to_string()));
        }
        if stopping {
            break;
        }
    }
    // A graceful stop: the core sent its last batch (anything held was
    // committed above). Checkpointing now leaves the next start no log to
    // replay.
    if let Err(e) = store.close() {
        tracing::error!(error = %e, "the checkpoint at shutdown failed; the next start replays the log");
        return Err(RouterError::Storage(e.to_string()));
    }
    Ok(())
}

/// The attest stream to one order server: requests go in on `requests`,
/// answers come back on `answers`, in the same order.
struct AttestLink {
    requests: mpsc::Sender<pb::AttestRequest>,
    answers: tonic::Streaming<pb::AttestResponse>,
}

/// A job sent over the stream and not yet answered.
struct Flying {
    id: u64,
    opens: Vec<OpenOutcome>,
    items: usize,
    sent_at: Instant,
}

async fn open_link(
    client: &OrderServiceClient<Channel>,
    timeout: Duration,
) -> Result<AttestLink, String> {
    let (requests, rx) = mpsc::channel(PIPELINE_DEPTH);
    let mut c = client.clone();
    match tokio::time::timeout(
        timeout,
        c.attest_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    {
        Ok(Ok(r)) => Ok(AttestLink {
            requests,
            answers: r.into_inner(),
        }),
        Ok(Err(s)) => Err(format!("{}: {}", s.code(), s.message())),
        Err(_) => Err("timed out opening the attest stream".into()),
    }
}

/// The next answer on the link; never resolves without one.
async fn next_answer(
    link: &mut Option<AttestLink>,
) -> Result<Option<pb::AttestResponse>, tonic::Status> {
    match link {
        Some(l) => l.answers.message().await,
        None => std::future::pending().await,
    }
}

async fn run_opens(
    client: &OrderServiceClient<Channel>,
    opens: &[pb::OpenConversationRequest],
    timeout: Duration,
) -> Vec<OpenOutcome> {
    futures::future::join_all(opens.iter().map(|o| {
        let mut c = client.clone();
        let o = o.clone();
        async move {
            match tokio::time::timeout(timeout, c.open_conversation(o)).await {
                Ok(Ok(r)) => OpenOutcome::Opened(r.into_inner().genesis_head),
                Ok(Err(s)) if s.code() == tonic::Code::AlreadyExists => OpenOutcome::AlreadyOpen,
                Ok(Err(s)) => OpenOutcome::Failed(format!("{}: {}", s.code(), s.message())),
                Err(_) => OpenOutcome::Failed("timed out".into()),
            }
        }
    }))
    .await
}

/// Runs one order server's jobs and reports their results to the core.
/// Opens are plain calls; attest batches go over one `AttestStream`, up to
/// [`PIPELINE_DEPTH`] at once (the core decides how many it sends), and
/// are answered in order. When the stream fails or an answer is late,
/// every job in flight is reported failed and the next job opens a new
/// stream; the core sends again from the server's progress. A job that
/// follows one sent on a stream that broke since fails unsent
/// ([`StreamOrder`]): it waited for a commit while the stream broke.
pub async fn server_worker(
    server: u32,
    name: String,
    client: OrderServiceClient<Channel>,
    mut jobs: mpsc::UnboundedReceiver<ServerJob>,
    core: mpsc::Sender<CoreMsg>,
    timeout: Duration,
) {
    let mut link: Option<AttestLink> = None;
    let mut order = StreamOrder::default();
    let mut flying: std::collections::VecDeque<Flying> = std::collections::VecDeque::new();
    let report = |result: JobResult| {
        let core = core.clone();
        async move {
            core.send(CoreMsg::Request(Box::new(Command::JobDone(result)), None))
                .await
                .is_ok()
        }
    };
    loop {
        let deadline = flying
            .front()
            .map(|f| tokio::time::Instant::from_std(f.sent_at + timeout));
        let failure: Option<String> = tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else { return };
                if !order.admits(&job) {
                    if !report(StreamOrder::unsent(&job)).await {
                        return;
                    }
                    continue;
                }
                let opens = run_opens(&client, &job.opens, timeout).await;
                if job.request.items.is_empty() {
                    let done = JobResult { id: job.id, server, opens, attest: Ok(Vec::new()) };
                    if !report(done).await {
                        return;
                    }
                    continue;
                }
                if link.is_none() {
                    match open_link(&client, timeout).await {
                        Ok(l) => link = Some(l),
                        Err(e) => {
                            tracing::debug!(server = %name, error = %e, "cannot open the attest stream");
                            let done = JobResult { id: job.id, server, opens, attest: Err(e) };
                            if !report(done).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
                let items = job.request.items.len();
                order.sent(&job);
                let sent = match &link {
                    Some(l) => l.requests.send(job.request).await.is_ok(),
                    None => false,
                };
                flying.push_back(Flying { id: job.id, opens, items, sent_at: Instant::now() });
                if sent { None } else { Some("the attest stream closed".to_string()) }
            }
            answer = next_answer(&mut link), if link.is_some() && !flying.is_empty() => {
                match answer {
                    Ok(Some(answer)) => {
                        let Some(f) = flying.pop_front() else { continue };
                        metrics::histogram!("router_fanout_seconds", "server" => name.clone())
                            .record(f.sent_at.elapsed().as_secs_f64());
                        metrics::counter!("router_attest_items_total", "server" => name.clone())
                            .increment(f.items as u64);
                        let done = JobResult { id: f.id, server, opens: f.opens, attest: Ok(answer.results) };
                        if !report(done).await {
                            return;
                        }
                        None
                    }
                    Ok(None) => Some("the order server ended the attest stream".to_string()),
                    Err(s) => Some(format!("{}: {}", s.code(), s.message())),
                }
            }
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            }, if deadline.is_some() => Some("timed out".to_string()),
        };
        if let Some(e) = failure {
            tracing::debug!(server = %name, error = %e, in_flight = flying.len(), "attest stream failed");
            link = None;
            order.broke();
            for f in flying.drain(..) {
                let done = JobResult {
                    id: f.id,
                    server,
                    opens: f.opens,
                    attest: Err(e.clone()),
                };
                if !report(done).await {
                    return;
                }
            }
        }
    }
}

/// The bytes free for an unprivileged writer on the file system holding
/// `dir`.
#[cfg(unix)]
pub fn free_space(dir: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Without statvfs the free space is unknown: the reserve is never
/// reached.
#[cfg(not(unix))]
pub fn free_space(_dir: &std::path::Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// Measures the free space of `dir`'s file system every `every` and
/// tells the core (`Command::DiskSpace`), which refuses new writes while
/// it is below `limits.disk_reserve_bytes`; until the core is gone. A
/// failed measurement is logged and skipped (the core keeps the last).
pub async fn disk_watch(core: mpsc::Sender<CoreMsg>, dir: std::path::PathBuf, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let free = match free_space(&dir) {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot measure free disk space");
                continue;
            }
        };
        metrics::gauge!("router_disk_free_bytes").set(free as f64);
        let msg = CoreMsg::Request(Box::new(Command::DiskSpace { free }), None);
        if core.send(msg).await.is_err() {
            return;
        }
    }
}

/// Sends a tick to the core every `every`, until the core is gone.
pub async fn ticker(core: mpsc::Sender<CoreMsg>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        if core.send(CoreMsg::Tick).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod lookup_tests {
    use super::*;
    use crate::record::{Admitted, Record};
    use crate::store::MemStore;
    use grompi_proto::{ConversationId, EnvelopeHash, Epoch, Index, Sequence, SlotIndex};

    /// A resubmission the core could not answer from memory is answered
    /// from storage on the blocking pool: the same envelope as a success
    /// with its hash, another one or none stored as a replay.
    #[tokio::test]
    async fn a_lookup_is_answered_from_storage_off_the_async_threads() {
        let mut store = MemStore::new();
        let c = ConversationId::from_bytes([3; 32]);
        let hash = EnvelopeHash::from_bytes([4; 32]);
        store
            .commit(
                &[Record::SlotSequence {
                    conversation: c,
                    epoch: Epoch(0),
                    slot: SlotIndex(1),
                    sequence: Sequence(2),
                    admitted: Some(Admitted {
                        index: Index(5),
                        hash,
                    }),
                }],
                Durability::Now,
            )
            .unwrap();
        let performer = Performer {
            jobs: Vec::new(),
            hub: Arc::new(Hub::new(crate::hub::HubLimits::of(
                &crate::limits::Limits::default(),
            ))),
            reader: store.reader(),
            blocking: Some(tokio::runtime::Handle::current()),
        };
        let ask = |sequence: u64, hash: EnvelopeHash| {
            let (tx, rx) = oneshot::channel();
            let lookup = SequenceLookup {
                conversation: c,
                epoch: Epoch(0),
                slot: SlotIndex(1),
                sequence: Sequence(sequence),
                last: Sequence(3),
                hash,
            };
            performer.perform(vec![Ready::Lookup(tx, lookup)]);
            rx
        };
        let same = ask(2, hash).await.unwrap();
        assert!(
            matches!(&same, Ok(Response::Submitted(s)) if s.envelope_hash == hash.to_vec()),
            "{same:?}"
        );
        for (sequence, other) in [(2, EnvelopeHash::from_bytes([5; 32])), (1, hash)] {
            let refused = ask(sequence, other).await.unwrap();
            assert!(
                matches!(
                    &refused,
                    Err(RouterError::Inadmissible(
                        grompi_proto::Misbehaviour::SequenceNotIncreasing { last, got, .. }
                    )) if *last == Sequence(3) && *got == Sequence(sequence)
                ),
                "{refused:?}"
            );
        }
    }
}

#[cfg(test)]
mod shutdown_tests {
    use super::*;
    use crate::core::CoreConfig;
    use crate::record::Record;
    use crate::store::{RedbStore, Snapshot, StoreError};
    use grompi_proto::AccountId;

    /// A graceful stop checkpoints the store: the next open has no log
    /// to replay (and needs no repair).
    #[tokio::test]
    async fn a_graceful_stop_leaves_no_log_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.redb");
        let mut store = RedbStore::open(&path).unwrap();
        for key in 0..20u8 {
            store
                .commit(
                    &[Record::OneTimePrekey {
                        account: AccountId::from_bytes([1; 32]),
                        key: [key; 32],
                        present: true,
                    }],
                    Durability::Now,
                )
                .unwrap();
        }
        let core = RouterCore::restore(
            CoreConfig {
                servers: Vec::new(),
                quorum: 0,
                limits: crate::limits::Limits::default(),
                padding_tiers: vec![4],
                noise_interval_ms: None,
                max_batch: 4,
                backoff_base_ms: 10,
                backoff_max_ms: 100,
            },
            Snapshot::default(),
        )
        .unwrap();
        let hub = Arc::new(Hub::new(crate::hub::HubLimits::of(
            &crate::limits::Limits::default(),
        )));
        let (tx, core_task) = start_core(core, Box::new(store), Vec::new(), hub, 16);
        tx.send(CoreMsg::Shutdown).await.unwrap();
        drop(tx);
        core_task.await.unwrap().unwrap();
        let reopened = RedbStore::open(&path).unwrap();
        let report = reopened.open_report();
        assert_eq!(report.log_records, 0, "{report:?}");
        assert!(!report.repaired, "{report:?}");
        assert_eq!(reopened.load().unwrap().one_time_prekeys.len(), 20);
    }

    /// Where the test's reply arrives.
    type ReplySlot =
        Arc<std::sync::Mutex<Option<oneshot::Receiver<Result<Response, RouterError>>>>>;

    /// A performer with no order servers, over `reader`.
    fn performer(reader: Arc<dyn EnvelopeReader>) -> Performer {
        Performer {
            jobs: Vec::new(),
            hub: Arc::new(Hub::new(crate::hub::HubLimits::of(
                &crate::limits::Limits::default(),
            ))),
            reader,
            blocking: None,
        }
    }

    /// A store that records, at each `checkpoint_if_due`, whether the
    /// reply of the batch just committed had already been sent.
    struct Watching {
        inner: crate::store::MemStore,
        reply: ReplySlot,
        seen: Arc<std::sync::Mutex<Vec<bool>>>,
    }

    impl Store for Watching {
        fn commit(&mut self, records: &[Record], durability: Durability) -> Result<(), StoreError> {
            self.inner.commit(records, durability)
        }
        fn load(&self) -> Result<Snapshot, StoreError> {
            self.inner.load()
        }
        fn reader(&self) -> Arc<dyn EnvelopeReader> {
            self.inner.reader()
        }
        fn checkpoint_if_due(&mut self) -> Result<(), StoreError> {
            let mut reply = self.reply.lock().unwrap();
            let sent = reply.as_mut().is_some_and(|rx| rx.try_recv().is_ok());
            self.seen.lock().unwrap().push(sent);
            Ok(())
        }
    }

    /// The committer performs a batch's effects (its replies sent) before
    /// it lets the store make a checkpoint the commit made due: those
    /// replies never wait for the database's own durable commit.
    #[tokio::test]
    async fn a_batch_is_answered_before_its_checkpoint() {
        let (reply_tx, reply_rx) = oneshot::channel();
        let reply = Arc::new(std::sync::Mutex::new(Some(reply_rx)));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = Watching {
            inner: crate::store::MemStore::default(),
            reply: Arc::clone(&reply),
            seen: Arc::clone(&seen),
        };
        let performer = performer(store.reader());
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(CommitBatch {
            records: vec![Record::OneTimePrekey {
                account: AccountId::from_bytes([1; 32]),
                key: [2; 32],
                present: true,
            }],
            durability: Durability::Now,
            effects: vec![Ready::Reply(reply_tx, Err(RouterError::Stopping))],
            inputs: 1,
        })
        .unwrap();
        drop(tx);
        run_committer(Box::new(store), rx, &performer, DEFERRED_HOLD).unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![true],
            "the reply was not out before the checkpoint"
        );
    }

    /// Every commit a store was asked for: its records' keys and how
    /// durable.
    type Commits = Arc<std::sync::Mutex<Vec<(Vec<u8>, Durability)>>>;

    /// A store that records its commits.
    struct Recording {
        inner: crate::store::MemStore,
        commits: Commits,
    }

    impl Store for Recording {
        fn commit(&mut self, records: &[Record], durability: Durability) -> Result<(), StoreError> {
            let keys = records
                .iter()
                .map(|r| match r {
                    Record::OneTimePrekey { key, .. } => key[0],
                    _ => 0,
                })
                .collect();
            self.commits.lock().unwrap().push((keys, durability));
            self.inner.commit(records, durability)
        }
        fn load(&self) -> Result<Snapshot, StoreError> {
            self.inner.load()
        }
        fn reader(&self) -> Arc<dyn EnvelopeReader> {
            self.inner.reader()
        }
    }

    fn prekey(key: u8) -> Record {
        Record::OneTimePrekey {
            account: AccountId::from_bytes([1; 32]),
            key: [key; 32],
            present: true,
        }
    }

    fn batch(key: u8, durability: Durability, effects: Vec<Ready>) -> Batch {
        CommitBatch {
            records: vec![prekey(key)],
            durability,
            effects,
            inputs: 1,
        }
    }

    /// Runs the committer on its own thread with `hold`, over a
    /// recording store.
    fn committer(
        hold: Duration,
    ) -> (
        std::sync::mpsc::SyncSender<Batch>,
        Commits,
        std::thread::JoinHandle<Result<(), RouterError>>,
    ) {
        let commits: Commits = Arc::default();
        let store = Recording {
            inner: crate::store::MemStore::default(),
            commits: Arc::clone(&commits),
        };
        let performer = performer(store.reader());
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let thread =
            std::thread::spawn(move || run_committer(Box::new(store), rx, &performer, hold));
        (tx, commits, thread)
    }

    /// A step's replies leave after its deliveries (in a task of their
    /// own, so the members' delivery tasks are queued before the
    /// reply's); a step without deliveries replies at once.
    #[tokio::test]
    async fn a_steps_replies_leave_after_its_deliveries() {
        let performer = performer(crate::store::MemStore::default().reader());
        let account = AccountId::from_bytes([7; 32]);
        let subscription = performer.hub.subscribe(account).unwrap();
        let (tx, mut rx) = oneshot::channel();
        performer.perform_early(vec![
            Ready::Deliver {
                account,
                delivery: Box::new(pb::Delivery {
                    index: 5,
                    ..Default::default()
                }),
            },
            Ready::Reply(tx, Ok(Response::Uploaded)),
        ]);
        assert!(
            matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
            "the reply waits for its own task"
        );
        assert_eq!(subscription.next_delivery().await.map(|d| d.index), Some(5));
        assert!(matches!(rx.await, Ok(Ok(Response::Uploaded))));

        let (tx, mut rx) = oneshot::channel();
        performer.perform_early(vec![Ready::Reply(tx, Ok(Response::Uploaded))]);
        assert!(matches!(rx.try_recv(), Ok(Ok(Response::Uploaded))));
    }

    /// The key of the one record of a test batch.
    fn key_of(batch: &Batch) -> Option<u8> {
        match batch.records.as_slice() {
            [Record::OneTimePrekey { key, .. }] => Some(key[0]),
            _ => None,
        }
    }

    /// When the committer's queue is full the core task waits for room
    /// without holding its thread: on a runtime with one thread (this
    /// test's), a core that blocked would stop every other task, the
    /// timer below included. The batch goes in once a slot frees, after
    /// the one before it.
    #[tokio::test]
    async fn a_full_commit_queue_makes_the_core_wait_without_holding_its_thread() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(1);
        tx.try_send(batch(1, Durability::Now, Vec::new())).unwrap();
        let handing = tokio::spawn(async move {
            let handed = hand_to_committer(&tx, batch(2, Durability::Now, Vec::new())).await;
            (handed, tx)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!handing.is_finished(), "the queue is still full");
        let first = rx.recv().unwrap();
        let (handed, tx) = handing.await.unwrap();
        assert!(handed);
        let second = rx.try_recv().unwrap();
        assert_eq!((key_of(&first), key_of(&second)), (Some(1), Some(2)));
        // A committer that stopped is reported, not waited for.
        drop(rx);
        assert!(!hand_to_committer(&tx, batch(3, Durability::Now, Vec::new())).await);
    }

    /// A batch of deferred records without effects waits for the next
    /// batch and is committed with it, before that batch's reply leaves
    /// (with a hold far longer than the test, so nothing but the next
    /// batch can end the wait).
    #[test]
    fn deferred_records_without_effects_wait_for_the_next_batch() {
        let (tx, commits, thread) = committer(Duration::from_secs(60));
        tx.send(batch(1, Durability::Deferred, Vec::new())).unwrap();
        tx.send(batch(2, Durability::Deferred, Vec::new())).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(commits.lock().unwrap().is_empty(), "committed while held");
        let (reply_tx, mut reply_rx) = oneshot::channel();
        tx.send(batch(
            3,
            Durability::Now,
            vec![Ready::Reply(reply_tx, Err(RouterError::Stopping))],
        ))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reply_rx.try_recv().is_err() {
            assert!(Instant::now() < deadline, "no reply");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            *commits.lock().unwrap(),
            vec![(vec![1, 2, 3], Durability::Now)],
            "the held records were not committed with the next batch, before its reply"
        );
        drop(tx);
        thread.join().unwrap().unwrap();
    }

    /// What is held is committed once the hold has passed, with nothing
    /// else arriving, and at a graceful stop; a batch with effects is
    /// never held.
    #[test]
    fn held_records_are_committed_after_the_hold_and_at_a_stop() {
        let (tx, commits, thread) = committer(Duration::from_millis(20));
        tx.send(batch(1, Durability::Deferred, Vec::new())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while commits.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "never committed");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            *commits.lock().unwrap(),
            vec![(vec![1], Durability::Deferred)]
        );
        drop(tx);
        thread.join().unwrap().unwrap();

        let (tx, commits, thread) = committer(Duration::from_secs(60));
        let (reply_tx, _reply_rx) = oneshot::channel();
        tx.send(batch(
            2,
            Durability::Deferred,
            vec![Ready::Reply(reply_tx, Err(RouterError::Stopping))],
        ))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while commits.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "a batch with effects was held");
            std::thread::sleep(Duration::from_millis(1));
        }
        tx.send(batch(3, Durability::Deferred, Vec::new())).unwrap();
        drop(tx);
        thread.join().unwrap().unwrap();
        assert_eq!(
            *commits.lock().unwrap(),
            vec![
                (vec![2], Durability::Deferred),
                (vec![3], Durability::Deferred)
            ],
            "the batch held at the stop was not committed"
        );
    }
}

#[cfg(test)]
mod disk_tests {
    use super::*;

    #[tokio::test]
    async fn the_disk_watch_tells_the_core_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let watch = tokio::spawn(disk_watch(
            tx,
            dir.path().to_owned(),
            Duration::from_secs(60),
        ));
        let Some(CoreMsg::Request(cmd, None)) = rx.recv().await else {
            panic!("no measurement")
        };
        assert!(
            matches!(*cmd, Command::DiskSpace { free } if free > 0),
            "{cmd:?}"
        );
        drop(rx);
        watch.abort();
    }
}
