//! Malicious order servers over real gRPC: the real order server (same key,
//! storage, mutual TLS and router pinning) with its answers changed by a
//! strategy, so attacks run against the real router and the real client.
//!
//! | strategy | what it does | what an honest member sees |
//! |---|---|---|
//! | `forge-tags` | flips a bit in every tag it returns | tags that do not verify: `BadAttestation`; at t = N nothing is accepted |
//! | `withhold-tags` | answers every Attest with UNAVAILABLE | at t = N a stall; at t < N quorum-attested only |
//! | `lie-heads` | head proofs over a head it never attested, correctly MACed | a head proof that contradicts the transcript |
//! | `equivocate` | honest until told to fork ([`super::control::ForkRequest`]); then also one real order server (core, store, listener) per extra branch, each over a copy of the store taken at the fork | with a forking router and enough colluders, each group accepts its own branch; see [`super::evil_router`] |
//!
//! An equivocating server is the real server several times over: at the
//! fork it pauses writes (every call that writes holds a gate the fork
//! takes exclusively, so everything answered is committed), copies its
//! data directory (key, TLS material, database) once per extra branch into
//! `<data_dir>/branch-<b>`, and serves each copy with the real server on a
//! fresh port, while the original keeps serving the first branch at its
//! usual address. Every branch is signed with the same key, so every
//! branch's tags verify; only a server that attests one history (an honest
//! one) tells the branches apart.

use super::LiveError;
use super::control::{self, Done, ForkRequest};
use super::process::BoundAddrs;
use grompi_ops::bound_addrs::BOUND_ADDRS_FILE;
use grompi_order_server::service::OrderGrpc;
use grompi_proto::mac::{HeadProof, HeadProofStatement};
use grompi_proto::pb::{self, order_service_server::OrderService};
use grompi_proto::{ConversationId, Epoch, OrderServerSecret, SlotIndex, SlotSet};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// How a malicious order server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvilStrategy {
    /// Every returned tag has a bit flipped.
    ForgeTags,
    /// Attest always fails with UNAVAILABLE.
    WithholdTags,
    /// Head proofs state a head that was never attested.
    LieHeads,
    /// One real server per branch of a forking router, once told to fork.
    Equivocate,
}

impl EvilStrategy {
    /// Every strategy.
    pub const ALL: [EvilStrategy; 4] = [
        Self::ForgeTags,
        Self::WithholdTags,
        Self::LieHeads,
        Self::Equivocate,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ForgeTags => "forge-tags",
            Self::WithholdTags => "withhold-tags",
            Self::LieHeads => "lie-heads",
            Self::Equivocate => "equivocate",
        }
    }
}

impl std::str::FromStr for EvilStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown strategy {s:?}; one of: {}",
                    Self::ALL.map(EvilStrategy::name).join(", ")
                )
            })
    }
}

/// The real order service with a strategy applied to its answers.
pub struct EvilOrder(std::sync::Arc<Evil>);

/// What the service and its stream tasks share.
struct Evil {
    inner: OrderGrpc,
    strategy: EvilStrategy,
    secret: OrderServerSecret,
    /// Slot sets seen, per conversation and epoch (to MAC lies).
    slot_sets: Mutex<HashMap<(ConversationId, u64), SlotSet>>,
}

impl EvilOrder {
    /// Wraps the real service; `secret` is the server's own key.
    pub fn new(inner: OrderGrpc, strategy: EvilStrategy, secret: OrderServerSecret) -> Self {
        Self(std::sync::Arc::new(Evil {
            inner,
            strategy,
            secret,
            slot_sets: Mutex::new(HashMap::new()),
        }))
    }
}

