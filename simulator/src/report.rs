//! Reports of runs and sweeps, in JSON (for tools) and Markdown (for people).

use crate::scenario::Scenario;
use crate::verdict::{Check, Outcome, Verdicts};
use crate::view::MemberView;
use crate::world::measure::Metrics;
use serde::Serialize;
use std::collections::BTreeMap;
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
    /// N: order servers in the network.
    pub order_servers: usize,
    /// t: order server attestations a member requires per index (N unless the scenario says).
    pub quorum: usize,
    /// The outcome the scenario's `[expect]` table names.
    pub expected: Outcome,
    /// The outcome the verdicts found in this run.
    pub observed: Outcome,
    /// Whether the expectation (outcome, integrity and alerts) was met.
    pub as_expected: bool,
    /// Why not, when it was not.
    pub mismatches: Vec<String>,
    /// Every verdict.
    pub verdicts: Verdicts,
    /// What the run shows, in one sentence.
    pub finding: String,
    /// Refusals the order servers gave (their own detections), by server
    /// and kind.
    pub server_refusals: BTreeMap<String, BTreeMap<String, u64>>,
    /// Messages and latency.
    pub metrics: Metrics,
    /// What happened to the network (crashes, forks, failed steps).
    pub notes: Vec<String>,
    /// The messages members really sent.
    pub sent: Vec<crate::view::SentRecord>,
    /// What each member saw.
    pub views: Vec<MemberView>,
}

/// What the expectation says about reading: every honest member read
/// every message it accepted, and the named members read nothing accepted
/// after the Update that removed them (the first index at which an honest
/// member's list no longer holds them).
fn reading_mismatches(expect: &crate::scenario::Expectation, views: &[MemberView]) -> Vec<String> {
    let mut out = Vec::new();
    if expect.every_message_read {
        for v in views.iter().filter(|v| v.honest) {
            if let Some(e) = v
                .accepted
                .iter()
                .find(|e| e.kind == "message" && e.plaintext.is_none())
            {
                out.push(format!(
                    "{} accepted the message at index {} but could not read it",
                    v.name, e.index
                ));
            }
        }
    }
    for name in &expect.read_history_before_join {
        let Some(h) = views
            .iter()
            .find(|v| &v.name == name)
            .and_then(|v| v.history.as_ref())
            .filter(|h| h.verified)
        else {
            out.push(format!("{name} holds no verified history"));
            continue;
        };
        // What the honest members who were there read live before the join.
        let mut live: BTreeMap<u64, (Option<String>, String)> = BTreeMap::new();
        for v in views.iter().filter(|v| v.honest && &v.name != name) {
            for e in &v.accepted {
                if let (true, Some(text)) =
                    (e.index < h.first_own && e.kind == "message", &e.plaintext)
                {
                    live.entry(e.index)
                        .or_insert((e.sender.clone(), text.clone()));
                }
            }
        }
        let shown: BTreeMap<u64, (Option<String>, String)> = h
            .messages_before_join()
            .map(|l| {
                (
                    l.index,
                    (l.sender.clone(), l.plaintext.clone().unwrap_or_default()),
                )
            })
            .collect();
        if live.is_empty() {
            out.push(format!("nobody read a message before {name}'s join"));
        } else if shown != live {
            out.push(format!(
                "{name}'s history shows {} messages before its join where the members there read {}, or not the same",
                shown.len(),
                live.len()
            ));
        }
    }
    for name in &expect.read_nothing_before_join {
        match views
            .iter()
            .find(|v| &v.name == name)
            .and_then(|v| v.history.as_ref())
        {
            Some(h) if h.verified => {
                let sent_before = views
                    .iter()
                    .filter(|v| v.honest && &v.name != name)
                    .any(|v| {
                        v.accepted.iter().any(|e| {
                            e.index < h.first_own && e.kind == "message" && e.plaintext.is_some()
                        })
                    });
                if !sent_before {
                    out.push(format!("nobody read a message before {name}'s join"));
                }
                if let Some(l) = h.messages_before_join().next() {
                    out.push(format!(
                        "{name} read index {} from before its join at index {}",
                        l.index, h.first_own
                    ));
                }
            }
            _ => out.push(format!("{name} holds no verified history")),
        }
    }
    for name in &expect.read_nothing_after_removal {
        let removal = views
            .iter()
            .filter(|v| v.honest)
            .filter_map(|v| {
                let mut listed = false;
                v.accepted.iter().find_map(|e| {
                    let now = e.members_after.contains(name);
                    let removed = listed && !now;
                    listed |= now;
                    removed.then_some(e.index)
                })
            })
            .min();
        let Some(removal) = removal else {
            out.push(format!("{name} was never removed"));
            continue;
        };
        let read_later = views
            .iter()
            .filter(|v| &v.name == name)
            .flat_map(|v| &v.accepted)
            .find(|e| e.index > removal && e.plaintext.is_some());
        if let Some(e) = read_later {
            out.push(format!(
                "{name} read index {} after its removal at index {removal}",
                e.index
            ));
        }
    }
    out
}

