//! Head proofs: asking every order server how far it attested a
//! conversation and checking the answers.

use super::{ApiError, Client, Progress};
use grompi_client_core::conversation::Phase;
use grompi_client_core::head_proof::HeadProofOutcome;
use grompi_proto::pb;
use grompi_proto::{ConversationId, ProofNonce};

impl Client {
    /// Asks every order server, through the router and with a fresh
    /// nonce, how far it has attested the conversation, and checks each
    /// answer against the transcript (forks and withholding become
    /// alerts). Saves.
    pub async fn prove_heads(
        &mut self,
        id: ConversationId,
    ) -> Result<(Vec<HeadProofOutcome>, Progress), ApiError> {
        let mut progress = self.sync(id).await?;
        let conv = self
            .member
            .conversation_mut(&id)
            .ok_or_else(|| ApiError::UnknownConversation(id.to_hex()))?;
        if conv.phase() != &Phase::Active {
            return Ok((Vec::new(), progress));
        }
        let nonce: ProofNonce = conv.head_proof_nonce(&mut rand::rng());
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::ProveHeadsRequest {
            conversation_id: id.to_vec(),
            nonce: nonce.to_vec(),
        })?;
        let proofs = conn
            .raw()
            .prove_heads(req)
            .await
            .map_err(|s| ApiError::router("ProveHeads", s))?
            .into_inner()
            .proofs;
        // Every answer is checked, and a pinned server without one is
        // reported: nothing the router returns (or leaves out) is dropped.
        let outcomes = self
            .member
            .conversation_mut(&id)
            .map(|c| c.check_head_proof_answers(proofs))
            .unwrap_or_default();
        progress.extend(self.collect());
        self.save()?;
        Ok((outcomes, progress))
    }
}
