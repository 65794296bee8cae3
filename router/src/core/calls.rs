//! The client calls the core answers: dispatch, creating and listing
//! conversations, preparing Updates, submissions, fetch plans and head
//! proof plans. Each checks the caller and its input, records what it
//! decided in the output, and replies; the fan-out to the order servers is
//! `fanout.rs`'s.

use super::*;

impl RouterCore {
    pub(super) fn call(
        &mut self,
        ticket: Ticket,
        account: AccountId,
        call: Call,
        now: Millis,
        rng: &mut impl CryptoRng,
        out: &mut Output,
    ) {
        let r = match call {
            Call::UploadKeys(upload, fallback) => self
                .disk_room()
                .and_then(|()| {
                    self.directory
                        .upload(account, upload, fallback, &mut out.records)
                })
                .map(|()| Response::Uploaded),
            Call::ListConversations => Ok(Response::Conversations(self.list(&account))),
            Call::GetKeyCounts => {
                let (otk, ok) = self.directory.key_counts(&account);
                Ok(Response::KeyCounts(pb::GetKeyCountsResponse {
                    one_time_prekeys: u32::try_from(otk).unwrap_or(u32::MAX),
                    order_keys: u32::try_from(ok).unwrap_or(u32::MAX),
                }))
            }
            Call::GetPrekeyBundle(target) => self
                .directory
                .prekey_bundle(&target, &mut out.records)
                .map(|b| Response::Bundle(pb::GetPrekeyBundleResponse { bundle: Some(b) })),
            Call::CreateConversation(id, members) => {
                match self
                    .disk_room()
                    .and_then(|()| self.create(ticket, account, id, members, rng, out))
                {
                    Ok(()) => return self.advance_relay(&id, out),
                    Err(e) => Err(e),
                }
            }
            Call::PrepareUpdate(id, members) => self
                .disk_room()
                .and_then(|()| self.prepare_update(account, id, members, rng, out))
                .map(Response::Prepared),
            Call::Submit(s) => {
                let id = s.envelope.header().conversation();
                match self.submit(ticket, account, s, now, out) {
                    Ok(Submitting::Waits) => return self.advance_relay(&id, out),
                    Ok(Submitting::Answer(r)) => Ok(r),
                    Ok(Submitting::Lookup(l)) => {
                        out.effects.push(Effect::Lookup(ticket, l));
                        return;
                    }
                    Err(e) => Err(e),
                }
            }
            Call::Fetch {
                conversation,
                from,
                limit,
            } => self.fetch(account, conversation, from, limit),
            Call::FetchHistory {
                conversation,
                from,
                limit,
            } => self.history_plan(account, conversation, from, limit),
            Call::Subscribe => Ok(Response::Subscribed(account)),
            Call::ProveHeads {
                conversation,
                nonce,
            } => self.prove_plan(account, conversation, nonce),
        };
        let _ = now;
        out.reply(ticket, r);
    }

    fn assign(
        &mut self,
        epoch: Epoch,
        members: Vec<(AccountId, SlotRole)>,
        placement: &Placement,
        rng: &mut impl CryptoRng,
        out: &mut Output,
    ) -> Result<EpochSlots, RouterError> {
        let ids: Vec<AccountId> = members.iter().map(|(a, _)| *a).collect();
        self.directory.check_order_keys(&ids)?;
        let mut with_keys = Vec::with_capacity(members.len());
        for (a, role) in members {
            let key = self.directory.take_order_key(&a, &mut out.records)?;
            with_keys.push((a, role, key));
        }
        assign_slots(epoch, with_keys, placement, &self.config.padding_tiers, rng)
    }

