//! The envelope: what is ordered.
//!
//! An envelope has a header (seen by everyone), a body ciphertext (seen by
//! members) and one recipient block per recipient (each seen only by its
//! recipient). Its hash is built in two layers so that a member can recompute
//! it from the header, the body, its own block and the other blocks' digests:
//!
//! ```text
//! core_hash     = H_core(conv, epoch, kind, sender, seq, last_seen,
//!                        body_hash, key_commitment, slot_set_hash?)
//! envelope_hash = H_env(core_hash, [block_digest...])
//! ```
//!
//! Recipient blocks carry the body key and the core hash, so a block can only
//! be used with the envelope it was made for; the key commitment in the
//! header means every member who accepts an index decrypts the body under
//! the same key, and so reads the same plaintext.

use crate::context;
use crate::encoding::Canonical;
use crate::fixed::fixed32;
use crate::ids::{ConversationId, Epoch, Index, Sequence, SlotIndex};
use crate::slots::SlotSetHash;

fixed32!(
    /// Hash of a body ciphertext.
    BodyHash
);
fixed32!(
    /// Digest of one recipient block.
    BlockDigest
);
fixed32!(
    /// Hash of an envelope header (what recipient blocks bind to).
    CoreHash
);
fixed32!(
    /// Hash of a whole envelope: what order servers attest.
    EnvelopeHash
);
fixed32!(
    /// Commitment to the body key.
    KeyCommitment
);
fixed32!(
    /// Commitment to a key generation's RN1 (`docs/PROTOCOL.md` section
    /// 4.5): what every recipient checks the RN1 in its block against.
    Rn1Commitment
);

/// What an envelope is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnvelopeKind {
    /// First envelope of a conversation: member list and roles.
    Setup,
    /// An application message: text or another payload for the members.
    Message,
    /// A membership change; installs the next epoch's slot set.
    Update,
    /// What the sender has processed, and what it could not decrypt.
    Receipt,
    /// Cover traffic; carries nothing.
    Noise,
    /// A new key generation of a group-keyed conversation, sent by an Admin
    /// (`docs/PROTOCOL.md` section 4.5).
    Rekey,
}

impl EnvelopeKind {
    /// The code used in the canonical encoding and on the wire.
    pub const fn code(self) -> u8 {
        match self {
            Self::Setup => 1,
            Self::Message => 2,
            Self::Update => 3,
            Self::Receipt => 4,
            Self::Noise => 5,
            Self::Rekey => 6,
        }
    }

    /// The kind with this code, if any.
    pub const fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(Self::Setup),
            2 => Some(Self::Message),
            3 => Some(Self::Update),
            4 => Some(Self::Receipt),
            5 => Some(Self::Noise),
            6 => Some(Self::Rekey),
            _ => None,
        }
    }

    /// Whether envelopes of this kind install a slot set (and so must carry
    /// its hash).
    pub const fn installs_slot_set(self) -> bool {
        matches!(self, Self::Setup | Self::Update)
    }

    /// Whether only an Admin slot may send envelopes of this kind.
    pub const fn needs_admin(self) -> bool {
        matches!(self, Self::Update | Self::Rekey)
    }

    /// Whether a group-keyed conversation's envelopes of this kind start a
    /// key generation (their body key travels in pairwise blocks with the
    /// generation's RN1).
    pub const fn starts_key_generation(self) -> bool {
        matches!(self, Self::Setup | Self::Update | Self::Rekey)
    }

    /// Whether a group-keyed conversation's envelopes of this kind name the
    /// group key their body is sealed under (the others carry their body
    /// key in pairwise blocks, or nothing).
    pub const fn uses_group_key(self) -> bool {
        matches!(self, Self::Message | Self::Receipt)
    }
}

/// The start of a key generation in a group-keyed conversation: what a
/// Setup or Update (generation 0 of the epoch it opens) or a Rekey (the
/// next generation) states in its header (`docs/PROTOCOL.md` section 4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyStart {
    generation: u64,
    period_length: u64,
    rn1_commitment: Rn1Commitment,
}

impl KeyStart {
    /// A key start; the period length is at least 1.
    pub fn new(
        generation: u64,
        period_length: u64,
        rn1_commitment: Rn1Commitment,
    ) -> Result<Self, crate::WireError> {
        if period_length == 0 {
            return Err(crate::WireError::Invalid {
                field: "header.key_start.period_length",
                reason: "a key period is at least one index long",
            });
        }
        Ok(Self {
            generation,
            period_length,
            rn1_commitment,
        })
    }

    /// The key generation that starts.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Indices per key period in the epoch.
    pub fn period_length(&self) -> u64 {
        self.period_length
    }

