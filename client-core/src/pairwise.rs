//! Pairwise sessions: vodozemac's Olm double ratchet between this account
//! and each peer account, created from the router's prekey bundles.
//!
//! Olm authenticates the peer (only the holder of the peer's identity key
//! could have produced a message that decrypts in the session) without any
//! signature over content, so nothing a recipient holds proves authorship
//! to a third party.
//!
//! A block ciphertext is framed so that the recipient knows which peer's
//! sessions to use:
//!
//! ```text
//! frame = version u8 (1) || sender account (32) || type u8
//!         || [type 0 (pre-key): sender Ed25519 key (32) || sender Curve25519 key (32)]
//!         || Olm message bytes
//! ```
//!
//! A pre-key message carries the sender's identity keys, which the recipient
//! checks against the sender's account id (the account id is their hash), so
//! first contact needs no directory lookup. The router already knows which
//! account sent an envelope, so the frame tells it nothing new.

use grompi_proto::ids::prekey_signing_message;
use grompi_proto::limits::MAX_BLOCK_BYTES;
use grompi_proto::{AccountId, pb};
use std::collections::HashMap;
use vodozemac::olm::{Account, OlmMessage, PreKeyMessage, Session, SessionConfig};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature};
use zeroize::Zeroizing;

/// Version byte of the block frame.
pub const FRAME_VERSION: u8 = 1;
/// Most sessions kept per peer (older ones are dropped first).
pub const MAX_SESSIONS_PER_PEER: usize = 4;

/// The public identity keys of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKeys {
    /// Ed25519: signs prekeys and sign-in challenges only.
    pub signing: [u8; 32],
    /// Curve25519: the Olm identity key.
    pub session: [u8; 32],
}

impl IdentityKeys {
    /// The account id of these keys.
    pub fn account_id(&self) -> AccountId {
        AccountId::of_identity(&self.signing, &self.session)
    }
}

/// A prekey signed by the account's Ed25519 identity key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedPrekey {
    /// The Curve25519 prekey.
    pub key: [u8; 32],
    /// Ed25519 signature over `prekey_signing_message(key)`.
    pub signature: [u8; 64],
}

/// A verified prekey bundle: the account id matches the identity keys and
/// the fallback prekey is signed by the identity key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrekeyBundle {
    /// The account id the bundle is for, derived from `identity`.
    pub account: AccountId,
    /// Its Ed25519 signing and Curve25519 session identity keys, whose
    /// hash is `account`.
    pub identity: IdentityKeys,
    /// Its fallback prekey, with a signature by its identity key that was
    /// checked; used when no one-time prekey is left.
    pub fallback_prekey: SignedPrekey,
    /// A one-time prekey, when the account had one left.
    pub one_time_prekey: Option<[u8; 32]>,
}

