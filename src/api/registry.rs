//! The image registry's HTTP API under `/v2/` on the API port: the OCI
//! Distribution Specification v1.1, which Docker's Registry HTTP API V2
//! clients (`docker`, `skopeo`, containerd) speak.
//!
//! Blob bytes go to this server's `blobstore` (verified before they are
//! visible); repositories, blob links, manifests and tags are replicated
//! state, changed by `store::Command`s proposed through Raft, so every
//! server answers the same. Reads are anonymous; writes need the
//! credentials `orc ecr get-login-password` prints (HTTP Basic, user
//! `AWS`, as `docker login` sends them). Errors are the spec's JSON error
//! codes with their status codes; untrusted input never panics.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::StreamExt as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::blobstore::{BlobStore, FinishOutcome, Upload};
use crate::oci::{self, Digest, OciError};
use crate::raft::node::RaftHandle;
use crate::store::registry::{ManifestRecord, RegistryState};
use crate::store::{Command, Proposal};
use crate::vocab::principal::Principal;
use crate::vocab::time::now_ms;
use crate::Error;

/// How long an anonymous pull token lasts.
const TOKEN_SECONDS: u64 = 3600;

/// Upload bodies are written in pieces of this size (bounded memory).
const WRITE_CHUNK: usize = 1024 * 1024;
/// Blob answers are read from disk in pieces of this size.
const READ_CHUNK: usize = 256 * 1024;

/// What the registry's handlers share.
pub struct Registry {
    /// The raft node (replicated state, proposals).
    pub raft: RaftHandle,
    /// This server's blob files.
    pub blobs: Arc<BlobStore>,
    /// Copies blobs from and to the other servers.
    pub sync: Arc<super::blobsync::BlobSync>,
    /// Pull-through cache fetches in progress.
    pub fetches: super::pullthrough::Fetches,
    /// Opens access keys' secrets, for `docker login` with an access key.
    pub seal: crate::seal::SealKey,
}

/// Whether a connection may pull without a credential: on a server started
/// insecure, and for callers whose certificate already says who they are
/// (servers, agents, users). A TLS caller with no certificate must log in.
fn pulls_open(connection: Option<&Principal>) -> bool {
    matches!(
        connection,
        Some(
            Principal::Insecure
                | Principal::Server { .. }
                | Principal::Agent { .. }
                | Principal::User { .. }
        )
    )
}

/// The `/v2/` routes, to merge into the API port's router.
pub fn router(registry: Arc<Registry>) -> axum::Router {
    let root = registry.clone();
    axum::Router::new()
        .route(
            "/v2",
            axum::routing::any(move |request: Request<Body>| {
                let registry = root.clone();
                async move { registry.handle(request).await }
            }),
        )
        .route(
            "/v2/",
            axum::routing::any({
                let registry = registry.clone();
                move |request: Request<Body>| {
                    let registry = registry.clone();
                    async move { registry.handle(request).await }
                }
            }),
        )
        .route(
            "/v2/{*rest}",
            axum::routing::any(move |request: Request<Body>| {
                let registry = registry.clone();
                async move { registry.handle(request).await }
            }),
        )
}

/// One of the spec's errors, with its status and extra headers.
#[derive(Debug)]
pub struct RegistryError {
    status: StatusCode,
    code: &'static str,
    pub(super) message: String,
    headers: Vec<(header::HeaderName, String)>,
}

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> RegistryError {
    RegistryError {
        status,
        code,
        message: message.into(),
        headers: Vec::new(),
    }
}

impl RegistryError {
    fn with(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl From<OciError> for RegistryError {
    fn from(error: OciError) -> Self {
        let code = match error {
            OciError::NameInvalid(_) => "NAME_INVALID",
            OciError::TagInvalid(_) => "TAG_INVALID",
            OciError::DigestInvalid(_) => "DIGEST_INVALID",
            OciError::ManifestInvalid(_) => "MANIFEST_INVALID",
        };
        fail(StatusCode::BAD_REQUEST, code, error.to_string())
    }
}

impl From<Error> for RegistryError {
    fn from(error: Error) -> Self {
        use crate::error::Kind;
        match (error.kind(), error) {
            (Some(Kind::InvalidInput), e) => {
                fail(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.to_string())
            }
            (Some(Kind::NotFound), e) => fail(StatusCode::NOT_FOUND, "NAME_UNKNOWN", e.to_string()),
            (Some(Kind::Conflict), e) => {
                fail(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", e.to_string())
            }
            (Some(Kind::AccessDenied), e) => fail(StatusCode::FORBIDDEN, "DENIED", e.to_string()),
            (Some(Kind::Unauthenticated), e) => {
                fail(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string())
            }
            (None, other) => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                other.to_string(),
            ),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{"code": self.code, "message": self.message, "detail": {}}]});
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

type Answer = Result<Response, RegistryError>;

/// What a `/v2/` path names.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Base,
    Token,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if rest == "token" {
        return Some(Route::Token);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name.into()));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart(name.into()));
    }
    let (head, last) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Route::Manifest(name.into(), last.into())),
        "blobs" => Some(Route::Blob(name.into(), last.into())),
        "referrers" => Some(Route::Referrers(name.into(), last.into())),
        "uploads" => name
            .strip_suffix("/blobs")
            .map(|name| Route::Upload(name.into(), last.into())),
        _ => None,
    }
}

