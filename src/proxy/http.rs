//! One HTTP listener: its accept loop, and one request's way through it
//! when hyper serves it (see `h1` for the plain path most requests take).
//! The rule is chosen by host and path, the target by round-robin; the
//! request goes out over a pooled HTTP/1.1 connection with hop-by-hop
//! headers dropped and X-Forwarded-* added. Upgrade requests (WebSocket)
//! get a connection of their own and become a byte tunnel after a 101.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::body::ProxyBody;
use super::h1;
use super::idle::Activity;
use super::pool::SendFailure;
use super::{rules, Group, Inner, Target};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// What a connection's requests share: the proxy, the listener port and
/// the client. Each request clones this per-connection `Arc` (not the
/// proxy's, whose count every connection on every worker would share).
struct Client {
    inner: Arc<Inner>,
    port: u16,
    /// The client's address as an X-Forwarded-For entry.
    address: HeaderValue,
}

/// Accepts connections until `stop` says so; each connection then finishes
/// the requests in flight and closes.
pub(super) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    port: u16,
    stop: watch::Receiver<bool>,
) {
    super::accept_until_stopped(listener, port, stop, |stream, peer, stop| {
        let _ = stream.set_nodelay(true);
        let client = Arc::new(Client {
            inner: inner.clone(),
            port,
            address: HeaderValue::try_from(peer.ip().to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
        });
        let (inner, stop) = (inner.clone(), stop.clone());
        if !inner.workers.any() {
            tokio::spawn(connection(inner, stream, peer, client, stop));
            return;
        }
        // A worker thread takes the connection: its socket moves to that
        // thread's event loop.
        match stream.into_std() {
            Ok(stream) => inner.clone().workers.spawn(async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => connection(inner, stream, peer, client, stop).await,
                    Err(error) => {
                        tracing::debug!(port, %peer, %error, "load balancer worker cannot take a connection")
                    }
                }
            }),
            Err(error) => {
                tracing::debug!(port, %peer, %error, "load balancer cannot hand a connection over")
            }
        }
    })
    .await;
}

/// One client connection until it closes: its requests, its idle time-out,
/// and a graceful close when the listener stops.
async fn connection(
    inner: Arc<Inner>,
    stream: TcpStream,
    peer: SocketAddr,
    client: Arc<Client>,
    mut stop: watch::Receiver<bool>,
) {
    let port = client.port;
    // Ordinary requests take the plain path; hyper serves the connection
    // from the first request that needs it on.
    let (stream, read) =
        match h1::serve(&inner, port, client.address.as_bytes(), stream, &mut stop).await {
            h1::Ended::Closed => return,
            h1::Ended::Handoff(stream, read) => (stream, read),
        };
    let activity = Activity::new();
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |request| {
        let client = client.clone();
        let in_flight = service_activity.start();
        async move {
            let response = handle(&client.inner, &client, request).await;
            Ok::<_, Infallible>(response.map(|body| body.in_flight(in_flight)))
        }
    });
    let connection = inner
        .http
        .serve_connection_with_upgrades(TokioIo::new(h1::Rewind::new(stream, read)), service);
    tokio::pin!(connection);
    let mut swapped = inner.swapped.subscribe();
    let mut timeout = inner.idle_timeout(port);
    let idle = tokio::time::sleep(timeout);
    tokio::pin!(idle);
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = stop.changed() => {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            () = idle.as_mut() => {
                match activity.deadline(timeout, tokio::time::Instant::now()) {
                    Some(deadline) => idle.as_mut().reset(deadline),
                    None => {
                        // Nothing is in flight, so nothing is cut short:
                        // the socket closes (a graceful shutdown would wait
                        // for a first request's unfinished head forever).
                        tracing::debug!(port, %peer, ?timeout, "closing an idle load balancer client connection");
                        break Ok(());
                    }
                }
            }
            Ok(()) = swapped.changed() => {
                // The load balancer's idle time-out may have changed.
                timeout = inner.idle_timeout(port);
                let now = tokio::time::Instant::now();
                idle.as_mut().reset(activity.deadline(timeout, now).unwrap_or(now));
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(port, %peer, %error, "load balancer client connection ended");
    }
}

