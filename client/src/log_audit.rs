//! A conversation's audit (`grompi audit CONVERSATION`, docs/PROTOCOL.md
//! section 13): are the indices this member accepted in the order servers'
//! audit logs?
//!
//! For every accepted index the member recomputes the entry each server
//! must have logged, `0x01 || derive_key("grompi v1 audit entry", conv ||
//! epoch || index || head)`, from its own transcript (the head it checked
//! the tags against). It finds the entry in a server's log at the position
//! the server gave (`log_index`, relayed by the router: a hint only, never
//! trusted) or, failing that, by reading the log's entry bundles, and
//! proves every entry it found included in the server's checkpoint (RFC
//! 6962 inclusion proof from the log's hash tiles against the checkpoint's
//! root). The checkpoint itself is checked first, with its cosignatures
//! ([`crate`]'s `grompi audit` does that), so a found entry is one the
//! server committed to before its peers.
//!
//! What it concludes about one index of one server:
//!
//! * **logged**: found and proved included;
//! * **not yet checkpointed**: not in the checkpoint, and nothing says it
//!   should be (its position is at or beyond the checkpoint's size, or no
//!   position was given and no later index is logged): checkpoints are
//!   signed on a timer, so the newest indices wait for the next one;
//! * **unlogged** (an alert): not in the checkpoint although an index
//!   the same server attested *after* it is (a server logs each
//!   conversation's indices in order), or although the position given for
//!   it is inside the checkpoint. The first is the server's fault alone;
//!   the second is the server's or the router's, which relayed the
//!   position (the alert says so);
//! * **mismatch** (an alert): an entry found whose inclusion proof does
//!   not verify against the checkpoint: the server serves tiles its
//!   checkpoint does not commit to.
//!
//! The checks ([`audit_server`]) do no I/O: they read the log through a
//! [`LogReader`]; [`HttpLog`] reads one over HTTP (blocking, for a thread
//! of its own), and the tests read in-memory logs.

use grompi_proto::{ConversationId, Index};
use grompi_tlog::error::StorageError;
use grompi_tlog::merkle::{Hash, inclusion_proof, leaf_hash, verify_inclusion};
use grompi_tlog::tile_reader::TileHashReader;
use grompi_tlog::tiles::{Bundle, FULL_WIDTH, Tile, decode_bundle};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

/// Largest tile or bundle read (a full bundle of 256 entries of at most
/// 64 KiB each, with their length prefixes, would be larger; attestation
/// entries are 33 bytes and security events a few hundred).
pub const MAX_TILE: usize = 4 << 20;

/// Most entry bundles one server's audit reads while searching for
/// entries whose position was not given or wrong (256 entries each).
pub const MAX_SCANNED_BUNDLES: u64 = 1 << 16;

/// Reads a log's tiles and entry bundles (as served at a given tree size).
pub trait LogReader {
    /// The bytes of `tile` (`tile/<L>/<N>[.p/<W>]`).
    fn tile(&self, tile: &Tile) -> Result<Vec<u8>, String>;
    /// The bytes of `bundle` (`tile/entries/<N>[.p/<W>]`).
    fn bundle(&self, bundle: &Bundle) -> Result<Vec<u8>, String>;
}

/// One accepted index of the conversation, as one server must have logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedEntry {
    /// The index.
    pub index: Index,
    /// Its recomputed entry.
    pub entry: Vec<u8>,
    /// Where the server said it logged it (relayed by the router), if it did.
    pub position: Option<u64>,
}

/// What the audit found for one index of one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexVerdict {
    /// Found at this position and proved included in the checkpoint.
    Logged(u64),
    /// Not in the checkpoint yet, and nothing says it should be.
    NotYetCheckpointed,
    /// An alert: attested but not logged; the text says why it should be
    /// there and whose fault it is.
    Unlogged(String),
    /// An alert: found, but its inclusion proof does not verify.
    Mismatch(String),
}

impl IndexVerdict {
    /// Whether this is an alert.
    pub fn is_alert(&self) -> bool {
        matches!(self, Self::Unlogged(_) | Self::Mismatch(_))
    }
}

