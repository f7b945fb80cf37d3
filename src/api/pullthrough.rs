//! ECR's pull-through cache: a repository under a rule's prefix
//! (`hub/library/busybox` for the rule `hub` → `http://mirror:5000`) that
//! the registry does not hold is fetched from the upstream registry on the
//! first pull (the manifest, every manifest an index lists, and their
//! blobs, each verified against its digest), stored like a push, and served
//! from the cluster from then on: thirty Pis fetch an upstream image once.
//!
//! The upstream speaks the distribution API over HTTPS (verified against
//! the system's trusted CAs, `SSL_CERT_FILE` honoured) or plain HTTP (a
//! mirror on the lab's network); an anonymous Bearer challenge is answered
//! with a token from its realm, and redirects (to a blob store) are
//! followed. Two pulls of the same missing image wait for one fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::registry::Registry;
use crate::blobstore::FinishOutcome;
use crate::oci::{self, Digest};
use crate::store::registry::CacheRule;
use crate::{Error, Result};

/// The manifest media types asked of the upstream, most specific last.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// How long one upstream request may take to answer (its body may stream longer).
const ANSWER_PATIENCE: Duration = Duration::from_secs(30);

/// The fetches in progress, one lock per `repository:reference`.
#[derive(Default)]
pub struct Fetches(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// The rule whose prefix `repository` falls under, and the upstream
/// repository name (the rest of the name).
pub fn rule_for<'a>(
    rules: impl Iterator<Item = &'a CacheRule>,
    repository: &str,
) -> Option<(CacheRule, String)> {
    rules
        .filter_map(|rule| {
            let rest = repository
                .strip_prefix(&rule.ecr_repository_prefix)?
                .strip_prefix('/')?;
            (!rest.is_empty()).then(|| (rule.clone(), rest.to_string()))
        })
        .next()
}

/// Fetches `reference` of `upstream_repository` from the rule's upstream
/// into `repository`, unless another pull is doing so (then waits for it).
pub async fn fetch(
    registry: &Registry,
    rule: &CacheRule,
    repository: &str,
    upstream_repository: &str,
    reference: &str,
) -> Result<()> {
    let lock = {
        let mut fetches = registry.fetches.0.lock().unwrap_or_else(|p| p.into_inner());
        fetches
            .entry(format!("{repository}:{reference}"))
            .or_default()
            .clone()
    };
    let _one = lock.lock().await;
    if registry.holds(repository, reference) {
        return Ok(());
    }
    let upstream = Upstream::new(&rule.upstream_registry_url, upstream_repository)?;
    tracing::info!(%repository, %reference, upstream = %rule.upstream_registry_url, "pull-through cache: fetching from the upstream");
    let fetched = fetch_manifest(registry, &upstream, repository, reference, 0).await;
    registry
        .fetches
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&format!("{repository}:{reference}"));
    fetched.map_err(|error| {
        Error::Unavailable(format!(
            "the pull-through cache could not fetch {upstream_repository}:{reference} from {}: {error}",
            rule.upstream_registry_url
        ))
    })
}

/// Fetches one manifest (and, for an index, the manifests it lists), its
/// blobs, and stores it under `reference`.
async fn fetch_manifest(
    registry: &Registry,
    upstream: &Upstream,
    repository: &str,
    reference: &str,
    depth: usize,
) -> Result<()> {
    let response = upstream
        .get(&format!("manifests/{reference}"), Some(ACCEPT))
        .await?;
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = read_limited(response, oci::MAX_MANIFEST_BYTES).await?;
    if let Ok(wanted) = Digest::parse(reference) {
        if Digest::of(&bytes) != wanted {
            return Err(Error::Unavailable(format!(
                "the upstream's manifest {reference} has another digest"
            )));
        }
    }
    let parsed = oci::parse_manifest(&bytes, content_type.as_deref())
        .map_err(|e| Error::Unavailable(format!("the upstream's manifest is invalid: {e}")))?;
    if depth == 0 {
        for child in &parsed.manifests {
            Box::pin(fetch_manifest(
                registry,
                upstream,
                repository,
                child.digest.as_str(),
                depth + 1,
            ))
            .await?;
        }
    }
    for blob in parsed.config.iter().chain(&parsed.layers) {
        fetch_blob(registry, upstream, repository, &blob.digest).await?;
    }
    registry
        .store_manifest(repository, reference, bytes, content_type.as_deref())
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "storing the fetched manifest failed: {}",
                e.message
            ))
        })?;
    Ok(())
}

