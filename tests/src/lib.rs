//! End-to-end tests that start the real binaries over TLS on 127.0.0.1.
//!
//! The helpers that build and start the binaries live here; the tests are
//! under `tests/`.
//!
//! * [`binary`] builds every binary of the workspace once per test process
//!   (same profile as the tests) and returns the path of one;
//! * [`Process`] owns a child process and kills it when dropped, and
//!   [`wait_for_bound_addrs`] waits for the `bound-addrs.toml` a server
//!   writes into its data directory once its listeners are bound (servers
//!   listen on port 0, so tests never race for ports): both are the
//!   simulator's live-mode harness ([`grompi_simulator::live::process`]),
//!   the one implementation of finding, spawning, waiting for and stopping
//!   the real binaries;
//! * [`connect`] and [`wait_healthy`] open a TLS channel and wait for gRPC
//!   health;
//! * [`OrderServerNode`] initialises, configures and starts an order server.
//!
//! # Layout
//!
//! Everything is in this one module, each helper small, but
//! [`order_conv`]: a conversation as a test drives an order server
//! directly (valid attest items, the chain), [`router_member`]: an
//! account as a test drives the router directly, and [`audit_log`]: the
//! order servers' audit logs and witnesses as a test reads them.
#![forbid(unsafe_code)]

pub mod audit_log;
pub mod order_conv;
pub mod router_member;

use grompi_ops::tls::{self, TlsIdentity};
use grompi_simulator::live::LiveError;
use grompi_simulator::live::process::{
    clear_bound_addrs, find_binary, init_order_server, run_init, wait_for_bound_addrs_async,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use grompi_simulator::live::process::{BoundAddrs, ServerProcess as Process};

/// Why a harness step failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Building the binaries failed.
    #[error("cargo build failed: {0}")]
    Build(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// Starting, waiting for or stopping a server process failed.
    #[error(transparent)]
    Process(#[from] LiveError),
    /// Output did not have the expected form.
    #[error("unexpected output: {0}")]
    Output(String),
    /// TLS material failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A gRPC connection failed.
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// The target directory of the running test binary (`target/debug`).
fn target_dir() -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(io("current_exe"))?;
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| HarnessError::Output(format!("no target dir above {}", exe.display())))
}

fn cargo_build(args: &[&str]) -> Result<(), String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(args).current_dir(&workspace);
    // Cargo gives this test process variables such as CARGO_MANIFEST_DIR and
    // CARGO_PKG_NAME. Build scripts that watch them (ring's does) would see
    // them change between this nested build and the outer one and rebuild,
    // with everything above them, on every run; so the nested build gets
    // the outer environment back.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "OUT_DIR"
            || name == "CARGO_PRIMARY_PACKAGE"
            || name == "CARGO_TARGET_TMPDIR"
            || name == "CARGO_RUSTC_CURRENT_DIR"
            || [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_CFG_",
            ]
            .iter()
            .any(|p| name.starts_with(p))
        {
            cargo.env_remove(name.as_ref());
        }
    }
    let status = cargo.status().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} exited with {status}", args.join(" ")))
    }
}

/// Builds every binary of the workspace once per test process. If that
/// fails (another crate does not compile), each binary is then built on
/// its own, once, so that one broken crate does not stop every test.
fn build_once(name: &str) -> Result<(), HarnessError> {
    static WORKSPACE: OnceLock<Result<(), String>> = OnceLock::new();
    static SINGLE: Mutex<Vec<(String, Result<(), String>)>> = Mutex::new(Vec::new());
    // `--tests` resolves features as `cargo test --workspace` does (with
    // dev-dependencies), so the binaries that run reuse what the test
    // build compiled instead of compiling the workspace a second time.
    let workspace =
        WORKSPACE.get_or_init(|| cargo_build(&["build", "--workspace", "--bins", "--tests"]));
    let Err(workspace_error) = workspace else {
        return Ok(());
    };
    let mut single = SINGLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, r)) = single.iter().find(|(n, _)| n == name) {
        return r.clone().map_err(HarnessError::Build);
    }
    eprintln!("building the whole workspace failed ({workspace_error}); building {name} alone");
    let r = cargo_build(&["build", "--bin", name]);
    single.push((name.to_owned(), r.clone()));
    r.map_err(HarnessError::Build)
}

/// Builds every binary of the workspace (once per test process, dev
/// profile) and returns the path of `name`.
pub fn binary(name: &str) -> Result<PathBuf, HarnessError> {
    build_once(name)?;
    Ok(find_binary(&target_dir()?, name)?)
}

