//! Wiring: `router init` (TLS identity) and `router serve` (store, core
//! task and committer thread, order server workers over mutual TLS, the gRPC service with
//! health, metrics, bound addresses, graceful shutdown).

use crate::config::Config;
use crate::core::{CoreConfig, RouterCore};
use crate::error::RouterError;
use crate::runtime::{self, CoreMsg, Hub};
use crate::service::{RouterService, ServiceSettings};
use crate::store::{RedbStore, Store};
use grompi_ops::conn_limit::{ConnectionLimit, ConnectionLimits, ConnectionMetrics};
use grompi_ops::tls::TlsIdentity;
use grompi_proto::NetworkDescriptor;
use grompi_proto::pb::order_service_client::OrderServiceClient;
use grompi_proto::pb::router_server::RouterServer;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

/// How often the free space of the data directory is measured
/// (`limits.disk_reserve_bytes`).
const DISK_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How often the router pings an HTTP/2 connection that has been quiet.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long it waits for the ping's answer before closing the connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the router could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Configuration, descriptor or TLS material is unusable.
    #[error("{0}")]
    Setup(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(String),
}

fn setup(e: impl std::fmt::Display) -> ServeError {
    ServeError::Setup(e.to_string())
}

/// Creates the data directory and the router's TLS identity (one
/// certificate serves clients and authenticates the router to order
/// servers). Returns instructions for the operator.
pub fn init(data_dir: &Path, names: &[String]) -> Result<String, ServeError> {
    // Durably, like everything written in it.
    grompi_ops::secret_file::create_dir_durably(data_dir, 0o777)
        .map_err(|e| setup(format!("create {}: {e}", data_dir.display())))?;
    if TlsIdentity::cert_path(data_dir, Config::TLS_STEM).exists() {
        return Err(setup(format!(
            "{} already holds a router identity; refusing to overwrite it",
            data_dir.display()
        )));
    }
    let identity = TlsIdentity::generate(names).map_err(setup)?;
    identity
        .write_to(data_dir, Config::TLS_STEM)
        .map_err(setup)?;
    Ok(format!(
        "Router identity written to {dir}/{stem}.crt and {stem}.key.\n\n\
         1. In the network descriptor, set [router] tls_ca_pem to this certificate \
         (clients pin it):\n\n{cert}\n\
         2. Give the same certificate to every order server operator: their server \
         accepts only the router presenting it (mutual TLS).\n\
         3. Write a router.toml (listen, data_dir, descriptor) and run `router serve --config router.toml`.\n",
        dir = data_dir.display(),
        stem = Config::TLS_STEM,
        cert = identity.cert_pem,
    ))
}

fn host_of(address: &str) -> String {
    let rest = address.strip_prefix("https://").unwrap_or(address);
    let rest = rest.trim_end_matches('/');
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// A lazily connecting mutual-TLS channel to each order server.
pub fn order_clients(
    descriptor: &NetworkDescriptor,
    identity: &TlsIdentity,
    timeout: Duration,
) -> Result<Vec<OrderServiceClient<Channel>>, ServeError> {
    descriptor
        .order_servers
        .iter()
        .map(|s| {
            let tls =
                grompi_ops::tls::client_config(&s.tls_ca_pem, &host_of(&s.address), Some(identity));
            let channel = Endpoint::from_shared(s.address.clone())
                .map_err(|e| setup(format!("order server {:?}: {e}", s.name)))?
                .tls_config(tls)
                .map_err(|e| setup(format!("order server {:?}: {e}", s.name)))?
                .connect_timeout(timeout)
                .tcp_nodelay(true)
                .connect_lazy();
            Ok(OrderServiceClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024))
        })
        .collect()
}

/// The router's running pieces behind its gRPC service: the core task and
/// the committer thread over the store, one worker per order server, the
/// ticker, the hub of live subscribers and the service itself (served by
/// [`serve`], or called directly by a program that fronts it, like the
/// simulator's malicious router). Must be started inside a tokio runtime.
pub struct Backend {
    /// The gRPC service.
    pub service: RouterService,
    /// The core's command channel.
    pub core: mpsc::Sender<CoreMsg>,
    /// The core task; yields an error if storage failed.
    pub core_task: tokio::task::JoinHandle<Result<(), RouterError>>,
    /// The order-server workers and the ticker.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Live subscribers.
    pub hub: Arc<Hub>,
    /// Order servers contacted (0 with `relay_only`).
    pub servers: usize,
    /// Attestations needed per index (0 with `relay_only`).
    pub quorum: usize,
    /// Envelopes waiting for attestation when it started.
    pub pending: usize,
}

