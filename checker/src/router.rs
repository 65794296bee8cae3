//! The honest router inside the model: the router's own core
//! (`RouterCore`) run by the loop `router serve` runs (the shipping
//! [`Driver`] with [`DriverConfig::PRODUCTION`]: early effects, commit
//! batches, eight jobs in flight per order server).
//!
//! The core cannot be cloned and the explorer branches at every state, so a
//! state keeps the inputs the router's driver received on its path (a
//! [`RouterLog`]) and a step rebuilds the driver by replaying them from the
//! router's starting store ([`HonestRouter::replay`]). The driver is
//! deterministic given its inputs, its clock and its random source, and the
//! replay fixes all three (the clock advances one second per input; the
//! random source is seeded by the model's seed), so every replay of a log
//! reaches the same core, with the same jobs in flight.
//!
//! The router starts from records, as a restarted router does: a session
//! per member and the conversation with the checker's slot set (the one
//! router decision the model fixes: which slot set it assigns). The
//! Setup's submission and its fan-out are replayed first. An honest
//! Update's next slot set is written to the store as `PrepareUpdate` writes
//! it, and the router restarts from its store (the crash-recovery path that
//! ships) before the Update is submitted ([`Fed::Prepare`]).

use crate::model::ModelError;
use grompi_proto::{AccountId, ConversationId, pb};
use grompi_router::core::{Call, Command, CoreConfig, Effect, RouterCore, Submission};
use grompi_router::directory::token_hash;
use grompi_router::driver::{Driver, DriverConfig, Input};
use grompi_router::fanout::{JobResult, ServerJob};
use grompi_router::limits::Limits;
use grompi_router::record::{ConversationRecord, Record};
use grompi_router::slots::EpochSlots;
use grompi_router::store::{Durability, MemStore, Store};
use grompi_router::{Millis, Ticket};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::fmt;
use std::rc::Rc;

/// Who forwards envelopes in the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RouterMode {
    /// Only the adversary's moves: it asks honest order servers to attest
    /// and delivers whatever it has seen (an honest router's behaviour is
    /// among its moves). The router core is not in the model.
    #[default]
    Adversary,
    /// Only the shipping driver forwards: honest members submit to the
    /// router core, its jobs are answered by the order servers (the real
    /// `OrderCore` of an honest server; a colluding server tags what it is
    /// asked), and members receive the deliveries the core cuts. The
    /// adversary's own attest and deliver moves are off.
    Driver,
    /// The shipping driver forwards, and the adversary keeps every move:
    /// it may also attest, deliver, substitute and answer proofs as in
    /// [`RouterMode::Adversary`], interleaved with the driver.
    Both,
}

impl RouterMode {
    /// Whether the shipping driver runs in the model.
    pub fn driver(self) -> bool {
        self != RouterMode::Adversary
    }

    /// Whether the adversary's own attest and deliver moves are on.
    pub fn adversary(self) -> bool {
        self != RouterMode::Driver
    }
}

impl fmt::Display for RouterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouterMode::Adversary => "adversary",
            RouterMode::Driver => "driver",
            RouterMode::Both => "both",
        })
    }
}

impl std::str::FromStr for RouterMode {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "adversary" => Ok(RouterMode::Adversary),
            "driver" => Ok(RouterMode::Driver),
            "both" => Ok(RouterMode::Both),
            other => Err(ModelError(format!(
                "unknown router mode {other:?} (adversary, driver or both)"
            ))),
        }
    }
}

/// One input the router's driver received on a path.
#[derive(Clone, Debug)]
pub enum Fed {
    /// A member (by account number) submitted an envelope over its session.
    Submit {
        /// The submitting account's number.
        account: usize,
        /// The envelope and its submission tags (boxed: far larger than
        /// the other inputs).
        submission: Box<Submission>,
    },
    /// An order server answered a job.
    JobDone(JobResult),
    /// The router prepared a next slot set (as `PrepareUpdate` records it)
    /// and restarted from its store.
    Prepare(EpochSlots),
}

