//! Receiving: fetching and subscribing to deliveries, handing them to the
//! core, and recording the events and alerts it raises.

use super::history;
use super::store::{self, AlertRecord};
use super::{ApiError, Client, FETCH_LIMIT, Progress, Record};
use grompi_client_core::conversation::{Conversation, ConversationConfig, Phase};
use grompi_proto::pb;
use grompi_proto::{ConversationId, Index};

impl Client {
    /// Takes in one delivery (from a subscription) and saves.
    pub fn receive(&mut self, delivery: pb::Delivery) -> Result<Progress, ApiError> {
        self.member.receive(delivery);
        let p = self.collect();
        self.save()?;
        Ok(p)
    }

    /// Conversations with deliveries buffered behind a missing index.
    pub fn gaps(&self) -> Vec<ConversationId> {
        self.member
            .conversations()
            .iter()
            .filter(|(_, c)| !c.missing_indices(1).is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Takes events and alerts out of the core into history and alert
    /// records.
    pub(super) fn collect(&mut self) -> Progress {
        let events = self.member.drain_events();
        let alerts = self.member.drain_alerts();
        for (id, e) in &events {
            let index = history::event_index(e).0;
            let existing = self.dirty_history.remove(&(*id, index)).or_else(|| {
                store::get_json::<Record>(
                    &self.store,
                    store::HISTORY,
                    &store::history_key(id.as_bytes(), index),
                )
                .ok()
                .flatten()
            });
            if let Some(mut r) = history::apply(existing, e) {
                if self.profile.thin {
                    // A thin terminal keeps no text: history is read from
                    // the router when it is shown.
                    r.text = None;
                }
                self.dirty_history.insert((*id, index), r);
            }
        }
        // Indices that could not be opened.
        for (id, c) in self.member.conversations() {
            for i in c.undecryptable() {
                if let Some(r) = self.dirty_history.get_mut(&(*id, i.0)) {
                    r.undecryptable = true;
                }
            }
        }
        for a in &alerts {
            self.record_alert(a);
        }
        Progress {
            events,
            alerts,
            resumed: Vec::new(),
        }
    }

    /// Queues `a` to be stored as an alert record with the next save.
    pub(super) fn record_alert(&mut self, a: &grompi_client_core::alert::Alert) {
        self.new_alerts.push(AlertRecord {
            conversation: a.conversation.to_hex(),
            index: a.index.map(|i| i.0),
            server: a.server,
            text: a.to_string(),
        });
        self.profile.next_alert = self.profile.next_alert.saturating_add(1);
    }

    /// Where to fetch a conversation from: its next index, or with
    /// `rewind` its first index not fully attested (late tags upgrade it).
    fn fetch_from(&self, id: &ConversationId, rewind: bool) -> Option<Index> {
        let Some(c) = self.member.conversation(id) else {
            return Some(Index(0));
        };
        match c.phase() {
            Phase::Removed | Phase::Halted(_) => return None,
            Phase::AwaitingSetup | Phase::AwaitingJoin => return Some(Index(0)),
            Phase::Active if !rewind => return Some(c.next_expected()),
            Phase::Active => {}
        }
        let config = ConversationConfig::from_descriptor(&self.descriptor);
        let first_partial = c
            .transcript()
            .entries()
            .iter()
            .find(|e| {
                config.status(e.attested_by)
                    != grompi_client_core::transcript::AttestationStatus::Full
            })
            .map(|e| e.index);
        Some(first_partial.unwrap_or(c.next_expected()))
    }

    /// The conversations the router says this account holds a slot in
    /// (what it claims is checked when each is fetched and accepted).
    pub async fn remote_conversations(&mut self) -> Result<Vec<pb::ListedConversation>, ApiError> {
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::ListConversationsRequest {})?;
        Ok(conn
            .raw()
            .list_conversations(req)
            .await
            .map_err(|s| ApiError::router("ListConversations", s))?
            .into_inner()
            .conversations)
    }

    /// Fetches and accepts everything the router holds for a conversation
    /// from the next index on (a conversation not known yet is joined:
    /// fetched from its start). Saves.
    pub async fn sync(&mut self, id: ConversationId) -> Result<Progress, ApiError> {
        self.ensure_signed_in().await?;
        let mut progress = Progress {
            resumed: self.resume_pending(id).await?,
            ..Progress::default()
        };
        let mut rounds = 0u32;
        // A member added late scans forward for the Update that adds it:
        // pages before it hold nothing for this member.
        let mut scan: Option<Index> = None;
        while let Some(start) = self.fetch_from(&id, rounds == 0) {
            rounds += 1;
            let from = scan.filter(|s| *s > start).unwrap_or(start);
            let before = self
                .member
                .conversation(&id)
                .map(Conversation::next_expected);
            self.ensure_signed_in().await?;
            let conn = self.signed()?;
            let req = conn.authed(pb::FetchRequest {
                conversation_id: id.to_vec(),
                from_index: from.0,
                limit: FETCH_LIMIT,
            })?;
            let page = conn
                .raw()
                .fetch(req)
                .await
                .map_err(|s| ApiError::router("Fetch", s))?
                .into_inner();
            let next = Index(page.next_index);
            if page.deliveries.is_empty() && next <= from {
                break;
            }
            for d in page.deliveries {
                self.member.receive(d);
            }
            progress.extend(self.collect());
            let conv = self.member.conversation(&id);
            let after = conv.map(Conversation::next_expected);
            // Unknown until a delivery for this member arrives.
            let joining = conv.is_none_or(|c| c.phase() == &Phase::AwaitingJoin);
            if joining && next > from && rounds <= 1_000_000 {
                scan = Some(next);
                continue;
            }
            if after == before || rounds > 1_000_000 {
                break;
            }
        }
        if self.member.conversation(&id).is_none() {
            return Err(ApiError::UnknownConversation(id.to_hex()));
        }
        // The router served later indices but not the next one, even when
        // asked from it: the index was dropped. (The router delivers in
        // order, so an honest one never leaves such a hole.)
        // Likewise when it holds the next index (or later ones) but cannot
        // accept it: tags missing after a full fetch are withheld, not in
        // flight, and the next head proofs say by whom.
        if let Some(c) = self.member.conversation_mut(&id)
            && c.stuck()
        {
            c.report_stall();
            progress.extend(self.collect());
        }
        self.save()?;
        Ok(progress)
    }

    /// Syncs every conversation this account knows, and joins those the
    /// router lists that it does not know yet.
    pub async fn sync_all(&mut self) -> Result<Progress, ApiError> {
        let mut progress = Progress::default();
        let mut ids: Vec<ConversationId> = self.member.conversations().keys().copied().collect();
        // Conversations this account was invited to or added to while away.
        let known = ids.len();
        for listed in self.remote_conversations().await? {
            if let Ok(id) = ConversationId::parse("conversation_id", &listed.conversation_id)
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        for (n, id) in ids.into_iter().enumerate() {
            match self.sync(id).await {
                Ok(p) => progress.extend(p),
                // A listed id that holds nothing for this account (the
                // router's list is not trusted) must not stop the others.
                Err(ApiError::UnknownConversation(_)) if n >= known => {}
                Err(e) => return Err(e),
            }
        }
        Ok(progress)
    }

    /// Opens the live stream of deliveries for every conversation of this
    /// account (pass each one to [`Client::receive`]).
    pub async fn subscribe(&mut self) -> Result<tonic::Streaming<pb::Delivery>, ApiError> {
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::SubscribeRequest {})?;
        Ok(conn
            .raw()
            .subscribe(req)
            .await
            .map_err(|s| ApiError::router("Subscribe", s))?
            .into_inner())
    }
}
