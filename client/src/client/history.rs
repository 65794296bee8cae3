//! The readable transcript a program shows: one record per accepted index,
//! built from the conversation's events, with its attestation status and
//! the sender's causal context.

use grompi_client_core::content::Change;
use grompi_client_core::conversation::Event;
use grompi_client_core::transcript::AttestationStatus;
use grompi_proto::{AccountId, EnvelopeKind};

/// How well an index is attested, as shown to people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    /// Submitted, not yet accepted.
    Pending,
    /// Accepted with the quorum of tags, not all of them.
    Quorum,
    /// Every order server attested it.
    Full,
    /// Sent before this member joined, read from the router's store and
    /// verified against the head chain this member accepted.
    BeforeJoin,
}

impl From<AttestationStatus> for Status {
    fn from(s: AttestationStatus) -> Self {
        match s {
            AttestationStatus::Pending => Self::Pending,
            AttestationStatus::Quorum => Self::Quorum,
            AttestationStatus::Full => Self::Full,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Quorum => "quorum",
            Self::Full => "fully attested",
            Self::BeforeJoin => "before you joined, verified",
        })
    }
}

/// One accepted index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The accepted index (0 is the Setup).
    pub index: u64,
    /// The envelope kind (`setup`, `message`, `update`, `receipt`, `noise`).
    pub kind: String,
    /// The authenticated sender (account id, hex), when known.
    pub sender: Option<String>,
    /// A message's text (invalid UTF-8 replaced).
    pub text: Option<String>,
    /// What a Setup, Update or Receipt did.
    pub note: Option<String>,
    /// The sender's causal context: the last index it had accepted.
    pub last_seen: Option<u64>,
    /// How well the index is attested now (quorum or every server).
    pub status: Status,
    /// Whether this member could not open it.
    pub undecryptable: bool,
}

/// How the history names an envelope kind ("message", "rekey", ...).
pub fn kind_name(kind: EnvelopeKind) -> &'static str {
    match kind {
        EnvelopeKind::Setup => "setup",
        EnvelopeKind::Message => "message",
        EnvelopeKind::Update => "update",
        EnvelopeKind::Receipt => "receipt",
        EnvelopeKind::Noise => "noise",
        EnvelopeKind::Rekey => "rekey",
    }
}

fn short(a: &AccountId) -> String {
    a.to_hex().chars().take(12).collect()
}

/// A membership change in words.
pub fn describe_change(change: Option<&Change>, authorized: bool) -> String {
    let what = match change {
        None => "conversation created".to_owned(),
        Some(Change::Add { account, .. }) => format!("added {}", short(account)),
        Some(Change::Remove { account }) => format!("removed {}", short(account)),
        Some(Change::Leave) => "left".to_owned(),
        Some(Change::SetRole { account, role }) => {
            format!("set role of {} to {role:?}", short(account))
        }
        Some(Change::SetHistory) => "changed who reads the history".to_owned(),
    };
    if authorized {
        what
    } else {
        format!("{what} (REFUSED: not authorized; nothing changed)")
    }
}

/// Applies one event to the record of its index (`record` is `None` when
/// there is none yet); returns the updated record, or `None` when the
/// event concerns no record.
pub fn apply(record: Option<Record>, event: &Event) -> Option<Record> {
    match event {
        Event::Accepted {
            index,
            kind,
            status,
            last_seen,
            sender,
        } => Some(Record {
            index: index.0,
            kind: kind_name(*kind).to_owned(),
            sender: sender
                .map(|a| a.to_hex())
                .or_else(|| record.as_ref().and_then(|r| r.sender.clone())),
            text: record.as_ref().and_then(|r| r.text.clone()),
            note: record.as_ref().and_then(|r| r.note.clone()),
            last_seen: last_seen.map(|i| i.0),
            status: (*status).into(),
            undecryptable: false,
        }),
        Event::StatusChanged { status, .. } => record.map(|mut r| {
            r.status = (*status).into();
            r
        }),
        Event::Message {
            sender, plaintext, ..
        } => record.map(|mut r| {
            r.sender = Some(sender.to_hex());
            r.text = Some(String::from_utf8_lossy(plaintext).into_owned());
            r
        }),
        Event::MembershipChanged {
            change,
            authorized,
            vouched_by,
            ..
        } => record.map(|mut r| {
            let mut note = describe_change(change.as_ref(), *authorized);
            if let Some(admin) = vouched_by {
                note.push_str(&format!(
                    "; you joined here: the member list is as {} stated it, \
                     you could not check it against the list before",
                    short(admin)
                ));
            }
            r.note = Some(note);
            r
        }),
        Event::Receipt { from, through, .. } => record.map(|mut r| {
            r.sender = Some(from.to_hex());
            r.note = Some(format!("processed through #{}", through.0));
            r
        }),
    }
}

/// The index an event concerns.
pub fn event_index(event: &Event) -> grompi_proto::Index {
    match event {
        Event::Accepted { index, .. }
        | Event::StatusChanged { index, .. }
        | Event::Message { index, .. }
        | Event::MembershipChanged { index, .. }
        | Event::Receipt { index, .. } => *index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::Index;

    #[test]
    fn events_build_a_record() {
        let a = AccountId::from_bytes([3; 32]);
        let r = apply(
            None,
            &Event::Accepted {
                index: Index(4),
                kind: EnvelopeKind::Message,
                status: AttestationStatus::Quorum,
                last_seen: Some(Index(2)),
                sender: None,
            },
        );
        let r = apply(
            r,
            &Event::Message {
                index: Index(4),
                sender: a,
                plaintext: b"hello".to_vec(),
                last_seen: Some(Index(2)),
            },
        );
        let r = apply(
            r,
            &Event::StatusChanged {
                index: Index(4),
                status: AttestationStatus::Full,
            },
        )
        .unwrap();
        assert_eq!(r.text.as_deref(), Some("hello"));
        assert_eq!(r.sender, Some(a.to_hex()));
        assert_eq!(r.status, Status::Full);
        assert_eq!(r.last_seen, Some(2));
        assert_eq!(
            apply(
                None,
                &Event::StatusChanged {
                    index: Index(1),
                    status: AttestationStatus::Full
                }
            ),
            None
        );
    }

    #[test]
    fn a_join_says_whose_word_the_member_list_rests_on() {
        let admin = AccountId::from_bytes([7; 32]);
        let accepted = Event::Accepted {
            index: Index(9),
            kind: EnvelopeKind::Update,
            status: AttestationStatus::Full,
            last_seen: None,
            sender: Some(admin),
        };
        let changed = |vouched_by| Event::MembershipChanged {
            index: Index(9),
            epoch: grompi_proto::Epoch(2),
            change: Some(Change::Add {
                account: AccountId::from_bytes([8; 32]),
                role: grompi_proto::SlotRole::Member,
            }),
            authorized: true,
            vouched_by,
        };
        let joined = apply(apply(None, &accepted), &changed(Some(admin))).unwrap();
        let note = joined.note.unwrap();
        assert!(note.contains(&short(&admin)), "{note}");
        assert!(note.contains("could not check"), "{note}");
        let seen = apply(apply(None, &accepted), &changed(None)).unwrap();
        assert!(!seen.note.unwrap().contains("could not check"));
    }
}
