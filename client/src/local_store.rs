//! The client's local state, encrypted at rest.
//!
//! A redb file holds records `(namespace, key) -> value`. Nothing in the file
//! is readable without the store secret (a passphrase or a 32-byte key
//! file): record keys are replaced by keyed BLAKE3 hashes, and each record's
//! original key and value are sealed together with XChaCha20-Poly1305 under
//! a fresh random nonce, with the hashed key as associated data so records
//! cannot be swapped. A lost device leaks the number and sizes of records,
//! nothing else.
//!
//! ```text
//! master = Argon2id(passphrase, salt, params)      or the key file's 32 bytes
//! cipher = derive_key("grompi v1 local store cipher", master)
//! index  = derive_key("grompi v1 local store index", master)
//! slot   = keyed(index, ns)[..16] || keyed(index, bytes(ns) || key)[..16]
//! record = nonce(24) || XChaCha20-Poly1305(cipher, nonce, bytes(key) || value,
//!                                          aad = "grompi v1 local store record" || slot)
//! check  = the record sealed in the header under slot
//!          "check" || u32_be(memory_kib) || u32_be(iterations)
//!                  || u32_be(parallelism) || salt,
//!          plaintext "grompi v1 local store check"
//! ```
//!
//! The header (salt and Argon2id parameters) is stored in the clear, so it
//! is checked twice before it is used: the parameters must lie within
//! [`KdfParams::check`]'s bounds (a huge `memory_kib` would otherwise
//! exhaust memory on unlock), and they are part of the check record's
//! associated data, so a header altered within the bounds does not unlock.
//! Stores made before the header was authenticated sealed the check under
//! the slot `"check"` alone; they still open (within the bounds), and their
//! check is then sealed again over the header, once.
//!
//! `bytes(x)` is `u64_be(len(x)) || x`; the other concatenations are raw.
//! The context strings are [`grompi_proto::context`] constants, and the
//! derivations are pinned by the `local_store_*` vectors in
//! `proto/vectors/v1.json`.
//!
//! Every write commits durably (fsync) before it returns.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use grompi_proto::context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::{Database, ReadableDatabase, TableDefinition};
use std::path::Path;
use std::sync::Mutex;
use zeroize::Zeroizing;

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const CIPHER_CONTEXT: &str = context::LOCAL_STORE_CIPHER;
const INDEX_CONTEXT: &str = context::LOCAL_STORE_INDEX;
const RECORD_AAD: &[u8] = context::LOCAL_STORE_RECORD.as_bytes();
const CHECK_PLAINTEXT: &[u8] = context::LOCAL_STORE_CHECK.as_bytes();
const NONCE_BYTES: usize = 24;
const SALT_BYTES: usize = 16;
/// The check record's slot in stores made before the header was
/// authenticated.
const LEGACY_CHECK_SLOT: &[u8] = b"check";

/// Largest accepted Argon2id memory cost, in KiB (1 GiB, 16 times the
/// default).
pub const KDF_MEMORY_KIB_MAX: u32 = 1024 * 1024;
/// Largest accepted number of Argon2id passes.
pub const KDF_ITERATIONS_MAX: u32 = 32;
/// Largest accepted number of Argon2id lanes.
pub const KDF_PARALLELISM_MAX: u32 = 16;

/// Why the local store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalStoreError {
    /// The database file could not be opened, read or written.
    #[error("local store storage: {0}")]
    Storage(#[from] redb::Error),
    /// The passphrase or key file does not open this store (or the store's
    /// header was altered: its parameters are authenticated).
    #[error(
        "the passphrase or key file does not open this local store \
         (or the store's header, its salt or key derivation parameters, was altered)"
    )]
    WrongSecret,
    /// The store's header is damaged or from an unknown version.
    #[error("local store is damaged: {0}")]
    Corrupt(&'static str),
    /// A record did not decrypt: it was altered or moved.
    #[error("a record in the local store was altered and does not decrypt")]
    Tampered,
    /// The key derivation parameters are not accepted by Argon2.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// A key derivation parameter lies outside the accepted bounds; nothing
    /// was derived with it.
    #[error(
        "local store key derivation parameter {field} = {value} is outside the accepted \
         range {min}..={max} (a store whose header says so was altered or written by \
         another program); refusing to derive a key with it"
    )]
    KdfOutOfBounds {
        /// The parameter: `memory_kib`, `iterations` or `parallelism`.
        field: &'static str,
        /// The value the store's header gives it.
        value: u32,
        /// The smallest value this build accepts for it.
        min: u32,
        /// The largest value this build accepts for it.
        max: u32,
    },
}

