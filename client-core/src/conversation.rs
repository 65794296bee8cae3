//! One conversation as seen by one member: a sans-IO state machine.
//!
//! Inputs: deliveries ([`Conversation::receive`]), contents to send
//! ([`Conversation::compose`]), head proofs, stall reports. Outputs: the
//! accepted transcript, the membership, [`Event`]s for the application and
//! [`Alert`]s for every misbehaviour detected. Randomness comes from the
//! caller; there is no clock.
//!
//! # Acceptance
//!
//! Index `i` is accepted when it is the next index, its envelope hash
//! (recomputed from the header and all digests) chained onto the last
//! accepted head gives `h_i`, and at least `quorum` distinct pinned order
//! servers supplied a tag that verifies under this member's slot keys for
//! `(conversation, epoch, i, h_i)`. Deliveries ahead of the next index wait
//! in a bounded buffer. Nothing is ever accepted out of order, twice, or in
//! place of an accepted index; acceptance never depends on decryption, so
//! all honest members accept the same chain whatever the sender did.
//!
//! Accepted indices are then opened: the block is decrypted in the pairwise
//! session of the account holding the sender slot, bound to the envelope
//! and checked against the key commitment, and the body is decrypted and
//! parsed. Setups and Updates drive [`Membership`].

mod persist;

pub use persist::STATE_VERSION;

use crate::alert::Alert;
use crate::body::{self, BlockPlaintext, BodyContext};
use crate::codec::DecodeError;
use crate::compose::{self, Composed, Sending};
use crate::content::{Change, Content, MemberEntry, SetupContent};
use crate::delivery::{Delivery, Incoming, MAX_ATTESTATIONS, Received, TagUpdate};
use crate::errors::ClientError;
use crate::head_proof::{self, HeadProofOutcome, NotProvedReason, ProvedHead};
use crate::keyring::{OrderKeyring, SlotMacKeys};
use crate::membership::Membership;
use crate::pairwise::Pairwise;
use crate::receipt::{self, ReceiptCheck};
use crate::transcript::{AttestationStatus, Entry, Transcript};
use grompi_proto::limits::MAX_ORDER_SERVERS;
use grompi_proto::mac::{Attestation, AttestationStatement, HeadProof};
use grompi_proto::{
    AccountId, BlockDigest, ConversationId, CoreHash, EnvelopeKind, Epoch, Head, Index,
    Misbehaviour, NetworkDescriptor, OrderServerKey, ProofNonce, Sequence, SlotIndex, SlotKey,
    SlotSet, WireError,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Default bound on buffered (not yet accepted) deliveries.
pub const DEFAULT_MAX_BUFFERED: usize = 1024;
/// Default bound on distinct envelopes buffered for one index.
pub const DEFAULT_MAX_CANDIDATES: usize = 4;
/// Most alerts and events kept before the oldest are dropped (and counted).
pub const MAX_QUEUED: usize = 4096;
/// Most accounts without a pairwise session whose pre-key messages a
/// conversation opens before its Setup or the Update adding this member is
/// accepted (each one opened stores an inbound Olm session): a router's
/// puppets cannot grow the session store without bound.
pub const MAX_CANDIDATE_PEERS: usize = 8;

/// The network parameters a conversation checks against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationConfig {
    /// Pinned order server keys, in descriptor order.
    pub servers: Vec<OrderServerKey>,
    /// How many servers must attest an index.
    pub quorum: usize,
    /// Bound on buffered deliveries.
    pub max_buffered: usize,
    /// Bound on distinct envelopes buffered per index.
    pub max_candidates: usize,
}

impl ConversationConfig {
    /// The parameters of a network descriptor.
    pub fn from_descriptor(d: &NetworkDescriptor) -> Self {
        Self::new(
            d.order_servers.iter().map(|s| s.public_key).collect(),
            d.quorum,
        )
    }

    /// Parameters with default bounds. The quorum is clamped to 1..=N.
    pub fn new(servers: Vec<OrderServerKey>, quorum: usize) -> Self {
        let n = servers.len().min(MAX_ORDER_SERVERS);
        Self {
            servers,
            quorum: quorum.clamp(1, n.max(1)),
            max_buffered: DEFAULT_MAX_BUFFERED,
            max_candidates: DEFAULT_MAX_CANDIDATES,
        }
    }

    fn all_servers(&self) -> u32 {
        let n = self.servers.len().min(MAX_ORDER_SERVERS);
        if n >= 32 { u32::MAX } else { (1u32 << n) - 1 }
    }

    /// The status of an index attested by `attested_by`.
    pub fn status(&self, attested_by: u32) -> AttestationStatus {
        let count = attested_by.count_ones() as usize;
        if attested_by & self.all_servers() == self.all_servers() {
            AttestationStatus::Full
        } else if count >= self.quorum {
            AttestationStatus::Quorum
        } else {
            AttestationStatus::Pending
        }
    }
}

/// Where a conversation is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for index 0, the Setup.
    AwaitingSetup,
    /// Waiting for the Update that adds this member.
    AwaitingJoin,
    /// Accepting indices.
    Active,
    /// This member was removed or left; nothing more is accepted.
    Removed,
    /// This member cannot follow the conversation any more (an Update it
    /// cannot open or use); the reason says why.
    Halted(&'static str),
}

/// Something the application shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An index was accepted.
    Accepted {
        /// The index.
        index: Index,
        /// Its kind.
        kind: EnvelopeKind,
        /// How well it is attested.
        status: AttestationStatus,
        /// The sender's causal context: the last index it had accepted.
        last_seen: Option<Index>,
        /// The account holding the sender slot, when this member knows the
        /// slot's holder (authenticated when the envelope is opened).
        sender: Option<AccountId>,
    },
    /// Late tags changed an accepted index's status.
    StatusChanged {
        /// The index.
        index: Index,
        /// The new status.
        status: AttestationStatus,
    },
    /// An application message.
    Message {
        /// The index.
        index: Index,
        /// The authenticated sender.
        sender: AccountId,
        /// The plaintext.
        plaintext: Vec<u8>,
        /// The sender's causal context: the last index it had accepted
        /// ("sent having seen up to #n").
        last_seen: Option<Index>,
    },
    /// The membership was established (Setup) or an Update was applied.
    MembershipChanged {
        /// The index of the Setup or Update.
        index: Index,
        /// The epoch from the next index on.
        epoch: Epoch,
        /// The change (`None` for the Setup).
        change: Option<Change>,
        /// False when the Update broke the rules and the member list stayed.
        authorized: bool,
        /// For the Update that added this member: the Admin whose word the
        /// member list rests on. A member added later never saw the list
        /// before the change, so it can check that the change adds it and
        /// that the sender is an Admin, but not that the rest of the list
        /// is unchanged; the application says so. `None` when this member
        /// checked the list itself (the Setup, later Updates).
        vouched_by: Option<AccountId>,
    },
    /// A member reported what it has processed.
    Receipt {
        /// The index of the receipt.
        index: Index,
        /// The member.
        from: AccountId,
        /// The last index it processed.
        through: Index,
    },
}

/// Counters of benign or bounded things that are not alerts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Re-deliveries of accepted indices that brought nothing new.
    pub duplicates: u64,
    /// Deliveries dropped because a buffer was full.
    pub dropped: u64,
    /// Deliveries before this member's first index, or after it left.
    pub ignored: u64,
    /// Alerts or events dropped because the application did not drain them.
    pub queue_overflow: u64,
}

/// The member's secrets a conversation uses.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Pairwise sessions.
    pub pairwise: Pairwise,
    /// Unused order keys.
    pub order_keys: OrderKeyring,
}

/// What an opened envelope said.
#[derive(Clone, Debug)]
struct Opened {
    sender: Option<AccountId>,
    content: Content,
}

/// What a Setup established, computed before its tags can be checked (a
/// member learns its slot only from the Setup).
#[derive(Clone, Debug)]
struct SetupPrep {
    membership: Membership,
    keys: SlotMacKeys,
}

/// What an Update that adds this member established.
#[derive(Clone, Debug)]
struct JoinPrep {
    change: Change,
    membership: Membership,
    keys: SlotMacKeys,
    /// The account that authenticated the Update's block.
    sender: AccountId,
}

