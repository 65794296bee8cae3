//! The simulated network: the real router, order server and client cores,
//! message passing as scheduled events with seeded latencies, adversary
//! strategies wrapped around the router and the order servers, and the
//! scenario's conversation script. [`run`] plays one scenario with one seed
//! and judges it.
//!
//! # Model
//!
//! * Time is virtual ([`crate::schedule`]); every message between parties
//!   (a call to the router, its reply, an order server job and its result,
//!   a delivery, head proofs) is an event with a latency drawn from the
//!   seed, so the seed fixes the interleaving.
//! * Accounts register with the router core (signed challenge, order keys).
//!   Pairwise Olm sessions are set up directly between the members' client
//!   states before the run (the router's prekey directory is not on the
//!   path being judged).
//! * The script's steps run at seeded times; a step whose actor cannot send
//!   yet is retried. After the script every member that still follows the
//!   conversation audits it: it reports a stall if it holds deliveries it
//!   cannot accept (`Conversation::stuck`, as the real client does) and
//!   asks every order server for a head proof (PROTOCOL.md 7.7).
//! * Compromised members are the adversary's: a copy of their order key
//!   secrets is taken before the run, and script steps can have them send
//!   what the client's public API would not compose (`member_toolkit`).
//! * Reports never contain ciphertext-derived bytes: Olm draws from the
//!   operating system's RNG, so only outcomes are reproducible from a seed.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | `setup` | building the network from the scenario and the seed |
//! | `network` | the event loop and message passing; the router core's calls, commits and effects |
//! | `script` | the script's steps, composing and submitting, replies, the audit |
//! | `adversary` | every router strategy (all matching on it is there) |
//! | `member_toolkit` | compromised members' envelopes |
//! | `member_node`, `router_node`, `order_node` | the parties: real cores and what they recorded |
//! | `router_puppet` | accounts the router registers and speaks for |
//! | `events`, `measure` | the scheduled events, cost counters |
//! | `report` | members' views, verdicts, the run report |

mod adversary;
mod events;
pub mod measure;
mod member_node;
mod member_toolkit;
mod network;
mod order_node;
mod report;
mod router_node;
pub mod router_puppet;
mod script;
mod setup;

use crate::report::RunReport;
use crate::scenario::Scenario;
use crate::schedule::Schedule;
use crate::view::SentRecord;
use events::{Event, Purpose};
use grompi_proto::{AccountId, ConversationId};
use grompi_router::core::Call;
use grompi_router::fanout::StreamOrder;
use measure::Measure;
use member_node::MemberNode;
use order_node::OrderNode;
use router_node::RouterNode;
use std::collections::BTreeMap;

/// Why a run could not be played (as opposed to an attack succeeding).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Setting up the network failed.
    #[error("setting up the network: {0}")]
    Setup(String),
    /// The scenario asks for something the simulator does not model.
    #[error("not modelled: {0}")]
    Unsupported(String),
}

/// Virtual microseconds per millisecond.
const MS: u64 = 1_000;
/// Fastest and slowest one-way latency between parties.
const LATENCY: (u64, u64) = (2 * MS, 30 * MS);
/// When the first script step may run.
const SCRIPT_START: u64 = 2_000 * MS;
/// Shortest and longest virtual time between two script steps, drawn per step.
const STEP_GAP: (u64, u64) = (150 * MS, 1_200 * MS);
/// How long the network settles after the last step before the audit.
const SETTLE: u64 = 4_000 * MS;
/// How long after the audit the run ends.
const AFTER_AUDIT: u64 = 2_000 * MS;
/// How often `Event::Poll` runs the router's timers on every branch.
const POLL: u64 = 100 * MS;
/// Shortest and longest router commit that syncs to disk, and one that
/// does not (only order servers' answers: deferred). Batches the router
/// makes meanwhile are folded into its next commit.
const COMMIT_SYNCED: (u64, u64) = (MS, 15 * MS);
const COMMIT_DEFERRED: (u64, u64) = (100, 2 * MS);
/// How long a crashed server stays down.
const DOWNTIME: u64 = 400 * MS;
/// How often a step whose actor cannot act yet is retried.
const STEP_RETRIES: u32 = 30;

