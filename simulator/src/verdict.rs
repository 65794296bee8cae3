//! Verdicts: does each property of the brief hold in a run?
//!
//! | property | checked as |
//! |---|---|
//! | integrity (P1) | every honest member's accepted indices are dense from its first (0, or the Update that added it), and any two honest members accepted the same envelope and head at every index both accepted |
//! | participant consistency (P2) | at every index both accepted, both have the same member list |
//! | content consistency (P3) | at every index both accepted and both decrypted, the same plaintext |
//! | no injection (P5) | every accepted, decrypted message from a named sender was really sent by that sender |
//! | no puppet members | no honest member's member list ever held an account the router registered for itself |
//! | withholding detected (P7) | when an honest member was denied indices others accepted, it raised an alert |
//! | history matches | every history an honest member verified and shows covers every index from 0 to where it read, and shows at each the message (sender and text) the honest members who accepted it live read there |
//!
//! The outcome of an attack is *prevented* when honest members ended with
//! identical, complete transcripts; *detected* when some honest member has
//! less than the furthest honest member over the span it belonged to, or
//! sent something no honest member accepted, or read a history that did not
//! verify (so it shows none), and every such member raised an alert; *undetected* otherwise. An integrity violation is always reported,
//! whatever the alerts say.

use crate::view::{AcceptedEntry, MemberView, SentRecord};
use serde::Serialize;
use std::collections::BTreeMap;

/// The verdict on one property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Check {
    /// The property holds.
    Holds,
    /// The property is violated; the detail says where.
    Violated(String),
    /// Nothing in the run could have violated it.
    NotApplicable,
}

impl Check {
    /// Whether the property holds (or could not have been violated).
    pub fn ok(&self) -> bool {
        !matches!(self, Self::Violated(_))
    }

    fn from_first(violation: Option<String>) -> Self {
        violation.map_or(Self::Holds, Self::Violated)
    }
}

/// What an attack achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Honest members ended with identical, complete transcripts.
    Prevented,
    /// Some honest member was denied something, and every such member knows.
    Detected,
    /// Some honest member was denied something, or views diverged, silently.
    Undetected,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Prevented => "prevented",
            Self::Detected => "detected",
            Self::Undetected => "undetected",
        })
    }
}

/// All verdicts of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdicts {
    /// P1.
    pub integrity: Check,
    /// P2.
    pub participant_consistency: Check,
    /// P3.
    pub content_consistency: Check,
    /// P5.
    pub no_injection: Check,
    /// No honest member ever listed one of the router's own accounts (a
    /// puppet) as a member.
    pub no_puppet_members: Check,
    /// P7.
    pub withholding_detected: Check,
    /// Every history an honest member verified shows what the honest
    /// members read live (not applicable when nobody read one).
    pub history_matches: Check,
    /// Whether all honest members ended with the same transcript.
    pub honest_views_agree: bool,
    /// The attack's outcome.
    pub outcome: Outcome,
}

fn honest(views: &[MemberView]) -> impl Iterator<Item = &MemberView> {
    views.iter().filter(|v| v.honest)
}

fn pairs(views: &[MemberView]) -> Vec<(&MemberView, &MemberView)> {
    let honest: Vec<_> = honest(views).collect();
    let mut out = Vec::new();
    for (i, a) in honest.iter().enumerate() {
        for b in honest.iter().skip(i + 1) {
            out.push((*a, *b));
        }
    }
    out
}

/// The entries two members both accepted, matched by index.
fn common<'a>(
    a: &'a MemberView,
    b: &'a MemberView,
) -> impl Iterator<Item = (&'a AcceptedEntry, &'a AcceptedEntry)> {
    let by_index: BTreeMap<u64, &AcceptedEntry> = b.accepted.iter().map(|e| (e.index, e)).collect();
    a.accepted
        .iter()
        .filter_map(move |x| by_index.get(&x.index).map(|y| (x, *y)))
}

fn integrity(views: &[MemberView]) -> Check {
    for v in honest(views) {
        let first = v.accepted.first().map_or(0, |e| e.index);
        for (position, e) in v.accepted.iter().enumerate() {
            if e.index != first + position as u64 {
                return Check::Violated(format!(
                    "{} accepted index {} after {} others from index {first}: a gap or reordering",
                    v.name, e.index, position
                ));
            }
        }
    }
    Check::from_first(pairs(views).into_iter().find_map(|(a, b)| {
        common(a, b).find_map(|(x, y)| {
            (x.envelope_hash != y.envelope_hash || x.head != y.head).then(|| {
                format!(
                    "{} and {} accepted different envelopes at index {} (histories {} and {})",
                    a.name, b.name, x.index, x.history, y.history
                )
            })
        })
    }))
}

