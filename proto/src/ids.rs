//! Identifiers and counters.

use crate::encoding::Canonical;
use crate::fixed::fixed32;

fixed32!(
    /// A conversation: 32 random bytes chosen by its creator. Order servers
    /// refuse to open an id they have seen, so an id is never reused.
    ConversationId
);

fixed32!(
    /// An account at the router: the hash of its identity keys.
    AccountId
);

fixed32!(
    /// A fresh random challenge from the router, signed to register or sign in.
    Challenge
);

fixed32!(
    /// A member's fresh random nonce for a head proof.
    ProofNonce
);

impl AccountId {
    /// The account id of a pair of identity keys: the Ed25519 signing key and
    /// the Curve25519 session key.
    pub fn of_identity(signing_key: &[u8; 32], session_key: &[u8; 32]) -> Self {
        Self(
            Canonical::new()
                .fixed(signing_key)
                .fixed(session_key)
                .hash(crate::context::ACCOUNT_ID),
        )
    }
}

fixed32!(
    /// What a sign-in is bound to: a hash of the network's identity that
    /// the client and the router both know from the network descriptor.
    NetworkBinding
);

impl NetworkBinding {
    /// The binding of the network called `name` whose router's TLS root is
    /// `router_tls_ca_pem`:
    /// `derive_key("grompi v1 network binding", bytes(name) || bytes(pem))`,
    /// where `pem` is the PEM text with every ASCII whitespace character
    /// removed (so line endings and trailing newlines do not matter).
    pub fn of(name: &str, router_tls_ca_pem: &str) -> Self {
        let pem: Vec<u8> = router_tls_ca_pem
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        Self(
            Canonical::new()
                .bytes(name.as_bytes())
                .bytes(&pem)
                .hash(crate::context::NETWORK_BINDING),
        )
    }

    /// The binding of a descriptor's network: its name and its router's
    /// TLS root. (Not the router's address: a router listens on a socket
    /// address and does not know the name clients reach it by.)
    pub fn of_descriptor(descriptor: &crate::NetworkDescriptor) -> Self {
        Self::of(&descriptor.name, &descriptor.router.tls_ca_pem)
    }
}

impl Challenge {
    /// The exact message an identity key signs to answer this challenge
    /// from a router of the network `network`.
    pub fn network_signing_message(&self, network: &NetworkBinding) -> Vec<u8> {
        Canonical::new()
            .bytes(crate::context::SIGN_IN_NETWORK.as_bytes())
            .fixed(network.as_bytes())
            .fixed(&self.0)
            .as_bytes()
            .to_vec()
    }

    /// The message an identity key signed to answer this challenge before
    /// sign-in was bound to a network ([`Challenge::network_signing_message`]).
    pub fn signing_message(&self) -> Vec<u8> {
        Canonical::new()
            .bytes(crate::context::SIGN_IN.as_bytes())
            .fixed(&self.0)
            .as_bytes()
            .to_vec()
    }
}

/// The exact message an identity key signs to certify a prekey.
pub fn prekey_signing_message(prekey: &[u8; 32]) -> Vec<u8> {
    Canonical::new()
        .bytes(crate::context::PREKEY_SIGNATURE.as_bytes())
        .fixed(prekey)
        .as_bytes()
        .to_vec()
}

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

counter!(
    /// A conversation epoch: starts at 0, increments on every membership
    /// change, and names the slot set in force.
    Epoch(u64)
);
counter!(
    /// A position in a conversation. Dense and global across epochs: index 0
    /// is the Setup, and every later envelope takes the next index.
    Index(u64)
);
counter!(
    /// A position in an epoch's slot set.
    SlotIndex(u32)
);
counter!(
    /// A sender's sequence number, strictly increasing per slot and epoch,
    /// starting at 1.
    Sequence(u64)
);

impl Epoch {
    /// The epoch after this one, or `None` on overflow.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl Index {
    /// The index after this one, or `None` on overflow.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}
