//! The canonical encoding: the exact bytes that are hashed and MACed.
//!
//! Protobuf is only framing (it has no canonical form), so every hash and MAC
//! input is built here instead, field by field:
//!
//! | value | bytes |
//! |---|---|
//! | `u8`, `u32`, `u64` | big-endian, fixed width |
//! | fixed 32-byte value | the 32 bytes |
//! | variable bytes | `u64` length, then the bytes |
//! | optional value | `0x00`, or `0x01` then the value |
//! | list | `u64` count, then each item |
//!
//! Hashes use BLAKE3 in `derive_key` mode with a context from
//! [`crate::context`]; MACs use BLAKE3 keyed mode with a purpose subkey.

/// A canonical encoding under construction.
#[derive(Default, Clone)]
pub struct Canonical {
    bytes: Vec<u8>,
}

impl Canonical {
    /// An empty encoding, to which fields are appended in protocol order.
    /// Room for 256 bytes is reserved at once: most encodings (statements,
    /// headers, heads) fit, so building one allocates once instead of
    /// growing field by field.
    pub fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(256),
        }
    }

    /// Appends a `u8`.
    pub fn u8(mut self, v: u8) -> Self {
        self.bytes.push(v);
        self
    }

    /// Appends a big-endian `u32`.
    pub fn u32(mut self, v: u32) -> Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian `u64`.
    pub fn u64(mut self, v: u64) -> Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a fixed 32-byte value.
    pub fn fixed(mut self, v: &[u8; 32]) -> Self {
        self.bytes.extend_from_slice(v);
        self
    }

    /// Appends variable-length bytes with a `u64` length prefix.
    pub fn bytes(self, v: &[u8]) -> Self {
        let mut s = self.u64(v.len() as u64);
        s.bytes.extend_from_slice(v);
        s
    }

    /// Appends an optional `u64`.
    pub fn opt_u64(self, v: Option<u64>) -> Self {
        match v {
            None => self.u8(0),
            Some(v) => self.u8(1).u64(v),
        }
    }

    /// Appends an optional fixed 32-byte value.
    pub fn opt_fixed(self, v: Option<&[u8; 32]>) -> Self {
        match v {
            None => self.u8(0),
            Some(v) => self.u8(1).fixed(v),
        }
    }

    /// Appends a list count.
    pub fn count(self, n: usize) -> Self {
        self.u64(n as u64)
    }

    /// The bytes appended so far, exactly as they are hashed or MACed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// BLAKE3 `derive_key` hash of the encoding under `context`.
    pub fn hash(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.bytes)
    }

    /// BLAKE3 keyed hash of the encoding.
    pub fn mac(&self, key: &[u8; 32]) -> [u8; 32] {
        *blake3::keyed_hash(key, &self.bytes).as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_as_documented() {
        let c = Canonical::new()
            .u8(7)
            .u32(1)
            .u64(2)
            .bytes(b"ab")
            .opt_u64(None)
            .opt_u64(Some(3))
            .count(0);
        let mut want = vec![7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b', 0, 1]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        want.extend_from_slice(&[0; 8]);
        assert_eq!(c.as_bytes(), &want[..]);
    }

    #[test]
    fn length_prefix_prevents_ambiguity() {
        let a = Canonical::new().bytes(b"ab").bytes(b"c");
        let b = Canonical::new().bytes(b"a").bytes(b"bc");
        assert_ne!(a.hash("t"), b.hash("t"));
    }
}