/// Why a pairwise operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairwiseError {
    /// A bundle that does not verify.
    #[error("prekey bundle rejected: {0}")]
    BadBundle(&'static str),
    /// A frame that does not parse.
    #[error("block frame is malformed: {0}")]
    MalformedFrame(&'static str),
    /// The identity keys in a pre-key frame do not hash to the sender account.
    #[error("identity keys do not match the sender's account id")]
    IdentityMismatch,
    /// No session with the peer.
    #[error("no pairwise session with account {0}")]
    NoSession(AccountId),
    /// Olm refused the message.
    #[error("pairwise decryption failed: {0}")]
    Decrypt(String),
    /// Olm could not encrypt.
    #[error("pairwise encryption failed: {0}")]
    Encrypt(String),
}

fn fixed<const N: usize>(field: &'static str, b: &[u8]) -> Result<[u8; N], PairwiseError> {
    <[u8; N]>::try_from(b).map_err(|_| PairwiseError::BadBundle(field))
}

impl TryFrom<pb::PrekeyBundle> for PrekeyBundle {
    type Error = PairwiseError;

    fn try_from(b: pb::PrekeyBundle) -> Result<Self, PairwiseError> {
        let identity = b
            .identity
            .ok_or(PairwiseError::BadBundle("identity keys are missing"))?;
        let fallback = b
            .fallback_prekey
            .ok_or(PairwiseError::BadBundle("fallback prekey is missing"))?;
        let bundle = Self {
            account: AccountId::from_bytes(fixed("account must be 32 bytes", &b.account)?),
            identity: IdentityKeys {
                signing: fixed("signing key must be 32 bytes", &identity.signing_key)?,
                session: fixed("session key must be 32 bytes", &identity.session_key)?,
            },
            fallback_prekey: SignedPrekey {
                key: fixed("fallback prekey must be 32 bytes", &fallback.key)?,
                signature: fixed("prekey signature must be 64 bytes", &fallback.signature)?,
            },
            one_time_prekey: if b.one_time_prekey.is_empty() {
                None
            } else {
                Some(fixed(
                    "one-time prekey must be 32 bytes",
                    &b.one_time_prekey,
                )?)
            },
        };
        bundle.verify()?;
        Ok(bundle)
    }
}

impl PrekeyBundle {
    /// Checks the account id and the prekey signature.
    pub fn verify(&self) -> Result<(), PairwiseError> {
        if self.identity.account_id() != self.account {
            return Err(PairwiseError::BadBundle(
                "account id is not the hash of the identity keys",
            ));
        }
        let key = Ed25519PublicKey::from_slice(&self.identity.signing)
            .map_err(|_| PairwiseError::BadBundle("signing key is not an Ed25519 key"))?;
        let sig = Ed25519Signature::from_slice(&self.fallback_prekey.signature)
            .map_err(|_| PairwiseError::BadBundle("prekey signature is malformed"))?;
        key.verify(&prekey_signing_message(&self.fallback_prekey.key), &sig)
            .map_err(|_| PairwiseError::BadBundle("prekey signature does not verify"))
    }
}

/// This account's Olm state: the account and the sessions with each peer.
pub struct Pairwise {
    account: Account,
    sessions: HashMap<AccountId, Vec<Session>>,
}

impl std::fmt::Debug for Pairwise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairwise")
            .field("account", &self.account_id())
            .field("peers", &self.sessions.len())
            .finish()
    }
}

impl Default for Pairwise {
    fn default() -> Self {
        Self::new()
    }
}

impl Pairwise {
    /// A new account with fresh identity keys (from vodozemac's OS RNG).
    pub fn new() -> Self {
        Self {
            account: Account::new(),
            sessions: HashMap::new(),
        }
    }

    /// This account's identity keys.
    pub fn identity(&self) -> IdentityKeys {
        let k = self.account.identity_keys();
        IdentityKeys {
            signing: *k.ed25519.as_bytes(),
            session: k.curve25519.to_bytes(),
        }
    }

    /// This account's id: the hash of its two identity keys.
    pub fn account_id(&self) -> AccountId {
        self.identity().account_id()
    }