fn storage<E: Into<redb::Error>>(e: E) -> LocalStoreError {
    LocalStoreError::Storage(e.into())
}

/// What opens a store.
pub enum StoreSecret {
    /// A passphrase, stretched with Argon2id.
    Passphrase(Zeroizing<String>),
    /// 32 random bytes kept in a key file.
    KeyFile(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for StoreSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("StoreSecret::Passphrase(..)"),
            Self::KeyFile(_) => f.write_str("StoreSecret::KeyFile(..)"),
        }
    }
}

/// Argon2id cost parameters, stored in the file so a store opens with the
/// parameters it was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: a deliberate cost on every unlock.
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters for tests only.
    pub const fn insecure_for_tests() -> Self {
        Self {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    /// Checks every parameter against its bounds: 1 to
    /// [`KDF_PARALLELISM_MAX`] lanes, 1 to [`KDF_ITERATIONS_MAX`] passes,
    /// and `8 * parallelism` (Argon2's minimum) to [`KDF_MEMORY_KIB_MAX`]
    /// KiB. The error names the first parameter out of bounds.
    pub fn check(self) -> Result<(), LocalStoreError> {
        let bound = |field: &'static str, value: u32, min: u32, max: u32| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(LocalStoreError::KdfOutOfBounds {
                    field,
                    value,
                    min,
                    max,
                })
            }
        };
        bound("parallelism", self.parallelism, 1, KDF_PARALLELISM_MAX)?;
        bound("iterations", self.iterations, 1, KDF_ITERATIONS_MAX)?;
        bound(
            "memory_kib",
            self.memory_kib,
            8 * self.parallelism,
            KDF_MEMORY_KIB_MAX,
        )
    }

    fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.memory_kib.to_be_bytes());
        out[4..8].copy_from_slice(&self.iterations.to_be_bytes());
        out[8..].copy_from_slice(&self.parallelism.to_be_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<u32> {
            Some(u32::from_be_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
        };
        if bytes.len() != 12 {
            return None;
        }
        Some(Self {
            memory_kib: word(0)?,
            iterations: word(4)?,
            parallelism: word(8)?,
        })
    }
}

/// The slot (associated data after the record label) of the header's check
/// record: `"check" || kdf parameters || salt`, so the header is
/// authenticated by the check.
fn check_slot(params: KdfParams, salt: &[u8]) -> Vec<u8> {
    [LEGACY_CHECK_SLOT, &params.to_bytes()[..], salt].concat()
}

/// The two keys derived from the store secret; zeroized on drop.
struct StoreKeys {
    cipher: Zeroizing<[u8; 32]>,
    index: Zeroizing<[u8; 32]>,
}

impl StoreKeys {
    fn derive(
        secret: &StoreSecret,
        salt: &[u8],
        params: KdfParams,
    ) -> Result<Self, LocalStoreError> {
        let mut master = Zeroizing::new([0u8; 32]);
        match secret {
            StoreSecret::KeyFile(bytes) => master.copy_from_slice(&bytes[..]),
            StoreSecret::Passphrase(p) => {
                let argon_params = argon2::Params::new(
                    params.memory_kib,
                    params.iterations,
                    params.parallelism,
                    Some(32),
                )
                .map_err(|e| LocalStoreError::Kdf(e.to_string()))?;
                argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    argon_params,
                )
                .hash_password_into(p.as_bytes(), salt, &mut master[..])
                .map_err(|e| LocalStoreError::Kdf(e.to_string()))?;
            }
        }
        Ok(Self {
            cipher: Zeroizing::new(blake3::derive_key(CIPHER_CONTEXT, &master[..])),
            index: Zeroizing::new(blake3::derive_key(INDEX_CONTEXT, &master[..])),
        })
    }

    fn slot(&self, namespace: &str, key: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&self.prefix(namespace));
        let mut h = blake3::Hasher::new_keyed(&self.index);
        h.update(&(namespace.len() as u64).to_be_bytes());
        h.update(namespace.as_bytes());
        h.update(key);
        out[16..].copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }

    fn prefix(&self, namespace: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        let h = blake3::keyed_hash(&self.index, namespace.as_bytes());
        out.copy_from_slice(&h.as_bytes()[..16]);
        out
    }

    fn seal(&self, nonce: [u8; NONCE_BYTES], slot: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(&Key::from(*self.cipher));
        let aad = [RECORD_AAD, slot].concat();
        // Encryption only fails for inputs beyond 256 GiB.
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        [&nonce[..], &sealed].concat()
    }

    fn open(&self, slot: &[u8], record: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let nonce: [u8; NONCE_BYTES] = record.get(..NONCE_BYTES)?.try_into().ok()?;
        let cipher = XChaCha20Poly1305::new(&Key::from(*self.cipher));
        let aad = [RECORD_AAD, slot].concat();
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: record.get(NONCE_BYTES..)?,
                    aad: &aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// A record as read back: its key and its value (zeroized on drop).
pub type Record = (Vec<u8>, Zeroizing<Vec<u8>>);

/// An open, unlocked local store.
pub struct LocalStore {
    db: Database,
    keys: StoreKeys,
    nonces: Mutex<StdRng>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalStore(..)")
    }
}

