//! The router's state machine: commands in, records and effects out.
//!
//! The core owns the directory, the conversations and the fan-out state. It
//! does no I/O: time and randomness are arguments, and everything it wants
//! done comes back in an [`Output`]: [`Record`]s the shell must commit
//! durably, then [`Effect`]s (replies, order server jobs, deliveries) the
//! shell performs only after that commit. Feeding a batch of commands before
//! one commit is group commit.

use crate::conversation::{
    self, Admission, Conversation, Waiting, envelope_bytes, index_holders, member_index,
    noise_envelope,
};
pub use crate::delivery::stored_view;
use crate::delivery::{self, MemberSlots, recipients};
use crate::directory::Directory;
use crate::error::PendingScope;
use crate::error::RouterError;
use crate::fanout::{Fanout, JobResult, Notice, ServerJob, Work};
use crate::limits::{Limits, RateKey, RateLimiter};
use crate::record::Record;
use crate::request::{KeyUpload, NewAccount, SignIn};
pub use crate::request::{Submission, parse_members, parse_submit};
use crate::slots::{EpochSlots, Placement, assign_slots};
use crate::store::{Durability, Snapshot};
use crate::{Millis, Ticket};
use grompi_proto::mac::Attestation;
use grompi_proto::pb;
use grompi_proto::{
    AccountId, ConversationId, Envelope, EnvelopeHash, EnvelopeKind, Epoch, Index, OrderServerKey,
    ProofNonce, Sequence, SlotIndex, SlotRole,
};
use rand::CryptoRng;
use std::collections::{BTreeSet, HashMap};

/// What the core needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Order servers' public keys, in descriptor order.
    pub servers: Vec<OrderServerKey>,
    /// Attestations needed before delivery and acknowledgement.
    pub quorum: usize,
    /// The configured `[limits]`: request rates, caps on what the router keeps, the disk reserve.
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
    /// Create a conversation with a caller-chosen id and its members (the caller among them).
    CreateConversation(ConversationId, Vec<(AccountId, SlotRole)>),
    /// Prepare the next epoch.
    PrepareUpdate(ConversationId, Vec<(AccountId, SlotRole)>),
    /// Submit an envelope.
    Submit(Submission),
    /// Plan a fetch.
    Fetch {
        /// The conversation to read; the caller must hold or have held a slot in it.
        conversation: ConversationId,
        /// First index to read.
        from: Index,
        /// Most deliveries (clamped to 1..=`limits.max_fetch`).
        limit: u32,
    },
    /// Plan a history page.
    FetchHistory {
        /// The conversation to read; the caller must hold a slot in its
        /// current epoch.
        conversation: ConversationId,
        /// First index to read.
        from: Index,
        /// Most envelopes (clamped to 1..=`limits.max_fetch`).
        limit: u32,
    },
    /// Start a live subscription.
    Subscribe,
    /// Plan a head-proof relay.
    ProveHeads {
        /// The conversation whose head the order servers are to prove; the caller must be a member.
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
        /// What is asked, as the account the token authenticates.
        call: Call,
    },
    /// An order server job ended.
    JobDone(JobResult),
    /// The shell measured the free space of the data directory's file
    /// system: `free` bytes. Below `limits.disk_reserve_bytes` the core
    /// refuses what would grow storage at a member's request (new
    /// envelopes, conversations, updates, accounts, keys) and stops noise,
    /// until a later measurement is above it again. No reply.
    DiskSpace {
        /// Free bytes.
        free: u64,
    },
}

/// What the shell reads from storage to answer a FetchHistory: whole
/// envelopes but for the members' blocks (`docs/PROTOCOL.md` section 4.6).
#[derive(Debug, Clone)]
pub struct HistoryPlan {
    /// The caller, whose bytes in flight the page counts against.
    pub account: AccountId,
    /// The conversation to read (the caller holds a slot in its current
    /// epoch).
    pub conversation: ConversationId,
    /// First index to read.
    pub from: Index,
    /// One past the last index to read.
    pub to: Index,
    /// How many indices the router has delivered in the conversation.
    pub stored: Index,
    /// The first index still stored when the plan was made (the retention
    /// setting removed those below it; 0: none removed). `from` is at or
    /// above it.
    pub first_stored: Index,
}

