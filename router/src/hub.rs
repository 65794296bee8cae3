//! Live subscribers: each `Subscribe` stream has its own queue of
//! deliveries, bounded by count and by bytes, and the queues together are
//! bounded by bytes; an account may hold a few streams, the router a
//! bounded number.
//!
//! A subscriber that falls behind (its queue over `subscriber_queue`
//! deliveries or `subscriber_queue_bytes`; one holding nothing takes any
//! one delivery) is disconnected: its queue is
//! freed at once and its stream ends, and the client reconnects and
//! fetches what it missed. When the queues together would go over
//! `max_subscriber_bytes`, the subscribers holding the most are
//! disconnected first. A stream the client closed (or dropped) leaves the
//! hub at once, with whatever it still had queued.

use crate::error::RouterError;
use crate::limits::Limits;
use grompi_proto::{AccountId, pb};
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// The hub's bounds (from [`Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLimits {
    /// Most deliveries queued for one subscriber (`subscriber_queue`).
    pub queue: usize,
    /// Most bytes queued for one subscriber (`subscriber_queue_bytes`).
    pub queue_bytes: usize,
    /// Most bytes queued for all subscribers (`max_subscriber_bytes`).
    pub total_bytes: usize,
    /// Most streams of one account (`max_subscribers_per_account`).
    pub per_account: usize,
    /// Most streams in all (`max_subscribers`).
    pub total: usize,
}

impl HubLimits {
    /// The bounds `limits` configures.
    pub fn of(limits: &Limits) -> Self {
        Self {
            queue: limits.subscriber_queue.max(1),
            queue_bytes: limits.subscriber_queue_bytes,
            total_bytes: limits.max_subscriber_bytes,
            per_account: limits.max_subscribers_per_account,
            total: limits.max_subscribers,
        }
    }
}

/// One delivery in a queue, shared by the subscribers of its account.
#[derive(Debug)]
struct Queued {
    delivery: Arc<pb::Delivery>,
    /// What it counts against the bounds: its encoded size.
    bytes: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Queued>,
    /// Bytes of `items`.
    bytes: usize,
    /// Bytes of the delivery handed to the stream and not yet taken by
    /// the client (still counted).
    transit: usize,
    /// Disconnected by the hub: the stream ends.
    closed: bool,
}

/// One subscriber's queue, shared by the hub (which fills it) and its
/// stream (which empties it).
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Notify,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    queue: Arc<Queue>,
}

#[derive(Debug, Default)]
struct HubState {
    by_account: HashMap<AccountId, Vec<Subscriber>>,
    streams: usize,
    /// Bytes queued over all subscribers.
    bytes: usize,
}

/// Live subscribers by account.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<HubState>,
    limits: HubLimits,
    next: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(HubLimits::of(&Limits::default()))
    }
}

/// Why a subscriber was disconnected.
#[derive(Debug, Clone, Copy)]
enum Why {
    /// Its own queue is full.
    Slow,
    /// The queues together are full and it held the most.
    HubFull,
    /// The router is shutting down, or the stream went away: nothing to count or log.
    Shutdown,
}

