//! The `devnet` and `bench` subcommands of `grompi-sim`: argument parsing
//! and output around [`super::devnet`] and [`super::bench`].

use super::LiveError;
use super::bench::{BenchOptions, BenchReport, run};
use super::devnet::{Devnet, DevnetOptions, default_binaries};
use super::evil_order::EvilStrategy;
use crate::plot::{Series, line_chart};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `grompi-sim devnet`: a real router and N order servers on 127.0.0.1.
#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Directory for keys, configurations, data and logs; reused (same keys
    /// and ports) when it already holds a devnet.
    #[arg(long, default_value = "devnet")]
    pub dir: PathBuf,
    /// Number of order servers (N).
    #[arg(long, default_value_t = 3)]
    pub order_servers: usize,
    /// Quorum t of N (default N: every order server must attest).
    #[arg(long)]
    pub quorum: Option<usize>,
    /// Directory with the `router` and `order-server` binaries (default:
    /// next to this executable; build them with `cargo build --bins`).
    #[arg(long)]
    pub binaries: Option<PathBuf>,
    /// Start order server POSITION as a malicious variant, as
    /// POSITION=STRATEGY (forge-tags, withhold-tags, lie-heads); repeatable.
    #[arg(long = "malicious", value_parser = parse_malicious)]
    pub malicious: Vec<(usize, EvilStrategy)>,
}

fn parse_malicious(s: &str) -> Result<(usize, EvilStrategy), String> {
    let (i, strategy) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected POSITION=STRATEGY, e.g. 1=forge-tags"))?;
    let i = i
        .parse()
        .map_err(|e| format!("{i:?} is not an order server position: {e}"))?;
    Ok((i, strategy.parse()?))
}

/// `grompi-sim evil-order-server`: the real order server with a malicious
/// strategy applied to its answers (what `devnet --malicious` starts).
#[derive(Debug, clap::Args)]
pub struct EvilOrderArgs {
    /// forge-tags, withhold-tags or lie-heads.
    #[arg(long)]
    pub strategy: EvilStrategy,
    /// The order server's configuration file (as for `order-server serve`).
    #[arg(long)]
    pub config: PathBuf,
}

/// Runs a malicious order server until SIGTERM or Ctrl-C.
pub fn evil_order_server(args: &EvilOrderArgs) -> Result<(), LiveError> {
    let config = grompi_order_server::config::Config::load(&args.config)
        .map_err(|e| LiveError::Setup(format!("{}: {e}", args.config.display())))?;
    runtime()?
        .block_on(super::evil_order::serve(config, args.strategy))
        .map_err(LiveError::Setup)
}

/// `grompi-sim bench`: end-to-end latency and throughput against a relay.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Where to write bench.json, bench.md and the plots.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Numbers of order servers, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    pub servers: Vec<usize>,
    /// Group sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2,8,32")]
    pub groups: Vec<usize>,
    /// Messages sent one at a time per cell (latency).
    #[arg(long, default_value_t = 200)]
    pub latency_messages: usize,
    /// Messages sent by all members at once per cell (throughput).
    #[arg(long, default_value_t = 1000)]
    pub throughput_messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 256)]
    pub body_bytes: usize,
    /// Per-recipient block size in bytes.
    #[arg(long, default_value_t = 96)]
    pub block_bytes: usize,
    /// Directory with the `router` and `order-server` binaries (default:
    /// next to this executable; build them with `cargo build --release --bins`).
    #[arg(long)]
    pub binaries: Option<PathBuf>,
}

fn runtime() -> Result<tokio::runtime::Runtime, LiveError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LiveError::io("start the async runtime"))
}

/// Starts the devnet, prints where everything is, and runs until Ctrl-C or
/// SIGTERM (or until a server exits), then stops every server gracefully.
pub fn devnet(args: &DevnetArgs) -> Result<(), LiveError> {
    let options = DevnetOptions {
        dir: args.dir.clone(),
        order_servers: args.order_servers,
        quorum: args.quorum,
        binaries: match &args.binaries {
            Some(b) => b.clone(),
            None => default_binaries()?,
        },
        router_extra: String::new(),
        evil: args.malicious.iter().copied().collect(),
    };
    if let Some((i, _)) = args
        .malicious
        .iter()
        .find(|(i, _)| *i >= args.order_servers)
    {
        return Err(LiveError::Setup(format!(
            "--malicious names order server {i}, but there are only {} (positions from 0)",
            args.order_servers
        )));
    }
    let mut net = Devnet::start(&options)?;
    print!("{}", net.summary());
    println!(
        "Clients load the descriptor above. Stop with Ctrl-C; starting again with the same \
         --dir keeps keys, ports and data."
    );
    let rt = runtime()?;
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(LiveError::io("listen for SIGTERM"))?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(1)) => net.check_running()?,
            }
        }
    });
    eprintln!("devnet: stopping");
    net.stop();
    result
}