/// One buffered envelope for an index.
#[derive(Clone, Debug)]
struct Candidate {
    received: Received,
    /// Heads before this index the router claimed (used only to join).
    previous_heads: Vec<Head>,
    setup: Option<SetupPrep>,
    join: Option<JoinPrep>,
    /// Already reported (an unattested envelope, or a joiner's delivery
    /// without its previous head): reported once.
    flagged: bool,
}

/// Everything buffered for one index not yet accepted.
#[derive(Clone, Debug, Default)]
struct PendingIndex {
    candidates: Vec<Candidate>,
    /// Attestations not yet verified (verified once the index is next).
    unverified: Vec<Attestation>,
    /// Per head, the servers whose tags on it verified.
    heads: BTreeMap<Head, u32>,
    /// Servers already reported for attesting two heads at this index.
    reported: u32,
    /// Servers already reported for a tag that does not verify (Setup
    /// phase, where tags are checked per candidate).
    blamed: u32,
}

/// Which tags of an attestation to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TagSet {
    /// The tag for this member's slot in the envelope's epoch.
    Current,
    /// The tag for this member's slot in the epoch an Update installs.
    Next,
}

/// One conversation as seen by one member.
#[derive(Clone)]
pub struct Conversation {
    id: ConversationId,
    me: AccountId,
    config: ConversationConfig,
    phase: Phase,
    transcript: Transcript,
    membership: Option<Membership>,
    keys: BTreeMap<Epoch, SlotMacKeys>,
    /// Slot keys taken from the keyring for a Setup or Update not yet
    /// accepted (a key is taken once; a second copy of the envelope reuses
    /// them).
    prepared: Vec<(SlotKey, SlotMacKeys)>,
    pending: BTreeMap<Index, PendingIndex>,
    buffered: usize,
    outbox: HashMap<CoreHash, Content>,
    early_blocks: HashMap<BlockDigest, (AccountId, BlockPlaintext)>,
    next_sequence: Sequence,
    last_sequences: BTreeMap<(Epoch, SlotIndex), Sequence>,
    processed: BTreeMap<AccountId, Index>,
    undecryptable: BTreeSet<Index>,
    head_nonce: Option<ProofNonce>,
    /// The next index when the application last reported a stall: tags
    /// still missing for it after that are withheld, not in flight.
    stalled_at: Option<Index>,
    /// Per order server, the highest head it proved to this member.
    proved: BTreeMap<u32, ProvedHead>,
    /// Accounts without a session whose blocks candidates opened (bounded
    /// by [`MAX_CANDIDATE_PEERS`]).
    candidate_peers: BTreeSet<AccountId>,
    alerts: VecDeque<Alert>,
    events: VecDeque<Event>,
    counters: Counters,
}

/// Prints the state, never plaintexts or keys.
impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("id", &self.id)
            .field("phase", &self.phase)
            .field("next_index", &self.transcript.next_index())
            .field("epoch", &self.membership.as_ref().map(Membership::epoch))
            .field("buffered", &self.buffered)
            .finish_non_exhaustive()
    }
}

fn decode_misbehaviour(e: DecodeError) -> Misbehaviour {
    let (field, reason) = match e {
        DecodeError::Truncated(f) => (f, "truncated"),
        DecodeError::Trailing(f) => (f, "trailing bytes"),
        DecodeError::TooMany { field, .. } => (field, "too many items"),
        DecodeError::Invalid { field, reason } => (field, reason),
    };
    Misbehaviour::Malformed(WireError::Invalid { field, reason })
}

/// The sender's causal context as shown: `None` when the header claims an
/// index at or after the envelope's own (impossible; reported on
/// acceptance).
fn causal_context(index: Index, header: &grompi_proto::EnvelopeHeader) -> Option<Index> {
    header.last_seen().filter(|l| *l < index)
}

fn bit(server: u32) -> u32 {
    1u32.checked_shl(server).unwrap_or(0)
}

/// Checks attestations for `index` in `epoch` under `keys` (a slot of this
/// member) without raising anything: returns, per head, the servers whose
/// tag verifies, and the servers whose tag does not. A Setup or an Update
/// adding this member is checked under the keys of each candidate envelope
/// before any is known to be genuine; only the winner's verdict becomes
/// alerts, so a forged candidate cannot make honest servers look bad.
fn check_tags(
    conversation: ConversationId,
    keys: &SlotMacKeys,
    epoch: Epoch,
    index: Index,
    attestations: &[Attestation],
    set: TagSet,
) -> (BTreeMap<Head, u32>, Vec<u32>) {
    let mut heads: BTreeMap<Head, u32> = BTreeMap::new();
    let mut bad = Vec::new();
    for a in attestations {
        let server = a.server;
        let tags = match set {
            TagSet::Current => &a.tags,
            TagSet::Next => &a.next_tags,
        };
        let tag = match tags.as_slice() {
            // No tag for this member's slot in this set: nothing to check.
            [] => continue,
            [t] => t,
            _ => {
                bad.push(server);
                continue;
            }
        };
        let statement = AttestationStatement {
            conversation,
            epoch,
            index,
            head: a.head,
        };
        match keys.server(server) {
            Some(k) if a.index == index && k.verify_attestation(&statement, tag) => {
                *heads.entry(a.head).or_default() |= bit(server);
            }
            _ => bad.push(server),
        }
    }
    (heads, bad)
}

impl Conversation {
    /// A conversation this member was invited to, waiting for its Setup.
    pub fn invited(id: ConversationId, me: AccountId, config: ConversationConfig) -> Self {
        Self {
            id,
            me,
            config,
            phase: Phase::AwaitingSetup,
            transcript: Transcript::new(id),
            membership: None,
            keys: BTreeMap::new(),
            prepared: Vec::new(),
            pending: BTreeMap::new(),
            buffered: 0,
            outbox: HashMap::new(),
            early_blocks: HashMap::new(),
            next_sequence: Sequence(1),
            last_sequences: BTreeMap::new(),
            processed: BTreeMap::new(),
            undecryptable: BTreeSet::new(),
            head_nonce: None,
            stalled_at: None,
            proved: BTreeMap::new(),
            candidate_peers: BTreeSet::new(),
            alerts: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// A conversation this member is being added to by an Update: it
    /// starts at that Update's index.
    pub fn joining(id: ConversationId, me: AccountId, config: ConversationConfig) -> Self {
        let mut c = Self::invited(id, me, config);
        c.phase = Phase::AwaitingJoin;
        c
    }

    /// Creates a conversation: `slots` and `members` are what the router
    /// assigned (this member among them, as an Admin). Returns the state and
    /// the Setup to submit.
    pub fn create(
        id: ConversationId,
        config: ConversationConfig,
        slots: SlotSet,
        members: Vec<MemberEntry>,
        rng: &mut impl rand::CryptoRng,
        secrets: &mut Secrets,
    ) -> Result<(Self, Composed), ClientError> {
        let me = secrets.pairwise.account_id();
        let content = SetupContent {
            creator: me,
            slots: slots.clone(),
            members,
        };
        let my_slot = content
            .members
            .iter()
            .find(|m| m.account == me)
            .map(|m| m.slot)
            .ok_or(ClientError::InvalidMembership(
                "the creator is not a member",
            ))?;
        let membership =
            Membership::from_setup(Epoch(0), Some(slots.hash()), my_slot, me, &content).map_err(
                |m| match m {
                    Misbehaviour::UnauthorizedUpdate(r) => ClientError::InvalidMembership(r),
                    _ => ClientError::InvalidMembership("the slot set does not match"),
                },
            )?;
        let my_key = slots
            .get(my_slot)
            .map(|e| e.key)
            .ok_or(ClientError::InvalidMembership(
                "the creator's slot is outside the slot set",
            ))?;
        // The key is used (removed from the keyring) when the Setup is
        // accepted, like every member's.
        let keys = secrets.order_keys.peek(&my_key, &config.servers)?;
        let recipients: Vec<_> = membership.holders().filter(|(_, a)| *a != me).collect();
        let content = Content::Setup(content);
        let composed = compose::compose(
            &Sending {
                conversation: id,
                epoch: Epoch(0),
                sender: my_slot,
                sequence: Sequence(1),
                last_seen: None,
                recipients: &recipients,
                mac_keys: &keys,
            },
            &content,
            rng,
            &mut secrets.pairwise,
        )?;
        let mut conv = Self::invited(id, me, config);
        conv.outbox
            .insert(composed.envelope.header().core_hash(), content);
        conv.prepared.push((my_key, keys));
        conv.next_sequence = Sequence(2);
        Ok((conv, composed))
    }

    // ---- Accessors ------------------------------------------------------

    /// The conversation id.
    pub fn id(&self) -> ConversationId {
        self.id
    }
    /// Where the conversation is in its life.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }
    /// The accepted transcript.
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }
    /// The current membership (after the Setup is accepted).
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }
    /// The attestation status of an index.
    pub fn status(&self, index: Index) -> AttestationStatus {
        match self.transcript.get(index) {
            Some(e) => self.config.status(e.attested_by),
            None => AttestationStatus::Pending,
        }
    }
    /// The next index to accept.
    pub fn next_expected(&self) -> Index {
        self.transcript.next_index()
    }
    /// Indices between the next one and the highest buffered one that have
    /// not been delivered (at most `limit`): what the shell should fetch.
    pub fn missing_indices(&self, limit: usize) -> Vec<Index> {
        let next = self.transcript.next_index();
        let Some(last) = self.pending.keys().next_back().copied() else {
            return Vec::new();
        };
        (next.0..last.0)
            .map(Index)
            .filter(|i| !self.pending.contains_key(i))
            .take(limit)
            .collect()
    }
    /// Per member, the last index its receipts say it processed.
    pub fn processed(&self) -> &BTreeMap<AccountId, Index> {
        &self.processed
    }
    /// Accepted indices this member could not open.
    pub fn undecryptable(&self) -> &BTreeSet<Index> {
        &self.undecryptable
    }
    /// Counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }
    /// Takes the queued alerts.
    pub fn drain_alerts(&mut self) -> Vec<Alert> {
        self.alerts.drain(..).collect()
    }
    /// Takes the queued events.
    pub fn drain_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    fn alert(&mut self, kind: Misbehaviour, index: Option<Index>, server: Option<u32>) {
        if self.alerts.len() >= MAX_QUEUED {
            self.alerts.pop_front();
            self.counters.queue_overflow += 1;
        }
        self.alerts.push_back(Alert {
            conversation: self.id,
            kind,
            index,
            server,
        });
    }

