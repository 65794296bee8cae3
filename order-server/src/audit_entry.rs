//! What an order server writes into its audit log: one entry per attested
//! index, per refused equivocation attempt, and per security event (a
//! start, with the version, keys and limits it runs with). Every entry
//! starts with a type byte (`docs/PROTOCOL.md`, "Audit log"):
//!
//! | type | entry | length |
//! |---|---|---|
//! | `0x01` attestation | `0x01 \|\| derive_key("grompi v1 audit entry", conversation_id \|\| u64(epoch) \|\| u64(index) \|\| head)` | 33 |
//! | `0x02` refusal | `0x02 \|\| u64(evidence number) \|\| derive_key("grompi v1 audit refusal", conversation_id \|\| u64(index)) \|\| derive_key("grompi v1 audit evidence", conversation_id \|\| bytes(evidence))` | 73 |
//! | `0x03` security event | `0x03 \|\| UTF-8 TOML text` ([`SecurityEvent`]) | at most 65535 |
//!
//! An attestation's or a refusal's entry names no conversation: only
//! someone who knows the conversation id (a member) can recompute it and
//! find it, so nobody else learns which entries belong to one conversation.
//! Two refusals aimed at the same index of one conversation have equal
//! middle parts.

use crate::limits::Limits;
use grompi_proto::context;
use grompi_proto::encoding::Canonical;
use grompi_proto::{ConversationId, Index};
use serde::Serialize;

pub use grompi_proto::audit::{ATTESTATION, ATTESTATION_LEN};
/// Type byte of a refused equivocation attempt's entry.
pub const REFUSAL: u8 = 0x02;
/// Type byte of a security event's entry.
pub const SECURITY_EVENT: u8 = 0x03;

/// Length of a refusal's entry.
pub const REFUSAL_LEN: usize = 73;

/// The entry of `index` of `conversation`, attested in `epoch` with the
/// chain head `head` after it (defined in [`grompi_proto::audit`], where
/// members recompute it).
pub use grompi_proto::audit::attestation_entry as attestation;

/// The entry of a refused attempt to attest another envelope at `index` of
/// `conversation`, kept (or counted) as evidence number `number`;
/// `evidence` is the refused request as the server encodes it for keeping.
pub fn refusal(
    conversation: &ConversationId,
    index: Index,
    number: u64,
    evidence: &[u8],
) -> [u8; REFUSAL_LEN] {
    let target = Canonical::new()
        .fixed(conversation.as_bytes())
        .u64(index.0)
        .hash(context::AUDIT_REFUSAL);
    let commitment = Canonical::new()
        .fixed(conversation.as_bytes())
        .bytes(evidence)
        .hash(context::AUDIT_EVIDENCE);
    let mut out = [0u8; REFUSAL_LEN];
    out[0] = REFUSAL;
    out[1..9].copy_from_slice(&number.to_be_bytes());
    out[9..41].copy_from_slice(&target);
    out[41..].copy_from_slice(&commitment);
    out
}

/// A security event: the server started, with this version, these keys,
/// this position and these limits. Written at every start, so a change of
/// any of them between two starts is in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityEvent {
    /// What happened: `"start"`.
    pub event: String,
    /// The server's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The order server's public key (hex).
    pub order_server_key: String,
    /// The audit log's verifier key (C2SP signed-note `vkey`).
    pub log_key: String,
    /// The server's position in the network descriptor.
    pub position: u32,
    /// The limits it enforces.
    pub limits: Limits,
}

impl SecurityEvent {
    /// The entry: the type byte and the event as TOML.
    pub fn entry(&self) -> Result<Vec<u8>, toml::ser::Error> {
        let text = toml::to_string(self)?;
        let mut out = Vec::with_capacity(1 + text.len());
        out.push(SECURITY_EVENT);
        out.extend_from_slice(text.as_bytes());
        Ok(out)
    }
}

/// An entry read back, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An attested index, blinded.
    Attestation([u8; 32]),
    /// A refused equivocation attempt.
    Refusal {
        /// The evidence number.
        number: u64,
        /// The blinded (conversation, index).
        target: [u8; 32],
        /// The commitment to the kept evidence.
        evidence: [u8; 32],
    },
    /// A security event's TOML text.
    SecurityEvent(String),
}

/// Why an entry did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The entry is empty.
    #[error("the entry is empty")]
    Empty,
    /// The type byte is none of the known ones.
    #[error("unknown entry type 0x{0:02x}")]
    UnknownType(u8),
    /// The entry's length is not its type's.
    #[error("an entry of type 0x{kind:02x} is {len} bytes; it must be {expected}")]
    Length {
        /// The type byte.
        kind: u8,
        /// The entry's length.
        len: usize,
        /// The type's length.
        expected: usize,
    },
    /// A security event is not UTF-8.
    #[error("a security event's text is not UTF-8")]
    NotText,
}

fn fixed(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(bytes);
    out
}

