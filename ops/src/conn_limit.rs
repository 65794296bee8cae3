//! A cap on concurrently open TCP connections, in total and per client
//! address, for a tonic server.
//!
//! [`ConnectionLimit::incoming`] wraps the stream of accepted connections.
//! Each connection it lets through holds a permit until the connection is
//! dropped (closed by either side, the TLS handshake failing or timing
//! out, or the server shutting down). A connection accepted while the cap
//! is reached is closed at once, before the TLS handshake: the client sees
//! the connection closed, the server logs a warning (at most one every ten
//! seconds, with the number refused since the last one) and counts it in a
//! Prometheus counter with a `reason` label (`total` or `per_address`).
//!
//! Addresses are compared by [`address_key`]: an IPv4 address as it is
//! (IPv4-mapped IPv6 addresses count as their IPv4 address), an IPv6
//! address by its /64 prefix, since one host usually holds a whole /64.
//!
//! ```no_run
//! # async fn f(listener: tokio::net::TcpListener) {
//! use grompi_ops::conn_limit::{ConnectionLimit, ConnectionLimits, ConnectionMetrics};
//! let limit = ConnectionLimit::new(
//!     ConnectionLimits { max_connections: 1024, max_per_address: Some(64) },
//!     ConnectionMetrics { open: "router_open_connections", refused: "router_connections_refused_total" },
//! );
//! let incoming = limit.tcp_incoming(listener);
//! // tonic::transport::Server::builder()...serve_with_incoming_shutdown(incoming, signal)
//! # }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpIncoming};

/// How often at most a refused connection is logged as a warning.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The key client addresses are counted (and rate limited) by: IPv4 as is,
/// IPv4-mapped IPv6 as its IPv4 address, other IPv6 by its /64 prefix (the
/// remaining 64 bits set to zero). One host usually controls a whole IPv6
/// /64, so counting single IPv6 addresses would let it have billions of
/// budgets.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once, in total. At least 1.
    pub max_connections: usize,
    /// Most connections open at once from one address (see
    /// [`address_key`]); `None`: only the total is capped.
    pub max_per_address: Option<usize>,
}

/// The names of the metrics a limit reports under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionMetrics {
    /// Gauge: connections currently open.
    pub open: &'static str,
    /// Counter: connections closed right after accept because a cap was
    /// reached, with label `reason` = `total` or `per_address`.
    pub refused: &'static str,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The total cap is reached.
    #[error("{max} connections are open, the configured maximum (max_connections)")]
    Total {
        /// The cap.
        max: usize,
    },
    /// The address already has its share.
    #[error(
        "{address} already has {max} connections open, the configured maximum per address \
         (max_connections_per_address)"
    )]
    PerAddress {
        /// The address key (see [`address_key`]).
        address: IpAddr,
        /// The cap.
        max: usize,
    },
}

impl Refused {
    fn label(&self) -> &'static str {
        match self {
            Self::Total { .. } => "total",
            Self::PerAddress { .. } => "per_address",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    by_address: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct WarnState {
    last: Option<Instant>,
    suppressed: u64,
}

#[derive(Debug)]
struct Shared {
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    counts: Mutex<Counts>,
    refused: AtomicU64,
    warn: Mutex<WarnState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The counts stay consistent under every update (each is one
    // statement), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts open connections against [`ConnectionLimits`]. Cheap to clone;
/// clones share the counts.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    shared: Arc<Shared>,
}

/// One open connection's share of the caps, given back on drop.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    address: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = lock(&self.shared.counts);
        counts.open = counts.open.saturating_sub(1);
        if let Some(a) = self.address
            && let Some(n) = counts.by_address.get_mut(&a)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_address.remove(&a);
            }
        }
        metrics::gauge!(self.shared.metrics.open).set(counts.open as f64);
    }
}