    fn create(
        &mut self,
        ticket: Ticket,
        account: AccountId,
        id: ConversationId,
        members: Vec<(AccountId, SlotRole)>,
        rng: &mut impl CryptoRng,
        out: &mut Output,
    ) -> Result<(), RouterError> {
        if !members.iter().any(|(a, _)| *a == account) {
            return Err(RouterError::CreatorNotAMember);
        }
        let quorum = self.config.quorum;
        if let Some(conv) = self.conversations.get_mut(&id) {
            // A retry by the creator before anything was sent is answered
            // with the same assignment.
            if conv.creator() == account && conv.next() == Index(0) {
                if conv.opened.iter().filter(|o| **o).count() >= quorum {
                    out.reply(ticket, Ok(created_response(conv)));
                } else {
                    conv.create_tickets.push(ticket);
                }
                return Ok(());
            }
            return Err(RouterError::ConversationExists(id));
        }
        let limits = &self.config.limits;
        if self.conversations.len() >= limits.max_conversations {
            return Err(RouterError::TooManyConversations {
                max: limits.max_conversations,
            });
        }
        let created = self.created_by.get(&account).copied().unwrap_or(0);
        if created >= limits.max_conversations_per_account {
            return Err(RouterError::TooManyConversationsCreated { created });
        }
        let mut slots = self.assign(Epoch(0), members, &Placement::default(), rng, out)?;
        slots.first_index = Some(Index(0));
        let n = self.config.servers.len();
        let mut conv = Conversation::from_record(
            crate::record::ConversationRecord {
                id,
                creator: account,
                epochs: vec![slots],
                prepared: Vec::new(),
                opened: vec![false; n],
            },
            n,
        );
        conv.create_tickets.push(ticket);
        out.records
            .push(Record::Conversation(Box::new(conv.record())));
        for e in conv.epochs() {
            index_holders(&mut self.member_of, id, e);
        }
        self.conversations.insert(id, conv);
        *self.created_by.entry(account).or_default() += 1;
        self.active.insert(id);
        metrics::counter!("router_conversations_created_total").increment(1);
        Ok(())
    }

    /// Every conversation `account` holds a slot in, in id order, with the
    /// first index it can fetch. Looks only at the account's own
    /// conversations (an index kept per account), not at all of them.
    fn list(&self, account: &AccountId) -> pb::ListConversationsResponse {
        let mut conversations: Vec<pb::ListedConversation> = self
            .member_of
            .get(account)
            .into_iter()
            .flatten()
            .filter_map(|id| self.conversations.get(id))
            .filter_map(|c| {
                let first = c
                    .epochs()
                    .iter()
                    .find(|e| e.slot_of(account).is_some())?
                    .first_index?;
                Some(pb::ListedConversation {
                    conversation_id: c.id().to_vec(),
                    delivered: c.delivered.0,
                    first_index: first.0,
                })
            })
            .collect();
        conversations.sort_by(|a, b| a.conversation_id.cmp(&b.conversation_id));
        pb::ListConversationsResponse { conversations }
    }

    fn member_conv(
        &self,
        account: &AccountId,
        id: &ConversationId,
    ) -> Result<&Conversation, RouterError> {
        let conv = self
            .conversations
            .get(id)
            .ok_or(RouterError::UnknownConversation(*id))?;
        if !conv.has_member(account) {
            return Err(RouterError::NotAMember(*id));
        }
        Ok(conv)
    }

    fn prepare_update(
        &mut self,
        account: AccountId,
        id: ConversationId,
        members: Vec<(AccountId, SlotRole)>,
        rng: &mut impl CryptoRng,
        out: &mut Output,
    ) -> Result<pb::PrepareUpdateResponse, RouterError> {
        let conv = self.member_conv(&account, &id)?;
        let tail = conv.tail_epoch().ok_or(RouterError::NoEpoch)?;
        if tail.slot_of(&account).is_none() {
            return Err(RouterError::NotACurrentMember);
        }
        let next = tail.epoch.next().ok_or(RouterError::EpochSpaceExhausted)?;
        let placement = Placement::after(tail, &members);
        let slots = self.assign(next, members, &placement, rng, out)?;
        let response = pb::PrepareUpdateResponse {
            next_epoch: next.0,
            slots: Some(pb::SlotSet::from(&slots.slots)),
            assignments: slots.assignments(),
        };
        if let Some(conv) = self.conversations.get_mut(&id) {
            index_holders(&mut self.member_of, id, &slots);
            conv.keep_prepared(slots);
            out.records
                .push(Record::Conversation(Box::new(conv.record())));
        }
        Ok(response)
    }