impl Backend {
    /// Restores the core from `store` and starts everything, fanning out
    /// to the order servers `descriptor` names (none with `relay_only`),
    /// with up to [`runtime::PIPELINE_DEPTH`] jobs in flight per server
    /// over its ordered `AttestStream`.
    pub fn start(
        config: &Config,
        descriptor: &NetworkDescriptor,
        identity: &TlsIdentity,
        store: RedbStore,
    ) -> Result<Self, ServeError> {
        let phase = Instant::now();
        let snapshot = store
            .load()
            .map_err(|e| ServeError::Storage(e.to_string()))?;
        tracing::info!(
            ms = ms(phase),
            accounts = snapshot.accounts.len(),
            sessions = snapshot.sessions.len(),
            conversations = snapshot.conversations.len(),
            unattested_envelopes = snapshot.envelopes.len(),
            "loaded the state"
        );
        let (n, quorum) = if config.relay_only {
            (0, 0)
        } else {
            (descriptor.server_count(), descriptor.quorum)
        };
        let core_config = CoreConfig {
            servers: descriptor
                .order_servers
                .iter()
                .take(n)
                .map(|s| s.public_key)
                .collect(),
            quorum,
            limits: config.limits.clone(),
            padding_tiers: config.padding_tiers.clone(),
            noise_interval_ms: (config.noise_interval_ms > 0).then_some(config.noise_interval_ms),
            max_batch: config.max_batch,
            backoff_base_ms: config.backoff_base_ms,
            backoff_max_ms: config.backoff_max_ms,
        };
        // The workers carry each server's jobs over one ordered AttestStream,
        // which is what lets `start_core` pipeline them
        // (`DriverConfig::PRODUCTION`).
        let phase = Instant::now();
        let core = RouterCore::restore(core_config, snapshot)
            .map_err(|e| ServeError::Storage(e.to_string()))?;
        tracing::info!(ms = ms(phase), "restored the core");
        let pending = core.pending_count();
        let server_timeout = Duration::from_millis(config.order_server_timeout_ms);
        let mut clients = order_clients(descriptor, identity, server_timeout)?;
        clients.truncate(n);
        let hub = Arc::new(Hub::new(crate::hub::HubLimits::of(&config.limits)));
        let reader = store.reader();
        let mut job_txs = Vec::with_capacity(n);
        let mut job_rxs = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            job_txs.push(tx);
            job_rxs.push(rx);
        }
        let (core_tx, core_task) =
            runtime::start_core(core, Box::new(store), job_txs, hub.clone(), 65_536);
        let mut tasks = Vec::with_capacity(n + 1);
        for (i, (rx, client)) in job_rxs.into_iter().zip(clients.iter().cloned()).enumerate() {
            let name = descriptor
                .order_servers
                .get(i)
                .map_or_else(|| i.to_string(), |s| s.name.clone());
            tasks.push(tokio::spawn(runtime::server_worker(
                u32::try_from(i).unwrap_or(u32::MAX),
                name,
                client,
                rx,
                core_tx.clone(),
                server_timeout,
            )));
        }
        tasks.push(tokio::spawn(runtime::ticker(
            core_tx.clone(),
            Duration::from_millis(50),
        )));
        tasks.push(tokio::spawn(runtime::disk_watch(
            core_tx.clone(),
            config.data_dir.clone(),
            DISK_CHECK_EVERY,
        )));
        let service = RouterService::new(
            core_tx.clone(),
            hub.clone(),
            reader,
            clients,
            ServiceSettings {
                servers: n,
                limits: config.limits.clone(),
                submit_timeout: Duration::from_millis(config.submit_timeout_ms),
                server_timeout,
                network: grompi_proto::ids::NetworkBinding::of_descriptor(descriptor),
                accept_unbound_sign_in: config.accept_unbound_sign_in,
            },
        );
        Ok(Self {
            service,
            core: core_tx,
            core_task,
            tasks,
            hub,
            servers: n,
            quorum,
            pending,
        })
    }

    /// Stops it: disconnects subscribers, stops the workers, lets the core
    /// finish its current batch (everything acknowledged is committed) and
    /// waits for it to let go of the store.
    pub async fn stop(self) -> Result<(), ServeError> {
        let Backend {
            service,
            core,
            core_task,
            tasks,
            hub,
            ..
        } = self;
        hub.close_all();
        drop(service);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let _ = core.send(CoreMsg::Shutdown).await;
        drop(core);
        match core_task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Storage(e.to_string())),
            Err(e) => Err(ServeError::Storage(format!("the core task failed: {e}"))),
        }
    }
}

