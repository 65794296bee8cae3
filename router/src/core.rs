//! The router's state machine: commands in, records and effects out.
//!
//! The core owns the directory, the conversations and the fan-out state. It
//! does no I/O: time and randomness are arguments, and everything it wants
//! done comes back in an [`Output`]: [`Record`]s the shell must commit
//! durably, then [`Effect`]s (replies, order server jobs, deliveries) the
//! shell performs only after that commit. Feeding a batch of commands before
//! one commit is group commit.

use crate::conversation::{Admission, Conversation, EpochSlots, Placement, assign_slots};
use crate::delivery::{self, MemberSlots};
use crate::directory::{Directory, KeyUpload, NewAccount, SignIn};
use crate::error::{RouterError, ServerRefusal};
use crate::fanout::{JobItem, JobResult, OpenOutcome, ServerJob, ServerLink, is_sender_fault};
use crate::limits::{Limits, RateKey, RateLimiter};
use crate::record::{Record, StoredEnvelope};
use crate::store::{Durability, Snapshot};
use crate::{Millis, Ticket};
use grompi_proto::envelope::HeaderFields;
use grompi_proto::mac::Attestation;
use grompi_proto::pb::{self, RefusalReason};
use grompi_proto::{
    AccountId, BodyHash, ConversationId, Envelope, EnvelopeHash, EnvelopeHeader, EnvelopeKind,
    Epoch, Index, KeyCommitment, OrderServerKey, ProofNonce, Sequence, SlotIndex, SlotRole, Tag,
};
use rand::{CryptoRng, RngExt};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// What the core needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Order servers' public keys, in descriptor order.
    pub servers: Vec<OrderServerKey>,
    /// Attestations needed before delivery and acknowledgement.
    pub quorum: usize,
    /// Limits.
    pub limits: Limits,
    /// Padded group sizes.
    pub padding_tiers: Vec<usize>,
    /// One noise envelope per conversation per this many milliseconds.
    pub noise_interval_ms: Option<Millis>,
    /// Most items in one Attest call.
    pub max_batch: usize,
    /// First retry delay after a failure.
    pub backoff_base_ms: Millis,
    /// Longest retry delay.
    pub backoff_max_ms: Millis,
}

/// A parsed, size-checked submission.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The envelope.
    pub envelope: Envelope,
    /// One tag per order server.
    pub tags: Vec<Tag>,
}

/// Parses a Submit request: size, envelope, one 32-byte tag per server.
pub fn parse_submit(
    req: pb::SubmitRequest,
    servers: usize,
    limits: &Limits,
) -> Result<Submission, RouterError> {
    let env = req.envelope.ok_or(RouterError::EnvelopeMissing)?;
    let size = prost::Message::encoded_len(&env);
    if size > limits.max_envelope_bytes {
        return Err(RouterError::EnvelopeTooLarge {
            size,
            max: limits.max_envelope_bytes,
        });
    }
    if env.blocks.len() > limits.max_group_size {
        return Err(RouterError::TooManyBlocks {
            blocks: env.blocks.len(),
            max: limits.max_group_size,
        });
    }
    let envelope = Envelope::try_from(env)?;
    if req.submission_tags.len() != servers {
        return Err(RouterError::SubmissionTagCount {
            got: req.submission_tags.len(),
            servers,
        });
    }
    let tags = req
        .submission_tags
        .iter()
        .map(|t| Tag::parse("submission_tags", t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Submission { envelope, tags })
}

/// Parses a member list: non-empty, within the group size, no account
/// twice, at least one Admin (without one the membership could never
/// change; order servers refuse such a slot set too).
pub fn parse_members(
    list: &[pb::MemberSpec],
    limits: &Limits,
) -> Result<Vec<(AccountId, SlotRole)>, RouterError> {
    if list.is_empty() {
        return Err(RouterError::NoMembers);
    }
    if !list
        .iter()
        .any(|m| SlotRole::from_code(m.role) == Some(SlotRole::Admin))
    {
        return Err(RouterError::NoAdmin);
    }
    if list.len() > limits.max_group_size {
        return Err(RouterError::TooManyMembers {
            members: list.len(),
            max: limits.max_group_size,
        });
    }
    let mut seen = BTreeSet::new();
    list.iter()
        .map(|m| {
            let a = AccountId::parse("members.account", &m.account)?;
            if !seen.insert(a) {
                return Err(RouterError::MemberTwice(a));
            }
            let role = SlotRole::from_code(m.role).ok_or(RouterError::UnknownRole(m.role))?;
            Ok((a, role))
        })
        .collect()
}

/// An authenticated call.
#[derive(Debug, Clone)]
pub enum Call {
    /// Add keys.
    UploadKeys(KeyUpload, Option<pb::SignedPrekey>),
    /// Count unused keys.
    GetKeyCounts,
    /// The caller's conversations.
    ListConversations,
    /// Another account's bundle.
    GetPrekeyBundle(AccountId),
    /// Create a conversation.
    CreateConversation(ConversationId, Vec<(AccountId, SlotRole)>),
    /// Prepare the next epoch.
    PrepareUpdate(ConversationId, Vec<(AccountId, SlotRole)>),
    /// Submit an envelope.
    Submit(Submission),
    /// Plan a fetch.
    Fetch {
        /// Conversation.
        conversation: ConversationId,
        /// First index.
        from: Index,
        /// Most deliveries.
        limit: u32,
    },
    /// Start a live subscription.
    Subscribe,
    /// Plan a head-proof relay.
    ProveHeads {
        /// Conversation.
        conversation: ConversationId,
        /// The member's nonce.
        nonce: ProofNonce,
    },
}

/// A command to the core.
#[derive(Debug, Clone)]
pub enum Command {
    /// Issue a challenge.
    GetChallenge,
    /// Create an account.
    Register(NewAccount),
    /// Start a session.
    SignIn(SignIn),
    /// A call with a session token.
    Authed {
        /// The session token from metadata.
        token: Vec<u8>,
        /// The call.
        call: Call,
    },
    /// An order server job ended.
    JobDone(JobResult),
}

/// What the shell reads from storage to answer a Fetch.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// Conversation.
    pub conversation: ConversationId,
    /// First index to read.
    pub from: Index,
    /// One past the last index to read.
    pub to: Index,
    /// The caller's slot per epoch.
    pub slots_by_epoch: Vec<Option<SlotIndex>>,
}

