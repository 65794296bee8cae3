//! Errors of the client API: everything that can go wrong between the
//! program, the local store and the router. Misbehaviour of servers or
//! peers is never an error here: it is an [`grompi_client_core::Alert`], recorded and
//! shown.

use crate::local_store::LocalStoreError;
use grompi_client_core::codec::DecodeError;
use grompi_client_core::errors::ClientError;
use grompi_client_core::pairwise::PairwiseError;
use grompi_proto::WireError;
use grompi_proto::descriptor::DescriptorError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The local store failed (wrong passphrase, damaged file, disk).
    #[error(transparent)]
    Store(#[from] LocalStoreError),
    /// A saved record did not parse.
    #[error("local state is damaged: {0}")]
    Corrupt(String),
    /// A file of the client's home could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The network descriptor is invalid.
    #[error("network descriptor: {0}")]
    Descriptor(#[from] DescriptorError),
    /// The home directory already holds an account.
    #[error("{0} already holds a grompi account")]
    AlreadyInitialized(String),
    /// The network descriptor file in the home directory differs from the
    /// one the account trusts (kept in its encrypted store since `init`).
    #[error(
        "the network descriptor {path} differs from the one this account trusts \
         (kept in its encrypted store since `grompi init`), so it is not used: it may have \
         been tampered with. Put the original back, or, only if the network's operators \
         really changed the network and you have checked the new file with them, accept it \
         deliberately: grompi network accept {path}"
    )]
    NetworkChanged {
        /// The path of the descriptor file that differs.
        path: String,
    },
    /// The home directory holds no account.
    #[error("{0} holds no grompi account; run `grompi init` first")]
    NotInitialized(String),
    /// The account has not been registered with the router.
    #[error("this account is not registered yet; run `grompi register`")]
    NotRegistered,
    /// Connecting to the router failed.
    #[error("cannot reach the router at {address}: {reason}")]
    Connect {
        /// The router's address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The router refused or failed a call.
    #[error("router refused {call}: {status}")]
    Router {
        /// The name of the router call that failed, such as `UploadKeys`.
        call: &'static str,
        /// The gRPC status (code and message).
        status: Box<tonic::Status>,
    },
    /// The router sent something that does not parse.
    #[error("the router sent a malformed {0}")]
    Malformed(String),
    /// A local protocol operation failed.
    #[error(transparent)]
    Protocol(#[from] ClientError),
    /// A pairwise (Olm) operation failed.
    #[error(transparent)]
    Pairwise(#[from] PairwiseError),
    /// No conversation matches the name or id given.
    #[error("no conversation named {0:?}; see `grompi history` for the list")]
    UnknownConversation(String),
    /// No contact matches the name or id given.
    #[error("no contact named {0:?}; add one with `grompi contacts add NAME ACCOUNT`")]
    UnknownContact(String),
    /// A name or id matches more than one entry.
    #[error("{0:?} is ambiguous; use more characters of the id")]
    Ambiguous(String),
    /// A contact name is already bound to another identity.
    #[error(
        "contact {name:?} is already bound to another identity ({old}); \
         pass --replace only after checking with them"
    )]
    ContactConflict {
        /// The contact name that is already bound.
        name: String,
        /// The account id it is bound to (hex prefix).
        old: String,
    },
    /// The operation is not possible in the conversation's current state.
    #[error("{0}")]
    Refused(String),
    /// The history the router returned is not the attested one; nothing of
    /// it is shown.
    #[error("{0}")]
    History(grompi_proto::Misbehaviour),
}

impl ApiError {
    /// A router status as an error.
    pub fn router(call: &'static str, status: tonic::Status) -> Self {
        Self::Router {
            call,
            status: Box::new(status),
        }
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e.to_string())
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// `Io` with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ApiError {
    let what = what.into();
    move |source| ApiError::Io { what, source }
}
