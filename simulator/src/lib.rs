//! Deterministic simulation of the network with malicious servers, the
//! scenario library and its reports, and the demo.
//!
//! A run drives the real sans-IO cores of the router, the order servers and
//! the clients under a [`schedule::Schedule`] seeded from one number, with
//! virtual time; adversaries replace the router or any order server with a
//! strategy from [`scenario`]. At the end every member's [`view`] is judged
//! property by property ([`verdict`]) and written up ([`report`]).
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`schedule`] | virtual time, the seeded random source, the event queue |
//! | [`scenario`] | scenario files: network, adversary, script, expectation |
//! | [`view`] | what one member saw: accepted indices and alerts |
//! | [`verdict`] | the property checks and the outcome of an attack |
//! | [`report`] | run and sweep reports in JSON and Markdown |
#![forbid(unsafe_code)]

pub mod report;
pub mod scenario;
pub mod schedule;
pub mod verdict;
pub mod view;