fn participant_consistency(views: &[MemberView]) -> Check {
    Check::from_first(pairs(views).into_iter().find_map(|(a, b)| {
        common(a, b).find_map(|(x, y)| {
            (x.members_after != y.members_after).then(|| {
                format!(
                    "{} and {} disagree on the members after index {}",
                    a.name, b.name, x.index
                )
            })
        })
    }))
}

fn content_consistency(views: &[MemberView]) -> Check {
    Check::from_first(pairs(views).into_iter().find_map(|(a, b)| {
        common(a, b).find_map(|(x, y)| match (&x.plaintext, &y.plaintext) {
            (Some(p), Some(q)) if p != q => Some(format!(
                "{} and {} read different plaintexts at index {}",
                a.name, b.name, x.index
            )),
            _ => None,
        })
    }))
}

fn no_injection(views: &[MemberView], sent: &[SentRecord]) -> Check {
    Check::from_first(honest(views).find_map(|v| {
        v.accepted.iter().find_map(|e| {
            let (Some(sender), Some(text)) = (&e.sender, &e.plaintext) else {
                return None;
            };
            if e.kind != "message" {
                return None;
            }
            let genuine = sent
                .iter()
                .any(|s| &s.from == sender && &s.plaintext == text);
            (!genuine).then(|| {
                format!(
                    "{} accepted at index {} a message from {sender} that {sender} never sent",
                    v.name, e.index
                )
            })
        })
    }))
}

fn no_puppet_members(views: &[MemberView]) -> Check {
    Check::from_first(honest(views).find_map(|v| {
        (!v.listed_puppets.is_empty()).then(|| {
            format!(
                "{} listed the router's own account(s) {} as members",
                v.name,
                v.listed_puppets.join(", ")
            )
        })
    }))
}

fn history_matches(views: &[MemberView]) -> Check {
    let mut read = false;
    for v in honest(views) {
        let Some(h) = v.history.as_ref().filter(|h| h.verified) else {
            continue;
        };
        read = true;
        let dense = h.shown.iter().enumerate().all(|(i, l)| l.index == i as u64);
        if !dense || h.shown.len() as u64 != h.through.saturating_add(1) {
            return Check::Violated(format!(
                "{} shows a history that does not cover indices 0 to {}",
                v.name, h.through
            ));
        }
        for line in &h.shown {
            let Some(text) = &line.plaintext else {
                continue;
            };
            let differs = honest(views).find(|o| {
                o.accepted.iter().any(|e| {
                    e.index == line.index
                        && e.plaintext.is_some()
                        && (e.plaintext.as_ref() != Some(text) || e.sender != line.sender)
                })
            });
            if let Some(o) = differs {
                return Check::Violated(format!(
                    "{}'s history shows at index {} another message than {} read there",
                    v.name, line.index, o.name
                ));
            }
        }
    }
    if read {
        Check::Holds
    } else {
        Check::NotApplicable
    }
}

/// Alert kinds that tell a member it is being denied something.
/// (`foreign_slot_key`: a Setup or Update gave this member a slot whose key
/// is not its own, so it cannot follow the conversation from there on, and
/// it stops knowing why.)
pub const DENIAL_ALERTS: &[&str] = &[
    "withheld",
    "gap",
    "conflicting_heads",
    "head_proof_fork",
    "receipt_mismatch",
    "bad_attestation",
    "rewritten_index",
    "foreign_slot_key",
    "history_mismatch",
];

/// Alert kinds that are evidence of a fork.
pub const FORK_ALERTS: &[&str] = &[
    "conflicting_heads",
    "head_proof_fork",
    "rewritten_index",
    "receipt_mismatch",
];

/// Whether an honest member ended with less than it should have: fewer
/// indices than the furthest honest member over the span it belonged to
/// (from its first index, to its removal or the end), or an envelope of its
/// own that no honest member accepted (it was censored), or a history read
/// that did not verify (it shows none).
fn short(v: &MemberView, furthest: Option<u64>) -> bool {
    if v.censored > 0 || v.history.as_ref().is_some_and(|h| !h.verified) {
        return true;
    }
    // Every initial member should have at least the Setup (index 0).
    let first = match (v.accepted.first(), v.joined_late) {
        (Some(e), _) => e.index,
        (None, false) => 0,
        (None, true) => return false,
    };
    let furthest = furthest.unwrap_or(0);
    let end = if v.removed {
        v.accepted.last().map_or(furthest, |e| e.index)
    } else {
        furthest
    };
    let expected = end.saturating_sub(first).saturating_add(1);
    (v.accepted.len() as u64) < expected
}

