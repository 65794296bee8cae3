//! C2SP signed-note: text signed by one or more keys.
//!
//! A note is its text (ending in a newline), a blank line, and one or more
//! signature lines `— <key name> base64(key ID || signature)`. Keys are
//! identified by name and a 32-bit key ID,
//! `SHA-256(name || 0x0A || signature type || public key)[:4]`; a verifier
//! key is written `<name>+<hex key ID>+base64(signature type || public key)`
//! and an Ed25519 signer key
//! `PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)`.
//!
//! [`Note::open`] follows the spec's rules: signatures from unknown keys are
//! kept but not trusted, a known key's failing signature rejects the whole
//! note, and a note without any verified known signature is rejected. The
//! signature types are pluggable through [`NoteVerifier`]: Ed25519 here
//! (type `0x01`), timestamped cosignatures in [`crate::cosignature`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::NoteError;

/// The largest note [`Note::parse`] accepts, in bytes. The spec asks for at
/// least 16 signatures of up to about 5 kB each; this is far above.
pub const MAX_NOTE_SIZE: usize = 1 << 20;

/// The most signature lines [`Note::parse`] accepts (the spec asks for at
/// least 16).
pub const MAX_SIGNATURES: usize = 100;

/// The signature type byte of Ed25519 note signatures.
pub const ALG_ED25519: u8 = 0x01;

/// The prefix of every signature line: em dash, space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Checks a key name: non-empty, no Unicode space, no `+`, no control
/// character.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(NoteError::KeyName(name.to_owned()));
    }
    Ok(())
}

/// The key ID of a key: `SHA-256(name || 0x0A || alg || public key)[:4]`
/// read as a big-endian `u32`.
pub fn key_id(name: &str, alg: u8, public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// One signature on a note: the key's name and ID and the signature bytes
/// (without the key ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The first 4 bytes of SHA-256 over the key name, a newline and the signature type and public key: which key made the signature.
    pub key_id: u32,
    /// The signature, in the key's signature type's format.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The signature line, `— <name> base64(key ID || signature)\n`.
    pub fn line(&self) -> String {
        let mut bytes = Vec::with_capacity(4 + self.signature.len());
        bytes.extend_from_slice(&self.key_id.to_be_bytes());
        bytes.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(bytes))
    }

    /// Parses one signature line, without its final newline.
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(NoteError::Malformed(
                "a signature line does not start with '— '",
            ))?;
        let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed(
            "a signature line has no space after the key name",
        ))?;
        check_key_name(name)?;
        let bytes = BASE64
            .decode(b64)
            .map_err(|_| NoteError::Malformed("a signature is not valid base64"))?;
        if bytes.len() < 5 {
            return Err(NoteError::Malformed(
                "a signature is shorter than a key ID and one byte",
            ));
        }
        let (id, signature) = bytes.split_at(4);
        let key_id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        Ok(Self {
            name: name.to_owned(),
            key_id,
            signature: signature.to_vec(),
        })
    }
}

/// A key that can check note signatures of one type.
pub trait NoteVerifier {
    /// The key name.
    fn name(&self) -> &str;
    /// The 4-byte ID signature lines name this key by.
    fn key_id(&self) -> u32;
    /// Whether `signature` (without key ID) is this key's over `text` (the
    /// note text, final newline included).
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool;
}

/// A note: text and signatures, parsed but not necessarily verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// Checks the characters of note text: no ASCII control other than newline.
fn check_chars(s: &str) -> Result<(), NoteError> {
    if s.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed(
            "a control character other than newline",
        ));
    }
    Ok(())
}

/// A note opened with [`Note::open`]: the signatures of known keys all
/// verified, and at least one did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNote {
    /// The note, with every signature it carried (known or not).
    pub note: Note,
    /// The `(name, key ID)` of each known key whose signature verified.
    pub verified_by: Vec<(String, u32)>,
}

