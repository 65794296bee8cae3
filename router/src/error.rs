//! Why the router refused a request. Each variant names what went wrong,
//! with its data; [`RouterError::code`] gives its gRPC status code and
//! [`RouterError::status`] the status a caller sees, both here and nowhere
//! else. An envelope that breaks an admission rule
//! ([`grompi_proto::admission`]) is [`RouterError::Inadmissible`], carrying
//! the rule's typed reason.

use grompi_proto::pb::RefusalReason;
use grompi_proto::{AccountId, ConversationId, Epoch, Misbehaviour, SlotIndex, WireError};
use tonic::Code;

/// One order server's refusal of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRefusal {
    /// The server's position in the network descriptor.
    pub server: usize,
    /// Its reason code.
    pub reason: RefusalReason,
    /// The server's explanation, quoted to the submitter.
    pub message: String,
}

/// Whose bytes waiting for the order servers reached a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingScope {
    /// The submitting account's envelopes below the quorum.
    Account,
    /// Everything held for the envelope's conversation.
    Conversation,
    /// Everything held for all conversations.
    Router,
}

impl PendingScope {
    /// The configuration key of the cap.
    pub fn limit_key(self) -> &'static str {
        match self {
            Self::Account => "max_pending_bytes_per_account",
            Self::Conversation => "max_pending_bytes_per_conversation",
            Self::Router => "max_pending_bytes",
        }
    }
}

