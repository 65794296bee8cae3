//! Fan-out to the order servers: per-server links with one job in flight
//! at a time (or a pipeline over one ordered stream), the jobs themselves
//! (opens, then one Attest batch), how refusals are classified, and the
//! core's fan-out engine: its state (`Fanout`: links, jobs in flight, how
//! far each server was sent), scheduling a server's next job, and applying
//! a job's results (opens, attestations checked against the router's chain,
//! refusals, an envelope every server refused dropped).
//!
//! Ordering rule: a server is only ever sent, for one conversation, a run of
//! consecutive indices starting where the previous job sent to it ended (or
//! at the number it has attested, after any refusal or failure), and its
//! jobs reach it in the order sent (one at a time, or pipelined over one
//! ordered stream), so it never sees index i+1 before it has attested i
//! (or refused i earlier in the same stream). A pipelined job names the job
//! it follows, and goes only on the stream that one went on
//! ([`StreamOrder`]): a job made while its predecessor was in flight, but
//! handed to the transport only after that stream broke (it waited for a
//! commit), fails unsent instead of reaching the server past a gap.

pub use crate::backoff::Backoff;
use crate::conversation::{Conversation, Pending, Waiting};
use crate::delivery::{self, recipients};
use crate::error::{RouterError, ServerRefusal};
use crate::record::Record;
use crate::slots::EpochSlots;
use crate::{Millis, Ticket};
use grompi_proto::EnvelopeHash;
use grompi_proto::mac::Attestation;
use grompi_proto::pb::{self, RefusalReason};
use grompi_proto::{AccountId, ConversationId, Index};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// One order server as the router sees it.
#[derive(Debug, Clone, Default)]
pub struct ServerLink {
    /// Jobs in flight.
    pub in_flight: usize,
    /// Failures of jobs numbered below this were already counted (they
    /// were in flight together when the link failed).
    pub stale_before: u64,
    /// Retry state after transport failures.
    pub backoff: Backoff,
    /// Whether the last job failed at the transport level.
    pub down: bool,
}

/// One item of an Attest batch, so results can be matched back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobItem {
    /// The conversation of the envelope sent.
    pub conversation: ConversationId,
    /// Its index; the attestation must be for this index.
    pub index: Index,
}

/// Work for one order server: open these conversations, then attest these
/// items in one call.
#[derive(Debug, Clone)]
pub struct ServerJob {
    /// Job id, echoed in the result.
    pub id: u64,
    /// Descriptor position of the server.
    pub server: u32,
    /// Conversations to open first.
    pub opens: Vec<pb::OpenConversationRequest>,
    /// What each attest item is.
    pub items: Vec<JobItem>,
    /// The Attest request (empty when there are no items).
    pub request: pb::AttestRequest,
    /// The job with items this one continues, when that one was still in
    /// flight as this one was made: this one may only go on the stream
    /// that one went on ([`StreamOrder`]).
    pub follows: Option<u64>,
}

/// The order of one stream to an order server, as its sender keeps it: the
/// last job sent on the stream since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOrder {
    last: Option<u64>,
}

impl StreamOrder {
    /// Whether `job` may go on the current stream. A job that follows one
    /// not sent on this stream (it went on a stream that broke since) must
    /// fail unsent: the server would see its indices past a gap.
    pub fn admits(&self, job: &ServerJob) -> bool {
        job.follows.is_none_or(|p| self.last == Some(p))
    }

    /// A job with items went on the stream.
    pub fn sent(&mut self, job: &ServerJob) {
        self.last = Some(job.id);
    }

    /// The stream broke or closed: the next job starts a new one.
    pub fn broke(&mut self) {
        self.last = None;
    }

    /// The result of a job the stream does not admit: it fails unsent.
    pub fn unsent(job: &ServerJob) -> JobResult {
        let why = "the stream of the job it follows broke";
        JobResult {
            id: job.id,
            server: job.server,
            opens: job
                .opens
                .iter()
                .map(|_| OpenOutcome::Failed(why.into()))
                .collect(),
            attest: Err(why.into()),
        }
    }
}

