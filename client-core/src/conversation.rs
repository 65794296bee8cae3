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
//!
//! # Layout
//!
//! This file holds the types (configuration, phase, events, counters,
//! secrets, the state itself), the constructors, the accessors and the
//! alert and event queues; the state machine's steps are in submodules,
//! each an `impl Conversation` block:
//!
//! | module | concept |
//! |---|---|
//! | `receive` | deliveries and late tags: checking, bounded buffering, tag verification |
//! | `accept` | taking the next index: winners, losers, the Setup's tags, applying, stalls |
//! | `join` | finding and joining at the Update that adds this member |
//! | `open` | decrypting envelopes; preparing Setup candidates and slot keys |
//! | `send` | composing envelopes, recipients, receipts |
//! | `head_proofs` | asking for head proofs and checking the answers |
//! | `group` | group keys: key generations from RN1, order servers' shares, the keys of group-keyed Messages and Receipts |
//! | `shared_history` | the history policy, the history block of own envelopes, the anchor a verified history is read against |
//! | `persist` | the state as bytes for the local store |

mod accept;
mod group;
mod head_proofs;
mod join;
mod open;
mod persist;
mod receive;
mod send;
mod shared_history;

pub use group::MAX_PERIOD_LAG;
pub use persist::STATE_VERSION;

/// Test-only switches that undo one integrity fix each, for the model
/// checker (`checker/`) to show that it finds the attack the fix stops.
///
/// Compiled only with the `model-check-switches` feature, which is off by
/// default; only the checker enables it, and the checker is not a default
/// workspace member, so a release build of the programs never has it.
/// Without it every check always runs. The setting is per thread (the
/// checker explores on one thread) and starts with every fix in place.
#[cfg(feature = "model-check-switches")]
pub mod switches {
    use std::cell::Cell;

    /// Which fixes are undone. `Weaken::default()` undoes none.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Weaken {
        /// A joiner no longer binds the Update it opened to the head a
        /// quorum tagged for its next-epoch slot (nor requires the previous
        /// head): any head with a quorum of `next_tags` is joined at.
        pub join_binding: bool,
        /// An Admin slot no longer needs an Admin holder (Setup, Update,
        /// joining, and the sender's own check).
        pub admin_slots: bool,
        /// A head proof is no longer checked against the nonce it should
        /// answer (a replayed proof counts).
        pub head_proof_nonce: bool,
    }

    thread_local! {
        static WEAKEN: Cell<Weaken> = Cell::new(Weaken::default());
    }

    /// Sets the switches for this thread.
    pub fn set(w: Weaken) {
        WEAKEN.with(|c| c.set(w));
    }

    /// The switches of this thread.
    pub fn get() -> Weaken {
        WEAKEN.with(Cell::get)
    }
}

/// Without the feature every fix is in place.
#[cfg(not(feature = "model-check-switches"))]
pub(crate) mod switches {
    /// Which fixes are undone: none.
    #[derive(Clone, Copy, Debug, Default)]
    pub(crate) struct Weaken {
        pub(crate) join_binding: bool,
        pub(crate) admin_slots: bool,
        pub(crate) head_proof_nonce: bool,
    }

    /// Every fix is in place.
    pub(crate) fn get() -> Weaken {
        Weaken::default()
    }
}

