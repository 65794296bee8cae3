//! Group commit: one writer thread owns the redb write path. Request
//! handlers queue jobs; the writer drains everything queued (up to
//! [`Limits::max_commit_items`](crate::limits::Limits) items), runs the core
//! over the whole batch in one write transaction, commits it durably, and
//! only then answers every job of the batch. No tag leaves the process
//! before the commit that records it.
//!
//! If the store fails, every job of the batch gets the error, nothing of
//! the batch is committed, and the writer stops (fail-stop): later jobs get
//! [`CommitError::Stopped`]. Serving on after a storage failure could
//! forget attestations. One failure comes after the batch is on disk: the
//! rollback anchor's update ([`StoreError::CommittedThenFailed`]). Then the
//! batch's answers are sent (what they promise is durable) and the writer
//! stops all the same.
//!
//! A checkpoint (the database's own durable commit, which restarts the
//! write-ahead log) that a commit made due is made *after* the batch's
//! answers are sent: they are on disk through the log already. Jobs queued
//! meanwhile wait for it; if it fails, the writer stops as above.
//!
//! When commits queue, the writer may wait a short gathering window before
//! the next one ([`Gather`]), so that one log sync carries more jobs.

use crate::core::{Attested, OrderCore};
use crate::redb_store::{RedbStore, RedbWrite};
use crate::refusal::{Refusal, reason_label};
use crate::request::AttestRequest;
use crate::store::{StoreError, StoreRead};
use crate::telemetry;
use grompi_proto::{ConversationId, Head, Misbehaviour, SlotSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Why a job got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The store failed while this job's batch ran or committed.
    #[error("storage failure, nothing of this batch was committed: {0}")]
    Store(#[from] StoreError),
    /// The writer has stopped (shutdown, or an earlier storage failure).
    #[error("the order server is not accepting writes")]
    Stopped,
}

/// One item of an attest job: parsed, or already refused at parsing.
pub type AttestItemInput = Result<AttestRequest, Refusal>;

/// The answer to an attest job: one result per item, in request order,
/// each attestation with the index of its audit log entry.
pub type AttestAnswer = Vec<Result<Attested, Refusal>>;

enum Job {
    Open {
        conversation: ConversationId,
        slots: SlotSet,
        reply: oneshot::Sender<Result<Result<Head, Misbehaviour>, CommitError>>,
    },
    Attest {
        items: Vec<AttestItemInput>,
        reply: oneshot::Sender<Result<AttestAnswer, CommitError>>,
    },
    /// Finish what is queued, then refuse new jobs and exit; the reply is
    /// sent once new jobs are refused.
    Stop(oneshot::Sender<()>),
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::Open { .. } => 1,
            Job::Attest { items, .. } => items.len().max(1),
            Job::Stop(_) => 0,
        }
    }
}

/// The handle request handlers use to queue jobs. Cloneable; when every
/// handle is dropped the writer finishes the queue and exits.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

/// The writer thread; join it after dropping every [`Committer`].
pub struct Writer {
    thread: std::thread::JoinHandle<()>,
    gathered: Arc<AtomicU64>,
}

impl Writer {
    /// Commits so far whose writer waited its gathering window.
    pub fn gathered(&self) -> u64 {
        self.gathered.load(Ordering::Relaxed)
    }

    /// Waits for the writer to finish the queued jobs and exit.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the writer thread panicked");
        }
    }
}