impl Note {
    /// A note with `text` and no signatures yet. The text must be non-empty,
    /// end in a newline and hold no control character other than newlines.
    pub fn new(text: impl Into<String>) -> Result<Self, NoteError> {
        let text = text.into();
        if text.is_empty() || !text.ends_with('\n') {
            return Err(NoteError::Malformed("the text does not end in a newline"));
        }
        check_chars(&text)?;
        if text.len() > MAX_NOTE_SIZE {
            return Err(NoteError::TooLarge {
                len: text.len(),
                max: MAX_NOTE_SIZE,
            });
        }
        Ok(Self {
            text,
            signatures: Vec::new(),
        })
    }

    /// The text, final newline included.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signatures, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature, replacing any earlier one by the same key.
    pub fn add_signature(&mut self, signature: NoteSignature) {
        self.signatures
            .retain(|s| !(s.name == signature.name && s.key_id == signature.key_id));
        self.signatures.push(signature);
    }

    /// Signs the text with `signer` and adds the signature.
    pub fn sign(&mut self, signer: &Ed25519Signer) {
        let sig = signer.sign(self.text.as_bytes());
        self.add_signature(sig);
    }

    /// The encoded note: text, blank line, signature lines. Only
    /// meaningful once it has a signature.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
        }
        out
    }

    /// Parses an encoded note without verifying anything.
    pub fn parse(msg: &[u8]) -> Result<Self, NoteError> {
        if msg.len() > MAX_NOTE_SIZE {
            return Err(NoteError::TooLarge {
                len: msg.len(),
                max: MAX_NOTE_SIZE,
            });
        }
        let msg = std::str::from_utf8(msg).map_err(|_| NoteError::Malformed("not UTF-8"))?;
        check_chars(msg)?;
        // The text ends at the last blank line.
        let split = msg
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
        if sigs.is_empty() {
            return Err(NoteError::Malformed("no signature lines"));
        }
        let body = sigs.strip_suffix('\n').ok_or(NoteError::Malformed(
            "the last signature line has no newline",
        ))?;
        let mut signatures = Vec::new();
        for line in body.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures {
                    max: MAX_SIGNATURES,
                });
            }
            signatures.push(NoteSignature::parse_line(line)?);
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Parses and verifies a note against the `known` keys.
    ///
    /// A signature whose name and key ID match a known key must verify, or
    /// the note is rejected ([`NoteError::InvalidSignature`]); signatures of
    /// unknown keys are kept unverified; at least one known key must have
    /// signed ([`NoteError::NoKnownSignature`]). Repeated signatures by one
    /// key are checked once.
    pub fn open(msg: &[u8], known: &[&dyn NoteVerifier]) -> Result<VerifiedNote, NoteError> {
        let note = Self::parse(msg)?;
        let mut verified_by: Vec<(String, u32)> = Vec::new();
        for sig in &note.signatures {
            let Some(key) = known
                .iter()
                .find(|k| k.name() == sig.name && k.key_id() == sig.key_id)
            else {
                continue;
            };
            if !key.verify(note.text.as_bytes(), &sig.signature) {
                return Err(NoteError::InvalidSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            if !verified_by
                .iter()
                .any(|(n, id)| *n == sig.name && *id == sig.key_id)
            {
                verified_by.push((sig.name.clone(), sig.key_id));
            }
        }
        if verified_by.is_empty() {
            return Err(NoteError::NoKnownSignature);
        }
        Ok(VerifiedNote { note, verified_by })
    }
}

/// Splits a `<name>+<hex id>+<base64 key>` string, checking the name and
/// the hex ID's form.
pub(crate) fn split_key(s: &str) -> Option<(&str, u32, &str)> {
    let (name, rest) = s.split_once('+')?;
    let (hex_id, b64) = rest.split_once('+')?;
    if hex_id.len() != 8 || !hex_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = u32::from_str_radix(hex_id, 16).ok()?;
    Some((name, id, b64))
}

/// Decodes `base64(alg || 32-byte key)`.
pub(crate) fn decode_key(b64: &str) -> Option<(u8, [u8; 32])> {
    let bytes = BASE64.decode(b64).ok()?;
    let (alg, key) = bytes.split_first()?;
    Some((*alg, key.try_into().ok()?))
}

/// An Ed25519 note verifier key (signature type `0x01`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Ed25519Verifier {
    /// The verifier for `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, ALG_ED25519, key.as_bytes()),
            key,
        })
    }

    /// Parses a verifier key string, `<name>+<hex key ID>+base64(0x01 ||
    /// public key)`, checking that the ID is the one the name and key give.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let (name, id, b64) =
            split_key(vkey).ok_or(NoteError::VerifierKey("not <name>+<8 hex digits>+<base64>"))?;
        check_key_name(name)?;
        let (alg, key) =
            decode_key(b64).ok_or(NoteError::VerifierKey("the key is not base64 of 33 bytes"))?;
        if alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm(alg));
        }
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| NoteError::VerifierKey("not an Ed25519 public key"))?;
        let v = Self::new(name, key)?;
        if v.key_id != id {
            return Err(NoteError::KeyIdMismatch {
                got: id,
                expected: v.key_id,
            });
        }
        Ok(v)
    }

    /// The verifier key string.
    pub fn vkey(&self) -> String {
        let mut bytes = vec![ALG_ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(bytes))
    }

    /// The Ed25519 public key signatures are checked against.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl NoteVerifier for Ed25519Verifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        match Signature::from_slice(signature) {
            Ok(sig) => self.key.verify_strict(text, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// An Ed25519 note signer (signature type `0x01`).
pub struct Ed25519Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Signer({}+{:08x})", self.name, self.key_id)
    }
}