/// The audit of one server's log for one conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerAudit {
    /// One verdict per expected entry, in the order given.
    pub verdicts: Vec<(Index, IndexVerdict)>,
    /// Why the search stopped early, if it did (nothing is concluded from
    /// what it did not read: those indices are "not yet checkpointed").
    pub incomplete: Option<String>,
    /// How many entries were found only by reading the log, because the
    /// position given for them was missing or wrong.
    pub searched: usize,
}

impl ServerAudit {
    /// How many indices were found logged.
    pub fn logged(&self) -> usize {
        self.verdicts
            .iter()
            .filter(|(_, v)| matches!(v, IndexVerdict::Logged(_)))
            .count()
    }

    /// The indices not yet in a checkpoint.
    pub fn waiting(&self) -> Vec<Index> {
        self.verdicts
            .iter()
            .filter(|(_, v)| *v == IndexVerdict::NotYetCheckpointed)
            .map(|(i, _)| *i)
            .collect()
    }

    /// The alerts, one line each.
    pub fn alerts(&self) -> Vec<String> {
        self.verdicts
            .iter()
            .filter_map(|(i, v)| match v {
                IndexVerdict::Unlogged(why) | IndexVerdict::Mismatch(why) => {
                    Some(format!("index {}: {why}", i.0))
                }
                _ => None,
            })
            .collect()
    }
}

/// The entries of `conversation` a server must have logged: one per index
/// of `accepted` (index, epoch, head) that the server attested, with the
/// position it gave, if any.
pub fn expected_entries(
    conversation: &ConversationId,
    accepted: impl IntoIterator<Item = (Index, grompi_proto::Epoch, grompi_proto::Head)>,
    positions: &HashMap<Index, u64>,
) -> Vec<ExpectedEntry> {
    accepted
        .into_iter()
        .map(|(index, epoch, head)| ExpectedEntry {
            index,
            entry: grompi_proto::audit::attestation_entry(conversation, epoch, index, &head)
                .to_vec(),
            position: positions.get(&index).copied(),
        })
        .collect()
}

/// A log of `size` entries with root `root`, read through `reader`, with
/// the bundles read so far.
struct Log<'a, R> {
    size: u64,
    root: Hash,
    reader: &'a R,
    bundles: RefCell<HashMap<u64, Vec<Vec<u8>>>>,
    tiles: RefCell<HashMap<String, Vec<u8>>>,
}

impl<R: LogReader> Log<'_, R> {
    /// The entries of the bundle holding position `p` (cached).
    fn bundle_of(&self, p: u64) -> Result<Vec<Vec<u8>>, String> {
        let n = p / u64::from(FULL_WIDTH);
        if let Some(b) = self.bundles.borrow().get(&n) {
            return Ok(b.clone());
        }
        let first = n.saturating_mul(u64::from(FULL_WIDTH));
        let width = self.size.saturating_sub(first).min(u64::from(FULL_WIDTH));
        let width = u16::try_from(width).map_err(|_| "bundle width out of range".to_owned())?;
        let bundle = Bundle::new(n, width).map_err(|e| e.to_string())?;
        let bytes = self.reader.bundle(&bundle)?;
        let entries = decode_bundle(&bytes, width)
            .map_err(|e| format!("entry bundle {}: {e}", bundle.path()))?;
        self.bundles.borrow_mut().insert(n, entries.clone());
        Ok(entries)
    }

    fn entry_at(&self, p: u64) -> Result<Option<Vec<u8>>, String> {
        if p >= self.size {
            return Ok(None);
        }
        let at = usize::try_from(p % u64::from(FULL_WIDTH)).unwrap_or(usize::MAX);
        Ok(self.bundle_of(p)?.get(at).cloned())
    }

    /// Proves `entry` included at `p` in the checkpoint.
    fn prove(&self, p: u64, entry: &[u8]) -> Result<(), String> {
        let hashes = TileHashReader::new(self.size, |t: &Tile| {
            let key = t.path();
            if let Some(b) = self.tiles.borrow().get(&key) {
                return Ok(b.clone());
            }
            let b = self.reader.tile(t).map_err(StorageError)?;
            self.tiles.borrow_mut().insert(key, b.clone());
            Ok(b)
        });
        let proof = inclusion_proof(p, self.size, &hashes).map_err(|e| e.to_string())?;
        verify_inclusion(&leaf_hash(entry), p, self.size, &proof, &self.root)
            .map_err(|e| e.to_string())
    }
}