    fn event(&mut self, e: Event) {
        if self.events.len() >= MAX_QUEUED {
            self.events.pop_front();
            self.counters.queue_overflow += 1;
        }
        self.events.push_back(e);
    }

    // ---- Receiving ------------------------------------------------------

    /// Handles one message from the router: an envelope or late tags.
    pub fn receive_incoming(&mut self, incoming: Incoming, secrets: &mut Secrets) {
        match incoming {
            Incoming::Envelope(d) => self.receive(*d, secrets),
            Incoming::Tags(t) => self.receive_tags(t, secrets),
        }
    }

    /// Handles one delivery: checks it, buffers it, and accepts (and opens)
    /// every index that can now be accepted in order.
    pub fn receive(&mut self, delivery: Delivery, secrets: &mut Secrets) {
        let index = delivery.index;
        if delivery.conversation != self.id {
            self.alert(Misbehaviour::WrongContext, Some(index), None);
            return;
        }
        let received = match delivery.check() {
            Ok(r) => r,
            Err(m) => {
                self.alert(m, Some(index), None);
                return;
            }
        };
        // A member that took itself for a joiner (its first delivery was
        // not index 0) learns otherwise from a Setup.
        if self.phase == Phase::AwaitingJoin
            && index == Index(0)
            && received.delivery.header.kind() == EnvelopeKind::Setup
        {
            self.phase = Phase::AwaitingSetup;
        }
        if self.ignores(index) {
            self.counters.ignored += 1;
            return;
        }
        if self.is_accepted_range(index) {
            self.redelivered(received);
            return;
        }
        self.buffer_attestations(index, received.delivery.attestations.clone());
        self.buffer_candidate(received);
        self.advance(secrets);
    }

    /// Handles late tags for an index.
    pub fn receive_tags(&mut self, tags: TagUpdate, secrets: &mut Secrets) {
        let index = tags.index;
        if tags.conversation != self.id {
            self.alert(Misbehaviour::WrongContext, Some(index), None);
            return;
        }
        if self.ignores(index) {
            self.counters.ignored += 1;
            return;
        }
        if self.is_accepted_range(index) {
            self.late_tags(index, &tags.attestations, false);
            return;
        }
        self.buffer_attestations(index, tags.attestations);
        self.advance(secrets);
    }

    fn ignores(&self, index: Index) -> bool {
        matches!(self.phase, Phase::Removed | Phase::Halted(_))
            || (self.phase != Phase::AwaitingJoin && index < self.transcript.first())
    }

    fn is_accepted_range(&self, index: Index) -> bool {
        self.phase != Phase::AwaitingJoin && index < self.transcript.next_index()
    }

    /// A delivery for an index already accepted: late tags, a harmless
    /// duplicate, or a rewrite.
    fn redelivered(&mut self, received: Received) {
        let index = received.delivery.index;
        let Some(entry) = self.transcript.get(index).copied() else {
            return;
        };
        let rewritten = received.envelope_hash != entry.envelope_hash;
        if rewritten {
            self.alert(Misbehaviour::RewrittenIndex { index }, Some(index), None);
        }
        self.late_tags(index, &received.delivery.attestations, rewritten);
    }

    /// Tags for an accepted index: new servers upgrade its status; a valid
    /// tag on another head is fork evidence.
    fn late_tags(&mut self, index: Index, attestations: &[Attestation], rewritten: bool) {
        let Some(entry) = self.transcript.get(index).copied() else {
            return;
        };
        let heads = self.verify(entry.epoch, index, attestations, TagSet::Current);
        let mut valid = 0;
        for (head, servers) in heads {
            if head == entry.head {
                valid |= servers;
            } else {
                self.report_conflicts(index, servers);
            }
        }
        let new = self.transcript.add_attesters(index, valid);
        if new == 0 {
            if !rewritten {
                self.counters.duplicates += 1;
            }
            return;
        }
        let before = self.config.status(entry.attested_by);
        let after = self.config.status(entry.attested_by | new);
        if before != after {
            self.event(Event::StatusChanged {
                index,
                status: after,
            });
        }
    }

    fn report_conflicts(&mut self, index: Index, servers: u32) {
        for s in 0..32u32 {
            if servers & bit(s) != 0 {
                self.alert(
                    Misbehaviour::ConflictingHeads { index },
                    Some(index),
                    Some(s),
                );
            }
        }
    }

    /// Makes room for one more buffered item at `index`; false when the
    /// item must be dropped instead.
    fn make_room(&mut self, index: Index) -> bool {
        if self.buffered < self.config.max_buffered {
            return true;
        }
        let Some(highest) = self.pending.keys().next_back().copied() else {
            return false;
        };
        if highest <= index {
            self.counters.dropped += 1;
            return false;
        }
        if let Some(p) = self.pending.get_mut(&highest) {
            if p.unverified.pop().is_none() {
                p.candidates.pop();
            }
            if p.candidates.is_empty() && p.unverified.is_empty() {
                self.pending.remove(&highest);
            }
        }
        self.buffered = self.buffered.saturating_sub(1);
        self.counters.dropped += 1;
        true
    }

    fn buffer_attestations(&mut self, index: Index, attestations: Vec<Attestation>) {
        for a in attestations {
            let full = self
                .pending
                .get(&index)
                .is_some_and(|p| p.unverified.len() >= MAX_ATTESTATIONS);
            if full || !self.make_room(index) {
                self.counters.dropped += 1;
                continue;
            }
            self.pending.entry(index).or_default().unverified.push(a);
            self.buffered += 1;
        }
    }

