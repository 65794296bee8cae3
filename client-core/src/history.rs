//! Shared history (`docs/PROTOCOL.md` section 4.6): the history key chain,
//! the history block every envelope of a `shared` epoch carries, and the
//! verifier that reads a conversation's stored envelopes from the genesis.
//!
//! ```text
//! history_key(e, g) = export_g("grompi v1 history key")        (group_key.rs)
//! capsule_key       = derive_key("grompi v1 history capsule key", history_key || core_hash)
//! aad               = bytes("grompi v1 history capsule aad") || core_hash
//! capsule           = u8(1) || body_key: 32                                   (33 bytes)
//!                   | u8(2) || body_key: 32 || u64(generation) || link: 32    (73 bytes)
//! history block     = RecipientBlock(0xFFFFFFFF,
//!                       ChaCha20-Poly1305(capsule_key, 12 zero bytes, aad, capsule))
//! ```
//!
//! Which key seals an envelope's history block follows from its header
//! ([`HistoryKeyId::sealing`]): a Setup's is (0, 0), an Update's the next
//! epoch's generation 0, a Rekey's the generation it starts, a Message's or
//! Receipt's the generation its key id names. An Update's capsule links the
//! history key of the newest generation of the epoch it ends, a Rekey's that
//! of the generation before it, so each key opens the one before: a member
//! holding the newest key walks back to the start of what was shared, and
//! nothing stored is ever encrypted again.
//!
//! [`HistoryVerifier`] takes the envelopes the router returns from index 0,
//! recomputes every envelope hash and the head chain from the genesis, and
//! requires the head at the anchor's index to be the head this member
//! accepted there with a quorum of tags. Any envelope missing, altered,
//! reordered or added makes the chain miss it: [`Misbehaviour::HistoryMismatch`],
//! and nothing is shown. Only then are the capsules and bodies opened.

use crate::body::{self, BodyContext, BodyKey};
use crate::codec::{Canonical, Reader};
use crate::content::Content;
use crate::group_key::{GroupKeys, KeyGeneration};
use crate::membership::Membership;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use grompi_proto::envelope::HISTORY_RECIPIENT;
use grompi_proto::limits::{MAX_BLOCKS, MAX_BODY_BYTES};
use grompi_proto::{
    AccountId, BlockDigest, ConversationId, CoreHash, EnvelopeHash, EnvelopeHeader, EnvelopeKind,
    Epoch, Head, HeaderKey, Index, Misbehaviour, RecipientBlock, SlotIndex, WireError, context, pb,
};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Version byte of a capsule that carries only the body key.
pub const CAPSULE_VERSION: u8 = 1;
/// Version byte of a capsule that also links the previous history key.
pub const CAPSULE_VERSION_LINK: u8 = 2;
const CAPSULE_LEN: usize = 1 + 32;
const CAPSULE_LINK_LEN: usize = CAPSULE_LEN + 8 + 32;
/// Length of a sealed capsule without, and with, a link.
pub const HISTORY_BLOCK_LEN: usize = CAPSULE_LEN + 16;
/// Length of a sealed capsule with a link.
pub const HISTORY_BLOCK_LINK_LEN: usize = CAPSULE_LINK_LEN + 16;
/// Most envelopes a verifier holds: a history longer than this is read
/// in parts by the application (it is refused here, not truncated).
pub const MAX_HISTORY: usize = 1 << 20;

/// Names one history key: an epoch's key generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HistoryKeyId {
    /// The epoch.
    pub epoch: Epoch,
    /// The key generation within it.
    pub generation: KeyGeneration,
}

