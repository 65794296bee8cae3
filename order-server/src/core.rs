//! The order server's logic, free of I/O: open a conversation, attest the
//! next envelope, prove the head. It reads and writes through
//! [`StoreRead`]/[`StoreWrite`] inside the caller's transaction and never
//! commits; the caller commits the whole batch before any answer leaves.
//!
//! Each operation checks everything before it writes anything, so a refused
//! request leaves no trace but (for equivocation attempts) its evidence.
//! Store failures are returned separately from refusals: they abort the
//! batch.
//!
//! Unless built [`OrderCore::without_audit_log`], the core also appends
//! each newly attested index and each refused equivocation attempt to the
//! server's audit log ([`crate::audit_entry`]), in the same transaction as
//! the record it goes with.

use crate::key_cache::{KeyCache, SlotKeys};
use crate::limits::Limits;
use crate::refusal::Refusal;
use crate::request::AttestRequest;
use crate::state::{ConversationState, IndexRecord};
use crate::store::{StoreError, StoreRead, StoreWrite};
use crate::{audit_entry, audit_store};
use grompi_proto::key_share::KeyPeriod;
use grompi_proto::mac::{Attestation, HeadProof};
use grompi_proto::{
    AttestationStatement, ConversationId, EnvelopeKind, Epoch, Head, HeadProofStatement, Index,
    Misbehaviour, OrderServerKey, OrderServerSecret, ProofNonce, SlotIndex, SlotSet, SlotSetHash,
    WireError, admission,
};
use std::sync::{Arc, Mutex, PoisonError};

/// The result of one operation: the inner result is the protocol answer,
/// the outer error a store failure that aborts the batch.
pub type Outcome<T, E> = Result<Result<T, E>, StoreError>;

/// The order server's state machine (its durable state lives in the store;
/// it holds only the long-term key and a cache of derived MAC keys).
pub struct OrderCore {
    secret: OrderServerSecret,
    public: OrderServerKey,
    position: u32,
    limits: Limits,
    keys: Mutex<KeyCache>,
    audit: bool,
}

/// A new or retried attestation and the index of its audit log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attested {
    /// The attestation.
    pub attestation: Attestation,
    /// Where its entry is in the audit log; `None` when the core keeps no
    /// log, or the index was attested before the log was kept.
    pub log_index: Option<u64>,
}

impl std::fmt::Debug for OrderCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderCore")
            .field("public", &self.public)
            .field("position", &self.position)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

impl OrderCore {
    /// A core for the server with `secret`, at `position` in the network
    /// descriptor (echoed in attestations), enforcing `limits`, keeping an
    /// audit log.
    pub fn new(secret: OrderServerSecret, position: u32, limits: Limits) -> Self {
        Self {
            public: secret.public_key(),
            keys: Mutex::new(KeyCache::new(limits.key_cache_slots)),
            secret,
            position,
            limits,
            audit: true,
        }
    }

    /// The same core, keeping no audit log (to measure what the log costs).
    pub fn without_audit_log(mut self) -> Self {
        self.audit = false;
        self
    }

    /// Whether the core appends to the audit log.
    pub fn keeps_audit_log(&self) -> bool {
        self.audit
    }

    /// The server's public key.
    pub fn public_key(&self) -> OrderServerKey {
        self.public
    }

    /// The limits this core enforces on every request, as configured.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many slot sets had their MAC keys derived (key cache misses).
    pub fn key_derivations(&self) -> u64 {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .derivations()
    }

    fn slot_keys(&self, slots: &SlotSet) -> Result<Arc<SlotKeys>, Misbehaviour> {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .derive(&self.secret, slots)
            .map_err(|_| Misbehaviour::LowOrderKey)
    }

    /// The keys of the set stored for `epoch`, from the cache when present.
    fn stored_keys(
        &self,
        store: &impl StoreRead,
        conversation: &ConversationId,
        epoch: Epoch,
        hash: Option<&SlotSetHash>,
    ) -> Result<Arc<SlotKeys>, StoreError> {
        if let Some(h) = hash {
            let cached = self
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(h);
            if let Some(k) = cached {
                return Ok(k);
            }
        }
        let set = store
            .slot_set(conversation, epoch)?
            .ok_or(StoreError::Inconsistent("an epoch has no stored slot set"))?;
        self.slot_keys(&set)
            .map_err(|_| StoreError::Inconsistent("a stored slot set has a low-order key"))
    }

