//! Reports of runs and sweeps, in JSON (for tools) and Markdown (for people).

use crate::scenario::Scenario;
use crate::verdict::{Check, Outcome, Verdicts};
use crate::view::MemberView;
use serde::Serialize;
use std::fmt::Write as _;

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The scenario's name.
    pub scenario: String,
    /// What the scenario shows.
    pub description: String,
    /// The adversary, in one line.
    pub adversary: String,
    /// The seed that replays this run.
    pub seed: u64,
    /// N and t.
    pub order_servers: usize,
    /// The quorum.
    pub quorum: usize,
    /// What the scenario expected.
    pub expected: Outcome,
    /// What happened.
    pub observed: Outcome,
    /// Whether the expectation (outcome, integrity and alerts) was met.
    pub as_expected: bool,
    /// Why not, when it was not.
    pub mismatches: Vec<String>,
    /// Every verdict.
    pub verdicts: Verdicts,
    /// What each member saw.
    pub views: Vec<MemberView>,
}

impl RunReport {
    /// Builds a report and compares the verdicts with the expectation.
    pub fn new(scenario: &Scenario, seed: u64, verdicts: Verdicts, views: Vec<MemberView>) -> Self {
        let mut mismatches = Vec::new();
        if verdicts.outcome != scenario.expect.outcome {
            mismatches.push(format!(
                "expected outcome {}, observed {}",
                scenario.expect.outcome, verdicts.outcome
            ));
        }
        if verdicts.integrity.ok() != scenario.expect.integrity {
            mismatches.push(format!(
                "expected integrity to {}, it {}",
                if scenario.expect.integrity {
                    "hold"
                } else {
                    "break"
                },
                if verdicts.integrity.ok() {
                    "held"
                } else {
                    "broke"
                }
            ));
        }
        for alert in &scenario.expect.alerts {
            if !views.iter().any(|v| v.honest && v.raised(alert)) {
                mismatches.push(format!("no honest member raised {alert}"));
            }
        }
        Self {
            scenario: scenario.name.clone(),
            description: scenario.description.clone(),
            adversary: scenario.adversary.describe(),
            seed,
            order_servers: scenario.network.order_servers,
            quorum: scenario.network.quorum(),
            expected: scenario.expect.outcome,
            observed: verdicts.outcome,
            as_expected: mismatches.is_empty(),
            mismatches,
            verdicts,
            views,
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as Markdown, with the members' views side by side.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Scenario `{}` (seed {})\n", self.scenario, self.seed);
        let _ = writeln!(out, "{}\n", self.description);
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| adversary | {} |", self.adversary);
        let _ = writeln!(
            out,
            "| order servers | {} (quorum {}) |",
            self.order_servers, self.quorum
        );
        let _ = writeln!(out, "| expected | {} |", self.expected);
        let _ = writeln!(out, "| observed | {} |", self.observed);
        let _ = writeln!(
            out,
            "| honest views agree | {} |",
            if self.verdicts.honest_views_agree {
                "yes"
            } else {
                "no"
            }
        );
        let _ = writeln!(
            out,
            "| as expected | {} |\n",
            if self.as_expected {
                "yes".to_owned()
            } else {
                format!("NO: {}", self.mismatches.join("; "))
            }
        );
        let _ = writeln!(out, "## Properties\n\n| property | verdict |\n|---|---|");
        for (name, check) in [
            ("integrity", &self.verdicts.integrity),
            (
                "participant consistency",
                &self.verdicts.participant_consistency,
            ),
            ("content consistency", &self.verdicts.content_consistency),
            ("no injection", &self.verdicts.no_injection),
            ("withholding detected", &self.verdicts.withholding_detected),
        ] {
            let _ = writeln!(out, "| {name} | {} |", describe(check));
        }
        let _ = writeln!(out, "\n## What each member saw\n");
        out.push_str(&side_by_side(&self.views));
        out
    }
}

fn describe(check: &Check) -> String {
    match check {
        Check::Holds => "holds".into(),
        Check::NotApplicable => "not applicable".into(),
        Check::Violated(why) => format!("VIOLATED: {why}"),
    }
}

/// A table with one column per member and one row per index, then each
/// member's alerts.
pub fn side_by_side(views: &[MemberView]) -> String {
    let mut out = String::new();
    let header: Vec<String> = views
        .iter()
        .map(|v| {
            if v.honest {
                v.name.clone()
            } else {
                format!("{} (compromised)", v.name)
            }
        })
        .collect();
    let _ = writeln!(out, "| # | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(views.len()));
    let rows = views.iter().map(|v| v.accepted.len()).max().unwrap_or(0);
    for row in 0..rows {
        let cells: Vec<String> = views
            .iter()
            .map(|v| match v.accepted.get(row) {
                None => "".into(),
                Some(e) => {
                    let what = match (&e.sender, &e.plaintext) {
                        (Some(s), Some(p)) => format!("{s}: {p}"),
                        (None, Some(p)) => format!("?: {p}"),
                        _ => format!("({})", e.kind),
                    };
                    format!("{what} `{}`", e.head.get(..8).unwrap_or(&e.head))
                }
            })
            .collect();
        let _ = writeln!(out, "| {row} | {} |", cells.join(" | ").replace('\n', " "));
    }
    let _ = writeln!(out);
    for v in views {
        if v.alerts.is_empty() {
            let _ = writeln!(out, "- {}: no alerts", v.name);
        } else {
            let kinds: Vec<String> = v
                .alerts
                .iter()
                .map(|a| match a.index {
                    Some(i) => format!("{} at #{i}", a.kind),
                    None => a.kind.clone(),
                })
                .collect();
            let _ = writeln!(out, "- {}: ALERTS {}", v.name, kinds.join(", "));
        }
    }
    out
}

/// A sweep: many seeds of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The scenario.
    pub scenario: String,
    /// The adversary.
    pub adversary: String,
    /// Seeds run.
    pub runs: u64,
    /// Runs per observed outcome.
    pub prevented: u64,
    /// Runs detected.
    pub detected: u64,
    /// Runs undetected.
    pub undetected: u64,
    /// Runs where integrity broke among honest members.
    pub integrity_violations: u64,
    /// Runs that did not match the expectation, by seed (at most 20 listed).
    pub unexpected_seeds: Vec<u64>,
}

impl SweepReport {
    /// An empty sweep of `scenario`.
    pub fn new(scenario: &Scenario) -> Self {
        Self {
            scenario: scenario.name.clone(),
            adversary: scenario.adversary.describe(),
            runs: 0,
            prevented: 0,
            detected: 0,
            undetected: 0,
            integrity_violations: 0,
            unexpected_seeds: Vec::new(),
        }
    }