/// A short plain-text answer of the proxy's own.
fn plain(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The host a request names (Host header, or the authority of an h2 or
/// absolute-form request), without its port.
fn request_host(request: &Request<Incoming>) -> &str {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    rules::host_without_port(host)
}

/// Whether the request asks to switch protocols on this connection (a
/// WebSocket, say). `h2c` is not passed on: the proxy speaks HTTP/1.1 to
/// targets and answers such a request in HTTP/1.1, which the client allows.
fn wants_upgrade(headers: &HeaderMap) -> bool {
    let Some(upgrade) = headers.get(header::UPGRADE) else {
        return false;
    };
    if upgrade.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return false;
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The headers no proxy passes on (RFC 9110 7.6.1), besides those the
/// Connection header names and Transfer-Encoding (which the plain path
/// keeps, since it passes the body's framing through).
pub(super) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
];

/// Drops the hop-by-hop headers (those the Connection header names too).
fn drop_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        headers.remove(header::CONNECTION);
        for name in named {
            headers.remove(name);
        }
    }
    // Transfer-Encoding too: hyper frames the body again on each side.
    for name in HOP_BY_HOP.iter().chain(&["transfer-encoding"]) {
        headers.remove(*name);
    }
}

/// Rewrites a client's request for a target: HTTP/1.1 in origin form,
/// hop-by-hop headers dropped (Upgrade kept for an upgrade), X-Forwarded-*
/// set.
fn prepare(
    request: &mut Request<Incoming>,
    client: &Client,
    port_header: &HeaderValue,
    upgrade: bool,
) {
    let upgrade_value = if upgrade {
        request.headers().get(header::UPGRADE).cloned()
    } else {
        None
    };
    if request.uri().scheme().is_some() || request.uri().authority().is_some() {
        if !request.headers().contains_key(header::HOST) {
            if let Some(authority) = request.uri().authority() {
                if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                    request.headers_mut().insert(header::HOST, host);
                }
            }
        }
        let origin = request
            .uri()
            .path_and_query()
            .map(|pq| Uri::from(pq.clone()))
            .unwrap_or_else(|| Uri::from_static("/"));
        *request.uri_mut() = origin;
    }
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    drop_hop_by_hop(headers);
    if let Some(upgrade_value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade_value);
    }
    let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
        Some(previous) => {
            let mut joined = Vec::with_capacity(previous.len() + 2 + client.address.len());
            joined.extend_from_slice(previous.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client.address.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.address.clone())
        }
        None => client.address.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    headers.insert(X_FORWARDED_PORT.clone(), port_header.clone());
}

/// Where a request goes: the listener on its port and the target group
/// of the first rule that matches its host and path, or the proxy's own
/// answer (no listener, no rule, no group, no routable target). Counts the
/// request in the group's metrics, and the answer when the group has no
/// target.
pub(super) enum Route<'s> {
    Forward(&'s super::Listener, &'s Group),
    Answer(StatusCode, bytes::Bytes),
}

/// Picks the route for a request to `port` naming `host` and `path`.
pub(super) fn route<'s>(
    snapshot: &'s super::Snapshot,
    port: u16,
    host: &str,
    path: &str,
    started: Instant,
) -> Route<'s> {
    let Some(listener) = snapshot.listeners.get(&port) else {
        return Route::Answer(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("503 Service Unavailable: port {port} has no listener now\n").into(),
        );
    };
    let Some(rule) = listener
        .rules
        .iter()
        .find(|rule| rules::rule_matches(&rule.hosts, &rule.paths, host, path))
    else {
        return Route::Answer(
            StatusCode::NOT_FOUND,
            format!(
                "404 Not Found: no rule of listener {} matches this host and path\n",
                listener.arn
            )
            .into(),
        );
    };
    let Some(group) = &rule.group else {
        return Route::Answer(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "503 Service Unavailable: target group {} is not in the route table\n",
                rule.target_group_arn
            )
            .into(),
        );
    };
    group.series.record_request();
    if group.routable.targets.is_empty() {
        group.series.record_response(503, started.elapsed());
        return Route::Answer(StatusCode::SERVICE_UNAVAILABLE, group.no_target.clone());
    }
    if group.routable.fail_open {
        group.series.record_fail_open();
    }
    Route::Forward(listener, group)
}