/// How an OpenConversation call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    /// Opened; the server's genesis head.
    Opened(Vec<u8>),
    /// The server already knows the id (opened before a restart).
    AlreadyOpen,
    /// The call failed.
    Failed(String),
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// Job id.
    pub id: u64,
    /// Server position.
    pub server: u32,
    /// One outcome per open, in job order.
    pub opens: Vec<OpenOutcome>,
    /// The Attest results in item order, or the transport error.
    pub attest: Result<Vec<pb::AttestResult>, String>,
}

/// Whether a refusal means the envelope itself is bad (so, if every server
/// says so, it is dropped) rather than the router or the server being out
/// of step.
pub fn is_sender_fault(reason: RefusalReason) -> bool {
    matches!(
        reason,
        RefusalReason::BadSubmissionTag
            | RefusalReason::SequenceNotIncreasing
            | RefusalReason::WrongEpoch
            | RefusalReason::UnknownSlot
            | RefusalReason::NotAuthorized
            | RefusalReason::SlotSetMismatch
            | RefusalReason::Malformed
            | RefusalReason::LimitExceeded
            | RefusalReason::UnexpectedKind
    )
}

/// A job sent to a server and not yet answered.
#[derive(Debug, Clone)]
struct InFlight {
    id: u64,
    opens: Vec<ConversationId>,
    items: Vec<(JobItem, EnvelopeHash)>,
}

/// The fan-out state of the core: per server, its link, its jobs in
/// flight and how far it was sent.
#[derive(Debug)]
pub(crate) struct Fanout {
    /// Per server: its link.
    pub(crate) links: Vec<ServerLink>,
    /// Jobs sent to each server and not yet answered, oldest first.
    in_flight: Vec<VecDeque<InFlight>>,
    /// Per server, per conversation: the next index to send when it is
    /// past the server's progress (items in flight). Forgotten (back to
    /// the progress) whenever the server refuses or fails.
    sent: Vec<HashMap<ConversationId, Index>>,
    /// Jobs one server may have in flight at once: 1 unless the shell's
    /// transport keeps a server's jobs in order (see
    /// [`RouterCore::pipeline_jobs`](crate::core::RouterCore::pipeline_jobs)).
    pub(crate) max_in_flight: usize,
    /// The next job id.
    next_job: u64,
    /// How many order servers.
    servers: usize,
    /// Most items in one Attest call.
    max_batch: usize,
    /// First retry delay after a failure.
    backoff_base: Millis,
    /// Longest retry delay.
    backoff_max: Millis,
}

/// What the engine changes besides its own state: the core's
/// conversations and per-account counts of envelopes waiting, and where
/// its records and notices go, in order.
pub(crate) struct Work<'a> {
    /// The core's conversations.
    pub(crate) conversations: &'a mut HashMap<ConversationId, Conversation>,
    /// Per submitter: envelopes waiting for a quorum.
    pub(crate) pending_per_account: &'a mut HashMap<AccountId, Waiting>,
    /// Durable changes, appended in order.
    pub(crate) records: &'a mut Vec<Record>,
    /// What to tell members and submitters, in order.
    pub(crate) notices: Vec<Notice>,
}

/// Something a job's results tell a member or a submitter.
#[derive(Debug)]
pub(crate) enum Notice {
    /// Tags for an index delivered before this attestation came in.
    Deliver {
        /// Recipient.
        account: AccountId,
        /// A tag update: this attestation for the recipient's slots, without the envelope.
        delivery: Box<pb::Delivery>,
    },
    /// A submission failed (every server refused it, or what followed
    /// it no longer fits).
    Failed(Ticket, RouterError),
}