impl std::fmt::Display for PendingScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Account => "of this account's envelopes",
            Self::Conversation => "of this conversation's envelopes",
            Self::Router => "of envelopes over all conversations",
        })
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    // ---- The request does not parse or breaks a protocol rule ----------
    /// A field does not parse.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// A Submit without an envelope.
    #[error("envelope is missing")]
    EnvelopeMissing,
    /// An envelope over the size limit.
    #[error("envelope is {size} bytes, more than the limit of {max}")]
    EnvelopeTooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An envelope with more blocks than a group may have members.
    #[error("envelope has {blocks} blocks, more than the group size limit of {max}")]
    TooManyBlocks {
        /// Recipient blocks in the envelope.
        blocks: usize,
        /// The group size limit.
        max: usize,
    },
    /// Not one submission tag per order server.
    #[error("submission_tags has {got} tags; one per order server ({servers}) is required")]
    SubmissionTagCount {
        /// Tags given.
        got: usize,
        /// Order servers in the network.
        servers: usize,
    },
    /// An empty member list.
    #[error("members is empty")]
    NoMembers,
    /// A member list without an Admin.
    #[error("no member has the Admin role, so the membership could never change")]
    NoAdmin,
    /// A member list over the group size limit.
    #[error("{members} members, more than the group size limit of {max}")]
    TooManyMembers {
        /// Members listed.
        members: usize,
        /// The group size limit.
        max: usize,
    },
    /// A member listed twice.
    #[error("member {0} is listed twice")]
    MemberTwice(AccountId),
    /// A member role this version does not know.
    #[error("members.role has unknown value {0}")]
    UnknownRole(i32),
    /// No configured group size fits the members (and leaves room for the
    /// joiners outside the slots current members hold).
    #[error(
        "{members} members ({joining} joining) do not fit the largest configured group size {largest}"
    )]
    GroupTooLarge {
        /// Members of the next slot set.
        members: usize,
        /// How many of them join.
        joining: usize,
        /// The largest configured tier.
        largest: usize,
    },
    /// A key or signature of the wrong length.
    #[error("{field} must be {expected} bytes, got {got}")]
    WrongLength {
        /// The request field, as the proto names it (e.g. `identity.signing_key`).
        field: String,
        /// Its required length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// More keys in one upload than allowed.
    #[error("{field} has {got} keys, more than the limit of {max}")]
    TooManyKeys {
        /// The key list: `one_time_prekeys` or `order_keys`.
        field: &'static str,
        /// Keys given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A key listed twice in one upload.
    #[error("{field} lists a key twice")]
    KeyTwice {
        /// The key list: `one_time_prekeys` or `order_keys`.
        field: &'static str,
    },
    /// An order key of low order (its MACs would be computable by anyone).
    #[error("order_keys contains a low-order X25519 key")]
    LowOrderKey,
    /// An identity signing key that is not an Ed25519 key.
    #[error("identity.signing_key is not a valid Ed25519 key")]
    BadSigningKey,
    /// A signed prekey whose signature does not verify.
    #[error("{field}.signature does not verify under the identity key")]
    BadPrekeySignature {
        /// The prekey field.
        field: &'static str,
    },
    /// A registration without identity keys.
    #[error("identity is missing")]
    IdentityMissing,
    /// A registration without a fallback prekey.
    #[error("fallback_prekey is missing")]
    FallbackPrekeyMissing,
    /// An envelope that breaks an admission rule; the rule's reason.
    #[error("{0}{hint}", hint = replay_hint(.0))]
    Inadmissible(Misbehaviour),

    // ---- Authentication ------------------------------------------------
    /// A challenge signature that does not verify.
    #[error("challenge signature does not verify")]
    BadChallengeSignature,
    /// A challenge never issued, or already used.
    #[error("challenge unknown or already used; get a fresh one with GetChallenge")]
    ChallengeUnknown,
    /// A challenge past its time.
    #[error("challenge expired; get a fresh one with GetChallenge")]
    ChallengeExpired,
    /// A sign-in for an account that does not exist.
    #[error("no such account")]
    NoSuchAccount,
    /// No session token, or not 32 bytes.
    #[error(
        "missing or malformed session token (metadata {}, 32 bytes hex)",
        grompi_proto::SESSION_METADATA
    )]
    MalformedSessionToken,
    /// A session that ended.
    #[error("session expired; sign in again")]
    SessionExpired,
    /// A session token the router does not know.
    #[error("unknown session token; sign in again")]
    UnknownSession,

    // ---- The caller may not do this ------------------------------------
    /// A conversation created by someone not in its member list.
    #[error("the caller must be one of the members")]
    CreatorNotAMember,
    /// A call about a conversation the caller never held a slot in.
    #[error("the caller is not a member of conversation {0}")]
    NotAMember(ConversationId),
    /// PrepareUpdate from someone without a slot in the current epoch.
    #[error("only a current member may prepare an update")]
    NotACurrentMember,
    /// ProveHeads from someone without a slot in the current epoch.
    #[error("the caller holds no slot in the conversation's current epoch {0}")]
    NoCurrentSlot(Epoch),
    /// An envelope from a slot the caller does not hold.
    #[error("the caller does not hold sender slot {slot} in epoch {epoch}")]
    NotTheSlotHolder {
        /// The sender slot.
        slot: SlotIndex,
        /// The conversation's current epoch, which the envelope names.
        epoch: Epoch,
    },

    // ---- Not found ------------------------------------------------------
    /// An account the router does not know.
    #[error("account {0}")]
    UnknownAccount(AccountId),
    /// A conversation the router does not know.
    #[error("conversation {0}")]
    UnknownConversation(ConversationId),
    /// A listed member (CreateConversation, PrepareUpdate) that has no account.
    #[error("member {0} has no account")]
    MemberWithoutAccount(AccountId),

    // ---- Already exists ------------------------------------------------
    /// A conversation id used before.
    #[error("conversation {0} exists; conversation ids are never reused")]
    ConversationExists(ConversationId),
    /// An account with these identity keys.
    #[error("an account with these identity keys exists; use SignIn")]
    AccountExists,
    /// An order key uploaded before.
    #[error("an order key in the upload was already uploaded")]
    OrderKeyReused,

    // ---- Not possible now ----------------------------------------------
    /// A member has no unused order key for a new slot.
    #[error("member {0} has no order keys left; it must upload more")]
    NoOrderKeys(AccountId),
    /// An Update whose next slot set was never prepared.
    #[error("no prepared update has this slot_set_hash; call PrepareUpdate first")]
    UpdateNotPrepared,
    /// Every order server refused the envelope and none attested it.
    #[error("every order server refused the envelope: {}", refusals(.0))]
    RefusedByEveryServer(Vec<ServerRefusal>),
    /// An envelope admitted after one every server refused, that no
    /// longer passes the router's checks at its new index.
    #[error("an earlier envelope was refused and this one no longer fits: {}", .0.status().message())]
    NoLongerFits(Box<RouterError>),

    // ---- Limits ---------------------------------------------------------
    /// The conversation's index counter is exhausted.
    #[error("conversation index space exhausted")]
    IndexSpaceExhausted,
    /// The conversation's epoch counter is exhausted.
    #[error("epoch space exhausted")]
    EpochSpaceExhausted,
    /// Too many of the account's envelopes wait for attestation.
    #[error("{waiting} envelopes of this account are waiting for attestation; the limit is {max}")]
    TooManyPending {
        /// Envelopes waiting.
        waiting: usize,
        /// The limit.
        max: usize,
    },
    /// Too many challenges outstanding.
    #[error("too many outstanding challenges; retry shortly")]
    TooManyChallenges,
    /// An account would hold too many unused keys.
    #[error("an account holds at most {max} unused keys of each kind")]
    TooManyUnusedKeys {
        /// The limit per kind.
        max: usize,
    },
    /// The caller's request rate is over the limit.
    #[error("request rate above {per_second} per second; slow down and retry")]
    RateLimited {
        /// The limit.
        per_second: u64,
    },
    /// The per-address limiter tracks as many addresses as it may.
    #[error(
        "per-address rate limit: {max} client addresses are being rate limited, \
         the most tracked at once (limits.max_peers); retry in a few seconds"
    )]
    TooManyPeers {
        /// `limits.max_peers`.
        max: usize,
    },
    /// One address's unauthenticated request rate is over the limit.
    #[error(
        "per-address rate limit: more than {per_second} unauthenticated requests per second \
         (burst {burst}) from {address}; slow down and retry"
    )]
    PeerRateLimited {
        /// The limit.
        per_second: u32,
        /// The burst allowed.
        burst: u32,
        /// The address as limited: IPv4, or an IPv6 /64 prefix
        /// ([`grompi_ops::conn_limit::address_key`]).
        address: std::net::IpAddr,
    },

    // ---- Caps on what the router keeps (limits.*, OPERATING.md "Caps") ---
    /// The router holds as many accounts as it may.
    #[error("the router holds its maximum of {max} accounts (limits.max_accounts)")]
    TooManyAccounts {
        /// `limits.max_accounts`.
        max: usize,
    },
    /// The keys would take the router over its total of unused keys.
    #[error(
        "the router holds {held} unused keys; {adding} more would exceed its maximum of {max} \
         (limits.max_unused_keys)"
    )]
    KeyStoreFull {
        /// Unused keys held now, over all accounts.
        held: usize,
        /// Keys in the request.
        adding: usize,
        /// `limits.max_unused_keys`.
        max: usize,
    },
    /// The router holds as many live sessions as it may.
    #[error(
        "the router holds its maximum of {max} live sessions (limits.max_sessions); retry later"
    )]
    TooManySessions {
        /// `limits.max_sessions`.
        max: usize,
    },
    /// The router holds as many conversations as it may.
    #[error("the router holds its maximum of {max} conversations (limits.max_conversations)")]
    TooManyConversations {
        /// `limits.max_conversations`.
        max: usize,
    },
    /// The caller created as many conversations as one account may.
    #[error(
        "this account created {created} conversations, the most one account may \
         (limits.max_conversations_per_account)"
    )]
    TooManyConversationsCreated {
        /// Conversations it created.
        created: usize,
    },
    /// The envelope would take the bytes waiting for order servers over a
    /// cap.
    #[error(
        "{held} bytes {scope} wait for the order servers; this envelope's {size} more would \
         exceed the limit of {max} (limits.{key}); retry once they are attested",
        key = scope.limit_key()
    )]
    PendingBytesFull {
        /// Whose bytes.
        scope: PendingScope,
        /// Bytes held now.
        held: usize,
        /// The envelope's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The caller has as many live subscriptions as one account may.
    #[error(
        "this account has {open} live subscriptions, the most one account may \
         (limits.max_subscribers_per_account); close one first"
    )]
    TooManySubscriptions {
        /// Its live subscriptions.
        open: usize,
    },
    /// The router serves as many live subscriptions as it may.
    #[error(
        "the router serves its maximum of {max} live subscriptions (limits.max_subscribers); \
         use Fetch, or retry later"
    )]
    SubscribersFull {
        /// `limits.max_subscribers`.
        max: usize,
    },
    /// The caller's fetches being built hold as many bytes as one account's
    /// may.
    #[error(
        "this account's fetches being built may hold up to {need} bytes more; with the {held} \
         held now that exceeds the limit of {max} (limits.max_fetch_bytes_per_account); wait \
         for one to finish"
    )]
    FetchesInFlight {
        /// Bytes reserved by the account's fetches in flight.
        held: usize,
        /// Bytes this fetch reserves.
        need: usize,
        /// The limit.
        max: usize,
    },
    /// The fetches being built hold as many bytes as the router allows.
    #[error(
        "the router is building its maximum of {max} bytes of fetch responses \
         (limits.max_fetch_bytes_in_flight); retry shortly"
    )]
    FetchBytesFull {
        /// The limit.
        max: usize,
    },
    /// The data directory's file system has less free space than the
    /// reserve.
    #[error(
        "the router's disk is nearly full ({free} bytes free, less than the reserve of \
         {reserve}, limits.disk_reserve_bytes): it accepts no new envelopes, conversations, \
         accounts or keys until space is freed; fetching, subscribing and signing in still work"
    )]
    DiskLow {
        /// Free bytes as last measured.
        free: u64,
        /// `limits.disk_reserve_bytes`.
        reserve: u64,
    },

    // ---- Unavailable ----------------------------------------------------
    /// The router is stopping; the request was not handled.
    #[error("the router is stopping")]
    Stopping,

    // ---- The router failed ----------------------------------------------
    /// A conversation without an installed epoch (never stored so).
    #[error("conversation without an epoch")]
    NoEpoch,
    /// No slot left for a joiner (the tier was chosen to leave one).
    #[error("no free slot left for a joining member")]
    NoFreeSlot,
    /// The router's noise names a member's slot.
    #[error("noise from a member slot")]
    NoiseFromMemberSlot,
    /// The prepared epoch an Update installs is gone.
    #[error("prepared epoch vanished")]
    PreparedEpochVanished,
    /// An envelope to re-admit after a dropped one was no longer held
    /// whole (only delivered envelopes are summarised, and none follows an
    /// index no server attested).
    #[error("an envelope to re-admit was no longer held whole")]
    EnvelopeNotHeld,
    /// A thread of the router could not start.
    #[error("cannot start the {thread}: {reason}")]
    ThreadStart {
        /// Which thread.
        thread: &'static str,
        /// Why.
        reason: String,
    },
    /// The committer thread panicked.
    #[error("the committer thread panicked")]
    CommitterPanicked,
    /// The committer stopped taking batches without reporting a storage error.
    #[error("the committer stopped")]
    CommitterStopped,
    /// A commit failed; the request's outcome was not stored.
    #[error("storage failed")]
    StorageFailed,
    /// The store failed, and why.
    #[error("{0}")]
    Storage(String),
}

