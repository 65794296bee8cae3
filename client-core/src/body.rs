//! Key-committing body encryption and the recipient block plaintext.
//!
//! The body is encrypted once, with ChaCha20-Poly1305 under a fresh random
//! 32-byte body key and the all-zero nonce (each key encrypts exactly one
//! body). The associated data names the conversation, epoch, kind, sender
//! slot and sequence: every header field known before the ciphertext.
//!
//! ChaCha20-Poly1305 alone is not key-committing (one ciphertext can be made
//! to decrypt under two keys), so the header carries
//! `key_commitment = KeyCommitment::to_key(body_key)` and `body_hash`; both
//! are in the envelope hash the order servers attest. A recipient checks the
//! commitment before decrypting, so every member that accepts an index
//! decrypts the same ciphertext under the same key and reads the same
//! plaintext, whatever the sender put in the individual blocks.
//!
//! Each recipient block carries `(body key, core hash)`. The core hash binds
//! the block to its envelope: a block lifted into another envelope is
//! refused.

use crate::codec::{Canonical, Reader};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use grompi_proto::{
    ConversationId, CoreHash, EnvelopeKind, Epoch, KeyCommitment, Sequence, SlotIndex,
};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Label at the start of the body's associated data (versioned).
pub const BODY_AAD_LABEL: &[u8] = grompi_proto::context::BODY_AAD.as_bytes();
/// Version byte of the block plaintext format.
pub const BLOCK_PLAINTEXT_VERSION: u8 = 1;
/// Length of an encoded block plaintext.
pub const BLOCK_PLAINTEXT_LEN: usize = 1 + 32 + 32;
/// Version byte of the block plaintext that carries an RN1.
pub const BLOCK_PLAINTEXT_VERSION_RN1: u8 = 2;
/// Length of an encoded block plaintext with an RN1.
pub const BLOCK_PLAINTEXT_RN1_LEN: usize = BLOCK_PLAINTEXT_LEN + 32;

/// A one-time body key; zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct BodyKey([u8; 32]);

impl BodyKey {
    /// A fresh key from the caller's RNG.
    pub fn generate(rng: &mut impl rand::CryptoRng) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        Self(k)
    }

    /// Wraps 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes, for a history capsule (`crate::history`).
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The commitment that goes into the header.
    pub fn commitment(&self) -> KeyCommitment {
        KeyCommitment::to_key(&self.0)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(self.0))
    }
}

impl std::fmt::Debug for BodyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyKey(..)")
    }
}

/// The header fields a body is bound to (known before the ciphertext).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyContext {
    /// The header's conversation; bound as associated data.
    pub conversation: ConversationId,
    /// The header's epoch; bound as associated data.
    pub epoch: Epoch,
    /// The header's kind; bound as associated data, so a body cannot be
    /// replayed under another kind.
    pub kind: EnvelopeKind,
    /// The sender's slot.
    pub sender: SlotIndex,
    /// The sender's sequence number.
    pub sequence: Sequence,
}

impl BodyContext {
    /// The context of `header`: the fields of it the body's associated
    /// data binds.
    pub fn of(header: &grompi_proto::EnvelopeHeader) -> Self {
        Self {
            conversation: header.conversation(),
            epoch: header.epoch(),
            kind: header.kind(),
            sender: header.sender(),
            sequence: header.sequence(),
        }
    }

    fn aad(&self) -> Canonical {
        Canonical::new()
            .bytes(BODY_AAD_LABEL)
            .fixed(self.conversation.as_bytes())
            .u64(self.epoch.0)
            .u8(self.kind.code())
            .u32(self.sender.0)
            .u64(self.sequence.0)
    }
}

/// Why a body did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The key does not match the header's commitment.
    #[error("body key does not match the key commitment")]
    KeyCommitmentMismatch,
    /// The ciphertext does not authenticate under the key and context.
    #[error("body does not decrypt")]
    Undecryptable,
}

/// Encrypts a body.
pub fn seal(key: &BodyKey, context: &BodyContext, plaintext: &[u8]) -> Vec<u8> {
    let aad = context.aad();
    // Encryption fails only for inputs beyond 2^38 bytes, far above the
    // protocol's body limit; an empty result would then fail every check.
    key.cipher()
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: plaintext,
                aad: aad.as_bytes(),
            },
        )
        .unwrap_or_default()
}

