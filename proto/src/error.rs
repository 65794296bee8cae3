//! Errors: [`WireError`] for input that does not parse, and [`Misbehaviour`]
//! for every way a peer (router, order server or member) can deviate from
//! the protocol. Each variant of [`Misbehaviour`] is raised by some core
//! and exercised by a simulator scenario (`docs/SIMULATOR.md` lists which).
//! A replay has no variant of its own: an identical re-delivery at an
//! accepted index is a harmless duplicate (routers deliver again after a
//! reconnection), a different envelope there is `RewrittenIndex`, an old
//! envelope relabelled to a new index fails its tags (the head binds the
//! index), and a replayed submission is `SequenceNotIncreasing`.

use crate::ids::{Epoch, Index, Sequence, SlotIndex};

/// Why a wire message or file did not parse into a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a valid protobuf encoding of the message.
    #[error("not a valid protobuf message: {0}")]
    Decode(String),
    /// A required field is absent.
    #[error("missing required field {0}")]
    MissingField(&'static str),
    /// A fixed-length field has the wrong length.
    #[error("field {field} must be {expected} bytes, got {got}")]
    WrongLength {
        /// The protobuf field path, such as `header.kind`.
        field: &'static str,
        /// The length the protocol fixes for it, in bytes.
        expected: usize,
        /// The length received, in bytes.
        got: usize,
    },
    /// A variable-length field is longer than the protocol allows.
    #[error("field {field} is {got} bytes, more than the limit of {max}")]
    TooLarge {
        /// The protobuf field path, such as `header.kind`.
        field: &'static str,
        /// The largest length the protocol allows, in bytes.
        max: usize,
        /// The length received, in bytes.
        got: usize,
    },
    /// A list has more items than the protocol allows.
    #[error("field {field} has {got} items, more than the limit of {max}")]
    TooMany {
        /// The protobuf field path of the list.
        field: &'static str,
        /// The largest number of items the protocol allows.
        max: usize,
        /// The number of items received.
        got: usize,
    },
    /// An enum field has a value this version does not know (or the
    /// unspecified zero value).
    #[error("field {field} has unknown value {value}")]
    UnknownEnum {
        /// The protobuf field path, such as `slot.role`.
        field: &'static str,
        /// The raw value received (0 is the unspecified value).
        value: i32,
    },
    /// A field is well-formed but breaks a rule of the protocol.
    #[error("field {field} is invalid: {reason}")]
    Invalid {
        /// The protobuf field path of the well-formed but invalid field.
        field: &'static str,
        /// The rule it breaks, in words, for logs and refusals.
        reason: &'static str,
    },
}

impl From<prost::DecodeError> for WireError {
    fn from(e: prost::DecodeError) -> Self {
        Self::Decode(e.to_string())
    }
}

