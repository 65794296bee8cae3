//! A macro for the protocol's many 32-byte values, so each gets its own
//! type (a head is never mistaken for an envelope hash) with one definition
//! of parsing and printing.

/// Defines a public 32-byte value type.
macro_rules! fixed32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps 32 bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The bytes as a vector, for protobuf fields.
            pub fn to_vec(&self) -> Vec<u8> {
                self.0.to_vec()
            }

            /// Parses exactly 32 bytes; `field` names the field in the error.
            pub fn parse(field: &'static str, bytes: &[u8]) -> Result<Self, $crate::WireError> {
                <[u8; 32]>::try_from(bytes)
                    .map(Self)
                    .map_err(|_| $crate::WireError::WrongLength {
                        field,
                        expected: 32,
                        got: bytes.len(),
                    })
            }

            /// Lower-case hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({}..)", stringify!($name), &hex::encode(&self.0[..6]))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }
    };
}

pub(crate) use fixed32;
