//! Fan-out to the order servers, as data: per-server links with one job in
//! flight at a time, retry backoff with times passed in, the jobs themselves
//! (opens, then one Attest batch) and how refusals are classified.
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

use crate::Millis;
use grompi_proto::pb::{self, RefusalReason};
use grompi_proto::{ConversationId, Index};

/// Retry state: how many consecutive failures, and when to try again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Consecutive failures.
    pub failures: u32,
    /// Not before this time.
    pub retry_at: Millis,
}

impl Backoff {
    /// Whether a retry is allowed at `now`.
    pub fn ready(&self, now: Millis) -> bool {
        now >= self.retry_at
    }

    /// Records a failure: the wait doubles from `base` up to `max`.
    pub fn fail(&mut self, now: Millis, base: Millis, max: Millis) {
        let shift = self.failures.min(20);
        let wait = base.saturating_mul(1u64 << shift).min(max);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = now.saturating_add(wait);
    }

    /// Records a success.
    pub fn succeed(&mut self) {
        *self = Self::default();
    }
}

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
    /// Conversation.
    pub conversation: ConversationId,
    /// Index.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        assert!(b.ready(0));
        b.fail(1000, 100, 1000);
        assert_eq!(b.retry_at, 1100);
        assert!(!b.ready(1099));
        b.fail(1100, 100, 1000);
        assert_eq!(b.retry_at, 1300);
        for _ in 0..10 {
            b.fail(2000, 100, 1000);
        }
        assert_eq!(b.retry_at, 3000);
        b.succeed();
        assert!(b.ready(0));
    }

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