impl HistoryKeyId {
    /// The key that seals the history block of an envelope with `header`,
    /// or `None` for kinds that carry none (Noise) or a header without the
    /// group key field its kind needs.
    pub fn sealing(header: &EnvelopeHeader) -> Option<Self> {
        let epoch = header.epoch();
        let at = |epoch, generation| {
            Some(Self {
                epoch,
                generation: KeyGeneration(generation),
            })
        };
        match (header.kind(), header.key()) {
            (EnvelopeKind::Setup, HeaderKey::Start(_)) => at(epoch, 0),
            (EnvelopeKind::Update, HeaderKey::Start(_)) => at(epoch.next()?, 0),
            (EnvelopeKind::Rekey, HeaderKey::Start(s)) => at(epoch, s.generation()),
            (EnvelopeKind::Message | EnvelopeKind::Receipt, HeaderKey::Id(k)) => {
                at(epoch, k.generation)
            }
            _ => None,
        }
    }

    /// The key an Update's or Rekey's capsule must link: the generation
    /// before a Rekey's, or any generation of the epoch an Update ends
    /// (`link_generation` is what the capsule names).
    fn link_of(header: &EnvelopeHeader, link_generation: KeyGeneration) -> Option<Self> {
        let epoch = header.epoch();
        match (header.kind(), header.key()) {
            (EnvelopeKind::Update, _) => Some(Self {
                epoch,
                generation: link_generation,
            }),
            (EnvelopeKind::Rekey, HeaderKey::Start(s))
                if s.generation().checked_sub(1) == Some(link_generation.0) =>
            {
                Some(Self {
                    epoch,
                    generation: link_generation,
                })
            }
            _ => None,
        }
    }
}

/// One generation's history key: opens the history blocks sealed under it.
/// Zeroized on drop, never printed.
#[derive(Clone)]
pub struct HistoryKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for HistoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HistoryKey(..)")
    }
}

impl HistoryKey {
    /// The history key of `generation`, if `keys` still holds it.
    pub fn of(keys: &GroupKeys, generation: KeyGeneration) -> Option<Self> {
        keys.export_generation(generation, context::HISTORY_KEY)
            .map(Self)
    }

    /// Wraps 32 bytes (a saved state, a capsule's link, test vectors).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key's bytes, for the saved state.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether two keys are equal, compared in constant time.
    pub fn matches(&self, other: &Self) -> bool {
        blake3::Hash::from(*self.0) == blake3::Hash::from(*other.0)
    }

    /// The AEAD of the capsule of the envelope with `core`.
    fn capsule_cipher(&self, core: &CoreHash) -> ChaCha20Poly1305 {
        let key = Zeroizing::new(
            Canonical::new()
                .fixed(&self.0)
                .fixed(core.as_bytes())
                .hash(context::HISTORY_CAPSULE_KEY),
        );
        ChaCha20Poly1305::new(&Key::from(*key))
    }
}

fn capsule_aad(core: &CoreHash) -> Canonical {
    Canonical::new()
        .bytes(context::HISTORY_CAPSULE_AAD.as_bytes())
        .fixed(core.as_bytes())
}

/// What a history block carries: the envelope's body key and, in an Update
/// or a Rekey, the history key before the one that seals it.
#[derive(Clone, Debug)]
pub struct Capsule {
    /// The key the envelope's body is sealed under (its header commits to
    /// it).
    pub body_key: BodyKey,
    /// The generation and history key this one links back to.
    pub link: Option<(KeyGeneration, HistoryKey)>,
}

