//! Scenario files: the network, the adversary, the conversation script and
//! the expected outcome, in TOML.
//!
//! ```toml
//! name = "protest-fork"
//! description = "The router forks the group, colluding with two of three order servers."
//!
//! [network]
//! order_servers = 3
//! quorum = 3                       # optional; defaults to all
//! members = ["alice", "bob", "charlie", "dave"]
//! admins = ["alice"]               # optional; defaults to the first member
//!
//! [adversary]
//! router = { strategy = "fork", partition = [["alice", "bob"], ["charlie", "dave"]] }
//! order_servers = [
//!   { server = 0, strategy = "equivocate" },
//!   { server = 1, strategy = "equivocate" },
//! ]
//!
//! [[script]]
//! from = "alice"
//! send = "Meet at the square at noon."
//!
//! [[script]]
//! from = "alice"
//! remove = "dave"
//!
//! [expect]
//! outcome = "detected"
//! integrity = true
//! alerts = ["conflicting_heads"]
//! ```

use crate::verdict::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Why a scenario file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid TOML, or unknown or mistyped keys.
    #[error("scenario {file}: {message}")]
    Syntax {
        /// The file's name as given to [`Scenario::parse`].
        file: String,
        /// What the parser said.
        message: String,
    },
    /// Valid TOML that describes an impossible scenario.
    #[error("scenario {file}: {message}")]
    Invalid {
        /// The file's name as given to [`Scenario::parse`].
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// What the router does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum RouterStrategy {
    /// Follows the protocol.
    Honest,
    /// Shows each group of members its own history: the
    /// protest example. Needs colluding order servers to get tags.
    Fork {
        /// The groups; every member in exactly one.
        partition: Vec<Vec<String>>,
        /// A careless fork: the router also passes each group the other
        /// histories' tags (as late tags), so members see valid tags on a
        /// head that is not theirs.
        #[serde(default)]
        leak_tags: bool,
        /// A naive fork: every history is sent to every order server
        /// (instead of sharing the honest ones out), so honest servers see
        /// and refuse the second history.
        #[serde(default)]
        naive: bool,
        /// Head proofs reach members from every order server, not only
        /// from those serving the member's history (members that can reach
        /// servers by another path).
        #[serde(default)]
        relay_all_proofs: bool,
    },
    /// Never delivers some indices to some members.
    Drop {
        /// Names of the members denied those envelopes.
        members: Vec<String>,
        /// Which script steps' envelopes are dropped (0-based).
        steps: Vec<usize>,
    },
    /// Delivers in a shuffled order.
    Reorder,
    /// Delivers old envelopes again, also from other conversations and epochs.
    Replay,
    /// Delivers envelopes it made up, with made-up tags.
    Inject,
    /// Stops delivering to some members after a step.
    WithholdDelivery {
        /// Names of the members cut off.
        members: Vec<String>,
        /// Envelopes of script steps after this one (0-based) never reach them.
        after_step: usize,
    },
    /// Delivers envelopes without the order servers' tags.
    WithholdTags,
    /// Delays every delivery by a random time.
    Delay {
        /// Largest delay, in virtual milliseconds.
        max_ms: u64,
    },
    /// Colludes with a member removed from the conversation: once it is
    /// removed, every delivery the router makes to any other member (the
    /// envelope and all its tags) is also handed to it.
    ColludeWithRemoved {
        /// The removed member's name.
        member: String,
    },
    /// Crashes and restarts.
    CrashRestart {
        /// The 0-based script step during which it crashes; it restarts after a short downtime.
        after_step: usize,
    },
    /// Before each real delivery, delivers a damaged copy: alternately a
    /// block that does not match its digest and a malformed conversation id.
    CorruptDeliveries,
    /// Relays head proofs with a damaged tag.
    ForgeHeadProofs,
    /// Sends the order servers, around the real jobs, requests of its own
    /// that are malformed or out of step (the real jobs still go through).
    MalformedJobs {
        /// What the extra requests get wrong.
        tamper: JobTamper,
    },
    /// Attack 1, a substituted Update for a joiner: the router registers a
    /// puppet account of its own, starts an Olm session with each member
    /// an Update adds (from the member's published prekey bundle), and
    /// delivers to that member, just before the genuine Update, an Update
    /// the puppet composed: same epoch, sender slot, sequence number and
    /// causal context; the genuine next slot set with a padding slot
    /// re-roled Admin; the genuine member list plus the puppet as the Admin
    /// of that slot; with the genuine attestations (the joiner's genuine
    /// next-epoch tags).
    SubstituteJoin {
        /// The `previous_head` the substituted Update is delivered with.
        previous_head: PreviousHead,
    },
    /// Delivers honestly, but tampers with the stored envelopes it returns
    /// when a member reads the conversation's history (FetchHistory): at
    /// the reader's first page it makes one copy of the whole stored
    /// history changed as `tamper` says (among the envelopes before the
    /// reader's join), and answers every page of that read from it.
    TamperHistory {
        /// What it does to the old envelopes.
        tamper: HistoryTamper,
    },
}