/// A replay is named as such to the sender.
fn replay_hint(m: &Misbehaviour) -> &'static str {
    match m {
        Misbehaviour::SequenceNotIncreasing { .. } => " (a replay?)",
        _ => "",
    }
}

fn refusals(list: &[ServerRefusal]) -> String {
    list.iter()
        .map(|r| {
            format!(
                "server {}: {} ({})",
                r.server,
                r.reason.as_str_name(),
                r.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The status code of an admission rule's reason. Every reason is named,
/// so a new one needs a decision here.
fn inadmissible_code(m: &Misbehaviour) -> Code {
    use Misbehaviour as M;
    match m {
        M::WrongEpoch { .. } | M::SequenceNotIncreasing { .. } | M::UnexpectedKind(_) => {
            Code::FailedPrecondition
        }
        M::Malformed(_)
        | M::UnknownSlot { .. }
        | M::SlotSetMismatch
        | M::UnauthorizedUpdate(_)
        | M::LowOrderKey => Code::InvalidArgument,
        M::NotAuthorized { .. } | M::BadSubmissionTag { .. } => Code::PermissionDenied,
        M::LimitExceeded(_) => Code::ResourceExhausted,
        M::UnknownConversation => Code::NotFound,
        M::ConversationExists => Code::AlreadyExists,
        // What only an order server or a member can detect never comes
        // out of the router's admission checks.
        M::IndexMismatch { .. }
        | M::HeadMismatch { .. }
        | M::Equivocation { .. }
        | M::BadAttestation { .. }
        | M::ConflictingHeads { .. }
        | M::RewrittenIndex { .. }
        | M::WrongContext
        | M::Gap { .. }
        | M::BlockDigestMismatch
        | M::KeyCommitmentMismatch
        | M::Undecryptable(_)
        | M::UnauthenticatedSender { .. }
        | M::ForeignSlotKey
        | M::BadHeadProof { .. }
        | M::HeadProofFork { .. }
        | M::Withheld { .. }
        | M::ReceiptMismatch { .. }
        | M::UnattestedEnvelope { .. }
        | M::RolledBack { .. }
        | M::BadKeyShare { .. }
        | M::Rn1Mismatch
        | M::MissingKeyShare { .. }
        | M::WrongKeyId(_)
        | M::HistoryMismatch(_)
        | M::BadHistoryBlock(_) => Code::Internal,
    }
}

/// The words a status message starts with, per code.
fn category(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid request",
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "not allowed",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::FailedPrecondition => "not possible now",
        Code::ResourceExhausted => "limit exceeded",
        Code::Unavailable => "unavailable",
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss => "internal error",
    }
}

impl RouterError {
    /// The gRPC status code.
    pub fn code(&self) -> Code {
        use RouterError as E;
        match self {
            E::Wire(_)
            | E::EnvelopeMissing
            | E::EnvelopeTooLarge { .. }
            | E::TooManyBlocks { .. }
            | E::SubmissionTagCount { .. }
            | E::NoMembers
            | E::NoAdmin
            | E::TooManyMembers { .. }
            | E::MemberTwice(_)
            | E::UnknownRole(_)
            | E::GroupTooLarge { .. }
            | E::WrongLength { .. }
            | E::TooManyKeys { .. }
            | E::KeyTwice { .. }
            | E::LowOrderKey
            | E::BadSigningKey
            | E::BadPrekeySignature { .. }
            | E::IdentityMissing
            | E::FallbackPrekeyMissing => Code::InvalidArgument,
            E::Inadmissible(m) => inadmissible_code(m),
            E::BadChallengeSignature
            | E::ChallengeUnknown
            | E::ChallengeExpired
            | E::NoSuchAccount
            | E::MalformedSessionToken
            | E::SessionExpired
            | E::UnknownSession => Code::Unauthenticated,
            E::CreatorNotAMember
            | E::NotAMember(_)
            | E::NotACurrentMember
            | E::NoCurrentSlot(_)
            | E::NotTheSlotHolder { .. } => Code::PermissionDenied,
            E::UnknownAccount(_) | E::UnknownConversation(_) | E::MemberWithoutAccount(_) => {
                Code::NotFound
            }
            E::ConversationExists(_) | E::AccountExists | E::OrderKeyReused => Code::AlreadyExists,
            E::NoOrderKeys(_)
            | E::UpdateNotPrepared
            | E::RefusedByEveryServer(_)
            | E::NoLongerFits(_) => Code::FailedPrecondition,
            E::IndexSpaceExhausted
            | E::EpochSpaceExhausted
            | E::TooManyPending { .. }
            | E::TooManyChallenges
            | E::TooManyUnusedKeys { .. }
            | E::RateLimited { .. }
            | E::TooManyPeers { .. }
            | E::PeerRateLimited { .. }
            | E::TooManyAccounts { .. }
            | E::KeyStoreFull { .. }
            | E::TooManySessions { .. }
            | E::TooManyConversations { .. }
            | E::TooManyConversationsCreated { .. }
            | E::PendingBytesFull { .. }
            | E::TooManySubscriptions { .. }
            | E::SubscribersFull { .. }
            | E::FetchesInFlight { .. }
            | E::FetchBytesFull { .. }
            | E::DiskLow { .. } => Code::ResourceExhausted,
            E::Stopping => Code::Unavailable,
            E::NoEpoch
            | E::NoFreeSlot
            | E::NoiseFromMemberSlot
            | E::PreparedEpochVanished
            | E::EnvelopeNotHeld
            | E::ThreadStart { .. }
            | E::CommitterPanicked
            | E::CommitterStopped
            | E::StorageFailed
            | E::Storage(_) => Code::Internal,
        }
    }

    /// The configuration key of the cap that refused the request, if a cap
    /// on what the router keeps did (the `cap` label of
    /// `router_cap_refusals_total`).
    pub fn cap(&self) -> Option<&'static str> {
        use RouterError as E;
        Some(match self {
            E::TooManyAccounts { .. } => "max_accounts",
            E::KeyStoreFull { .. } => "max_unused_keys",
            E::TooManyUnusedKeys { .. } => "max_unused_keys_per_account",
            E::TooManySessions { .. } => "max_sessions",
            E::TooManyConversations { .. } => "max_conversations",
            E::TooManyConversationsCreated { .. } => "max_conversations_per_account",
            E::PendingBytesFull { scope, .. } => scope.limit_key(),
            E::TooManyPending { .. } => "max_pending_per_account",
            E::TooManySubscriptions { .. } => "max_subscribers_per_account",
            E::SubscribersFull { .. } => "max_subscribers",
            E::FetchesInFlight { .. } => "max_fetch_bytes_per_account",
            E::FetchBytesFull { .. } => "max_fetch_bytes_in_flight",
            E::DiskLow { .. } => "disk_reserve_bytes",
            _ => return None,
        })
    }

    /// Counts a refusal by a cap in `router_cap_refusals_total{cap}`.
    pub fn count_cap(&self) {
        if let Some(cap) = self.cap() {
            metrics::counter!("router_cap_refusals_total", "cap" => cap).increment(1);
        }
    }

    /// The status a caller sees: the code, and a message that starts with
    /// what kind of refusal it is and then says what was wrong.
    pub fn status(&self) -> tonic::Status {
        let code = self.code();
        tonic::Status::new(code, format!("{}: {self}", category(code)))
    }
}

impl From<&RouterError> for tonic::Status {
    fn from(e: &RouterError) -> Self {
        e.status()
    }
}

impl From<RouterError> for tonic::Status {
    fn from(e: RouterError) -> Self {
        e.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::{Sequence, admission};

    #[test]
    fn statuses_keep_their_category_words() {
        let s = RouterError::SessionExpired.status();
        assert_eq!(s.code(), Code::Unauthenticated);
        assert_eq!(
            s.message(),
            "not authenticated: session expired; sign in again"
        );
        let s = RouterError::Inadmissible(Misbehaviour::SequenceNotIncreasing {
            slot: SlotIndex(1),
            last: Sequence(4),
            got: Sequence(3),
        })
        .status();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().starts_with("not possible now: sequence 3"));
        assert!(s.message().ends_with("(a replay?)"), "{}", s.message());
        let s = RouterError::Inadmissible(Misbehaviour::UnexpectedKind(
            admission::SETUP_ONLY_AT_INDEX_0,
        ))
        .status();
        assert_eq!(s.code(), Code::FailedPrecondition);
        let s =
            RouterError::Inadmissible(Misbehaviour::NotAuthorized { slot: SlotIndex(2) }).status();
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(s.message().contains("slot 2 may not send updates"));
    }

    #[test]
    fn a_refusal_by_every_server_names_each_reason() {
        let e = RouterError::RefusedByEveryServer(vec![
            ServerRefusal {
                server: 0,
                reason: RefusalReason::BadSubmissionTag,
                message: "no".into(),
            },
            ServerRefusal {
                server: 1,
                reason: RefusalReason::BadSubmissionTag,
                message: "no".into(),
            },
        ]);
        let s = e.status();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.message(),
            "not possible now: every order server refused the envelope: \
             server 0: REFUSAL_REASON_BAD_SUBMISSION_TAG (no); \
             server 1: REFUSAL_REASON_BAD_SUBMISSION_TAG (no)"
        );
        let later = RouterError::NoLongerFits(Box::new(e));
        assert!(
            later
                .status()
                .message()
                .contains("no longer fits: not possible now: every order server")
        );
    }
}
