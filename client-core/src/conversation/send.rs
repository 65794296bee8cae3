//! Sending: composing this member's envelopes (Message, Update, Receipt,
//! Noise) and the receipt content.

use super::{Conversation, Phase, Secrets};
use crate::compose::{self, Composed, Sending};
use crate::content::Content;
use crate::errors::ClientError;
use crate::group_key::{GroupKeys, KeyGeneration};
use grompi_proto::{AccountId, CoreHash, Misbehaviour, Sequence, SlotIndex};
use std::collections::BTreeSet;

impl Conversation {
    /// Restores an envelope this member composed but has not seen accepted
    /// (from the local store after a restart), so it opens when delivered.
    pub fn restore_sent(&mut self, core: CoreHash, content: Content) {
        self.outbox.insert(core, content);
    }

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
        self.build(content, true, None, rng, secrets)
    }

    /// Like [`Conversation::compose`] without the sender's own membership
    /// check: what a compromised member sends (tests only).
    #[cfg(feature = "testkit")]
    pub fn compose_unchecked(
        &mut self,
        content: Content,
        rng: &mut impl rand::CryptoRng,
        secrets: &mut Secrets,
    ) -> Result<Composed, ClientError> {
        self.build(content, false, None, rng, secrets)
    }

    /// Like [`Conversation::compose_unchecked`] with a history block the
    /// sender forged (`forged` says how): what a compromised member sends
    /// so that members added later cannot read it (tests only).
    #[cfg(feature = "testkit")]
    pub fn compose_forged_history(
        &mut self,
        content: Content,
        forged: crate::history::ForgedHistory,
        rng: &mut impl rand::CryptoRng,
        secrets: &mut Secrets,
    ) -> Result<Composed, ClientError> {
        self.build(content, false, Some(forged), rng, secrets)
    }

    pub(super) fn build(
        &mut self,
        content: Content,
        check_rules: bool,
        forged: Option<crate::history::ForgedHistory>,
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
        let keys = keys.clone();
        if matches!(content, Content::Rekey) {
            // The rules every receiver runs: an Admin, in a group-keyed
            // conversation.
            if check_rules && m.role(&self.me) != Some(grompi_proto::SlotRole::Admin) {
                return Err(ClientError::InvalidMembership("only an Admin may rekey"));
            }
            if self.group.is_none() && check_rules {
                return Err(ClientError::NotActive(
                    "a pairwise-keyed conversation has no group key to renew",
                ));
            }
        }
        // Who takes part in the key generation a Setup, Update or Rekey
        // starts: everyone but the members an Update removes.
        let next_members: Option<BTreeSet<AccountId>> = match &content {
            Content::Update(u) => Some(u.next_members.iter().map(|e| e.account).collect()),
            _ => None,
        };
        let takes_part = |a: &AccountId| next_members.as_ref().is_none_or(|n| n.contains(a));
        let sequence = self.next_sequence;
        let group = self
            .group
            .as_ref()
            .map(|g| (g.period_length, g.keys.as_ref().map(GroupKeys::current)));
        let mut rn1 = None;
        // The key generation the envelope uses (a Message's or Receipt's)
        // or starts (a Rekey's), for its history block.
        let mut generation_used = None;
        let keying = match (&content, group) {
            (Content::Message(_) | Content::Receipt(_), Some(_)) => {
                let (id, key) = self.group_send_key(slot, sequence)?;
                generation_used = Some(KeyGeneration(id.generation));
                compose::Keying::Group { id, key }
            }
            (Content::Update(_), Some((period_length, _))) => {
                let next = epoch.next().ok_or(ClientError::Overflow("epoch"))?;
                let (start, r) =
                    self.new_key_start(next, KeyGeneration(0), period_length.max(1), rng)?;
                compose::Keying::Start {
                    start,
                    rn1: rn1.insert(r),
                    takes_part: &takes_part,
                }
            }
            (Content::Rekey, Some((period_length, current))) => {
                let current = current.ok_or(ClientError::NotActive(
                    "this member holds no group key for the epoch",
                ))?;
                let generation = KeyGeneration(
                    current
                        .0
                        .checked_add(1)
                        .ok_or(ClientError::Overflow("key generation"))?,
                );
                let (start, r) = self.new_key_start(epoch, generation, period_length, rng)?;
                generation_used = Some(generation);
                compose::Keying::Start {
                    start,
                    rn1: rn1.insert(r),
                    takes_part: &takes_part,
                }
            }
            _ => compose::Keying::Pairwise,
        };
        let group_keyed = matches!(keying, compose::Keying::Group { .. });
        let started = match &keying {
            compose::Keying::Start { rn1, .. } => Some(*rn1),
            _ => None,
        };
        let mut seal = self.history_seal(&content, epoch, generation_used, started);
        if let Some(f) = forged {
            seal = f.apply(seal);
        }
        let composed = compose::compose_with_history(
            &Sending {
                conversation: self.id,
                epoch,
                sender: slot,
                sequence,
                last_seen: self.transcript.last().map(|e| e.index),
                recipients: &recipients,
                mac_keys: &keys,
            },
            &content,
            keying,
            seal.as_ref(),
            rng,
            &mut secrets.pairwise,
        );
        let composed = match composed {
            Ok(c) => c,
            Err(e) => {
                // The sender chain moved past this sequence: it is burned
                // (receivers skip it like any sequence never accepted).
                if group_keyed {
                    self.next_sequence = Sequence(self.next_sequence.0.saturating_add(1));
                }
                return Err(e);
            }
        };
        if let Some(rn1) = rn1 {
            self.sent_rn1
                .insert(composed.envelope.header().core_hash(), rn1);
        }
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
}