impl Fanout {
    /// No job sent yet to any of `servers` servers; one job in flight each;
    /// at most `max_batch` items per job; retries after `backoff_base`,
    /// doubling up to `backoff_max`.
    pub(crate) fn new(
        servers: usize,
        max_batch: usize,
        backoff_base: Millis,
        backoff_max: Millis,
    ) -> Self {
        Self {
            links: vec![ServerLink::default(); servers],
            in_flight: vec![VecDeque::new(); servers],
            sent: vec![HashMap::new(); servers],
            max_in_flight: 1,
            next_job: 1,
            servers,
            max_batch,
            backoff_base,
            backoff_max,
        }
    }

    /// Sends order server `s` its next job, if it may take one: opens for
    /// conversations it has not opened, then the next run of items of each
    /// active conversation, up to the batch size.
    pub(crate) fn schedule(
        &mut self,
        s: usize,
        now: Millis,
        conversations: &HashMap<ConversationId, Conversation>,
        active: &mut BTreeSet<ConversationId>,
    ) -> Option<ServerJob> {
        let link = self.links.get(s)?;
        if link.in_flight >= self.max_in_flight || !link.backoff.ready(now) {
            return None;
        }
        let max_batch = self.max_batch.max(1);
        let mut opens = Vec::new();
        let mut open_ids = Vec::new();
        let mut items = Vec::new();
        let mut request = pb::AttestRequest::default();
        let mut idle = Vec::new();
        for id in active.iter() {
            let Some(conv) = conversations.get(id) else {
                idle.push(*id);
                continue;
            };
            let all_opened = conv.opened.iter().all(|o| *o);
            let all_attested = conv.progress.iter().all(|p| *p >= conv.next());
            if all_opened && all_attested && conv.pending.is_empty() {
                idle.push(*id);
                continue;
            }
            let ready = conv.backoff.get(s).is_none_or(|b| b.ready(now));
            if !ready {
                continue;
            }
            let opened = conv.opened.get(s).copied().unwrap_or(false);
            if !opened {
                if let Some(e) = conv.epochs().first() {
                    opens.push(pb::OpenConversationRequest {
                        conversation_id: id.to_vec(),
                        slots: Some(pb::SlotSet::from(&e.slots)),
                    });
                    open_ids.push(*id);
                }
                continue;
            }
            let progress = conv.progress.get(s).copied().unwrap_or(Index(0));
            let start = self
                .sent
                .get(s)
                .and_then(|m| m.get(id))
                .copied()
                .map_or(progress, |sent| sent.max(progress));
            for (index, p) in conv.pending.range(start..) {
                if items.len() >= max_batch {
                    break;
                }
                let Some(tag) = p.stored.submission_tags.get(s) else {
                    continue;
                };
                request.items.push(pb::AttestItem {
                    envelope: Some(pb::EnvelopeSummary::from(&p.stored.envelope.summary())),
                    submission_tag: tag.to_vec(),
                    index: index.0,
                    previous_head: p.stored.previous_head.to_vec(),
                    next_slots: p.stored.next_slots.as_ref().map(pb::SlotSet::from),
                });
                items.push((
                    JobItem {
                        conversation: *id,
                        index: *index,
                    },
                    p.hash,
                ));
            }
            if items.len() >= max_batch {
                break;
            }
        }
        for id in idle {
            active.remove(&id);
        }
        if opens.is_empty() && items.is_empty() {
            return None;
        }
        let id = self.next_job;
        self.next_job += 1;
        // A job pipelined behind one still in flight continues its stream.
        let follows = if items.is_empty() {
            None
        } else {
            self.in_flight
                .get(s)
                .and_then(|q| q.iter().rev().find(|f| !f.items.is_empty()))
                .map(|f| f.id)
        };
        if let Some(link) = self.links.get_mut(s) {
            link.in_flight += 1;
        }
        if let Some(sent) = self.sent.get_mut(s) {
            for (item, _) in &items {
                sent.insert(item.conversation, Index(item.index.0 + 1));
            }
        }
        if let Some(queue) = self.in_flight.get_mut(s) {
            queue.push_back(InFlight {
                id,
                opens: open_ids,
                items: items.clone(),
            });
        }
        metrics::gauge!("router_attest_batch_items", "server" => s.to_string())
            .set(items.len() as f64);
        Some(ServerJob {
            id,
            server: u32::try_from(s).unwrap_or(u32::MAX),
            opens,
            items: items.into_iter().map(|(i, _)| i).collect(),
            request,
            follows,
        })
    }

