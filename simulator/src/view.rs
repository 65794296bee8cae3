//! What one member saw at the end of a run: the input to every verdict.
//!
//! A view is filled from the client core's accepted transcript and alert
//! queue; it holds nothing the member did not itself accept or raise.

use serde::Serialize;

/// One accepted index, as a member saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptedEntry {
    /// The index.
    pub index: u64,
    /// The epoch of the envelope.
    pub epoch: u64,
    /// The envelope hash (hex).
    pub envelope_hash: String,
    /// The head after this index (hex).
    pub head: String,
    /// The envelope kind (`setup`, `message`, `update`, `receipt`, `noise`).
    pub kind: String,
    /// The authenticated sender's name, when the member could authenticate it.
    pub sender: Option<String>,
    /// The plaintext, when the member could decrypt it.
    pub plaintext: Option<String>,
    /// The member list after this index, sorted.
    pub members_after: Vec<String>,
}

/// One alert a member raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRecord {
    /// The misbehaviour kind (`proto::MisbehaviourKind::name`).
    pub kind: String,
    /// The index concerned, if any.
    pub index: Option<u64>,
    /// The order server concerned, if any.
    pub server: Option<u32>,
    /// The alert's text.
    pub message: String,
}

/// Everything one member saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// The member's name.
    pub name: String,
    /// Whether the member is honest (its keys are not held by the adversary).
    pub honest: bool,
    /// Accepted indices, in acceptance order.
    pub accepted: Vec<AcceptedEntry>,
    /// Alerts raised, in order.
    pub alerts: Vec<AlertRecord>,
}

impl MemberView {
    /// Whether this member raised an alert of `kind`.
    pub fn raised(&self, kind: &str) -> bool {
        self.alerts.iter().any(|a| a.kind == kind)
    }
}

/// A message a member really sent during the run (the ground truth that
/// injection is judged against).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentRecord {
    /// Who sent it.
    pub from: String,
    /// What it said.
    pub plaintext: String,
}
