//! What the router persists: one [`Record`] per durable change, produced by
//! the core and committed by the store before any reply that depends on it.
//!
//! Each record maps to one key of one table ([`Record::to_kv`]); values are
//! protobuf messages defined here (storage-only, never on the wire).

use crate::keys::{IdentityKeys, SignedPrekey};
use crate::slots::{EpochSlots, PaddingSecret};
use grompi_proto::mac::Attestation;
use grompi_proto::{
    AccountId, ConversationId, Envelope, EnvelopeHash, Epoch, Head, Index, Sequence, SlotIndex,
    SlotSet, Tag, pb,
};

/// Why a stored value could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not the expected storage message.
    #[error("stored {table} value is corrupt: {reason}")]
    Corrupt {
        /// The table's name ([`Table::name`]).
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
}

fn corrupt(table: &'static str, reason: impl std::fmt::Display) -> RecordError {
    RecordError::Corrupt {
        table,
        reason: reason.to_string(),
    }
}

/// The tables of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// account id -> account
    Accounts,
    /// account id ++ key -> ()
    OneTimePrekeys,
    /// account id ++ key -> ()
    OrderKeys,
    /// token hash -> account id
    Sessions,
    /// conversation id -> slot sets, holders, padding secrets, opened servers
    Conversations,
    /// conversation id -> next index ++ head
    Tails,
    /// conversation id ++ index -> envelope
    Envelopes,
    /// conversation id ++ index ++ server -> attestation
    Attestations,
    /// conversation id ++ server -> attested count
    Progress,
    /// conversation id ++ epoch ++ slot -> sequence ++ index ++ envelope
    /// hash of the last envelope admitted from that slot
    SlotTails,
    /// conversation id -> the first index whose envelope is still stored
    /// (no row: 0, nothing removed); the retention setting removes the
    /// envelopes below it
    FirstStored,
    /// conversation id ++ epoch ++ slot ++ sequence -> index ++ envelope
    /// hash of every envelope a member submitted that is still stored
    /// (removed with its envelope): a resubmission of an older envelope,
    /// no longer in memory, is recognised
    SlotSequences,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 12] = [
        Table::Accounts,
        Table::OneTimePrekeys,
        Table::OrderKeys,
        Table::Sessions,
        Table::Conversations,
        Table::Tails,
        Table::Envelopes,
        Table::Attestations,
        Table::Progress,
        Table::SlotTails,
        Table::FirstStored,
        Table::SlotSequences,
    ];

    /// The table's name in the store.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Accounts => "accounts",
            Table::OneTimePrekeys => "one_time_prekeys",
            Table::OrderKeys => "order_keys",
            Table::Sessions => "sessions",
            Table::Conversations => "conversations",
            Table::Tails => "tails",
            Table::Envelopes => "envelopes",
            Table::Attestations => "attestations",
            Table::Progress => "progress",
            Table::SlotTails => "slot_tails",
            Table::FirstStored => "first_stored",
            Table::SlotSequences => "slot_sequences",
        }
    }
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Derived from the identity keys ([`AccountId::of_identity`]); the row key.
    pub id: AccountId,
    /// Identity keys.
    pub identity: IdentityKeys,
    /// The signed prekey every bundle hands out (with a one-time prekey while any is left).
    pub fallback: SignedPrekey,
}

/// A conversation's slot sets and per-server open state, as stored.
#[derive(Debug, Clone)]
pub struct ConversationRecord {
    /// The conversation.
    pub id: ConversationId,
    /// The account that created it.
    pub creator: AccountId,
    /// Installed epochs, in order (epoch n at position n).
    pub epochs: Vec<EpochSlots>,
    /// Prepared next epochs not yet installed by an Update.
    pub prepared: Vec<EpochSlots>,
    /// Per order server: whether it has opened the conversation.
    pub opened: Vec<bool>,
}

/// An envelope as stored at its index.
#[derive(Debug, Clone)]
pub struct StoredEnvelope {
    /// The whole envelope.
    pub envelope: Envelope,
    /// The sender's submission tags, one per order server.
    pub submission_tags: Vec<Tag>,
    /// The head before this index.
    pub previous_head: Head,
    /// The head after it.
    pub head: Head,
    /// Who submitted it (`None` for the router's own noise).
    pub submitter: Option<AccountId>,
    /// For an Update: the slot set it installs.
    pub next_slots: Option<SlotSet>,
}

