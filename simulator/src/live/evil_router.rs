//! Malicious routers over real gRPC, so attacks run against the real client
//! and the real order servers.
//!
//! A malicious router is a front that serves the router's gRPC API with the
//! router's own TLS identity (clients pin it, order servers accept only
//! it), in front of one or more real routers: the real core, the real redb
//! store, the real fan-out workers and the real gRPC service of
//! `grompi-router`, run in this process (a *backend*). The front decides
//! which backend serves which account and what each account is delivered;
//! it never holds a member secret.
//!
//! | strategy | what it does | what honest members see |
//! |---|---|---|
//! | `fork` | honest until told to fork ([`AttackPlan::groups`]); then it stops its backend, copies the store once per extra group, and runs one backend per group: each group's accounts talk only to their backend, which fans out to the equivocating order servers' branch listeners and to every other (honest) server | with enough equivocating servers each group accepts its own history; the honest server attests only one, so the others' indices lack its tag and its head proofs contradict them |
//! | `drop` | never delivers the listed indices to the listed victims ([`AttackPlan::victims`], [`AttackPlan::indices`]) | the victim stops before the first dropped index; a dropped last index shows in head proofs (`Withheld`), one in the middle only once the application reports the stall |
//! | `replay` | delivers every later envelope to the victims together with an earlier one again: verbatim, and relabelled to the later index | nothing extra accepted; the relabelled copy is `RewrittenIndex` |
//! | `substitute-join` | once told the victims, registers an account of its own (a puppet, through its backend as any client does) and starts an Olm session with each victim from the bundle the directory publishes; then, before each Update delivered to a victim it adds, delivers the same Update as the puppet composes it: the genuine header fields, the next slot set it handed out with a padding slot re-roled Admin, the genuine member list plus the puppet as that slot's Admin, the victim's genuine next-epoch tags, and no previous head (or the genuine one, [`AttackPlan::keep_previous_head`]) | the victim refuses the substitute with an alert and joins with the genuine Update; the puppet is never a member |
//!
//! The plan arrives as `attack.toml` in the router's data directory (see
//! [`super::control`]); until then every strategy is honest. At a fork,
//! live subscriptions end (clients subscribe again and reach their group's
//! backend). A challenge (GetChallenge is anonymous) comes from the
//! backend of the account last seen on the same connection, so a client
//! that keeps its connection can sign in again after a fork; one on a new
//! connection gets the first group's challenge, and only accounts of that
//! group can then sign in: the attacker forks once everyone holds a session.

use super::LiveError;
use super::control::{self, AttackPlan, Done};
use crate::world::router_puppet::{NextSet, Puppet, substitute_update};
use grompi_client_core::{ConversationConfig, Secrets};
use grompi_ops::tls::TlsIdentity;
use grompi_proto::descriptor::NetworkDescriptor;
use grompi_proto::pb::{
    self,
    router_server::{Router, RouterServer},
};
use grompi_proto::{AccountId, SlotSet};
use grompi_router::config::Config;
use grompi_router::server::Backend;
use grompi_router::service::{RouterService, SESSION_METADATA};
use grompi_router::store::RedbStore;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{RwLock, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// How a malicious router misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterStrategy {
    /// One backend per group of members, once told the groups.
    Fork,
    /// Listed indices never reach the victims.
    Drop,
    /// Earlier envelopes again, verbatim and relabelled, to the victims.
    Replay,
    /// Attack 1: an Update its own puppet composed, listing the puppet,
    /// delivered to a victim the genuine Update adds, just before it.
    SubstituteJoin,
}

impl RouterStrategy {
    /// Every strategy.
    pub const ALL: [RouterStrategy; 4] =
        [Self::Fork, Self::Drop, Self::Replay, Self::SubstituteJoin];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fork => "fork",
            Self::Drop => "drop",
            Self::Replay => "replay",
            Self::SubstituteJoin => "substitute-join",
        }
    }
}

impl std::str::FromStr for RouterStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown router strategy {s:?}; one of: {}",
                    Self::ALL.map(RouterStrategy::name).join(", ")
                )
            })
    }
}

fn setup(e: impl std::fmt::Display) -> LiveError {
    LiveError::Setup(e.to_string())
}

