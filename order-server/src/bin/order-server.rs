//! `order-server`: run an order server of the split-trust messaging
//! network.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use grompi_order_server::{audit_cli, bench, config::Config, init, server};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than the system allocator: under load glibc's malloc
/// (its consolidation of freed chunks across threads) took about a fifth
/// of the router's CPU; see docs/PERFORMANCE.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An order server: attests which envelope sits at which index of each
/// conversation, and never attests two different envelopes at one index.
///
/// First run `order-server init --data-dir DIR`, put the printed public key
/// into the network descriptor and give the printed certificate to the
/// router operator; write a configuration file (see docs/OPERATING.md);
/// then run `order-server serve --config order.toml`.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: a fresh long-term key and TLS material.
    /// Prints the line for the network descriptor. Never overwrites a key.
    Init {
        /// The data directory to create (mode 0700).
        #[arg(long)]
        data_dir: PathBuf,
        /// A DNS name or IP address for the TLS certificate; repeat for
        /// several. Default: localhost and 127.0.0.1.
        #[arg(long = "tls-name")]
        tls_names: Vec<String>,
        /// The audit log's origin line (a schema-less URL such as
        /// `order1.example.org/audit`); fixed for the key's life. Default:
        /// derived from the server's public key.
        #[arg(long)]
        log_origin: Option<String>,
    },
    /// The audit log: checkpoints, proofs, and verifying a copy. Commands
    /// that read the database run while the server is stopped; the running
    /// server serves the same checkpoint and tiles on `audit_listen`.
    Log {
        #[command(subcommand)]
        command: audit_cli::LogCommand,
    },
    /// Serve the order service until SIGTERM or Ctrl-C.
    Serve {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// List refused equivocation attempts kept as evidence. Run it while the
    /// server is stopped (the database is locked while it runs); the
    /// running server exports the count as `grompi_order_evidence_total`.
    Evidence {
        /// The server's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Show at most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Measure attestations per second with one commit per item against
    /// group commit, on this machine's disk. Use a release build.
    Bench {
        /// Directory for the temporary databases (default: a temporary
        /// directory). Put it on the disk the server will use.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Items per group-commit run.
        #[arg(long, default_value_t = 200_000)]
        items: usize,
        /// Items in the one-commit-per-item run.
        #[arg(long, default_value_t = 2_000)]
        single_items: usize,
        /// Conversations the items are spread over (round-robin).
        #[arg(long, default_value_t = 256)]
        conversations: usize,
        /// Only compare runs with and without the audit log.
        #[arg(long)]
        audit_only: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Init {
            data_dir,
            tls_names,
            log_origin,
        } => match init::init_with_origin(&data_dir, &tls_names, log_origin.as_deref()) {
            Ok(out) => {
                println!("# Order server entry for the network descriptor:");
                println!("public_key = \"{}\"", out.public_key.to_hex());
                println!("# TLS certificate for the router to pin:");
                println!("certificate = \"{}\"", out.certificate.display());
                println!("# The audit log's verifier key (its checkpoints' signer):");
                println!("log_key = \"{}\"", out.log_key);
                println!("# The witness's verifier key (for peers' [[peers]] witness_key):");
                println!("witness_key = \"{}\"", out.witness_key);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("order-server init: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => serve(config),
        Command::Log { command } => match audit_cli::run(command) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("order-server log: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Evidence { data_dir, limit } => evidence(&data_dir, limit),
        Command::Bench {
            dir,
            items,
            single_items,
            conversations,
            audit_only,
        } => {
            let tmp;
            let dir = match dir {
                Some(d) => d,
                None => match tempfile_dir() {
                    Ok(d) => {
                        tmp = d;
                        tmp.clone()
                    }
                    Err(e) => {
                        eprintln!("order-server bench: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            if audit_only {
                return match bench::run_audit(&dir, conversations, items, 1024, 3) {
                    Ok(c) => {
                        print!("{}", c.table());
                        let _ = std::fs::remove_dir(&dir);
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("order-server bench: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            match bench::run(
                &dir,
                conversations,
                items,
                single_items,
                &[16, 128, 1024, 4096],
            ) {
                Ok(rows) => {
                    print!("{}", bench::table(&rows));
                    if let Ok(m) = bench::run_memory(conversations, items, 4096) {
                        println!(
                            "\ncore only (in-memory store, no disk): {:.0} attestations/s",
                            m.rate()
                        );
                    }
                    match bench::run_audit(&dir, conversations, items, 1024, 3) {
                        Ok(c) => println!(
                            "\naudit log cost (best of 3 alternated runs):\n{}",
                            c.table()
                        ),
                        Err(e) => eprintln!("order-server bench: audit comparison: {e}"),
                    }
                    let _ = std::fs::remove_dir(&dir);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("order-server bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn evidence(data_dir: &std::path::Path, limit: u64) -> ExitCode {
    use grompi_order_server::redb_store::{RedbRead, RedbStore};
    // No anchor here: this only reads, and the anchor's path is in the
    // configuration, which this command does not take.
    let listed = RedbStore::open_existing(&data_dir.join(init::DB_FILE), None).and_then(|store| {
        let txn = store.begin_read()?;
        grompi_order_server::evidence::list(&RedbRead::open(&txn)?, limit)
    });
    match listed {
        Ok((total, entries)) => {
            println!(
                "refused equivocation attempts: {total} (kept: {})",
                entries.len()
            );
            for e in entries {
                println!("{e}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("order-server evidence: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("order-server-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("order-server serve: {e}");
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
            eprintln!("order-server serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(server::serve(config));
    // Tasks still running (lingering connections) are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "order server failed");
            eprintln!("order-server serve: {e}");
            ExitCode::FAILURE
        }
    }
}
