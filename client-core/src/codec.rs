//! Strict reading of the canonical encoding ([`grompi_proto::encoding`]) used
//! for everything the client encrypts: message contents and recipient block
//! plaintexts. Writing uses [`Canonical`]; reading is here.
//!
//! The reader never panics: every read checks the remaining length, counts
//! are bounded before anything is allocated, and [`Reader::finish`] rejects
//! trailing bytes, so one byte string has exactly one meaning.

pub use grompi_proto::encoding::Canonical;

/// Why encoded bytes did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes ended before the value did.
    #[error("{0} is truncated")]
    Truncated(&'static str),
    /// Bytes remain after the last value.
    #[error("{0} has trailing bytes")]
    Trailing(&'static str),
    /// A count or length above what the format allows.
    #[error("{field} has {got} items, more than the limit of {max}")]
    TooMany {
        /// The name of the list or length field.
        field: &'static str,
        /// The largest count or length the format allows.
        max: usize,
        /// The count or length the bytes declare.
        got: u64,
    },
    /// A value that breaks a rule of the format.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The name of the field that breaks the rule.
        field: &'static str,
        /// The rule it breaks, in words.
        reason: &'static str,
    },
}

/// A cursor over encoded bytes.
pub struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`; `what` names the value in errors.
    pub fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self { what, rest: bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated(self.what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self.take(1)?;
        b.first().copied().ok_or(DecodeError::Truncated(self.what))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        let arr: [u8; 4] = b
            .try_into()
            .map_err(|_| DecodeError::Truncated(self.what))?;
        Ok(u32::from_be_bytes(arr))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let arr: [u8; 8] = b
            .try_into()
            .map_err(|_| DecodeError::Truncated(self.what))?;
        Ok(u64::from_be_bytes(arr))
    }

    /// Reads a fixed 32-byte value.
    pub fn fixed(&mut self) -> Result<[u8; 32], DecodeError> {
        let b = self.take(32)?;
        b.try_into().map_err(|_| DecodeError::Truncated(self.what))
    }

    /// Reads length-prefixed bytes of at most `max` bytes.
    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u64()?;
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .ok_or(DecodeError::TooMany { field, max, got: n })?;
        self.take(n)
    }

    /// Reads a list count of at most `max`.
    pub fn count(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .ok_or(DecodeError::TooMany { field, max, got: n })
    }

    /// Reads an optional `u64`.
    pub fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.u64().map(Some),
            _ => Err(DecodeError::Invalid {
                field: self.what,
                reason: "optional marker must be 0 or 1",
            }),
        }
    }

    /// Checks that every byte was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_canonical_writes() {
        let c = Canonical::new()
            .u8(7)
            .u32(9)
            .u64(11)
            .fixed(&[3; 32])
            .bytes(b"abc")
            .count(2)
            .opt_u64(Some(5))
            .opt_u64(None);
        let mut r = Reader::new("test", c.as_bytes());
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 9);
        assert_eq!(r.u64().unwrap(), 11);
        assert_eq!(r.fixed().unwrap(), [3; 32]);
        assert_eq!(r.bytes("b", 10).unwrap(), b"abc");
        assert_eq!(r.count("c", 2).unwrap(), 2);
        assert_eq!(r.opt_u64().unwrap(), Some(5));
        assert_eq!(r.opt_u64().unwrap(), None);
        r.finish().unwrap();
    }

    #[test]
    fn rejects_truncation_trailing_and_oversize() {
        let c = Canonical::new().bytes(b"abcdef");
        assert!(matches!(
            Reader::new("t", c.as_bytes()).bytes("b", 3),
            Err(DecodeError::TooMany { max: 3, got: 6, .. })
        ));
        let bytes = c.as_bytes();
        let short = &bytes[..bytes.len() - 1];
        assert_eq!(
            Reader::new("t", short).bytes("b", 100),
            Err(DecodeError::Truncated("t"))
        );
        let mut r = Reader::new("t", &[1, 2]);
        r.u8().unwrap();
        assert_eq!(r.finish(), Err(DecodeError::Trailing("t")));
        // A huge count is refused before anything is allocated.
        let huge = Canonical::new().count(usize::MAX);
        assert!(Reader::new("t", huge.as_bytes()).count("c", 10).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut r = Reader::new("t", &bytes);
            let _ = r.u8();
            let _ = r.bytes("b", 16);
            let _ = r.opt_u64();
            let _ = r.count("c", 4);
            let _ = r.fixed();
            let _ = r.finish();
        }
    }
}
