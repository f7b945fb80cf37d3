//! The load balancer's data path (`orc::proxy`) over real loopback HTTP:
//! backends are small hyper servers inside the test, each answering with
//! its own name; clients are hyper clients (HTTP/1.1 and h2c) or raw
//! sockets where a misbehaving peer is the point.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use orc::proxy::{
    ListenerProtocol, ListenerRoutes, Proxy, ProxyOptions, RouteTable, RuleRoute,
    TargetGroupRoutes, TargetRoute, TargetState,
};
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, hyper::Error>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

fn text(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A backend on a loopback port; stops when dropped.
struct Backend {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend_with(handler: Handler) -> Backend {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let counted = counted.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Backend {
        address,
        requests,
        task,
    }
}

/// A backend answering every request with its name.
async fn named(name: &'static str) -> Backend {
    backend_with(Arc::new(move |_| {
        Box::pin(async move { Response::new(text(name)) })
    }))
    .await
}

fn group(name: &str, targets: &[(SocketAddr, TargetState)]) -> TargetGroupRoutes {
    TargetGroupRoutes {
        arn: format!("arn:orc:elasticloadbalancing:targetgroup/{name}"),
        name: name.to_string(),
        targets: targets
            .iter()
            .map(|&(address, state)| TargetRoute { address, state })
            .collect(),
    }
}

/// One listener on `port` whose default rule forwards to `group`.
fn table(port: u16, protocol: ListenerProtocol, group: TargetGroupRoutes) -> RouteTable {
    RouteTable {
        listeners: vec![ListenerRoutes {
            arn: format!("arn:orc:elasticloadbalancing:listener/{port}"),
            port,
            protocol,
            rules: vec![RuleRoute {
                priority: None,
                host_headers: vec![],
                path_patterns: vec![],
                target_group_arn: group.arn.clone(),
            }],
        }],
        target_groups: BTreeMap::from([(group.arn.clone(), group)]),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn options() -> ProxyOptions {
    ProxyOptions {
        bind_host: Ipv4Addr::LOCALHOST.into(),
        request_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        max_header_bytes: 16 * 1024,
    }
}

/// A proxy serving `make(port)` on a free port (another port is tried if
/// a process took the free one meanwhile).
async fn start(options: ProxyOptions, make: impl Fn(u16) -> RouteTable) -> (Proxy, u16) {
    let proxy = Proxy::new(options);
    for _ in 0..20 {
        let port = free_port();
        if proxy.apply(make(port)).await.is_empty() {
            return (proxy, port);
        }
        proxy.apply(RouteTable::default()).await;
    }
    panic!("no free port found for the proxy's listener");
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// A keep-alive HTTP/1.1 connection to the proxy.
async fn connect(port: u16) -> Sender {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection.with_upgrades());
    sender
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "web.test")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap()
}

/// Sends `request` and reads the whole answer.
async fn send(sender: &mut Sender, request: Request<Body>) -> hyper::Result<(StatusCode, String)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One request on a new connection.
async fn fetch(port: u16, path: &str) -> hyper::Result<(StatusCode, String)> {
    send(&mut connect(port).await, get(path)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_requests_over_three_targets_see_each_name_ten_times() {
    let backends = [
        named("web-1").await,
        named("web-2").await,
        named("web-3").await,
    ];
    let targets: Vec<_> = backends
        .iter()
        .map(|b| (b.address, TargetState::Healthy))
        .collect();
    let (proxy, port) = start(options(), |port| {
        table(port, ListenerProtocol::Http, group("web", &targets))
    })
    .await;
    let mut sender = connect(port).await;
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        let (status, body) = send(&mut sender, get("/")).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(
        seen,
        BTreeMap::from([
            ("web-1".to_string(), 10),
            ("web-2".to_string(), 10),
            ("web-3".to_string(), 10)
        ])
    );
    for backend in &backends {
        assert_eq!(backend.requests.load(Ordering::SeqCst), 10);
    }
    proxy.shutdown().await;
    assert!(proxy.bound_ports().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_without_targets_answers_503_naming_it() {
    let (proxy, port) = start(options(), |port| {
        table(port, ListenerProtocol::Http, group("empty-tg", &[]))
    })
    .await;
    let (status, body) = fetch(port, "/").await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("target group empty-tg"), "{body}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_already_taken_is_a_bind_error_naming_it_and_is_retried() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let web = named("web-1").await;
    let routes = table(
        port,
        ListenerProtocol::Http,
        group("web", &[(web.address, TargetState::Healthy)]),
    );
    let proxy = Proxy::new(options());
    let errors = proxy.apply(routes.clone()).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].port, port);
    assert!(
        errors[0].to_string().contains(&format!("port {port}")),
        "{}",
        errors[0]
    );
    assert!(proxy.bound_ports().is_empty());
    // Freed, the port is bound on the next apply.
    drop(taken);
    assert!(proxy.apply(routes).await.is_empty());
    assert_eq!(proxy.bound_ports(), vec![port]);
    let (status, body) = fetch(port, "/").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "web-1"));
    proxy.shutdown().await;
}