/// What a router tampering with history pages does to the stored envelopes
/// it returns, at a seeded place before the reader's join. Each keeps the
/// history looking whole: the indices stay dense from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryTamper {
    /// Leaves one envelope out (a seeded one) and numbers the ones after it
    /// down, so no index is missing.
    Drop,
    /// Flips one bit of one envelope's body (a seeded one).
    AlterBody,
    /// Flips one bit of one envelope's history block (a seeded one that has
    /// one), and gives it the block digest of the altered block.
    AlterHistoryBlock,
    /// Swaps two neighbouring envelopes (a seeded pair), each keeping the
    /// index of the place it is put at.
    Reorder,
    /// Adds a copy of one envelope next to it (a seeded one) and numbers
    /// the ones after it up.
    Inject,
}

impl HistoryTamper {
    /// Every tampering, for the library's checks.
    pub const ALL: [Self; 5] = [
        Self::Drop,
        Self::AlterBody,
        Self::AlterHistoryBlock,
        Self::Reorder,
        Self::Inject,
    ];

    /// The misbehaviour kind a member reading the history raises.
    pub fn caught_as(self) -> &'static str {
        "history_mismatch"
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Drop => "tampered history (an envelope dropped)",
            Self::AlterBody => "tampered history (a body altered)",
            Self::AlterHistoryBlock => "tampered history (a history block altered)",
            Self::Reorder => "tampered history (two envelopes swapped)",
            Self::Inject => "tampered history (an envelope injected)",
        }
    }
}

/// What a router substituting an Update puts in the delivery's
/// `previous_head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviousHead {
    /// Nothing: the field is left empty.
    Empty,
    /// The genuine head before the Update's index.
    Genuine,
}

/// What a router sending malformed jobs gets wrong: each is one extra
/// request to an order server next to a real job, so the server is at
/// exactly the index and head the real job expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobTamper {
    /// Before each open, the same open with a low-order point in place of
    /// the first slot key (`low_order_key`).
    LowOrderKey,
    /// Before each open, the same open with every slot a Member's, so that
    /// no slot could ever change the membership (`unauthorized_update`).
    NoAdmin,
    /// After each open, the same open again (`conversation_exists`).
    Reopen,
    /// Before each attest item, a copy whose header names a conversation
    /// the server never opened (`unknown_conversation`).
    UnknownConversation,
    /// Before each attest item, a copy one index ahead (`index_mismatch`).
    SkipIndex,
    /// Before each attest item, a copy after another previous head
    /// (`head_mismatch`).
    WrongHead,
    /// Before each Update's attest item, a copy with the next slot set in
    /// another order, which the header does not commit to
    /// (`slot_set_mismatch`).
    SwapNextSlots,
}

