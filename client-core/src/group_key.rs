//! The group key schedule of a group-keyed conversation
//! (`docs/PROTOCOL.md`, section 4.5): one epoch's key generations, the
//! per-sender hash-ratchet chains, period keys from the order servers'
//! shares, message keys and exporters.
//!
//! ```text
//! rn1_commitment = derive_key("grompi v1 group rn1 commitment",
//!                             conversation_id || u64(epoch) || u64(generation) || rn1)
//! generation_0   = derive_key("grompi v1 group generation",
//!                             conversation_id || u64(epoch) || u64(0) || rn1 || u8(0))
//! generation_g   = derive_key("grompi v1 group generation",
//!                             conversation_id || u64(epoch) || u64(g) || rn1_g || u8(1) || init_{g-1})
//! init_g         = derive_key("grompi v1 group init", generation_g)
//! exporter_g     = derive_key("grompi v1 group exporter", generation_g)
//! chain_g(s)     = derive_key("grompi v1 group sender chain", generation_g || u32(s))
//!                  at position start_g(s)
//! chain(q + 1)   = derive_key("grompi v1 group chain step", chain(q))
//! period_key     = derive_key("grompi v1 group period key",
//!                             conversation_id || u64(epoch) || u64(period) || u64(n)
//!                             || (u32(server) || share)*n)      servers ascending
//! message_key    = derive_key("grompi v1 group message key",
//!                             chain(q) || period_key || conversation_id || u64(epoch)
//!                             || u64(generation) || u64(period) || u32(s) || u64(q))
//! export(label)  = keyed_hash(exporter_g, bytes(label))
//! ```
//!
//! A generation starts at the epoch's Setup or Update (generation 0, with
//! the RN1 that envelope's sender put in every recipient's block; a joiner
//! needs nothing older) and at every Rekey (generation g + 1, chained
//! through `init_g` so only members of generation g can follow). Every
//! slot's chain starts at the position after the last sequence that slot
//! had accepted before the generation began (1 in a new epoch). The message
//! with sequence `q` from slot `s` uses the chain key at position `q`; the
//! chain then steps past `q` and the used key is deleted, so a state
//! snapshot taken later cannot compute the key of a message it already
//! processed. The generation secret itself is deleted as soon as the chains,
//! `init` and the exporter are derived from it.
//!
//! The core is sans-IO like the rest of the client: it derives and forgets
//! keys; which generation, period and share set an envelope uses is the
//! envelope's header (attested), and the conversation state machine feeds
//! accepted envelopes here in index order.

use crate::body::BodyKey;
use crate::codec::{Canonical, DecodeError, Reader};
use grompi_proto::context;
use grompi_proto::key_share::{KeyPeriod, KeyShare};
use grompi_proto::limits::MAX_SLOTS;
use grompi_proto::{ConversationId, Epoch, Rn1Commitment, Sequence, SlotIndex};
use std::collections::BTreeMap;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The most chain steps one message may skip (sequences a sender used for
/// envelopes that were never accepted). More is refused rather than hashed.
pub const MAX_CHAIN_SKIP: u64 = 1024;

/// How many generations of an epoch a member keeps chains for: the current
/// one and the one before it (envelopes composed before a Rekey landed).
pub const KEPT_GENERATIONS: usize = 2;

/// A key generation of an epoch: 0 at the Setup or Update that started the
/// epoch, +1 at every Rekey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct KeyGeneration(pub u64);

impl std::fmt::Display for KeyGeneration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A secret of 32 bytes; zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn derive(ctx: &str, parts: &[&[u8]]) -> Secret {
    let mut input = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
    for p in parts {
        input.extend_from_slice(p);
    }
    Secret(blake3::derive_key(ctx, &input))
}

/// Route A's secret (RN1): drawn by the Admin who starts a generation and
/// sent in each recipient's pairwise block, never to a server.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Rn1([u8; 32]);

impl Rn1 {
    /// A fresh secret from the caller's RNG.
    pub fn generate(rng: &mut impl rand::CryptoRng) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// Wraps 32 bytes (as read from a block).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes, for a recipient block.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The commitment the generation's attested content carries, so that
    /// every recipient checks it got the same RN1 as every other.
    pub fn commitment(
        &self,
        conversation: &ConversationId,
        epoch: Epoch,
        generation: KeyGeneration,
    ) -> Rn1Commitment {
        Rn1Commitment::from_bytes(
            derive(
                context::GROUP_RN1_COMMITMENT,
                &[
                    conversation.as_bytes(),
                    &epoch.0.to_be_bytes(),
                    &generation.0.to_be_bytes(),
                    &self.0,
                ],
            )
            .0,
        )
    }
}

impl std::fmt::Debug for Rn1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rn1(..)")
    }
}

