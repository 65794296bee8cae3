//! A conversation's shared history (`docs/PROTOCOL.md` section 4.6): its
//! policy, and reading what was sent before this member joined from the
//! router's store, verified from the genesis by the core's
//! [`HistoryVerifier`] against the head this member accepted.
//!
//! Nothing the router returns is shown unless the whole chain verifies: a
//! dropped, altered, reordered or added envelope is
//! [`Misbehaviour::HistoryMismatch`], recorded as an alert, and the call
//! fails with [`ApiError::History`].

use super::history::{Record, Status, describe_change, kind_name};
use super::store;
use super::{ApiError, Client, Progress};
use grompi_client_core::alert::Alert;
use grompi_client_core::content::{Change, Content, Visibility};
use grompi_client_core::history::{HistoryEntry, HistoryItem, HistoryVerifier, Unread};
use grompi_proto::{ConversationId, Index, Misbehaviour};

/// Envelopes asked for per history page.
pub const HISTORY_PAGE: u32 = 256;

impl Client {
    /// Whether this account runs as a thin terminal: no message text in
    /// its store, history fetched and verified whenever it is shown.
    pub fn thin(&self) -> bool {
        self.profile.thin
    }

    /// Makes this account a thin terminal (or not). Text already stored
    /// is removed when turning it on.
    pub fn set_thin(&mut self, thin: bool) -> Result<(), ApiError> {
        self.profile.thin = thin;
        if thin {
            let records = store::list_json::<Record>(&self.store, store::HISTORY)?;
            for (key, mut r) in records {
                if r.text.is_some() {
                    r.text = None;
                    self.store.put(store::HISTORY, &key, &store::to_json(&r)?)?;
                }
            }
        }
        self.save()
    }

    /// Changes who reads the conversation's history from the next epoch on
    /// (Admins only): an Update that changes nothing else.
    pub async fn set_history(
        &mut self,
        id: ConversationId,
        history: Visibility,
    ) -> Result<Progress, ApiError> {
        self.update_members_with(id, Change::SetHistory, Some(history))
            .await
    }

    /// The whole history of a conversation, from index 0 to the last index
    /// this member accepted, fetched from the router and verified from the
    /// genesis against the head this member accepted there. Indices before
    /// this member joined have [`Status::BeforeJoin`]; what the history
    /// keys do not reach (sent while the policy was `joined`, or before a
    /// member joined a conversation that never shared) has no text and a
    /// note that says why. Nothing is stored.
    pub async fn read_history(&mut self, id: ConversationId) -> Result<Vec<Record>, ApiError> {
        self.sync(id).await?;
        let conv = self
            .member
            .conversation(&id)
            .ok_or_else(|| ApiError::UnknownConversation(id.to_hex()))?;
        let Some(anchor) = conv.history_anchor() else {
            return Ok(Vec::new());
        };
        let first_own = anchor.first_own;
        let mut verifier = HistoryVerifier::new(anchor);
        let mut pages = 0u64;
        while !verifier.is_complete() {
            let from = verifier.next_index();
            let page = self.history_page(id, from).await?;
            pages += 1;
            if from == Index(0) && page.first_stored > 0 {
                // The router's retention removed the oldest envelopes: the
                // history starts at the first it keeps, still verified.
                verifier.router_keeps_from(Index(page.first_stored));
            }
            let empty = page.envelopes.is_empty();
            for e in page.envelopes {
                let item = HistoryItem::try_from(e)
                    .map_err(|e| ApiError::Malformed(format!("history envelope: {e}")))?;
                if let Err(m) = verifier.push(item) {
                    return Err(self.history_failed(id, m));
                }
            }
            if empty || page.next_index <= from.0 || pages > 1 << 24 {
                break;
            }
        }
        let entries = match verifier.finish() {
            Ok(e) => e,
            Err(m) => return Err(self.history_failed(id, m)),
        };
        let conv = self.member.conversation(&id);
        Ok(entries
            .iter()
            .map(|e| {
                let status = if e.index < first_own {
                    Status::BeforeJoin
                } else {
                    conv.map_or(Status::BeforeJoin, |c| c.status(e.index).into())
                };
                record_of(e, status)
            })
            .collect())
    }