impl JobTamper {
    /// The misbehaviour kind an honest order server refuses it with.
    pub fn refusal(self) -> &'static str {
        match self {
            Self::LowOrderKey => "low_order_key",
            Self::NoAdmin => "unauthorized_update",
            Self::Reopen => "conversation_exists",
            Self::UnknownConversation => "unknown_conversation",
            Self::SkipIndex => "index_mismatch",
            Self::WrongHead => "head_mismatch",
            Self::SwapNextSlots => "slot_set_mismatch",
        }
    }
}

/// What one order server does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum OrderServerStrategy {
    /// Follows the protocol.
    Honest,
    /// Attests whatever the router asks, including two envelopes at one index.
    Equivocate,
    /// Attests, but its tags never reach members.
    WithholdTags,
    /// Returns tags that do not verify.
    ForgeTags,
    /// Attests envelopes without checking the sender's submission tag
    /// (helps injection): it computes the tag itself with the key it
    /// shares with the sender slot, so the real core checks everything else.
    SkipSenderCheck,
    /// Crashes and restarts, keeping what it committed.
    CrashRestart {
        /// The 0-based script step during which it crashes; it restarts after a short downtime.
        after_step: usize,
    },
    /// Stays down from a step on.
    Offline {
        /// The 0-based script step during which it goes down, for the rest of the run.
        after_step: usize,
    },
    /// Attests honestly, but corrupts the key shares it seals into its
    /// attestations of a group-keyed conversation (one bit flipped): those
    /// for the slots of `victims` (their registered order keys), or every
    /// slot's when `victims` is empty. Its tags are genuine.
    BadKeyShares {
        /// The members whose shares it corrupts (every member's when empty).
        victims: Vec<String>,
    },
}

/// One order server that is not honest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawOrderServerAdversary")]
pub struct OrderServerAdversary {
    /// Its position in the network descriptor.
    pub server: usize,
    /// What it does.
    pub strategy: OrderServerStrategy,
}

/// The file form of [`OrderServerAdversary`]: `{ server = 0, strategy =
/// "crash_restart", after_step = 2 }`. (serde's `flatten` would lose the
/// refusal of unknown keys.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrderServerAdversary {
    server: usize,
    strategy: String,
    after_step: Option<usize>,
    victims: Option<Vec<String>>,
}

impl TryFrom<RawOrderServerAdversary> for OrderServerAdversary {
    type Error = String;

    fn try_from(raw: RawOrderServerAdversary) -> Result<Self, String> {
        let step = |name: &str| {
            raw.after_step
                .ok_or_else(|| format!("strategy {name} needs after_step"))
        };
        let strategy = match raw.strategy.as_str() {
            "honest" => OrderServerStrategy::Honest,
            "equivocate" => OrderServerStrategy::Equivocate,
            "withhold_tags" => OrderServerStrategy::WithholdTags,
            "forge_tags" => OrderServerStrategy::ForgeTags,
            "skip_sender_check" => OrderServerStrategy::SkipSenderCheck,
            "crash_restart" => OrderServerStrategy::CrashRestart {
                after_step: step("crash_restart")?,
            },
            "offline" => OrderServerStrategy::Offline {
                after_step: step("offline")?,
            },
            "bad_key_shares" => OrderServerStrategy::BadKeyShares {
                victims: raw.victims.clone().unwrap_or_default(),
            },
            other => return Err(format!("unknown order server strategy {other:?}")),
        };
        if raw.victims.is_some() && !matches!(strategy, OrderServerStrategy::BadKeyShares { .. }) {
            return Err(format!("strategy {} takes no victims", raw.strategy));
        }
        if raw.after_step.is_some()
            && !matches!(
                strategy,
                OrderServerStrategy::CrashRestart { .. } | OrderServerStrategy::Offline { .. }
            )
        {
            return Err(format!("strategy {} takes no after_step", raw.strategy));
        }
        Ok(Self {
            server: raw.server,
            strategy,
        })
    }
}

/// The adversary of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adversary {
    /// The router's strategy.
    #[serde(default = "honest_router")]
    pub router: RouterStrategy,
    /// The order servers that are not honest.
    #[serde(default)]
    pub order_servers: Vec<OrderServerAdversary>,
    /// Members whose keys the adversary holds (they are not judged).
    #[serde(default)]
    pub compromised_members: Vec<String>,
}

