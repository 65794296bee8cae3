//! Accounts and the directory: identity keys, prekey bundles, the supply of
//! single-use order keys, sign-in challenges and sessions.
//!
//! Authentication is at the application layer. A client asks for a fresh
//! challenge, signs [`Challenge::network_signing_message`] (bound to the
//! network: its name and the router's TLS root, [`NetworkBinding`](grompi_proto::ids::NetworkBinding)) with
//! its Ed25519 identity key, and gets a random session token; the router
//! keeps only the token's BLAKE3 hash. Challenges are single use and
//! expire. A signature made for a router of another network does not
//! verify here.
//!
//! Parsing ([`parse_register_for`], [`parse_sign_in_for`],
//! [`parse_upload`], ...) checks everything that needs no state, signatures
//! included, so it can run outside the core; it lives in
//! [`crate::request`] and is re-exported here.

use crate::Millis;
use crate::error::RouterError;
pub use crate::keys::{IdentityKeys, SignedPrekey};
pub use crate::limits::DEFAULT_SESSION_TTL_MS;
use crate::limits::Limits;
use crate::record::{AccountRecord, Record};
pub use crate::request::{
    KeyUpload, NewAccount, SignIn, parse_register, parse_register_for, parse_sign_in,
    parse_sign_in_for, parse_upload,
};
use crate::request::{signed_prekey, verify_challenge, verifying_key};
use grompi_proto::{AccountId, Challenge, SlotKey, pb};
use rand::CryptoRng;
use std::collections::{BTreeSet, HashMap};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A session token as handed to a client; zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionToken([u8; 32]);

impl SessionToken {
    /// The hash the router stores instead of the token.
    pub fn hash(&self) -> [u8; 32] {
        token_hash(&self.0)
    }
    /// The token bytes, for the response.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

/// The BLAKE3 hash under which a session token is stored.
pub fn token_hash(token: &[u8]) -> [u8; 32] {
    blake3::derive_key(grompi_proto::context::ROUTER_SESSION_TOKEN, token)
}

/// One account's state.
#[derive(Debug, Clone)]
pub struct Account {
    /// Identity keys.
    pub identity: IdentityKeys,
    /// Current fallback prekey.
    pub fallback: SignedPrekey,
    /// Unused one-time prekeys.
    pub one_time: BTreeSet<[u8; 32]>,
    /// Unused order keys.
    pub order_keys: BTreeSet<[u8; 32]>,
}

/// The directory's caps (from [`Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryCaps {
    /// `limits.max_accounts`.
    pub accounts: usize,
    /// `limits.max_unused_keys`.
    pub unused_keys: usize,
    /// `limits.max_unused_keys_per_account`.
    pub unused_keys_per_account: usize,
    /// `limits.max_sessions`.
    pub sessions: usize,
    /// `limits.max_sessions_per_account`.
    pub sessions_per_account: usize,
}

impl DirectoryCaps {
    /// The caps `limits` configures.
    pub fn of(limits: &Limits) -> Self {
        Self {
            accounts: limits.max_accounts,
            unused_keys: limits.max_unused_keys,
            unused_keys_per_account: limits.max_unused_keys_per_account,
            sessions: limits.max_sessions,
            sessions_per_account: limits.max_sessions_per_account.max(1),
        }
    }
}

impl Default for DirectoryCaps {
    fn default() -> Self {
        Self::of(&Limits::default())
    }
}

/// Accounts, sessions and outstanding challenges.
#[derive(Debug)]
pub struct Directory {
    accounts: HashMap<AccountId, Account>,
    /// Token hash -> account and when the session ends.
    sessions: HashMap<[u8; 32], (AccountId, Millis)>,
    /// Per account: its sessions (when each ends, token hash), oldest
    /// first (at most `sessions_per_account`, so searched linearly).
    sessions_of: HashMap<AccountId, Vec<(Millis, [u8; 32])>>,
    /// How long a new session lasts.
    session_ttl: Millis,
    challenges: HashMap<Challenge, Millis>,
    /// Every unused order key, so no key is in two supplies.
    order_key_owner: HashMap<[u8; 32], AccountId>,
    /// Unused keys of both kinds over all accounts.
    unused_keys: usize,
    caps: DirectoryCaps,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new(DEFAULT_SESSION_TTL_MS)
    }
}

impl Directory {
    /// An empty directory whose sessions last `session_ttl` milliseconds,
    /// with the default caps.
    pub fn new(session_ttl: Millis) -> Self {
        Self {
            accounts: HashMap::new(),
            sessions: HashMap::new(),
            sessions_of: HashMap::new(),
            session_ttl: session_ttl.max(1),
            challenges: HashMap::new(),
            order_key_owner: HashMap::new(),
            unused_keys: 0,
            caps: DirectoryCaps::default(),
        }
    }

