//! The router in the simulated network: the real [`RouterCore`] with an
//! in-memory store, run by a shell that commits every output before
//! performing its effects, as the real runtime does.
//!
//! A forking router runs one core per history ("branch"): at the fork every
//! branch is restored from the same committed state, members of each group
//! talk only to their branch, and each branch sends its jobs only to the
//! order servers that serve it (every colluding server, and its share of
//! the honest ones). An honest router is the one-branch case.

use grompi_router::core::{Command, CoreConfig, Output, RouterCore};
use grompi_router::error::RouterError;
use grompi_router::store::{MemStore, Store};
use grompi_router::{Millis, Ticket};
use rand::rngs::ChaCha20Rng;

/// One history the router keeps.
pub struct Branch {
    /// The core.
    pub core: RouterCore,
    /// Its committed state (branches after the first keep none: a forking
    /// router is not also crashed in any scenario).
    store: Option<MemStore>,
    /// Which order servers this branch sends jobs to.
    pub serves: Vec<bool>,
}

/// The router.
pub struct RouterNode {
    config: CoreConfig,
    /// Its histories; one unless it forked.
    pub branches: Vec<Branch>,
    next_ticket: u64,
    /// Whether the process is down.
    pub down: bool,
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

impl RouterNode {
    /// A fresh router.
    pub fn new(config: CoreConfig) -> Result<Self, RouterNodeError> {
        let store = MemStore::new();
        let snapshot = store
            .load()
            .map_err(|e| RouterNodeError::Store(e.to_string()))?;
        let core = RouterCore::restore(config.clone(), snapshot)?;
        let n = config.servers.len();
        Ok(Self {
            config,
            branches: vec![Branch {
                core,
                store: Some(store),
                serves: vec![true; n],
            }],
            next_ticket: 1,
            down: false,
        })
    }

    /// A fresh ticket.
    pub fn ticket(&mut self) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        t
    }

    /// Handles one command on `branch`, polls, commits, and returns the
    /// effects to perform.
    pub fn handle(
        &mut self,
        branch: usize,
        ticket: Ticket,
        command: Command,
        now: Millis,
        rng: &mut ChaCha20Rng,
    ) -> Output {
        let mut out = Output::default();
        let Some(b) = self.branches.get_mut(branch) else {
            return out;
        };
        b.core.handle(ticket, command, now, rng, &mut out);
        b.core.poll(now, rng, &mut out);
        Self::commit(b, &mut out);
        out
    }

    /// Polls `branch` (timers: retries after backoff).
    pub fn poll(&mut self, branch: usize, now: Millis, rng: &mut ChaCha20Rng) -> Output {
        let mut out = Output::default();
        if let Some(b) = self.branches.get_mut(branch) {
            b.core.poll(now, rng, &mut out);
            Self::commit(b, &mut out);
        }
        out
    }

    fn commit(b: &mut Branch, out: &mut Output) {
        if let Some(store) = b.store.as_mut()
            && store.commit(&out.records, out.durability()).is_err()
        {
            // A store that cannot commit must not let effects out.
            out.effects.clear();
        }
        out.records.clear();
    }

    /// Crashes: the process stops; everything committed durably survives,
    /// deferred commits since the last durable one are lost.
    pub fn crash(&mut self) {
        self.down = true;
        for b in &self.branches {
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
                let snapshot = store
                    .load()
                    .map_err(|e| RouterNodeError::Store(e.to_string()))?;
                b.core = RouterCore::restore(self.config.clone(), snapshot)?;
            }
        }
        self.down = false;
        Ok(())
    }

    /// Splits into `serves.len()` histories from the committed state; branch
    /// `b` sends jobs to server `s` only when `serves[b][s]`.
    pub fn fork(&mut self, serves: Vec<Vec<bool>>) -> Result<(), RouterNodeError> {
        let Some(first) = self.branches.first() else {
            return Ok(());
        };
        let Some(store) = first.store.clone() else {
            return Ok(());
        };
        let mut branches = Vec::with_capacity(serves.len());
        for (i, s) in serves.into_iter().enumerate() {
            let snapshot = store
                .load()
                .map_err(|e| RouterNodeError::Store(e.to_string()))?;
            branches.push(Branch {
                core: RouterCore::restore(self.config.clone(), snapshot)?,
                store: (i == 0).then(|| store.clone()),
                serves: s,
            });
        }
        self.branches = branches;
        Ok(())
    }
}