fn honest_router() -> RouterStrategy {
    RouterStrategy::Honest
}

impl Default for Adversary {
    fn default() -> Self {
        Self {
            router: RouterStrategy::Honest,
            order_servers: Vec::new(),
            compromised_members: Vec::new(),
        }
    }
}

impl Adversary {
    /// The number of order servers that deviate from the protocol.
    pub fn dishonest_servers(&self) -> usize {
        self.order_servers
            .iter()
            .filter(|o| o.strategy != OrderServerStrategy::Honest)
            .count()
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        let router = match &self.router {
            RouterStrategy::Honest => "honest router".to_owned(),
            other => format!("router: {}", strategy_name(other)),
        };
        let servers: Vec<String> = self
            .order_servers
            .iter()
            .map(|o| {
                format!(
                    "order server {}: {}",
                    o.server,
                    server_strategy_name(&o.strategy)
                )
            })
            .collect();
        let described = if servers.is_empty() {
            format!("{router}; all order servers honest")
        } else {
            format!("{router}; {}", servers.join(", "))
        };
        if self.compromised_members.is_empty() {
            described
        } else {
            format!(
                "{described}; compromised: {}",
                self.compromised_members.join(", ")
            )
        }
    }
}

fn strategy_name(s: &RouterStrategy) -> &'static str {
    match s {
        RouterStrategy::Honest => "honest",
        RouterStrategy::Fork { .. } => "fork",
        RouterStrategy::Drop { .. } => "drop",
        RouterStrategy::Reorder => "reorder",
        RouterStrategy::Replay => "replay",
        RouterStrategy::Inject => "inject",
        RouterStrategy::WithholdDelivery { .. } => "withhold delivery",
        RouterStrategy::WithholdTags => "withhold tags",
        RouterStrategy::Delay { .. } => "delay",
        RouterStrategy::CrashRestart { .. } => "crash and restart",
        RouterStrategy::ColludeWithRemoved { .. } => "collude with a removed member",
        RouterStrategy::CorruptDeliveries => "corrupt deliveries",
        RouterStrategy::ForgeHeadProofs => "forge head proofs",
        RouterStrategy::MalformedJobs { tamper } => match tamper {
            JobTamper::LowOrderKey => "malformed jobs (low-order slot key)",
            JobTamper::NoAdmin => "malformed jobs (no admin slot)",
            JobTamper::Reopen => "malformed jobs (reopen)",
            JobTamper::UnknownConversation => "malformed jobs (unknown conversation)",
            JobTamper::SkipIndex => "malformed jobs (skip an index)",
            JobTamper::WrongHead => "malformed jobs (wrong previous head)",
            JobTamper::SwapNextSlots => "malformed jobs (swapped next slot set)",
        },
        RouterStrategy::SubstituteJoin { previous_head } => match previous_head {
            PreviousHead::Empty => "substituted Update for a joiner (no previous head)",
            PreviousHead::Genuine => "substituted Update for a joiner (genuine previous head)",
        },
        RouterStrategy::TamperHistory { tamper } => tamper.describe(),
    }
}

fn server_strategy_name(s: &OrderServerStrategy) -> &'static str {
    match s {
        OrderServerStrategy::Honest => "honest",
        OrderServerStrategy::Equivocate => "equivocate",
        OrderServerStrategy::WithholdTags => "withhold tags",
        OrderServerStrategy::ForgeTags => "forge tags",
        OrderServerStrategy::SkipSenderCheck => "skip sender check",
        OrderServerStrategy::CrashRestart { .. } => "crash and restart",
        OrderServerStrategy::Offline { .. } => "offline",
        OrderServerStrategy::BadKeyShares { victims } if victims.is_empty() => "bad key shares",
        OrderServerStrategy::BadKeyShares { .. } => "bad key shares for some members",
    }
}