use crate::alert::Alert;
use crate::body::BlockPlaintext;
use crate::compose::{self, Composed, Sending};
use crate::content::{Change, Content, MemberEntry, SetupContent, Visibility};
use crate::delivery::Received;
use crate::errors::ClientError;
use crate::group_key::{KeyGeneration, Rn1};
use crate::head_proof::ProvedHead;
use crate::keyring::{OrderKeyring, SlotMacKeys};
use crate::membership::Membership;
use crate::pairwise::Pairwise;
use crate::transcript::{AttestationStatus, Transcript};
use grompi_proto::key_share::WrappedShare;
use grompi_proto::limits::MAX_ORDER_SERVERS;
use grompi_proto::mac::Attestation;
use grompi_proto::{
    AccountId, BlockDigest, ConversationId, CoreHash, EnvelopeKind, Epoch, Head, Index,
    Misbehaviour, NetworkDescriptor, OrderServerKey, ProofNonce, Sequence, SlotIndex, SlotKey,
    SlotSet,
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
    /// An index was accepted: quorum-attested, chained onto the previous
    /// head and appended to the transcript. Emitted once per index, for every
    /// kind, before any kind-specific event for it.
    Accepted {
        /// The accepted position (0 is the Setup), global across epochs.
        index: Index,
        /// The envelope kind its header declares (Setup, Message, Update,
        /// Receipt or Noise).
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
        /// The accepted index whose status changed.
        index: Index,
        /// The status it has now: never lower than the one reported before.
        status: AttestationStatus,
    },
    /// An application message that decrypted and authenticated.
    Message {
        /// The accepted index that carried the message.
        index: Index,
        /// The account whose Olm session decrypted the block: the holder of
        /// the sender slot.
        sender: AccountId,
        /// The decrypted application payload, as the sender's application
        /// encoded it; this crate does not interpret it.
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
        /// The accepted index that carried the receipt.
        index: Index,
        /// The account that sent the receipt, authenticated by its block.
        from: AccountId,
        /// The last index its sender reports having processed, before
        /// `index`. Its head there matched ours, or this member could not
        /// compare it (a mismatch raises `ReceiptMismatch` instead).
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
    /// The RN1 this member's block carried (group-keyed Setup, Update or
    /// Rekey), or the one it drew for its own.
    rn1: Option<Rn1>,
}

/// What a Setup established, computed before its tags can be checked (a
/// member learns its slot only from the Setup).
#[derive(Clone, Debug)]
struct SetupPrep {
    membership: Membership,
    keys: SlotMacKeys,
    /// The Setup's history policy.
    history: Visibility,
    /// The RN1 in this member's block (group-keyed conversations).
    rn1: Option<Rn1>,
}

/// What an Update that adds this member established.
#[derive(Clone, Debug)]
struct JoinPrep {
    change: Change,
    membership: Membership,
    keys: SlotMacKeys,
    /// The account that authenticated the Update's block.
    sender: AccountId,
    /// The next epoch's history policy.
    history: Visibility,
    /// The RN1 in this member's block (group-keyed conversations).
    rn1: Option<Rn1>,
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
    /// Key shares delivered for this index, per server (the first of each;
    /// opened once the index is accepted).
    shares: BTreeMap<u32, WrappedShare>,
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
    /// The RN1 of each Setup, Update or Rekey this member composed in a
    /// group-keyed conversation and has not seen accepted.
    sent_rn1: HashMap<CoreHash, Rn1>,
    /// The group key state (`None`: a pairwise-keyed conversation).
    group: Option<group::GroupState>,
    /// The current epoch's history policy (`Joined` in a pairwise-keyed
    /// conversation whatever its Setup or Update said).
    history: Visibility,
    /// The history key this member joined with, if the Update that added
    /// it started a `shared` epoch: where its pre-join history is read
    /// from even after the policy changed.
    history_root: Option<crate::history::HistoryRoot>,
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
            sent_rn1: HashMap::new(),
            group: None,
            history: Visibility::Joined,
            history_root: None,
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

    /// Creates a pairwise-keyed conversation: `slots` and `members` are
    /// what the router assigned (this member among them, as an Admin).
    /// Returns the state and the Setup to submit.
    pub fn create(
        id: ConversationId,
        config: ConversationConfig,
        slots: SlotSet,
        members: Vec<MemberEntry>,
        rng: &mut impl rand::CryptoRng,
        secrets: &mut Secrets,
    ) -> Result<(Self, Composed), ClientError> {
        Self::create_keyed(id, config, slots, members, None, rng, secrets)
    }

    /// Creates a conversation, group-keyed with key periods of
    /// `period_length` indices when it is `Some` (`docs/PROTOCOL.md`
    /// section 4.5), pairwise-keyed otherwise.
    pub fn create_keyed(
        id: ConversationId,
        config: ConversationConfig,
        slots: SlotSet,
        members: Vec<MemberEntry>,
        period_length: Option<u64>,
        rng: &mut impl rand::CryptoRng,
        secrets: &mut Secrets,
    ) -> Result<(Self, Composed), ClientError> {
        Self::create_with_history(
            id,
            config,
            slots,
            members,
            period_length,
            Visibility::Joined,
            rng,
            secrets,
        )
    }

    /// [`Conversation::create_keyed`] with a history policy: `shared`
    /// needs group keys (`period_length`), and makes every envelope carry
    /// a history block so that members added later read the history
    /// (`docs/PROTOCOL.md` section 4.6).
    #[allow(clippy::too_many_arguments)]
    pub fn create_with_history(
        id: ConversationId,
        config: ConversationConfig,
        slots: SlotSet,
        members: Vec<MemberEntry>,
        period_length: Option<u64>,
        history: Visibility,
        rng: &mut impl rand::CryptoRng,
        secrets: &mut Secrets,
    ) -> Result<(Self, Composed), ClientError> {
        if history == Visibility::Shared && period_length.is_none() {
            return Err(ClientError::NotActive(
                "a shared history needs a group-keyed conversation",
            ));
        }
        let me = secrets.pairwise.account_id();
        let content = SetupContent {
            creator: me,
            slots: slots.clone(),
            members,
            history,
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
        let mut conv = Self::invited(id, me, config);
        let everyone = |_: &AccountId| true;
        let start = match period_length {
            Some(p) => Some(conv.new_key_start(Epoch(0), KeyGeneration(0), p, rng)?),
            None => None,
        };
        let keying = match &start {
            Some((start, rn1)) => compose::Keying::Start {
                start: *start,
                rn1,
                takes_part: &everyone,
            },
            None => compose::Keying::Pairwise,
        };
        let seal = match (&start, history) {
            (Some((_, rn1)), Visibility::Shared) => {
                let keys = crate::group_key::GroupKeys::start_epoch(id, Epoch(0), rn1, []);
                crate::history::HistoryKey::of(&keys, KeyGeneration(0))
                    .map(|key| crate::history::HistorySeal { key, link: None })
            }
            _ => None,
        };
        let composed = compose::compose_with_history(
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
            keying,
            seal.as_ref(),
            rng,
            &mut secrets.pairwise,
        )?;
        if let Some((_, rn1)) = start {
            conv.sent_rn1
                .insert(composed.envelope.header().core_hash(), rn1);
        }
        conv.outbox
            .insert(composed.envelope.header().core_hash(), content);
        conv.prepared.push((my_key, keys));
        conv.next_sequence = Sequence(2);
        Ok((conv, composed))
    }

    // ---- Accessors ------------------------------------------------------

    /// The conversation id, chosen by the creator and fixed for life.
    pub fn id(&self) -> ConversationId {
        self.id
    }
    /// Where the conversation is in its life.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }
    /// The accepted transcript: from this member's first index (0, or
    /// the Update that added it) to the last accepted one.
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }
    /// The current membership (after the Setup is accepted).
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }
    /// How well `index` is attested; `Pending` when it is not in the
    /// transcript (not accepted yet, or before this member joined).
    pub fn status(&self, index: Index) -> AttestationStatus {
        match self.transcript.get(index) {
            Some(e) => self.config.status(e.attested_by),
            None => AttestationStatus::Pending,
        }
    }
    /// The index this member accepts next: one past the last accepted,
    /// or its first index when it has accepted none.
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
    /// Counters of duplicates, drops, ignored deliveries and queue overflows.
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
}
