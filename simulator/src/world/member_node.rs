//! One member in the simulated network: the real client ([`Member`], which
//! owns the secrets and the conversation state and routes deliveries), and
//! a record of what it accepted, read and raised, with virtual times.

use grompi_client_core::compose::Composed;
use grompi_client_core::content::{Change, Content, MemberEntry, Visibility};
use grompi_client_core::errors::ClientError;
use grompi_client_core::history::{HistoryEntry, HistoryItem, HistoryVerifier};
use grompi_client_core::{Alert, Conversation, ConversationConfig, Event, Member, Phase, Secrets};
use grompi_proto::{AccountId, ConversationId, EnvelopeKind, Index, Misbehaviour, SlotSet, pb};
use std::collections::{BTreeMap, BTreeSet};

/// What the member learnt about one accepted index.
#[derive(Debug, Clone, Default)]
pub struct IndexInfo {
    /// Kind of the envelope at this index, set when the client reports it accepted.
    pub kind: Option<EnvelopeKind>,
    /// The authenticated sender of a message.
    pub sender: Option<AccountId>,
    /// A message's decrypted body, decoded as UTF-8 (lossily).
    pub plaintext: Option<String>,
    /// The membership change, if the index applied one.
    pub change: Option<Change>,
    /// When it was accepted (virtual microseconds).
    pub accepted_at: u64,
}

/// Where a member's reading of the conversation's history stands.
#[derive(Debug)]
pub enum HistoryRead {
    /// Pages are being fetched from the router and fed to the verifier.
    Reading(Box<HistoryVerifier>),
    /// The history verified against the attested chain: what it shows.
    Verified(Vec<HistoryEntry>),
    /// The history did not verify (the alert says why): nothing is shown.
    Refused,
    /// The router refused the call (no alert: the client sees an error,
    /// which the run's notes record).
    Failed,
}

/// A member's reading of the conversation's history: where it started and
/// where it stands.
#[derive(Debug)]
pub struct HistoryState {
    /// The member's first own index (0, or the Update that added it).
    pub first_own: u64,
    /// The last index the read covers: the last one the member had
    /// accepted when it started.
    pub through: u64,
    /// Where it stands.
    pub read: HistoryRead,
}

/// A member and everything it saw.
pub struct MemberNode {
    /// Its name in the scenario.
    pub name: String,
    /// False when the scenario compromises it: the adversary holds a copy of its keys.
    pub honest: bool,
    /// Its account id, derived from its identity keys; the key of `World::by_account`.
    pub account: AccountId,
    /// The session token from its registration with the router core; its calls carry it.
    pub token: Vec<u8>,
    /// The client: its secrets and its conversations.
    member: Member,
    /// The conversation the scenario is about.
    id: ConversationId,
    config: ConversationConfig,
    /// Per accepted index, what it learnt.
    pub info: BTreeMap<u64, IndexInfo>,
    /// Alerts with the virtual time they were raised.
    pub alerts: Vec<(u64, Alert)>,
    /// The member list its Setup established (set by the world).
    pub initial_roster: Option<Vec<AccountId>>,
    /// A compromised member's order key secrets, as the adversary copied
    /// them before the run (empty for an honest member).
    pub stolen_order_keys: Vec<[u8; 32]>,
    /// Every account its member list ever held (checked after each
    /// delivery, head proof and audit).
    pub ever_listed: BTreeSet<AccountId>,
    /// Its reading of the conversation's history, once a script step asked
    /// for it.
    pub history: Option<HistoryState>,
}

impl MemberNode {
    /// A member with its secrets, registered under `token`; it follows no
    /// conversation until [`MemberNode::follow`].
    pub fn new(
        name: String,
        honest: bool,
        secrets: Secrets,
        token: Vec<u8>,
        config: ConversationConfig,
    ) -> Self {
        let member = Member::new(secrets, config.clone());
        let account = member.account();
        Self {
            name,
            honest,
            account,
            token,
            member,
            id: ConversationId::from_bytes([0; 32]),
            config,
            info: BTreeMap::new(),
            alerts: Vec::new(),
            initial_roster: None,
            stolen_order_keys: Vec::new(),
            ever_listed: BTreeSet::new(),
            history: None,
        }
    }

    /// Names the conversation the scenario is about (drawn from the seed
    /// after the accounts are set up).
    pub fn follow(&mut self, id: ConversationId) {
        self.id = id;
    }

    /// The client configuration (`Member` keeps its own copy private).
    pub fn config(&self) -> &ConversationConfig {
        &self.config
    }

    /// Its secrets, to change.
    pub fn secrets_mut(&mut self) -> &mut Secrets {
        self.member.secrets_mut()
    }

    /// The conversation, once it learnt of it.
    pub fn conversation(&self) -> Option<&Conversation> {
        self.member.conversation(&self.id)
    }

    /// The conversation, once it learnt of it, to change.
    pub fn conversation_mut(&mut self) -> Option<&mut Conversation> {
        self.member.conversation_mut(&self.id)
    }