/// The network of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// N: how many order servers the network runs.
    pub order_servers: usize,
    /// t; defaults to N.
    pub quorum: Option<usize>,
    /// The members, by name, in the order they are created.
    pub members: Vec<String>,
    /// The admins; defaults to the first member.
    pub admins: Option<Vec<String>>,
    /// Limits every order server is configured with, tighter than the
    /// protocol's (optional; the protocol's limits by default).
    #[serde(default)]
    pub order_server_limits: Option<ServerLimits>,
    /// Key period length, in indices, of a group-keyed conversation
    /// (`docs/PROTOCOL.md` 4.5): the creator then creates it with
    /// `create_keyed_conversation`. Absent: pairwise-keyed.
    #[serde(default)]
    pub group_period: Option<u64>,
    /// The history policy the creator's Setup and every Update state
    /// (`docs/PROTOCOL.md` 4.6): `joined` (the default) or `shared`, which
    /// needs `group_period`.
    #[serde(default)]
    pub history: HistoryPolicy,
}

/// Who reads a conversation's history: the scenario file's form of the
/// client's `Visibility`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryPolicy {
    /// Members added later read nothing sent before they joined.
    #[default]
    Joined,
    /// Members added later read what was sent before they joined.
    Shared,
}

impl HistoryPolicy {
    /// The client's policy.
    pub fn visibility(self) -> grompi_client_core::content::Visibility {
        match self {
            Self::Joined => grompi_client_core::content::Visibility::Joined,
            Self::Shared => grompi_client_core::content::Visibility::Shared,
        }
    }
}

/// Order server limits a deployment may configure below the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerLimits {
    /// Most slots in one slot set.
    pub max_slots: Option<usize>,
    /// Most recipient block digests in one envelope.
    pub max_block_digests: Option<usize>,
}

impl ServerLimits {
    /// The order server limits: these, the defaults elsewhere.
    pub fn limits(&self) -> grompi_order_server::limits::Limits {
        let d = grompi_order_server::limits::Limits::default();
        grompi_order_server::limits::Limits {
            max_slots: self.max_slots.unwrap_or(d.max_slots),
            max_block_digests: self.max_block_digests.unwrap_or(d.max_block_digests),
            ..d
        }
    }
}

impl Network {
    /// The quorum in force.
    pub fn quorum(&self) -> usize {
        self.quorum.unwrap_or(self.order_servers)
    }

    /// The admins in force.
    pub fn admins(&self) -> Vec<String> {
        self.admins
            .clone()
            .unwrap_or_else(|| self.members.iter().take(1).cloned().collect())
    }

    /// The limits every order server enforces.
    pub fn server_limits(&self) -> grompi_order_server::limits::Limits {
        self.order_server_limits
            .map(|l| l.limits())
            .unwrap_or_default()
    }
}

/// What a compromised member does with its stolen keys: envelopes the
/// client's public API would never compose. Those that are not
/// [`Misbehave::direct`] go through the router, which cannot see what is
/// wrong with them, and reach the other members; the direct ones are
/// refused by the honest router itself, so they are offered straight to
/// every order server, as a router colluding with the member (or skipping
/// its own checks) would pass them on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misbehave {
    /// A message whose header commits to one body key while every other
    /// recipient's block carries another (`key_commitment_mismatch`).
    BrokenKeyCommitment,
    /// A message whose blocks are framed as coming from another member
    /// (`unauthenticated_sender`).
    Impersonate,
    /// A receipt naming a head the conversation never had
    /// (`receipt_mismatch`).
    FalseReceipt,
    /// An admin's Update that gives two other members each other's slots in
    /// the next epoch (`foreign_slot_key`).
    SwapSlots,
    /// The only admin leaves by Update, which its client would refuse to
    /// compose: the router hands out a next slot set without an admin slot
    /// and passes the Update on, and every order server refuses it
    /// (`unauthorized_update`).
    RemoveLastAdmin,
    /// An admin's Rekey in a group-keyed conversation whose header commits
    /// to one RN1 while every recipient's block carries another
    /// (`rn1_mismatch`): nobody follows it, and everyone stays on the
    /// generation before.
    BadRn1,
    /// A message in a conversation that shares its history whose history
    /// block is sealed under a key no member holds (`bad_history_block`):
    /// every other member reads the message and is warned that members
    /// added later will not.
    BadHistoryBlock,
    /// Straight to the order servers: an envelope stamped with the next
    /// epoch (`wrong_epoch`).
    WrongEpoch,
    /// Straight to the order servers: an envelope from a slot outside the
    /// slot set (`unknown_slot`).
    UnknownSlot,
    /// Straight to the order servers: an Update from a slot without the
    /// admin role (`not_authorized`).
    NonAdminUpdate,
    /// Straight to the order servers: a second Setup (`unexpected_kind`).
    SecondSetup,
    /// Straight to the order servers: a message with more recipient blocks
    /// than the servers' configured limit (`limit_exceeded`).
    Oversize,
}

