//! The read-only HTTP endpoint of the audit log (C2SP tlog-tiles): `GET
//! /checkpoint` returns the latest signed checkpoint, `GET /tile/...` a
//! hash tile or an entry bundle of the log as it stands. Nothing else is
//! served, nothing is written.
//!
//! A minimal HTTP/1.1 server: one request per connection (`Connection:
//! close`), the request head at most 8 KiB and read within 10 s, at most
//! 64 connections at once. Plain HTTP: everything served is public and
//! authenticated by the checkpoint's signature; put a TLS proxy in front
//! if clients need it.

use crate::audit_log::{self, AuditError};
use crate::redb_store::{RedbRead, RedbStore};
use crate::store::StoreError;
use grompi_tlog::error::{LogError, TileError};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time allowed to send the request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// The latest signed checkpoint, shared by the signing timer and the
/// endpoint.
pub type LatestCheckpoint = Arc<RwLock<Option<String>>>;

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The content type.
    pub content_type: &'static str,
    /// Whether the body may be cached forever (a full tile or bundle).
    pub immutable: bool,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            immutable: false,
            body: body.into().into_bytes(),
        }
    }

    /// The whole response, head and body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let cache = if self.immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-store"
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: {cache}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// The path a request head asks for, or the answer refusing it.
pub fn request_path(head: &[u8]) -> Result<String, Answer> {
    let text = std::str::from_utf8(head)
        .map_err(|_| Answer::text(400, "the request head is not UTF-8\n"))?;
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Answer::text(
            400,
            "the request line is not METHOD PATH VERSION\n",
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Answer::text(400, "only HTTP/1.x is served\n"));
    }
    if method != "GET" {
        return Err(Answer::text(405, "only GET is served\n"));
    }
    let path = target.split('?').next().unwrap_or_default();
    path.strip_prefix('/')
        .map(str::to_owned)
        .ok_or_else(|| Answer::text(400, "the path does not start with /\n"))
}

/// The answer for `path` from the committed state of `store`.
pub fn answer(path: &str, store: &RedbStore, latest: &LatestCheckpoint) -> Answer {
    if path == audit_log::CHECKPOINT_FILE {
        let latest = latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        return match latest {
            Some(note) => Answer::text(200, note),
            None => Answer::text(503, "no checkpoint signed yet\n"),
        };
    }
    if !path.starts_with("tile/") {
        return Answer::text(404, "only checkpoint and tile/... are served\n");
    }
    let read = store
        .begin_read()
        .and_then(|txn| RedbRead::open(&txn).map(|r| (txn, r)));
    let result = match read {
        Ok((_txn, r)) => audit_log::tile(&r, path),
        Err(e) => Err(AuditError::Store(e)),
    };
    match result {
        Ok(body) => {
            let immutable = matches!(
                grompi_tlog::tiles::parse_path(path),
                Ok(grompi_tlog::tiles::TilePath::Hashes(t)) if t.is_full()
            ) || matches!(
                grompi_tlog::tiles::parse_path(path),
                Ok(grompi_tlog::tiles::TilePath::Entries(b)) if b.is_full()
            );
            Answer {
                status: 200,
                content_type: "application/octet-stream",
                immutable,
                body,
            }
        }
        Err(AuditError::Tile(e)) => Answer::text(400, format!("{e}\n")),
        Err(AuditError::Log(LogError::Tile(e @ TileError::BeyondTree { .. }))) => {
            Answer::text(404, format!("{e}\n"))
        }
        Err(AuditError::Store(e @ StoreError::Backend(_))) => {
            tracing::warn!(error = %e, path, "audit log read failed");
            Answer::text(500, "storage failed\n")
        }
        Err(e) => Answer::text(404, format!("{e}\n")),
    }
}

async fn serve_one(
    mut socket: tokio::net::TcpStream,
    store: Arc<RedbStore>,
    latest: LatestCheckpoint,
) {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err(Answer::text(400, "the request head is over 8 KiB\n"));
            }
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(Answer::text(400, "incomplete request\n")),
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        Ok(())
    })
    .await;
    let response = match read {
        Err(_) => Answer::text(400, "the request head took too long\n"),
        Ok(Err(a)) => a,
        Ok(Ok(())) => match request_path(&head) {
            Err(a) => a,
            Ok(path) => {
                match tokio::task::spawn_blocking(move || answer(&path, &store, &latest)).await {
                    Ok(a) => a,
                    Err(_) => Answer::text(500, "internal error\n"),
                }
            }
        },
    };
    let _ = socket.write_all(&response.to_bytes()).await;
    let _ = socket.shutdown().await;
}

/// Serves the audit log on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    store: Arc<RedbStore>,
    latest: LatestCheckpoint,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let Ok((socket, _)) = accepted else {
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Over the cap: closed at once.
            continue;
        };
        let (store, latest) = (Arc::clone(&store), Arc::clone(&latest));
        tokio::spawn(async move {
            serve_one(socket, store, latest).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_and_refused_with_a_reason() {
        assert_eq!(
            request_path(b"GET /tile/0/000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap(),
            "tile/0/000"
        );
        assert_eq!(
            request_path(b"GET /checkpoint?x=1 HTTP/1.0\r\n\r\n").unwrap(),
            "checkpoint"
        );
        assert_eq!(
            request_path(b"POST /checkpoint HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            request_path(b"GET checkpoint HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            request_path(b"GET /a HTTP/2\r\n\r\n").unwrap_err().status,
            400
        );
        assert_eq!(
            request_path(b"GET /a b HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(request_path(&[0xff, 0xfe]).unwrap_err().status, 400);
    }

    #[tokio::test]
    async fn serves_the_checkpoint_and_tiles_over_http() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(&dir.path().join("db")).unwrap());
        {
            let txn = store.begin_write().unwrap();
            let log = {
                let mut w = crate::redb_store::RedbWrite::open(&txn).unwrap();
                for i in 0..3u8 {
                    crate::audit_store::append(&mut w, &[i]).unwrap();
                }
                w.into_log().unwrap()
            };
            store.commit(txn, log).unwrap();
        }
        let latest: LatestCheckpoint = Arc::new(RwLock::new(None));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Arc::clone(&store),
            Arc::clone(&latest),
            async {
                let _ = stopped.await;
            },
        ));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            out
        };
        let r = get("/checkpoint").await;
        assert!(
            r.starts_with(b"HTTP/1.1 503 "),
            "{}",
            String::from_utf8_lossy(&r)
        );
        *latest.write().unwrap() = Some("origin\n3\nroot\n\n— sig\n".into());
        let r = get("/checkpoint").await;
        assert!(r.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(r.ends_with("origin\n3\nroot\n\n— sig\n".as_bytes()));
        let r = get("/tile/0/000.p/3").await;
        assert!(r.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(String::from_utf8_lossy(&r).contains("Content-Length: 96\r\n"));
        let r = get("/tile/0/000.p/4").await;
        assert!(
            r.starts_with(b"HTTP/1.1 404 "),
            "{}",
            String::from_utf8_lossy(&r)
        );
        let r = get("/tile/x").await;
        assert!(r.starts_with(b"HTTP/1.1 400 "));
        let r = get("/order.redb").await;
        assert!(r.starts_with(b"HTTP/1.1 404 "));
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
