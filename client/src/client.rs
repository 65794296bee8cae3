//! The async client API for programs: an account in a home directory, its
//! state encrypted at rest, talking to the router over pinned TLS.
//!
//! ```text
//! Client::init(home, descriptor, secret)   create the account locally
//! client.register()                        register it with the router
//! client.create_conversation(name, peers)  Setup, returns the id
//! client.send(conv, text)                  a Message
//! client.sync(conv) / sync_all()           fetch and accept what arrived
//! client.subscribe() + client.receive(d)   live deliveries
//! client.update_members(conv, change)      an Update (add, remove, leave)
//! client.set_history(conv, policy)         an Update changing who reads the history
//! client.read_history(conv)                the whole history, verified from the genesis
//! client.send_receipt(conv)                a Receipt
//! client.prove_heads(conv)                 head proofs from every order server
//! client.verify(contact)                   the safety number with a contact
//! ```
//!
//! Every operation saves everything it changed in one durable transaction
//! before it returns, and before anything it composed leaves the process
//! (an Olm ratchet step that was sent is never forgotten). One process at
//! a time may use a home directory (the store is locked while open).
//!
//! Trust decisions stay in the sans-IO core ([`grompi_client_core::Member`]): this layer
//! only moves bytes, keeps state and shows what the core decided.

mod account;
pub mod audit;
pub mod contacts;
pub mod error;
mod heads;
pub mod history;
pub mod network;
mod open;
pub mod router;
mod send;
mod shared_history;
pub mod store;
mod sync;

pub use contacts::{Binding, Contact, safety_number};
pub use error::ApiError;
pub use history::{Record, Status};
pub use network::{ForkBound, fork_bound};

use crate::local_store::LocalStore;
use grompi_client_core::alert::Alert;
use grompi_client_core::content::MemberEntry;
use grompi_client_core::conversation::{Conversation, ConversationConfig, Event, Phase};
use grompi_client_core::member::Member;
use grompi_client_core::pairwise::IdentityKeys;
use grompi_proto::descriptor::NetworkDescriptor;
use grompi_proto::pb;
use grompi_proto::{AccountId, ConversationId, Index, SlotIndex, SlotRole, SlotSet};
use router::RouterConnection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use store::{AlertRecord, ConversationMeta, PendingSend, Profile};

/// The descriptor file in a home directory.
pub const DESCRIPTOR_FILE: &str = "network.toml";
/// The store file in a home directory.
pub const STORE_FILE: &str = "state.redb";
/// Order keys uploaded per batch.
pub const ORDER_KEY_BATCH: usize = 16;
/// Below this many order keys at the router, a new batch is uploaded.
pub const ORDER_KEY_LOW: u32 = 8;
/// Most unused order keys kept locally: past this no more are generated,
/// whatever the router reports.
pub const MAX_UNUSED_ORDER_KEYS: usize = 1024;
/// One-time prekeys uploaded per batch.
pub const PREKEY_BATCH: usize = 10;
/// Below this many one-time prekeys at the router, a new batch is uploaded.
pub const PREKEY_LOW: u32 = 4;
/// Deliveries asked for per Fetch.
pub const FETCH_LIMIT: u32 = 256;

/// What the client reports after taking in deliveries.
#[derive(Debug, Default)]
pub struct Progress {
    /// Events, per conversation, in order.
    pub events: Vec<(ConversationId, Event)>,
    /// Alerts raised.
    pub alerts: Vec<Alert>,
    /// Earlier sends that were still unacknowledged and were resumed.
    pub resumed: Vec<Resumed>,
}

impl Progress {
    fn extend(&mut self, other: Progress) {
        self.events.extend(other.events);
        self.alerts.extend(other.alerts);
        self.resumed.extend(other.resumed);
    }
}

/// An earlier send, saved but not acknowledged by the router, that was
/// resubmitted (the identical envelope) or found accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// The conversation the send belongs to.
    pub conversation: ConversationId,
    /// The envelope as saved before it was first submitted; resubmitted
    /// byte for byte.
    pub send: PendingSend,
    /// What became of it: acknowledged, found accepted, or refused and
    /// forgotten.
    pub outcome: ResumeOutcome,
}