/// Checks the key against the commitment, then decrypts the body.
pub fn open(
    key: &BodyKey,
    commitment: &KeyCommitment,
    context: &BodyContext,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    if key.commitment() != *commitment {
        return Err(BodyError::KeyCommitmentMismatch);
    }
    let aad = context.aad();
    key.cipher()
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: ciphertext,
                aad: aad.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| BodyError::Undecryptable)
}

/// What a recipient block carries: the body key and the core hash of the
/// envelope it belongs to, and, in a group-keyed conversation's Setup,
/// Update or Rekey, the RN1 of the key generation it starts for every
/// recipient that takes part in it (`docs/PROTOCOL.md` section 4.5).
#[derive(Clone, PartialEq, Eq)]
pub struct BlockPlaintext {
    /// The fresh random 32-byte key the body is encrypted under; the
    /// header's key commitment binds it.
    pub key: BodyKey,
    /// The core hash of the envelope the block was made for.
    pub core: CoreHash,
    /// Route A's secret for the generation the envelope starts; checked
    /// against the header's RN1 commitment.
    pub rn1: Option<crate::group_key::Rn1>,
}

impl std::fmt::Debug for BlockPlaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockPlaintext(core {:?})", self.core)
    }
}

impl BlockPlaintext {
    /// The encoding: version 1, key, core hash; or, with an RN1, version
    /// 2, key, core hash, RN1.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let c = match &self.rn1 {
            None => Canonical::new()
                .u8(BLOCK_PLAINTEXT_VERSION)
                .fixed(&self.key.0)
                .fixed(self.core.as_bytes()),
            Some(rn1) => Canonical::new()
                .u8(BLOCK_PLAINTEXT_VERSION_RN1)
                .fixed(&self.key.0)
                .fixed(self.core.as_bytes())
                .fixed(rn1.expose()),
        };
        Zeroizing::new(c.as_bytes().to_vec())
    }

    /// Parses the encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::codec::DecodeError> {
        let mut r = Reader::new("block plaintext", bytes);
        let version = r.u8()?;
        if version != BLOCK_PLAINTEXT_VERSION && version != BLOCK_PLAINTEXT_VERSION_RN1 {
            return Err(crate::codec::DecodeError::Invalid {
                field: "block plaintext",
                reason: "unknown version",
            });
        }
        let key = BodyKey(r.fixed()?);
        let core = CoreHash::from_bytes(r.fixed()?);
        let rn1 = if version == BLOCK_PLAINTEXT_VERSION_RN1 {
            Some(crate::group_key::Rn1::from_bytes(r.fixed()?))
        } else {
            None
        };
        r.finish()?;
        Ok(Self { key, core, rn1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ctx() -> BodyContext {
        BodyContext {
            conversation: ConversationId::from_bytes([1; 32]),
            epoch: Epoch(0),
            kind: EnvelopeKind::Message,
            sender: SlotIndex(2),
            sequence: Sequence(1),
        }
    }

    #[test]
    fn round_trip_and_binding() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let key = BodyKey::generate(&mut rng);
        let ct = seal(&key, &ctx(), b"hello");
        let c = key.commitment();
        assert_eq!(&open(&key, &c, &ctx(), &ct).unwrap()[..], b"hello");
        // Another context (sequence) does not decrypt.
        let other = BodyContext {
            sequence: Sequence(2),
            ..ctx()
        };
        assert_eq!(open(&key, &c, &other, &ct), Err(BodyError::Undecryptable));
        // Another key fails the commitment before any decryption.
        let key2 = BodyKey::generate(&mut rng);
        assert_eq!(
            open(&key2, &c, &ctx(), &ct),
            Err(BodyError::KeyCommitmentMismatch)
        );
        // A tampered ciphertext does not decrypt.
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(open(&key, &c, &ctx(), &bad), Err(BodyError::Undecryptable));
    }

    #[test]
    fn body_aad_matches_the_published_vector() {
        let v = grompi_proto::vectors::find("body_aad").unwrap();
        assert_eq!(v.context.as_deref(), Some(grompi_proto::context::BODY_AAD));
        let int = |k: &str| v.fields[k].as_u64().unwrap();
        let context = BodyContext {
            conversation: ConversationId::from_bytes(
                v.field_bytes("conversation_id")
                    .unwrap()
                    .try_into()
                    .unwrap(),
            ),
            epoch: Epoch(int("epoch")),
            kind: EnvelopeKind::from_code(int("kind").try_into().unwrap()).unwrap(),
            sender: SlotIndex(int("sender_slot").try_into().unwrap()),
            sequence: Sequence(int("sequence")),
        };
        let published = v.input_bytes().unwrap();
        assert_eq!(context.aad().as_bytes(), &published[..]);
        // seal() authenticates exactly the published bytes (all-zero nonce).
        let key = BodyKey::from_bytes([3; 32]);
        let sealed = seal(&key, &context, b"body");
        let opened = ChaCha20Poly1305::new(&Key::from([3; 32]))
            .decrypt(
                &Nonce::default(),
                Payload {
                    msg: &sealed,
                    aad: &published,
                },
            )
            .unwrap();
        assert_eq!(opened, b"body");
    }

    #[test]
    fn block_plaintext_round_trips_strictly() {
        let b = BlockPlaintext {
            key: BodyKey::from_bytes([4; 32]),
            core: CoreHash::from_bytes([5; 32]),
            rn1: None,
        };
        let enc = b.encode();
        assert_eq!(enc.len(), BLOCK_PLAINTEXT_LEN);
        assert_eq!(BlockPlaintext::decode(&enc).unwrap(), b);
        assert!(BlockPlaintext::decode(&enc[..enc.len() - 1]).is_err());
        let mut long = enc.to_vec();
        long.push(0);
        assert!(BlockPlaintext::decode(&long).is_err());
        assert!(!format!("{:?}", b.key).contains("04"));
    }

    #[test]
    fn a_block_plaintext_with_rn1_matches_its_published_vector() {
        let v = grompi_proto::vectors::find("block_plaintext_rn1").unwrap();
        let key: [u8; 32] = v.field_bytes("body_key").unwrap().try_into().unwrap();
        let core: [u8; 32] = v.field_bytes("core_hash").unwrap().try_into().unwrap();
        let rn1: [u8; 32] = v.field_bytes("rn1").unwrap().try_into().unwrap();
        let block = BlockPlaintext {
            key: BodyKey::from_bytes(key),
            core: CoreHash::from_bytes(core),
            rn1: Some(crate::group_key::Rn1::from_bytes(rn1)),
        };
        let published = v.input_bytes().unwrap();
        assert_eq!(published.len(), BLOCK_PLAINTEXT_RN1_LEN);
        assert_eq!(&block.encode()[..], &published[..]);
        assert_eq!(BlockPlaintext::decode(&published).unwrap(), block);
        // Version 2 without its RN1, or version 1 with one, is refused.
        assert!(BlockPlaintext::decode(&published[..BLOCK_PLAINTEXT_LEN]).is_err());
        let mut v1 = published.clone();
        v1[0] = 1;
        assert!(BlockPlaintext::decode(&v1).is_err());
    }

    #[test]
    fn block_plaintext_matches_the_published_vector() {
        let v = grompi_proto::vectors::find("block_plaintext").unwrap();
        assert_eq!(v.primitive, "encrypted_plaintext");
        assert_eq!(
            v.fields["version"].as_u64(),
            Some(u64::from(BLOCK_PLAINTEXT_VERSION))
        );
        let key: [u8; 32] = v.field_bytes("body_key").unwrap().try_into().unwrap();
        let core: [u8; 32] = v.field_bytes("core_hash").unwrap().try_into().unwrap();
        let block = BlockPlaintext {
            key: BodyKey::from_bytes(key),
            core: CoreHash::from_bytes(core),
            rn1: None,
        };
        let published = v.input_bytes().unwrap();
        assert_eq!(published.len(), BLOCK_PLAINTEXT_LEN);
        assert_eq!(&block.encode()[..], &published[..]);
        assert_eq!(BlockPlaintext::decode(&published).unwrap(), block);
        // The vector chains: its key is key_commitment's, its core hash is
        // envelope_core_1's output.
        let commitment = grompi_proto::vectors::find("key_commitment").unwrap();
        assert_eq!(
            block.key.commitment().as_bytes().to_vec(),
            commitment.output_bytes().unwrap()
        );
        let core_vector = grompi_proto::vectors::find("envelope_core_1").unwrap();
        assert_eq!(
            block.core.as_bytes().to_vec(),
            core_vector.output_bytes().unwrap()
        );
        // Another version byte is refused.
        let mut other = published;
        other[0] = 2;
        assert!(BlockPlaintext::decode(&other).is_err());
    }
}