impl Misbehave {
    /// Whether it goes straight to the order servers.
    pub fn direct(self) -> bool {
        !matches!(
            self,
            Self::BrokenKeyCommitment
                | Self::Impersonate
                | Self::FalseReceipt
                | Self::SwapSlots
                | Self::RemoveLastAdmin
                | Self::BadRn1
                | Self::BadHistoryBlock
        )
    }

    /// The misbehaviour kind it is caught as.
    pub fn caught_as(self) -> &'static str {
        match self {
            Self::BrokenKeyCommitment => "key_commitment_mismatch",
            Self::Impersonate => "unauthenticated_sender",
            Self::FalseReceipt => "receipt_mismatch",
            Self::SwapSlots => "foreign_slot_key",
            Self::RemoveLastAdmin => "unauthorized_update",
            Self::BadRn1 => "rn1_mismatch",
            Self::BadHistoryBlock => "bad_history_block",
            Self::WrongEpoch => "wrong_epoch",
            Self::UnknownSlot => "unknown_slot",
            Self::NonAdminUpdate => "not_authorized",
            Self::SecondSetup => "unexpected_kind",
            Self::Oversize => "limit_exceeded",
        }
    }
}

/// One step of the conversation script: exactly one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Who acts.
    pub from: String,
    /// A message to send.
    pub send: Option<String>,
    /// A member to add (must be a name not yet in the conversation).
    pub add: Option<String>,
    /// A member to remove.
    pub remove: Option<String>,
    /// The actor leaves.
    #[serde(default)]
    pub leave: bool,
    /// The actor sends a receipt.
    #[serde(default)]
    pub receipt: bool,
    /// The actor asks every order server for a head proof.
    #[serde(default)]
    pub prove_heads: bool,
    /// The actor, a compromised member, sends something malicious.
    #[serde(default)]
    pub misbehave: Option<Misbehave>,
    /// The actor (an Admin of a group-keyed conversation) sends a Rekey.
    #[serde(default)]
    pub rekey: bool,
    /// The actor reads the conversation's history from the router
    /// (FetchHistory, page by page) and verifies it from the genesis
    /// against the head it accepted last (`HistoryVerifier`).
    #[serde(default)]
    pub read_history: bool,
    /// The step runs at the same virtual time as the step before it, so
    /// both actors compose before either sees the other's envelope.
    #[serde(default)]
    pub with_previous: bool,
}

impl Step {
    fn actions(&self) -> usize {
        usize::from(self.send.is_some())
            + usize::from(self.add.is_some())
            + usize::from(self.remove.is_some())
            + usize::from(self.leave)
            + usize::from(self.receipt)
            + usize::from(self.prove_heads)
            + usize::from(self.misbehave.is_some())
            + usize::from(self.rekey)
            + usize::from(self.read_history)
    }
}