/// What became of a resumed send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// The router acknowledged the resubmission (a router that already held
    /// the envelope answers it as a success and keeps it once).
    Acknowledged,
    /// The envelope was already accepted at this index of the transcript.
    AlreadyAccepted(Index),
    /// The router refused it (it never stored it, e.g. the epoch moved on):
    /// it was not sent and is forgotten. Compose it again to send it.
    Refused(String),
}

impl std::fmt::Display for ResumeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Acknowledged => f.write_str("acknowledged by the router"),
            Self::AlreadyAccepted(i) => write!(f, "already accepted as #{}", i.0),
            Self::Refused(why) => write!(f, "refused by the router, not sent: {why}"),
        }
    }
}

/// A summary of one conversation.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The conversation's id.
    pub id: ConversationId,
    /// The name this account gave the conversation locally, if any (unique
    /// among its conversations, never sent).
    pub name: Option<String>,
    /// Where the conversation is in its life (awaiting its Setup or the
    /// Update that adds this member, active, removed or halted).
    pub phase: Phase,
    /// The current epoch, once the conversation is established.
    pub epoch: Option<u64>,
    /// Members and roles.
    pub members: Vec<(AccountId, SlotRole)>,
    /// The index this member accepts next: one past the last accepted.
    pub next_index: u64,
    /// Per member, the last index its receipts say it processed.
    pub processed: BTreeMap<AccountId, Index>,
    /// Indices this member could not open.
    pub undecryptable: Vec<u64>,
    /// Accepted indices per status: quorum, fully attested.
    pub quorum_only: u64,
    /// Fully attested indices.
    pub fully_attested: u64,
    /// How the conversation is keyed.
    pub keys: KeySummary,
    /// Who reads the history sent in the current epoch.
    pub history: grompi_client_core::content::Visibility,
}

/// How a conversation's messages are keyed (`docs/PROTOCOL.md` sections
/// 4.1 and 4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySummary {
    /// Every message's key travels in a pairwise Olm block to each member.
    Pairwise,
    /// Group keys: the key generation this member holds (none after a bad
    /// RN1), the current key period and its length in indices.
    Group {
        /// The key generation of the current epoch this member holds.
        generation: Option<u64>,
        /// The current key period.
        period: u64,
        /// Indices per key period.
        period_length: u64,
    },
}

/// Key periods of the conversations this client creates unless told
/// otherwise: the group key renews every this many indices (and at every
/// membership change and Rekey).
pub const DEFAULT_KEY_PERIOD: u64 = 100;

/// An account in a home directory.
pub struct Client {
    home: PathBuf,
    store: LocalStore,
    descriptor: NetworkDescriptor,
    member: Member,
    meta: BTreeMap<ConversationId, ConversationMeta>,
    profile: Profile,
    connection: Option<RouterConnection>,
    dirty_history: BTreeMap<(ConversationId, u64), Record>,
    new_alerts: Vec<AlertRecord>,
    /// Whether `open` adopted the descriptor file just now (a store from
    /// before the descriptor was kept inside it).
    adopted_network: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("home", &self.home)
            .field("account", &self.member.account())
            .finish_non_exhaustive()
    }
}

/// Member entries from a router's slot assignments; each assigned key
/// must be the key of its slot, each account one of `roster`.
fn entries(
    slots: &SlotSet,
    assignments: &[pb::SlotAssignment],
    roster: &BTreeMap<AccountId, SlotRole>,
) -> Result<Vec<MemberEntry>, ApiError> {
    let mut out = Vec::new();
    for a in assignments {
        let account = AccountId::parse("assignment.account", &a.account)?;
        let slot = SlotIndex(a.slot);
        let key = slots
            .get(slot)
            .ok_or_else(|| ApiError::Malformed("assignment outside the slot set".into()))?;
        if key.key.to_vec() != a.key {
            return Err(ApiError::Malformed(
                "assignment key differs from its slot".into(),
            ));
        }
        let role = *roster
            .get(&account)
            .ok_or_else(|| ApiError::Malformed("assignment for a non-member".into()))?;
        out.push(MemberEntry {
            account,
            role,
            slot,
        });
    }
    if out.len() != roster.len() {
        return Err(ApiError::Malformed(
            "assignments do not cover every member".into(),
        ));
    }
    Ok(out)
}