/// Waits (polling) until `<data_dir>/bound-addrs.toml` exists and parses,
/// failing early if `process` exits.
pub async fn wait_for_bound_addrs(
    data_dir: &Path,
    process: &mut Process,
    timeout: Duration,
) -> Result<BoundAddrs, HarnessError> {
    Ok(wait_for_bound_addrs_async(data_dir, process, timeout).await?)
}

/// Opens a TLS channel to `addr`, trusting only `server_cert_pem` for the
/// name `localhost`, presenting `identity` when given.
pub async fn connect(
    addr: SocketAddr,
    server_cert_pem: &str,
    identity: Option<&TlsIdentity>,
) -> Result<tonic::transport::Channel, HarnessError> {
    tls::install_crypto_provider();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls::client_config(server_cert_pem, "localhost", identity))?
        .connect_timeout(Duration::from_secs(5));
    Ok(endpoint.connect().await?)
}

/// Waits until the gRPC health service reports `service` as serving.
pub async fn wait_healthy(
    channel: &tonic::transport::Channel,
    service: &str,
    timeout: Duration,
) -> Result<(), HarnessError> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
    let mut client = HealthClient::new(channel.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let r = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await;
        if let Ok(r) = r
            && r.into_inner().status == ServingStatus::Serving as i32
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(HarnessError::Timeout(format!("health of {service}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An order server's data directory, configuration and the router identity
/// allowed to call it.
pub struct OrderServerNode {
    /// Holds every file; removed on drop.
    pub dir: tempfile::TempDir,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
    /// The server's public key, as `init` printed it (hex).
    pub public_key_hex: String,
    /// The server's TLS certificate (PEM).
    pub server_cert_pem: String,
    /// The router's client identity (the pinned one).
    pub router: TlsIdentity,
}

/// A started order server.
pub struct RunningOrderServer {
    /// The running child process (killed when this is dropped).
    pub process: Process,
    /// Its bound addresses.
    pub addrs: BoundAddrs,
}

/// The gRPC service name of the order service, for health checks.
pub const ORDER_SERVICE: &str = "grompi.v1.OrderService";

impl OrderServerNode {
    /// Runs `order-server init` in a fresh temporary directory and writes a
    /// configuration listening on port 0 with metrics, plus `extra` TOML
    /// appended (for example a `[limits]` table).
    pub fn init(extra: &str) -> Result<Self, HarnessError> {
        let bin = binary("order-server")?;
        let dir = tempfile::tempdir().map_err(io("tempdir"))?;
        let data_dir = dir.path().join("data");
        let public_key_hex = init_order_server(&bin, &data_dir)?;
        let server_cert_pem = tls::read_cert_pem(&data_dir.join("tls.crt"))?;
        let router = TlsIdentity::generate(&[])?;
        router.write_to(dir.path(), "router")?;
        let config = dir.path().join("order.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             router_certificate = \"router.crt\"\nlog = \"info\"\n{extra}"
        );
        std::fs::write(&config, text).map_err(io("write order.toml"))?;
        Ok(Self {
            dir,
            data_dir,
            config,
            public_key_hex,
            server_cert_pem,
            router,
        })
    }

    /// Starts the server and waits until it has bound its listeners.
    pub async fn start(&self) -> Result<RunningOrderServer, HarnessError> {
        let bin = binary("order-server")?;
        clear_bound_addrs(&self.data_dir);
        let config = self.config.to_string_lossy().into_owned();
        let mut process = Process::spawn(
            "order-server",
            &bin,
            &["serve", "--config", &config],
            &self.dir.path().join("order-server.stderr"),
        )?;
        let addrs =
            wait_for_bound_addrs(&self.data_dir, &mut process, Duration::from_secs(30)).await?;
        Ok(RunningOrderServer { process, addrs })
    }

    /// [`OrderServerNode::start`], retried for a few seconds while a port
    /// its configuration fixes (after a stop) is still taken.
    pub async fn start_again(&self) -> Result<RunningOrderServer, HarnessError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.start().await {
                Err(e)
                    if Instant::now() < deadline
                        && e.to_string().contains("Address already in use") =>
                {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                r => return r,
            }
        }
    }

    /// A channel to `server` presenting the pinned router identity, once the
    /// server reports healthy.
    pub async fn channel(
        &self,
        server: &RunningOrderServer,
    ) -> Result<tonic::transport::Channel, HarnessError> {
        let channel = connect(server.addrs.grpc, &self.server_cert_pem, Some(&self.router)).await?;
        wait_healthy(&channel, ORDER_SERVICE, Duration::from_secs(30)).await?;
        Ok(channel)
    }
}

/// A whole network on 127.0.0.1: order servers and a router, started from
/// the real binaries, and a network descriptor for clients naming the
/// router's bound address.
pub struct Network {
    /// Holds the router's files and the descriptors; removed on drop.
    pub dir: tempfile::TempDir,
    /// The order servers' nodes (their directories).
    pub nodes: Vec<OrderServerNode>,
    /// The running order servers.
    pub servers: Vec<RunningOrderServer>,
    /// The running router.
    pub router: Process,
    /// The router's bound addresses.
    pub router_addrs: BoundAddrs,
    /// The descriptor clients use (the router's real address in it).
    pub client_descriptor: PathBuf,
}

/// Starts `servers` order servers and a router with quorum `quorum`, and
/// writes `client-network.toml` for clients.
pub async fn start_network(servers: usize, quorum: usize) -> Result<Network, HarnessError> {
    start_network_with(servers, quorum, Logs::None, "").await
}

/// Whether the order servers keep audit logs, and witness each other's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Logs {
    None,
    Kept,
    Witnessed,
}

/// [`start_network`] with every order server keeping an audit log (a
/// checkpoint every second, served on a port of its own) and the client
/// descriptor naming each log's key and URL (no witnesses).
pub async fn start_network_with_audit_logs(
    servers: usize,
    quorum: usize,
) -> Result<Network, HarnessError> {
    start_network_with(servers, quorum, Logs::Kept, "").await
}

/// [`start_network_with_audit_logs`] with every order server also a
/// witness of every other server's log (`[[peers]]`), the client
/// descriptor naming each witness's key, and `router_extra` appended to
/// the router's configuration (top-level keys such as
/// `submit_timeout_ms`). Returns once every server's checkpoint is
/// cosigned by every peer. Each server's ports (gRPC and audit) are fixed
/// in its configuration, so a restarted server ([`OrderServerNode::start_again`])
/// comes back where the descriptor and its peers look for it.
pub async fn start_network_with_witnessing(
    servers: usize,
    quorum: usize,
    router_extra: &str,
) -> Result<Network, HarnessError> {
    start_network_with(servers, quorum, Logs::Witnessed, router_extra).await
}

/// The address `audit_listen` bound, from an order server's
/// `bound-addrs.toml`.
pub fn audit_addr(data_dir: &Path) -> Result<std::net::SocketAddr, HarnessError> {
    let text = std::fs::read_to_string(data_dir.join(grompi_ops::bound_addrs::BOUND_ADDRS_FILE))
        .map_err(io("read bound-addrs.toml"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("audit = \""))
        .and_then(|l| l.strip_suffix('"'))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| HarnessError::Output(format!("no audit address in {text:?}")))
}

async fn start_network_with(
    servers: usize,
    quorum: usize,
    kind: Logs,
    router_extra: &str,
) -> Result<Network, HarnessError> {
    let audit_logs = kind != Logs::None;
    use grompi_proto::descriptor::{
        AuditLogEntry, NetworkDescriptor, OrderServerEntry, RouterEntry,
    };
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().map_err(io("tempdir"))?;
    let router_data = dir.path().join("router");
    let router_bin = binary("router")?;
    run_init(&router_bin, &router_data)?;
    let router_cert = tls::read_cert_pem(&router_data.join("router.crt"))?;
    let mut nodes = Vec::new();
    let mut running = Vec::new();
    let mut entries = Vec::new();
    let mut logs = Vec::new();
    for i in 0..servers {
        let node = OrderServerNode::init(if audit_logs {
            "audit_listen = \"127.0.0.1:0\"\naudit_checkpoint_seconds = 1\n"
        } else {
            ""
        })?;
        std::fs::write(node.dir.path().join("router.crt"), &router_cert)
            .map_err(io("write router.crt"))?;
        let server = node.start().await?;
        // A restart must come back on the ports the descriptor names.
        let mut config = std::fs::read_to_string(&node.config).map_err(io("read order.toml"))?;
        config = config.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", server.addrs.grpc),
            1,
        );
        if audit_logs {
            config = config.replacen(
                "audit_listen = \"127.0.0.1:0\"",
                &format!("audit_listen = \"{}\"", audit_addr(&node.data_dir)?),
                1,
            );
        }
        std::fs::write(&node.config, config).map_err(io("write order.toml"))?;
        let key_bytes = hex_decode(&node.public_key_hex)?;
        let public_key = grompi_proto::OrderServerKey::parse("public_key", &key_bytes)
            .map_err(|e| HarnessError::Output(e.to_string()))?;
        entries.push(OrderServerEntry {
            name: format!("order{i}"),
            address: format!("https://localhost:{}", server.addrs.grpc.port()),
            public_key,
            tls_ca_pem: node.server_cert_pem.clone(),
        });
        if audit_logs {
            let key = std::fs::read_to_string(node.data_dir.join("audit-log.key"))
                .map_err(io("read audit-log.key"))?;
            let signer = grompi_tlog::note::Ed25519Signer::from_skey(key.trim())
                .map_err(|e| HarnessError::Output(format!("audit-log.key: {e}")))?;
            logs.push(Some(AuditLogEntry {
                origin: signer.name().to_owned(),
                log_key: signer.verifier().vkey(),
                log_url: Some(format!("http://{}", audit_addr(&node.data_dir)?)),
                witness_key: (kind == Logs::Witnessed)
                    .then(|| audit_log::witness_verifier(&node.data_dir).vkey()),
            }));
        } else {
            logs.push(None);
        }
        nodes.push(node);
        running.push(server);
    }
    if kind == Logs::Witnessed {
        witness_each_other(&nodes, &mut running, &logs).await?;
    }
    let mut descriptor = NetworkDescriptor {
        name: "e2e".into(),
        router: RouterEntry {
            address: "https://localhost:1".into(),
            tls_ca_pem: router_cert.clone(),
        },
        order_servers: entries,
        quorum,
    };
    std::fs::write(dir.path().join("network.toml"), descriptor.to_toml())
        .map_err(io("write network.toml"))?;
    let router_config = dir.path().join("router.toml");
    std::fs::write(
        &router_config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"router\"\ndescriptor = \"network.toml\"\n\
             backoff_base_ms = 20\nbackoff_max_ms = 300\n{router_extra}"
        ),
    )
    .map_err(io("write router.toml"))?;
    let config = router_config.to_string_lossy().into_owned();
    let mut router = Process::spawn(
        "router",
        &router_bin,
        &["serve", "--config", &config],
        &dir.path().join("router.stderr"),
    )?;
    let router_addrs =
        wait_for_bound_addrs(&router_data, &mut router, Duration::from_secs(30)).await?;
    let channel = connect(router_addrs.grpc, &router_cert, None).await?;
    wait_healthy(&channel, "grompi.v1.Router", Duration::from_secs(30)).await?;
    descriptor.router.address = format!("https://localhost:{}", router_addrs.grpc.port());
    let client_descriptor = dir.path().join("client-network.toml");
    std::fs::write(
        &client_descriptor,
        descriptor.to_toml_with_audit_logs(&logs),
    )
    .map_err(io("write client-network.toml"))?;
    Ok(Network {
        dir,
        nodes,
        servers: running,
        router,
        router_addrs,
        client_descriptor,
    })
}

