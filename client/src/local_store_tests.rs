//! Tests of the encrypted local store: secrets, records, tampering, the
//! published vectors, locking.

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
    let keys = StoreKeys::derive(&StoreSecret::KeyFile(Zeroizing::new(master)), &salt, p).unwrap();
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
