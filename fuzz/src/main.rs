//! `grompi-fuzz`: fuzz the decoders of untrusted bytes on the stable
//! toolchain. See `grompi-fuzz --help`.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use grompi_fuzz::corpus::{self, CorpusError};
use grompi_fuzz::runner::{self, RunConfig};
use grompi_fuzz::target::{Target, execute};
use grompi_fuzz::targets;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Fuzz every decoder of untrusted bytes (envelopes, deliveries, the
/// network descriptor, Olm frames and payloads, contents, stored records,
/// router requests) with a seeded, coverage-less mutational fuzzer.
///
/// Typical use:
///
///   grompi-fuzz list
///   grompi-fuzz run envelope --seconds 300 --seed 1
///   grompi-fuzz run all --seconds 60
///   grompi-fuzz replay delivery fuzz/crashes/delivery/0123abcd
#[derive(Parser)]
#[command(name = "grompi-fuzz", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the targets and the decoder each one reaches.
    List,
    /// Fuzz a target (or `all`, one after the other).
    ///
    /// Starts from fuzz/corpus/<target>/ (or the built-in seeds when it is
    /// empty), mutates inputs, keeps those that reach a decoder outcome not
    /// seen before in the corpus directory, and saves crashing inputs
    /// (panics and broken invariants) to fuzz/crashes/<target>/. Exits with
    /// status 1 when anything crashed.
    Run {
        /// Target name, or `all`.
        target: String,
        /// How long to fuzz each target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Stop after this many executions instead (exactly reproducible
        /// with the same seed and corpus).
        #[arg(long)]
        runs: Option<u64>,
        /// Seed of the mutation generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Longest input to generate, in bytes.
        #[arg(long, default_value_t = 4096)]
        max_len: usize,
        /// Most new inputs to add to the corpus directory per target.
        #[arg(long, default_value_t = 16)]
        max_new: usize,
        /// Write nothing (no new corpus inputs, no crash files).
        #[arg(long)]
        dry_run: bool,
        /// Root of the corpora.
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Root of the crash directories.
        #[arg(long)]
        crashes: Option<PathBuf>,
    },
    /// Run files through a target and print each outcome.
    Replay {
        /// Target name.
        target: String,
        /// Input files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the built-in seed inputs into the corpus directories.
    Seed {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Also regenerate fuzz/fixtures/olm_recipient.json (fresh Olm keys;
        /// rebuild, then run `seed --target olm_frame` again).
        #[arg(long)]
        olm_fixture: bool,
        /// Root of the corpora.
        #[arg(long)]
        corpus: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("unknown target {0:?}; `grompi-fuzz list` lists them")]
    UnknownTarget(String),
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("could not build the Olm fixture: {0}")]
    Olm(String),
}

fn select(name: &str) -> Result<Vec<Target>, CliError> {
    if name == "all" {
        Ok(targets::all())
    } else {
        targets::find(name)
            .map(|t| vec![t])
            .ok_or_else(|| CliError::UnknownTarget(name.to_owned()))
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("grompi-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::List => {
            for t in targets::all() {
                println!("{:<26} {}", t.name, t.reaches);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            target,
            seconds,
            runs,
            seed,
            max_len,
            max_new,
            dry_run,
            corpus,
            crashes,
        } => {
            let config = RunConfig {
                duration: runs.is_none().then(|| Duration::from_secs(seconds)),
                runs,
                seed,
                max_len,
                max_new,
                corpus_root: corpus.unwrap_or_else(corpus::default_corpus_root),
                crash_root: crashes.unwrap_or_else(corpus::default_crash_root),
                save: !dry_run,
            };
            let mut crashed = false;
            for t in select(&target)? {
                let report = runner::run(&t, &config)?;
                println!("{}", report.summary());
                for o in &report.new_outcomes {
                    println!("  new outcome: {o}");
                }
                for c in &report.crashes {
                    crashed = true;
                    println!("  CRASH: {}", c.execution.describe());
                    println!(
                        "    input ({} bytes): {}",
                        c.input.len(),
                        hex::encode(&c.input)
                    );
                    if let Some(p) = &c.path {
                        println!(
                            "    saved: {} (grompi-fuzz replay {} {})",
                            p.display(),
                            t.name,
                            p.display()
                        );
                    }
                }
            }
            Ok(if crashed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Replay { target, files } => {
            let t = targets::find(&target).ok_or(CliError::UnknownTarget(target))?;
            let mut crashed = false;
            for f in files {
                let bytes = std::fs::read(&f).map_err(|e| CliError::Io(f.clone(), e))?;
                let e = execute(&t, &bytes);
                crashed |= e.is_crash();
                println!("{}: {}", f.display(), e.describe());
            }
            Ok(if crashed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Seed {
            target,
            olm_fixture,
            corpus,
        } => {
            if olm_fixture {
                let json = targets::client::generate_olm_fixture()
                    .map_err(|e| CliError::Olm(e.to_string()))?;
                let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("fixtures")
                    .join("olm_recipient.json");
                std::fs::write(&path, json).map_err(|e| CliError::Io(path.clone(), e))?;
                println!("wrote {}; rebuild before seeding olm_frame", path.display());
            }
            let root = corpus.unwrap_or_else(corpus::default_corpus_root);
            let chosen = match target {
                Some(name) => select(&name)?,
                None => targets::all(),
            };
            for t in chosen {
                let mut written = 0;
                for (name, bytes) in (t.seeds)() {
                    if corpus::save(&root.join(t.name), Some(&name), &bytes)?.is_some() {
                        written += 1;
                    }
                }
                println!("{:<26} {written} seed files written", t.name);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