/// One durable change.
#[derive(Debug, Clone)]
pub enum Record {
    /// Put an account.
    Account(AccountRecord),
    /// Add (`present`) or remove a one-time prekey.
    OneTimePrekey {
        /// Owner.
        account: AccountId,
        /// The public one-time prekey; with the owner, the row key.
        key: [u8; 32],
        /// Whether the key is now present.
        present: bool,
    },
    /// Add (`present`) or remove an order key.
    OrderKey {
        /// Owner.
        account: AccountId,
        /// The public X25519 order key; with the owner, the row key.
        key: [u8; 32],
        /// Whether the key is now present.
        present: bool,
    },
    /// Put a session (by token hash).
    Session {
        /// BLAKE3 of the token.
        hash: [u8; 32],
        /// The account the session authenticates as.
        account: AccountId,
        /// When it ends, in milliseconds since the Unix epoch.
        expires_at: u64,
    },
    /// Delete an ended session.
    SessionEnded {
        /// BLAKE3 of the token.
        hash: [u8; 32],
    },
    /// Put a conversation.
    Conversation(Box<ConversationRecord>),
    /// Put a conversation's next index and head.
    Tail {
        /// The conversation, the row key.
        conversation: ConversationId,
        /// Next index to assign.
        next: Index,
        /// Head before it.
        head: Head,
    },
    /// Put (`Some`) or delete an envelope at an index.
    Envelope {
        /// The conversation; with the index, the row key.
        conversation: ConversationId,
        /// The index it was admitted at.
        index: Index,
        /// The envelope, or `None` to delete.
        stored: Option<Box<StoredEnvelope>>,
    },
    /// Put one order server's attestation of an index (all its slot tags).
    Attestation {
        /// The conversation; with the attestation's index and server, the row key.
        conversation: ConversationId,
        /// The attestation (its `server` is the descriptor position).
        attestation: Attestation,
    },
    /// Put how many indices an order server has attested. Not written any
    /// more: a restart derives progress from the attestation rows
    /// ([`crate::store::load`]). Rows of older stores are still read, and
    /// count where they are higher.
    Progress {
        /// The conversation; with the server, the row key.
        conversation: ConversationId,
        /// The server's position in the network descriptor.
        server: u32,
        /// How many indices it has attested: the next one it is to attest.
        next: Index,
    },
    /// Put (`Some`) or delete the last envelope admitted from a slot in an
    /// epoch, so that a restarted router still recognises a resubmission of
    /// it after every server attested it (and it left memory).
    SlotTail {
        /// The conversation; with the epoch and slot, the row key.
        conversation: ConversationId,
        /// The epoch whose slot set `slot` is in (slot numbers are per epoch).
        epoch: Epoch,
        /// Sender slot.
        slot: SlotIndex,
        /// Its sequence, index and envelope hash, or `None` to delete.
        last: Option<SlotTail>,
    },
    /// Put (`Some`) or delete where a member's envelope was admitted, by
    /// its epoch, sender slot and sequence: written with the admission, so
    /// that a resubmission of it is recognised after it left memory.
    /// Retention removes the row together with the envelope
    /// ([`removed_with_envelope`]).
    SlotSequence {
        /// The conversation; with the epoch, slot and sequence, the row key.
        conversation: ConversationId,
        /// The envelope's epoch.
        epoch: Epoch,
        /// Its sender slot.
        slot: SlotIndex,
        /// Its sequence number.
        sequence: Sequence,
        /// Its index and hash, or `None` to delete.
        admitted: Option<Admitted>,
    },
    /// Retention: delete the envelope at an index below the conversation's
    /// new first stored index (delivered, and attested by every server).
    EnvelopeRemoved {
        /// The conversation; with the index, the row key.
        conversation: ConversationId,
        /// The index removed.
        index: Index,
    },
    /// Retention: delete one order server's attestation of a removed index.
    AttestationRemoved {
        /// The conversation; with the index and server, the row key.
        conversation: ConversationId,
        /// The index removed.
        index: Index,
        /// The server's position in the network descriptor.
        server: u32,
    },
    /// Retention: put the first index whose envelope is still stored.
    FirstStored {
        /// The conversation, the row key.
        conversation: ConversationId,
        /// Every envelope below it has been removed.
        first: Index,
    },
}

