//! End-to-end tests that start the real binaries over TLS on 127.0.0.1.
//!
//! The helpers that build and start the binaries live here; the tests are
//! under `tests/`.
#![forbid(unsafe_code)]
