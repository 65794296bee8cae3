//! What a conversation's audit needs from this account
//! ([`crate::log_audit`], `grompi audit CONVERSATION`): the indices this
//! member accepted (epoch and head, from its own transcript: the audit
//! trusts nothing else about them) and where the order servers said they
//! logged each, as the router relays it in the conversation's history
//! pages (a hint the audit checks against the logs).

use super::{ApiError, Client};
use crate::client::shared_history::HISTORY_PAGE;
use grompi_proto::{ConversationId, Epoch, Head, Index, pb};
use std::collections::HashMap;

/// A conversation's accepted indices and the log positions relayed for them.
#[derive(Clone, Debug, Default)]
pub struct AuditInput {
    /// Every index this member accepted: index, epoch, head after it.
    pub accepted: Vec<(Index, Epoch, Head)>,
    /// Per order server (descriptor position): index → log position.
    pub positions: Vec<HashMap<Index, u64>>,
    /// Why the positions could not all be fetched, if they could not (the
    /// audit then searches the logs for the entries).
    pub positions_error: Option<String>,
}

impl Client {
    /// The accepted indices of `id` and the log positions the router
    /// relays for them (after a sync, so the newest are included).
    pub async fn audit_input(&mut self, id: ConversationId) -> Result<AuditInput, ApiError> {
        self.sync(id).await?;
        let servers = self.descriptor().order_servers.len();
        let conv = self
            .member
            .conversation(&id)
            .ok_or_else(|| ApiError::UnknownConversation(id.to_hex()))?;
        let accepted: Vec<(Index, Epoch, Head)> = conv
            .transcript()
            .entries()
            .iter()
            .map(|e| (e.index, e.epoch, e.head))
            .collect();
        let mut input = AuditInput {
            positions: vec![HashMap::new(); servers],
            ..AuditInput::default()
        };
        let (Some(first), Some(last)) = (accepted.first(), accepted.last()) else {
            return Ok(input);
        };
        let (mut from, last) = (first.0, last.0);
        let mut pages = 0u32;
        while from <= last && pages < u32::MAX {
            pages += 1;
            let page = match self.history_page(id, from).await {
                Ok(p) => p,
                Err(e) => {
                    input.positions_error = Some(e.to_string());
                    break;
                }
            };
            for e in &page.envelopes {
                for p in &e.log_positions {
                    if let Some(map) = input.positions.get_mut(p.server as usize) {
                        map.insert(Index(e.index), p.log_index);
                    }
                }
            }
            if page.envelopes.is_empty() || page.next_index <= from.0 {
                break;
            }
            // The router's retention may start the page above `from`.
            from = Index(page.next_index);
        }
        input.accepted = accepted;
        Ok(input)
    }

    /// One FetchHistory page of `id` from `from`.
    pub(super) async fn history_page(
        &mut self,
        id: ConversationId,
        from: Index,
    ) -> Result<pb::FetchHistoryResponse, ApiError> {
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::FetchHistoryRequest {
            conversation_id: id.to_vec(),
            from_index: from.0,
            limit: HISTORY_PAGE,
        })?;
        Ok(conn
            .raw()
            .fetch_history(req)
            .await
            .map_err(|s| ApiError::router("FetchHistory", s))?
            .into_inner())
    }
}
