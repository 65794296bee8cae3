//! The sender side: one envelope from one content.
//!
//! The body is encrypted once under a fresh body key; the header commits to
//! the key and the body; each recipient gets a block with `(body key, core
//! hash)` encrypted in its pairwise session; the sender MACs the envelope
//! hash and its sequence number for each order server with its slot's
//! submission keys. Nothing is signed.

use crate::body::{self, BlockPlaintext, BodyContext, BodyKey};
use crate::content::Content;
use crate::errors::ClientError;
use crate::group_key::Rn1;
use crate::history::{Capsule, HistorySeal};
use crate::keyring::SlotMacKeys;
use crate::pairwise::{Pairwise, PairwiseError};
use grompi_proto::envelope::HeaderFields;
use grompi_proto::limits::MAX_BODY_BYTES;
use grompi_proto::mac::Tag;
use grompi_proto::{
    AccountId, BodyHash, ConversationId, Envelope, EnvelopeHeader, Epoch, HeaderKey, Index, KeyId,
    KeyStart, RecipientBlock, Sequence, SlotIndex,
};

/// An envelope ready to submit, with one submission tag per order server in
/// descriptor order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Composed {
    /// The envelope: header, body, and one block per other member (and, in
    /// an Update, per member it adds).
    pub envelope: Envelope,
    /// Submission tags, in descriptor order.
    pub submission_tags: Vec<Tag>,
}

/// Everything a sender states about one envelope.
#[derive(Clone, Copy, Debug)]
pub struct Sending<'a> {
    /// The conversation the envelope is sent in.
    pub conversation: ConversationId,
    /// The sender's epoch.
    pub epoch: Epoch,
    /// The sender's slot.
    pub sender: SlotIndex,
    /// The sender's next sequence number.
    pub sequence: Sequence,
    /// The last index the sender accepted.
    pub last_seen: Option<Index>,
    /// Recipients (slot and account), the sender excluded.
    pub recipients: &'a [(SlotIndex, AccountId)],
    /// The sender's slot MAC keys for the epoch.
    pub mac_keys: &'a SlotMacKeys,
}

/// How an envelope's body key is made and shared (`docs/PROTOCOL.md`
/// sections 4.1 and 4.5).
pub enum Keying<'a> {
    /// A fresh body key in every recipient's pairwise block.
    Pairwise,
    /// A group-keyed conversation's Setup, Update or Rekey: a fresh body
    /// key in pairwise blocks, the key start in the header, and the RN1 in
    /// the block of every recipient `takes_part` accepts.
    Start {
        /// The key start the header carries.
        start: KeyStart,
        /// The generation's RN1.
        rn1: &'a Rn1,
        /// Whether a recipient takes part in the generation (a member an
        /// Update removes does not, and gets a block without RN1).
        takes_part: &'a dyn Fn(&AccountId) -> bool,
    },
    /// A group-keyed Message or Receipt: the body is sealed under the
    /// group's message key, named by the header's key id; no blocks.
    Group {
        /// The key id the header carries.
        id: KeyId,
        /// The message key from the sender's chain.
        key: BodyKey,
    },
}

/// Builds an envelope. Fails before touching any session when a recipient
/// has no pairwise session.
pub fn compose(
    sending: &Sending<'_>,
    content: &Content,
    rng: &mut impl rand::CryptoRng,
    pairwise: &mut Pairwise,
) -> Result<Composed, ClientError> {
    compose_keyed(sending, content, Keying::Pairwise, rng, pairwise)
}

/// Builds an envelope keyed as `keying` says. Fails before touching any
/// session when a recipient has no pairwise session.
pub fn compose_keyed(
    sending: &Sending<'_>,
    content: &Content,
    keying: Keying<'_>,
    rng: &mut impl rand::CryptoRng,
    pairwise: &mut Pairwise,
) -> Result<Composed, ClientError> {
    compose_with_history(sending, content, keying, None, rng, pairwise)
}

/// [`compose_keyed`] with, when `history` is given, a history block as the
/// last block: the body key (and the link) sealed under the history key
/// (`docs/PROTOCOL.md` section 4.6).
pub fn compose_with_history(
    sending: &Sending<'_>,
    content: &Content,
    keying: Keying<'_>,
    history: Option<&HistorySeal>,
    rng: &mut impl rand::CryptoRng,
    pairwise: &mut Pairwise,
) -> Result<Composed, ClientError> {
    let recipients: &[(SlotIndex, AccountId)] = match keying {
        Keying::Group { .. } => &[],
        _ => sending.recipients,
    };
    if let Some((_, missing)) = recipients.iter().find(|(_, a)| !pairwise.has_session(a)) {
        return Err(ClientError::NoSession(*missing));
    }
    let kind = content.kind();
    let slot_set_hash = match content {
        Content::Setup(s) => Some(s.slots.hash()),
        Content::Update(u) => Some(u.next_slots.hash()),
        _ => None,
    };
    let (key, header_key) = match &keying {
        Keying::Pairwise => (BodyKey::generate(rng), HeaderKey::None),
        Keying::Start { start, .. } => (BodyKey::generate(rng), HeaderKey::Start(*start)),
        Keying::Group { id, key } => (key.clone(), HeaderKey::Id(*id)),
    };
    let context = BodyContext {
        conversation: sending.conversation,
        epoch: sending.epoch,
        kind,
        sender: sending.sender,
        sequence: sending.sequence,
    };
    let plaintext = zeroize::Zeroizing::new(content.encode());
    let body = body::seal(&key, &context, &plaintext);
    if body.len() > MAX_BODY_BYTES {
        return Err(ClientError::TooLarge("body"));
    }
    let header = EnvelopeHeader::new(HeaderFields {
        conversation: sending.conversation,
        epoch: sending.epoch,
        kind,
        sender: sending.sender,
        sequence: sending.sequence,
        last_seen: sending.last_seen,
        body_hash: BodyHash::of(&body),
        key_commitment: key.commitment(),
        slot_set_hash,
    })?
    .with_key(header_key)?;
    let plain = |rn1: Option<&Rn1>| {
        BlockPlaintext {
            key: key.clone(),
            core: header.core_hash(),
            rn1: rn1.cloned(),
        }
        .encode()
    };
    let without_rn1 = plain(None);
    let with_rn1 = match &keying {
        Keying::Start { rn1, .. } => Some(plain(Some(rn1))),
        _ => None,
    };
    let mut blocks = Vec::with_capacity(recipients.len());
    for (slot, account) in recipients {
        let block = match (&keying, &with_rn1) {
            (Keying::Start { takes_part, .. }, Some(b)) if takes_part(account) => b,
            _ => &without_rn1,
        };
        let ciphertext = pairwise.encrypt_to(account, block).map_err(|e| match e {
            PairwiseError::NoSession(a) => ClientError::NoSession(a),
            other => ClientError::Pairwise(other.to_string()),
        })?;
        blocks.push(RecipientBlock {
            recipient: *slot,
            ciphertext,
        });
    }
    if let Some(seal) = history {
        let capsule = Capsule {
            body_key: key.clone(),
            link: seal.link.clone(),
        };
        blocks.push(capsule.seal(&seal.key, &header.core_hash()));
    }
    let envelope = Envelope::new(header, body, blocks)?;
    let hash = envelope.hash();
    let submission_tags = sending
        .mac_keys
        .all()
        .iter()
        .map(|k| k.submit(&hash, sending.sequence))
        .collect();
    Ok(Composed {
        envelope,
        submission_tags,
    })
}