/// A key period's key, mixed from the order servers' shares the header
/// names. Not secret from the router (it holds the padding slots), so it
/// adds freshness, not confidentiality.
#[derive(Clone, PartialEq, Eq)]
pub struct PeriodKey(Secret);

impl std::fmt::Debug for PeriodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeriodKey(..)")
    }
}

impl PeriodKey {
    /// Mixes `shares` (server position and share, strictly ascending by
    /// server, at least one) for (conversation, epoch, period).
    pub fn mix(
        conversation: &ConversationId,
        epoch: Epoch,
        period: KeyPeriod,
        shares: &[(u32, &KeyShare)],
    ) -> Result<Self, GroupKeyError> {
        if shares.is_empty() {
            return Err(GroupKeyError::NoShares);
        }
        if shares.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(GroupKeyError::SharesOutOfOrder);
        }
        let mut input = Zeroizing::new(Vec::with_capacity(56 + shares.len() * 36));
        input.extend_from_slice(conversation.as_bytes());
        input.extend_from_slice(&epoch.0.to_be_bytes());
        input.extend_from_slice(&period.0.to_be_bytes());
        input.extend_from_slice(&(shares.len() as u64).to_be_bytes());
        for (server, share) in shares {
            input.extend_from_slice(&server.to_be_bytes());
            input.extend_from_slice(share.expose());
        }
        Ok(Self(Secret(blake3::derive_key(
            context::GROUP_PERIOD_KEY,
            &input,
        ))))
    }
}

/// One message's chain key, taken from its sender's chain: with the period
/// key it gives the message key. Zeroized on drop, never printed.
#[derive(Clone)]
pub struct ChainKey {
    key: Secret,
    conversation: ConversationId,
    epoch: Epoch,
    generation: KeyGeneration,
    slot: SlotIndex,
    sequence: Sequence,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChainKey(slot {}, sequence {})",
            self.slot, self.sequence
        )
    }
}

impl ChainKey {
    /// The message key under `period_key` (the key of `period`).
    pub fn message_key(&self, period: KeyPeriod, period_key: &PeriodKey) -> BodyKey {
        let key = derive(
            context::GROUP_MESSAGE_KEY,
            &[
                &self.key.0,
                &period_key.0.0,
                self.conversation.as_bytes(),
                &self.epoch.0.to_be_bytes(),
                &self.generation.0.to_be_bytes(),
                &period.0.to_be_bytes(),
                &self.slot.0.to_be_bytes(),
                &self.sequence.0.to_be_bytes(),
            ],
        );
        BodyKey::from_bytes(key.0)
    }

    /// Appends the key and what it is for to `c` (for the encrypted local
    /// store).
    pub fn encode_into(&self, c: Canonical) -> Canonical {
        c.fixed(&self.key.0)
            .fixed(self.conversation.as_bytes())
            .u64(self.epoch.0)
            .u64(self.generation.0)
            .u32(self.slot.0)
            .u64(self.sequence.0)
    }

    /// Reads [`ChainKey::encode_into`]'s bytes.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            key: Secret(r.fixed()?),
            conversation: ConversationId::from_bytes(r.fixed()?),
            epoch: Epoch(r.u64()?),
            generation: KeyGeneration(r.u64()?),
            slot: SlotIndex(r.u32()?),
            sequence: Sequence(r.u64()?),
        })
    }
}