impl Committer {
    /// Starts the writer thread over `store`. `queue` bounds the number of
    /// queued jobs (handlers wait when it is full).
    pub fn start(
        core: Arc<OrderCore>,
        store: Arc<RedbStore>,
        queue: usize,
        gather: Gather,
    ) -> std::io::Result<(Committer, Writer)> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let max_items = core.limits().max_commit_items;
        if let Ok(n) = store.conversation_count() {
            metrics::gauge!(telemetry::OPEN_CONVERSATIONS).set(n as f64);
        }
        let gathered = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&gathered);
        let thread = std::thread::Builder::new()
            .name("order-writer".into())
            .spawn(move || run(&core, &store, rx, max_items, gather, &count))?;
        Ok((Committer { jobs: tx }, Writer { thread, gathered }))
    }

    /// Opens a conversation; answers after the commit.
    pub async fn open(
        &self,
        conversation: ConversationId,
        slots: SlotSet,
    ) -> Result<Result<Head, Misbehaviour>, CommitError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Open {
                conversation,
                slots,
                reply,
            })
            .await
            .map_err(|_| CommitError::Stopped)?;
        rx.await.map_err(|_| CommitError::Stopped)?
    }

    /// Asks the writer to commit and answer everything queued before this
    /// call, then to refuse new jobs and exit (even while other handles to
    /// it still exist, for example in lingering connections).
    /// Returns once new jobs are refused.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.jobs.send(Job::Stop(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Attests a batch of items; answers after the commit.
    pub async fn attest(&self, items: Vec<AttestItemInput>) -> Result<AttestAnswer, CommitError> {
        self.queue_attest(items).await?.answer().await
    }

    /// Queues a batch of items behind everything queued before it and
    /// returns without waiting for the commit: batches queued by one caller
    /// are attested in the order queued (a pipelined stream relies on it).
    pub async fn queue_attest(&self, items: Vec<AttestItemInput>) -> Result<Queued, CommitError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Attest { items, reply })
            .await
            .map_err(|_| CommitError::Stopped)?;
        Ok(Queued(rx))
    }
}

/// A queued attest batch; its answer comes after the commit that holds it.
#[derive(Debug)]
pub struct Queued(oneshot::Receiver<Result<AttestAnswer, CommitError>>);

impl Queued {
    /// Waits for the commit and returns the batch's answer.
    pub async fn answer(self) -> Result<AttestAnswer, CommitError> {
        self.0.await.map_err(|_| CommitError::Stopped)?
    }
}

enum Answer {
    Open(Result<Head, Misbehaviour>),
    Attest(AttestAnswer),
}

/// The writer's gathering window: when commits queue, how long it waits
/// for more jobs before it commits, so that one commit (one log sync)
/// carries more of them.
///
/// The window opens only when the last commit carried more than one job
/// (requests came while it ran: the server is busy) and while the batch
/// holds fewer than [`Gather::items`] items; one job at a time (an idle
/// server, one conversation's closed loop) commits at once. Every answer
/// still leaves only after the commit that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    /// How long to wait; zero turns the window off.
    pub window: std::time::Duration,
    /// Items in the batch at which the writer stops waiting.
    pub items: usize,
}

impl Gather {
    /// No window: every commit starts as soon as the writer is free.
    pub const OFF: Gather = Gather {
        window: std::time::Duration::ZERO,
        items: 0,
    };
}

/// Moves what is queued into `batch` while it weighs less than
/// `max_items` and holds no stop; returns whether a stop came.
fn drain(
    rx: &mut mpsc::Receiver<Job>,
    batch: &mut Vec<Job>,
    weight: &mut usize,
    max_items: usize,
) -> bool {
    let mut stop = batch.iter().any(|j| matches!(j, Job::Stop(_)));
    while *weight < max_items && !stop {
        match rx.try_recv() {
            Ok(job) => {
                *weight += job.weight();
                stop = matches!(job, Job::Stop(_));
                batch.push(job);
            }
            Err(_) => break,
        }
    }
    stop
}

