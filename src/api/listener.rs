//! The server's accept loop: every connection to the API port (gRPC over
//! HTTP/2 for clients, agents and peers; HTTP/1.1 for `/metrics`) is served
//! here, so that no connection holds a file descriptor for nothing.
//!
//! * A connection with no request in flight for `idle_timeout` is closed
//!   (HTTP/2: GOAWAY, then close; a client reconnects on its next call).
//!   Streams in flight (an agent's assignment stream, `orc watch`, a peer's
//!   raft stream) keep a connection busy, however quiet they are.
//! * A connection that has not completed a first request within
//!   `handshake_timeout` (it never sent the HTTP/2 preface, or a request)
//!   is dropped.
//! * When accepting fails for lack of descriptors (EMFILE/ENFILE), the loop
//!   logs it (at most every 10 s), closes the oldest connections that have no
//!   request in flight to make room, and backs off instead of spinning.
//!
//! * With TLS (every server but one started `--insecure` on loopback),
//!   each connection first completes a TLS 1.3 handshake within
//!   `handshake_timeout`; the client certificate, when there is one, says
//!   who calls ([`Principal`], `tls::principal_of`), and no certificate is
//!   [`Principal::Anonymous`]. A plain-text client fails the handshake.
//!
//! It knows HTTP, TLS and sockets only; what is served is the caller's
//! router, which finds the caller's `Principal` and [`RemoteAddress`] on
//! every request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::vocab::principal::Principal;

/// How the listener treats its connections.
#[derive(Clone, Copy, Debug)]
pub struct ListenerOptions {
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A connection must complete its first request within this long.
    pub handshake_timeout: Duration,
}

impl ListenerOptions {
    /// The default idle time-out (documented in the README).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    /// Options for an idle time-out; the first request must come within
    /// 10 s, or the idle time-out when that is shorter.
    pub fn with_idle_timeout(idle_timeout: Duration) -> ListenerOptions {
        ListenerOptions {
            idle_timeout,
            handshake_timeout: idle_timeout.min(Duration::from_secs(10)),
        }
    }
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions::with_idle_timeout(Self::DEFAULT_IDLE_TIMEOUT)
    }
}

/// The address a request's connection comes from (an extension on every
/// request, for log lines about refusals).
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddress(pub std::net::SocketAddr);

/// The scheme a request's connection speaks (an extension on every
/// request): `https` with TLS, `http` for a server started `--insecure`;
/// for URLs a client is sent to (the registry's token realm).
#[derive(Clone, Copy, Debug)]
pub struct Scheme(pub &'static str);

/// What the accept loop knows about one open connection.
struct Activity {
    id: u64,
    accepted: Instant,
    /// Requests whose response has not finished (streams included).
    in_flight: AtomicUsize,
    /// Requests seen so far.
    requests: AtomicU64,
    /// When the last request started or finished, in ms after `accepted`.
    last_ms: AtomicU64,
    /// Asks the connection to close (descriptor pressure).
    evict: Notify,
}

impl Activity {
    fn touch(&self) {
        let ms = self.accepted.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// When the connection becomes closable, if nothing happens meanwhile;
    /// `None` while a request is in flight.
    fn idle_deadline(&self, options: &ListenerOptions) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.accepted + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        Some(if self.requests.load(Ordering::Acquire) == 0 {
            self.accepted + options.handshake_timeout
        } else {
            last + options.idle_timeout
        })
    }
}

/// The open connections, by accept order.
#[derive(Default)]
struct Registry {
    open: Mutex<BTreeMap<u64, Arc<Activity>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks up to `count` connections without a request in flight to close:
    /// those that never completed a request first, then the longest idle.
    /// Returns how many were asked.
    fn evict(&self, count: usize) -> usize {
        let open = self.lock();
        let mut idle: Vec<&Arc<Activity>> = open
            .values()
            .filter(|a| a.in_flight.load(Ordering::Acquire) == 0)
            .collect();
        idle.sort_by_key(|a| {
            (
                a.requests.load(Ordering::Acquire) > 0,
                a.accepted + Duration::from_millis(a.last_ms.load(Ordering::Acquire)),
            )
        });
        let chosen: Vec<_> = idle.into_iter().take(count).collect();
        for activity in &chosen {
            activity.evict.notify_one();
        }
        chosen.len()
    }
}

/// Counts a request in flight until the response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.requests.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's `InFlight` until it ends.
struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The router as hyper's service, counting requests in flight.
#[derive(Clone)]
struct TrackedService {
    router: axum::Router,
    activity: Arc<Activity>,
    /// Who is at the other end of the connection, put on every request.
    principal: Principal,
    /// Where the connection comes from, put on every request.
    peer: std::net::SocketAddr,
    /// `https` or `http`, put on every request.
    scheme: &'static str,
}

impl hyper::service::Service<hyper::Request<Incoming>> for TrackedService {
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.principal.clone());
        request.extensions_mut().insert(RemoteAddress(self.peer));
        request.extensions_mut().insert(Scheme(self.scheme));
        let in_flight = InFlight::start(&self.activity);
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = tower_service::Service::call(&mut router, request).await?;
            Ok(response.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

/// Whether an accept error means this process (or the system) ran out of
/// file descriptors or socket memory.
fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Raises this process's soft limit on open files to its hard limit, so a
/// server is not capped by a distribution's low default (often 1024).
/// Returns the (old, new) soft limit when it changed.
pub fn raise_descriptor_limit() -> io::Result<Option<(u64, u64)>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(None);
    }
    let old = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // rlim_t is 32 bits wide on 32-bit ARM (Raspberry Pi OS armhf).
    #[allow(clippy::unnecessary_cast)]
    Ok(Some((old as u64, limit.rlim_max as u64)))
}

