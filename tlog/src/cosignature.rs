//! C2SP tlog-cosignature v1 (Ed25519): a witness's timestamped signature on
//! a checkpoint.
//!
//! The signed message is `cosignature/v1\n`, `time <t>\n`, then the whole
//! checkpoint text. The note signature is the key ID (computed with
//! signature type `0x04`) followed by the 8-byte big-endian timestamp and
//! the 64-byte Ed25519 signature.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::error::{CosignatureError, NoteError};
use crate::note::{NoteSignature, NoteVerifier, check_key_name, decode_key, key_id, split_key};
use zeroize::Zeroizing;

/// The signature type byte of timestamped Ed25519 cosignatures.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The length of a cosignature: timestamp and Ed25519 signature.
pub const COSIGNATURE_LEN: usize = 8 + 64;

/// The largest timestamp a cosignature may carry.
pub const MAX_TIMESTAMP: u64 = (1 << 63) - 1;

/// The message a v1 cosignature signs: the header line, the time line and
/// the checkpoint text (final newline included, no signatures).
pub fn message(timestamp: u64, checkpoint_text: &str) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}")
}

fn check_timestamp(timestamp: u64) -> Result<(), CosignatureError> {
    if timestamp == 0 || timestamp > MAX_TIMESTAMP {
        return Err(CosignatureError::Timestamp(timestamp));
    }
    Ok(())
}

/// A cosigner's key.
pub struct CosignatureSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CosignatureSigner({}+{:08x})", self.name, self.key_id)
    }
}

impl CosignatureSigner {
    /// The cosigner named `name` with the Ed25519 key of `seed`.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, CosignatureError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses a cosigner key string, `PRIVATE+KEY+<name>+<hex key
    /// ID>+base64(0x04 || seed)` (the C2SP signer key format with this
    /// signature type), checking the ID against the public key.
    pub fn from_skey(skey: &str) -> Result<Self, CosignatureError> {
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::SignerKey("does not start with PRIVATE+KEY+"))?;
        let (name, id, b64) =
            split_key(rest).ok_or(NoteError::SignerKey("not <name>+<8 hex digits>+<base64>"))?;
        let (alg, seed) = decode_key(b64)
            .map(|(a, s)| (a, Zeroizing::new(s)))
            .ok_or(NoteError::SignerKey("the key is not base64 of 33 bytes"))?;
        if alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::UnsupportedAlgorithm(alg).into());
        }
        let s = Self::from_seed(name, &seed)?;
        if s.key_id != id {
            return Err(NoteError::KeyIdMismatch {
                got: id,
                expected: s.key_id,
            }
            .into());
        }
        Ok(s)
    }

    /// The cosigner key string, `PRIVATE+KEY+<name>+<hex key
    /// ID>+base64(0x04 || seed)`. It holds the private key.
    pub fn skey(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(vec![ALG_COSIGNATURE_V1]);
        bytes.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(&*bytes)
        ))
    }

    /// The cosigner's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Cosigns checkpoint text at `timestamp` (POSIX seconds, 1..2^63).
    pub fn cosign(
        &self,
        checkpoint_text: &str,
        timestamp: u64,
    ) -> Result<NoteSignature, CosignatureError> {
        check_timestamp(timestamp)?;
        let sig = self
            .key
            .sign(message(timestamp, checkpoint_text).as_bytes());
        let mut signature = Vec::with_capacity(COSIGNATURE_LEN);
        signature.extend_from_slice(&timestamp.to_be_bytes());
        signature.extend_from_slice(&sig.to_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature,
        })
    }
}

/// A cosigner's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// The verifier for `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, CosignatureError> {
        check_key_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, key.as_bytes()),
            key,
        })
    }

    /// Parses a verifier key string with signature type `0x04`.
    pub fn from_vkey(vkey: &str) -> Result<Self, CosignatureError> {
        let (name, rest) = vkey
            .split_once('+')
            .ok_or(NoteError::VerifierKey("not <name>+<hex id>+<base64>"))?;
        let (id, b64) = rest
            .split_once('+')
            .ok_or(NoteError::VerifierKey("not <name>+<hex id>+<base64>"))?;
        if id.len() != 8 {
            return Err(NoteError::VerifierKey("the key ID is not 8 hex digits").into());
        }
        let id = u32::from_str_radix(id, 16)
            .map_err(|_| NoteError::VerifierKey("the key ID is not 8 hex digits"))?;
        let bytes = BASE64
            .decode(b64)
            .map_err(|_| NoteError::VerifierKey("the key is not base64"))?;
        let (alg, key) = bytes
            .split_first()
            .ok_or(NoteError::VerifierKey("the key is empty"))?;
        if *alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::UnsupportedAlgorithm(*alg).into());
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::VerifierKey("the key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| NoteError::VerifierKey("not an Ed25519 public key"))?;
        let v = Self::new(name, key)?;
        if v.key_id != id {
            return Err(NoteError::KeyIdMismatch {
                got: id,
                expected: v.key_id,
            }
            .into());
        }
        Ok(v)
    }

    /// The verifier key string, `<name>+<hex id>+base64(0x04 || key)`.
    pub fn vkey(&self) -> String {
        let mut bytes = vec![ALG_COSIGNATURE_V1];
        bytes.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(bytes))
    }

    /// The timestamp of a valid cosignature on `checkpoint_text`, or why it
    /// is not one.
    pub fn verify_cosignature(
        &self,
        checkpoint_text: &[u8],
        signature: &[u8],
    ) -> Result<u64, CosignatureError> {
        if signature.len() != COSIGNATURE_LEN {
            return Err(CosignatureError::Length(signature.len()));
        }
        let (time, sig) = signature.split_at(8);
        let mut t = [0u8; 8];
        t.copy_from_slice(time);
        let timestamp = u64::from_be_bytes(t);
        check_timestamp(timestamp)?;
        let sig = Signature::from_slice(sig).map_err(|_| CosignatureError::Length(sig.len()))?;
        let mut msg = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
        msg.extend_from_slice(checkpoint_text);
        self.key
            .verify_strict(&msg, &sig)
            .map_err(|_| NoteError::InvalidSignature {
                name: self.name.clone(),
                key_id: self.key_id,
            })?;
        Ok(timestamp)
    }
}