/// One envelope a member composed: the ground truth.
struct Composed {
    step: Option<usize>,
    sender: usize,
    submitted_at: u64,
    tags: Vec<grompi_proto::Tag>,
    /// Every order server refused it and the sender was told so.
    refused: bool,
}

/// The network and everything the run records.
struct World {
    scenario: Scenario,
    sched: Schedule<Event>,
    router: RouterNode,
    servers: Vec<OrderNode>,
    members: Vec<MemberNode>,
    by_account: BTreeMap<AccountId, usize>,
    conversation: ConversationId,
    /// Group per member when the router forks.
    group_of: Vec<usize>,
    forked: bool,
    /// Envelope hash (bytes) -> ground truth.
    composed: BTreeMap<[u8; 32], Composed>,
    sent: Vec<SentRecord>,
    step_attempts: BTreeMap<usize, u32>,
    adversary: adversary::RouterAdversary,
    /// Calls waiting for the router's answer, with the call itself (a call
    /// the router crashes under fails, and the client makes it again).
    tickets: BTreeMap<grompi_router::Ticket, (usize, Purpose, Call)>,
    measure: Measure,
    notes: Vec<String>,
    horizon: u64,
    /// Accounts the router registered for itself.
    puppets: Vec<router_puppet::Puppet>,
    /// Per ordered stream (router incarnation, branch, order server): when
    /// the last job reaches the server and the last answer the router.
    streams: BTreeMap<(u64, usize, u32), [u64; 2]>,
    /// Per stream: the order the router's worker keeps on it (a job whose
    /// predecessor's stream broke fails unsent).
    stream_order: BTreeMap<(u64, usize, u32), StreamOrder>,
    /// Per stream: jobs sent whose answers have not reached the router.
    in_flight: BTreeMap<(u64, usize, u32), usize>,
    /// The most jobs one stream had in flight at once.
    max_in_flight: usize,
}

/// Options of a run that are not part of the scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Skip the end-of-run audit (stall report and head proofs).
    pub no_audit: bool,
}

/// Plays `scenario` with `seed` and judges it.
pub fn run(scenario: &Scenario, seed: u64) -> Result<RunReport, SimError> {
    run_with(scenario, seed, RunOptions::default())
}

/// [`run`] with options.
pub fn run_with(
    scenario: &Scenario,
    seed: u64,
    options: RunOptions,
) -> Result<RunReport, SimError> {
    let mut world = World::build(scenario, seed)?;
    world.play(options)?;
    Ok(world.report(seed))
}
#[cfg(test)]
mod tests {
    use super::*;
    use grompi_router::driver::DriverConfig;

    /// The router runs production's driver configuration, and the runs
    /// exercise it: batches wait behind a running commit (folded into the
    /// next one: `router_node`'s tests), early effects leave before their
    /// commit, and an order server has several jobs in flight at once.
    #[test]
    fn the_router_runs_the_production_configuration() {
        assert_eq!(router_node::DRIVER, DriverConfig::PRODUCTION);
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/");
        let mut stats = router_node::DriverStats::default();
        let mut max_in_flight = 0;
        for name in ["protest-honest", "router-crash", "order-server-crash"] {
            let path = format!("{dir}{name}.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let scenario = Scenario::parse(&path, &text).unwrap();
            for seed in 0..3 {
                let mut world = World::build(&scenario, seed).unwrap();
                world.play(RunOptions::default()).unwrap();
                let s = world.router.stats;
                stats.commits += s.commits;
                stats.queued += s.queued;
                stats.folded += s.folded;
                stats.early += s.early;
                max_in_flight = max_in_flight.max(world.max_in_flight);
            }
        }
        assert!(stats.queued > 0, "{stats:?}");
        assert!(stats.early > 0, "{stats:?}");
        assert!(max_in_flight > 1, "at most {max_in_flight} job in flight");
    }
}
