//! The demo: the protest conversation played honestly, then with a forking
//! router colluding with two of the three order servers, side by side.

use crate::report::{RunReport, side_by_side};
use crate::scenario::Scenario;
use crate::world::{SimError, run};
use std::fmt::Write as _;

/// The honest protest conversation.
pub const HONEST: &str = include_str!("../scenarios/protest-honest.toml");
/// The same conversation with the router forking the group.
pub const FORKED: &str = include_str!("../scenarios/protest-fork.toml");

/// Runs both halves of the demo with `seed`.
pub fn run_demo(seed: u64) -> Result<(RunReport, RunReport), SimError> {
    let honest = Scenario::parse("protest-honest.toml", HONEST)
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let forked =
        Scenario::parse("protest-fork.toml", FORKED).map_err(|e| SimError::Setup(e.to_string()))?;
    Ok((run(&honest, seed)?, run(&forked, seed)?))
}

fn section(out: &mut String, title: &str, r: &RunReport) {
    let _ = writeln!(out, "== {title} ==");
    let _ = writeln!(out, "adversary: {}", r.adversary);
    out.push_str(&side_by_side(&r.views));
    for m in r.never_accepted() {
        let _ = writeln!(out, "- sent, but accepted by no member: {m}");
    }
    let _ = writeln!(
        out,
        "verdict: {} (integrity {}, honest views agree: {})",
        r.observed,
        if r.verdicts.integrity.ok() {
            "holds"
        } else {
            "BROKEN"
        },
        if r.verdicts.honest_views_agree {
            "yes"
        } else {
            "no"
        }
    );
    let _ = writeln!(out, "{}\n", r.finding);
}

/// The demo's text.
pub fn render(seed: u64, honest: &RunReport, forked: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "grompi demo (seed {seed}): in-process network: router, 3 order servers, 4 clients, real protocol cores, virtual time.\n"
    );
    section(
        &mut out,
        "1. The protest conversation, everyone honest",
        honest,
    );
    section(
        &mut out,
        "2. The same, with the router forking the group (Alice and Bob / Charlie and Dave), colluding with order servers 0 and 1",
        forked,
    );
    let _ = writeln!(
        out,
        "Each cell is sender: text [history]; the letter names the chain of heads the member accepted at that index."
    );
    out
}