    fn buffer_candidate(&mut self, received: Received) {
        let index = received.delivery.index;
        if let Some(c) = self.pending.get_mut(&index).and_then(|p| {
            p.candidates
                .iter_mut()
                .find(|c| c.received.envelope_hash == received.envelope_hash)
        }) {
            if let Some(h) = received.delivery.previous_head
                && !c.previous_heads.contains(&h)
                && c.previous_heads.len() < DEFAULT_MAX_CANDIDATES
            {
                c.previous_heads.push(h);
            }
            return;
        }
        // The per-index bound evicts the oldest envelope for that index.
        if let Some(p) = self.pending.get_mut(&index)
            && p.candidates.len() >= self.config.max_candidates
        {
            p.candidates.remove(0);
            self.buffered = self.buffered.saturating_sub(1);
            self.counters.dropped += 1;
        }
        if !self.make_room(index) {
            return;
        }
        self.pending
            .entry(index)
            .or_default()
            .candidates
            .push(Candidate {
                previous_heads: received.delivery.previous_head.into_iter().collect(),
                received,
                setup: None,
                join: None,
                flagged: false,
            });
        self.buffered += 1;
    }

    /// Verifies attestations for `index` in `epoch` with this member's keys
    /// (its slot in `epoch`, or in the next epoch for [`TagSet::Next`]);
    /// raises an alert for every tag that does not verify; returns, per
    /// head, the servers whose tags on it verify.
    fn verify(
        &mut self,
        epoch: Epoch,
        index: Index,
        attestations: &[Attestation],
        set: TagSet,
    ) -> BTreeMap<Head, u32> {
        let key_epoch = match set {
            TagSet::Current => Some(epoch),
            TagSet::Next => epoch.next(),
        };
        let Some(keys) = key_epoch.and_then(|e| self.keys.get(&e)) else {
            return BTreeMap::new();
        };
        let (heads, bad) = check_tags(self.id, keys, epoch, index, attestations, set);
        self.report_bad_tags(index, &bad);
        heads
    }

    fn report_bad_tags(&mut self, index: Index, bad: &[u32]) {
        for &server in bad {
            self.alert(
                Misbehaviour::BadAttestation { server, index },
                Some(index),
                Some(server),
            );
        }
    }

    /// Accepts every index that can be accepted now, in order.
    fn advance(&mut self, secrets: &mut Secrets) {
        if self.phase == Phase::AwaitingJoin {
            self.try_join(secrets);
        }
        loop {
            if !matches!(self.phase, Phase::AwaitingSetup | Phase::Active) {
                return;
            }
            let index = self.transcript.next_index();
            let Some(mut p) = self.pending.remove(&index) else {
                return;
            };
            self.buffered = self
                .buffered
                .saturating_sub(p.candidates.len() + p.unverified.len());
            let candidates = std::mem::take(&mut p.candidates);
            for mut c in candidates {
                if self.admissible(&mut c, secrets) {
                    p.candidates.push(c);
                }
            }
            let last = self.transcript.head();
            let (epoch, winner) = if self.phase == Phase::AwaitingSetup {
                (Epoch(0), self.setup_winner(&mut p, index, last, secrets))
            } else {
                let epoch = self.membership.as_ref().map_or(Epoch(0), Membership::epoch);
                // Tags can arrive before the envelope that gives this member
                // its keys (a tag update overtaking the delivery); they wait.
                if self.keys.contains_key(&epoch) {
                    let fresh = std::mem::take(&mut p.unverified);
                    for (head, servers) in self.verify(epoch, index, &fresh, TagSet::Current) {
                        *p.heads.entry(head).or_default() |= servers;
                    }
                }
                let winner = p.candidates.iter().position(|c| {
                    let head = last.next(&self.id, epoch, index, &c.received.envelope_hash);
                    p.heads.get(&head).is_some_and(|s| self.quorate(*s))
                });
                (epoch, winner)
            };
            // A server with valid tags on two heads at one index equivocated.
            let mut seen = 0u32;
            let mut twice = 0u32;
            for servers in p.heads.values() {
                twice |= seen & servers;
                seen |= servers;
            }
            let new_conflicts = twice & !p.reported;
            p.reported |= twice;
            self.report_conflicts(index, new_conflicts);
            let Some(w) = winner else {
                self.flag_unattested(&mut p, index);
                self.buffered += p.candidates.len() + p.unverified.len();
                if !p.candidates.is_empty() || !p.heads.is_empty() || !p.unverified.is_empty() {
                    self.pending.insert(index, p);
                }
                return;
            };
            let c = p.candidates.swap_remove(w);
            let head = last.next(&self.id, epoch, index, &c.received.envelope_hash);
            let attested_by = p.heads.get(&head).copied().unwrap_or(0);
            self.report_losers(index, &p, head, &c.received.envelope_hash);
            self.accept(c, head, attested_by, secrets);
        }
    }

    /// Once `winner` is taken at `index` on `head`: valid tags on any other
    /// head are fork evidence, and any other envelope delivered for the
    /// index was not the one the order servers attested.
    fn report_losers(
        &mut self,
        index: Index,
        p: &PendingIndex,
        head: Head,
        winner: &grompi_proto::EnvelopeHash,
    ) {
        let others = p
            .heads
            .iter()
            .filter(|(h, _)| **h != head)
            .fold(0u32, |acc, (_, s)| acc | s)
            & !p.reported;
        self.report_conflicts(index, others);
        if p.candidates
            .iter()
            .any(|o| !o.flagged && o.received.envelope_hash != *winner)
        {
            self.alert(
                Misbehaviour::UnattestedEnvelope { index },
                Some(index),
                None,
            );
        }
    }

    fn quorate(&self, servers: u32) -> bool {
        servers.count_ones() as usize >= self.config.quorum
    }

    /// Enough servers attested a head for `index`, yet no envelope
    /// delivered for it chains to that head: each such envelope is reported
    /// (once) as not the attested one.
    fn flag_unattested(&mut self, p: &mut PendingIndex, index: Index) {
        if !p.heads.values().any(|s| self.quorate(*s)) {
            return;
        }
        let mut fresh = false;
        for c in &mut p.candidates {
            fresh |= !c.flagged;
            c.flagged = true;
        }
        if fresh {
            self.alert(
                Misbehaviour::UnattestedEnvelope { index },
                Some(index),
                None,
            );
        }
    }

    /// In the Setup phase each candidate Setup names this member's slot, so
    /// the tags are checked under each candidate's own keys; the first
    /// candidate whose head a quorum tagged under its keys wins, and only
    /// then do the tags that fail under the winner's keys become alerts. A
    /// forged Setup (from a router's puppet, assigning another of this
    /// member's keys) therefore neither pins a wrong key nor blames honest
    /// servers.
    fn setup_winner(
        &mut self,
        p: &mut PendingIndex,
        index: Index,
        last: Head,
        secrets: &Secrets,
    ) -> Option<usize> {
        let mut found = None;
        for (pos, c) in p.candidates.iter().enumerate() {
            let Some(prep) = &c.setup else { continue };
            // A key another conversation used meanwhile is not ours to use.
            if !secrets.order_keys.contains(&prep.keys.slot_key()) {
                continue;
            }
            let head = last.next(&self.id, Epoch(0), index, &c.received.envelope_hash);
            let (heads, bad) = check_tags(
                self.id,
                &prep.keys,
                Epoch(0),
                index,
                &p.unverified,
                TagSet::Current,
            );
            if heads.get(&head).is_some_and(|s| self.quorate(*s)) {
                found = Some((pos, heads, bad));
                break;
            }
        }
        let (pos, heads, bad) = found?;
        p.unverified.clear();
        p.heads = heads;
        let fresh: Vec<u32> = bad
            .into_iter()
            .filter(|s| p.blamed & bit(*s) == 0)
            .collect();
        self.report_bad_tags(index, &fresh);
        Some(pos)
    }