    /// Applies an order server's answers to a job; returns the
    /// conversations they touched, whose quorate indices may now be
    /// delivered.
    pub(crate) fn apply_job_result(
        &mut self,
        r: JobResult,
        now: Millis,
        work: &mut Work<'_>,
    ) -> BTreeSet<ConversationId> {
        let s = r.server as usize;
        let Some(flight) = self.in_flight.get_mut(s).and_then(|queue| {
            let k = queue.iter().position(|f| f.id == r.id)?;
            queue.remove(k)
        }) else {
            tracing::warn!(
                server = s,
                job = r.id,
                "result for a job not in flight; ignored"
            );
            return BTreeSet::new();
        };
        let (base, max) = (self.backoff_base, self.backoff_max);
        if let Some(link) = self.links.get_mut(s) {
            link.in_flight = link.in_flight.saturating_sub(1);
        }
        let mut touched = BTreeSet::new();
        for (id, outcome) in flight.opens.iter().zip(r.opens.iter()) {
            let Some(conv) = work.conversations.get_mut(id) else {
                continue;
            };
            match outcome {
                OpenOutcome::Opened(_) | OpenOutcome::AlreadyOpen => {
                    if let Some(o) = conv.opened.get_mut(s) {
                        *o = true;
                    }
                    if let Some(b) = conv.backoff.get_mut(s) {
                        b.succeed();
                    }
                    work.records
                        .push(Record::Conversation(Box::new(conv.record())));
                    touched.insert(*id);
                }
                OpenOutcome::Failed(e) => {
                    tracing::warn!(server = s, conversation = %id, error = %e, "open failed; will retry");
                    if let Some(b) = conv.backoff.get_mut(s) {
                        b.fail(now, base, max);
                    }
                }
            }
        }
        match r.attest {
            Err(e) => {
                // Whatever was in flight is resent from the progress.
                if let Some(sent) = self.sent.get_mut(s) {
                    sent.clear();
                }
                let next_job = self.next_job;
                if let Some(link) = self.links.get_mut(s)
                    && (!flight.items.is_empty() || flight.opens.is_empty())
                    && flight.id >= link.stale_before
                {
                    // One failure backs off once, not once per job that
                    // was in flight when it happened.
                    tracing::warn!(server = s, error = %e, "order server unreachable; backing off");
                    metrics::counter!("router_order_server_failures_total", "server" => s.to_string())
                        .increment(1);
                    link.backoff.fail(now, base, max);
                    link.down = true;
                    link.stale_before = next_job;
                }
            }
            Ok(results) => {
                if let Some(link) = self.links.get_mut(s) {
                    link.backoff.succeed();
                    link.down = false;
                }
                if results.len() != flight.items.len() {
                    tracing::warn!(
                        server = s,
                        sent = flight.items.len(),
                        got = results.len(),
                        "order server answered a different number of items; retrying"
                    );
                    if let Some(link) = self.links.get_mut(s) {
                        link.backoff.fail(now, base, max);
                    }
                    if let Some(sent) = self.sent.get_mut(s) {
                        sent.clear();
                    }
                } else {
                    for ((item, hash), result) in flight.items.iter().zip(results) {
                        self.attest_result(s, item, hash, result, now, work);
                        if let Some(conv) = work.conversations.get_mut(&item.conversation) {
                            conv.reweigh(item.index);
                        }
                        touched.insert(item.conversation);
                        // An item that did not move the server's progress
                        // (refused, unusable, out of step): what was sent
                        // after it is sent again from the progress.
                        let progress = work
                            .conversations
                            .get(&item.conversation)
                            .and_then(|c| c.progress.get(s).copied())
                            .unwrap_or(Index(0));
                        if progress <= item.index
                            && let Some(sent) = self.sent.get_mut(s)
                        {
                            sent.remove(&item.conversation);
                        }
                    }
                }
            }
        }
        touched
    }