/// Checks `expected` (in index order) against a server's log of `size`
/// entries whose checkpoint has root `root` (a checkpoint already
/// verified and cosigned as required).
pub fn audit_server(
    expected: &[ExpectedEntry],
    size: u64,
    root: Hash,
    reader: &impl LogReader,
) -> ServerAudit {
    let log = Log {
        size,
        root,
        reader,
        bundles: RefCell::new(HashMap::new()),
        tiles: RefCell::new(HashMap::new()),
    };
    let mut found: Vec<Option<u64>> = vec![None; expected.len()];
    let mut verdicts: Vec<Option<IndexVerdict>> = vec![None; expected.len()];
    let mut incomplete = None;
    let mut searched = 0;
    // Proves the entry of `expected[k]` found at `p`.
    let settle = |k: usize, p: u64| -> IndexVerdict {
        match log.prove(p, &expected[k].entry) {
            Ok(()) => IndexVerdict::Logged(p),
            Err(why) => IndexVerdict::Mismatch(format!(
                "its entry is at position {p}, but the inclusion proof from the \
                 log's tiles does not verify against the checkpoint of {size} entries \
                 ({why}): the server serves tiles its checkpoint does not commit to"
            )),
        }
    };
    // First where the server said it logged each index.
    for (k, e) in expected.iter().enumerate() {
        let Some(p) = e.position.filter(|p| *p < size) else {
            continue;
        };
        match log.entry_at(p) {
            Ok(Some(at)) if at == e.entry => {
                let v = settle(k, p);
                found[k] = matches!(v, IndexVerdict::Logged(_)).then_some(p);
                verdicts[k] = Some(v);
            }
            Ok(_) => {}
            Err(why) => {
                incomplete.get_or_insert(format!("reading position {p}: {why}"));
            }
        }
    }
    // Then search for the rest between the positions found around them:
    // a server logs a conversation's indices in order, so index k's entry
    // lies after the entry of every earlier index and before that of every
    // later one.
    let missing: Vec<usize> = (0..expected.len())
        .filter(|k| verdicts[*k].is_none())
        .collect();
    if !missing.is_empty() && incomplete.is_none() {
        let lo = missing
            .iter()
            .filter_map(|k| found[..*k].iter().rev().flatten().next().map(|p| p + 1))
            .min()
            .unwrap_or(0);
        let hi = missing
            .iter()
            .map(|k| found[*k..].iter().flatten().next().copied().unwrap_or(size))
            .max()
            .unwrap_or(size)
            .min(size);
        let wanted: HashMap<&[u8], usize> = missing
            .iter()
            .map(|k| (expected[*k].entry.as_slice(), *k))
            .collect();
        let width = u64::from(FULL_WIDTH);
        let (first, last) = (lo / width, hi.div_ceil(width));
        if last.saturating_sub(first) > MAX_SCANNED_BUNDLES {
            incomplete = Some(format!(
                "{} entries would have to be read to find the indices whose position \
                 was not given; read the log with `order-server log verify` instead",
                hi - lo
            ));
        } else {
            let mut hits = Vec::new();
            for n in first..last {
                match log.bundle_of(n * width) {
                    Ok(entries) => {
                        for (j, entry) in entries.iter().enumerate() {
                            let p = n * width + j as u64;
                            if (lo..hi).contains(&p)
                                && let Some(k) = wanted.get(entry.as_slice())
                            {
                                hits.push((*k, p));
                            }
                        }
                    }
                    Err(why) => {
                        incomplete = Some(format!("reading entry bundle {n}: {why}"));
                        break;
                    }
                }
            }
            for (k, p) in hits {
                if verdicts[k].is_none() {
                    searched += 1;
                    let v = settle(k, p);
                    found[k] = matches!(v, IndexVerdict::Logged(_)).then_some(p);
                    verdicts[k] = Some(v);
                }
            }
        }
    }
    let out = expected
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let v = verdicts[k].take().unwrap_or_else(|| {
                let later = found[k..]
                    .iter()
                    .zip(&expected[k..])
                    .find_map(|(p, e)| p.map(|p| (e.index, p)));
                match (later, e.position) {
                    _ if incomplete.is_some() => IndexVerdict::NotYetCheckpointed,
                    (Some((j, p)), _) => IndexVerdict::Unlogged(format!(
                        "not in the log, although index {} (attested after it) is, at \
                         position {p}: the server attested it without logging it",
                        j.0
                    )),
                    (None, Some(p)) if p < size => IndexVerdict::Unlogged(format!(
                        "not in the log of {size} entries, although its position was \
                         given as {p} (by the server, relayed by the router): the server \
                         did not log it, or the router changed the position"
                    )),
                    _ => IndexVerdict::NotYetCheckpointed,
                }
            });
            (e.index, v)
        })
        .collect();
    ServerAudit {
        verdicts: out,
        incomplete,
        searched,
    }
}

