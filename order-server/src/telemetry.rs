//! Metric names, in one place, as exported to Prometheus.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `grompi_order_attestations_total` | counter | items attested (new or retried) |
//! | `grompi_order_refusals_total{reason}` | counter | items refused, by reason label |
//! | `grompi_order_commit_seconds` | histogram | duration of one group commit (run + fsync) |
//! | `grompi_order_commit_batch_items` | histogram | items and opens per group commit |
//! | `grompi_order_open_conversations` | gauge | conversations ever opened (never deleted) |
//! | `grompi_order_evidence_total` | gauge | refused equivocation attempts, ever |
//! | `grompi_order_requests_rejected_total{rpc,code}` | counter | whole requests rejected with a gRPC status |
//! | `grompi_order_audit_log_size` | gauge | entries in the audit log at its latest signed checkpoint |

/// Items attested.
pub const ATTESTATIONS: &str = "grompi_order_attestations_total";
/// Items refused, labelled by `reason`.
pub const REFUSALS: &str = "grompi_order_refusals_total";
/// Group commit duration in seconds.
pub const COMMIT_SECONDS: &str = "grompi_order_commit_seconds";
/// Items (and opens) per group commit.
pub const COMMIT_BATCH_ITEMS: &str = "grompi_order_commit_batch_items";
/// Conversations opened.
pub const OPEN_CONVERSATIONS: &str = "grompi_order_open_conversations";
/// Refused equivocation attempts.
pub const EVIDENCE_TOTAL: &str = "grompi_order_evidence_total";
/// Bytes in the write-ahead log since the last checkpoint.
pub const WAL_BYTES: &str = "grompi_order_wal_bytes";
/// Checkpoints: durable database commits that restart the write-ahead log.
pub const WAL_CHECKPOINTS: &str = "grompi_order_wal_checkpoints_total";
/// Whole requests rejected, labelled by `rpc` and `code`.
pub const REQUESTS_REJECTED: &str = "grompi_order_requests_rejected_total";

/// Entries in the audit log at its latest signed checkpoint.
pub const AUDIT_LOG_SIZE: &str = "grompi_order_audit_log_size";

/// Records a rejected request.
pub fn rejected(rpc: &'static str, status: &tonic::Status) {
    metrics::counter!(REQUESTS_REJECTED, "rpc" => rpc, "code" => format!("{:?}", status.code()))
        .increment(1);
}
