//! One member in the simulated network: the real client ([`Member`], which
//! owns the secrets and the conversation state and routes deliveries), and
//! a record of what it accepted, read and raised, with virtual times.

use grompi_client_core::compose::Composed;
use grompi_client_core::content::{Change, Content, MemberEntry};
use grompi_client_core::errors::ClientError;
use grompi_client_core::{Alert, Conversation, ConversationConfig, Event, Member, Phase, Secrets};
use grompi_proto::{AccountId, ConversationId, EnvelopeKind, SlotSet, pb};
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
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Composed, ClientError> {
        self.member
            .create_keyed_conversation(self.id, slots, members, group_period, rng)
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