impl Entry {
    /// Parses an entry.
    pub fn parse(bytes: &[u8]) -> Result<Self, EntryError> {
        let (&kind, rest) = bytes.split_first().ok_or(EntryError::Empty)?;
        let length = |expected: usize| {
            if bytes.len() == expected {
                Ok(())
            } else {
                Err(EntryError::Length {
                    kind,
                    len: bytes.len(),
                    expected,
                })
            }
        };
        match kind {
            ATTESTATION => {
                length(ATTESTATION_LEN)?;
                Ok(Self::Attestation(fixed(rest)))
            }
            REFUSAL => {
                length(REFUSAL_LEN)?;
                let mut number = [0u8; 8];
                number.copy_from_slice(&rest[..8]);
                Ok(Self::Refusal {
                    number: u64::from_be_bytes(number),
                    target: fixed(&rest[8..40]),
                    evidence: fixed(&rest[40..]),
                })
            }
            SECURITY_EVENT => std::str::from_utf8(rest)
                .map(|t| Self::SecurityEvent(t.to_owned()))
                .map_err(|_| EntryError::NotText),
            other => Err(EntryError::UnknownType(other)),
        }
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Attestation(b) => write!(f, "attestation {}", hex::encode(b)),
            Entry::Refusal {
                number,
                target,
                evidence,
            } => write!(
                f,
                "refusal #{number} target {} evidence {}",
                hex::encode(target),
                hex::encode(evidence)
            ),
            Entry::SecurityEvent(text) => write!(f, "security event\n{text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::{Epoch, Head};
    use proptest::prelude::*;

    #[test]
    fn entries_match_the_published_vectors() {
        let v = grompi_proto::vectors::find("audit_entry_attestation").unwrap();
        let conv = ConversationId::from_bytes(
            v.field_bytes("conversation_id")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        let head = Head::from_bytes(v.field_bytes("head").unwrap().try_into().unwrap());
        let e = attestation(&conv, Epoch(2), Index(17), &head);
        assert_eq!(e[0], ATTESTATION);
        assert_eq!(e[1..].to_vec(), v.output_bytes().unwrap());
        // The input laid out in place is the canonical encoding.
        let canonical = Canonical::new()
            .fixed(conv.as_bytes())
            .u64(2)
            .u64(17)
            .fixed(head.as_bytes());
        assert_eq!(canonical.as_bytes().to_vec(), v.input_bytes().unwrap());

        let v = grompi_proto::vectors::find("audit_entry_refusal").unwrap();
        let conv = ConversationId::from_bytes(
            v.field_bytes("conversation_id")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        let ev = grompi_proto::vectors::find("audit_evidence_commitment").unwrap();
        let evidence = ev.field_bytes("evidence").unwrap();
        let e = refusal(&conv, Index(17), 5, &evidence);
        assert_eq!(e[0], REFUSAL);
        assert_eq!(e[1..9], 5u64.to_be_bytes());
        assert_eq!(e[9..41].to_vec(), v.output_bytes().unwrap());
        assert_eq!(e[41..].to_vec(), ev.output_bytes().unwrap());
    }

    #[test]
    fn a_security_event_is_toml_after_its_type_byte() {
        let event = SecurityEvent {
            event: "start".into(),
            version: "0.1.0".into(),
            order_server_key: "ab".repeat(32),
            log_key: "example.com/log+01234567+AQ==".into(),
            position: 2,
            limits: Limits::default(),
        };
        let bytes = event.entry().unwrap();
        let Entry::SecurityEvent(text) = Entry::parse(&bytes).unwrap() else {
            panic!("not an event");
        };
        assert!(
            text.starts_with("event = \"start\"\nversion = \"0.1.0\""),
            "{text}"
        );
        assert!(text.contains("position = 2"), "{text}");
        assert!(text.contains("[limits]\nmax_slots = "), "{text}");
    }

    #[test]
    fn wrong_lengths_and_types_are_refused() {
        assert_eq!(Entry::parse(&[]), Err(EntryError::Empty));
        assert_eq!(Entry::parse(&[9]), Err(EntryError::UnknownType(9)));
        assert!(matches!(
            Entry::parse(&[ATTESTATION; 32]),
            Err(EntryError::Length { expected: 33, .. })
        ));
        assert!(matches!(
            Entry::parse(&[REFUSAL; 74]),
            Err(EntryError::Length { expected: 73, .. })
        ));
        assert_eq!(
            Entry::parse(&[SECURITY_EVENT, 0xff]),
            Err(EntryError::NotText)
        );
    }

    proptest! {
        /// Entries round-trip, and a change of any input changes the entry.
        #[test]
        fn entries_parse_back_and_bind_every_input(c in any::<[u8; 32]>(), e in any::<u64>(), i in any::<u64>(), h in any::<[u8; 32]>(), n in any::<u64>(), ev in proptest::collection::vec(any::<u8>(), 0..64), flip in 0usize..4) {
            let conv = ConversationId::from_bytes(c);
            let a = attestation(&conv, Epoch(e), Index(i), &Head::from_bytes(h));
            prop_assert!(matches!(Entry::parse(&a), Ok(Entry::Attestation(b)) if b[..] == a[1..]));
            let mut c2 = c;
            let (mut e2, mut i2, mut h2) = (e, i, h);
            match flip {
                0 => c2[0] ^= 1,
                1 => e2 ^= 1,
                2 => i2 ^= 1,
                _ => h2[31] ^= 1,
            }
            let other = attestation(&ConversationId::from_bytes(c2), Epoch(e2), Index(i2), &Head::from_bytes(h2));
            prop_assert_ne!(a, other);
            let r = refusal(&conv, Index(i), n, &ev);
            match Entry::parse(&r) {
                Ok(Entry::Refusal { number, .. }) => prop_assert_eq!(number, n),
                other => prop_assert!(false, "{:?}", other),
            }
            let mut ev2 = ev.clone();
            ev2.push(0);
            prop_assert_ne!(r[41..].to_vec(), refusal(&conv, Index(i), n, &ev2)[41..].to_vec());
        }

        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Entry::parse(&bytes);
        }
    }
}