/// This process's soft limit on open files.
fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    soft
}

/// Serves `router` on `listener` until `shutdown` resolves, closing idle
/// connections as `options` says; with `tls`, every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    options: ListenerOptions,
    tls: Option<crate::tls::ServerTlsSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let registry = Arc::new(Registry::default());
    let (stop, stopped) = watch::channel(false);
    let mut next_id = 0u64;
    let mut refused = 0u64;
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if out_of_descriptors(&error) => {
                refused += 1;
                let evicted = registry.evict(16);
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(
                        %error,
                        limit = descriptor_limit(),
                        open_connections = registry.lock().len(),
                        refused,
                        closing_idle = evicted,
                        "refusing connections: out of file descriptors; closing idle connections to make room"
                    );
                    last_warning = Some(Instant::now());
                }
                crate::metrics::record_accept_refused();
                // Back off: the closes take a moment, and spinning on accept
                // would burn the CPU the connections in flight need.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(error) => {
                // ECONNABORTED and the like: that one connection is gone.
                tracing::debug!(%error, "accept failed");
                continue;
            }
        };
        // Replies must not wait for Nagle's algorithm (a 40 ms stall per
        // write against the client's delayed ACK).
        let _ = tcp.set_nodelay(true);
        next_id += 1;
        let activity = Arc::new(Activity {
            id: next_id,
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            evict: Notify::new(),
        });
        registry.lock().insert(activity.id, activity.clone());
        let registry = registry.clone();
        let router = router.clone();
        let stopped = stopped.clone();
        let tls = tls.as_ref().map(|source| source.current());
        tokio::spawn(async move {
            let _open = crate::metrics::connection_opened();
            match tls {
                None => {
                    let connection = Connection {
                        peer,
                        principal: Principal::Insecure,
                        activity: activity.clone(),
                    };
                    serve_connection(tcp, connection, router, options, stopped).await
                }
                Some(tls) => {
                    if let Some((stream, principal)) =
                        handshake(&tls, tcp, peer, options.handshake_timeout).await
                    {
                        let connection = Connection {
                            peer,
                            principal,
                            activity: activity.clone(),
                        };
                        serve_connection(stream, connection, router, options, stopped).await
                    }
                }
            }
            registry.lock().remove(&activity.id);
        });
    }
    // Stop accepting (the listener closes when dropped) and ask every
    // connection to finish.
    drop(listener);
    let _ = stop.send(true);
    Ok(())
}

/// Why a connection is being closed.
#[derive(Debug)]
enum Closing {
    Idle,
    NoRequest,
    Evicted,
    ShuttingDown,
}