/// The query string's parameters (percent-decoded; the last one wins).
fn query(request: &Request<Body>) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for pair in request.uri().query().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(percent_decode(key), percent_decode(value));
    }
    params
}

/// A query string's key or value decoded: `+` is a space, then `%XY`
/// escapes as SigV4 decodes them (a stray `%` is kept).
fn percent_decode(text: &str) -> String {
    super::door::sigv4::uri_decode(&text.replace('+', " "))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn name_checked(name: &str) -> Result<(), RegistryError> {
    oci::validate_repository_name(name).map_err(RegistryError::from)
}

fn digest_checked(text: &str) -> Result<Digest, RegistryError> {
    Digest::parse(text).map_err(RegistryError::from)
}

fn unsupported_method(method: &Method, what: &str) -> RegistryError {
    fail(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        format!("{method} is not supported on {what}"),
    )
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// The spec's Range header for an upload: the bytes received so far.
fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl Registry {
    /// Serves one `/v2/` request.
    pub async fn handle(self: Arc<Self>, request: Request<Body>) -> Response {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let answer = self.dispatch(request).await;
        let mut response = match answer {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%method, %path, code = error.code, message = %error.message, "registry request refused");
                error.into_response()
            }
        };
        response.headers_mut().insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        response
    }

    async fn dispatch(&self, request: Request<Body>) -> Answer {
        let Some(route) = route(request.uri().path()) else {
            return Err(fail(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("no registry endpoint at {}", request.uri().path()),
            ));
        };
        let method = request.method().clone();
        let writes = !matches!(method, Method::GET | Method::HEAD);
        let open = pulls_open(request.extensions().get::<Principal>());
        if route == Route::Token {
            return self.token(request.headers(), open).await;
        }
        if writes || route == Route::Base || !open {
            let realm = realm(&request);
            self.authorize(request.headers(), !writes, &realm).await?;
        }
        match route {
            Route::Base | Route::Token => Ok(json_response(StatusCode::OK, json!({}))),
            Route::Catalog => self.catalog(query(&request)).await,
            Route::Tags(name) => {
                name_checked(&name)?;
                self.tags(&name, query(&request)).await
            }
            Route::Manifest(name, reference) => {
                name_checked(&name)?;
                match method {
                    Method::GET | Method::HEAD => {
                        self.get_manifest(&name, &reference, method == Method::HEAD)
                            .await
                    }
                    Method::PUT => self.put_manifest(&name, &reference, request).await,
                    Method::DELETE => self.delete_manifest(&name, &reference).await,
                    _ => Err(unsupported_method(&method, "manifests")),
                }
            }
            Route::Blob(name, digest) => {
                name_checked(&name)?;
                let digest = digest_checked(&digest)?;
                match method {
                    Method::GET | Method::HEAD => {
                        let range =
                            header_str(request.headers(), header::RANGE).map(str::to_string);
                        self.get_blob(&name, &digest, method == Method::HEAD, range)
                            .await
                    }
                    Method::DELETE => self.delete_blob(&name, &digest).await,
                    _ => Err(unsupported_method(&method, "blobs")),
                }
            }
            Route::UploadStart(name) => {
                name_checked(&name)?;
                match method {
                    Method::POST => self.start_upload(&name, request).await,
                    _ => Err(unsupported_method(&method, "blob uploads")),
                }
            }
            Route::Upload(name, id) => {
                name_checked(&name)?;
                match method {
                    Method::GET => self.upload_status(&name, &id).await,
                    Method::PATCH => self.patch_upload(&name, &id, request).await,
                    Method::PUT => self.finish_upload(&name, &id, request).await,
                    Method::DELETE => self.cancel_upload(&name, &id).await,
                    _ => Err(unsupported_method(&method, "blob uploads")),
                }
            }
            Route::Referrers(name, digest) => {
                name_checked(&name)?;
                let digest = digest_checked(&digest)?;
                match method {
                    Method::GET | Method::HEAD => {
                        self.referrers(&name, &digest, query(&request)).await
                    }
                    _ => Err(unsupported_method(&method, "referrers")),
                }
            }
        }
    }

    fn read<R>(&self, f: impl FnOnce(&RegistryState) -> R) -> R {
        self.raft.store().read(|state| f(&state.registry))
    }

    async fn propose(&self, command: Command) -> Result<Value, RegistryError> {
        self.raft
            .propose(Proposal {
                request_id: crate::vocab::ids::request_id(),
                command,
            })
            .await
            .map_err(RegistryError::from)
    }

    // --- credentials -------------------------------------------------

    /// Checks a request's credentials: a write needs a push token (the
    /// login password as Basic `AWS:PASSWORD`, or a Bearer token from
    /// `/v2/token` given for it); the `/v2/` ping needs any valid token, so
    /// that clients learn the Bearer challenge and fetch one (anonymous
    /// ones pull only).
    async fn authorize(
        &self,
        headers: &HeaderMap,
        ping: bool,
        realm: &str,
    ) -> Result<(), RegistryError> {
        let refuse = |why: &str| {
            fail(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", why.to_string()).with(
                header::WWW_AUTHENTICATE,
                format!("Bearer realm=\"{realm}\",service=\"orc\""),
            )
        };
        if let Some(login) = self.access_key_login(headers) {
            return match login {
                Ok(true) => Ok(()),
                Ok(false) if ping => Ok(()),
                Ok(false) => Err(refuse(
                    "a readonly user's access key may only pull: push with an operator's or admin's key",
                )),
                Err(why) => Err(refuse(&why)),
            };
        }
        let Some(token) =
            header_str(headers, header::AUTHORIZATION).and_then(super::ecr::basic_password)
        else {
            return Err(refuse(if ping {
                "authentication required: get a token from /v2/token, or log in with `orc ecr get-login-password | docker login --username AWS --password-stdin HOST:PORT`"
            } else {
                "pushing needs credentials: log in with `orc ecr get-login-password | docker login --username AWS --password-stdin HOST:PORT`"
            }));
        };
        let stored = self.read(|s| s.secret.clone());
        let secret = super::ecr::open_secret(&self.seal, &stored).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot open the registry's token secret");
            String::new()
        });
        match super::ecr::token_access(&secret, &token, now_ms()) {
            Some(push) if push || ping => Ok(()),
            Some(_) => Err(refuse(
                "pushing needs credentials: log in with `orc ecr get-login-password | docker login --username AWS --password-stdin HOST:PORT`",
            )),
            None => Err(refuse(
                "the credentials are wrong or expired: log in again with `orc ecr get-login-password | docker login --username AWS --password-stdin HOST:PORT`",
            )),
        }
    }

    /// `GET /v2/token` (Docker's token flow): the login password, checked,
    /// comes back as a push token; without credentials the answer is an
    /// anonymous token that pulls only; wrong credentials get 401.
    async fn token(&self, headers: &HeaderMap, open: bool) -> Answer {
        let secret = super::ecr::secret(&self.raft, &self.seal).await?;
        let now = now_ms();
        let expires = now + TOKEN_SECONDS * 1000;
        let login = self.access_key_login(headers);
        let token = match (login, header_str(headers, header::AUTHORIZATION)) {
            (Some(Ok(true)), _) => super::ecr::sign_token(&secret, expires),
            (Some(Ok(false)), _) => super::ecr::sign_pull_token(&secret, expires),
            (Some(Err(why)), _) => return Err(fail(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", why)),
            (None, None) if !open => {
                return Err(fail(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "pulling needs credentials on this cluster: `docker login` with an access key (user AKIA…, password its secret) or `orc ecr get-login-password`",
                ))
            }
            (None, None) => super::ecr::sign_pull_token(&secret, expires),
            (None, Some(value)) => match super::ecr::basic_password(value) {
                // A push token stays a push token, a pull token a pull token.
                Some(password) if super::ecr::token_access(&secret, &password, now).is_some() => {
                    password
                }
                _ => {
                    return Err(fail(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "the credentials are wrong or expired: use the user AWS and the password `orc ecr get-login-password` prints",
                    ))
                }
            },
        };
        Ok(json_response(
            StatusCode::OK,
            json!({ "token": token, "access_token": token, "expires_in": TOKEN_SECONDS }),
        ))
    }

    /// A Basic login whose user is an access key id (`docker login -u
    /// AKIA… -p SECRET`): `None` when the header is not one, else whether
    /// the key's user may push (`Ok(false)`: pull only) or why the login
    /// fails. The secret is compared in constant time.
    fn access_key_login(&self, headers: &HeaderMap) -> Option<Result<bool, String>> {
        let (user, password) =
            header_str(headers, header::AUTHORIZATION).and_then(super::ecr::basic_credentials)?;
        if user == "AWS" {
            return None;
        }
        let wrong = || {
            format!("the access key {user} or its secret is wrong: log in with an orc access key (`orc iam create-access-key`) or the user AWS and `orc ecr get-login-password`")
        };
        let found = match super::iam::secret_of(&self.raft, &self.seal, &user) {
            Ok(found) => found,
            Err(crate::Error::Refused(_, _)) => {
                return Some(Err(format!(
                    "the access key {user} is inactive: make it Active again (`orc iam update-access-key --access-key-id {user} --status Active`) or log in with another"
                )))
            }
            Err(error) => {
                tracing::error!(%error, "cannot read an access key's secret");
                return Some(Err(wrong()));
            }
        };
        let Some((secret, principal)) = found else {
            return Some(Err(wrong()));
        };
        if !crate::crypto::same_secret(&secret, &password) {
            return Some(Err(wrong()));
        }
        Some(Ok(principal
            .may(crate::vocab::principal::Access::Write, "ecr:push")
            .is_ok()))
    }

    // --- listings ----------------------------------------------------

    async fn catalog(&self, params: BTreeMap<String, String>) -> Answer {
        let names: Vec<String> =
            self.read(|s| s.repositories.iter().map(|(k, _)| k.clone()).collect());
        let (page, next) = paginate(names, &params)?;
        let mut response = json_response(StatusCode::OK, json!({ "repositories": page }));
        if let Some((n, last)) = next {
            link_next(&mut response, &format!("/v2/_catalog?n={n}&last={last}"));
        }
        Ok(response)
    }

    async fn tags(&self, name: &str, params: BTreeMap<String, String>) -> Answer {
        self.raft.read_barrier().await?;
        let tags = self.read(|s| {
            s.repository(name).map(|_| {
                s.tags_of(name)
                    .map(|(t, _)| t.to_string())
                    .collect::<Vec<_>>()
            })
        });
        let tags = tags.map_err(|e| fail(StatusCode::NOT_FOUND, "NAME_UNKNOWN", e.to_string()))?;
        let (page, next) = paginate(tags, &params)?;
        let mut response = json_response(StatusCode::OK, json!({ "name": name, "tags": page }));
        if let Some((n, last)) = next {
            link_next(
                &mut response,
                &format!("/v2/{name}/tags/list?n={n}&last={last}"),
            );
        }
        Ok(response)
    }

    async fn referrers(
        &self,
        name: &str,
        digest: &Digest,
        params: BTreeMap<String, String>,
    ) -> Answer {
        let filter = params
            .get("artifactType")
            .filter(|t| !t.is_empty())
            .cloned();
        self.raft.read_barrier().await?;
        let manifests: Vec<Value> = self.read(|s| {
            s.manifests_of(name)
                .filter(|m| m.subject.as_ref() == Some(digest))
                .filter(|m| filter.is_none() || m.artifact_type == filter)
                .map(|m| {
                    let mut descriptor = json!({
                        "mediaType": m.media_type,
                        "digest": m.digest,
                        "size": m.body.len(),
                    });
                    if let Some(artifact_type) = &m.artifact_type {
                        descriptor["artifactType"] = json!(artifact_type);
                    }
                    if let Ok(body) = serde_json::from_str::<Value>(&m.body) {
                        if let Some(annotations) = body.get("annotations") {
                            descriptor["annotations"] = annotations.clone();
                        }
                    }
                    descriptor
                })
                .collect()
        });
        let body = json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_INDEX,
            "manifests": manifests,
        });
        let mut response = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, oci::OCI_INDEX)],
            body.to_string(),
        )
            .into_response();
        if filter.is_some() {
            response.headers_mut().insert(
                "oci-filters-applied",
                HeaderValue::from_static("artifactType"),
            );
        }
        Ok(response)
    }

    // --- manifests ---------------------------------------------------

    /// Resolves a tag or digest to the stored manifest.
    async fn find_manifest(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<ManifestRecord, RegistryError> {
        self.raft.read_barrier().await?;
        let by_digest = reference.contains(':');
        let digest = if by_digest {
            Some(digest_checked(reference)?)
        } else {
            oci::validate_tag(reference)?;
            None
        };
        self.read(|s| {
            if s.repositories.get(name).is_none() {
                return Err(fail(
                    StatusCode::NOT_FOUND,
                    "NAME_UNKNOWN",
                    format!("repository {name:?} is not known to this registry"),
                ));
            }
            let digest = match &digest {
                Some(d) => d.clone(),
                None => s.tag(name, reference).cloned().ok_or_else(|| {
                    fail(
                        StatusCode::NOT_FOUND,
                        "MANIFEST_UNKNOWN",
                        format!("tag {reference:?} is not in repository {name:?}"),
                    )
                })?,
            };
            s.manifest(name, &digest).cloned().ok_or_else(|| {
                fail(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    format!("manifest {digest} is not in repository {name:?}"),
                )
            })
        })
    }

    async fn get_manifest(&self, name: &str, reference: &str, head: bool) -> Answer {
        let manifest = match self.find_manifest(name, reference).await {
            Ok(manifest) => manifest,
            Err(missing) if missing.status == StatusCode::NOT_FOUND => {
                // A repository under a pull-through cache rule is fetched
                // from its upstream on the first pull.
                let rule = self.read(|s| {
                    super::pullthrough::rule_for(s.cache_rules.iter().map(|(_, r)| r), name)
                });
                let Some((rule, upstream_repository)) = rule else {
                    return Err(missing);
                };
                super::pullthrough::fetch(self, &rule, name, &upstream_repository, reference)
                    .await?;
                self.find_manifest(name, reference).await?
            }
            Err(other) => return Err(other),
        };
        let length = manifest.body.len();
        let mut response = if head {
            Response::new(Body::empty())
        } else {
            Response::new(Body::from(manifest.body.clone()))
        };
        let headers = response.headers_mut();
        insert(headers, header::CONTENT_TYPE, &manifest.media_type);
        insert(headers, header::CONTENT_LENGTH, &length.to_string());
        insert(headers, "docker-content-digest", manifest.digest.as_str());
        insert(headers, header::ETAG, &format!("\"{}\"", manifest.digest));
        Ok(response)
    }

    async fn put_manifest(&self, name: &str, reference: &str, request: Request<Body>) -> Answer {
        let content_type = header_str(request.headers(), header::CONTENT_TYPE).map(str::to_string);
        let declared = header_str(request.headers(), header::CONTENT_LENGTH)
            .and_then(|v| v.parse::<u64>().ok());
        let too_big = || {
            fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!(
                    "the manifest is larger than {} MiB: this registry takes manifests up to that size",
                    oci::MAX_MANIFEST_BYTES / (1024 * 1024)
                ),
            )
        };
        if declared.is_some_and(|n| n > oci::MAX_MANIFEST_BYTES as u64) {
            return Err(too_big());
        }
        let mut bytes = BytesMut::new();
        let mut stream = request.into_body().into_data_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| {
                fail(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_INVALID",
                    format!("the manifest's body broke off: {e}"),
                )
            })?;
            if bytes.len() + piece.len() > oci::MAX_MANIFEST_BYTES {
                return Err(too_big());
            }
            bytes.extend_from_slice(&piece);
        }
        self.store_manifest(name, reference, bytes.freeze(), content_type.as_deref())
            .await
    }

    /// Stores a manifest's bytes under `reference` (a tag or its digest),
    /// as a push does: parsed, checked against what the repository holds,
    /// its blobs held by a majority of servers, then proposed.
    pub(super) async fn store_manifest(
        &self,
        name: &str,
        reference: &str,
        bytes: bytes::Bytes,
        content_type: Option<&str>,
    ) -> Answer {
        let digest = Digest::of(&bytes);
        let tag = if reference.contains(':') {
            let wanted = digest_checked(reference)?;
            if wanted != digest {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    format!("the manifest's digest is {digest}, not {wanted} as the URL says: push it by tag, or by its own digest"),
                ));
            }
            None
        } else {
            oci::validate_tag(reference)?;
            Some(reference.to_string())
        };
        let parsed = oci::parse_manifest(&bytes, content_type)?;
        let body = String::from_utf8(bytes.to_vec()).map_err(|_| {
            fail(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                "the manifest is not UTF-8 JSON",
            )
        })?;
        // What it references must be in the repository.
        let mut blobs = Vec::new();
        let mut children = Vec::new();
        let mut platforms = Vec::new();
        let (linked, known): (Vec<Option<u64>>, Vec<Option<ManifestRecord>>) = self.read(|s| {
            (
                parsed
                    .config
                    .iter()
                    .chain(&parsed.layers)
                    .map(|d| s.blob(name, &d.digest))
                    .collect(),
                parsed
                    .manifests
                    .iter()
                    .map(|d| s.manifest(name, &d.digest).cloned())
                    .collect(),
            )
        });
        for (descriptor, size) in parsed.config.iter().chain(&parsed.layers).zip(linked) {
            match size {
                None => {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        "MANIFEST_BLOB_UNKNOWN",
                        format!("the manifest references blob {}, which is not in repository {name:?}: push the blob first", descriptor.digest),
                    ))
                }
                Some(size) if size != descriptor.size => {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        "MANIFEST_INVALID",
                        format!("the manifest says blob {} has {} bytes, but it has {size}", descriptor.digest, descriptor.size),
                    ))
                }
                Some(size) => blobs.push((descriptor.digest.clone(), size)),
            }
        }
        for (descriptor, child) in parsed.manifests.iter().zip(known) {
            match child {
                None => {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        "MANIFEST_BLOB_UNKNOWN",
                        format!("the index references manifest {}, which is not in repository {name:?}: push it first", descriptor.digest),
                    ))
                }
                Some(child) => {
                    if descriptor.platform.is_none() {
                        platforms.extend(child.platforms.iter().cloned());
                    }
                    children.push(descriptor.digest.clone());
                }
            }
        }
        // Every blob is on this server and on a majority of the servers
        // before a manifest names it: the image survives losing one.
        for (digest, _) in &blobs {
            self.sync.ensure(digest).await?;
        }
        self.sync.hold_on_majority(blobs.clone()).await?;
        if parsed.is_index() {
            platforms.extend(parsed.index_platforms());
        } else if let Some(config) = &parsed.config {
            if parsed.artifact_type.is_none() {
                if let Some(platform) = self
                    .blobs
                    .read_small(&config.digest, oci::MAX_MANIFEST_BYTES as u64)
                    .and_then(|b| oci::config_platform(&b))
                {
                    platforms.push(platform);
                }
            }
        }
        platforms.sort();
        platforms.dedup();
        let subject = parsed.subject.clone();
        let record = ManifestRecord {
            repository_name: name.to_string(),
            digest: digest.clone(),
            media_type: parsed.media_type.clone(),
            body,
            pushed_at_ms: now_ms(),
            blobs,
            children,
            platforms,
            subject: subject.clone(),
            artifact_type: parsed.artifact_type.clone(),
        };
        self.propose(Command::RegistryPutManifest {
            manifest: Box::new(record),
            tag,
        })
        .await
        .map_err(|e| RegistryError {
            code: if e.status == StatusCode::NOT_FOUND {
                "MANIFEST_BLOB_UNKNOWN"
            } else {
                e.code
            },
            status: if e.status == StatusCode::NOT_FOUND {
                StatusCode::BAD_REQUEST
            } else {
                e.status
            },
            ..e
        })?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::CREATED;
        let headers = response.headers_mut();
        insert(
            headers,
            header::LOCATION,
            &format!("/v2/{name}/manifests/{digest}"),
        );
        insert(headers, "docker-content-digest", digest.as_str());
        if let Some(subject) = subject {
            insert(headers, "oci-subject", subject.as_str());
        }
        Ok(response)
    }

    async fn delete_manifest(&self, name: &str, reference: &str) -> Answer {
        let command = if reference.contains(':') {
            let digest = digest_checked(reference)?;
            self.find_manifest(name, reference).await?;
            Command::RegistryDeleteManifest {
                repository_name: name.to_string(),
                digest,
            }
        } else {
            oci::validate_tag(reference)?;
            self.find_manifest(name, reference).await?;
            Command::RegistryDeleteTag {
                repository_name: name.to_string(),
                tag: reference.to_string(),
            }
        };
        self.propose(command).await.map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                RegistryError {
                    code: "MANIFEST_UNKNOWN",
                    ..e
                }
            } else {
                e
            }
        })?;
        Ok(StatusCode::ACCEPTED.into_response())
    }

    // --- blobs -------------------------------------------------------

    async fn get_blob(
        &self,
        name: &str,
        digest: &Digest,
        head: bool,
        range: Option<String>,
    ) -> Answer {
        let linked = self.read(|s| s.blob(name, digest));
        let local = match linked {
            // Linked in the state but pushed to another server: copied here first.
            Some(_) => Some(self.sync.ensure(digest).await?),
            None => None,
        };
        let size = match local {
            Some(size) => size,
            None => {
                return Err(fail(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    format!("blob {digest} is not in repository {name:?}"),
                ))
            }
        };
        let (status, start, end) = match range.as_deref() {
            None => (StatusCode::OK, 0, size.saturating_sub(1)),
            Some(range) => match oci::parse_range(range, size) {
                Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
                None => {
                    return Err(fail(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "BLOB_UNKNOWN",
                        format!("range {range:?} is not within the blob's {size} bytes"),
                    )
                    .with(header::CONTENT_RANGE, format!("bytes */{size}")))
                }
            },
        };
        let length = if size == 0 { 0 } else { end - start + 1 };
        let mut response = if head || length == 0 {
            Response::new(Body::empty())
        } else {
            let mut file = tokio::fs::File::open(self.blobs.blob_path(digest))
                .await
                .map_err(|e| {
                    fail(
                        StatusCode::NOT_FOUND,
                        "BLOB_UNKNOWN",
                        format!("blob {digest} cannot be read: {e}"),
                    )
                })?;
            if start > 0 {
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(|e| {
                        fail(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "UNKNOWN",
                            format!("cannot read blob {digest}: {e}"),
                        )
                    })?;
            }
            let stream = tokio_util::io::ReaderStream::with_capacity(file.take(length), READ_CHUNK);
            Response::new(Body::from_stream(stream))
        };
        *response.status_mut() = status;
        let headers = response.headers_mut();
        insert(headers, header::CONTENT_TYPE, "application/octet-stream");
        insert(headers, header::CONTENT_LENGTH, &length.to_string());
        insert(headers, header::ACCEPT_RANGES, "bytes");
        insert(headers, "docker-content-digest", digest.as_str());
        if status == StatusCode::PARTIAL_CONTENT {
            insert(
                headers,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{size}"),
            );
        }
        Ok(response)
    }

    async fn delete_blob(&self, name: &str, digest: &Digest) -> Answer {
        if self.read(|s| s.blob(name, digest)).is_none() {
            return Err(fail(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                format!("blob {digest} is not in repository {name:?}"),
            ));
        }
        self.propose(Command::RegistryUnlinkBlob {
            repository_name: name.to_string(),
            digest: digest.clone(),
        })
        .await?;
        let mut response = StatusCode::ACCEPTED.into_response();
        insert(
            response.headers_mut(),
            "docker-content-digest",
            digest.as_str(),
        );
        Ok(response)
    }

    // --- uploads -----------------------------------------------------

    async fn start_upload(&self, name: &str, request: Request<Body>) -> Answer {
        let params = query(&request);
        if let (Some(mount), Some(from)) = (params.get("mount"), params.get("from")) {
            let digest = digest_checked(mount)?;
            if oci::validate_repository_name(from).is_ok() {
                if let (Some(size), Some(_)) = (
                    self.read(|s| s.blob(from, &digest)),
                    self.blobs.size(&digest),
                ) {
                    self.link(name, &digest, size).await?;
                    return Ok(blob_created(name, &digest));
                }
            }
        }
        let upload = self.blobs.start(name)?;
        let mut upload = upload.lock().await;
        if let Some(digest) = params.get("digest") {
            let digest = match digest_checked(digest) {
                Ok(digest) => digest,
                Err(e) => {
                    self.blobs.discard(&mut upload);
                    return Err(e);
                }
            };
            if let Err(e) = self.receive(&mut upload, request.into_body()).await {
                self.blobs.discard(&mut upload);
                return Err(e);
            }
            return self.complete(name, &mut upload, &digest).await;
        }
        let mut response = StatusCode::ACCEPTED.into_response();
        let headers = response.headers_mut();
        insert(
            headers,
            header::LOCATION,
            &upload_location(name, &upload.id),
        );
        insert(headers, header::RANGE, &upload_range(0));
        insert(headers, header::CONTENT_LENGTH, "0");
        insert(headers, "docker-upload-uuid", &upload.id);
        Ok(response)
    }

    /// The upload of `name` with `id`, or BLOB_UPLOAD_UNKNOWN.
    fn find_upload(
        &self,
        name: &str,
        id: &str,
    ) -> Result<Arc<tokio::sync::Mutex<Upload>>, RegistryError> {
        self.blobs
            .upload(id)
            .filter(|u| u.try_lock().map(|u| u.repository == name).unwrap_or(true))
            .ok_or_else(|| {
                fail(
                    StatusCode::NOT_FOUND,
                    "BLOB_UPLOAD_UNKNOWN",
                    format!("upload {id:?} is not in progress on this server for {name:?}: start a new upload"),
                )
            })
    }

    async fn upload_status(&self, name: &str, id: &str) -> Answer {
        let upload = self.find_upload(name, id)?;
        let upload = upload.lock().await;
        Ok(upload_accepted(name, &upload, StatusCode::NO_CONTENT))
    }

    /// Checks a chunk's Content-Range against what the upload holds: a
    /// chunk must start exactly where the upload ends.
    fn check_range(
        &self,
        name: &str,
        upload: &Upload,
        headers: &HeaderMap,
    ) -> Result<(), RegistryError> {
        let Some(range) = header_str(headers, header::CONTENT_RANGE) else {
            return Ok(());
        };
        let spec = range.trim().strip_prefix("bytes ").unwrap_or(range.trim());
        let spec = spec.split('/').next().unwrap_or(spec);
        let parsed = spec.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
        });
        let refuse = |why: String| {
            fail(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                why,
            )
            .with(header::LOCATION, upload_location(name, &upload.id))
            .with(header::RANGE, upload_range(upload.offset))
        };
        match parsed {
            Some((start, end)) if start == upload.offset && end >= start => {
                let length = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
                if length.is_some_and(|l| l != end - start + 1) {
                    return Err(refuse(format!(
                        "Content-Range {range:?} does not match the Content-Length: send both for the same bytes"
                    )));
                }
                Ok(())
            }
            Some((start, _)) => Err(refuse(format!(
                "the chunk starts at byte {start} but the upload holds {} bytes: send the chunk that starts at {} (GET the upload to see its offset)",
                upload.offset, upload.offset
            ))),
            None => Err(refuse(format!("invalid Content-Range {range:?}: send START-END"))),
        }
    }

    async fn patch_upload(&self, name: &str, id: &str, request: Request<Body>) -> Answer {
        let upload = self.find_upload(name, id)?;
        let mut upload = upload.lock().await;
        self.check_range(name, &upload, request.headers())?;
        self.receive(&mut upload, request.into_body()).await?;
        Ok(upload_accepted(name, &upload, StatusCode::ACCEPTED))
    }

    async fn finish_upload(&self, name: &str, id: &str, request: Request<Body>) -> Answer {
        let params = query(&request);
        let upload = self.find_upload(name, id)?;
        let mut upload = upload.lock().await;
        let Some(digest) = params.get("digest") else {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                "finishing an upload needs ?digest=sha256:...: name the blob's digest",
            ));
        };
        let digest = digest_checked(digest)?;
        self.check_range(name, &upload, request.headers())?;
        self.receive(&mut upload, request.into_body()).await?;
        self.complete(name, &mut upload, &digest).await
    }

    async fn cancel_upload(&self, name: &str, id: &str) -> Answer {
        let upload = self.find_upload(name, id)?;
        let mut upload = upload.lock().await;
        self.blobs.discard(&mut upload);
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    /// Streams a request body into the upload in bounded pieces. A body that
    /// breaks off keeps what arrived (the upload can be resumed from its
    /// offset).
    async fn receive(&self, upload: &mut Upload, body: Body) -> Result<(), RegistryError> {
        let mut stream = body.into_data_stream();
        let mut buffer = BytesMut::new();
        loop {
            match stream.next().await {
                Some(Ok(data)) => {
                    if buffer.is_empty() && data.len() >= WRITE_CHUNK {
                        self.blobs.append(upload, data).await?;
                        continue;
                    }
                    buffer.extend_from_slice(&data);
                    if buffer.len() >= WRITE_CHUNK {
                        self.blobs.append(upload, buffer.split().freeze()).await?;
                    }
                }
                Some(Err(error)) => {
                    self.blobs.append(upload, buffer.split().freeze()).await?;
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        "BLOB_UPLOAD_INVALID",
                        format!(
                            "the upload's body broke off after {} bytes ({error}): resume from that offset",
                            upload.offset
                        ),
                    ));
                }
                None => break,
            }
        }
        self.blobs.append(upload, buffer.freeze()).await?;
        Ok(())
    }

    /// Verifies and stores the upload, then links it into the repository.
    async fn complete(&self, name: &str, upload: &mut Upload, digest: &Digest) -> Answer {
        match self.blobs.finish(upload, digest).await? {
            FinishOutcome::Mismatch(actual) => Err(fail(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!("the uploaded bytes have digest {actual}, not {digest}: nothing was stored; upload the blob again"),
            )),
            FinishOutcome::Stored(size) => {
                self.link(name, digest, size).await?;
                Ok(blob_created(name, digest))
            }
        }
    }

    /// Whether the repository holds `reference` (a tag or a digest).
    pub(super) fn holds(&self, name: &str, reference: &str) -> bool {
        self.read(|s| match Digest::parse(reference) {
            Ok(digest) => s.manifest(name, &digest).is_some(),
            Err(_) => s.tag(name, reference).is_some(),
        })
    }

    /// Links a stored blob into a repository (the pull-through cache).
    pub(super) async fn link_blob(
        &self,
        name: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        self.link(name, digest, size).await
    }

    async fn link(&self, name: &str, digest: &Digest, size: u64) -> Result<(), RegistryError> {
        self.propose(Command::RegistryLinkBlob {
            repository_name: name.to_string(),
            digest: digest.clone(),
            size,
            now_ms: now_ms(),
        })
        .await
        .map(|_| ())
    }
}

