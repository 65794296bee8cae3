//! `grompi-sim`: deterministic runs of the real protocol cores under
//! adversaries, scenario reports, sweeps, and the demo.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use grompi_simulator::report::SweepReport;
use grompi_simulator::scenario::Scenario;
use grompi_simulator::{demo, live, sweep, world};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs the grompi protocol's real router, order server and client cores in
/// one process under a seeded scheduler with virtual time, with adversaries
/// in place of the router or any order server, and judges every run
/// property by property (integrity, participant and content consistency,
/// no injection, withholding detected). The same seed gives the same
/// report, byte for byte. Live mode (`devnet`, `bench`, the demo) starts
/// the real servers as processes instead, with a malicious router and
/// malicious order servers on request.
#[derive(Parser)]
#[command(name = "grompi-sim", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts a real router and N real order servers as processes on
    /// 127.0.0.1 with generated keys and certificates, writes the network
    /// descriptor clients load, and runs until Ctrl-C. `--malicious 1=forge-tags`
    /// starts order server 1 as a malicious variant.
    Devnet(live::cli::DevnetArgs),
    /// Tells the malicious router of a running devnet (and, for a fork, its
    /// equivocating order servers) what to do: fork the group, drop
    /// indices, or replay to victims.
    Attack(live::cli::AttackArgs),
    /// Measures end-to-end latency and throughput of the real binaries
    /// (TLS, durable storage) for N order servers and group sizes g, each
    /// against the same router as a plain relay; writes JSON, Markdown and
    /// SVG plots. Build the binaries first: `cargo build --release --bins`.
    Bench(live::cli::BenchArgs),
    /// Runs one malicious order server (used by `devnet --malicious`).
    #[command(hide = true)]
    EvilOrderServer(live::cli::EvilOrderArgs),
    /// Runs a malicious router (used by `devnet --malicious-router`).
    #[command(hide = true)]
    EvilRouter(live::cli::EvilRouterArgs),
    /// Runs the real router from this executable (a self-hosted devnet).
    #[command(hide = true)]
    ServeRouter(live::cli::ServeArgs),
    /// Runs the real order server from this executable (a self-hosted devnet).
    #[command(hide = true)]
    ServeOrderServer(live::cli::ServeArgs),
    /// Starts a local network (a router and three order servers, each its
    /// own process over TLS on 127.0.0.1) and four clients, plays the
    /// protest conversation honestly, then again with a forking router
    /// colluding with two of the three order servers, and prints side by
    /// side what each member saw and which alerts fired.
    Demo {
        /// Play it in the deterministic simulator instead (real cores, one
        /// process, virtual time; the same seed prints the same text).
        #[arg(long)]
        in_process: bool,
        /// The seed (with --in-process).
        #[arg(long, default_value_t = 1, requires = "in_process")]
        seed: u64,
        /// The live network's quorum t of 3: 2 (a fork can gather a
        /// quorum) or 3 (it cannot).
        #[arg(long, default_value_t = 2, conflicts_with = "in_process")]
        quorum: usize,
        /// Keep the live networks' configurations, data, logs and client
        /// homes in this directory (default: a temporary one, removed).
        #[arg(long, conflicts_with = "in_process")]
        dir: Option<PathBuf>,
    },
    /// Runs one scenario file with one seed and prints its Markdown report.
    Run {
        /// The scenario (TOML; see simulator/scenarios/).
        scenario: PathBuf,
        /// The seed (replays a run exactly).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the Markdown report here instead of printing it.
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// Runs a scenario, or every scenario in a directory, over many seeds;
    /// writes sweep.json, sweep.md and cost plots (SVG) into --out.
    Sweep {
        /// A scenario file or a directory of them.
        scenarios: PathBuf,
        /// Seeds per scenario (0 .. N).
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// Where sweep.json, sweep.md and the plots go; created if missing.
        #[arg(long, default_value = "sweep-out")]
        out: PathBuf,
        /// Seeds per point of the cost plots (N in 1, 3, 5; group size in
        /// 2, 8, 32); 0 skips them.
        #[arg(long, default_value_t = 3)]
        cost_seeds: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devnet(args) => live::cli::devnet(&args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::Bench(args) if args.open_loop => live::cli::bench_open_loop(&args)
            .map(|md| {
                print!("{md}");
                ExitCode::SUCCESS
            })
            .map_err(|e| e.to_string()),
        Command::Bench(args) if args.scale => live::cli::bench_scale(&args)
            .map(|md| {
                print!("{md}");
                ExitCode::SUCCESS
            })
            .map_err(|e| e.to_string()),
        Command::Bench(args) => live::cli::bench(&args)
            .map(|report| {
                print!("{}", report.to_markdown());
                ExitCode::SUCCESS
            })
            .map_err(|e| e.to_string()),
        Command::EvilOrderServer(args) => live::cli::evil_order_server(&args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::Attack(args) => live::cli::attack(&args)
            .map(|()| {
                println!("the plan is in force");
                ExitCode::SUCCESS
            })
            .map_err(|e| e.to_string()),
        Command::EvilRouter(args) => live::cli::evil_router(&args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::ServeRouter(args) => live::cli::serve_router(&args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::ServeOrderServer(args) => live::cli::serve_order_server(&args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::Demo {
            in_process: true,
            seed,
            ..
        } => run_demo(seed),
        Command::Demo { quorum, dir, .. } => run_live_demo(quorum, dir),
        Command::Run {
            scenario,
            seed,
            json,
            markdown,
        } => run_one(&scenario, seed, json.as_deref(), markdown.as_deref()),
        Command::Sweep {
            scenarios,
            seeds,
            out,
            cost_seeds,
        } => run_sweep(&scenarios, seeds, &out, cost_seeds),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("grompi-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn load(path: &Path) -> Result<Scenario, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Scenario::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn run_demo(seed: u64) -> Result<ExitCode, String> {
    let (honest, forked) = demo::run_demo(seed).map_err(|e| e.to_string())?;
    print!("{}", demo::render(seed, &honest, &forked));
    Ok(ExitCode::SUCCESS)
}

fn run_live_demo(quorum: usize, dir: Option<PathBuf>) -> Result<ExitCode, String> {
    let keep = dir.is_some();
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("grompi-demo-{}", std::process::id()))
    });
    if !keep && dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    let options = demo::LiveOptions {
        dir: dir.clone(),
        launcher: live::devnet::Launcher::this_executable().map_err(|e| e.to_string())?,
        quorum,
    };
    let started = std::time::Instant::now();
    let result = demo::run_live(&options, |step| {
        eprintln!("[{:>5.1} s] {step}", started.elapsed().as_secs_f64());
    });
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (honest, forked) = result.map_err(|e| {
        if keep {
            format!("{e} (logs under {})", dir.display())
        } else {
            format!("{e} (run again with --dir DIR to keep the logs)")
        }
    })?;
    print!("{}", demo::render_live(&honest, &forked));
    if keep {
        println!(
            "Configurations, data, logs and client homes: {}",
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_one(
    path: &Path,
    seed: u64,
    json: Option<&Path>,
    markdown: Option<&Path>,
) -> Result<ExitCode, String> {
    let scenario = load(path)?;
    let report = world::run(&scenario, seed).map_err(|e| e.to_string())?;
    if let Some(j) = json {
        write(j, &report.to_json())?;
    }
    match markdown {
        Some(m) => write(m, &report.to_markdown())?,
        None => print!("{}", report.to_markdown()),
    }
    Ok(if report.as_expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn scenario_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
            .collect();
        files.sort();
        Ok(files)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

fn progress(label: &str, done: u64, total: u64) {
    let width = 30u64;
    let filled = (done * width).checked_div(total).unwrap_or(width) as usize;
    let bar = format!(
        "{}{}",
        "#".repeat(filled),
        "-".repeat(width as usize - filled.min(width as usize))
    );
    eprint!("\r{label:<32} [{bar}] {done}/{total}");
    if done == total {
        eprintln!();
    }
    let _ = std::io::stderr().flush();
}

fn run_sweep(path: &Path, seeds: u64, out: &Path, cost_seeds: u64) -> Result<ExitCode, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut reports = Vec::new();
    for file in scenario_files(path)? {
        let scenario = load(&file)?;
        let name = scenario.name.clone();
        let r = sweep::sweep(&scenario, 0..seeds, |d, t| progress(&name, d, t))
            .map_err(|e| e.to_string())?;
        reports.push(r);
    }
    let mut md = String::from("# Sweep\n\n");
    md.push_str(&format!(
        "{seeds} seeds per scenario (0 to {}).\n\n",
        seeds.saturating_sub(1)
    ));
    md.push_str(SweepReport::MARKDOWN_HEADER);
    md.push('\n');
    for r in &reports {
        md.push_str(&r.markdown_row());
        md.push('\n');
    }
    let mut json = serde_json::json!({ "seeds": seeds, "scenarios": reports });
    if cost_seeds > 0 {
        let points = sweep::cost(&[1, 3, 5], &[2, 8, 32], cost_seeds, |d, t| {
            progress("cost (N x group size)", d, t)
        })
        .map_err(|e| e.to_string())?;
        let (latency, messages) = sweep::cost_charts(&points);
        write(&out.join("latency.svg"), &latency)?;
        write(&out.join("messages.svg"), &messages)?;
        md.push_str("\n## Cost of the honest protocol\n\n");
        md.push_str(&sweep::cost_table(&points));
        md.push_str("\n![latency](latency.svg)\n\n![messages](messages.svg)\n");
        json["cost"] = serde_json::to_value(&points).unwrap_or_default();
    }
    write(&out.join("sweep.md"), &md)?;
    write(
        &out.join("sweep.json"),
        &serde_json::to_string_pretty(&json).unwrap_or_default(),
    )?;
    print!("{md}");
    let unexpected = reports.iter().any(|r| !r.unexpected_seeds.is_empty());
    Ok(if unexpected {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