/// Why a group key could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupKeyError {
    /// A period key needs at least one order server's share.
    #[error("a period key needs at least one order server's share")]
    NoShares,
    /// Shares must be listed by strictly ascending server position.
    #[error("key shares must be listed by strictly ascending server position")]
    SharesOutOfOrder,
    /// The envelope names a generation this member does not hold (a future
    /// one, or one older than the kept generations).
    #[error("key generation {generation} of epoch {epoch} is not held (current {current})")]
    UnknownGeneration {
        /// The epoch whose keys these are.
        epoch: Epoch,
        /// The generation the envelope names.
        generation: KeyGeneration,
        /// The newest generation held.
        current: KeyGeneration,
    },
    /// The sender slot has no chain in this epoch.
    #[error("slot {slot} has no sender chain in epoch {epoch}")]
    UnknownSlot {
        /// The epoch whose slot set the envelope names.
        epoch: Epoch,
        /// The sender slot, beyond the epoch's slot set.
        slot: SlotIndex,
    },
    /// The chain has already moved past this sequence: its key was used (or
    /// skipped) and deleted.
    #[error("the key for sequence {sequence} of slot {slot} is gone (the chain is at {next})")]
    KeyGone {
        /// The sender slot whose chain was asked.
        slot: SlotIndex,
        /// The sequence asked for.
        sequence: Sequence,
        /// The chain's next position.
        next: Sequence,
    },
    /// The sequence is further ahead of the chain than [`MAX_CHAIN_SKIP`].
    #[error(
        "sequence {sequence} of slot {slot} skips more than {MAX_CHAIN_SKIP} keys (the chain is at {next})"
    )]
    SkipTooFar {
        /// The sender slot whose chain was asked.
        slot: SlotIndex,
        /// The sequence asked for.
        sequence: Sequence,
        /// The chain's next position.
        next: Sequence,
    },
    /// Generations start in order, one at a time.
    #[error("generation {got} cannot follow generation {current}")]
    GenerationOutOfOrder {
        /// The newest generation held.
        current: KeyGeneration,
        /// The generation offered.
        got: KeyGeneration,
    },
}

/// One sender slot's chain: the key for sequence `next` and nothing older.
/// A generation's chain starts at the slot's first sequence in it, so
/// starting never hashes through the epoch's earlier sequences.
#[derive(Clone, Debug)]
struct Chain {
    next: u64,
    key: Secret,
}

/// One generation's chains and what outlives its secret.
#[derive(Clone, Debug)]
struct Generation {
    number: KeyGeneration,
    chains: BTreeMap<SlotIndex, Chain>,
    init: Secret,
    exporter: Secret,
}

/// One epoch's group keys at one member.
#[derive(Clone, Debug)]
pub struct GroupKeys {
    conversation: ConversationId,
    epoch: Epoch,
    /// Oldest first; at most [`KEPT_GENERATIONS`].
    generations: Vec<Generation>,
}

impl GroupKeys {
    /// Generation 0 of `epoch`, from the RN1 of the Setup or Update that
    /// started it. `slots` are the epoch's slots; every chain starts at
    /// sequence 1.
    pub fn start_epoch(
        conversation: ConversationId,
        epoch: Epoch,
        rn1: &Rn1,
        slots: impl IntoIterator<Item = SlotIndex>,
    ) -> Self {
        let secret = derive(
            context::GROUP_GENERATION,
            &[
                conversation.as_bytes(),
                &epoch.0.to_be_bytes(),
                &0u64.to_be_bytes(),
                rn1.expose(),
                &[0],
            ],
        );
        let starts = slots.into_iter().map(|s| (s, Sequence(1)));
        let generation = Generation::from_secret(KeyGeneration(0), secret, starts);
        Self {
            conversation,
            epoch,
            generations: vec![generation],
        }
    }

    /// The epoch these keys belong to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The newest generation.
    pub fn current(&self) -> KeyGeneration {
        self.generations
            .last()
            .map(|g| g.number)
            .unwrap_or_default()
    }

