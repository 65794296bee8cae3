//! The router: directory, fan-out to the order servers, and delivery.
//!
//! Not yet implemented beyond this crate's place in the workspace; see the
//! project's issues for the plan.
#![forbid(unsafe_code)]