impl Capsule {
    /// The plaintext encoding.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let c = match &self.link {
            None => Canonical::new()
                .u8(CAPSULE_VERSION)
                .fixed(self.body_key.expose()),
            Some((g, k)) => Canonical::new()
                .u8(CAPSULE_VERSION_LINK)
                .fixed(self.body_key.expose())
                .u64(g.0)
                .fixed(k.expose()),
        };
        Zeroizing::new(c.as_bytes().to_vec())
    }

    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let malformed = |_: crate::codec::DecodeError| "the capsule is malformed";
        let mut r = Reader::new("history capsule", bytes);
        let version = r.u8().map_err(malformed)?;
        let body_key = BodyKey::from_bytes(r.fixed().map_err(malformed)?);
        let link = match version {
            CAPSULE_VERSION => None,
            CAPSULE_VERSION_LINK => {
                let g = KeyGeneration(r.u64().map_err(malformed)?);
                Some((g, HistoryKey::from_bytes(r.fixed().map_err(malformed)?)))
            }
            _ => return Err("the capsule has an unknown version"),
        };
        r.finish().map_err(malformed)?;
        Ok(Self { body_key, link })
    }

    /// The history block of the envelope with `core`, sealed under `key`.
    pub fn seal(&self, key: &HistoryKey, core: &CoreHash) -> RecipientBlock {
        let plaintext = self.encode();
        let aad = capsule_aad(core);
        let ciphertext = key
            .capsule_cipher(core)
            .encrypt(
                &Nonce::default(),
                Payload {
                    msg: &plaintext,
                    aad: aad.as_bytes(),
                },
            )
            // ChaCha20-Poly1305 fails only for inputs over 256 GiB.
            .unwrap_or_default();
        RecipientBlock {
            recipient: HISTORY_RECIPIENT,
            ciphertext,
        }
    }

    /// Opens the history block `sealed` of the envelope with `core`.
    pub fn open(key: &HistoryKey, core: &CoreHash, sealed: &[u8]) -> Result<Self, &'static str> {
        if sealed.len() != HISTORY_BLOCK_LEN && sealed.len() != HISTORY_BLOCK_LINK_LEN {
            return Err("the history block has the wrong length");
        }
        let aad = capsule_aad(core);
        let plaintext = Zeroizing::new(
            key.capsule_cipher(core)
                .decrypt(
                    &Nonce::default(),
                    Payload {
                        msg: sealed,
                        aad: aad.as_bytes(),
                    },
                )
                .map_err(|_| "the history block does not open under its history key")?,
        );
        Self::decode(&plaintext)
    }
}

/// What a sender needs to give an envelope its history block: the key that
/// seals it and, for an Update or a Rekey, the link.
#[derive(Clone, Debug)]
pub struct HistorySeal {
    /// The history key the block is sealed under.
    pub key: HistoryKey,
    /// The generation and history key the capsule links back to.
    pub link: Option<(KeyGeneration, HistoryKey)>,
}

/// The history key a member joined with: the Update that added it at
/// `through`, the head it accepted there, and the key that seals that
/// Update's history block (saved with the conversation).
#[derive(Clone, Debug)]
pub(crate) struct HistoryRoot {
    pub(crate) through: Index,
    pub(crate) head: Head,
    pub(crate) id: HistoryKeyId,
    pub(crate) key: HistoryKey,
}

/// How a compromised sender forges its history block (tests and the
/// simulator's adversaries only: `Conversation::compose_forged_history`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForgedHistory {
    /// No history block at all.
    Omit,
    /// Sealed under a key no member holds.
    WrongKey,
    /// An Update's or Rekey's link replaced by a key no member holds.
    WrongLink,
}

impl ForgedHistory {
    /// The seal an honest sender would use, forged.
    pub fn apply(self, honest: Option<HistorySeal>) -> Option<HistorySeal> {
        let junk = HistoryKey::from_bytes([0x5a; 32]);
        let honest = honest?;
        match self {
            Self::Omit => None,
            Self::WrongKey => Some(HistorySeal {
                key: junk,
                link: honest.link,
            }),
            Self::WrongLink => Some(HistorySeal {
                key: honest.key,
                link: honest.link.map(|(g, _)| (g, junk)),
            }),
        }
    }
}

/// One stored envelope as the router returns it for history, well formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryItem {
    /// The index the router says it was ordered at.
    pub index: Index,
    /// The header as the sender made it.
    pub header: EnvelopeHeader,
    /// The body ciphertext.
    pub body: Vec<u8>,
    /// Digests of all its blocks, in block order.
    pub block_digests: Vec<BlockDigest>,
    /// Its history block, if it has one (the last block).
    pub history_block: Option<Vec<u8>>,
    /// The head before it as the router says, used only to start at the
    /// first index the router still stores
    /// ([`HistoryVerifier::router_keeps_from`]).
    pub previous_head: Option<Head>,
}

