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
mod tests {
    use super::*;
    use redb::ReadableTable;

    fn secret(p: &str) -> StoreSecret {
        StoreSecret::Passphrase(Zeroizing::new(p.to_owned()))
    }

    fn open(path: &Path, s: &StoreSecret) -> Result<LocalStore, LocalStoreError> {
        LocalStore::open(path, s, KdfParams::insecure_for_tests(), &mut rand::rng())
    }

    #[test]
    fn records_survive_reopening_and_nothing_is_readable_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = open(&path, &secret("correct horse")).unwrap();
            store
                .put("conversations", b"alpha", b"the secret plaintext")
                .unwrap();
            store
                .put_all(&[
                    ("conversations", b"beta", b"second"),
                    ("identity", b"keys", b"identity secret bytes"),
                ])
                .unwrap();
        }
        let raw = std::fs::read(&path).unwrap();
        for needle in [
            &b"the secret plaintext"[..],
            b"alpha",
            b"conversations",
            b"identity",
        ] {
            assert!(
                !raw.windows(needle.len()).any(|w| w == needle),
                "{:?} is readable in the file",
                String::from_utf8_lossy(needle)
            );
        }
        let store = open(&path, &secret("correct horse")).unwrap();
        assert_eq!(
            store
                .get("conversations", b"alpha")
                .unwrap()
                .unwrap()
                .as_slice(),
            b"the secret plaintext"
        );
        let mut listed: Vec<_> = store
            .list("conversations")
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            vec![
                (b"alpha".to_vec(), b"the secret plaintext".to_vec()),
                (b"beta".to_vec(), b"second".to_vec())
            ]
        );
        assert_eq!(store.list("identity").unwrap().len(), 1);
        assert!(store.get("conversations", b"gamma").unwrap().is_none());
        store.delete("conversations", b"alpha").unwrap();
        assert!(store.get("conversations", b"alpha").unwrap().is_none());
    }

    #[test]
    fn a_wrong_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        drop(open(&path, &secret("right")).unwrap());
        assert!(matches!(
            open(&path, &secret("wrong")),
            Err(LocalStoreError::WrongSecret)
        ));
        assert!(matches!(
            open(&path, &StoreSecret::KeyFile(Zeroizing::new([1; 32]))),
            Err(LocalStoreError::WrongSecret)
        ));
    }

    #[test]
    fn key_files_open_stores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let key = StoreSecret::KeyFile(Zeroizing::new([9; 32]));
        open(&path, &key).unwrap().put("n", b"k", b"v").unwrap();
        assert_eq!(
            open(&path, &key)
                .unwrap()
                .get("n", b"k")
                .unwrap()
                .unwrap()
                .as_slice(),
            b"v"
        );
    }

    #[test]
    fn moved_or_altered_records_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = open(&path, &secret("p")).unwrap();
        store.put("n", b"a", b"value a").unwrap();
        store.put("n", b"b", b"value b").unwrap();
        // Move record a's ciphertext into b's place.
        let slot_a = store.keys.slot("n", b"a");
        let slot_b = store.keys.slot("n", b"b");
        let write = store.db.begin_write().unwrap();
        {
            let mut t = write.open_table(RECORDS).unwrap();
            let a = t.get(&slot_a[..]).unwrap().unwrap().value().to_vec();
            t.insert(&slot_b[..], &a[..]).unwrap();
            let mut flipped = a.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            t.insert(&slot_a[..], &flipped[..]).unwrap();
        }
        write.commit().unwrap();
        assert!(matches!(
            store.get("n", b"b"),
            Err(LocalStoreError::Tampered)
        ));
        assert!(matches!(
            store.get("n", b"a"),
            Err(LocalStoreError::Tampered)
        ));
    }

    fn vector(name: &str) -> grompi_proto::vectors::Vector {
        grompi_proto::vectors::find(name).unwrap()
    }

    fn key32(bytes: Vec<u8>) -> [u8; 32] {
        bytes.try_into().unwrap()
    }

    #[test]
    fn derivations_match_the_published_vectors() {
        let cipher_v = vector("local_store_cipher_key");
        let index_v = vector("local_store_index_key");
        assert_eq!(cipher_v.context.as_deref(), Some(CIPHER_CONTEXT));
        assert_eq!(index_v.context.as_deref(), Some(INDEX_CONTEXT));
        // A key file's bytes are the master key; the salt is not used.
        let master = key32(cipher_v.field_bytes("master").unwrap());
        assert_eq!(index_v.field_bytes("master").unwrap(), master);
        let keys = StoreKeys::derive(
            &StoreSecret::KeyFile(Zeroizing::new(master)),
            b"salt unused here",
            KdfParams::insecure_for_tests(),
        )
        .unwrap();
        assert_eq!(keys.cipher.to_vec(), cipher_v.output_bytes().unwrap());
        assert_eq!(keys.index.to_vec(), index_v.output_bytes().unwrap());

        // Slots: two keyed hashes under the index key, 16 bytes of each.
        let prefix_v = vector("local_store_slot_prefix");
        let suffix_v = vector("local_store_slot_suffix");
        for v in [&prefix_v, &suffix_v] {
            assert_eq!(v.key_bytes().unwrap(), keys.index.to_vec());
        }
        let namespace = prefix_v.fields["namespace"].as_str().unwrap();
        let record_key = prefix_v.field_bytes("record_key").unwrap();
        let slot = keys.slot(namespace, &record_key);
        assert_eq!(slot[..16], prefix_v.output_bytes().unwrap()[..16]);
        assert_eq!(slot[16..], suffix_v.output_bytes().unwrap()[..16]);
        assert_eq!(keys.prefix(namespace)[..], slot[..16]);

        // A record: seal() authenticates exactly the published AAD, under
        // the published cipher key.
        let record_v = vector("local_store_record_aad");
        assert_eq!(
            record_v.context.as_deref(),
            Some(context::LOCAL_STORE_RECORD)
        );
        assert_eq!(record_v.field_bytes("slot").unwrap(), slot);
        let cipher = XChaCha20Poly1305::new(&Key::from(key32(cipher_v.output_bytes().unwrap())));
        let nonce = [0x5a; NONCE_BYTES];
        let sealed = keys.seal(nonce, &slot, b"a value");
        let opened = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed[NONCE_BYTES..],
                    aad: &record_v.input_bytes().unwrap(),
                },
            )
            .unwrap();
        assert_eq!(opened, b"a value");

        // The header check: the published plaintext, sealed independently
        // under the published AAD, is what open() accepts as the check.
        let check_aad = vector("local_store_check_aad");
        let check_plain = vector("local_store_check_plaintext");
        assert_eq!(
            check_plain.context.as_deref(),
            Some(context::LOCAL_STORE_CHECK)
        );
        assert_eq!(check_plain.input_bytes().unwrap(), CHECK_PLAINTEXT);
        assert_eq!(check_aad.field_bytes("slot").unwrap(), b"check");
        let check = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &check_plain.input_bytes().unwrap(),
                    aad: &check_aad.input_bytes().unwrap(),
                },
            )
            .unwrap();
        let record = [&nonce[..], &check].concat();
        assert_eq!(
            keys.open(b"check", &record).unwrap().as_slice(),
            CHECK_PLAINTEXT
        );
    }

    fn set_meta(path: &Path, key: &str, value: &[u8]) {
        let db = Database::create(path).unwrap();
        let write = db.begin_write().unwrap();
        write.open_table(META).unwrap().insert(key, value).unwrap();
        write.commit().unwrap();
    }

    fn get_meta(path: &Path, key: &str) -> Vec<u8> {
        let db = Database::create(path).unwrap();
        let read = db.begin_read().unwrap();
        let table = read.open_table(META).unwrap();
        table.get(key).unwrap().unwrap().value().to_vec()
    }

    fn params(memory_kib: u32, iterations: u32, parallelism: u32) -> KdfParams {
        KdfParams {
            memory_kib,
            iterations,
            parallelism,
        }
    }

    #[test]
    fn kdf_parameters_out_of_bounds_are_refused_before_deriving() {
        KdfParams::default().check().unwrap();
        KdfParams::insecure_for_tests().check().unwrap();
        params(KDF_MEMORY_KIB_MAX, KDF_ITERATIONS_MAX, KDF_PARALLELISM_MAX)
            .check()
            .unwrap();
        for (p, field) in [
            (params(u32::MAX, 3, 1), "memory_kib"),
            (params(KDF_MEMORY_KIB_MAX + 1, 3, 1), "memory_kib"),
            (params(15, 3, 2), "memory_kib"),
            (params(65536, 0, 1), "iterations"),
            (params(65536, u32::MAX, 1), "iterations"),
            (params(65536, 3, 0), "parallelism"),
            (params(65536, 3, 1000), "parallelism"),
        ] {
            let e = p.check().unwrap_err();
            assert!(
                matches!(e, LocalStoreError::KdfOutOfBounds { field: f, .. } if f == field),
                "{p:?}: {e}"
            );
            assert!(e.to_string().contains(field), "{e}");
        }

        // A new store is not created with them.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let e = LocalStore::open(
            &path,
            &secret("p"),
            params(u32::MAX, 1, 1),
            &mut rand::rng(),
        )
        .unwrap_err();
        assert!(matches!(
            e,
            LocalStoreError::KdfOutOfBounds {
                field: "memory_kib",
                ..
            }
        ));

        // A stored header asking for 4 TiB is refused, naming the field,
        // instead of being handed to Argon2.
        let path = dir.path().join("other.redb");
        drop(open(&path, &secret("p")).unwrap());
        set_meta(&path, "kdf", &params(u32::MAX, 1, 1).to_bytes());
        let e = open(&path, &secret("p")).unwrap_err();
        assert!(
            matches!(
                e,
                LocalStoreError::KdfOutOfBounds {
                    field: "memory_kib",
                    value: u32::MAX,
                    ..
                }
            ),
            "{e}"
        );
        set_meta(&path, "kdf", &params(64, 1_000_000, 1).to_bytes());
        assert!(matches!(
            open(&path, &secret("p")),
            Err(LocalStoreError::KdfOutOfBounds {
                field: "iterations",
                ..
            })
        ));
        set_meta(&path, "salt", b"short");
        assert!(matches!(
            open(&path, &secret("p")),
            Err(LocalStoreError::Corrupt(_))
        ));
    }

    #[test]
    fn an_altered_header_does_not_unlock() {
        let dir = tempfile::tempdir().unwrap();
        // A key file's master key does not depend on the parameters, so
        // only the authenticated check notices that they changed.
        let key = StoreSecret::KeyFile(Zeroizing::new([4; 32]));
        let path = dir.path().join("key.redb");
        open(&path, &key).unwrap().put("n", b"k", b"v").unwrap();
        let original = get_meta(&path, "kdf");
        set_meta(&path, "kdf", &params(64, 2, 1).to_bytes());
        let e = open(&path, &key).unwrap_err();
        assert!(matches!(e, LocalStoreError::WrongSecret), "{e}");
        assert!(e.to_string().contains("key derivation parameters"), "{e}");
        set_meta(&path, "kdf", &original);
        let salt = get_meta(&path, "salt");
        set_meta(&path, "salt", &[0x11; SALT_BYTES]);
        assert!(matches!(
            open(&path, &key),
            Err(LocalStoreError::WrongSecret)
        ));
        set_meta(&path, "salt", &salt);
        assert_eq!(
            open(&path, &key)
                .unwrap()
                .get("n", b"k")
                .unwrap()
                .unwrap()
                .as_slice(),
            b"v"
        );

        // With a passphrase.
        let path = dir.path().join("pass.redb");
        drop(open(&path, &secret("p")).unwrap());
        set_meta(&path, "kdf", &params(128, 1, 1).to_bytes());
        assert!(matches!(
            open(&path, &secret("p")),
            Err(LocalStoreError::WrongSecret)
        ));
    }

    #[test]
    fn a_store_with_an_unauthenticated_header_opens_once_and_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let key = StoreSecret::KeyFile(Zeroizing::new([6; 32]));
        {
            let store = open(&path, &key).unwrap();
            store.put("n", b"k", b"v").unwrap();
            // Seal the check as stores did before the header was
            // authenticated: under the slot "check" alone.
            let legacy = store
                .keys
                .seal([3; NONCE_BYTES], LEGACY_CHECK_SLOT, CHECK_PLAINTEXT);
            let write = store.db.begin_write().unwrap();
            write
                .open_table(META)
                .unwrap()
                .insert("check", &legacy[..])
                .unwrap();
            write.commit().unwrap();
        }
        let store = open(&path, &key).unwrap();
        assert_eq!(store.get("n", b"k").unwrap().unwrap().as_slice(), b"v");
        drop(store);
        // The check now covers the header.
        let check = get_meta(&path, "check");
        let keys = StoreKeys::derive(&key, b"unused", KdfParams::insecure_for_tests()).unwrap();
        let salt = get_meta(&path, "salt");
        let slot = check_slot(KdfParams::insecure_for_tests(), &salt);
        assert_eq!(
            keys.open(&slot, &check).unwrap().as_slice(),
            CHECK_PLAINTEXT
        );
        assert!(keys.open(LEGACY_CHECK_SLOT, &check).is_none());
        set_meta(&path, "kdf", &params(64, 2, 1).to_bytes());
        assert!(matches!(
            open(&path, &key),
            Err(LocalStoreError::WrongSecret)
        ));
    }

    #[test]
    fn the_header_check_matches_the_published_vector() {
        let v = vector("local_store_check_header_aad");
        assert_eq!(v.context.as_deref(), Some(context::LOCAL_STORE_RECORD));
        let p = params(
            v.fields["memory_kib"].as_u64().unwrap() as u32,
            v.fields["iterations"].as_u64().unwrap() as u32,
            v.fields["parallelism"].as_u64().unwrap() as u32,
        );
        let salt = v.field_bytes("salt").unwrap();
        let slot = check_slot(p, &salt);
        assert_eq!(v.field_bytes("slot").unwrap(), slot);
        assert_eq!(v.input_bytes().unwrap(), [RECORD_AAD, &slot[..]].concat());
        // seal() authenticates exactly that associated data.
        let master = [0x42; 32];
        let keys =
            StoreKeys::derive(&StoreSecret::KeyFile(Zeroizing::new(master)), &salt, p).unwrap();
        let nonce = [0x5a; NONCE_BYTES];
        let sealed = keys.seal(nonce, &slot, CHECK_PLAINTEXT);
        let cipher = XChaCha20Poly1305::new(&Key::from(*keys.cipher));
        let opened = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed[NONCE_BYTES..],
                    aad: &v.input_bytes().unwrap(),
                },
            )
            .unwrap();
        assert_eq!(opened, CHECK_PLAINTEXT);
    }

    #[test]
    fn secrets_do_not_print() {
        assert!(!format!("{:?}", secret("hunter2")).contains("hunter2"));
    }
}