    /// Opens `conversation` with its first slot set. Refused if the id was
    /// ever opened, the set is larger than the limit, has no Admin slot, or
    /// a key is of low order. Returns the genesis head.
    pub fn open(
        &self,
        store: &mut impl StoreWrite,
        conversation: &ConversationId,
        slots: &SlotSet,
    ) -> Outcome<Head, Misbehaviour> {
        if store.conversation(conversation)?.is_some() {
            return Ok(Err(Misbehaviour::ConversationExists));
        }
        if slots.len() > self.limits.max_slots {
            return Ok(Err(Misbehaviour::LimitExceeded(format!(
                "the slot set has {} slots, more than this server's limit of {}",
                slots.len(),
                self.limits.max_slots
            ))));
        }
        // As for an Update's next set: without an Admin slot the membership
        // could never change.
        if !slots.has_admin() {
            return Ok(Err(Misbehaviour::UnauthorizedUpdate(
                "the first slot set has no Admin slot, so its membership could never change",
            )));
        }
        // Derive now: it checks every key, and the first envelope finds the
        // keys cached.
        if let Err(m) = self.slot_keys(slots) {
            return Ok(Err(m));
        }
        let state = ConversationState::opened(conversation, slots);
        store.put_slot_set(conversation, Epoch(0), slots)?;
        store.put_conversation(conversation, &state)?;
        Ok(Ok(state.head))
    }

    /// Attests `request` at the next index of its conversation, or returns
    /// the stored attestation if this very envelope is already attested at
    /// that index. A different envelope at an attested index is refused
    /// and kept as evidence.
    pub fn attest(
        &self,
        store: &mut impl StoreWrite,
        request: &AttestRequest,
    ) -> Outcome<Attestation, Refusal> {
        Ok(self.attest_logged(store, request)?.map(|a| a.attestation))
    }