impl TryFrom<pb::HistoryEnvelope> for HistoryItem {
    type Error = WireError;

    fn try_from(e: pb::HistoryEnvelope) -> Result<Self, WireError> {
        let header = EnvelopeHeader::try_from(
            e.header
                .ok_or(WireError::MissingField("history_envelope.header"))?,
        )?;
        if e.body.len() > MAX_BODY_BYTES {
            return Err(WireError::TooLarge {
                field: "history_envelope.body",
                max: MAX_BODY_BYTES,
                got: e.body.len(),
            });
        }
        if e.block_digests.len() > MAX_BLOCKS {
            return Err(WireError::TooMany {
                field: "history_envelope.block_digests",
                max: MAX_BLOCKS,
                got: e.block_digests.len(),
            });
        }
        if e.history_block.len() > HISTORY_BLOCK_LINK_LEN {
            return Err(WireError::TooLarge {
                field: "history_envelope.history_block",
                max: HISTORY_BLOCK_LINK_LEN,
                got: e.history_block.len(),
            });
        }
        Ok(Self {
            index: Index(e.index),
            header,
            body: e.body,
            block_digests: e
                .block_digests
                .iter()
                .map(|d| BlockDigest::parse("history_envelope.block_digests", d))
                .collect::<Result<_, _>>()?,
            history_block: (!e.history_block.is_empty()).then_some(e.history_block),
            previous_head: if e.previous_head.is_empty() {
                None
            } else {
                Some(Head::parse(
                    "history_envelope.previous_head",
                    &e.previous_head,
                )?)
            },
        })
    }
}

impl From<&HistoryItem> for pb::HistoryEnvelope {
    fn from(i: &HistoryItem) -> Self {
        Self {
            index: i.index.0,
            header: Some((&i.header).into()),
            body: i.body.clone(),
            block_digests: i.block_digests.iter().map(BlockDigest::to_vec).collect(),
            history_block: i.history_block.clone().unwrap_or_default(),
            previous_head: i.previous_head.map(|h| h.to_vec()).unwrap_or_default(),
            // Audit log positions are no part of the verified history.
            log_positions: Vec::new(),
        }
    }
}

/// Where a member's verified history ends and what it reads it with: the
/// head it accepted at `through` with a quorum of tags, and the history
/// keys it holds there.
#[derive(Clone, Debug)]
pub struct HistoryAnchor {
    /// The conversation.
    pub conversation: ConversationId,
    /// The last index the history covers.
    pub through: Index,
    /// The head this member accepted after `through`.
    pub head: Head,
    /// This member's first index (0, or the Update that added it): the
    /// indices before it are shown as "before you joined".
    pub first_own: Index,
    /// The history keys this member holds at `through`.
    pub keys: Vec<(HistoryKeyId, HistoryKey)>,
}

/// Why a verified history entry cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unread {
    /// Cover traffic: nothing to read.
    Noise,
    /// Sent while the policy was `joined` (or without group keys): it
    /// carries no history block.
    NotShared,
    /// Its history block is sealed under a key the chain from this
    /// member's keys does not reach (an epoch that was `joined` lies
    /// between).
    NoKey,
    /// Its history block or body does not open, or the content does not
    /// decode: the sender's fault ([`Misbehaviour::BadHistoryBlock`]).
    Bad(&'static str),
}

/// One index of a verified history.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    /// The index (0 is the Setup).
    pub index: Index,
    /// The envelope's epoch.
    pub epoch: Epoch,
    /// The envelope's kind.
    pub kind: EnvelopeKind,
    /// The sender's slot in its epoch.
    pub sender_slot: SlotIndex,
    /// The member holding that slot, when the history read so far says.
    pub sender: Option<AccountId>,
    /// The sender's causal context.
    pub last_seen: Option<Index>,
    /// What it says, or why it cannot be read.
    pub content: Result<Content, Unread>,
}

