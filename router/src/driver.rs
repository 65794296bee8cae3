//! The one loop every shell runs around the core, without I/O.
//!
//! A shell (the production runtime, the simulator's router node, the
//! core's tests) gathers inputs, hands them to a [`Driver`] with the time
//! and a random source, and gets back a [`Step`]: the early effects to
//! perform at once, and a [`CommitBatch`] (records, how durable they must
//! be, the effects that wait for them). The shell commits batches in
//! order, and may fold every batch queued behind a running commit into the
//! next one ([`fold`]: group commit); only after a batch's commit does it
//! perform that batch's effects, in order.
//!
//! The driver's configuration ([`DriverConfig`]) says whether early effects
//! are kept apart and how many jobs one order server may have in flight;
//! [`DriverConfig::PRODUCTION`] is what `router serve` runs, and what the
//! simulator runs.

use crate::core::{Command, Effect, Output, RouterCore};
use crate::record::Record;
use crate::store::{Durability, Store, StoreError};
use crate::{Millis, Ticket};
use rand::CryptoRng;

/// Jobs one order server may have in flight over its ordered attest
/// stream in production.
pub const PIPELINE_DEPTH: usize = 8;

/// How a driver runs the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// Jobs one order server may have in flight at once
    /// ([`RouterCore::pipeline_jobs`]). More than 1 only over a transport
    /// that delivers and answers one server's jobs in the order sent.
    pub pipeline_depth: usize,
    /// Whether effects that follow only from order servers' answers leave
    /// before the commit ([`Output::separating_early`]).
    pub early_effects: bool,
}

impl DriverConfig {
    /// What `router serve` runs: early effects, and [`PIPELINE_DEPTH`] jobs
    /// in flight per order server over its `AttestStream`.
    pub const PRODUCTION: Self = Self {
        pipeline_depth: PIPELINE_DEPTH,
        early_effects: true,
    };

    /// This configuration with `depth` jobs in flight per order server.
    pub fn with_pipeline_depth(self, depth: usize) -> Self {
        Self {
            pipeline_depth: depth.max(1),
            ..self
        }
    }
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self::PRODUCTION
    }
}

/// One input of a batch.
#[derive(Debug)]
pub enum Input {
    /// A command; its reply (if any) names the ticket.
    Command(Ticket, Box<Command>),
    /// Time passed (retries after backoff, noise): nothing but the poll
    /// every batch ends with.
    Tick,
}

/// One batch's records, how durable their commit must be, and the effects
/// that wait for it. `E` is the shell's form of an effect (the runtime
/// matches replies to channels before queueing a batch).
#[derive(Debug)]
pub struct CommitBatch<E = Effect> {
    /// Durable changes, in order.
    pub records: Vec<Record>,
    /// How durable their commit must be ([`Output::durability`]).
    pub durability: Durability,
    /// Effects to perform after the commit, in order.
    pub effects: Vec<E>,
    /// Inputs the batch came from (commands and ticks).
    pub inputs: usize,
}

impl<E> Default for CommitBatch<E> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            durability: Durability::Deferred,
            effects: Vec::new(),
            inputs: 0,
        }
    }
}

impl<E> CommitBatch<E> {
    /// Whether committing and performing the batch would change nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.effects.is_empty()
    }

    /// The same batch with each effect mapped by `f` (dropping those it
    /// maps to `None`).
    pub fn filter_map_effects<F>(self, f: impl FnMut(E) -> Option<F>) -> CommitBatch<F> {
        CommitBatch {
            records: self.records,
            durability: self.durability,
            effects: self.effects.into_iter().filter_map(f).collect(),
            inputs: self.inputs,
        }
    }

    /// Commits the records to `store` as durable as the batch requires.
    /// Only after it succeeded may the effects be performed.
    pub fn commit_to(&self, store: &mut dyn Store) -> Result<(), StoreError> {
        store.commit(&self.records, self.durability)
    }
}

/// Group commit: folds batches, in the order they were made, into one
/// commit. The records and the effects are concatenated in order; the
/// commit is synced ([`Durability::Now`]) when any folded batch needs it,
/// and deferred only when every folded batch only restates order servers'
/// answers. A synced commit also makes every deferred one before it
/// durable, so folding never weakens what a batch asked for.
pub fn fold<E>(batches: impl IntoIterator<Item = CommitBatch<E>>) -> CommitBatch<E> {
    let mut folded = CommitBatch::default();
    for mut b in batches {
        folded.records.append(&mut b.records);
        folded.effects.append(&mut b.effects);
        folded.inputs += b.inputs;
        if b.durability == Durability::Now {
            folded.durability = Durability::Now;
        }
    }
    folded
}

/// What one batch of inputs produced.
#[derive(Debug, Default)]
pub struct Step {
    /// Effects to perform now, before the batch's commit (and before the
    /// commit of any earlier batch still waiting): acknowledgements, tags
    /// and deliveries that follow only from order servers' answers.
    pub early: Vec<Effect>,
    /// What to commit, and what to perform after the commit.
    pub commit: CommitBatch,
}

