//! Wiring: loads the key, TLS material and database, starts the group
//! committer, binds the listeners, writes the bound addresses, serves gRPC
//! (the order service and gRPC health) over mutual TLS until shutdown, and
//! then lets the writer finish every queued job before returning.
//!
//! Bound addresses are written, atomically, to
//! `<data_dir>/bound-addrs.toml` once both listeners are bound:
//!
//! ```toml
//! grpc = "127.0.0.1:40123"
//! metrics = "127.0.0.1:40124"   # only with metrics_listen
//! audit = "127.0.0.1:40125"     # only with audit_listen
//! ```
//!
//! The audit log: at start the server appends a security event (its
//! version, keys, position and limits) and signs a checkpoint; then it
//! signs one every `audit_checkpoint_seconds` when the log has grown, and
//! serves the latest with the tiles on `audit_listen`, if set.
//!
//! Witnessing: on the same timer it submits its latest checkpoint to each
//! peer with a `witness_key` ([`crate::witness_submit`]) and serves the
//! cosignatures with the checkpoint (a new checkpoint is served once its
//! round of submissions has ended); with peers that have a `log_key` it
//! witnesses their logs on `audit_listen` ([`crate::witness`]).

use crate::audit_entry::SecurityEvent;
use crate::audit_http::{self, HttpUrl, LatestCheckpoint, Published};
use crate::audit_log::{self, AuditError};
use crate::committer::Committer;
use crate::config::Config;
use crate::core::OrderCore;
use crate::init::{self, BOUND_ADDRS_FILE, DB_FILE, InitError, TLS_STEM};
use crate::redb_store::{RedbRead, RedbStore, RedbWrite};
use crate::service::OrderGrpc;
use crate::store::StoreError;
use crate::witness::{self, WitnessError, WitnessService};
use crate::witness_submit::{Outcome, Plan, Submitter};
use futures::FutureExt as _;
use grompi_ops::conn_limit::{ConnectionLimit, ConnectionLimits, ConnectionMetrics};
use grompi_ops::telemetry::MetricsError;
use grompi_ops::tls::{self, TlsError, TlsIdentity};
use grompi_proto::pb::order_service_server::{OrderService, OrderServiceServer};
use grompi_tlog::checkpoint::Checkpoint;
use grompi_tlog::note::Note;
use grompi_tlog::witness::AddCheckpointRequest;
use tonic_health::ServingStatus;