/// Reads a conversation's history from the genesis and checks it against
/// an anchor (a sans-IO state machine: feed it the router's pages in order).
#[derive(Debug)]
pub struct HistoryVerifier {
    anchor: HistoryAnchor,
    next: Index,
    head: Head,
    items: Vec<HistoryItem>,
    /// The first index the router says it still stores, if above 0.
    kept_from: Option<Index>,
}

fn mismatch(reason: &'static str) -> Misbehaviour {
    Misbehaviour::HistoryMismatch(reason)
}

impl HistoryVerifier {
    /// A verifier for the history up to `anchor.through`.
    pub fn new(anchor: HistoryAnchor) -> Self {
        let head = Head::genesis(&anchor.conversation);
        Self {
            anchor,
            next: Index(0),
            head,
            items: Vec::new(),
            kept_from: None,
        }
    }

    /// Accepts that the router no longer stores the indices below `first`
    /// (its retention setting): the history then starts at `first`, from
    /// the head the router gives as the one before it. That head is bound
    /// like every envelope after it: the chain from it must still reach the
    /// head this member accepted, so the envelopes shown are the attested
    /// ones; what is lost is only what was removed. Taken only before the
    /// first envelope, and never past the anchor.
    pub fn router_keeps_from(&mut self, first: Index) {
        if self.items.is_empty() && self.next == Index(0) && first <= self.anchor.through {
            self.kept_from = Some(first).filter(|f| f.0 > 0);
        }
    }

    /// The first index of the history read (above 0 when the router no
    /// longer stores the oldest envelopes).
    pub fn first_index(&self) -> Index {
        self.kept_from.unwrap_or(Index(0))
    }

    /// The next index to ask the router for.
    pub fn next_index(&self) -> Index {
        self.next
    }

    /// Whether every index up to the anchor has been taken.
    pub fn is_complete(&self) -> bool {
        self.next > self.anchor.through
    }

    /// Takes the next envelope. Envelopes past the anchor are ignored (not
    /// verifiable); anything else out of place is a mismatch.
    pub fn push(&mut self, item: HistoryItem) -> Result<(), Misbehaviour> {
        if self.is_complete() {
            return Ok(());
        }
        if let Some(first) = self.kept_from.filter(|_| self.items.is_empty())
            && item.index == first
        {
            let Some(previous) = item.previous_head else {
                return Err(mismatch(
                    "the first index the router keeps comes without the head before it",
                ));
            };
            self.next = first;
            self.head = previous;
        }
        if item.index != self.next {
            return Err(mismatch(
                "an index is missing, repeated or out of order in the history",
            ));
        }
        if item.header.conversation() != self.anchor.conversation {
            return Err(mismatch("an envelope of another conversation"));
        }
        if grompi_proto::BodyHash::of(&item.body) != item.header.body_hash() {
            return Err(mismatch("a body that does not match its header"));
        }
        if let Some(block) = &item.history_block {
            let digest = RecipientBlock {
                recipient: HISTORY_RECIPIENT,
                ciphertext: block.clone(),
            }
            .digest();
            if item.block_digests.last() != Some(&digest) {
                return Err(mismatch(
                    "a history block that is not the envelope's last block",
                ));
            }
        }
        if self.items.len() >= MAX_HISTORY {
            return Err(mismatch("a history longer than this member can hold"));
        }
        let hash = EnvelopeHash::compute(&item.header.core_hash(), &item.block_digests);
        self.head = self.head.next(
            &self.anchor.conversation,
            item.header.epoch(),
            item.index,
            &hash,
        );
        if item.index == self.anchor.through && self.head != self.anchor.head {
            return Err(mismatch(
                "the head chain from the genesis does not reach the head this member accepted",
            ));
        }
        self.next = Index(self.next.0.saturating_add(1));
        self.items.push(item);
        Ok(())
    }

