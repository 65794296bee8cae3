//! The demo: the protest conversation played honestly, then with a forking
//! router colluding with two of the three order servers, side by side.
//!
//! Two versions:
//!
//! * **live** ([`run_live`], the default of `grompi-sim demo`): a real local
//!   network per half, each server its own process on 127.0.0.1 over TLS
//!   with durable storage (a router and three order servers, started by
//!   [`crate::live::devnet`]), and four real clients using the client
//!   library. The forked half starts the forking router
//!   ([`crate::live::evil_router`]) and two equivocating order servers
//!   ([`crate::live::evil_order`]); after the Setup it forks them into
//!   Alice and Bob / Charlie and Dave, and the third order server stays
//!   honest. Every process runs from the `grompi-sim` executable itself
//!   (the same library code as the `router` and `order-server` binaries),
//!   so the demo needs nothing else built.
//! * **in-process** ([`run_demo`], `grompi-sim demo --in-process`): the same
//!   conversation in the deterministic simulator, real cores under virtual
//!   time; the same seed prints the same text.

use crate::live::LiveError;
use crate::live::devnet::{Devnet, DevnetOptions, Launcher, refused_equivocations};
use crate::live::evil_order::EvilStrategy;
use crate::live::evil_router::RouterStrategy;
use crate::live::protest::{Cast, LiveView, MEMBERS, PARTITION};
use crate::report::{RunReport, side_by_side};
use crate::scenario::Scenario;
use crate::world::{SimError, run};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The honest protest conversation.
pub const HONEST: &str = include_str!("../scenarios/protest-honest.toml");
/// The same conversation with the router forking the group.
pub const FORKED: &str = include_str!("../scenarios/protest-fork.toml");

/// Runs both halves of the demo with `seed`.
pub fn run_demo(seed: u64) -> Result<(RunReport, RunReport), SimError> {
    let honest = Scenario::parse("protest-honest.toml", HONEST)
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let forked =
        Scenario::parse("protest-fork.toml", FORKED).map_err(|e| SimError::Setup(e.to_string()))?;
    Ok((run(&honest, seed)?, run(&forked, seed)?))
}

fn section(out: &mut String, title: &str, r: &RunReport) {
    let _ = writeln!(out, "== {title} ==");
    let _ = writeln!(out, "adversary: {}", r.adversary);
    out.push_str(&side_by_side(&r.views));
    for m in r.never_accepted() {
        let _ = writeln!(out, "- sent, but accepted by no member: {m}");
    }
    let _ = writeln!(
        out,
        "verdict: {} (integrity {}, honest views agree: {})",
        r.observed,
        if r.verdicts.integrity.ok() {
            "holds"
        } else {
            "BROKEN"
        },
        if r.verdicts.honest_views_agree {
            "yes"
        } else {
            "no"
        }
    );
    let _ = writeln!(out, "{}\n", r.finding);
}

/// The demo's text.
pub fn render(seed: u64, honest: &RunReport, forked: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "grompi demo (seed {seed}): in-process network: router, 3 order servers, 4 clients, real protocol cores, virtual time.\n"
    );
    section(
        &mut out,
        "1. The protest conversation, everyone honest",
        honest,
    );
    section(
        &mut out,
        "2. The same, with the router forking the group (Alice and Bob / Charlie and Dave), colluding with order servers 0 and 1",
        forked,
    );
    let _ = writeln!(
        out,
        "Each cell is sender: text [history]; the letter names the chain of heads the member accepted at that index."
    );
    out
}

/// N of the live demo: how many order servers it runs.
pub const LIVE_ORDER_SERVERS: usize = 3;
/// The order servers that collude with the forking router.
pub const COLLUDING: [usize; 2] = [0, 1];

/// Where and how the live demo runs.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Configurations, data, logs and client homes go under here.
    pub dir: PathBuf,
    /// Where the server processes come from.
    pub launcher: Launcher,
    /// The quorum t of 3 (2 or 3).
    pub quorum: usize,
}

/// One half of the live demo.
#[derive(Debug, Clone)]
pub struct LiveRun {
    /// Whether the router forked.
    pub forked: bool,
    /// The quorum t (of N = 3) members required in this half, from [`LiveOptions`].
    pub quorum: usize,
    /// What each member saw.
    pub views: Vec<LiveView>,
    /// Refused equivocation attempts each honest order server kept as
    /// evidence: (position, count).
    pub evidence: Vec<(usize, u64)>,
}

