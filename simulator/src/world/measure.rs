//! What a run cost: messages on the network and acceptance latency, in
//! virtual time.

use serde::Serialize;

/// Counters collected during a run.
#[derive(Debug, Clone, Default)]
pub struct Measure {
    /// Every message put on the simulated network (calls, replies, jobs, deliveries, ...).
    pub messages: u64,
    /// Distinct (history, index) pairs some member accepted.
    pub accepted_envelopes: u64,
    /// Per (scripted envelope, recipient): submit to acceptance, in µs.
    pub latencies_us: Vec<u64>,
}

/// What a run cost, as the run report shows it (from [`Measure::summary`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Messages on the simulated network over the whole run.
    pub messages: u64,
    /// Distinct (history, index) pairs some member accepted; a fork counts each history.
    pub accepted_envelopes: u64,
    /// `messages` / `accepted_envelopes`, two decimals (0 when nothing was accepted).
    pub messages_per_envelope: f64,
    /// Mean submit-to-acceptance latency at recipients, virtual ms.
    pub mean_latency_ms: f64,
    /// Largest such latency, virtual ms.
    pub max_latency_ms: f64,
    /// Virtual duration of the run, ms.
    pub duration_ms: u64,
}

impl Measure {
    /// The report's metrics for a run of `duration_ms` virtual ms; latencies in ms, two decimals.
    pub fn summary(&self, duration_ms: u64) -> Metrics {
        let n = self.latencies_us.len() as f64;
        let sum: u64 = self.latencies_us.iter().sum();
        let max = self.latencies_us.iter().max().copied().unwrap_or(0);
        Metrics {
            messages: self.messages,
            accepted_envelopes: self.accepted_envelopes,
            messages_per_envelope: if self.accepted_envelopes == 0 {
                0.0
            } else {
                round(self.messages as f64 / self.accepted_envelopes as f64)
            },
            mean_latency_ms: if n == 0.0 {
                0.0
            } else {
                round(sum as f64 / n / 1000.0)
            },
            max_latency_ms: round(max as f64 / 1000.0),
            duration_ms,
        }
    }
}

/// Two decimals, so reports print the same everywhere.
fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