    /// The verified history, opened as far as the keys reach; a mismatch if
    /// the envelopes taken do not reach the anchor.
    pub fn finish(self) -> Result<Vec<HistoryEntry>, Misbehaviour> {
        if !self.is_complete() {
            return Err(mismatch(
                "the history ends before the index this member accepted",
            ));
        }
        let mut keys: BTreeMap<HistoryKeyId, HistoryKey> = self.anchor.keys.into_iter().collect();
        // Links point back: walk down from the anchor collecting keys.
        for item in self.items.iter().rev() {
            if !matches!(
                item.header.kind(),
                EnvelopeKind::Update | EnvelopeKind::Rekey
            ) {
                continue;
            }
            let (Some(id), Some(block)) = (
                HistoryKeyId::sealing(&item.header),
                item.history_block.as_deref(),
            ) else {
                continue;
            };
            let Some(key) = keys.get(&id) else { continue };
            let Ok(capsule) = Capsule::open(key, &item.header.core_hash(), block) else {
                continue;
            };
            if let Some((generation, link)) = capsule.link
                && let Some(link_id) = HistoryKeyId::link_of(&item.header, generation)
            {
                keys.entry(link_id).or_insert(link);
            }
        }
        let mut membership: Option<Membership> = None;
        let mut out = Vec::with_capacity(self.items.len());
        for item in self.items {
            let h = &item.header;
            let sender = membership.as_ref().and_then(|m| m.holder(h.sender()));
            let content = read(&item, &keys);
            match &content {
                Ok(Content::Setup(s)) => {
                    membership = Membership::from_setup(
                        h.epoch(),
                        h.slot_set_hash(),
                        h.sender(),
                        s.creator,
                        s,
                    )
                    .ok();
                }
                Ok(Content::Update(u)) => {
                    membership = match membership.as_ref().zip(sender) {
                        Some((m, s)) => m.apply_update(&s, h.slot_set_hash(), u).next,
                        // The list before is unknown (an epoch that did not
                        // share its history): take the next list as the
                        // Update states it, as a joiner does.
                        None => h.epoch().next().and_then(|epoch| {
                            Membership::from_parts(
                                epoch,
                                u.next_slots.clone(),
                                u.next_members.iter().map(|m| (m.account, m.role)).collect(),
                                u.next_members.iter().map(|m| (m.slot, m.account)).collect(),
                            )
                            .ok()
                        }),
                    };
                }
                Err(_) if h.kind() == EnvelopeKind::Update => membership = None,
                _ => {}
            }
            let sender = match &content {
                Ok(Content::Setup(s)) => Some(s.creator),
                _ => sender,
            };
            out.push(HistoryEntry {
                index: item.index,
                epoch: h.epoch(),
                kind: h.kind(),
                sender_slot: h.sender(),
                sender,
                last_seen: h.last_seen().filter(|l| *l < item.index),
                content,
            });
        }
        Ok(out)
    }
}

/// Opens one verified envelope with the keys the chain reached.
fn read(item: &HistoryItem, keys: &BTreeMap<HistoryKeyId, HistoryKey>) -> Result<Content, Unread> {
    let h = &item.header;
    if h.kind() == EnvelopeKind::Noise {
        return Err(Unread::Noise);
    }
    let (Some(id), Some(block)) = (HistoryKeyId::sealing(h), item.history_block.as_deref()) else {
        return Err(Unread::NotShared);
    };
    let key = keys.get(&id).ok_or(Unread::NoKey)?;
    let capsule = Capsule::open(key, &h.core_hash(), block).map_err(Unread::Bad)?;
    let plaintext = body::open(
        &capsule.body_key,
        &h.key_commitment(),
        &BodyContext::of(h),
        &item.body,
    )
    .map_err(|e| {
        Unread::Bad(match e {
            body::BodyError::KeyCommitmentMismatch => {
                "the history block's body key does not match the key commitment"
            }
            body::BodyError::Undecryptable => "the body does not decrypt",
        })
    })?;
    Content::decode(h.kind(), &plaintext).map_err(|_| Unread::Bad("the content does not decode"))
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
