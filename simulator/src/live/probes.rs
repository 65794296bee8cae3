//! Probes read from the servers' own Prometheus endpoints: histograms of
//! the order servers' durable commits, the time an order server takes to
//! answer one `AttestStream` request, and the router's round trip to an
//! order server. The benchmark scrapes each endpoint before and after a
//! phase and keeps the difference, so a figure covers that phase only.
//!
//! Medians come from the cumulative buckets, interpolated linearly within
//! the bucket that holds the middle observation (the buckets are
//! `grompi_ops::telemetry`'s: steps of at most a third of their lower edge
//! from 300 us to 5 ms, at most half from 50 us to 10 ms).

use super::LiveError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The order servers' group commit (write-ahead log append and sync, then
/// the database commit): one durable append.
pub const ORDER_COMMIT: &str = "grompi_order_commit_seconds";
/// One `AttestStream` request at an order server, arrival to answer.
pub const ORDER_ATTEST_REQUEST: &str = "grompi_order_attest_request_seconds";
/// The router's attest job, sent to answered, per order server.
pub const ROUTER_FANOUT: &str = "router_fanout_seconds";
/// The router's handling of one Submit, arrival to reply (committed for
/// the relay, attested by a quorum otherwise).
pub const ROUTER_SUBMIT: &str = "router_quorum_wait_seconds";
/// The router's own commits (label `durability`).
pub const ROUTER_COMMIT: &str = "router_commit_seconds";
/// The router's checkpoints (durable database commits; nothing commits
/// meanwhile).
pub const ROUTER_CHECKPOINT: &str = "router_wal_checkpoint_seconds";
/// An order server's checkpoints (as above).
pub const ORDER_CHECKPOINT: &str = "grompi_order_wal_checkpoint_seconds";

/// One histogram, every label set merged: upper bounds and cumulative counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Cumulative count per upper bound (seconds), `+Inf` as infinity.
    pub buckets: BTreeMap<OrderedF64, f64>,
    /// Observations.
    pub count: f64,
    /// Sum of observations, seconds.
    pub sum: f64,
}

/// An `f64` that orders totally (bucket bounds are never NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderedF64(pub f64);

impl Eq for OrderedF64 {}

impl PartialOrd for OrderedF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Histogram {
    /// `self - before`: the observations made in between.
    pub fn since(&self, before: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| {
                    (
                        *le,
                        (c - before.buckets.get(le).copied().unwrap_or(0.0)).max(0.0),
                    )
                })
                .collect(),
            count: (self.count - before.count).max(0.0),
            sum: (self.sum - before.sum).max(0.0),
        }
    }

    /// Adds another histogram's counts (the same metric from another
    /// process or label set).
    pub fn merge(&mut self, other: &Histogram) {
        for (le, c) in &other.buckets {
            *self.buckets.entry(*le).or_default() += c;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// The `q` quantile in milliseconds, interpolated within its bucket;
    /// `None` without observations.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let mut lower = 0.0;
        let mut below = 0.0;
        for (le, cumulative) in &self.buckets {
            if *cumulative >= rank && *cumulative > below {
                if le.0.is_infinite() {
                    return Some(lower * 1000.0);
                }
                let within = (rank - below) / (cumulative - below);
                return Some((lower + (le.0 - lower) * within) * 1000.0);
            }
            lower = le.0;
            below = *cumulative;
        }
        Some(lower * 1000.0)
    }

    /// The mean in milliseconds; `None` without observations.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count * 1000.0)
    }
}

/// One scrape of one endpoint: every histogram by name, label sets merged
/// (optionally only those whose labels contain a filter, see [`Scrape::get`]).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// (metric name, labels without `le`) to histogram.
    histograms: BTreeMap<(String, String), Histogram>,
}

