//! Route B of a conversation's group key: the order servers' key shares.
//!
//! In a group-keyed conversation (`docs/PROTOCOL.md`, section 4.5) every
//! message key mixes a *period key* made from key shares that order servers
//! contribute. Each order server derives its share for (conversation,
//! epoch, key period) deterministically from its long-term secret, so a
//! retried attestation returns the same bytes, as tags already do:
//!
//! ```text
//! share_root = derive_key("grompi v1 order key share root", o_i)
//! share      = derive_key("grompi v1 order key share",
//!                         share_root || conversation_id || u64(epoch) || u64(period))
//! ```
//!
//! It returns the share wrapped for each slot of the epoch, with
//! ChaCha20-Poly1305 under a key only that slot's holder and the server
//! derive (from the root MAC key of section 2, so no new key agreement):
//!
//! ```text
//! wrap_root = derive_key("grompi v1 key share wrap", root)
//! wrap_key  = derive_key("grompi v1 key share wrap", wrap_root || conversation_id || u64(epoch))
//! nonce     = u32(0) || u64(period)
//! aad       = bytes("grompi v1 key share aad") || conversation_id || u64(epoch) || u64(period)
//! wrapped   = ChaCha20-Poly1305(wrap_key, nonce, aad, share)      (48 bytes)
//! ```
//!
//! The wrapping key is unique per (server, slot key, conversation, epoch)
//! and the nonce per period, so no key and nonce pair ever seals two
//! different shares, even if a router hands one order key out twice.
//!
//! **What a share is worth.** The router holds the padding slots' secrets,
//! so it unwraps the shares addressed to them and learns every period key.
//! Shares renew message keys periodically without any member acting, which
//! limits what a leaked group secret opens; they never give confidentiality
//! against the router (`SECURITY.md`).

use crate::context;
use crate::encoding::Canonical;
use crate::ids::{ConversationId, Epoch, Index};
use crate::keys::{MacKeys, OrderServerSecret};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Bytes of a wrapped share: the 32-byte share and the 16-byte Poly1305 tag.
pub const WRAPPED_SHARE_BYTES: usize = 48;

/// A key period of an epoch: period `p` covers the indices
/// `start + p * length .. start + (p + 1) * length`, where `start` is the
/// epoch's first index and `length` the period length the epoch's Setup or
/// Update stated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct KeyPeriod(pub u64);

impl std::fmt::Display for KeyPeriod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl KeyPeriod {
    /// The period of `index` in an epoch that starts at `epoch_start` with
    /// periods of `length` indices; `None` for an index before the epoch or
    /// a length of 0 (no periods: the conversation has no route B).
    pub fn of(index: Index, epoch_start: Index, length: u64) -> Option<Self> {
        let offset = index.0.checked_sub(epoch_start.0)?;
        offset.checked_div(length).map(Self)
    }

    /// Whether `index` is the first index of its period, where a server
    /// returns its wrapped shares (the epoch's first index always is).
    pub fn starts_at(index: Index, epoch_start: Index, length: u64) -> bool {
        index
            .0
            .checked_sub(epoch_start.0)
            .and_then(|offset| offset.checked_rem(length))
            == Some(0)
    }
}

/// One order server's key share for one (conversation, epoch, period);
/// zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct KeyShare([u8; 32]);

impl KeyShare {
    /// Wraps 32 bytes (an unwrapped share, or a test's value).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The share's bytes, for mixing into a period key.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyShare(..)")
    }
}

/// A key share sealed for one slot's holder.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WrappedShare(pub [u8; WRAPPED_SHARE_BYTES]);

impl std::fmt::Debug for WrappedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrappedShare({}..)", hex::encode(&self.0[..4]))
    }
}

impl TryFrom<&[u8]> for WrappedShare {
    type Error = ShareError;

    fn try_from(bytes: &[u8]) -> Result<Self, ShareError> {
        <[u8; WRAPPED_SHARE_BYTES]>::try_from(bytes)
            .map(Self)
            .map_err(|_| ShareError::WrongLength { len: bytes.len() })
    }
}

