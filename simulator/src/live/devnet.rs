//! `devnet`: a real router and N real order servers as processes on
//! 127.0.0.1, with generated keys and certificates and the network
//! descriptor clients use.
//!
//! Layout of the directory (reused on the next start, so keys and state
//! survive restarts of the devnet):
//!
//! ```text
//! <dir>/network.toml            the descriptor clients load
//! <dir>/router/router.toml      router configuration; data in router/data
//! <dir>/order-<i>/order.toml    order server i; data in order-<i>/data
//! <dir>/*/server.log            each server's log
//! ```
//!
//! Servers first listen on port 0; the ports they get are written back into
//! their configurations and the descriptor, so a restarted server comes
//! back at the address the descriptor names.
//!
//! The servers come either from the `router`, `order-server` and
//! `grompi-sim` binaries in one directory ([`Launcher::Binaries`], what
//! `devnet` and the end-to-end tests use) or all from one `grompi-sim`
//! executable ([`Launcher::SelfHosted`], what the demo uses, so that
//! `cargo run -p grompi-simulator -- demo` needs nothing else built).
//! Either way each server is its own process running the same library code.
//!
//! Malicious servers are told what to do through control files
//! ([`super::control`]): [`Devnet::attack`] for the router,
//! [`Devnet::fork`] for a forking router and its equivocating order
//! servers together.

use super::LiveError;
use super::control::{self, AttackPlan};
use super::evil_order::EvilStrategy;
use super::evil_router::RouterStrategy;
use super::process::{
    BoundAddrs, ServerProcess, clear_bound_addrs, find_binary as binary, init_order_server,
    run_init, wait_for_bound_addrs,
};
use grompi_proto::AccountId;
use grompi_proto::descriptor::{NetworkDescriptor, OrderServerEntry, RouterEntry};
use grompi_proto::{OrderServerKey, descriptor::min_quorum};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a server may take to bind its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where the server processes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launcher {
    /// The `router`, `order-server` and `grompi-sim` binaries in this
    /// directory (`cargo build --bins` puts them side by side).
    Binaries(PathBuf),
    /// Every server from this one `grompi-sim` executable: its hidden
    /// `serve-router` and `serve-order-server` subcommands run the same
    /// library code as `router serve` and `order-server serve`, and keys
    /// and certificates are made in-process by the same `init` functions.
    SelfHosted(PathBuf),
}

impl Launcher {
    /// This executable, self-hosting every server.
    pub fn this_executable() -> Result<Self, LiveError> {
        std::env::current_exe()
            .map(Self::SelfHosted)
            .map_err(LiveError::io("locate this executable"))
    }

    fn check(&self) -> Result<(), LiveError> {
        match self {
            Self::Binaries(dir) => {
                binary(dir, "router")?;
                binary(dir, "order-server")?;
                Ok(())
            }
            Self::SelfHosted(exe) if exe.is_file() => Ok(()),
            Self::SelfHosted(exe) => Err(LiveError::Setup(format!("{} not found", exe.display()))),
        }
    }

    fn sim(&self) -> Result<PathBuf, LiveError> {
        match self {
            Self::Binaries(dir) => binary(dir, "grompi-sim"),
            Self::SelfHosted(exe) => Ok(exe.clone()),
        }
    }

    fn router_command(
        &self,
        strategy: Option<RouterStrategy>,
    ) -> Result<(PathBuf, Vec<String>), LiveError> {
        match (self, strategy) {
            (_, Some(s)) => Ok((
                self.sim()?,
                vec!["evil-router".into(), "--strategy".into(), s.name().into()],
            )),
            (Self::Binaries(dir), None) => Ok((binary(dir, "router")?, vec!["serve".into()])),
            (Self::SelfHosted(exe), None) => Ok((exe.clone(), vec!["serve-router".into()])),
        }
    }

    fn order_command(
        &self,
        strategy: Option<EvilStrategy>,
    ) -> Result<(PathBuf, Vec<String>), LiveError> {
        match (self, strategy) {
            (_, Some(s)) => Ok((
                self.sim()?,
                vec![
                    "evil-order-server".into(),
                    "--strategy".into(),
                    s.name().into(),
                ],
            )),
            (Self::Binaries(dir), None) => Ok((binary(dir, "order-server")?, vec!["serve".into()])),
            (Self::SelfHosted(exe), None) => Ok((exe.clone(), vec!["serve-order-server".into()])),
        }
    }

    fn init_router(&self, data: &Path) -> Result<(), LiveError> {
        match self {
            Self::Binaries(dir) => run_init(&binary(dir, "router")?, data).map(|_| ()),
            Self::SelfHosted(_) => grompi_router::server::init(data, &[])
                .map(|_| ())
                .map_err(|e| LiveError::Setup(format!("router init: {e}"))),
        }
    }