    fn attest_result(
        &mut self,
        s: usize,
        item: &JobItem,
        hash: &EnvelopeHash,
        result: pb::AttestResult,
        now: Millis,
        work: &mut Work<'_>,
    ) {
        let n = self.servers;
        let (base, max) = (self.backoff_base, self.backoff_max);
        let Some(conv) = work.conversations.get_mut(&item.conversation) else {
            return;
        };
        let conv_id = conv.id();
        let progress = conv.progress.get(s).copied().unwrap_or(Index(0));
        let Some(p) = conv.pending.get(&item.index) else {
            return;
        };
        if p.hash != *hash {
            // The index was freed and re-used while this job was in flight.
            return;
        }
        match result.outcome {
            Some(pb::attest_result::Outcome::Attested(a)) => {
                let check = Attestation::try_from(a)
                    .map_err(|e| e.to_string())
                    .and_then(|mut a| {
                        a.server = u32::try_from(s).unwrap_or(u32::MAX);
                        // Where the server logged it (its answer, not the
                        // attestation, carries it): relayed to members and
                        // in history pages for `grompi audit`.
                        a.log_index = result.log_index;
                        check_attestation(&a, p, conv.epochs(), item.index)?;
                        Ok(a)
                    });
                match check {
                    Err(e) => {
                        tracing::error!(server = s, conversation = %conv_id, index = item.index.0, error = %e,
                            "order server returned an unusable attestation");
                        metrics::counter!("router_bad_attestations_total", "server" => s.to_string())
                            .increment(1);
                        if let Some(b) = conv.backoff.get_mut(s) {
                            b.fail(now, base, max);
                        }
                    }
                    Ok(a) => {
                        if item.index != progress {
                            // Not the next index for this server; already
                            // recorded or out of step. Nothing to store.
                            return;
                        }
                        // Who receives the tags now, if the index was
                        // delivered before this attestation came in.
                        let late = p.delivered.then(|| recipients(conv.epochs(), p));
                        if let Some(b) = conv.backoff.get_mut(s) {
                            b.succeed();
                        }
                        // The row is the server's progress too: it is
                        // stored only for the index at its progress, so a
                        // restart reads progress from the rows
                        // (`store::load`).
                        work.records.push(Record::Attestation {
                            conversation: conv_id,
                            attestation: a.clone(),
                        });
                        if let Some(pr) = conv.progress.get_mut(s) {
                            *pr = Index(item.index.0 + 1);
                        }
                        let Some(p) = conv.pending.get_mut(&item.index) else {
                            return;
                        };
                        if let Some(slot) = p.attestations.get_mut(s) {
                            *slot = Some(a.clone());
                        }
                        if p.refusals
                            .iter()
                            .flatten()
                            .any(|(r, _)| is_sender_fault(*r))
                        {
                            metrics::counter!("router_disagreements_total").increment(1);
                            tracing::warn!(conversation = %conv_id, index = item.index.0,
                                "order servers disagree on an envelope: some attested, some refused; \
                                 the refusing servers cannot progress past this index");
                        }
                        if let Some(recipients) = late {
                            for (account, member) in recipients {
                                work.notices.push(Notice::Deliver {
                                    account,
                                    delivery: Box::new(delivery::tag_update(
                                        &conv_id,
                                        item.index,
                                        member,
                                        std::slice::from_ref(&a),
                                    )),
                                });
                            }
                            metrics::counter!("router_late_tags_total").increment(1);
                        }
                    }
                }
            }
            Some(pb::attest_result::Outcome::Refused(r)) => {
                let reason =
                    RefusalReason::try_from(r.reason).unwrap_or(RefusalReason::Unspecified);
                metrics::counter!("router_refusals_total", "reason" => reason.as_str_name())
                    .increment(1);
                if reason == RefusalReason::UnknownConversation {
                    if let Some(b) = conv.backoff.get_mut(s) {
                        b.fail(now, base, max);
                    }
                    if let Some(o) = conv.opened.get_mut(s) {
                        *o = false;
                    }
                    work.records
                        .push(Record::Conversation(Box::new(conv.record())));
                    return;
                }
                if item.index != progress {
                    // Items sent after a refused one (in its batch or in
                    // later jobs in flight) are refused as out of order;
                    // they are simply sent again, without another backoff.
                    return;
                }
                let Some(p) = conv.pending.get_mut(&item.index) else {
                    return;
                };
                if let Some(b) = conv.backoff.get_mut(s) {
                    b.fail(now, base, max);
                }
                if is_sender_fault(reason) {
                    if let Some(slot) = p.refusals.get_mut(s) {
                        *slot = Some((reason, r.message.clone()));
                    }
                } else {
                    tracing::warn!(server = s, conversation = %conv_id, index = item.index.0,
                        reason = reason.as_str_name(), message = %r.message, server_next = r.next_index,
                        "order server refused an item; retrying with backoff");
                }
                let all_refused = p.attested() == 0
                    && p.refusals.len() == n
                    && p.refusals
                        .iter()
                        .all(|r| r.as_ref().is_some_and(|(r, _)| is_sender_fault(*r)));
                if all_refused {
                    let reasons = p
                        .refusals
                        .iter()
                        .enumerate()
                        .filter_map(|(server, r)| {
                            r.as_ref().map(|(reason, message)| ServerRefusal {
                                server,
                                reason: *reason,
                                message: message.clone(),
                            })
                        })
                        .collect();
                    let error = RouterError::RefusedByEveryServer(reasons);
                    let failed = conv.drop_from(item.index, &error, n, work.records);
                    for sent in &mut self.sent {
                        sent.remove(&conv_id);
                    }
                    for b in &mut conv.backoff {
                        b.succeed();
                    }
                    metrics::counter!("router_dropped_envelopes_total").increment(1);
                    for f in failed {
                        if let Some(a) = f.submitter
                            && let Some(w) = work.pending_per_account.get_mut(&a)
                        {
                            w.count = w.count.saturating_sub(1);
                            w.bytes = w.bytes.saturating_sub(f.size);
                        }
                        for t in f.tickets {
                            work.notices.push(Notice::Failed(t, f.error.clone()));
                        }
                    }
                }
            }
            None => {
                tracing::warn!(server = s, "attest result without an outcome");
                if let Some(b) = conv.backoff.get_mut(s) {
                    b.fail(now, base, max);
                }
            }
        }
    }
}

