//! The properties checked in every reachable state. Every member is
//! honest (the adversary is the router, its puppet and the colluding
//! order servers), so every member's view counts.

use crate::model::{Model, State};
use std::fmt;

/// A property of the integrity promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Property {
    /// P1: no two honest members accept different envelopes at one index.
    SameEnvelope,
    /// P2: honest members that adopted a roster for an epoch adopted the
    /// same one.
    SameRoster,
    /// P2': no roster an honest member adopts lists an account no honest
    /// Admin added (the router's puppet).
    NoInjectedMember,
    /// P3: every accepted index was tagged, on the head accepted, by a
    /// quorum of servers that either attested it with the real core or
    /// collude (and so could tag anything).
    QuorumOfGenuineTags,
    /// P4: after a round of head proofs, no honest server that had attested
    /// more than the member accepted reads as consistent (withholding is
    /// detected).
    WithholdingDetected,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::SameEnvelope => "P1 same envelope at every index",
            Property::SameRoster => "P2 same roster in every epoch",
            Property::NoInjectedMember => "P2' no injected member",
            Property::QuorumOfGenuineTags => "P3 a quorum of genuine tags",
            Property::WithholdingDetected => "P4 withholding detected",
        })
    }
}

/// A property that does not hold in a state, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which property.
    pub property: Property,
    /// What the members hold.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

/// The first property `s` violates, if any.
pub fn check(model: &Model, s: &State) -> Option<Violation> {
    // A compromised member's own view proves nothing: it is left out.
    let skip = usize::from(model.bounds.compromised_admin);
    let members: Vec<(usize, &crate::model::MemberState)> = s
        .members
        .iter()
        .enumerate()
        .skip(skip)
        .map(|(i, m)| (i, &**m))
        .collect();
    // P1.
    for (x, &(a, ma)) in members.iter().enumerate() {
        for &(b, mb) in members.iter().skip(x + 1) {
            for ea in ma.conv.transcript().entries() {
                if let Some(eb) = mb.conv.transcript().get(ea.index)
                    && eb.envelope_hash != ea.envelope_hash
                {
                    let label = |m: &crate::model::MemberState, h| {
                        s.envs
                            .iter()
                            .find(|e| e.env.hash() == h)
                            .map_or("?".to_owned(), |e| e.label.to_string())
                            + if m.conv.transcript().first() == ea.index {
                                " (joined there)"
                            } else {
                                ""
                            }
                    };
                    return Some(Violation {
                        property: crate::props::Property::SameEnvelope,
                        detail: format!(
                            "at index {} member {a} accepted {} and member {b} accepted {}",
                            ea.index.0,
                            label(ma, ea.envelope_hash),
                            label(mb, eb.envelope_hash)
                        ),
                    });
                }
            }
        }
    }
    // P2 and P2'.
    let puppet = model.accounts.last();
    for (x, &(a, ma)) in members.iter().enumerate() {
        for (epoch, roster) in &ma.rosters {
            if puppet.is_some_and(|p| roster.contains_key(p)) {
                return Some(Violation {
                    property: Property::NoInjectedMember,
                    detail: format!(
                        "member {a} adopted a roster for epoch {} that lists the router's puppet",
                        epoch.0
                    ),
                });
            }
            for &(b, mb) in members.iter().skip(x + 1) {
                if let Some(other) = mb.rosters.get(epoch)
                    && other != roster
                {
                    return Some(Violation {
                        property: Property::SameRoster,
                        detail: format!(
                            "members {a} and {b} adopted different rosters for epoch {}",
                            epoch.0
                        ),
                    });
                }
            }
        }
    }
    // P3.
    let colluding: u32 = model
        .bounds
        .equivocating
        .iter()
        .fold(0, |m, s| m | (1u32 << s));
    for &(a, ma) in &members {
        for e in ma.conv.transcript().entries() {
            let genuine = s
                .placements
                .iter()
                .filter(|p| p.index == e.index && p.head == e.head)
                .fold(0u32, |m, p| m | p.genuine);
            let backed = (genuine | colluding).count_ones() as usize;
            if backed < model.bounds.quorum {
                return Some(Violation {
                    property: Property::QuorumOfGenuineTags,
                    detail: format!(
                        "member {a} accepted index {} on a head only {backed} servers could have tagged",
                        e.index.0
                    ),
                });
            }
        }
    }
    // P4.
    for &(a, ma) in &members {
        if let Some(how) = &ma.silent {
            return Some(Violation {
                property: Property::WithholdingDetected,
                detail: format!("member {a}: {how}"),
            });
        }
    }
    None
}
