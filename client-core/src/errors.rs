//! Errors of local operations (composing, creating, key handling). What a
//! peer does wrong is never an error here: it is an [`crate::Alert`].

use grompi_proto::{AccountId, WireError};

/// Why a local operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The conversation is not in a state that allows the operation.
    #[error("the conversation cannot do this now: {0}")]
    NotActive(&'static str),
    /// No pairwise session exists with a peer yet; fetch its prekey bundle
    /// and call `Pairwise::start_session` first.
    #[error("no pairwise session with account {0}; fetch its prekey bundle first")]
    NoSession(AccountId),
    /// A pairwise (Olm) operation failed.
    #[error("pairwise encryption failed: {0}")]
    Pairwise(String),
    /// A prekey bundle that does not verify.
    #[error("prekey bundle rejected: {0}")]
    BadBundle(&'static str),
    /// A slot key assigned to this member that is not one of its order keys.
    #[error("slot key is not one of this member's unused order keys")]
    ForeignSlotKey,
    /// An order server key that cannot be used for key agreement.
    #[error("order server {0} has a low-order key")]
    LowOrderServerKey(usize),
    /// A membership description that breaks the membership rules.
    #[error("invalid membership: {0}")]
    InvalidMembership(&'static str),
    /// A counter would overflow.
    #[error("{0} would overflow")]
    Overflow(&'static str),
    /// A value that did not build into a valid wire type.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The body or content is larger than the protocol allows.
    #[error("{0} is too large")]
    TooLarge(&'static str),
}