/// The last envelope admitted from one slot in one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotTail {
    /// Its sequence number.
    pub sequence: Sequence,
    /// The index it was admitted at.
    pub index: Index,
    /// Its envelope hash.
    pub hash: EnvelopeHash,
}

/// Where a member's envelope was admitted: a row of
/// [`Table::SlotSequences`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The index it was admitted at.
    pub index: Index,
    /// Its envelope hash.
    pub hash: EnvelopeHash,
}

/// Key of a slot sequence row: conversation id, epoch (8 bytes), slot (4
/// bytes), sequence (8 bytes), big-endian.
pub fn slot_sequence_key(
    c: &ConversationId,
    epoch: Epoch,
    slot: SlotIndex,
    sequence: Sequence,
) -> Vec<u8> {
    let mut k = slot_tail_key(c, epoch, slot);
    k.extend_from_slice(&sequence.0.to_be_bytes());
    k
}

/// Decodes a slot sequence value (index, 8 bytes big-endian, then the
/// envelope hash).
pub fn decode_admitted(value: &[u8]) -> Result<Admitted, RecordError> {
    const T: &str = "slot_sequences";
    if value.len() != 40 {
        return Err(corrupt(
            T,
            format!("value is {} bytes, expected 40", value.len()),
        ));
    }
    Ok(Admitted {
        index: Index(u64_be(T, &value[..8])?),
        hash: id32(T, &value[8..40], EnvelopeHash::from_bytes)?,
    })
}

/// The other row that goes when the retention setting removes an envelope
/// row whose stored value was `removed`: the slot sequence row of a
/// member's envelope (`None` for noise, which has none). The core does not
/// hold removed envelopes, so the store derives this row from the value it
/// removes, in the same commit.
pub fn removed_with_envelope(
    conversation: &ConversationId,
    removed: &[u8],
) -> Result<Option<(Table, Vec<u8>)>, RecordError> {
    let stored = decode_envelope(removed)?;
    if stored.submitter.is_none() {
        return Ok(None);
    }
    let h = stored.envelope.header();
    Ok(Some((
        Table::SlotSequences,
        slot_sequence_key(conversation, h.epoch(), h.sender(), h.sequence()),
    )))
}

/// Key of a slot tail: conversation id, epoch (8 bytes), slot (4 bytes), big-endian.
pub fn slot_tail_key(c: &ConversationId, epoch: Epoch, slot: SlotIndex) -> Vec<u8> {
    let mut k = c.to_vec();
    k.extend_from_slice(&epoch.0.to_be_bytes());
    k.extend_from_slice(&slot.0.to_be_bytes());
    k
}

/// Decodes a slot tail row (key: conversation ++ epoch ++ slot).
pub fn decode_slot_tail(
    key: &[u8],
    value: &[u8],
) -> Result<(ConversationId, Epoch, SlotIndex, SlotTail), RecordError> {
    const T: &str = "slot_tails";
    if key.len() != 44 || value.len() != 48 {
        return Err(corrupt(T, "expected a 44-byte key and a 48-byte value"));
    }
    let conversation = id32(T, &key[..32], ConversationId::from_bytes)?;
    let epoch = Epoch(u64_be(T, &key[32..40])?);
    let slot = <[u8; 4]>::try_from(&key[40..44])
        .map(|b| SlotIndex(u32::from_be_bytes(b)))
        .map_err(|_| corrupt(T, "slot"))?;
    let tail = SlotTail {
        sequence: Sequence(u64_be(T, &value[..8])?),
        index: Index(u64_be(T, &value[8..16])?),
        hash: id32(T, &value[16..48], EnvelopeHash::from_bytes)?,
    };
    Ok((conversation, epoch, slot, tail))
}

/// Key of an envelope: conversation id, then index (8 bytes, big-endian): rows sort by index.
pub fn envelope_key(c: &ConversationId, i: Index) -> Vec<u8> {
    let mut k = c.to_vec();
    k.extend_from_slice(&i.0.to_be_bytes());
    k
}

/// Key of an attestation: [`envelope_key`], then the server's position (4 bytes, big-endian).
pub fn attestation_key(c: &ConversationId, i: Index, server: u32) -> Vec<u8> {
    let mut k = envelope_key(c, i);
    k.extend_from_slice(&server.to_be_bytes());
    k
}

