//! The `devnet` and `bench` subcommands of `grompi-sim`: argument parsing
//! and output around [`super::devnet`] and [`super::bench`].

use super::LiveError;
use super::bench::{BenchOptions, BenchReport, run};
use super::devnet::{Devnet, DevnetOptions, Launcher, default_binaries};
use super::evil_order::EvilStrategy;
use super::evil_router::RouterStrategy;
use super::open_loop::OpenLoopOptions;
use super::scale::ScaleOptions;
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
    /// POSITION=STRATEGY (forge-tags, withhold-tags, lie-heads,
    /// equivocate); repeatable.
    #[arg(long = "malicious", value_parser = parse_malicious)]
    pub malicious: Vec<(usize, EvilStrategy)>,
    /// Start the router as a malicious variant: fork, drop, replay or
    /// substitute-join. It is
    /// honest until told what to do in `router/data/attack.toml` (see
    /// docs/SIMULATOR.md).
    #[arg(long)]
    pub malicious_router: Option<RouterStrategy>,
    /// Start every server from this executable instead of the `router` and
    /// `order-server` binaries (nothing else needs to be built).
    #[arg(long, conflicts_with = "binaries")]
    pub self_hosted: bool,
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
    /// forge-tags, withhold-tags, lie-heads or equivocate.
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
    grompi_ops::telemetry::init_tracing(&config.log);
    let rt = runtime()?;
    let result = rt
        .block_on(super::evil_order::serve(config, args.strategy))
        .map_err(LiveError::Setup);
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// `grompi-sim attack`: tells the malicious servers of a running devnet
/// what to do (writes their control files and waits for their answers).
#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    /// The devnet's directory.
    #[arg(long, default_value = "devnet")]
    pub dir: PathBuf,
    /// fork: one group of account ids (hex, comma separated); give it once
    /// per group. The first group keeps the router's state.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// fork: the positions of the order servers started with
    /// `--malicious POSITION=equivocate` (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub equivocating: Vec<usize>,
    /// drop, replay and substitute-join: an account id (hex) whose
    /// deliveries change; repeatable.
    #[arg(long = "victim")]
    pub victims: Vec<String>,
    /// drop: an index the victims never get; repeatable.
    #[arg(long = "drop")]
    pub indices: Vec<u64>,
    /// substitute-join: deliver the substituted Update with the genuine
    /// previous head instead of none.
    #[arg(long)]
    pub keep_previous_head: bool,
}

/// Sends the plan of `args` to a devnet's malicious router (and, for a
/// fork, to its equivocating order servers first).
pub fn attack(args: &AttackArgs) -> Result<(), LiveError> {
    use super::control::{self, AttackPlan, Done};
    let router_data = args.dir.join("router").join("data");
    if !router_data.is_dir() {
        return Err(LiveError::Setup(format!(
            "{} is not a devnet directory (no router/data)",
            args.dir.display()
        )));
    }
    let last = control::read::<Done>(&router_data, control::ATTACK_DONE)
        .map_or(0, |d| d.id)
        .max(control::read::<AttackPlan>(&router_data, control::ATTACK).map_or(0, |p| p.id));
    let groups: Vec<Vec<String>> = args
        .groups
        .iter()
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let mut plan = AttackPlan {
        id: control::fresh_id(last),
        groups,
        branch_order_servers: Vec::new(),
        victims: args.victims.clone(),
        indices: args.indices.clone(),
        keep_previous_head: args.keep_previous_head,
    };
    if plan.groups.len() == 1 {
        return Err(LiveError::Setup("a fork needs two --group or more".into()));
    }
    if plan.groups.len() >= 2 {
        let dirs: Vec<(usize, PathBuf)> = args
            .equivocating
            .iter()
            .map(|i| (*i, args.dir.join(format!("order-{i}")).join("data")))
            .collect();
        let dirs: Vec<(usize, &Path)> = dirs.iter().map(|(i, d)| (*i, d.as_path())).collect();
        plan.branch_order_servers =
            control::fork_order_servers(&dirs, plan.groups.len(), plan.id, |_| Ok(()))?;
    }
    control::attack_router(&router_data, &plan, || Ok(())).map_err(|e| match e {
        LiveError::Timeout(what) => LiveError::Timeout(format!(
            "{what} (is the router started with --malicious-router?)"
        )),
        e => e,
    })
}