    /// Admits a submission, or answers a resubmission of an envelope
    /// already admitted.
    fn submit(
        &mut self,
        ticket: Ticket,
        account: AccountId,
        s: Submission,
        now: Millis,
        out: &mut Output,
    ) -> Result<Submitting, RouterError> {
        let id = s.envelope.header().conversation();
        let n = self.config.servers.len();
        let conv = self
            .conversations
            .get_mut(&id)
            .ok_or(RouterError::UnknownConversation(id))?;
        let hash = s.envelope.hash();
        if let Some(index) = conv.index_of(&hash) {
            // A resubmission of an envelope still in memory: idempotent.
            match conv.pending.get_mut(&index) {
                Some(p) if !p.delivered => {
                    p.tickets.push(ticket);
                    return Ok(Submitting::Waits);
                }
                _ => return Ok(Submitting::Answer(submitted(&hash))),
            }
        }
        if let Some(last) = conv.sent_before(&account, &s.envelope) {
            // The caller's slot sent this sequence before, and the
            // envelope left memory: the slot's last envelope is known
            // here, an older one is looked up in storage.
            let h = s.envelope.header();
            if h.sequence() < last.sequence {
                return Ok(Submitting::Lookup(SequenceLookup {
                    conversation: id,
                    epoch: h.epoch(),
                    slot: h.sender(),
                    sequence: h.sequence(),
                    last: last.sequence,
                    hash,
                }));
            }
            if last.hash == hash {
                return Ok(Submitting::Answer(submitted(&hash)));
            }
            return Err(RouterError::Inadmissible(
                grompi_proto::Misbehaviour::SequenceNotIncreasing {
                    slot: h.sender(),
                    last: last.sequence,
                    got: h.sequence(),
                },
            ));
        }
        if let Some(free) = self.disk_low {
            return Err(RouterError::DiskLow {
                free,
                reserve: self.config.limits.disk_reserve_bytes,
            });
        }
        let limits = &self.config.limits;
        let waiting = self
            .pending_per_account
            .get(&account)
            .copied()
            .unwrap_or_default();
        if waiting.count >= limits.max_pending_per_account {
            return Err(RouterError::TooManyPending {
                waiting: waiting.count,
                max: limits.max_pending_per_account,
            });
        }
        let size = envelope_bytes(&s.envelope);
        for (scope, held, max) in [
            (
                PendingScope::Account,
                waiting.bytes,
                limits.max_pending_bytes_per_account,
            ),
            (
                PendingScope::Conversation,
                conv.held_bytes(),
                limits.max_pending_bytes_per_conversation,
            ),
            (
                PendingScope::Router,
                self.held_bytes,
                limits.max_pending_bytes,
            ),
        ] {
            if held.saturating_add(size) > max {
                return Err(RouterError::PendingBytesFull {
                    scope,
                    held,
                    size,
                    max,
                });
            }
        }
        let next_slots = conv.check(Some(&account), &s.envelope)?;
        let index = conv.admit(
            Admission {
                envelope: s.envelope,
                submission_tags: s.tags,
                submitter: Some(account),
            },
            next_slots,
            n,
            &mut out.records,
        )?;
        if let Some(p) = conv.pending.get_mut(&index) {
            p.tickets.push(ticket);
        }
        conv.last_submission = now;
        let w = self.pending_per_account.entry(account).or_default();
        w.count += 1;
        w.bytes += conv.pending.get(&index).map_or(size, |p| p.size);
        self.recount(&id);
        self.active.insert(id);
        metrics::counter!("router_submissions_total").increment(1);
        Ok(Submitting::Waits)
    }

