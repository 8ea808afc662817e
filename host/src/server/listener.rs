//! One listening socket: accepting connections under a cap, TLS handshakes
//! under a deadline, and HTTP/1.1 or HTTP/2 on each connection under the
//! edge limits — until the server shuts down.
//!
//! Every connection runs in a task of its own that also watches, besides
//! its requests: the server shutting down, the listener asking it to make
//! room ([`Connections`]), its own idleness, and its answers. The first
//! three end it gracefully: requests in flight finish, an HTTP/2 client gets
//! a GOAWAY. A client that owes the server and is shed for it, or leaves an
//! answer untaken past `--response-send-timeout` (an HTTP/2 window kept
//! shut, a socket nobody reads), loses the connection at once.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service as _;

use super::answer::answer;
use super::connection::Connection;
use super::connections::{Admission, Connections};
use super::exchange::Exchange;
use super::io::Watched;
use super::metrics::Metrics;
use super::shedding::{RateLimited, Shedding};
use super::tls::ReloadingConfig;

/// The network edge of one listener: every bound on what a client may hold
/// open, how slowly it may talk, and how much it may multiplex.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Connections open at once. At the cap, the longest idle connection is
    /// closed to make room; if none is idle, the new connection is refused.
    pub max_connections: usize,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time a client has to send its first request (from the connection's
    /// start, after TLS), and an HTTP/1 client to send each later request
    /// head (from the previous response): a silent or trickling connection,
    /// and an idle HTTP/1 one, is closed after it.
    pub header_read_timeout: Duration,
    /// A connection without a request in flight for this long is closed
    /// (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// Largest request head (HTTP/1 header bytes, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// How often an HTTP/2 connection is pinged (`None`: never)...
    pub http2_keepalive_interval: Option<Duration>,
    /// ...and how long the ping's answer may take before the connection is
    /// considered dead and closed.
    pub http2_keepalive_timeout: Duration,
    /// How long a connection asked to close may take to finish its requests.
    pub close_grace: Duration,
    /// How long an answer may wait for the client to take it (an HTTP/2
    /// window kept shut, a socket not read); then the connection is closed.
    pub send_timeout: Duration,
    /// A request body, or an answer, that has moved less than 16 KiB for
    /// this long is stalled: it is what makes room when the server needs it.
    pub stalled_after: Duration,
}

impl ListenerLimits {
    /// The limits of the probe port: the same timeouts as `api`, but caps
    /// sized for three tiny GETs by a kubelet and a metrics scraper, so that
    /// nobody reaching the probe port can take memory from the API.
    pub fn probes(api: &ListenerLimits, max_connections: usize) -> Self {
        Self {
            max_connections,
            max_header_bytes: 8 << 10,
            http2_max_concurrent_streams: 4,
            ..api.clone()
        }
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 32 << 10,
            http2_max_concurrent_streams: 32,
            http2_keepalive_interval: Some(Duration::from_secs(20)),
            http2_keepalive_timeout: Duration::from_secs(10),
            close_grace: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            stalled_after: Duration::from_secs(1),
        }
    }
}

/// Where and when a request arrived; every request served by a
/// [`Listener`] carries one in its extensions.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// When its head was read.
    pub arrived: Instant,
    /// The request's passage: its phase, progress and budget.
    pub exchange: Arc<Exchange>,
    /// The listener's connections, which make room in the budgets.
    pub listener: Arc<Connections>,
}

/// A bound socket and how to serve it.
pub struct Listener {
    /// `"API"` or `"probes"`, for logs and metrics.
    pub name: &'static str,
    /// The bound socket.
    pub socket: TcpListener,
    /// TLS, if the listener speaks HTTPS.
    pub tls: Option<ReloadingConfig>,
    /// The routes.
    pub router: Router,
    /// Its edge limits.
    pub limits: ListenerLimits,
    /// Its connections (made with the limits above).
    pub connections: Arc<Connections>,
}

