//! Metric names, in one place, as exported to Prometheus.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `grompi_order_attestations_total` | counter | items attested (new or retried) |
//! | `grompi_order_refusals_total{reason}` | counter | items refused, by reason label |
//! | `grompi_order_commit_seconds` | histogram | duration of one group commit (run + fsync) |
//! | `grompi_order_commit_batch_items` | histogram | items and opens per group commit |
//! | `grompi_order_attest_request_seconds` | histogram | one `AttestStream` request, from its arrival to its answer handed to the response stream (parse, queue, commit) |
//! | `grompi_order_open_conversations` | gauge | conversations ever opened (never deleted) |
//! | `grompi_order_evidence_total` | gauge | refused equivocation attempts, ever |
//! | `grompi_order_requests_rejected_total{rpc,code}` | counter | whole requests rejected with a gRPC status |
//! | `grompi_order_audit_log_size` | gauge | entries in the audit log at its latest signed checkpoint |
//! | `grompi_order_log_submissions_total{peer,outcome}` | counter | checkpoints submitted to a witness: `cosigned`, `refused` (rolled back or forked), `failed`, `unreachable` |
//! | `grompi_order_log_witness_alarm{peer}` | gauge | 1 while that witness refuses this log as rolled back or forked |
//! | `grompi_order_log_cosigned_size{peer}` | gauge | the size of this log that witness last cosigned |
//! | `grompi_order_witness_answers_total{status}` | counter | `add-checkpoint` answers of this server's witness, by HTTP status |
//! | `grompi_order_witness_misbehaviour_total{kind,origin}` | counter | peers' checkpoints refused as `fork`, `inconsistent` or `behind` (evidence kept) |

/// Items attested.
pub const ATTESTATIONS: &str = "grompi_order_attestations_total";
/// Items refused, labelled by `reason`.
pub const REFUSALS: &str = "grompi_order_refusals_total";
/// Group commit duration in seconds.
pub const COMMIT_SECONDS: &str = "grompi_order_commit_seconds";
/// One `AttestStream` request from its arrival to its answer: what the
/// server adds to the router's round trip (`router_fanout_seconds`).
pub const ATTEST_REQUEST_SECONDS: &str = "grompi_order_attest_request_seconds";
/// Items (and opens) per group commit.
pub const COMMIT_BATCH_ITEMS: &str = "grompi_order_commit_batch_items";
/// Commits whose writer waited its gathering window (`commit_gather_us`)
/// for more jobs before committing.
pub const COMMIT_GATHERED: &str = "grompi_order_commit_gathered_total";
/// Conversations opened.
pub const OPEN_CONVERSATIONS: &str = "grompi_order_open_conversations";
/// Refused equivocation attempts.
pub const EVIDENCE_TOTAL: &str = "grompi_order_evidence_total";
/// Bytes in the write-ahead log since the last checkpoint.
pub const WAL_BYTES: &str = "grompi_order_wal_bytes";
/// Checkpoints: durable database commits that restart the write-ahead log.
pub const WAL_CHECKPOINTS: &str = "grompi_order_wal_checkpoints_total";
/// A checkpoint's duration in seconds (the writer commits nothing meanwhile).
pub const WAL_CHECKPOINT_SECONDS: &str = "grompi_order_wal_checkpoint_seconds";
/// Whole requests rejected, labelled by `rpc` and `code`.
pub const REQUESTS_REJECTED: &str = "grompi_order_requests_rejected_total";

/// Entries in the audit log at its latest signed checkpoint.
pub const AUDIT_LOG_SIZE: &str = "grompi_order_audit_log_size";

/// Checkpoints submitted to witnesses, by `peer` and `outcome`.
pub const LOG_SUBMISSIONS: &str = "grompi_order_log_submissions_total";
/// 1 while a witness refuses this log as rolled back or forked.
pub const LOG_WITNESS_ALARM: &str = "grompi_order_log_witness_alarm";
/// The size of this log a witness last cosigned.
pub const LOG_COSIGNED_SIZE: &str = "grompi_order_log_cosigned_size";
/// This server's witness's answers, by HTTP `status`.
pub const WITNESS_ANSWERS: &str = "grompi_order_witness_answers_total";
/// Peers' checkpoints refused as `fork`, `inconsistent` or `behind`.
pub const WITNESS_MISBEHAVIOUR: &str = "grompi_order_witness_misbehaviour_total";

/// Records a rejected request.
pub fn rejected(rpc: &'static str, status: &tonic::Status) {
    metrics::counter!(REQUESTS_REJECTED, "rpc" => rpc, "code" => format!("{:?}", status.code()))
        .increment(1);
}