impl Evil {
    fn remember(&self, conversation: &[u8], epoch: u64, slots: Option<&pb::SlotSet>) {
        let (Ok(id), Some(Ok(set))) = (
            ConversationId::parse("conversation_id", conversation),
            slots.map(|s| SlotSet::try_from(s.clone())),
        ) else {
            return;
        };
        self.slot_sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((id, epoch), set);
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        if self.strategy == EvilStrategy::WithholdTags {
            return Err(Status::unavailable("withheld"));
        }
        let updates: Vec<(Vec<u8>, u64, Option<pb::SlotSet>)> = request
            .get_ref()
            .items
            .iter()
            .filter_map(|i| {
                let h = i.envelope.as_ref()?.header.as_ref()?;
                i.next_slots
                    .as_ref()
                    .map(|n| (h.conversation_id.clone(), h.epoch + 1, Some(n.clone())))
            })
            .collect();
        let mut response = self.inner.attest(request).await?;
        for (c, e, s) in &updates {
            self.remember(c, *e, s.as_ref());
        }
        if self.strategy == EvilStrategy::ForgeTags {
            for r in &mut response.get_mut().results {
                if let Some(pb::attest_result::Outcome::Attested(a)) = &mut r.outcome {
                    flip(&mut a.tags);
                    flip(&mut a.next_tags);
                }
            }
        }
        Ok(response)
    }
}

fn flip(tags: &mut [Vec<u8>]) {
    for t in tags {
        if let Some(b) = t.first_mut() {
            *b ^= 1;
        }
    }
}

#[tonic::async_trait]
impl OrderService for EvilOrder {
    async fn open_conversation(
        &self,
        request: Request<pb::OpenConversationRequest>,
    ) -> Result<Response<pb::OpenConversationResponse>, Status> {
        let r = request.get_ref();
        self.0.remember(&r.conversation_id, 0, r.slots.as_ref());
        self.0.inner.open_conversation(request).await
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        self.0.attest(request).await
    }

    type AttestStreamStream = ReceiverStream<Result<pb::AttestResponse, Status>>;

    /// The stream as a sequence of single Attest calls, each through the
    /// strategy, answered in order (no pipelining).
    async fn attest_stream(
        &self,
        request: Request<tonic::Streaming<pb::AttestRequest>>,
    ) -> Result<Response<Self::AttestStreamStream>, Status> {
        if self.0.strategy == EvilStrategy::WithholdTags {
            return Err(Status::unavailable("withheld"));
        }
        let evil = std::sync::Arc::clone(&self.0);
        Ok(one_by_one(request, move |one| {
            let evil = std::sync::Arc::clone(&evil);
            async move { evil.attest(one).await }
        }))
    }

    async fn prove_head(
        &self,
        request: Request<pb::ProveHeadRequest>,
    ) -> Result<Response<pb::ProveHeadResponse>, Status> {
        let slot = SlotIndex(request.get_ref().slot);
        let mut response = self.0.inner.prove_head(request).await?;
        if self.0.strategy != EvilStrategy::LieHeads {
            return Ok(response);
        }
        let Some(Ok(mut proof)) = response.get_ref().proof.clone().map(HeadProof::try_from) else {
            return Ok(response);
        };
        let key = self
            .0
            .slot_sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(proof.statement.conversation, proof.statement.epoch.0))
            .and_then(|set| set.get(slot).map(|e| e.key));
        let Some(Ok(keys)) = key.map(|k| self.0.secret.mac_keys(&k)) else {
            return Ok(response);
        };
        // A head this server never attested: the real one, chained once more
        // over itself.
        let lie = proof.statement.head.next(
            &proof.statement.conversation,
            Epoch(proof.statement.epoch.0),
            grompi_proto::Index(proof.statement.count),
            &grompi_proto::EnvelopeHash::from_bytes(*proof.statement.head.as_bytes()),
        );
        proof.statement = HeadProofStatement {
            head: lie,
            ..proof.statement
        };
        proof.tag = keys.prove_head(&proof.statement);
        response.get_mut().proof = Some((&proof).into());
        Ok(response)
    }

    async fn server_info(
        &self,
        request: Request<pb::ServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfoResponse>, Status> {
        self.0.inner.server_info(request).await
    }
}