    /// After a stall in the Setup phase: the candidate Setup whose head the
    /// most servers tagged under its own keys is the best evidence of which
    /// slot is this member's, so tags that fail under its keys are reported
    /// (once per server). Without this a server forging its tag at t = N
    /// would stop the conversation unnamed. A candidate no server tagged
    /// (a forged Setup) blames nobody.
    fn blame_setup_tags(&mut self) {
        let index = Index(0);
        let Some(mut p) = self.pending.remove(&index) else {
            return;
        };
        let genesis = Head::genesis(&self.id);
        let best = p
            .candidates
            .iter()
            .filter_map(|c| {
                let prep = c.setup.as_ref()?;
                let head = genesis.next(&self.id, Epoch(0), index, &c.received.envelope_hash);
                let (heads, bad) = check_tags(
                    self.id,
                    &prep.keys,
                    Epoch(0),
                    index,
                    &p.unverified,
                    TagSet::Current,
                );
                let good = heads.get(&head).copied().unwrap_or(0);
                (good != 0).then_some((good.count_ones(), bad))
            })
            .max_by_key(|(n, _)| *n);
        if let Some((_, bad)) = best {
            let mut fresh = Vec::new();
            for s in bad {
                if p.blamed & bit(s) == 0 {
                    p.blamed |= bit(s);
                    fresh.push(s);
                }
            }
            self.report_bad_tags(index, &fresh);
        }
        self.pending.insert(index, p);
    }

    /// Whether a candidate for the next index may be accepted at all (kind
    /// and epoch); prepares a Setup.
    fn admissible(&mut self, c: &mut Candidate, secrets: &mut Secrets) -> bool {
        let index = c.received.delivery.index;
        let kind = c.received.delivery.header.kind();
        let epoch = c.received.delivery.header.epoch();
        match self.phase {
            Phase::AwaitingSetup => {
                if kind != EnvelopeKind::Setup {
                    self.alert(
                        Misbehaviour::UnexpectedKind("index 0 must be a Setup"),
                        Some(index),
                        None,
                    );
                    return false;
                }
                if c.setup.is_none() {
                    match self.prepare_setup(&c.received, secrets) {
                        Ok(p) => c.setup = Some(p),
                        Err(m) => {
                            self.alert(m, Some(index), None);
                            return false;
                        }
                    }
                }
                true
            }
            Phase::Active => {
                if kind == EnvelopeKind::Setup {
                    self.alert(
                        Misbehaviour::UnexpectedKind("a Setup after index 0"),
                        Some(index),
                        None,
                    );
                    return false;
                }
                if Some(epoch) != self.membership.as_ref().map(Membership::epoch) {
                    self.alert(Misbehaviour::WrongContext, Some(index), None);
                    return false;
                }
                true
            }
            _ => false,
        }
    }

    /// A joining member looks for the Update that adds it: one it can open,
    /// that lists it (checked as far as a joiner can, see
    /// [`Membership::joined`]), delivered with the head before it, and whose
    /// head, chained from that previous head, a quorum tagged for this
    /// member's next-epoch slot (`next_tags`). The binding to the previous
    /// head is what ties the opened envelope to the attested one: without
    /// it a router could pair the genuine tags with an envelope of its own.
    fn try_join(&mut self, secrets: &mut Secrets) {
        let indices: Vec<Index> = self.pending.keys().copied().collect();
        for index in indices {
            let Some(mut p) = self.pending.remove(&index) else {
                continue;
            };
            // Tags for a slot in the Update's own epoch mean this member
            // already belongs to the conversation and is missing the
            // indices before (its Setup among them): it does not open the
            // Update out of order, it waits for them.
            let member_already = p.unverified.iter().any(|a| !a.tags.is_empty());
            let mut joined = None;
            let mut alerts = Vec::new();
            for (pos, c) in p.candidates.iter_mut().enumerate() {
                if member_already {
                    break;
                }
                let header = c.received.delivery.header.clone();
                if header.kind() != EnvelopeKind::Update {
                    continue;
                }
                if c.join.is_none() {
                    match self.prepare_join(&c.received, secrets) {
                        Ok(j) => c.join = Some(j),
                        // An Update with a block for this member that does
                        // not validly add it (its rules, as far as a joiner
                        // can check them): reported once, never joined.
                        Err(
                            m @ (Misbehaviour::UnauthorizedUpdate(_)
                            | Misbehaviour::SlotSetMismatch),
                        ) => {
                            if !c.flagged {
                                c.flagged = true;
                                alerts.push(m);
                            }
                            continue;
                        }
                        // Not for this member (no block, another slot).
                        Err(_) => continue,
                    }
                }
                let Some(j) = &c.join else { continue };
                if c.previous_heads.is_empty() {
                    // An Update that adds this member, delivered without the
                    // head before it: it cannot be bound to the chain.
                    if !c.flagged {
                        c.flagged = true;
                        alerts.push(Misbehaviour::Malformed(WireError::MissingField(
                            "delivery.previous_head (required to join)",
                        )));
                    }
                    continue;
                }
                let (heads, bad) = check_tags(
                    self.id,
                    &j.keys,
                    header.epoch(),
                    index,
                    &p.unverified,
                    TagSet::Next,
                );
                let quorum = self.config.quorum;
                let bound = c.previous_heads.iter().find_map(|prev| {
                    let head =
                        prev.next(&self.id, header.epoch(), index, &c.received.envelope_hash);
                    heads
                        .get(&head)
                        .filter(|s| s.count_ones() as usize >= quorum)
                        .map(|s| (*prev, head, *s))
                });
                if let Some((prev, head, servers)) = bound {
                    joined = Some((pos, prev, head, servers, heads, bad));
                    break;
                }
                // A quorum tagged a head for this member's next slot that
                // this envelope does not chain to: the envelope (or the
                // previous head it came with) is not the attested one.
                if !c.flagged && heads.values().any(|s| s.count_ones() as usize >= quorum) {
                    c.flagged = true;
                    alerts.push(Misbehaviour::UnattestedEnvelope { index });
                }
            }
            for m in alerts {
                self.alert(m, Some(index), None);
            }
            let Some((pos, prev, head, servers, heads, bad)) = joined else {
                self.pending.insert(index, p);
                continue;
            };
            let c = p.candidates.swap_remove(pos);
            // The key must still be unused (another conversation may have
            // been given it and accepted first).
            let key_free = c
                .join
                .as_ref()
                .is_some_and(|j| secrets.order_keys.remove(&j.keys.slot_key()));
            if !key_free {
                self.alert(Misbehaviour::ForeignSlotKey, Some(index), None);
                self.buffered = self.buffered.saturating_sub(1);
                self.pending.insert(index, p);
                continue;
            }
            self.buffered = self
                .buffered
                .saturating_sub(p.candidates.len() + p.unverified.len() + 1);
            self.report_bad_tags(index, &bad);
            p.heads = heads;
            self.report_losers(index, &p, head, &c.received.envelope_hash);
            self.join(c, head, servers, prev);
            return;
        }
    }

    /// Opens an Update to see whether it adds this member, checks it as far
    /// as a joiner can, and derives the member's next-epoch slot keys
    /// (without using the key yet).
    fn prepare_join(
        &mut self,
        received: &Received,
        secrets: &mut Secrets,
    ) -> Result<JoinPrep, Misbehaviour> {
        let header = &received.delivery.header;
        let opened = self.open(received, None, secrets)?;
        let Content::Update(content) = &opened.content else {
            return Err(Misbehaviour::UnexpectedKind("not an Update"));
        };
        let sender = opened.sender.ok_or(Misbehaviour::UnauthenticatedSender {
            index: received.delivery.index,
        })?;
        let epoch = header.epoch().next().ok_or(Misbehaviour::WrongContext)?;
        let membership =
            Membership::joined(epoch, header.slot_set_hash(), &sender, &self.me, content)?;
        let my_slot = membership
            .slot_of(&self.me)
            .ok_or(Misbehaviour::ForeignSlotKey)?;
        if let Some((_, block)) = &received.delivery.block
            && block.recipient != my_slot
        {
            return Err(Misbehaviour::Undecryptable(
                "block addressed to another slot",
            ));
        }
        let my_key = membership
            .slots()
            .get(my_slot)
            .map(|e| e.key)
            .ok_or(Misbehaviour::ForeignSlotKey)?;
        let keys = self.slot_keys(my_key, secrets)?;
        Ok(JoinPrep {
            change: content.change,
            membership,
            keys,
            sender,
        })
    }