/// What the shell reads from storage to answer a Fetch.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// The caller, whose bytes in flight the page counts against.
    pub account: AccountId,
    /// The conversation to read (the caller holds or held a slot in it).
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

/// What the shell reads from storage to answer a resubmission of an
/// envelope no longer in memory: whether the envelope a member sent from
/// `slot` of `epoch` with `sequence` (below that slot's last one) is the
/// one with `hash` ([`crate::store::EnvelopeReader::admitted`]). The shell
/// reads it after the batch's commit, off the core task and the async threads,
/// and replies with [`SequenceLookup::answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceLookup {
    /// The conversation.
    pub conversation: ConversationId,
    /// The envelope's epoch.
    pub epoch: Epoch,
    /// Its sender slot, which the caller holds in `epoch`.
    pub slot: SlotIndex,
    /// Its sequence, below the last one admitted from the slot.
    pub sequence: Sequence,
    /// The last sequence admitted from the slot (for the refusal).
    pub last: Sequence,
    /// The hash of the envelope submitted.
    pub hash: EnvelopeHash,
}

impl SequenceLookup {
    /// The reply, given what storage holds for the key: the same success
    /// as any idempotent resubmission when the envelope admitted with this
    /// sequence is the one submitted; otherwise the refusal of a sequence
    /// that is not above the slot's last (nothing stored under it: never
    /// admitted, or removed by the retention setting; another envelope: a
    /// replay).
    pub fn answer(
        &self,
        stored: Result<Option<crate::record::Admitted>, crate::store::StoreError>,
    ) -> Result<Response, RouterError> {
        match stored {
            Ok(Some(a)) if a.hash == self.hash => Ok(submitted(&self.hash)),
            Ok(_) => Err(RouterError::Inadmissible(
                grompi_proto::Misbehaviour::SequenceNotIncreasing {
                    slot: self.slot,
                    last: self.last,
                    got: self.sequence,
                },
            )),
            Err(e) => Err(RouterError::Storage(format!(
                "reading which envelope was admitted with sequence {} from slot {} of epoch {}: {e}",
                self.sequence.0, self.slot.0, self.epoch.0
            ))),
        }
    }
}