/// The router's inputs on a path, oldest first, with a label for each (what
/// it means, for state fingerprints: the order of submissions decides the
/// router's indices, so it is part of what a state means).
/// Entries are shared between the states of a path: appending copies
/// only the list of pointers.
#[derive(Clone, Default)]
pub struct RouterLog {
    entries: Rc<Vec<Entry>>,
}

/// One input of a [`RouterLog`] with its label.
type Entry = Rc<(Fed, Rc<str>)>;

impl RouterLog {
    /// This log with `fed` appended.
    pub fn with(&self, fed: Fed, label: String) -> Self {
        let mut entries = (*self.entries).clone();
        entries.push(Rc::new((fed, label.into())));
        Self {
            entries: Rc::new(entries),
        }
    }

    /// The labels of the inputs, in order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| &*e.1)
    }

    /// How many inputs the log holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What stays fixed about the honest router for an exploration: its
/// configuration, the records it starts from, the sessions' tokens, and
/// the Setup's fan-out every replay starts with.
pub struct HonestRouter {
    config: CoreConfig,
    conversation: ConversationId,
    records: Vec<Record>,
    /// Per account number, its session token.
    tokens: Vec<[u8; 32]>,
    /// The inputs every replay starts with (the Setup and its fan-out).
    base: Vec<Fed>,
    seed: u64,
}

/// A router rebuilt for one step: the driver, its store, and the jobs it
/// sent that no server answered yet.
pub struct RouterRun {
    driver: Driver,
    store: MemStore,
    /// Jobs sent and not yet answered, in the order sent.
    pub jobs: Vec<ServerJob>,
    rng: StdRng,
    fed: u64,
}

/// A delivery the router's core cut: the account and the wire message.
pub type Cut = (AccountId, pb::Delivery);

fn store_err(e: impl fmt::Display) -> ModelError {
    ModelError(format!("router: {e}"))
}

impl HonestRouter {
    /// A router for the conversation of `record` (which holds the Setup's
    /// slot set), with the order servers `servers` and quorum `quorum`;
    /// `accounts` are the members' account ids by number, each given a
    /// session that never ends. `seed` seeds the router's random source.
    pub fn new(
        servers: Vec<grompi_proto::OrderServerKey>,
        quorum: usize,
        record: ConversationRecord,
        accounts: &[AccountId],
        seed: u64,
    ) -> Self {
        let config = CoreConfig {
            servers,
            quorum,
            limits: Limits {
                requests_per_second: 1_000_000,
                request_burst: 1_000_000,
                ..Limits::default()
            },
            padding_tiers: vec![64],
            noise_interval_ms: None,
            max_batch: 4,
            backoff_base_ms: 10,
            backoff_max_ms: 100,
        };
        let tokens: Vec<[u8; 32]> = (0..accounts.len())
            .map(|k| {
                let mut t = [0xd7u8; 32];
                t[0] = k as u8;
                t
            })
            .collect();
        let conversation = record.id;
        let mut records: Vec<Record> = accounts
            .iter()
            .zip(&tokens)
            .map(|(a, t)| Record::Session {
                hash: token_hash(t),
                account: *a,
                expires_at: u64::MAX,
            })
            .collect();
        records.push(Record::Conversation(Box::new(record)));
        Self {
            config,
            conversation,
            records,
            tokens,
            base: Vec::new(),
            seed,
        }
    }

    /// Sets the inputs every replay starts with.
    pub fn set_base(&mut self, base: Vec<Fed>) {
        self.base = base;
    }