/// The index and server position of an [`attestation_key`].
pub fn attestation_key_parts(key: &[u8]) -> Result<(Index, u32), RecordError> {
    const T: &str = "attestations";
    let rest = key
        .get(32..)
        .filter(|r| r.len() == 12)
        .ok_or_else(|| corrupt(T, "key is not 44 bytes"))?;
    let (index, server) = rest.split_at(8);
    Ok((
        Index(u64_be(T, index)?),
        u32::from_be_bytes(<[u8; 4]>::try_from(server).map_err(|_| corrupt(T, "server position"))?),
    ))
}

fn pair_key(a: &[u8; 32], b: &[u8]) -> Vec<u8> {
    let mut k = a.to_vec();
    k.extend_from_slice(b);
    k
}

impl Record {
    /// Whether this record, written while applying an order server's
    /// answer, only restates that answer (tags, progress, and, as the
    /// conversation record written there, which servers have the
    /// conversation open), so that a router that lost it asks again and
    /// gets the same answer. Envelope and tail records never do.
    pub fn restates_answers(&self) -> bool {
        matches!(
            self,
            Record::Attestation { .. } | Record::Progress { .. } | Record::Conversation(_)
        )
    }

    /// Whether this record removes what the retention setting no longer
    /// keeps (an envelope, an attestation, the first stored index moved
    /// up). A router that loses such a record in a crash still holds the
    /// rows and its first stored index as they were, consistently, and
    /// removes them again: it may be committed deferred, like a record
    /// that restates answers.
    pub fn is_retention(&self) -> bool {
        matches!(
            self,
            Record::EnvelopeRemoved { .. }
                | Record::AttestationRemoved { .. }
                | Record::FirstStored { .. }
        )
    }

    /// The table, key and value (`None` = delete) of this record.
    pub fn to_kv(&self) -> (Table, Vec<u8>, Option<Vec<u8>>) {
        use prost::Message;
        match self {
            Record::Account(a) => (
                Table::Accounts,
                a.id.to_vec(),
                Some(
                    msg::Account {
                        signing_key: a.identity.signing.to_vec(),
                        session_key: a.identity.session.to_vec(),
                        fallback_key: a.fallback.key.to_vec(),
                        fallback_signature: a.fallback.signature.to_vec(),
                    }
                    .encode_to_vec(),
                ),
            ),
            Record::OneTimePrekey {
                account,
                key,
                present,
            } => (
                Table::OneTimePrekeys,
                pair_key(account.as_bytes(), key),
                present.then(Vec::new),
            ),
            Record::OrderKey {
                account,
                key,
                present,
            } => (
                Table::OrderKeys,
                pair_key(account.as_bytes(), key),
                present.then(Vec::new),
            ),
            Record::Session {
                hash,
                account,
                expires_at,
            } => {
                let mut value = account.to_vec();
                value.extend_from_slice(&expires_at.to_be_bytes());
                (Table::Sessions, hash.to_vec(), Some(value))
            }
            Record::SessionEnded { hash } => (Table::Sessions, hash.to_vec(), None),
            Record::Conversation(c) => (
                Table::Conversations,
                c.id.to_vec(),
                Some(encode_conversation(c).encode_to_vec()),
            ),
            Record::Tail {
                conversation,
                next,
                head,
            } => {
                let mut v = next.0.to_be_bytes().to_vec();
                v.extend_from_slice(head.as_bytes());
                (Table::Tails, conversation.to_vec(), Some(v))
            }
            Record::Envelope {
                conversation,
                index,
                stored,
            } => (
                Table::Envelopes,
                envelope_key(conversation, *index),
                stored.as_ref().map(|s| encode_envelope(s).encode_to_vec()),
            ),
            Record::Attestation {
                conversation,
                attestation,
            } => (
                Table::Attestations,
                attestation_key(conversation, attestation.index, attestation.server),
                Some(pb::Attestation::from(attestation).encode_to_vec()),
            ),
            Record::Progress {
                conversation,
                server,
                next,
            } => {
                let mut k = conversation.to_vec();
                k.extend_from_slice(&server.to_be_bytes());
                (Table::Progress, k, Some(next.0.to_be_bytes().to_vec()))
            }
            Record::SlotTail {
                conversation,
                epoch,
                slot,
                last,
            } => (
                Table::SlotTails,
                slot_tail_key(conversation, *epoch, *slot),
                last.map(|t| {
                    let mut v = t.sequence.0.to_be_bytes().to_vec();
                    v.extend_from_slice(&t.index.0.to_be_bytes());
                    v.extend_from_slice(t.hash.as_bytes());
                    v
                }),
            ),
            Record::SlotSequence {
                conversation,
                epoch,
                slot,
                sequence,
                admitted,
            } => (
                Table::SlotSequences,
                slot_sequence_key(conversation, *epoch, *slot, *sequence),
                admitted.map(|a| {
                    let mut v = a.index.0.to_be_bytes().to_vec();
                    v.extend_from_slice(a.hash.as_bytes());
                    v
                }),
            ),
            Record::EnvelopeRemoved {
                conversation,
                index,
            } => (Table::Envelopes, envelope_key(conversation, *index), None),
            Record::AttestationRemoved {
                conversation,
                index,
                server,
            } => (
                Table::Attestations,
                attestation_key(conversation, *index, *server),
                None,
            ),
            Record::FirstStored {
                conversation,
                first,
            } => (
                Table::FirstStored,
                conversation.to_vec(),
                Some(first.0.to_be_bytes().to_vec()),
            ),
        }
    }
}