impl Scrape {
    /// Parses the Prometheus text exposition.
    pub fn parse(text: &str) -> Scrape {
        let mut histograms: BTreeMap<(String, String), Histogram> = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if let Some(base) = name.strip_suffix("_bucket") {
                let mut le = None;
                let others: Vec<&str> = labels
                    .split(',')
                    .filter(|l| {
                        if let Some(v) = l.strip_prefix("le=") {
                            le = Some(v.trim_matches('"').to_owned());
                            false
                        } else {
                            !l.is_empty()
                        }
                    })
                    .collect();
                let Some(le) = le else { continue };
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    let Ok(b) = le.parse::<f64>() else { continue };
                    b
                };
                let h = histograms
                    .entry((base.to_owned(), others.join(",")))
                    .or_default();
                h.buckets.insert(OrderedF64(bound), value);
            } else if let Some(base) = name.strip_suffix("_count") {
                if let Some(h) = histograms.get_mut(&(base.to_owned(), labels.to_owned())) {
                    h.count = value;
                }
            } else if let Some(base) = name.strip_suffix("_sum")
                && let Some(h) = histograms.get_mut(&(base.to_owned(), labels.to_owned()))
            {
                h.sum = value;
            }
        }
        Scrape { histograms }
    }

    /// Fetches `http://addr/metrics` (the servers answer any path).
    pub fn fetch(addr: SocketAddr) -> Result<Scrape, LiveError> {
        let fail = LiveError::io(format!("read the metrics at {addr}"));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(fail)?;
        let io = LiveError::io(format!("read the metrics at {addr}"));
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .and_then(|()| s.write_all(b"GET /metrics HTTP/1.1\r\nhost: bench\r\n\r\n"))
            .map_err(io)?;
        let mut out = String::new();
        s.read_to_string(&mut out)
            .map_err(LiveError::io(format!("read the metrics at {addr}")))?;
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok(Scrape::parse(body))
    }

    /// The histogram `name`, merged over every label set whose labels
    /// contain `filter` (`""` for all).
    pub fn get(&self, name: &str, filter: &str) -> Histogram {
        let mut out = Histogram::default();
        for ((n, labels), h) in &self.histograms {
            if n == name && labels.contains(filter) {
                out.merge(h);
            }
        }
        out
    }
}

/// Scrapes every endpoint given (skipping servers without one).
pub fn scrape_all(addrs: &[SocketAddr]) -> Result<Vec<Scrape>, LiveError> {
    addrs.iter().map(|a| Scrape::fetch(*a)).collect()
}

/// `name` over every endpoint, observations between two scrapes of each.
pub fn between(before: &[Scrape], after: &[Scrape], name: &str, filter: &str) -> Histogram {
    let mut out = Histogram::default();
    for (b, a) in before.iter().zip(after) {
        out.merge(&a.get(name, filter).since(&b.get(name, filter)));
    }
    out
}

/// Medians of the probes over one phase of an attested cell, in ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Probes {
    /// An order server's group commit (log append, fdatasync, database
    /// commit), p50 over every server.
    pub order_commit_p50_ms: Option<f64>,
    /// Commits counted, over every server.
    pub order_commits: u64,
    /// An order server's handling of one AttestStream request (arrival to
    /// answer: parse, queue, commit), p50 over every server.
    pub order_request_p50_ms: Option<f64>,
    /// The router's attest job from sent to answered, p50 over every server.
    pub router_fanout_p50_ms: Option<f64>,
    /// Jobs counted.
    pub router_fanouts: u64,
    /// The router↔order-server round trip without the server's handling:
    /// `router_fanout_p50_ms - order_request_p50_ms`.
    pub round_trip_p50_ms: Option<f64>,
    /// The router's synced commits, p50.
    pub router_commit_p50_ms: Option<f64>,
    /// The router's handling of one Submit, arrival to reply, p50: the
    /// admission's commit and, attested, the wait for the quorum and the
    /// tags' application (the relay's cells have it too).
    pub router_submit_p50_ms: Option<f64>,
}

