//! Sending: envelopes are saved as pending sends before they leave and
//! resubmitted byte for byte until acknowledged; creating a conversation,
//! messages, receipts and member list changes.

use super::store::{self, PendingSend};
use super::{ApiError, Client, Progress, ResumeOutcome, Resumed, entries};
use grompi_client_core::compose::Composed;
use grompi_client_core::content::{Change, Content, MemberEntry, UpdateContent, Visibility};
use grompi_client_core::conversation::{Conversation, Phase};
use grompi_proto::pb;
use grompi_proto::{AccountId, ConversationId, SlotRole, SlotSet};
use std::collections::BTreeMap;

/// Whether a router refusal of a resubmission is final: the router did not
/// store the envelope and never will (a router that stored it answers a
/// resubmission as a success). Anything else (unreachable, overloaded,
/// timed out) leaves the envelope saved for the next attempt.
fn is_final_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied
            | tonic::Code::NotFound
            | tonic::Code::AlreadyExists
            | tonic::Code::OutOfRange
    )
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut b);
    b
}

/// The member list a router request carries: each account and its role.
fn member_specs(roster: &BTreeMap<AccountId, SlotRole>) -> Vec<pb::MemberSpec> {
    roster
        .iter()
        .map(|(a, r)| pb::MemberSpec {
            account: a.to_vec(),
            role: i32::from(r.code()),
        })
        .collect()
}

/// The slot set and member entries a router answered with for `roster`
/// (a new conversation's, or an Update's next epoch's), checked.
fn assigned(
    slots: Option<pb::SlotSet>,
    assignments: &[pb::SlotAssignment],
    roster: &BTreeMap<AccountId, SlotRole>,
    what: &str,
) -> Result<(SlotSet, Vec<MemberEntry>), ApiError> {
    let slots =
        SlotSet::try_from(slots.ok_or_else(|| ApiError::Malformed(format!("{what} (missing)")))?)?;
    let members = entries(&slots, assignments, roster)?;
    Ok((slots, members))
}

impl Client {
    /// Saves everything, and `composed` as a pending send of `id`, in one
    /// transaction: before the envelope leaves, so that it is resubmitted
    /// (never composed again) until the router acknowledges it.
    fn save_pending(
        &mut self,
        id: ConversationId,
        composed: &Composed,
        text: Option<String>,
    ) -> Result<PendingSend, ApiError> {
        use prost::Message as _;
        let header = composed.envelope.header();
        let request = pb::SubmitRequest {
            envelope: Some(pb::Envelope::from(&composed.envelope)),
            submission_tags: composed
                .submission_tags
                .iter()
                .map(|t| t.to_vec())
                .collect(),
        };
        let pending = PendingSend {
            conversation: id.to_hex(),
            request: hex::encode(request.encode_to_vec()),
            envelope_hash: composed.envelope.hash().to_hex(),
            kind: format!("{:?}", header.kind()),
            sequence: header.sequence().0,
            text,
        };
        let record = (
            store::OUTBOX,
            pending.key()?,
            store::to_json(&pending)?.into(),
        );
        self.save_all_with(vec![record])?;
        self.dirty_history.clear();
        self.new_alerts.clear();
        Ok(pending)
    }

    /// The sends saved but not yet acknowledged, of one conversation or of
    /// all, oldest first.
    pub fn pending_sends(&self, id: Option<ConversationId>) -> Result<Vec<PendingSend>, ApiError> {
        let mut all: Vec<(Vec<u8>, PendingSend)> =
            store::list_json::<PendingSend>(&self.store, store::OUTBOX)?;
        if let Some(id) = id {
            all.retain(|(k, _)| k.starts_with(id.as_bytes()));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all.into_iter().map(|(_, p)| p).collect())
    }

    /// Submits a saved envelope (the same bytes every time) and forgets it
    /// once the router acknowledges it.
    async fn submit_pending(&mut self, pending: &PendingSend) -> Result<(), ApiError> {
        use prost::Message as _;
        let bytes = hex::decode(&pending.request)
            .map_err(|_| ApiError::Corrupt("pending send: request".into()))?;
        let request = pb::SubmitRequest::decode(bytes.as_slice())
            .map_err(|e| ApiError::Corrupt(format!("pending send: {e}")))?;
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(request)?;
        let reply = conn
            .raw()
            .submit(req)
            .await
            .map_err(|s| ApiError::router("Submit", s))?
            .into_inner();
        // An acknowledgement names the envelope it acknowledges; one for
        // another envelope acknowledges nothing, and the send stays saved.
        if hex::encode(&reply.envelope_hash) != pending.envelope_hash {
            return Err(ApiError::Malformed(
                "the router acknowledged another envelope than the one submitted".into(),
            ));
        }
        self.store.delete(store::OUTBOX, &pending.key()?)?;
        Ok(())
    }