/// Why a wrapped share was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// The bytes are not a wrapped share.
    #[error("a wrapped key share is {WRAPPED_SHARE_BYTES} bytes, got {len}")]
    WrongLength {
        /// The length received.
        len: usize,
    },
    /// The share does not authenticate under this slot's key for this
    /// conversation, epoch and period: it was made for another slot or
    /// period, or altered.
    #[error(
        "the key share does not open under this slot's key for this conversation, epoch and period"
    )]
    DoesNotOpen,
    /// The AEAD refused to seal (it cannot for 32 bytes; reported rather
    /// than hidden).
    #[error("the key share could not be sealed")]
    DoesNotSeal,
}

impl OrderServerSecret {
    /// This server's key share for (conversation, epoch, period).
    pub fn key_share(
        &self,
        conversation: &ConversationId,
        epoch: Epoch,
        period: KeyPeriod,
    ) -> KeyShare {
        let secret = self.to_bytes();
        let root = Zeroizing::new(blake3::derive_key(context::KEY_SHARE_ROOT, &secret[..]));
        let mut input = Zeroizing::new(Vec::with_capacity(80));
        input.extend_from_slice(&root[..]);
        input.extend_from_slice(conversation.as_bytes());
        input.extend_from_slice(&epoch.0.to_be_bytes());
        input.extend_from_slice(&period.0.to_be_bytes());
        KeyShare(blake3::derive_key(context::KEY_SHARE, &input))
    }
}

/// The associated data of a wrapped share.
pub fn share_aad(conversation: &ConversationId, epoch: Epoch, period: KeyPeriod) -> Canonical {
    Canonical::new()
        .bytes(context::KEY_SHARE_AAD.as_bytes())
        .fixed(conversation.as_bytes())
        .u64(epoch.0)
        .u64(period.0)
}

fn nonce(period: KeyPeriod) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&period.0.to_be_bytes());
    n
}

impl MacKeys {
    fn share_cipher(&self, conversation: &ConversationId, epoch: Epoch) -> ChaCha20Poly1305 {
        let mut input = Zeroizing::new(Vec::with_capacity(72));
        input.extend_from_slice(self.share_wrap.as_bytes());
        input.extend_from_slice(conversation.as_bytes());
        input.extend_from_slice(&epoch.0.to_be_bytes());
        let key = Zeroizing::new(blake3::derive_key(context::KEY_SHARE_WRAP, &input));
        ChaCha20Poly1305::new(&Key::from(*key))
    }