    /// The commitment to the generation's RN1, which every recipient checks
    /// the RN1 in its block against.
    pub fn rn1_commitment(&self) -> Rn1Commitment {
        self.rn1_commitment
    }
}

/// The order servers whose key shares a period key mixes: bit `i` for the
/// server at position `i` of the network descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShareServers(u64);

impl ShareServers {
    /// The set with these bits; never empty.
    pub fn new(bits: u64) -> Result<Self, crate::WireError> {
        if bits == 0 {
            return Err(crate::WireError::Invalid {
                field: "header.key_id.servers",
                reason: "a period key mixes at least one order server's share",
            });
        }
        Ok(Self(bits))
    }

    /// The set of the given server positions (each below 64); `None` if
    /// empty or a position is out of range.
    pub fn of(servers: impl IntoIterator<Item = u32>) -> Option<Self> {
        let mut bits = 0u64;
        for s in servers {
            bits |= 1u64.checked_shl(s).filter(|_| s < 64)?;
        }
        (bits != 0).then_some(Self(bits))
    }

    /// The bits as the header's key id carries them (bit i: server i).
    pub fn bits(&self) -> u64 {
        self.0
    }

    /// The server positions, ascending.
    pub fn servers(&self) -> impl Iterator<Item = u32> + '_ {
        (0..64u32).filter(|i| self.0 & (1u64 << i) != 0)
    }
}

/// Which group key sealed a Message or Receipt body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId {
    /// The key generation of the envelope's epoch.
    pub generation: u64,
    /// The key period whose shares the period key mixes.
    pub period: u64,
    /// Whose shares.
    pub servers: ShareServers,
}

/// What a header says about group keys: nothing (a pairwise-keyed
/// conversation, or a kind that carries none), the start of a key generation
/// (Setup, Update and Rekey of a group-keyed conversation) or a key id
/// (Message and Receipt of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum HeaderKey {
    /// No group key fields.
    #[default]
    None,
    /// The key generation a Setup, Update or Rekey starts.
    Start(KeyStart),
    /// The group key the body is sealed under.
    Id(KeyId),
}

/// The header of an envelope. Constructed only through [`EnvelopeHeader::new`]
/// or parsing, both of which check that `slot_set_hash` is present exactly
/// when the kind installs a slot set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeHeader {
    conversation: ConversationId,
    epoch: Epoch,
    kind: EnvelopeKind,
    sender: SlotIndex,
    sequence: Sequence,
    last_seen: Option<Index>,
    body_hash: BodyHash,
    key_commitment: KeyCommitment,
    slot_set_hash: Option<SlotSetHash>,
    key: HeaderKey,
}

/// The fields of an [`EnvelopeHeader`] but its group key fields
/// ([`EnvelopeHeader::with_key`]), for construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderFields {
    /// Conversation the envelope belongs to.
    pub conversation: ConversationId,
    /// Epoch whose slot set the sender belongs to.
    pub epoch: Epoch,
    /// Kind of envelope.
    pub kind: EnvelopeKind,
    /// Sender's slot.
    pub sender: SlotIndex,
    /// Sender's sequence number.
    pub sequence: Sequence,
    /// Highest index the sender had accepted (causal context).
    pub last_seen: Option<Index>,
    /// Hash of the body ciphertext.
    pub body_hash: BodyHash,
    /// Commitment to the body key.
    pub key_commitment: KeyCommitment,
    /// Hash of the slot set a Setup or Update installs.
    pub slot_set_hash: Option<SlotSetHash>,
}

impl EnvelopeHeader {
    /// Builds a header; fails if `slot_set_hash` is present on a kind that
    /// installs no slot set or missing on one that does, or the sequence is 0.
    pub fn new(fields: HeaderFields) -> Result<Self, crate::WireError> {
        if fields.kind.installs_slot_set() != fields.slot_set_hash.is_some() {
            return Err(crate::WireError::Invalid {
                field: "header.slot_set_hash",
                reason: "required on Setup and Update, forbidden on other kinds",
            });
        }
        if fields.sequence.0 == 0 {
            return Err(crate::WireError::Invalid {
                field: "header.sequence",
                reason: "sequence numbers start at 1",
            });
        }
        Ok(Self {
            conversation: fields.conversation,
            epoch: fields.epoch,
            kind: fields.kind,
            sender: fields.sender,
            sequence: fields.sequence,
            last_seen: fields.last_seen,
            body_hash: fields.body_hash,
            key_commitment: fields.key_commitment,
            slot_set_hash: fields.slot_set_hash,
            key: HeaderKey::None,
        })
    }

