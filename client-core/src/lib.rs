//! The client: the only place where trust is decided.
//!
//! Not yet implemented beyond this crate's place in the workspace; see the
//! project's issues for the plan.
#![forbid(unsafe_code)]