    /// Seals `share` for the slot these keys belong to (server side). A
    /// retry seals the same bytes.
    pub fn wrap_share(
        &self,
        conversation: &ConversationId,
        epoch: Epoch,
        period: KeyPeriod,
        share: &KeyShare,
    ) -> Result<WrappedShare, ShareError> {
        let aad = share_aad(conversation, epoch, period);
        let sealed = self
            .share_cipher(conversation, epoch)
            .encrypt(
                &Nonce::from(nonce(period)),
                Payload {
                    msg: &share.0,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| ShareError::DoesNotSeal)?;
        WrappedShare::try_from(&sealed[..])
    }

    /// Opens a share sealed for this slot (member side).
    pub fn unwrap_share(
        &self,
        conversation: &ConversationId,
        epoch: Epoch,
        period: KeyPeriod,
        wrapped: &WrappedShare,
    ) -> Result<KeyShare, ShareError> {
        let aad = share_aad(conversation, epoch, period);
        let opened = Zeroizing::new(
            self.share_cipher(conversation, epoch)
                .decrypt(
                    &Nonce::from(nonce(period)),
                    Payload {
                        msg: &wrapped.0,
                        aad: aad.as_bytes(),
                    },
                )
                .map_err(|_| ShareError::DoesNotOpen)?,
        );
        let bytes = <[u8; 32]>::try_from(&opened[..]).map_err(|_| ShareError::DoesNotOpen)?;
        Ok(KeyShare(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SlotSecret;

    fn conv(b: u8) -> ConversationId {
        ConversationId::from_bytes([b; 32])
    }

    #[test]
    fn periods_count_from_the_epoch_start() {
        assert_eq!(KeyPeriod::of(Index(10), Index(10), 100), Some(KeyPeriod(0)));
        assert_eq!(
            KeyPeriod::of(Index(109), Index(10), 100),
            Some(KeyPeriod(0))
        );
        assert_eq!(
            KeyPeriod::of(Index(110), Index(10), 100),
            Some(KeyPeriod(1))
        );
        assert_eq!(KeyPeriod::of(Index(9), Index(10), 100), None);
        assert_eq!(KeyPeriod::of(Index(10), Index(10), 0), None);
        assert!(KeyPeriod::starts_at(Index(10), Index(10), 100));
        assert!(KeyPeriod::starts_at(Index(210), Index(10), 100));
        assert!(!KeyPeriod::starts_at(Index(211), Index(10), 100));
        assert!(!KeyPeriod::starts_at(Index(5), Index(10), 100));
        assert!(!KeyPeriod::starts_at(Index(10), Index(10), 0));
    }

    #[test]
    fn a_share_is_deterministic_and_bound_to_its_period() {
        let server = OrderServerSecret::from_bytes([7; 32]);
        let a = server.key_share(&conv(1), Epoch(0), KeyPeriod(3));
        assert_eq!(a, server.key_share(&conv(1), Epoch(0), KeyPeriod(3)));
        assert_ne!(a, server.key_share(&conv(1), Epoch(0), KeyPeriod(4)));
        assert_ne!(a, server.key_share(&conv(1), Epoch(1), KeyPeriod(3)));
        assert_ne!(a, server.key_share(&conv(2), Epoch(0), KeyPeriod(3)));
        let other = OrderServerSecret::from_bytes([8; 32]);
        assert_ne!(a, other.key_share(&conv(1), Epoch(0), KeyPeriod(3)));
    }

    #[test]
    fn only_the_slot_it_was_wrapped_for_opens_a_share() {
        let server = OrderServerSecret::from_bytes([7; 32]);
        let slot = SlotSecret::from_bytes([9; 32]);
        let other_slot = SlotSecret::from_bytes([10; 32]);
        let server_side = server.mac_keys(&slot.public_key()).unwrap();
        let member_side = slot.mac_keys(&server.public_key()).unwrap();
        let other_side = other_slot.mac_keys(&server.public_key()).unwrap();
        let share = server.key_share(&conv(1), Epoch(2), KeyPeriod(5));
        let wrapped = server_side
            .wrap_share(&conv(1), Epoch(2), KeyPeriod(5), &share)
            .unwrap();
        // A retry seals the same bytes.
        assert_eq!(
            wrapped,
            server_side
                .wrap_share(&conv(1), Epoch(2), KeyPeriod(5), &share)
                .unwrap()
        );
        assert_eq!(
            member_side
                .unwrap_share(&conv(1), Epoch(2), KeyPeriod(5), &wrapped)
                .unwrap(),
            share
        );
        for (keys, c, e, p) in [
            (&other_side, conv(1), Epoch(2), KeyPeriod(5)),
            (&member_side, conv(2), Epoch(2), KeyPeriod(5)),
            (&member_side, conv(1), Epoch(3), KeyPeriod(5)),
            (&member_side, conv(1), Epoch(2), KeyPeriod(6)),
        ] {
            assert_eq!(
                keys.unwrap_share(&c, e, p, &wrapped).unwrap_err(),
                ShareError::DoesNotOpen
            );
        }
        let mut flipped = wrapped;
        flipped.0[0] ^= 1;
        assert_eq!(
            member_side
                .unwrap_share(&conv(1), Epoch(2), KeyPeriod(5), &flipped)
                .unwrap_err(),
            ShareError::DoesNotOpen
        );
    }

    #[test]
    fn wrapped_shares_have_one_length() {
        assert_eq!(
            WrappedShare::try_from(&[0u8; 47][..]).unwrap_err(),
            ShareError::WrongLength { len: 47 }
        );
        assert!(WrappedShare::try_from(&[0u8; 48][..]).is_ok());
    }

    #[test]
    fn a_share_matches_its_published_vector() {
        let v = crate::vectors::find("key_share").unwrap();
        let server = OrderServerSecret::from_bytes([0x31; 32]);
        let share = server.key_share(
            &ConversationId::from_bytes([0x22; 32]),
            Epoch(1),
            KeyPeriod(4),
        );
        assert_eq!(hex::encode(share.expose()), v.output);
    }

    #[test]
    fn shares_do_not_print() {
        let share = KeyShare::from_bytes([0xab; 32]);
        assert!(!format!("{share:?}").contains("abab"));
    }
}