/// Checks an order server's attestation against what the router computed.
fn check_attestation(
    a: &Attestation,
    p: &Pending,
    epochs: &[EpochSlots],
    index: Index,
) -> Result<(), String> {
    if a.index != index {
        return Err(format!("attested index {} for item {}", a.index, index));
    }
    if a.head != p.stored.head {
        return Err("attested head differs from the router's chain".into());
    }
    let h = p.stored.envelope.header();
    let slots = usize::try_from(h.epoch().0)
        .ok()
        .and_then(|e| epochs.get(e))
        .map(|e| e.slots.len())
        .unwrap_or(0);
    if a.tags.len() != slots {
        return Err(format!("{} tags for {slots} slots", a.tags.len()));
    }
    let next = p.stored.next_slots.as_ref().map_or(0, |s| s.len());
    if a.next_tags.len() != next {
        return Err(format!(
            "{} next-epoch tags for {next} slots",
            a.next_tags.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_faults_are_the_envelope_s_own() {
        assert!(is_sender_fault(RefusalReason::BadSubmissionTag));
        assert!(is_sender_fault(RefusalReason::SequenceNotIncreasing));
        assert!(!is_sender_fault(RefusalReason::IndexMismatch));
        assert!(!is_sender_fault(RefusalReason::HeadMismatch));
        assert!(!is_sender_fault(RefusalReason::Equivocation));
        assert!(!is_sender_fault(RefusalReason::UnknownConversation));
    }
}