/// Runs the router until `shutdown` completes (or the core fails).
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let started = Instant::now();
    grompi_ops::tls::install_crypto_provider();
    let text = std::fs::read_to_string(&config.descriptor)
        .map_err(|e| setup(format!("read {}: {e}", config.descriptor.display())))?;
    let descriptor = NetworkDescriptor::parse(&text)
        .map_err(|e| setup(format!("{}: {e}", config.descriptor.display())))?;
    let identity = TlsIdentity::read_from(&config.data_dir, Config::TLS_STEM).map_err(|e| {
        setup(format!(
            "{e} (run `router init --data-dir {}` first)",
            config.data_dir.display()
        ))
    })?;
    let metrics_addr =
        grompi_ops::telemetry::install_metrics(config.metrics_listen).map_err(setup)?;
    // Refuses a database behind its rollback anchor, or missing where the
    // anchor exists (docs/OPERATING.md, router, rollback anchor).
    let phase = Instant::now();
    let store = RedbStore::open_anchored(&config.database_path(), &config.anchor_path())
        .map_err(|e| ServeError::Storage(e.to_string()))?;
    tracing::info!(ms = ms(phase), "opened the store");
    if config.relay_only {
        tracing::warn!(
            "relay_only is set: no order server is contacted and nothing is attested; \
             this is the benchmark baseline, not a usable network"
        );
    }
    let phase = Instant::now();
    let backend = Backend::start(&config, &descriptor, &identity, store)?;
    tracing::info!(ms = ms(phase), "started the core and workers");
    let (n, quorum, pending) = (backend.servers, backend.quorum, backend.pending);
    let Backend {
        service,
        core: core_tx,
        core_task,
        tasks: _,
        hub,
        ..
    } = backend;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RouterServer<RouterService>>().await;

    let phase = Instant::now();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| setup(format!("listen on {}: {e}", config.listen)))?;
    let bound: SocketAddr = listener.local_addr().map_err(setup)?;
    write_bound(&config, bound, metrics_addr)?;
    tracing::info!(ms = ms(phase), "bound the listener");
    tracing::info!(
        startup_ms = ms(started),
        address = %bound,
        metrics = ?metrics_addr,
        order_servers = n,
        quorum,
        pending,
        "router serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let core_for_signal = core_tx.clone();
    let hub_for_signal = hub.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing the current batch");
        health
            .set_not_serving::<RouterServer<RouterService>>()
            .await;
        hub_for_signal.close_all();
        let _ = stop_tx.send(());
        let _ = core_for_signal.send(CoreMsg::Shutdown).await;
    });

    let max_message = config.limits.max_envelope_bytes.saturating_add(64 * 1024);
    let connections = ConnectionLimit::new(
        ConnectionLimits {
            max_connections: config.limits.max_connections,
            max_per_address: Some(config.limits.max_connections_per_address),
        },
        ConnectionMetrics {
            open: "router_open_connections",
            refused: "router_connections_refused_total",
        },
    );
    let server = tonic::transport::Server::builder()
        .tls_config(grompi_ops::tls::server_config(&identity, None))
        .map_err(|e| ServeError::Transport(e.to_string()))?
        // Calls beyond this on one connection wait for a stream to end.
        .max_concurrent_streams(config.limits.max_streams_per_connection)
        // Connections hold capped slots: close those whose peer is gone.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(
            RouterServer::new(service)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(64 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(
            // At most max_connections open (max_connections_per_address
            // from one address); TCP_NODELAY on each.
            connections.tcp_incoming(listener),
            async {
                let _ = stop_rx.await;
            },
        );
    let served = server
        .await
        .map_err(|e| ServeError::Transport(e.to_string()));
    let _ = core_tx.send(CoreMsg::Shutdown).await;
    drop(core_tx);
    match core_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ServeError::Storage(e.to_string())),
        Err(e) => return Err(ServeError::Storage(format!("the core task failed: {e}"))),
    }
    tracing::info!("router stopped");
    served
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn write_bound(
    config: &Config,
    grpc: SocketAddr,
    metrics: Option<SocketAddr>,
) -> Result<(), ServeError> {
    let mut text = format!("grpc = \"{grpc}\"\n");
    if let Some(m) = metrics {
        text.push_str(&format!("metrics = \"{m}\"\n"));
    }
    let path = config.bound_path();
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| setup(format!("write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_https_addresses() {
        assert_eq!(host_of("https://127.0.0.1:7101"), "127.0.0.1");
        assert_eq!(host_of("https://order.example:443/"), "order.example");
        assert_eq!(host_of("https://[::1]:7101"), "::1");
    }
}
