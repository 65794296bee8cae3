//! Parsing of client requests: everything that needs no state, signatures
//! included, so it runs outside the core (in the gRPC service, or in the
//! caller of an in-process core).
//!
//! Registration and sign-in are bound to the network: the gRPC service
//! parses with its own network's binding ([`parse_register_for`],
//! [`parse_sign_in_for`]); only while the router's `accept_unbound_sign_in`
//! is on (off by default; a deliberate migration for clients and tools from
//! before the binding) does it also accept the older unbound signature
//! (`grompi v1 sign-in`), which current clients never make, so a signature
//! they made for another network is refused either way. [`parse_register`]
//! and [`parse_sign_in`] take a binding too and accept the bound signature
//! only; in-process simulations and tests that drive the core directly use
//! them with the binding their callers sign for. Submissions and member
//! lists are checked against the configured [`Limits`].

use crate::error::RouterError;
use crate::keys::{IdentityKeys, SignedPrekey};
use crate::limits::Limits;
use ed25519_dalek::{Signature, VerifyingKey};
use grompi_proto::ids::{NetworkBinding, prekey_signing_message};
use grompi_proto::limits::{MAX_KEYS_PER_UPLOAD, SIGNATURE_BYTES};
use grompi_proto::{AccountId, Challenge, Envelope, SlotKey, SlotRole, Tag, pb};
use std::collections::{BTreeSet, HashSet};

/// A parsed, size-checked submission.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The envelope, parsed and size-checked; the core checks it against the conversation.
    pub envelope: Envelope,
    /// One tag per order server.
    pub tags: Vec<Tag>,
}

/// Parses a Submit request: size, envelope, one 32-byte tag per server.
pub fn parse_submit(
    req: pb::SubmitRequest,
    servers: usize,
    limits: &Limits,
) -> Result<Submission, RouterError> {
    let env = req.envelope.ok_or(RouterError::EnvelopeMissing)?;
    let size = prost::Message::encoded_len(&env);
    if size > limits.max_envelope_bytes {
        return Err(RouterError::EnvelopeTooLarge {
            size,
            max: limits.max_envelope_bytes,
        });
    }
    if env.blocks.len() > limits.max_group_size {
        return Err(RouterError::TooManyBlocks {
            blocks: env.blocks.len(),
            max: limits.max_group_size,
        });
    }
    let envelope = Envelope::try_from(env)?;
    if req.submission_tags.len() != servers {
        return Err(RouterError::SubmissionTagCount {
            got: req.submission_tags.len(),
            servers,
        });
    }
    let tags = req
        .submission_tags
        .iter()
        .map(|t| Tag::parse("submission_tags", t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Submission { envelope, tags })
}

/// Parses a member list: non-empty, within the group size, no account
/// twice, at least one Admin (without one the membership could never
/// change; order servers refuse such a slot set too).
pub fn parse_members(
    list: &[pb::MemberSpec],
    limits: &Limits,
) -> Result<Vec<(AccountId, SlotRole)>, RouterError> {
    if list.is_empty() {
        return Err(RouterError::NoMembers);
    }
    if !list
        .iter()
        .any(|m| SlotRole::from_code(m.role) == Some(SlotRole::Admin))
    {
        return Err(RouterError::NoAdmin);
    }
    if list.len() > limits.max_group_size {
        return Err(RouterError::TooManyMembers {
            members: list.len(),
            max: limits.max_group_size,
        });
    }
    let mut seen = BTreeSet::new();
    list.iter()
        .map(|m| {
            let a = AccountId::parse("members.account", &m.account)?;
            if !seen.insert(a) {
                return Err(RouterError::MemberTwice(a));
            }
            let role = SlotRole::from_code(m.role).ok_or(RouterError::UnknownRole(m.role))?;
            Ok((a, role))
        })
        .collect()
}

/// A registration whose signatures have been checked.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Identity keys.
    pub identity: IdentityKeys,
    /// The challenge the client answered.
    pub challenge: Challenge,
    /// Fallback prekey, its signature checked against the identity key.
    pub fallback: SignedPrekey,
    /// One-time prekeys.
    pub one_time: Vec<[u8; 32]>,
    /// X25519 order keys, none of low order; each becomes the key of one slot when taken.
    pub order_keys: Vec<SlotKey>,
}