/// Runs the TLS handshake of one connection within `timeout`; returns the
/// stream and who the client certificate names (`Anonymous` without one),
/// or `None` when the handshake failed (logged: a certificate the cluster
/// CA did not sign is a warning, a plain-text client a note).
async fn handshake(
    tls: &crate::tls::ServerTls,
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    timeout: Duration,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Principal,
)> {
    let stream = match tokio::time::timeout(timeout, tls.acceptor().accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            match error
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
            {
                Some(rustls::Error::InvalidCertificate(why)) => tracing::warn!(
                    %peer,
                    reason = ?why,
                    "refused a connection: its client certificate was not issued by this cluster's CA (another cluster's, or expired)"
                ),
                Some(rustls::Error::AlertReceived(alert)) => tracing::warn!(
                    %peer,
                    alert = ?alert,
                    "refused a connection: the client did not accept this server's certificate (it trusts another cluster's CA, or its credential is stale)"
                ),
                Some(rustls::Error::InvalidMessage(_))
                | Some(rustls::Error::InappropriateMessage { .. }) => {
                    tracing::info!(%peer, "refused a plain-text (non-TLS) connection: this server speaks TLS only")
                }
                _ => tracing::debug!(%peer, %error, "TLS handshake failed"),
            }
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "no TLS handshake within the time-out; closing");
            return None;
        }
    };
    let principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| crate::tls::principal_of(cert))
        .unwrap_or(Principal::Anonymous);
    Some((stream, principal))
}

/// One accepted connection: where from, who, and its activity.
struct Connection {
    peer: std::net::SocketAddr,
    principal: Principal,
    activity: Arc<Activity>,
}

async fn serve_connection<I>(
    io: I,
    connection: Connection,
    router: axum::Router,
    options: ListenerOptions,
    mut stopped: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Connection {
        peer,
        principal,
        activity,
    } = connection;
    let scheme = if principal == Principal::Insecure {
        "http"
    } else {
        "https"
    };
    let service = TrackedService {
        router,
        activity: activity.clone(),
        principal,
        peer,
        scheme,
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.handshake_timeout);
    // Pings find a peer that vanished under an open stream (a Pi unplugged).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing: Option<(Closing, Instant)> = None;
    loop {
        let check_at = match &closing {
            // A connection that does not finish closing in time is dropped.
            Some((_, since)) => *since + Duration::from_secs(5),
            None => activity
                .idle_deadline(&options)
                .unwrap_or_else(|| Instant::now() + options.idle_timeout),
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(check_at.into()) => {
                if let Some((why, _)) = &closing {
                    tracing::debug!(%peer, reason = ?why, "connection did not close in time; dropping it");
                    return;
                }
                let Some(deadline) = activity.idle_deadline(&options) else { continue };
                if Instant::now() < deadline {
                    continue;
                }
                let why = if activity.requests.load(Ordering::Acquire) == 0 {
                    Closing::NoRequest
                } else {
                    Closing::Idle
                };
                tracing::debug!(%peer, reason = ?why, "closing an idle connection");
                crate::metrics::record_idle_closed();
                if matches!(why, Closing::NoRequest) {
                    return;
                }
                connection.as_mut().graceful_shutdown();
                closing = Some((why, Instant::now()));
            }
            () = activity.evict.notified(), if closing.is_none() => {
                if activity.in_flight.load(Ordering::Acquire) > 0 {
                    continue;
                }
                crate::metrics::record_idle_closed();
                if activity.requests.load(Ordering::Acquire) == 0 {
                    return;
                }
                connection.as_mut().graceful_shutdown();
                closing = Some((Closing::Evicted, Instant::now()));
            }
            _ = stopped.wait_for(|stop| *stop), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some((Closing::ShuttingDown, Instant::now()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> Arc<Activity> {
        Arc::new(Activity {
            id: 1,
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            evict: Notify::new(),
        })
    }

    #[test]
    fn a_connection_is_idle_only_without_requests_in_flight() {
        let options = ListenerOptions {
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
        };
        let a = activity();
        // No request yet: the handshake time-out applies.
        assert_eq!(
            a.idle_deadline(&options),
            Some(a.accepted + Duration::from_secs(10))
        );
        let request = InFlight::start(&a);
        assert_eq!(a.idle_deadline(&options), None, "a stream keeps it busy");
        drop(request);
        let deadline = a.idle_deadline(&options).unwrap();
        assert!(deadline >= a.accepted + Duration::from_secs(60));
    }

    #[test]
    fn eviction_picks_connections_without_requests_first() {
        let registry = Registry::default();
        let busy = activity();
        let _stream = InFlight::start(&busy);
        let used = Arc::new(Activity {
            id: 2,
            ..Arc::try_unwrap(activity()).ok().unwrap()
        });
        drop(InFlight::start(&used));
        let stranger = Arc::new(Activity {
            id: 3,
            ..Arc::try_unwrap(activity()).ok().unwrap()
        });
        for a in [&busy, &used, &stranger] {
            registry.lock().insert(a.id, a.clone());
        }
        assert_eq!(registry.evict(1), 1);
        assert_eq!(registry.evict(5), 2, "the busy connection is never evicted");
    }

    #[test]
    fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
        raise_descriptor_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