    /// Signs a message with the Ed25519 identity key (sign-in challenges and
    /// prekeys only; never content).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.account.sign(message).to_bytes()
    }

    /// A fresh fallback prekey, signed, to upload.
    pub fn new_fallback_prekey(&mut self) -> SignedPrekey {
        self.account.generate_fallback_key();
        let key = self
            .account
            .fallback_key()
            .values()
            .next()
            .map(|k| k.to_bytes())
            .unwrap_or_default();
        SignedPrekey {
            key,
            signature: self.sign(&prekey_signing_message(&key)),
        }
    }

    /// `count` fresh one-time prekeys to upload.
    pub fn new_one_time_prekeys(&mut self, count: usize) -> Vec<[u8; 32]> {
        self.account.generate_one_time_keys(count);
        let keys = self
            .account
            .one_time_keys()
            .values()
            .map(|k| k.to_bytes())
            .collect();
        self.account.mark_keys_as_published();
        keys
    }

    /// A bundle for this account (for tests and local tools; the router
    /// serves the real ones).
    pub fn bundle(&mut self, one_time: bool) -> PrekeyBundle {
        let fallback_prekey = self.new_fallback_prekey();
        let one_time_prekey = if one_time {
            self.new_one_time_prekeys(1).first().copied()
        } else {
            None
        };
        PrekeyBundle {
            account: self.account_id(),
            identity: self.identity(),
            fallback_prekey,
            one_time_prekey,
        }
    }

    /// Whether a session with `peer` exists.
    pub fn has_session(&self, peer: &AccountId) -> bool {
        self.sessions.get(peer).is_some_and(|s| !s.is_empty())
    }

    /// The sender account a framed message claims (not authenticated: the
    /// frame is only read, nothing is decrypted), to bound what unknown
    /// senders may store before anything they sent is accepted.
    pub fn frame_sender(frame: &[u8]) -> Option<AccountId> {
        match frame {
            [FRAME_VERSION, rest @ ..] => rest
                .get(..32)
                .and_then(|a| <[u8; 32]>::try_from(a).ok())
                .map(AccountId::from_bytes),
            _ => None,
        }
    }

    /// Creates an outbound session from a verified bundle.
    pub fn start_session(&mut self, bundle: &PrekeyBundle) -> Result<(), PairwiseError> {
        bundle.verify()?;
        let prekey = bundle.one_time_prekey.unwrap_or(bundle.fallback_prekey.key);
        let session = self
            .account
            .create_outbound_session(
                SessionConfig::version_1(),
                Curve25519PublicKey::from_bytes(bundle.identity.session),
                Curve25519PublicKey::from_bytes(prekey),
            )
            .map_err(|e| PairwiseError::BadBundle(session_creation_reason(&e)))?;
        self.keep(bundle.account, session);
        Ok(())
    }

    fn keep(&mut self, peer: AccountId, session: Session) {
        let list = self.sessions.entry(peer).or_default();
        list.push(session);
        if list.len() > MAX_SESSIONS_PER_PEER {
            list.remove(0);
        }
    }

    /// Encrypts `plaintext` to `peer` and frames it.
    pub fn encrypt_to(
        &mut self,
        peer: &AccountId,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, PairwiseError> {
        let me = self.identity();
        let session = self
            .sessions
            .get_mut(peer)
            .and_then(|l| l.last_mut())
            .ok_or(PairwiseError::NoSession(*peer))?;
        let msg = session
            .encrypt(plaintext)
            .map_err(|e| PairwiseError::Encrypt(e.to_string()))?;
        let (_, bytes) = msg.to_parts();
        let mut out = Vec::with_capacity(1 + 32 + 1 + 64 + bytes.len());
        out.push(FRAME_VERSION);
        out.extend_from_slice(me.account_id().as_bytes());
        match msg {
            OlmMessage::PreKey(_) => {
                out.push(0);
                out.extend_from_slice(&me.signing);
                out.extend_from_slice(&me.session);
            }
            OlmMessage::Normal(_) => out.push(1),
        }
        out.extend_from_slice(&bytes);
        if out.len() > MAX_BLOCK_BYTES {
            return Err(PairwiseError::Encrypt(
                "block exceeds the protocol limit".into(),
            ));
        }
        Ok(out)
    }

    /// Decrypts a framed message; returns the authenticated sender account
    /// and the plaintext. Fails without changing any session when the
    /// message is not authentic.
    pub fn decrypt_from(
        &mut self,
        frame: &[u8],
    ) -> Result<(AccountId, Zeroizing<Vec<u8>>), PairwiseError> {
        let (&version, rest) = frame
            .split_first()
            .ok_or(PairwiseError::MalformedFrame("empty"))?;
        if version != FRAME_VERSION {
            return Err(PairwiseError::MalformedFrame("unknown frame version"));
        }
        if rest.len() < 33 {
            return Err(PairwiseError::MalformedFrame("truncated"));
        }
        let (account, rest) = rest.split_at(32);
        let sender = AccountId::from_bytes(
            <[u8; 32]>::try_from(account)
                .map_err(|_| PairwiseError::MalformedFrame("truncated"))?,
        );
        let (&kind, rest) = rest
            .split_first()
            .ok_or(PairwiseError::MalformedFrame("truncated"))?;
        match kind {
            0 => {
                if rest.len() < 64 {
                    return Err(PairwiseError::MalformedFrame("truncated identity keys"));
                }
                let (keys, body) = rest.split_at(64);
                let (signing, session) = keys.split_at(32);
                let identity = IdentityKeys {
                    signing: <[u8; 32]>::try_from(signing)
                        .map_err(|_| PairwiseError::MalformedFrame("truncated"))?,
                    session: <[u8; 32]>::try_from(session)
                        .map_err(|_| PairwiseError::MalformedFrame("truncated"))?,
                };
                if identity.account_id() != sender {
                    return Err(PairwiseError::IdentityMismatch);
                }
                let message = PreKeyMessage::from_bytes(body)
                    .map_err(|_| PairwiseError::MalformedFrame("not an Olm pre-key message"))?;
                if message.identity_key().to_bytes() != identity.session {
                    return Err(PairwiseError::IdentityMismatch);
                }
                // A pre-key message of a session we already have.
                let session_id = message.session_id();
                if let Some(list) = self.sessions.get_mut(&sender)
                    && let Some(pos) = list.iter().position(|s| s.session_id() == session_id)
                {
                    let plain = list
                        .get_mut(pos)
                        .ok_or(PairwiseError::NoSession(sender))?
                        .decrypt(&OlmMessage::PreKey(message))
                        .map_err(|e| PairwiseError::Decrypt(e.to_string()))?;
                    promote(list, pos);
                    return Ok((sender, Zeroizing::new(plain)));
                }
                let created = self
                    .account
                    .create_inbound_session(
                        SessionConfig::version_1(),
                        Curve25519PublicKey::from_bytes(identity.session),
                        &message,
                    )
                    .map_err(|e| PairwiseError::Decrypt(e.to_string()))?;
                self.keep(sender, created.session);
                Ok((sender, Zeroizing::new(created.plaintext)))
            }
            1 => {
                let message = OlmMessage::from_parts(1, rest)
                    .map_err(|_| PairwiseError::MalformedFrame("not an Olm message"))?;
                let list = self
                    .sessions
                    .get_mut(&sender)
                    .ok_or(PairwiseError::NoSession(sender))?;
                for pos in (0..list.len()).rev() {
                    if let Some(s) = list.get_mut(pos)
                        && let Ok(plain) = s.decrypt(&message)
                    {
                        promote(list, pos);
                        return Ok((sender, Zeroizing::new(plain)));
                    }
                }
                Err(PairwiseError::Decrypt(
                    "no session with the sender decrypts it".into(),
                ))
            }
            _ => Err(PairwiseError::MalformedFrame("unknown message type")),
        }
    }
}