    /// Initialises an order server's data directory; returns its public
    /// key (hex).
    fn init_order(&self, data: &Path) -> Result<String, LiveError> {
        match self {
            Self::Binaries(dir) => init_order_server(&binary(dir, "order-server")?, data),
            Self::SelfHosted(_) => grompi_order_server::init::init(data, &[])
                .map(|i| i.public_key.to_hex())
                .map_err(|e| LiveError::Setup(format!("order-server init: {e}"))),
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Directory for configurations, data and logs.
    pub dir: PathBuf,
    /// Number of order servers (N).
    pub order_servers: usize,
    /// Quorum t; `None` means t = N.
    pub quorum: Option<usize>,
    /// Directory holding the `router` and `order-server` binaries.
    pub binaries: PathBuf,
    /// Extra TOML appended to the router configuration on first start.
    pub router_extra: String,
    /// Extra top-level TOML for every order server's configuration on
    /// first start.
    pub order_extra: String,
    /// Order servers (by position) started as malicious variants.
    pub evil: BTreeMap<usize, EvilStrategy>,
}

/// One running server.
#[derive(Debug)]
pub struct Node {
    /// The child process; its standard error goes to the node's log file.
    pub process: ServerProcess,
    /// The addresses it bound, read from its data directory once it is up.
    pub addrs: BoundAddrs,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The binary and the arguments before `--config`.
    command: (PathBuf, Vec<String>),
}

/// A running local network.
#[derive(Debug)]
pub struct Devnet {
    /// Where the descriptor clients load is written (`<dir>/network.toml`).
    pub descriptor_path: PathBuf,
    /// What `descriptor_path` holds: servers' keys and addresses, quorum, router address.
    pub descriptor: NetworkDescriptor,
    /// The router process (the malicious variant when the devnet has one).
    pub router: Node,
    /// The order servers, in descriptor order.
    pub order_servers: Vec<Node>,
    /// The router's strategy, when it is malicious.
    router_strategy: Option<RouterStrategy>,
    /// The order servers started as malicious variants.
    evil: BTreeMap<usize, EvilStrategy>,
    /// The id of the last control request sent.
    last_request: u64,
}

/// The directory of the running executable, where `cargo build --bins`
/// puts the server binaries next to it.
pub fn default_binaries() -> Result<PathBuf, LiveError> {
    let exe = std::env::current_exe().map_err(LiveError::io("locate this executable"))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| LiveError::Setup(format!("no directory above {}", exe.display())))
}

/// How many refused equivocation attempts the order server over
/// `data_dir` kept as evidence. The server must be stopped (its store is
/// opened here).
pub fn refused_equivocations(data_dir: &Path) -> Result<u64, LiveError> {
    use grompi_order_server::redb_store::{RedbRead, RedbStore};
    let path = data_dir.join(grompi_order_server::init::DB_FILE);
    let fail = |e: grompi_order_server::store::StoreError| {
        LiveError::Setup(format!("{}: {e}", path.display()))
    };
    let store = RedbStore::open(&path).map_err(fail)?;
    let txn = store.begin_read().map_err(fail)?;
    let read = RedbRead::open(&txn).map_err(fail)?;
    grompi_order_server::evidence::list(&read, 0)
        .map(|(total, _)| total)
        .map_err(fail)
}

fn write(path: &Path, text: &str) -> Result<(), LiveError> {
    std::fs::write(path, text).map_err(LiveError::io(format!("write {}", path.display())))
}

fn read(path: &Path) -> Result<String, LiveError> {
    std::fs::read_to_string(path).map_err(LiveError::io(format!("read {}", path.display())))
}

/// Replaces the `listen = "..."` line of a configuration with the address
/// the server bound first, so that a restarted server is found where the
/// descriptor says. The metrics address is left to the OS on every start
/// (a restart reads the new one): a port freed by a killed process can be
/// taken as the source port of any outgoing connection before the restart,
/// and nothing needs the metrics port to stay the same.
fn pin_listen(config: &Path, addrs: &BoundAddrs) -> Result<(), LiveError> {
    let text = read(config)?;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with("listen = ") {
            out.push_str(&format!("listen = \"{}\"", addrs.grpc));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    write(config, &out)
}

fn start_node(
    name: &str,
    command: (PathBuf, Vec<String>),
    config: &Path,
    data_dir: &Path,
) -> Result<Node, LiveError> {
    start_node_within(name, command, config, data_dir, START_TIMEOUT)
}

fn start_node_within(
    name: &str,
    command: (PathBuf, Vec<String>),
    config: &Path,
    data_dir: &Path,
    timeout: Duration,
) -> Result<Node, LiveError> {
    clear_bound_addrs(data_dir);
    let log = config.with_file_name("server.log");
    let mut args: Vec<&str> = command.1.iter().map(String::as_str).collect();
    let config_arg = config.to_string_lossy().into_owned();
    args.extend(["--config", &config_arg]);
    let mut process = ServerProcess::spawn(name, &command.0, &args, &log)?;
    let addrs = wait_for_bound_addrs(data_dir, &mut process, timeout)?;
    Ok(Node {
        process,
        addrs,
        config: config.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        command,
    })
}

/// How long a restarted server may wait for its pinned port to be free.
const RESTART_PORT_WAIT: Duration = Duration::from_secs(15);

/// Starts a stopped node again on its pinned ports. Meanwhile the system
/// may have given its port to some connection as a source port (ephemeral
/// ports come from the same range as the port 0 it first got), and then the
/// bind fails until that connection closes: retried, only when the server
/// said its address is in use, for up to [`RESTART_PORT_WAIT`].
fn restart_node(node: &Node, timeout: Duration) -> Result<Node, LiveError> {
    let deadline = Instant::now() + RESTART_PORT_WAIT;
    loop {
        match start_node_within(
            node.process.name(),
            node.command.clone(),
            &node.config,
            &node.data_dir,
            timeout,
        ) {
            Err(LiveError::Exited { log_tail, .. })
                if log_tail.contains("Address already in use") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            started => return started,
        }
    }
}

impl Devnet {
    /// Initialises what is missing under `options.dir`, starts the order
    /// servers, then the router, and writes the descriptor. The servers are
    /// the binaries in `options.binaries`.
    pub fn start(options: &DevnetOptions) -> Result<Self, LiveError> {
        Self::start_with(options, &Launcher::Binaries(options.binaries.clone()), None)
    }

    /// [`Devnet::start`] with the servers from `launcher` (which takes the
    /// place of `options.binaries`) and, with `router`, a malicious router.
    pub fn start_with(
        options: &DevnetOptions,
        launcher: &Launcher,
        router: Option<RouterStrategy>,
    ) -> Result<Self, LiveError> {
        let n = options.order_servers;
        if n == 0 || n > grompi_proto::limits::MAX_ORDER_SERVERS {
            return Err(LiveError::Setup(format!(
                "{n} order servers: choose between 1 and {}",
                grompi_proto::limits::MAX_ORDER_SERVERS
            )));
        }
        let quorum = options.quorum.unwrap_or(n);
        if quorum < min_quorum(n) || quorum > n {
            return Err(LiveError::Setup(format!(
                "quorum {quorum} of {n}: it must be more than half of the order servers and at most all of them"
            )));
        }
        launcher.check()?;
        let dir = &options.dir;
        std::fs::create_dir_all(dir).map_err(LiveError::io(format!("create {}", dir.display())))?;

        // The router's identity comes first: every order server pins it.
        let router_dir = dir.join("router");
        let router_data = router_dir.join("data");
        let router_config = router_dir.join("router.toml");
        if !router_config.exists() {
            std::fs::create_dir_all(&router_dir)
                .map_err(LiveError::io(format!("create {}", router_dir.display())))?;
            launcher.init_router(&router_data)?;
            write(
                &router_config,
                &format!(
                    "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
                     data_dir = \"data\"\ndescriptor = \"../network.toml\"\n\
                     backoff_base_ms = 50\nbackoff_max_ms = 1000\n{}\n",
                    options.router_extra
                ),
            )?;
        }
        let router_cert_path = router_data.join("router.crt");
        let router_cert = read(&router_cert_path)?;

        let mut order_servers = Vec::with_capacity(n);
        let mut entries = Vec::with_capacity(n);
        for i in 0..n {
            let node_dir = dir.join(format!("order-{i}"));
            let data = node_dir.join("data");
            let config = node_dir.join("order.toml");
            let key_line = node_dir.join("public_key");
            if !config.exists() {
                std::fs::create_dir_all(&node_dir)
                    .map_err(LiveError::io(format!("create {}", node_dir.display())))?;
                let key = launcher.init_order(&data)?;
                write(&key_line, &key)?;
                write(&node_dir.join("router.crt"), &router_cert)?;
                write(
                    &config,
                    &format!(
                        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
                         data_dir = \"data\"\nrouter_certificate = \"router.crt\"\nposition = {i}\n{}",
                        options.order_extra
                    ),
                )?;
            }
            let key_hex = read(&key_line)?;
            let key_bytes = hex::decode(key_hex.trim())
                .map_err(|e| LiveError::Setup(format!("{}: {e}", key_line.display())))?;
            let public_key = OrderServerKey::parse("public_key", &key_bytes)
                .map_err(|e| LiveError::Setup(format!("{}: {e}", key_line.display())))?;
            let name = match options.evil.get(&i) {
                Some(s) => format!("order-server {i} (malicious: {})", s.name()),
                None => format!("order-server {i}"),
            };
            let command = launcher.order_command(options.evil.get(&i).copied())?;
            let node = start_node(&name, command, &config, &data)?;
            pin_listen(&config, &node.addrs)?;
            entries.push(OrderServerEntry {
                name: format!("order-{i}"),
                address: format!("https://localhost:{}", node.addrs.grpc.port()),
                public_key,
                tls_ca_pem: read(&data.join("tls.crt"))?,
            });
            order_servers.push(node);
        }

        let descriptor_path = dir.join("network.toml");
        let mut descriptor = NetworkDescriptor {
            name: "devnet".into(),
            router: RouterEntry {
                // Rewritten below once the router has its port.
                address: "https://localhost:1".into(),
                tls_ca_pem: router_cert,
            },
            order_servers: entries,
            quorum,
        };
        // Keep the router's port across restarts of the devnet.
        if let Ok(old) = read(&descriptor_path)
            .and_then(|t| NetworkDescriptor::parse(&t).map_err(|e| LiveError::Setup(e.to_string())))
        {
            descriptor.router.address = old.router.address;
        }
        write(&descriptor_path, &descriptor.to_toml())?;
        let router_name = match router {
            Some(s) => format!("router (malicious: {})", s.name()),
            None => "router".to_owned(),
        };
        let router_command = launcher.router_command(router)?;
        let strategy = router;
        let router = start_node(&router_name, router_command, &router_config, &router_data)?;
        pin_listen(&router_config, &router.addrs)?;
        descriptor.router.address = format!("https://localhost:{}", router.addrs.grpc.port());
        write(&descriptor_path, &descriptor.to_toml())?;
        Ok(Self {
            descriptor_path,
            descriptor,
            router,
            order_servers,
            router_strategy: strategy,
            evil: options.evil.clone(),
            last_request: 0,
        })
    }

    /// The router's strategy, when it is malicious.
    pub fn router_strategy(&self) -> Option<RouterStrategy> {
        self.router_strategy
    }

    /// Puts `plan` in force at the malicious router (its `id` is replaced)
    /// and waits until the router says it is.
    pub fn attack(&mut self, mut plan: AttackPlan) -> Result<(), LiveError> {
        let Some(strategy) = self.router_strategy else {
            return Err(LiveError::Setup(
                "the router is honest: start the devnet with a malicious router".into(),
            ));
        };
        if strategy != RouterStrategy::Fork && !plan.groups.is_empty() {
            return Err(LiveError::Setup(format!(
                "a {} router does not fork",
                strategy.name()
            )));
        }
        self.last_request = control::fresh_id(self.last_request);
        plan.id = self.last_request;
        let data = self.router.data_dir.clone();
        let router = &mut self.router.process;
        control::attack_router(&data, &plan, || router.check_running())
    }

    /// Forks the network: every equivocating order server starts serving
    /// one branch per group, then the forking router gives each group its
    /// own router core and store, fanning out to the equivocating servers'
    /// branch listeners and to every honest server. Group 0 keeps the
    /// state as it was. Returns once every server says the fork is in place.
    pub fn fork(&mut self, groups: &[Vec<AccountId>]) -> Result<(), LiveError> {
        if self.router_strategy != Some(RouterStrategy::Fork) {
            return Err(LiveError::Setup(
                "forking needs a devnet started with a forking router".into(),
            ));
        }
        if groups.len() < 2 {
            return Err(LiveError::Setup("a fork needs two groups or more".into()));
        }
        let equivocating: Vec<(usize, PathBuf)> = self
            .evil
            .iter()
            .filter(|(_, s)| **s == EvilStrategy::Equivocate)
            .filter_map(|(i, _)| Some((*i, self.order_servers.get(*i)?.data_dir.clone())))
            .collect();
        let dirs: Vec<(usize, &Path)> = equivocating
            .iter()
            .map(|(i, d)| (*i, d.as_path()))
            .collect();
        self.last_request = control::fresh_id(self.last_request);
        let nodes = &mut self.order_servers;
        let branch_order_servers =
            control::fork_order_servers(&dirs, groups.len(), self.last_request, |i| {
                nodes
                    .get_mut(i)
                    .map_or(Ok(()), |n| n.process.check_running())
            })?;
        self.attack(AttackPlan {
            id: 0,
            groups: groups
                .iter()
                .map(|g| g.iter().map(AccountId::to_hex).collect())
                .collect(),
            branch_order_servers,
            victims: Vec::new(),
            indices: Vec::new(),
            keep_previous_head: false,
        })
    }

    /// Fails if any server has exited.
    pub fn check_running(&mut self) -> Result<(), LiveError> {
        self.router.process.check_running()?;
        for node in &mut self.order_servers {
            node.process.check_running()?;
        }
        Ok(())
    }

    /// Stops order server `i` gracefully (SIGTERM).
    pub fn stop_order_server(&mut self, i: usize) -> Result<(), LiveError> {
        let node = self
            .order_servers
            .get_mut(i)
            .ok_or_else(|| LiveError::Setup(format!("no order server {i}")))?;
        node.process.stop(STOP_GRACE);
        Ok(())
    }

    /// Starts order server `i` again on its data directory and port.
    pub fn restart_order_server(&mut self, i: usize) -> Result<(), LiveError> {
        let node = self
            .order_servers
            .get_mut(i)
            .ok_or_else(|| LiveError::Setup(format!("no order server {i}")))?;
        node.process.stop(STOP_GRACE);
        *node = restart_node(node, START_TIMEOUT)?;
        Ok(())
    }

    /// [`Devnet::restart_order_server`], allowing the server up to
    /// `timeout` to load its state and bind its listeners.
    pub fn restart_order_server_within(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Result<(), LiveError> {
        let node = self
            .order_servers
            .get_mut(i)
            .ok_or_else(|| LiveError::Setup(format!("no order server {i}")))?;
        node.process.stop(STOP_GRACE);
        *node = restart_node(node, timeout)?;
        Ok(())
    }

    /// Kills order server `i` with SIGKILL (no chance to flush anything).
    pub fn kill_order_server(&mut self, i: usize) -> Result<(), LiveError> {
        let node = self
            .order_servers
            .get_mut(i)
            .ok_or_else(|| LiveError::Setup(format!("no order server {i}")))?;
        node.process.kill();
        Ok(())
    }

    /// Kills the router with SIGKILL.
    pub fn kill_router(&mut self) {
        self.router.process.kill();
    }

    /// Starts the router again on its data directory and port.
    pub fn restart_router(&mut self) -> Result<(), LiveError> {
        self.restart_router_within(START_TIMEOUT)
    }

    /// [`Devnet::restart_router`], allowing the router up to `timeout` to
    /// load its state and bind its listeners.
    pub fn restart_router_within(&mut self, timeout: Duration) -> Result<(), LiveError> {
        self.router.process.stop(STOP_GRACE);
        self.router = restart_node(&self.router, timeout)?;
        Ok(())
    }

    /// Stops every server gracefully: the router first, so nothing is
    /// submitted to order servers that are going away.
    pub fn stop(&mut self) {
        self.router.process.stop(STOP_GRACE);
        for node in &mut self.order_servers {
            node.process.stop(STOP_GRACE);
        }
    }

    /// A human-readable description: where everything is.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "devnet: router and {} order servers on 127.0.0.1, quorum {} of {}\n",
            self.order_servers.len(),
            self.descriptor.quorum,
            self.order_servers.len()
        );
        s.push_str(&format!(
            "  descriptor   {}\n",
            self.descriptor_path.display()
        ));
        s.push_str(&format!(
            "  router       {}  (metrics {})  log {}{}\n",
            self.router.addrs.grpc,
            self.router
                .addrs
                .metrics
                .map_or_else(|| "off".to_owned(), |m| m.to_string()),
            self.router.process.log().display(),
            self.router_strategy
                .map(|r| format!(
                    "  MALICIOUS {} (plan: {})",
                    r.name(),
                    self.router.data_dir.join(control::ATTACK).display()
                ))
                .unwrap_or_default()
        ));
        for (i, node) in self.order_servers.iter().enumerate() {
            s.push_str(&format!(
                "  order-{i}      {}  (metrics {})  log {}{}\n",
                node.addrs.grpc,
                node.addrs
                    .metrics
                    .map_or_else(|| "off".to_owned(), |m| m.to_string()),
                node.process.log().display(),
                node.process
                    .name()
                    .split_once("(malicious: ")
                    .map(|(_, s)| format!("  MALICIOUS {}", s.trim_end_matches(')')))
                    .unwrap_or_default()
            ));
        }
        s
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.stop();
    }
}
