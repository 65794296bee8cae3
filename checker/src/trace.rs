//! A counterexample: the actions from the initial state, replayable step
//! by step.

use crate::model::{Action, Bounds, Model, ModelError};
use crate::props::{self, Violation};
use std::fmt;

/// A path from the initial state of `bounds` built from `seed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The bounds (and switches) of the model.
    pub bounds: Bounds,
    /// The seed the model's keys come from.
    pub seed: u64,
    /// The actions, in order.
    pub actions: Vec<Action>,
    /// Each action in words (filled by [`Trace::described`]).
    pub described: Vec<String>,
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// The first violation and the number of actions applied to reach it.
    pub violation: Option<(usize, Violation)>,
    /// Actions that changed nothing (a refusal): a trace from the
    /// explorer has none.
    pub no_ops: usize,
}

impl Trace {
    /// Fills in the words for each action by replaying it.
    pub fn described(mut self) -> Self {
        let Ok((model, mut s)) = Model::new(self.bounds.clone(), self.seed) else {
            return self;
        };
        self.described.clear();
        for a in &self.actions {
            self.described.push(model.describe(&s, a));
            match model.step(&s, a) {
                Ok(Some(t)) => s = t,
                _ => break,
            }
        }
        self
    }

    /// Replays the trace from a fresh model, checking the properties after
    /// every step; stops at the first violation.
    pub fn replay(&self) -> Result<Replay, ModelError> {
        let (model, mut s) = Model::new(self.bounds.clone(), self.seed)?;
        let mut no_ops = 0;
        if let Some(v) = props::check(&model, &s) {
            return Ok(Replay {
                violation: Some((0, v)),
                no_ops,
            });
        }
        for (i, a) in self.actions.iter().enumerate() {
            match model.step(&s, a)? {
                Some(t) => s = t,
                None => no_ops += 1,
            }
            if let Some(v) = props::check(&model, &s) {
                return Ok(Replay {
                    violation: Some((i + 1, v)),
                    no_ops,
                });
            }
        }
        Ok(Replay {
            violation: None,
            no_ops,
        })
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.actions.iter().enumerate() {
            match self.described.get(i) {
                Some(d) => writeln!(f, "  {:>2}. {d}", i + 1)?,
                None => writeln!(f, "  {:>2}. {a:?}", i + 1)?,
            }
        }
        Ok(())
    }
}
