//! The events of a run: messages between parties and timers.

use grompi_client_core::content::{Change, Content};
use grompi_proto::mac::HeadProof;
use grompi_proto::pb;
use grompi_router::core::{Call, Response};
use grompi_router::fanout::{JobResult, ServerJob};

/// Why a member called the router (what to do with the reply).
#[derive(Debug, Clone)]
pub enum Purpose {
    /// CreateConversation by the creator.
    Create,
    /// PrepareUpdate for a script step.
    Prepare {
        /// The step.
        step: usize,
        /// The change.
        change: Change,
        /// A compromised admin swaps two members' next slots.
        swap: bool,
        /// A compromised admin sends the Update whatever its client's rules
        /// say.
        unchecked: bool,
    },
    /// Submit of an envelope.
    Submit {
        /// The step (None for the Setup).
        step: Option<usize>,
        /// The content, to compose again if every server refused it.
        content: Option<Box<Content>>,
        /// How many times it was composed before.
        attempt: u32,
        /// The envelope hash.
        hash: [u8; 32],
    },
    /// ProveHeads.
    Prove,
    /// The router was down: call again.
    Retry {
        /// The call.
        call: Box<Call>,
        /// Its purpose.
        inner: Box<Purpose>,
    },
}

impl Purpose {
    /// A short name for notes.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Prepare { .. } => "prepare update",
            Self::Submit { .. } => "submit",
            Self::Prove => "prove heads",
            Self::Retry { .. } => "retry",
        }
    }
}

/// Something that happens at a virtual time.
#[derive(Debug)]
pub enum Event {
    /// A script step is due.
    Step(usize),
    /// A member's call reaches the router.
    ToRouter {
        /// The member.
        from: usize,
        /// The call.
        call: Call,
        /// Why.
        purpose: Purpose,
    },
    /// The router's answer reaches a member.
    Reply {
        /// The member.
        to: usize,
        /// Why it called.
        purpose: Purpose,
        /// The answer.
        result: Result<Response, String>,
    },
    /// A job reaches an order server (over the ordered stream from the
    /// router's history `branch` to that server).
    Job {
        /// The router's history that sent it.
        branch: usize,
        /// The job.
        job: ServerJob,
        /// The router's incarnation that sent it.
        incarnation: u64,
    },
    /// A job's result reaches the router (over the same stream, in order).
    JobDone {
        /// The router's history it belongs to.
        branch: usize,
        /// The result.
        result: JobResult,
        /// The router's incarnation that sent the job: an answer on a stream
        /// of an earlier incarnation never reaches the current one.
        incarnation: u64,
    },
    /// A commit the router started ends: the effects of the batches it
    /// holds leave, and the batches queued behind it start the next one.
    RouterCommitted {
        /// The router's history.
        branch: usize,
        /// The router's incarnation that started it.
        incarnation: u64,
    },
    /// A delivery reaches a member.
    Deliver {
        /// The member.
        to: usize,
        /// The delivery.
        delivery: pb::Delivery,
    },
    /// Head proofs reach a member.
    Proofs {
        /// The member.
        to: usize,
        /// The proofs.
        proofs: Vec<HeadProof>,
    },
    /// A member composes again what every order server refused.
    Recompose {
        /// The member.
        actor: usize,
        /// The step.
        step: Option<usize>,
        /// What to send.
        content: Box<Content>,
        /// Attempt number.
        attempt: u32,
    },
    /// The router's timers.
    Poll,
    /// The router crashes.
    RouterCrash,
    /// An order server goes down.
    ServerCrash {
        /// Which.
        server: usize,
        /// Whether it comes back.
        restart: bool,
    },
    /// The router comes back.
    RouterRestart,
    /// An order server comes back.
    ServerRestart(usize),
    /// Members audit the conversation.
    Audit,
}