impl LocalStore {
    /// Opens the store at `path`, creating it with `params` if it does not
    /// exist. `rng` supplies the salt of a new store and seeds the nonce
    /// generator; pass the operating system's RNG.
    pub fn open<R: rand::CryptoRng + ?Sized>(
        path: &Path,
        secret: &StoreSecret,
        params: KdfParams,
        rng: &mut R,
    ) -> Result<Self, LocalStoreError> {
        let db = Database::create(path).map_err(storage)?;
        let existing = {
            let read = db.begin_read().map_err(storage)?;
            match read.open_table(META) {
                Ok(t) => {
                    let get = |k: &str| -> Result<Option<Vec<u8>>, LocalStoreError> {
                        Ok(t.get(k).map_err(storage)?.map(|v| v.value().to_vec()))
                    };
                    Some((get("salt")?, get("kdf")?, get("check")?))
                }
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(storage(e)),
            }
        };
        let nonces = Mutex::new(StdRng::from_rng(rng));
        match existing {
            Some((Some(salt), Some(kdf), Some(check))) => {
                if salt.len() != SALT_BYTES {
                    return Err(LocalStoreError::Corrupt("salt length"));
                }
                let params = KdfParams::from_bytes(&kdf)
                    .ok_or(LocalStoreError::Corrupt("kdf parameters"))?;
                // Bounded before anything is derived with them.
                params.check()?;
                let keys = StoreKeys::derive(secret, &salt, params)?;
                let checks = |slot: &[u8]| {
                    keys.open(slot, &check)
                        .is_some_and(|p| p.as_slice() == CHECK_PLAINTEXT)
                };
                let slot = check_slot(params, &salt);
                if checks(&slot) {
                    return Ok(Self { db, keys, nonces });
                }
                if !checks(LEGACY_CHECK_SLOT) {
                    return Err(LocalStoreError::WrongSecret);
                }
                // A store from before the header was authenticated: seal
                // its check over the header from now on.
                let mut nonce = [0u8; NONCE_BYTES];
                rng.fill_bytes(&mut nonce);
                let check = keys.seal(nonce, &slot, CHECK_PLAINTEXT);
                let write = db.begin_write().map_err(storage)?;
                write
                    .open_table(META)
                    .map_err(storage)?
                    .insert("check", &check[..])
                    .map_err(storage)?;
                write.commit().map_err(storage)?;
                Ok(Self { db, keys, nonces })
            }
            Some(_) => Err(LocalStoreError::Corrupt("header incomplete")),
            None => {
                params.check()?;
                let mut salt = [0u8; SALT_BYTES];
                rng.fill_bytes(&mut salt);
                let keys = StoreKeys::derive(secret, &salt, params)?;
                let mut nonce = [0u8; NONCE_BYTES];
                rng.fill_bytes(&mut nonce);
                let check = keys.seal(nonce, &check_slot(params, &salt), CHECK_PLAINTEXT);
                let write = db.begin_write().map_err(storage)?;
                {
                    let mut meta = write.open_table(META).map_err(storage)?;
                    meta.insert("salt", &salt[..]).map_err(storage)?;
                    meta.insert("kdf", &params.to_bytes()[..])
                        .map_err(storage)?;
                    meta.insert("check", &check[..]).map_err(storage)?;
                    write.open_table(RECORDS).map_err(storage)?;
                }
                write.commit().map_err(storage)?;
                Ok(Self { db, keys, nonces })
            }
        }
    }

