//! Throughput of attestation through the core and redb: one commit per
//! item against group commit of batches of items, on the same request
//! stream, each against a fresh database. Run with
//! `order-server bench` (release build).
//!
//! The requests are valid Message envelopes from one sender slot of each of
//! `conversations` conversations (8 slots, 7 block digests each), in
//! round-robin order, pregenerated so that only attestation and commit are
//! measured. Every commit touches every conversation, so more conversations
//! mean more database pages written per commit.
//!
//! [`run_audit`] measures what the audit log costs: the same runs with and
//! without it, alternated, on disk and in memory (the core alone: its CPU).

use crate::core::OrderCore;
use crate::limits::Limits;
use crate::redb_store::{RedbStore, RedbWrite};
use crate::request::AttestRequest;
use crate::store::StoreError;
use grompi_proto::envelope::HeaderFields;
use grompi_proto::{
    BlockDigest, BodyHash, ConversationId, EnvelopeHeader, EnvelopeKind, EnvelopeSummary, Epoch,
    Head, Index, KeyCommitment, MacKeys, OrderServerSecret, Sequence, SlotEntry, SlotIndex,
    SlotRole, SlotSecret, SlotSet, WireError,
};
use std::path::Path;
use std::time::Instant;

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The store failed to read or commit.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request could not be built.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A request was refused or a conversation not opened (a bug in the
    /// benchmark).
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A temporary database could not be created.
    #[error("temporary directory: {0}")]
    Io(#[from] std::io::Error),
}

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// Items per commit.
    pub batch: usize,
    /// Items attested.
    pub items: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// CPU time of the measuring thread in seconds (on Linux, from
    /// `/proc/thread-self/schedstat`, which may lag by a scheduler tick:
    /// measure runs of a second or more), where it can be read: what the
    /// run cost, apart from waiting for the disk and for other processes.
    pub cpu_seconds: Option<f64>,
}

/// The calling thread's CPU time so far, in seconds, where Linux reports
/// it.
fn thread_cpu() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

fn cpu_since(start: Option<f64>) -> Option<f64> {
    Some(thread_cpu()? - start?)
}

impl BenchRow {
    /// Attestations per second.
    pub fn rate(&self) -> f64 {
        self.items as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    /// Microseconds of wall time per attestation.
    pub fn wall_us(&self) -> f64 {
        1e6 * self.seconds / (self.items.max(1) as f64)
    }

    /// Microseconds of CPU time per attestation, where measured.
    pub fn cpu_us(&self) -> Option<f64> {
        Some(1e6 * self.cpu_seconds? / (self.items.max(1) as f64))
    }

    /// CPU time where measured, else wall time: what runs are compared by.
    fn cost(&self) -> f64 {
        self.cpu_seconds.unwrap_or(self.seconds)
    }
}

struct Workload {
    secret: [u8; 32],
    conversations: Vec<(ConversationId, SlotSet)>,
    requests: Vec<AttestRequest>,
}

fn workload(conversations: usize, items: usize) -> Result<Workload, BenchError> {
    let secret = [11u8; 32];
    let server = OrderServerSecret::from_bytes(secret).public_key();
    let mut convs = Vec::with_capacity(conversations);
    let mut senders: Vec<MacKeys> = Vec::with_capacity(conversations);
    for c in 0..conversations {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(c as u64).to_be_bytes());
        let entries = (0..8u8)
            .map(|s| {
                let mut k = [s + 1; 32];
                k[..8].copy_from_slice(&(c as u64).to_be_bytes());
                SlotSecret::from_bytes(k)
            })
            .collect::<Vec<_>>();
        senders.push(
            entries[0]
                .mac_keys(&server)
                .map_err(|e| BenchError::Unexpected(e.to_string()))?,
        );
        let set = SlotSet::new(
            entries
                .iter()
                .enumerate()
                .map(|(i, s)| SlotEntry {
                    key: s.public_key(),
                    role: if i == 0 {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    },
                })
                .collect(),
        )?;
        convs.push((ConversationId::from_bytes(id), set));
    }
    let mut heads: Vec<Head> = convs.iter().map(|(id, _)| Head::genesis(id)).collect();
    let mut requests = Vec::with_capacity(items);
    for n in 0..items {
        let c = n % conversations;
        let (id, set) = &convs[c];
        let index = (n / conversations) as u64;
        let (kind, set_hash) = if index == 0 {
            (EnvelopeKind::Setup, Some(set.hash()))
        } else {
            (EnvelopeKind::Message, None)
        };
        let mut body = [0u8; 32];
        body[..8].copy_from_slice(&(n as u64).to_be_bytes());
        let envelope = EnvelopeSummary {
            header: EnvelopeHeader::new(HeaderFields {
                conversation: *id,
                epoch: Epoch(0),
                kind,
                sender: SlotIndex(0),
                sequence: Sequence(index + 1),
                last_seen: index.checked_sub(1).map(Index),
                body_hash: BodyHash::from_bytes(body),
                key_commitment: KeyCommitment::from_bytes([3; 32]),
                slot_set_hash: set_hash,
            })?,
            block_digests: (0..7u8).map(|i| BlockDigest::from_bytes([i; 32])).collect(),
        };
        let hash = envelope.hash();
        let previous_head = heads[c];
        heads[c] = previous_head.next(id, Epoch(0), Index(index), &hash);
        requests.push(AttestRequest {
            submission_tag: senders[c].submit(&hash, Sequence(index + 1)),
            envelope,
            index: Index(index),
            previous_head,
            next_slots: None,
        });
    }
    Ok(Workload {
        secret,
        conversations: convs,
        requests,
    })
}