    /// Reads the history before this member joined, if the conversation
    /// shares it and it is not stored yet, and stores it (text included,
    /// unless this is a thin terminal). Returns how many indices it added.
    pub async fn load_history_before_join(
        &mut self,
        id: ConversationId,
    ) -> Result<usize, ApiError> {
        let first = self
            .member
            .conversation(&id)
            .map(|c| c.transcript().first())
            .ok_or_else(|| ApiError::UnknownConversation(id.to_hex()))?;
        let shares = self
            .member
            .conversation(&id)
            .and_then(|c| c.history_anchor())
            .is_some_and(|a| !a.keys.is_empty());
        if first == Index(0) || self.thin() || !shares {
            return Ok(0);
        }
        // Loaded before when the index just before the join is stored
        // (index 0 may be gone from a router that keeps only recent ones).
        let stored = store::get_json::<Record>(
            &self.store,
            store::HISTORY,
            &store::history_key(id.as_bytes(), first.0.saturating_sub(1)),
        )?;
        if stored.is_some() {
            return Ok(0);
        }
        let records = self.read_history(id).await?;
        let before: Vec<Record> = records.into_iter().filter(|r| r.index < first.0).collect();
        let mut writes = Vec::with_capacity(before.len());
        for r in &before {
            writes.push((
                store::HISTORY,
                store::history_key(id.as_bytes(), r.index),
                store::to_json(r)?,
            ));
        }
        let refs: Vec<(&str, &[u8], &[u8])> = writes
            .iter()
            .map(|(ns, k, v)| (*ns, k.as_slice(), v.as_slice()))
            .collect();
        self.store.put_all(&refs)?;
        Ok(before.len())
    }

    /// Records a history mismatch as an alert and turns it into the error.
    fn history_failed(&mut self, id: ConversationId, m: Misbehaviour) -> ApiError {
        self.record_alert(&Alert {
            conversation: id,
            kind: m.clone(),
            index: None,
            server: None,
        });
        if let Err(e) = self.save() {
            return e;
        }
        ApiError::History(m)
    }
}

/// The record of one verified history entry.
fn record_of(e: &HistoryEntry, status: Status) -> Record {
    let (text, note, undecryptable) = match &e.content {
        Ok(Content::Message(m)) => (Some(String::from_utf8_lossy(m).into_owned()), None, false),
        Ok(Content::Setup(s)) => (
            None,
            Some(format!(
                "{}; history {}",
                describe_change(None, true),
                s.history
            )),
            false,
        ),
        Ok(Content::Update(u)) => (
            None,
            Some(format!(
                "{}; history {}",
                describe_change(Some(&u.change), true),
                u.history
            )),
            false,
        ),
        Ok(Content::Rekey) => (None, Some("new group key".to_owned()), false),
        Ok(Content::Receipt(r)) => (
            None,
            Some(format!("processed through #{}", r.through.0)),
            false,
        ),
        Ok(Content::Noise) | Err(Unread::Noise) => (None, None, false),
        Err(Unread::NotShared) => (
            None,
            Some("not shared with members added later".to_owned()),
            false,
        ),
        Err(Unread::NoKey) => (
            None,
            Some("sealed before the history was last closed to members added later".to_owned()),
            false,
        ),
        Err(Unread::Bad(why)) => (None, Some(format!("unreadable: {why}")), true),
    };
    Record {
        index: e.index.0,
        kind: kind_name(e.kind).to_owned(),
        sender: e.sender.map(|a| a.to_hex()),
        text,
        note,
        last_seen: e.last_seen.map(|i| i.0),
        status,
        undecryptable,
    }
}