impl FetchPlan {
    /// The caller's slots for an envelope.
    pub fn member(&self, envelope: &Envelope) -> MemberSlots {
        let h = envelope.header();
        let at = |e: u64| {
            usize::try_from(e)
                .ok()
                .and_then(|e| self.slots_by_epoch.get(e).copied().flatten())
        };
        MemberSlots {
            slot: at(h.epoch().0),
            next_slot: if h.kind() == EnvelopeKind::Update {
                h.epoch().0.checked_add(1).and_then(at)
            } else {
                None
            },
        }
    }
}

/// What the shell relays for ProveHeads.
#[derive(Debug, Clone)]
pub struct ProvePlan {
    /// Conversation.
    pub conversation: ConversationId,
    /// The caller's slot.
    pub slot: SlotIndex,
    /// The nonce.
    pub nonce: ProofNonce,
}

/// A successful reply.
#[derive(Debug, Clone)]
pub enum Response {
    /// GetChallenge.
    Challenge(pb::GetChallengeResponse),
    /// Register.
    Registered(pb::RegisterResponse),
    /// SignIn.
    SignedIn(pb::SignInResponse),
    /// UploadKeys.
    Uploaded,
    /// GetKeyCounts.
    KeyCounts(pb::GetKeyCountsResponse),
    /// ListConversations.
    Conversations(pb::ListConversationsResponse),
    /// GetPrekeyBundle.
    Bundle(pb::GetPrekeyBundleResponse),
    /// CreateConversation.
    Created(pb::CreateConversationResponse),
    /// PrepareUpdate.
    Prepared(pb::PrepareUpdateResponse),
    /// Submit: committed and attested by a quorum.
    Submitted(pb::SubmitResponse),
    /// Fetch: what to read.
    Fetch(FetchPlan),
    /// Subscribe: the caller's account.
    Subscribed(AccountId),
    /// ProveHeads: what to relay.
    ProveHeads(ProvePlan),
}

/// Something the shell must do after committing the output's records.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Answer a waiting request.
    Reply(Ticket, Result<Response, RouterError>),
    /// Send a job to an order server.
    Job(ServerJob),
    /// Deliver to one account's live subscribers.
    Deliver {
        /// Recipient.
        account: AccountId,
        /// The delivery.
        delivery: pb::Delivery,
    },
}

/// Records to commit, then effects to perform.
///
/// Effects wait for the commit of `records` (and of every earlier batch),
/// except `early` ones: those that follow only from order servers' answers
/// about envelopes committed in an earlier batch (tags, deliveries and
/// acknowledgements of attested indices). Order servers make their
/// attestations durable before answering and answer a repeated request
/// with the same attestation, so a router that crashes before committing
/// the tags asks again after the restart and gets the same ones: nothing
/// it showed a member is lost or changed. Only an output made with
/// [`Output::separating_early`] fills `early`; otherwise every effect goes
/// to `effects`.
#[derive(Debug, Default)]
pub struct Output {
    /// Durable changes, in order.
    pub records: Vec<Record>,
    /// Effects that wait for the commit, in order.
    pub effects: Vec<Effect>,
    /// Effects that may be performed before the commit, in order.
    pub early: Vec<Effect>,
    separate_early: bool,
    /// How many of `records` came from order servers' answers.
    from_answers: usize,
}

impl Output {
    /// An output that keeps early effects apart, for a shell that performs
    /// them before its commit.
    pub fn separating_early() -> Self {
        Self {
            separate_early: true,
            ..Self::default()
        }
    }

    /// How durable the commit of `records` must be. Records that only
    /// restate order servers' answers (tags, progress, which servers have a
    /// conversation open: [`Record::restates_answers`]) may be committed
    /// [`Durability::Deferred`]: a router that loses them in a crash sends
    /// the same requests again and gets the same answers, as for early
    /// effects. Any other record (an envelope admitted or dropped, a tail
    /// moved) makes the commit [`Durability::Now`], which also makes every
    /// deferred commit before it durable.
    pub fn durability(&self) -> Durability {
        if self.records.len() > self.from_answers {
            Durability::Now
        } else {
            Durability::Deferred
        }
    }

    fn reply(&mut self, ticket: Ticket, r: Result<Response, RouterError>) {
        self.effects.push(Effect::Reply(ticket, r));
    }

    /// Moves the effects pushed since `mark` to `early`, if this output
    /// separates them.
    fn make_early_since(&mut self, mark: usize) {
        if self.separate_early && mark <= self.effects.len() {
            self.early.extend(self.effects.drain(mark..));
        }
    }
}

#[derive(Debug, Clone)]
struct InFlight {
    id: u64,
    opens: Vec<ConversationId>,
    items: Vec<(JobItem, EnvelopeHash)>,
}

