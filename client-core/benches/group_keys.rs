//! The sender's cost of one Message in a group-keyed conversation
//! (`docs/PROTOCOL.md` 4.5: one body under the sender chain's message key,
//! no blocks) against per-message pairwise wrapping (sections 4.1 to 4.3: a
//! fresh body key in one Olm block per recipient), at several group sizes,
//! both measured in the same run.
//!
//! Each group of `g` members is the testkit's in-memory world with the
//! real order server cores: every pairwise session is set up, the Setup is
//! ordered and delivered, and every recipient then sends the sender one
//! Olm message, so the sender's sessions are past their pre-key messages
//! (the steady state) before anything is timed. What is timed is
//! `Conversation::compose` of a 64-byte Message by member 0, nothing else:
//! no ordering, delivery or decryption. Each cell is timed in `ROUNDS`
//! rounds of `iterations` messages; the figure is the median round.
//!
//! `cargo bench -p grompi-client-core --bench group_keys [-- --json FILE]`
//! measures g = 8, 32 and 256 and prints a table and the JSON. Run as a
//! test (`cargo test`, which passes no `--bench`), it measures g = 2 with a
//! few iterations and checks that every cell was measured (never a time).
#![forbid(unsafe_code)]

use grompi_client_core::content::Content;
use grompi_client_core::testkit::World;
use grompi_proto::pb;
use serde::Serialize;
use std::time::Instant;

/// Timed rounds per cell; the median is reported.
const ROUNDS: usize = 5;

/// Why the benchmark could not measure.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// Member 0 holds no conversation after the Setup.
    #[error("member 0 holds no conversation")]
    NoConversation,
    /// The client refused to compose or a session failed.
    #[error("g = {g}, {mode}: {message}")]
    Client {
        g: usize,
        mode: &'static str,
        message: String,
    },
    /// A cell came out empty (the smoke test's check).
    #[error("cell g = {g}, {mode} was not measured")]
    Unmeasured { g: usize, mode: &'static str },
    /// Writing the JSON failed.
    #[error("writing {path}: {message}")]
    Output { path: String, message: String },
}

/// One measured cell: a group size and a keying mode.
#[derive(Debug, Clone, Serialize)]
struct Cell {
    /// Members in the conversation (the sender and g - 1 recipients).
    g: usize,
    /// `group` or `pairwise`.
    mode: &'static str,
    /// Messages per timed round.
    iterations: usize,
    /// Median over the rounds of the sender's time per message.
    ns_per_message: u64,
    /// Fastest round's time per message.
    ns_per_message_min: u64,
    /// Envelope bytes of one Message (protobuf encoding of the envelope).
    envelope_bytes: usize,
    /// Recipient blocks in one Message.
    blocks: usize,
}

/// A group size's two cells and their ratios (pairwise over group).
#[derive(Debug, Clone, Serialize)]
struct Row {
    g: usize,
    group: Cell,
    pairwise: Cell,
    /// Pairwise time per message divided by group-keyed time per message.
    cpu_ratio: f64,
    /// Pairwise envelope bytes divided by group-keyed envelope bytes.
    bytes_ratio: f64,
}

/// A world of `g` members whose conversation (created by member 0) is
/// group-keyed with key periods of 100 indices, or pairwise-keyed; every
/// recipient has sent member 0 one Olm message.
fn world(g: usize, group: bool, seed: u64) -> Result<World, BenchError> {
    let mut w = World::new(seed, g, 3, 3);
    w.group_period = group.then_some(100);
    w.setup(0);
    let mode = if group { "group" } else { "pairwise" };
    let client = |message: String| BenchError::Client { g, mode, message };
    let sender = w.accounts[0];
    for j in 1..g {
        let frame = w.secrets[j]
            .pairwise
            .encrypt_to(&sender, b"steady state")
            .map_err(|e| client(e.to_string()))?;
        w.secrets[0]
            .pairwise
            .decrypt_from(&frame)
            .map_err(|e| client(e.to_string()))?;
    }
    Ok(w)
}