    /// An empty directory with the session lifetime and caps of `limits`.
    pub fn with_limits(limits: &Limits) -> Self {
        Self {
            caps: DirectoryCaps::of(limits),
            ..Self::new(limits.session_ttl_ms)
        }
    }

    /// Accounts held.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Unused keys of both kinds held over all accounts.
    pub fn unused_key_count(&self) -> usize {
        self.unused_keys
    }

    /// Refuses `adding` more unused keys if the total would exceed its cap.
    fn check_key_room(&self, adding: usize) -> Result<(), RouterError> {
        if self.unused_keys.saturating_add(adding) > self.caps.unused_keys {
            return Err(RouterError::KeyStoreFull {
                held: self.unused_keys,
                adding,
                max: self.caps.unused_keys,
            });
        }
        Ok(())
    }

    /// Restores an account from storage.
    pub fn restore_account(&mut self, r: AccountRecord) {
        self.accounts.insert(
            r.id,
            Account {
                identity: r.identity,
                fallback: r.fallback,
                one_time: BTreeSet::new(),
                order_keys: BTreeSet::new(),
            },
        );
    }

    /// Restores an unused one-time prekey.
    pub fn restore_one_time(&mut self, account: AccountId, key: [u8; 32]) {
        if let Some(a) = self.accounts.get_mut(&account)
            && a.one_time.insert(key)
        {
            self.unused_keys += 1;
        }
    }

    /// Restores an unused order key.
    pub fn restore_order_key(&mut self, account: AccountId, key: [u8; 32]) {
        if let Some(a) = self.accounts.get_mut(&account) {
            if a.order_keys.insert(key) {
                self.unused_keys += 1;
            }
            self.order_key_owner.insert(key, account);
        }
    }

    /// Restores a session ending at `expires_at`. A session stored without
    /// an end (before sessions expired) is not restored: its client signs
    /// in again.
    pub fn restore_session(
        &mut self,
        hash: [u8; 32],
        account: AccountId,
        expires_at: Option<Millis>,
    ) {
        if let Some(at) = expires_at {
            self.sessions.insert(hash, (account, at));
            self.sessions_of
                .entry(account)
                .or_default()
                .push((at, hash));
        }
    }

    /// Forgets sessions that ended by `now`, recording their removal.
    pub fn prune_sessions(&mut self, now: Millis, out: &mut Vec<Record>) {
        let sessions_of = &mut self.sessions_of;
        self.sessions.retain(|hash, (account, expires_at)| {
            let live = *expires_at > now;
            if !live {
                out.push(Record::SessionEnded { hash: *hash });
                if let Some(set) = sessions_of.get_mut(account) {
                    set.retain(|(_, h)| h != hash);
                    if set.is_empty() {
                        sessions_of.remove(account);
                    }
                }
            }
            live
        });
    }

    /// Ends the session `hash` of `account` ending at `at`.
    fn end_session(
        &mut self,
        account: &AccountId,
        at: Millis,
        hash: [u8; 32],
        out: &mut Vec<Record>,
    ) {
        self.sessions.remove(&hash);
        if let Some(set) = self.sessions_of.get_mut(account) {
            set.retain(|s| *s != (at, hash));
            if set.is_empty() {
                self.sessions_of.remove(account);
            }
        }
        out.push(Record::SessionEnded { hash });
    }

    /// Makes room for one more session of `account`: ends its session that
    /// would end first when it has `sessions_per_account` (the total does
    /// not grow), and otherwise refuses when the router holds `sessions`
    /// live ones (after forgetting ended ones).
    fn session_room(
        &mut self,
        account: &AccountId,
        now: Millis,
        out: &mut Vec<Record>,
    ) -> Result<(), RouterError> {
        let held = self.sessions_of.get(account).map_or(&[][..], Vec::as_slice);
        if held.len() < self.caps.sessions_per_account && self.sessions.len() >= self.caps.sessions
        {
            self.prune_sessions(now, out);
            if self.sessions.len() >= self.caps.sessions {
                return Err(RouterError::TooManySessions {
                    max: self.caps.sessions,
                });
            }
        }
        let held = self.sessions_of.get(account).map_or(&[][..], Vec::as_slice);
        // The session that ends first; of those ending together, the
        // oldest.
        let first = held
            .iter()
            .fold(None, |best: Option<(Millis, [u8; 32])>, s| match best {
                Some(b) if b.0 <= s.0 => Some(b),
                _ => Some(*s),
            });
        if held.len() >= self.caps.sessions_per_account
            && let Some((at, hash)) = first
        {
            self.end_session(account, at, hash, out);
        }
        Ok(())
    }