    /// The same header with group key fields; fails if they do not fit the
    /// kind: a key start only on Setup, Update and Rekey, a key id only on
    /// Message and Receipt.
    pub fn with_key(mut self, key: HeaderKey) -> Result<Self, crate::WireError> {
        match key {
            HeaderKey::Start(_) if !self.kind.starts_key_generation() => {
                return Err(crate::WireError::Invalid {
                    field: "header.key_start",
                    reason: "allowed only on Setup, Update and Rekey",
                });
            }
            HeaderKey::Id(_) if !self.kind.uses_group_key() => {
                return Err(crate::WireError::Invalid {
                    field: "header.key_id",
                    reason: "allowed only on Message and Receipt",
                });
            }
            _ => {}
        }
        self.key = key;
        Ok(self)
    }

    /// The group key fields.
    pub fn key(&self) -> HeaderKey {
        self.key
    }

    /// The header's fields but the group key fields ([`Self::key`]).
    pub fn fields(&self) -> HeaderFields {
        HeaderFields {
            conversation: self.conversation,
            epoch: self.epoch,
            kind: self.kind,
            sender: self.sender,
            sequence: self.sequence,
            last_seen: self.last_seen,
            body_hash: self.body_hash,
            key_commitment: self.key_commitment,
            slot_set_hash: self.slot_set_hash,
        }
    }

    /// Conversation the envelope belongs to.
    pub fn conversation(&self) -> ConversationId {
        self.conversation
    }
    /// Epoch whose slot set the sender belongs to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// Kind of envelope.
    pub fn kind(&self) -> EnvelopeKind {
        self.kind
    }
    /// Sender's slot.
    pub fn sender(&self) -> SlotIndex {
        self.sender
    }
    /// Sender's sequence number.
    pub fn sequence(&self) -> Sequence {
        self.sequence
    }
    /// Highest index the sender had accepted.
    pub fn last_seen(&self) -> Option<Index> {
        self.last_seen
    }
    /// Hash of the body ciphertext.
    pub fn body_hash(&self) -> BodyHash {
        self.body_hash
    }
    /// Commitment to the body key.
    pub fn key_commitment(&self) -> KeyCommitment {
        self.key_commitment
    }
    /// Hash of the slot set this envelope installs (Setup and Update only).
    pub fn slot_set_hash(&self) -> Option<SlotSetHash> {
        self.slot_set_hash
    }

    /// The canonical encoding of the header. A header with group key
    /// fields appends them (`u8(1) || u64(generation) || u64(period_length)
    /// || rn1_commitment` for a key start, `u8(2) || u64(generation) ||
    /// u64(period) || u64(servers)` for a key id) and is hashed under its own context ([`Self::core_hash`]), so a
    /// header without them keeps the bytes it always had.
    pub fn canonical(&self) -> Canonical {
        let c = Canonical::new()
            .fixed(self.conversation.as_bytes())
            .u64(self.epoch.0)
            .u8(self.kind.code())
            .u32(self.sender.0)
            .u64(self.sequence.0)
            .opt_u64(self.last_seen.map(|i| i.0))
            .fixed(self.body_hash.as_bytes())
            .fixed(self.key_commitment.as_bytes())
            .opt_fixed(self.slot_set_hash.as_ref().map(SlotSetHash::as_bytes));
        match self.key {
            HeaderKey::None => c,
            HeaderKey::Start(k) => c
                .u8(1)
                .u64(k.generation)
                .u64(k.period_length)
                .fixed(k.rn1_commitment.as_bytes()),
            HeaderKey::Id(id) => c.u8(2).u64(id.generation).u64(id.period).u64(id.servers.0),
        }
    }

    /// The core hash: what recipient blocks bind to. Headers with group key
    /// fields hash under `grompi v1 group envelope core`, the others under
    /// `grompi v1 envelope core`.
    pub fn core_hash(&self) -> CoreHash {
        let ctx = match self.key {
            HeaderKey::None => context::ENVELOPE_CORE,
            HeaderKey::Start(_) | HeaderKey::Id(_) => context::GROUP_ENVELOPE_CORE,
        };
        CoreHash::from_bytes(self.canonical().hash(ctx))
    }
}

impl BodyHash {
    /// Hash of a body ciphertext.
    pub fn of(body: &[u8]) -> Self {
        Self(Canonical::new().bytes(body).hash(context::BODY_HASH))
    }
}

impl KeyCommitment {
    /// Commitment to a 32-byte body key.
    pub fn to_key(key: &[u8; 32]) -> Self {
        Self(Canonical::new().fixed(key).hash(context::KEY_COMMITMENT))
    }
}