/// What the scenario expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The attack's outcome.
    pub outcome: Outcome,
    /// Whether integrity holds among honest members.
    pub integrity: bool,
    /// Alert kinds at least one honest member must raise.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// Refusal kinds at least one order server must give.
    #[serde(default)]
    pub refusals: Vec<String>,
    /// Every honest member read (decrypted) every message it accepted.
    #[serde(default)]
    pub every_message_read: bool,
    /// Members (compromised ones too) that read no message accepted after
    /// the Update that removed them.
    #[serde(default)]
    pub read_nothing_after_removal: Vec<String>,
    /// Members (honest, added by an Update) whose verified history shows
    /// every message before their join exactly as the honest members who
    /// were there read it (sender and text), and at least one.
    #[serde(default)]
    pub read_history_before_join: Vec<String>,
    /// Members (honest, added by an Update) whose history verified but
    /// shows no message before their join.
    #[serde(default)]
    pub read_nothing_before_join: Vec<String>,
}

/// A parsed, validated scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name, also the file's stem.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Order servers, quorum, members and admins (the `[network]` table).
    pub network: Network,
    /// Who misbehaves and how (the `[adversary]` table); nobody by default.
    #[serde(default)]
    pub adversary: Adversary,
    /// The conversation script, after the Setup.
    #[serde(default)]
    pub script: Vec<Step>,
    /// What the run must show (the `[expect]` table); the report flags any mismatch.
    pub expect: Expectation,
}