    /// Live (not yet pruned) sessions of `account`.
    pub fn sessions_of(&self, account: &AccountId) -> usize {
        self.sessions_of.get(account).map_or(0, Vec::len)
    }

    /// Live and not yet pruned sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The account, if it exists.
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    /// A fresh single-use challenge valid until `now + ttl`.
    pub fn issue_challenge(
        &mut self,
        now: Millis,
        rng: &mut impl CryptoRng,
        limits: &Limits,
    ) -> Result<Challenge, RouterError> {
        if self.challenges.len() >= limits.max_challenges {
            self.challenges.retain(|_, expiry| *expiry > now);
            if self.challenges.len() >= limits.max_challenges {
                return Err(RouterError::TooManyChallenges);
            }
        }
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let c = Challenge::from_bytes(bytes);
        self.challenges
            .insert(c, now.saturating_add(limits.challenge_ttl_ms));
        Ok(c)
    }

    /// Consumes a challenge: it must have been issued, not used, not expired.
    fn take_challenge(&mut self, c: &Challenge, now: Millis) -> Result<(), RouterError> {
        match self.challenges.remove(c) {
            None => Err(RouterError::ChallengeUnknown),
            Some(expiry) if expiry <= now => Err(RouterError::ChallengeExpired),
            Some(_) => Ok(()),
        }
    }

    fn new_session(
        &mut self,
        account: AccountId,
        now: Millis,
        rng: &mut impl CryptoRng,
        out: &mut Vec<Record>,
    ) -> SessionToken {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let token = SessionToken(bytes);
        bytes.zeroize();
        let hash = token.hash();
        let expires_at = now.saturating_add(self.session_ttl);
        self.sessions.insert(hash, (account, expires_at));
        self.sessions_of
            .entry(account)
            .or_default()
            .push((expires_at, hash));
        out.push(Record::Session {
            hash,
            account,
            expires_at,
        });
        token
    }

    fn check_new_order_keys(&self, keys: &[SlotKey]) -> Result<(), RouterError> {
        if keys
            .iter()
            .any(|k| self.order_key_owner.contains_key(k.as_bytes()))
        {
            return Err(RouterError::OrderKeyReused);
        }
        Ok(())
    }

    /// Creates an account and a session.
    pub fn register(
        &mut self,
        new: NewAccount,
        now: Millis,
        rng: &mut impl CryptoRng,
        out: &mut Vec<Record>,
    ) -> Result<(AccountId, SessionToken), RouterError> {
        self.take_challenge(&new.challenge, now)?;
        let id = AccountId::of_identity(&new.identity.signing, &new.identity.session);
        if self.accounts.contains_key(&id) {
            return Err(RouterError::AccountExists);
        }
        if self.accounts.len() >= self.caps.accounts {
            return Err(RouterError::TooManyAccounts {
                max: self.caps.accounts,
            });
        }
        let per_account = self.caps.unused_keys_per_account;
        if new.one_time.len() > per_account || new.order_keys.len() > per_account {
            return Err(RouterError::TooManyUnusedKeys { max: per_account });
        }
        self.check_key_room(new.one_time.len() + new.order_keys.len())?;
        self.check_new_order_keys(&new.order_keys)?;
        self.session_room(&id, now, out)?;
        let record = AccountRecord {
            id,
            identity: new.identity,
            fallback: new.fallback.clone(),
        };
        out.push(Record::Account(record.clone()));
        self.restore_account(record);
        for k in new.one_time {
            self.restore_one_time(id, k);
            out.push(Record::OneTimePrekey {
                account: id,
                key: k,
                present: true,
            });
        }
        for k in new.order_keys {
            self.restore_order_key(id, *k.as_bytes());
            out.push(Record::OrderKey {
                account: id,
                key: *k.as_bytes(),
                present: true,
            });
        }
        let token = self.new_session(id, now, rng, out);
        Ok((id, token))
    }

    /// Exchanges a signed challenge for a session.
    pub fn sign_in(
        &mut self,
        s: &SignIn,
        now: Millis,
        rng: &mut impl CryptoRng,
        out: &mut Vec<Record>,
    ) -> Result<SessionToken, RouterError> {
        self.take_challenge(&s.challenge, now)?;
        let account = self
            .accounts
            .get(&s.account)
            .ok_or(RouterError::NoSuchAccount)?;
        let vk = verifying_key(&account.identity.signing)?;
        verify_challenge(
            &vk,
            &s.challenge,
            &s.signature,
            &s.network,
            s.accept_unbound,
        )?;
        self.session_room(&s.account, now, out)?;
        Ok(self.new_session(s.account, now, rng, out))
    }