    /// Adds one run.
    pub fn add(&mut self, run: &RunReport) {
        self.runs += 1;
        match run.observed {
            Outcome::Prevented => self.prevented += 1,
            Outcome::Detected => self.detected += 1,
            Outcome::Undetected => self.undetected += 1,
        }
        if !run.verdicts.integrity.ok() {
            self.integrity_violations += 1;
        }
        if !run.as_expected && self.unexpected_seeds.len() < 20 {
            self.unexpected_seeds.push(run.seed);
        }
    }

    /// One Markdown table row.
    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.adversary,
            self.runs,
            self.prevented,
            self.detected,
            self.undetected,
            self.integrity_violations,
            if self.unexpected_seeds.is_empty() {
                "none".to_owned()
            } else {
                format!("{:?}", self.unexpected_seeds)
            }
        )
    }

    /// The Markdown table header matching [`SweepReport::markdown_row`].
    pub const MARKDOWN_HEADER: &'static str = "| scenario | adversary | runs | prevented | detected | undetected | integrity violations | unexpected seeds |\n|---|---|---|---|---|---|---|---|";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::judge;
    use crate::view::{AcceptedEntry, SentRecord};

    #[test]
    fn reports_compare_with_the_expectation() {
        let scenario = Scenario::parse(
            "s.toml",
            r#"
name = "s"
description = "d"
[network]
order_servers = 3
members = ["a", "b"]
[expect]
outcome = "prevented"
integrity = true
alerts = ["gap"]
"#,
        )
        .unwrap();
        let e = AcceptedEntry {
            index: 0,
            epoch: 0,
            envelope_hash: "ab".into(),
            head: "0123456789".into(),
            kind: "message".into(),
            sender: Some("a".into()),
            plaintext: Some("hi".into()),
            members_after: vec![],
        };
        let views = vec![
            MemberView {
                name: "a".into(),
                honest: true,
                accepted: vec![e.clone()],
                alerts: vec![],
            },
            MemberView {
                name: "b".into(),
                honest: true,
                accepted: vec![e],
                alerts: vec![],
            },
        ];
        let sent = vec![SentRecord {
            from: "a".into(),
            plaintext: "hi".into(),
        }];
        let report = RunReport::new(&scenario, 7, judge(&views, &sent, None), views);
        assert!(!report.as_expected, "the expected gap alert was not raised");
        assert_eq!(
            report.mismatches,
            vec!["no honest member raised gap".to_owned()]
        );
        let md = report.to_markdown();
        assert!(md.contains("seed 7"));
        assert!(md.contains("| 0 | a: hi `01234567` | a: hi `01234567` |"));
        assert!(report.to_json().contains("\"observed\": \"prevented\""));
        let mut sweep = SweepReport::new(&scenario);
        sweep.add(&report);
        assert_eq!(
            (sweep.runs, sweep.prevented, sweep.unexpected_seeds.clone()),
            (1, 1, vec![7])
        );
    }
}