/// The gRPC service name health reports on.
pub const SERVICE_NAME: &str = "grompi.v1.OrderService";
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// How often the server pings an HTTP/2 connection.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// How long it waits for the ping's answer before closing the connection.
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The key could not be loaded.
    #[error("order server key: {0}")]
    Key(#[from] InitError),
    /// TLS material could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The database could not be opened or does not match the key.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The audit log key is missing.
    #[error(
        "audit log key {0} is missing. A data directory made before the audit log has none: \
         run `order-server log init-key --data-dir DIR` once (it never replaces a key)"
    )]
    NoLogKey(std::path::PathBuf),
    /// The audit log key could not be loaded, or the log not written.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// The witness key is missing while peers' logs are to be witnessed.
    #[error(
        "witness key {0} is missing, and peers with log_key are to be witnessed. A data \
         directory made before witnessing has none: run `order-server log init-key --data-dir \
         DIR` once (it makes the keys that are missing, never replaces one)"
    )]
    NoWitnessKey(std::path::PathBuf),
    /// The witness could not start.
    #[error("witness: {0}")]
    Witness(#[from] WitnessError),
    /// The metrics endpoint could not be started.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A listener could not be bound or a file written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Writes the bound addresses file atomically.
fn write_bound_addrs(
    data_dir: &Path,
    grpc: SocketAddr,
    metrics: Option<SocketAddr>,
    audit: Option<SocketAddr>,
) -> Result<(), ServeError> {
    let mut text = format!("grpc = \"{grpc}\"\n");
    if let Some(m) = metrics {
        text.push_str(&format!("metrics = \"{m}\"\n"));
    }
    if let Some(a) = audit {
        text.push_str(&format!("audit = \"{a}\"\n"));
    }
    let path = data_dir.join(BOUND_ADDRS_FILE);
    let tmp = data_dir.join(format!(".{BOUND_ADDRS_FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("rename to {}", path.display())))
}

/// Appends `entry` to the audit log in a transaction of its own.
fn append_entry(store: &RedbStore, entry: &[u8]) -> Result<u64, StoreError> {
    let txn = store.begin_write()?;
    let (at, log) = {
        let mut w = RedbWrite::open(&txn)?;
        (crate::audit_store::append(&mut w, entry)?, w.into_log()?)
    };
    store.commit(txn, log)?;
    Ok(at)
}

/// Signs a checkpoint of the committed log if it has grown past
/// `signed_size` (or none was signed), publishes it in `latest`, and
/// returns the size signed.
fn sign_latest(
    store: &RedbStore,
    key: &grompi_tlog::note::Ed25519Signer,
    latest: &LatestCheckpoint,
    signed_size: Option<u64>,
) -> Result<u64, AuditError> {
    let txn = store.begin_read()?;
    let read = RedbRead::open(&txn)?;
    let size = crate::store::StoreRead::audit_entry_count(&read)?;
    if signed_size == Some(size) {
        return Ok(size);
    }
    let (note, size) = audit_log::sign_checkpoint(&read, key)?;
    *latest
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Published::new(note));
    metrics::gauge!(crate::telemetry::AUDIT_LOG_SIZE).set(size as f64);
    Ok(size)
}

/// Signs checkpoints every `period`, and submits each to the witnesses,
/// until aborted.
///
/// A new checkpoint is served (`latest`) only once its round of
/// submissions has ended, with the cosignatures it collected: a member
/// auditing in between gets the previous checkpoint, cosigned, rather
/// than the new one without cosignatures, which would look like a log
/// its witnesses refuse. A checkpoint the witnesses do refuse is served
/// after its round all the same, without their cosignatures, so the
/// refusal shows.
async fn sign_checkpoints(
    store: Arc<RedbStore>,
    key: Arc<grompi_tlog::note::Ed25519Signer>,
    latest: LatestCheckpoint,
    mut signed: u64,
    period: std::time::Duration,
    mut witnesses: Witnesses,
) {
    let pending: LatestCheckpoint = Arc::new(std::sync::RwLock::new(
        latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
    ));
    let mut timer = tokio::time::interval(period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let (s, k, p) = (Arc::clone(&store), Arc::clone(&key), Arc::clone(&pending));
        match tokio::task::spawn_blocking(move || sign_latest(&s, &k, &p, Some(signed))).await {
            Ok(Ok(size)) => signed = size,
            Ok(Err(e)) => tracing::error!(error = %e, "signing an audit log checkpoint failed"),
            Err(e) => tracing::error!(error = %e, "the checkpoint signer failed"),
        }
        witnesses.submit(&store, &pending).await;
        publish(&pending, &latest);
    }
}

/// Serves what `pending` holds (the checkpoint and the cosignatures its
/// submissions collected).
fn publish(pending: &LatestCheckpoint, latest: &LatestCheckpoint) {
    let ready = pending
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if ready.is_some() {
        *latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ready;
    }
}

use crate::telemetry::{
    LOG_COSIGNED_SIZE as COSIGNED_SIZE, LOG_SUBMISSIONS as SUBMISSIONS,
    LOG_WITNESS_ALARM as WITNESS_ALARM,
};

/// The witnesses this server submits its checkpoints to, and where.
struct Witnesses {
    submitter: Submitter,
    urls: Vec<HttpUrl>,
}

/// The consistency proof from `old` to `size` in the committed log.
fn consistency_proof(
    store: &RedbStore,
    old: u64,
    size: u64,
) -> Result<Vec<grompi_tlog::Hash>, AuditError> {
    if old == 0 || old == size {
        return Ok(Vec::new());
    }
    let txn = store.begin_read()?;
    let read = RedbRead::open(&txn)?;
    Ok(audit_log::prove_consistency(&read, old, size)?.proof)
}

impl Witnesses {
    /// Submits the latest checkpoint to every witness that has not
    /// cosigned it, to all of them at once (an unreachable one delays no
    /// other), once more to those that answered `409`, and serves the
    /// cosignatures collected.
    async fn submit(&mut self, store: &Arc<RedbStore>, latest: &LatestCheckpoint) {
        let Some(published) = latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        else {
            return;
        };
        let checkpoint = match Note::parse(published.note.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|n| Checkpoint::from_text(n.text()).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the signed checkpoint does not parse");
                return;
            }
        };
        let size = checkpoint.size();
        let alarms_before: Vec<_> = self
            .submitter
            .peers
            .iter()
            .map(|p| p.alarm.clone())
            .collect();
        let mut due: Vec<usize> = (0..self.urls.len()).collect();
        for _round in 0..2 {
            let mut sends = Vec::new();
            for &i in &due {
                if let Plan::Submit { old } = self.submitter.plan(i, &checkpoint) {
                    sends.push((i, old));
                }
            }
            if sends.is_empty() {
                break;
            }
            let note = published.note.as_bytes();
            let answers = futures::future::join_all(sends.into_iter().map(|(i, old)| {
                let url = self.urls.get(i).cloned();
                let store = Arc::clone(store);
                async move {
                    let url = url.ok_or_else(|| "no URL".to_owned())?;
                    let proof =
                        tokio::task::spawn_blocking(move || consistency_proof(&store, old, size))
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| format!("no consistency proof: {e}"))?;
                    let body = AddCheckpointRequest {
                        old_size: old,
                        proof,
                        checkpoint: note.to_vec(),
                    }
                    .to_bytes();
                    audit_http::post(&url, "/add-checkpoint", &body)
                        .await
                        .map_err(|e| e.to_string())
                }
                .map(move |r: Result<(u16, Vec<u8>), String>| (i, r))
            }))
            .await;
            due.clear();
            for (i, answer) in answers {
                let name = self
                    .submitter
                    .peers
                    .get(i)
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                let (status, body) = match answer {
                    Ok(a) => a,
                    Err(e) => {
                        metrics::counter!(SUBMISSIONS, "peer" => name.clone(), "outcome" => "unreachable")
                            .increment(1);
                        tracing::warn!(peer = name, error = %e, "witness unreachable");
                        continue;
                    }
                };
                match self.submitter.answer(i, &checkpoint, status, &body) {
                    Outcome::Cosigned(sig) => {
                        metrics::counter!(SUBMISSIONS, "peer" => name.clone(), "outcome" => "cosigned")
                            .increment(1);
                        metrics::gauge!(COSIGNED_SIZE, "peer" => name.clone()).set(size as f64);
                        let mut guard = latest
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if let Some(p) = guard.as_mut()
                            && p.note == published.note
                        {
                            p.cosignatures.retain(|c| c.name != sig.name);
                            p.cosignatures.push(sig);
                        }
                    }
                    Outcome::Retry => due.push(i),
                    Outcome::Alarm(_) => {
                        metrics::counter!(SUBMISSIONS, "peer" => name.clone(), "outcome" => "refused")
                            .increment(1);
                    }
                    Outcome::Failed { status, reason } => {
                        metrics::counter!(SUBMISSIONS, "peer" => name.clone(), "outcome" => "failed")
                            .increment(1);
                        tracing::warn!(peer = name, status, reason, "witness did not cosign");
                    }
                }
            }
        }
        for (peer, before) in self.submitter.peers.iter().zip(alarms_before) {
            let name = peer.name.clone();
            metrics::gauge!(WITNESS_ALARM, "peer" => name.clone()).set(if peer.alarm.is_some() {
                1.0
            } else {
                0.0
            });
            if peer.alarm != before {
                match &peer.alarm {
                    Some(a) => tracing::error!(
                        peer = name,
                        alarm = %a,
                        "ALERT: a witness refuses this server's audit log"
                    ),
                    None => tracing::info!(peer = name, "the witness cosigns this log again"),
                }
            }
        }
    }
}