/// The router's state machine.
#[derive(Debug)]
pub struct RouterCore {
    config: CoreConfig,
    directory: Directory,
    conversations: HashMap<ConversationId, Conversation>,
    /// Conversations with work for some order server.
    active: BTreeSet<ConversationId>,
    /// The conversations each account holds or held a slot in, in some
    /// epoch installed or prepared (a superset: `ListConversations` still
    /// checks each).
    member_of: HashMap<AccountId, BTreeSet<ConversationId>>,
    links: Vec<ServerLink>,
    /// Jobs sent to each server and not yet answered, oldest first.
    in_flight: Vec<VecDeque<InFlight>>,
    /// Per server, per conversation: the next index to send when it is
    /// past the server's progress (items in flight). Forgotten (back to
    /// the progress) whenever the server refuses or fails.
    sent: Vec<HashMap<ConversationId, Index>>,
    /// Jobs one server may have in flight at once: 1 unless the shell's
    /// transport keeps a server's jobs in order (see
    /// [`RouterCore::pipeline_jobs`]).
    max_in_flight: usize,
    rate: RateLimiter,
    next_job: u64,
    pending_per_account: HashMap<AccountId, usize>,
    last_prune: Millis,
}

impl RouterCore {
    /// Restores the core from a store snapshot (empty for a new router).
    pub fn restore(config: CoreConfig, snapshot: Snapshot) -> Result<Self, RouterError> {
        let n = config.servers.len();
        let mut directory = Directory::new(config.limits.session_ttl_ms);
        for a in snapshot.accounts {
            directory.restore_account(a);
        }
        for (a, k) in snapshot.one_time_prekeys {
            directory.restore_one_time(a, k);
        }
        for (a, k) in snapshot.order_keys {
            directory.restore_order_key(a, k);
        }
        for (h, a, expires_at) in snapshot.sessions {
            directory.restore_session(h, a, expires_at);
        }
        let mut conversations: HashMap<ConversationId, Conversation> = snapshot
            .conversations
            .into_iter()
            .map(|r| (r.id, Conversation::from_record(r, n)))
            .collect();
        for (c, next, head) in snapshot.tails {
            if let Some(conv) = conversations.get_mut(&c) {
                conv.next = next;
                conv.head = head;
            }
        }
        for (c, server, next) in snapshot.progress {
            if let Some(p) = conversations
                .get_mut(&c)
                .and_then(|conv| conv.progress.get_mut(server as usize))
            {
                *p = next;
            }
        }
        let mut pending_per_account: HashMap<AccountId, usize> = HashMap::new();
        for (c, index, stored, atts) in snapshot.envelopes {
            let Some(conv) = conversations.get_mut(&c) else {
                continue;
            };
            let mut attestations = vec![None; n];
            for a in atts {
                if let Some(slot) = attestations.get_mut(a.server as usize) {
                    *slot = Some(a);
                }
            }
            let hash = stored.envelope.hash();
            let h = stored.envelope.header();
            conv.last_seq.insert((h.epoch(), h.sender()), h.sequence());
            conv.known.insert(hash, index);
            conv.pending.insert(
                index,
                crate::conversation::Pending {
                    stored,
                    hash,
                    attestations,
                    refusals: vec![None; n],
                    tickets: Vec::new(),
                    delivered: false,
                },
            );
        }
        // The last envelope of every sender slot, also once it left memory:
        // its resubmission is answered, not admitted again.
        for (c, epoch, slot, tail) in snapshot.slot_tails {
            if let Some(conv) = conversations.get_mut(&c) {
                let last = conv.last_seq.entry((epoch, slot)).or_insert(tail.sequence);
                *last = (*last).max(tail.sequence);
                conv.known.insert(tail.hash, tail.index);
            }
        }
        let quorum = config.quorum;
        let mut active = BTreeSet::new();
        for conv in conversations.values_mut() {
            conv.delivered = conv.quorate(quorum);
            let delivered = conv.delivered;
            for (i, p) in conv.pending.iter_mut() {
                if *i < delivered {
                    p.delivered = true;
                } else if let Some(a) = p.stored.submitter {
                    *pending_per_account.entry(a).or_default() += 1;
                }
            }
            conv.pending
                .retain(|i, p| !(*i < delivered && p.attested() == n));
            active.insert(conv.id);
        }
        Ok(Self {
            rate: RateLimiter::new(
                config.limits.requests_per_second,
                config.limits.request_burst,
            ),
            member_of: member_index(conversations.values()),
            links: vec![ServerLink::default(); n],
            in_flight: vec![VecDeque::new(); n],
            sent: vec![HashMap::new(); n],
            max_in_flight: 1,
            config,
            directory,
            conversations,
            active,
            next_job: 1,
            pending_per_account,
            last_prune: 0,
        })
    }