impl Probes {
    /// The probes from scrapes of the router (`router_*`) and of the order
    /// servers (`order_*`) before and after a phase.
    pub fn between(
        router_before: &[Scrape],
        router_after: &[Scrape],
        order_before: &[Scrape],
        order_after: &[Scrape],
    ) -> Probes {
        let commit = between(order_before, order_after, ORDER_COMMIT, "");
        let request = between(order_before, order_after, ORDER_ATTEST_REQUEST, "");
        let fanout = between(router_before, router_after, ROUTER_FANOUT, "");
        let router_commit = between(
            router_before,
            router_after,
            ROUTER_COMMIT,
            "durability=\"synced\"",
        );
        let order_request_p50_ms = request.quantile_ms(0.5);
        let router_fanout_p50_ms = fanout.quantile_ms(0.5);
        Probes {
            order_commit_p50_ms: commit.quantile_ms(0.5),
            order_commits: commit.count as u64,
            order_request_p50_ms,
            router_fanout_p50_ms,
            router_fanouts: fanout.count as u64,
            round_trip_p50_ms: router_fanout_p50_ms
                .zip(order_request_p50_ms)
                .map(|(f, r)| (f - r).max(0.0)),
            router_commit_p50_ms: router_commit.quantile_ms(0.5),
            router_submit_p50_ms: between(router_before, router_after, ROUTER_SUBMIT, "")
                .quantile_ms(0.5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE x_seconds histogram\n\
        x_seconds_bucket{server=\"a\",le=\"0.001\"} 2\n\
        x_seconds_bucket{server=\"a\",le=\"0.002\"} 6\n\
        x_seconds_bucket{server=\"a\",le=\"+Inf\"} 8\n\
        x_seconds_sum{server=\"a\"} 0.02\n\
        x_seconds_count{server=\"a\"} 8\n\
        x_seconds_bucket{server=\"b\",le=\"0.001\"} 0\n\
        x_seconds_bucket{server=\"b\",le=\"0.002\"} 0\n\
        x_seconds_bucket{server=\"b\",le=\"+Inf\"} 0\n\
        x_seconds_sum{server=\"b\"} 0\n\
        x_seconds_count{server=\"b\"} 0\n\
        other_total 5\n";

    /// The router's Submit is read from its own histogram, and the order
    /// servers' probes stay empty without order servers (the relay).
    #[test]
    fn the_routers_submit_is_probed_without_order_servers() {
        let before = Scrape::parse(&format!(
            "{ROUTER_SUBMIT}_bucket{{le=\"0.001\"}} 1\n{ROUTER_SUBMIT}_bucket{{le=\"0.002\"}} 1\n\
             {ROUTER_SUBMIT}_bucket{{le=\"+Inf\"}} 1\n{ROUTER_SUBMIT}_count 1\n"
        ));
        let after = Scrape::parse(&format!(
            "{ROUTER_SUBMIT}_bucket{{le=\"0.001\"}} 1\n{ROUTER_SUBMIT}_bucket{{le=\"0.002\"}} 5\n\
             {ROUTER_SUBMIT}_bucket{{le=\"+Inf\"}} 5\n{ROUTER_SUBMIT}_count 5\n"
        ));
        let p = Probes::between(&[before], &[after], &[], &[]);
        // Four observations in (1, 2] ms: the median is halfway.
        let submit = p.router_submit_p50_ms.unwrap_or_default();
        assert!((submit - 1.5).abs() < 1e-9, "{p:?}");
        assert_eq!(p.order_commits, 0);
        assert_eq!(p.order_commit_p50_ms, None);
        assert_eq!(p.round_trip_p50_ms, None);
    }

    #[test]
    fn histograms_parse_merge_and_give_interpolated_medians() {
        let s = Scrape::parse(TEXT);
        let h = s.get("x_seconds", "");
        assert_eq!(h.count, 8.0);
        // Rank 4 of 8: two below 1 ms, four in (1, 2] ms: halfway.
        let p50 = h.quantile_ms(0.5).unwrap_or_default();
        assert!((p50 - 1.5).abs() < 1e-9, "{p50}");
        assert!((h.mean_ms().unwrap_or_default() - 2.5).abs() < 1e-9);
        assert_eq!(s.get("x_seconds", "server=\"b\"").count, 0.0);
        assert_eq!(s.get("x_seconds", "server=\"b\"").quantile_ms(0.5), None);
        let d = h.since(&h);
        assert_eq!(d.count, 0.0);
        assert_eq!(d.quantile_ms(0.5), None);
    }
}
