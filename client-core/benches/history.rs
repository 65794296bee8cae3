//! Catching up a `shared` history (`docs/PROTOCOL.md` 4.6): a member added
//! after `n` Messages reads them from the router's store and verifies them
//! from the genesis with [`HistoryVerifier`], against the live receiving of
//! the same Messages, both measured in the same run.
//!
//! The conversation is the testkit's in-memory world with the real order
//! server cores, group-keyed (key periods of 100 indices) with the policy
//! `shared`: member 0 creates it with member 1, sends `n` Messages of 64
//! bytes (each composed with the real client, with its history block), and
//! then adds member 2, who accepts the Update. What is timed:
//!
//! * **history**: `HistoryVerifier::new` from member 2's
//!   `history_anchor()`, then for every stored envelope from index 0 to the
//!   join, decoding it from the bytes the router's history page carries
//!   (`pb::HistoryEnvelope`, encoded beforehand) and `push`, then `finish`,
//!   which opens every history block and body the key chain reaches. The
//!   two phases are also reported apart: decoding and `push` recompute the
//!   body hashes, envelope hashes and the head chain (no decryption),
//!   `finish` opens.
//! * **live** (the baseline): member 1, whose deliveries were held back,
//!   receives the same `n` Messages as the router delivers them (envelope,
//!   every order server's attestation), through `Conversation::receive`:
//!   tags checked, shares mixed, bodies opened, the event queue drained
//!   every 256 deliveries as an application does. The deliveries are made
//!   beforehand.
//!
//! The history read is timed in `ROUNDS` rounds on fresh copies of the
//! items, and the figure is the median round; the live receive is timed
//! once (member 1's ratchets move on as it receives). Peak memory: the kernel's peak resident
//! set (`VmHWM`) is reset (`/proc/self/clear_refs`) before one history
//! read and read after it, against the resident set before; the bytes the
//! verifier holds (the items' encoded size) are reported too.
//!
//! `cargo bench -p grompi-client-core --bench history [-- --n N]` measures
//! n = 10,000 and prints a table and the JSON. Run as a test (`cargo test`,
//! which passes no `--bench`), it measures n = 40 and checks that the
//! history verified and read every Message.
#![forbid(unsafe_code)]

use grompi_client_core::Delivery;
use grompi_client_core::content::{Change, Content, Visibility};
use grompi_client_core::conversation::Event;
use grompi_client_core::history::{HistoryEntry, HistoryItem, HistoryVerifier};
use grompi_client_core::testkit::World;
use grompi_proto::{Index, SlotRole, pb};
use serde::Serialize;
use std::time::Instant;

/// Timed rounds of the history read; the median is reported.
const ROUNDS: usize = 3;
/// Key period of the conversation, in indices.
const PERIOD: u64 = 100;

/// Why the benchmark could not measure.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// A member holds no conversation where one is needed.
    #[error("member {0} holds no conversation")]
    NoConversation(usize),
    /// The history did not verify (it must, from an honest store).
    #[error("the history did not verify: {0}")]
    Mismatch(String),
    /// Not every Message read, in the history or live.
    #[error("{what}: {read} of {n} Messages read")]
    Unread {
        what: &'static str,
        read: usize,
        n: usize,
    },
    /// Writing the JSON failed.
    #[error("writing {path}: {message}")]
    Output { path: String, message: String },
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    /// Messages before the join.
    messages: usize,
    /// Envelopes the history holds (the Setup, the Messages, the Update).
    envelopes: usize,
    /// Median history read (push of every envelope and finish), in ms.
    history_ms: f64,
    /// Its decode and push phase alone (hashes and the head chain), in ms.
    chain_ms: f64,
    /// Its finish phase alone (opening capsules and bodies), in ms.
    open_ms: f64,
    /// Live receiving of the same Messages, in ms.
    live_ms: f64,
    /// History read per Message, in microseconds.
    history_us_per_message: f64,
    /// Live receive per Message, in microseconds.
    live_us_per_message: f64,
    /// History read time over live receive time.
    history_over_live: f64,
    /// History read time over its chain phase alone.
    history_over_chain: f64,
    /// Encoded bytes of the router's history envelopes (what the pages
    /// carry).
    item_bytes: usize,
    /// Peak resident set growth during one history read, in bytes
    /// (`None` where the kernel does not let it be reset).
    peak_rss_growth: Option<u64>,
}

/// A value of `/proc/self/status` (kB), in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak resident set to the current one (Linux: `5` to
/// `clear_refs`); whether it could.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The world after `n` Messages and the join, with the live deliveries
/// member 1 has not received yet.
fn world(n: usize, seed: u64) -> Result<(World, Index, Vec<Delivery>), BenchError> {
    let mut w = World::new(seed, 3, 3, 3);
    w.group_period = Some(PERIOD);
    w.history = Visibility::Shared;
    w.setup_with(0, &[0, 1]);
    // Member 1 receives nothing more until the live round.
    w.deliver_now[1] = false;
    let text = vec![b'x'; 64];
    let mut last = Index(0);
    for _ in 0..n {
        last = w.send(0, Content::Message(text.clone()));
    }
    let all: Vec<u32> = (0..3).collect();
    let live = (1..=last.0)
        .filter_map(|i| w.delivery(Index(i), 1, &all))
        .collect();
    let mut next = w.roster();
    next.insert(2, SlotRole::Member);
    let account = w.accounts[2];
    let join = w.update(
        0,
        Change::Add {
            account,
            role: SlotRole::Member,
        },
        next,
    );
    w.catch_up(2);
    Ok((w, join, live))
}