impl Scenario {
    /// Parses and validates a scenario; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        s.validate().map_err(|message| ScenarioError::Invalid {
            file: file.to_owned(),
            message,
        })?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        let n = self.network.order_servers;
        if n == 0 || n > grompi_proto::limits::MAX_ORDER_SERVERS {
            return Err(format!("order_servers must be 1 to 16, not {n}"));
        }
        let t = self.network.quorum();
        if t == 0 || t > n {
            return Err(format!("quorum {t} must be between 1 and {n}"));
        }
        let mut names = HashSet::new();
        for m in &self.network.members {
            if !names.insert(m.as_str()) {
                return Err(format!("member {m:?} is listed twice"));
            }
        }
        if self.network.members.len() < 2 {
            return Err("a conversation needs at least two members".into());
        }
        let mut everyone: HashSet<&str> = names.clone();
        for step in &self.script {
            if let Some(added) = &step.add {
                everyone.insert(added.as_str());
            }
        }
        for admin in self.network.admins() {
            if !names.contains(admin.as_str()) {
                return Err(format!("admin {admin:?} is not a member"));
            }
        }
        for (i, step) in self.script.iter().enumerate() {
            if step.actions() != 1 {
                return Err(format!("script step {i} must have exactly one action"));
            }
            if !everyone.contains(step.from.as_str()) {
                return Err(format!("script step {i}: {:?} is not a member", step.from));
            }
        }
        let mut seen_servers = HashSet::new();
        for o in &self.adversary.order_servers {
            if o.server >= n {
                return Err(format!("adversary names order server {} of {n}", o.server));
            }
            if !seen_servers.insert(o.server) {
                return Err(format!("order server {} has two strategies", o.server));
            }
        }
        if let RouterStrategy::Fork { partition, .. } = &self.adversary.router {
            let listed: Vec<&str> = partition.iter().flatten().map(String::as_str).collect();
            let unique: HashSet<&str> = listed.iter().copied().collect();
            if partition.len() < 2 || unique.len() != listed.len() || unique != names {
                return Err(
                    "a fork's partition must split every member into 2 or more groups".into(),
                );
            }
        }
        if self.network.history == HistoryPolicy::Shared && self.network.group_period.is_none() {
            return Err(
                "a shared history needs a group-keyed conversation ([network] group_period)".into(),
            );
        }
        for name in self
            .expect
            .read_history_before_join
            .iter()
            .chain(&self.expect.read_nothing_before_join)
        {
            if !self
                .script
                .iter()
                .any(|s| s.read_history && &s.from == name)
            {
                return Err(format!("{name:?} never reads the history (read_history)"));
            }
        }
        if matches!(self.adversary.router, RouterStrategy::TamperHistory { .. })
            && !self.script.iter().any(|s| s.read_history)
        {
            return Err("tamper_history needs a script step that reads the history".into());
        }
        if self.network.group_period == Some(0) {
            return Err("group_period must be at least 1".into());
        }
        for (i, step) in self.script.iter().enumerate() {
            if step.rekey && self.network.group_period.is_none() {
                return Err(format!(
                    "script step {i}: a rekey needs a group-keyed conversation ([network] group_period)"
                ));
            }
            if step.with_previous && i == 0 {
                return Err("script step 0 has no step before it to run with".into());
            }
        }
        for o in &self.adversary.order_servers {
            if let OrderServerStrategy::BadKeyShares { victims } = &o.strategy {
                if self.network.group_period.is_none() {
                    return Err("bad_key_shares needs a group-keyed conversation".into());
                }
                if let Some(v) = victims.iter().find(|v| !everyone.contains(v.as_str())) {
                    return Err(format!("bad_key_shares victim {v:?} is not a member"));
                }
            }
        }
        for name in
            self.expect
                .read_nothing_after_removal
                .iter()
                .chain(match &self.adversary.router {
                    RouterStrategy::ColludeWithRemoved { member } => Some(member),
                    _ => None,
                })
        {
            if !everyone.contains(name.as_str()) {
                return Err(format!("{name:?} is not a member"));
            }
        }
        if matches!(self.adversary.router, RouterStrategy::SubstituteJoin { .. })
            && !self.script.iter().any(|s| s.add.is_some())
        {
            return Err("substitute_join needs a script step that adds a member".into());
        }
        for m in &self.adversary.compromised_members {
            if !everyone.contains(m.as_str()) {
                return Err(format!("compromised member {m:?} is not a member"));
            }
        }
        if let Some(l) = &self.network.order_server_limits {
            l.limits().validate().map_err(|e| e.to_string())?;
        }
        let admins = self.network.admins();
        for (i, step) in self.script.iter().enumerate() {
            let Some(what) = step.misbehave else {
                continue;
            };
            if !self.adversary.compromised_members.contains(&step.from) {
                return Err(format!(
                    "script step {i}: {:?} misbehaves but is not a compromised member",
                    step.from
                ));
            }
            let admin = admins.contains(&step.from);
            match what {
                Misbehave::SwapSlots if !admin => {
                    return Err(format!(
                        "script step {i}: swap_slots needs an admin, {:?} is not one",
                        step.from
                    ));
                }
                Misbehave::RemoveLastAdmin if admins != [step.from.clone()] => {
                    return Err(format!(
                        "script step {i}: remove_last_admin needs {:?} to be the only admin",
                        step.from
                    ));
                }
                Misbehave::BadRn1 if !admin || self.network.group_period.is_none() => {
                    return Err(format!(
                        "script step {i}: bad_rn1 needs an admin in a group-keyed conversation"
                    ));
                }
                Misbehave::BadHistoryBlock
                    if self.network.group_period.is_none()
                        || self.network.history != HistoryPolicy::Shared =>
                {
                    return Err(format!(
                        "script step {i}: bad_history_block needs a group-keyed conversation \
                         whose history is shared"
                    ));
                }
                Misbehave::NonAdminUpdate if admin => {
                    return Err(format!(
                        "script step {i}: non_admin_update needs a member that is not an admin"
                    ));
                }
                Misbehave::Oversize
                    if self
                        .network
                        .order_server_limits
                        .and_then(|l| l.max_block_digests)
                        .is_none() =>
                {
                    return Err(format!(
                        "script step {i}: oversize needs [network] order_server_limits.max_block_digests"
                    ));
                }
                _ => {}
            }
        }
        for a in self.expect.alerts.iter().chain(&self.expect.refusals) {
            if grompi_proto::MisbehaviourKind::from_name(a).is_none() {
                return Err(format!("expected alert {a:?} is not a misbehaviour kind"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "scenario_tests.rs"]
mod tests;
