//! The end of a run: each member's view (accepted indices with history
//! labels, members after each, alerts, censored envelopes, puppets
//! listed), the property verdicts over them, and the run report.

use super::member_node::HistoryRead;
use super::member_node::MemberNode;
use super::{MS, World};
use crate::report::RunReport;
use crate::verdict::judge;
use crate::view::{AcceptedEntry, AlertRecord, HistoryLine, HistoryView, MemberView};
use grompi_client_core::content::Change;
use grompi_client_core::content::Content;
use grompi_proto::AccountId;
use std::collections::{BTreeMap, BTreeSet};

/// Labels distinct heads at each index "A", "B", ... by first appearance
/// over the members in order.
fn history_labels(members: &[MemberNode]) -> Vec<BTreeMap<u64, String>> {
    let mut seen: BTreeMap<u64, Vec<[u8; 32]>> = BTreeMap::new();
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let mut labels = BTreeMap::new();
        if let Some(c) = m.conversation() {
            for e in c.transcript().entries() {
                let heads = seen.entry(e.index.0).or_default();
                let head = *e.head.as_bytes();
                let pos = match heads.iter().position(|h| *h == head) {
                    Some(p) => p,
                    None => {
                        heads.push(head);
                        heads.len() - 1
                    }
                };
                labels.insert(e.index.0, label(pos));
            }
        }
        out.push(labels);
    }
    out
}

fn label(pos: usize) -> String {
    let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    match letters.get(pos) {
        Some(c) => char::from(*c).to_string(),
        None => format!("#{pos}"),
    }
}

