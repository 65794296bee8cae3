//! The client's trust core: the only place where trust is decided.
//!
//! A member accepts an index of a conversation only when it extends the
//! member's own head chain and enough pinned order servers attested it with
//! tags only this member can verify; it then opens the envelope (pairwise
//! Olm block, key-committing body) and applies membership changes with the
//! same deterministic rules every member runs. Everything a peer does wrong
//! becomes a typed [`Alert`].
//!
//! The core is sans-IO: no sockets, clocks or global randomness. Callers
//! pass deliveries in, take envelopes, events and alerts out, and supply an
//! RNG where fresh keys or nonces are needed. (The Olm ratchet inside
//! vodozemac draws its own ephemeral keys from the operating system, so Olm
//! ciphertexts are not reproducible from a seed; outcomes are.)
//!
//! This crate depends on `grompi-proto` and cryptography crates only, so a
//! reviewer can audit what trust rests on from its `Cargo.toml`. The
//! program around it (network connections, the encrypted local store, the
//! `grompi` command line) is the `grompi-client` crate, which drives this
//! core and decides nothing itself.
//!
//! # Conventions this crate defines
//!
//! * Block plaintext: `version (1) || body key || core hash` ([`body`]).
//! * Body associated data: label, conversation, epoch, kind, sender slot,
//!   sequence ([`body::BodyContext`]); nonce zero, one key per body.
//! * Block frame around the Olm message: version, sender account, message
//!   type, the sender's identity keys on pre-key messages ([`pairwise`]).
//! * Decrypted bodies per kind, including the Setup's slot set and member
//!   list and an Update's change and next member list ([`content`]).
//! * An Update's blocks for members it adds are addressed by their slot in
//!   the next epoch, which must not be a slot a current member holds.
//! * A delivery without a header carries late tags ([`delivery::TagUpdate`]).
//!
//! # Layout
//!
//! | file | concept |
//! |---|---|
//! | [`member`] | one account's conversations: routing deliveries, collecting alerts and events |
//! | [`conversation`] | one conversation's state machine: its types, constructors, accessors and queues |
//! | `conversation/receive.rs` | deliveries and late tags: checking, bounded buffering, tag verification |
//! | `conversation/accept.rs` | acceptance of the next index: winners, losers, the Setup's tags, applying, stalls |
//! | `conversation/join.rs` | joining at the Update that adds this member |
//! | `conversation/open.rs` | decrypting envelopes; preparing Setup candidates and slot keys |
//! | `conversation/send.rs` | composing envelopes, recipients, receipts |
//! | `conversation/head_proofs.rs` | asking for head proofs and checking the answers |
//! | `conversation/persist.rs` | a conversation's state as bytes for the local store |
//! | [`delivery`] | deliveries and tag updates parsed from the wire and checked for self-consistency |
//! | [`transcript`] | the accepted chain and each index's attestation status |
//! | [`membership`] | deterministic membership and authorization rules |
//! | [`content`] | what decrypted bodies say (Setup, Update, Message, Receipt) |
//! | [`body`] | key-committing body encryption and the block plaintext |
//! | [`group_key`] | the group key schedule: generations, sender chains, period keys from order servers' shares, message keys, exporters |
//! | `group_key_tests.rs` (tests) | the schedule's unit tests, vectors and a property test over random schedules |
//! | [`history`] | shared history: history keys and their chain, history blocks, the verifier that reads stored envelopes from the genesis against the attested head |
//! | `history_tests.rs` (tests) | the history's vectors, tampering and a property test |
//! | [`pairwise`] | Olm sessions with peer accounts (vodozemac), prekey bundles |
//! | [`keyring`] | single-use order keys and their cached MAC keys |
//! | [`compose`] | building an envelope and its submission tags |
//! | [`receipt`] | checking receipts against the transcript |
//! | [`head_proof`] | checking head proofs against the transcript |
//! | [`codec`] | strict reading of the canonical encoding |
//! | [`alert`] | the typed alert |
//! | [`errors`] | errors of local operations |
//! | `testkit.rs` (feature `testkit`, tests only) | an in-memory network: real order server cores, a router with the threat model's power, members |
//!
//! The scenario and property tests (`tests/scenarios.rs`) and the attacks
//! with the threat model's full power, each next to an honest control
//! (`tests/attacks.rs`), drive the core through [`testkit`]'s world.
//!
#![forbid(unsafe_code)]

pub mod alert;
pub mod body;
pub mod codec;
pub mod compose;
pub mod content;
pub mod conversation;
pub mod delivery;
pub mod errors;
pub mod group_key;
pub mod head_proof;
pub mod history;
pub mod keyring;
pub mod member;
pub mod membership;
pub mod pairwise;
pub mod receipt;
pub mod transcript;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use alert::Alert;
pub use conversation::{Conversation, ConversationConfig, Event, Phase, Secrets};
pub use delivery::{Delivery, Incoming, TagUpdate};
pub use errors::ClientError;
pub use member::Member;
