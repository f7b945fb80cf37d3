//! The plain HTTP/1.1 path: a client connection's ordinary requests
//! forwarded by one task, without hyper. The request head is parsed in
//! place (httparse), rewritten for the target (hop-by-hop headers dropped,
//! X-Forwarded-* set) and sent with its body in one write on a pooled
//! socket; the response head is parsed, cleaned of hop-by-hop headers and
//! sent on with the body bytes that came with it, then the rest of the body
//! is copied by its framing (Content-Length, chunked, or until the target
//! closes). One task and one timer per client connection, no request or
//! header objects, no channel between a client task and a target task:
//! this is the proxy's throughput path.
//!
//! Anything else is handed to hyper (`http::connection`) together with the
//! bytes already read, and the connection stays there: HTTP/1.0, Upgrade
//! (WebSocket, h2c), HTTP/2's preface, `Expect`, a chunked or large request
//! body, absolute-form targets, heads over the cap (431) and heads hyper
//! must refuse (400). The decisions (`classify_request`,
//! `response_framing`, `Chunked`) are pure and unit-tested.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant as Deadline, Sleep};

use super::http::{route, Route, HOP_BY_HOP};
use super::{rules, Group, Inner, Target};

/// The most headers a request or response head may have here (hyper's
/// limit too); more is hyper's to answer.
const MAX_HEADERS: usize = 100;
/// The largest request body read whole before it is sent on; a bigger one
/// is streamed by hyper.
const MAX_BODY: usize = 64 * 1024;
/// The largest response head a target may send.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// How much of a response body is read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// How a client connection left the plain path.
pub(super) enum Ended {
    /// It is closed (or to be closed): nothing more to do.
    Closed,
    /// It needs hyper from here on, which gets the bytes read so far.
    Handoff(TcpStream, BytesMut),
}

/// What a request head asks of the plain path.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request {
    /// Not all of the head is here yet.
    Partial,
    /// The head is, not all of the body yet.
    PartialBody,
    /// Hyper's to serve, from this request on.
    Handoff,
    /// A request the plain path forwards.
    Plain(Plain),
    /// A request to refuse with a 400 (and close): what is wrong with it.
    Invalid(&'static str),
}

/// A plain request's shape.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plain {
    /// Bytes of the head.
    pub head_len: usize,
    /// Bytes of the body, after the head.
    pub body_len: usize,
    /// The client asked to close after the response.
    pub close: bool,
    /// HEAD: the response has no body whatever its headers say.
    pub head_method: bool,
    /// May be sent again when a reused target connection fails before
    /// answering (RFC 9110's idempotent methods).
    pub idempotent: bool,
}

/// Whether `name` is a header no proxy passes on (`http::HOP_BY_HOP`).
fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|token| token.trim_ascii())
}

/// A Content-Length value: digits only (no sign, no spaces, no list).
fn content_length(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
}

/// Reads a request head at the front of `input` (`max_head` bytes at
/// most) and says what to do with it.
pub(super) fn classify_request(input: &[u8], max_head: usize) -> Request {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(input, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() <= max_head => return Request::Partial,
        _ => return Request::Handoff,
    };
    if head_len > max_head || request.version != Some(1) {
        return Request::Handoff;
    }
    let (Some(method), Some(path)) = (request.method, request.path) else {
        return Request::Handoff;
    };
    if method == "CONNECT" || !path.starts_with('/') {
        return Request::Handoff;
    }
    let mut body_len = None;
    let mut close = false;
    let mut host = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            if host {
                // Which one would the target believe? (RFC 9112 3.2)
                return Request::Invalid("more than one Host header");
            }
            host = true;
        }
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = content_length(header.value).and_then(|v| usize::try_from(v).ok());
            match (parsed, body_len) {
                (Some(len), None) => body_len = Some(len),
                _ => return Request::Handoff,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(header.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    // Upgrade, or headers named hop-by-hop: hyper's.
                    return Request::Handoff;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("http2-settings")
        {
            return Request::Handoff;
        }
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > MAX_BODY {
        return Request::Handoff;
    }
    if input.len() < head_len + body_len {
        return Request::PartialBody;
    }
    Request::Plain(Plain {
        head_len,
        body_len,
        close,
        head_method: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        ),
    })
}

/// Parses a request head that `classify_request` found plain.
fn parse_request<'h, 'b>(
    input: &'b [u8],
    headers: &'h mut [std::mem::MaybeUninit<httparse::Header<'b>>],
) -> httparse::Request<'h, 'b> {
    let mut request = httparse::Request::new(&mut []);
    let _ = request.parse_with_uninit_headers(input, headers);
    request
}

