//! Contacts: names bound to identities, trust on first use, and safety
//! numbers to compare out of band.
//!
//! An account id is the hash of the account's identity keys, so a name
//! bound to an account id is bound to its keys. The first time a name is
//! bound, the identity is trusted as it is (TOFU) and marked unverified.
//! Binding a known name to different keys is refused unless the user
//! explicitly replaces it, and then the contact is unverified again and
//! the change is reported loudly: it is either a new device or an attack.
//!
//! Safety number (both sides compute the same digits):
//!
//! ```text
//! (lo, hi) = the two identities ordered by account id
//! digest   = BLAKE3-XOF(derive_key mode, "grompi v1 safety number",
//!                       u8(1) || lo.signing || lo.session || hi.signing || hi.session)
//! digits   = 12 groups of 5: group g = u64_be(digest[8g..8g+8]) mod 100000
//! ```
//!
//! The [`Client`] methods at the end of this file keep contacts in the
//! encrypted store and fetch their identities from the router.

use super::store;
use super::{ApiError, Client};
use grompi_client_core::codec::Canonical;
use grompi_client_core::pairwise::IdentityKeys;
use grompi_proto::AccountId;

/// Context string of the safety number derivation (versioned).
pub const SAFETY_NUMBER_CONTEXT: &str = grompi_proto::context::SAFETY_NUMBER;
/// Version byte inside the safety number input.
pub const SAFETY_NUMBER_VERSION: u8 = 1;
/// Digit groups in a safety number.
pub const SAFETY_NUMBER_GROUPS: usize = 12;