/// The core and the batch being built.
#[derive(Debug)]
pub struct Driver {
    core: RouterCore,
    config: DriverConfig,
    /// The batch being built: handled and not yet closed by [`Driver::finish`].
    building: Output,
    inputs: usize,
}

impl Driver {
    /// Runs `core` as `config` says.
    pub fn new(mut core: RouterCore, config: DriverConfig) -> Self {
        core.pipeline_jobs(config.pipeline_depth);
        Self {
            building: Self::output(config),
            core,
            config,
            inputs: 0,
        }
    }

    fn output(config: DriverConfig) -> Output {
        if config.early_effects {
            Output::separating_early()
        } else {
            Output::default()
        }
    }

    /// The configuration.
    pub fn config(&self) -> DriverConfig {
        self.config
    }

    /// The core, for inspection.
    pub fn core(&self) -> &RouterCore {
        &self.core
    }

    /// The core, without the batch being built (which is lost, as in a
    /// crash).
    pub fn into_core(self) -> RouterCore {
        self.core
    }

    /// What the batch being built holds so far.
    pub fn building(&self) -> &Output {
        &self.building
    }

    /// Adds one input to the batch being built.
    pub fn input(&mut self, input: Input, now: Millis, rng: &mut impl CryptoRng) {
        self.inputs += 1;
        if let Input::Command(ticket, command) = input {
            self.core
                .handle(ticket, *command, now, rng, &mut self.building);
        }
    }

    /// Adds one command to the batch being built.
    pub fn handle(
        &mut self,
        ticket: Ticket,
        command: Command,
        now: Millis,
        rng: &mut impl CryptoRng,
    ) {
        self.input(Input::Command(ticket, Box::new(command)), now, rng);
    }

    /// Runs the core's timers into the batch being built ([`Driver::finish`]
    /// does this too).
    pub fn poll(&mut self, now: Millis, rng: &mut impl CryptoRng) {
        self.core.poll(now, rng, &mut self.building);
    }

    /// Takes the early effects of the batch being built, to perform now.
    pub fn take_early(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.building.early)
    }

    /// Polls and closes the batch being built.
    pub fn finish(&mut self, now: Millis, rng: &mut impl CryptoRng) -> Step {
        self.poll(now, rng);
        let out = std::mem::replace(&mut self.building, Self::output(self.config));
        let durability = out.durability();
        Step {
            early: out.early,
            commit: CommitBatch {
                records: out.records,
                durability,
                effects: out.effects,
                inputs: std::mem::take(&mut self.inputs),
            },
        }
    }

    /// Handles a batch of inputs, polls, and closes the batch.
    pub fn step(
        &mut self,
        inputs: impl IntoIterator<Item = Input>,
        now: Millis,
        rng: &mut impl CryptoRng,
    ) -> Step {
        for input in inputs {
            self.input(input, now, rng);
        }
        self.finish(now, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use grompi_proto::ConversationId;

    fn batch(durability: Durability, records: usize, effects: &[u32]) -> CommitBatch<u32> {
        let id = ConversationId::from_bytes([7; 32]);
        CommitBatch {
            records: (0..records)
                .map(|i| Record::Progress {
                    conversation: id,
                    server: i as u32,
                    next: grompi_proto::Index(1),
                })
                .collect(),
            durability,
            effects: effects.to_vec(),
            inputs: 1,
        }
    }

    #[test]
    fn a_fold_keeps_order_and_syncs_when_any_batch_needs_it() {
        let deferred = fold(vec![
            batch(Durability::Deferred, 1, &[1]),
            batch(Durability::Deferred, 2, &[2, 3]),
        ]);
        assert_eq!(deferred.durability, Durability::Deferred);
        assert_eq!(deferred.records.len(), 3);
        assert_eq!(deferred.effects, vec![1, 2, 3]);
        assert_eq!(deferred.inputs, 2);
        let synced = fold(vec![
            batch(Durability::Deferred, 1, &[1]),
            batch(Durability::Now, 1, &[2]),
            batch(Durability::Deferred, 0, &[3]),
        ]);
        assert_eq!(synced.durability, Durability::Now);
        assert_eq!(synced.effects, vec![1, 2, 3]);
        let empty: CommitBatch<u32> = fold(Vec::new());
        assert!(empty.is_empty());
        assert_eq!(empty.durability, Durability::Deferred);
    }

    #[test]
    fn production_pipelines_and_separates_early_effects() {
        assert_eq!(DriverConfig::default(), DriverConfig::PRODUCTION);
        assert_eq!(DriverConfig::PRODUCTION.pipeline_depth, PIPELINE_DEPTH);
        const { assert!(DriverConfig::PRODUCTION.early_effects) };
        assert_eq!(
            DriverConfig::PRODUCTION
                .with_pipeline_depth(0)
                .pipeline_depth,
            1
        );
    }
}