/// A sign-in request, parsed; the signature is checked against the
/// account's key in [`Directory::sign_in`](crate::directory::Directory::sign_in).
#[derive(Debug, Clone)]
pub struct SignIn {
    /// The account signing in, whose identity key must verify the signature.
    pub account: AccountId,
    /// The challenge answered.
    pub challenge: Challenge,
    /// The signature over the challenge.
    pub signature: [u8; 64],
    /// The network the signature must be bound to.
    pub network: NetworkBinding,
    /// Whether the older unbound message is accepted too (a migration
    /// only: `accept_unbound_sign_in`).
    pub accept_unbound: bool,
}

/// Checks a challenge signature: bound to `network`, or, only with
/// `accept_unbound`, over the older unbound message.
pub(crate) fn verify_challenge(
    key: &VerifyingKey,
    challenge: &Challenge,
    sig: &[u8; 64],
    network: &NetworkBinding,
    accept_unbound: bool,
) -> Result<(), RouterError> {
    let bound = verify(key, &challenge.network_signing_message(network), sig);
    if bound.is_ok() || !accept_unbound {
        return bound;
    }
    verify(key, &challenge.signing_message(), sig)
}

/// A key upload whose prekey signature (if any) is still to be checked
/// against the caller's identity.
#[derive(Debug, Clone, Default)]
pub struct KeyUpload {
    /// New one-time prekeys.
    pub one_time: Vec<[u8; 32]>,
    /// New order keys.
    pub order_keys: Vec<SlotKey>,
    /// A replacement fallback prekey.
    pub fallback: Option<SignedPrekey>,
}

fn key32(field: &str, bytes: &[u8]) -> Result<[u8; 32], RouterError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| RouterError::WrongLength {
        field: field.to_owned(),
        expected: 32,
        got: bytes.len(),
    })
}

fn signature(field: &str, bytes: &[u8]) -> Result<[u8; 64], RouterError> {
    <[u8; SIGNATURE_BYTES]>::try_from(bytes).map_err(|_| RouterError::WrongLength {
        field: field.to_owned(),
        expected: SIGNATURE_BYTES,
        got: bytes.len(),
    })
}

fn keys32(field: &'static str, list: &[Vec<u8>]) -> Result<Vec<[u8; 32]>, RouterError> {
    if list.len() > MAX_KEYS_PER_UPLOAD {
        return Err(RouterError::TooManyKeys {
            field,
            got: list.len(),
            max: MAX_KEYS_PER_UPLOAD,
        });
    }
    let keys = list
        .iter()
        .map(|k| key32(field, k))
        .collect::<Result<Vec<_>, _>>()?;
    let distinct: HashSet<_> = keys.iter().collect();
    if distinct.len() != keys.len() {
        return Err(RouterError::KeyTwice { field });
    }
    Ok(keys)
}

fn order_keys(list: &[Vec<u8>]) -> Result<Vec<SlotKey>, RouterError> {
    let keys = keys32("order_keys", list)?;
    for k in &keys {
        // An order key is used for X25519 key agreement with every order
        // server; a low-order key would make its MACs computable by anyone.
        if grompi_proto::OrderServerKey::from_bytes(*k).is_low_order() {
            return Err(RouterError::LowOrderKey);
        }
    }
    Ok(keys.into_iter().map(SlotKey::from_bytes).collect())
}

pub(crate) fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey, RouterError> {
    VerifyingKey::from_bytes(bytes).map_err(|_| RouterError::BadSigningKey)
}

fn verify(key: &VerifyingKey, message: &[u8], sig: &[u8; 64]) -> Result<(), RouterError> {
    key.verify_strict(message, &Signature::from_bytes(sig))
        .map_err(|_| RouterError::BadChallengeSignature)
}