    /// A fresh router from the starting records, before any input.
    pub fn start(&self) -> Result<RouterRun, ModelError> {
        let mut store = MemStore::new();
        store
            .commit(&self.records, Durability::Now)
            .map_err(store_err)?;
        let core = RouterCore::restore(self.config.clone(), store.load().map_err(store_err)?)
            .map_err(store_err)?;
        Ok(RouterRun {
            driver: Driver::new(core, DriverConfig::PRODUCTION),
            store,
            jobs: Vec::new(),
            rng: StdRng::seed_from_u64(self.seed ^ 0x0000_726f_7574_6572),
            fed: 0,
        })
    }

    /// The router after the base inputs and every input of `log`.
    pub fn replay(&self, log: &RouterLog) -> Result<RouterRun, ModelError> {
        let mut run = self.start()?;
        for fed in &self.base {
            run.feed(self, fed)?;
        }
        for entry in log.entries.iter() {
            run.feed(self, &entry.0)?;
        }
        Ok(run)
    }
}

impl RouterRun {
    /// Feeds one input as the router's shell does: the driver handles it
    /// and closes the batch; the early effects are performed, the batch is
    /// committed, then its effects are performed. Returns the deliveries
    /// the core cut, in order (jobs are kept in [`RouterRun::jobs`]).
    pub fn feed(&mut self, router: &HonestRouter, fed: &Fed) -> Result<Vec<Cut>, ModelError> {
        self.fed += 1;
        let now: Millis = 1_000 * self.fed;
        let ticket = Ticket(self.fed);
        let command = match fed {
            Fed::Submit {
                account,
                submission,
            } => {
                let token = router
                    .tokens
                    .get(*account)
                    .ok_or_else(|| store_err("no session for the account"))?;
                Command::Authed {
                    token: token.to_vec(),
                    call: Call::Submit((**submission).clone()),
                }
            }
            Fed::JobDone(result) => {
                self.jobs.retain(|j| j.id != result.id);
                Command::JobDone(result.clone())
            }
            Fed::Prepare(slots) => {
                self.restart_prepared(router, slots.clone())?;
                let step = self.driver.finish(now, &mut self.rng);
                return self.perform(step);
            }
        };
        let step = self.driver.step(
            [Input::Command(ticket, Box::new(command))],
            now,
            &mut self.rng,
        );
        self.perform(step)
    }

    fn perform(&mut self, step: grompi_router::driver::Step) -> Result<Vec<Cut>, ModelError> {
        let mut cut = Vec::new();
        let mut take = |effects: Vec<Effect>, jobs: &mut Vec<ServerJob>| {
            for e in effects {
                match e {
                    Effect::Job(j) => jobs.push(j),
                    Effect::Deliver { account, delivery } => cut.push((account, *delivery)),
                    Effect::Reply(..) | Effect::Lookup(..) => {}
                }
            }
        };
        take(step.early, &mut self.jobs);
        step.commit.commit_to(&mut self.store).map_err(store_err)?;
        take(step.commit.effects, &mut self.jobs);
        Ok(cut)
    }

    /// Writes `slots` as a prepared next set of the conversation (the
    /// record `PrepareUpdate` writes) and restarts the core from the store.
    /// Jobs in flight are lost, as in a restart; the new core sends them
    /// again when polled.
    fn restart_prepared(
        &mut self,
        router: &HonestRouter,
        slots: EpochSlots,
    ) -> Result<(), ModelError> {
        let mut record = self
            .driver
            .core()
            .conversation(&router.conversation)
            .ok_or_else(|| store_err("the router lost the conversation"))?
            .record();
        record.prepared.retain(|p| p.epoch == slots.epoch);
        record.prepared.push(slots);
        self.store
            .commit(&[Record::Conversation(Box::new(record))], Durability::Now)
            .map_err(store_err)?;
        let core =
            RouterCore::restore(router.config.clone(), self.store.load().map_err(store_err)?)
                .map_err(store_err)?;
        self.driver = Driver::new(core, DriverConfig::PRODUCTION);
        self.jobs.clear();
        Ok(())
    }

    /// The driver, for inspection.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }
}
