//! The router in the simulated network: the real [`RouterCore`] run by the
//! same [`Driver`] as the production runtime, in its production
//! configuration ([`DriverConfig::PRODUCTION`]: early effects, jobs
//! pipelined to each order server), with an in-memory store and group
//! commit in virtual time.
//!
//! Each event the router receives is one batch of the driver. Its early
//! effects leave at once; its commit batch goes to the committer, which
//! runs one commit at a time: a commit started now ends after a latency the
//! world draws (longer for a synced commit than for a deferred one), and
//! every batch made meanwhile waits and is folded ([`fold`]) into the next
//! commit, exactly as the production committer folds what queued behind
//! its running commit. A batch's effects leave only when its commit ends.
//! A crash loses the running commit, the batches queued behind it and the
//! deferred commits since the last synced one ([`MemStore::lose_deferred`]).
//!
//! A forking router runs one core per history ("branch"): at the fork every
//! branch is restored from the same committed state, members of each group
//! talk only to their branch, and each branch sends its jobs only to the
//! order servers that serve it (every colluding server, and its share of
//! the honest ones). An honest router is the one-branch case.

use grompi_router::core::{Command, CoreConfig, Effect, RouterCore};
use grompi_router::driver::{CommitBatch, Driver, DriverConfig, Input, fold};
use grompi_router::error::RouterError;
use grompi_router::store::{Durability, MemStore, Store};
use grompi_router::{Millis, Ticket};
use rand::rngs::ChaCha20Rng;

/// The configuration the simulated router runs: production's.
pub const DRIVER: DriverConfig = DriverConfig::PRODUCTION;

/// One history the router keeps.
pub struct Branch {
    driver: Driver,
    /// Its committed state (branches after the first keep none: a forking
    /// router is not also crashed in any scenario).
    store: Option<MemStore>,
    /// Which order servers this branch sends jobs to.
    pub serves: Vec<bool>,
    /// The commit in progress.
    committing: Option<CommitBatch>,
    /// Batches made while it runs, in order: the next commit folds them.
    queued: Vec<CommitBatch>,
}

impl Branch {
    fn new(core: RouterCore, store: Option<MemStore>, serves: Vec<bool>) -> Self {
        Self {
            driver: Driver::new(core, DRIVER),
            store,
            serves,
            committing: None,
            queued: Vec::new(),
        }
    }

    /// Commits `batch` to the store; returns the effects it held back, or
    /// none if the store failed (a store that cannot commit must not let
    /// effects out).
    fn apply(&mut self, batch: CommitBatch) -> Vec<Effect> {
        let failed = self
            .store
            .as_mut()
            .is_some_and(|store| batch.commit_to(store).is_err());
        if failed { Vec::new() } else { batch.effects }
    }

    /// Hands a closed batch to the committer: starts its commit if none is
    /// running, else queues it behind the running one.
    fn enqueue(&mut self, batch: CommitBatch) -> Option<Durability> {
        if batch.is_empty() {
            // Nothing to commit or perform: no order to keep either.
            return None;
        }
        if self.committing.is_some() {
            self.queued.push(batch);
            return None;
        }
        let durability = batch.durability;
        self.committing = Some(batch);
        Some(durability)
    }

    /// Ends the running commit: returns its effects, and starts the next
    /// commit (every queued batch, folded) if any.
    fn end_commit(&mut self) -> (Vec<Effect>, Option<Durability>) {
        let Some(batch) = self.committing.take() else {
            return (Vec::new(), None);
        };
        let effects = self.apply(batch);
        let next = if self.queued.is_empty() {
            None
        } else {
            let next = fold(std::mem::take(&mut self.queued));
            let durability = next.durability;
            self.committing = Some(next);
            Some(durability)
        };
        (effects, next)
    }

    /// Ends the running commit and commits everything queued at once;
    /// returns every effect they held back, in order.
    fn commit_all(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some(batch) = self.committing.take() {
            effects.extend(self.apply(batch));
        }
        if !self.queued.is_empty() {
            let rest = fold(std::mem::take(&mut self.queued));
            effects.extend(self.apply(rest));
        }
        effects
    }
}

/// What the production configuration did in a run: evidence that the
/// simulator covers it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DriverStats {
    /// Commits started.
    pub commits: u64,
    /// Batches that waited behind a running commit.
    pub queued: u64,
    /// Commits that folded two batches or more.
    pub folded: u64,
    /// Effects that left before their batch's commit.
    pub early: u64,
}

/// What the world does after the router handled an event.
#[derive(Debug, Default)]
pub struct RouterOut {
    /// Effects to perform now, in order.
    pub effects: Vec<Effect>,
    /// A commit started with this durability: the world calls
    /// [`RouterNode::committed`] when it ends.
    pub commit: Option<Durability>,
}

