//! Context strings: every hash, MAC key and KDF in the protocol is
//! domain-separated by exactly one of these. Most are BLAKE3 `derive_key`
//! contexts, so hashing under one context can never collide with hashing
//! under another; the others label bytes that are signed
//! ([`SIGN_IN_NETWORK`], [`SIGN_IN`], [`PREKEY_SIGNATURE`]), used as AEAD associated data ([`BODY_AAD`],
//! [`LOCAL_STORE_RECORD`]) or sealed as a known plaintext
//! ([`LOCAL_STORE_CHECK`]). The version is part of the string; a change to
//! any encoding gets a new string, never a silently different meaning.
//!
//! The client and the router use these constants for their own
//! derivations (body encryption, the encrypted local store, safety numbers,
//! session token hashes), so each string has exactly one definition.
//!
//! The test vectors in `vectors/v1.json` name the context they were made
//! under, and the replay test fails if any constant here changes.

/// Hash of a body ciphertext.
pub const BODY_HASH: &str = "grompi v1 body hash";
/// Digest of one recipient block (recipient slot and ciphertext).
pub const BLOCK_DIGEST: &str = "grompi v1 block digest";
/// Hash of the envelope header: what recipient blocks bind to.
pub const ENVELOPE_CORE: &str = "grompi v1 envelope core";
/// Hash of the header of a group-keyed conversation's envelope that carries
/// group key fields (a key policy or a key id): what blocks bind to.
pub const GROUP_ENVELOPE_CORE: &str = "grompi v1 group envelope core";
/// Hash of a whole envelope: core hash and all block digests.
pub const ENVELOPE_HASH: &str = "grompi v1 envelope hash";
/// Commitment to a body key (makes body encryption key-committing).
pub const KEY_COMMITMENT: &str = "grompi v1 body key commitment";
/// Hash of a slot set (keys and roles, in slot order).
pub const SLOT_SET: &str = "grompi v1 slot set";
/// The head before index 0 of a conversation.
pub const GENESIS_HEAD: &str = "grompi v1 genesis head";
/// One step of the head chain.
pub const HEAD_CHAIN: &str = "grompi v1 head chain";
/// Root MAC key between an order server and a slot, from their X25519 DH.
pub const ORDER_MAC_KEY: &str = "grompi v1 order mac key";
/// Attestation subkey, derived from the root MAC key.
pub const ATTESTATION_MAC: &str = "grompi v1 attestation mac";
/// Submission subkey, derived from the root MAC key.
pub const SUBMISSION_MAC: &str = "grompi v1 submission mac";
/// Head-proof subkey, derived from the root MAC key.
pub const HEAD_PROOF_MAC: &str = "grompi v1 head proof mac";
/// Account id from identity keys.
pub const ACCOUNT_ID: &str = "grompi v1 account id";
/// Prefix of the message an identity key signed to register or sign in
/// before sign-in was bound to a network; routers serving clients over
/// gRPC no longer accept it ([`SIGN_IN_NETWORK`]).
pub const SIGN_IN: &str = "grompi v1 sign-in";
/// Prefix of the message an identity key signs to register or sign in:
/// followed by the [`NETWORK_BINDING`] of the network and the challenge, so
/// a signature one router obtained is refused by a router of another
/// network.
pub const SIGN_IN_NETWORK: &str = "grompi v1 network sign-in";
/// What a sign-in is bound to: the network's name and its router's TLS
/// root, from the network descriptor both the client and the router hold.
pub const NETWORK_BINDING: &str = "grompi v1 network binding";
/// Prefix of the message an identity key signs to certify a prekey.
pub const PREKEY_SIGNATURE: &str = "grompi v1 prekey";
/// Label at the start of a body's AEAD associated data (client).
pub const BODY_AAD: &str = "grompi v1 body aad";
/// Safety number of two identities, a 96-byte `derive_key` XOF output
/// (client).
pub const SAFETY_NUMBER: &str = "grompi v1 safety number";
/// Record encryption key of the client's local store, from its master key.
pub const LOCAL_STORE_CIPHER: &str = "grompi v1 local store cipher";
/// Record index (slot MAC) key of the client's local store, from its
/// master key.
pub const LOCAL_STORE_INDEX: &str = "grompi v1 local store index";
/// Label at the start of a local store record's AEAD associated data.
pub const LOCAL_STORE_RECORD: &str = "grompi v1 local store record";
/// The known plaintext sealed in a local store's header to check the secret.
pub const LOCAL_STORE_CHECK: &str = "grompi v1 local store check";
/// An order server's key share root, from its long-term secret
/// ([`crate::key_share`]).
pub const KEY_SHARE_ROOT: &str = "grompi v1 order key share root";
/// An order server's key share for (conversation, epoch, key period).
pub const KEY_SHARE: &str = "grompi v1 order key share";
/// The key that seals a key share for one slot: subkey of the root MAC key,
/// then per conversation and epoch.
pub const KEY_SHARE_WRAP: &str = "grompi v1 key share wrap";
/// Label at the start of a wrapped key share's AEAD associated data.
pub const KEY_SHARE_AAD: &str = "grompi v1 key share aad";
/// Commitment to a route A secret (RN1) in a group-keyed conversation.
pub const GROUP_RN1_COMMITMENT: &str = "grompi v1 group rn1 commitment";
/// A key generation's secret, from RN1 and the previous generation's.
pub const GROUP_GENERATION: &str = "grompi v1 group generation";
/// What a key generation passes to the next one (only its members can
/// follow a Rekey).
pub const GROUP_INIT: &str = "grompi v1 group init";
/// The start of a sender slot's chain in a key generation.
pub const GROUP_SENDER_CHAIN: &str = "grompi v1 group sender chain";
/// One step of a sender chain (the old chain key is then deleted).
pub const GROUP_CHAIN_STEP: &str = "grompi v1 group chain step";
/// A key period's key, from the order servers' shares (route B).
pub const GROUP_PERIOD_KEY: &str = "grompi v1 group period key";
/// A message's body key, from its chain key and the period key.
pub const GROUP_MESSAGE_KEY: &str = "grompi v1 group message key";
/// Exported secrets of a key generation (history, files, calls).
pub const GROUP_EXPORTER: &str = "grompi v1 group exporter";
/// The label a group key generation's exporter derives its history key
/// under (`docs/PROTOCOL.md` section 4.6): `export(label)`.
pub const HISTORY_KEY: &str = "grompi v1 history key";
/// Key of one envelope's history capsule, from the history key and the
/// envelope's core hash.
pub const HISTORY_CAPSULE_KEY: &str = "grompi v1 history capsule key";
/// Associated data of a history capsule (prefix).
pub const HISTORY_CAPSULE_AAD: &str = "grompi v1 history capsule aad";
/// Hash under which the router stores a session token.
pub const ROUTER_SESSION_TOKEN: &str = "grompi v1 router session token";
/// Checksum of a servers' write-ahead log record (torn-write detection),
/// log format 2: bound to the database the log belongs to.
pub const WAL_RECORD: &str = "grompi v1 wal record format 2";
/// One step of a server database's commit chain: what its rollback anchor
/// records, so that an older copy of the database is recognised.
pub const COMMIT_CHAIN: &str = "grompi v1 commit chain";
/// Checksum of one slot of a server's rollback anchor file.
pub const ROLLBACK_ANCHOR: &str = "grompi v1 rollback anchor";
/// An order server's audit log entry for one attested index: the blinded
/// (conversation, epoch, index, head), which only someone who knows the
/// conversation id can recompute (docs/PROTOCOL.md, "Audit log").
pub const AUDIT_ENTRY: &str = "grompi v1 audit entry";
/// An order server's audit log entry for a refused equivocation attempt:
/// the blinded (conversation, index) it targeted.
pub const AUDIT_REFUSAL: &str = "grompi v1 audit refusal";
/// Commitment, in a refusal's audit log entry, to the evidence the order
/// server kept (the refused request, as encoded).
pub const AUDIT_EVIDENCE: &str = "grompi v1 audit evidence";

