//! The HTTP endpoint of the audit log (C2SP tlog-tiles): `GET
//! /checkpoint` returns the latest signed checkpoint with the cosignatures
//! collected for it, `GET /tile/...` a hash tile or an entry bundle of the
//! log as it stands; and, when this server witnesses peers, `POST
//! /add-checkpoint` (C2SP tlog-witness), handled by
//! [`crate::witness::WitnessService`]. Nothing else is served.
//!
//! A minimal HTTP/1.1 server: one request per connection (`Connection:
//! close`), the request head at most 8 KiB and the body at most 64 KiB,
//! read within 10 s, at most 64 connections at once. Plain HTTP:
//! everything served is public and authenticated by signatures
//! (checkpoints by the log key, cosignatures by the witness key), and an
//! `add-checkpoint` request is authenticated by the log's signature on
//! its checkpoint; put a TLS proxy in front if clients need it.
//!
//! [`post`] is the matching client, used to submit checkpoints to peers.

use crate::audit_log::{self, AuditError};
use crate::redb_store::{RedbRead, RedbStore};
use crate::store::StoreError;
use crate::witness::WitnessService;
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
/// Largest request or response body read.
pub const MAX_BODY: usize = 64 * 1024;

/// An `http://host:port[/prefix]` URL: where a peer's endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port`, to connect to and send as `Host`.
    pub authority: String,
    /// The path prefix, empty or starting with `/`, without a final `/`.
    pub prefix: String,
}

impl HttpUrl {
    /// Parses `http://host:port[/prefix]`; no other scheme, no query.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?} is not an http://host:port URL"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let prefix = prefix.trim_end_matches('/');
        let port = authority.rsplit_once(':').map(|(_, p)| p);
        if authority.is_empty()
            || authority
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            || port
                .and_then(|p| p.parse::<u16>().ok())
                .is_none_or(|p| p == 0)
            || prefix.contains(['?', '#', ' '])
        {
            return Err(format!("{url:?} is not an http://host:port URL"));
        }
        Ok(Self {
            authority: authority.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("{url}: {source}")]
    Io {
        /// The URL asked.
        url: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// No answer within the time allowed.
    #[error("{0}: no answer within 10 s")]
    Timeout(String),
    /// The answer is not an HTTP response this client reads.
    #[error("{url}: {reason}")]
    Malformed {
        /// The URL asked.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// POSTs `body` to `<url><path>` and returns the status and body of the
/// answer (at most [`MAX_BODY`] bytes), within 10 s.
pub async fn post(url: &HttpUrl, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    let full = format!("{url}{path}");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(&url.authority).await?;
        let head = format!(
            "POST {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            url.prefix,
            url.authority,
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() > MAX_HEAD + MAX_BODY {
                break;
            }
        }
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(READ_TIMEOUT, exchange)
        .await
        .map_err(|_| HttpError::Timeout(full.clone()))?
        .map_err(|source| HttpError::Io {
            url: full.clone(),
            source,
        })?;
    let malformed = |reason| HttpError::Malformed {
        url: full.clone(),
        reason,
    };
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("no end of the response head"))?;
    let status = out
        .get(9..12)
        .filter(|_| out.starts_with(b"HTTP/1."))
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("not an HTTP/1.x status line"))?;
    let mut rest = out.get(end + 4..).unwrap_or_default().to_vec();
    rest.truncate(MAX_BODY);
    Ok((status, rest))
}

/// The latest signed checkpoint and the cosignatures collected for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The checkpoint, signed by the log key only.
    pub note: String,
    /// Witnesses' cosignatures on it, in the order they came.
    pub cosignatures: Vec<grompi_tlog::note::NoteSignature>,
}

impl Published {
    /// A checkpoint with no cosignature yet.
    pub fn new(note: impl Into<String>) -> Self {
        Self {
            note: note.into(),
            cosignatures: Vec::new(),
        }
    }

    /// What `GET /checkpoint` serves: the note with every cosignature.
    pub fn served(&self) -> String {
        crate::witness_submit::with_cosignatures(&self.note, &self.cosignatures)
    }
}

/// The latest signed checkpoint, shared by the signing timer, the
/// submissions to witnesses and the endpoint.
pub type LatestCheckpoint = Arc<RwLock<Option<Published>>>;

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
    /// A text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
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
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            413 => "Content Too Large",
            422 => "Unprocessable Content",
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

/// A request's method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `POST`.
    pub post: bool,
    /// The path without its leading `/` and query.
    pub path: String,
    /// The `Content-Length` of a `POST`.
    pub content_length: usize,
}

