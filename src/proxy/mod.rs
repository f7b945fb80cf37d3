//! orc's built-in load balancer, the data path: HTTP (HTTP/1.1 with
//! keep-alive, h2c, Upgrade pass-through) and TCP listeners that forward to
//! target groups by elbv2's rules, round-robin over healthy targets (fail
//! open when none is).
//!
//! It knows nothing of the store, Raft or the API: whoever knows the load
//! balancers builds a [`RouteTable`] and hands it to [`Proxy::apply`], as
//! often as it changes. A table is compiled once per apply into an
//! immutable snapshot (rules, target lists, their connection pools and
//! metric series) that requests share through an `Arc`; apply swaps it
//! atomically, so a request in flight keeps the snapshot it started with.
//!
//! * `routes`: the table (plain data).
//! * `rules`: pure decisions (ALB wildcards, which rule, which targets).
//! * `h1`: ordinary HTTP/1.1 requests, forwarded by one task per client
//!   connection without hyper; `http`: the accept loop, and hyper for the
//!   rest (h2c, Upgrade, HTTP/1.0, big or chunked request bodies);
//!   `tcp`: one TCP connection's way through.
//! * `pool`: connections to a target; `body`: response bodies.

mod body;
mod h1;
mod http;
mod idle;
mod pool;
pub mod routes;
pub mod rules;
mod tcp;
mod workers;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::{self, TargetGroupSeries, TargetSeries};
pub use body::ProxyBody;
pub use routes::{
    ListenerProtocol, ListenerRoutes, RouteTable, RuleRoute, TargetGroupRoutes, TargetRoute,
    TargetState,
};

/// hyper's smallest read buffer; a smaller header cap is raised to it.
const MIN_HEADER_BYTES: usize = 8192;

/// How the proxy treats its clients and targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyOptions {
    /// The address listeners bind (0.0.0.0 serves every interface).
    pub bind_host: IpAddr,
    /// A target must answer with a response head within this long (504
    /// otherwise); a TCP target must accept within it.
    pub request_timeout: Duration,
    /// An HTTP client connection with no request in flight this long (idle
    /// between requests, or a slow client that never finishes its headers)
    /// is closed, unless its listener's route gives its load balancer's own
    /// time-out (`ListenerRoutes::idle_timeout`). An h2c connection is also
    /// pinged at this interval and closed when a ping goes unanswered for as
    /// long.
    pub idle_timeout: Duration,
    /// The largest request head (request line and headers) accepted; a
    /// bigger one is answered 431. At least 8 KiB.
    pub max_header_bytes: usize,
    /// Threads serving HTTP client connections, each with its own event
    /// loop and its own connections to targets (HAProxy's `nbthread`); 0
    /// serves them on the runtime that calls `apply`. Default: one per CPU.
    pub workers: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            bind_host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A listener whose port could not be bound. Its port stays in the table
/// and binding is retried on the next apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("listener {arn} cannot listen on port {port}: {message}; free the port or give the listener another one")]
pub struct ListenerBindError {
    /// The listener's ARN.
    pub arn: String,
    /// The port it could not bind.
    pub port: u16,
    /// What the operating system said.
    pub message: String,
}

/// The load balancer's data path. Cheap to clone: clones share listeners
/// and routes. When the last clone is dropped, the listeners close (as
/// with `shutdown`, without waiting).
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
    _owner: Arc<Owner>,
}

/// Closes the listeners when the last `Proxy` clone goes (their tasks hold
/// `Inner`, not this).
struct Owner(Arc<Inner>);

impl Drop for Owner {
    fn drop(&mut self) {
        for (_, listener) in std::mem::take(&mut *self.0.lock_listeners()) {
            let _ = listener.stop.send(true);
        }
    }
}

/// A value on cache lines of its own.
#[repr(align(128))]
struct Padded<T>(T);

/// A worker's handle on the routes: its own `Arc` to the shared snapshot,
/// so that the reference counting of a request touches only its worker's
/// cache lines.
type Routes = Arc<Arc<Snapshot>>;

struct Inner {
    options: ProxyOptions,
    /// The routes requests use, swapped whole by `apply`: one copy of the
    /// handle per worker (`workers::slot`), all swapped together.
    routes: Box<[Padded<RwLock<Routes>>]>,
    /// The listeners bound, by port.
    listeners: Mutex<BTreeMap<u16, Running>>,
    /// One apply at a time.
    applying: tokio::sync::Mutex<()>,
    /// Bumped after every route swap: connections read their idle time-out
    /// again.
    swapped: watch::Sender<u64>,
    /// The threads HTTP connections are served on.
    workers: workers::Workers,
    http: auto::Builder<TokioExecutor>,
}