    /// The account a live session token belongs to at `now`.
    pub fn authenticate(&self, token: &[u8], now: Millis) -> Result<AccountId, RouterError> {
        if token.len() != 32 {
            return Err(RouterError::MalformedSessionToken);
        }
        let hash = token_hash(token);
        match self.sessions.get_key_value(&hash) {
            Some((stored, (account, expires_at))) if bool::from(stored.ct_eq(&hash)) => {
                if *expires_at <= now {
                    Err(RouterError::SessionExpired)
                } else {
                    Ok(*account)
                }
            }
            _ => Err(RouterError::UnknownSession),
        }
    }

    /// Adds keys (and a new fallback prekey) to an account.
    pub fn upload(
        &mut self,
        account: AccountId,
        mut upload: KeyUpload,
        fallback: Option<pb::SignedPrekey>,
        out: &mut Vec<Record>,
    ) -> Result<(), RouterError> {
        let a = self
            .accounts
            .get(&account)
            .ok_or(RouterError::UnknownAccount(account))?;
        let vk = verifying_key(&a.identity.signing)?;
        upload.fallback = signed_prekey("fallback_prekey", fallback.as_ref(), &vk)?;
        let per_account = self.caps.unused_keys_per_account;
        if a.one_time.len() + upload.one_time.len() > per_account
            || a.order_keys.len() + upload.order_keys.len() > per_account
        {
            return Err(RouterError::TooManyUnusedKeys { max: per_account });
        }
        self.check_key_room(upload.one_time.len() + upload.order_keys.len())?;
        self.check_new_order_keys(&upload.order_keys)?;
        if let Some(f) = upload.fallback
            && let Some(a) = self.accounts.get_mut(&account)
        {
            a.fallback = f.clone();
            out.push(Record::Account(AccountRecord {
                id: account,
                identity: a.identity,
                fallback: f,
            }));
        }
        for k in upload.one_time {
            self.restore_one_time(account, k);
            out.push(Record::OneTimePrekey {
                account,
                key: k,
                present: true,
            });
        }
        for k in upload.order_keys {
            self.restore_order_key(account, *k.as_bytes());
            out.push(Record::OrderKey {
                account,
                key: *k.as_bytes(),
                present: true,
            });
        }
        Ok(())
    }

    /// Unused one-time prekeys and order keys of an account.
    pub fn key_counts(&self, account: &AccountId) -> (usize, usize) {
        self.accounts
            .get(account)
            .map_or((0, 0), |a| (a.one_time.len(), a.order_keys.len()))
    }

    /// Another account's prekey bundle; hands out (and deletes) one one-time
    /// prekey if any is left.
    pub fn prekey_bundle(
        &mut self,
        target: &AccountId,
        out: &mut Vec<Record>,
    ) -> Result<pb::PrekeyBundle, RouterError> {
        let one_time = self
            .accounts
            .get_mut(target)
            .ok_or(RouterError::UnknownAccount(*target))?
            .one_time
            .pop_first();
        let a = self
            .accounts
            .get(target)
            .ok_or(RouterError::UnknownAccount(*target))?;
        if let Some(k) = one_time {
            self.unused_keys = self.unused_keys.saturating_sub(1);
            out.push(Record::OneTimePrekey {
                account: *target,
                key: k,
                present: false,
            });
        }
        Ok(pb::PrekeyBundle {
            account: target.to_vec(),
            identity: Some(pb::IdentityKeys {
                signing_key: a.identity.signing.to_vec(),
                session_key: a.identity.session.to_vec(),
            }),
            fallback_prekey: Some(pb::SignedPrekey {
                key: a.fallback.key.to_vec(),
                signature: a.fallback.signature.to_vec(),
            }),
            one_time_prekey: one_time.map(|k| k.to_vec()).unwrap_or_default(),
        })
    }

    /// Whether every listed account has an unused order key; names the first
    /// that does not.
    pub fn check_order_keys(&self, accounts: &[AccountId]) -> Result<(), RouterError> {
        for id in accounts {
            match self.accounts.get(id) {
                None => return Err(RouterError::MemberWithoutAccount(*id)),
                Some(a) if a.order_keys.is_empty() => {
                    return Err(RouterError::NoOrderKeys(*id));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Takes one unused order key of an account (call
    /// [`Directory::check_order_keys`] first).
    pub fn take_order_key(
        &mut self,
        account: &AccountId,
        out: &mut Vec<Record>,
    ) -> Result<SlotKey, RouterError> {
        let key = self
            .accounts
            .get_mut(account)
            .and_then(|a| a.order_keys.pop_first())
            .ok_or(RouterError::NoOrderKeys(*account))?;
        self.unused_keys = self.unused_keys.saturating_sub(1);
        self.order_key_owner.remove(&key);
        out.push(Record::OrderKey {
            account: *account,
            key,
            present: false,
        });
        Ok(SlotKey::from_bytes(key))
    }
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;