    /// Resumes every send of `id` that was saved but not acknowledged: one
    /// already accepted in the transcript is forgotten, any other is
    /// resubmitted byte for byte until the router acknowledges it. Runs at
    /// the start of every sync, so every command that talks to the router
    /// resumes first. An error (router unreachable, ...) leaves the send
    /// saved for the next attempt.
    pub async fn resume_pending(&mut self, id: ConversationId) -> Result<Vec<Resumed>, ApiError> {
        let mut out = Vec::new();
        for send in self.pending_sends(Some(id))? {
            let accepted = self.member.conversation(&id).and_then(|c| {
                c.transcript()
                    .entries()
                    .iter()
                    .rev()
                    .find(|e| e.envelope_hash.to_hex() == send.envelope_hash)
                    .map(|e| e.index)
            });
            let outcome = if let Some(index) = accepted {
                self.store.delete(store::OUTBOX, &send.key()?)?;
                ResumeOutcome::AlreadyAccepted(index)
            } else {
                match self.submit_pending(&send).await {
                    Ok(()) => ResumeOutcome::Acknowledged,
                    Err(ApiError::Router { status, .. }) if is_final_refusal(status.code()) => {
                        self.store.delete(store::OUTBOX, &send.key()?)?;
                        ResumeOutcome::Refused(status.message().to_owned())
                    }
                    Err(e) => return Err(e),
                }
            };
            out.push(Resumed {
                conversation: id,
                send,
                outcome,
            });
        }
        Ok(out)
    }

    // ---- Conversations --------------------------------------------------

    /// Creates a group-keyed conversation with `peers` (this account is
    /// its Admin) whose key renews every [`super::DEFAULT_KEY_PERIOD`]
    /// indices, submits its Setup and accepts it. Returns its id.
    pub async fn create_conversation(
        &mut self,
        name: Option<&str>,
        peers: &[AccountId],
    ) -> Result<ConversationId, ApiError> {
        self.create_keyed_conversation(name, peers, Some(super::DEFAULT_KEY_PERIOD))
            .await
    }

    /// Creates a conversation with `peers`: group-keyed with key periods of
    /// `period_length` indices when it is `Some`, pairwise-keyed (one Olm
    /// block per member for every message, the high-assurance mode) when
    /// it is `None`.
    pub async fn create_keyed_conversation(
        &mut self,
        name: Option<&str>,
        peers: &[AccountId],
        period_length: Option<u64>,
    ) -> Result<ConversationId, ApiError> {
        self.create_conversation_with(name, peers, period_length, Visibility::Joined)
            .await
    }