fn bench_core(w: &Workload, audit: bool) -> OrderCore {
    let core = OrderCore::new(
        OrderServerSecret::from_bytes(w.secret),
        0,
        Limits::default(),
    );
    if audit {
        core
    } else {
        core.without_audit_log()
    }
}

/// Attests `requests` into a fresh database under `dir`, `batch` items per
/// commit, and returns the time taken.
fn measure(dir: &Path, w: &Workload, items: usize, batch: usize) -> Result<BenchRow, BenchError> {
    measure_with(dir, w, items, batch, true)
}

/// [`measure`], with or without the audit log.
fn measure_with(
    dir: &Path,
    w: &Workload,
    items: usize,
    batch: usize,
    audit: bool,
) -> Result<BenchRow, BenchError> {
    let path = dir.join(format!("bench-{batch}.redb"));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(crate::redb_store::wal_path(&path));
    let store = RedbStore::open(&path)?;
    let core = bench_core(w, audit);
    let txn = store.begin_write()?;
    let log = {
        let mut tables = RedbWrite::open(&txn)?;
        for (id, set) in &w.conversations {
            core.open(&mut tables, id, set)?
                .map_err(|m| BenchError::Unexpected(m.to_string()))?;
        }
        tables.into_log()?
    };
    store.commit(txn, log)?;
    let requests = w.requests.get(..items).unwrap_or(&w.requests);
    let started = Instant::now();
    let cpu = thread_cpu();
    for chunk in requests.chunks(batch.max(1)) {
        let txn = store.begin_write()?;
        let log = {
            let mut tables = RedbWrite::open(&txn)?;
            for r in chunk {
                core.attest(&mut tables, r)?
                    .map_err(|refusal| BenchError::Unexpected(refusal.to_string()))?;
            }
            tables.into_log()?
        };
        store.commit(txn, log)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_since(cpu);
    drop(store);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(crate::redb_store::wal_path(&path));
    Ok(BenchRow {
        batch,
        items: requests.len(),
        seconds,
        cpu_seconds,
    })
}

/// The core alone over the in-memory store, one transaction per `batch`:
/// the CPU cost of attestation without storage.
fn measure_memory(
    w: &Workload,
    items: usize,
    batch: usize,
    audit: bool,
) -> Result<BenchRow, BenchError> {
    let mut store = crate::mem_store::MemStore::new();
    let core = bench_core(w, audit);
    let mut txn = store.begin();
    for (id, set) in &w.conversations {
        core.open(&mut txn, id, set)?
            .map_err(|m| BenchError::Unexpected(m.to_string()))?;
    }
    txn.commit();
    let requests = w.requests.get(..items).unwrap_or(&w.requests);
    let started = Instant::now();
    let cpu = thread_cpu();
    for chunk in requests.chunks(batch.max(1)) {
        let mut txn = store.begin();
        for r in chunk {
            core.attest(&mut txn, r)?
                .map_err(|refusal| BenchError::Unexpected(refusal.to_string()))?;
        }
        txn.commit();
    }
    Ok(BenchRow {
        batch,
        items: requests.len(),
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu_since(cpu),
    })
}

/// Runs the benchmark in `dir`: one commit per item over `single_items`
/// items, then group commit for each of `batches` over `items` items.
pub fn run(
    dir: &Path,
    conversations: usize,
    items: usize,
    single_items: usize,
    batches: &[usize],
) -> Result<Vec<BenchRow>, BenchError> {
    let w = workload(conversations.max(1), items.max(single_items))?;
    let mut rows = vec![measure(dir, &w, single_items, 1)?];
    for &b in batches {
        rows.push(measure(dir, &w, items, b)?);
    }
    Ok(rows)
}

/// The CPU cost alone: the core over the in-memory store, in batches of
/// `batch`.
pub fn run_memory(
    conversations: usize,
    items: usize,
    batch: usize,
) -> Result<BenchRow, BenchError> {
    measure_memory(&workload(conversations.max(1), items)?, items, batch, true)
}

/// The same runs with and without the audit log: the best of `rounds`
/// alternated runs of each.
#[derive(Debug, Clone)]
pub struct AuditComparison {
    /// Group commit into redb, without the log.
    pub disk_without: BenchRow,
    /// Group commit into redb, with the log.
    pub disk_with: BenchRow,
    /// The core alone over the in-memory store (CPU), without the log.
    pub memory_without: BenchRow,
    /// The core alone over the in-memory store (CPU), with the log.
    pub memory_with: BenchRow,
}

impl AuditComparison {
    /// CPU time (wall time where CPU time is not measured) per
    /// attestation with the log over that without it, on disk.
    pub fn disk_ratio(&self) -> f64 {
        self.disk_with.cost() / self.disk_without.cost().max(f64::MIN_POSITIVE)
    }

    /// The same ratio for the core alone, in memory.
    pub fn memory_ratio(&self) -> f64 {
        self.memory_with.cost() / self.memory_without.cost().max(f64::MIN_POSITIVE)
    }

    /// A Markdown table of the comparison.
    pub fn table(&self) -> String {
        let cpu = |r: &BenchRow| {
            r.cpu_us()
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}"))
        };
        let row = |name: &str, without: &BenchRow, with: &BenchRow, ratio: f64| {
            format!(
                "| {name} | {} | {} | {} | {:.2} | {:.2} | {ratio:.3} |\n",
                with.batch,
                cpu(without),
                cpu(with),
                without.wall_us(),
                with.wall_us(),
            )
        };
        let mut out = String::from(
            "| run | items per commit | CPU µs/attestation without log | with log | wall µs without | with | with/without (CPU) |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
        );
        out.push_str(&row(
            "redb group commit",
            &self.disk_without,
            &self.disk_with,
            self.disk_ratio(),
        ));
        out.push_str(&row(
            "core alone (in memory)",
            &self.memory_without,
            &self.memory_with,
            self.memory_ratio(),
        ));
        out
    }
}