/// The request a request head makes, or the answer refusing it: `GET`
/// anything, `POST` only `/add-checkpoint` with a `Content-Length` of at
/// most [`MAX_BODY`].
pub fn parse_request(head: &[u8]) -> Result<Request, Answer> {
    let text = std::str::from_utf8(head)
        .map_err(|_| Answer::text(400, "the request head is not UTF-8\n"))?;
    let post = text.starts_with("POST ");
    let path = request_path(
        &text
            .replacen("POST ", "GET ", usize::from(post))
            .into_bytes(),
    )?;
    if !post {
        return Ok(Request {
            post,
            path,
            content_length: 0,
        });
    }
    if path != "add-checkpoint" {
        return Err(Answer::text(405, "only POST /add-checkpoint is taken\n"));
    }
    let length = text
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .ok_or_else(|| Answer::text(400, "a POST needs a Content-Length\n"))?
        .map_err(|_| Answer::text(400, "the Content-Length is not a number\n"))?;
    if length > MAX_BODY {
        return Err(Answer::text(413, "the body is over 64 KiB\n"));
    }
    Ok(Request {
        post,
        path,
        content_length: length,
    })
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
            Some(p) => Answer::text(200, p.served()),
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

/// The seconds since the Unix epoch, for a cosignature's timestamp.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn serve_one(
    mut socket: tokio::net::TcpStream,
    store: Arc<RedbStore>,
    latest: LatestCheckpoint,
    witness: Option<Arc<WitnessService>>,
) {
    let mut data = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            if data.len() >= MAX_HEAD {
                return Err(Answer::text(400, "the request head is over 8 KiB\n"));
            }
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(Answer::text(400, "incomplete request\n")),
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        };
        let request = parse_request(data.get(..end).unwrap_or_default())?;
        let mut body = data.get(end + 4..).unwrap_or_default().to_vec();
        while body.len() < request.content_length {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(Answer::text(400, "incomplete body\n")),
                Ok(n) => body.extend_from_slice(&buf[..n]),
            }
        }
        body.truncate(request.content_length);
        Ok((request, body))
    })
    .await;
    let response = match read {
        Err(_) => Answer::text(400, "the request took too long\n"),
        Ok(Err(a)) => a,
        Ok(Ok((request, body))) => {
            let work = move || {
                if !request.post {
                    return answer(&request.path, &store, &latest);
                }
                match witness {
                    Some(w) => w.add_checkpoint(&body, unix_now()),
                    None => Answer::text(404, "this server witnesses no log\n"),
                }
            };
            match tokio::task::spawn_blocking(work).await {
                Ok(a) => a,
                Err(_) => Answer::text(500, "internal error\n"),
            }
        }
    };
    let _ = socket.write_all(&response.to_bytes()).await;
    let _ = socket.shutdown().await;
}

/// Serves the audit log on `listener`, and `witness`'s `add-checkpoint`
/// if given, until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    store: Arc<RedbStore>,
    latest: LatestCheckpoint,
    witness: Option<Arc<WitnessService>>,
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
        let witness = witness.clone();
        tokio::spawn(async move {
            serve_one(socket, store, latest, witness).await;
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

    #[test]
    fn posts_need_a_bounded_length_and_urls_are_checked() {
        let r = parse_request(b"POST /add-checkpoint HTTP/1.1\r\ncontent-length: 12").unwrap();
        assert_eq!(
            (r.post, r.path.as_str(), r.content_length),
            (true, "add-checkpoint", 12)
        );
        let refused = |head: &[u8]| parse_request(head).unwrap_err().status;
        assert_eq!(refused(b"POST /add-checkpoint HTTP/1.1\r\nHost: x"), 400);
        assert_eq!(
            refused(b"POST /add-checkpoint HTTP/1.1\r\nContent-Length: x"),
            400
        );
        assert_eq!(
            refused(b"POST /add-checkpoint HTTP/1.1\r\nContent-Length: 65537"),
            413
        );
        assert_eq!(
            refused(b"POST /tile/0/000 HTTP/1.1\r\nContent-Length: 1"),
            405
        );
        assert!(!parse_request(b"GET /checkpoint HTTP/1.1").unwrap().post);
        let u = HttpUrl::parse("http://example.org:7480/w/").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.prefix.as_str()),
            ("example.org:7480", "/w")
        );
        assert_eq!(u.to_string(), "http://example.org:7480/w");
        for bad in [
            "https://a:1",
            "http://a",
            "http://a:0",
            "http://:1x",
            "http://a b:1",
            "http://a:1/?x",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Request heads and URLs from the network or a file never panic
        /// the parsers, and a POST is only ever taken with a bounded length.
        #[test]
        fn request_and_url_parsing_is_total(
            head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            len in 0usize..200_000,
            url in ".{0,40}",
        ) {
            if let Ok(r) = parse_request(&head) {
                proptest::prop_assert!(r.content_length <= MAX_BODY);
            }
            let post = format!("POST /add-checkpoint HTTP/1.1\r\nContent-Length: {len}");
            match parse_request(post.as_bytes()) {
                Ok(r) => proptest::prop_assert_eq!(r.content_length, len),
                Err(a) => proptest::prop_assert!(len > MAX_BODY && a.status == 413),
            }
            let _ = HttpUrl::parse(&url);
        }
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
            None,
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
        *latest.write().unwrap() = Some(Published::new("origin\n3\nroot\n\n— sig\n"));
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
        // No witness here: add-checkpoint is not found; other POSTs not allowed.
        let url = HttpUrl::parse(&format!("http://{addr}")).unwrap();
        let (status, body) = post(&url, "/add-checkpoint", b"old 0\n\n").await.unwrap();
        assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
        let (status, _) = post(&url, "/checkpoint", b"").await.unwrap();
        assert_eq!(status, 405);
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