/// The safety number of two identities: 60 digits in groups of five, the
/// same whichever side computes it.
pub fn safety_number(a: &IdentityKeys, b: &IdentityKeys) -> String {
    let (lo, hi) = if a.account_id() <= b.account_id() {
        (a, b)
    } else {
        (b, a)
    };
    let input = Canonical::new()
        .u8(SAFETY_NUMBER_VERSION)
        .fixed(&lo.signing)
        .fixed(&lo.session)
        .fixed(&hi.signing)
        .fixed(&hi.session);
    let mut hasher = blake3::Hasher::new_derive_key(SAFETY_NUMBER_CONTEXT);
    hasher.update(input.as_bytes());
    let mut digest = [0u8; SAFETY_NUMBER_GROUPS * 8];
    hasher.finalize_xof().fill(&mut digest);
    digest
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            format!("{:05}", u64::from_be_bytes(b) % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One contact.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Contact {
    /// The name the user gave the contact; unique among contacts, never sent.
    pub name: String,
    /// The account id (hex).
    pub account: String,
    /// Ed25519 identity key (hex).
    pub signing_key: String,
    /// Curve25519 identity key (hex).
    pub session_key: String,
    /// Whether the user compared the safety number and confirmed it.
    pub verified: bool,
    /// Identities this name was bound to before (hex account ids), oldest
    /// first: each entry is a key change the user accepted.
    pub previous: Vec<String>,
}

impl Contact {
    /// A new, unverified contact.
    pub fn new(name: &str, identity: &IdentityKeys) -> Self {
        Self {
            name: name.to_owned(),
            account: identity.account_id().to_hex(),
            signing_key: hex::encode(identity.signing),
            session_key: hex::encode(identity.session),
            verified: false,
            previous: Vec::new(),
        }
    }

    /// The identity keys, if the record is well-formed and its account id
    /// is the hash of its keys.
    pub fn identity(&self) -> Option<IdentityKeys> {
        let signing: [u8; 32] = hex::decode(&self.signing_key).ok()?.try_into().ok()?;
        let session: [u8; 32] = hex::decode(&self.session_key).ok()?.try_into().ok()?;
        let keys = IdentityKeys { signing, session };
        (keys.account_id().to_hex() == self.account).then_some(keys)
    }

    /// The account id, or `None` when the record is malformed or its
    /// stored id is not the hash of its keys.
    pub fn account_id(&self) -> Option<AccountId> {
        self.identity().map(|k| k.account_id())
    }
}

/// What binding a name to an identity did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// A new contact, trusted on first use (unverified).
    New(Contact),
    /// The name was already bound to exactly this identity.
    Unchanged(Contact),
    /// The name was bound to another identity and the caller allowed the
    /// replacement: the contact is unverified again. Show this loudly.
    Replaced {
        /// The contact as rebound to the new identity, unverified.
        contact: Contact,
        /// The account id it was bound to.
        old_account: String,
        /// Whether the old identity had been verified.
        was_verified: bool,
    },
    /// The name is bound to another identity and replacement was not
    /// allowed.
    Conflict {
        /// The contact as it stays, still bound to its old identity.
        existing: Contact,
    },
}

/// Binds `name` to `identity` given the existing record for the name.
pub fn bind(
    existing: Option<Contact>,
    name: &str,
    identity: &IdentityKeys,
    replace: bool,
) -> Binding {
    let Some(old) = existing else {
        return Binding::New(Contact::new(name, identity));
    };
    if old.identity().as_ref() == Some(identity) {
        return Binding::Unchanged(old);
    }
    if !replace {
        return Binding::Conflict { existing: old };
    }
    let mut contact = Contact::new(name, identity);
    contact.previous = old.previous.clone();
    contact.previous.push(old.account.clone());
    Binding::Replaced {
        contact,
        old_account: old.account,
        was_verified: old.verified,
    }
}

impl Client {
    /// Every contact, by name.
    pub fn contacts(&self) -> Result<Vec<Contact>, ApiError> {
        let mut all: Vec<Contact> = store::list_json::<Contact>(&self.store, store::CONTACTS)?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// A contact by name, or by account id (hex, or a unique prefix).
    pub fn contact(&self, what: &str) -> Result<Option<Contact>, ApiError> {
        if let Some(c) = store::get_json::<Contact>(&self.store, store::CONTACTS, what.as_bytes())?
        {
            return Ok(Some(c));
        }
        let lower = what.to_ascii_lowercase();
        let found: Vec<Contact> = self
            .contacts()?
            .into_iter()
            .filter(|c| lower.len() >= 8 && c.account.starts_with(&lower))
            .collect();
        match found.len() {
            0 | 1 => Ok(found.into_iter().next()),
            _ => Err(ApiError::Ambiguous(what.to_owned())),
        }
    }

    /// The local name of an account, when it is a contact (or this account).
    pub fn name_of(&self, account: &AccountId) -> Option<String> {
        if *account == self.account() {
            return Some("me".to_owned());
        }
        let hex = account.to_hex();
        self.contacts()
            .ok()?
            .into_iter()
            .find(|c| c.account == hex)
            .map(|c| c.name)
    }

    /// Resolves a contact name or account id (hex) to an account id.
    pub fn resolve_account(&self, what: &str) -> Result<AccountId, ApiError> {
        if let Some(c) = self.contact(what)? {
            return c
                .account_id()
                .ok_or_else(|| ApiError::Corrupt(format!("contact {what:?}")));
        }
        let bytes = hex::decode(what).map_err(|_| ApiError::UnknownContact(what.to_owned()))?;
        AccountId::parse("account", &bytes).map_err(|_| ApiError::UnknownContact(what.to_owned()))
    }

    /// Binds `name` to `account` (trust on first use): fetches the
    /// account's identity keys from the router and checks that they hash to
    /// the account id. A name bound to another identity is replaced only
    /// with `replace`; the result says what happened.
    pub async fn add_contact(
        &mut self,
        name: &str,
        account: AccountId,
        replace: bool,
    ) -> Result<Binding, ApiError> {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(ApiError::Refused(
                "a contact name is 1 to 64 printable characters".into(),
            ));
        }
        let bundle = self.fetch_bundle(account).await?;
        let existing = store::get_json::<Contact>(&self.store, store::CONTACTS, name.as_bytes())?;
        let binding = bind(existing, name, &bundle.identity, replace);
        match &binding {
            Binding::New(c) | Binding::Replaced { contact: c, .. } => {
                self.store
                    .put(store::CONTACTS, name.as_bytes(), &store::to_json(c)?)?;
            }
            Binding::Unchanged(_) | Binding::Conflict { .. } => {}
        }
        Ok(binding)
    }

    /// The safety number with a contact: the same 60 digits on both sides
    /// when neither identity was substituted. Compare it out of band.
    pub fn safety_number(&self, contact: &Contact) -> Result<String, ApiError> {
        let theirs = contact
            .identity()
            .ok_or_else(|| ApiError::Corrupt(format!("contact {:?}", contact.name)))?;
        Ok(safety_number(&self.identity(), &theirs))
    }

    /// Marks a contact verified (the user compared the safety number).
    pub fn mark_verified(&mut self, name: &str) -> Result<Contact, ApiError> {
        let mut c = self
            .contact(name)?
            .ok_or_else(|| ApiError::UnknownContact(name.to_owned()))?;
        c.verified = true;
        self.store
            .put(store::CONTACTS, c.name.as_bytes(), &store::to_json(&c)?)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(b: u8) -> IdentityKeys {
        IdentityKeys {
            signing: [b; 32],
            session: [b.wrapping_add(1); 32],
        }
    }

    #[test]
    fn safety_number_known_answer_and_symmetry() {
        let a = keys(1);
        let b = keys(7);
        let n = safety_number(&a, &b);
        assert_eq!(n, safety_number(&b, &a));
        // Known answer: a change to the context, version or layout fails this.
        assert_eq!(
            n,
            "77926 13135 03583 57927 77148 37246 66719 51369 22292 07767 59959 20435"
        );
        assert_eq!(n.split(' ').count(), SAFETY_NUMBER_GROUPS);
        // The layout, recomputed another way: the first four groups come
        // from the 32-byte derive_key output over the documented input.
        let (lo, hi) = if a.account_id() <= b.account_id() {
            (a, b)
        } else {
            (b, a)
        };
        let mut input = vec![SAFETY_NUMBER_VERSION];
        for k in [lo.signing, lo.session, hi.signing, hi.session] {
            input.extend_from_slice(&k);
        }
        let head = blake3::derive_key(SAFETY_NUMBER_CONTEXT, &input);
        let first: Vec<String> = head
            .chunks_exact(8)
            .map(|c| format!("{:05}", u64::from_be_bytes(c.try_into().unwrap()) % 100_000))
            .collect();
        assert!(n.starts_with(&first.join(" ")), "{n} vs {first:?}");
        assert!(n.split(' ').all(|g| g.len() == 5));
        assert_ne!(n, safety_number(&a, &keys(8)));
        let mut c = b;
        c.session[0] ^= 1;
        assert_ne!(n, safety_number(&a, &c));
    }

    #[test]
    fn safety_number_matches_the_published_vector() {
        let v = grompi_proto::vectors::find("safety_number").unwrap();
        assert_eq!(v.context.as_deref(), Some(SAFETY_NUMBER_CONTEXT));
        assert_eq!(v.fields["version"], u64::from(SAFETY_NUMBER_VERSION));
        assert_eq!(v.output_len, Some(SAFETY_NUMBER_GROUPS * 8));
        let identity = |side: &str| {
            let key = |k: &str| -> [u8; 32] {
                hex::decode(v.fields[side][k].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap()
            };
            IdentityKeys {
                signing: key("signing_key"),
                session: key("session_key"),
            }
        };
        let (lo, hi) = (identity("lo"), identity("hi"));
        let published = v.display.as_deref().unwrap();
        assert_eq!(safety_number(&lo, &hi), published);
        assert_eq!(safety_number(&hi, &lo), published);
        // The published digits are the documented rendering of the output.
        let digits: Vec<String> = v
            .output_bytes()
            .unwrap()
            .chunks_exact(8)
            .map(|c| format!("{:05}", u64::from_be_bytes(c.try_into().unwrap()) % 100_000))
            .collect();
        assert_eq!(digits.join(" "), published);
    }

    #[test]
    fn trust_on_first_use_and_key_changes() {
        let a = keys(1);
        let b = keys(3);
        let Binding::New(mut first) = bind(None, "bob", &a, false) else {
            panic!("first binding is new");
        };
        assert!(!first.verified);
        assert_eq!(first.identity(), Some(a));
        first.verified = true;
        assert!(matches!(
            bind(Some(first.clone()), "bob", &a, false),
            Binding::Unchanged(c) if c.verified
        ));
        assert!(matches!(
            bind(Some(first.clone()), "bob", &b, false),
            Binding::Conflict { existing } if existing == first
        ));
        match bind(Some(first.clone()), "bob", &b, true) {
            Binding::Replaced {
                contact,
                old_account,
                was_verified,
            } => {
                assert!(!contact.verified);
                assert!(was_verified);
                assert_eq!(old_account, first.account);
                assert_eq!(contact.previous, vec![first.account.clone()]);
                assert_eq!(contact.identity(), Some(b));
            }
            other => panic!("expected a replacement, got {other:?}"),
        }
        // A record whose id is not the hash of its keys is not an identity.
        let mut forged = first;
        forged.account = keys(9).account_id().to_hex();
        assert_eq!(forged.identity(), None);
    }
}
