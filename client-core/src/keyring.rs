//! Order keys: the single-use X25519 keys this member uploads to the router,
//! which assigns them to slots. Each is used for one conversation epoch: the
//! first time a Setup or Update assigns it, the MAC keys with every pinned
//! order server are derived (one X25519 each, cached for the epoch) and the
//! secret is dropped, so no key is ever used twice.

use crate::errors::ClientError;
use grompi_proto::{MacKeys, OrderServerKey, SlotKey, SlotSecret};
use std::collections::HashMap;

/// The MAC keys of one slot with each pinned order server, in descriptor
/// order.
///
/// The slot's secret stays with its MAC keys (never in the keyring again),
/// only so the epoch's state can be written to the encrypted local store
/// and restored: it is exactly as sensitive as the MAC keys derived from
/// it, and no path returns it to the unused keys.
#[derive(Clone)]
pub struct SlotMacKeys {
    keys: Vec<MacKeys>,
    secret: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SlotMacKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotMacKeys({} servers)", self.keys.len())
    }
}

impl SlotMacKeys {
    /// Derives the MAC keys of `secret` with every server.
    pub fn derive(secret: &SlotSecret, servers: &[OrderServerKey]) -> Result<Self, ClientError> {
        let keys = servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                secret
                    .mac_keys(s)
                    .map_err(|_| ClientError::LowOrderServerKey(i))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            keys,
            secret: secret.to_bytes(),
        })
    }

    /// The keys shared with server `server`.
    pub fn server(&self, server: u32) -> Option<&MacKeys> {
        usize::try_from(server).ok().and_then(|s| self.keys.get(s))
    }

    /// The keys of every server, in descriptor order.
    pub fn all(&self) -> &[MacKeys] {
        &self.keys
    }

    /// The slot's public key.
    pub fn slot_key(&self) -> SlotKey {
        SlotSecret::from_bytes(*self.secret).public_key()
    }

    /// The slot secret, for the encrypted local store only.
    pub(crate) fn secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// This member's unused order keys.
#[derive(Default)]
pub struct OrderKeyring {
    unused: HashMap<SlotKey, SlotSecret>,
}

impl std::fmt::Debug for OrderKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OrderKeyring({} unused)", self.unused.len())
    }
}

impl OrderKeyring {
    /// An empty keyring: no order key until [`OrderKeyring::generate`]
    /// or a restore adds some.
    pub fn new() -> Self {
        Self::default()
    }

    /// Generates `count` fresh order keys from the caller's RNG and returns
    /// their public halves, to upload.
    pub fn generate(&mut self, rng: &mut impl rand::CryptoRng, count: usize) -> Vec<SlotKey> {
        (0..count)
            .map(|_| {
                let mut b = zeroize::Zeroizing::new([0u8; 32]);
                rng.fill_bytes(&mut b[..]);
                let secret = SlotSecret::from_bytes(*b);
                let public = secret.public_key();
                self.unused.insert(public, secret);
                public
            })
            .collect()
    }

    /// Adds a secret (restored from storage).
    pub fn insert(&mut self, secret: SlotSecret) {
        self.unused.insert(secret.public_key(), secret);
    }

    /// The unused secrets, for the encrypted local store.
    pub fn export(&self) -> Vec<zeroize::Zeroizing<[u8; 32]>> {
        self.unused.values().map(SlotSecret::to_bytes).collect()
    }

    /// Number of unused order keys whose secrets this member holds (their
    /// public halves may be waiting at the router to be assigned a slot).
    pub fn len(&self) -> usize {
        self.unused.len()
    }

    /// Whether no key is left.
    pub fn is_empty(&self) -> bool {
        self.unused.is_empty()
    }

    /// Whether `key` is one of the unused keys.
    pub fn contains(&self, key: &SlotKey) -> bool {
        self.unused.contains_key(key)
    }

    /// The MAC keys `key` would have, without using it: for checking a
    /// Setup or Update that assigns it before that envelope is accepted (a
    /// forged candidate must not consume the key). Fails with
    /// [`ClientError::ForeignSlotKey`] when the key is not an unused key of
    /// this member.
    pub fn peek(
        &self,
        key: &SlotKey,
        servers: &[OrderServerKey],
    ) -> Result<SlotMacKeys, ClientError> {
        let secret = self.unused.get(key).ok_or(ClientError::ForeignSlotKey)?;
        SlotMacKeys::derive(secret, servers)
    }

    /// Forgets an unused key once the envelope assigning it is accepted
    /// (its MAC keys came from [`OrderKeyring::peek`]); false when it is not
    /// an unused key any more (another conversation used it first).
    pub fn remove(&mut self, key: &SlotKey) -> bool {
        self.unused.remove(key).is_some()
    }

    /// Uses `key` for one epoch: derives its MAC keys with every server and
    /// forgets the secret. Fails with [`ClientError::ForeignSlotKey`] when the
    /// key is not an unused key of this member.
    pub fn take(
        &mut self,
        key: &SlotKey,
        servers: &[OrderServerKey],
    ) -> Result<SlotMacKeys, ClientError> {
        let secret = self.unused.get(key).ok_or(ClientError::ForeignSlotKey)?;
        let keys = SlotMacKeys::derive(secret, servers)?;
        self.unused.remove(key);
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::OrderServerSecret;
    use rand::SeedableRng;

    #[test]
    fn keys_are_single_use_and_match_the_server() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut ring = OrderKeyring::new();
        let keys = ring.generate(&mut rng, 2);
        assert_eq!(ring.len(), 2);
        let server = OrderServerSecret::from_bytes([7; 32]);
        let mine = ring.take(&keys[0], &[server.public_key()]).unwrap();
        let theirs = server.mac_keys(&keys[0]).unwrap();
        let e = grompi_proto::EnvelopeHash::from_bytes([1; 32]);
        let tag = mine
            .server(0)
            .unwrap()
            .submit(&e, grompi_proto::Sequence(1));
        assert!(theirs.verify_submission(&e, grompi_proto::Sequence(1), &tag));
        assert!(matches!(
            ring.take(&keys[0], &[server.public_key()]),
            Err(ClientError::ForeignSlotKey)
        ));
        assert!(matches!(
            ring.take(&SlotKey::from_bytes([5; 32]), &[server.public_key()]),
            Err(ClientError::ForeignSlotKey)
        ));
        assert_eq!(ring.len(), 1);
        // Peeking derives the same keys and uses nothing; removing does.
        let peeked = ring.peek(&keys[1], &[server.public_key()]).unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(peeked.slot_key(), keys[1]);
        assert!(ring.remove(&keys[1]));
        assert!(!ring.remove(&keys[1]));
        assert!(ring.is_empty());
    }
}
