//! What one member saw at the end of a run: the input to every verdict.
//!
//! A view is filled from the client core's accepted transcript and alert
//! queue; it holds nothing the member did not itself accept or raise.

use serde::Serialize;

/// One accepted index, as a member saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptedEntry {
    /// Position in the conversation's total order: 0 is the Setup, dense across epochs.
    pub index: u64,
    /// Epoch the envelope was sent in (0 until the first membership change).
    pub epoch: u64,
    /// The envelope hash (hex). Not reported: it depends on ciphertexts,
    /// which are not reproducible from the seed.
    #[serde(skip)]
    pub envelope_hash: String,
    /// The head after this index (hex). Not reported, as above.
    #[serde(skip)]
    pub head: String,
    /// Which history this head belongs to: "A" for the first head seen at
    /// this index (members in order), "B" for a second, and so on.
    pub history: String,
    /// When the member accepted it (virtual ms).
    pub accepted_ms: u64,
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
    /// Whether the member was removed or left (it stops accepting).
    pub removed: bool,
    /// Whether it was added by an Update rather than at the Setup.
    pub joined_late: bool,
    /// Accepted indices, in acceptance order.
    pub accepted: Vec<AcceptedEntry>,
    /// Alerts raised, in order.
    pub alerts: Vec<AlertRecord>,
    /// Envelopes this member sent that no honest member accepted.
    pub censored: usize,
    /// Accounts of the router's own (puppets) that this member's member
    /// list held at some point.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listed_puppets: Vec<String>,
    /// The conversation's history this member read from the router, if a
    /// script step had it read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryView>,
}

/// A history a member read from the router (FetchHistory) and verified
/// from the genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryView {
    /// The member's first own index (0, or the Update that added it):
    /// what comes before is shown as "before you joined".
    pub first_own: u64,
    /// The last index the read covers (the last one the member had
    /// accepted when it started).
    pub through: u64,
    /// Whether the history verified against the attested chain. When it
    /// did not, nothing of it is shown.
    pub verified: bool,
    /// What the member shows, one line per index from 0 (empty unless
    /// verified).
    pub shown: Vec<HistoryLine>,
}

impl HistoryView {
    /// The lines before the member's join that read as a message.
    pub fn messages_before_join(&self) -> impl Iterator<Item = &HistoryLine> {
        self.shown.iter().filter(move |l| {
            l.index < self.first_own && l.kind == "message" && l.plaintext.is_some()
        })
    }
}

/// One index of a verified history, as the member shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryLine {
    /// The index.
    pub index: u64,
    /// The envelope kind.
    pub kind: String,
    /// The sender's name, when the history read so far says who holds the
    /// sender's slot.
    pub sender: Option<String>,
    /// A message's text, when the history key chain reached it.
    pub plaintext: Option<String>,
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