impl EnvelopeHash {
    /// The envelope hash from the core hash and all block digests in order.
    pub fn compute(core: &CoreHash, digests: &[BlockDigest]) -> Self {
        let mut c = Canonical::new().fixed(core.as_bytes()).count(digests.len());
        for d in digests {
            c = c.fixed(d.as_bytes());
        }
        Self(c.hash(context::ENVELOPE_HASH))
    }
}

/// The recipient slot of an envelope's *history block* (`docs/PROTOCOL.md`
/// section 4.6): no member holds it, the block is not Olm-encrypted but
/// sealed under a history key, and it is always the envelope's last block.
pub const HISTORY_RECIPIENT: SlotIndex = SlotIndex(u32::MAX);

/// One recipient's block: the body key and core hash, encrypted pairwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientBlock {
    /// The recipient's slot.
    pub recipient: SlotIndex,
    /// The frame around one Olm message to the recipient, carrying the
    /// body key and the header's core hash; at most `MAX_BLOCK_BYTES`.
    pub ciphertext: Vec<u8>,
}

impl RecipientBlock {
    /// The digest an order server sees in place of this block:
    /// `derive_key("grompi v1 block digest", u32(recipient) || bytes(ciphertext))`.
    pub fn digest(&self) -> BlockDigest {
        BlockDigest(
            Canonical::new()
                .u32(self.recipient.0)
                .bytes(&self.ciphertext)
                .hash(context::BLOCK_DIGEST),
        )
    }
}

/// What an order server orders: the header and the block digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeSummary {
    /// The envelope's header, exactly as the sender made it.
    pub header: EnvelopeHeader,
    /// One digest per recipient block, in block order.
    pub block_digests: Vec<BlockDigest>,
}

impl EnvelopeSummary {
    /// The envelope hash: the header's core hash and the block digests,
    /// in order; the head chain binds it.
    pub fn hash(&self) -> EnvelopeHash {
        EnvelopeHash::compute(&self.header.core_hash(), &self.block_digests)
    }
}

/// A whole envelope as a sender submits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The header; its body hash matches `body`.
    header: EnvelopeHeader,
    /// The body, encrypted with ChaCha20-Poly1305 under the body key that
    /// the header's key commitment binds.
    body: Vec<u8>,
    /// Recipient blocks, at most one per slot.
    blocks: Vec<RecipientBlock>,
}

impl Envelope {
    /// Assembles an envelope; fails if the header's body hash does not match
    /// the body or two blocks name the same recipient.
    pub fn new(
        header: EnvelopeHeader,
        body: Vec<u8>,
        blocks: Vec<RecipientBlock>,
    ) -> Result<Self, crate::WireError> {
        if BodyHash::of(&body) != header.body_hash() {
            return Err(crate::WireError::Invalid {
                field: "envelope.body",
                reason: "body does not match the header's body hash",
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(blocks.len());
        if !blocks.iter().all(|b| seen.insert(b.recipient)) {
            return Err(crate::WireError::Invalid {
                field: "envelope.blocks",
                reason: "two blocks for the same recipient slot",
            });
        }
        if blocks
            .iter()
            .rev()
            .skip(1)
            .any(|b| b.recipient == HISTORY_RECIPIENT)
        {
            return Err(crate::WireError::Invalid {
                field: "envelope.blocks",
                reason: "the history block is not the last block",
            });
        }
        Ok(Self {
            header,
            body,
            blocks,
        })
    }

    /// The header, whose body hash matches [`Envelope::body`].
    pub fn header(&self) -> &EnvelopeHeader {
        &self.header
    }
    /// The body ciphertext, encrypted once for every recipient.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
    /// The recipient blocks, at most one per slot, in the order that the
    /// envelope hash covers.
    pub fn blocks(&self) -> &[RecipientBlock] {
        &self.blocks
    }

    /// The history block's ciphertext, if the envelope has one (its last
    /// block, addressed to [`HISTORY_RECIPIENT`]).
    pub fn history_block(&self) -> Option<&[u8]> {
        self.blocks
            .last()
            .filter(|b| b.recipient == HISTORY_RECIPIENT)
            .map(|b| b.ciphertext.as_slice())
    }

    /// The header and block digests: all an order server sees, never the
    /// body or a block.
    pub fn summary(&self) -> EnvelopeSummary {
        EnvelopeSummary {
            header: self.header.clone(),
            block_digests: self.blocks.iter().map(RecipientBlock::digest).collect(),
        }
    }

    /// The envelope hash, as an order server computes it from the summary.
    pub fn hash(&self) -> EnvelopeHash {
        self.summary().hash()
    }

    /// Splits the envelope into its parts.
    pub fn into_parts(self) -> (EnvelopeHeader, Vec<u8>, Vec<RecipientBlock>) {
        (self.header, self.body, self.blocks)
    }
}
