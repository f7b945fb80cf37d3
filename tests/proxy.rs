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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
            idle_timeout: None,
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
        workers: 2,
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

/// A proxy whose one HTTP listener forwards to the target group `name` of
/// `targets`, on a free port.
async fn serve_group(
    options: ProxyOptions,
    name: &str,
    targets: &[(SocketAddr, TargetState)],
) -> (Proxy, u16) {
    start(options, |port| {
        table(port, ListenerProtocol::Http, group(name, targets))
    })
    .await
}

/// A raw socket to the proxy's listener on `port`.
async fn raw(port: u16) -> TcpStream {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap()
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// A keep-alive HTTP/1.1 connection to the proxy.
async fn connect(port: u16) -> Sender {
    let stream = raw(port).await;
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
    let (proxy, port) = serve_group(options(), "empty-tg", &[]).await;
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

const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `condition` until it holds, failing after `DEADLINE`.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads from a raw socket until `done` holds for what was read or the
/// peer closes; the deadline bounds it.
async fn read_raw(stream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    let outcome = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    read.extend_from_slice(&buffer[..n]);
                    if done(&read) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the peer neither answered nor closed within {DEADLINE:?}"
    );
    read
}

fn metric(name_and_labels: &str) -> u64 {
    let text = orc::metrics::render();
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_and_rules_route_by_host_and_path() {
    let echo = backend_with(Arc::new(|request: Request<Incoming>| {
        Box::pin(async move {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap_or("?").to_string())
                    .unwrap_or_default()
            };
            Response::new(text(format!(
                "xff={} proto={} port={} host={} conn={}",
                header("x-forwarded-for"),
                header("x-forwarded-proto"),
                header("x-forwarded-port"),
                header("host"),
                header("connection"),
            )))
        })
    }))
    .await;
    let api = named("api").await;
    let statics = named("static").await;
    let (proxy, port) = start(options(), |port| {
        let mut routes = table(
            port,
            ListenerProtocol::Http,
            group("echo", &[(echo.address, TargetState::Healthy)]),
        );
        for g in [
            group("api", &[(api.address, TargetState::Healthy)]),
            group("static", &[(statics.address, TargetState::Healthy)]),
        ] {
            routes.target_groups.insert(g.arn.clone(), g);
        }
        // Given out of order: the proxy evaluates by priority.
        routes.listeners[0].rules.insert(
            0,
            RuleRoute {
                priority: Some(20),
                host_headers: vec![],
                path_patterns: vec!["/static/*".into(), "/img/????.png".into()],
                target_group_arn: "arn:orc:elasticloadbalancing:targetgroup/static".into(),
            },
        );
        routes.listeners[0].rules.insert(
            0,
            RuleRoute {
                priority: Some(10),
                host_headers: vec!["*.api.test".into()],
                path_patterns: vec![],
                target_group_arn: "arn:orc:elasticloadbalancing:targetgroup/api".into(),
            },
        );
        routes
    })
    .await;
    let mut sender = connect(port).await;
    let request = Request::get("/x")
        .header("host", "web.test")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap();
    let (status, body) = send(&mut sender, request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        format!("xff=203.0.113.7, 127.0.0.1 proto=http port={port} host=web.test conn=")
    );
    for (host, path, expected) in [
        ("v1.API.test:8080", "/static/a.css", "api"),
        ("web.test", "/static/a.css", "static"),
        ("web.test", "/img/logo.png", "static"),
        ("web.test", "/img/logos.png", "xff="),
        ("api.test", "/STATIC/a.css", "xff="),
    ] {
        let request = Request::get(path)
            .header("host", host)
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .unwrap();
        let (_, body) = send(&mut sender, request).await.unwrap();
        assert!(body.starts_with(expected), "{host}{path} went to {body}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_becomes_a_tunnel_and_a_websocket_echo_comes_back() {
    let echo = backend_with(Arc::new(|mut request: Request<Incoming>| {
        Box::pin(async move {
            let upgraded = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let mut io = TokioIo::new(upgraded.await.unwrap());
                let mut buffer = [0u8; 1024];
                loop {
                    match io.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(text(""))
                .unwrap()
        })
    }))
    .await;
    let (proxy, port) = serve_group(options(), "ws", &[(echo.address, TargetState::Healthy)]).await;
    let mut stream = raw(port).await;
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_raw(&mut stream, |read| {
        read.windows(4).any(|w| w == b"\r\n\r\n")
    })
    .await;
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // A masked WebSocket text frame ("hello"), echoed byte for byte.
    let frame = [
        0x81u8,
        0x85,
        1,
        2,
        3,
        4,
        b'h' ^ 1,
        b'e' ^ 2,
        b'l' ^ 3,
        b'l' ^ 4,
        b'o' ^ 1,
    ];
    for _ in 0..3 {
        stream.write_all(&frame).await.unwrap();
        let echoed = read_raw(&mut stream, |read| read.len() >= frame.len()).await;
        assert_eq!(echoed, frame);
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_client_is_served_over_http1_targets() {
    let backends = [named("web-1").await, named("web-2").await];
    let targets: Vec<_> = backends
        .iter()
        .map(|b| (b.address, TargetState::Healthy))
        .collect();
    let (proxy, port) = start(options(), |port| {
        table(port, ListenerProtocol::Http, group("h2", &targets))
    })
    .await;
    let stream = raw(port).await;
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    // Concurrent streams on the one connection.
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let mut sender = sender.clone();
        streams.spawn(async move {
            let request = Request::get(format!("http://h2.test:{port}/"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.version(), hyper::Version::HTTP_2);
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        });
    }
    let mut seen = BTreeMap::<String, usize>::new();
    while let Some(answer) = streams.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(
        seen,
        BTreeMap::from([("web-1".to_string(), 5), ("web-2".to_string(), 5)])
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_an_oversized_header_gets_431_while_others_are_served() {
    let web = named("web-1").await;
    let (proxy, port) = serve_group(
        ProxyOptions {
            idle_timeout: Duration::from_millis(500),
            ..options()
        },
        "slow",
        &[(web.address, TargetState::Healthy)],
    )
    .await;
    // A client that starts its headers and never finishes them.
    let mut slow = raw(port).await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Slow: ")
        .await
        .unwrap();
    // Others are served meanwhile.
    for _ in 0..5 {
        assert_eq!(fetch(port, "/").await.unwrap().1, "web-1");
    }
    // The slow one is closed (with or without a 408) once the time-out passes.
    let answer = read_raw(&mut slow, |_| false).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // A head bigger than the cap.
    let mut big = raw(port).await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    // The proxy may answer and close before reading it all.
    let _ = big.write_all(request.as_bytes()).await;
    let answer = read_raw(&mut big, |read| read.windows(4).any(|w| w == b"\r\n\r\n")).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(web.requests.load(Ordering::SeqCst), 5);
    assert_eq!(fetch(port, "/").await.unwrap().1, "web-1");
    proxy.shutdown().await;
}

/// Whether a raw HTTP/1.1 answer has arrived whole (its body `web-1`).
fn answered(read: &[u8]) -> bool {
    read.windows(5).any(|w| w == b"web-1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_closed_after_the_listeners_idle_timeout_changed_live_never_mid_request() {
    // `/slow` is answered only once released.
    let release = Arc::new(tokio::sync::Notify::new());
    let released = release.clone();
    let web = backend_with(Arc::new(move |request| {
        let released = released.clone();
        Box::pin(async move {
            if request.uri().path() == "/slow" {
                released.notified().await;
            }
            Response::new(text("web-1"))
        })
    }))
    .await;
    let routes = |port: u16, idle: Duration| {
        let mut routes = table(
            port,
            ListenerProtocol::Http,
            group("idle", &[(web.address, TargetState::Healthy)]),
        );
        routes.listeners[0].idle_timeout = Some(idle);
        routes
    };
    // The load balancer's idle time-out starts at ALB's 60 s, above the
    // proxy's own 10 s and the test's deadline.
    let (proxy, port) = start(options(), |port| routes(port, Duration::from_secs(60))).await;
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: web.test\r\n\r\n");
    // A keep-alive client that was served and is now idle.
    let mut idle = raw(port).await;
    idle.write_all(request("/").as_bytes()).await.unwrap();
    assert!(answered(&read_raw(&mut idle, answered).await));
    // A client whose request is in flight.
    let mut waiting = raw(port).await;
    waiting
        .write_all(request("/slow").as_bytes())
        .await
        .unwrap();
    until("the slow request to reach the target", || {
        web.requests.load(Ordering::SeqCst) == 2
    })
    .await;

    // The time-out drops to 300 ms: the idle client is closed at once.
    assert!(proxy
        .apply(routes(port, Duration::from_millis(300)))
        .await
        .is_empty());
    assert!(
        read_raw(&mut idle, |_| false).await.is_empty(),
        "the idle client got bytes instead of a close"
    );
    // Clients that connect and send nothing are closed too, one after the
    // other, each after the in-flight request's connection was looked at.
    for _ in 0..2 {
        let mut silent = raw(port).await;
        assert!(read_raw(&mut silent, |_| false).await.is_empty());
    }
    // The request in flight all along is answered in full, then its
    // connection, idle at last, is closed.
    release.notify_one();
    let answer = read_raw(&mut waiting, answered).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(read_raw(&mut waiting, |_| false).await.is_empty());
    proxy.shutdown().await;
}

/// A raw target: reads a request head, then `act`s on the socket.
async fn raw_target<F, Fut>(act: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = read_raw(&mut stream, |read| {
                read.windows(4).any(|w| w == b"\r\n\r\n")
            })
            .await;
            act(stream).await;
        }
    });
    (address, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_failing_mid_request_gives_502_or_an_aborted_body_and_the_proxy_stays_up() {
    // Resets before any response byte.
    let (before_head, before_task) = raw_target(|stream| async move {
        let _ = stream.set_zero_linger();
        drop(stream);
    })
    .await;
    // Sends a head promising 1000 bytes, 7 of them, then resets.
    let (mid_body, mid_task) = raw_target(|mut stream| async move {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
            .await;
        let _ = stream.flush().await;
        let _ = stream.set_zero_linger();
        drop(stream);
    })
    .await;
    let web = named("web-1").await;
    let (proxy, port) =
        serve_group(options(), "broken", &[(before_head, TargetState::Healthy)]).await;
    let (status, body) = fetch(port, "/").await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("target group broken"), "{body}");
    // Dropping the last handle closes the listener.
    drop(proxy);
    until("the dropped proxy's port to close", || {
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
    })
    .await;

    let (proxy, port) = serve_group(options(), "broken", &[(mid_body, TargetState::Healthy)]).await;
    let mut sender = connect(port).await;
    let response = sender.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.into_body().collect().await.is_err(),
        "the client's body must be cut short, not completed"
    );
    // The proxy serves the next request.
    let routes = table(
        port,
        ListenerProtocol::Http,
        group("broken", &[(web.address, TargetState::Healthy)]),
    );
    assert!(proxy.apply(routes).await.is_empty());
    assert_eq!(
        fetch(port, "/").await.unwrap(),
        (StatusCode::OK, "web-1".to_string())
    );
    proxy.shutdown().await;
    before_task.abort();
    mid_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_target_closed_is_not_used_and_the_request_is_answered() {
    // Answers one request per connection with keep-alive, then closes it:
    // the proxy keeps each connection idle, and the next request finds it
    // closed.
    let closed = Arc::new(AtomicUsize::new(0));
    let counted = closed.clone();
    let (address, task) = raw_target(move |mut stream| {
        let closed = counted.clone();
        async move {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            let _ = stream.flush().await;
            drop(stream);
            closed.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    let (proxy, port) = serve_group(options(), "closing", &[(address, TargetState::Healthy)]).await;
    // One client connection, so one worker and one idle list.
    let mut sender = connect(port).await;
    for round in 1..=3 {
        assert_eq!(
            send(&mut sender, get("/")).await.unwrap(),
            (StatusCode::OK, "ok".to_string()),
            "request {round}"
        );
        until("the target to close its connection", || {
            closed.load(Ordering::SeqCst) == round
        })
        .await;
    }
    proxy.shutdown().await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_stream_through_whole_one_after_another_on_one_connection() {
    const SIZE: usize = 4 << 20;
    let big = backend_with(Arc::new(|_| {
        Box::pin(async { Response::new(text(vec![b'x'; SIZE])) })
    }))
    .await;
    let (proxy, port) = serve_group(options(), "big", &[(big.address, TargetState::Healthy)]).await;
    let mut sender = connect(port).await;
    for round in 1..=3 {
        let (status, body) = send(&mut sender, get("/")).await.unwrap();
        assert_eq!(status, StatusCode::OK, "request {round}");
        assert_eq!(body.len(), SIZE, "request {round}");
        assert!(body.bytes().all(|b| b == b'x'), "request {round}");
    }
    assert_eq!(big.requests.load(Ordering::SeqCst), 3);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_retried_on_the_next_target() {
    let dead = {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap()
    };
    let web = named("web-1").await;
    let (proxy, port) = start(options(), |port| {
        table(
            port,
            ListenerProtocol::Http,
            group(
                "retry",
                &[
                    (dead, TargetState::Healthy),
                    (web.address, TargetState::Healthy),
                ],
            ),
        )
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            fetch(port, "/").await.unwrap(),
            (StatusCode::OK, "web-1".to_string())
        );
    }
    assert_eq!(web.requests.load(Ordering::SeqCst), 10);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_healthy_target_every_target_not_draining_is_used_and_counted() {
    let backends = [
        named("web-1").await,
        named("web-2").await,
        named("web-3").await,
    ];
    let (proxy, port) = start(options(), |port| {
        table(
            port,
            ListenerProtocol::Http,
            group(
                "fail-open-tg",
                &[
                    (backends[0].address, TargetState::Unhealthy),
                    (backends[1].address, TargetState::Initial),
                    (backends[2].address, TargetState::Draining),
                ],
            ),
        )
    })
    .await;
    let mut sender = connect(port).await;
    for _ in 0..10 {
        let (status, body) = send(&mut sender, get("/")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_ne!(body, "web-3");
    }
    assert_eq!(backends[0].requests.load(Ordering::SeqCst), 5);
    assert_eq!(backends[1].requests.load(Ordering::SeqCst), 5);
    assert_eq!(
        metric("orc_lb_fail_open_total{target_group=\"fail-open-tg\"}"),
        10
    );
    assert_eq!(
        metric("orc_lb_requests_total{target_group=\"fail-open-tg\"}"),
        10
    );
    assert_eq!(
        metric("orc_lb_responses_total{target_group=\"fail-open-tg\",class=\"2xx\"}"),
        10
    );
    assert_eq!(
        metric("orc_lb_healthy_targets{target_group=\"fail-open-tg\"}"),
        0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_target_gets_no_new_request_while_its_request_in_flight_completes() {
    let release = Arc::new(tokio::sync::Notify::new());
    let released = release.clone();
    let slow = backend_with(Arc::new(move |_| {
        let released = released.clone();
        Box::pin(async move {
            released.notified().await;
            Response::new(text("slow"))
        })
    }))
    .await;
    let fast = named("fast").await;
    let (proxy, port) =
        serve_group(options(), "drain", &[(slow.address, TargetState::Healthy)]).await;
    let in_flight = tokio::spawn(fetch(port, "/"));
    until("the request to reach the slow target", || {
        slow.requests.load(Ordering::SeqCst) == 1
    })
    .await;
    let draining = table(
        port,
        ListenerProtocol::Http,
        group(
            "drain",
            &[
                (slow.address, TargetState::Draining),
                (fast.address, TargetState::Healthy),
            ],
        ),
    );
    assert!(proxy.apply(draining).await.is_empty());
    for _ in 0..10 {
        assert_eq!(fetch(port, "/").await.unwrap().1, "fast");
    }
    assert_eq!(slow.requests.load(Ordering::SeqCst), 1);
    release.notify_one();
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        (StatusCode::OK, "slow".to_string())
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_too_slow_to_answer_gets_504() {
    let never = backend_with(Arc::new(|_| {
        Box::pin(async {
            std::future::pending::<()>().await;
            unreachable!()
        })
    }))
    .await;
    let (proxy, port) = serve_group(
        ProxyOptions {
            request_timeout: Duration::from_millis(300),
            ..options()
        },
        "sleepy",
        &[(never.address, TargetState::Healthy)],
    )
    .await;
    let (status, body) = fetch(port, "/").await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("target group sleepy"), "{body}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_changing_under_a_request_loop_fail_no_request() {
    let backends = [
        named("web-1").await,
        named("web-2").await,
        named("web-3").await,
    ];
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let make = move |port: u16, round: usize| {
        // Each round drops one target, drains another, and moves the rule.
        let targets: Vec<(SocketAddr, TargetState)> = (0..3)
            .filter(|i| *i != round % 3)
            .map(|i| {
                let state = if i == (round + 1) % 3 && round.is_multiple_of(2) {
                    TargetState::Draining
                } else {
                    TargetState::Healthy
                };
                (addresses[i], state)
            })
            .collect();
        let mut routes = table(
            port,
            ListenerProtocol::Http,
            group(&format!("live-{}", round % 2), &targets),
        );
        routes.listeners[0].rules[0].path_patterns = if round % 4 == 3 {
            vec!["/*".into()]
        } else {
            vec![]
        };
        routes
    };
    let (proxy, port) = start(options(), |port| make(port, 0)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let stop = stop.clone();
        clients.spawn(async move {
            let (mut sent, mut failed) = (0usize, 0usize);
            let mut sender = connect(port).await;
            while !stop.load(Ordering::SeqCst) {
                sent += 1;
                match send(&mut sender, get("/")).await {
                    Ok((StatusCode::OK, body)) if body.starts_with("web-") => {}
                    other => {
                        failed += 1;
                        eprintln!("failed: {other:?}");
                        sender = connect(port).await;
                    }
                }
            }
            (sent, failed)
        });
    }
    for round in 1..=60 {
        assert!(proxy.apply(make(port, round)).await.is_empty());
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (mut sent, mut failed) = (0, 0);
    while let Some(counts) = clients.join_next().await {
        let (s, f) = counts.unwrap();
        sent += s;
        failed += f;
    }
    assert!(sent >= 60, "only {sent} requests were sent");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_round_robins_connections() {
    let backends = [
        named("web-1").await,
        named("web-2").await,
        named("web-3").await,
    ];
    let dead = {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap()
    };
    let mut targets: Vec<_> = backends
        .iter()
        .map(|b| (b.address, TargetState::Healthy))
        .collect();
    targets.insert(1, (dead, TargetState::Healthy));
    let (proxy, port) = start(options(), |port| {
        table(port, ListenerProtocol::Tcp, group("tcp", &targets))
    })
    .await;
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..12 {
        // Each connection carries two requests to the same target.
        let mut sender = connect(port).await;
        let (_, first) = send(&mut sender, get("/")).await.unwrap();
        let (_, second) = send(&mut sender, get("/")).await.unwrap();
        assert_eq!(first, second);
        *seen.entry(first).or_default() += 1;
    }
    // The dead target's turns went to the next one.
    assert_eq!(
        seen,
        BTreeMap::from([
            ("web-1".to_string(), 3),
            ("web-2".to_string(), 6),
            ("web-3".to_string(), 3)
        ])
    );
    proxy.shutdown().await;
}

/// A raw keep-alive target answering by path, with framings a hyper
/// backend would not choose: chunked with a trailer, HEAD, 204, an echo of
/// a request body, and an HTTP/1.0 body that ends when the target closes.
async fn framing_target() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read.extend_from_slice(&buffer[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&read[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while read.len() < end + 4 + length {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let body = read[end + 4..end + 4 + length].to_vec();
                    read.drain(..end + 4 + length);
                    let answer: Vec<u8> = if head.starts_with("get /chunked") {
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec()
                    } else if head.starts_with("head ") {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec()
                    } else if head.starts_with("get /none") {
                        b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
                    } else if head.starts_with("post /echo") {
                        let mut answer =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        answer.extend_from_slice(&body);
                        answer
                    } else {
                        let _ = stream
                            .write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil the target closes")
                            .await;
                        return;
                    };
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_passes_through_whole_and_the_client_connection_lives_on() {
    let (target, task) = framing_target().await;
    let (proxy, port) = serve_group(options(), "framing", &[(target, TargetState::Healthy)]).await;
    let mut client = raw(port).await;
    let ends_with = |tail: &'static [u8]| move |read: &[u8]| read.ends_with(tail);
    // Twice over: the second round reuses the pooled target connection.
    for _ in 0..2 {
        client
            .write_all(b"GET /chunked HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let answer = read_raw(&mut client, ends_with(b"X-Trailer: t\r\n\r\n")).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.ends_with("\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
            "{answer}"
        );
        client
            .write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let answer = read_raw(&mut client, ends_with(b"\r\n\r\n")).await;
        assert_eq!(
            String::from_utf8_lossy(&answer),
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
        );
        client
            .write_all(b"GET /none HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let answer = read_raw(&mut client, ends_with(b"\r\n\r\n")).await;
        assert_eq!(
            String::from_utf8_lossy(&answer),
            "HTTP/1.1 204 No Content\r\n\r\n"
        );
        client
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello there")
            .await
            .unwrap();
        let answer = read_raw(&mut client, ends_with(b"hello there")).await;
        assert!(
            String::from_utf8_lossy(&answer)
                .starts_with("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // A body that ends with the target's connection ends the client's too,
    // which is told so.
    client
        .write_all(b"GET /eof HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_raw(&mut client, |_| false).await;
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the target closes"
    );
    proxy.shutdown().await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_one_that_needs_hyper_gets_the_bytes_read() {
    let web = named("web-1").await;
    let (proxy, port) = serve_group(
        options(),
        "pipelined",
        &[(web.address, TargetState::Healthy)],
    )
    .await;
    let mut client = raw(port).await;
    // Two plain requests, then an HTTP/1.0 one (hyper's), in one write.
    client
        .write_all(
            b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\nGET /c HTTP/1.0\r\nHost: t\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_raw(&mut client, |_| false).await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.matches("web-1").count(), 3, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert!(answer.contains("HTTP/1.0 200 OK"), "{answer}");
    assert_eq!(web.requests.load(Ordering::SeqCst), 3);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_connection_closed_unanswered_resends_an_idempotent_request_only() {
    // Answers the first request on each connection, keeps it open, and
    // closes it unanswered when the second comes: the proxy finds out only
    // after sending.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let target = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let head = |read: &[u8]| read.windows(4).any(|w| w == b"\r\n\r\n");
                read_raw(&mut stream, head).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                read_raw(&mut stream, head).await;
            });
        }
    });
    let (proxy, port) = serve_group(options(), "stale", &[(target, TargetState::Healthy)]).await;
    let mut client = connect(port).await;
    assert_eq!(
        send(&mut client, get("/")).await.unwrap(),
        (StatusCode::OK, "ok".to_string())
    );
    // The pooled connection takes the GET and closes: sent again on a new one.
    assert_eq!(
        send(&mut client, get("/")).await.unwrap(),
        (StatusCode::OK, "ok".to_string())
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A POST is not sent twice: the client gets a 502.
    let post = Request::post("/")
        .header("host", "web.test")
        .body(text("once"))
        .unwrap();
    let (status, body) = send(&mut client, post).await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("target group stale"), "{body}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    proxy.shutdown().await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_closes_its_idle_client_connections_at_once() {
    let web = named("web-1").await;
    let (proxy, port) =
        serve_group(options(), "gone", &[(web.address, TargetState::Healthy)]).await;
    // A keep-alive client, served and now idle (the idle time-out is 10 s,
    // longer than the read below may wait).
    let mut idle = raw(port).await;
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(answered(&read_raw(&mut idle, answered).await));
    let started = std::time::Instant::now();
    assert!(proxy.apply(RouteTable::default()).await.is_empty());
    assert!(
        read_raw(&mut idle, |_| false).await.is_empty(),
        "the idle client got bytes instead of a close"
    );
    assert!(
        started.elapsed() < options().idle_timeout,
        "closed by the idle time-out, not by the listener's removal"
    );
    assert!(std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_idle_timeout_and_frees_its_target() {
    // A target streaming a body far bigger than the socket buffers, until
    // its connection is closed under it.
    let cut = Arc::new(AtomicUsize::new(0));
    let seen = cut.clone();
    let (target, task) = raw_target(move |mut stream| {
        let cut = seen.clone();
        async move {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
                .await;
            let chunk = vec![b'x'; 64 * 1024];
            while stream.write_all(&chunk).await.is_ok() {}
            cut.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    let (proxy, port) = serve_group(
        ProxyOptions {
            idle_timeout: Duration::from_millis(500),
            ..options()
        },
        "reader",
        &[(target, TargetState::Healthy)],
    )
    .await;
    // Asks for the body and never reads it.
    let mut client = raw(port).await;
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Once the buffers are full nothing moves; after the idle time-out the
    // proxy drops both connections, and the target's write fails.
    until("the target connection to be closed by the proxy", || {
        cut.load(Ordering::SeqCst) == 1
    })
    .await;
    proxy.shutdown().await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_answers_keep_a_pipelined_connection_in_step() {
    let (proxy, port) = serve_group(options(), "empty", &[]).await;
    let mut client = raw(port).await;
    // A HEAD answered by the proxy itself has no body, so the GET's answer
    // is read as the GET's.
    client
        .write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_raw(&mut client, |read| {
        read.ends_with(b"(none registered, or all draining)\n")
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    let heads: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(heads.len(), 2, "{answer}");
    assert!(
        heads[0].starts_with("503") && heads[0].ends_with("\r\n\r\n"),
        "{answer}"
    );
    assert!(heads[1].contains("target group empty"), "{answer}");
    // Two Host headers: which would the target believe? A 400, and the
    // connection closes.
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: public\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    let answer = read_raw(&mut client, |_| false).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(answer.ends_with("more than one Host header\n"), "{answer}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_keeps_coming_slowly_is_not_idle_but_a_head_that_does_is() {
    let (target, task) = framing_target().await;
    let (proxy, port) = serve_group(
        ProxyOptions {
            idle_timeout: Duration::from_millis(500),
            ..options()
        },
        "upload",
        &[(target, TargetState::Healthy)],
    )
    .await;
    // Ten bytes of body, one every 100 ms: a second in all, two idle
    // time-outs, but never 500 ms without a byte.
    let mut client = raw(port).await;
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    for byte in b"0123456789" {
        // Pacing is what is under test here, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(&[*byte]).await.unwrap();
    }
    let answer = read_raw(&mut client, |read| read.ends_with(b"0123456789")).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    // A head sent as slowly is cut off after the idle time-out, unanswered.
    let mut slow = raw(port).await;
    let mut cut = false;
    for byte in b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
    }
    let answer = read_raw(&mut slow, |_| false).await;
    assert!(
        cut || answer.is_empty(),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    proxy.shutdown().await;
    task.abort();
}
