//! The wire contract of the split-trust messaging network.
//!
//! Everything that a client, the router and an order server must compute
//! identically lives here, so that there is exactly one definition of it:
//!
//! * the gRPC services and messages ([`pb`], generated from `proto/`);
//! * domain types parsed from those messages with `TryFrom`, which reject
//!   missing fields, wrong lengths, oversized lists and unknown enum values
//!   ([`wire`]), so code past the boundary never re-checks them;
//! * the canonical encodings, hashes, MACs and key derivation, each
//!   domain-separated by a versioned context string ([`context`]), with
//!   known-answer test vectors in `vectors/v1.json`;
//! * the network descriptor that pins the router and the order servers
//!   ([`descriptor`]);
//! * the one enum that names every way a peer can misbehave
//!   ([`Misbehaviour`]).
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`admission`] | the rules an envelope must meet to take an index, each written once |
//! | [`audit`] | the audit log entry of an attested index, which members recompute |
//! | [`context`] | every context string, versioned |
//! | [`encoding`] | the canonical byte encoding that is hashed and MACed |
//! | [`ids`] | conversation ids, epochs, indices, slots, sequence numbers |
//! | [`envelope`] | envelope header, blocks, body key commitment, envelope hash |
//! | [`slots`] | slot keys, roles, the padded slot set and its hash |
//! | [`chain`] | the head chain |
//! | [`keys`] | order server and slot key pairs, MAC key derivation |
//! | [`key_share`] | route B of the group key: order servers' key shares, key periods, share wrapping |
//! | [`mac`] | tags: attestation, submission, head proof |
//! | [`wire`] | conversions between generated and domain types; the session metadata key |
//! | [`vectors`] | the known-answer test vector format (`vectors/v1.json`) |
//! | [`descriptor`] | the network descriptor (TOML) |
//! | [`limits`] | hard protocol limits enforced at parse time |
//! | [`error`] | [`WireError`] and [`Misbehaviour`] |
//! | `fixed` (private) | the macro behind every 32-byte value type, one definition of parsing and printing |
#![forbid(unsafe_code)]

pub mod admission;
pub mod audit;
pub mod chain;
pub mod context;
pub mod descriptor;
pub mod encoding;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod key_share;
pub mod keys;
pub mod limits;
pub mod mac;
pub mod slots;
pub mod vectors;
pub mod wire;

mod fixed;

pub use chain::Head;
pub use descriptor::{NetworkDescriptor, OrderServerEntry, RouterEntry};
pub use envelope::{
    BlockDigest, BodyHash, CoreHash, Envelope, EnvelopeHash, EnvelopeHeader, EnvelopeKind,
    EnvelopeSummary, HeaderKey, KeyCommitment, KeyId, KeyStart, RecipientBlock, Rn1Commitment,
    ShareServers,
};
pub use error::{Misbehaviour, MisbehaviourKind, WireError};
pub use ids::{
    AccountId, Challenge, ConversationId, Epoch, Index, ProofNonce, Sequence, SlotIndex,
};
pub use keys::{MacKeys, OrderServerKey, OrderServerSecret, SlotSecret};
pub use mac::{AttestationStatement, HeadProofStatement, Tag};
pub use slots::{SlotEntry, SlotKey, SlotRole, SlotSet, SlotSetHash};
pub use wire::SESSION_METADATA;

/// Generated protobuf messages and gRPC services (package `grompi.v1`).
#[allow(
    missing_docs,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod pb {
    tonic::include_proto!("grompi.v1");

    /// Encoded file descriptor set of all services, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("grompi_descriptor");
}