    /// [`OrderCore::attest`], with the index of the attestation's audit log
    /// entry.
    pub fn attest_logged(
        &self,
        store: &mut impl StoreWrite,
        request: &AttestRequest,
    ) -> Outcome<Attested, Refusal> {
        let header = &request.envelope.header;
        let conversation = header.conversation();
        let Some(state) = store.conversation(&conversation)? else {
            return Ok(Err(Refusal {
                reason: Misbehaviour::UnknownConversation,
                next_index: Index(0),
            }));
        };
        let refuse = |reason| {
            Ok(Err(Refusal {
                reason,
                next_index: state.next_index,
            }))
        };
        let envelope = request.envelope.hash();

        if request.index < state.next_index {
            let record = store
                .record(&conversation, request.index)?
                .ok_or(StoreError::Inconsistent("an attested index has no record"))?;
            if record.envelope == envelope {
                let attestation =
                    self.attestation_of(store, &conversation, request.index, &record)?;
                return Ok(Ok(Attested {
                    attestation,
                    log_index: record.log_index,
                }));
            }
            self.keep_evidence(store, request)?;
            return refuse(Misbehaviour::Equivocation {
                index: request.index,
            });
        }
        if request.index > state.next_index {
            return refuse(Misbehaviour::IndexMismatch {
                expected: state.next_index,
                got: request.index,
            });
        }
        if request.previous_head != state.head {
            return refuse(Misbehaviour::HeadMismatch {
                index: request.index,
            });
        }
        if let Err(m) = admission::epoch(header, state.epoch) {
            return refuse(m);
        }
        let digests = request.envelope.block_digests.len();
        if digests > self.limits.max_block_digests {
            return refuse(Misbehaviour::LimitExceeded(format!(
                "the envelope has {digests} block digests, more than this server's limit of {}",
                self.limits.max_block_digests
            )));
        }
        let keys = self.stored_keys(
            store,
            &conversation,
            state.epoch,
            Some(&state.slot_set_hash),
        )?;
        let sender = header.sender();
        let (sender_entry, sender_keys) =
            match admission::sender_slot(header, keys.get(sender), keys.len()) {
                Ok(found) => found,
                Err(m) => return refuse(m),
            };
        if !sender_keys.verify_submission(&envelope, header.sequence(), &request.submission_tag) {
            return refuse(Misbehaviour::BadSubmissionTag { slot: sender });
        }
        let last = store.last_sequence(&conversation, state.epoch, sender)?;
        let kind = header.kind();
        if let Err(m) = admission::sequence(header, last)
            .and_then(|()| admission::kind_at(header, request.index))
            .and_then(|()| admission::setup_slot_set(header, &state.slot_set_hash))
            .and_then(|()| admission::update_sender(header, sender_entry.role))
        {
            return refuse(m);
        }

        let mut next_epoch: Option<(Epoch, &SlotSet, Arc<SlotKeys>)> = None;
        if kind == EnvelopeKind::Update {
            let Some(next) = request.next_slots.as_ref() else {
                return refuse(Misbehaviour::Malformed(WireError::MissingField(
                    "item.next_slots",
                )));
            };
            if next.len() > self.limits.max_slots {
                return refuse(Misbehaviour::LimitExceeded(format!(
                    "the next slot set has {} slots, more than this server's limit of {}",
                    next.len(),
                    self.limits.max_slots
                )));
            }
            if let Err(m) = admission::update_next_slots(header, next) {
                return refuse(m);
            }
            let Some(epoch) = state.epoch.next() else {
                return refuse(Misbehaviour::LimitExceeded(
                    "the epoch counter is exhausted".into(),
                ));
            };
            match self.slot_keys(next) {
                Ok(k) => next_epoch = Some((epoch, next, k)),
                Err(m) => return refuse(m),
            }
        }
        if request.next_slots.is_some() && kind != EnvelopeKind::Update {
            return refuse(Misbehaviour::Malformed(WireError::Invalid {
                field: "item.next_slots",
                reason: "only an Update carries a next slot set",
            }));
        }
        let Some(next_index) = request.index.next() else {
            return refuse(Misbehaviour::LimitExceeded(
                "the index counter is exhausted".into(),
            ));
        };

        // The Setup states the first epoch's key periods (group-keyed
        // conversations; none in a pairwise-keyed one).
        let mut state = state;
        if kind == EnvelopeKind::Setup {
            state.epoch_start = Index(0);
            state.period_length = period_length(header);
        }

        // Every check passed: write, then compute the tags.
        let head = state
            .head
            .next(&conversation, state.epoch, request.index, &envelope);
        // The log entry first, in this transaction: the record keeps its
        // index, and a retry answers with it.
        let log_index = if self.audit {
            let entry = audit_entry::attestation(&conversation, state.epoch, request.index, &head);
            Some(audit_store::append(store, &entry)?)
        } else {
            None
        };
        let record = IndexRecord {
            log_index,
            epoch: state.epoch,
            kind,
            envelope,
            head,
            key_period: if kind == EnvelopeKind::Update {
                // The next epoch's first period, sealed for its slots.
                (period_length(header) > 0).then_some(KeyPeriod(0))
            } else {
                state.period_started_at(request.index)
            },
        };
        store.put_record(&conversation, request.index, &record)?;
        store.put_last_sequence(&conversation, state.epoch, sender, header.sequence())?;
        let mut new_state = ConversationState {
            next_index,
            head,
            ..state
        };
        if let Some((epoch, next, _)) = &next_epoch {
            store.put_slot_set(&conversation, *epoch, next)?;
            new_state.epoch = *epoch;
            new_state.slot_set_hash = next.hash();
            new_state.slot_count = u32::try_from(next.len()).unwrap_or(u32::MAX);
            new_state.epoch_start = next_index;
            new_state.period_length = period_length(header);
        }
        store.put_conversation(&conversation, &new_state)?;
        let attestation = self.tags(
            &conversation,
            request.index,
            &record,
            &keys,
            next_epoch.as_ref().map(|(_, _, k)| k.as_ref()),
        )?;
        Ok(Ok(Attested {
            attestation,
            log_index,
        }))
    }

