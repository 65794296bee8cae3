//! The gRPC `OrderService`: parses and bounds every request, checks that
//! the caller is the pinned router, and hands writes to the group
//! [`Committer`]. Whole-request problems get a gRPC status; problems with
//! one item of an Attest batch get a per-item refusal.
//!
//! | problem | answer |
//! |---|---|
//! | no client certificate | `UNAUTHENTICATED` |
//! | a client certificate other than the pinned router's | `PERMISSION_DENIED` |
//! | a request that does not parse | `INVALID_ARGUMENT` |
//! | an Attest item that does not parse | refusal `MALFORMED` |
//! | more items, conversations or slots than configured | `RESOURCE_EXHAUSTED` |
//! | OpenConversation of an id ever seen | `ALREADY_EXISTS` |
//! | ProveHead of an unknown conversation | `NOT_FOUND` |
//! | storage failure | `UNAVAILABLE` (the server stops writing) |

use crate::committer::{CommitError, Committer, Queued};
use crate::core::OrderCore;
use crate::redb_store::{RedbRead, RedbStore};
use crate::refusal::Refusal;
use crate::request::AttestRequest;
use crate::telemetry;
use grompi_proto::pb::{self, order_service_server::OrderService};
use grompi_proto::{
    ConversationId, Index, Misbehaviour, ProofNonce, SlotIndex, SlotSet, WireError,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

/// The gRPC order service: it hands each request to the core and
/// commits through the group committer, answering only the pinned router
/// when one is configured.
pub struct OrderGrpc {
    core: Arc<OrderCore>,
    store: Arc<RedbStore>,
    committer: Committer,
    pinned_router: Option<Vec<u8>>,
}

impl OrderGrpc {
    /// A service over `core` and `store`, writing through `committer`.
    /// `pinned_router` is the DER of the only client certificate accepted;
    /// `None` turns the check off (only for tests without TLS).
    pub fn new(
        core: Arc<OrderCore>,
        store: Arc<RedbStore>,
        committer: Committer,
        pinned_router: Option<Vec<u8>>,
    ) -> Self {
        Self {
            core,
            store,
            committer,
            pinned_router,
        }
    }

    fn authorize<T>(&self, rpc: &'static str, request: &Request<T>) -> Result<(), Status> {
        let Some(pinned) = &self.pinned_router else {
            return Ok(());
        };
        let certs = request.peer_certs();
        let result = match certs.as_deref() {
            None => Err(Status::unauthenticated(
                "a client certificate is required (mutual TLS)",
            )),
            Some(c) if ops::tls::is_pinned_peer(Some(c), pinned) => Ok(()),
            Some(_) => Err(Status::permission_denied(
                "the client certificate is not the pinned router certificate",
            )),
        };
        result.inspect_err(|s| reject(rpc, s))
    }
}

use grompi_ops as ops;

fn reject(rpc: &'static str, status: &Status) {
    telemetry::rejected(rpc, status);
    tracing::info!(rpc, code = ?status.code(), message = status.message(), "rejected a request");
}

/// Most requests of one attest stream queued or awaiting their answer.
const STREAM_PIPELINE: usize = 64;

/// Bounds an Attest request and parses its items (an item that does not
/// parse becomes a `MALFORMED` refusal, not an error for the whole batch).
fn parse_attest(
    rpc: &'static str,
    core: &OrderCore,
    request: pb::AttestRequest,
) -> Result<Vec<crate::committer::AttestItemInput>, Status> {
    let items = request.items;
    let limits = core.limits();
    if items.is_empty() {
        let s = Status::invalid_argument("an Attest request needs at least one item");
        reject(rpc, &s);
        return Err(s);
    }
    if items.len() > limits.max_batch_items {
        let s = Status::resource_exhausted(format!(
            "{} items in one request, more than this server's limit of {}",
            items.len(),
            limits.max_batch_items
        ));
        reject(rpc, &s);
        return Err(s);
    }
    let conversations: HashSet<&[u8]> = items
        .iter()
        .filter_map(|i| i.envelope.as_ref()?.header.as_ref())
        .map(|h| h.conversation_id.as_slice())
        .collect();
    if conversations.len() > limits.max_batch_conversations {
        let s = Status::resource_exhausted(format!(
            "{} conversations in one request, more than this server's limit of {}",
            conversations.len(),
            limits.max_batch_conversations
        ));
        reject(rpc, &s);
        return Err(s);
    }
    Ok(items
        .into_iter()
        .map(|item| {
            AttestRequest::try_from(item).map_err(|e| Refusal {
                reason: Misbehaviour::Malformed(e),
                next_index: Index(0),
            })
        })
        .collect())
}

fn attest_response(results: &crate::committer::AttestAnswer) -> pb::AttestResponse {
    pb::AttestResponse {
        results: results
            .iter()
            .map(|r| match r {
                Ok(a) => pb::AttestResult {
                    outcome: Some(pb::attest_result::Outcome::Attested(
                        (&a.attestation).into(),
                    )),
                    log_index: a.log_index,
                },
                Err(refusal) => pb::AttestResult {
                    outcome: Some(pb::attest_result::Outcome::Refused(refusal.into())),
                    log_index: None,
                },
            })
            .collect(),
    }
}

fn invalid(rpc: &'static str, e: &WireError) -> Status {
    let s = Status::invalid_argument(e.to_string());
    reject(rpc, &s);
    s
}

fn commit_status(rpc: &'static str, e: &CommitError) -> Status {
    let s = Status::unavailable(e.to_string());
    reject(rpc, &s);
    s
}

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    async fn open_conversation(
        &self,
        request: Request<pb::OpenConversationRequest>,
    ) -> Result<Response<pb::OpenConversationResponse>, Status> {
        const RPC: &str = "OpenConversation";
        self.authorize(RPC, &request)?;
        let r = request.into_inner();
        let conversation = ConversationId::parse("conversation_id", &r.conversation_id)
            .map_err(|e| invalid(RPC, &e))?;
        let slots = r
            .slots
            .ok_or(WireError::MissingField("slots"))
            .and_then(SlotSet::try_from)
            .map_err(|e| match e {
                WireError::TooMany { max, got, .. } => {
                    let s = Status::resource_exhausted(format!(
                        "the slot set has {got} slots, more than the protocol limit of {max}"
                    ));
                    reject(RPC, &s);
                    s
                }
                e => invalid(RPC, &e),
            })?;
        match self.committer.open(conversation, slots).await {
            Ok(Ok(head)) => {
                tracing::debug!(%conversation, "opened a conversation");
                Ok(Response::new(pb::OpenConversationResponse {
                    genesis_head: head.to_vec(),
                }))
            }
            Ok(Err(m)) => {
                let s = status_of(&m);
                reject(RPC, &s);
                Err(s)
            }
            Err(e) => Err(commit_status(RPC, &e)),
        }
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        const RPC: &str = "Attest";
        self.authorize(RPC, &request)?;
        let parsed = parse_attest(RPC, &self.core, request.into_inner())?;
        let results = self
            .committer
            .attest(parsed)
            .await
            .map_err(|e| commit_status(RPC, &e))?;
        Ok(Response::new(attest_response(&results)))
    }

    type AttestStreamStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::AttestResponse, Status>> + Send + 'static>,
    >;

    async fn attest_stream(
        &self,
        request: Request<tonic::Streaming<pb::AttestRequest>>,
    ) -> Result<Response<Self::AttestStreamStream>, Status> {
        const RPC: &str = "AttestStream";
        self.authorize(RPC, &request)?;
        let mut incoming = request.into_inner();
        let core = Arc::clone(&self.core);
        let committer = self.committer.clone();
        // Requests are queued to the committer in stream order as they
        // arrive; the response stream itself waits for their commits in the
        // same order (no task in between: the writer's completion wakes
        // the connection that sends the answer). The queue is bounded: a
        // caller that sends faster than the server commits waits (HTTP/2
        // flow control). The stream ends after the first error.
        let (queued_tx, queued_rx) =
            mpsc::channel::<(Instant, Result<Queued, Status>)>(STREAM_PIPELINE);
        tokio::spawn(async move {
            loop {
                let request = match incoming.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(s) => {
                        tracing::debug!(code = ?s.code(), message = s.message(), "attest stream ended by the caller");
                        break;
                    }
                };
                let received = Instant::now();
                let queued = match parse_attest(RPC, &core, request) {
                    Ok(items) => committer
                        .queue_attest(items)
                        .await
                        .map_err(|e| commit_status(RPC, &e)),
                    Err(s) => Err(s),
                };
                let end = queued.is_err();
                if queued_tx.send((received, queued)).await.is_err() || end {
                    break;
                }
            }
        });
        let answers = futures::stream::unfold((queued_rx, false), |(mut rx, ended)| async move {
            if ended {
                return None;
            }
            let (received, queued) = rx.recv().await?;
            let answer = match queued {
                Ok(q) => q
                    .answer()
                    .await
                    .map(|r| attest_response(&r))
                    .map_err(|e| commit_status(RPC, &e)),
                Err(s) => Err(s),
            };
            metrics::histogram!(telemetry::ATTEST_REQUEST_SECONDS)
                .record(received.elapsed().as_secs_f64());
            let end = answer.is_err();
            Some((answer, (rx, end)))
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn prove_head(
        &self,
        request: Request<pb::ProveHeadRequest>,
    ) -> Result<Response<pb::ProveHeadResponse>, Status> {
        const RPC: &str = "ProveHead";
        self.authorize(RPC, &request)?;
        let r = request.into_inner();
        let conversation = ConversationId::parse("conversation_id", &r.conversation_id)
            .map_err(|e| invalid(RPC, &e))?;
        let nonce = ProofNonce::parse("nonce", &r.nonce).map_err(|e| invalid(RPC, &e))?;
        let core = Arc::clone(&self.core);
        let store = Arc::clone(&self.store);
        let outcome = tokio::task::spawn_blocking(move || {
            let txn = store.begin_read()?;
            let read = RedbRead::open(&txn)?;
            core.prove_head(&read, &conversation, SlotIndex(r.slot), nonce)
        })
        .await
        .map_err(|e| Status::internal(format!("the head proof task failed: {e}")))?;
        match outcome {
            Ok(Ok(proof)) => Ok(Response::new(pb::ProveHeadResponse {
                proof: Some((&proof).into()),
            })),
            Ok(Err(m)) => {
                let s = status_of(&m);
                reject(RPC, &s);
                Err(s)
            }
            Err(e) => {
                let s = Status::unavailable(format!("storage failure: {e}"));
                reject(RPC, &s);
                Err(s)
            }
        }
    }

    async fn server_info(
        &self,
        request: Request<pb::ServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfoResponse>, Status> {
        self.authorize("ServerInfo", &request)?;
        let limits = self.core.limits();
        Ok(Response::new(pb::ServerInfoResponse {
            public_key: self.core.public_key().to_vec(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            max_slots: u32::try_from(limits.max_slots).unwrap_or(u32::MAX),
            max_batch: u32::try_from(limits.max_batch_items).unwrap_or(u32::MAX),
        }))
    }
}

/// The gRPC status of a request refused as a whole (OpenConversation,
/// ProveHead), from the same wire code an attest item's refusal carries
/// ([`crate::refusal::reason_code`], which names every reason); the match
/// names every code, so a new one needs a decision here.
pub fn status_of(m: &Misbehaviour) -> Status {
    use grompi_proto::pb::RefusalReason as R;
    let message = m.to_string();
    if *m == Misbehaviour::ConversationExists {
        return Status::already_exists(message);
    }
    match crate::refusal::reason_code(m) {
        R::UnknownConversation => Status::not_found(message),
        R::LimitExceeded => Status::resource_exhausted(message),
        R::Unspecified
        | R::Malformed
        | R::WrongEpoch
        | R::UnknownSlot
        | R::BadSubmissionTag
        | R::SequenceNotIncreasing
        | R::IndexMismatch
        | R::HeadMismatch
        | R::Equivocation
        | R::NotAuthorized
        | R::SlotSetMismatch
        | R::UnexpectedKind => Status::invalid_argument(message),
    }
}