impl LiveRun {
    /// The names of the members whose accepted indices all lie on history
    /// `letter` or earlier, and who accepted at least one index of it.
    pub fn members_on(&self, letter: char) -> Vec<&str> {
        self.views
            .iter()
            .filter(|v| v.accepted.iter().map(|e| e.history).max() == Some(letter))
            .map(|v| v.name.as_str())
            .collect()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, LiveError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(LiveError::io("start the async runtime"))
}

/// Plays one half: starts the network, the four clients join, (forks,)
/// plays the script and the audit, stops the network.
pub fn run_live_half(
    options: &LiveOptions,
    forked: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<LiveRun, LiveError> {
    let dir = options.dir.join(if forked { "forked" } else { "honest" });
    let evil: BTreeMap<usize, EvilStrategy> = if forked {
        COLLUDING
            .iter()
            .map(|i| (*i, EvilStrategy::Equivocate))
            .collect()
    } else {
        BTreeMap::new()
    };
    let devnet = DevnetOptions {
        dir: dir.join("net"),
        order_servers: LIVE_ORDER_SERVERS,
        quorum: Some(options.quorum),
        binaries: PathBuf::new(),
        // A message a group cannot get a quorum for is refused soon.
        router_extra: "submit_timeout_ms = 3000\n".into(),
        order_extra: String::new(),
        evil,
    };
    progress(if forked {
        "starting a forking router, two equivocating order servers and an honest one"
    } else {
        "starting a router and three order servers"
    });
    let mut net = Devnet::start_with(
        &devnet,
        &options.launcher,
        forked.then_some(RouterStrategy::Fork),
    )?;
    let descriptor = std::fs::read_to_string(&net.descriptor_path).map_err(LiveError::io(
        format!("read {}", net.descriptor_path.display()),
    ))?;
    let rt = runtime()?;
    progress("four clients register; alice creates the conversation");
    let mut cast = rt.block_on(Cast::join(&descriptor, &dir.join("clients")))?;
    if forked {
        progress("the router and order servers 0 and 1 fork: alice and bob / charlie and dave");
        net.fork(&cast.groups(&PARTITION))?;
        cast.set_partition(&PARTITION);
    }
    progress("playing the conversation");
    rt.block_on(cast.play())?;
    let views = cast.views()?;
    drop(cast);
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    net.stop();
    let mut kept = Vec::new();
    for (i, node) in net.order_servers.iter().enumerate() {
        if forked && !COLLUDING.contains(&i) {
            kept.push((i, refused_equivocations(&node.data_dir)?));
        }
    }
    Ok(LiveRun {
        forked,
        quorum: options.quorum,
        views,
        evidence: kept,
    })
}

/// Plays both halves of the live demo.
pub fn run_live(
    options: &LiveOptions,
    mut progress: impl FnMut(&str),
) -> Result<(LiveRun, LiveRun), LiveError> {
    let (n, t) = (LIVE_ORDER_SERVERS, options.quorum);
    if t < grompi_proto::descriptor::min_quorum(n) || t > n {
        return Err(LiveError::Setup(format!(
            "quorum {t} of {n}: choose 2 or 3"
        )));
    }
    let honest = run_live_half(options, false, &mut progress)?;
    let forked = run_live_half(options, true, &mut progress)?;
    Ok((honest, forked))
}

fn cell(v: &LiveView, index: u64, servers: usize) -> String {
    let Some(e) = v.accepted.iter().find(|e| e.index == index) else {
        return String::new();
    };
    let who = e.sender.clone().unwrap_or_else(|| "?".into());
    let what = match &e.text {
        Some(t) => format!("{who}: {t}"),
        None => format!("{who}: ({})", e.kind),
    };
    format!("{what} [{} {}/{servers}]", e.history, e.tags)
}

fn live_section(out: &mut String, title: &str, r: &LiveRun) {
    let servers = LIVE_ORDER_SERVERS;
    let _ = writeln!(out, "== {title} ==");
    let names: Vec<&str> = r.views.iter().map(|v| v.name.as_str()).collect();
    let _ = writeln!(out, "| # | {} |", names.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(names.len()));
    let last = r
        .views
        .iter()
        .flat_map(|v| v.accepted.iter().map(|e| e.index))
        .max();
    for index in last.map_or(0..0, |l| 0..l + 1) {
        let cells: Vec<String> = r.views.iter().map(|v| cell(v, index, servers)).collect();
        let _ = writeln!(out, "| {index} | {} |", cells.join(" | "));
    }
    let _ = writeln!(out);
    for v in &r.views {
        for n in &v.notes {
            let _ = writeln!(out, "- {}: {n}", v.name);
        }
        if v.alerts.is_empty() {
            let _ = writeln!(out, "- {}: no alerts", v.name);
            continue;
        }
        // One line per kind and server, with how often and the first text.
        let mut kinds: Vec<(&str, Option<u32>, usize, &str)> = Vec::new();
        for a in &v.alerts {
            match kinds
                .iter_mut()
                .find(|(k, s, _, _)| *k == a.kind && *s == a.server)
            {
                Some(k) => k.2 += 1,
                None => kinds.push((a.kind, a.server, 1, a.text.as_str())),
            }
        }
        let list: Vec<String> = kinds
            .iter()
            .map(|(k, _, n, text)| {
                let times = if *n > 1 {
                    format!(" (x{n})")
                } else {
                    String::new()
                };
                format!("ALERT {k}{times}: {text}")
            })
            .collect();
        let _ = writeln!(out, "- {}: {}", v.name, list.join("; "));
    }
    let histories: Vec<char> = {
        let mut h: Vec<char> = r
            .views
            .iter()
            .filter_map(|v| v.accepted.iter().map(|e| e.history).max())
            .collect();
        h.sort_unstable();
        h.dedup();
        h
    };
    if histories.len() <= 1 {
        let counts: Vec<usize> = r.views.iter().map(|v| v.accepted.len()).collect();
        let same = counts.windows(2).all(|w| w[0] == w[1]);
        let _ = writeln!(
            out,
            "outcome: one history{}.",
            if same {
                format!(
                    ": every member accepted the same {} indices",
                    counts.first().copied().unwrap_or(0)
                )
            } else {
                ", but not every member accepted all of it".to_owned()
            }
        );
    } else {
        let groups: Vec<String> = histories
            .iter()
            .map(|h| format!("{} accepted history {h}", r.members_on(*h).join(" and ")))
            .collect();
        let _ = writeln!(out, "outcome: FORK: {}.", groups.join("; "));
        let detected: Vec<&str> = r
            .views
            .iter()
            .filter(|v| !v.alerts.is_empty())
            .map(|v| v.name.as_str())
            .collect();
        let blind: Vec<&str> = r
            .views
            .iter()
            .filter(|v| v.alerts.is_empty())
            .map(|v| v.name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "detected by: {}; not detected by: {}.",
            if detected.is_empty() {
                "nobody".to_owned()
            } else {
                detected.join(", ")
            },
            if blind.is_empty() {
                "nobody".to_owned()
            } else {
                blind.join(", ")
            }
        );
    }
    for (i, n) in &r.evidence {
        let _ = writeln!(
            out,
            "order server {i} (honest) attested one history only: it refused the other {n} time{} and kept each attempt as evidence.",
            if *n == 1 { "" } else { "s" }
        );
    }
    let _ = writeln!(out);
}

/// The live demo's text.
pub fn render_live(honest: &LiveRun, forked: &LiveRun) -> String {
    let (n, t) = (LIVE_ORDER_SERVERS, honest.quorum);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "grompi demo: a real network on 127.0.0.1 per half: a router and {n} order servers, each its own \
         process over TLS with durable storage (quorum {t} of {n}), and {} clients using the client library.\n",
        MEMBERS.len()
    );
    live_section(
        &mut out,
        "1. The protest conversation, everyone honest",
        honest,
    );
    live_section(
        &mut out,
        "2. The same, with the router forking the group (alice and bob / charlie and dave), colluding with order servers 0 and 1 (equivocating); order server 2 honest",
        forked,
    );
    let _ = writeln!(
        out,
        "Each cell is sender: text [history, tags verified/order servers]; the letter names the chain of heads the member accepted at that index."
    );
    let bound = 2 * t - n;
    let _ = writeln!(
        out,
        "With quorum {t} of {n}, two histories can each gather a quorum only if at least 2t - N = {bound} of the order servers attest both; here {} do{}.",
        COLLUDING.len(),
        if COLLUDING.len() >= bound {
            ", so each group may accept its own history; the honest server attests one history only, and the members it did not attest for are the ones who can prove the fork"
        } else {
            " not, so the group whose history the honest server refused cannot accept anything of it"
        }
    );
    out
}