    /// The attestation of an already attested index, recomputed from its
    /// record: exactly the tags that were returned when it was attested.
    fn attestation_of(
        &self,
        store: &impl StoreRead,
        conversation: &ConversationId,
        index: Index,
        record: &IndexRecord,
    ) -> Result<Attestation, StoreError> {
        let keys = self.stored_keys(store, conversation, record.epoch, None)?;
        let next = if record.kind == EnvelopeKind::Update {
            let epoch = record
                .epoch
                .next()
                .ok_or(StoreError::Inconsistent("an Update in the last epoch"))?;
            Some(self.stored_keys(store, conversation, epoch, None)?)
        } else {
            None
        };
        self.tags(conversation, index, record, &keys, next.as_deref())
    }

    fn tags(
        &self,
        conversation: &ConversationId,
        index: Index,
        record: &IndexRecord,
        keys: &SlotKeys,
        next: Option<&SlotKeys>,
    ) -> Result<Attestation, StoreError> {
        let statement = AttestationStatement {
            conversation: *conversation,
            epoch: record.epoch,
            index,
            head: record.head,
        };
        // Where a key period starts: this server's share, sealed for each
        // slot (derived, so a retry seals the same). An Update's share is
        // the next epoch's first period's, sealed for the next slots.
        let key_shares = match (record.key_period, record.kind, next) {
            (None, _, _) => Vec::new(),
            (Some(period), kind, next) => {
                let (epoch, slots) = match (kind, next) {
                    (EnvelopeKind::Update, Some(next)) => (
                        record
                            .epoch
                            .next()
                            .ok_or(StoreError::Inconsistent("an Update in the last epoch"))?,
                        next,
                    ),
                    _ => (record.epoch, keys),
                };
                let share = self.secret.key_share(conversation, epoch, period);
                slots
                    .iter()
                    .map(|k| k.wrap_share(conversation, epoch, period, &share))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| StoreError::Inconsistent("a key share could not be sealed"))?
            }
        };
        Ok(Attestation {
            server: self.position,
            index,
            head: record.head,
            tags: keys.iter().map(|k| k.attest(&statement)).collect(),
            next_tags: next
                .map(|n| n.iter().map(|k| k.attest(&statement)).collect())
                .unwrap_or_default(),
            key_shares,
            log_index: None,
        })
    }

    fn keep_evidence(
        &self,
        store: &mut impl StoreWrite,
        request: &AttestRequest,
    ) -> Result<(), StoreError> {
        let total = store.evidence_total()?;
        let keep = total < self.limits.max_evidence;
        if keep || self.audit {
            let item = prost::Message::encode_to_vec(&grompi_proto::pb::AttestItem::from(request));
            if keep {
                store.put_evidence(total, &item)?;
            }
            if self.audit {
                let conversation = request.envelope.header.conversation();
                let entry = audit_entry::refusal(&conversation, request.index, total, &item);
                audit_store::append(store, &entry)?;
            }
        }
        store.set_evidence_total(total.saturating_add(1))
    }

    /// A head proof for `slot` of the conversation's current epoch, over the
    /// caller's `nonce`.
    pub fn prove_head(
        &self,
        store: &impl StoreRead,
        conversation: &ConversationId,
        slot: SlotIndex,
        nonce: ProofNonce,
    ) -> Outcome<HeadProof, Misbehaviour> {
        let Some(state) = store.conversation(conversation)? else {
            return Ok(Err(Misbehaviour::UnknownConversation));
        };
        let keys =
            self.stored_keys(store, conversation, state.epoch, Some(&state.slot_set_hash))?;
        let Some((_, slot_keys)) = keys.get(slot) else {
            return Ok(Err(Misbehaviour::UnknownSlot {
                slot,
                slot_count: keys.len(),
            }));
        };
        let statement = HeadProofStatement {
            conversation: *conversation,
            epoch: state.epoch,
            count: state.next_index.0,
            head: state.head,
            nonce,
        };
        Ok(Ok(HeadProof {
            server: self.position,
            statement,
            tag: slot_keys.prove_head(&statement),
        }))
    }
}

/// The period length a Setup or Update header states for the epoch it
/// opens: its key start's, or 0 (a pairwise-keyed epoch, no key shares).
fn period_length(header: &grompi_proto::EnvelopeHeader) -> u64 {
    match header.key() {
        grompi_proto::HeaderKey::Start(k) => k.period_length(),
        grompi_proto::HeaderKey::None | grompi_proto::HeaderKey::Id(_) => 0,
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