/// Times `iterations` Messages from member 0 of a fresh world, `ROUNDS`
/// times.
fn cell(g: usize, group: bool, iterations: usize, seed: u64) -> Result<Cell, BenchError> {
    let mode = if group { "group" } else { "pairwise" };
    let client = |message: String| BenchError::Client { g, mode, message };
    let mut w = world(g, group, seed)?;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let text = vec![b'x'; 64];
    let World { convs, secrets, .. } = &mut w;
    let conv = convs
        .first_mut()
        .and_then(Option::as_mut)
        .ok_or(BenchError::NoConversation)?;
    let secrets = secrets.first_mut().ok_or(BenchError::NoConversation)?;
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut envelope_bytes = 0;
    let mut blocks = 0;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..iterations {
            let composed = conv
                .compose(Content::Message(text.clone()), &mut rng, secrets)
                .map_err(|e| client(e.to_string()))?;
            if envelope_bytes == 0 {
                // Outside the work that matters but inside the timing, once.
                envelope_bytes =
                    grompi_proto::wire::encode::<pb::Envelope, _>(&composed.envelope).len();
                blocks = composed.envelope.blocks().len();
            }
            std::hint::black_box(composed);
        }
        let per = start.elapsed().as_nanos() / iterations.max(1) as u128;
        rounds.push(u64::try_from(per).unwrap_or(u64::MAX));
    }
    rounds.sort_unstable();
    Ok(Cell {
        g,
        mode,
        iterations,
        ns_per_message: rounds.get(ROUNDS / 2).copied().unwrap_or(0),
        ns_per_message_min: rounds.first().copied().unwrap_or(0),
        envelope_bytes,
        blocks,
    })
}

/// Measures both modes at every size in `sizes`, `iterations(g)` messages
/// per round.
fn measure(sizes: &[usize], iterations: impl Fn(usize) -> usize) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    for (i, &g) in sizes.iter().enumerate() {
        let seed = 17 + i as u64;
        let n = iterations(g);
        let group = cell(g, true, n, seed)?;
        let pairwise = cell(g, false, n, seed)?;
        rows.push(Row {
            g,
            cpu_ratio: pairwise.ns_per_message as f64 / group.ns_per_message.max(1) as f64,
            bytes_ratio: pairwise.envelope_bytes as f64 / group.envelope_bytes.max(1) as f64,
            group,
            pairwise,
        });
    }
    Ok(rows)
}

/// Every cell was measured: messages composed, envelope bytes counted,
/// and pairwise wrapping made one block per recipient while the
/// group-keyed Message has none.
fn check(rows: &[Row]) -> Result<(), BenchError> {
    for r in rows {
        for c in [&r.group, &r.pairwise] {
            let blocks_expected = if c.mode == "group" { 0 } else { c.g - 1 };
            if c.iterations == 0 || c.envelope_bytes == 0 || c.blocks != blocks_expected {
                return Err(BenchError::Unmeasured {
                    g: c.g,
                    mode: c.mode,
                });
            }
        }
    }
    Ok(())
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| g | group us/msg | pairwise us/msg | CPU pairwise/group | group bytes | pairwise bytes | bytes pairwise/group |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1}x | {} | {} | {:.1}x |\n",
            r.g,
            r.group.ns_per_message as f64 / 1000.0,
            r.pairwise.ns_per_message as f64 / 1000.0,
            r.cpu_ratio,
            r.group.envelope_bytes,
            r.pairwise.envelope_bytes,
            r.bytes_ratio,
        ));
    }
    out
}

fn main() -> Result<(), BenchError> {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    if !full {
        // `cargo test`: a smoke run that checks every cell was measured.
        let rows = measure(&[2], |_| 3)?;
        check(&rows)?;
        println!("group_keys smoke run: every cell measured");
        return Ok(());
    }
    let rows = measure(&[8, 32, 256], |g| match g {
        0..=8 => 2000,
        9..=32 => 1000,
        _ => 200,
    })?;
    check(&rows)?;
    print!("{}", table(&rows));
    let json = serde_json::to_string_pretty(&rows).map_err(|e| BenchError::Output {
        path: "stdout".into(),
        message: e.to_string(),
    })?;
    match args.iter().position(|a| a == "--json") {
        Some(i) => {
            let path = args.get(i + 1).cloned().unwrap_or_default();
            std::fs::write(&path, json + "\n").map_err(|e| BenchError::Output {
                path,
                message: e.to_string(),
            })?;
        }
        None => println!("{json}"),
    }
    Ok(())
}