/// The serializable state of a [`Pairwise`] (vodozemac pickles), for the
/// encrypted local store.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PairwisePickle {
    account: vodozemac::olm::AccountPickle,
    sessions: Vec<([u8; 32], Vec<vodozemac::olm::SessionPickle>)>,
}

impl Pairwise {
    /// The Olm account and every session as a pickle: secret, to be kept
    /// only in the encrypted local store.
    pub fn pickle(&self) -> PairwisePickle {
        PairwisePickle {
            account: self.account.pickle(),
            sessions: self
                .sessions
                .iter()
                .map(|(a, l)| (*a.as_bytes(), l.iter().map(Session::pickle).collect()))
                .collect(),
        }
    }

    /// Restores the state from a pickle.
    pub fn from_pickle(p: PairwisePickle) -> Self {
        Self {
            account: Account::from_pickle(p.account),
            sessions: p
                .sessions
                .into_iter()
                .map(|(a, l)| {
                    (
                        AccountId::from_bytes(a),
                        l.into_iter().map(Session::from_pickle).collect(),
                    )
                })
                .collect(),
        }
    }
}

/// Makes the session at `pos` the one used for sending.
fn promote(list: &mut Vec<Session>, pos: usize) {
    if pos + 1 < list.len() {
        let s = list.remove(pos);
        list.push(s);
    }
}

