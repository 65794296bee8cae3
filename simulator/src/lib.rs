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
//! | `scenario_tests.rs` (tests) | parsing and validating scenario files |
//! | [`world`] | the network of real cores, the adversaries, one run |
//! | `world/setup.rs` | one run's network: servers, router core, members registered, sessions |
//! | `world/network.rs` | the event loop, message passing and ordered streams, the router's calls, commits and effects, crashes |
//! | `world/script.rs` | the conversation script as members play it, the router's replies, the end-of-run audit |
//! | `world/adversary.rs` | every router strategy: deliveries, forks, crashes, tampered jobs, puppets, head proofs |
//! | `world/member_toolkit.rs` | compromised members: what the client's API would not compose |
//! | `world/member_node.rs` | one member: the real `grompi_client_core::Member` and what it accepted and raised |
//! | `world/router_node.rs`, `world/router_puppet.rs`, `world/order_node.rs` | the router core (one per forked history) under production's driver, the router's own accounts, one order server core |
//! | `world/report.rs` | the end of a run: each member's view, the verdicts, the run report |
//! | `world/events.rs` | the events of a run: messages between parties and timers |
//! | `world/measure.rs` | what a run cost: messages on the network and acceptance latency in virtual time |
//! | [`live`] | the real servers as processes, honest or malicious |
//! | `live/process.rs` | child processes, and the one harness that starts the real binaries (also used by the end-to-end tests) |
//! | `live/devnet.rs` | a real router and N order servers on 127.0.0.1, keys, certificates, the descriptor |
//! | `live/evil_router.rs`, `live/evil_order.rs`, `live/control.rs` | malicious routers and order servers over real gRPC, and their control files |
//! | `live/protest.rs` | the demo's conversation played by four real clients |
//! | `live/bench.rs`, `live/bench_client.rs` | end-to-end latency, throughput and CPU against a plain relay; the benchmark's checking client |
//! | `live/cli.rs` | the `devnet` and `bench` subcommands |
//! | [`view`] | what one member saw: accepted indices and alerts |
//! | [`verdict`] | the property checks and the outcome of an attack |
//! | [`report`] | run reports in JSON and Markdown |
//! | [`sweep`] | many seeds, aggregate reports, cost plots |
//! | [`plot`] | hand-written SVG line charts |
//! | [`demo`] | the protest demo: honest, then forked |
//!
//! The `grompi-sim` program is `bin/grompi-sim.rs`.
#![forbid(unsafe_code)]

pub mod demo;
pub mod live;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod sweep;
pub mod verdict;
pub mod view;
pub mod world;
