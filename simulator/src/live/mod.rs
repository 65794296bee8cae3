//! Live mode: the real servers as processes on 127.0.0.1, honest or malicious.
//!
//! | module | concept |
//! |---|---|
//! | [`process`] | the one process harness (the end-to-end tests use it too): find, init, spawn, bound addresses, stop |
//! | [`devnet`] | a router and N order servers with generated keys and the descriptor |
//! | [`evil_order`] | malicious order servers: the real one with its answers changed, or one real one per branch |
//! | [`evil_router`] | malicious routers: a front over one real router per group (fork), or changing deliveries |
//! | [`control`] | the files that tell malicious servers what to do, and their answers |
//! | [`protest`] | the demo's protest conversation played by four real clients |
//! | [`bench_client`] | the benchmark's protocol client: submit, check, accept |
//! | [`bench`](mod@bench) | end-to-end latency and throughput against the relay baseline |
//! | [`open_loop`] | `bench --open-loop`: Poisson load over many conversations, rate stepped up to a p99 limit |
//! | [`scale`] | `bench --scale`: server memory and restart time as accounts, conversations and envelopes grow |
//! | [`probes`] | the servers' Prometheus histograms read around a phase (commit, round trip) |
//! | [`cli`] | the `devnet`, `attack`, `bench` and hidden server subcommands |

pub mod bench;
pub mod bench_client;
pub mod cli;
pub mod control;
pub mod devnet;
pub mod evil_order;
pub mod evil_router;
pub mod open_loop;
pub mod probes;
pub mod process;
pub mod protest;
pub mod scale;

/// Why a live network could not be started or run.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something is missing or misconfigured.
    #[error("{0}")]
    Setup(String),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A client operation failed (not an alert: alerts are never errors).
    #[error("{who}: {source}")]
    Client {
        /// Whose client.
        who: String,
        /// The client's error.
        source: Box<grompi_client::client::ApiError>,
    },
    /// A server exited.
    #[error("{name} exited ({status}); the end of its log:\n{log_tail}")]
    Exited {
        /// The name it was spawned under (`router`, `order-server 1`, ...).
        name: String,
        /// Its exit status, as the OS reported it (code or signal).
        status: String,
        /// The last 20 lines of its log (its standard error).
        log_tail: String,
    },
}

impl LiveError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LiveError {
        let what = what.into();
        move |source| LiveError::Io { what, source }
    }
}
