//! An order server: attests which envelope sits at which index of each conversation.
//!
//! Not yet implemented beyond this crate's place in the workspace; see the
//! project's issues for the plan.
#![forbid(unsafe_code)]
