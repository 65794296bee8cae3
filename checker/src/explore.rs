//! Breadth-first exploration with state deduplication: every state
//! reachable within the depth bound is visited once (by its
//! fingerprint), and the first violation found is on a shortest path.

use crate::model::{Action, Bounds, Model, ModelError, State};
use crate::props::{self, Violation};
use crate::trace::Trace;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// What an exploration did and found.
#[derive(Debug)]
pub struct Report {
    /// The bounds explored.
    pub bounds: Bounds,
    /// Distinct states visited (the initial one included).
    pub states: usize,
    /// Actions applied (including those that led to a known state).
    pub transitions: usize,
    /// The deepest level reached.
    pub depth: usize,
    /// Whether every state within the depth bound was visited (false when
    /// the state budget ran out or a violation stopped the search).
    pub complete: bool,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// The first violation found, with a shortest trace to it.
    pub violation: Option<(Violation, Trace)>,
    /// How many visited states show each event (see [`coverage`]): what
    /// the search reached, so that "nothing found" is not vacuous.
    pub coverage: BTreeMap<&'static str, usize>,
}

/// The events a state shows, for [`Report::coverage`].
pub fn coverage(s: &State) -> Vec<&'static str> {
    let mut out = Vec::new();
    let phase = |m: &crate::model::MemberState| m.conv.phase().clone();
    if s.members
        .iter()
        .any(|m| m.conv.transcript().entries().len() >= 3)
    {
        out.push("a member accepted two indices after the Setup");
    }
    if s.members
        .iter()
        .any(|m| m.conv.transcript().first().0 > 0 && phase(m) == crate::cores::Phase::Active)
    {
        out.push("the joiner joined");
    }
    if s.members
        .iter()
        .any(|m| phase(m) == crate::cores::Phase::Removed)
    {
        out.push("a member was removed");
    }
    if s.members.iter().any(|m| m.rosters.len() >= 2) {
        out.push("a member adopted a second roster");
    }
    if s.members.iter().any(|m| m.rosters.len() >= 3) {
        out.push("a member adopted a third roster");
    }
    if s.members.iter().any(|m| !m.alerts.is_empty()) {
        out.push("a member raised an alert");
    }
    if s.members.iter().any(|m| {
        m.alerts
            .iter()
            .any(|a| a.contains("withheld") || a.contains("Withheld"))
    }) {
        out.push("a member reported withholding");
    }
    if s.members
        .iter()
        .any(|m| matches!(phase(m), crate::cores::Phase::Halted(_)))
    {
        out.push("a member halted");
    }
    if s.members.iter().any(|m| m.from_router > 0) {
        out.push("a member accepted what the router core delivered");
    }
    if s.members.iter().all(|m| m.from_router > 0) {
        out.push("every member accepted what the router core delivered");
    }
    if s.members.iter().any(|m| m.from_router >= 2) {
        out.push("a member accepted two deliveries of the router core");
    }
    out
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} states, {} transitions, depth {}, {:.1?}{}",
            self.states,
            self.transitions,
            self.depth,
            self.elapsed,
            if self.complete {
                ", exhaustive within the bounds"
            } else {
                ""
            }
        )?;
        for (event, n) in &self.coverage {
            writeln!(f, "  {n:>8} states where {event}")?;
        }
        match &self.violation {
            None => writeln!(f, "no property violated"),
            Some((v, t)) => writeln!(f, "VIOLATED {v}\nshortest trace:\n{t}"),
        }
    }
}

struct Node {
    parent: usize,
    action: Option<Action>,
}

/// Explores every state reachable from the initial one within
/// `bounds.depth` actions (at most `max_states` states), checking the
/// properties in each.
pub fn explore(bounds: &Bounds, seed: u64, max_states: usize) -> Result<Report, ModelError> {
    explore_with(bounds, seed, max_states, |_| {})
}

/// Progress after each level of the search.
#[derive(Clone, Copy, Debug)]
pub struct Level {
    /// The level (number of actions from the initial state) just finished.
    pub depth: usize,
    /// New states found at this level.
    pub new_states: usize,
    /// States visited so far.
    pub states: usize,
    /// Time so far.
    pub elapsed: Duration,
}

/// Like [`explore`], calling `progress` after each level.
pub fn explore_with(
    bounds: &Bounds,
    seed: u64,
    max_states: usize,
    mut progress: impl FnMut(Level),
) -> Result<Report, ModelError> {
    let start = Instant::now();
    let (model, init) = Model::new(bounds.clone(), seed)?;
    let mut nodes = vec![Node {
        parent: 0,
        action: None,
    }];
    let mut seen = HashSet::new();
    seen.insert(init.fingerprint());
    let mut transitions = 0;
    let mut coverage: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut depth = 0;
    let mut complete = true;
    let done = |nodes: &[Node], at: usize, v: Violation, transitions, depth, complete| {
        let trace = trace_to(nodes, at, bounds, seed);
        Report {
            bounds: bounds.clone(),
            states: nodes.len(),
            transitions,
            depth,
            complete,
            elapsed: start.elapsed(),
            violation: Some((v, trace)),
            coverage: BTreeMap::new(),
        }
    };
    if let Some(v) = props::check(&model, &init) {
        return Ok(done(&nodes, 0, v, 0, 0, false));
    }
    let mut frontier: Vec<(usize, State)> = vec![(0, init)];
    while !frontier.is_empty() && depth < bounds.depth {
        depth += 1;
        let mut next = Vec::new();
        let before = nodes.len();
        for (id, s) in frontier {
            for a in model.actions(&s) {
                transitions += 1;
                let Some(t) = model.step(&s, &a)? else {
                    continue;
                };
                if !seen.insert(t.fingerprint()) {
                    continue;
                }
                nodes.push(Node {
                    parent: id,
                    action: Some(a),
                });
                let tid = nodes.len() - 1;
                for event in self::coverage(&t) {
                    *coverage.entry(event).or_default() += 1;
                }
                if let Some(v) = props::check(&model, &t) {
                    return Ok(done(&nodes, tid, v, transitions, depth, false));
                }
                if nodes.len() >= max_states {
                    complete = false;
                    break;
                }
                // States at the last level are checked, never expanded.
                if depth < bounds.depth {
                    next.push((tid, t));
                }
            }
            if !complete {
                break;
            }
        }
        if !complete {
            break;
        }
        progress(Level {
            depth,
            new_states: nodes.len() - before,
            states: nodes.len(),
            elapsed: start.elapsed(),
        });
        frontier = next;
    }
    Ok(Report {
        bounds: bounds.clone(),
        states: nodes.len(),
        transitions,
        depth,
        complete,
        elapsed: start.elapsed(),
        violation: None,
        coverage,
    })
}

fn trace_to(nodes: &[Node], mut at: usize, bounds: &Bounds, seed: u64) -> Trace {
    let mut actions = Vec::new();
    while at != 0 {
        if let Some(a) = nodes[at].action {
            actions.push(a);
        }
        at = nodes[at].parent;
    }
    actions.reverse();
    Trace {
        bounds: bounds.clone(),
        seed,
        actions,
        described: Vec::new(),
    }
    .described()
}