/// Runs the benchmark and writes its JSON, Markdown and plots.
pub fn bench(args: &BenchArgs) -> Result<BenchReport, LiveError> {
    std::fs::create_dir_all(&args.out)
        .map_err(LiveError::io(format!("create {}", args.out.display())))?;
    let options = BenchOptions {
        dir: args.out.join("scratch"),
        binaries: match &args.binaries {
            Some(b) => b.clone(),
            None => default_binaries()?,
        },
        servers: args.servers.clone(),
        groups: args.groups.clone(),
        latency_messages: args.latency_messages,
        throughput_messages: args.throughput_messages,
        body_bytes: args.body_bytes,
        block_bytes: args.block_bytes,
    };
    let cells = args.servers.len() * args.groups.len() + args.groups.len();
    let mut step = 0;
    let report = runtime()?.block_on(run(&options, |s| {
        step += 1;
        eprintln!("[{step}/{cells}] {s}");
    }))?;
    let _ = std::fs::remove_dir_all(&options.dir);
    write(
        &args.out.join("bench.json"),
        &serde_json::to_string_pretty(&report)
            .map_err(|e| LiveError::Setup(format!("encode the report: {e}")))?,
    )?;
    write(&args.out.join("bench.md"), &report.to_markdown())?;
    for (name, chart) in plots(&report) {
        write(&args.out.join(name), &chart)?;
    }
    Ok(report)
}

fn write(path: &Path, text: &str) -> Result<(), LiveError> {
    std::fs::write(path, text).map_err(LiveError::io(format!("write {}", path.display())))
}

/// p50 latency and throughput against N (one line per group size) and
/// against g (one line per N), the relay as its own line.
fn plots(report: &BenchReport) -> Vec<(&'static str, String)> {
    let groups: Vec<usize> = report.options.groups.clone();
    let servers: Vec<usize> = report.options.servers.clone();
    let cell = |mode: &str, n: usize, g: usize| {
        report
            .cells
            .iter()
            .find(|c| c.mode == mode && (mode == "relay" || c.servers == n) && c.group == g)
    };
    let mut by_n_latency = Vec::new();
    let mut by_n_throughput = Vec::new();
    for &g in &groups {
        let pts = |f: &dyn Fn(&super::bench::Cell) -> f64| -> Vec<(f64, f64)> {
            servers
                .iter()
                .filter_map(|&n| cell("attested", n, g).map(|c| (n as f64, f(c))))
                .collect()
        };
        by_n_latency.push(Series {
            name: format!("g = {g}"),
            points: pts(&|c| c.latency_p50_ms),
        });
        by_n_throughput.push(Series {
            name: format!("g = {g}"),
            points: pts(&|c| c.throughput_per_s),
        });
    }
    let mut by_g_latency = Vec::new();
    let mut by_g_throughput = Vec::new();
    for &n in &servers {
        let pts = |f: &dyn Fn(&super::bench::Cell) -> f64| -> Vec<(f64, f64)> {
            groups
                .iter()
                .filter_map(|&g| cell("attested", n, g).map(|c| (g as f64, f(c))))
                .collect()
        };
        by_g_latency.push(Series {
            name: format!("N = {n}"),
            points: pts(&|c| c.latency_p50_ms),
        });
        by_g_throughput.push(Series {
            name: format!("N = {n}"),
            points: pts(&|c| c.throughput_per_s),
        });
    }
    let relay = |f: &dyn Fn(&super::bench::Cell) -> f64| Series {
        name: "relay".into(),
        points: groups
            .iter()
            .filter_map(|&g| cell("relay", 0, g).map(|c| (g as f64, f(c))))
            .collect(),
    };
    by_g_latency.push(relay(&|c| c.latency_p50_ms));
    by_g_throughput.push(relay(&|c| c.throughput_per_s));
    vec![
        (
            "latency-vs-n.svg",
            line_chart(
                "p50 end-to-end latency",
                "order servers N",
                "ms",
                &by_n_latency,
            ),
        ),
        (
            "latency-vs-g.svg",
            line_chart(
                "p50 end-to-end latency",
                "group size g",
                "ms",
                &by_g_latency,
            ),
        ),
        (
            "throughput-vs-n.svg",
            line_chart(
                "throughput",
                "order servers N",
                "messages/s",
                &by_n_throughput,
            ),
        ),
        (
            "throughput-vs-g.svg",
            line_chart("throughput", "group size g", "messages/s", &by_g_throughput),
        ),
    ]
}
