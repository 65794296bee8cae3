//! The deterministic scheduler: virtual time, one seeded random source, and
//! an event queue whose ties are broken by insertion order.
//!
//! Everything random in a run (message latencies, which of two ready events
//! goes first, an adversary's choices) is drawn from [`Schedule::rng`], a
//! ChaCha20 stream seeded from the run's one seed, so the same seed gives
//! the same run, byte for byte. Replay a run by passing its seed again.

use rand::rngs::ChaCha20Rng;
use rand::{Rng, RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Virtual time, in microseconds since the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtualTime(pub u64);

impl VirtualTime {
    /// This time plus `micros`, saturating.
    pub fn after(self, micros: u64) -> Self {
        Self(self.0.saturating_add(micros))
    }
}

struct Queued<E> {
    at: VirtualTime,
    order: u64,
    event: E,
}

impl<E> PartialEq for Queued<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl<E> Eq for Queued<E> {}
impl<E> PartialOrd for Queued<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Queued<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// A seeded, virtual-time event queue.
pub struct Schedule<E> {
    now: VirtualTime,
    next_order: u64,
    queue: BinaryHeap<Reverse<Queued<E>>>,
    rng: ChaCha20Rng,
    seed: u64,
    steps: u64,
}

impl<E> Schedule<E> {
    /// A schedule for the run with this seed.
    pub fn new(seed: u64) -> Self {
        Self {
            now: VirtualTime::default(),
            next_order: 0,
            queue: BinaryHeap::new(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            seed,
            steps: 0,
        }
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current virtual time.
    pub fn now(&self) -> VirtualTime {
        self.now
    }

    /// How many events have run.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The run's random source.
    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.rng
    }

    /// Fills `bytes` from the run's random source.
    pub fn fill(&mut self, bytes: &mut [u8]) {
        self.rng.fill_bytes(bytes);
    }

    /// Queues `event` at `micros` after now.
    pub fn after(&mut self, micros: u64, event: E) {
        let at = self.now.after(micros);
        self.at(at, event);
    }

    /// Queues `event` after a random latency in `[low, high]` microseconds:
    /// how adversarial interleavings arise from the seed.
    pub fn after_jitter(&mut self, low: u64, high: u64, event: E) {
        let micros = if high > low {
            self.rng.random_range(low..=high)
        } else {
            low
        };
        self.after(micros, event);
    }

    /// Queues `event` at an absolute time (never before now).
    pub fn at(&mut self, at: VirtualTime, event: E) {
        let order = self.next_order;
        self.next_order += 1;
        self.queue.push(Reverse(Queued {
            at: at.max(self.now),
            order,
            event,
        }));
    }

    /// Takes the next event and advances time to it.
    pub fn next_event(&mut self) -> Option<E> {
        let Reverse(q) = self.queue.pop()?;
        self.now = q.at;
        self.steps += 1;
        Some(q.event)
    }

    /// Whether no event is queued.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// The number of queued events.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64) -> Vec<(u64, u32)> {
        let mut s = Schedule::new(seed);
        for i in 0..50 {
            s.after_jitter(0, 1000, i);
        }
        let mut out = Vec::new();
        while let Some(e) = s.next_event() {
            out.push((s.now().0, e));
            if e % 7 == 0 && e < 1000 {
                s.after_jitter(1, 10, e + 1000);
            }
        }
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn time_never_goes_back_and_ties_keep_insertion_order() {
        let order = run(9);
        assert!(order.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut s = Schedule::new(1);
        s.after(5, "first");
        s.after(5, "second");
        s.at(VirtualTime(0), "past means now");
        assert_eq!(s.next_event(), Some("past means now"));
        assert_eq!(s.next_event(), Some("first"));
        assert_eq!(s.next_event(), Some("second"));
        assert!(s.is_idle());
        assert_eq!(s.steps(), 3);
    }
}
