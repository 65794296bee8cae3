//! Replays every corpus file, and every saved crash as a regression test,
//! through its target: none may panic or break an invariant.

use grompi_fuzz::corpus::{self, default_corpus_root, default_crash_root};
use grompi_fuzz::target::{Execution, execute};
use grompi_fuzz::targets;
use std::collections::BTreeSet;

#[test]
fn every_corpus_and_crash_file_replays_cleanly() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for t in targets::all() {
        let files = corpus::read_dir(&default_corpus_root().join(t.name)).unwrap();
        assert!(!files.is_empty(), "target {} has no corpus", t.name);
        let crashes = corpus::read_dir(&default_crash_root().join(t.name)).unwrap();
        for (path, bytes) in files.iter().chain(crashes.iter()) {
            replayed += 1;
            let e = execute(&t, bytes);
            if e.is_crash() {
                failures.push(format!("{}: {}", path.display(), e.describe()));
            }
        }
    }
    assert!(replayed > 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_directory_names_a_target() {
    let names: BTreeSet<&str> = targets::all().iter().map(|t| t.name).collect();
    assert_eq!(
        names.len(),
        targets::all().len(),
        "two targets share a name"
    );
    for root in [default_corpus_root(), default_crash_root()] {
        let Ok(dirs) = std::fs::read_dir(&root) else {
            continue;
        };
        for d in dirs {
            let d = d.unwrap();
            if d.path().is_dir() {
                let name = d.file_name().into_string().unwrap();
                assert!(
                    names.contains(name.as_str()),
                    "{} is not a target",
                    d.path().display()
                );
            }
        }
    }
}

#[test]
fn seeds_are_accepted_where_they_should_be() {
    // Every target has at least one seed its decoder accepts, so the
    // fuzzer starts past the outermost checks.
    for t in targets::all() {
        let accepted = (t.seeds)()
            .iter()
            .filter(|(name, _)| name.starts_with("seed-"))
            .filter(|(_, b)| matches!(execute(&t, b), Execution::Outcome(l) if l.starts_with("ok")))
            .count();
        assert!(accepted > 0, "no seed of {} is accepted", t.name);
    }
}

#[test]
fn a_short_run_is_reproducible() {
    let t = targets::find("envelope").unwrap();
    let dir = std::env::temp_dir().join(format!("grompi-fuzz-test-{}", std::process::id()));
    let config = grompi_fuzz::runner::RunConfig {
        duration: None,
        runs: Some(300),
        seed: 9,
        max_len: 1024,
        max_new: 0,
        corpus_root: default_corpus_root(),
        crash_root: dir.clone(),
        save: false,
    };
    let a = grompi_fuzz::runner::run(&t, &config).unwrap();
    let b = grompi_fuzz::runner::run(&t, &config).unwrap();
    assert_eq!(a.executions, 300);
    assert_eq!(a.outcomes, b.outcomes);
    assert!(a.crashes.is_empty());
    assert!(!dir.exists());
}