/// The host a request names (its Host header without the port) and its
/// path without the query.
fn host_and_path<'b>(request: &httparse::Request<'_, 'b>) -> (&'b str, &'b str) {
    let host = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .unwrap_or("");
    let path = request.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    (rules::host_without_port(host), path)
}

/// Writes a request head for a target into `out`: the request line in
/// HTTP/1.1, the client's headers but the hop-by-hop ones and
/// X-Forwarded-*, then X-Forwarded-For (the client's value with `client`
/// appended), -Proto and -Port.
fn write_request_head(
    request: &httparse::Request<'_, '_>,
    client: &[u8],
    port: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(request.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for: Option<&[u8]> = None;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(header.value);
            continue;
        }
        if hop_by_hop(name)
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-port")
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(previous) = forwarded_for {
        out.extend_from_slice(previous);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client);
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\nx-forwarded-port: ");
    out.extend_from_slice(port);
    out.extend_from_slice(b"\r\n\r\n");
}

/// How a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// When the target closes the connection.
    UntilClose,
}

/// A response head from a target.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The target keeps the connection open after this response.
    pub reusable: bool,
}

/// Why a target's response cannot be passed on.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BadResponse {
    Partial,
    Invalid(String),
}

/// Parses the response head at the front of `input` and says how its body
/// ends, for a request that was (or was not) HEAD. Writes the head for the
/// client into `out`: HTTP/1.1, hop-by-hop headers dropped, and
/// `connection: close` when `close` (or the body ends with the target's
/// connection).
pub(super) fn response_framing(
    input: &[u8],
    head_method: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<ResponseHead, BadResponse> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        input,
        &mut headers,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() <= MAX_RESPONSE_HEAD => {
            return Err(BadResponse::Partial)
        }
        Ok(httparse::Status::Partial) => {
            return Err(BadResponse::Invalid(format!(
                "its response head is over {MAX_RESPONSE_HEAD} bytes"
            )))
        }
        Err(error) => {
            return Err(BadResponse::Invalid(format!(
                "its response head is not HTTP/1.1: {error}"
            )))
        }
    };
    let status = response.code.unwrap_or(0);
    let mut reusable = response.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    // Headers the Connection header names are hop-by-hop too (RFC 9110
    // 7.6.1); none but keep-alive and close, as a rule, so no allocation.
    let mut named: Vec<&[u8]> = Vec::new();
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("connection") {
            for token in tokens(header.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    reusable = false;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                    named.push(token);
                }
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked only when it is the last coding (RFC 9112 6.3).
            let last = tokens(header.value).filter(|t| !t.is_empty()).last();
            chunked = Some(last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            match (content_length(header.value), length) {
                (Some(len), None) => length = Some(len),
                (Some(len), Some(previous)) if len == previous => {}
                _ => {
                    return Err(BadResponse::Invalid(
                        "its Content-Length is not one number".into(),
                    ))
                }
            }
        }
    }
    let framing = if head_method || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(len)) => Framing::Length(len),
            (None, None) => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        reusable = false;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse reads exactly three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for header in response.headers.iter() {
        // With a Transfer-Encoding, a Content-Length is wrong and must
        // not go on (RFC 9112 6.3): a client could frame by it.
        if hop_by_hop(header.name)
            || (chunked.is_some() && header.name.eq_ignore_ascii_case("content-length"))
            || named
                .iter()
                .any(|name| name.eq_ignore_ascii_case(header.name.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    if (close || framing == Framing::UntilClose) && !(100..200).contains(&status) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(ResponseHead {
        head_len,
        status,
        framing,
        reusable,
    })
}

/// Finds where a chunked body ends, fed its bytes as they come.
#[derive(Debug, Default)]
pub(super) struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// At a chunk's size line, before its first digit.
    #[default]
    Start,
    /// In the size's digits: the size so far.
    Size(u64),
    /// Whitespace after the size, before `;` or the line's end.
    SizeSpace(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    Trailer,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunked {
    /// Feeds the next bytes of the body: the length of the body's end
    /// within them once it is there, `None` while more is to come.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, String> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() {
            if let Data(left) = self.state {
                let take = (bytes.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 { DataCr } else { Data(left) };
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = match (self.state, b) {
                (Start, _) | (Size(_), _) if b.is_ascii_hexdigit() => {
                    let size = match self.state {
                        Size(size) => size,
                        _ => 0,
                    };
                    let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                    match size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                        Some(size) => Size(size),
                        None => return Err("a chunk size overflows".into()),
                    }
                }
                (Size(size) | SizeSpace(size), b' ' | b'\t') => SizeSpace(size),
                (Size(size) | SizeSpace(size), b';') => Extension(size),
                (Size(size) | SizeSpace(size) | Extension(size), b'\r') => SizeLf(size),
                // No control byte (a bare LF above all) in an extension or a
                // trailer: a client must find the same end as this parser.
                (Extension(size), _) if text_byte(b) => Extension(size),
                (SizeLf(0), b'\n') => Trailer,
                (SizeLf(size), b'\n') => Data(size),
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Start,
                (Trailer, b'\r') => EndLf,
                (Trailer, _) | (TrailerLine, _) if text_byte(b) => TrailerLine,
                (TrailerLine, b'\r') => TrailerLf,
                (TrailerLf, b'\n') => Trailer,
                (EndLf, b'\n') => {
                    self.state = Done;
                    return Ok(Some(i));
                }
                (state, b) => {
                    return Err(format!(
                        "its chunked body is malformed (byte {b:#04x} in {state:?})"
                    ))
                }
            };
        }
        Ok(None)
    }
}

/// A byte a header or chunk-extension text may hold: visible, space, tab
/// or obs-text, never a control byte.
fn text_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// A plain-text answer of the proxy's own; to a HEAD request without its
/// body (its length still said).
fn write_plain(out: &mut Vec<u8>, status: StatusCode, body: &[u8], close: bool, head: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head {
        out.extend_from_slice(body);
    }
}

/// How an exchange with a target went.
enum Exchange {
    /// The response went to the client whole; the client connection may
    /// take the next request unless `close`.
    Done { close: bool },
    /// The client connection cannot go on (the target or the client failed
    /// mid-response).
    Broken,
    /// No response came: the proxy answers (502, 504) itself.
    Failed(StatusCode, String),
    /// A new connection to the target was refused (nothing was sent): the
    /// next target may take the request.
    Refused(String),
    /// A reused connection was closed by the target before it answered:
    /// the request may go again on a new one.
    Stale(String),
}

/// One client connection on the plain path.
struct Connection<'a> {
    inner: &'a Inner,
    port: u16,
    /// The client's address, for X-Forwarded-For.
    client: &'a [u8],
    stream: TcpStream,
    /// Bytes from the client not yet forwarded.
    input: BytesMut,
    /// The request for the target, kept until it is answered (a retry
    /// sends it again).
    request: Vec<u8>,
    /// What goes out to the client next.
    out: Vec<u8>,
    /// Bytes from a target.
    reply: Vec<u8>,
    /// The load balancer's idle time-out, read again when the routes change.
    idle_timeout: std::time::Duration,
    /// When the request in flight began.
    started: Instant,
    /// The routes, taken again whenever `swapped` says they changed.
    routes: super::Routes,
    swapped: watch::Receiver<u64>,
    /// The connection's one timer: its idle time-out between requests, the
    /// request time-out while a target answers. Reset only when it fires
    /// early or a wait needs it sooner, never per request.
    timer: std::pin::Pin<Box<Sleep>>,
}

/// Serves a client connection's plain requests until it closes, or until a
/// request needs hyper (or `stop` says so between requests).
pub(super) async fn serve(
    inner: &Inner,
    port: u16,
    client: &[u8],
    stream: TcpStream,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let routes = inner.snapshot();
    let mut connection = Connection {
        inner,
        port,
        client,
        stream,
        input: BytesMut::with_capacity(4096),
        request: Vec::with_capacity(1024),
        out: Vec::with_capacity(1024),
        reply: Vec::new(),
        timer: Box::pin(tokio::time::sleep(inner.options.idle_timeout)),
        swapped: inner.swapped.subscribe(),
        idle_timeout: routes.idle_timeout(port, &inner.options),
        routes,
        started: Instant::now(),
    };
    let mut idle_since = Deadline::now();
    let max_head = inner.options.max_header_bytes.max(super::MIN_HEADER_BYTES);
    loop {
        // A whole request (head and body) in `input`.
        let plain = loop {
            let mut in_body = false;
            match classify_request(&connection.input, max_head) {
                Request::Plain(plain) => break plain,
                Request::Handoff => return Ended::Handoff(connection.stream, connection.input),
                Request::Invalid(why) => {
                    connection.out.clear();
                    let body = format!("400 Bad Request: {why}\n");
                    write_plain(
                        &mut connection.out,
                        StatusCode::BAD_REQUEST,
                        body.as_bytes(),
                        true,
                        false,
                    );
                    connection.send_out().await;
                    let _ = connection.stream.shutdown().await;
                    return Ended::Closed;
                }
                Request::Partial => {}
                Request::PartialBody => in_body = true,
            }
            let deadline = idle_since + connection.idle_timeout;
            fire_by(&mut connection.timer, deadline);
            if connection.input.capacity() - connection.input.len() < 1024 {
                connection.input.reserve(4096);
            }
            tokio::select! {
                biased;
                read = connection.stream.read_buf(&mut connection.input) => match read {
                    Ok(0) | Err(_) => return Ended::Closed,
                    // A body that keeps coming is not idle, however slowly
                    // (a head is: a slow head is how slowloris starts).
                    Ok(_) if in_body => idle_since = Deadline::now(),
                    Ok(_) => {}
                },
                () = connection.timer.as_mut() => {
                    if Deadline::now() >= deadline {
                        tracing::debug!(port, timeout = ?connection.idle_timeout, "closing an idle load balancer client connection");
                        return Ended::Closed;
                    }
                    connection.timer.as_mut().reset(deadline);
                }
                _ = stop.changed() => return Ended::Closed,
                Ok(()) = connection.swapped.changed() => connection.reload_routes(),
            }
        };
        let close = match connection.request(&plain).await {
            Some(close) => close || plain.close,
            None => return Ended::Closed,
        };
        connection.input.advance(plain.head_len + plain.body_len);
        if close {
            let _ = connection.stream.shutdown().await;
            return Ended::Closed;
        }
        idle_since = Deadline::now();
    }
}

impl Connection<'_> {
    /// Takes the routes now, and the listener's idle time-out from them.
    fn reload_routes(&mut self) {
        self.routes = self.inner.snapshot();
        self.idle_timeout = self.routes.idle_timeout(self.port, &self.inner.options);
    }

    /// Forwards the request at the front of `input` and its response.
    /// `Some(close)` when the response went out whole (`close`: the
    /// connection must close after it), `None` when the connection is
    /// broken.
    async fn request(&mut self, plain: &Plain) -> Option<bool> {
        let started = Instant::now();
        self.started = started;
        if self.swapped.has_changed().unwrap_or(false) {
            self.swapped.mark_unchanged();
            self.reload_routes();
        }
        let routes = self.routes.clone();
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let parsed = parse_request(&self.input[..plain.head_len], &mut headers);
        let (host, path) = host_and_path(&parsed);
        let (listener, group) = match route(&routes, self.port, host, path, started) {
            Route::Forward(listener, group) => (listener, group),
            Route::Answer(status, body) => {
                self.out.clear();
                write_plain(&mut self.out, status, &body, plain.close, plain.head_method);
                return self.send_out().await.then_some(false);
            }
        };
        self.request.clear();
        write_request_head(
            &parsed,
            self.client,
            listener.port_header.as_bytes(),
            &mut self.request,
        );
        self.request
            .extend_from_slice(&self.input[plain.head_len..plain.head_len + plain.body_len]);

        let count = group.routable.targets.len();
        let counter = group.counter.fetch_add(1, Relaxed);
        let deadline = Deadline::from_std(started + self.inner.options.request_timeout);
        let mut last_error = String::new();
        for index in rules::attempt_order(count, counter) {
            let target = &group.targets[group.routable.targets[index]];
            target.series.record_request();
            // A reused connection the target closed unanswered gets one
            // more go on a new one.
            let mut fresh_only = false;
            loop {
                match self
                    .exchange(group, target, plain, started, deadline, fresh_only)
                    .await
                {
                    Exchange::Done { close } => return Some(close),
                    Exchange::Broken => return None,
                    Exchange::Stale(error) => {
                        tracing::debug!(port = self.port, target_group = %group.name, target = %target.pool.address(), %error, "a reused target connection closed unanswered; sending on a new one");
                        fresh_only = true;
                    }
                    Exchange::Refused(error) => {
                        tracing::warn!(port = self.port, target_group = %group.name, target = %target.pool.address(), %error, "target refused the connection; trying the next target");
                        target.series.record_response(502, started.elapsed());
                        last_error = error;
                        break;
                    }
                    Exchange::Failed(status, body) => {
                        target
                            .series
                            .record_response(status.as_u16(), started.elapsed());
                        return self.failed(group, started, status, &body, plain).await;
                    }
                }
            }
        }
        let body = format!(
            "502 Bad Gateway: no target of target group {} accepted a connection ({last_error})\n",
            group.name
        );
        self.failed(group, started, StatusCode::BAD_GATEWAY, &body, plain)
            .await
    }

    /// The proxy's own answer when no target answered.
    async fn failed(
        &mut self,
        group: &Group,
        started: Instant,
        status: StatusCode,
        body: &str,
        plain: &Plain,
    ) -> Option<bool> {
        group
            .series
            .record_response(status.as_u16(), started.elapsed());
        self.out.clear();
        write_plain(
            &mut self.out,
            status,
            body.as_bytes(),
            plain.close,
            plain.head_method,
        );
        self.send_out().await.then_some(false)
    }

    /// Writes `out` to the client; false when the client is gone.
    async fn send_out(&mut self) -> bool {
        let write = self.stream.write_all(&self.out);
        matches!(
            unless_stalled(&mut self.timer, self.idle_timeout, write).await,
            Some(Ok(()))
        )
    }

    /// One try of the request (in `request`) on `target`.
    async fn exchange(
        &mut self,
        group: &Group,
        target: &Target,
        plain: &Plain,
        started: Instant,
        deadline: Deadline,
        fresh_only: bool,
    ) -> Exchange {
        let pooled = if fresh_only {
            None
        } else {
            target.pool.take_stream()
        };
        let reused = pooled.is_some();
        let mut upstream = match pooled {
            Some(stream) => stream,
            None => {
                let connect = super::pool::connect_tcp(target.pool.address());
                match by_deadline(&mut self.timer, || deadline, connect).await {
                    Some(Ok(stream)) => stream,
                    Some(Err(error)) => return Exchange::Refused(error.to_string()),
                    None => return self.timed_out(group, target),
                }
            }
        };
        let write = upstream.write_all(&self.request);
        let Some(written) = by_deadline(&mut self.timer, || deadline, write).await else {
            return self.timed_out(group, target);
        };
        if let Err(error) = written {
            // The target may have acted on what it read before failing: only
            // an idempotent request goes again.
            return if reused && plain.idempotent {
                Exchange::Stale(error.to_string())
            } else {
                Exchange::Failed(
                    StatusCode::BAD_GATEWAY,
                    self.target_failed(group, target, &error.to_string()),
                )
            };
        }

        // The response head (after any 1xx heads, passed on).
        self.reply.clear();
        self.out.clear();
        // A target that sent a 1xx has begun answering: never resent.
        let mut interim = false;
        let head = loop {
            match response_framing(&self.reply, plain.head_method, plain.close, &mut self.out) {
                Ok(head) if (100..200).contains(&head.status) && head.status != 101 => {
                    // 100 Continue, 103 Early Hints: on to the client, and
                    // the real head follows.
                    if !self.send_out().await {
                        return Exchange::Broken;
                    }
                    self.out.clear();
                    self.reply.drain(..head.head_len);
                    interim = true;
                    if Deadline::now() >= deadline {
                        return self.timed_out(group, target);
                    }
                    continue;
                }
                Ok(head) if head.status == 101 => {
                    return Exchange::Failed(
                        StatusCode::BAD_GATEWAY,
                        self.target_failed(group, target, "it switched protocols unasked"),
                    )
                }
                Ok(head) => break head,
                Err(BadResponse::Invalid(error)) => {
                    return Exchange::Failed(
                        StatusCode::BAD_GATEWAY,
                        self.target_failed(group, target, &error),
                    )
                }
                Err(BadResponse::Partial) => self.out.clear(),
            }
            if self.reply.capacity() - self.reply.len() < 4096 {
                self.reply.reserve(READ_CHUNK);
            }
            let read = upstream.read_buf(&mut self.reply);
            let Some(read) = by_deadline(&mut self.timer, || deadline, read).await else {
                return self.timed_out(group, target);
            };
            match read {
                Ok(0) if reused && !interim && self.reply.is_empty() && plain.idempotent => {
                    return Exchange::Stale("the target closed the connection".into())
                }
                Err(error) if reused && !interim && self.reply.is_empty() && plain.idempotent => {
                    return Exchange::Stale(error.to_string())
                }
                Ok(0) => {
                    return Exchange::Failed(
                        StatusCode::BAD_GATEWAY,
                        self.target_failed(
                            group,
                            target,
                            "it closed the connection before answering",
                        ),
                    )
                }
                Err(error) => {
                    return Exchange::Failed(
                        StatusCode::BAD_GATEWAY,
                        self.target_failed(group, target, &error.to_string()),
                    )
                }
                Ok(_) => {}
            }
        };
        let elapsed = started.elapsed();
        target.series.record_response(head.status, elapsed);
        group.series.record_response(head.status, elapsed);

        // The head and the body bytes that came with it, in one write.
        let body = &self.reply[head.head_len..];
        let (now, mut framing_left, done) = match head.framing {
            Framing::Empty => (0, Framing::Empty, true),
            Framing::Length(len) => {
                let now = body.len().min(usize::try_from(len).unwrap_or(usize::MAX));
                (now, Framing::Length(len - now as u64), now as u64 == len)
            }
            Framing::UntilClose => (body.len(), Framing::UntilClose, false),
            Framing::Chunked => {
                let mut chunked = Chunked::default();
                match chunked.feed(body) {
                    Ok(Some(end)) => (end, Framing::Chunked, true),
                    Ok(None) => {
                        self.out.extend_from_slice(body);
                        return self
                            .stream_chunked(upstream, target, head.reusable, chunked, group)
                            .await;
                    }
                    Err(error) => {
                        tracing::warn!(port = self.port, target_group = %group.name, target = %target.pool.address(), %error, "target failed mid-response");
                        let _ = self.send_out().await;
                        return Exchange::Broken;
                    }
                }
            }
        };
        let extra = body.len() > now;
        self.out.extend_from_slice(&body[..now]);
        if !self.send_out().await {
            return Exchange::Broken;
        }
        if done {
            self.check_in(upstream, target, head.reusable && !extra);
            return Exchange::Done { close: false };
        }
        // The rest of the body, as it comes.
        loop {
            let until_close = framing_left == Framing::UntilClose;
            let n = match self
                .body_piece(&mut upstream, group, target, until_close)
                .await
            {
                Some(0) => return Exchange::Done { close: true },
                Some(n) => n,
                None => return Exchange::Broken,
            };
            let (send, finished) = match framing_left {
                Framing::Length(left) => {
                    let send = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                    framing_left = Framing::Length(left - send as u64);
                    (send, left == send as u64)
                }
                _ => (n, false),
            };
            if !self.send_reply(send).await {
                return Exchange::Broken;
            }
            if finished {
                self.check_in(upstream, target, head.reusable && send == n);
                return Exchange::Done { close: false };
            }
        }
    }

    /// The rest of a chunked body (`out` holds the head and what came with
    /// it), copied as it comes until its end.
    async fn stream_chunked(
        &mut self,
        mut upstream: TcpStream,
        target: &Target,
        reusable: bool,
        mut chunked: Chunked,
        group: &Group,
    ) -> Exchange {
        if !self.send_out().await {
            return Exchange::Broken;
        }
        loop {
            let Some(n) = self.body_piece(&mut upstream, group, target, false).await else {
                return Exchange::Broken;
            };
            let end = match chunked.feed(&self.reply[..n]) {
                Ok(end) => end,
                Err(error) => {
                    tracing::warn!(port = self.port, target_group = %group.name, target = %target.pool.address(), %error, "target failed mid-response");
                    return Exchange::Broken;
                }
            };
            let send = end.unwrap_or(n);
            if !self.send_reply(send).await {
                return Exchange::Broken;
            }
            if end.is_some() {
                self.check_in(upstream, target, reusable && send == n);
                return Exchange::Done { close: false };
            }
        }
    }

    /// Reads the next piece of a response body into `reply`: its length,
    /// 0 when the target closed a body that ends so (`until_close`), `None`
    /// (logged) when the body cannot go on: the target failed, closed too
    /// early, or sent nothing for the idle time-out.
    async fn body_piece(
        &mut self,
        upstream: &mut TcpStream,
        group: &Group,
        target: &Target,
        until_close: bool,
    ) -> Option<usize> {
        self.reply.clear();
        self.reply.reserve(READ_CHUNK);
        let read = upstream.read_buf(&mut self.reply);
        let Some(read) = unless_stalled(&mut self.timer, self.idle_timeout, read).await else {
            tracing::warn!(port = self.port, target_group = %group.name, target = %target.pool.address(), timeout = ?self.idle_timeout, "target sent no byte of the response body for the idle time-out; closing the client connection");
            return None;
        };
        match read {
            Ok(0) if until_close => Some(0),
            Ok(n) if n > 0 => Some(n),
            _ => {
                tracing::warn!(port = self.port, target_group = %group.name, target = %target.pool.address(), "target failed mid-response");
                None
            }
        }
    }

    /// Writes the first `len` bytes of `reply` to the client; false when
    /// the client is gone or stopped reading.
    async fn send_reply(&mut self, len: usize) -> bool {
        let write = self.stream.write_all(&self.reply[..len]);
        matches!(
            unless_stalled(&mut self.timer, self.idle_timeout, write).await,
            Some(Ok(()))
        )
    }

    /// Returns a target connection to its pool when it can take another
    /// request.
    fn check_in(&self, upstream: TcpStream, target: &Target, reusable: bool) {
        if reusable {
            target.pool.check_in_stream(upstream, self.started);
        }
    }

    fn timed_out(&self, group: &Group, target: &Target) -> Exchange {
        tracing::warn!(port = self.port, target_group = %group.name, target = %target.pool.address(), "target timed out");
        Exchange::Failed(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "504 Gateway Timeout: target {} of target group {} did not answer within {:?}\n",
                target.pool.address(),
                group.name,
                self.inner.options.request_timeout
            ),
        )
    }

    fn target_failed(&self, group: &Group, target: &Target, error: &str) -> String {
        tracing::warn!(port = self.port, target_group = %group.name, target = %target.pool.address(), %error, "target failed mid-request");
        format!(
            "502 Bad Gateway: target {} of target group {} failed: {error}\n",
            target.pool.address(),
            group.name
        )
    }
}