    /// Starts the next generation at a Rekey, from its RN1. `starts` gives
    /// every slot's first sequence in it: one past the last sequence the
    /// slot had accepted before the Rekey's index (1 for a slot that sent
    /// nothing yet). The oldest generation beyond [`KEPT_GENERATIONS`] is
    /// dropped with its chains.
    pub fn rekey(
        &mut self,
        generation: KeyGeneration,
        rn1: &Rn1,
        starts: impl IntoIterator<Item = (SlotIndex, Sequence)>,
    ) -> Result<(), GroupKeyError> {
        let current = self.current();
        if current.0.checked_add(1) != Some(generation.0) {
            return Err(GroupKeyError::GenerationOutOfOrder {
                current,
                got: generation,
            });
        }
        let init = self
            .generations
            .last()
            .map(|g| g.init.clone())
            .unwrap_or(Secret([0; 32]));
        let secret = derive(
            context::GROUP_GENERATION,
            &[
                self.conversation.as_bytes(),
                &self.epoch.0.to_be_bytes(),
                &generation.0.to_be_bytes(),
                rn1.expose(),
                &[1],
                &init.0,
            ],
        );
        self.generations
            .push(Generation::from_secret(generation, secret, starts));
        while self.generations.len() > KEPT_GENERATIONS {
            self.generations.remove(0);
        }
        Ok(())
    }

