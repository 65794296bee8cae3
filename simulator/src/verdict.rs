//! Verdicts: does each property of the brief hold in a run?
//!
//! | property | checked as |
//! |---|---|
//! | integrity (P1) | every honest member's accepted indices are dense from 0, and of any two honest members one transcript (index, envelope hash, head) is a prefix of the other |
//! | participant consistency (P2) | at every index both accepted, both have the same member list |
//! | content consistency (P3) | at every index both accepted and both decrypted, the same plaintext |
//! | no injection (P5) | every accepted, decrypted message from a named sender was really sent by that sender |
//! | withholding detected (P7) | when an honest member was denied indices others accepted, it raised an alert |
//!
//! The outcome of an attack is *prevented* when honest members ended with
//! identical, complete transcripts; *detected* when some honest member has
//! less than others (or than was sent) and every such member raised an
//! alert; *undetected* otherwise. An integrity violation is always reported,
//! whatever the alerts say.

use crate::view::{MemberView, SentRecord};
use serde::Serialize;

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
    /// P7.
    pub withholding_detected: Check,
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

fn integrity(views: &[MemberView]) -> Check {
    for v in honest(views) {
        for (position, e) in v.accepted.iter().enumerate() {
            if e.index != position as u64 {
                return Check::Violated(format!(
                    "{} accepted index {} at position {position}: a gap or reordering",
                    v.name, e.index
                ));
            }
        }
    }
    Check::from_first(pairs(views).into_iter().find_map(|(a, b)| {
        a.accepted.iter().zip(&b.accepted).find_map(|(x, y)| {
            (x.envelope_hash != y.envelope_hash || x.head != y.head).then(|| {
                format!(
                    "{} and {} accepted different envelopes at index {}",
                    a.name, b.name, x.index
                )
            })
        })
    }))
}

fn participant_consistency(views: &[MemberView]) -> Check {
    Check::from_first(pairs(views).into_iter().find_map(|(a, b)| {
        a.accepted.iter().zip(&b.accepted).find_map(|(x, y)| {
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
        a.accepted
            .iter()
            .zip(&b.accepted)
            .find_map(|(x, y)| match (&x.plaintext, &y.plaintext) {
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

/// Alert kinds that tell a member it is being denied something.
const DENIAL_ALERTS: &[&str] = &[
    "withheld",
    "gap",
    "conflicting_heads",
    "head_proof_fork",
    "receipt_mismatch",
    "bad_attestation",
    "rewritten_index",
];

/// Judges a run. `expected_len` is how many indices an honest, complete
/// transcript has (None when the script does not fix it: then the longest
/// honest transcript is the reference).
pub fn judge(views: &[MemberView], sent: &[SentRecord], expected_len: Option<usize>) -> Verdicts {
    let integrity = integrity(views);
    let participant_consistency = participant_consistency(views);
    let content_consistency = content_consistency(views);
    let no_injection = no_injection(views, sent);
    let longest = honest(views).map(|v| v.accepted.len()).max().unwrap_or(0);
    let full = expected_len.unwrap_or(longest).max(longest);
    let short: Vec<&MemberView> = honest(views).filter(|v| v.accepted.len() < full).collect();
    let honest_views_agree = integrity.ok() && short.is_empty();
    let every_short_one_knows = short
        .iter()
        .all(|v| DENIAL_ALERTS.iter().any(|k| v.raised(k)));
    let withholding_detected = if short.is_empty() {
        Check::NotApplicable
    } else if every_short_one_knows {
        Check::Holds
    } else {
        Check::Violated(format!(
            "{} accepted less than others and raised no alert",
            short
                .iter()
                .filter(|v| !DENIAL_ALERTS.iter().any(|k| v.raised(k)))
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    let consistent = integrity.ok()
        && participant_consistency.ok()
        && content_consistency.ok()
        && no_injection.ok();
    let outcome = if !consistent {
        Outcome::Undetected
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
        withholding_detected,
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
            accepted: entries,
            alerts: vec![],
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
        let v = judge(&[view("a", e.clone()), view("b", e)], &sent(), Some(2));
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
        let v = judge(&[a, b], &sent(), None);
        assert!(matches!(v.integrity, Check::Violated(_)));
        assert_eq!(v.outcome, Outcome::Undetected);
    }

    #[test]
    fn a_gap_is_an_integrity_violation() {
        let a = view(
            "a",
            vec![entry(0, "x", "hi", "a"), entry(2, "y", "yo", "b")],
        );
        assert!(matches!(
            judge(&[a], &sent(), None).integrity,
            Check::Violated(_)
        ));
    }

    #[test]
    fn withholding_is_detected_only_with_an_alert() {
        let full = vec![entry(0, "x", "hi", "a"), entry(1, "y", "yo", "b")];
        let mut short = view("b", vec![entry(0, "x", "hi", "a")]);
        let v = judge(&[view("a", full.clone()), short.clone()], &sent(), None);
        assert_eq!(v.outcome, Outcome::Undetected);
        assert!(matches!(v.withholding_detected, Check::Violated(_)));
        short.alerts.push(AlertRecord {
            kind: "withheld".into(),
            index: None,
            server: Some(0),
            message: String::new(),
        });
        let v = judge(&[view("a", full), short], &sent(), None);
        assert_eq!(v.outcome, Outcome::Detected);
        assert_eq!(v.withholding_detected, Check::Holds);
        assert_eq!(v.integrity, Check::Holds);
    }

    #[test]
    fn dishonest_members_are_not_judged() {
        let mut liar = view("m", vec![entry(0, "q", "hi", "a")]);
        liar.honest = false;
        let e = vec![entry(0, "x", "hi", "a")];
        let v = judge(&[view("a", e.clone()), view("b", e), liar], &sent(), None);
        assert_eq!(v.outcome, Outcome::Prevented);
    }

    #[test]
    fn injected_and_inconsistent_content_is_caught() {
        let a = view("a", vec![entry(0, "x", "never said", "b")]);
        assert!(matches!(
            judge(&[a], &sent(), None).no_injection,
            Check::Violated(_)
        ));
        let a = view("a", vec![entry(0, "x", "hi", "a")]);
        let b = view("b", vec![entry(0, "x", "hello", "a")]);
        assert!(matches!(
            judge(&[a, b], &sent(), None).content_consistency,
            Check::Violated(_)
        ));
        let a = view("a", vec![entry(0, "x", "hi", "a")]);
        let mut other = entry(0, "x", "hi", "a");
        other.members_after.push("c".into());
        let b = view("b", vec![other]);
        assert!(matches!(
            judge(&[a, b], &sent(), None).participant_consistency,
            Check::Violated(_)
        ));
    }

    #[test]
    fn expected_length_counts_members_left_behind_together() {
        // Everyone stalled at index 0 while two were expected: all are short.
        let e = vec![entry(0, "x", "hi", "a")];
        let v = judge(&[view("a", e.clone()), view("b", e)], &sent(), Some(2));
        assert_eq!(v.outcome, Outcome::Undetected);
        assert!(!v.honest_views_agree);
    }
}
