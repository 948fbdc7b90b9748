//! The `/metrics` endpoint: HTTP/1.1 by hyper on one thread of its own (a one-thread tokio
//! runtime), with every cost bounded so that a slow or hostile client can neither grow
//! flinch's memory and threads nor slow sampling and marks:
//!
//! - at most [`ServerConfig::max_connections`] connections at once; past that a new one is
//!   accepted and closed at once (and counted in
//!   `flinch_exporter_rejected_connections_total`);
//! - a client has [`ServerConfig::header_timeout`] to send a request's head (slowloris), and
//!   a connection lives at most [`ServerConfig::connection_timeout`] (a client that never
//!   reads its response);
//! - a request head larger than [`ServerConfig::max_request_bytes`] is refused (431) and a
//!   request body is never read;
//! - the encoded metrics are reused for [`ServerConfig::cache`], so a flood of scrapes costs
//!   the HTTP work, not an encoding each;
//! - the thread runs at a lower scheduling priority (nice 10) than the samplers;
//! - when it stops, a response being written is finished (for at most
//!   [`STOP_GRACE`]) rather than cut, so the scrape a recorder waits for at its end
//!   ([`MetricsServer::wait_for_final_scrape`]) reaches the scraper.
//!
//! hyper rather than a thread-per-connection server (tiny_http spawns a thread for every
//! busy connection and has no read timeout): one thread serves every connection, and hyper
//! has the header-read timeout and buffer limit built in.

use crate::metrics::{Exporter, Shared};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

/// How long a connection may take, once the endpoint stops, to finish the response it is
/// writing.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// The OpenMetrics content type served when the scraper asks for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Limits of the endpoint.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to send a request's head.
    pub header_timeout: Duration,
    /// The longest a connection may stay open.
    pub connection_timeout: Duration,
    /// The largest request head accepted (hyper's read buffer; at least 8 KiB).
    pub max_request_bytes: usize,
    /// How long an encoding of the metrics is served again.
    pub cache: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            max_request_bytes: 16 * 1024,
            cache: Duration::from_millis(200),
        }
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("--prometheus {addr}: {what}: {source}")]
pub struct ServeError {
    addr: String,
    what: &'static str,
    #[source]
    source: std::io::Error,
}

/// A running endpoint. Dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    state: Arc<State>,
}

impl MetricsServer {
    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Scrapes of `/metrics` taken so far (counted before their body is made).
    pub fn scrapes(&self) -> u64 {
        *self.state.scrapes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `/metrics` has been scraped with the values as they are now — the
    /// recording's final ones, when called after it stopped — or `timeout` passed; says
    /// whether it was. An encoding kept from before (see [`ServerConfig::cache`]) is not
    /// served again, and the response is finished if the server is stopped while it is
    /// being written.
    pub fn wait_for_final_scrape(&self, timeout: Duration) -> bool {
        self.state.forget_encodings();
        let after = self.scrapes();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.scrapes() > after {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.scrapes() > after
    }

    /// Stops serving: new connections are refused, responses being written are finished
    /// (for at most [`STOP_GRACE`]), idle connections are closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Cached {
    at: Instant,
    body: Bytes,
}

struct State {
    shared: Arc<Shared>,
    cfg: ServerConfig,
    text: Mutex<Option<Cached>>,
    openmetrics: Mutex<Option<Cached>>,
    scrapes: Arc<Mutex<u64>>,
}

impl State {
    /// Drops the kept encodings: the next scrape encodes the values as they are then.
    fn forget_encodings(&self) {
        for slot in [&self.text, &self.openmetrics] {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    fn body(&self, openmetrics: bool) -> Bytes {
        let slot = if openmetrics {
            &self.openmetrics
        } else {
            &self.text
        };
        let mut c = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = c.as_ref()
            && c.at.elapsed() < self.cfg.cache
        {
            return c.body.clone();
        }
        let s = if openmetrics {
            self.shared.encode_openmetrics()
        } else {
            self.shared.encode_text()
        };
        let body = Bytes::from(s);
        *c = Some(Cached {
            at: Instant::now(),
            body: body.clone(),
        });
        body
    }
}

/// Whether the Accept header asks for OpenMetrics (a media range
/// `application/openmetrics-text` not refused with `q=0`).
pub fn wants_openmetrics(accept: Option<&HeaderValue>) -> bool {
    let Some(s) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    s.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        media.eq_ignore_ascii_case("application/openmetrics-text")
            && !parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            })
    })
}