struct Running {
    protocol: ListenerProtocol,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A compiled route table.
#[derive(Default)]
struct Snapshot {
    listeners: HashMap<u16, Listener>,
    groups: BTreeMap<String, Arc<Group>>,
}

struct Listener {
    arn: String,
    rules: Vec<Rule>,
    /// X-Forwarded-Port's value.
    port_header: HeaderValue,
    /// How long a client connection may have no request in flight.
    idle_timeout: Duration,
}

struct Rule {
    hosts: Vec<String>,
    paths: Vec<String>,
    target_group_arn: String,
    group: Option<Arc<Group>>,
}

struct Group {
    name: String,
    targets: Vec<Target>,
    routable: rules::Routable,
    /// Requests routed so far: the round-robin position. Kept across
    /// applies.
    counter: Arc<AtomicUsize>,
    series: Arc<TargetGroupSeries>,
    /// The 503 body when no target can take a request.
    no_target: Bytes,
}

struct Target {
    address: SocketAddr,
    pool: Arc<pool::TargetPool>,
    series: Arc<TargetSeries>,
}

impl Snapshot {
    /// The idle time-out of the listener on `port` (the proxy's own when
    /// there is none).
    fn idle_timeout(&self, port: u16, options: &ProxyOptions) -> Duration {
        self.listeners
            .get(&port)
            .map_or(options.idle_timeout, |listener| listener.idle_timeout)
    }

    /// Compiles `table`, keeping the previous snapshot's connection pools
    /// and round-robin positions.
    fn compile(
        table: &RouteTable,
        previous: &Snapshot,
        options: &ProxyOptions,
        slots: usize,
    ) -> Snapshot {
        let mut pools: HashMap<SocketAddr, Arc<pool::TargetPool>> = HashMap::new();
        for group in previous.groups.values() {
            for target in &group.targets {
                pools.insert(target.address, target.pool.clone());
            }
        }
        let mut groups = BTreeMap::new();
        for (arn, routes) in &table.target_groups {
            let states: Vec<TargetState> = routes.targets.iter().map(|t| t.state).collect();
            let targets = routes
                .targets
                .iter()
                .map(|target| Target {
                    address: target.address,
                    pool: pools
                        .entry(target.address)
                        .or_insert_with(|| Arc::new(pool::TargetPool::new(target.address, slots)))
                        .clone(),
                    series: metrics::target_series(&routes.name, &target.address.to_string()),
                })
                .collect();
            let series = metrics::target_group_series(&routes.name);
            let healthy = states
                .iter()
                .filter(|s| **s == TargetState::Healthy)
                .count();
            series.set_healthy_targets(healthy as u64);
            let counter = previous
                .groups
                .get(arn)
                .map(|group| group.counter.clone())
                .unwrap_or_default();
            let no_target = Bytes::from(format!(
                "503 Service Unavailable: target group {} has no target that can take requests (none registered, or all draining)\n",
                routes.name
            ));
            groups.insert(
                arn.clone(),
                Arc::new(Group {
                    name: routes.name.clone(),
                    targets,
                    routable: rules::routable(&states),
                    counter,
                    series,
                    no_target,
                }),
            );
        }
        let listeners = table
            .listeners
            .iter()
            .map(|listener| {
                let mut ordered: Vec<&RuleRoute> = listener.rules.iter().collect();
                // Ascending priority, the default rule (None) last.
                ordered.sort_by_key(|rule| rule.priority.map_or(u64::MAX, u64::from));
                let rules = ordered
                    .into_iter()
                    .map(|rule| Rule {
                        hosts: rule.host_headers.clone(),
                        paths: rule.path_patterns.clone(),
                        target_group_arn: rule.target_group_arn.clone(),
                        group: groups.get(&rule.target_group_arn).cloned(),
                    })
                    .collect();
                (
                    listener.port,
                    Listener {
                        arn: listener.arn.clone(),
                        rules,
                        port_header: HeaderValue::from(listener.port),
                        idle_timeout: listener.idle_timeout.unwrap_or(options.idle_timeout),
                    },
                )
            })
            .collect();
        Snapshot { listeners, groups }
    }
}

impl Proxy {
    /// A proxy with no listener yet.
    pub fn new(options: ProxyOptions) -> Proxy {
        let mut http = auto::Builder::new(TokioExecutor::new());
        // No header_read_timeout: the connection's own idle timer
        // (`idle`) closes a client that sends no complete request in time.
        http.http1()
            .timer(TokioTimer::new())
            .max_buf_size(options.max_header_bytes.max(MIN_HEADER_BYTES))
            .keep_alive(true);
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(
                u32::try_from(options.max_header_bytes.max(MIN_HEADER_BYTES)).unwrap_or(u32::MAX),
            )
            .keep_alive_interval(options.idle_timeout)
            .keep_alive_timeout(options.idle_timeout);
        let workers = workers::Workers::start(options.workers);
        let empty = Arc::new(Snapshot::default());
        let inner = Arc::new(Inner {
            options,
            routes: (0..workers.slots())
                .map(|_| Padded(RwLock::new(Arc::new(empty.clone()))))
                .collect(),
            listeners: Mutex::new(BTreeMap::new()),
            applying: tokio::sync::Mutex::new(()),
            swapped: watch::channel(0).0,
            workers,
            http,
        });
        Proxy {
            _owner: Arc::new(Owner(inner.clone())),
            inner,
        }
    }