/// The stored envelopes through `through`, as the router's history page
/// returns them.
fn items(w: &World, through: Index) -> Vec<HistoryItem> {
    w.history_items(through)
}

fn messages_read(entries: &[HistoryEntry]) -> usize {
    entries
        .iter()
        .filter(|e| matches!(&e.content, Ok(Content::Message(m)) if m.len() == 64))
        .count()
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn measure(n: usize, seed: u64) -> Result<Figures, BenchError> {
    let (mut w, join, live) = world(n, seed)?;
    let joiner = w.convs[2].as_ref().ok_or(BenchError::NoConversation(2))?;
    let anchor = joiner
        .history_anchor()
        .ok_or(BenchError::NoConversation(2))?;
    let stored = items(&w, join);
    // The router's pages on the wire: one encoded history envelope each.
    let wire: Vec<Vec<u8>> = stored
        .iter()
        .map(grompi_proto::wire::encode::<pb::HistoryEnvelope, _>)
        .collect();
    let item_bytes: usize = wire.iter().map(Vec::len).sum();
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut peak = None;
    for round in 0..ROUNDS {
        let copy = wire.clone();
        let measure_peak = round == 0 && reset_peak();
        let rss_before = status_bytes("VmRSS:");
        let start = Instant::now();
        let mut v = HistoryVerifier::new(anchor.clone());
        for bytes in &copy {
            let item = grompi_proto::wire::decode::<pb::HistoryEnvelope, HistoryItem>(bytes)
                .map_err(|e| BenchError::Mismatch(e.to_string()))?;
            v.push(item)
                .map_err(|e| BenchError::Mismatch(e.to_string()))?;
        }
        let chain = start.elapsed();
        let entries = v
            .finish()
            .map_err(|e| BenchError::Mismatch(e.to_string()))?;
        let total = start.elapsed();
        if measure_peak {
            peak = status_bytes("VmHWM:")
                .zip(rss_before)
                .map(|(hwm, before)| hwm.saturating_sub(before));
        }
        let read = messages_read(&entries);
        if read != n {
            return Err(BenchError::Unread {
                what: "history",
                read,
                n,
            });
        }
        std::hint::black_box(entries);
        rounds.push((total, chain));
    }
    rounds.sort_unstable();
    let (total, chain) = rounds.get(ROUNDS / 2).copied().unwrap_or_default();
    // The baseline: member 1 receives the same Messages live.
    let World { convs, secrets, .. } = &mut w;
    let conv = convs
        .get_mut(1)
        .and_then(Option::as_mut)
        .ok_or(BenchError::NoConversation(1))?;
    let secrets = secrets.get_mut(1).ok_or(BenchError::NoConversation(1))?;
    // The client's event queue is bounded (`MAX_QUEUED`): the application
    // drains it as it goes, and so does the timed loop.
    let messages = |events: Vec<Event>| {
        events
            .into_iter()
            .filter(|e| matches!(e, Event::Message { .. }))
            .count()
    };
    let mut read = messages(conv.drain_events());
    let start = Instant::now();
    for (i, d) in live.into_iter().enumerate() {
        conv.receive(d, secrets);
        if i % 256 == 255 {
            read += messages(conv.drain_events());
        }
    }
    read += messages(conv.drain_events());
    let live_time = start.elapsed();
    if read != n {
        return Err(BenchError::Unread {
            what: "live",
            read,
            n,
        });
    }
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    Ok(Figures {
        messages: n,
        envelopes: stored.len(),
        history_ms: ms(total),
        chain_ms: ms(chain),
        open_ms: ms(total.saturating_sub(chain)),
        live_ms: ms(live_time),
        history_us_per_message: per(total),
        live_us_per_message: per(live_time),
        history_over_live: total.as_secs_f64() / live_time.as_secs_f64().max(1e-9),
        history_over_chain: total.as_secs_f64() / chain.as_secs_f64().max(1e-9),
        item_bytes,
        peak_rss_growth: peak,
    })
}

fn table(f: &Figures) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    format!(
        "| messages | history total ms | decode + chain ms | open ms | history us/msg | live total ms | live us/msg | history/live | history/chain | pages MiB | peak RSS growth MiB |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.1}x | {:.2} | {} |\n",
        f.messages,
        f.history_ms,
        f.chain_ms,
        f.open_ms,
        f.history_us_per_message,
        f.live_ms,
        f.live_us_per_message,
        f.history_over_live,
        f.history_over_chain,
        mib(f.item_bytes as u64),
        f.peak_rss_growth
            .map_or("n/a".to_owned(), |b| format!("{:.2}", mib(b))),
    )
}

fn main() -> Result<(), BenchError> {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    if !full {
        // `cargo test`: a smoke run; `measure` fails unless the history
        // verified and every Message read, in the history and live.
        let f = measure(40, 7)?;
        println!(
            "history smoke run: {} Messages verified and read",
            f.messages
        );
        return Ok(());
    }
    let n = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let f = measure(n, 7)?;
    print!("{}", table(&f));
    let json = serde_json::to_string_pretty(&f).map_err(|e| BenchError::Output {
        path: "stdout".into(),
        message: e.to_string(),
    })?;
    println!("{json}");
    Ok(())
}