/// The router.
pub struct RouterNode {
    config: CoreConfig,
    /// Its histories; one unless it forked.
    pub branches: Vec<Branch>,
    next_ticket: u64,
    /// Whether the process is down.
    pub down: bool,
    /// Which process and set of histories this is: bumped by every crash
    /// and fork. A commit's end, or an order server's answer, meant for an
    /// earlier incarnation is not for this one (its streams are new).
    pub incarnation: u64,
    /// What the driver's configuration did so far.
    pub stats: DriverStats,
}

/// Why the router could not be built or restored.
#[derive(Debug, thiserror::Error)]
pub enum RouterNodeError {
    /// The core refused its snapshot.
    #[error("router core: {0}")]
    Core(#[from] RouterError),
    /// The store failed.
    #[error("router store: {0}")]
    Store(String),
}

fn load(store: &MemStore) -> Result<grompi_router::store::Snapshot, RouterNodeError> {
    store
        .load()
        .map_err(|e| RouterNodeError::Store(e.to_string()))
}

impl RouterNode {
    /// A fresh router.
    pub fn new(config: CoreConfig) -> Result<Self, RouterNodeError> {
        let store = MemStore::new();
        let core = RouterCore::restore(config.clone(), load(&store)?)?;
        let n = config.servers.len();
        Ok(Self {
            config,
            branches: vec![Branch::new(core, Some(store), vec![true; n])],
            next_ticket: 1,
            down: false,
            incarnation: 0,
            stats: DriverStats::default(),
        })
    }

    /// A fresh ticket.
    pub fn ticket(&mut self) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        t
    }

    /// Runs one batch of `branch`: the early effects leave now, the commit
    /// batch goes to the committer.
    fn step(
        &mut self,
        branch: usize,
        input: Input,
        now: Millis,
        rng: &mut ChaCha20Rng,
    ) -> RouterOut {
        let Some(b) = self.branches.get_mut(branch) else {
            return RouterOut::default();
        };
        let step = b.driver.step([input], now, rng);
        let queued = b.queued.len();
        let commit = b.enqueue(step.commit);
        self.stats.early += step.early.len() as u64;
        self.stats.commits += u64::from(commit.is_some());
        self.stats.queued += u64::from(b.queued.len() > queued);
        RouterOut {
            effects: step.early,
            commit,
        }
    }

    /// Handles one command on `branch` (one batch).
    pub fn handle(
        &mut self,
        branch: usize,
        ticket: Ticket,
        command: Command,
        now: Millis,
        rng: &mut ChaCha20Rng,
    ) -> RouterOut {
        self.step(branch, Input::Command(ticket, Box::new(command)), now, rng)
    }

    /// A tick on `branch` (timers: retries after backoff).
    pub fn poll(&mut self, branch: usize, now: Millis, rng: &mut ChaCha20Rng) -> RouterOut {
        self.step(branch, Input::Tick, now, rng)
    }

    /// The commit `branch` started in `incarnation` ended: its effects
    /// leave, and the next commit starts if batches queued meanwhile.
    pub fn committed(&mut self, branch: usize, incarnation: u64) -> RouterOut {
        if incarnation != self.incarnation || self.down {
            return RouterOut::default();
        }
        let Some(b) = self.branches.get_mut(branch) else {
            return RouterOut::default();
        };
        let waiting = b.queued.len();
        let (effects, commit) = b.end_commit();
        self.stats.commits += u64::from(commit.is_some());
        self.stats.folded += u64::from(waiting >= 2);
        RouterOut { effects, commit }
    }

    /// Handles one command on `branch` and commits at once, with anything
    /// still waiting: for setting up the network before the run, when no
    /// virtual time passes. Returns every effect, in order.
    pub fn handle_now(
        &mut self,
        branch: usize,
        ticket: Ticket,
        command: Command,
        now: Millis,
        rng: &mut ChaCha20Rng,
    ) -> Vec<Effect> {
        let mut effects = self.handle(branch, ticket, command, now, rng).effects;
        effects.extend(self.commit_now(branch));
        effects
    }

    /// Crashes: the process stops; everything committed durably survives;
    /// the running commit, the batches queued behind it and the deferred
    /// commits since the last durable one are lost.
    pub fn crash(&mut self) {
        self.down = true;
        self.incarnation += 1;
        for b in &mut self.branches {
            b.committing = None;
            b.queued.clear();
            if let Some(store) = &b.store {
                // An in-memory store's lock is only poisoned by a panic,
                // which has already failed the run.
                let _ = store.lose_deferred();
            }
        }
    }