/// Runs the server with `config` until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    serve_until(config, grompi_ops::shutdown::signal()).await
}

/// Runs the server with `config` until `shutdown` resolves, then stops
/// accepting requests, answers the ones in flight, lets the writer commit
/// what is queued, and returns.
pub async fn serve_until(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_until_with(config, shutdown, |service| service).await
}

/// [`serve_until`] with the order service passed through `wrap` before it
/// is served. The simulator's live adversaries wrap the real service this
/// way (same key, storage, TLS and pinning; different answers); the real
/// server never does.
pub async fn serve_until_with<S>(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    wrap: impl FnOnce(OrderGrpc) -> S,
) -> Result<(), ServeError>
where
    S: OrderService,
{
    tls::install_crypto_provider();
    let data = &config.data_dir;
    let secret = init::load_secret(data)?;
    let identity = TlsIdentity::read_from(data, TLS_STEM)?;
    let router_pem = tls::read_cert_pem(&config.router_certificate)?;
    let router_der = tls::cert_der(
        &config.router_certificate.display().to_string(),
        &router_pem,
    )?;
    let store = Arc::new(RedbStore::open_existing(
        &data.join(DB_FILE),
        Some(&config.anchor_path()),
    )?);
    store.check_server_key(&secret.public_key())?;
    let core = Arc::new(OrderCore::new(
        secret,
        config.position,
        config.limits.clone(),
    ));
    tracing::info!(public_key = %core.public_key(), "order server key loaded");

    // The audit log: the key, the start recorded, a first checkpoint.
    let log_key_path = config.log_key_path();
    if !log_key_path.exists() {
        return Err(ServeError::NoLogKey(log_key_path));
    }
    let log_key = Arc::new(audit_log::load_key(
        &log_key_path,
        config.audit_origin.as_deref(),
    )?);
    let event = SecurityEvent {
        event: "start".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        order_server_key: core.public_key().to_hex(),
        log_key: log_key.verifier().vkey(),
        position: config.position,
        limits: config.limits.clone(),
    };
    let entry = event
        .entry()
        .map_err(|e| AuditError::Store(StoreError::AuditLog(e.to_string())))?;
    let at = append_entry(&store, &entry)?;
    let latest: LatestCheckpoint = Arc::new(std::sync::RwLock::new(None));
    let signed = sign_latest(&store, &log_key, &latest, None)?;
    tracing::info!(
        origin = log_key.name(),
        log_key = %log_key.verifier().vkey(),
        start_entry = at,
        size = signed,
        "audit log checkpoint signed"
    );

    let metrics = grompi_ops::telemetry::install_metrics(config.metrics_listen)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(io(format!("bind {}", config.listen)))?;
    let bound = listener.local_addr().map_err(io("local address"))?;
    let audit_listener = match config.audit_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(io(format!("bind {a}")))?,
        ),
        None => None,
    };
    let audit_bound = match &audit_listener {
        Some(l) => Some(l.local_addr().map_err(io("local address"))?),
        None => None,
    };
    // Witnessing: this server's witness of its peers' logs, and its own
    // witnesses.
    let witnessed = witness::witnessed_logs(&config.peers);
    let witness_service = if witnessed.is_empty() {
        None
    } else {
        let path = config.witness_key_path();
        if !path.exists() {
            return Err(ServeError::NoWitnessKey(path));
        }
        let signer = witness::load_key(&path)?;
        tracing::info!(witness_key = %signer.verifier().vkey(), logs = witnessed.len(), "witnessing peers' audit logs");
        Some(Arc::new(WitnessService::open(
            &data.join(witness::WITNESS_DIR),
            signer,
            &witnessed,
        )?))
    };
    let mut submit_to = Vec::new();
    let mut urls = Vec::new();
    for p in &config.peers {
        if let (Some(k), Some(u)) = (&p.witness_key, &p.url) {
            submit_to.push((p.name.clone(), k.clone()));
            urls.push(u.clone());
        }
    }
    let witnesses = Witnesses {
        submitter: Submitter::new(submit_to),
        urls,
    };

    write_bound_addrs(data, bound, metrics, audit_bound)?;
    let period = std::time::Duration::from_secs(config.audit_checkpoint_seconds);
    let mut audit_tasks = vec![tokio::spawn(sign_checkpoints(
        Arc::clone(&store),
        Arc::clone(&log_key),
        Arc::clone(&latest),
        signed,
        period,
        witnesses,
    ))];
    if let Some(l) = audit_listener {
        tracing::info!(bound = ?audit_bound, "serving the audit log over HTTP");
        audit_tasks.push(tokio::spawn(audit_http::serve(
            l,
            Arc::clone(&store),
            Arc::clone(&latest),
            witness_service,
            std::future::pending(),
        )));
    }

    let (committer, writer) = Committer::start(
        Arc::clone(&core),
        Arc::clone(&store),
        config.queue,
        config.gather(),
    )
    .map_err(io("start the writer thread"))?;
    let stopper = committer.clone();
    let service = OrderServiceServer::new(wrap(OrderGrpc::new(
        core,
        Arc::clone(&store),
        committer,
        Some(router_der),
    )))
    .max_decoding_message_size(config.max_request_bytes);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    let health_on_shutdown = health.clone();
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stopping_signal = Arc::clone(&stopping);
    let shutdown = async move {
        shutdown.await;
        health_on_shutdown
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        tracing::info!("shutting down: finishing requests in flight");
        stopping_signal.notify_one();
    };
    let grace = std::time::Duration::from_secs(config.shutdown_grace_seconds);
    tracing::info!(%bound, "serving the order service over mutual TLS");
    let connections = ConnectionLimit::new(
        ConnectionLimits {
            max_connections: config.limits.max_connections,
            // Only the router calls; a per-address cap adds nothing.
            max_per_address: None,
        },
        ConnectionMetrics {
            open: "grompi_order_open_connections",
            refused: "grompi_order_connections_refused_total",
        },
    );
    let serving = tonic::transport::Server::builder()
        .tls_config(tls::server_config(&identity, Some(&router_pem)))?
        .max_concurrent_streams(
            u32::try_from(config.limits.max_streams_per_connection).unwrap_or(u32::MAX),
        )
        // Connections hold capped slots: close those whose peer is gone.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(
            // At most limits.max_connections open; TCP_NODELAY on each.
            connections.tcp_incoming(listener),
            shutdown,
        );
    // Clients that keep their connections open would hold the shutdown
    // forever; after the grace period the server stops regardless. Nothing
    // unanswered was promised, and everything answered is committed.
    let result = tokio::select! {
        r = serving => r,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "connections still open after the grace period; stopping anyway");
            Ok(())
        }
    };
    for t in audit_tasks {
        t.abort();
    }
    // The writer commits and answers what is queued, then exits.
    stopper.stop().await;
    drop(stopper);
    let join = tokio::task::spawn_blocking(move || writer.join());
    if tokio::time::timeout(std::time::Duration::from_secs(10), join)
        .await
        .is_err()
    {
        tracing::warn!("the writer did not finish within 10 s; exiting anyway");
    }
    tracing::info!("stopped");
    result.map_err(ServeError::from)
}
