//! The client-facing gRPC service. Each handler parses and bounds its
//! request (signatures included), hands a command to the core task, and
//! turns the answer into a response; Fetch reads storage, ProveHeads calls
//! the order servers. Authenticated calls carry the session token as
//! metadata [`SESSION_METADATA`] (`x-grompi-session`, 64 hex digits).
//!
//! The unauthenticated calls (GetChallenge, Register, SignIn) first take a
//! token from their client address's budget ([`PeerLimiter`], time from
//! this shell's clock), before anything is parsed or sent to the core; the
//! core then applies the cap all unauthenticated calls share. A call over
//! the per-address budget gets `RESOURCE_EXHAUSTED` saying "per-address
//! rate limit".

use crate::core::{Call, Command, Response as CoreResponse, parse_members, parse_submit};
use crate::directory::{parse_register_for, parse_sign_in_for, parse_upload};
use crate::error::RouterError;
use crate::fetch::{FetchBudget, build_history_page, build_page};
use crate::limits::{Limits, PeerLimiter};
use crate::runtime::{CoreMsg, Hub, now_ms};
use crate::store::EnvelopeReader;
use grompi_proto::mac::HeadProof;
use grompi_proto::pb::order_service_client::OrderServiceClient;
use grompi_proto::pb::{self, router_server::Router};
use grompi_proto::{AccountId, ConversationId, Index, ProofNonce};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The metadata key of the session token (defined once, in proto).
pub use grompi_proto::SESSION_METADATA;

/// Settings the service needs besides the core.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Number of order servers.
    pub servers: usize,
    /// Limits the service applies before the core: per-address rate, fetch bytes, request sizes.
    pub limits: Limits,
    /// How long Submit waits for the quorum.
    pub submit_timeout: Duration,
    /// How long to wait for order servers (create, head proofs) and the core.
    pub server_timeout: Duration,
    /// This router's network (from its descriptor): Register and SignIn
    /// signatures must be bound to it.
    pub network: grompi_proto::ids::NetworkBinding,
    /// Whether the older, unbound sign-in signature is accepted too
    /// (`accept_unbound_sign_in` in the configuration).
    pub accept_unbound_sign_in: bool,
}

/// The Router gRPC service.
#[derive(Clone)]
pub struct RouterService {
    core: mpsc::Sender<CoreMsg>,
    hub: Arc<Hub>,
    reader: Arc<dyn EnvelopeReader>,
    order: Vec<OrderServiceClient<Channel>>,
    settings: ServiceSettings,
    peers: Arc<Mutex<PeerLimiter>>,
    fetches: Arc<FetchBudget>,
}

impl std::fmt::Debug for RouterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn session<T>(req: &Request<T>) -> Vec<u8> {
    req.metadata()
        .get(SESSION_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| hex::decode(s.trim()).ok())
        .unwrap_or_default()
}

impl RouterService {
    /// Builds a Fetch or FetchHistory page from storage off the async
    /// threads. Its bytes are reserved against `account`'s and the total
    /// bound on pages in flight until it is built; over a bound the call is
    /// refused at once rather than queued.
    async fn read_page<P, T>(
        &self,
        account: grompi_proto::AccountId,
        plan: P,
        build: fn(&dyn EnvelopeReader, &P, usize) -> Result<T, crate::store::StoreError>,
    ) -> Result<T, Status>
    where
        P: Send + 'static,
        T: Send + 'static,
    {
        let _reservation = self.fetches.reserve(account).map_err(|e| {
            e.count_cap();
            Status::from(e)
        })?;
        let reader = self.reader.clone();
        let max = self.fetches.page_bytes();
        tokio::task::spawn_blocking(move || build(reader.as_ref(), &plan, max))
            .await
            .map_err(|_| Status::internal("the page task failed"))?
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// A service over a running core.
    pub fn new(
        core: mpsc::Sender<CoreMsg>,
        hub: Arc<Hub>,
        reader: Arc<dyn EnvelopeReader>,
        order: Vec<OrderServiceClient<Channel>>,
        settings: ServiceSettings,
    ) -> Self {
        let peers = Arc::new(Mutex::new(PeerLimiter::new(&settings.limits)));
        let fetches = Arc::new(FetchBudget::new(&settings.limits));
        Self {
            core,
            hub,
            reader,
            order,
            settings,
            peers,
            fetches,
        }
    }

    /// Takes a token from the caller's per-address budget for an
    /// unauthenticated call. A request that did not come over TCP has no
    /// address and is only subject to the core's shared cap.
    fn admit_peer<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(peer) = req.remote_addr() else {
            return Ok(());
        };
        // The limiter's state is consistent after every call, so a
        // poisoned lock is still usable.
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.check(peer.ip(), now_ms()).map_err(|e| {
            metrics::counter!("router_peer_rate_limited_total").increment(1);
            tracing::debug!(%peer, "per-address rate limit refused an unauthenticated call");
            Status::from(e)
        })
    }