/// Runs the real order server with `config`, its service wrapped by
/// `strategy`, until SIGTERM or Ctrl-C.
pub async fn serve(
    config: grompi_order_server::config::Config,
    strategy: EvilStrategy,
) -> Result<(), String> {
    if strategy == EvilStrategy::Equivocate {
        banner(strategy);
        return equivocate(config).await.map_err(|e| e.to_string());
    }
    let secret =
        grompi_order_server::init::load_secret(&config.data_dir).map_err(|e| e.to_string())?;
    banner(strategy);
    grompi_order_server::server::serve_until_with(
        config,
        grompi_ops::shutdown::signal(),
        move |inner| EvilOrder::new(inner, strategy, secret),
    )
    .await
    .map_err(|e| e.to_string())
}

/// One real order server served by this process until told to stop.
struct Instance {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), grompi_order_server::server::ServeError>>,
}

impl Instance {
    fn start(config: grompi_order_server::config::Config) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(grompi_order_server::server::serve_until(
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stops it gracefully: answers in flight, the writer commits.
    async fn stop(mut self) -> Result<(), LiveError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r.map_err(|e| LiveError::Setup(format!("order server: {e}"))),
            Err(e) => Err(LiveError::Setup(format!("order server task: {e}"))),
        }
    }
}

/// Files of a data directory that are not the server's state.
fn is_control_file(name: &str) -> bool {
    name.starts_with('.')
        || name == BOUND_ADDRS_FILE
        || name == control::FORK
        || name == control::FORK_DONE
}

/// Copies the regular files of an order server's data directory (key, TLS
/// material, database) into a fresh `to` (mode 0700).
fn copy_data(from: &Path, to: &Path) -> Result<(), LiveError> {
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(LiveError::io(format!("remove {}", to.display())))?;
    }
    std::fs::create_dir_all(to).map_err(LiveError::io(format!("create {}", to.display())))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))
        .map_err(LiveError::io(format!("chmod {}", to.display())))?;
    let entries =
        std::fs::read_dir(from).map_err(LiveError::io(format!("read {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(LiveError::io(format!("read {}", from.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && !is_control_file(&name) {
            std::fs::copy(entry.path(), to.join(&name))
                .map_err(LiveError::io(format!("copy {}", entry.path().display())))?;
        }
    }
    Ok(())
}

