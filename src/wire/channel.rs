//! gRPC channels to other orc servers: plain text, or TLS with this
//! process's certificate through [`TlsConnect`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::transport::Channel;

use crate::tls::ClientTls;
use crate::{Error, Result};

/// Checks that `endpoint` is `HOST:PORT` (optionally after `http://`) with
/// a host and a port from 1 to 65535, before anything connects to it; the
/// error says what is wrong and what to write instead.
pub fn check_endpoint(endpoint: &str) -> Result<()> {
    let invalid = |why: String| {
        Err(Error::InvalidInput(format!(
            "invalid address {endpoint:?}: {why}"
        )))
    };
    let example = "write HOST:PORT, e.g. 127.0.0.1:7400";
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return invalid(format!("it is empty: {example}"));
    }
    if rest.contains(char::is_whitespace) || rest.contains('/') {
        return invalid(format!("it is not HOST:PORT: {example}"));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return invalid(format!("it has no port: {example}"));
    };
    if host.is_empty() {
        return invalid(format!("it has no host: {example}"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return invalid("an IPv6 address needs brackets, e.g. [::1]:7400".to_string());
    }
    if port.is_empty() {
        return invalid(format!("it has no port: {example}"));
    }
    match port.parse::<u32>() {
        Ok(number) if (1..=65535).contains(&number) => Ok(()),
        _ => invalid(format!(
            "{port} is not a port number (1 to 65535; orc listens on 7400 unless told otherwise)"
        )),
    }
}

/// Makes a channel to `host:port` (connects lazily) with this process's
/// identity (`tls::process_identity`: TLS with its certificate, or plain
/// text when it has none). The address is checked first
/// (`check_endpoint`); HTTP/2 keep-alive pings find a server that died or
/// froze under an open stream.
pub fn channel(endpoint: &str) -> Result<Channel> {
    let endpoint = configured(endpoint)?;
    Ok(match crate::tls::process_identity() {
        Some(tls) => endpoint.connect_with_connector_lazy(TlsConnect::process(tls)),
        None => endpoint.connect_lazy(),
    })
}

/// Like [`channel`], with the given identity (`None`: plain text).
pub fn channel_with(endpoint: &str, tls: Option<Arc<ClientTls>>) -> Result<Channel> {
    let endpoint = configured(endpoint)?;
    Ok(match tls {
        Some(tls) => endpoint.connect_with_connector_lazy(TlsConnect::fixed(tls)),
        None => endpoint.connect_lazy(),
    })
}

/// The endpoint with orc's settings, before it is connected.
pub fn configured(endpoint: &str) -> Result<tonic::transport::Endpoint> {
    check_endpoint(endpoint)?;
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let uri = format!("http://{rest}");
    Ok(tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| Error::InvalidInput(format!("invalid endpoint {endpoint:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(false))
}

/// Connects a channel's TCP stream and runs the TLS handshake on it with
/// the process's certificate; a handshake failure becomes a sentence
/// (`tls::TlsRefused`) the client shows as it is.
#[derive(Clone)]
pub struct TlsConnect {
    /// Whom to trust and what to present.
    tls: Arc<ClientTls>,
    /// When set, each new connection takes the identity this slot holds
    /// then (a renewed certificate, a rotated CA), `tls` only while it
    /// holds none.
    follow: Option<crate::tls::SharedIdentity>,
}

impl TlsConnect {
    /// Always `tls`.
    pub fn fixed(tls: Arc<ClientTls>) -> TlsConnect {
        TlsConnect { tls, follow: None }
    }

    /// The process identity as it is at each connection (a channel that
    /// outlives a renewal or a CA rotation: a server's peers).
    pub fn process(tls: Arc<ClientTls>) -> TlsConnect {
        TlsConnect {
            tls,
            follow: Some(crate::tls::SharedIdentity::process()),
        }
    }
}

/// Like [`channel`], each connection with the identity `identity` holds
/// when it is made (an agent's, renewed while its channels live).
pub fn channel_following(endpoint: &str, identity: &crate::tls::SharedIdentity) -> Result<Channel> {
    let endpoint = configured(endpoint)?;
    Ok(match identity.get() {
        Some(tls) => endpoint.connect_with_connector_lazy(TlsConnect {
            tls,
            follow: Some(identity.clone()),
        }),
        None => endpoint.connect_lazy(),
    })
}

/// A TLS connection as hyper reads and writes it.
pub type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower_service::Service<hyper::Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TlsIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let tls = self
            .follow
            .as_ref()
            .and_then(|identity| identity.get())
            .unwrap_or_else(|| self.tls.clone());
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(7400);
            let address = format!("{}:{port}", uri.host().unwrap_or_default());
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            match tls.connector().connect(ClientTls::server_name(), tcp).await {
                Ok(stream) => Ok(hyper_util::rt::TokioIo::new(stream)),
                Err(error) => match crate::tls::explain_client_handshake(&address, &error) {
                    Some(refused) => Err(std::io::Error::other(refused)),
                    None => Err(error),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_before_connecting() {
        for good in [
            "127.0.0.1:7400",
            "pi1:7400",
            "http://pi1:7400",
            "[::1]:7400",
            "pi1:7400/",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("127.0.0.1:99999", "99999 is not a port number"),
            ("127.0.0.1:0", "0 is not a port number"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:", "no port"),
            (":7400", "no host"),
            ("", "empty"),
            ("::1:7400", "brackets"),
            ("pi 1:7400", "not HOST:PORT"),
        ] {
            let e = check_endpoint(bad).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
    }
}