fn id32<T>(table: &'static str, bytes: &[u8], make: fn([u8; 32]) -> T) -> Result<T, RecordError> {
    <[u8; 32]>::try_from(bytes)
        .map(make)
        .map_err(|_| corrupt(table, format!("expected 32 bytes, got {}", bytes.len())))
}

fn u64_be(table: &'static str, bytes: &[u8]) -> Result<u64, RecordError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(table, "expected an 8-byte counter"))
}

/// Decodes an account (key: account id).
pub fn decode_account(key: &[u8], value: &[u8]) -> Result<AccountRecord, RecordError> {
    use prost::Message;
    const T: &str = "accounts";
    let m = msg::Account::decode(value).map_err(|e| corrupt(T, e))?;
    Ok(AccountRecord {
        id: id32(T, key, AccountId::from_bytes)?,
        identity: IdentityKeys {
            signing: id32(T, &m.signing_key, |b| b)?,
            session: id32(T, &m.session_key, |b| b)?,
        },
        fallback: SignedPrekey {
            key: id32(T, &m.fallback_key, |b| b)?,
            signature: <[u8; 64]>::try_from(m.fallback_signature.as_slice())
                .map_err(|_| corrupt(T, "signature length"))?,
        },
    })
}

/// Splits a 64-byte `(account, key)` key.
pub fn decode_pair(table: &'static str, key: &[u8]) -> Result<(AccountId, [u8; 32]), RecordError> {
    let (a, k) = key
        .split_at_checked(32)
        .ok_or_else(|| corrupt(table, "short key"))?;
    Ok((
        id32(table, a, AccountId::from_bytes)?,
        id32(table, k, |b| b)?,
    ))
}

/// A stored session: token hash, account, and when it ends (`None` for a
/// session stored before sessions expired).
pub type StoredSession = ([u8; 32], AccountId, Option<u64>);

/// Decodes a session (key: token hash; value: account id, then the end
/// time as 8 big-endian bytes, absent in records written before sessions
/// expired).
pub fn decode_session(key: &[u8], value: &[u8]) -> Result<StoredSession, RecordError> {
    let hash = id32("sessions", key, |b| b)?;
    match value.len() {
        32 => Ok((hash, id32("sessions", value, AccountId::from_bytes)?, None)),
        40 => {
            let (account, end) = value.split_at(32);
            Ok((
                hash,
                id32("sessions", account, AccountId::from_bytes)?,
                Some(u64_be("sessions", end)?),
            ))
        }
        n => Err(corrupt(
            "sessions",
            format!("value is {n} bytes; expected 32 (account) or 40 (account and end time)"),
        )),
    }
}

/// Decodes a tail (key: conversation id).
pub fn decode_tail(key: &[u8], value: &[u8]) -> Result<(ConversationId, Index, Head), RecordError> {
    const T: &str = "tails";
    let (n, h) = value
        .split_at_checked(8)
        .ok_or_else(|| corrupt(T, "short value"))?;
    Ok((
        id32(T, key, ConversationId::from_bytes)?,
        Index(u64_be(T, n)?),
        id32(T, h, Head::from_bytes)?,
    ))
}