impl NoteVerifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        self.verify_cosignature(text, signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::merkle::Hash;
    use crate::note::{Ed25519Signer, Note};

    #[test]
    fn message_is_the_specs() {
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        assert_eq!(
            message(1_679_315_147, text),
            "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
    }

    #[test]
    fn cosigned_checkpoint_opens_with_either_key() {
        let log = Ed25519Signer::from_seed("example.com/log", &[1; 32]).unwrap();
        let witness = CosignatureSigner::from_seed("witness.example/w1", &[2; 32]).unwrap();
        let c = Checkpoint::new("example.com/log", 5, Hash([3; 32]), vec![]).unwrap();
        let mut note = Note::new(c.to_text()).unwrap();
        note.sign(&log);
        let cosig = witness.cosign(&c.to_text(), 1_700_000_000).unwrap();
        assert_eq!(cosig.signature.len(), 4 + COSIGNATURE_LEN - 4);
        // The line's bytes are key ID || timestamp || signature.
        let line = cosig.line();
        let b64 = line.trim_end().rsplit(' ').next().unwrap();
        let raw = BASE64.decode(b64).unwrap();
        assert_eq!(raw.len(), 4 + 8 + 64);
        assert_eq!(&raw[4..12], &1_700_000_000u64.to_be_bytes());
        note.add_signature(cosig);
        let msg = note.to_text();
        let wv = witness.verifier();
        assert_eq!(CosignatureVerifier::from_vkey(&wv.vkey()).unwrap(), wv);
        let opened = Note::open(msg.as_bytes(), &[&wv]).unwrap();
        assert_eq!(opened.verified_by.len(), 1);
        Note::open(msg.as_bytes(), &[&log.verifier()]).unwrap();
        // The same Ed25519 key as a plain note key has another key ID.
        assert_ne!(
            key_id("witness.example/w1", 0x01, wv.key.as_bytes()),
            wv.key_id
        );
        // A cosignature over other text fails.
        let other = Checkpoint::new("example.com/log", 6, Hash([3; 32]), vec![]).unwrap();
        assert!(
            wv.verify_cosignature(other.to_text().as_bytes(), &note.signatures()[1].signature)
                .is_err()
        );
    }

    #[test]
    fn signer_keys_round_trip_and_are_checked() {
        let w = CosignatureSigner::from_seed("witness.example/w1", &[2; 32]).unwrap();
        let skey = w.skey();
        assert!(skey.starts_with("PRIVATE+KEY+witness.example/w1+"));
        let back = CosignatureSigner::from_skey(&skey).unwrap();
        assert_eq!(back.verifier(), w.verifier());
        // A note signer key (type 0x01) is not a cosigner key.
        let note_key = Ed25519Signer::from_seed("witness.example/w1", &[2; 32]).unwrap();
        assert!(matches!(
            CosignatureSigner::from_skey(&note_key.skey()),
            Err(CosignatureError::Note(NoteError::UnsupportedAlgorithm(1)))
        ));
        // A wrong key ID.
        let bad = skey.replacen(&format!("+{:08x}+", w.key_id), "+00000000+", 1);
        assert_ne!(bad, *skey);
        assert!(CosignatureSigner::from_skey(&bad).is_err());
        assert!(CosignatureSigner::from_skey("KEY+x+00000000+AAAA").is_err());
    }

    #[test]
    fn timestamps_are_bounded() {
        let w = CosignatureSigner::from_seed("w", &[2; 32]).unwrap();
        assert!(matches!(
            w.cosign("o\n0\nx\n", 0),
            Err(CosignatureError::Timestamp(0))
        ));
        assert!(w.cosign("o\n0\nx\n", MAX_TIMESTAMP + 1).is_err());
        assert!(w.cosign("o\n0\nx\n", MAX_TIMESTAMP).is_ok());
    }
}