impl Hub {
    /// A hub with these bounds.
    pub fn new(limits: HubLimits) -> Self {
        Self {
            state: Mutex::new(HubState::default()),
            limits,
            next: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a subscriber for `account`, or says which bound refuses it.
    pub fn subscribe(self: &Arc<Self>, account: AccountId) -> Result<Subscription, RouterError> {
        let mut s = self.lock();
        if s.streams >= self.limits.total {
            return Err(RouterError::SubscribersFull {
                max: self.limits.total,
            });
        }
        let open = s.by_account.get(&account).map_or(0, Vec::len);
        if open >= self.limits.per_account {
            return Err(RouterError::TooManySubscriptions { open });
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue::default());
        s.by_account.entry(account).or_default().push(Subscriber {
            id,
            queue: queue.clone(),
        });
        s.streams += 1;
        gauges(&s);
        Ok(Subscription {
            hub: Arc::downgrade(self),
            account,
            id,
            queue,
        })
    }

    /// Queues `delivery` for every live subscriber of `account`,
    /// disconnecting those it would take over a bound.
    pub fn deliver(&self, account: &AccountId, delivery: pb::Delivery) {
        let bytes = delivery.encoded_len();
        let delivery = Arc::new(delivery);
        let mut s = self.lock();
        let Some(list) = s.by_account.get(account) else {
            return;
        };
        let queues: Vec<(u64, Arc<Queue>)> = list.iter().map(|x| (x.id, x.queue.clone())).collect();
        for (id, queue) in queues {
            let fits = {
                let q = queue.lock();
                let held = q.bytes + q.transit;
                // A subscriber holding nothing takes any one delivery, so
                // a large one never cuts off a subscriber that keeps up.
                !q.closed
                    && q.items.len() < self.limits.queue
                    && (held == 0 || held.saturating_add(bytes) <= self.limits.queue_bytes)
            };
            if !fits {
                self.disconnect(&mut s, account, id, Why::Slow);
                continue;
            }
            // Make room in the hub, disconnecting the subscribers holding
            // the most; this one too if it holds the most.
            let mut admitted = true;
            while s.bytes.saturating_add(bytes) > self.limits.total_bytes {
                match largest(&s) {
                    Some((a, victim, held)) if held > 0 => {
                        let own = victim == id;
                        self.disconnect(&mut s, &a, victim, Why::HubFull);
                        if own {
                            admitted = false;
                            break;
                        }
                    }
                    _ => {
                        // Nothing queued anywhere, and still no room: the
                        // delivery alone is over the bound.
                        self.disconnect(&mut s, account, id, Why::HubFull);
                        admitted = false;
                        break;
                    }
                }
            }
            if !admitted {
                continue;
            }
            let mut q = queue.lock();
            if q.closed {
                continue;
            }
            q.items.push_back(Queued {
                delivery: delivery.clone(),
                bytes,
            });
            q.bytes += bytes;
            s.bytes += bytes;
            drop(q);
            queue.ready.notify_one();
        }
        gauges(&s);
    }

    /// Removes subscriber `id` of `account`, frees its queue and ends its
    /// stream.
    fn disconnect(&self, s: &mut HubState, account: &AccountId, id: u64, why: Why) {
        let Some(list) = s.by_account.get_mut(account) else {
            return;
        };
        let Some(pos) = list.iter().position(|x| x.id == id) else {
            return;
        };
        let sub = list.swap_remove(pos);
        if list.is_empty() {
            s.by_account.remove(account);
        }
        s.streams = s.streams.saturating_sub(1);
        let freed = {
            let mut q = sub.queue.lock();
            q.closed = true;
            q.items.clear();
            std::mem::take(&mut q.bytes) + std::mem::take(&mut q.transit)
        };
        s.bytes = s.bytes.saturating_sub(freed);
        sub.queue.ready.notify_one();
        match why {
            Why::Slow => {
                metrics::counter!("router_slow_subscribers_disconnected_total").increment(1);
                tracing::info!(account = %account, "subscriber too slow; disconnected");
            }
            Why::HubFull => {
                metrics::counter!("router_cap_refusals_total", "cap" => "max_subscriber_bytes")
                    .increment(1);
                tracing::info!(account = %account, freed,
                    "subscriber queues full; disconnected the one holding the most");
            }
            Why::Shutdown => {}
        }
    }

    /// A stream went away: forget its subscriber and what it had queued.
    fn forget(&self, account: &AccountId, id: u64) {
        let mut s = self.lock();
        self.disconnect(&mut s, account, id, Why::Shutdown);
        gauges(&s);
    }

    /// Disconnects everyone (shutdown).
    pub fn close_all(&self) {
        let mut s = self.lock();
        let all: Vec<(AccountId, u64)> = s
            .by_account
            .iter()
            .flat_map(|(a, l)| l.iter().map(|x| (*a, x.id)))
            .collect();
        for (a, id) in all {
            self.disconnect(&mut s, &a, id, Why::Shutdown);
        }
        gauges(&s);
    }

    /// Live subscribers.
    pub fn subscribers(&self) -> usize {
        self.lock().streams
    }

    /// Bytes queued over all subscribers.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The bounds.
    pub fn limits(&self) -> HubLimits {
        self.limits
    }
}

/// The subscriber with the most bytes queued behind its stream (the one
/// in its stream's buffer aside: a subscriber that keeps up holds only
/// that one): its account, id and bytes.
fn largest(s: &HubState) -> Option<(AccountId, u64, usize)> {
    s.by_account
        .iter()
        .flat_map(|(a, l)| l.iter().map(move |x| (*a, x.id, x.queue.lock().bytes)))
        .max_by_key(|(_, _, b)| *b)
}

fn gauges(s: &HubState) {
    metrics::gauge!("router_subscribers").set(s.streams as f64);
    metrics::gauge!("router_subscriber_bytes").set(s.bytes as f64);
}

/// One live subscriber's stream of deliveries. It ends when the hub
/// disconnects it; dropping it (the client went away) removes the
/// subscriber from the hub at once.
#[derive(Debug)]
pub struct Subscription {
    hub: std::sync::Weak<Hub>,
    account: AccountId,
    id: u64,
    queue: Arc<Queue>,
}

impl Subscription {
    /// Takes the next queued delivery, if any; it stays counted (in
    /// transit) until [`Subscription::delivered`]. `Err(())` once the hub
    /// disconnected this subscriber and nothing is left.
    fn take(&self) -> Result<Option<Queued>, ()> {
        let mut q = self.queue.lock();
        match q.items.pop_front() {
            Some(item) => {
                q.bytes = q.bytes.saturating_sub(item.bytes);
                q.transit += item.bytes;
                Ok(Some(item))
            }
            None if q.closed => Err(()),
            None => Ok(None),
        }
    }

    /// What was in transit reached the client's stream buffer and was
    /// taken from it: no longer counted.
    fn delivered(&self) {
        let freed = std::mem::take(&mut self.queue.lock().transit);
        if freed > 0
            && let Some(hub) = self.hub.upgrade()
        {
            let mut s = hub.lock();
            s.bytes = s.bytes.saturating_sub(freed);
            gauges(&s);
        }
    }

    /// The next delivery, counted until the next call; `None` once
    /// disconnected.
    pub async fn next_delivery(&self) -> Option<pb::Delivery> {
        self.delivered();
        loop {
            match self.take() {
                Ok(Some(item)) => return Some(Arc::unwrap_or_clone(item.delivery)),
                Err(()) => return None,
                Ok(None) => self.queue.ready.notified().await,
            }
        }
    }

    /// Feeds the Subscribe call's stream, one delivery at a time: the one
    /// in the stream's buffer stays counted until the client took it.
    /// Ends when the hub disconnects the subscriber or the client goes
    /// away (then at once, removing the subscriber from the hub).
    pub async fn forward(self, tx: mpsc::Sender<Result<pb::Delivery, tonic::Status>>) {
        loop {
            // A free slot: what was sent before has been taken.
            let Ok(permit) = tx.reserve().await else {
                return;
            };
            let next = tokio::select! {
                () = tx.closed() => return,
                d = self.next_delivery() => d,
            };
            let Some(d) = next else { return };
            permit.send(Ok(d));
        }
    }

    /// The stream the Subscribe call answers with, fed by a task that
    /// [`Subscription::forward`]s.
    pub fn spawn_stream(self) -> ReceiverStream<Result<pb::Delivery, tonic::Status>> {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(self.forward(tx));
        ReceiverStream::new(rx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.forget(&self.account, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(bytes: usize, index: u64) -> pb::Delivery {
        pb::Delivery {
            conversation_id: vec![1; 32],
            index,
            body: vec![0; bytes],
            ..Default::default()
        }
    }

    fn account(n: u32) -> AccountId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        AccountId::from_bytes(b)
    }

    fn limits() -> HubLimits {
        HubLimits {
            queue: 1024,
            queue_bytes: 1 << 20,
            total_bytes: 8 << 20,
            per_account: 4,
            total: 200,
        }
    }

    #[tokio::test]
    async fn a_hundred_subscribers_that_never_read_stay_under_the_bounds() {
        let hub = Arc::new(Hub::new(limits()));
        // One account opening streams: only `per_account` are accepted.
        let mut mine = Vec::new();
        let mut refused = 0;
        for _ in 0..100 {
            match hub.subscribe(account(0)) {
                Ok(s) => mine.push(s),
                Err(RouterError::TooManySubscriptions { open }) => {
                    assert_eq!(open, 4);
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((mine.len(), refused), (4, 96));
        // 100 accounts with a subscriber each that never reads, and one
        // that reads.
        let idle: Vec<Subscription> = (1..=100)
            .map(|a| hub.subscribe(account(a)).unwrap())
            .collect();
        let reader = hub.subscribe(account(1000)).unwrap();
        let mut got = 0;
        let mut peak = 0;
        for i in 0..64u64 {
            for a in 1..=100 {
                hub.deliver(&account(a), delivery(200 * 1024, i));
                peak = peak.max(hub.queued_bytes());
            }
            hub.deliver(&account(1000), delivery(200 * 1024, i));
            if reader.next_delivery().await.is_some() {
                got += 1;
            }
        }
        assert!(
            peak <= limits().total_bytes,
            "{peak} bytes queued, over the bound"
        );
        assert_eq!(got, 64, "the reading subscriber missed deliveries");
        // Each idle subscriber was cut off at its own bound (5 deliveries
        // of 200 KiB in 1 MiB) or earlier, to keep the total.
        assert!(hub.subscribers() <= 4 + 100 + 1);
        // Dropping streams removes them at once, with what they held.
        drop(idle);
        drop(mine);
        assert_eq!(hub.subscribers(), 1);
        // Only the reader's last delivery is still counted (in transit).
        assert!(hub.queued_bytes() <= 200 * 1024 + 64);
        drop(reader);
        assert_eq!((hub.subscribers(), hub.queued_bytes()), (0, 0));
        // Room again for the first account.
        assert!(hub.subscribe(account(0)).is_ok());
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_cut_off_by_bytes_and_its_stream_ends() {
        let hub = Arc::new(Hub::new(limits()));
        let slow = hub.subscribe(account(1)).unwrap();
        for i in 0..5 {
            hub.deliver(&account(1), delivery(200 * 1024, i));
        }
        assert_eq!(hub.subscribers(), 1);
        // The sixth would take it over 1 MiB.
        hub.deliver(&account(1), delivery(200 * 1024, 5));
        assert_eq!(hub.subscribers(), 0);
        assert_eq!(hub.queued_bytes(), 0, "its queue is freed at once");
        assert!(slow.next_delivery().await.is_none(), "its stream ends");
    }

    #[tokio::test]
    async fn a_full_hub_disconnects_the_subscriber_holding_the_most() {
        let hub = Arc::new(Hub::new(HubLimits {
            total_bytes: 3 << 20,
            ..limits()
        }));
        let big = hub.subscribe(account(1)).unwrap();
        let small = hub.subscribe(account(2)).unwrap();
        for i in 0..4 {
            hub.deliver(&account(1), delivery(200 * 1024, i));
        }
        hub.deliver(&account(2), delivery(100 * 1024, 0));
        let mut others: Vec<Subscription> = Vec::new();
        for a in 3..20 {
            others.push(hub.subscribe(account(a)).unwrap());
            hub.deliver(&account(a), delivery(150 * 1024, 0));
            assert!(hub.queued_bytes() <= 3 << 20);
        }
        assert!(
            big.next_delivery().await.is_none(),
            "the largest went first"
        );
        assert!(small.next_delivery().await.is_some());
        // A subscriber holding nothing takes one delivery over its bound.
        let mut keeps_up = hub.subscribe(account(40)).unwrap().spawn_stream();
        hub.deliver(&account(40), delivery(2 << 20, 0));
        assert_eq!(
            futures::StreamExt::next(&mut keeps_up)
                .await
                .unwrap()
                .unwrap()
                .index,
            0
        );
        // A shut-down hub ends every stream.
        hub.close_all();
        assert_eq!((hub.subscribers(), hub.queued_bytes()), (0, 0));
    }

    #[tokio::test]
    async fn a_closed_stream_leaves_the_hub_at_once() {
        use futures::StreamExt;
        let hub = Arc::new(Hub::new(limits()));
        let mut stream = hub.subscribe(account(1)).unwrap().spawn_stream();
        hub.deliver(&account(1), delivery(10, 0));
        assert_eq!(stream.next().await.unwrap().unwrap().index, 0);
        hub.deliver(&account(1), delivery(10, 1));
        hub.deliver(&account(1), delivery(10, 2));
        assert_eq!(hub.subscribers(), 1);
        // The client goes away without another delivery being attempted.
        drop(stream);
        for _ in 0..100 {
            if hub.subscribers() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!((hub.subscribers(), hub.queued_bytes()), (0, 0));
    }

    #[tokio::test]
    async fn what_sits_in_the_stream_buffer_stays_counted() {
        use futures::StreamExt;
        let hub = Arc::new(Hub::new(limits()));
        let mut stream = hub.subscribe(account(1)).unwrap().spawn_stream();
        for i in 0..5 {
            hub.deliver(&account(1), delivery(200 * 1024, i));
        }
        // One delivery moved to the stream's buffer, still counted.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(hub.queued_bytes() >= 5 * 200 * 1024);
        hub.deliver(&account(1), delivery(200 * 1024, 5));
        assert_eq!(hub.subscribers(), 0, "over its bound with the buffered one");
        // It still gets what was buffered, then the stream ends.
        assert_eq!(stream.next().await.unwrap().unwrap().index, 0);
        assert!(stream.next().await.is_none());
        assert_eq!(hub.queued_bytes(), 0);
    }
}