impl RunReport {
    /// The messages no member accepted, as "sender: text".
    pub fn never_accepted(&self) -> Vec<String> {
        self.sent
            .iter()
            .filter(|s| {
                !self.views.iter().any(|v| {
                    v.accepted.iter().any(|e| {
                        e.sender.as_deref() == Some(s.from.as_str())
                            && e.plaintext.as_deref() == Some(s.plaintext.as_str())
                    })
                })
            })
            .map(|s| format!("{}: {}", s.from, s.plaintext))
            .collect()
    }

    /// Records the order servers' refusals and checks the expected ones.
    pub fn with_refusals(
        mut self,
        scenario: &Scenario,
        refusals: BTreeMap<String, BTreeMap<String, u64>>,
    ) -> Self {
        for r in &scenario.expect.refusals {
            if !refusals.values().any(|kinds| kinds.contains_key(r)) {
                self.mismatches
                    .push(format!("no order server refused with {r}"));
            }
        }
        self.as_expected = self.mismatches.is_empty();
        self.server_refusals = refusals;
        self
    }

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
        mismatches.extend(reading_mismatches(&scenario.expect, &views));
        let finding = finding(scenario, &verdicts, &views);

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
            finding,
            server_refusals: BTreeMap::new(),
            metrics: Metrics::default(),
            notes: Vec::new(),
            sent: Vec::new(),
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
        let _ = writeln!(out, "**Finding:** {}\n", self.finding);
        let _ = writeln!(out, "## Properties\n\n| property | verdict |\n|---|---|");
        for (name, check) in [
            ("integrity", &self.verdicts.integrity),
            (
                "participant consistency",
                &self.verdicts.participant_consistency,
            ),
            ("content consistency", &self.verdicts.content_consistency),
            ("no injection", &self.verdicts.no_injection),
            ("no puppet members", &self.verdicts.no_puppet_members),
            ("withholding detected", &self.verdicts.withholding_detected),
            ("history matches", &self.verdicts.history_matches),
        ] {
            let _ = writeln!(out, "| {name} | {} |", describe(check));
        }
        let _ = writeln!(out, "\n## What each member saw\n");
        out.push_str(&side_by_side(&self.views));
        for m in self.never_accepted() {
            let _ = writeln!(out, "- sent, but accepted by no member: {m}");
        }
        for v in &self.views {
            let Some(h) = &v.history else {
                continue;
            };
            if h.verified {
                let before: Vec<String> = h
                    .messages_before_join()
                    .map(|l| {
                        format!(
                            "#{} {}: {}",
                            l.index,
                            l.sender.as_deref().unwrap_or("?"),
                            l.plaintext.as_deref().unwrap_or_default()
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "- {} read the history through index {}: verified; before its join (index {}) it shows {}",
                    v.name,
                    h.through,
                    h.first_own,
                    if before.is_empty() {
                        "no message".to_owned()
                    } else {
                        before.join("; ").replace('\n', " ")
                    }
                );
            } else {
                let _ = writeln!(
                    out,
                    "- {} read the history through index {}: not verified, nothing shown",
                    v.name, h.through
                );
            }
        }
        if !self.server_refusals.is_empty() {
            let _ = writeln!(out, "\n## What the order servers refused\n");
            for (server, kinds) in &self.server_refusals {
                let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} x{n}")).collect();
                let _ = writeln!(out, "- {server}: {}", list.join(", "));
            }
        }
        let m = &self.metrics;
        let _ = writeln!(
            out,
            "\n## Cost\n\n{} messages, {} accepted envelopes ({} messages each), mean latency {} ms (max {} ms), {} ms of virtual time.",
            m.messages,
            m.accepted_envelopes,
            m.messages_per_envelope,
            m.mean_latency_ms,
            m.max_latency_ms,
            m.duration_ms
        );
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\n## Network events\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        let _ = writeln!(
            out,
            "\nReplay: `grompi-sim run <scenario> --seed {}`.",
            self.seed
        );
        out
    }
}