pub(crate) fn signed_prekey(
    field: &'static str,
    p: Option<&pb::SignedPrekey>,
    key: &VerifyingKey,
) -> Result<Option<SignedPrekey>, RouterError> {
    let Some(p) = p else { return Ok(None) };
    let prekey = SignedPrekey {
        key: key32(&format!("{field}.key"), &p.key)?,
        signature: signature(&format!("{field}.signature"), &p.signature)?,
    };
    key.verify_strict(
        &prekey_signing_message(&prekey.key),
        &Signature::from_bytes(&prekey.signature),
    )
    .map_err(|_| RouterError::BadPrekeySignature { field })?;
    Ok(Some(prekey))
}

/// Parses and checks a registration to a router of the network `network`:
/// key lengths, the challenge signature (bound to `network`) and the
/// fallback prekey signature.
/// With `accept_unbound`, the older unbound signature is accepted too.
pub fn parse_register_for(
    r: &pb::RegisterRequest,
    network: &NetworkBinding,
    accept_unbound: bool,
) -> Result<NewAccount, RouterError> {
    register_signed(r, network, accept_unbound)
}

/// [`parse_register_for`] accepting the signature bound to `network` only
/// (never the older unbound one): for in-process simulations and tests that
/// drive the core directly, with the binding their callers sign for.
pub fn parse_register(
    r: &pb::RegisterRequest,
    network: &NetworkBinding,
) -> Result<NewAccount, RouterError> {
    register_signed(r, network, false)
}

fn register_signed(
    r: &pb::RegisterRequest,
    network: &NetworkBinding,
    accept_unbound: bool,
) -> Result<NewAccount, RouterError> {
    let identity = r.identity.as_ref().ok_or(RouterError::IdentityMissing)?;
    let identity = IdentityKeys {
        signing: key32("identity.signing_key", &identity.signing_key)?,
        session: key32("identity.session_key", &identity.session_key)?,
    };
    let challenge = Challenge::parse("challenge", &r.challenge)?;
    let sig = signature("signature", &r.signature)?;
    let vk = verifying_key(&identity.signing)?;
    verify_challenge(&vk, &challenge, &sig, network, accept_unbound)?;
    let fallback = signed_prekey("fallback_prekey", r.fallback_prekey.as_ref(), &vk)?
        .ok_or(RouterError::FallbackPrekeyMissing)?;
    Ok(NewAccount {
        identity,
        challenge,
        fallback,
        one_time: keys32("one_time_prekeys", &r.one_time_prekeys)?,
        order_keys: order_keys(&r.order_keys)?,
    })
}

/// Parses a sign-in request to a router of the network `network` (lengths
/// only; [`Directory::sign_in`](crate::directory::Directory::sign_in) checks the signature, bound to `network`,
/// or with `accept_unbound` also the older unbound one).
pub fn parse_sign_in_for(
    r: &pb::SignInRequest,
    network: &NetworkBinding,
    accept_unbound: bool,
) -> Result<SignIn, RouterError> {
    Ok(SignIn {
        account: AccountId::parse("account", &r.account)?,
        challenge: Challenge::parse("challenge", &r.challenge)?,
        signature: signature("signature", &r.signature)?,
        network: *network,
        accept_unbound,
    })
}

/// [`parse_sign_in_for`] accepting the signature bound to `network` only
/// (never the older unbound one): for in-process simulations and tests that
/// drive the core directly, with the binding their callers sign for.
pub fn parse_sign_in(
    r: &pb::SignInRequest,
    network: &NetworkBinding,
) -> Result<SignIn, RouterError> {
    parse_sign_in_for(r, network, false)
}

/// Parses a key upload (lengths, distinctness, low-order order keys); the
/// fallback prekey's signature is checked by the directory, which knows the
/// identity key.
pub fn parse_upload(
    r: &pb::UploadKeysRequest,
) -> Result<(KeyUpload, Option<pb::SignedPrekey>), RouterError> {
    Ok((
        KeyUpload {
            one_time: keys32("one_time_prekeys", &r.one_time_prekeys)?,
            order_keys: order_keys(&r.order_keys)?,
            fallback: None,
        },
        r.fallback_prekey.clone(),
    ))
}
