//! The errors of every module, one enum per concept. The witness's
//! refusals, which are protocol answers rather than errors, are
//! [`crate::witness::Refusal`].

use thiserror::Error;

/// A Merkle tree computation or proof check failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    /// A hash was not 32 bytes long.
    #[error("a hash is 32 bytes, got {got}")]
    HashLength {
        /// The length given.
        got: usize,
    },
    /// A tree size beyond [`crate::merkle::MAX_TREE_SIZE`].
    #[error("tree size {size} is beyond the 2^48 entries this log supports")]
    TreeTooLarge {
        /// The size asked for.
        size: u64,
    },
    /// An empty range of leaves was asked for.
    #[error("the leaf range [{lo}, {hi}) is empty")]
    EmptyRange {
        /// Start of the range.
        lo: u64,
        /// End of the range (exclusive).
        hi: u64,
    },
    /// An entry index at or past the tree size.
    #[error("index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("old size {old_size} is larger than new size {new_size}")]
    OldSizeAfterNewSize {
        /// The size of the tree the proof starts from.
        old_size: u64,
        /// The size of the tree the proof ends at, below `old_size`.
        new_size: u64,
    },
    /// A stored hash the computation needs is not in storage.
    #[error("stored hash {index} is missing")]
    MissingHash {
        /// Its stored-hash index.
        index: u64,
    },
    /// The storage behind a hash reader failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A proof has more hashes than its sizes call for.
    #[error("the proof has more hashes than the tree sizes call for")]
    ProofTooLong,
    /// A proof has fewer hashes than its sizes call for.
    #[error("the proof has fewer hashes than the tree sizes call for")]
    ProofTooShort,
    /// A proof's hashes do not lead to the expected root(s).
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
}

/// A caller-provided storage failed; the message is the storage's own.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct StorageError(pub String);

/// The append-only log refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LogError {
    /// An entry longer than an entry bundle's 16-bit length prefix allows.
    #[error("an entry is at most 65535 bytes (entry bundles prefix a u16 length), got {len}")]
    EntryTooLong {
        /// The entry's length.
        len: usize,
    },
    /// The log is full.
    #[error("the log holds at most 2^48 entries")]
    Full,
    /// A tree size beyond the log's current size.
    #[error("tree size {size} is beyond the log's {log_size} entries")]
    BeyondSize {
        /// The size asked for.
        size: u64,
        /// How many entries the log holds.
        log_size: u64,
    },
    /// The checkpoint cannot be made (an origin that is not one line).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Storage holds a different number of entries or hashes than the log
    /// expects: it was changed behind the log's back.
    #[error("storage is inconsistent: {0}")]
    Inconsistent(String),
    /// A tile or bundle that does not exist at the log's size.
    #[error(transparent)]
    Tile(#[from] TileError),
    /// The Merkle computation failed.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// The storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// A tile path, tile or entry bundle is malformed or not in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TileError {
    /// A path that is not `tile/<L>/<N>[.p/<W>]` or
    /// `tile/entries/<N>[.p/<W>]`.
    #[error("malformed tile path {path:?}: {reason}")]
    MalformedPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A level above 63.
    #[error("tile level {level} is above 63")]
    Level {
        /// The level the path names.
        level: u8,
    },
    /// A width of 0 or above 256.
    #[error("tile width {width} is not within 1..=256")]
    Width {
        /// The width the path names.
        width: u16,
    },
    /// The tile reaches beyond the tree.
    #[error("tile {path} reaches beyond the tree of size {size}")]
    BeyondTree {
        /// The tile's path.
        path: String,
        /// The tree size.
        size: u64,
    },
    /// Tile data whose length is not the tile's width times 32.
    #[error("tile data of {got} bytes, expected {expected}")]
    DataLength {
        /// Bytes given.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// An entry bundle that does not parse.
    #[error("malformed entry bundle: {0}")]
    MalformedBundle(&'static str),
    /// An entry longer than 65535 bytes cannot be bundled.
    #[error("an entry of {len} bytes does not fit a u16 length prefix")]
    EntryTooLong {
        /// The entry's length.
        len: usize,
    },
}

/// A signed note, key or signature is malformed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    /// The note breaks the signed-note format.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// The note is larger than [`crate::note::MAX_NOTE_SIZE`].
    #[error("the note is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The note has more than [`crate::note::MAX_SIGNATURES`] signature lines.
    #[error("the note has more than {max} signatures")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
    /// A key name that is empty or contains a space or a `+`.
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    KeyName(String),
    /// A verifier key string that does not parse.
    #[error("malformed verifier key: {0}")]
    VerifierKey(&'static str),
    /// A signer key string that does not parse.
    #[error("malformed signer key: {0}")]
    SignerKey(&'static str),
    /// A key string whose key ID is not the one its name and key give.
    #[error("key ID {got:08x} does not match the {expected:08x} the name and key give")]
    KeyIdMismatch {
        /// The ID in the string.
        got: u32,
        /// The ID computed.
        expected: u32,
    },
    /// A key of a signature type this crate does not handle.
    #[error("unsupported signature type 0x{0:02x}")]
    UnsupportedAlgorithm(u8),
    /// A signature from a known key failed to verify: the whole note is
    /// rejected.
    #[error("invalid signature for key {name}+{key_id:08x}")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The 4-byte key ID the signature line names.
        key_id: u32,
    },
    /// No signature from a known key.
    #[error("the note has no signature from a known key")]
    NoKnownSignature,
}

/// A checkpoint's text is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    /// The text breaks the checkpoint format.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The signed note around it is malformed or does not verify.
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// A cosignature is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CosignatureError {
    /// A timestamp of 0 or above 2^63 - 1.
    #[error("cosignature timestamp {0} is not within 1..2^63")]
    Timestamp(u64),
    /// A signature that is not 8 + 64 bytes.
    #[error("a cosignature is 72 bytes (timestamp and Ed25519 signature), got {0}")]
    Length(usize),
    /// The key or note around it is malformed.
    #[error(transparent)]
    Note(#[from] NoteError),
}
