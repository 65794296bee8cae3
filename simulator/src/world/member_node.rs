//! One member in the simulated network: the real client state machine
//! ([`Conversation`]) with its secrets, and a record of what it accepted,
//! read and raised, with virtual times.

use grompi_client::content::Change;
use grompi_client::{Alert, Conversation, ConversationConfig, Event, Incoming, Phase, Secrets};
use grompi_proto::{AccountId, ConversationId, EnvelopeKind, Index, pb};
use std::collections::{BTreeMap, BTreeSet};

/// What the member learnt about one accepted index.
#[derive(Debug, Clone, Default)]
pub struct IndexInfo {
    /// The envelope kind.
    pub kind: Option<EnvelopeKind>,
    /// The authenticated sender of a message.
    pub sender: Option<AccountId>,
    /// The plaintext of a message.
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
    /// Whether its keys are its own.
    pub honest: bool,
    /// Its secrets.
    pub secrets: Secrets,
    /// Its account.
    pub account: AccountId,
    /// Its router session token.
    pub token: Vec<u8>,
    /// The conversation, once it learnt of it.
    pub conversation: Option<Conversation>,
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
    /// A member with its secrets, registered under `token`.
    pub fn new(
        name: String,
        honest: bool,
        secrets: Secrets,
        token: Vec<u8>,
        config: ConversationConfig,
    ) -> Self {
        let account = secrets.pairwise.account_id();
        Self {
            name,
            honest,
            secrets,
            account,
            token,
            conversation: None,
            config,
            info: BTreeMap::new(),
            alerts: Vec::new(),
            initial_roster: None,
            stolen_order_keys: Vec::new(),
            ever_listed: BTreeSet::new(),
        }
    }

    /// The client configuration.
    pub fn config(&self) -> &ConversationConfig {
        &self.config
    }

    /// Whether it can send now.
    pub fn active(&self) -> bool {
        self.conversation
            .as_ref()
            .is_some_and(|c| *c.phase() == Phase::Active)
    }

    /// Whether it was removed or left.
    pub fn removed(&self) -> bool {
        self.conversation
            .as_ref()
            .is_some_and(|c| *c.phase() == Phase::Removed)
    }

    /// Handles one delivery off the wire, at virtual time `now`. A delivery
    /// for an unknown conversation starts one, as `Member` does: waiting for
    /// the Setup at index 0, otherwise for the Update that adds it.
    pub fn receive(&mut self, conversation: ConversationId, wire: pb::Delivery, now: u64) {
        let index = Index(wire.index);
        match Incoming::try_from(wire) {
            Err(e) => self.alerts.push((
                now,
                Alert {
                    conversation,
                    kind: grompi_proto::Misbehaviour::Malformed(e),
                    index: Some(index),
                    server: None,
                },
            )),
            Ok(incoming) => {
                let conv = self.conversation.get_or_insert_with(|| {
                    if matches!(&incoming, Incoming::Envelope(d) if d.index == Index(0)) {
                        Conversation::invited(conversation, self.account, self.config.clone())
                    } else {
                        Conversation::joining(conversation, self.account, self.config.clone())
                    }
                });
                conv.receive_incoming(incoming, &mut self.secrets);
            }
        }
        self.drain(now);
    }

    /// Collects the conversation's alerts and events.
    pub fn drain(&mut self, now: u64) {
        let Some(conv) = self.conversation.as_mut() else {
            return;
        };
        for a in conv.drain_alerts() {
            self.alerts.push((now, a));
        }
        if let Some(ms) = conv.membership() {
            self.ever_listed.extend(ms.members().keys().copied());
        }
        for e in conv.drain_events() {
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