impl Client {
    // ---- Accessors ------------------------------------------------------

    /// This account's id.
    pub fn account(&self) -> AccountId {
        self.member.account()
    }

    /// This account's identity keys.
    pub fn identity(&self) -> IdentityKeys {
        self.member.secrets().pairwise.identity()
    }

    /// The directory holding this account's descriptor ([`DESCRIPTOR_FILE`])
    /// and store ([`STORE_FILE`]).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The network descriptor this client was started with: the router
    /// and the pinned order servers.
    pub fn descriptor(&self) -> &NetworkDescriptor {
        &self.descriptor
    }

    /// Whether the router accepted the registration.
    pub fn registered(&self) -> bool {
        self.profile.registered
    }

    /// A conversation's state.
    pub fn conversation(&self, id: &ConversationId) -> Option<&Conversation> {
        self.member.conversation(id)
    }

    /// The local name of a conversation.
    pub fn conversation_name(&self, id: &ConversationId) -> Option<&str> {
        self.meta.get(id).and_then(|m| m.name.as_deref())
    }

    /// Every conversation id, with its local name.
    pub fn conversations(&self) -> Vec<(ConversationId, Option<String>)> {
        self.member
            .conversations()
            .keys()
            .map(|id| (*id, self.conversation_name(id).map(str::to_owned)))
            .collect()
    }

