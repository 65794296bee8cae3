//! Configurable limits. Each is at most the protocol's hard limit
//! ([`grompi_proto::limits`]); an operator may only tighten them.

use grompi_proto::limits::{MAX_ATTEST_BATCH, MAX_BLOCKS, MAX_SLOTS};
use serde::{Deserialize, Serialize};

/// The limits an order server enforces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most slots in one slot set (OpenConversation, and an Update's next set).
    pub max_slots: usize,
    /// Most recipient block digests in one envelope.
    pub max_block_digests: usize,
    /// Most items in one Attest request.
    pub max_batch_items: usize,
    /// Most distinct conversations in one Attest request.
    pub max_batch_conversations: usize,
    /// Most refused equivocation attempts kept as evidence; later ones are
    /// only counted.
    pub max_evidence: u64,
    /// Most slots whose derived MAC keys are cached in memory.
    pub key_cache_slots: usize,
    /// Most attestation items run in one group commit (one redb write
    /// transaction). Requests queued beyond it wait for the next commit.
    pub max_commit_items: usize,
    /// Most TCP connections open at once. Only the router calls an order
    /// server, over one connection, so this is small; connections over it
    /// are closed right after accept.
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams (calls) on one connection. The
    /// router multiplexes all its calls over one connection; calls beyond
    /// this wait for a stream to finish.
    pub max_streams_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_slots: MAX_SLOTS,
            max_block_digests: MAX_BLOCKS,
            max_batch_items: MAX_ATTEST_BATCH,
            max_batch_conversations: MAX_ATTEST_BATCH,
            max_evidence: 100_000,
            key_cache_slots: 1 << 20,
            max_commit_items: 8192,
            max_connections: 64,
            max_streams_per_connection: 1024,
        }
    }
}

/// A limit outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limits.{name} = {value} is outside the allowed range {min}..={max}")]
pub struct LimitOutOfRange {
    /// The limit's configuration key.
    pub name: &'static str,
    /// The value the configuration file sets.
    pub value: u64,
    /// Smallest allowed value.
    pub min: u64,
    /// Largest allowed value.
    pub max: u64,
}

impl Limits {
    /// Checks every limit against its range.
    pub fn validate(&self) -> Result<(), LimitOutOfRange> {
        let check = |name, value: usize, min: usize, max: usize| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(LimitOutOfRange {
                    name,
                    value: value as u64,
                    min: min as u64,
                    max: max as u64,
                })
            }
        };
        check("max_slots", self.max_slots, 1, MAX_SLOTS)?;
        check("max_block_digests", self.max_block_digests, 0, MAX_BLOCKS)?;
        check("max_batch_items", self.max_batch_items, 1, MAX_ATTEST_BATCH)?;
        check(
            "max_batch_conversations",
            self.max_batch_conversations,
            1,
            MAX_ATTEST_BATCH,
        )?;
        check(
            "key_cache_slots",
            self.key_cache_slots,
            MAX_SLOTS,
            usize::MAX,
        )?;
        check("max_commit_items", self.max_commit_items, 1, 1 << 20)?;
        check("max_connections", self.max_connections, 1, 1 << 20)?;
        check(
            "max_streams_per_connection",
            self.max_streams_per_connection,
            1,
            1 << 20,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_looser_is_refused() {
        Limits::default().validate().unwrap();
        let err = Limits {
            max_slots: MAX_SLOTS + 1,
            ..Limits::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.name, "max_slots");
        assert!(err.to_string().contains("limits.max_slots"));
        for (name, limits) in [
            (
                "max_connections",
                Limits {
                    max_connections: 0,
                    ..Limits::default()
                },
            ),
            (
                "max_streams_per_connection",
                Limits {
                    max_streams_per_connection: 0,
                    ..Limits::default()
                },
            ),
        ] {
            let err = limits.validate().unwrap_err();
            assert_eq!(err.name, name);
            assert!(
                err.to_string().contains("outside the allowed range 1..="),
                "{err}"
            );
        }
    }
}
