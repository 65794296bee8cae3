//! The benchmark commands at a tiny size, as smoke tests: every cell,
//! step and point measured, never a figure asserted. The servers are
//! self-hosted (every one runs from this crate's `grompi-sim` executable,
//! the same library code as the `router` and `order-server` binaries), so
//! `cargo test -p grompi-simulator` needs nothing else built. The
//! end-to-end tests run the closed-loop grid over the real binaries
//! (`tests/tests/e2e/devnet.rs`).

#![allow(clippy::unwrap_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

/// This crate's executable: the benches then run every server from it.
fn self_hosted() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_grompi-sim"))
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("grompi-bench-smoke-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The closed-loop grid at its smallest: the attested cell carries the
/// latency probes and the decomposition table a row for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_reports_the_probes_of_the_gap() {
    use grompi_simulator::live::bench::{BenchOptions, run};
    let dir = Scratch::new("closed-loop");
    let options = BenchOptions {
        dir: dir.path().to_path_buf(),
        binaries: self_hosted(),
        servers: vec![1],
        groups: vec![2],
        latency_messages: 4,
        throughput_messages: 4,
        body_bytes: 64,
        block_bytes: 32,
        majority: false,
    };
    let report = run(&options, |_| {}).await.unwrap();
    assert_eq!(report.cells.len(), 2);
    let attested = report.cells.iter().find(|c| c.mode == "attested").unwrap();
    let p = &attested.probes;
    assert!(p.order_commits > 0 && p.router_fanouts > 0, "{p:?}");
    assert!(
        p.order_commit_p50_ms.is_some()
            && p.order_request_p50_ms.is_some()
            && p.round_trip_p50_ms.is_some()
            && p.router_commit_p50_ms.is_some()
            && p.router_submit_p50_ms.is_some(),
        "{p:?}"
    );
    // The relay's cell has the router's probes only.
    let relay = report.cells.iter().find(|c| c.mode == "relay").unwrap();
    let r = &relay.probes;
    assert!(r.router_submit_p50_ms.is_some(), "{r:?}");
    assert!(
        r.order_commits == 0 && r.order_commit_p50_ms.is_none(),
        "{r:?}"
    );
    let table = report.decomposition();
    let row = table
        .lines()
        .find(|l| l.starts_with("| 1 | 2 | "))
        .unwrap_or_else(|| panic!("{}", report.to_markdown()));
    // Every cell of the row measured, the router's part of the gap too.
    assert!(!row.contains("| - |") && !row.contains(" - /"), "{table}");
    assert_eq!(row.matches('|').count(), 17, "{table}");
}

/// The open-loop mode on a tiny load: both arms, two steps each, every
/// step measured (arrivals sent, every message accepted by every member,
/// CPU columns, and the attested arm's commit and round-trip probes). The
/// limits are set so that no step can fail on time: nothing here asserts
/// a figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_measures_every_step_of_both_arms() {
    use grompi_simulator::live::open_loop::{OpenLoopOptions, run};
    let bins = self_hosted();
    let dir = Scratch::new("open-loop");
    let options = OpenLoopOptions {
        dir: dir.path().to_path_buf(),
        binaries: bins,
        servers: vec![1],
        conversations: 3,
        group: 3,
        rates: vec![20.0, 40.0],
        step_seconds: 1.0,
        p99_limit_ms: 1e9,
        rate_margin: 1.0,
        submit_connections: 2,
        body_bytes: 64,
        block_bytes: 32,
        seed: 7,
        majority: false,
        // Passed to the order servers' configuration, which must accept it.
        order_gather_us: vec![500],
        rounds: 2,
    };
    let mut lines = Vec::new();
    let report = run(&options, |s| lines.push(s.to_owned())).await.unwrap();
    assert!(
        report
            .to_markdown()
            .contains("gathering window (`commit_gather_us`): 500 us"),
        "the report does not say which window it ran with"
    );
    // Two rounds: the relay and then the attested arm, then the reverse.
    assert_eq!(report.arms.len(), 4, "{lines:?}");
    let order: Vec<(usize, &str)> = report
        .arms
        .iter()
        .map(|a| (a.round, a.mode.as_str()))
        .collect();
    assert_eq!(
        order,
        [(0, "relay"), (0, "attested"), (1, "attested"), (1, "relay")]
    );
    for arm in &report.arms {
        let window = (arm.mode == "attested").then_some(500);
        assert_eq!(arm.order_gather_us, window, "{arm:?}");
    }
    assert_eq!(report.ratios.len(), 2);
    assert_eq!(report.summary.len(), 1);
    let summary = &report.summary[0];
    assert_eq!(summary.ratios.len(), 2, "{summary:?}");
    assert!(summary.median_ratio > 0.0, "{summary:?}");
    for arm in &report.arms {
        assert_eq!(arm.steps.len(), 2, "{arm:?}");
        for step in &arm.steps {
            assert!(step.sent > 0, "{step:?}");
            assert_eq!(step.completed, step.sent, "{step:?}");
            assert_eq!(step.failed + step.incomplete, 0, "{step:?}");
            assert!(step.sustained, "{step:?}");
            assert!(step.latency_p50_ms > 0.0, "{step:?}");
            // Where the latency goes: the client's view of Submit and the
            // router's, in both arms.
            let split = &step.split;
            assert!(split.reply_p50_ms.is_some_and(|v| v > 0.0), "{split:?}");
            assert!(split.reply_p99_ms.is_some(), "{split:?}");
            assert!(split.router_submit_p50_ms.is_some(), "{split:?}");
            assert!(split.outside_router_p50_ms.is_some(), "{split:?}");
            if cfg!(target_os = "linux") {
                assert!(step.cpu_per_message.is_some(), "{step:?}");
            }
            match arm.mode.as_str() {
                "relay" => assert!(step.probes.is_none()),
                _ => {
                    let p = step.probes.as_ref().unwrap();
                    assert!(p.order_commits > 0 && p.router_fanouts > 0, "{p:?}");
                    assert!(p.order_commit_p50_ms.is_some(), "{p:?}");
                    assert!(p.round_trip_p50_ms.is_some(), "{p:?}");
                }
            }
        }
        assert!(arm.sustained_offered_per_s > 0.0, "{arm:?}");
    }
    let md = report.to_markdown();
    assert!(md.contains("| 1 | attested | 1 | 500 | 40 |"), "{md}");
    assert!(md.contains("| 0 | relay | 0 | - | 20 |"), "{md}");
    assert!(md.contains("| 1 | 500 | 2 |"), "the summary row: {md}");
    assert_eq!(report.plot().matches("<polyline").count(), 8);
}