    /// Starts the transcript at the Update that added this member, anchored
    /// at the previous head it was bound to.
    fn join(&mut self, c: Candidate, head: Head, attested_by: u32, previous: Head) {
        let Some(j) = c.join else { return };
        let index = c.received.delivery.index;
        let header = &c.received.delivery.header;
        let entry = Entry {
            index,
            epoch: header.epoch(),
            envelope_hash: c.received.envelope_hash,
            head,
            attested_by,
        };
        let mut transcript = Transcript::starting_at(self.id, index, previous);
        if !transcript.append(entry) {
            // Unreachable: the head was computed from `previous`.
            self.phase = Phase::Halted("internal: a joined index did not chain");
            return;
        }
        self.transcript = transcript;
        // Everything buffered before the join is not ours to accept.
        self.pending = self.pending.split_off(&Index(index.0.saturating_add(1)));
        self.buffered = self
            .pending
            .values()
            .map(|p| p.candidates.len() + p.unverified.len())
            .sum();
        let epoch = j.membership.epoch();
        self.keys.insert(epoch, j.keys);
        self.prepared.clear();
        self.early_blocks.clear();
        self.candidate_peers.clear();
        self.membership = Some(j.membership);
        self.phase = Phase::Active;
        self.next_sequence = Sequence(1);
        self.event(Event::Accepted {
            index,
            kind: EnvelopeKind::Update,
            status: self.config.status(attested_by),
            last_seen: causal_context(index, header),
            sender: Some(j.sender),
        });
        self.event(Event::MembershipChanged {
            index,
            epoch,
            change: Some(j.change),
            authorized: true,
            vouched_by: Some(j.sender),
        });
    }

    /// The MAC keys of one of this member's order keys, derived without
    /// using the key (it is removed from the keyring only when the envelope
    /// assigning it is accepted, so forged candidates consume nothing) and
    /// cached until then.
    fn slot_keys(
        &mut self,
        key: SlotKey,
        secrets: &mut Secrets,
    ) -> Result<SlotMacKeys, Misbehaviour> {
        if let Some((_, k)) = self.prepared.iter().find(|(k, _)| *k == key) {
            return Ok(k.clone());
        }
        let keys = secrets
            .order_keys
            .peek(&key, &self.config.servers)
            .map_err(|_| Misbehaviour::ForeignSlotKey)?;
        if self.prepared.len() < DEFAULT_MAX_CANDIDATES * 4 {
            self.prepared.push((key, keys.clone()));
        }
        Ok(keys)
    }

    /// Opens a Setup candidate and derives this member's slot keys from it.
    fn prepare_setup(
        &mut self,
        received: &Received,
        secrets: &mut Secrets,
    ) -> Result<SetupPrep, Misbehaviour> {
        let index = received.delivery.index;
        let header = &received.delivery.header;
        let opened = self.open(received, None, secrets)?;
        let Content::Setup(content) = &opened.content else {
            return Err(Misbehaviour::UnexpectedKind("index 0 must be a Setup"));
        };
        let sender = opened
            .sender
            .ok_or(Misbehaviour::UnauthenticatedSender { index })?;
        let membership = Membership::from_setup(
            header.epoch(),
            header.slot_set_hash(),
            header.sender(),
            sender,
            content,
        )?;
        let my_slot = membership
            .slot_of(&self.me)
            .ok_or(Misbehaviour::ForeignSlotKey)?;
        if let Some((_, block)) = &received.delivery.block
            && block.recipient != my_slot
        {
            return Err(Misbehaviour::Undecryptable(
                "block addressed to another slot",
            ));
        }
        let my_key = membership
            .slots()
            .get(my_slot)
            .map(|e| e.key)
            .ok_or(Misbehaviour::ForeignSlotKey)?;
        let keys = self.slot_keys(my_key, secrets)?;
        Ok(SetupPrep { membership, keys })
    }

    /// Decrypts an envelope: this member's own (from the outbox) or another
    /// member's (from its block). `membership` names who holds which slot;
    /// `None` for the Setup, whose sender is learned from the block.
    fn open(
        &mut self,
        received: &Received,
        membership: Option<&Membership>,
        secrets: &mut Secrets,
    ) -> Result<Opened, Misbehaviour> {
        let d = &received.delivery;
        let index = d.index;
        let header = &d.header;
        let holder = membership.and_then(|m| m.holder(header.sender()));
        if header.kind() == EnvelopeKind::Noise {
            return Ok(Opened {
                sender: holder,
                content: Content::Noise,
            });
        }
        if let Some(content) = self.outbox.remove(&header.core_hash()) {
            return Ok(Opened {
                sender: Some(self.me),
                content,
            });
        }
        if let Some(m) = membership {
            if holder.is_none() || holder == Some(self.me) {
                // A padding slot, or our own slot with an envelope we did
                // not compose.
                return Err(Misbehaviour::UnauthenticatedSender { index });
            }
            let my_slot = m.slot_of(&self.me);
            if let Some((_, block)) = &d.block
                && Some(block.recipient) != my_slot
            {
                return Err(Misbehaviour::Undecryptable(
                    "block addressed to another slot",
                ));
            }
        }
        let (_, block) = d
            .block
            .as_ref()
            .ok_or(Misbehaviour::Undecryptable("no block for this member"))?;
        // A Setup is opened before its tags are checked, so a copy with the
        // genuine block in a forged envelope may come first; the decrypted
        // block is kept so the genuine envelope still opens (Olm decrypts
        // each message once).
        let digest = block.digest();
        let (sender, block) = match self.early_blocks.get(&digest) {
            Some((sender, plain)) => (*sender, plain.clone()),
            None => {
                // A candidate (Setup, or an Update that may add this member)
                // from an account without a session would store a new
                // inbound session: bounded per conversation.
                if membership.is_none()
                    && let Some(peer) = Pairwise::frame_sender(&block.ciphertext)
                    && !secrets.pairwise.has_session(&peer)
                    && !self.candidate_peers.contains(&peer)
                {
                    if self.candidate_peers.len() >= MAX_CANDIDATE_PEERS {
                        return Err(Misbehaviour::LimitExceeded(format!(
                            "more than {MAX_CANDIDATE_PEERS} unknown accounts sent candidate envelopes in this conversation"
                        )));
                    }
                    self.candidate_peers.insert(peer);
                }
                let (sender, plain) = secrets
                    .pairwise
                    .decrypt_from(&block.ciphertext)
                    .map_err(|_| Misbehaviour::UnauthenticatedSender { index })?;
                let block = BlockPlaintext::decode(&plain)
                    .map_err(|_| Misbehaviour::Undecryptable("block plaintext is malformed"))?;
                if membership.is_none() && self.early_blocks.len() < DEFAULT_MAX_CANDIDATES * 4 {
                    self.early_blocks.insert(digest, (sender, block.clone()));
                }
                (sender, block)
            }
        };
        if holder.is_some_and(|h| h != sender) {
            return Err(Misbehaviour::UnauthenticatedSender { index });
        }
        if block.core != header.core_hash() {
            return Err(Misbehaviour::Undecryptable(
                "block bound to another envelope",
            ));
        }
        let plaintext = body::open(
            &block.key,
            &header.key_commitment(),
            &BodyContext::of(header),
            &d.body,
        )
        .map_err(|e| match e {
            body::BodyError::KeyCommitmentMismatch => Misbehaviour::KeyCommitmentMismatch,
            body::BodyError::Undecryptable => Misbehaviour::Undecryptable("body does not decrypt"),
        })?;
        let content = Content::decode(header.kind(), &plaintext).map_err(decode_misbehaviour)?;
        Ok(Opened {
            sender: Some(sender),
            content,
        })
    }