/// Streams one blob from the upstream into the blob store (verified) and
/// links it into `repository`.
async fn fetch_blob(
    registry: &Registry,
    upstream: &Upstream,
    repository: &str,
    digest: &Digest,
) -> Result<()> {
    let size = match registry.blobs.size(digest) {
        Some(size) => size,
        None => {
            let response = upstream.get(&format!("blobs/{digest}"), None).await?;
            let pieces = response.into_body().into_data_stream().map(|piece| {
                piece.map_err(|e| Error::Unavailable(format!("the blob's download broke off: {e}")))
            });
            match registry
                .blobs
                .store_stream(repository, digest, pieces)
                .await?
            {
                FinishOutcome::Stored(size) => size,
                FinishOutcome::Mismatch(actual) => {
                    return Err(Error::Unavailable(format!(
                        "the upstream's blob {digest} has digest {actual}"
                    )))
                }
            }
        }
    };
    registry
        .link_blob(repository, digest, size)
        .await
        .map_err(|e| Error::Unavailable(e.message))
}

/// Reads a whole (small) body, refusing one over `limit` bytes.
async fn read_limited(response: Response<Incoming>, limit: usize) -> Result<Bytes> {
    let mut body = response.into_body();
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Unavailable(format!("the answer broke off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(Error::Unavailable(format!(
                    "the answer is over {limit} bytes"
                )));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.freeze())
}

/// One upstream repository.
struct Upstream {
    /// `http://host:port` or `https://host[:port]`.
    origin: String,
    /// `/v2/REPOSITORY/`.
    base: String,
    /// A Bearer token the upstream's realm gave.
    token: tokio::sync::Mutex<Option<String>>,
}

