//! Connections to one target: HTTP/1.1 keep-alive connections kept idle
//! between requests (last used first), new ones made when none is idle, and
//! the one-off connections an Upgrade request needs (never pooled).
//!
//! A connection goes back to the pool only once its response body has been
//! read to the end (see `body::ProxyBody`); one whose body was cut short is
//! dropped, which closes it.
//!
//! The plain HTTP/1.1 path (`h1`) keeps bare sockets instead of hyper
//! connections: `take_stream` and `check_in_stream`, one idle list per
//! worker as well.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept per target and worker, at most.
const MAX_IDLE: usize = 512;
/// Idle bare sockets, oldest first, each with when it was checked in.
type IdleStreams = VecDeque<(Instant, TcpStream)>;

/// A bare socket idle longer than this is closed at the next check-in.
const MAX_IDLE_TIME: Duration = Duration::from_secs(30);

/// Why a request did not get a response from a target.
pub(super) enum SendFailure {
    /// Nothing was sent (the connect failed or was refused): the request
    /// comes back, to try another target.
    NotSent(Box<Request<Incoming>>, String),
    /// The target failed after the request was (at least partly) sent.
    Failed(hyper::Error),
}

/// The connections to one target address: one idle list per worker
/// thread (`workers::slot`), since a connection is driven by the thread
/// that made it.
pub(super) struct TargetPool {
    address: SocketAddr,
    idle: Box<[Mutex<Vec<SendRequest<Incoming>>>]>,
    /// Idle sockets of the plain HTTP/1.1 path, per worker, with when each
    /// was checked in (oldest first).
    streams: Box<[Mutex<IdleStreams>]>,
}

impl TargetPool {
    pub(super) fn new(address: SocketAddr, slots: usize) -> TargetPool {
        TargetPool {
            address,
            idle: (0..slots.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            streams: (0..slots.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
        }
    }

    /// The target's address.
    pub(super) fn address(&self) -> SocketAddr {
        self.address
    }

    /// The calling thread's idle sockets.
    fn streams(&self) -> std::sync::MutexGuard<'_, IdleStreams> {
        self.streams[super::workers::slot() % self.streams.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle socket to the target that still looks open (the target has
    /// neither closed it nor sent anything unasked), the last used first.
    pub(super) fn take_stream(&self) -> Option<TcpStream> {
        loop {
            let (_, stream) = self.streams().pop_back()?;
            // Costs no system call unless the event loop saw the socket
            // turn readable, which an idle one only does when closed.
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    return Some(stream)
                }
                _ => continue,
            }
        }
    }

    /// Puts a socket whose exchange is over back for the next request, and
    /// closes those idle longer than `MAX_IDLE_TIME`: after a burst, the
    /// sockets at the bottom of the list would otherwise never be taken
    /// again, and hold a descriptor each once their target closed them.
    /// `now` is a recent time (the request's start will do).
    pub(super) fn check_in_stream(&self, stream: TcpStream, now: Instant) {
        let mut streams = self.streams();
        while streams
            .front()
            .is_some_and(|(since, _)| now.duration_since(*since) > MAX_IDLE_TIME)
        {
            streams.pop_front();
        }
        if streams.len() < MAX_IDLE {
            streams.push_back((now, stream));
        }
    }

    /// The calling thread's idle list.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<Incoming>>> {
        self.idle[super::workers::slot() % self.idle.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_idle(&self) -> Option<SendRequest<Incoming>> {
        self.idle().pop()
    }

    /// Puts a connection whose exchange is over back for the next request.
    pub(super) fn check_in(&self, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> std::io::Result<TokioIo<TcpStream>> {
        Ok(TokioIo::new(connect_tcp(self.address).await?))
    }

    /// Sends `request` on an idle connection, or a new one. A pooled
    /// connection the target closed meanwhile hands the request back
    /// unsent, and the next one is tried. Returns the response head and the
    /// connection, to check in once the body is read.
    pub(super) async fn send(
        &self,
        mut request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, SendRequest<Incoming>), SendFailure> {
        loop {
            let (mut sender, fresh) = match self.take_idle() {
                Some(sender) => (sender, false),
                None => match self.handshake().await {
                    Ok(sender) => (sender, true),
                    Err(error) => return Err(SendFailure::NotSent(Box::new(request), error)),
                },
            };
            if !fresh && !sender.is_ready() && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, sender)),
                Err(mut error) => match error.take_message() {
                    Some(back) if !fresh => request = back,
                    Some(back) => {
                        return Err(SendFailure::NotSent(
                            Box::new(back),
                            format!("the new connection closed: {}", error.into_error()),
                        ))
                    }
                    None => return Err(SendFailure::Failed(error.into_error())),
                },
            }
        }
    }

    async fn handshake(&self) -> Result<SendRequest<Incoming>, String> {
        let io = self.connect().await.map_err(|error| error.to_string())?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "target connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends an Upgrade request on a connection of its own that may be
    /// taken over after a 101.
    pub(super) async fn send_upgrade(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendFailure> {
        let io = match self.connect().await {
            Ok(io) => io,
            Err(error) => return Err(SendFailure::NotSent(Box::new(request), error.to_string())),
        };
        let (mut sender, connection) = match http1::handshake(io).await {
            Ok(pair) => pair,
            Err(error) => return Err(SendFailure::NotSent(Box::new(request), error.to_string())),
        };
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "target upgrade connection ended");
            }
        });
        match sender.try_send_request(request).await {
            Ok(response) => Ok(response),
            Err(mut error) => match error.take_message() {
                Some(back) => Err(SendFailure::NotSent(
                    Box::new(back),
                    error.into_error().to_string(),
                )),
                None => Err(SendFailure::Failed(error.into_error())),
            },
        }
    }
}

/// Connects to a target (Nagle off).
pub(super) async fn connect_tcp(address: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_idle_longer_than_the_limit_are_closed_at_the_next_check_in() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let pool = TargetPool::new(address, 1);
        let start = Instant::now();
        for _ in 0..3 {
            pool.check_in_stream(connect_tcp(address).await.unwrap(), start);
        }
        assert_eq!(pool.streams().len(), 3);
        let later = start + MAX_IDLE_TIME + Duration::from_secs(1);
        pool.check_in_stream(connect_tcp(address).await.unwrap(), later);
        assert_eq!(pool.streams().len(), 1, "the three old sockets are closed");
        assert!(pool.take_stream().is_some());
        assert!(pool.take_stream().is_none());
    }
}