/// Every context string, for tests that check they are distinct and covered
/// by the test vectors.
pub const ALL: &[&str] = &[
    BODY_HASH,
    BLOCK_DIGEST,
    ENVELOPE_CORE,
    GROUP_ENVELOPE_CORE,
    ENVELOPE_HASH,
    KEY_COMMITMENT,
    SLOT_SET,
    GENESIS_HEAD,
    HEAD_CHAIN,
    ORDER_MAC_KEY,
    ATTESTATION_MAC,
    SUBMISSION_MAC,
    HEAD_PROOF_MAC,
    ACCOUNT_ID,
    SIGN_IN,
    SIGN_IN_NETWORK,
    NETWORK_BINDING,
    PREKEY_SIGNATURE,
    BODY_AAD,
    SAFETY_NUMBER,
    LOCAL_STORE_CIPHER,
    LOCAL_STORE_INDEX,
    LOCAL_STORE_RECORD,
    LOCAL_STORE_CHECK,
    ROUTER_SESSION_TOKEN,
    KEY_SHARE_ROOT,
    KEY_SHARE,
    KEY_SHARE_WRAP,
    KEY_SHARE_AAD,
    GROUP_RN1_COMMITMENT,
    GROUP_GENERATION,
    GROUP_INIT,
    GROUP_SENDER_CHAIN,
    GROUP_CHAIN_STEP,
    GROUP_PERIOD_KEY,
    GROUP_MESSAGE_KEY,
    GROUP_EXPORTER,
    HISTORY_KEY,
    HISTORY_CAPSULE_KEY,
    HISTORY_CAPSULE_AAD,
    WAL_RECORD,
    COMMIT_CHAIN,
    ROLLBACK_ANCHOR,
    AUDIT_ENTRY,
    AUDIT_REFUSAL,
    AUDIT_EVIDENCE,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn contexts_are_distinct_and_versioned() {
        let set: HashSet<_> = ALL.iter().collect();
        assert_eq!(set.len(), ALL.len(), "two context strings are equal");
        for ctx in ALL {
            assert!(ctx.starts_with("grompi v1 "), "{ctx} is not versioned");
        }
    }
}
