//! Why the router refused a request. Every variant carries a message that
//! says what was wrong; the gRPC shell maps each variant to one status code.

use grompi_proto::WireError;

/// A refused request, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// The request is malformed or breaks a protocol rule.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// No valid session, or a challenge answer that does not verify.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The caller is authenticated but may not do this.
    #[error("not allowed: {0}")]
    PermissionDenied(String),
    /// The account or conversation named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The account or conversation already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The request is well-formed but the state does not allow it now.
    #[error("not possible now: {0}")]
    FailedPrecondition(String),
    /// A configured limit (size, count, rate) was exceeded.
    #[error("limit exceeded: {0}")]
    ResourceExhausted(String),
    /// The order servers cannot be reached well enough to complete the request.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The router failed internally (storage).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<WireError> for RouterError {
    fn from(e: WireError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

impl From<RouterError> for tonic::Status {
    fn from(e: RouterError) -> Self {
        let message = e.to_string();
        match e {
            RouterError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            RouterError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            RouterError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            RouterError::NotFound(_) => tonic::Status::not_found(message),
            RouterError::AlreadyExists(_) => tonic::Status::already_exists(message),
            RouterError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            RouterError::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            RouterError::Unavailable(_) => tonic::Status::unavailable(message),
            RouterError::Internal(_) => tonic::Status::internal(message),
        }
    }
}