fn fastest(a: Option<BenchRow>, b: BenchRow) -> BenchRow {
    match a {
        Some(a) if a.cost() <= b.cost() => a,
        _ => b,
    }
}

/// Measures the audit log's cost: `rounds` alternated runs without and
/// with it, group commit of `batch` items into redb under `dir`, and the
/// core alone in memory; keeps the fastest run of each.
pub fn run_audit(
    dir: &Path,
    conversations: usize,
    items: usize,
    batch: usize,
    rounds: usize,
) -> Result<AuditComparison, BenchError> {
    let w = workload(conversations.max(1), items)?;
    let (mut dw, mut dl, mut mw, mut ml) = (None, None, None, None);
    for _ in 0..rounds.max(1) {
        dw = Some(fastest(dw, measure_with(dir, &w, items, batch, false)?));
        dl = Some(fastest(dl, measure_with(dir, &w, items, batch, true)?));
        mw = Some(fastest(mw, measure_memory(&w, items, batch, false)?));
        ml = Some(fastest(ml, measure_memory(&w, items, batch, true)?));
    }
    match (dw, dl, mw, ml) {
        (Some(disk_without), Some(disk_with), Some(memory_without), Some(memory_with)) => {
            Ok(AuditComparison {
                disk_without,
                disk_with,
                memory_without,
                memory_with,
            })
        }
        _ => Err(BenchError::Unexpected("no run was measured".into())),
    }
}

/// Formats rows as a Markdown table, with each rate as a ratio to the
/// first row (one commit per item).
pub fn table(rows: &[BenchRow]) -> String {
    let base = rows.first().map(BenchRow::rate).unwrap_or(1.0);
    let mut out = String::from(
        "| items per commit | items | seconds | attestations/s | vs one commit per item |\n|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.3} | {:.0} | {:.1}x |\n",
            r.batch,
            r.items,
            r.seconds,
            r.rate(),
            r.rate() / base
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_attested_in_every_mode() {
        let dir = tempfile::tempdir().unwrap();
        let rows = run(dir.path(), 32, 600, 20, &[16, 256]).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].items, 20);
        assert_eq!(rows[2].items, 600);
        assert!(table(&rows).contains("| 256 | 600 |"));
    }

    #[test]
    fn the_audit_comparison_runs_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let c = run_audit(dir.path(), 16, 200, 64, 1).unwrap();
        assert_eq!((c.disk_with.items, c.memory_without.items), (200, 200));
        assert!(
            c.table().contains("| redb group commit | 64 |"),
            "{}",
            c.table()
        );
        // Runs this short may fall within one scheduler tick, in which the
        // thread's CPU time need not advance: the ratios are only defined.
        assert!(c.disk_ratio() >= 0.0 && c.memory_ratio() >= 0.0);
    }
}
