//! Every scenario shipped in `scenarios/` parses and is consistent.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use grompi_simulator::scenario::Scenario;

#[test]
fn every_shipped_scenario_parses() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.display().to_string();
        let s = Scenario::parse(&file, &text).unwrap_or_else(|e| panic!("{e}"));
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap();
        assert_eq!(s.name, stem, "{file}: name must equal the file's stem");
        count += 1;
    }
    assert!(count >= 15, "only {count} scenarios shipped");
}