impl Listener {
    /// Serves until `shutdown` turns true, then lets every connection finish
    /// its requests within `grace`.
    pub async fn serve(
        self,
        metrics: Arc<Metrics>,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) -> io::Result<()> {
        let Listener {
            name,
            socket,
            tls,
            router,
            limits,
            connections,
        } = self;
        metrics.watch_connections(name, Arc::clone(&connections));
        let http = Arc::new(HttpBuilders::new(&limits));
        let limits = Arc::new(limits);
        let mut tasks = JoinSet::new();
        let mut shedding = Shedding::new(name, limits.max_connections);
        let mut accept_errors = RateLimited::new(Duration::from_secs(1));
        loop {
            let over_slack = connections.over_slack();
            let (stream, peer) = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                // Too many evicted connections still going: leave new ones in
                // the kernel's backlog for a moment rather than reset them.
                _ = connections.released(), if over_slack => continue,
                accepted = socket.accept(), if !over_slack => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, mostly: wait a little for
                        // connections to close rather than spin.
                        if accept_errors.ready() {
                            tracing::warn!(listener = name, %error, "cannot accept a connection");
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let registered = match connections.admit() {
                Admission::Admitted(registered) => {
                    shedding.admitted(connections.len());
                    registered
                }
                Admission::Evicted(registered, eviction) => {
                    shedding.evicted(&metrics, eviction);
                    registered
                }
                Admission::Refused => {
                    shedding.refused(&metrics, peer);
                    drop(stream);
                    continue;
                }
            };
            let served = Served {
                connection: Arc::clone(registered.connection()),
                connections: Arc::clone(&connections),
                metrics: Arc::clone(&metrics),
                router: router.clone(),
                http: Arc::clone(&http),
                limits: Arc::clone(&limits),
                shutdown: shutdown.clone(),
                shutdown_grace: grace,
            };
            let tls = tls.as_ref().map(ReloadingConfig::acceptor);
            tasks.spawn(async move {
                // Deregistered (its slot freed) when the task ends, however.
                let _registered = registered;
                served.run(stream, tls).await;
            });
        }
        drop(socket);
        let drained = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tasks.abort_all();
        }
        Ok(())
    }
}

/// How HTTP is served on a connection, by what TLS negotiated.
struct HttpBuilders {
    /// No ALPN (plain TCP, or a TLS client that offered none): HTTP/1.1, or
    /// HTTP/2 with prior knowledge.
    any: auto::Builder<TokioExecutor>,
    /// ALPN `http/1.1`.
    http1: auto::Builder<TokioExecutor>,
    /// ALPN `h2`: HTTP/2 only, as RFC 9113 §3.2 requires; a client that
    /// then speaks HTTP/1 gets a protocol error, not an HTTP/1 answer.
    http2: auto::Builder<TokioExecutor>,
}

impl HttpBuilders {
    fn new(limits: &ListenerLimits) -> Self {
        let any = http_builder(limits);
        Self {
            http1: any.clone().http1_only(),
            http2: any.clone().http2_only(),
            any,
        }
    }

    fn for_alpn(&self, protocol: Option<&[u8]>) -> &auto::Builder<TokioExecutor> {
        match protocol {
            Some(b"h2") => &self.http2,
            Some(b"http/1.1") => &self.http1,
            _ => &self.any,
        }
    }
}