fn reply(status: StatusCode, ctype: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

const INDEX: &str = "flinch: live metrics at /metrics (Prometheus text format; OpenMetrics \
                     when asked for in Accept)\n";

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    let mut resp = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let om = wants_openmetrics(req.headers().get(ACCEPT));
            // Counted before the body is made: a scrape counted after
            // `wait_for_final_scrape` began has a body made after it too.
            *state.scrapes.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let body = state.body(om);
            let ctype = if om {
                OPENMETRICS_CONTENT_TYPE
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            let body = if req.method() == Method::HEAD {
                Bytes::new()
            } else {
                body
            };
            reply(StatusCode::OK, ctype, body)
        }
        (&Method::GET | &Method::HEAD, "/") => {
            reply(StatusCode::OK, text, Bytes::from_static(INDEX.as_bytes()))
        }
        (&Method::GET | &Method::HEAD, _) => reply(
            StatusCode::NOT_FOUND,
            text,
            Bytes::from_static(b"not found: the metrics are at /metrics\n"),
        ),
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            Bytes::from_static(b"only GET and HEAD\n"),
        ),
    };
    // A request with a body is answered and the connection closed: the body is never read.
    let has_body = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
    if has_body {
        resp.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

impl Exporter {
    /// Starts serving `/metrics` on `addr` (`127.0.0.1:9464`, `[::]:9464`; port 0 picks a
    /// free one). Binds before returning, so a bad or busy address fails here.
    pub fn serve(&self, addr: &str, cfg: ServerConfig) -> Result<MetricsServer, ServeError> {
        let err = |what, source| ServeError {
            addr: addr.to_owned(),
            what,
            source,
        };
        let listener = StdListener::bind(addr).map_err(|e| err("cannot listen", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err("cannot configure the socket", e))?;
        let local = listener
            .local_addr()
            .map_err(|e| err("cannot read the bound address", e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| err("cannot start the server's runtime", e))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = Arc::new(State {
            shared: self.shared.clone(),
            cfg: cfg.clone(),
            text: Mutex::new(None),
            openmetrics: Mutex::new(None),
            scrapes: Arc::new(Mutex::new(0)),
        });
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("flinch-metrics".into())
            .spawn(move || {
                // Below the samplers: a busy endpoint takes CPU from nothing that matters.
                let _ = rustix::process::setpriority_process(None, 10);
                rt.block_on(serve(listener, served, stop_rx));
            })
            .map_err(|e| err("cannot start the server thread", e))?;
        Ok(MetricsServer {
            addr: local,
            stop: stop_tx,
            thread: Some(thread),
            state,
        })
    }
}

async fn serve(listener: StdListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(_) => return,
    };
    let cfg = state.cfg.clone();
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            state.shared.f.rejected_connections.inc();
            drop(stream);
            continue;
        };
        let state = state.clone();
        let cfg = cfg.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(cfg.header_timeout)
                .max_buf_size(cfg.max_request_bytes.max(8192))
                .keep_alive(true)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| handle(req, state.clone())),
                );
            let mut conn = std::pin::pin!(conn);
            let finished = tokio::select! {
                _ = tokio::time::timeout(cfg.connection_timeout, conn.as_mut()) => true,
                _ = stop.changed() => false,
            };
            if !finished {
                // Finish the response being written, close an idle connection.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(STOP_GRACE, conn).await;
            }
        });
    }
    // Every connection holds a slot until it ends: a stop waits for them all to have
    // finished their responses (each is bounded by STOP_GRACE once told to stop).
    let all = u32::try_from(cfg.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(2 * STOP_GRACE, slots.acquire_many(all)).await;
}