/// What the shell relays for ProveHeads.
#[derive(Debug, Clone)]
pub struct ProvePlan {
    /// The conversation whose head is to be proved.
    pub conversation: ConversationId,
    /// The caller's slot in the newest epoch delivery has reached (its Update, if any, delivered).
    pub slot: SlotIndex,
    /// The member's nonce; a proof whose statement names another is discarded.
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
    /// FetchHistory: what to read.
    History(HistoryPlan),
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
    /// Read storage as the lookup says, then answer the waiting request
    /// with [`SequenceLookup::answer`]. Never early: it waits for the
    /// batch's commit like a reply.
    Lookup(Ticket, SequenceLookup),
    /// Deliver to one account's live subscribers.
    Deliver {
        /// Recipient.
        account: AccountId,
        /// The delivery (boxed: a delivery is far larger than the other
        /// effects).
        delivery: Box<pb::Delivery>,
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
    /// effects. So may the retention setting's removals made while
    /// applying answers ([`Record::is_retention`]): a router that loses
    /// them still stores those rows and removes them again. Any other
    /// record (an envelope admitted or dropped, a tail moved) makes the
    /// commit [`Durability::Now`], which also makes every deferred commit
    /// before it durable.
    pub fn durability(&self) -> Durability {
        if self.records.len() > self.from_answers {
            Durability::Now
        } else {
            Durability::Deferred
        }
    }

    fn reply(&mut self, ticket: Ticket, r: Result<Response, RouterError>) {
        if let Err(e) = &r {
            e.count_cap();
        }
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
    /// The fan-out state: links, jobs in flight, what was sent.
    fanout: Fanout,
    rate: RateLimiter,
    /// Per submitter: its envelopes waiting for a quorum, and their bytes.
    pending_per_account: HashMap<AccountId, Waiting>,
    /// Bytes held for the order servers over all conversations (the sum
    /// of their [`Conversation::held_bytes`]).
    held_bytes: usize,
    /// Per account: conversations it created.
    created_by: HashMap<AccountId, usize>,
    /// Free bytes last measured on the data directory's file system, when
    /// below the reserve.
    disk_low: Option<u64>,
    last_prune: Millis,
}

impl RouterCore {
    /// Restores the core from a store snapshot (empty for a new router).
    pub fn restore(config: CoreConfig, snapshot: Snapshot) -> Result<Self, RouterError> {
        let n = config.servers.len();
        let mut directory = Directory::with_limits(&config.limits);
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
        let (mut conversations, pending_per_account) = conversation::restore_all(
            snapshot.conversations,
            snapshot.tails,
            snapshot.progress,
            snapshot.envelopes,
            snapshot.slot_tails,
            n,
            config.quorum,
        );
        for (c, first) in snapshot.first_stored {
            if let Some(conv) = conversations.get_mut(&c) {
                conv.restore_first_stored(first);
            }
        }
        let active = conversations.keys().copied().collect();
        let mut created_by: HashMap<AccountId, usize> = HashMap::new();
        let mut held_bytes = 0;
        for c in conversations.values_mut() {
            *created_by.entry(c.creator()).or_default() += 1;
            c.counted_bytes = c.held_bytes();
            held_bytes += c.counted_bytes;
        }
        Ok(Self {
            rate: RateLimiter::new(
                config.limits.requests_per_second,
                config.limits.request_burst,
            ),
            member_of: member_index(conversations.values()),
            fanout: Fanout::new(
                n,
                config.max_batch,
                config.backoff_base_ms,
                config.backoff_max_ms,
            ),
            config,
            directory,
            conversations,
            active,
            pending_per_account,
            held_bytes,
            created_by,
            disk_low: None,
            last_prune: 0,
        })
    }

    /// Lets up to `jobs` jobs be in flight to one order server at once.
    /// Only for a shell whose transport delivers one server's jobs in the
    /// order they were sent and answers them in that order (the `AttestStream`
    /// RPC): a server must never see index i+1 before index i. The default
    /// is 1, which is safe over any transport.
    pub fn pipeline_jobs(&mut self, jobs: usize) {
        self.fanout.max_in_flight = jobs.max(1);
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

    /// Bytes held in memory for envelopes waiting for order servers, over
    /// all conversations (whole envelopes until delivered, summaries
    /// after).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Bytes of `account`'s envelopes waiting for a quorum.
    pub fn pending_bytes_of(&self, account: &AccountId) -> usize {
        self.pending_per_account.get(account).map_or(0, |w| w.bytes)
    }

    /// Checks the bytes held against the conversations' entries, and the
    /// per-account bytes against their undelivered envelopes (tests).
    #[cfg(test)]
    pub(crate) fn audit_held(&self) -> Result<(), String> {
        let mut total = 0;
        let mut per_account: HashMap<AccountId, usize> = HashMap::new();
        for c in self.conversations.values() {
            c.audit_held()?;
            if c.counted_bytes != c.held_bytes() {
                return Err(format!(
                    "{}: counted {} of {}",
                    c.id(),
                    c.counted_bytes,
                    c.held_bytes()
                ));
            }
            total += c.held_bytes();
            for p in c.pending.values().filter(|p| !p.delivered) {
                if let Some(a) = p.stored.submitter {
                    *per_account.entry(a).or_default() += p.size;
                }
            }
        }
        if total != self.held_bytes {
            return Err(format!(
                "held_bytes {} but conversations hold {total}",
                self.held_bytes
            ));
        }
        for (a, w) in &self.pending_per_account {
            let want = per_account.get(a).copied().unwrap_or(0);
            if w.bytes != want {
                return Err(format!("{a}: {} bytes counted, {want} waiting", w.bytes));
            }
        }
        Ok(())
    }

    /// Brings the total of held bytes up to date with conversation `id`.
    fn recount(&mut self, id: &ConversationId) {
        if let Some(conv) = self.conversations.get_mut(id) {
            let now = conv.held_bytes();
            self.held_bytes = self.held_bytes.saturating_sub(conv.counted_bytes) + now;
            conv.counted_bytes = now;
        }
    }

    /// Whether order server `server` is currently failing.
    pub fn server_down(&self, server: usize) -> bool {
        self.fanout.links.get(server).is_some_and(|l| l.down)
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
                    .and_then(|()| self.disk_room())
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
            Command::DiskSpace { free } => self.disk_space(free),
        }
    }

    fn disk_space(&mut self, free: u64) {
        let reserve = self.config.limits.disk_reserve_bytes;
        let low = free < reserve;
        if low != self.disk_low.is_some() {
            if low {
                tracing::error!(
                    free,
                    reserve,
                    "disk nearly full: refusing new envelopes, conversations, accounts and keys"
                );
            } else {
                tracing::warn!(
                    free,
                    reserve,
                    "disk space above the reserve again: accepting writes"
                );
            }
        }
        self.disk_low = low.then_some(free);
        metrics::gauge!("router_disk_low").set(if low { 1.0 } else { 0.0 });
    }

    /// Whether the disk has room for what a member asks to store.
    fn disk_room(&self) -> Result<(), RouterError> {
        match self.disk_low {
            Some(free) => Err(RouterError::DiskLow {
                free,
                reserve: self.config.limits.disk_reserve_bytes,
            }),
            None => Ok(()),
        }
    }

    /// Whether the last disk measurement was below the reserve.
    pub fn disk_low(&self) -> bool {
        self.disk_low.is_some()
    }

    /// Conversations held.
    pub fn conversation_count(&self) -> usize {
        self.conversations.len()
    }

    /// The directory, for inspection.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Periodic and after-batch work: noise, then jobs for idle servers.
    pub fn poll(&mut self, now: Millis, rng: &mut impl CryptoRng, out: &mut Output) {
        if now.saturating_sub(self.last_prune) >= 60_000 {
            self.rate.prune(now);
            self.directory.prune_sessions(now, &mut out.records);
            metrics::gauge!("router_sessions").set(self.directory.session_count() as f64);
            metrics::gauge!("router_accounts").set(self.directory.account_count() as f64);
            metrics::gauge!("router_unused_keys").set(self.directory.unused_key_count() as f64);
            metrics::gauge!("router_conversations").set(self.conversations.len() as f64);
            self.pending_per_account.retain(|_, w| w.count > 0);
            metrics::gauge!("router_held_bytes").set(self.held_bytes as f64);
            self.prune_all(out);
            self.last_prune = now;
        }
        if let Some(interval) = self.config.noise_interval_ms
            && self.disk_low.is_none()
        {
            self.noise(now, interval, rng, out);
        }
        for s in 0..self.config.servers.len() {
            if let Some(job) = self
                .fanout
                .schedule(s, now, &self.conversations, &mut self.active)
            {
                out.effects.push(Effect::Job(job));
            }
        }
    }

    fn noise(&mut self, now: Millis, interval: Millis, rng: &mut impl CryptoRng, out: &mut Output) {
        let n = self.config.servers.len();
        let servers = self.config.servers.clone();
        let idle = self.config.limits.noise_idle_ms;
        let per_conversation = self.config.limits.max_pending_bytes_per_conversation;
        if self.held_bytes >= self.config.limits.max_pending_bytes {
            return;
        }
        let mut admitted = Vec::new();
        for conv in self.conversations.values_mut() {
            if conv.held_bytes() >= per_conversation {
                continue;
            }
            if conv.next() == Index(0) || now < conv.next_noise {
                continue;
            }
            if now.saturating_sub(conv.last_submission) >= idle {
                // Idle: no noise until a member submits again.
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
                Ok(_) => admitted.push(conv.id()),
                Err(e) => {
                    tracing::debug!(conversation = %conv.id(), error = %e, "noise not admitted")
                }
            }
        }
        for id in admitted {
            self.recount(&id);
            self.active.insert(id);
            metrics::counter!("router_noise_envelopes_total").increment(1);
        }
    }

    /// An order server's answers to a job (applied by the fan-out engine),
    /// then the deliveries they make possible. Everything this sends (tags,
    /// deliveries and acknowledgements of attested indices, refusals) may
    /// leave before the commit: see [`Output`].
    fn job_done(&mut self, r: JobResult, now: Millis, out: &mut Output) {
        let mark = out.effects.len();
        let records = out.records.len();
        let mut work = Work {
            conversations: &mut self.conversations,
            pending_per_account: &mut self.pending_per_account,
            records: &mut out.records,
            notices: Vec::new(),
        };
        let touched = self.fanout.apply_job_result(r, now, &mut work);
        for notice in work.notices {
            out.effects.push(match notice {
                Notice::Deliver { account, delivery } => Effect::Deliver { account, delivery },
                Notice::Failed(ticket, error) => Effect::Reply(ticket, Err(error)),
            });
        }
        for id in touched {
            self.advance(&id, out);
        }
        out.make_early_since(mark);
        // Dropping an envelope every server refused re-admits the ones
        // after it at new indices: that changes the log, and jobs for the
        // new indices must not leave before it is on disk.
        // Removing what the retention setting no longer keeps is redone
        // after a crash that lost it, so it does not make the commit wait
        // for the disk either.
        let pushed = out.records.get(records..).unwrap_or_default();
        if pushed
            .iter()
            .all(|r| r.restates_answers() || r.is_retention())
        {
            out.from_answers += pushed.len();
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
            if let Some(envelope) = p.stored.envelope.whole() {
                let views = delivery::Views::new(id, i, envelope, &p.stored.previous_head);
                for (account, member) in recipients(conv.epochs(), p) {
                    out.effects.push(Effect::Deliver {
                        account,
                        delivery: Box::new(views.member(member, &atts)),
                    });
                }
            } else {
                // Never the case: an entry is summarised only once
                // delivered. Members would fetch it from storage.
                tracing::error!(conversation = %id, index = i.0, "quorate index held only as a summary");
            }
            let hash = p.hash;
            let submitter = p.stored.submitter;
            let size = p.size;
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
                && let Some(w) = self.pending_per_account.get_mut(&a)
            {
                w.count = w.count.saturating_sub(1);
                w.bytes = w.bytes.saturating_sub(size);
            }
            metrics::counter!("router_deliveries_total").increment(1);
            conv.delivered = Index(i.0 + 1);
            // Only the summary waits for the servers that have not attested.
            conv.reweigh(i);
        }
        conv.forget_attested(n);
        let removed = conv.prune(
            self.config.limits.keep_envelopes,
            n,
            PRUNE_BATCH,
            &mut out.records,
        );
        if removed > 0 {
            metrics::counter!("router_envelopes_removed_total").increment(removed);
        }
        self.recount(id);
    }

    /// Removes what the retention setting no longer keeps in every
    /// conversation, at most [`PRUNE_BATCH`] indices in all: after the
    /// setting was lowered, or in a conversation no order server answer
    /// touched since (deliveries remove as they go).
    fn prune_all(&mut self, out: &mut Output) {
        let keep = self.config.limits.keep_envelopes;
        if keep == 0 {
            return;
        }
        let n = self.config.servers.len();
        let mut budget = PRUNE_BATCH;
        for conv in self.conversations.values_mut() {
            if budget == 0 {
                break;
            }
            let removed = conv.prune(keep, n, budget, &mut out.records);
            budget -= removed;
            if removed > 0 {
                metrics::counter!("router_envelopes_removed_total").increment(removed);
            }
        }
    }
}

/// The most indices the retention setting removes in one pass (one
/// conversation's advance, or the periodic pass over all of them), so that
/// lowering the setting on a large store does not make one huge commit.
pub const PRUNE_BATCH: u64 = 1024;

mod calls;
use calls::{created_response, submitted};

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