    /// Whether its conversation is Active, so it can send (a script step waits until then).
    pub fn active(&self) -> bool {
        self.conversation()
            .is_some_and(|c| *c.phase() == Phase::Active)
    }

    /// Whether it was removed or left.
    pub fn removed(&self) -> bool {
        self.conversation()
            .is_some_and(|c| *c.phase() == Phase::Removed)
    }

    /// Creates the conversation with the slots the router assigned,
    /// group-keyed with key periods of `group_period` indices when it is
    /// `Some`; returns the Setup to submit.
    pub fn create(
        &mut self,
        slots: SlotSet,
        members: Vec<MemberEntry>,
        group_period: Option<u64>,
        history: Visibility,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Composed, ClientError> {
        self.member
            .create_with_history(self.id, slots, members, group_period, history, rng)
    }

    /// Starts reading the conversation's history up to the last index it
    /// accepted; returns the first index to ask the router for, or `None`
    /// when it has accepted nothing yet.
    pub fn start_history(&mut self) -> Option<Index> {
        let anchor = self.conversation()?.history_anchor()?;
        let (first_own, through) = (anchor.first_own.0, anchor.through.0);
        let verifier = HistoryVerifier::new(anchor);
        let next = verifier.next_index();
        self.history = Some(HistoryState {
            first_own,
            through,
            read: HistoryRead::Reading(Box::new(verifier)),
        });
        Some(next)
    }

    /// Takes one page of history from the router at virtual time `now`;
    /// returns the next index to ask for while the history is incomplete
    /// and the page moved it on. A page that moves nothing on ends the
    /// read (the verifier then says the history ends too early).
    pub fn history_page(&mut self, page: pb::FetchHistoryResponse, now: u64) -> Option<Index> {
        let state = self.history.as_mut()?;
        let HistoryRead::Reading(verifier) = &mut state.read else {
            return None;
        };
        let before = verifier.next_index();
        let mut failed = None;
        for e in page.envelopes {
            let pushed = match HistoryItem::try_from(e) {
                Ok(item) => verifier.push(item),
                Err(_) => Err(Misbehaviour::HistoryMismatch(
                    "an envelope of the history is malformed",
                )),
            };
            if let Err(m) = pushed {
                failed = Some(m);
                break;
            }
        }
        if failed.is_none() && !verifier.is_complete() && verifier.next_index() > before {
            return Some(verifier.next_index());
        }
        let read = std::mem::replace(&mut state.read, HistoryRead::Refused);
        let result = match (failed, read) {
            (Some(m), _) => Err(m),
            (None, HistoryRead::Reading(v)) => v.finish(),
            (None, other) => {
                state.read = other;
                return None;
            }
        };
        match result {
            Ok(entries) => state.read = HistoryRead::Verified(entries),
            Err(kind) => {
                state.read = HistoryRead::Refused;
                self.alerts.push((
                    now,
                    Alert {
                        conversation: self.id,
                        kind,
                        index: None,
                        server: None,
                    },
                ));
            }
        }
        None
    }

    /// The router refused a history call: the read ends, unverified.
    pub fn history_failed(&mut self) {
        if let Some(state) = &mut self.history {
            state.read = HistoryRead::Failed;
        }
    }

    /// Builds an envelope for the conversation with its client (a Rekey
    /// with `Member::rekey`).
    pub fn compose(
        &mut self,
        content: Content,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Composed, ClientError> {
        if content == Content::Rekey {
            return self.member.rekey(&self.id, rng);
        }
        self.member.compose(&self.id, content, rng)
    }

    /// Handles one delivery off the wire, at virtual time `now`, through
    /// the client (which starts the conversation on its first delivery).
    pub fn receive(&mut self, wire: pb::Delivery, now: u64) {
        self.member.receive(wire);
        self.drain(now);
    }

    /// Collects the client's alerts and events.
    pub fn drain(&mut self, now: u64) {
        for a in self.member.drain_alerts() {
            self.alerts.push((now, a));
        }
        if let Some(ms) = self.conversation().and_then(|c| c.membership()) {
            let listed: Vec<AccountId> = ms.members().keys().copied().collect();
            self.ever_listed.extend(listed);
        }
        for (conversation, e) in self.member.drain_events() {
            if conversation != self.id {
                continue;
            }
            match e {
                Event::Accepted { index, kind, .. } => {
                    let i = self.info.entry(index.0).or_default();
                    i.kind = Some(kind);
                    i.accepted_at = now;
                }
                Event::Message {
                    index,
                    sender,
                    plaintext,
                    ..
                } => {
                    let i = self.info.entry(index.0).or_default();
                    i.sender = Some(sender);
                    i.plaintext = Some(String::from_utf8_lossy(&plaintext).into_owned());
                }
                Event::MembershipChanged {
                    index,
                    change,
                    authorized,
                    ..
                } => {
                    if authorized {
                        self.info.entry(index.0).or_default().change = change;
                    }
                }
                Event::StatusChanged { .. } | Event::Receipt { .. } => {}
            }
        }
    }
}