/// Every way a peer can misbehave, named once. Order servers detect the
/// first group (and refuse), clients detect the rest (and raise an alert).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misbehaviour {
    // ---- Any peer -------------------------------------------------------
    /// A message did not parse.
    #[error("malformed input: {0}")]
    Malformed(#[from] WireError),
    /// A key offered for key agreement is of low order.
    #[error("a public key is of low order")]
    LowOrderKey,

    // ---- Detected by an order server (of the router or a sender) --------
    /// An open request for a conversation id the server has already seen.
    #[error("conversation already exists; ids are never reused")]
    ConversationExists,
    /// A request for a conversation the server never opened.
    #[error("unknown conversation")]
    UnknownConversation,
    /// An envelope from an epoch other than the conversation's current one.
    #[error("wrong epoch: the conversation is at epoch {expected}, the envelope says {got}")]
    WrongEpoch {
        /// The epoch the order server holds for the conversation now.
        expected: Epoch,
        /// The epoch the envelope's header names.
        got: Epoch,
    },
    /// A sender slot outside the slot set.
    #[error("slot {slot} does not exist; the slot set has {slot_count} slots")]
    UnknownSlot {
        /// The sender slot the header names, absent from the current slot set.
        slot: SlotIndex,
        /// The number of slots in the current epoch's slot set.
        slot_count: usize,
    },
    /// The sender's submission tag does not verify: the envelope was not
    /// sent by the holder of the slot key (an injection attempt).
    #[error("submission tag does not verify for slot {slot}")]
    BadSubmissionTag {
        /// The sender slot the header names, whose key the tag fails under.
        slot: SlotIndex,
    },
    /// A sequence number not above the last one seen from the slot (a replay).
    #[error("sequence {got} from slot {slot} is not above the last accepted {last}")]
    SequenceNotIncreasing {
        /// The sender slot the header names.
        slot: SlotIndex,
        /// The highest sequence attested for that slot in this epoch.
        last: Sequence,
        /// The sequence in the envelope's header, at or below `last`.
        got: Sequence,
    },
    /// The router asked for an index other than the next one.
    #[error("index {got} requested, but the next index is {expected}")]
    IndexMismatch {
        /// The index this order server attests next: one past its last.
        expected: Index,
        /// The index the router asked this server to attest.
        got: Index,
    },
    /// The router's previous head is not the server's head.
    #[error("previous head does not match the attested chain at index {index}")]
    HeadMismatch {
        /// The index whose predecessor was wrong.
        index: Index,
    },
    /// A different envelope for an index that is already attested.
    #[error("index {index} is already attested to a different envelope")]
    Equivocation {
        /// The index already attested, to an envelope with another hash.
        index: Index,
    },
    /// An Update from a slot without the admin role.
    #[error("slot {slot} may not send updates")]
    NotAuthorized {
        /// The sender slot the Update's header names, whose role is not Admin.
        slot: SlotIndex,
    },
    /// The slot set supplied does not match the hash in the header.
    #[error("slot set does not match the header's slot set hash")]
    SlotSetMismatch,
    /// An envelope kind that is not allowed at this point (a Setup after
    /// index 0, anything else at index 0).
    #[error("envelope kind not allowed here: {0}")]
    UnexpectedKind(&'static str),
    /// A configured limit was exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),

    // ---- Detected by a client (of the router, order servers or senders) --
    /// An order server's tag does not verify.
    #[error("attestation from order server {server} does not verify at index {index}")]
    BadAttestation {
        /// The order server's position (from 0) in the network descriptor,
        /// filled in by the router from its configuration.
        server: u32,
        /// The delivered index whose tag from that server fails.
        index: Index,
    },
    /// Order servers attest different heads for one index: a fork.
    #[error("order servers disagree on the head of index {index}: the conversation was forked")]
    ConflictingHeads {
        /// The index for which the servers' tags name different heads.
        index: Index,
    },
    /// A delivery for an index already accepted, with a different envelope.
    #[error("a different envelope was delivered for accepted index {index}")]
    RewrittenIndex {
        /// The accepted index that was delivered again with another envelope.
        index: Index,
    },
    /// A delivery whose conversation, or epoch, is not the one expected.
    #[error("a delivery from another conversation or epoch")]
    WrongContext,
    /// Deliveries stopped with a gap the router does not fill.
    #[error("indices after {after} are missing")]
    Gap {
        /// The last index this member accepted (0 when it accepted none);
        /// the next one is missing while later ones arrived.
        after: Index,
    },
    /// A recipient block's digest does not match the delivered digest list.
    #[error("recipient block does not match its digest")]
    BlockDigestMismatch,
    /// The body key in a block does not match the header's commitment.
    #[error("body key does not match the header's key commitment")]
    KeyCommitmentMismatch,
    /// A block or body that does not decrypt, or a block bound to another
    /// envelope.
    #[error("could not decrypt: {0}")]
    Undecryptable(&'static str),
    /// The sender of an envelope cannot be authenticated.
    #[error("the sender of index {index} could not be authenticated")]
    UnauthenticatedSender {
        /// The index whose envelope could not be tied to the account that
        /// holds its sender slot (or whose sender slot no other member holds).
        index: Index,
    },
    /// A membership change that the membership rules forbid.
    #[error("unauthorized membership change: {0}")]
    UnauthorizedUpdate(&'static str),
    /// A Setup or Update assigns this member a slot key it does not hold.
    #[error("the slot assigned to this member is not one of its order keys")]
    ForeignSlotKey,
    /// A head proof that does not verify, or answers another nonce. The
    /// router relays every proof and chooses which slot a server answers
    /// for, so a proof that does not verify names the server it was
    /// relayed for, not a culprit: the router or that server misbehaved.
    #[error(
        "the head proof relayed for order server {server} does not verify (the router or that server misbehaved)"
    )]
    BadHeadProof {
        /// The position (from 0) in the network descriptor of the order
        /// server the proof was relayed for; not necessarily the culprit.
        server: u32,
    },
    /// A head proof whose head differs from this member's transcript at the
    /// same count.
    #[error("order server {server} proves a head that differs from ours at count {count}")]
    HeadProofFork {
        /// The order server's position (from 0) in the network descriptor.
        server: u32,
        /// The number of indices the server proves, whose last head differs
        /// from this member's head after the same number of indices.
        count: u64,
    },
    /// Attested indices exist that were not delivered to this member.
    #[error(
        "order server {server} has attested {attested} indices, only {delivered} were delivered"
    )]
    Withheld {
        /// The order server's position (from 0) in the network descriptor.
        server: u32,
        /// The number of indices the server proves it attested.
        attested: u64,
        /// The number of indices delivered to this member (accepted or
        /// buffered), below `attested`.
        delivered: u64,
    },
    /// A member's receipt names a head that differs from ours.
    #[error("a receipt reports a different head at index {index}")]
    ReceiptMismatch {
        /// The index the receipt says its sender processed through
        /// (`through`), at which its head differs from ours.
        index: Index,
    },
    /// Enough order servers attested a head for this index, but the
    /// envelope delivered for it does not chain to that head: the router
    /// substituted the envelope (or the head before it).
    #[error("the envelope delivered for index {index} is not the one the order servers attested")]
    UnattestedEnvelope {
        /// The index whose delivered envelope does not chain to the
        /// attested head.
        index: Index,
    },
    /// An order server proved less than it proved before (a smaller count
    /// or an earlier epoch), or a different head at a count it proved
    /// before: it was restored from an old state, or it equivocates.
    #[error(
        "order server {server} proved count {count} after proving count {proved} (epoch {proved_epoch}): rolled back or equivocating"
    )]
    RolledBack {
        /// The order server's position (from 0) in the network descriptor.
        server: u32,
        /// The number of indices it proved in its earlier, highest proof.
        proved: u64,
        /// The epoch named by that earlier proof.
        proved_epoch: Epoch,
        /// The number of indices it proves now: below `proved`, or equal
        /// with another head, or in an earlier epoch.
        count: u64,
    },
    /// An order server's key share for this member's slot does not open
    /// under the member's slot key for its conversation, epoch and period,
    /// or came with an index where no key period starts (group-keyed
    /// conversations). The router relays shares, so like a head proof the
    /// alert names the server it was relayed for, not a culprit. The
    /// conversation goes on without that server's share.
    #[error(
        "the key share relayed for order server {server} does not open, or came where no key period starts (the router or that server misbehaved)"
    )]
    BadKeyShare {
        /// The position (from 0) in the network descriptor of the order
        /// server the share was relayed for.
        server: u32,
    },
    /// The RN1 in this member's block of a Setup, Update or Rekey does not
    /// match the commitment in the header, or is missing although this
    /// member takes part in the generation it starts: the sender gave
    /// members different group keys.
    #[error("the block's RN1 does not match the header's commitment, or is missing")]
    Rn1Mismatch,
    /// A Message or Receipt names an order server's key share this member
    /// does not hold for that period (its tag and share never arrived): the
    /// body cannot be opened here.
    #[error(
        "the envelope's key mixes order server {server}'s share, which this member does not hold"
    )]
    MissingKeyShare {
        /// The position (from 0) in the network descriptor of the order
        /// server whose share is missing.
        server: u32,
    },
    /// An envelope's group key fields do not fit the conversation: none in
    /// a group-keyed conversation, some in a pairwise-keyed one, a key
    /// generation this member does not hold, or a key period not yet
    /// started or long over.
    #[error("the envelope's key does not fit the conversation: {0}")]
    WrongKeyId(&'static str),
    /// The history the router returned for a conversation is not the
    /// attested one: an envelope is missing, altered, out of order or
    /// added, so the head chain recomputed from the genesis does not reach
    /// the head this member accepted (`docs/PROTOCOL.md` section 4.6).
    /// Nothing of that history is shown.
    #[error("the conversation's history does not match the attested chain: {0}")]
    HistoryMismatch(&'static str),
    /// An envelope of a conversation that shares its history has no history
    /// block, or one that does not give the envelope's body key or the
    /// history key it must link: members added later cannot read it.
    #[error("the envelope's history block is missing or wrong: {0}")]
    BadHistoryBlock(&'static str),
}

/// The kind of a [`Misbehaviour`], without its details: for metrics labels,
/// simulator scenarios (one per kind) and stable names in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MisbehaviourKind {
    /// See [`Misbehaviour::Malformed`].
    Malformed,
    /// See [`Misbehaviour::LowOrderKey`].
    LowOrderKey,
    /// See [`Misbehaviour::ConversationExists`].
    ConversationExists,
    /// See [`Misbehaviour::UnknownConversation`].
    UnknownConversation,
    /// See [`Misbehaviour::WrongEpoch`].
    WrongEpoch,
    /// See [`Misbehaviour::UnknownSlot`].
    UnknownSlot,
    /// See [`Misbehaviour::BadSubmissionTag`].
    BadSubmissionTag,
    /// See [`Misbehaviour::SequenceNotIncreasing`].
    SequenceNotIncreasing,
    /// See [`Misbehaviour::IndexMismatch`].
    IndexMismatch,
    /// See [`Misbehaviour::HeadMismatch`].
    HeadMismatch,
    /// See [`Misbehaviour::Equivocation`].
    Equivocation,
    /// See [`Misbehaviour::NotAuthorized`].
    NotAuthorized,
    /// See [`Misbehaviour::SlotSetMismatch`].
    SlotSetMismatch,
    /// See [`Misbehaviour::UnexpectedKind`].
    UnexpectedKind,
    /// See [`Misbehaviour::LimitExceeded`].
    LimitExceeded,
    /// See [`Misbehaviour::BadAttestation`].
    BadAttestation,
    /// See [`Misbehaviour::ConflictingHeads`].
    ConflictingHeads,
    /// See [`Misbehaviour::RewrittenIndex`].
    RewrittenIndex,
    /// See [`Misbehaviour::WrongContext`].
    WrongContext,
    /// See [`Misbehaviour::Gap`].
    Gap,
    /// See [`Misbehaviour::BlockDigestMismatch`].
    BlockDigestMismatch,
    /// See [`Misbehaviour::KeyCommitmentMismatch`].
    KeyCommitmentMismatch,
    /// See [`Misbehaviour::Undecryptable`].
    Undecryptable,
    /// See [`Misbehaviour::UnauthenticatedSender`].
    UnauthenticatedSender,
    /// See [`Misbehaviour::UnauthorizedUpdate`].
    UnauthorizedUpdate,
    /// See [`Misbehaviour::ForeignSlotKey`].
    ForeignSlotKey,
    /// See [`Misbehaviour::BadHeadProof`].
    BadHeadProof,
    /// See [`Misbehaviour::HeadProofFork`].
    HeadProofFork,
    /// See [`Misbehaviour::Withheld`].
    Withheld,
    /// See [`Misbehaviour::ReceiptMismatch`].
    ReceiptMismatch,
    /// See [`Misbehaviour::UnattestedEnvelope`].
    UnattestedEnvelope,
    /// See [`Misbehaviour::RolledBack`].
    RolledBack,
    /// See [`Misbehaviour::BadKeyShare`].
    BadKeyShare,
    /// See [`Misbehaviour::Rn1Mismatch`].
    Rn1Mismatch,
    /// See [`Misbehaviour::MissingKeyShare`].
    MissingKeyShare,
    /// See [`Misbehaviour::WrongKeyId`].
    WrongKeyId,
    /// See [`Misbehaviour::HistoryMismatch`].
    HistoryMismatch,
    /// See [`Misbehaviour::BadHistoryBlock`].
    BadHistoryBlock,
}

impl MisbehaviourKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [MisbehaviourKind] = &[
        Self::Malformed,
        Self::LowOrderKey,
        Self::ConversationExists,
        Self::UnknownConversation,
        Self::WrongEpoch,
        Self::UnknownSlot,
        Self::BadSubmissionTag,
        Self::SequenceNotIncreasing,
        Self::IndexMismatch,
        Self::HeadMismatch,
        Self::Equivocation,
        Self::NotAuthorized,
        Self::SlotSetMismatch,
        Self::UnexpectedKind,
        Self::LimitExceeded,
        Self::BadAttestation,
        Self::ConflictingHeads,
        Self::RewrittenIndex,
        Self::WrongContext,
        Self::Gap,
        Self::BlockDigestMismatch,
        Self::KeyCommitmentMismatch,
        Self::Undecryptable,
        Self::UnauthenticatedSender,
        Self::UnauthorizedUpdate,
        Self::ForeignSlotKey,
        Self::BadHeadProof,
        Self::HeadProofFork,
        Self::Withheld,
        Self::ReceiptMismatch,
        Self::UnattestedEnvelope,
        Self::RolledBack,
        Self::BadKeyShare,
        Self::Rn1Mismatch,
        Self::MissingKeyShare,
        Self::WrongKeyId,
        Self::HistoryMismatch,
        Self::BadHistoryBlock,
    ];

    /// A stable snake_case name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::LowOrderKey => "low_order_key",
            Self::ConversationExists => "conversation_exists",
            Self::UnknownConversation => "unknown_conversation",
            Self::WrongEpoch => "wrong_epoch",
            Self::UnknownSlot => "unknown_slot",
            Self::BadSubmissionTag => "bad_submission_tag",
            Self::SequenceNotIncreasing => "sequence_not_increasing",
            Self::IndexMismatch => "index_mismatch",
            Self::HeadMismatch => "head_mismatch",
            Self::Equivocation => "equivocation",
            Self::NotAuthorized => "not_authorized",
            Self::SlotSetMismatch => "slot_set_mismatch",
            Self::UnexpectedKind => "unexpected_kind",
            Self::LimitExceeded => "limit_exceeded",
            Self::BadAttestation => "bad_attestation",
            Self::ConflictingHeads => "conflicting_heads",
            Self::RewrittenIndex => "rewritten_index",
            Self::WrongContext => "wrong_context",
            Self::Gap => "gap",
            Self::BlockDigestMismatch => "block_digest_mismatch",
            Self::KeyCommitmentMismatch => "key_commitment_mismatch",
            Self::Undecryptable => "undecryptable",
            Self::UnauthenticatedSender => "unauthenticated_sender",
            Self::UnauthorizedUpdate => "unauthorized_update",
            Self::ForeignSlotKey => "foreign_slot_key",
            Self::BadHeadProof => "bad_head_proof",
            Self::HeadProofFork => "head_proof_fork",
            Self::Withheld => "withheld",
            Self::ReceiptMismatch => "receipt_mismatch",
            Self::UnattestedEnvelope => "unattested_envelope",
            Self::RolledBack => "rolled_back",
            Self::BadKeyShare => "bad_key_share",
            Self::Rn1Mismatch => "rn1_mismatch",
            Self::MissingKeyShare => "missing_key_share",
            Self::WrongKeyId => "wrong_key_id",
            Self::HistoryMismatch => "history_mismatch",
            Self::BadHistoryBlock => "bad_history_block",
        }
    }

    /// The kind with this name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for MisbehaviourKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Misbehaviour {
    /// The kind of this misbehaviour.
    pub const fn kind(&self) -> MisbehaviourKind {
        match self {
            Self::Malformed(_) => MisbehaviourKind::Malformed,
            Self::LowOrderKey => MisbehaviourKind::LowOrderKey,
            Self::ConversationExists => MisbehaviourKind::ConversationExists,
            Self::UnknownConversation => MisbehaviourKind::UnknownConversation,
            Self::WrongEpoch { .. } => MisbehaviourKind::WrongEpoch,
            Self::UnknownSlot { .. } => MisbehaviourKind::UnknownSlot,
            Self::BadSubmissionTag { .. } => MisbehaviourKind::BadSubmissionTag,
            Self::SequenceNotIncreasing { .. } => MisbehaviourKind::SequenceNotIncreasing,
            Self::IndexMismatch { .. } => MisbehaviourKind::IndexMismatch,
            Self::HeadMismatch { .. } => MisbehaviourKind::HeadMismatch,
            Self::Equivocation { .. } => MisbehaviourKind::Equivocation,
            Self::NotAuthorized { .. } => MisbehaviourKind::NotAuthorized,
            Self::SlotSetMismatch => MisbehaviourKind::SlotSetMismatch,
            Self::UnexpectedKind(_) => MisbehaviourKind::UnexpectedKind,
            Self::LimitExceeded(_) => MisbehaviourKind::LimitExceeded,
            Self::BadAttestation { .. } => MisbehaviourKind::BadAttestation,
            Self::ConflictingHeads { .. } => MisbehaviourKind::ConflictingHeads,
            Self::RewrittenIndex { .. } => MisbehaviourKind::RewrittenIndex,
            Self::WrongContext => MisbehaviourKind::WrongContext,
            Self::Gap { .. } => MisbehaviourKind::Gap,
            Self::BlockDigestMismatch => MisbehaviourKind::BlockDigestMismatch,
            Self::KeyCommitmentMismatch => MisbehaviourKind::KeyCommitmentMismatch,
            Self::Undecryptable(_) => MisbehaviourKind::Undecryptable,
            Self::UnauthenticatedSender { .. } => MisbehaviourKind::UnauthenticatedSender,
            Self::UnauthorizedUpdate(_) => MisbehaviourKind::UnauthorizedUpdate,
            Self::ForeignSlotKey => MisbehaviourKind::ForeignSlotKey,
            Self::BadHeadProof { .. } => MisbehaviourKind::BadHeadProof,
            Self::HeadProofFork { .. } => MisbehaviourKind::HeadProofFork,
            Self::Withheld { .. } => MisbehaviourKind::Withheld,
            Self::ReceiptMismatch { .. } => MisbehaviourKind::ReceiptMismatch,
            Self::UnattestedEnvelope { .. } => MisbehaviourKind::UnattestedEnvelope,
            Self::RolledBack { .. } => MisbehaviourKind::RolledBack,
            Self::BadKeyShare { .. } => MisbehaviourKind::BadKeyShare,
            Self::Rn1Mismatch => MisbehaviourKind::Rn1Mismatch,
            Self::MissingKeyShare { .. } => MisbehaviourKind::MissingKeyShare,
            Self::WrongKeyId(_) => MisbehaviourKind::WrongKeyId,
            Self::HistoryMismatch(_) => MisbehaviourKind::HistoryMismatch,
            Self::BadHistoryBlock(_) => MisbehaviourKind::BadHistoryBlock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_unique_and_parse_back() {
        let mut names = std::collections::HashSet::new();
        for k in MisbehaviourKind::ALL {
            assert!(names.insert(k.name()), "{} twice", k.name());
            assert_eq!(MisbehaviourKind::from_name(k.name()), Some(*k));
        }
        assert_eq!(
            Misbehaviour::Gap { after: Index(3) }.kind(),
            MisbehaviourKind::Gap
        );
        assert_eq!(
            Misbehaviour::Malformed(WireError::MissingField("x"))
                .kind()
                .name(),
            "malformed"
        );
    }
}