impl ConnectionLimit {
    /// A limit with nothing open yet.
    pub fn new(limits: ConnectionLimits, metrics: ConnectionMetrics) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                metrics,
                counts: Mutex::new(Counts::default()),
                refused: AtomicU64::new(0),
                warn: Mutex::new(WarnState {
                    last: None,
                    suppressed: 0,
                }),
            }),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.shared.counts).open
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Takes a permit for a connection from `peer` (unknown: only the total
    /// counts), or says which cap is reached.
    pub fn try_acquire(&self, peer: Option<IpAddr>) -> Result<Permit, Refused> {
        let limits = self.shared.limits;
        let address = peer.map(address_key);
        let mut counts = lock(&self.shared.counts);
        if counts.open >= limits.max_connections {
            return Err(Refused::Total {
                max: limits.max_connections,
            });
        }
        if let (Some(a), Some(max)) = (address, limits.max_per_address)
            && counts.by_address.get(&a).copied().unwrap_or(0) >= max
        {
            return Err(Refused::PerAddress { address: a, max });
        }
        counts.open += 1;
        if let Some(a) = address {
            *counts.by_address.entry(a).or_default() += 1;
        }
        metrics::gauge!(self.shared.metrics.open).set(counts.open as f64);
        Ok(Permit {
            shared: Arc::clone(&self.shared),
            address,
        })
    }

    fn refuse(&self, peer: Option<std::net::SocketAddr>, why: Refused) {
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(self.shared.metrics.refused, "reason" => why.label()).increment(1);
        let mut warn = lock(&self.shared.warn);
        let due = warn.last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            tracing::warn!(
                peer = ?peer,
                refused_since_last_warning = warn.suppressed,
                "connection closed right after accept: {why}"
            );
            warn.last = Some(Instant::now());
            warn.suppressed = 0;
        } else {
            warn.suppressed += 1;
            tracing::debug!(peer = ?peer, "connection closed right after accept: {why}");
        }
    }

    /// Wraps a stream of accepted TCP connections: each connection it yields
    /// holds a permit; a connection over a cap is closed and skipped.
    pub fn incoming<S>(&self, inner: S) -> LimitedIncoming<S> {
        LimitedIncoming {
            inner,
            limit: self.clone(),
        }
    }

    /// [`incoming`](Self::incoming) over `listener`, with `TCP_NODELAY` set
    /// on every connection (small gRPC frames must not wait for delayed
    /// ACKs).
    pub fn tcp_incoming(&self, listener: TcpListener) -> LimitedIncoming<TcpIncoming> {
        self.incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
    }
}

/// The accepted connections a [`ConnectionLimit`] lets through.
#[derive(Debug)]
pub struct LimitedIncoming<S> {
    inner: S,
    limit: ConnectionLimit,
}

impl<S, E> Stream for LimitedIncoming<S>
where
    S: Stream<Item = Result<TcpStream, E>> + Unpin,
{
    type Item = Result<LimitedConnection<TcpStream>, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let stream = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => stream,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            let peer = stream.peer_addr().ok();
            match self.limit.try_acquire(peer.map(|p| p.ip())) {
                Ok(permit) => {
                    return Poll::Ready(Some(Ok(LimitedConnection {
                        io: stream,
                        _permit: permit,
                    })));
                }
                // Dropping the stream closes the connection.
                Err(why) => self.limit.refuse(peer, why),
            }
        }
    }
}

/// An accepted connection holding its [`Permit`]; reads, writes and
/// connection info (peer address, for `Request::remote_addr`) are the
/// inner connection's.
#[derive(Debug)]
pub struct LimitedConnection<IO> {
    io: IO,
    _permit: Permit,
}

impl<IO> LimitedConnection<IO> {
    /// The inner connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: Connected> Connected for LimitedConnection<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for LimitedConnection<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for LimitedConnection<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic::codegen::tokio_stream::StreamExt;

    const METRICS: ConnectionMetrics = ConnectionMetrics {
        open: "test_open_connections",
        refused: "test_connections_refused_total",
    };