    /// Restarts every branch that has a store from its committed state.
    pub fn restart(&mut self) -> Result<(), RouterNodeError> {
        for b in &mut self.branches {
            if let Some(store) = &b.store {
                let core = RouterCore::restore(self.config.clone(), load(store)?)?;
                b.driver = Driver::new(core, DRIVER);
            }
        }
        self.down = false;
        Ok(())
    }

    /// The committed store of `branch`, which a history page is read from
    /// (branches after the first keep none).
    pub fn store(&self, branch: usize) -> Option<&MemStore> {
        self.branches.get(branch).and_then(|b| b.store.as_ref())
    }

    /// Ends `branch`'s running commit and commits everything queued behind
    /// it at once; returns the effects they held back, in order.
    pub fn commit_now(&mut self, branch: usize) -> Vec<Effect> {
        self.branches
            .get_mut(branch)
            .map(Branch::commit_all)
            .unwrap_or_default()
    }

    /// Splits into `serves.len()` histories from the committed state; branch
    /// `b` sends jobs to server `s` only when `serves[b][s]`. What is not
    /// committed is lost, as in a crash: the world commits first
    /// ([`RouterNode::commit_now`]) and performs what that lets out.
    pub fn fork(&mut self, serves: Vec<Vec<bool>>) -> Result<(), RouterNodeError> {
        let Some(store) = self.branches.first().and_then(|b| b.store.clone()) else {
            return Ok(());
        };
        let mut branches = Vec::with_capacity(serves.len());
        for (i, s) in serves.into_iter().enumerate() {
            let core = RouterCore::restore(self.config.clone(), load(&store)?)?;
            branches.push(Branch::new(core, (i == 0).then(|| store.clone()), s));
        }
        self.branches = branches;
        self.incarnation += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_router::core::Response;
    use grompi_router::limits::Limits;
    use rand::SeedableRng;

    fn node() -> RouterNode {
        RouterNode::new(CoreConfig {
            servers: Vec::new(),
            quorum: 0,
            limits: Limits {
                requests_per_second: 1_000_000,
                request_burst: 1_000_000,
                ..Limits::default()
            },
            padding_tiers: vec![4],
            noise_interval_ms: None,
            max_batch: 16,
            backoff_base_ms: 50,
            backoff_max_ms: 1_000,
        })
        .unwrap()
    }

    fn challenge(node: &mut RouterNode, rng: &mut ChaCha20Rng) -> (Ticket, RouterOut) {
        let t = node.ticket();
        (t, node.handle(0, t, Command::GetChallenge, 1, rng))
    }

    fn replies(effects: &[Effect]) -> Vec<Ticket> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply(t, Ok(Response::Challenge(_))) => Some(*t),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn batches_made_during_a_commit_are_folded_into_the_next_one() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut n = node();
        let (t1, out) = challenge(&mut n, &mut rng);
        assert!(out.effects.is_empty(), "a reply waits for its commit");
        assert!(out.commit.is_some(), "the first batch starts a commit");
        let (t2, out) = challenge(&mut n, &mut rng);
        assert!(out.effects.is_empty() && out.commit.is_none(), "queued");
        let (t3, out) = challenge(&mut n, &mut rng);
        assert!(out.effects.is_empty() && out.commit.is_none(), "queued");
        let i = n.incarnation;
        let out = n.committed(0, i);
        assert_eq!(replies(&out.effects), vec![t1]);
        assert!(
            out.commit.is_some(),
            "the queued batches start the next commit"
        );
        let out = n.committed(0, i);
        assert_eq!(replies(&out.effects), vec![t2, t3], "one commit, in order");
        assert!(out.commit.is_none());
        assert_eq!(
            n.stats,
            DriverStats {
                commits: 2,
                queued: 2,
                folded: 1,
                early: 0
            }
        );
        assert!(n.committed(0, i).effects.is_empty(), "nothing running");
    }

    #[test]
    fn a_crash_loses_the_running_commit_and_what_queued_behind_it() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut n = node();
        let before = n.incarnation;
        let _ = challenge(&mut n, &mut rng);
        let _ = challenge(&mut n, &mut rng);
        n.crash();
        n.restart().unwrap();
        assert!(n.committed(0, before).effects.is_empty(), "stale");
        assert!(n.committed(0, n.incarnation).effects.is_empty(), "lost");
        let (t, out) = challenge(&mut n, &mut rng);
        assert!(out.commit.is_some(), "a fresh committer");
        assert_eq!(replies(&n.committed(0, n.incarnation).effects), vec![t]);
    }

    #[test]
    fn setup_calls_commit_at_once() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut n = node();
        let (t1, _) = challenge(&mut n, &mut rng);
        let t2 = n.ticket();
        let effects = n.handle_now(0, t2, Command::GetChallenge, 1, &mut rng);
        assert_eq!(replies(&effects), vec![t1, t2]);
    }
}