/// Makes every order server of `nodes` a witness of every other's log
/// (`[[peers]]`, from the audit log entries `logs`), restarting each, and
/// waits until every server's checkpoint is cosigned by every peer.
async fn witness_each_other(
    nodes: &[OrderServerNode],
    running: &mut [RunningOrderServer],
    logs: &[Option<grompi_proto::descriptor::AuditLogEntry>],
) -> Result<(), HarnessError> {
    for (i, node) in nodes.iter().enumerate() {
        let mut peers = String::new();
        for (j, log) in logs.iter().enumerate() {
            let Some(log) = log.as_ref().filter(|_| j != i) else {
                continue;
            };
            let (Some(url), Some(witness_key)) = (&log.log_url, &log.witness_key) else {
                return Err(HarnessError::Output(format!(
                    "order{j} has no log url or witness"
                )));
            };
            peers.push_str(&format!(
                "\n[[peers]]\nname = \"order{j}\"\nurl = \"{url}\"\nlog_key = \"{}\"\n\
                 witness_key = \"{witness_key}\"\n",
                log.log_key
            ));
        }
        let config = std::fs::read_to_string(&node.config).map_err(io("read order.toml"))?;
        std::fs::write(&node.config, format!("{config}{peers}")).map_err(io("write order.toml"))?;
        running[i].process.stop(Duration::from_secs(15));
        running[i] = node.start_again().await?;
    }
    let witnesses: Vec<_> = nodes
        .iter()
        .map(|n| audit_log::witness_verifier(&n.data_dir))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let log = audit_log::log_verifier(&node.data_dir);
        let others: Vec<_> = (0..nodes.len())
            .filter(|&j| j != i)
            .map(|j| &witnesses[j])
            .collect();
        let audit = audit_addr(&node.data_dir)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while audit_log::served(audit, &log, &others).await.1 < others.len() {
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(format!(
                    "order{i}'s checkpoint cosigned by every peer"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn hex_decode(s: &str) -> Result<Vec<u8>, HarnessError> {
    if !s.len().is_multiple_of(2) {
        return Err(HarnessError::Output(format!("odd-length hex {s:?}")));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| HarnessError::Output(format!("not hex: {s:?}")))
        })
        .collect()
}

/// Whether a finished command succeeded, and what it printed (stdout,
/// then stderr).
pub fn exit_and_text(out: &std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