    async fn connect_from(local: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(IpAddr::V4(local), 0)).unwrap();
        socket.connect(to).await.unwrap()
    }

    /// Reads from a client connection the server closed: end of file or a
    /// reset, never data.
    async fn closed_by_server(client: &mut TcpStream) -> bool {
        let mut buf = [0u8; 8];
        match client.read(&mut buf).await {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    /// Echoes one message through an accepted connection.
    async fn round_trip(
        client: &mut TcpStream,
        server: &mut LimitedConnection<TcpStream>,
        msg: &[u8],
    ) {
        client.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(&buf).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn addresses_are_keyed_by_ipv4_or_ipv6_prefix() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_key(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_eq!(address_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_ne!(address_key(a), address_key(other));
    }

    #[test]
    fn permits_count_in_total_and_per_address_and_come_back_on_drop() {
        let limit = ConnectionLimit::new(
            ConnectionLimits {
                max_connections: 3,
                max_per_address: Some(2),
            },
            METRICS,
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = limit.try_acquire(Some(a)).unwrap();
        let _p2 = limit.try_acquire(Some(a)).unwrap();
        assert_eq!(
            limit.try_acquire(Some(a)).unwrap_err(),
            Refused::PerAddress { address: a, max: 2 }
        );
        let _p3 = limit.try_acquire(Some(b)).unwrap();
        assert_eq!(limit.open(), 3);
        let e = limit.try_acquire(Some(b)).unwrap_err();
        assert_eq!(e, Refused::Total { max: 3 });
        assert!(e.to_string().contains("max_connections"), "{e}");
        drop(p1);
        assert_eq!(limit.open(), 2);
        let _p4 = limit.try_acquire(Some(a)).unwrap();
        assert_eq!(limit.open(), 3);
    }

    #[tokio::test]
    async fn a_third_connection_is_closed_and_a_freed_permit_admits_a_new_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limit = ConnectionLimit::new(
            ConnectionLimits {
                max_connections: 2,
                max_per_address: None,
            },
            METRICS,
        );
        let mut incoming = limit.tcp_incoming(listener);
        let mut c1 = TcpStream::connect(addr).await.unwrap();
        let mut s1 = incoming.next().await.unwrap().unwrap();
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let mut s2 = incoming.next().await.unwrap().unwrap();
        assert!(s1.get_ref().nodelay().unwrap(), "TCP_NODELAY is kept");
        assert_eq!(limit.open(), 2);

        // The third is accepted by the kernel, then closed by the limit;
        // the stream yields nothing for it.
        let mut c3 = TcpStream::connect(addr).await.unwrap();
        tokio::select! {
            next = incoming.next() => panic!("a connection over the cap was let through: {next:?}"),
            closed = closed_by_server(&mut c3) => assert!(closed, "the third connection got data"),
        }
        assert_eq!(limit.refused(), 1);

        // The first two still work.
        round_trip(&mut c1, &mut s1, b"one").await;
        round_trip(&mut c2, &mut s2, b"two").await;

        // Closing one frees its permit: the next connection is let through.
        drop(c1);
        drop(s1);
        assert_eq!(limit.open(), 1);
        let mut c4 = TcpStream::connect(addr).await.unwrap();
        let mut s4 = incoming.next().await.unwrap().unwrap();
        round_trip(&mut c4, &mut s4, b"four").await;
        round_trip(&mut c2, &mut s2, b"still").await;
        assert_eq!(limit.open(), 2);
        assert_eq!(limit.refused(), 1);
    }

    /// Linux routes all of 127.0.0.0/8 to loopback, so 127.0.0.2 is a second
    /// client address.
    #[tokio::test]
    async fn the_per_address_cap_leaves_other_addresses_alone() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limit = ConnectionLimit::new(
            ConnectionLimits {
                max_connections: 10,
                max_per_address: Some(1),
            },
            METRICS,
        );
        let mut incoming = limit.tcp_incoming(listener);
        let one = Ipv4Addr::new(127, 0, 0, 1);
        let two = Ipv4Addr::new(127, 0, 0, 2);
        let mut c1 = connect_from(one, addr).await;
        let mut s1 = incoming.next().await.unwrap().unwrap();
        let mut again = connect_from(one, addr).await;
        tokio::select! {
            next = incoming.next() => panic!("a second connection from 127.0.0.1 was let through: {next:?}"),
            closed = closed_by_server(&mut again) => assert!(closed),
        }
        let mut c2 = connect_from(two, addr).await;
        let mut s2 = incoming.next().await.unwrap().unwrap();
        assert_eq!(
            s2.get_ref().peer_addr().unwrap().ip(),
            IpAddr::V4(two),
            "connect info is the inner connection's"
        );
        round_trip(&mut c1, &mut s1, b"a").await;
        round_trip(&mut c2, &mut s2, b"b").await;
        assert_eq!((limit.open(), limit.refused()), (2, 1));
    }
}