/// Decodes a progress entry (key: conversation id ++ server).
pub fn decode_progress(
    key: &[u8],
    value: &[u8],
) -> Result<(ConversationId, u32, Index), RecordError> {
    const T: &str = "progress";
    let (c, s) = key
        .split_at_checked(32)
        .ok_or_else(|| corrupt(T, "short key"))?;
    let s = <[u8; 4]>::try_from(s).map_err(|_| corrupt(T, "server position"))?;
    Ok((
        id32(T, c, ConversationId::from_bytes)?,
        u32::from_be_bytes(s),
        Index(u64_be(T, value)?),
    ))
}

/// Decodes a first stored index (key: conversation id; value: the index,
/// 8 bytes big-endian).
pub fn decode_first_stored(
    key: &[u8],
    value: &[u8],
) -> Result<(ConversationId, Index), RecordError> {
    const T: &str = "first_stored";
    Ok((
        id32(T, key, ConversationId::from_bytes)?,
        Index(u64_be(T, value)?),
    ))
}

/// Decodes an attestation value.
pub fn decode_attestation(value: &[u8]) -> Result<Attestation, RecordError> {
    grompi_proto::wire::decode::<pb::Attestation, Attestation>(value)
        .map_err(|e| corrupt("attestations", e))
}

fn encode_slots(e: &EpochSlots) -> msg::Epoch {
    msg::Epoch {
        epoch: e.epoch.0,
        first_index: e.first_index.map(|i| i.0),
        slots: Some(pb::SlotSet::from(&e.slots)),
        holders: e
            .holders
            .iter()
            .map(|h| h.map(|a| a.to_vec()).unwrap_or_default())
            .collect(),
        padding_slots: e.padding.iter().map(|(s, _)| s.0).collect(),
        padding_secrets: e.padding.iter().map(|(_, k)| k.to_vec()).collect(),
    }
}

