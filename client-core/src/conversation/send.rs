//! Sending: composing this member's envelopes (Message, Update, Receipt,
//! Noise) and the receipt content.

use super::{Conversation, Phase, Secrets};
use crate::compose::{self, Composed, Sending};
use crate::content::Content;
use crate::errors::ClientError;
use grompi_proto::{AccountId, CoreHash, Misbehaviour, Sequence, SlotIndex};

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
        self.build(content, true, rng, secrets)
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
}