impl Ed25519Signer {
    /// The signer for the key with `seed` (RFC 8032 private key) under
    /// `name`.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, ALG_ED25519, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses a signer key string, `PRIVATE+KEY+<name>+<hex key
    /// ID>+base64(0x01 || seed)`, checking the ID against the public key.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::SignerKey("does not start with PRIVATE+KEY+"))?;
        let (name, id, b64) =
            split_key(rest).ok_or(NoteError::SignerKey("not <name>+<8 hex digits>+<base64>"))?;
        let (alg, seed) = decode_key(b64)
            .map(|(a, s)| (a, Zeroizing::new(s)))
            .ok_or(NoteError::SignerKey("the key is not base64 of 33 bytes"))?;
        if alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm(alg));
        }
        let s = Self::from_seed(name, &seed)?;
        if s.key_id != id {
            return Err(NoteError::KeyIdMismatch {
                got: id,
                expected: s.key_id,
            });
        }
        Ok(s)
    }

    /// The signer key string. It holds the private key.
    pub fn skey(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(vec![ALG_ED25519]);
        bytes.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(&*bytes)
        ))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte ID this key's signature lines carry.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Ed25519Verifier {
        Ed25519Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs note text.
    pub fn sign(&self, text: &[u8]) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text).to_bytes().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go's golang.org/x/mod/sumdb/note tests.
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    #[test]
    fn go_sign_vector() {
        let signer = Ed25519Signer::from_skey(PETER_SKEY).unwrap();
        assert_eq!(signer.verifier().vkey(), PETER_VKEY);
        assert_eq!(&*signer.skey(), PETER_SKEY);
        let mut note = Note::new(TEXT).unwrap();
        note.sign(&signer);
        assert_eq!(note.to_text(), format!("{TEXT}\n{PETER_SIG}"));
    }

    #[test]
    fn go_open_vectors() {
        let peter = Ed25519Verifier::from_vkey(PETER_VKEY).unwrap();
        let enoch = Ed25519Verifier::from_vkey(ENOCH_VKEY).unwrap();
        assert_eq!(peter.vkey(), PETER_VKEY);
        assert_eq!(enoch.key_id(), 0xaf0cfe78);
        let msg = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        // One known key: the other signature is kept, unverified.
        let v = Note::open(msg.as_bytes(), &[&peter]).unwrap();
        assert_eq!(v.verified_by, vec![("PeterNeumann".to_owned(), 0xc74f20a3)]);
        assert_eq!(v.note.text(), TEXT);
        assert_eq!(v.note.signatures().len(), 2);
        let v = Note::open(msg.as_bytes(), &[&peter, &enoch]).unwrap();
        assert_eq!(v.verified_by.len(), 2);
        // No known key.
        assert_eq!(
            Note::open(msg.as_bytes(), &[]),
            Err(NoteError::NoKnownSignature)
        );
        // A known key's bad signature rejects the note.
        let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert_eq!(
            Note::open(bad.as_bytes(), &[&peter]),
            Err(NoteError::InvalidSignature {
                name: "PeterNeumann".into(),
                key_id: 0xc74f20a3
            })
        );
    }

    #[test]
    fn go_malformed_notes() {
        let peter = Ed25519Verifier::from_vkey(PETER_VKEY).unwrap();
        let bad = [
            TEXT.to_owned(),
            format!("{TEXT}\n"),
            format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
            format!("\x01{TEXT}\n{PETER_SIG}"),
            format!(
                "{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
            ),
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        ];
        for msg in &bad {
            let err = Note::open(msg.as_bytes(), &[&peter]).unwrap_err();
            assert!(
                matches!(err, NoteError::Malformed(_) | NoteError::KeyName(_)),
                "{msg:?}: {err:?}"
            );
        }
        let mut not_utf8 = b"\xff".to_vec();
        not_utf8.extend_from_slice(format!("{TEXT}\n{PETER_SIG}").as_bytes());
        assert!(matches!(
            Note::open(&not_utf8, &[&peter]),
            Err(NoteError::Malformed(_))
        ));
    }

    #[test]
    fn c2sp_spec_example() {
        let v = Ed25519Verifier::from_vkey(
            "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        )
        .unwrap();
        let msg = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        let opened = Note::open(msg.as_bytes(), &[&v]).unwrap();
        assert_eq!(opened.note.text(), "This is an example message.\n");
    }

    #[test]
    fn keys_are_checked() {
        // Wrong key ID.
        assert!(matches!(
            Ed25519Verifier::from_vkey(
                "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(NoteError::KeyIdMismatch { .. })
        ));
        // Unknown algorithm.
        assert!(matches!(
            Ed25519Verifier::from_vkey(
                "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(NoteError::UnsupportedAlgorithm(2))
        ));
        for bad in [
            "",
            "a+b",
            "a b+c74f20a3+AA==",
            "x+c74f20a+AA==",
            "x+c74f20a3+%%",
        ] {
            assert!(Ed25519Verifier::from_vkey(bad).is_err(), "{bad}");
        }
        assert!(Ed25519Signer::from_seed("a+b", &[0; 32]).is_err());
        assert!(Ed25519Signer::from_seed("", &[0; 32]).is_err());
        assert!(Ed25519Signer::from_seed("a\u{a0}b", &[0; 32]).is_err());
    }

    #[test]
    fn too_many_signatures_are_refused() {
        let signer = Ed25519Signer::from_seed("k", &[1; 32]).unwrap();
        let sig = signer.sign(b"x\n");
        let mut msg = "x\n\n".to_owned();
        for _ in 0..=MAX_SIGNATURES {
            msg.push_str(&sig.line());
        }
        assert_eq!(
            Note::parse(msg.as_bytes()),
            Err(NoteError::TooManySignatures {
                max: MAX_SIGNATURES
            })
        );
    }

    proptest::proptest! {
        /// Parsing never panics, and what a signer signs opens.
        #[test]
        fn parse_is_total_and_signing_round_trips(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            text in "[a-z \n]{0,80}",
        ) {
            let _ = Note::parse(&bytes);
            let text = format!("{text}\n");
            let signer = Ed25519Signer::from_seed("k", &[5; 32]).unwrap();
            let mut note = Note::new(text.clone()).unwrap();
            note.sign(&signer);
            let opened = Note::open(note.to_text().as_bytes(), &[&signer.verifier()]).unwrap();
            proptest::prop_assert_eq!(opened.note.text(), text.as_str());
        }
    }
}