    /// Finds a conversation by local name, full id or unique id prefix (hex).
    pub fn resolve_conversation(&self, what: &str) -> Result<ConversationId, ApiError> {
        if let Some((id, _)) = self
            .meta
            .iter()
            .find(|(_, m)| m.name.as_deref() == Some(what))
        {
            return Ok(*id);
        }
        let lower = what.to_ascii_lowercase();
        let found: Vec<ConversationId> = self
            .member
            .conversations()
            .keys()
            .filter(|id| !lower.is_empty() && id.to_hex().starts_with(&lower))
            .copied()
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(ApiError::UnknownConversation(what.to_owned())),
            _ => Err(ApiError::Ambiguous(what.to_owned())),
        }
    }

    /// Gives a conversation a local name.
    pub fn name_conversation(&mut self, id: ConversationId, name: &str) -> Result<(), ApiError> {
        if let Some((other, _)) = self
            .meta
            .iter()
            .find(|(i, m)| **i != id && m.name.as_deref() == Some(name))
        {
            return Err(ApiError::Refused(format!(
                "the name {name:?} is already used by conversation {}",
                &other.to_hex()[..12]
            )));
        }
        self.meta.entry(id).or_default().name = Some(name.to_owned());
        self.save()
    }

    /// A summary of a conversation.
    pub fn summary(&self, id: &ConversationId) -> Option<Summary> {
        let c = self.member.conversation(id)?;
        let config = ConversationConfig::from_descriptor(&self.descriptor);
        let mut quorum_only = 0;
        let mut fully_attested = 0;
        for e in c.transcript().entries() {
            match config.status(e.attested_by) {
                grompi_client_core::transcript::AttestationStatus::Full => fully_attested += 1,
                grompi_client_core::transcript::AttestationStatus::Quorum => quorum_only += 1,
                grompi_client_core::transcript::AttestationStatus::Pending => {}
            }
        }
        Some(Summary {
            id: *id,
            name: self.conversation_name(id).map(str::to_owned),
            phase: c.phase().clone(),
            epoch: c.membership().map(|m| m.epoch().0),
            members: c
                .membership()
                .map(|m| m.members().iter().map(|(a, r)| (*a, *r)).collect())
                .unwrap_or_default(),
            next_index: c.next_expected().0,
            processed: c.processed().clone(),
            undecryptable: c.undecryptable().iter().map(|i| i.0).collect(),
            quorum_only,
            fully_attested,
            keys: match c.key_position() {
                None => KeySummary::Pairwise,
                Some((_, generation, period, period_length)) => KeySummary::Group {
                    generation: generation.map(|g| g.0),
                    period: period.0,
                    period_length,
                },
            },
            history: c.history_visibility(),
        })
    }

    /// The text of the network descriptor this account trusts, as kept in
    /// its encrypted store (with the fields only some readers parse, such
    /// as the order servers' audit logs).
    pub fn descriptor_text(&self) -> Result<String, ApiError> {
        let bytes = self
            .store
            .get(store::ACCOUNT, network::NETWORK_RECORD)?
            .ok_or_else(|| ApiError::Corrupt("the trusted network descriptor is missing".into()))?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::Corrupt("the trusted network descriptor is not UTF-8".into()))
    }

    /// The readable transcript of a conversation, in index order.
    pub fn history(&self, id: &ConversationId) -> Result<Vec<Record>, ApiError> {
        let prefix = id.as_bytes();
        let mut out: Vec<Record> = store::list_json::<Record>(&self.store, store::HISTORY)?
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, r)| r)
            .collect();
        out.sort_by_key(|r| r.index);
        Ok(out)
    }

    /// Every alert recorded, oldest first.
    pub fn alerts(&self) -> Result<Vec<AlertRecord>, ApiError> {
        let mut all = store::list_json::<AlertRecord>(&self.store, store::ALERTS)?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all.into_iter().map(|(_, a)| a).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::SlotEntry;

    fn acct(n: u8) -> AccountId {
        AccountId::from_bytes([n; 32])
    }

    /// Slots 0 (Admin) and 1 (Member), a roster of accounts 1 and 2, and
    /// the assignments a router should return.
    fn fixture() -> (
        SlotSet,
        BTreeMap<AccountId, SlotRole>,
        Vec<pb::SlotAssignment>,
    ) {
        let slots = SlotSet::new(vec![
            SlotEntry {
                key: grompi_proto::SlotKey::from_bytes([1; 32]),
                role: SlotRole::Admin,
            },
            SlotEntry {
                key: grompi_proto::SlotKey::from_bytes([2; 32]),
                role: SlotRole::Member,
            },
        ])
        .unwrap();
        let roster = [(acct(1), SlotRole::Admin), (acct(2), SlotRole::Member)]
            .into_iter()
            .collect();
        let assignments = vec![
            pb::SlotAssignment {
                account: acct(1).to_vec(),
                slot: 0,
                key: vec![1; 32],
            },
            pb::SlotAssignment {
                account: acct(2).to_vec(),
                slot: 1,
                key: vec![2; 32],
            },
        ];
        (slots, roster, assignments)
    }

    /// What the router returns from CreateConversation or PrepareUpdate is
    /// checked against the creator's own roster and the slot set it came
    /// with: roles come from the roster, never from the router.
    #[test]
    fn slot_assignments_from_the_router_are_checked() {
        let (slots, roster, good) = fixture();
        let entries_ok = entries(&slots, &good, &roster).unwrap();
        assert_eq!(entries_ok.len(), 2);
        assert_eq!(entries_ok[0].role, SlotRole::Admin);
        let refused = |assignments: Vec<pb::SlotAssignment>, why: &str| match entries(
            &slots,
            &assignments,
            &roster,
        ) {
            Err(ApiError::Malformed(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{why}: {other:?}"),
        };
        // An account not in the roster.
        let mut a = good.clone();
        a[1].account = acct(9).to_vec();
        refused(a, "non-member");
        // A key other than its slot's.
        let mut a = good.clone();
        a[1].key = vec![7; 32];
        refused(a, "differs from its slot");
        // A slot outside the set.
        let mut a = good.clone();
        a[1].slot = 5;
        refused(a, "outside the slot set");
        // A member left out.
        refused(good[..1].to_vec(), "do not cover every member");
    }
}
