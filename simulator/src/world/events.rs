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
        /// Index into the scenario's script of the step that asks for the change.
        step: usize,
        /// What the step changes; the Update is built from it and the router's next slot set.
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
        /// The submitted envelope's hash, the key of its ground truth in `World::composed`.
        hash: [u8; 32],
    },
    /// ProveHeads: the member asks for every order server's head proof.
    Prove,
    /// FetchHistory: the member reads a page of the conversation's history.
    History,
    /// The router was down: call again.
    Retry {
        /// The call to make again after `DOWNTIME`.
        call: Box<Call>,
        /// The purpose of the failed call, restored when it is made again.
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
            Self::History => "fetch history",
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
        /// Index of the calling member in `World::members`.
        from: usize,
        /// The request as the router's core takes it.
        call: Call,
        /// Handed back in the `Reply`, to decide what to do with the answer.
        purpose: Purpose,
    },
    /// The router's answer reaches a member.
    Reply {
        /// Index of the member that called, in `World::members`.
        to: usize,
        /// The purpose the call was sent with.
        purpose: Purpose,
        /// The router's response, or the error the member's client sees.
        result: Result<Response, String>,
    },
    /// A job reaches an order server (over the ordered stream from the
    /// router's history `branch` to that server).
    Job {
        /// The router's history that sent it.
        branch: usize,
        /// The Attest job (and the conversations to open first) the router's fan-out made.
        job: ServerJob,
        /// The router's incarnation that sent it.
        incarnation: u64,
    },
    /// A job's result reaches the router (over the same stream, in order).
    JobDone {
        /// The router's history it belongs to.
        branch: usize,
        /// The server's answers to the job, or the transport error that broke the stream.
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
        /// Index of the receiving member in `World::members`.
        to: usize,
        /// What the router (or the adversary playing it) sent, possibly forged or reordered.
        delivery: pb::Delivery,
    },
    /// A page of the conversation's history reaches a member (the router's
    /// answer to FetchHistory, as its strategy made it).
    HistoryPage {
        /// Index of the member that asked for it, in `World::members`.
        to: usize,
        /// The stored envelopes the router returned.
        page: pb::FetchHistoryResponse,
    },
    /// Head proofs reach a member.
    Proofs {
        /// Index of the member that asked for them, in `World::members`.
        to: usize,
        /// The order servers' head proofs the router relayed; the member verifies each MAC.
        proofs: Vec<HeadProof>,
    },
    /// A member composes again what every order server refused.
    Recompose {
        /// Index of the composing member in `World::members`.
        actor: usize,
        /// Index of the script step it belongs to (None for the Setup).
        step: Option<usize>,
        /// What to send.
        content: Box<Content>,
        /// How many times it was composed before; at most 3 recompositions.
        attempt: u32,
    },
    /// The router's timers.
    Poll,
    /// The router crashes.
    RouterCrash,
    /// An order server goes down.
    ServerCrash {
        /// Index of the order server in `World::servers` (its descriptor position).
        server: usize,
        /// Whether it restarts after `DOWNTIME`, or stays down to the end of the run.
        restart: bool,
    },
    /// The router comes back.
    RouterRestart,
    /// An order server comes back.
    ServerRestart(usize),
    /// Members audit the conversation.
    Audit,
}
