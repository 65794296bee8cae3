//! Deterministic simulation of the network with malicious servers, and the demo.
//!
//! Not yet implemented beyond this crate's place in the workspace; see the
//! project's issues for the plan.
#![forbid(unsafe_code)]