    /// Appends an index that reached the quorum, then opens and applies it.
    fn accept(&mut self, c: Candidate, head: Head, attested_by: u32, secrets: &mut Secrets) {
        let index = c.received.delivery.index;
        let header = c.received.delivery.header.clone();
        let entry = Entry {
            index,
            epoch: header.epoch(),
            envelope_hash: c.received.envelope_hash,
            head,
            attested_by,
        };
        if !self.transcript.append(entry) {
            // Unreachable by construction: the head was computed from the
            // transcript's own last head at its next index.
            self.phase = Phase::Halted("internal: an accepted index did not chain");
            return;
        }
        let holders = c
            .setup
            .as_ref()
            .map(|p| &p.membership)
            .or(self.membership.as_ref());
        let sender = holders.and_then(|m| m.holder(header.sender()));
        if header.last_seen().is_some_and(|l| l >= index) {
            // A sender can only have seen indices before its own.
            self.alert(
                Misbehaviour::Malformed(WireError::Invalid {
                    field: "header.last_seen_index",
                    reason: "at or after the index the envelope was accepted at",
                }),
                Some(index),
                None,
            );
        }
        self.event(Event::Accepted {
            index,
            kind: header.kind(),
            status: self.config.status(attested_by),
            last_seen: causal_context(index, &header),
            sender,
        });
        self.check_sequence(index, &header);
        if let Some(prep) = c.setup {
            // Checked free when the Setup won (`setup_winner`).
            secrets.order_keys.remove(&prep.keys.slot_key());
            self.keys.insert(Epoch(0), prep.keys);
            self.membership = Some(prep.membership);
            self.prepared.clear();
            self.early_blocks.clear();
            self.candidate_peers.clear();
            self.phase = Phase::Active;
            self.outbox.remove(&header.core_hash());
            self.event(Event::MembershipChanged {
                index,
                epoch: Epoch(0),
                change: None,
                authorized: true,
                vouched_by: None,
            });
            return;
        }
        let membership = self.membership.clone();
        let opened = self.open(&c.received, membership.as_ref(), secrets);
        match (opened, header.kind()) {
            (Err(m), kind) => {
                self.alert(m, Some(index), None);
                self.undecryptable.insert(index);
                if kind == EnvelopeKind::Update {
                    self.phase = Phase::Halted("an Update could not be opened");
                }
            }
            (Ok(o), _) => self.apply(index, &header, o, secrets),
        }
    }

    fn check_sequence(&mut self, index: Index, header: &grompi_proto::EnvelopeHeader) {
        let key = (header.epoch(), header.sender());
        let got = header.sequence();
        match self.last_sequences.get(&key) {
            Some(&last) if got <= last => self.alert(
                Misbehaviour::SequenceNotIncreasing {
                    slot: header.sender(),
                    last,
                    got,
                },
                Some(index),
                None,
            ),
            _ => {
                self.last_sequences.insert(key, got);
            }
        }
    }

    fn apply(
        &mut self,
        index: Index,
        header: &grompi_proto::EnvelopeHeader,
        o: Opened,
        secrets: &mut Secrets,
    ) {
        let sender = o.sender;
        match o.content {
            Content::Noise | Content::Setup(_) => {}
            Content::Message(plaintext) => {
                if let Some(sender) = sender {
                    self.event(Event::Message {
                        index,
                        sender,
                        plaintext,
                        last_seen: causal_context(index, header),
                    });
                }
            }
            Content::Receipt(r) => {
                let Some(from) = sender else { return };
                match receipt::check(&r, index, &self.transcript) {
                    ReceiptCheck::Mismatch(m) => self.alert(m, Some(index), None),
                    ReceiptCheck::Consistent | ReceiptCheck::Unknown => {
                        let e = self.processed.entry(from).or_insert(r.through);
                        if *e < r.through {
                            *e = r.through;
                        }
                        self.event(Event::Receipt {
                            index,
                            from,
                            through: r.through,
                        });
                    }
                }
            }
            Content::Update(u) => {
                let (Some(sender), Some(current)) = (sender, self.membership.clone()) else {
                    self.phase = Phase::Halted("an Update without an authenticated sender");
                    return;
                };
                let outcome = current.apply_update(&sender, header.slot_set_hash(), &u);
                let authorized = outcome.refusal.is_none();
                if let Some(m) = outcome.refusal {
                    self.alert(m, Some(index), None);
                }
                let Some(next) = outcome.next else {
                    self.phase = Phase::Halted("an Update installs a slot set that cannot be used");
                    return;
                };
                let epoch = next.epoch();
                let my_slot = next.slot_of(&self.me);
                let removed = !next.members().contains_key(&self.me);
                self.event(Event::MembershipChanged {
                    index,
                    epoch,
                    change: Some(u.change),
                    authorized,
                    vouched_by: None,
                });
                let key = my_slot.and_then(|s| next.slots().get(s)).map(|e| e.key);
                self.membership = Some(next);
                self.next_sequence = Sequence(1);
                match key {
                    None if removed => self.phase = Phase::Removed,
                    None => self.phase = Phase::Halted("this member has no slot in the next epoch"),
                    Some(k) => match secrets.order_keys.take(&k, &self.config.servers) {
                        Ok(keys) => {
                            self.keys.insert(epoch, keys);
                        }
                        Err(_) => {
                            self.alert(Misbehaviour::ForeignSlotKey, Some(index), None);
                            self.phase =
                                Phase::Halted("the next epoch's slot is not one of our order keys");
                        }
                    },
                }
            }
        }
    }

    /// Whether this member holds something delivered at or after its next
    /// index that it cannot accept (an index behind a hole, or an index
    /// whose tags have not all arrived): the shell then fetches again and,
    /// if that changes nothing, calls [`Conversation::report_stall`].
    pub fn stuck(&self) -> bool {
        matches!(self.phase, Phase::Active | Phase::AwaitingSetup)
            && self
                .pending
                .range(self.transcript.next_index()..)
                .next()
                .is_some()
    }

    /// Tells the state machine that fetching did not let it advance. Raises
    /// [`Misbehaviour::Gap`] (once per call) when later indices are
    /// buffered behind a missing one, and returns whether it did; from now
    /// on head proofs that show the next index attested expose withheld
    /// tags. Before the Setup is accepted it also reports the tags that fail
    /// under the best-attested candidate Setup's keys (see
    /// `blame_setup_tags`). Drain the alerts afterwards.
    pub fn report_stall(&mut self) -> bool {
        let next = self.transcript.next_index();
        self.stalled_at = Some(next);
        if self.phase == Phase::AwaitingSetup {
            self.blame_setup_tags();
        }
        let behind = self.pending.keys().any(|i| *i > next) && !self.pending.contains_key(&next);
        if behind {
            let after = self.transcript.last().map_or(Index(0), |e| e.index);
            self.alert(Misbehaviour::Gap { after }, Some(next), None);
        }
        behind
    }

    /// Restores an envelope this member composed but has not seen accepted
    /// (from the local store after a restart), so it opens when delivered.
    pub fn restore_sent(&mut self, core: CoreHash, content: Content) {
        self.outbox.insert(core, content);
    }

    // ---- Sending --------------------------------------------------------

    /// Recipients of the next envelope: every member holding a slot this
    /// epoch except this one.
    pub fn recipients(&self) -> Vec<(SlotIndex, AccountId)> {
        self.membership
            .as_ref()
            .map(|m| m.holders().filter(|(_, a)| *a != self.me).collect())
            .unwrap_or_default()
    }

    /// Builds an envelope carrying `content` (a Message, Update, Receipt or
    /// Noise) from this member's slot, with the next sequence number and the
    /// last accepted index as causal context.
    pub fn compose(
        &mut self,
        content: Content,
        rng: &mut impl rand::CryptoRng,
        secrets: &mut Secrets,
    ) -> Result<Composed, ClientError> {
        self.build(content, true, rng, secrets)
    }

    /// Like [`Conversation::compose`] without the sender's own membership
    /// check: what a compromised member sends (tests only).
    #[cfg(test)]
    pub(crate) fn compose_unchecked(
        &mut self,
        content: Content,
        rng: &mut impl rand::CryptoRng,
        secrets: &mut Secrets,
    ) -> Result<Composed, ClientError> {
        self.build(content, false, rng, secrets)
    }

