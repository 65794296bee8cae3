//! Opening: decrypting an envelope's block and body, and preparing a
//! Setup or an Update candidate (this member's slot keys) before its tags
//! can be checked.

use super::{
    Conversation, DEFAULT_MAX_CANDIDATES, MAX_CANDIDATE_PEERS, Opened, Secrets, SetupPrep,
};
use crate::body::{self, BlockPlaintext, BodyContext};
use crate::codec::DecodeError;
use crate::content::Content;
use crate::delivery::Received;
use crate::keyring::SlotMacKeys;
use crate::membership::Membership;
use crate::pairwise::Pairwise;
use grompi_proto::{EnvelopeKind, Misbehaviour, SlotKey, WireError};

pub(super) fn decode_misbehaviour(e: DecodeError) -> Misbehaviour {
    let (field, reason) = match e {
        DecodeError::Truncated(f) => (f, "truncated"),
        DecodeError::Trailing(f) => (f, "trailing bytes"),
        DecodeError::TooMany { field, .. } => (field, "too many items"),
        DecodeError::Invalid { field, reason } => (field, reason),
    };
    Misbehaviour::Malformed(WireError::Invalid { field, reason })
}

impl Conversation {
    /// The MAC keys of one of this member's order keys, derived without
    /// using the key (it is removed from the keyring only when the envelope
    /// assigning it is accepted, so forged candidates consume nothing) and
    /// cached until then.
    pub(super) fn slot_keys(
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
    pub(super) fn prepare_setup(
        &mut self,
        received: &Received,
        secrets: &mut Secrets,
    ) -> Result<SetupPrep, Misbehaviour> {
        let index = received.delivery.index;
        let header = &received.delivery.header;
        let opened = self.open(received, None, secrets)?;
        let Content::Setup(content) = &opened.content else {
            return Err(Misbehaviour::UnexpectedKind(
                grompi_proto::admission::INDEX_0_MUST_BE_A_SETUP,
            ));
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
        let keys = self.own_slot_keys(&membership, received, secrets)?;
        Ok(SetupPrep {
            membership,
            keys,
            history: content.history,
            rn1: opened.rn1,
        })
    }

    /// The keys of the slot a Setup or an Update that adds this member
    /// gives it: the slot must be listed for this member, hold one of its
    /// unused order keys, and be the one the delivered block is addressed
    /// to.
    pub(super) fn own_slot_keys(
        &mut self,
        membership: &Membership,
        received: &Received,
        secrets: &mut Secrets,
    ) -> Result<SlotMacKeys, Misbehaviour> {
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
        Ok(keys)
    }

    /// Decrypts an envelope: this member's own (from the outbox) or another
    /// member's (from its block). `membership` names who holds which slot;
    /// `None` for the Setup, whose sender is learned from the block.
    pub(super) fn open(
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
                rn1: None,
            });
        }
        if let Some(content) = self.outbox.remove(&header.core_hash()) {
            return Ok(Opened {
                sender: Some(self.me),
                content,
                rn1: self.sent_rn1.remove(&header.core_hash()),
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
            rn1: block.rn1,
        })
    }
}