/// One request, start to response head.
async fn handle(
    inner: &Inner,
    client: &Client,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let snapshot = inner.snapshot();
    let host = request_host(&request);
    let path = request.uri().path();
    let (listener, group) = match route(&snapshot, client.port, host, path, started) {
        Route::Forward(listener, group) => (listener, group),
        Route::Answer(status, body) => return plain(status, body),
    };
    let count = group.routable.targets.len();
    let counter = group.counter.fetch_add(1, Relaxed);
    let upgrade = wants_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    prepare(&mut request, client, &listener.port_header, upgrade);

    let deadline = tokio::time::Instant::from_std(started + inner.options.request_timeout);
    let mut last_error = String::new();
    let mut request = Some(request);
    for index in rules::attempt_order(count, counter) {
        let target = &group.targets[group.routable.targets[index]];
        let Some(outgoing) = request.take() else {
            break;
        };
        target.series.record_request();
        let sent = if upgrade {
            tokio::time::timeout_at(deadline, target.pool.send_upgrade(outgoing))
                .await
                .map(|result| result.map(|response| (response, None)))
        } else {
            tokio::time::timeout_at(deadline, target.pool.send(outgoing))
                .await
                .map(|result| result.map(|(response, sender)| (response, Some(sender))))
        };
        match sent {
            Ok(Ok((response, sender))) => {
                return respond(group, target, started, response, sender, client_upgrade);
            }
            Ok(Err(SendFailure::NotSent(back, error))) => {
                tracing::warn!(port = client.port, target_group = %group.name, target = %target.address, %error, "target refused the connection; trying the next target");
                target.series.record_response(502, started.elapsed());
                last_error = error;
                request = Some(*back);
            }
            Ok(Err(SendFailure::Failed(error))) => {
                tracing::warn!(port = client.port, target_group = %group.name, target = %target.address, %error, "target failed mid-request");
                target.series.record_response(502, started.elapsed());
                return failed(
                    group,
                    started,
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "502 Bad Gateway: target {} of target group {} failed: {error}\n",
                        target.address, group.name
                    ),
                );
            }
            Err(_) => {
                tracing::warn!(port = client.port, target_group = %group.name, target = %target.address, "target timed out");
                target.series.record_response(504, started.elapsed());
                return failed(
                    group,
                    started,
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "504 Gateway Timeout: target {} of target group {} did not answer within {:?}\n",
                        target.address, group.name, inner.options.request_timeout
                    ),
                );
            }
        }
    }
    failed(
        group,
        started,
        StatusCode::BAD_GATEWAY,
        format!(
            "502 Bad Gateway: no target of target group {} accepted a connection ({last_error})\n",
            group.name
        ),
    )
}

fn failed(
    group: &Group,
    started: Instant,
    status: StatusCode,
    body: String,
) -> Response<ProxyBody> {
    group
        .series
        .record_response(status.as_u16(), started.elapsed());
    plain(status, body)
}

/// The target's response head, on its way to the client.
fn respond(
    group: &Group,
    target: &Target,
    started: Instant,
    mut response: Response<Incoming>,
    sender: Option<hyper::client::conn::http1::SendRequest<Incoming>>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let status = response.status();
    let elapsed = started.elapsed();
    target.series.record_response(status.as_u16(), elapsed);
    group.series.record_response(status.as_u16(), elapsed);
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let target_upgrade = hyper::upgrade::on(&mut response);
            let (target_address, group_name) = (target.address, group.name.clone());
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, target_upgrade) {
                    Ok((client, target)) => {
                        let mut client = TokioIo::new(client);
                        let mut target = TokioIo::new(target);
                        if let Err(error) =
                            tokio::io::copy_bidirectional(&mut client, &mut target).await
                        {
                            tracing::debug!(target_group = %group_name, target = %target_address, %error, "upgraded connection ended");
                        }
                    }
                    Err(error) => {
                        tracing::debug!(target_group = %group_name, target = %target_address, %error, "upgrade failed");
                    }
                }
            });
            return response.map(|_| ProxyBody::empty());
        }
    }
    drop_hop_by_hop(response.headers_mut());
    let pool = target.pool.clone();
    response.map(|body| ProxyBody::target(body, sender.map(|sender| (sender, pool))))
}