fn decode_slots(m: msg::Epoch) -> Result<EpochSlots, RecordError> {
    const T: &str = "conversations";
    let slots = SlotSet::try_from(m.slots.unwrap_or_default()).map_err(|e| corrupt(T, e))?;
    let holders = m
        .holders
        .iter()
        .map(|h| {
            if h.is_empty() {
                Ok(None)
            } else {
                id32(T, h, AccountId::from_bytes).map(Some)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if holders.len() != slots.len() || m.padding_slots.len() != m.padding_secrets.len() {
        return Err(corrupt(T, "slot and holder counts differ"));
    }
    let padding = m
        .padding_slots
        .iter()
        .zip(m.padding_secrets.iter())
        .map(|(s, k)| Ok((SlotIndex(*s), PaddingSecret::new(id32(T, k, |b| b)?))))
        .collect::<Result<Vec<_>, RecordError>>()?;
    Ok(EpochSlots {
        epoch: Epoch(m.epoch),
        first_index: m.first_index.map(Index),
        slots,
        holders,
        padding,
    })
}

fn encode_conversation(c: &ConversationRecord) -> msg::Conversation {
    msg::Conversation {
        creator: c.creator.to_vec(),
        epochs: c.epochs.iter().map(encode_slots).collect(),
        prepared: c.prepared.iter().map(encode_slots).collect(),
        opened: c.opened.clone(),
    }
}

/// Decodes a conversation (key: conversation id).
pub fn decode_conversation(key: &[u8], value: &[u8]) -> Result<ConversationRecord, RecordError> {
    use prost::Message;
    const T: &str = "conversations";
    let m = msg::Conversation::decode(value).map_err(|e| corrupt(T, e))?;
    Ok(ConversationRecord {
        id: id32(T, key, ConversationId::from_bytes)?,
        creator: id32(T, &m.creator, AccountId::from_bytes)?,
        epochs: m
            .epochs
            .into_iter()
            .map(decode_slots)
            .collect::<Result<_, _>>()?,
        prepared: m
            .prepared
            .into_iter()
            .map(decode_slots)
            .collect::<Result<_, _>>()?,
        opened: m.opened,
    })
}

fn encode_envelope(s: &StoredEnvelope) -> msg::StoredEnvelope {
    msg::StoredEnvelope {
        envelope: Some(pb::Envelope::from(&s.envelope)),
        submission_tags: s.submission_tags.iter().map(Tag::to_vec).collect(),
        previous_head: s.previous_head.to_vec(),
        head: s.head.to_vec(),
        submitter: s.submitter.map(|a| a.to_vec()).unwrap_or_default(),
        next_slots: s.next_slots.as_ref().map(pb::SlotSet::from),
    }
}

/// Decodes a stored envelope.
pub fn decode_envelope(value: &[u8]) -> Result<StoredEnvelope, RecordError> {
    use prost::Message;
    const T: &str = "envelopes";
    let m = msg::StoredEnvelope::decode(value).map_err(|e| corrupt(T, e))?;
    let envelope = Envelope::try_from(m.envelope.unwrap_or_default()).map_err(|e| corrupt(T, e))?;
    Ok(StoredEnvelope {
        envelope,
        submission_tags: m
            .submission_tags
            .iter()
            .map(|t| Tag::parse("submission_tags", t).map_err(|e| corrupt(T, e)))
            .collect::<Result<_, _>>()?,
        previous_head: id32(T, &m.previous_head, Head::from_bytes)?,
        head: id32(T, &m.head, Head::from_bytes)?,
        submitter: if m.submitter.is_empty() {
            None
        } else {
            Some(id32(T, &m.submitter, AccountId::from_bytes)?)
        },
        next_slots: m
            .next_slots
            .map(SlotSet::try_from)
            .transpose()
            .map_err(|e| corrupt(T, e))?,
    })
}

/// Storage-only protobuf messages.
mod msg {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Account {
        #[prost(bytes = "vec", tag = "1")]
        pub signing_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub session_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub fallback_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub fallback_signature: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Epoch {
        #[prost(uint64, tag = "1")]
        pub epoch: u64,
        #[prost(uint64, optional, tag = "2")]
        pub first_index: Option<u64>,
        #[prost(message, optional, tag = "3")]
        pub slots: Option<grompi_proto::pb::SlotSet>,
        #[prost(bytes = "vec", repeated, tag = "4")]
        pub holders: Vec<Vec<u8>>,
        #[prost(uint32, repeated, tag = "5")]
        pub padding_slots: Vec<u32>,
        #[prost(bytes = "vec", repeated, tag = "6")]
        pub padding_secrets: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Conversation {
        #[prost(bytes = "vec", tag = "1")]
        pub creator: Vec<u8>,
        #[prost(message, repeated, tag = "2")]
        pub epochs: Vec<Epoch>,
        #[prost(message, repeated, tag = "3")]
        pub prepared: Vec<Epoch>,
        #[prost(bool, repeated, tag = "4")]
        pub opened: Vec<bool>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StoredEnvelope {
        #[prost(message, optional, tag = "1")]
        pub envelope: Option<grompi_proto::pb::Envelope>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub submission_tags: Vec<Vec<u8>>,
        #[prost(bytes = "vec", tag = "3")]
        pub previous_head: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub head: Vec<u8>,
        #[prost(bytes = "vec", tag = "5")]
        pub submitter: Vec<u8>,
        #[prost(message, optional, tag = "6")]
        pub next_slots: Option<grompi_proto::pb::SlotSet>,
    }
}

/// The bytes the router stores per message, as `docs/OPERATING.md`
/// ("Retention", the size table) gives them: keys and values of the
/// envelope row and of one attestation row per order server. A change of
/// the storage encoding that moves a figure fails here: update the table.
#[cfg(test)]
mod size_tests {
    use super::*;
    use grompi_proto::envelope::{HISTORY_RECIPIENT, HeaderFields};
    use grompi_proto::{BodyHash, EnvelopeHeader, EnvelopeKind, KeyCommitment, RecipientBlock};

    fn row_bytes(r: &Record) -> usize {
        let (_, k, v) = r.to_kv();
        k.len() + v.map_or(0, |v| v.len())
    }

    /// The envelope row of a Message with a `body`-byte body, `olm`
    /// recipient blocks of 200 bytes and a history block if `shared`, from
    /// a network of `servers` order servers.
    fn envelope_row(body: usize, olm: u32, shared: bool, servers: usize) -> usize {
        let c = ConversationId::from_bytes([1; 32]);
        let body = vec![0xAB; body];
        let header = EnvelopeHeader::new(HeaderFields {
            conversation: c,
            epoch: Epoch(3),
            kind: EnvelopeKind::Message,
            sender: SlotIndex(5),
            sequence: Sequence(1_765_000_000_000),
            last_seen: Some(Index(123_456)),
            body_hash: BodyHash::of(&body),
            key_commitment: KeyCommitment::from_bytes([7; 32]),
            slot_set_hash: None,
        })
        .unwrap();
        let mut blocks: Vec<RecipientBlock> = (0..olm)
            .map(|s| RecipientBlock {
                recipient: SlotIndex(s),
                ciphertext: vec![1; 200],
            })
            .collect();
        if shared {
            blocks.push(RecipientBlock {
                recipient: HISTORY_RECIPIENT,
                ciphertext: vec![2; 49],
            });
        }
        row_bytes(&Record::Envelope {
            conversation: c,
            index: Index(123_457),
            stored: Some(Box::new(StoredEnvelope {
                envelope: Envelope::new(header, body, blocks).unwrap(),
                submission_tags: vec![Tag::from_bytes([3; 32]); servers],
                previous_head: Head::from_bytes([4; 32]),
                head: Head::from_bytes([5; 32]),
                submitter: Some(AccountId::from_bytes([6; 32])),
                next_slots: None,
            })),
        })
    }

    /// One order server's attestation row for an epoch of `slots` slots.
    /// (Protobuf length prefixes grow with the value, so sums of the parts
    /// below can be a few bytes off the measured rows.)
    fn attestation_row(slots: usize) -> usize {
        row_bytes(&Record::Attestation {
            conversation: ConversationId::from_bytes([1; 32]),
            attestation: Attestation {
                server: 2,
                index: Index(123_457),
                head: Head::from_bytes([5; 32]),
                tags: vec![Tag::from_bytes([8; 32]); slots],
                next_tags: Vec::new(),
                key_shares: Vec::new(),
                log_index: None,
            },
        })
    }

    /// The slot sequence row of a member's envelope.
    fn slot_sequence_row() -> usize {
        row_bytes(&Record::SlotSequence {
            conversation: ConversationId::from_bytes([1; 32]),
            epoch: Epoch(3),
            slot: SlotIndex(5),
            sequence: Sequence(1_765_000_000_000),
            admitted: Some(Admitted {
                index: Index(123_457),
                hash: EnvelopeHash::from_bytes([9; 32]),
            }),
        })
    }

    #[test]
    fn stored_bytes_per_message_are_those_operating_md_gives() {
        // Fixed part of the envelope row (3 servers, empty body, no block).
        let fixed = envelope_row(0, 0, false, 3);
        // What each further byte of body, block and server adds.
        let body = envelope_row(100, 0, false, 3) - fixed;
        let history = envelope_row(0, 0, true, 3) - fixed;
        let olm = envelope_row(0, 1, false, 3) - fixed;
        let server = envelope_row(0, 0, false, 4) - fixed;
        let att4 = attestation_row(4);
        let per_slot = (attestation_row(8) - att4) / 4;
        for (what, got, want) in [
            ("envelope row, fixed", fixed, 367),
            ("100 bytes of body", body, 103),
            ("history block", history, 60),
            ("one 200-byte Olm block", olm, 207),
            ("one more order server (its submission tag)", server, 34),
            ("attestation row, 4 slots", att4, 220),
            ("one more slot in an attestation row", per_slot, 34),
            ("slot sequence row", slot_sequence_row(), 92),
        ] {
            assert_eq!(
                got, want,
                "{what}: {got} bytes, docs/OPERATING.md says {want}"
            );
        }
        // The table's rows: a 100-byte body (a short text), 3 servers.
        let row = |g_slots: usize, olm: u32, shared: bool| {
            envelope_row(100, olm, shared, 3) + 3 * attestation_row(g_slots) + slot_sequence_row()
        };
        // Group-keyed and shared: 2 members (4 slots), 10 members (16).
        assert_eq!(row(4, 0, true), 1281);
        assert_eq!(row(16, 0, true), 2505);
        // Pairwise-keyed: one Olm block per other member.
        assert_eq!(row(4, 1, false), 1428);
        assert_eq!(row(16, 9, false), 4316);
    }
}