    /// [`Client::create_keyed_conversation`] with a history policy:
    /// `Shared` (group-keyed conversations only) lets members added later
    /// read what was sent before they joined.
    pub async fn create_conversation_with(
        &mut self,
        name: Option<&str>,
        peers: &[AccountId],
        period_length: Option<u64>,
        history: Visibility,
    ) -> Result<ConversationId, ApiError> {
        if history == Visibility::Shared && period_length.is_none() {
            return Err(ApiError::Refused(
                "a shared history needs a group-keyed conversation (not --pairwise)".into(),
            ));
        }
        if period_length == Some(0) {
            return Err(ApiError::Refused(
                "a key period is at least one index long".into(),
            ));
        }
        self.ensure_signed_in().await?;
        if let Some(n) = name
            && self.meta.values().any(|m| m.name.as_deref() == Some(n))
        {
            return Err(ApiError::Refused(format!(
                "a conversation is already named {n:?}"
            )));
        }
        let me = self.account();
        let mut roster = BTreeMap::new();
        roster.insert(me, SlotRole::Admin);
        for p in peers {
            if roster.insert(*p, SlotRole::Member).is_some() {
                return Err(ApiError::Refused("a member is listed twice".into()));
            }
        }
        let id = ConversationId::from_bytes(random32());
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::CreateConversationRequest {
            conversation_id: id.to_vec(),
            members: member_specs(&roster),
        })?;
        let created = conn
            .raw()
            .create_conversation(req)
            .await
            .map_err(|s| ApiError::router("CreateConversation", s))?
            .into_inner();
        let (slots, members) = assigned(created.slots, &created.assignments, &roster, "slot set")?;
        self.ensure_sessions(peers).await?;
        let composed = self.member.create_with_history(
            id,
            slots,
            members,
            period_length,
            history,
            &mut rand::rng(),
        )?;
        self.meta.entry(id).or_default().name = name.map(str::to_owned);
        let pending = self.save_pending(id, &composed, None)?;
        self.submit_pending(&pending).await?;
        self.sync(id).await?;
        Ok(id)
    }

    /// Sends a text message; returns the index it was accepted at, when it
    /// was accepted before this returns. An earlier send of the
    /// conversation still unacknowledged is resubmitted first
    /// ([`Progress::resumed`]); when this fails after the envelope was
    /// saved, [`Client::pending_sends`] lists it and the next sync
    /// resubmits it (call that, not `send` again, to send it exactly once).
    pub async fn send(&mut self, id: ConversationId, text: &str) -> Result<Progress, ApiError> {
        self.send_content(id, Content::Message(text.as_bytes().to_vec()), &[])
            .await
    }

    /// Starts the next key generation of a group-keyed conversation with a
    /// fresh RN1 for every member (Admins only): what a removed member or a
    /// leaked key knew stops opening anything from here on.
    pub async fn rekey(&mut self, id: ConversationId) -> Result<Progress, ApiError> {
        self.send_content(id, Content::Rekey, &[]).await
    }

    /// Sends a receipt for everything accepted so far.
    pub async fn send_receipt(&mut self, id: ConversationId) -> Result<Progress, ApiError> {
        let mut progress = self.sync(id).await?;
        let receipt = self
            .member
            .conversation(&id)
            .and_then(Conversation::receipt)
            .ok_or_else(|| ApiError::Refused("nothing accepted yet".into()))?;
        progress.extend(self.send_content(id, receipt, &[]).await?);
        Ok(progress)
    }

    async fn send_content(
        &mut self,
        id: ConversationId,
        content: Content,
        extra_recipients: &[AccountId],
    ) -> Result<Progress, ApiError> {
        let mut progress = self.sync(id).await?;
        let conv = self
            .member
            .conversation(&id)
            .ok_or_else(|| ApiError::UnknownConversation(id.to_hex()))?;
        match conv.phase() {
            Phase::Active => {}
            Phase::Removed => {
                return Err(ApiError::Refused(
                    "you are no longer a member of this conversation".into(),
                ));
            }
            other => {
                return Err(ApiError::Refused(format!(
                    "the conversation cannot be written to now ({other:?})"
                )));
            }
        }
        let mut peers: Vec<AccountId> = conv.recipients().into_iter().map(|(_, a)| a).collect();
        peers.extend_from_slice(extra_recipients);
        self.ensure_sessions(&peers).await?;
        let text = match &content {
            Content::Message(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        let composed = self.member.compose(&id, content, &mut rand::rng())?;
        // Saved before it leaves, with the envelope itself: the Olm ratchet
        // step and the sequence number are never reused after a crash, and
        // a send whose acknowledgement was lost is resubmitted as it is
        // (never composed again) by the next command.
        let pending = self.save_pending(id, &composed, text)?;
        self.submit_pending(&pending).await?;
        // Acknowledged: the send succeeded even if this sync does not (the
        // next one shows the index).
        if let Ok(p) = self.sync(id).await {
            progress.extend(p);
        }
        Ok(progress)
    }

    /// Changes the member list: `Add`, `Remove`, `Leave` or `SetRole`.
    pub async fn update_members(
        &mut self,
        id: ConversationId,
        change: Change,
    ) -> Result<Progress, ApiError> {
        self.update_members_with(id, change, None).await
    }

    /// [`Client::update_members`] stating the next epoch's history policy
    /// (`None`: the conversation's current one).
    pub(super) async fn update_members_with(
        &mut self,
        id: ConversationId,
        change: Change,
        history: Option<Visibility>,
    ) -> Result<Progress, ApiError> {
        let mut progress = self.sync(id).await?;
        let me = self.account();
        let conv = self
            .member
            .conversation(&id)
            .ok_or_else(|| ApiError::UnknownConversation(id.to_hex()))?;
        let history = history.unwrap_or_else(|| conv.history_visibility());
        if history == Visibility::Shared && !conv.is_group_keyed() {
            return Err(ApiError::Refused(
                "a pairwise-keyed conversation cannot share its history: it has no group key"
                    .into(),
            ));
        }
        let membership = conv
            .membership()
            .ok_or_else(|| ApiError::Refused("the conversation is not established yet".into()))?;
        let next = membership
            .roster_after(&me, &change)
            .map_err(|m| ApiError::Refused(m.to_string()))?;
        let added: Vec<AccountId> = next
            .keys()
            .filter(|a| membership.role(a).is_none())
            .copied()
            .collect();
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::PrepareUpdateRequest {
            conversation_id: id.to_vec(),
            members: member_specs(&next),
        })?;
        let prepared = conn
            .raw()
            .prepare_update(req)
            .await
            .map_err(|s| ApiError::router("PrepareUpdate", s))?
            .into_inner();
        let (next_slots, next_members) = assigned(
            prepared.slots,
            &prepared.assignments,
            &next,
            "next slot set",
        )?;
        let content = Content::Update(UpdateContent {
            change,
            next_slots,
            next_members,
            history,
        });
        progress.extend(self.send_content(id, content, &added).await?);
        Ok(progress)
    }
}