    fn nonce(&self) -> [u8; NONCE_BYTES] {
        let mut nonce = [0u8; NONCE_BYTES];
        let mut rng = match self.nonces.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        rng.fill_bytes(&mut nonce);
        nonce
    }

    fn seal_record(&self, slot: &[u8; 32], key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut plain = Zeroizing::new(Vec::with_capacity(8 + key.len() + value.len()));
        plain.extend_from_slice(&(key.len() as u64).to_be_bytes());
        plain.extend_from_slice(key);
        plain.extend_from_slice(value);
        self.keys.seal(self.nonce(), slot, &plain)
    }

    fn open_record(&self, slot: &[u8], record: &[u8]) -> Result<Record, LocalStoreError> {
        let plain = self
            .keys
            .open(slot, record)
            .ok_or(LocalStoreError::Tampered)?;
        let len_bytes: [u8; 8] = plain
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or(LocalStoreError::Tampered)?;
        let len = usize::try_from(u64::from_be_bytes(len_bytes))
            .map_err(|_| LocalStoreError::Tampered)?;
        let key = plain
            .get(8..8usize.saturating_add(len))
            .ok_or(LocalStoreError::Tampered)?
            .to_vec();
        let value = Zeroizing::new(plain.get(8 + len..).unwrap_or_default().to_vec());
        Ok((key, value))
    }

    /// Writes several records in one durable commit.
    pub fn put_all(&self, records: &[(&str, &[u8], &[u8])]) -> Result<(), LocalStoreError> {
        let write = self.db.begin_write().map_err(storage)?;
        {
            let mut table = write.open_table(RECORDS).map_err(storage)?;
            for (namespace, key, value) in records {
                let slot = self.keys.slot(namespace, key);
                let sealed = self.seal_record(&slot, key, value);
                table.insert(&slot[..], &sealed[..]).map_err(storage)?;
            }
        }
        write.commit().map_err(storage)
    }

    /// Writes one record durably.
    pub fn put(&self, namespace: &str, key: &[u8], value: &[u8]) -> Result<(), LocalStoreError> {
        self.put_all(&[(namespace, key, value)])
    }

    /// Reads one record.
    pub fn get(
        &self,
        namespace: &str,
        key: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, LocalStoreError> {
        let slot = self.keys.slot(namespace, key);
        let read = self.db.begin_read().map_err(storage)?;
        let table = read.open_table(RECORDS).map_err(storage)?;
        let Some(record) = table.get(&slot[..]).map_err(storage)? else {
            return Ok(None);
        };
        let (stored_key, value) = self.open_record(&slot, record.value())?;
        if stored_key != key {
            return Err(LocalStoreError::Tampered);
        }
        Ok(Some(value))
    }

    /// Deletes one record durably; deleting a missing record is not an error.
    pub fn delete(&self, namespace: &str, key: &[u8]) -> Result<(), LocalStoreError> {
        let slot = self.keys.slot(namespace, key);
        let write = self.db.begin_write().map_err(storage)?;
        {
            let mut table = write.open_table(RECORDS).map_err(storage)?;
            table.remove(&slot[..]).map_err(storage)?;
        }
        write.commit().map_err(storage)
    }

    /// Every record of a namespace, as `(key, value)`, in no particular order.
    pub fn list(&self, namespace: &str) -> Result<Vec<Record>, LocalStoreError> {
        let prefix = self.keys.prefix(namespace);
        let mut low = [0u8; 32];
        low[..16].copy_from_slice(&prefix);
        let mut high = [0xffu8; 32];
        high[..16].copy_from_slice(&prefix);
        let read = self.db.begin_read().map_err(storage)?;
        let table = read.open_table(RECORDS).map_err(storage)?;
        let mut out = Vec::new();
        for item in table.range(&low[..]..=&high[..]).map_err(storage)? {
            let (slot, record) = item.map_err(storage)?;
            out.push(self.open_record(slot.value(), record.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "local_store_tests.rs"]
mod tests;
