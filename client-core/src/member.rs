//! One account's view of all its conversations: routes what the router
//! sends to the right [`Conversation`], creates the state for conversations
//! it is invited to or added to, and collects alerts and events.

use crate::alert::Alert;
use crate::compose::Composed;
use crate::content::{Content, MemberEntry};
use crate::conversation::{Conversation, ConversationConfig, Event, Phase, Secrets};
use crate::delivery::Incoming;
use crate::errors::ClientError;
use grompi_proto::{AccountId, ConversationId, Index, Misbehaviour, SlotSet, pb};
use std::collections::{BTreeMap, VecDeque};

/// Most conversations waiting for their Setup or for the Update that adds
/// this member; deliveries for further unknown conversations are dropped
/// (and counted).
pub const MAX_WAITING_CONVERSATIONS: usize = 256;

/// An account and its conversations.
pub struct Member {
    secrets: Secrets,
    config: ConversationConfig,
    conversations: BTreeMap<ConversationId, Conversation>,
    alerts: VecDeque<Alert>,
    dropped: u64,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("account", &self.account())
            .field("conversations", &self.conversations.len())
            .finish_non_exhaustive()
    }
}

impl Member {
    /// An account with its secrets, in a network with `config`.
    pub fn new(secrets: Secrets, config: ConversationConfig) -> Self {
        Self {
            secrets,
            config,
            conversations: BTreeMap::new(),
            alerts: VecDeque::new(),
            dropped: 0,
        }
    }

    /// An account with its secrets and conversations restored from the
    /// local store.
    pub fn restore(
        secrets: Secrets,
        config: ConversationConfig,
        conversations: Vec<Conversation>,
    ) -> Self {
        let mut m = Self::new(secrets, config);
        for c in conversations {
            m.conversations.insert(c.id(), c);
        }
        m
    }

    /// The account's secrets (sessions, order keys), to save.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// A conversation's state, to start a head query or save it.
    pub fn conversation_mut(&mut self, id: &ConversationId) -> Option<&mut Conversation> {
        self.conversations.get_mut(id)
    }

    /// This account's id.
    pub fn account(&self) -> AccountId {
        self.secrets.pairwise.account_id()
    }

    /// The account's secrets (sessions, order keys).
    pub fn secrets_mut(&mut self) -> &mut Secrets {
        &mut self.secrets
    }

    /// A conversation's state.
    pub fn conversation(&self, id: &ConversationId) -> Option<&Conversation> {
        self.conversations.get(id)
    }

    /// Every conversation, by id.
    pub fn conversations(&self) -> &BTreeMap<ConversationId, Conversation> {
        &self.conversations
    }