/// The token endpoint's URL as the client reached this server.
fn realm(request: &Request<Body>) -> String {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| header_str(request.headers(), header::HOST).map(str::to_string))
        .unwrap_or_default();
    let scheme = request
        .extensions()
        .get::<super::listener::Scheme>()
        .map_or("http", |scheme| scheme.0);
    format!("{scheme}://{host}/v2/token")
}

fn insert(headers: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn link_next(response: &mut Response, url: &str) {
    insert(
        response.headers_mut(),
        header::LINK,
        &format!("<{url}>; rel=\"next\""),
    );
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    insert(
        headers,
        header::LOCATION,
        &format!("/v2/{name}/blobs/{digest}"),
    );
    insert(headers, header::CONTENT_LENGTH, "0");
    insert(headers, "docker-content-digest", digest.as_str());
    response
}

fn upload_accepted(name: &str, upload: &Upload, status: StatusCode) -> Response {
    let mut response = status.into_response();
    let headers = response.headers_mut();
    insert(
        headers,
        header::LOCATION,
        &upload_location(name, &upload.id),
    );
    insert(headers, header::RANGE, &upload_range(upload.offset));
    insert(headers, header::CONTENT_LENGTH, "0");
    insert(headers, "docker-upload-uuid", &upload.id);
    response
}

/// A sorted list cut after `last` to at most `n` entries; the second value
/// is the next page's `(n, last)` when entries remain.
#[allow(clippy::type_complexity)]
fn paginate(
    items: Vec<String>,
    params: &BTreeMap<String, String>,
) -> Result<(Vec<String>, Option<(usize, String)>), RegistryError> {
    let n = match params.get("n") {
        None => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            fail(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("n={n:?} is not a number: ask for n=1 or more entries"),
            )
        })?),
    };
    let mut items = items;
    items.sort();
    if let Some(last) = params.get("last") {
        items.retain(|item| item > last);
    }
    match n {
        Some(n) if items.len() > n => {
            items.truncate(n);
            let next = items.last().cloned().map(|last| (n, last));
            Ok((items, next))
        }
        _ => Ok((items, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_endpoint() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b".into())));
        assert_eq!(
            route("/v2/a/b/manifests/v1"),
            Some(Route::Manifest("a/b".into(), "v1".into()))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/"),
            Some(Route::UploadStart("a".into()))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/xyz"),
            Some(Route::Upload("a".into(), "xyz".into()))
        );
        assert_eq!(
            route("/v2/blobs/blobs/sha256:1"),
            Some(Route::Blob("blobs".into(), "sha256:1".into()))
        );
        assert_eq!(route("/v2/a"), None);
    }

    #[test]
    fn pages_honour_n_and_last() {
        let items: Vec<String> = ["c", "a", "b", "d"].iter().map(|s| s.to_string()).collect();
        let params = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let (page, next) = paginate(items.clone(), &params(&[("n", "2")])).unwrap();
        assert_eq!(page, ["a", "b"]);
        assert_eq!(next, Some((2, "b".into())));
        let (page, next) = paginate(items.clone(), &params(&[("n", "2"), ("last", "b")])).unwrap();
        assert_eq!(page, ["c", "d"]);
        assert_eq!(next, None);
        assert!(paginate(items, &params(&[("n", "x")])).is_err());
        assert_eq!(percent_decode("sha256%3Aab+c"), "sha256:ab c");
    }
}