/// A log served over plain HTTP at `log_url` (`http://host:port[/prefix]`,
/// as the network descriptor names it), read with blocking sockets: run it
/// on a thread of its own. Every read is checked by the audit, never
/// trusted.
#[derive(Clone, Debug)]
pub struct HttpLog {
    authority: String,
    prefix: String,
    timeout: Duration,
}

impl HttpLog {
    /// A reader of the log at `log_url`; only `http://` URLs are read by
    /// this version.
    pub fn new(log_url: &str) -> Result<Self, String> {
        let rest = log_url
            .strip_prefix("http://")
            .ok_or("only http:// log URLs are fetched by this version")?;
        let (authority, prefix) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            prefix: prefix.trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(10),
        })
    }

    /// GETs `path` (relative to the log URL): the body of a 200 answer of
    /// at most `max` bytes.
    pub fn get(&self, path: &str, max: usize) -> Result<Vec<u8>, String> {
        use std::net::ToSocketAddrs;
        let addr = self
            .authority
            .to_socket_addrs()
            .map_err(|e| format!("resolve {}: {e}", self.authority))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.authority))?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| format!("connect {}: {e}", self.authority))?;
        s.set_read_timeout(Some(self.timeout))
            .and_then(|()| s.set_write_timeout(Some(self.timeout)))
            .map_err(|e| e.to_string())?;
        s.write_all(
            format!(
                "GET {}/{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.prefix, self.authority
            )
            .as_bytes(),
        )
        .map_err(|e| format!("GET {path}: {e}"))?;
        let mut out = Vec::new();
        (&mut s)
            .take((max + 8192) as u64)
            .read_to_end(&mut out)
            .map_err(|e| format!("GET {path}: {e}"))?;
        let end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("GET {path}: not an HTTP response"))?;
        let status = out.get(9..12).and_then(|s| std::str::from_utf8(s).ok());
        if status != Some("200") {
            return Err(format!(
                "GET {path}: HTTP status {}",
                status.unwrap_or("unreadable")
            ));
        }
        let body = out.get(end + 4..).unwrap_or_default();
        if body.len() > max {
            return Err(format!("GET {path}: more than {max} bytes"));
        }
        Ok(body.to_vec())
    }
}

impl LogReader for HttpLog {
    fn tile(&self, tile: &Tile) -> Result<Vec<u8>, String> {
        self.get(&tile.path(), MAX_TILE)
    }

    fn bundle(&self, bundle: &Bundle) -> Result<Vec<u8>, String> {
        self.get(&bundle.path(), MAX_TILE)
    }
}

#[cfg(test)]
#[path = "log_audit_tests.rs"]
mod tests;