    fn fetch(
        &self,
        account: AccountId,
        id: ConversationId,
        from: Index,
        limit: u32,
    ) -> Result<Response, RouterError> {
        let conv = self.member_conv(&account, &id)?;
        let (from, to) = self.page_range(conv, from, limit);
        Ok(Response::Fetch(FetchPlan {
            account,
            conversation: id,
            from,
            to,
            slots_by_epoch: conv.epochs().iter().map(|e| e.slot_of(&account)).collect(),
        }))
    }

    /// The range `[from, to)` a Fetch or FetchHistory page covers: from
    /// `from`, or the first index still stored when the retention setting
    /// removed the ones before it (`next_index` says where it ended), for
    /// at most `limit` clamped to `1..=max_fetch` indices, never past what
    /// was delivered.
    fn page_range(&self, conv: &Conversation, from: Index, limit: u32) -> (Index, Index) {
        let from = from.max(conv.first_stored());
        // (A configuration never holds 0; `max(1)` keeps `clamp` from
        // panicking should a test or a future path build one.)
        let limit = u64::from(limit.clamp(1, self.config.limits.max_fetch.max(1)));
        let to = Index(
            from.0
                .saturating_add(limit)
                .min(conv.delivered.0)
                .max(from.0),
        );
        (from, to)
    }

    /// A history page's plan: only a member holding a slot in the current
    /// epoch may read the conversation's stored envelopes.
    fn history_plan(
        &self,
        account: AccountId,
        id: ConversationId,
        from: Index,
        limit: u32,
    ) -> Result<Response, RouterError> {
        let conv = self.member_conv(&account, &id)?;
        if conv
            .tail_epoch()
            .is_none_or(|e| e.slot_of(&account).is_none())
        {
            return Err(RouterError::NotAMember(id));
        }
        let first_stored = conv.first_stored();
        let (from, to) = self.page_range(conv, from, limit);
        Ok(Response::History(HistoryPlan {
            account,
            conversation: id,
            from,
            to,
            stored: conv.delivered,
            first_stored,
        }))
    }

    fn prove_plan(
        &self,
        account: AccountId,
        id: ConversationId,
        nonce: ProofNonce,
    ) -> Result<Response, RouterError> {
        let conv = self.member_conv(&account, &id)?;
        let epoch = conv
            .epochs()
            .iter()
            .rev()
            .find(|e| e.first_index.is_some_and(|f| f <= conv.delivered))
            .ok_or(RouterError::NoEpoch)?;
        let slot = epoch
            .slot_of(&account)
            .ok_or(RouterError::NoCurrentSlot(epoch.epoch))?;
        Ok(Response::ProveHeads(ProvePlan {
            conversation: id,
            slot,
            nonce,
        }))
    }
}

/// What a submission comes to.
pub(super) enum Submitting {
    /// Admitted, or a resubmission of an envelope waiting for its quorum:
    /// the reply comes with the quorum.
    Waits,
    /// Answered now.
    Answer(Response),
    /// A resubmission of an older envelope no longer in memory: the shell
    /// looks it up in storage ([`Effect::Lookup`]).
    Lookup(SequenceLookup),
}

pub(super) fn submitted(hash: &EnvelopeHash) -> Response {
    Response::Submitted(pb::SubmitResponse {
        envelope_hash: hash.to_vec(),
    })
}

pub(super) fn created_response(conv: &Conversation) -> Response {
    let e = conv.epochs().first();
    Response::Created(pb::CreateConversationResponse {
        slots: e.map(|e| pb::SlotSet::from(&e.slots)),
        assignments: e.map(EpochSlots::assignments).unwrap_or_default(),
    })
}