fn http_builder(limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The read buffer holds the request head: at most this big (hyper's
        // own floor is 8 KiB).
        .max_buf_size(limits.max_header_bytes.max(8 << 10));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    builder
}

/// One accepted connection and what serving it needs.
struct Served {
    connection: Arc<Connection>,
    connections: Arc<Connections>,
    metrics: Arc<Metrics>,
    router: Router,
    http: Arc<HttpBuilders>,
    limits: Arc<ListenerLimits>,
    shutdown: watch::Receiver<bool>,
    /// How long requests in flight may take when the server shuts down.
    shutdown_grace: Duration,
}

impl Served {
    async fn run(self, stream: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        // Admission reviews are small request/response pairs: waiting to
        // coalesce them (Nagle) only adds a delayed-ACK stall (~40 ms).
        let _ = stream.set_nodelay(true);
        match tls {
            None => self.http(stream, None).await,
            Some(acceptor) => {
                let mut shutdown = self.shutdown.clone();
                let handshake = tokio::time::timeout(
                    self.limits.tls_handshake_timeout,
                    acceptor.accept(stream),
                );
                let stream = tokio::select! {
                    result = handshake => match result {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    },
                    _ = self.connection.closed() => return,
                    _ = self.connection.aborted() => return,
                    _ = stopped(&mut shutdown) => return,
                };
                let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                self.http(stream, alpn).await
            }
        }
    }

    /// Serves HTTP on `io` (`alpn`: what TLS negotiated) until the client
    /// leaves, the connection idles out, or it is asked to close or abort.
    async fn http<I>(self, io: I, alpn: Option<Vec<u8>>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Served {
            connection,
            connections,
            metrics,
            router,
            http,
            limits,
            mut shutdown,
            shutdown_grace,
        } = self;
        let on_request = Arc::clone(&connection);
        let on_answer = Arc::clone(&metrics);
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            let exchange = on_request.exchange();
            request.extensions_mut().insert(RequestContext {
                arrived: Instant::now(),
                exchange: Arc::clone(exchange.exchange()),
                listener: Arc::clone(&connections),
            });
            let response = router.clone().call(request);
            let connections = Arc::clone(&connections);
            let metrics = Arc::clone(&on_answer);
            async move {
                let Ok(response) = response.await;
                let (response, shed) = answer(exchange, response, &connections).await;
                metrics.shed(shed);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let io = TokioIo::new(Watched::new(io, Arc::clone(&connection)));
        let served = http.for_alpn(alpn.as_deref()).serve_connection(io, service);
        tokio::pin!(served);
        let mut closing_by: Option<tokio::time::Instant> = None;
        // How often answers (and idleness) are looked at.
        let tick =
            (limits.send_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            // Until its first request, a connection is held to the head
            // timeout: hyper's own HTTP/1 head timer only starts once the
            // protocol is known, and a client that sends nothing (or one
            // byte of what could be an HTTP/2 preface) never gets there.
            let idle_limit = if connection.has_had_requests() {
                limits.idle_timeout
            } else {
                limits.header_read_timeout.min(limits.idle_timeout)
            };
            // Looked at every tick even while idle: a request may start
            // (and its answer get stuck) at any moment, unannounced.
            let check = idle_limit.saturating_sub(connection.idle_for()).min(tick);
            // Requests in flight finish (within `grace`); no new ones start.
            let close = |served: std::pin::Pin<&mut _>, closing_by: &mut Option<_>, grace| {
                auto::Connection::graceful_shutdown(served);
                *closing_by = Some(tokio::time::Instant::now() + grace);
            };
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                // Dropping the connection closes it: what it owed is lost.
                _ = connection.aborted() => return,
                _ = connection.closed(), if closing_by.is_none() => {
                    close(served.as_mut(), &mut closing_by, limits.close_grace);
                }
                _ = stopped(&mut shutdown), if closing_by.is_none() => {
                    close(served.as_mut(), &mut closing_by, shutdown_grace);
                }
                _ = tokio::time::sleep(check) => {
                    let waited = connection.oldest_answer().max(connection.writes_stalled_for());
                    if waited >= limits.send_timeout {
                        metrics.request_shed("send_timeout", connection.answers_waiting().max(1));
                        tracing::debug!(?waited, "an answer was not taken in time: closing the connection");
                        return;
                    }
                    if closing_by.is_none() && connection.idle_for() >= idle_limit {
                        close(served.as_mut(), &mut closing_by, limits.close_grace);
                    }
                }
                _ = sleep_until(closing_by), if closing_by.is_some() => return,
            }
        }
    }
}

/// Resolves when the server starts shutting down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: dropped here, not held.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn sleep_until(at: Option<tokio::time::Instant>) -> impl Future<Output = ()> {
    let at = at.unwrap_or_else(tokio::time::Instant::now);
    tokio::time::sleep_until(at)
}
