//! Malicious order servers over real gRPC: the real order server (same key,
//! storage, mutual TLS and router pinning) with its answers changed by a
//! strategy, so attacks run against the real router and the real client.
//!
//! | strategy | what it does | what an honest member sees |
//! |---|---|---|
//! | `forge-tags` | flips a bit in every tag it returns | tags that do not verify: `BadAttestation`; at t = N nothing is accepted |
//! | `withhold-tags` | answers every Attest with UNAVAILABLE | at t = N a stall; at t < N quorum-attested only |
//! | `lie-heads` | head proofs over a head it never attested, correctly MACed | a head proof that contradicts the transcript |
//!
//! Equivocation needs a router that presents two branches; the
//! deterministic simulator covers it (see `docs/SIMULATOR.md`).

use grompi_order_server::service::OrderGrpc;
use grompi_proto::mac::{HeadProof, HeadProofStatement};
use grompi_proto::pb::{self, order_service_server::OrderService};
use grompi_proto::{ConversationId, Epoch, OrderServerSecret, SlotIndex, SlotSet};
use std::collections::HashMap;
use std::sync::Mutex;
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
}

impl EvilStrategy {
    /// Every strategy.
    pub const ALL: [EvilStrategy; 3] = [Self::ForgeTags, Self::WithholdTags, Self::LieHeads];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ForgeTags => "forge-tags",
            Self::WithholdTags => "withhold-tags",
            Self::LieHeads => "lie-heads",
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
pub struct EvilOrder {
    inner: OrderGrpc,
    strategy: EvilStrategy,
    secret: OrderServerSecret,
    /// Slot sets seen, per conversation and epoch (to MAC lies).
    slot_sets: Mutex<HashMap<(ConversationId, u64), SlotSet>>,
}

impl EvilOrder {
    /// Wraps the real service; `secret` is the server's own key.
    pub fn new(inner: OrderGrpc, strategy: EvilStrategy, secret: OrderServerSecret) -> Self {
        Self {
            inner,
            strategy,
            secret,
            slot_sets: Mutex::new(HashMap::new()),
        }
    }

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
        self.remember(&r.conversation_id, 0, r.slots.as_ref());
        self.inner.open_conversation(request).await
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

    async fn prove_head(
        &self,
        request: Request<pb::ProveHeadRequest>,
    ) -> Result<Response<pb::ProveHeadResponse>, Status> {
        let slot = SlotIndex(request.get_ref().slot);
        let mut response = self.inner.prove_head(request).await?;
        if self.strategy != EvilStrategy::LieHeads {
            return Ok(response);
        }
        let Some(Ok(mut proof)) = response.get_ref().proof.clone().map(HeadProof::try_from) else {
            return Ok(response);
        };
        let key = self
            .slot_sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(proof.statement.conversation, proof.statement.epoch.0))
            .and_then(|set| set.get(slot).map(|e| e.key));
        let Some(Ok(keys)) = key.map(|k| self.secret.mac_keys(&k)) else {
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
        self.inner.server_info(request).await
    }
}

/// Runs the real order server with `config`, its service wrapped by
/// `strategy`, until SIGTERM or Ctrl-C.
pub async fn serve(
    config: grompi_order_server::config::Config,
    strategy: EvilStrategy,
) -> Result<(), String> {
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

fn banner(strategy: EvilStrategy) {
    eprintln!(
        "MALICIOUS order server ({}): for experiments against the real client only",
        strategy.name()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_round_trip_and_unknown_ones_are_named() {
        for s in EvilStrategy::ALL {
            assert_eq!(s.name().parse::<EvilStrategy>(), Ok(s));
        }
        let e = "equivocate".parse::<EvilStrategy>().unwrap_err();
        assert!(e.contains("forge-tags"), "{e}");
    }

    #[test]
    fn flipped_tags_differ_in_one_bit() {
        let mut t = vec![vec![0u8; 32], vec![]];
        flip(&mut t);
        assert_eq!(t[0][0], 1);
        assert!(t[1].is_empty());
    }
}