/// The scale command on a tiny state: every point measured (memory of a
/// running and of a restarted router and order server, restart time,
/// data on disk), in the planned order. Nothing here asserts a figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_measures_every_point() {
    use grompi_simulator::live::scale::{ScaleOptions, run};
    let bins = self_hosted();
    let dir = Scratch::new("scale");
    let options = ScaleOptions {
        dir: dir.path().to_path_buf(),
        binaries: bins,
        servers: 1,
        group: 2,
        accounts: vec![4, 6],
        conversations: vec![2, 3],
        envelopes: 4,
        body_bytes: 64,
        block_bytes: 32,
        settle_ms: 50,
    };
    let report = run(&options, |_| {}).await.unwrap();
    let shape: Vec<(&str, usize, usize, usize, usize)> = report
        .points
        .iter()
        .map(|p| {
            (
                p.stage.as_str(),
                p.accounts,
                p.conversations,
                p.envelopes,
                p.attested_indices,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("start", 4, 2, 0, 0),
            ("envelopes", 4, 2, 1, 3),
            ("envelopes", 4, 2, 2, 4),
            ("envelopes", 4, 2, 4, 6),
            ("accounts", 6, 2, 4, 6),
            ("conversations", 6, 3, 4, 6),
        ]
    );
    for p in &report.points {
        for s in [&p.router, &p.order_server] {
            assert!(s.restart_ms > 0.0, "{p:?}");
            assert!(s.data_bytes > 0, "{p:?}");
            if cfg!(target_os = "linux") {
                assert!(
                    s.rss_running_bytes > 0 && s.rss_restarted_bytes > 0,
                    "{p:?}"
                );
            }
        }
    }
    assert!(report.growth.router_per_account.is_some());
    assert!(report.growth.router_per_conversation.is_some());
    assert!(report.growth.order_per_index.is_some());
    let md = report.to_markdown();
    assert_eq!(md.matches("\n| conversations | 6 | 3 |").count(), 1, "{md}");
}

/// The commands themselves, as an operator types them, at a tiny size:
/// each writes its JSON (every step and point present), Markdown and, for
/// the open loop, its plot.
#[test]
fn the_commands_write_their_reports() {
    let out = Scratch::new("commands");
    let exe = self_hosted();
    let run = |args: &[&str]| {
        let status = std::process::Command::new(&exe)
            .arg("bench")
            .args(args)
            .arg("--binaries")
            .arg(&exe)
            .arg("--out")
            .arg(out.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "grompi-sim bench {args:?}: {status}");
    };
    run(&[
        "--open-loop",
        "--servers",
        "1",
        "--groups",
        "2",
        "--conversations",
        "2",
        "--rates",
        "10,20",
        "--step-seconds",
        "0.5",
        "--p99-limit-ms",
        "1000000000",
        "--rate-margin",
        "1",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("open-loop.json")).unwrap())
            .unwrap();
    let arms = json["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2);
    for arm in arms {
        let steps = arm["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2, "{arm}");
        for s in steps {
            assert!(s["sent"].as_u64().unwrap() > 0, "{s}");
            assert_eq!(s["sent"], s["completed"], "{s}");
        }
    }
    for f in ["open-loop.md", "open-loop.svg"] {
        assert!(out.path().join(f).is_file(), "{f}");
    }
    run(&[
        "--scale",
        "--servers",
        "1",
        "--scale-accounts",
        "2,3",
        "--scale-conversations",
        "1,2",
        "--scale-envelopes",
        "2",
        "--scale-settle-ms",
        "10",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("scale.json")).unwrap())
            .unwrap();
    let points = json["points"].as_array().unwrap();
    assert_eq!(points.len(), 5, "{json}");
    for p in points {
        for server in ["router", "order_server"] {
            assert!(p[server]["restart_ms"].as_f64().unwrap() > 0.0, "{p}");
            assert!(p[server]["data_bytes"].as_u64().unwrap() > 0, "{p}");
        }
    }
    assert!(out.path().join("scale.md").is_file());
}