impl Upstream {
    fn new(url: &str, repository: &str) -> Result<Upstream> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::InvalidInput(format!(
                "upstream {url:?}: give it as https://HOST or http://HOST:PORT"
            )));
        }
        Ok(Upstream {
            origin: url.trim_end_matches('/').to_string(),
            base: format!("/v2/{repository}/"),
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// GET `base + path`, answering a Bearer challenge once and following
    /// up to three redirects; an answer other than 200 is an error.
    async fn get(&self, path: &str, accept: Option<&str>) -> Result<Response<Incoming>> {
        let mut url = format!("{}{}{}", self.origin, self.base, path);
        let mut challenged = false;
        for _ in 0..5 {
            let token = self.token.lock().await.clone();
            let response = send(&url, accept, token.as_deref()).await?;
            match response.status() {
                StatusCode::OK => return Ok(response),
                StatusCode::UNAUTHORIZED if !challenged => {
                    challenged = true;
                    let challenge = response
                        .headers()
                        .get(hyper::header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    *self.token.lock().await = Some(bearer_token(&challenge).await?);
                }
                status if status.is_redirection() => {
                    let location = response
                        .headers()
                        .get(hyper::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| {
                            Error::Unavailable("a redirect without a location".into())
                        })?;
                    url = if location.starts_with('/') {
                        format!("{}{location}", self.origin)
                    } else {
                        location.to_string()
                    };
                }
                status => {
                    return Err(Error::Unavailable(format!(
                        "the upstream answered {status} for {url}"
                    )));
                }
            }
        }
        Err(Error::Unavailable(format!(
            "too many redirects or challenges for {url}"
        )))
    }
}

/// The TLS settings for upstreams: the system's trusted CAs (read once;
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` point elsewhere), HTTP/1.1.
fn upstream_tls() -> Result<Arc<rustls::ClientConfig>> {
    static CONFIG: std::sync::OnceLock<std::result::Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for certificate in found.certs {
                let _ = roots.add(certificate);
            }
            if roots.is_empty() {
                return Err(format!(
                    "no trusted CA certificates were found on this server ({:?}): install ca-certificates, or set SSL_CERT_FILE",
                    found.errors.first().map(|e| e.to_string())
                ));
            }
            let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(Error::Unavailable)
}

/// Starts HTTP/1.1 on `io`, driving the connection in the background.
async fn http1<T>(io: T, address: &str) -> Result<hyper::client::conn::http1::SendRequest<Body>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Error::Unavailable(format!("{address}: {e}")))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One GET over a fresh HTTP/1.1 connection (TLS for `https://`).
async fn send(url: &str, accept: Option<&str>, token: Option<&str>) -> Result<Response<Incoming>> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| Error::Unavailable(format!("bad upstream url {url:?}: {e}")))?;
    let secure = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(Error::Unavailable(format!(
                "{url}: only https:// and http:// are served"
            )))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| Error::Unavailable(format!("{url} names no host")))?
        .clone();
    let port = authority
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let address = format!("{}:{port}", authority.host());
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot connect to {address}: {e}")))?;
        let mut sender = if secure {
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| Error::Unavailable(format!("{host} is no TLS server name: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(upstream_tls()?)
                .connect(name, tcp)
                .await
                .map_err(|e| Error::Unavailable(format!("TLS with {address} failed: {e}")))?;
            http1(tls, &address).await?
        } else {
            http1(tcp, &address).await?
        };
        let mut request = Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::USER_AGENT, "orc-pull-through-cache");
        if let Some(accept) = accept {
            request = request.header(hyper::header::ACCEPT, accept);
        }
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Body::empty())
            .map_err(|e| Error::Internal(format!("an upstream request: {e}")))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| Error::Unavailable(format!("{address}: {e}")))
    };
    tokio::time::timeout(ANSWER_PATIENCE, exchange)
        .await
        .map_err(|_| Error::Unavailable(format!("{url} did not answer within 30 s")))?
}

/// An anonymous token for a `Bearer realm="…",service="…",scope="…"`
/// challenge.
async fn bearer_token(challenge: &str) -> Result<String> {
    let Some(parameters) = challenge.strip_prefix("Bearer ") else {
        return Err(Error::Unavailable(format!(
            "the upstream wants credentials ({challenge:?}); orc's pull-through cache fetches anonymously"
        )));
    };
    let mut realm = None;
    let mut query = Vec::new();
    for part in parameters.split(',') {
        if let Some((key, value)) = part.trim().split_once('=') {
            let value = value.trim_matches('"');
            match key {
                "realm" => realm = Some(value.to_string()),
                "service" | "scope" => query.push(format!("{key}={value}")),
                _ => {}
            }
        }
    }
    let realm = realm
        .ok_or_else(|| Error::Unavailable("the upstream's challenge names no realm".into()))?;
    let url = if query.is_empty() {
        realm
    } else {
        format!("{realm}?{}", query.join("&"))
    };
    let response = send(&url, None, None).await?;
    if response.status() != StatusCode::OK {
        return Err(Error::Unavailable(format!(
            "the upstream's token realm answered {}",
            response.status()
        )));
    }
    let body = read_limited(response, 64 * 1024).await?;
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::Unavailable(format!("the upstream's token is not JSON: {e}")))?;
    answer["token"]
        .as_str()
        .or_else(|| answer["access_token"].as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Unavailable("the upstream's token answer has no token".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_falls_under_the_rule_of_its_first_segment() {
        let rules = [CacheRule {
            ecr_repository_prefix: "hub".into(),
            upstream_registry_url: "http://mirror:5000".into(),
            created_at_ms: 0,
        }];
        let (rule, rest) = rule_for(rules.iter(), "hub/library/busybox").unwrap();
        assert_eq!(rule.ecr_repository_prefix, "hub");
        assert_eq!(rest, "library/busybox");
        assert!(rule_for(rules.iter(), "hubble/x").is_none());
        assert!(rule_for(rules.iter(), "hub").is_none());
    }
}