    async fn ask(
        &self,
        command: Command,
        wait: Duration,
        on_timeout: &str,
    ) -> Result<CoreResponse, Status> {
        let (tx, rx) = oneshot::channel();
        self.core
            .send(CoreMsg::Request(Box::new(command), Some(tx)))
            .await
            .map_err(|_| Status::unavailable("the router is shutting down"))?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r.map_err(Status::from),
            Ok(Err(_)) => Err(Status::unavailable("the router is shutting down")),
            Err(_) => Err(Status::unavailable(on_timeout.to_owned())),
        }
    }

    async fn authed<T>(&self, req: &Request<T>, call: Call) -> Result<CoreResponse, Status> {
        let wait = if matches!(call, Call::Submit(_)) {
            self.settings.submit_timeout
        } else {
            self.settings.server_timeout
        };
        let on_timeout = if matches!(call, Call::Submit(_)) {
            "the envelope was not attested by a quorum of order servers in time; it stays queued, \
             and resubmitting the same envelope is safe (it is never duplicated)"
        } else {
            "order servers did not answer in time; retry"
        };
        self.ask(
            Command::Authed {
                token: session(req),
                call,
            },
            wait,
            on_timeout,
        )
        .await
    }
}

fn unexpected() -> Status {
    Status::internal("unexpected answer from the router core")
}

fn metered<T>(rpc: &'static str, r: Result<T, Status>) -> Result<T, Status> {
    let code = match &r {
        Ok(_) => "ok".to_owned(),
        Err(s) => format!("{:?}", s.code()),
    };
    metrics::counter!("router_rpcs_total", "rpc" => rpc, "code" => code).increment(1);
    r
}