/// Waits until `instance` has written its bound addresses into `data`.
async fn wait_bound(data: &Path, instance: &Instance) -> Result<BoundAddrs, LiveError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(addrs) = control::read::<BoundAddrs>(data, BOUND_ADDRS_FILE) {
            return Ok(addrs);
        }
        if instance.task.is_finished() {
            return Err(LiveError::Setup(format!(
                "the order server over {} stopped before it listened",
                data.display()
            )));
        }
        if std::time::Instant::now() > deadline {
            return Err(LiveError::Timeout(format!(
                "the order server over {} to listen",
                data.display()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The real service of branch 0 of an equivocating server, with a gate:
/// every call that writes holds it shared, and a fork holds it exclusively
/// while it copies the store, so the copy is a committed state.
struct Gated(std::sync::Arc<GatedInner>);

struct GatedInner {
    inner: OrderGrpc,
    gate: std::sync::Arc<tokio::sync::RwLock<()>>,
}

#[tonic::async_trait]
impl OrderService for Gated {
    async fn open_conversation(
        &self,
        request: Request<pb::OpenConversationRequest>,
    ) -> Result<Response<pb::OpenConversationResponse>, Status> {
        let _writing = self.0.gate.read().await;
        self.0.inner.open_conversation(request).await
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        let _writing = self.0.gate.read().await;
        self.0.inner.attest(request).await
    }

    type AttestStreamStream = ReceiverStream<Result<pb::AttestResponse, Status>>;

    /// The stream as a sequence of single Attest calls, answered in order.
    async fn attest_stream(
        &self,
        request: Request<tonic::Streaming<pb::AttestRequest>>,
    ) -> Result<Response<Self::AttestStreamStream>, Status> {
        let shared = std::sync::Arc::clone(&self.0);
        Ok(one_by_one(request, move |one| {
            let shared = std::sync::Arc::clone(&shared);
            async move {
                let _writing = shared.gate.read().await;
                shared.inner.attest(one).await
            }
        }))
    }

    async fn prove_head(
        &self,
        request: Request<pb::ProveHeadRequest>,
    ) -> Result<Response<pb::ProveHeadResponse>, Status> {
        self.0.inner.prove_head(request).await
    }

    async fn server_info(
        &self,
        request: Request<pb::ServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfoResponse>, Status> {
        self.0.inner.server_info(request).await
    }
}

/// Forks into `branches`: with writes paused, copies the data directory
/// once per extra branch, then serves each copy with the real server on a
/// fresh port. Returns the extra branches' addresses.
async fn fork(
    config: &grompi_order_server::config::Config,
    gate: &tokio::sync::RwLock<()>,
    instances: &mut Vec<Instance>,
    branches: usize,
) -> Result<Vec<String>, LiveError> {
    if !(2..=16).contains(&branches) {
        return Err(LiveError::Setup(format!(
            "{branches} branches: choose between 2 and 16"
        )));
    }
    let data = &config.data_dir;
    let mut dirs = Vec::new();
    {
        // No write in flight: everything answered is committed.
        let _paused = gate.write().await;
        for b in 1..branches {
            let dir = data.join(format!("branch-{b}"));
            copy_data(data, &dir)?;
            dirs.push(dir);
        }
    }
    let mut addresses = Vec::new();
    for dir in dirs {
        let mut branch = config.clone();
        branch.data_dir = dir.clone();
        branch.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        branch.metrics_listen = None;
        let instance = Instance::start(branch);
        let addrs = wait_bound(&dir, &instance).await;
        instances.push(instance);
        addresses.push(format!("https://localhost:{}", addrs?.grpc.port()));
    }
    Ok(addresses)
}

/// The `equivocate` strategy: the real server, honest until a fork request
/// appears in its data directory; then also one real server per extra
/// branch, each over a copy of the store.
async fn equivocate(mut config: grompi_order_server::config::Config) -> Result<(), LiveError> {
    // The router keeps streams open; stopping must not wait long for them.
    config.shutdown_grace_seconds = config.shutdown_grace_seconds.min(1);
    let data = config.data_dir.clone();
    let gate = std::sync::Arc::new(tokio::sync::RwLock::new(()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut until_stopped = stopped.clone();
    let wrap_gate = std::sync::Arc::clone(&gate);
    let mut main = tokio::spawn(grompi_order_server::server::serve_until_with(
        config.clone(),
        async move {
            let _ = until_stopped.wait_for(|s| *s).await;
        },
        move |inner| {
            Gated(std::sync::Arc::new(GatedInner {
                inner,
                gate: wrap_gate,
            }))
        },
    ));
    let mut branches: Vec<Instance> = Vec::new();
    let mut forked: Option<Vec<String>> = None;
    let shutdown = grompi_ops::shutdown::signal();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(control::POLL);
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            r = &mut main => break match r {
                Ok(Ok(())) => Err(LiveError::Setup("the order server stopped".into())),
                Ok(Err(e)) => Err(LiveError::Setup(format!("order server: {e}"))),
                Err(e) => Err(LiveError::Setup(format!("order server task: {e}"))),
            },
            _ = tick.tick() => {}
        }
        if branches.iter().any(|i| i.task.is_finished()) {
            break Err(LiveError::Setup("a branch's order server stopped".into()));
        }
        let Some(request) = control::read::<ForkRequest>(&data, control::FORK) else {
            continue;
        };
        if control::read::<Done>(&data, control::FORK_DONE).is_some_and(|d| d.id == request.id) {
            continue;
        }
        let done = match &forked {
            Some(addresses) if addresses.len() + 1 == request.branches => Done {
                id: request.id,
                error: String::new(),
                addresses: addresses.clone(),
            },
            Some(addresses) => Done {
                id: request.id,
                error: format!("already forked into {} branches", addresses.len() + 1),
                addresses: Vec::new(),
            },
            None => match fork(&config, &gate, &mut branches, request.branches).await {
                Ok(addresses) => {
                    eprintln!(
                        "EQUIVOCATING: serving {} branches, the extra ones at {}",
                        request.branches,
                        addresses.join(", ")
                    );
                    forked = Some(addresses.clone());
                    Done {
                        id: request.id,
                        error: String::new(),
                        addresses,
                    }
                }
                Err(e) => Done {
                    id: request.id,
                    error: e.to_string(),
                    addresses: Vec::new(),
                },
            },
        };
        if let Err(e) = control::write(&data, control::FORK_DONE, &done) {
            break Err(e);
        }
    };
    let _ = stop.send(true);
    for instance in branches {
        if let Err(e) = instance.stop().await {
            eprintln!("stopping a branch: {e}");
        }
    }
    if !main.is_finished() {
        let _ = (&mut main).await;
    }
    drop(stopped);
    result
}

fn banner(strategy: EvilStrategy) {
    eprintln!(
        "MALICIOUS order server ({}): for experiments against the real client only",
        strategy.name()
    );
}

/// Serves an `AttestStream` as single Attest calls made by `attest`, one
/// after the other and answered in the order sent (no pipelining); the
/// stream ends after the first error.
fn one_by_one<F, Fut>(
    request: Request<tonic::Streaming<pb::AttestRequest>>,
    attest: F,
) -> Response<ReceiverStream<Result<pb::AttestResponse, Status>>>
where
    F: Fn(Request<pb::AttestRequest>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<pb::AttestResponse>, Status>> + Send,
{
    let (metadata, extensions, mut incoming) = request.into_parts();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok(Some(message)) = incoming.message().await {
            let one = Request::from_parts(metadata.clone(), extensions.clone(), message);
            let answer = attest(one).await.map(Response::into_inner);
            let end = answer.is_err();
            if tx.send(answer).await.is_err() || end {
                return;
            }
        }
    });
    Response::new(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_round_trip_and_unknown_ones_are_named() {
        for s in EvilStrategy::ALL {
            assert_eq!(s.name().parse::<EvilStrategy>(), Ok(s));
        }
        let e = "fork".parse::<EvilStrategy>().unwrap_err();
        assert!(e.contains("equivocate"), "{e}");
    }

    #[test]
    fn a_branch_copies_the_state_but_not_the_control_files() {
        let root = std::env::temp_dir().join(format!("grompi-branch-{}", std::process::id()));
        let data = root.join("data");
        std::fs::create_dir_all(data.join("branch-1")).unwrap();
        for f in [
            "order.redb",
            "tls.crt",
            BOUND_ADDRS_FILE,
            "fork.toml",
            ".x.tmp",
        ] {
            std::fs::write(data.join(f), f).unwrap();
        }
        let to = data.join("branch-1");
        std::fs::write(to.join("stale"), "old").unwrap();
        copy_data(&data, &to).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["order.redb", "tls.crt"]);
        assert_eq!(
            std::fs::read_to_string(to.join("order.redb")).unwrap(),
            "order.redb"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn flipped_tags_differ_in_one_bit() {
        let mut t = vec![vec![0u8; 32], vec![]];
        flip(&mut t);
        assert_eq!(t[0][0], 1);
        assert!(t[1].is_empty());
    }
}