/// `grompi-sim evil-router`: a malicious router in front of real routers
/// (what `devnet --malicious-router` starts).
#[derive(Debug, clap::Args)]
pub struct EvilRouterArgs {
    /// fork, drop, replay or substitute-join.
    #[arg(long)]
    pub strategy: RouterStrategy,
    /// The router's configuration file (as for `router serve`).
    #[arg(long)]
    pub config: PathBuf,
}

/// Runs a malicious router until SIGTERM or Ctrl-C.
pub fn evil_router(args: &EvilRouterArgs) -> Result<(), LiveError> {
    let config = grompi_router::config::Config::load(&args.config)
        .map_err(|e| LiveError::Setup(e.to_string()))?;
    grompi_ops::telemetry::init_tracing(&config.log);
    let rt = runtime()?;
    let result = rt.block_on(super::evil_router::serve(config, args.strategy));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// `grompi-sim serve-router` and `serve-order-server`: the real servers,
/// run from this executable (what a self-hosted devnet starts).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The server's TOML configuration file, as the real binary reads it.
    #[arg(long)]
    pub config: PathBuf,
}

/// Runs the real router (`grompi_router::server::serve`, as `router
/// serve` does) until SIGTERM or Ctrl-C.
pub fn serve_router(args: &ServeArgs) -> Result<(), LiveError> {
    let config = grompi_router::config::Config::load(&args.config)
        .map_err(|e| LiveError::Setup(e.to_string()))?;
    grompi_ops::telemetry::init_tracing(&config.log);
    let rt = runtime()?;
    let result = rt
        .block_on(grompi_router::server::serve(
            config,
            grompi_ops::shutdown::signal(),
        ))
        .map_err(|e| LiveError::Setup(format!("router: {e}")));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Runs the real order server (`grompi_order_server::server::serve`, as
/// `order-server serve` does) until SIGTERM or Ctrl-C.
pub fn serve_order_server(args: &ServeArgs) -> Result<(), LiveError> {
    let config = grompi_order_server::config::Config::load(&args.config)
        .map_err(|e| LiveError::Setup(format!("{}: {e}", args.config.display())))?;
    grompi_ops::telemetry::init_tracing(&config.log);
    let rt = runtime()?;
    let result = rt
        .block_on(grompi_order_server::server::serve(config))
        .map_err(|e| LiveError::Setup(format!("order server: {e}")));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// `grompi-sim bench`: end-to-end latency and throughput against a relay.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Where to write bench.json, bench.md and the plots.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Numbers of order servers, comma separated (default 1,3,5; with
    /// --open-loop 3; with --scale 3).
    #[arg(long, value_delimiter = ',')]
    pub servers: Option<Vec<usize>>,
    /// Group sizes, comma separated (default 2,8,32; with --open-loop one
    /// size, default 8; with --scale one size, default 2).
    #[arg(long, value_delimiter = ',')]
    pub groups: Option<Vec<usize>>,
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
    /// next to this executable; build them with `cargo build --release --bins`),
    /// or a `grompi-sim` executable, which then runs every server itself.
    #[arg(long)]
    pub binaries: Option<PathBuf>,
    /// Use the smallest majority quorum (t = N/2 + 1) instead of t = N:
    /// members accept once the fastest t order servers have attested.
    #[arg(long)]
    pub majority: bool,
    /// --open-loop: the order servers' gathering window, `commit_gather_us`
    /// in their configuration, in microseconds; comma separated for one
    /// attested arm per window, compared in the same round (default: the
    /// configuration's default). 0 turns it off.
    #[arg(long, value_delimiter = ',')]
    pub order_gather_us: Vec<u64>,
    /// --open-loop: run every arm this many times, round by round (the
    /// relay, then each attested arm, odd rounds in the reverse order,
    /// seed + round), and report each
    /// attested arm's median ratio. Single runs of one setting differ by
    /// more than a rate step on a busy machine.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Where the servers' data directories go while measuring (default:
    /// `<out>/scratch`). The report names the filesystem. Put it on the
    /// disk you want to measure; a tmpfs such as `/dev/shm` measures
    /// everything but the disk (its fsync costs nothing, so that run is
    /// not durable and says so).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Open-loop capacity instead of the grid: many conversations at once,
    /// Poisson arrivals stepped up through --rates until p99 passes
    /// --p99-limit-ms, against the relay (writes open-loop.json, .md, .svg).
    #[arg(long, conflicts_with = "scale")]
    pub open_loop: bool,
    /// --open-loop: conversations, all active at once.
    #[arg(long, default_value_t = 1000)]
    pub conversations: usize,
    /// --open-loop: offered rates in messages per second, comma separated,
    /// in order; stepping stops at the first that does not hold.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "250,500,750,1000,1500,2000,2500,3000,4000,5000,6000,8000"
    )]
    pub rates: Vec<f64>,
    /// --open-loop: seconds per step.
    #[arg(long, default_value_t = 10.0)]
    pub step_seconds: f64,
    /// --open-loop: a step holds while its p99 is at most this (ms).
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
    /// --open-loop: ... and while at least (1 - margin) of its arrivals per
    /// second are accepted by every member within the step.
    #[arg(long, default_value_t = 0.05)]
    pub rate_margin: f64,
    /// --open-loop: TLS connections for submissions (subscriptions get one
    /// per 200 accounts).
    #[arg(long, default_value_t = 4)]
    pub submit_connections: usize,
    /// --open-loop: seed of the arrivals and of the choice of senders.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Router and order-server memory and restart time as the state grows
    /// (writes scale.json, scale.md): see --scale-accounts,
    /// --scale-conversations, --scale-envelopes.
    #[arg(long)]
    pub scale: bool,
    /// --scale: account counts, ascending, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub scale_accounts: Vec<usize>,
    /// --scale: conversation counts, ascending, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub scale_conversations: Vec<usize>,
    /// --scale: stored envelopes (Messages) to reach, spread over the first
    /// conversations; memory is also measured at a quarter and half of it.
    #[arg(long, default_value_t = 1_000_000)]
    pub scale_envelopes: usize,
    /// --scale: how long a restarted server runs before its memory is read, ms.
    #[arg(long, default_value_t = 1000)]
    pub scale_settle_ms: u64,
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
        order_extra: String::new(),
        evil: args.malicious.iter().copied().collect(),
    };
    let launcher = if args.self_hosted {
        Launcher::this_executable()?
    } else {
        Launcher::Binaries(options.binaries.clone())
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
    let mut net = Devnet::start_with(&options, &launcher, args.malicious_router)?;
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

fn scratch(args: &BenchArgs) -> PathBuf {
    args.scratch.as_ref().map_or_else(
        || args.out.join("scratch"),
        |s| s.join("grompi-bench-scratch"),
    )
}

fn binaries(args: &BenchArgs) -> Result<PathBuf, LiveError> {
    match &args.binaries {
        Some(b) => Ok(b.clone()),
        None => default_binaries(),
    }
}

/// Runs `bench --open-loop` and writes open-loop.json, open-loop.md and
/// open-loop.svg; returns the Markdown.
pub fn bench_open_loop(args: &BenchArgs) -> Result<String, LiveError> {
    std::fs::create_dir_all(&args.out)
        .map_err(LiveError::io(format!("create {}", args.out.display())))?;
    let group = match args.groups.as_deref() {
        None => 8,
        Some([g]) => *g,
        Some(_) => {
            return Err(LiveError::Setup(
                "--open-loop takes one group size (--groups 8)".into(),
            ));
        }
    };
    let options = OpenLoopOptions {
        dir: scratch(args),
        binaries: binaries(args)?,
        servers: args.servers.clone().unwrap_or_else(|| vec![3]),
        conversations: args.conversations,
        group,
        rates: args.rates.clone(),
        step_seconds: args.step_seconds,
        p99_limit_ms: args.p99_limit_ms,
        rate_margin: args.rate_margin,
        submit_connections: args.submit_connections,
        body_bytes: args.body_bytes,
        block_bytes: args.block_bytes,
        seed: args.seed,
        majority: args.majority,
        order_gather_us: args.order_gather_us.clone(),
        rounds: args.rounds.max(1),
    };
    let report = runtime()?.block_on(super::open_loop::run(&options, |s| eprintln!("{s}")))?;
    let _ = std::fs::remove_dir_all(&options.dir);
    write(
        &args.out.join("open-loop.json"),
        &serde_json::to_string_pretty(&report)
            .map_err(|e| LiveError::Setup(format!("encode the report: {e}")))?,
    )?;
    let md = report.to_markdown();
    write(&args.out.join("open-loop.md"), &md)?;
    write(&args.out.join("open-loop.svg"), &report.plot())?;
    Ok(md)
}

/// Runs `bench --scale` and writes scale.json and scale.md; returns the
/// Markdown.
pub fn bench_scale(args: &BenchArgs) -> Result<String, LiveError> {
    std::fs::create_dir_all(&args.out)
        .map_err(LiveError::io(format!("create {}", args.out.display())))?;
    let group = match args.groups.as_deref() {
        None => 2,
        Some([g]) => *g,
        Some(_) => {
            return Err(LiveError::Setup(
                "--scale takes one group size (--groups 2)".into(),
            ));
        }
    };
    let servers = match args.servers.as_deref() {
        None => 3,
        Some([n]) => *n,
        Some(_) => return Err(LiveError::Setup("--scale takes one N (--servers 3)".into())),
    };
    let options = ScaleOptions {
        dir: scratch(args),
        binaries: binaries(args)?,
        servers,
        group,
        accounts: args.scale_accounts.clone(),
        conversations: args.scale_conversations.clone(),
        envelopes: args.scale_envelopes,
        body_bytes: args.body_bytes,
        block_bytes: args.block_bytes,
        settle_ms: args.scale_settle_ms,
    };
    let report = runtime()?.block_on(super::scale::run(&options, |s| eprintln!("{s}")))?;
    write(
        &args.out.join("scale.json"),
        &serde_json::to_string_pretty(&report)
            .map_err(|e| LiveError::Setup(format!("encode the report: {e}")))?,
    )?;
    let md = report.to_markdown();
    write(&args.out.join("scale.md"), &md)?;
    Ok(md)
}

/// Runs the benchmark and writes its JSON, Markdown and plots.
pub fn bench(args: &BenchArgs) -> Result<BenchReport, LiveError> {
    std::fs::create_dir_all(&args.out)
        .map_err(LiveError::io(format!("create {}", args.out.display())))?;
    let options = BenchOptions {
        dir: scratch(args),
        binaries: binaries(args)?,
        servers: args.servers.clone().unwrap_or_else(|| vec![1, 3, 5]),
        groups: args.groups.clone().unwrap_or_else(|| vec![2, 8, 32]),
        latency_messages: args.latency_messages,
        throughput_messages: args.throughput_messages,
        body_bytes: args.body_bytes,
        block_bytes: args.block_bytes,
        majority: args.majority,
    };
    let cells = options.servers.len() * options.groups.len() + options.groups.len();
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
