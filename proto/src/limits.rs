//! Hard limits of the protocol, enforced when wire messages are parsed.
//! Deployments may configure tighter limits; none may be looser, because a
//! peer built to these limits must be able to parse everything it is sent.

/// Most slots in one slot set (padded group size).
pub const MAX_SLOTS: usize = 1024;
/// Most recipient blocks in one envelope (one per member other than the sender).
pub const MAX_BLOCKS: usize = MAX_SLOTS;
/// Largest body ciphertext, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest recipient block ciphertext, in bytes.
pub const MAX_BLOCK_BYTES: usize = 4096;
/// Most order servers in one network.
pub const MAX_ORDER_SERVERS: usize = 16;
/// Most items in one attestation batch.
pub const MAX_ATTEST_BATCH: usize = 4096;
/// Largest network descriptor file, in bytes.
pub const MAX_DESCRIPTOR_BYTES: usize = 64 * 1024;
/// Most prekeys or order keys in one upload.
pub const MAX_KEYS_PER_UPLOAD: usize = 1000;
/// Largest Ed25519 signature, in bytes (exactly this long).
pub const SIGNATURE_BYTES: usize = 64;