/// Makes the connection's timer fire by `deadline` at the latest. It may
/// fire sooner (a deadline of an earlier wait): whoever waits checks the
/// time and sets it again.
fn fire_by(timer: &mut std::pin::Pin<Box<Sleep>>, deadline: Deadline) {
    if timer.deadline() > deadline || timer.is_elapsed() {
        timer.as_mut().reset(deadline);
    }
}

/// Runs `io` unless the deadline `deadline()` gives passes first (`None`
/// then), on the connection's one timer. An `io` ready at once (the common
/// case) touches neither the clock nor the timer.
async fn by_deadline<F: std::future::Future>(
    timer: &mut std::pin::Pin<Box<Sleep>>,
    deadline: impl FnOnce() -> Deadline,
    io: F,
) -> Option<F::Output> {
    tokio::pin!(io);
    if let std::task::Poll::Ready(out) = futures::poll!(io.as_mut()) {
        return Some(out);
    }
    let deadline = deadline();
    fire_by(timer, deadline);
    loop {
        tokio::select! {
            biased;
            out = io.as_mut() => return Some(out),
            () = timer.as_mut() => {
                if Deadline::now() >= deadline {
                    return None;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// Runs `io` (a write to the client, a read of a response body) unless it
/// makes no progress for `idle`, as ALB closes a connection on which no
/// byte moved for its idle time-out: a client that stops reading, or a
/// target that stops sending mid-body, does not hold the connection and its
/// target connection for ever. `None` when it stalled.
async fn unless_stalled<F: std::future::Future>(
    timer: &mut std::pin::Pin<Box<Sleep>>,
    idle: std::time::Duration,
    io: F,
) -> Option<F::Output> {
    by_deadline(timer, || Deadline::now() + idle, io).await
}

/// A client socket with bytes already read in front of it, for hyper to
/// serve from where the plain path stopped.
pub(super) struct Rewind {
    prefix: BytesMut,
    stream: TcpStream,
}

impl Rewind {
    pub(super) fn new(stream: TcpStream, prefix: BytesMut) -> Rewind {
        Rewind { prefix, stream }
    }
}

impl tokio::io::AsyncRead for Rewind {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Rewind {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(input: &str) -> Plain {
        match classify_request(input.as_bytes(), 16 * 1024) {
            Request::Plain(plain) => plain,
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    #[test]
    fn ordinary_requests_are_plain_and_the_rest_is_hyper_s() {
        let get = plain("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            get,
            Plain {
                head_len: 28,
                body_len: 0,
                close: false,
                head_method: false,
                idempotent: true
            }
        );
        let post =
            plain("POST / HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabcNEXT");
        assert_eq!(
            (post.body_len, post.close, post.idempotent),
            (3, true, false)
        );
        assert!(plain("HEAD / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").head_method);
        assert_eq!(
            classify_request(b"GET / HTTP/1.1\r\nHost: x\r\n", 16 * 1024),
            Request::Partial
        );
        assert_eq!(
            classify_request(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", 16 * 1024),
            Request::PartialBody
        );
        for handoff in [
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /chat HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                classify_request(handoff.as_bytes(), 16 * 1024),
                Request::Handoff,
                "{handoff:?}"
            );
        }
        // Over the cap, complete or not.
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(classify_request(big.as_bytes(), 8192), Request::Handoff);
        assert_eq!(
            classify_request(&big.as_bytes()[..8500], 8192),
            Request::Handoff
        );
    }

    #[test]
    fn the_request_for_the_target_drops_hop_by_hop_headers_and_sets_x_forwarded() {
        let input = "GET /p?q=1 HTTP/1.1\r\nHost: web\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n";
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let parsed = parse_request(input.as_bytes(), &mut headers);
        let mut out = Vec::new();
        write_request_head(&parsed, b"127.0.0.1", b"8080", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nHost: web\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-port: 8080\r\n\r\n"
        );
        assert_eq!(host_and_path(&parsed), ("web", "/p"));
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let frame = |input: &str, head: bool, close: bool| {
            let mut out = Vec::new();
            let parsed = response_framing(input.as_bytes(), head, close, &mut out);
            (parsed, String::from_utf8(out).unwrap())
        };
        let (head, out) = frame(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello",
            false,
            false,
        );
        assert_eq!(
            head,
            Ok(ResponseHead {
                head_len: 85,
                status: 200,
                framing: Framing::Length(5),
                reusable: true
            })
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        let (_, out) = frame(
            "HTTP/1.1 200 OK\r\nConnection: X-Internal, close\r\nX-Internal: 1\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n",
            false,
            false,
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n"
        );
        let (head, _) = frame("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, false);
        assert_eq!(head.unwrap().framing, Framing::Empty);
        for status in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let (head, _) = frame(&format!("HTTP/1.1 {status}\r\n\r\n"), false, false);
            assert_eq!(head.unwrap().framing, Framing::Empty, "{status}");
        }
        let (head, out) = frame(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            false,
            false,
        );
        assert_eq!(head.unwrap().framing, Framing::Chunked);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        );
        let (head, out) = frame("HTTP/1.0 200 OK\r\n\r\nbody", false, false);
        let head = head.unwrap();
        assert_eq!((head.framing, head.reusable), (Framing::UntilClose, false));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
        let (head, out) = frame(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
            true,
        );
        assert!(!head.unwrap().reusable);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            frame("HTTP/1.1 200 OK\r\nContent-Le", false, false).0,
            Err(BadResponse::Partial)
        );
        assert!(matches!(
            frame(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                false
            )
            .0,
            Err(BadResponse::Invalid(_))
        ));
        assert!(matches!(
            frame("SSH-2.0-OpenSSH\r\n\r\n", false, false).0,
            Err(BadResponse::Invalid(_))
        ));
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_end_fed_in_any_pieces() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut chunked = Chunked::default();
            let first = chunked.feed(&body[..split]).unwrap();
            let found = match first {
                Some(at) => at,
                None => split + chunked.feed(&body[split..]).unwrap().unwrap(),
            };
            assert_eq!(found, end, "split at {split}");
        }
        let mut chunked = Chunked::default();
        assert_eq!(chunked.feed(b"0\r\n\r\n").unwrap(), Some(5));
        let mut chunked = Chunked::default();
        assert_eq!(
            chunked.feed(b"5 \t;a=b\r\nhello\r\n0\r\n\r\n").unwrap(),
            Some(21)
        );
        for bad in [
            &b"5 6\r\n"[..],
            b"5;a\nb\r\n",
            b"0\r\nX: a\nb\r\n\r\n",
            b"x\r\n",
            b"5\r\nhelloXX",
            b"ffffffffffffffffff\r\n",
            b"\r\n",
        ] {
            assert!(Chunked::default().feed(bad).is_err(), "{bad:?}");
        }
    }

    /// Hostile bytes: valid heads and bodies mutated (bytes flipped,
    /// dropped, repeated, cut) and random bytes never panic the parsers,
    /// and what they report stays within the bytes given.
    #[test]
    fn mutated_and_random_bytes_never_panic_and_never_point_past_the_input() {
        let seeds: [&[u8]; 4] = [
            b"POST /a?b HTTP/1.1\r\nHost: x:80\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;e\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 204 No Content\r\nContent-Length: 7\r\n\r\n",
            b"a\r\n0123456789\r\nFFFF;x\r\n\r\n0\r\n\r\n",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % (input.len() + 1);
                match next() % 4 {
                    0 if at < input.len() => input[at] = next() as u8,
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    2 => input.insert(at, b"\r\n:; 0x"[(next() % 7) as usize]),
                    _ => input.truncate(at),
                }
            }
            if round % 10 == 0 {
                input = (0..next() % 64).map(|_| next() as u8).collect();
            }
            if let Request::Plain(plain) = classify_request(&input, 8192) {
                assert!(plain.head_len + plain.body_len <= input.len(), "{input:?}");
                let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
                let parsed = parse_request(&input[..plain.head_len], &mut headers);
                let mut out = Vec::new();
                write_request_head(&parsed, b"10.0.0.1", b"80", &mut out);
                assert!(out.ends_with(b"\r\n\r\n"));
            }
            let mut out = Vec::new();
            if let Ok(head) = response_framing(&input, round % 3 == 0, round % 2 == 0, &mut out) {
                assert!(head.head_len <= input.len(), "{input:?}");
                assert!(out.starts_with(b"HTTP/1.1 ") && out.ends_with(b"\r\n\r\n"));
            }
            let split = (next() as usize) % (input.len() + 1);
            let mut chunked = Chunked::default();
            match chunked.feed(&input[..split]) {
                Ok(Some(end)) => assert!(end <= split),
                Ok(None) => {
                    if let Ok(Some(end)) = chunked.feed(&input[split..]) {
                        assert!(end <= input.len() - split);
                    }
                }
                Err(_) => {}
            }
        }
    }
}