fn run(
    core: &OrderCore,
    store: &RedbStore,
    mut rx: mpsc::Receiver<Job>,
    max_items: usize,
    gather: Gather,
    gathered: &AtomicU64,
) {
    let mut busy = false;
    while let Some(first) = rx.blocking_recv() {
        let mut weight = first.weight();
        let mut batch = vec![first];
        let mut stop = drain(&mut rx, &mut batch, &mut weight, max_items);
        let limit = gather.items.min(max_items);
        if busy && !stop && !gather.window.is_zero() && weight < limit {
            // Jobs that arrive while the writer sleeps wake nobody: the
            // senders find no waiting receiver to unpark.
            std::thread::sleep(gather.window);
            stop = drain(&mut rx, &mut batch, &mut weight, max_items);
            metrics::counter!(telemetry::COMMIT_GATHERED).increment(1);
            gathered.fetch_add(1, Ordering::Relaxed);
        }
        busy = batch.len() > 1;
        let mut stoppers = Vec::new();
        batch.retain_mut(|j| match j {
            Job::Stop(reply) => {
                let (dummy, _) = oneshot::channel();
                stoppers.push(std::mem::replace(reply, dummy));
                false
            }
            _ => true,
        });
        if stop {
            // Jobs already queued are still run; new ones are refused.
            rx.close();
            for s in stoppers {
                let _ = s.send(());
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        let (done, failure) = match run_batch(core, store, &batch) {
            Ok(done) => (Some(done), None),
            Err(BatchError::Committed(done, e)) => (Some(done), Some(e)),
            Err(BatchError::Aborted(e)) => (None, Some(e)),
        };
        if let Some((answers, opened, evidence)) = done {
            metrics::histogram!(telemetry::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
            metrics::histogram!(telemetry::COMMIT_BATCH_ITEMS).record(weight as f64);
            metrics::gauge!(telemetry::OPEN_CONVERSATIONS).increment(opened as f64);
            if let Some(total) = evidence {
                metrics::gauge!(telemetry::EVIDENCE_TOTAL).set(total as f64);
            }
            for (job, answer) in std::mem::take(&mut batch).into_iter().zip(answers) {
                match (job, answer) {
                    (Job::Open { reply, .. }, Answer::Open(a)) => {
                        let _ = reply.send(Ok(a));
                    }
                    (Job::Attest { reply, .. }, Answer::Attest(a)) => {
                        count(&a);
                        let _ = reply.send(Ok(a));
                    }
                    _ => tracing::error!("answers out of step with jobs"),
                }
            }
        }
        // The batch's answers are out (on disk through the log); a
        // checkpoint the commit made due comes now, not before them.
        let failure = failure.or_else(|| store.checkpoint_if_due().err());
        if let Some(e) = failure {
            tracing::error!(error = %e, "storage failure: refusing all further writes");
            for job in batch {
                fail(job, CommitError::Store(e.clone()));
            }
            rx.close();
            while let Ok(job) = rx.try_recv() {
                fail(job, CommitError::Stopped);
            }
            return;
        }
    }
    // Stopped gracefully, everything answered: a checkpoint leaves the
    // next start no log to replay (the store logs it). Failing here loses
    // nothing (the log holds every commit), so it is only reported.
    if let Err(e) = store.checkpoint_now() {
        tracing::error!(error = %e, "the checkpoint at stop failed; the next start replays the log");
    }
}

fn fail(job: Job, e: CommitError) {
    match job {
        Job::Open { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        Job::Attest { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        Job::Stop(reply) => {
            let _ = reply.send(());
        }
    }
}

fn count(answer: &AttestAnswer) {
    for r in answer {
        match r {
            Ok(_) => metrics::counter!(telemetry::ATTESTATIONS).increment(1),
            Err(refusal) => {
                metrics::counter!(telemetry::REFUSALS, "reason" => reason_label(&refusal.reason))
                    .increment(1);
                tracing::debug!(%refusal, "refused an item");
            }
        }
    }
}

type BatchResult = (Vec<Answer>, u64, Option<u64>);

/// Why a batch failed.
enum BatchError {
    /// Nothing of the batch was committed.
    Aborted(StoreError),
    /// The batch is committed and on disk, but the store failed after it.
    Committed(BatchResult, StoreError),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        BatchError::Aborted(e)
    }
}

/// Runs a batch in one transaction and commits it. Any store error before
/// the commit aborts the transaction (dropped uncommitted).
fn run_batch(
    core: &OrderCore,
    store: &RedbStore,
    batch: &[Job],
) -> Result<BatchResult, BatchError> {
    let txn = store.begin_write()?;
    let mut answers = Vec::with_capacity(batch.len());
    let mut opened = 0;
    let evidence;
    let log = {
        let mut w = RedbWrite::open(&txn)?;
        let evidence_before = w.evidence_total()?;
        for job in batch {
            match job {
                Job::Open {
                    conversation,
                    slots,
                    ..
                } => {
                    let r = core.open(&mut w, conversation, slots)?;
                    if r.is_ok() {
                        opened += 1;
                    }
                    answers.push(Answer::Open(r));
                }
                Job::Attest { items, .. } => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        out.push(match item {
                            Ok(request) => core.attest_logged(&mut w, request)?,
                            Err(refusal) => Err(refusal.clone()),
                        });
                    }
                    answers.push(Answer::Attest(out));
                }
                Job::Stop(_) => {}
            }
        }
        let after = w.evidence_total()?;
        evidence = (after != evidence_before).then_some(after);
        w.into_log()?
    };
    match store.commit(txn, log) {
        Ok(()) => Ok((answers, opened, evidence)),
        Err(e @ StoreError::CommittedThenFailed(_)) => {
            Err(BatchError::Committed((answers, opened, evidence), e))
        }
        Err(e) => Err(BatchError::Aborted(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use crate::redb_store::RedbRead;
    use crate::store::StoreRead;
    use grompi_proto::envelope::HeaderFields;
    use grompi_proto::{
        BodyHash, EnvelopeHeader, EnvelopeKind, EnvelopeSummary, Epoch, Index, KeyCommitment,
        OrderServerSecret, Sequence, SlotEntry, SlotIndex, SlotRole, SlotSecret,
    };

    /// A writer over a new database, and one admin slot's keys.
    struct Fixture {
        dir: tempfile::TempDir,
        store: Arc<RedbStore>,
        committer: Committer,
        writer: Writer,
        slots: SlotSet,
        keys: grompi_proto::MacKeys,
    }

    impl Fixture {
        fn start(queue: usize, gather: Gather) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(RedbStore::open(&dir.path().join("db")).unwrap());
            let secret = OrderServerSecret::from_bytes([3; 32]);
            let server_key = secret.public_key();
            let core = Arc::new(OrderCore::new(secret, 0, Limits::default()));
            let (committer, writer) =
                Committer::start(core, Arc::clone(&store), queue, gather).unwrap();
            let slot = SlotSecret::from_bytes([4; 32]);
            let keys = slot.mac_keys(&server_key).unwrap();
            let slots = SlotSet::new(vec![SlotEntry {
                key: slot.public_key(),
                role: SlotRole::Admin,
            }])
            .unwrap();
            Fixture {
                dir,
                store,
                committer,
                writer,
                slots,
                keys,
            }
        }
    }

    fn setup_item(
        conv: ConversationId,
        slots: &SlotSet,
        keys: &grompi_proto::MacKeys,
    ) -> AttestRequest {
        let envelope = EnvelopeSummary {
            header: EnvelopeHeader::new(HeaderFields {
                conversation: conv,
                epoch: Epoch(0),
                kind: EnvelopeKind::Setup,
                sender: SlotIndex(0),
                sequence: Sequence(1),
                last_seen: None,
                body_hash: BodyHash::from_bytes([1; 32]),
                key_commitment: KeyCommitment::from_bytes([2; 32]),
                slot_set_hash: Some(slots.hash()),
            })
            .unwrap(),
            block_digests: vec![],
        };
        AttestRequest {
            submission_tag: keys.submit(&envelope.hash(), Sequence(1)),
            envelope,
            index: Index(0),
            previous_head: Head::genesis(&conv),
            next_slots: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_are_committed_and_answered_then_stop_refuses_more() {
        concurrent_jobs(Gather::OFF).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_a_gathering_window_every_answer_still_follows_its_commit() {
        concurrent_jobs(Gather {
            window: std::time::Duration::from_millis(2),
            items: 16,
        })
        .await;
    }

    async fn concurrent_jobs(gather: Gather) {
        let Fixture {
            dir,
            store,
            committer,
            writer,
            slots,
            keys,
        } = Fixture::start(64, gather);
        let mut tasks = Vec::new();
        for c in 0..100u8 {
            let committer = committer.clone();
            let slots = slots.clone();
            let keys = keys.clone();
            tasks.push(tokio::spawn(async move {
                let conv = ConversationId::from_bytes([c; 32]);
                committer.open(conv, slots.clone()).await.unwrap().unwrap();
                let answer = committer
                    .attest(vec![Ok(setup_item(conv, &slots, &keys))])
                    .await
                    .unwrap();
                assert_eq!(answer.len(), 1);
                answer[0].as_ref().unwrap().attestation.head
            }));
        }
        let mut heads = Vec::new();
        for t in tasks {
            heads.push(t.await.unwrap());
        }
        // The files as a crash now would leave them (every job answered,
        // the writer idle, before the checkpoint a stop makes).
        let image = dir.path().join("crash").join("db");
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        grompi_ops::wal::copy_database(&dir.path().join("db"), &image).unwrap();
        committer.stop().await;
        let after = committer.attest(vec![]).await;
        assert_eq!(after.unwrap_err(), CommitError::Stopped);
        drop(committer);
        writer.join();
        // Every answered attestation is in the committed database.
        let txn = store.begin_read().unwrap();
        let read = RedbRead::open(&txn).unwrap();
        for (c, head) in heads.iter().enumerate() {
            let rec = read
                .record(&ConversationId::from_bytes([c as u8; 32]), Index(0))
                .unwrap()
                .unwrap();
            assert_eq!(&rec.head, head);
        }
        assert_eq!(store.conversation_count().unwrap(), 100);
        // Each answer's audit log entry was in the same commit: the log
        // holds one entry per attestation, in the database and in a copy
        // of the files as a crash would leave them.
        let check = |read: &RedbRead| {
            let log = crate::audit_store::read(read).unwrap();
            assert_eq!(log.size(), 100);
            for (c, head) in heads.iter().enumerate() {
                let conv = ConversationId::from_bytes([c as u8; 32]);
                let at = read
                    .record(&conv, Index(0))
                    .unwrap()
                    .unwrap()
                    .log_index
                    .unwrap();
                assert_eq!(
                    log.entry(at).unwrap(),
                    crate::audit_entry::attestation(&conv, Epoch(0), Index(0), head).to_vec()
                );
            }
        };
        check(&read);
        let reopened = RedbStore::open(&image).unwrap();
        check(&RedbRead::open(&reopened.begin_read().unwrap()).unwrap());
    }

    /// The window opens after a commit that carried several jobs, and only
    /// then: a lone job after a lone job commits at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_window_opens_only_after_a_busy_commit() {
        let gather = Gather {
            window: std::time::Duration::from_millis(5),
            items: 1000,
        };
        let Fixture {
            dir,
            store,
            committer,
            writer,
            slots,
            keys,
        } = Fixture::start(256, gather);
        let conv = |c: u8| ConversationId::from_bytes([c; 32]);
        // One job at a time: each commit carries one, so none waits.
        for c in 0..60u8 {
            committer
                .open(conv(c), slots.clone())
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(writer.gathered(), 0, "lone jobs waited for a window");
        // Bursts: jobs queued while a commit runs make a busy commit, and
        // the commit after a busy one waits.
        for burst in 0..3u8 {
            let mut queued = Vec::new();
            for c in 0..20u8 {
                let c = burst * 20 + c;
                let item = setup_item(conv(c), &slots, &keys);
                queued.push(committer.queue_attest(vec![Ok(item)]).await.unwrap());
            }
            for q in queued {
                let answer = q.answer().await.unwrap();
                assert!(answer[0].is_ok(), "{answer:?}");
            }
        }
        let after_bursts = writer.gathered();
        assert!(after_bursts > 0, "no commit waited after a busy one");
        // Two lone jobs: the first may follow a busy commit and wait; the
        // second follows a commit of one job and must not.
        for c in 60..62u8 {
            let before = writer.gathered();
            committer
                .open(conv(c), slots.clone())
                .await
                .unwrap()
                .unwrap();
            if c == 61 {
                assert_eq!(
                    writer.gathered(),
                    before,
                    "a lone job after a lone one waited"
                );
            }
        }
        committer.stop().await;
        drop(committer);
        writer.join();
        assert_eq!(store.conversation_count().unwrap(), 62);
        // The writer checkpointed as it stopped: the log is empty.
        drop(store);
        let reopened = RedbStore::open(&dir.path().join("db")).unwrap();
        let report = reopened.open_report();
        assert_eq!(report.log_records, 0, "{report:?}");
        assert_eq!(reopened.conversation_count().unwrap(), 62);
    }
}