/// Judges a run from every member's view and the messages really sent.
pub fn judge(views: &[MemberView], sent: &[SentRecord]) -> Verdicts {
    let integrity = integrity(views);
    let participant_consistency = participant_consistency(views);
    let content_consistency = content_consistency(views);
    let no_injection = no_injection(views, sent);
    let no_puppet_members = no_puppet_members(views);
    let history_matches = history_matches(views);
    let furthest = honest(views)
        .filter_map(|v| v.accepted.last().map(|e| e.index))
        .max();
    let short: Vec<&MemberView> = honest(views).filter(|v| short(v, furthest)).collect();
    let honest_views_agree = integrity.ok() && short.is_empty();
    let knows = |v: &&MemberView| DENIAL_ALERTS.iter().any(|k| v.raised(k));
    let every_short_one_knows = short.iter().all(knows);
    let withholding_detected = if short.is_empty() {
        Check::NotApplicable
    } else if every_short_one_knows {
        Check::Holds
    } else {
        Check::Violated(format!(
            "{} accepted less than others and raised no alert",
            short
                .iter()
                .filter(|v| !knows(v))
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    let consistent = integrity.ok()
        && participant_consistency.ok()
        && content_consistency.ok()
        && no_injection.ok()
        && no_puppet_members.ok()
        && history_matches.ok();
    let fork_known = |v: &MemberView| FORK_ALERTS.iter().any(|k| v.raised(k));
    let outcome = if !consistent {
        // Views diverged: detected only if every honest member holds
        // evidence of the fork.
        if integrity.ok() || !honest(views).all(fork_known) {
            Outcome::Undetected
        } else {
            Outcome::Detected
        }
    } else if short.is_empty() {
        Outcome::Prevented
    } else if every_short_one_knows {
        Outcome::Detected
    } else {
        Outcome::Undetected
    };
    Verdicts {
        integrity,
        participant_consistency,
        content_consistency,
        no_injection,
        no_puppet_members,
        withholding_detected,
        history_matches,
        honest_views_agree,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{AcceptedEntry, AlertRecord};

    fn entry(index: u64, hash: &str, text: &str, from: &str) -> AcceptedEntry {
        AcceptedEntry {
            index,
            epoch: 0,
            envelope_hash: hash.into(),
            head: format!("head-{hash}"),
            history: "A".into(),
            accepted_ms: 0,
            kind: "message".into(),
            sender: Some(from.into()),
            plaintext: Some(text.into()),
            members_after: vec!["a".into(), "b".into()],
        }
    }

    fn view(name: &str, entries: Vec<AcceptedEntry>) -> MemberView {
        MemberView {
            name: name.into(),
            honest: true,
            removed: false,
            joined_late: false,
            accepted: entries,
            alerts: vec![],
            censored: 0,
            listed_puppets: vec![],
            history: None,
        }
    }

    fn sent() -> Vec<SentRecord> {
        vec![
            SentRecord {
                from: "a".into(),
                plaintext: "hi".into(),
            },
            SentRecord {
                from: "b".into(),
                plaintext: "yo".into(),
            },
        ]
    }

    #[test]
    fn identical_complete_views_are_prevented() {
        let e = vec![entry(0, "x", "hi", "a"), entry(1, "y", "yo", "b")];
        let v = judge(&[view("a", e.clone()), view("b", e)], &sent());
        assert_eq!(v.outcome, Outcome::Prevented);
        assert!(v.honest_views_agree);
        assert_eq!(v.integrity, Check::Holds);
        assert_eq!(v.withholding_detected, Check::NotApplicable);
    }

    #[test]
    fn a_fork_is_an_integrity_violation_even_with_alerts() {
        let mut b = view(
            "b",
            vec![entry(0, "x", "hi", "a"), entry(1, "z", "yo", "b")],
        );
        b.alerts.push(AlertRecord {
            kind: "conflicting_heads".into(),
            index: Some(1),
            server: None,
            message: String::new(),
        });
        let a = view(
            "a",
            vec![entry(0, "x", "hi", "a"), entry(1, "y", "yo", "b")],
        );
        let v = judge(&[a, b], &sent());
        assert!(matches!(v.integrity, Check::Violated(_)));
        assert_eq!(v.outcome, Outcome::Undetected);
    }

    #[test]
    fn a_gap_is_an_integrity_violation() {
        let a = view(
            "a",
            vec![entry(0, "x", "hi", "a"), entry(2, "y", "yo", "b")],
        );
        assert!(matches!(judge(&[a], &sent()).integrity, Check::Violated(_)));
    }

    #[test]
    fn withholding_is_detected_only_with_an_alert() {
        let full = vec![entry(0, "x", "hi", "a"), entry(1, "y", "yo", "b")];
        let mut short = view("b", vec![entry(0, "x", "hi", "a")]);
        let v = judge(&[view("a", full.clone()), short.clone()], &sent());
        assert_eq!(v.outcome, Outcome::Undetected);
        assert!(matches!(v.withholding_detected, Check::Violated(_)));
        short.alerts.push(AlertRecord {
            kind: "withheld".into(),
            index: None,
            server: Some(0),
            message: String::new(),
        });
        let v = judge(&[view("a", full), short], &sent());
        assert_eq!(v.outcome, Outcome::Detected);
        assert_eq!(v.withholding_detected, Check::Holds);
        assert_eq!(v.integrity, Check::Holds);
    }

    #[test]
    fn a_member_given_a_foreign_slot_knows_it_is_left_behind() {
        let full = vec![entry(0, "x", "hi", "a"), entry(1, "y", "yo", "b")];
        let mut halted = view("b", vec![entry(0, "x", "hi", "a")]);
        halted.alerts.push(AlertRecord {
            kind: "foreign_slot_key".into(),
            index: Some(0),
            server: None,
            message: String::new(),
        });
        let v = judge(&[view("a", full), halted], &sent());
        assert_eq!(v.outcome, Outcome::Detected);
        assert_eq!(v.withholding_detected, Check::Holds);
    }

    #[test]
    fn dishonest_members_are_not_judged() {
        let mut liar = view("m", vec![entry(0, "q", "hi", "a")]);
        liar.honest = false;
        let e = vec![entry(0, "x", "hi", "a")];
        let v = judge(&[view("a", e.clone()), view("b", e), liar], &sent());
        assert_eq!(v.outcome, Outcome::Prevented);
    }

    #[test]
    fn injected_and_inconsistent_content_is_caught() {
        let a = view("a", vec![entry(0, "x", "never said", "b")]);
        assert!(matches!(
            judge(&[a], &sent()).no_injection,
            Check::Violated(_)
        ));
        let a = view("a", vec![entry(0, "x", "hi", "a")]);
        let b = view("b", vec![entry(0, "x", "hello", "a")]);
        assert!(matches!(
            judge(&[a, b], &sent()).content_consistency,
            Check::Violated(_)
        ));
        let a = view("a", vec![entry(0, "x", "hi", "a")]);
        let mut other = entry(0, "x", "hi", "a");
        other.members_after.push("c".into());
        let b = view("b", vec![other]);
        assert!(matches!(
            judge(&[a, b], &sent()).participant_consistency,
            Check::Violated(_)
        ));
    }

    #[test]
    fn a_censored_sender_is_short_even_when_all_agree() {
        // Everyone stalled at index 0; a's own message was never accepted.
        let e = vec![entry(0, "x", "hi", "a")];
        let mut a = view("a", e.clone());
        a.censored = 1;
        let v = judge(&[a.clone(), view("b", e.clone())], &sent());
        assert_eq!(v.outcome, Outcome::Undetected);
        assert!(!v.honest_views_agree);
        a.alerts.push(AlertRecord {
            kind: "withheld".into(),
            index: None,
            server: Some(1),
            message: String::new(),
        });
        let v = judge(&[a, view("b", e)], &sent());
        assert_eq!(v.outcome, Outcome::Detected);
    }

    #[test]
    fn joiners_and_removed_members_are_judged_over_their_span() {
        let all = vec![
            entry(0, "x", "hi", "a"),
            entry(1, "y", "yo", "b"),
            entry(2, "z", "hi", "a"),
        ];
        let mut joiner = view("c", all[1..].to_vec());
        joiner.joined_late = true;
        let mut removed = view("d", all[..2].to_vec());
        removed.removed = true;
        let v = judge(&[view("a", all.clone()), joiner, removed], &sent());
        assert_eq!(v.integrity, Check::Holds);
        assert_eq!(v.outcome, Outcome::Prevented);
    }

    #[test]
    fn an_initial_member_without_even_the_setup_is_short() {
        let v = judge(&[view("a", vec![]), view("b", vec![])], &sent());
        assert_eq!(v.outcome, Outcome::Undetected);
        let mut late = view("c", vec![]);
        late.joined_late = true;
        let e = vec![entry(0, "x", "hi", "a")];
        let v = judge(&[view("a", e), late], &sent());
        assert_eq!(v.outcome, Outcome::Prevented);
    }

    #[test]
    fn an_honest_member_listing_a_puppet_is_never_prevented() {
        let e = vec![entry(0, "x", "hi", "a"), entry(1, "y", "yo", "b")];
        let mut fooled = view("b", e.clone());
        fooled.listed_puppets = vec!["puppet".into()];
        let v = judge(&[view("a", e.clone()), fooled.clone()], &sent());
        assert!(matches!(v.no_puppet_members, Check::Violated(_)));
        assert_eq!(v.outcome, Outcome::Undetected);
        // A compromised member's list is not judged.
        fooled.honest = false;
        let v = judge(&[view("a", e), fooled], &sent());
        assert_eq!(v.no_puppet_members, Check::Holds);
        assert_eq!(v.outcome, Outcome::Prevented);
    }
}
