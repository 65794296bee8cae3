//! Every end-to-end test in one binary, so that one link serves them all
//! and tests of different components run side by side.
//!
//! | module | what it starts and checks |
//! |---|---|
//! | [`order_server`] | one real order server: every rejection, crash safety under SIGKILL |
//! | [`router`] | the real router and three order servers: delivery, catch-up, SIGKILL |
//! | [`client_api`] | the client library: a member added after many fetch pages |
//! | [`cli`] | four people using the `grompi` CLI; members added, removed, leaving |
//! | [`devnet`] | `devnet` and the benchmark on a tiny grid |
//! | [`faults`] | random kills of every server under load; nothing acknowledged lost |
//! | [`malicious`] | malicious order servers and routers over real gRPC against the real client; the live demo |

mod cli;
mod client_api;
mod devnet;
mod exactly_once;
mod faults;
mod malicious;
mod order_server;
mod router;