fn session_creation_reason(e: &vodozemac::olm::SessionCreationError) -> &'static str {
    match e {
        vodozemac::olm::SessionCreationError::NonContributoryKey => "a prekey is of low order",
        _ => "session could not be created",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Pairwise, Pairwise) {
        (Pairwise::new(), Pairwise::new())
    }

    #[test]
    fn first_contact_and_reply() {
        let (mut a, mut b) = pair();
        let bundle = b.bundle(true);
        a.start_session(&bundle).unwrap();
        let m1 = a.encrypt_to(&b.account_id(), b"one").unwrap();
        let m2 = a.encrypt_to(&b.account_id(), b"two").unwrap();
        // Both are pre-key messages until a reply; the second uses the
        // session the first created.
        let (from, p) = b.decrypt_from(&m1).unwrap();
        assert_eq!((from, &p[..]), (a.account_id(), &b"one"[..]));
        assert_eq!(&b.decrypt_from(&m2).unwrap().1[..], b"two");
        // A replay of a consumed message fails.
        assert!(b.decrypt_from(&m1).is_err());
        // B replies in the same session; A decrypts.
        let r = b.encrypt_to(&a.account_id(), b"back").unwrap();
        assert_eq!(&a.decrypt_from(&r).unwrap().1[..], b"back");
        let m3 = a.encrypt_to(&b.account_id(), b"three").unwrap();
        assert_eq!(m3.get(33), Some(&1), "a normal message after the reply");
        assert_eq!(&b.decrypt_from(&m3).unwrap().1[..], b"three");
    }

    #[test]
    fn out_of_order_messages_decrypt() {
        let (mut a, mut b) = pair();
        a.start_session(&b.bundle(false)).unwrap();
        let msgs: Vec<_> = (0..5u8)
            .map(|i| a.encrypt_to(&b.account_id(), &[i]).unwrap())
            .collect();
        for i in [3usize, 0, 4, 1, 2] {
            assert_eq!(&b.decrypt_from(&msgs[i]).unwrap().1[..], &[i as u8]);
        }
    }

    #[test]
    fn impersonation_and_tampering_are_refused() {
        let (mut a, mut b) = pair();
        let mut c = Pairwise::new();
        a.start_session(&b.bundle(true)).unwrap();
        let m = a.encrypt_to(&b.account_id(), b"x").unwrap();
        // C claims to be A: the identity keys do not hash to A's id.
        let mut forged = m.clone();
        forged[1..33].copy_from_slice(c.account_id().as_bytes());
        assert_eq!(
            b.decrypt_from(&forged),
            Err(PairwiseError::IdentityMismatch)
        );
        // A flipped ciphertext bit does not decrypt.
        let mut bad = m.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(b.decrypt_from(&bad).is_err());
        // The genuine message still decrypts afterwards.
        assert_eq!(&b.decrypt_from(&m).unwrap().1[..], b"x");
        // Garbage frames are refused.
        for g in [&[][..], &[1][..], &[2; 40][..], &[1; 34][..]] {
            assert!(b.decrypt_from(g).is_err());
        }
        // A normal message from a peer with no session.
        c.start_session(&b.bundle(false)).unwrap();
        let _ = c;
    }

    #[test]
    fn bundles_are_verified() {
        let mut b = Pairwise::new();
        let good = b.bundle(true);
        good.verify().unwrap();
        let mut wrong_account = good;
        wrong_account.account = AccountId::from_bytes([0; 32]);
        assert!(wrong_account.verify().is_err());
        let mut bad_sig = good;
        bad_sig.fallback_prekey.signature[0] ^= 1;
        assert!(bad_sig.verify().is_err());
        let mut other_key = good;
        other_key.fallback_prekey.key[0] ^= 1;
        assert!(other_key.verify().is_err());
        let pb_bundle = pb::PrekeyBundle {
            account: good.account.to_vec(),
            identity: Some(pb::IdentityKeys {
                signing_key: good.identity.signing.to_vec(),
                session_key: good.identity.session.to_vec(),
            }),
            fallback_prekey: Some(pb::SignedPrekey {
                key: good.fallback_prekey.key.to_vec(),
                signature: good.fallback_prekey.signature.to_vec(),
            }),
            one_time_prekey: good.one_time_prekey.map(|k| k.to_vec()).unwrap_or_default(),
        };
        assert_eq!(PrekeyBundle::try_from(pb_bundle.clone()).unwrap(), good);
        let mut short = pb_bundle;
        short.account.pop();
        assert!(PrekeyBundle::try_from(short).is_err());
    }

    #[test]
    fn frames_are_laid_out_as_documented() {
        let (mut a, mut b) = pair();
        a.start_session(&b.bundle(true)).unwrap();
        // A block plaintext is 65 bytes.
        let block = [7u8; 65];
        let me = a.identity();
        // First contact: a pre-key frame with the sender's identity keys.
        let pre = a.encrypt_to(&b.account_id(), &block).unwrap();
        assert_eq!(pre[0], FRAME_VERSION);
        assert_eq!(&pre[1..33], a.account_id().as_bytes());
        assert_eq!(pre[33], 0, "type 0: pre-key message");
        assert_eq!(&pre[34..66], &me.signing);
        assert_eq!(&pre[66..98], &me.session);
        assert_eq!(Pairwise::frame_sender(&pre), Some(a.account_id()));
        // The rest is the binary Olm pre-key message (no base64), Olm
        // version 1: message version 3 with a MAC truncated to 8 bytes.
        let olm = PreKeyMessage::from_bytes(&pre[98..]).unwrap();
        assert_eq!(pre[98], 3);
        assert_eq!(olm.identity_key().to_bytes(), me.session);
        assert_eq!(olm.message().version(), 3);
        let (from, plain) = b.decrypt_from(&pre).unwrap();
        assert_eq!((from, &plain[..]), (a.account_id(), &block[..]));
        // After a reply in the session: normal frames, no identity keys.
        let reply = b.encrypt_to(&a.account_id(), b"reply").unwrap();
        assert_eq!(reply[33], 1, "the replier's session is established");
        a.decrypt_from(&reply).unwrap();
        let normal = a.encrypt_to(&b.account_id(), &block).unwrap();
        assert_eq!(normal[0], FRAME_VERSION);
        assert_eq!(&normal[1..33], a.account_id().as_bytes());
        assert_eq!(normal[33], 1, "type 1: normal message");
        let olm = vodozemac::olm::Message::from_bytes(&normal[34..]).unwrap();
        assert_eq!(olm.version(), 3);
        assert_eq!(&b.decrypt_from(&normal).unwrap().1[..], &block[..]);
        // Both ends use vodozemac's SessionConfig::version_1().
        for p in [&a, &b] {
            for s in p.sessions.values().flatten() {
                assert_eq!(s.session_config(), SessionConfig::version_1());
            }
        }
        // Another frame version or message type is refused.
        let next = a.encrypt_to(&b.account_id(), &block).unwrap();
        for (at, value) in [(0, 2), (33, 2)] {
            let mut bad = next.clone();
            bad[at] = value;
            assert!(matches!(
                b.decrypt_from(&bad),
                Err(PairwiseError::MalformedFrame(_))
            ));
        }
        assert_eq!(&b.decrypt_from(&next).unwrap().1[..], &block[..]);
    }
}
