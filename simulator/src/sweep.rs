//! Sweeps: one scenario over many seeds, and the cost of the honest
//! protocol against the number of order servers and the group size.

use crate::plot::{Series, line_chart};
use crate::report::SweepReport;
use crate::scenario::{Expectation, Network, Scenario, Step};
use crate::verdict::Outcome;
use crate::world::{SimError, run};
use serde::Serialize;

/// Runs `scenario` for every seed in `seeds`; `progress(done, total)` is
/// called after each run.
pub fn sweep(
    scenario: &Scenario,
    seeds: std::ops::Range<u64>,
    mut progress: impl FnMut(u64, u64),
) -> Result<SweepReport, SimError> {
    let mut report = SweepReport::new(scenario);
    let total = seeds.end.saturating_sub(seeds.start);
    for (done, seed) in seeds.enumerate() {
        let run = run(scenario, seed)?;
        report.add(&run);
        progress(done as u64 + 1, total);
    }
    Ok(report)
}

/// The cost of the honest protocol at one network size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostPoint {
    /// N: order servers in the network; the quorum is all N.
    pub order_servers: usize,
    /// Members in the conversation; the first four each send one message.
    pub group_size: usize,
    /// Runs averaged, one per seed from 0.
    pub runs: u64,
    /// Mean submit-to-acceptance latency, virtual ms.
    pub mean_latency_ms: f64,
    /// Messages on the network per accepted envelope.
    pub messages_per_envelope: f64,
}

/// An honest scenario with `n` order servers, `members` members, and four
/// messages from the first four members.
pub fn honest_network(n: usize, members: usize) -> Scenario {
    let names: Vec<String> = (0..members).map(|i| format!("m{i:02}")).collect();
    let script = names
        .iter()
        .take(4)
        .enumerate()
        .map(|(i, from)| Step {
            from: from.clone(),
            send: Some(format!("message {i}")),
            add: None,
            remove: None,
            leave: false,
            receipt: false,
            prove_heads: false,
            misbehave: None,
            rekey: false,
            read_history: false,
            with_previous: false,
        })
        .collect();
    Scenario {
        name: format!("cost-n{n}-g{members}"),
        description: "The honest protocol, for cost measurements.".into(),
        network: Network {
            order_servers: n,
            quorum: None,
            members: names,
            admins: None,
            order_server_limits: None,
            group_period: None,
            history: Default::default(),
        },
        adversary: Default::default(),
        script,
        expect: Expectation {
            outcome: Outcome::Prevented,
            integrity: true,
            alerts: vec![],
            refusals: vec![],
            every_message_read: false,
            read_nothing_after_removal: vec![],
            read_history_before_join: vec![],
            read_nothing_before_join: vec![],
        },
    }
}

/// Measures the honest protocol for every `n` in `ns` and group size in
/// `sizes`, `seeds` runs each; `progress(done, total)` after each run.
pub fn cost(
    ns: &[usize],
    sizes: &[usize],
    seeds: u64,
    mut progress: impl FnMut(u64, u64),
) -> Result<Vec<CostPoint>, SimError> {
    let total = (ns.len() * sizes.len()) as u64 * seeds;
    let mut done = 0;
    let mut out = Vec::new();
    for &g in sizes {
        for &n in ns {
            let scenario = honest_network(n, g);
            let (mut latency, mut messages) = (0.0, 0.0);
            for seed in 0..seeds {
                let r = run(&scenario, seed)?;
                latency += r.metrics.mean_latency_ms;
                messages += r.metrics.messages_per_envelope;
                done += 1;
                progress(done, total);
            }
            let k = seeds.max(1) as f64;
            out.push(CostPoint {
                order_servers: n,
                group_size: g,
                runs: seeds,
                mean_latency_ms: (latency / k * 100.0).round() / 100.0,
                messages_per_envelope: (messages / k * 100.0).round() / 100.0,
            });
        }
    }
    Ok(out)
}

/// The two cost charts: latency and messages per envelope against N, one
/// line per group size.
pub fn cost_charts(points: &[CostPoint]) -> (String, String) {
    let mut sizes: Vec<usize> = points.iter().map(|p| p.group_size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let series = |f: fn(&CostPoint) -> f64| -> Vec<Series> {
        sizes
            .iter()
            .map(|g| Series {
                name: format!("group of {g}"),
                points: points
                    .iter()
                    .filter(|p| p.group_size == *g)
                    .map(|p| (p.order_servers as f64, f(p)))
                    .collect(),
            })
            .collect()
    };
    (
        line_chart(
            "Latency: submit to acceptance",
            "order servers (N)",
            "virtual ms",
            &series(|p| p.mean_latency_ms),
        ),
        line_chart(
            "Messages per accepted envelope",
            "order servers (N)",
            "messages",
            &series(|p| p.messages_per_envelope),
        ),
    )
}

/// A Markdown table of cost points.
pub fn cost_table(points: &[CostPoint]) -> String {
    let mut out = String::from(
        "| N | group size | runs | mean latency (virtual ms) | messages per envelope |\n|---|---|---|---|---|\n",
    );
    for p in points {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            p.order_servers, p.group_size, p.runs, p.mean_latency_ms, p.messages_per_envelope
        ));
    }
    out
}