    /// Deliveries dropped because too many unknown conversations wait.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Creates a conversation with the slots the router assigned; returns
    /// the Setup to submit.
    pub fn create_conversation(
        &mut self,
        id: ConversationId,
        slots: SlotSet,
        members: Vec<MemberEntry>,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Composed, ClientError> {
        self.create_keyed_conversation(id, slots, members, None, rng)
    }

    /// Like [`Member::create_conversation`], group-keyed with key periods of
    /// `period_length` indices when it is `Some` (`docs/PROTOCOL.md`
    /// section 4.5).
    pub fn create_keyed_conversation(
        &mut self,
        id: ConversationId,
        slots: SlotSet,
        members: Vec<MemberEntry>,
        period_length: Option<u64>,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Composed, ClientError> {
        self.create_with_history(
            id,
            slots,
            members,
            period_length,
            crate::content::Visibility::Joined,
            rng,
        )
    }

    /// [`Member::create_keyed_conversation`] with a history policy
    /// ([`Conversation::create_with_history`]).
    pub fn create_with_history(
        &mut self,
        id: ConversationId,
        slots: SlotSet,
        members: Vec<MemberEntry>,
        period_length: Option<u64>,
        history: crate::content::Visibility,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Composed, ClientError> {
        if self.conversations.contains_key(&id) {
            return Err(ClientError::NotActive("a conversation with this id exists"));
        }
        let (conv, composed) = Conversation::create_with_history(
            id,
            self.config.clone(),
            slots,
            members,
            period_length,
            history,
            rng,
            &mut self.secrets,
        )?;
        self.conversations.insert(id, conv);
        Ok(composed)
    }

    /// Composes a Rekey in a group-keyed conversation (Admins only).
    pub fn rekey(
        &mut self,
        id: &ConversationId,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Composed, ClientError> {
        let conv = self
            .conversations
            .get_mut(id)
            .ok_or(ClientError::NotActive("unknown conversation"))?;
        conv.rekey(rng, &mut self.secrets)
    }

    /// Builds an envelope for a conversation.
    pub fn compose(
        &mut self,
        id: &ConversationId,
        content: Content,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Composed, ClientError> {
        let conv = self
            .conversations
            .get_mut(id)
            .ok_or(ClientError::NotActive("no such conversation"))?;
        conv.compose(content, rng, &mut self.secrets)
    }

    /// Handles one delivery from the router, as it came off the wire.
    pub fn receive(&mut self, wire: pb::Delivery) {
        let named = ConversationId::parse("delivery.conversation_id", &wire.conversation_id)
            .unwrap_or(ConversationId::from_bytes([0; 32]));
        let index = Index(wire.index);
        match Incoming::try_from(wire) {
            Ok(incoming) => self.receive_incoming(incoming),
            Err(e) => self.alerts.push_back(Alert {
                conversation: named,
                kind: Misbehaviour::Malformed(e),
                index: Some(index),
                server: None,
            }),
        }
    }

    /// Handles one parsed delivery. A delivery for an unknown conversation
    /// starts one: waiting for the Setup when it is index 0, otherwise for
    /// the Update that adds this member.
    pub fn receive_incoming(&mut self, incoming: Incoming) {
        let id = incoming.conversation();
        if !self.conversations.contains_key(&id) {
            let waiting = self
                .conversations
                .values()
                .filter(|c| matches!(c.phase(), Phase::AwaitingSetup | Phase::AwaitingJoin))
                .count();
            if waiting >= MAX_WAITING_CONVERSATIONS {
                self.dropped += 1;
                return;
            }
            let first_is_setup = matches!(&incoming, Incoming::Envelope(d) if d.index == Index(0));
            let me = self.account();
            let conv = if first_is_setup {
                Conversation::invited(id, me, self.config.clone())
            } else {
                Conversation::joining(id, me, self.config.clone())
            };
            self.conversations.insert(id, conv);
        }
        if let Some(conv) = self.conversations.get_mut(&id) {
            conv.receive_incoming(incoming, &mut self.secrets);
        }
    }

    /// Takes the alerts of every conversation (and of deliveries that did
    /// not parse, named by the conversation id they carried, or all zeros).
    pub fn drain_alerts(&mut self) -> Vec<Alert> {
        let mut out: Vec<Alert> = self.alerts.drain(..).collect();
        for c in self.conversations.values_mut() {
            out.extend(c.drain_alerts());
        }
        out
    }

    /// Takes the events of every conversation.
    pub fn drain_events(&mut self) -> Vec<(ConversationId, Event)> {
        let mut out = Vec::new();
        for (id, c) in &mut self.conversations {
            out.extend(c.drain_events().into_iter().map(|e| (*id, e)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::World;

    #[test]
    fn routes_wire_deliveries_and_starts_conversations() {
        let mut w = World::new(31, 3, 3, 3);
        w.deliver_now = vec![false; 3];
        w.setup_with(0, &[0, 1]);
        // Member 1 only receives here: a replica of a member cannot follow
        // Olm sessions in which its original also sent.
        w.send(0, Content::Message(b"hi".to_vec()));
        let mut next = w.roster();
        next.insert(2, grompi_proto::SlotRole::Member);
        let at = w.update(
            0,
            crate::content::Change::Add {
                account: w.accounts[2],
                role: grompi_proto::SlotRole::Member,
            },
            next,
        );
        w.send(0, Content::Message(b"welcome".to_vec()));
        // Member 1 through a Member, from the wire, in reverse order.
        let (secrets, _) = w.replica(1);
        let mut m1 = Member::new(secrets, w.config.clone());
        for i in (0..w.log.len() as u64).rev() {
            let d = w.delivery(Index(i), 1, &[0, 1, 2]).unwrap();
            m1.receive(pb::Delivery::from(&d));
        }
        let c = m1.conversation(&w.conversation).unwrap();
        assert_eq!(c.next_expected(), Index(w.log.len() as u64));
        assert!(m1.drain_alerts().is_empty());
        let texts: Vec<_> = m1
            .drain_events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Message { plaintext, .. } => Some(plaintext),
                _ => None,
            })
            .collect();
        assert_eq!(texts, vec![b"hi".to_vec(), b"welcome".to_vec()]);
        // Member 2 is added: its first delivery is the Update.
        let (secrets, _) = w.replica(2);
        let mut m2 = Member::new(secrets, w.config.clone());
        for i in at.0..w.log.len() as u64 {
            let d = w.delivery(Index(i), 2, &[0, 1, 2]).unwrap();
            m2.receive(pb::Delivery::from(&d));
        }
        assert_eq!(
            m2.conversation(&w.conversation).unwrap().phase(),
            &Phase::Active
        );
        // Garbage is an alert, not a panic.
        m2.receive(pb::Delivery {
            conversation_id: vec![1; 5],
            ..Default::default()
        });
        let alerts = m2.drain_alerts();
        assert_eq!(alerts.len(), 1);
        assert!(matches!(alerts[0].kind, Misbehaviour::Malformed(_)));
    }

    /// `create_keyed_conversation` puts the key start in the Setup only
    /// when asked to; `rekey` needs a conversation, and an active one.
    #[test]
    fn creates_a_group_keyed_conversation_and_rekeys_only_an_active_one() {
        use grompi_proto::HeaderKey;
        use rand::SeedableRng;
        let mut w = World::new(32, 3, 3, 3);
        w.setup(0);
        let ms = w.convs[0].as_ref().unwrap().membership().unwrap().clone();
        let members: Vec<MemberEntry> = ms
            .holders()
            .map(|(slot, account)| MemberEntry {
                account,
                role: ms.role(&account).unwrap(),
                slot,
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(32);
        let id = w.conversation;
        for period in [Some(7), None] {
            let (secrets, _) = w.replica(0);
            let mut m = Member::new(secrets, w.config.clone());
            assert!(matches!(
                m.rekey(&id, &mut rng),
                Err(ClientError::NotActive(_))
            ));
            let setup = m
                .create_keyed_conversation(
                    id,
                    ms.slots().clone(),
                    members.clone(),
                    period,
                    &mut rng,
                )
                .unwrap();
            match (period, setup.envelope.header().key()) {
                (Some(p), HeaderKey::Start(start)) => {
                    assert_eq!((start.generation(), start.period_length()), (0, p));
                }
                (None, HeaderKey::None) => {}
                (p, k) => panic!("period {p:?} gave the Setup key fields {k:?}"),
            }
            // Until its Setup is accepted the conversation cannot rekey.
            assert!(matches!(
                m.rekey(&id, &mut rng),
                Err(ClientError::NotActive(_))
            ));
            assert!(
                m.create_conversation(id, ms.slots().clone(), members.clone(), &mut rng)
                    .is_err()
            );
        }
    }
}