/// One sentence on what the run shows.
fn finding(scenario: &Scenario, v: &Verdicts, views: &[MemberView]) -> String {
    let n = scenario.network.order_servers;
    let t = scenario.network.quorum();
    let colluding = scenario
        .adversary
        .order_servers
        .iter()
        .filter(|o| o.strategy == crate::scenario::OrderServerStrategy::Equivocate)
        .count();
    if !v.integrity.ok() {
        let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for view in views.iter().filter(|x| x.honest) {
            let path: String = view.accepted.iter().map(|e| e.history.as_str()).collect();
            groups.entry(path).or_default().push(view.name.as_str());
        }
        let split: Vec<String> = groups
            .values()
            .filter_map(|who| {
                let first = views
                    .iter()
                    .find(|x| Some(&x.name.as_str()) == who.first())?;
                let last = first.accepted.last()?;
                Some(format!(
                    "{} accepted history {} (through index {})",
                    who.join(" and "),
                    last.history,
                    last.index
                ))
            })
            .collect();
        let bound = 2 * t as i64 - n as i64;
        let alerted: Vec<bool> = views
            .iter()
            .filter(|x| x.honest)
            .map(|x| crate::verdict::FORK_ALERTS.iter().any(|k| x.raised(k)))
            .collect();
        let shown = if alerted.iter().all(|a| *a) {
            "every honest member holds evidence of the fork (a fork alert)"
        } else if alerted.iter().any(|a| *a) {
            "some honest members hold evidence of it, others do not"
        } else {
            "no member holds anything that shows it"
        };
        return format!(
            "A fork was accepted: {}. With quorum {t} of {n}, a fork needs at least 2t - N = {bound} equivocating order servers and {colluding} did; {shown}.",
            split.join("; ")
        );
    }
    match v.outcome {
        Outcome::Prevented => "Every honest member ended with the same, complete history; the attack changed nothing any member accepted.".into(),
        Outcome::Detected => {
            let who: Vec<String> = views
                .iter()
                .filter(|x| x.honest && !x.alerts.is_empty())
                .map(|x| {
                    let mut kinds: Vec<&str> = x.alerts.iter().map(|a| a.kind.as_str()).collect();
                    kinds.sort_unstable();
                    kinds.dedup();
                    format!("{} ({})", x.name, kinds.join(", "))
                })
                .collect();
            format!(
                "Integrity held; some honest members were denied part of the history and knew it: {}.",
                who.join("; ")
            )
        }
        Outcome::Undetected => "Honest members were denied part of the history or disagree, and not every one of them was alerted.".into(),
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
                    format!("{what} [{}]", e.history)
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
            // One entry per kind, in order of first appearance, with the
            // servers and indices it concerned.
            let mut kinds: Vec<(String, u32, Vec<String>)> = Vec::new();
            for a in &v.alerts {
                let at = match (a.server, a.index) {
                    (Some(s), _) => format!("server {s}"),
                    (None, Some(i)) => format!("#{i}"),
                    (None, None) => String::new(),
                };
                match kinds.iter_mut().find(|(k, _, _)| *k == a.kind) {
                    Some((_, n, ats)) => {
                        *n += 1;
                        if !at.is_empty() && !ats.contains(&at) {
                            ats.push(at);
                        }
                    }
                    None => kinds.push((
                        a.kind.clone(),
                        1,
                        if at.is_empty() { vec![] } else { vec![at] },
                    )),
                }
            }
            let kinds: Vec<String> = kinds
                .into_iter()
                .map(|(k, n, ats)| {
                    let times = if n > 1 {
                        format!(" x{n}")
                    } else {
                        String::new()
                    };
                    if ats.is_empty() {
                        format!("{k}{times}")
                    } else {
                        format!("{k}{times} ({})", ats.join(", "))
                    }
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
    /// The scenario's name.
    pub scenario: String,
    /// The scenario's adversary, in one line (as in each run's report).
    pub adversary: String,
    /// Runs in the sweep, one per seed; the three outcome counts sum to it.
    pub runs: u64,
    /// Runs whose outcome was prevented: honest transcripts identical and complete.
    pub prevented: u64,
    /// Runs whose outcome was detected: every denied honest member raised an alert.
    pub detected: u64,
    /// Runs whose outcome was undetected: a denial or divergence went unnoticed.
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
            history: "A".into(),
            accepted_ms: 3,
            kind: "message".into(),
            sender: Some("a".into()),
            plaintext: Some("hi".into()),
            members_after: vec![],
        };
        let views = vec![
            MemberView {
                name: "a".into(),
                honest: true,
                removed: false,
                joined_late: false,
                accepted: vec![e.clone()],
                alerts: vec![],
                censored: 0,
                listed_puppets: vec![],
                history: None,
            },
            MemberView {
                name: "b".into(),
                honest: true,
                removed: false,
                joined_late: false,
                accepted: vec![e],
                alerts: vec![],
                censored: 0,
                listed_puppets: vec![],
                history: None,
            },
        ];
        let sent = vec![SentRecord {
            from: "a".into(),
            plaintext: "hi".into(),
        }];
        let report = RunReport::new(&scenario, 7, judge(&views, &sent), views);
        assert!(!report.as_expected, "the expected gap alert was not raised");
        assert_eq!(
            report.mismatches,
            vec!["no honest member raised gap".to_owned()]
        );
        let md = report.to_markdown();
        assert!(md.contains("seed 7"));
        assert!(md.contains("| 0 | a: hi [A] | a: hi [A] |"));
        assert!(!md.contains("0123456789"), "no ciphertext-derived bytes");
        assert!(report.to_json().contains("\"observed\": \"prevented\""));
        let mut sweep = SweepReport::new(&scenario);
        sweep.add(&report);
        assert_eq!(
            (sweep.runs, sweep.prevented, sweep.unexpected_seeds.clone()),
            (1, 1, vec![7])
        );
    }
}
