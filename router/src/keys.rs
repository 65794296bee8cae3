//! An account's public keys as the directory keeps and the store persists
//! them: identity keys and signed prekeys.

/// An account's long-term identity keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityKeys {
    /// Ed25519 public key.
    pub signing: [u8; 32],
    /// Curve25519 pairwise-session identity key.
    pub session: [u8; 32],
}

/// A prekey with its identity signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPrekey {
    /// The X25519 prekey.
    pub key: [u8; 32],
    /// Ed25519 signature over `prekey_signing_message(key)`.
    pub signature: [u8; 64],
}