    /// The body key of the message with `sequence` from `slot`, under
    /// `generation` and `period_key`. The chain moves past `sequence` and
    /// every key up to it is deleted: asking again fails with
    /// [`GroupKeyError::KeyGone`]. The sender calls this when it composes,
    /// every receiver when it accepts, with identical results.
    pub fn message_key(
        &mut self,
        generation: KeyGeneration,
        period: KeyPeriod,
        period_key: &PeriodKey,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<BodyKey, GroupKeyError> {
        let chain = self.take_chain_key(generation, slot, sequence)?;
        Ok(chain.message_key(period, period_key))
    }

    /// The chain key of the message with `sequence` from `slot`, for a
    /// message whose period key is not complete yet (a share still on its
    /// way): the chain moves past `sequence` at once, as
    /// [`GroupKeys::message_key`] does, and the returned key is the only
    /// copy left.
    pub fn take_chain_key(
        &mut self,
        generation: KeyGeneration,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<ChainKey, GroupKeyError> {
        let (epoch, conversation) = (self.epoch, self.conversation);
        let chain = self.chain(generation, slot, sequence)?;
        while chain.next < sequence.0 {
            chain.key = derive(context::GROUP_CHAIN_STEP, &[&chain.key.0]);
            chain.next += 1;
        }
        let key = ChainKey {
            key: chain.key.clone(),
            conversation,
            epoch,
            generation,
            slot,
            sequence,
        };
        chain.key = derive(context::GROUP_CHAIN_STEP, &[&chain.key.0]);
        chain.next += 1;
        Ok(key)
    }

    /// Moves the sender chain of `slot` past `sequence` without deriving a
    /// key (a message whose period key this member cannot form): the
    /// chain stays in step with every other member's, and the key is gone.
    pub fn skip(
        &mut self,
        generation: KeyGeneration,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<(), GroupKeyError> {
        let chain = self.chain(generation, slot, sequence)?;
        while chain.next <= sequence.0 {
            chain.key = derive(context::GROUP_CHAIN_STEP, &[&chain.key.0]);
            chain.next += 1;
        }
        Ok(())
    }

    /// The chain of `slot` in `generation`, checked to reach `sequence`.
    fn chain(
        &mut self,
        generation: KeyGeneration,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<&mut Chain, GroupKeyError> {
        let (epoch, current) = (self.epoch, self.current());
        let held = self
            .generations
            .iter_mut()
            .find(|g| g.number == generation)
            .ok_or(GroupKeyError::UnknownGeneration {
                epoch,
                generation,
                current,
            })?;
        let chain = held
            .chains
            .get_mut(&slot)
            .ok_or(GroupKeyError::UnknownSlot { epoch, slot })?;
        if sequence.0 < chain.next {
            return Err(GroupKeyError::KeyGone {
                slot,
                sequence,
                next: Sequence(chain.next),
            });
        }
        if sequence.0 - chain.next > MAX_CHAIN_SKIP {
            return Err(GroupKeyError::SkipTooFar {
                slot,
                sequence,
                next: Sequence(chain.next),
            });
        }
        Ok(chain)
    }

    /// A secret exported from the current generation under `label` (for
    /// history, files, calls): every member of the generation derives the
    /// same bytes, and no other label gives them.
    pub fn export(&self, label: &str) -> Zeroizing<[u8; 32]> {
        let key = self
            .generations
            .last()
            .map(|g| g.exporter.0)
            .unwrap_or([0; 32]);
        export_with(&key, label)
    }

    /// [`GroupKeys::export`] from a kept generation other than the newest;
    /// `None` when the generation is not (or no longer) held.
    pub fn export_generation(
        &self,
        generation: KeyGeneration,
        label: &str,
    ) -> Option<Zeroizing<[u8; 32]>> {
        self.generations
            .iter()
            .find(|g| g.number == generation)
            .map(|g| export_with(&g.exporter.0, label))
    }
}

impl GroupKeys {
    /// The keys as bytes for the member's encrypted local store (secrets
    /// inside): conversation, epoch, then per kept generation its number,
    /// init and exporter secrets and every chain's position and key.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.encode_into(Canonical::new()).as_bytes().to_vec())
    }

    /// Appends [`GroupKeys::encode`]'s bytes to `c`.
    pub fn encode_into(&self, c: Canonical) -> Canonical {
        let mut c = c
            .fixed(self.conversation.as_bytes())
            .u64(self.epoch.0)
            .count(self.generations.len());
        for g in &self.generations {
            c = c
                .u64(g.number.0)
                .fixed(&g.init.0)
                .fixed(&g.exporter.0)
                .count(g.chains.len());
            for (slot, chain) in &g.chains {
                c = c.u32(slot.0).u64(chain.next).fixed(&chain.key.0);
            }
        }
        c
    }

    /// Reads [`GroupKeys::encode`]'s bytes from `r`.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let conversation = ConversationId::from_bytes(r.fixed()?);
        let epoch = Epoch(r.u64()?);
        let n = r.count("group_keys.generations", KEPT_GENERATIONS)?;
        if n == 0 {
            return Err(DecodeError::Invalid {
                field: "group_keys.generations",
                reason: "no key generation",
            });
        }
        let mut generations = Vec::with_capacity(n);
        for _ in 0..n {
            let number = KeyGeneration(r.u64()?);
            let init = Secret(r.fixed()?);
            let exporter = Secret(r.fixed()?);
            let m = r.count("group_keys.chains", MAX_SLOTS)?;
            let mut chains = BTreeMap::new();
            for _ in 0..m {
                let slot = SlotIndex(r.u32()?);
                let next = r.u64()?;
                chains.insert(
                    slot,
                    Chain {
                        next,
                        key: Secret(r.fixed()?),
                    },
                );
            }
            generations.push(Generation {
                number,
                chains,
                init,
                exporter,
            });
        }
        if generations.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(DecodeError::Invalid {
                field: "group_keys.generations",
                reason: "generations out of order",
            });
        }
        Ok(Self {
            conversation,
            epoch,
            generations,
        })
    }
}

/// `keyed_hash(exporter, bytes(label))`.
fn export_with(exporter: &[u8; 32], label: &str) -> Zeroizing<[u8; 32]> {
    let encoded = grompi_proto::encoding::Canonical::new().bytes(label.as_bytes());
    Zeroizing::new(*blake3::keyed_hash(exporter, encoded.as_bytes()).as_bytes())
}

impl Generation {
    /// Derives everything that outlives the generation secret, which is
    /// dropped (and zeroized) on return.
    fn from_secret(
        number: KeyGeneration,
        secret: Secret,
        starts: impl IntoIterator<Item = (SlotIndex, Sequence)>,
    ) -> Self {
        let chains = starts
            .into_iter()
            .map(|(slot, start)| {
                let key = derive(
                    context::GROUP_SENDER_CHAIN,
                    &[&secret.0, &slot.0.to_be_bytes()],
                );
                (slot, Chain { next: start.0, key })
            })
            .collect();
        Self {
            number,
            chains,
            init: derive(context::GROUP_INIT, &[&secret.0]),
            exporter: derive(context::GROUP_EXPORTER, &[&secret.0]),
        }
    }
}

#[cfg(test)]
#[path = "group_key_tests.rs"]
mod tests;