impl World {
    pub(super) fn report(&mut self, seed: u64) -> RunReport {
        let labels = history_labels(&self.members);
        let names: BTreeMap<AccountId, String> = self
            .members
            .iter()
            .map(|m| (m.account, m.name.clone()))
            .chain(self.puppets.iter().map(|p| (p.account, p.name.clone())))
            .collect();
        let mut views = Vec::with_capacity(self.members.len());
        for (i, m) in self.members.iter().enumerate() {
            let mut roster: BTreeSet<AccountId> = m
                .initial_roster
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            let mut accepted = Vec::new();
            let entries = m
                .conversation()
                .map(|c| c.transcript().entries().to_vec())
                .unwrap_or_default();
            if m.initial_roster.is_none()
                && let Some(c) = m.conversation()
                && let Some(ms) = c.membership()
            {
                // A joiner starts from the list the Update that added it
                // set: its last list with every change it applied after
                // that Update undone, latest first (a later join or
                // removal must not show at its first index).
                roster = ms.members().keys().copied().collect();
                for e in entries.iter().skip(1).rev() {
                    match m.info.get(&e.index.0).and_then(|i| i.change) {
                        Some(Change::Add { account, .. }) => {
                            roster.remove(&account);
                        }
                        Some(Change::Remove { account }) => {
                            roster.insert(account);
                        }
                        Some(Change::Leave) => {
                            let sender = self
                                .composed
                                .get(e.envelope_hash.as_bytes())
                                .and_then(|c| self.members.get(c.sender))
                                .map(|s| s.account);
                            if let Some(a) = sender {
                                roster.insert(a);
                            }
                        }
                        _ => {}
                    }
                }
            }
            for e in &entries {
                let info = m.info.get(&e.index.0).cloned().unwrap_or_default();
                match info.change {
                    Some(Change::Add { account, .. }) => {
                        roster.insert(account);
                    }
                    Some(Change::Remove { account }) => {
                        roster.remove(&account);
                    }
                    Some(Change::Leave) => {
                        let sender = self
                            .composed
                            .get(e.envelope_hash.as_bytes())
                            .and_then(|c| self.members.get(c.sender))
                            .map(|s| s.account);
                        if let Some(a) = sender {
                            roster.remove(&a);
                        }
                    }
                    _ => {}
                }
                let mut members_after: Vec<String> = roster
                    .iter()
                    .filter_map(|a| names.get(a).cloned())
                    .collect();
                members_after.sort();
                accepted.push(AcceptedEntry {
                    index: e.index.0,
                    epoch: e.epoch.0,
                    envelope_hash: e.envelope_hash.to_hex(),
                    head: e.head.to_hex(),
                    history: labels
                        .get(i)
                        .and_then(|l| l.get(&e.index.0))
                        .cloned()
                        .unwrap_or_default(),
                    kind: info.kind.map_or("unknown", kind_name).to_owned(),
                    sender: info.sender.and_then(|a| names.get(&a).cloned()),
                    plaintext: info.plaintext.clone(),
                    members_after,
                    accepted_ms: info.accepted_at / MS,
                });
                if let Some(c) = self.composed.get(e.envelope_hash.as_bytes())
                    && c.step.is_some()
                    && i != c.sender
                {
                    self.measure
                        .latencies_us
                        .push(info.accepted_at.saturating_sub(c.submitted_at));
                }
            }
            let alerts = m
                .alerts
                .iter()
                .map(|(_, a)| AlertRecord {
                    kind: a.kind.kind().name().to_owned(),
                    index: a.index.map(|i| i.0),
                    server: a.server,
                    message: a.kind.to_string(),
                })
                .collect();
            // Own envelopes that no honest member ever accepted: the sender
            // was censored and must know it.
            let censored = self
                .composed
                .iter()
                .filter(|(h, c)| {
                    c.sender == i
                        && c.step.is_some()
                        && !c.refused
                        && !self.members.iter().any(|o| {
                            o.honest
                                && o.conversation().is_some_and(|conv| {
                                    conv.transcript()
                                        .entries()
                                        .iter()
                                        .any(|e| e.envelope_hash.as_bytes() == *h)
                                })
                        })
                })
                .count();
            let listed_puppets = self
                .puppets
                .iter()
                .filter(|p| m.ever_listed.contains(&p.account))
                .map(|p| p.name.clone())
                .collect();
            let history = m.history.as_ref().map(|h| {
                let (verified, shown) = match &h.read {
                    HistoryRead::Verified(entries) => (
                        true,
                        entries
                            .iter()
                            .map(|e| HistoryLine {
                                index: e.index.0,
                                kind: kind_name(e.kind).to_owned(),
                                sender: e.sender.and_then(|a| names.get(&a).cloned()),
                                plaintext: match &e.content {
                                    Ok(Content::Message(text)) => {
                                        Some(String::from_utf8_lossy(text).into_owned())
                                    }
                                    _ => None,
                                },
                            })
                            .collect(),
                    ),
                    _ => (false, Vec::new()),
                };
                HistoryView {
                    first_own: h.first_own,
                    through: h.through,
                    verified,
                    shown,
                }
            });
            views.push(MemberView {
                name: m.name.clone(),
                honest: m.honest,
                removed: m.removed(),
                joined_late: m.initial_roster.is_none(),
                accepted,
                alerts,
                censored,
                listed_puppets,
                history,
            });
        }
        let accepted_indices: BTreeSet<(String, u64)> = views
            .iter()
            .flat_map(|v| {
                v.accepted
                    .iter()
                    .map(|e| (e.history.clone(), e.index))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.measure.accepted_envelopes = accepted_indices.len() as u64;
        let verdicts = judge(&views, &self.sent);
        let refusals = self
            .servers
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.refusals.is_empty())
            .map(|(i, s)| (format!("order server {i}"), s.refusals.clone()))
            .collect();
        let mut report = RunReport::new(&self.scenario, seed, verdicts, views)
            .with_refusals(&self.scenario, refusals);
        report.notes = std::mem::take(&mut self.notes);
        report.sent = self.sent.clone();
        report.metrics = self.measure.summary(self.now() / MS);
        report
    }
}

fn kind_name(k: grompi_proto::EnvelopeKind) -> &'static str {
    use grompi_proto::EnvelopeKind as K;
    match k {
        K::Setup => "setup",
        K::Message => "message",
        K::Update => "update",
        K::Receipt => "receipt",
        K::Noise => "noise",
        K::Rekey => "rekey",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_run_a_to_z_then_number() {
        assert_eq!(label(0), "A");
        assert_eq!(label(1), "B");
        assert_eq!(label(26), "#26");
    }
}
