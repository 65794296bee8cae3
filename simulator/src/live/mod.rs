//! Live mode: the real binaries as processes on 127.0.0.1.
//!
//! | module | concept |
//! |---|---|
//! | [`process`] | a server process: spawn, log file, bound addresses, stop |
//! | [`devnet`] | a router and N order servers with generated keys and the descriptor |
//! | [`evil_order`] | malicious order servers: the real one with its answers changed |
//! | [`bench_client`] | the benchmark's protocol client: submit, check, accept |
//! | [`bench`] | end-to-end latency and throughput against the relay baseline |
//! | [`cli`] | the `devnet` and `bench` subcommands |

pub mod bench;
pub mod bench_client;
pub mod cli;
pub mod devnet;
pub mod evil_order;
pub mod process;

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
    /// A server exited.
    #[error("{name} exited ({status}); the end of its log:\n{log_tail}")]
    Exited {
        /// Which server.
        name: String,
        /// Its exit status.
        status: String,
        /// The last lines of its log.
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