    /// Binds listeners new in `table`, closes those no longer in it
    /// (requests in flight finish), swaps the routes atomically (no request
    /// in flight is dropped). Returns one error per listener whose port
    /// could not be bound (the port stays in the table and is retried on
    /// the next apply).
    pub async fn apply(&self, table: RouteTable) -> Vec<ListenerBindError> {
        let _one_at_a_time = self.inner.applying.lock().await;
        let previous = self.inner.snapshot();
        let next = Arc::new(Snapshot::compile(
            &table,
            &previous,
            &self.inner.options,
            self.inner.workers.slots(),
        ));
        self.inner.set_routes(next);
        self.inner
            .swapped
            .send_modify(|generation| *generation += 1);

        let wanted: HashMap<u16, &ListenerRoutes> =
            table.listeners.iter().map(|l| (l.port, l)).collect();
        // Close the listeners gone (or whose protocol changed) first, so
        // their ports are free for a listener that takes them over.
        let closing: Vec<Running> = {
            let mut running = self.inner.lock_listeners();
            let gone: Vec<u16> = running
                .iter()
                .filter(|(port, r)| wanted.get(port).is_none_or(|l| l.protocol != r.protocol))
                .map(|(port, _)| *port)
                .collect();
            gone.iter()
                .filter_map(|port| running.remove(port))
                .collect()
        };
        for listener in closing {
            let _ = listener.stop.send(true);
            let _ = listener.task.await;
        }

        let mut errors = Vec::new();
        for listener in &table.listeners {
            if self.inner.lock_listeners().contains_key(&listener.port) {
                continue;
            }
            let address = SocketAddr::new(self.inner.options.bind_host, listener.port);
            match TcpListener::bind(address).await {
                Ok(socket) => {
                    let (stop, stopped) = watch::channel(false);
                    let inner = self.inner.clone();
                    let port = listener.port;
                    let task = match listener.protocol {
                        ListenerProtocol::Http => {
                            tokio::spawn(http::serve(inner, socket, port, stopped))
                        }
                        ListenerProtocol::Tcp => {
                            tokio::spawn(tcp::serve(inner, socket, port, stopped))
                        }
                    };
                    tracing::info!(port, listener = %listener.arn, protocol = ?listener.protocol, "load balancer listener bound");
                    self.inner.lock_listeners().insert(
                        listener.port,
                        Running {
                            protocol: listener.protocol,
                            stop,
                            task,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(port = listener.port, listener = %listener.arn, %error, "load balancer listener cannot bind its port");
                    errors.push(ListenerBindError {
                        arn: listener.arn.clone(),
                        port: listener.port,
                        message: format!("binding {address} failed: {error}"),
                    });
                }
            }
        }
        errors
    }

    /// The ports listened on now.
    pub fn bound_ports(&self) -> Vec<u16> {
        self.inner.lock_listeners().keys().copied().collect()
    }

    /// Closes every listener (connections finish their requests in flight)
    /// and forgets the routes.
    pub async fn shutdown(&self) {
        let _one_at_a_time = self.inner.applying.lock().await;
        let closing: Vec<Running> = std::mem::take(&mut *self.inner.lock_listeners())
            .into_values()
            .collect();
        for listener in closing {
            let _ = listener.stop.send(true);
            let _ = listener.task.await;
        }
        self.inner.set_routes(Arc::new(Snapshot::default()));
    }
}

/// Accepts connections on a listener's socket until `stop` says so,
/// handing each to `take`. A failed accept (out of descriptors, most
/// likely) is logged and retried after a pause that gives connections time
/// to close.
async fn accept_until_stopped(
    listener: TcpListener,
    port: u16,
    mut stop: watch::Receiver<bool>,
    mut take: impl FnMut(tokio::net::TcpStream, SocketAddr, &watch::Receiver<bool>),
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => take(stream, peer, &stop),
            Err(error) => {
                tracing::warn!(port, %error, "load balancer listener cannot accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Inner {
    /// The routes now, through the calling worker's handle.
    fn snapshot(&self) -> Routes {
        self.routes[workers::slot() % self.routes.len()]
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Swaps every worker's handle to `next`.
    fn set_routes(&self, next: Arc<Snapshot>) {
        for routes in &self.routes {
            *routes
                .0
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next.clone());
        }
    }

    /// The idle time-out of the listener on `port` now.
    fn idle_timeout(&self, port: u16) -> Duration {
        self.snapshot().idle_timeout(port, &self.options)
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, Running>> {
        self.listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
