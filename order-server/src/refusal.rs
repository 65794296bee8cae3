//! Refusals: why one attestation item was not attested, with the stable
//! wire code for each reason.

use grompi_proto::pb::RefusalReason;
use grompi_proto::{Index, Misbehaviour};

/// One refused item: the reason, and the server's next index in that
/// conversation (0 when the conversation is unknown), so that a router that
/// fell behind or ahead can resynchronise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (next index {next_index})")]
pub struct Refusal {
    /// What was wrong.
    pub reason: Misbehaviour,
    /// The conversation's next index.
    pub next_index: Index,
}

/// The wire code for a reason. Reasons that never reach an order server's
/// refusals (those only clients detect) map to `UNSPECIFIED`; the match
/// names every reason, so none falls there by accident.
pub fn reason_code(reason: &Misbehaviour) -> RefusalReason {
    use Misbehaviour as M;
    match reason {
        M::Malformed(_) | M::LowOrderKey => RefusalReason::Malformed,
        M::UnknownConversation => RefusalReason::UnknownConversation,
        M::WrongEpoch { .. } => RefusalReason::WrongEpoch,
        M::UnknownSlot { .. } => RefusalReason::UnknownSlot,
        M::BadSubmissionTag { .. } => RefusalReason::BadSubmissionTag,
        M::SequenceNotIncreasing { .. } => RefusalReason::SequenceNotIncreasing,
        M::IndexMismatch { .. } => RefusalReason::IndexMismatch,
        M::HeadMismatch { .. } => RefusalReason::HeadMismatch,
        M::Equivocation { .. } => RefusalReason::Equivocation,
        // An Update the sender may not make: from a non-admin slot, or
        // leaving no admin slot.
        M::NotAuthorized { .. } | M::UnauthorizedUpdate(_) => RefusalReason::NotAuthorized,
        M::SlotSetMismatch => RefusalReason::SlotSetMismatch,
        M::LimitExceeded(_) => RefusalReason::LimitExceeded,
        M::UnexpectedKind(_) => RefusalReason::UnexpectedKind,
        // Opening an id twice is answered with a gRPC status, never as an
        // item's refusal; the rest only clients detect. Listed one by one
        // so that a new reason needs a decision here.
        M::ConversationExists
        | M::BadAttestation { .. }
        | M::ConflictingHeads { .. }
        | M::RewrittenIndex { .. }
        | M::WrongContext
        | M::Gap { .. }
        | M::BlockDigestMismatch
        | M::KeyCommitmentMismatch
        | M::Undecryptable(_)
        | M::UnauthenticatedSender { .. }
        | M::ForeignSlotKey
        | M::BadHeadProof { .. }
        | M::HeadProofFork { .. }
        | M::Withheld { .. }
        | M::ReceiptMismatch { .. }
        | M::UnattestedEnvelope { .. }
        | M::RolledBack { .. }
        | M::BadKeyShare { .. }
        | M::Rn1Mismatch
        | M::MissingKeyShare { .. }
        | M::WrongKeyId(_)
        | M::HistoryMismatch(_)
        | M::BadHistoryBlock(_) => RefusalReason::Unspecified,
    }
}

/// A short, stable label for a reason, for metrics.
pub fn reason_label(reason: &Misbehaviour) -> &'static str {
    match reason_code(reason) {
        RefusalReason::Unspecified => "other",
        RefusalReason::Malformed => "malformed",
        RefusalReason::UnknownConversation => "unknown_conversation",
        RefusalReason::WrongEpoch => "wrong_epoch",
        RefusalReason::UnknownSlot => "unknown_slot",
        RefusalReason::BadSubmissionTag => "bad_submission_tag",
        RefusalReason::SequenceNotIncreasing => "sequence_not_increasing",
        RefusalReason::IndexMismatch => "index_mismatch",
        RefusalReason::HeadMismatch => "head_mismatch",
        RefusalReason::Equivocation => "equivocation",
        RefusalReason::NotAuthorized => "not_authorized",
        RefusalReason::SlotSetMismatch => "slot_set_mismatch",
        RefusalReason::LimitExceeded => "limit_exceeded",
        RefusalReason::UnexpectedKind => "unexpected_kind",
    }
}

impl From<&Refusal> for grompi_proto::pb::Refusal {
    fn from(r: &Refusal) -> Self {
        Self {
            reason: reason_code(&r.reason) as i32,
            message: r.reason.to_string(),
            next_index: r.next_index.0,
        }
    }
}