#[tonic::async_trait]
impl Router for RouterService {
    async fn get_challenge(
        &self,
        req: Request<pb::GetChallengeRequest>,
    ) -> Result<Response<pb::GetChallengeResponse>, Status> {
        let r = async {
            self.admit_peer(&req)?;
            match self
                .ask(
                    Command::GetChallenge,
                    self.settings.server_timeout,
                    "router busy; retry",
                )
                .await?
            {
                CoreResponse::Challenge(c) => Ok(Response::new(c)),
                _ => Err(unexpected()),
            }
        }
        .await;
        metered("GetChallenge", r)
    }

    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = async {
            self.admit_peer(&req)?;
            let new = parse_register_for(
                req.get_ref(),
                &self.settings.network,
                self.settings.accept_unbound_sign_in,
            )?;
            match self
                .ask(
                    Command::Register(new),
                    self.settings.server_timeout,
                    "router busy; retry",
                )
                .await?
            {
                CoreResponse::Registered(r) => Ok(Response::new(r)),
                _ => Err(unexpected()),
            }
        }
        .await;
        metered("Register", r)
    }

    async fn sign_in(
        &self,
        req: Request<pb::SignInRequest>,
    ) -> Result<Response<pb::SignInResponse>, Status> {
        let r = async {
            self.admit_peer(&req)?;
            let s = parse_sign_in_for(
                req.get_ref(),
                &self.settings.network,
                self.settings.accept_unbound_sign_in,
            )?;
            match self
                .ask(
                    Command::SignIn(s),
                    self.settings.server_timeout,
                    "router busy; retry",
                )
                .await?
            {
                CoreResponse::SignedIn(r) => Ok(Response::new(r)),
                _ => Err(unexpected()),
            }
        }
        .await;
        metered("SignIn", r)
    }

    async fn upload_keys(
        &self,
        req: Request<pb::UploadKeysRequest>,
    ) -> Result<Response<pb::UploadKeysResponse>, Status> {
        let r = async {
            let (upload, fallback) = parse_upload(req.get_ref())?;
            match self
                .authed(&req, Call::UploadKeys(upload, fallback))
                .await?
            {
                CoreResponse::Uploaded => Ok(Response::new(pb::UploadKeysResponse {})),
                _ => Err(unexpected()),
            }
        }
        .await;
        metered("UploadKeys", r)
    }

    async fn get_key_counts(
        &self,
        req: Request<pb::GetKeyCountsRequest>,
    ) -> Result<Response<pb::GetKeyCountsResponse>, Status> {
        let r = match self.authed(&req, Call::GetKeyCounts).await {
            Ok(CoreResponse::KeyCounts(c)) => Ok(Response::new(c)),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(e),
        };
        metered("GetKeyCounts", r)
    }

    async fn list_conversations(
        &self,
        req: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let r = match self.authed(&req, Call::ListConversations).await {
            Ok(CoreResponse::Conversations(c)) => Ok(Response::new(c)),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(e),
        };
        metered("ListConversations", r)
    }

    async fn get_prekey_bundle(
        &self,
        req: Request<pb::GetPrekeyBundleRequest>,
    ) -> Result<Response<pb::GetPrekeyBundleResponse>, Status> {
        let r = async {
            let target =
                AccountId::parse("account", &req.get_ref().account).map_err(RouterError::from)?;
            match self.authed(&req, Call::GetPrekeyBundle(target)).await? {
                CoreResponse::Bundle(b) => Ok(Response::new(b)),
                _ => Err(unexpected()),
            }
        }
        .await;
        metered("GetPrekeyBundle", r)
    }

    async fn create_conversation(
        &self,
        req: Request<pb::CreateConversationRequest>,
    ) -> Result<Response<pb::CreateConversationResponse>, Status> {
        let r = async {
            let r = req.get_ref();
            let id = ConversationId::parse("conversation_id", &r.conversation_id)
                .map_err(RouterError::from)?;
            let members = parse_members(&r.members, &self.settings.limits)?;
            match self
                .authed(&req, Call::CreateConversation(id, members))
                .await?
            {
                CoreResponse::Created(c) => Ok(Response::new(c)),
                _ => Err(unexpected()),
            }
        }
        .await;
        metered("CreateConversation", r)
    }

    async fn prepare_update(
        &self,
        req: Request<pb::PrepareUpdateRequest>,
    ) -> Result<Response<pb::PrepareUpdateResponse>, Status> {
        let r = async {
            let r = req.get_ref();
            let id = ConversationId::parse("conversation_id", &r.conversation_id)
                .map_err(RouterError::from)?;
            let members = parse_members(&r.members, &self.settings.limits)?;
            match self.authed(&req, Call::PrepareUpdate(id, members)).await? {
                CoreResponse::Prepared(p) => Ok(Response::new(p)),
                _ => Err(unexpected()),
            }
        }
        .await;
        metered("PrepareUpdate", r)
    }

    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let started = std::time::Instant::now();
        let r = async {
            let token = session(&req);
            let s = parse_submit(
                req.into_inner(),
                self.settings.servers,
                &self.settings.limits,
            )?;
            match self
                .ask(
                    Command::Authed {
                        token,
                        call: Call::Submit(s),
                    },
                    self.settings.submit_timeout,
                    "the envelope was not attested by a quorum of order servers in time; it stays \
                     queued, and resubmitting the same envelope is safe (it is never duplicated)",
                )
                .await?
            {
                CoreResponse::Submitted(s) => Ok(Response::new(s)),
                _ => Err(unexpected()),
            }
        }
        .await;
        metrics::histogram!("router_quorum_wait_seconds").record(started.elapsed().as_secs_f64());
        metered("Submit", r)
    }

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let r = async {
            let r = req.get_ref();
            let conversation = ConversationId::parse("conversation_id", &r.conversation_id)
                .map_err(RouterError::from)?;
            let call = Call::Fetch {
                conversation,
                from: Index(r.from_index),
                limit: r.limit,
            };
            let CoreResponse::Fetch(plan) = self.authed(&req, call).await? else {
                return Err(unexpected());
            };
            let account = plan.account;
            Ok(Response::new(
                self.read_page(account, plan, build_page).await?,
            ))
        }
        .await;
        metered("Fetch", r)
    }

    async fn fetch_history(
        &self,
        req: Request<pb::FetchHistoryRequest>,
    ) -> Result<Response<pb::FetchHistoryResponse>, Status> {
        let r = async {
            let r = req.get_ref();
            let conversation = ConversationId::parse("conversation_id", &r.conversation_id)
                .map_err(RouterError::from)?;
            let call = Call::FetchHistory {
                conversation,
                from: Index(r.from_index),
                limit: r.limit,
            };
            let CoreResponse::History(plan) = self.authed(&req, call).await? else {
                return Err(unexpected());
            };
            // Pages of history share the Fetch bounds on bytes in flight.
            let account = plan.account;
            Ok(Response::new(
                self.read_page(account, plan, build_history_page).await?,
            ))
        }
        .await;
        metered("FetchHistory", r)
    }

    type SubscribeStream = ReceiverStream<Result<pb::Delivery, Status>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = match self.authed(&req, Call::Subscribe).await {
            Ok(CoreResponse::Subscribed(account)) => match self.hub.subscribe(account) {
                Ok(s) => Ok(Response::new(s.spawn_stream())),
                Err(e) => {
                    e.count_cap();
                    Err(Status::from(e))
                }
            },
            Ok(_) => Err(unexpected()),
            Err(e) => Err(e),
        };
        metered("Subscribe", r)
    }

    async fn prove_heads(
        &self,
        req: Request<pb::ProveHeadsRequest>,
    ) -> Result<Response<pb::ProveHeadsResponse>, Status> {
        let r = async {
            let r = req.get_ref();
            let conversation = ConversationId::parse("conversation_id", &r.conversation_id)
                .map_err(RouterError::from)?;
            let nonce = ProofNonce::parse("nonce", &r.nonce).map_err(RouterError::from)?;
            let CoreResponse::ProveHeads(plan) = self
                .authed(
                    &req,
                    Call::ProveHeads {
                        conversation,
                        nonce,
                    },
                )
                .await?
            else {
                return Err(unexpected());
            };
            let timeout = self.settings.server_timeout;
            let calls = self.order.iter().enumerate().map(|(i, c)| {
                let mut c = c.clone();
                let request = pb::ProveHeadRequest {
                    conversation_id: plan.conversation.to_vec(),
                    slot: plan.slot.0,
                    nonce: plan.nonce.to_vec(),
                };
                async move {
                    let r = tokio::time::timeout(timeout, c.prove_head(request)).await;
                    let proof = r.ok()?.ok()?.into_inner().proof?;
                    let mut proof = HeadProof::try_from(proof).ok()?;
                    if proof.statement.nonce != plan.nonce
                        || proof.statement.conversation != plan.conversation
                    {
                        return None;
                    }
                    proof.server = u32::try_from(i).ok()?;
                    Some(pb::HeadProof::from(&proof))
                }
            });
            let proofs = futures::future::join_all(calls)
                .await
                .into_iter()
                .flatten()
                .collect();
            Ok(Response::new(pb::ProveHeadsResponse { proofs }))
        }
        .await;
        metered("ProveHeads", r)
    }
}
