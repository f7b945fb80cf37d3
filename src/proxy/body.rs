//! The body of a response the proxy sends: a target's body streamed through
//! (its connection checked back into the pool once read to the end), or
//! the proxy's own short plain-text answer (502, 503, 504).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::idle::InFlight;
use super::pool::TargetPool;

/// A response body: streamed from a target, or the proxy's own.
pub struct ProxyBody {
    kind: Kind,
    /// The request this body answers, counted in flight on its client
    /// connection until the body is dropped.
    _in_flight: Option<InFlight>,
}

enum Kind {
    Full(Option<Bytes>),
    Target {
        body: Incoming,
        /// The connection the body arrives on, checked in when it ends.
        connection: Option<(SendRequest<Incoming>, Arc<TargetPool>)>,
        ended: bool,
    },
}

impl ProxyBody {
    /// The proxy's own body.
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody {
            kind: Kind::Full(Some(bytes.into())),
            _in_flight: None,
        }
    }

    /// An empty body.
    pub fn empty() -> ProxyBody {
        ProxyBody {
            kind: Kind::Full(None),
            _in_flight: None,
        }
    }

    /// A target's body; `connection` goes back to `pool` once it is read.
    pub(super) fn target(
        body: Incoming,
        connection: Option<(SendRequest<Incoming>, Arc<TargetPool>)>,
    ) -> ProxyBody {
        ProxyBody {
            kind: Kind::Target {
                body,
                connection,
                ended: false,
            },
            _in_flight: None,
        }
    }

    /// This body, holding `request` in flight until it is dropped.
    pub(super) fn in_flight(mut self, request: InFlight) -> ProxyBody {
        self._in_flight = Some(request);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::Target {
                body,
                connection,
                ended,
            } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(None) => {
                    *ended = true;
                    if let Some((sender, pool)) = connection.take() {
                        pool.check_in(sender);
                    }
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(error))) => {
                    // The target failed mid-body: its connection is done
                    // for, and the error aborts the client's connection.
                    connection.take();
                    Poll::Ready(Some(Err(error)))
                }
                other => other,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Target { body, ended, .. } => *ended || body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Target { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Kind::Target {
            body, connection, ..
        } = &mut self.kind
        {
            // A body with nothing to read (HEAD, 204, Content-Length: 0) is
            // never polled: its connection is reusable all the same.
            if body.is_end_stream() {
                if let Some((sender, pool)) = connection.take() {
                    pool.check_in(sender);
                }
            }
        }
    }
}
