//! `router`: the routing server of a split-trust messaging network.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use grompi_router::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than the system allocator: under load glibc's malloc
/// (its consolidation of freed chunks across threads) took about a fifth
/// of the router's CPU; see docs/PERFORMANCE.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The router carries end-to-end encrypted messages between members and
/// fans every envelope out to the network's order servers, which attest its
/// position. It is trusted for availability only: it never acknowledges an
/// envelope before committing it to disk, and members check everything it
/// delivers against the order servers' tags.
#[derive(Parser, Debug)]
#[command(name = "router", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Creates the data directory and the router's TLS identity, and prints
    /// what to put in the network descriptor and what to give order server
    /// operators.
    Init {
        /// Data directory to create.
        #[arg(long)]
        data_dir: PathBuf,
        /// Names (DNS or IP) the certificate is valid for; repeat for more.
        /// Defaults to localhost and 127.0.0.1.
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Serves clients until SIGTERM or Ctrl-C, then shuts down gracefully.
    Serve {
        /// The TOML configuration file (see the crate docs for every key).
        /// Retention of stored envelopes is `[limits] keep_envelopes`: 0
        /// (the default) keeps every envelope for ever, N keeps the last N
        /// indices of each conversation (docs/OPERATING.md, "Retention").
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    grompi_ops::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Init { data_dir, names } => match grompi_router::server::init(&data_dir, &names) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("router init: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Serve { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("router serve: {e}");
                    return ExitCode::FAILURE;
                }
            };
            grompi_ops::telemetry::init_tracing(&config.log);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("router serve: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(grompi_router::server::serve(
                config,
                grompi_ops::shutdown::signal(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "router stopped with an error");
                    eprintln!("router serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