    fn build(
        &mut self,
        content: Content,
        check_rules: bool,
        rng: &mut impl rand::CryptoRng,
        secrets: &mut Secrets,
    ) -> Result<Composed, ClientError> {
        if self.phase != Phase::Active {
            return Err(ClientError::NotActive("the conversation is not active"));
        }
        if matches!(content, Content::Setup(_)) {
            return Err(ClientError::NotActive("a Setup is sent only when creating"));
        }
        let m = self
            .membership
            .as_ref()
            .ok_or(ClientError::NotActive("no membership yet"))?;
        let epoch = m.epoch();
        let slot = m
            .slot_of(&self.me)
            .ok_or(ClientError::NotActive("this member holds no slot"))?;
        let keys = self
            .keys
            .get(&epoch)
            .ok_or(ClientError::NotActive("no slot keys for the current epoch"))?;
        let mut recipients = self.recipients();
        if let Content::Update(u) = &content {
            // The sender runs the rules every receiver runs (an Admin slot
            // without an Admin holder among them) before sending.
            if let Some(refusal) = m
                .apply_update(&self.me, Some(u.next_slots.hash()), u)
                .refusal
                .filter(|_| check_rules)
            {
                return Err(ClientError::InvalidMembership(match refusal {
                    Misbehaviour::UnauthorizedUpdate(reason) => reason,
                    Misbehaviour::SlotSetMismatch => "the next slot set does not match its hash",
                    _ => "the Update breaks the membership rules",
                }));
            }
            // Members the Update adds get a block addressed by their slot in
            // the next epoch (the router delivers it to them by that slot),
            // which must not be a slot a current member holds.
            for e in &u.next_members {
                if m.slot_of(&e.account).is_some() {
                    continue;
                }
                if e.slot == slot || recipients.iter().any(|(s, _)| *s == e.slot) {
                    return Err(ClientError::InvalidMembership(
                        "a joining member's next slot is a slot a current member holds",
                    ));
                }
                recipients.push((e.slot, e.account));
            }
        }
        let composed = compose::compose(
            &Sending {
                conversation: self.id,
                epoch,
                sender: slot,
                sequence: self.next_sequence,
                last_seen: self.transcript.last().map(|e| e.index),
                recipients: &recipients,
                mac_keys: keys,
            },
            &content,
            rng,
            &mut secrets.pairwise,
        )?;
        self.next_sequence = Sequence(
            self.next_sequence
                .0
                .checked_add(1)
                .ok_or(ClientError::Overflow("sequence number"))?,
        );
        self.outbox
            .insert(composed.envelope.header().core_hash(), content);
        Ok(composed)
    }

    /// A receipt for everything accepted so far.
    pub fn receipt(&self) -> Option<Content> {
        let last = self.transcript.last()?;
        Some(Content::Receipt(crate::content::ReceiptContent {
            through: last.index,
            head: last.head,
            undecryptable: self
                .undecryptable
                .iter()
                .rev()
                .take(crate::content::MAX_RECEIPT_INDICES)
                .rev()
                .copied()
                .collect(),
        }))
    }

    // ---- Head proofs ----------------------------------------------------

    /// Starts a head query with a fresh nonce from the caller's RNG; send it
    /// with `ProveHeads`.
    pub fn head_proof_nonce(&mut self, rng: &mut impl rand::CryptoRng) -> ProofNonce {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        let nonce = ProofNonce::from_bytes(b);
        self.head_nonce = Some(nonce);
        nonce
    }

    /// Whether a valid tag from `server` is held for the buffered `index`.
    fn has_valid_tag(&self, index: Index, server: u32) -> bool {
        self.pending
            .get(&index)
            .is_some_and(|p| p.heads.values().any(|s| s & bit(server) != 0))
    }

    /// Checks the proofs the router returned for the last nonce, as they
    /// came off the wire: a proof that does not parse is reported (an
    /// alert, and [`NotProvedReason::Unparseable`] for its server) instead
    /// of being dropped; the rest go to [`Conversation::check_head_proofs`].
    pub fn check_head_proof_answers(
        &mut self,
        answers: Vec<grompi_proto::pb::HeadProof>,
    ) -> Vec<HeadProofOutcome> {
        let mut proofs = Vec::new();
        let mut unparseable = Vec::new();
        for raw in answers {
            let server = raw.server;
            match HeadProof::try_from(raw) {
                Ok(p) => proofs.push(p),
                Err(e) => unparseable.push((server, e)),
            }
        }
        let mut out = Vec::new();
        for (server, e) in &unparseable {
            self.alert(Misbehaviour::Malformed(e.clone()), None, Some(*server));
            out.push(HeadProofOutcome::NotProved {
                server: *server,
                reason: NotProvedReason::Unparseable(e.clone()),
            });
        }
        let answered: Vec<u32> = unparseable.iter().map(|(s, _)| *s).collect();
        out.extend(self.check_proofs(&proofs, &answered));
        out
    }

    /// Checks the proofs answering the last nonce (which is then spent).
    /// Every pinned server that returned no proof is
    /// [`NotProvedReason::NoAnswer`]. After a reported stall, a server that
    /// proves it attested the index this member is stuck on, while no
    /// valid tag of it reached the member, had its tag withheld:
    /// `Withheld`. A server that proves less than it proved before, or
    /// another head at a count it proved before, is `RolledBack`.
    pub fn check_head_proofs(&mut self, proofs: &[HeadProof]) -> Vec<HeadProofOutcome> {
        self.check_proofs(proofs, &[])
    }

    fn check_proofs(&mut self, proofs: &[HeadProof], answered: &[u32]) -> Vec<HeadProofOutcome> {
        let Some(nonce) = self.head_nonce.take() else {
            for p in proofs {
                self.alert(
                    Misbehaviour::BadHeadProof { server: p.server },
                    None,
                    Some(p.server),
                );
            }
            return proofs
                .iter()
                .map(|p| {
                    HeadProofOutcome::Misbehaviour(Misbehaviour::BadHeadProof { server: p.server })
                })
                .collect();
        };
        let delivered = self
            .pending
            .keys()
            .next_back()
            .map_or(0, |i| i.0.saturating_add(1))
            .max(self.transcript.next_index().0);
        let next = self.transcript.next_index();
        let stalled = self.stalled_at == Some(next);
        let mut out = Vec::with_capacity(proofs.len());
        for p in proofs {
            let o = head_proof::check(
                p,
                self.id,
                &nonce,
                &self.keys,
                &self.transcript,
                delivered,
                self.proved.get(&p.server),
            );
            // A proof whose MAC and nonce verified raises the bar the same
            // server must not go below later.
            let verified = matches!(
                &o,
                HeadProofOutcome::Consistent { .. }
                    | HeadProofOutcome::AheadOfAccepted { .. }
                    | HeadProofOutcome::NotProved {
                        reason: NotProvedReason::BeforeJoin,
                        ..
                    }
                    | HeadProofOutcome::Misbehaviour(
                        Misbehaviour::Withheld { .. } | Misbehaviour::HeadProofFork { .. }
                    )
            );
            if verified {
                let now = ProvedHead {
                    epoch: p.statement.epoch,
                    count: p.statement.count,
                    head: p.statement.head,
                };
                let higher = self
                    .proved
                    .get(&p.server)
                    .is_none_or(|b| (now.epoch, now.count) > (b.epoch, b.count));
                // (Only a pinned server's key verifies, so this map holds
                // at most one entry per pinned server.)
                if higher {
                    self.proved.insert(p.server, now);
                }
            }
            out.push(match o {
                // Stalled at `next`, holding what was delivered for it,
                // while a server proves it attested `next`: that server's
                // tag was withheld (it is not in flight any more).
                HeadProofOutcome::AheadOfAccepted { server, count }
                    if stalled && count > next.0 && !self.has_valid_tag(next, server) =>
                {
                    HeadProofOutcome::Misbehaviour(Misbehaviour::Withheld {
                        server,
                        attested: count,
                        delivered: next.0,
                    })
                }
                o => o,
            });
        }
        // A pinned server the router returned nothing for.
        let servers = u32::try_from(self.config.servers.len()).unwrap_or(u32::MAX);
        for server in 0..servers {
            if !proofs.iter().any(|p| p.server == server) && !answered.contains(&server) {
                out.push(HeadProofOutcome::NotProved {
                    server,
                    reason: NotProvedReason::NoAnswer,
                });
            }
        }
        for o in &out {
            if let HeadProofOutcome::Misbehaviour(m) = o {
                self.alert(m.clone(), None, o.server());
            }
        }
        out
    }

    /// Per order server, the highest head it proved to this member (what a
    /// later proof from it must not go below).
    pub fn proved_heads(&self) -> &BTreeMap<u32, ProvedHead> {
        &self.proved
    }
}