    /// Lets up to `jobs` jobs be in flight to one order server at once.
    /// Only for a shell whose transport delivers one server's jobs in the
    /// order they were sent and answers them in that order (the `AttestStream`
    /// RPC): a server must never see index i+1 before index i. The default
    /// is 1, which is safe over any transport.
    pub fn pipeline_jobs(&mut self, jobs: usize) {
        self.max_in_flight = jobs.max(1);
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// A conversation, for inspection.
    pub fn conversation(&self, id: &ConversationId) -> Option<&Conversation> {
        self.conversations.get(id)
    }

    /// Envelopes waiting for attestations, over all conversations.
    pub fn pending_count(&self) -> usize {
        self.conversations.values().map(|c| c.pending.len()).sum()
    }

    /// Whether order server `server` is currently failing.
    pub fn server_down(&self, server: usize) -> bool {
        self.links.get(server).is_some_and(|l| l.down)
    }

    /// Handles one command.
    pub fn handle(
        &mut self,
        ticket: Ticket,
        command: Command,
        now: Millis,
        rng: &mut impl CryptoRng,
        out: &mut Output,
    ) {
        match command {
            Command::GetChallenge => {
                let r = self
                    .rate
                    .check(RateKey::Anonymous, now)
                    .and_then(|()| {
                        self.directory
                            .issue_challenge(now, rng, &self.config.limits)
                    })
                    .map(|c| {
                        Response::Challenge(pb::GetChallengeResponse {
                            challenge: c.to_vec(),
                        })
                    });
                out.reply(ticket, r);
            }
            Command::Register(new) => {
                let r = self
                    .rate
                    .check(RateKey::Anonymous, now)
                    .and_then(|()| self.directory.register(new, now, rng, &mut out.records));
                let r = r.map(|(id, token)| {
                    Response::Registered(pb::RegisterResponse {
                        account: id.to_vec(),
                        session_token: token.to_vec(),
                    })
                });
                out.reply(ticket, r);
            }
            Command::SignIn(s) => {
                let r = self
                    .rate
                    .check(RateKey::Anonymous, now)
                    .and_then(|()| self.directory.sign_in(&s, now, rng, &mut out.records))
                    .map(|t| {
                        Response::SignedIn(pb::SignInResponse {
                            session_token: t.to_vec(),
                        })
                    });
                out.reply(ticket, r);
            }
            Command::Authed { token, call } => {
                let account = match self
                    .directory
                    .authenticate(&token, now)
                    .and_then(|a| self.rate.check(RateKey::Account(a), now).map(|()| a))
                {
                    Ok(a) => a,
                    Err(e) => return out.reply(ticket, Err(e)),
                };
                self.call(ticket, account, call, now, rng, out);
            }
            Command::JobDone(result) => self.job_done(result, now, out),
        }
    }

    fn call(
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
                .directory
                .upload(account, upload, fallback, &mut out.records)
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
                match self.create(ticket, account, id, members, rng, out) {
                    Ok(()) => return self.advance_relay(&id, out),
                    Err(e) => Err(e),
                }
            }
            Call::PrepareUpdate(id, members) => self
                .prepare_update(account, id, members, rng, out)
                .map(Response::Prepared),
            Call::Submit(s) => {
                let id = s.envelope.header().conversation();
                match self.submit(ticket, account, s, out) {
                    Ok(None) => return self.advance_relay(&id, out),
                    Ok(Some(r)) => Ok(r),
                    Err(e) => Err(e),
                }
            }
            Call::Fetch {
                conversation,
                from,
                limit,
            } => self.fetch(account, conversation, from, limit),
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
            if conv.creator == account && conv.next == Index(0) {
                if conv.opened.iter().filter(|o| **o).count() >= quorum {
                    out.reply(ticket, Ok(created_response(conv)));
                } else {
                    conv.create_tickets.push(ticket);
                }
                return Ok(());
            }
            return Err(RouterError::ConversationExists(id));
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
        for e in &conv.epochs {
            index_holders(&mut self.member_of, id, e);
        }
        self.conversations.insert(id, conv);
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
                    .epochs
                    .iter()
                    .find(|e| e.slot_of(account).is_some())?
                    .first_index?;
                Some(pb::ListedConversation {
                    conversation_id: c.id.to_vec(),
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
            // Keep a few alternatives; the oldest go first.
            conv.prepared.retain(|p| p.epoch == next);
            if conv.prepared.len() >= 8 {
                conv.prepared.remove(0);
            }
            index_holders(&mut self.member_of, id, &slots);
            conv.prepared.push(slots);
            out.records
                .push(Record::Conversation(Box::new(conv.record())));
        }
        Ok(response)
    }

    /// Admits a submission; `Ok(None)` means the reply comes later.
    fn submit(
        &mut self,
        ticket: Ticket,
        account: AccountId,
        s: Submission,
        out: &mut Output,
    ) -> Result<Option<Response>, RouterError> {
        let id = s.envelope.header().conversation();
        let n = self.config.servers.len();
        let conv = self
            .conversations
            .get_mut(&id)
            .ok_or(RouterError::UnknownConversation(id))?;
        let hash = s.envelope.hash();
        if let Some(index) = conv.known.get(&hash).copied() {
            // A resubmission of an envelope already admitted: idempotent.
            match conv.pending.get_mut(&index) {
                Some(p) if !p.delivered => {
                    p.tickets.push(ticket);
                    return Ok(None);
                }
                _ => return Ok(Some(submitted(&hash))),
            }
        }
        let waiting = self.pending_per_account.get(&account).copied().unwrap_or(0);
        if waiting >= self.config.limits.max_pending_per_account {
            return Err(RouterError::TooManyPending {
                waiting,
                max: self.config.limits.max_pending_per_account,
            });
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
        *self.pending_per_account.entry(account).or_default() += 1;
        self.active.insert(id);
        metrics::counter!("router_submissions_total").increment(1);
        Ok(None)
    }

    fn fetch(
        &self,
        account: AccountId,
        id: ConversationId,
        from: Index,
        limit: u32,
    ) -> Result<Response, RouterError> {
        let conv = self.member_conv(&account, &id)?;
        // (A configuration never holds 0; `max(1)` keeps `clamp` from
        // panicking should a test or a future path build one.)
        let limit = u64::from(limit.clamp(1, self.config.limits.max_fetch.max(1)));
        let to = Index(
            from.0
                .saturating_add(limit)
                .min(conv.delivered.0)
                .max(from.0),
        );
        Ok(Response::Fetch(FetchPlan {
            conversation: id,
            from,
            to,
            slots_by_epoch: conv.epochs.iter().map(|e| e.slot_of(&account)).collect(),
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
            .epochs
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

    /// Periodic and after-batch work: noise, then jobs for idle servers.
    pub fn poll(&mut self, now: Millis, rng: &mut impl CryptoRng, out: &mut Output) {
        if now.saturating_sub(self.last_prune) >= 60_000 {
            self.rate.prune(now);
            self.directory.prune_sessions(now, &mut out.records);
            metrics::gauge!("router_sessions").set(self.directory.session_count() as f64);
            self.pending_per_account.retain(|_, c| *c > 0);
            self.last_prune = now;
        }
        if let Some(interval) = self.config.noise_interval_ms {
            self.noise(now, interval, rng, out);
        }
        for s in 0..self.config.servers.len() {
            self.schedule(s, now, out);
        }
    }

    fn noise(&mut self, now: Millis, interval: Millis, rng: &mut impl CryptoRng, out: &mut Output) {
        let n = self.config.servers.len();
        let servers = self.config.servers.clone();
        let mut admitted = Vec::new();
        for conv in self.conversations.values_mut() {
            if conv.next == Index(0) || now < conv.next_noise {
                continue;
            }
            conv.next_noise = now.saturating_add(interval);
            let Some(a) = noise_envelope(conv, now, &servers, rng) else {
                continue;
            };
            match conv
                .check(None, &a.envelope)
                .and_then(|ns| conv.admit(a, ns, n, &mut out.records))
            {
                Ok(_) => admitted.push(conv.id),
                Err(e) => {
                    tracing::debug!(conversation = %conv.id, error = %e, "noise not admitted")
                }
            }
        }
        for id in admitted {
            self.active.insert(id);
            metrics::counter!("router_noise_envelopes_total").increment(1);
        }
    }

    fn schedule(&mut self, s: usize, now: Millis, out: &mut Output) {
        let Some(link) = self.links.get(s) else {
            return;
        };
        if link.in_flight >= self.max_in_flight || !link.backoff.ready(now) {
            return;
        }
        let max_batch = self.config.max_batch.max(1);
        let mut opens = Vec::new();
        let mut open_ids = Vec::new();
        let mut items = Vec::new();
        let mut request = pb::AttestRequest::default();
        let mut idle = Vec::new();
        for id in &self.active {
            let Some(conv) = self.conversations.get(id) else {
                idle.push(*id);
                continue;
            };
            let all_opened = conv.opened.iter().all(|o| *o);
            let all_attested = conv.progress.iter().all(|p| *p >= conv.next);
            if all_opened && all_attested && conv.pending.is_empty() {
                idle.push(*id);
                continue;
            }
            let ready = conv.backoff.get(s).is_none_or(|b| b.ready(now));
            if !ready {
                continue;
            }
            let opened = conv.opened.get(s).copied().unwrap_or(false);
            if !opened {
                if let Some(e) = conv.epochs.first() {
                    opens.push(pb::OpenConversationRequest {
                        conversation_id: id.to_vec(),
                        slots: Some(pb::SlotSet::from(&e.slots)),
                    });
                    open_ids.push(*id);
                }
                continue;
            }
            let progress = conv.progress.get(s).copied().unwrap_or(Index(0));
            let start = self
                .sent
                .get(s)
                .and_then(|m| m.get(id))
                .copied()
                .map_or(progress, |sent| sent.max(progress));
            for (index, p) in conv.pending.range(start..) {
                if items.len() >= max_batch {
                    break;
                }
                let Some(tag) = p.stored.submission_tags.get(s) else {
                    continue;
                };
                request.items.push(pb::AttestItem {
                    envelope: Some(pb::EnvelopeSummary::from(&p.stored.envelope.summary())),
                    submission_tag: tag.to_vec(),
                    index: index.0,
                    previous_head: p.stored.previous_head.to_vec(),
                    next_slots: p.stored.next_slots.as_ref().map(pb::SlotSet::from),
                });
                items.push((
                    JobItem {
                        conversation: *id,
                        index: *index,
                    },
                    p.hash,
                ));
            }
            if items.len() >= max_batch {
                break;
            }
        }
        for id in idle {
            self.active.remove(&id);
        }
        if opens.is_empty() && items.is_empty() {
            return;
        }
        let id = self.next_job;
        self.next_job += 1;
        // A job pipelined behind one still in flight continues its stream.
        let follows = if items.is_empty() {
            None
        } else {
            self.in_flight
                .get(s)
                .and_then(|q| q.iter().rev().find(|f| !f.items.is_empty()))
                .map(|f| f.id)
        };
        if let Some(link) = self.links.get_mut(s) {
            link.in_flight += 1;
        }
        if let Some(sent) = self.sent.get_mut(s) {
            for (item, _) in &items {
                sent.insert(item.conversation, Index(item.index.0 + 1));
            }
        }
        if let Some(queue) = self.in_flight.get_mut(s) {
            queue.push_back(InFlight {
                id,
                opens: open_ids,
                items: items.clone(),
            });
        }
        metrics::gauge!("router_attest_batch_items", "server" => s.to_string())
            .set(items.len() as f64);
        out.effects.push(Effect::Job(ServerJob {
            id,
            server: u32::try_from(s).unwrap_or(u32::MAX),
            opens,
            items: items.into_iter().map(|(i, _)| i).collect(),
            request,
            follows,
        }));
    }

    /// An order server's answers to a job. Everything this sends (tags,
    /// deliveries and acknowledgements of attested indices, refusals) may
    /// leave before the commit: see [`Output`].
    fn job_done(&mut self, r: JobResult, now: Millis, out: &mut Output) {
        let mark = out.effects.len();
        let records = out.records.len();
        self.apply_job_result(r, now, out);
        out.make_early_since(mark);
        // Dropping an envelope every server refused re-admits the ones
        // after it at new indices: that changes the log, and jobs for the
        // new indices must not leave before it is on disk.
        let pushed = out.records.get(records..).unwrap_or_default();
        if pushed.iter().all(Record::restates_answers) {
            out.from_answers += pushed.len();
        }
    }

    fn apply_job_result(&mut self, r: JobResult, now: Millis, out: &mut Output) {
        let s = r.server as usize;
        let Some(flight) = self.in_flight.get_mut(s).and_then(|queue| {
            let k = queue.iter().position(|f| f.id == r.id)?;
            queue.remove(k)
        }) else {
            tracing::warn!(
                server = s,
                job = r.id,
                "result for a job not in flight; ignored"
            );
            return;
        };
        let (base, max) = (self.config.backoff_base_ms, self.config.backoff_max_ms);
        if let Some(link) = self.links.get_mut(s) {
            link.in_flight = link.in_flight.saturating_sub(1);
        }
        let mut touched = BTreeSet::new();
        for (id, outcome) in flight.opens.iter().zip(r.opens.iter()) {
            let Some(conv) = self.conversations.get_mut(id) else {
                continue;
            };
            match outcome {
                OpenOutcome::Opened(_) | OpenOutcome::AlreadyOpen => {
                    if let Some(o) = conv.opened.get_mut(s) {
                        *o = true;
                    }
                    if let Some(b) = conv.backoff.get_mut(s) {
                        b.succeed();
                    }
                    out.records
                        .push(Record::Conversation(Box::new(conv.record())));
                    touched.insert(*id);
                }
                OpenOutcome::Failed(e) => {
                    tracing::warn!(server = s, conversation = %id, error = %e, "open failed; will retry");
                    if let Some(b) = conv.backoff.get_mut(s) {
                        b.fail(now, base, max);
                    }
                }
            }
        }
        match r.attest {
            Err(e) => {
                // Whatever was in flight is resent from the progress.
                if let Some(sent) = self.sent.get_mut(s) {
                    sent.clear();
                }
                let next_job = self.next_job;
                if let Some(link) = self.links.get_mut(s)
                    && (!flight.items.is_empty() || flight.opens.is_empty())
                    && flight.id >= link.stale_before
                {
                    // One failure backs off once, not once per job that
                    // was in flight when it happened.
                    tracing::warn!(server = s, error = %e, "order server unreachable; backing off");
                    metrics::counter!("router_order_server_failures_total", "server" => s.to_string())
                        .increment(1);
                    link.backoff.fail(now, base, max);
                    link.down = true;
                    link.stale_before = next_job;
                }
            }
            Ok(results) => {
                if let Some(link) = self.links.get_mut(s) {
                    link.backoff.succeed();
                    link.down = false;
                }
                if results.len() != flight.items.len() {
                    tracing::warn!(
                        server = s,
                        sent = flight.items.len(),
                        got = results.len(),
                        "order server answered a different number of items; retrying"
                    );
                    if let Some(link) = self.links.get_mut(s) {
                        link.backoff.fail(now, base, max);
                    }
                    if let Some(sent) = self.sent.get_mut(s) {
                        sent.clear();
                    }
                } else {
                    for ((item, hash), result) in flight.items.iter().zip(results) {
                        self.attest_result(s, item, hash, result, now, out);
                        touched.insert(item.conversation);
                        // An item that did not move the server's progress
                        // (refused, unusable, out of step): what was sent
                        // after it is sent again from the progress.
                        let progress = self
                            .conversations
                            .get(&item.conversation)
                            .and_then(|c| c.progress.get(s).copied())
                            .unwrap_or(Index(0));
                        if progress <= item.index
                            && let Some(sent) = self.sent.get_mut(s)
                        {
                            sent.remove(&item.conversation);
                        }
                    }
                }
            }
        }
        for id in touched {
            self.advance(&id, out);
        }
    }

    fn attest_result(
        &mut self,
        s: usize,
        item: &JobItem,
        hash: &EnvelopeHash,
        result: pb::AttestResult,
        now: Millis,
        out: &mut Output,
    ) {
        let n = self.config.servers.len();
        let (base, max) = (self.config.backoff_base_ms, self.config.backoff_max_ms);
        let Some(conv) = self.conversations.get_mut(&item.conversation) else {
            return;
        };
        let conv_id = conv.id;
        let progress = conv.progress.get(s).copied().unwrap_or(Index(0));
        let Some(p) = conv.pending.get_mut(&item.index) else {
            return;
        };
        if p.hash != *hash {
            // The index was freed and re-used while this job was in flight.
            return;
        }
        match result.outcome {
            Some(pb::attest_result::Outcome::Attested(a)) => {
                let check = Attestation::try_from(a)
                    .map_err(|e| e.to_string())
                    .and_then(|mut a| {
                        a.server = u32::try_from(s).unwrap_or(u32::MAX);
                        check_attestation(&a, p, conv.epochs.as_slice(), item.index)?;
                        Ok(a)
                    });
                match check {
                    Err(e) => {
                        tracing::error!(server = s, conversation = %conv_id, index = item.index.0, error = %e,
                            "order server returned an unusable attestation");
                        metrics::counter!("router_bad_attestations_total", "server" => s.to_string())
                            .increment(1);
                        if let Some(b) = conv.backoff.get_mut(s) {
                            b.fail(now, base, max);
                        }
                    }
                    Ok(a) => {
                        if item.index != progress {
                            // Not the next index for this server; already
                            // recorded or out of step. Nothing to store.
                            return;
                        }
                        if let Some(b) = conv.backoff.get_mut(s) {
                            b.succeed();
                        }
                        out.records.push(Record::Attestation {
                            conversation: conv_id,
                            attestation: a.clone(),
                        });
                        out.records.push(Record::Progress {
                            conversation: conv_id,
                            server: a.server,
                            next: Index(item.index.0 + 1),
                        });
                        if let Some(pr) = conv.progress.get_mut(s) {
                            *pr = Index(item.index.0 + 1);
                        }
                        let late = p.delivered;
                        if let Some(slot) = p.attestations.get_mut(s) {
                            *slot = Some(a.clone());
                        }
                        if p.refusals
                            .iter()
                            .flatten()
                            .any(|(r, _)| is_sender_fault(*r))
                        {
                            metrics::counter!("router_disagreements_total").increment(1);
                            tracing::warn!(conversation = %conv_id, index = item.index.0,
                                "order servers disagree on an envelope: some attested, some refused; \
                                 the refusing servers cannot progress past this index");
                        }
                        if late {
                            let recipients = recipients(&conv.epochs, p);
                            for (account, member) in recipients {
                                out.effects.push(Effect::Deliver {
                                    account,
                                    delivery: delivery::tag_update(
                                        &conv_id,
                                        item.index,
                                        member,
                                        std::slice::from_ref(&a),
                                    ),
                                });
                            }
                            metrics::counter!("router_late_tags_total").increment(1);
                        }
                    }
                }
            }
            Some(pb::attest_result::Outcome::Refused(r)) => {
                let reason =
                    RefusalReason::try_from(r.reason).unwrap_or(RefusalReason::Unspecified);
                metrics::counter!("router_refusals_total", "reason" => reason.as_str_name())
                    .increment(1);
                if reason == RefusalReason::UnknownConversation {
                    if let Some(b) = conv.backoff.get_mut(s) {
                        b.fail(now, base, max);
                    }
                    if let Some(o) = conv.opened.get_mut(s) {
                        *o = false;
                    }
                    out.records
                        .push(Record::Conversation(Box::new(conv.record())));
                    return;
                }
                if item.index != progress {
                    // Items sent after a refused one (in its batch or in
                    // later jobs in flight) are refused as out of order;
                    // they are simply sent again, without another backoff.
                    return;
                }
                if let Some(b) = conv.backoff.get_mut(s) {
                    b.fail(now, base, max);
                }
                if is_sender_fault(reason) {
                    if let Some(slot) = p.refusals.get_mut(s) {
                        *slot = Some((reason, r.message.clone()));
                    }
                } else {
                    tracing::warn!(server = s, conversation = %conv_id, index = item.index.0,
                        reason = reason.as_str_name(), message = %r.message, server_next = r.next_index,
                        "order server refused an item; retrying with backoff");
                }
                let all_refused = p.attested() == 0
                    && p.refusals.len() == n
                    && p.refusals
                        .iter()
                        .all(|r| r.as_ref().is_some_and(|(r, _)| is_sender_fault(*r)));
                if all_refused {
                    let reasons = p
                        .refusals
                        .iter()
                        .enumerate()
                        .filter_map(|(server, r)| {
                            r.as_ref().map(|(reason, message)| ServerRefusal {
                                server,
                                reason: *reason,
                                message: message.clone(),
                            })
                        })
                        .collect();
                    let error = RouterError::RefusedByEveryServer(reasons);
                    let failed = conv.drop_from(item.index, &error, n, &mut out.records);
                    for sent in &mut self.sent {
                        sent.remove(&conv_id);
                    }
                    for b in &mut conv.backoff {
                        b.succeed();
                    }
                    metrics::counter!("router_dropped_envelopes_total").increment(1);
                    for (tickets, error, submitter) in failed {
                        if let Some(a) = submitter
                            && let Some(c) = self.pending_per_account.get_mut(&a)
                        {
                            *c = c.saturating_sub(1);
                        }
                        for t in tickets {
                            out.reply(t, Err(error.clone()));
                        }
                    }
                }
            }
            None => {
                tracing::warn!(server = s, "attest result without an outcome");
                if let Some(b) = conv.backoff.get_mut(s) {
                    b.fail(now, base, max);
                }
            }
        }
    }

    /// In relay-only mode (no order servers, the benchmark baseline) nothing
    /// waits for attestations: creators, senders and members are answered
    /// at once, with the same commit as the records.
    fn advance_relay(&mut self, id: &ConversationId, out: &mut Output) {
        if self.config.servers.is_empty() {
            self.advance(id, out);
        }
    }

    /// Answers waiting creators, delivers newly quorate indices, acks their
    /// senders, and forgets envelopes every server has attested.
    fn advance(&mut self, id: &ConversationId, out: &mut Output) {
        let quorum = self.config.quorum;
        let n = self.config.servers.len();
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        if !conv.create_tickets.is_empty() && conv.opened.iter().filter(|o| **o).count() >= quorum {
            let response = created_response(conv);
            for t in std::mem::take(&mut conv.create_tickets) {
                out.reply(t, Ok(response.clone()));
            }
        }
        let q = conv.quorate(quorum);
        while conv.delivered < q {
            let i = conv.delivered;
            let Some(p) = conv.pending.get(&i) else {
                tracing::error!(conversation = %id, index = i.0, "quorate index not in memory");
                break;
            };
            let atts: Vec<Attestation> = p.attestations.iter().flatten().cloned().collect();
            let views = delivery::Views::new(id, i, &p.stored.envelope, &p.stored.previous_head);
            for (account, member) in recipients(&conv.epochs, p) {
                out.effects.push(Effect::Deliver {
                    account,
                    delivery: views.member(member, &atts),
                });
            }
            let hash = p.hash;
            let submitter = p.stored.submitter;
            let tickets = conv
                .pending
                .get_mut(&i)
                .map(|p| {
                    p.delivered = true;
                    std::mem::take(&mut p.tickets)
                })
                .unwrap_or_default();
            for t in tickets {
                out.reply(t, Ok(submitted(&hash)));
            }
            if let Some(a) = submitter
                && let Some(c) = self.pending_per_account.get_mut(&a)
            {
                *c = c.saturating_sub(1);
            }
            metrics::counter!("router_deliveries_total").increment(1);
            conv.delivered = Index(i.0 + 1);
        }
        let delivered = conv.delivered;
        conv.pending
            .retain(|i, p| !(*i < delivered && p.attested() == n));
    }
}

/// Records `id` under every account holding a slot of `epoch`.
fn index_holders(
    index: &mut HashMap<AccountId, BTreeSet<ConversationId>>,
    id: ConversationId,
    epoch: &EpochSlots,
) {
    for a in epoch.holders.iter().flatten() {
        index.entry(*a).or_default().insert(id);
    }
}

/// The per-account index of conversations, rebuilt from their epochs
/// (installed and prepared) after a restart.
fn member_index<'a>(
    conversations: impl Iterator<Item = &'a Conversation>,
) -> HashMap<AccountId, BTreeSet<ConversationId>> {
    let mut index = HashMap::new();
    for c in conversations {
        for e in c.epochs.iter().chain(c.prepared.iter()) {
            index_holders(&mut index, c.id, e);
        }
    }
    index
}

fn submitted(hash: &EnvelopeHash) -> Response {
    Response::Submitted(pb::SubmitResponse {
        envelope_hash: hash.to_vec(),
    })
}

fn created_response(conv: &Conversation) -> Response {
    let e = conv.epochs.first();
    Response::Created(pb::CreateConversationResponse {
        slots: e.map(|e| pb::SlotSet::from(&e.slots)),
        assignments: e.map(EpochSlots::assignments).unwrap_or_default(),
    })
}

/// Who receives an index, and with which slots.
fn recipients(
    epochs: &[EpochSlots],
    p: &crate::conversation::Pending,
) -> BTreeMap<AccountId, MemberSlots> {
    let h = p.stored.envelope.header();
    let at = |e: Epoch| usize::try_from(e.0).ok().and_then(|e| epochs.get(e));
    let mut r: BTreeMap<AccountId, MemberSlots> = BTreeMap::new();
    if let Some(e) = at(h.epoch()) {
        for (a, slot) in e.members() {
            r.entry(a).or_default().slot = Some(slot);
        }
    }
    if h.kind() == EnvelopeKind::Update
        && let Some(e) = h.epoch().next().and_then(at)
    {
        for (a, slot) in e.members() {
            r.entry(a).or_default().next_slot = Some(slot);
        }
    }
    r
}

/// Checks an order server's attestation against what the router computed.
fn check_attestation(
    a: &Attestation,
    p: &crate::conversation::Pending,
    epochs: &[EpochSlots],
    index: Index,
) -> Result<(), String> {
    if a.index != index {
        return Err(format!("attested index {} for item {}", a.index, index));
    }
    if a.head != p.stored.head {
        return Err("attested head differs from the router's chain".into());
    }
    let h = p.stored.envelope.header();
    let slots = usize::try_from(h.epoch().0)
        .ok()
        .and_then(|e| epochs.get(e))
        .map(|e| e.slots.len())
        .unwrap_or(0);
    if a.tags.len() != slots {
        return Err(format!("{} tags for {slots} slots", a.tags.len()));
    }
    let next = p.stored.next_slots.as_ref().map_or(0, |s| s.len());
    if a.next_tags.len() != next {
        return Err(format!(
            "{} next-epoch tags for {next} slots",
            a.next_tags.len()
        ));
    }
    Ok(())
}

/// A noise envelope from a random padding slot of the tail epoch, with the
/// submission tags the router computes with that slot's secret.
fn noise_envelope(
    conv: &Conversation,
    now: Millis,
    servers: &[OrderServerKey],
    rng: &mut impl CryptoRng,
) -> Option<Admission> {
    let tail = conv.tail_epoch()?;
    if tail.padding.is_empty() {
        return None;
    }
    let pick = rng.random_range(0..tail.padding.len());
    let (slot, secret) = tail.padding.get(pick)?;
    let last = conv.last_seq.get(&(tail.epoch, *slot)).map_or(0, |s| s.0);
    // Time-based sequences stay increasing across restarts.
    let sequence = Sequence(last.saturating_add(1).max(now));
    let mut commitment = [0u8; 32];
    rng.fill_bytes(&mut commitment);
    let body = Vec::new();
    let header = EnvelopeHeader::new(HeaderFields {
        conversation: conv.id,
        epoch: tail.epoch,
        kind: EnvelopeKind::Noise,
        sender: *slot,
        sequence,
        last_seen: conv.delivered.0.checked_sub(1).map(Index),
        body_hash: BodyHash::of(&body),
        key_commitment: KeyCommitment::from_bytes(commitment),
        slot_set_hash: None,
    })
    .ok()?;
    let envelope = Envelope::new(header, body, Vec::new()).ok()?;
    let hash = envelope.hash();
    let slot_secret = secret.slot_secret();
    let tags = servers
        .iter()
        .map(|k| {
            slot_secret
                .mac_keys(k)
                .map(|m| m.submit(&hash, sequence))
                .ok()
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Admission {
        envelope,
        submission_tags: tags,
        submitter: None,
    })
}

/// Converts a stored envelope and its attestations into a member's delivery.
pub fn stored_view(
    conversation: &ConversationId,
    index: Index,
    stored: &StoredEnvelope,
    member: MemberSlots,
    attestations: &[Attestation],
) -> pb::Delivery {
    delivery::view(
        conversation,
        index,
        &stored.envelope,
        &stored.previous_head,
        member,
        attestations,
    )
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