/// Opens a redb store, waiting while a store just closed releases its file.
async fn open_store(path: &Path) -> Result<RedbStore, LiveError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match RedbStore::open(path) {
            Ok(s) => return Ok(s),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(setup(format!("open {}: {e}", path.display())));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Starts one real router (`grompi_router::server::Backend`, exactly what
/// `router serve` runs behind its gRPC service) over the store at `db`.
async fn start_backend(
    config: &Config,
    descriptor: &NetworkDescriptor,
    identity: &TlsIdentity,
    db: &Path,
) -> Result<Backend, LiveError> {
    let store = open_store(db).await?;
    Backend::start(config, descriptor, identity, store).map_err(setup)
}

/// Stops a router started by [`start_backend`] (everything acknowledged is
/// committed) and lets go of its store.
async fn stop_backend(backend: Backend) -> Result<(), LiveError> {
    backend
        .stop()
        .await
        .map_err(|e| setup(format!("router core: {e}")))
}

/// What the front changes in deliveries, per the plan in force.
#[derive(Debug, Default)]
struct Tampering {
    victims: HashSet<AccountId>,
    drop: BTreeSet<u64>,
    /// `replay`: the last envelope delivered, per victim and conversation.
    last: HashMap<(AccountId, Vec<u8>), pb::Delivery>,
    /// `substitute-join`: deliver the substitute with the genuine previous
    /// head.
    keep_previous_head: bool,
}

struct Inner {
    strategy: RouterStrategy,
    config: Config,
    descriptor: NetworkDescriptor,
    identity: TlsIdentity,
    backends: RwLock<Vec<Backend>>,
    group_of: Mutex<HashMap<AccountId, usize>>,
    sessions: Mutex<HashMap<Vec<u8>, AccountId>>,
    /// The account last seen on each client connection (a client keeps
    /// one), so that its next challenge comes from its group's backend.
    connections: Mutex<HashMap<SocketAddr, AccountId>>,
    tampering: Mutex<Tampering>,
    /// `substitute-join`: the next slot sets handed out (PrepareUpdate),
    /// by slot set hash, with their assignments.
    prepared: Mutex<HashMap<[u8; 32], NextSet>>,
    /// `substitute-join`: the router's own account.
    puppet: Mutex<Option<Puppet>>,
    /// Bumped at every fork: live subscriptions end.
    generation: watch::Sender<u64>,
    applied: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn token<T>(req: &Request<T>) -> Option<Vec<u8>> {
    req.metadata()
        .get(SESSION_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| hex::decode(s.trim()).ok())
}

fn parse_accounts(hexes: &[String]) -> Result<Vec<AccountId>, LiveError> {
    hexes
        .iter()
        .map(|h| {
            hex::decode(h.trim())
                .ok()
                .and_then(|b| AccountId::parse("account", &b).ok())
                .ok_or_else(|| setup(format!("{h:?} is not an account id (64 hex digits)")))
        })
        .collect()
}

/// The descriptor a branch's backend uses: the equivocating servers'
/// branch listeners in place of their usual addresses.
fn branch_descriptor(
    base: &NetworkDescriptor,
    overrides: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<NetworkDescriptor, LiveError> {
    let mut d = base.clone();
    for (position, address) in overrides.into_iter().flatten() {
        let entry = position
            .parse::<usize>()
            .ok()
            .and_then(|p| d.order_servers.get_mut(p))
            .ok_or_else(|| setup(format!("no order server at position {position:?}")))?;
        entry.address = address.clone();
    }
    Ok(d)
}

impl Inner {
    fn account_of<T>(&self, req: &Request<T>) -> Option<AccountId> {
        let t = token(req)?;
        let account = lock(&self.sessions).get(&t).copied()?;
        self.seen(req, account);
        Some(account)
    }

    /// Notes that `account` uses the connection `req` came on.
    fn seen<T>(&self, req: &Request<T>, account: AccountId) {
        if let Some(addr) = req.remote_addr() {
            lock(&self.connections).insert(addr, account);
        }
    }

    /// The account last seen on the connection `req` came on.
    fn on_connection<T>(&self, req: &Request<T>) -> Option<AccountId> {
        let addr = req.remote_addr()?;
        lock(&self.connections).get(&addr).copied()
    }

    async fn backend(&self, account: Option<AccountId>) -> Result<RouterService, Status> {
        let group = account
            .and_then(|a| lock(&self.group_of).get(&a).copied())
            .unwrap_or(0);
        let backends = self.backends.read().await;
        backends
            .get(group)
            .or_else(|| backends.first())
            .map(|b| b.service.clone())
            .ok_or_else(|| Status::unavailable("the router is restarting; retry"))
    }

    fn remember(&self, token: &[u8], account: AccountId) {
        lock(&self.sessions).insert(token.to_vec(), account);
    }

    /// What `account` gets instead of `deliveries`.
    fn tamper(&self, account: AccountId, deliveries: Vec<pb::Delivery>) -> Vec<pb::Delivery> {
        let mut t = lock(&self.tampering);
        if !t.victims.contains(&account) {
            return deliveries;
        }
        match self.strategy {
            RouterStrategy::Fork => deliveries,
            RouterStrategy::Drop => deliveries
                .into_iter()
                .filter(|d| !t.drop.contains(&d.index))
                .collect(),
            RouterStrategy::SubstituteJoin => {
                let keep = t.keep_previous_head;
                drop(t);
                let mut out = Vec::with_capacity(deliveries.len() * 2);
                for d in deliveries {
                    if let Some(fake) = self.substitute(account, &d, keep) {
                        out.push(fake);
                    }
                    out.push(d);
                }
                out
            }
            RouterStrategy::Replay => {
                let mut out = Vec::with_capacity(deliveries.len() * 3);
                for d in deliveries {
                    if d.header.is_none() {
                        out.push(d);
                        continue;
                    }
                    let key = (account, d.conversation_id.clone());
                    let earlier = t.last.get(&key).filter(|e| e.index < d.index).cloned();
                    t.last.insert(key, d.clone());
                    let index = d.index;
                    out.push(d);
                    if let Some(e) = earlier {
                        out.push(e.clone());
                        out.push(pb::Delivery { index, ..e });
                    }
                }
                out
            }
        }
    }

    /// `substitute-join`: the puppet's Update in place of `genuine`, when
    /// `genuine` delivers an Update that adds `victim`.
    fn substitute(
        &self,
        victim: AccountId,
        genuine: &pb::Delivery,
        keep_previous_head: bool,
    ) -> Option<pb::Delivery> {
        let (header, _) = crate::world::router_puppet::join_delivery(genuine)?;
        let next = lock(&self.prepared)
            .get(header.slot_set_hash()?.as_bytes())?
            .clone();
        let mut puppet = lock(&self.puppet);
        let made = substitute_update(
            puppet.as_mut()?,
            genuine,
            victim,
            &next,
            keep_previous_head,
            &mut rand::rng(),
        );
        match made {
            Ok(Some((fake, padding))) => {
                eprintln!(
                    "SUBSTITUTED: index {} for {}, the puppet the Admin of padding slot {}",
                    genuine.index,
                    victim.to_hex(),
                    padding.0
                );
                Some(fake)
            }
            Ok(None) => None,
            Err(e) => {
                eprintln!("the puppet could not compose an Update: {e}");
                None
            }
        }
    }

    /// `substitute-join`: registers the router's own account through its
    /// backend, as a client does, and starts an Olm session with each of
    /// `victims` from the prekey bundle its directory publishes.
    async fn puppet_for(&self, victims: &[AccountId]) -> Result<(), LiveError> {
        let service = self.backend(None).await.map_err(setup)?;
        let registered = lock(&self.puppet).take();
        let mut puppet = match registered {
            Some(p) => p,
            None => {
                let challenge = service
                    .get_challenge(Request::new(pb::GetChallengeRequest {}))
                    .await
                    .map_err(setup)?
                    .into_inner()
                    .challenge;
                let parsed =
                    grompi_proto::Challenge::parse("challenge", &challenge).map_err(setup)?;
                let mut secrets = Secrets::default();
                let order_keys = secrets.order_keys.generate(&mut rand::rng(), 4);
                let identity = secrets.pairwise.identity();
                let fallback = secrets.pairwise.new_fallback_prekey();
                let request = pb::RegisterRequest {
                    identity: Some(pb::IdentityKeys {
                        signing_key: identity.signing.to_vec(),
                        session_key: identity.session.to_vec(),
                    }),
                    // Signed for the network its backends serve (the
                    // branches differ only in order server addresses).
                    signature: secrets
                        .pairwise
                        .sign(&parsed.network_signing_message(
                            &grompi_proto::ids::NetworkBinding::of_descriptor(&self.descriptor),
                        ))
                        .to_vec(),
                    challenge,
                    fallback_prekey: Some(pb::SignedPrekey {
                        key: fallback.key.to_vec(),
                        signature: fallback.signature.to_vec(),
                    }),
                    one_time_prekeys: vec![],
                    order_keys: order_keys.iter().map(|k| k.to_vec()).collect(),
                };
                let token = service
                    .register(Request::new(request))
                    .await
                    .map_err(setup)?
                    .into_inner()
                    .session_token;
                let servers = ConversationConfig::from_descriptor(&self.descriptor).servers;
                Puppet::new("puppet", secrets, token, &servers, &mut rand::rng()).map_err(setup)?
            }
        };
        let session = hex::encode(puppet.token())
            .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
            .map_err(setup)?;
        for victim in victims {
            let mut req = Request::new(pb::GetPrekeyBundleRequest {
                account: victim.to_vec(),
            });
            req.metadata_mut().insert(SESSION_METADATA, session.clone());
            let bundle = service
                .get_prekey_bundle(req)
                .await
                .map_err(setup)?
                .into_inner()
                .bundle
                .ok_or_else(|| setup("no prekey bundle"))?;
            puppet.start_session_from(bundle).map_err(setup)?;
        }
        eprintln!(
            "PUPPET: account {} registered, sessions with {} victim(s)",
            puppet.account.to_hex(),
            victims.len()
        );
        *lock(&self.puppet) = Some(puppet);
        Ok(())
    }

    /// Puts a plan in force.
    async fn apply(&self, plan: &AttackPlan) -> Result<(), LiveError> {
        let victims = parse_accounts(&plan.victims)?;
        let groups: Vec<Vec<AccountId>> = plan
            .groups
            .iter()
            .map(|g| parse_accounts(g))
            .collect::<Result<_, _>>()?;
        if self.strategy == RouterStrategy::SubstituteJoin {
            self.puppet_for(&victims).await?;
        }
        {
            let mut t = lock(&self.tampering);
            t.victims = victims.into_iter().collect();
            t.drop = plan.indices.iter().copied().collect();
            t.keep_previous_head = plan.keep_previous_head;
        }
        if self.strategy != RouterStrategy::Fork || groups.len() < 2 {
            return Ok(());
        }
        let mut backends = self.backends.write().await;
        if backends.len() > 1 {
            return Err(setup(format!(
                "already forked into {} groups",
                backends.len()
            )));
        }
        // Every branch starts from the same committed state.
        for b in backends.drain(..) {
            stop_backend(b).await?;
        }
        let main_db = self.config.database_path();
        let mut dbs = vec![main_db.clone()];
        for g in 1..groups.len() {
            let dir = self.config.data_dir.join(format!("branch-{g}"));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(LiveError::io(format!("remove {}", dir.display())))?;
            }
            std::fs::create_dir_all(&dir)
                .map_err(LiveError::io(format!("create {}", dir.display())))?;
            let db = dir.join("router.redb");
            // With its write-ahead log, which holds what the last commits
            // did not write durably into the database itself.
            grompi_ops::wal::copy_database(&main_db, &db)
                .map_err(LiveError::io(format!("copy {}", main_db.display())))?;
            dbs.push(db);
        }
        for (g, db) in dbs.iter().enumerate() {
            let overrides = g
                .checked_sub(1)
                .and_then(|i| plan.branch_order_servers.get(i));
            let descriptor = branch_descriptor(&self.descriptor, overrides)?;
            backends.push(start_backend(&self.config, &descriptor, &self.identity, db).await?);
        }
        {
            let mut group_of = lock(&self.group_of);
            group_of.clear();
            for (g, members) in groups.iter().enumerate() {
                for a in members {
                    group_of.insert(*a, g);
                }
            }
        }
        self.generation.send_modify(|g| *g += 1);
        eprintln!(
            "FORKED: {} groups, one router core and store each",
            groups.len()
        );
        Ok(())
    }

    /// Looks for a new plan every [`control::POLL`]; returns only when the
    /// router can no longer serve (no backend left).
    async fn control_loop(self: Arc<Self>) -> LiveError {
        let data = self.config.data_dir.clone();
        loop {
            tokio::time::sleep(control::POLL).await;
            let Some(plan) = control::read::<AttackPlan>(&data, control::ATTACK) else {
                continue;
            };
            if plan.id <= *lock(&self.applied) {
                continue;
            }
            let result = self.apply(&plan).await;
            *lock(&self.applied) = plan.id;
            let done = Done {
                id: plan.id,
                error: result
                    .as_ref()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
                addresses: Vec::new(),
            };
            if let Err(e) = control::write(&data, control::ATTACK_DONE, &done) {
                return e;
            }
            if self.backends.read().await.is_empty() {
                return result.err().unwrap_or_else(|| setup("no router core left"));
            }
        }
    }

    async fn stop_all(&self) {
        let mut backends = self.backends.write().await;
        for b in backends.drain(..) {
            if let Err(e) = stop_backend(b).await {
                eprintln!("stopping a router core: {e}");
            }
        }
    }
}

/// The front: the router's API, each call passed to the backend of the
/// caller's group.
#[derive(Clone)]
struct Front(Arc<Inner>);

#[tonic::async_trait]
impl Router for Front {
    async fn get_challenge(
        &self,
        req: Request<pb::GetChallengeRequest>,
    ) -> Result<Response<pb::GetChallengeResponse>, Status> {
        let a = self.0.on_connection(&req);
        self.0.backend(a).await?.get_challenge(req).await
    }

    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let account = req.get_ref().identity.as_ref().and_then(|i| {
            let signing = <[u8; 32]>::try_from(i.signing_key.as_slice()).ok()?;
            let session = <[u8; 32]>::try_from(i.session_key.as_slice()).ok()?;
            Some(AccountId::of_identity(&signing, &session))
        });
        if let Some(a) = account {
            self.0.seen(&req, a);
        }
        let r = self.0.backend(account).await?.register(req).await?;
        if let Ok(a) = AccountId::parse("account", &r.get_ref().account) {
            self.0.remember(&r.get_ref().session_token, a);
        }
        Ok(r)
    }

    async fn sign_in(
        &self,
        req: Request<pb::SignInRequest>,
    ) -> Result<Response<pb::SignInResponse>, Status> {
        let account = AccountId::parse("account", &req.get_ref().account).ok();
        if let Some(a) = account {
            self.0.seen(&req, a);
        }
        let r = self.0.backend(account).await?.sign_in(req).await?;
        if let Some(a) = account {
            self.0.remember(&r.get_ref().session_token, a);
        }
        Ok(r)
    }

    async fn upload_keys(
        &self,
        req: Request<pb::UploadKeysRequest>,
    ) -> Result<Response<pb::UploadKeysResponse>, Status> {
        let a = self.0.account_of(&req);
        self.0.backend(a).await?.upload_keys(req).await
    }

    async fn get_key_counts(
        &self,
        req: Request<pb::GetKeyCountsRequest>,
    ) -> Result<Response<pb::GetKeyCountsResponse>, Status> {
        let a = self.0.account_of(&req);
        self.0.backend(a).await?.get_key_counts(req).await
    }

    async fn get_prekey_bundle(
        &self,
        req: Request<pb::GetPrekeyBundleRequest>,
    ) -> Result<Response<pb::GetPrekeyBundleResponse>, Status> {
        let a = self.0.account_of(&req);
        self.0.backend(a).await?.get_prekey_bundle(req).await
    }

    async fn create_conversation(
        &self,
        req: Request<pb::CreateConversationRequest>,
    ) -> Result<Response<pb::CreateConversationResponse>, Status> {
        let a = self.0.account_of(&req);
        self.0.backend(a).await?.create_conversation(req).await
    }

    async fn prepare_update(
        &self,
        req: Request<pb::PrepareUpdateRequest>,
    ) -> Result<Response<pb::PrepareUpdateResponse>, Status> {
        let a = self.0.account_of(&req);
        let r = self.0.backend(a).await?.prepare_update(req).await?;
        if self.0.strategy == RouterStrategy::SubstituteJoin
            && let Some(slots) = r
                .get_ref()
                .slots
                .clone()
                .and_then(|s| SlotSet::try_from(s).ok())
        {
            let assignments = r.get_ref().assignments.clone();
            lock(&self.0.prepared).insert(*slots.hash().as_bytes(), (slots, assignments));
        }
        Ok(r)
    }

    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let a = self.0.account_of(&req);
        self.0.backend(a).await?.submit(req).await
    }

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let a = self.0.account_of(&req);
        let mut r = self.0.backend(a).await?.fetch(req).await?;
        if let Some(a) = a {
            let page = std::mem::take(&mut r.get_mut().deliveries);
            r.get_mut().deliveries = self.0.tamper(a, page);
        }
        Ok(r)
    }

    async fn fetch_history(
        &self,
        req: Request<pb::FetchHistoryRequest>,
    ) -> Result<Response<pb::FetchHistoryResponse>, Status> {
        let a = self.0.account_of(&req);
        self.0.backend(a).await?.fetch_history(req).await
    }

    type SubscribeStream = ReceiverStream<Result<pb::Delivery, Status>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let a = self.0.account_of(&req);
        let mut generation = self.0.generation.subscribe();
        let mut live = self
            .0
            .backend(a)
            .await?
            .subscribe(req)
            .await?
            .into_inner()
            .into_inner();
        let capacity = self.0.config.limits.subscriber_queue.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let inner = self.0.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // A fork: this subscription's router is gone.
                    _ = generation.changed() => return,
                    item = live.recv() => match item {
                        Some(Ok(d)) => {
                            let out = match a {
                                Some(a) => inner.tamper(a, vec![d]),
                                None => vec![d],
                            };
                            for d in out {
                                if tx.send(Ok(d)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Some(Err(s)) => {
                            let _ = tx.send(Err(s)).await;
                            return;
                        }
                        None => return,
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn prove_heads(
        &self,
        req: Request<pb::ProveHeadsRequest>,
    ) -> Result<Response<pb::ProveHeadsResponse>, Status> {
        let a = self.0.account_of(&req);
        self.0.backend(a).await?.prove_heads(req).await
    }

    async fn list_conversations(
        &self,
        req: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let a = self.0.account_of(&req);
        self.0.backend(a).await?.list_conversations(req).await
    }
}

fn write_bound(
    path: &Path,
    grpc: SocketAddr,
    metrics: Option<SocketAddr>,
) -> Result<(), LiveError> {
    let mut text = format!("grpc = \"{grpc}\"\n");
    if let Some(m) = metrics {
        text.push_str(&format!("metrics = \"{m}\"\n"));
    }
    let tmp: PathBuf = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).map_err(LiveError::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(LiveError::io(format!("rename to {}", path.display())))
}

/// Runs a malicious router with `config` (the real router's configuration
/// file, identity and store) until SIGTERM or Ctrl-C.
pub async fn serve(config: Config, strategy: RouterStrategy) -> Result<(), LiveError> {
    grompi_ops::tls::install_crypto_provider();
    eprintln!(
        "MALICIOUS router ({}): for experiments against the real client only",
        strategy.name()
    );
    let text = std::fs::read_to_string(&config.descriptor).map_err(LiveError::io(format!(
        "read {}",
        config.descriptor.display()
    )))?;
    let descriptor = NetworkDescriptor::parse(&text)
        .map_err(|e| setup(format!("{}: {e}", config.descriptor.display())))?;
    let identity = TlsIdentity::read_from(&config.data_dir, Config::TLS_STEM).map_err(setup)?;
    let metrics = grompi_ops::telemetry::install_metrics(config.metrics_listen).map_err(setup)?;
    let first = start_backend(&config, &descriptor, &identity, &config.database_path()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(LiveError::io(format!("listen on {}", config.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(LiveError::io("local address"))?;
    // A plan left from an earlier run is not replayed.
    let applied = control::read::<Done>(&config.data_dir, control::ATTACK_DONE)
        .map_or(0, |d| d.id)
        .max(control::read::<AttackPlan>(&config.data_dir, control::ATTACK).map_or(0, |p| p.id));
    let max_message = config.limits.max_envelope_bytes.saturating_add(64 * 1024);
    let inner = Arc::new(Inner {
        strategy,
        descriptor,
        identity: identity.clone(),
        backends: RwLock::new(vec![first]),
        group_of: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
        connections: Mutex::new(HashMap::new()),
        tampering: Mutex::new(Tampering::default()),
        prepared: Mutex::new(HashMap::new()),
        puppet: Mutex::new(None),
        generation: watch::channel(0).0,
        applied: Mutex::new(applied),
        config,
    });
    write_bound(&inner.config.bound_path(), bound, metrics)?;
    let server = tonic::transport::Server::builder()
        .tls_config(grompi_ops::tls::server_config(&identity, None))
        .map_err(setup)?
        .add_service(
            RouterServer::new(Front(inner.clone()))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(64 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            grompi_ops::shutdown::signal(),
        );
    let result = tokio::select! {
        r = server => r.map_err(setup),
        e = inner.clone().control_loop() => Err(e),
    };
    inner.stop_all().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_round_trip() {
        for s in RouterStrategy::ALL {
            assert_eq!(s.name().parse::<RouterStrategy>(), Ok(s));
        }
        let e = "equivocate".parse::<RouterStrategy>().unwrap_err();
        assert!(e.contains("fork"), "{e}");
    }

    #[test]
    fn accounts_must_be_32_bytes_of_hex() {
        let ok = parse_accounts(&["ab".repeat(32)]).unwrap();
        assert_eq!(ok.len(), 1);
        assert!(parse_accounts(&["abc".into()]).is_err());
        assert!(parse_accounts(&["zz".repeat(32)]).is_err());
    }
}
