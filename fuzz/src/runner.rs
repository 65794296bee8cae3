//! The fuzzing loop: start from the corpus, mutate, run each input under
//! `catch_unwind`, keep inputs that reach a decoder outcome not seen
//! before, and save crashing inputs.

use crate::corpus::{self, CorpusError};
use crate::mutate::{self, Context};
use crate::rng::Rng;
use crate::target::{Execution, Target, execute};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long and how to fuzz one target.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many mutated executions (for reproducible runs).
    pub runs: Option<u64>,
    /// The seed of the mutation generator.
    pub seed: u64,
    /// Longest input produced.
    pub max_len: usize,
    /// Most new inputs written to the corpus directory.
    pub max_new: usize,
    /// Root of the corpora (the target's directory is below it).
    pub corpus_root: PathBuf,
    /// Root of the crash directories.
    pub crash_root: PathBuf,
    /// Whether to write new inputs and crashes to disk.
    pub save: bool,
}

/// A crash found during a run.
#[derive(Debug, Clone)]
pub struct Crash {
    /// What happened.
    pub execution: Execution,
    /// Where the input was saved (if saving).
    pub path: Option<PathBuf>,
    /// The input that crashed the target.
    pub input: Vec<u8>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The name of the target that was run.
    pub target: String,
    /// Inputs in the corpus at the start.
    pub initial_corpus: usize,
    /// Mutated inputs executed.
    pub executions: u64,
    /// Wall-clock time spent.
    pub elapsed: Duration,
    /// How often each outcome was reached.
    pub outcomes: BTreeMap<String, u64>,
    /// Outcomes first reached in this run.
    pub new_outcomes: Vec<String>,
    /// New inputs written to the corpus directory.
    pub saved: usize,
    /// Distinct crashes (by description).
    pub crashes: Vec<Crash>,
    /// The slowest single execution.
    pub slowest: Duration,
}

impl Report {
    /// One summary line.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        format!(
            "{}: {} execs in {:.0}s ({:.0}/s), {} outcomes ({} new), {} inputs saved, {} crashes, slowest {:.1} ms",
            self.target,
            self.executions,
            secs,
            if secs > 0.0 {
                self.executions as f64 / secs
            } else {
                0.0
            },
            self.outcomes.len(),
            self.new_outcomes.len(),
            self.saved,
            self.crashes.len(),
            self.slowest.as_secs_f64() * 1000.0
        )
    }
}

/// Most inputs kept in memory for one run.
const MAX_IN_MEMORY: usize = 4096;

/// Fuzzes one target.
pub fn run(target: &Target, config: &RunConfig) -> Result<Report, CorpusError> {
    let corpus_dir = config.corpus_root.join(target.name);
    let crash_dir = config.crash_root.join(target.name);
    let mut inputs: Vec<Vec<u8>> = corpus::read_dir(&corpus_dir)?
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    if inputs.is_empty() {
        inputs = (target.seeds)().into_iter().map(|(_, b)| b).collect();
    }
    if inputs.is_empty() {
        inputs.push(Vec::new());
    }
    let mut report = Report {
        target: target.name.to_owned(),
        initial_corpus: inputs.len(),
        ..Report::default()
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut crash_names: BTreeSet<String> = BTreeSet::new();
    let mut record_crash =
        |report: &mut Report, execution: Execution, input: &[u8]| -> Result<(), CorpusError> {
            let key = crate::target::normalize(&execution.describe());
            if !crash_names.insert(key) {
                return Ok(());
            }
            let path = if config.save {
                corpus::save(&crash_dir, None, input)?
            } else {
                None
            };
            report.crashes.push(Crash {
                execution,
                path,
                input: input.to_vec(),
            });
            Ok(())
        };
    for input in &inputs {
        match execute(target, input) {
            Execution::Outcome(label) => {
                seen.insert(label);
            }
            crash => record_crash(&mut report, crash, input)?,
        }
    }
    let mut rng = Rng::new(config.seed);
    let start = Instant::now();
    loop {
        if config.runs.is_some_and(|n| report.executions >= n) {
            break;
        }
        if report.executions.is_multiple_of(64)
            && config.duration.is_some_and(|d| start.elapsed() >= d)
        {
            break;
        }
        let base = inputs
            .get(rng.below(inputs.len()))
            .cloned()
            .unwrap_or_default();
        let ctx = Context {
            corpus: &inputs,
            dictionary: target.dictionary,
            protobuf: target.protobuf,
            max_len: config.max_len,
        };
        let input = mutate::mutate(&mut rng, &base, &ctx);
        let t = Instant::now();
        let execution = execute(target, &input);
        report.slowest = report.slowest.max(t.elapsed());
        report.executions += 1;
        match execution {
            Execution::Outcome(label) => {
                *report.outcomes.entry(label.clone()).or_default() += 1;
                if seen.insert(label.clone()) {
                    report.new_outcomes.push(label);
                    if config.save
                        && report.saved < config.max_new
                        && corpus::save(&corpus_dir, None, &input)?.is_some()
                    {
                        report.saved += 1;
                    }
                    if inputs.len() < MAX_IN_MEMORY {
                        inputs.push(input);
                    }
                }
            }
            crash => record_crash(&mut report, crash, &input)?,
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
