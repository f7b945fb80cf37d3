//! The AWS door: `POST /` on the API port speaks AWS's own wire protocols,
//! as botocore's service models define them, so the unchanged `aws` CLI and
//! the SDKs (boto3, ...) drive orc with `AWS_ENDPOINT_URL` pointing here.
//!
//! * ECS and ECR use `awsJson1_1` (`X-Amz-Target: Prefix.Action`, a JSON
//!   body, JSON errors with `__type`): [`json`].
//! * ELBv2 uses the `query` protocol (a form-encoded body with
//!   `Action=…&Version=2015-12-01`, XML answers): [`query`].
//!
//! Every request goes through [`super::ApiContext::dispatch`], the one
//! `match` that `Orc.Call` also goes through: the door only parses and
//! shapes, and never implements a verb of its own.
//!
//! Requests signed with AWS Signature Version 4 are accepted whatever their
//! signature (orc has no access keys yet): [`verify_signature`] is where
//! the security issue checks them.
//!
//! Any other HTTP request that is neither gRPC nor for the registry
//! (`/v2/`) nor `/metrics` gets
//! [`not_served`]: an HTTP error whose body says what the port serves.

pub mod json;
pub mod query;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse as _, Response};

use super::ApiContext;
use crate::vocab::limits::{human_bytes, MAX_REQUEST_BYTES};
use crate::vocab::principal::Principal;

/// What the API port serves, for answers to requests it does not.
pub const SERVED: &str = "this is orc's API port: it serves gRPC (the `orc` CLI, agents and other servers), \
the AWS door at POST / (AWS_ENDPOINT_URL=http://HOST:PORT for the aws CLI and SDKs: ECS and ECR over awsJson1_1, \
ELBv2 over the query protocol), the image registry under /v2/ (docker, skopeo) and GET /metrics (Prometheus)";

/// The routes of the door, to merge into the API port's router.
pub fn routes(context: ApiContext) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::post(door))
        .with_state(context)
}

/// The wire protocol a request to `POST /` speaks, told by its headers.
enum Protocol {
    /// `awsJson1_1`: the `X-Amz-Target` header, when present.
    Json(Option<String>),
    /// The `query` protocol: a form-encoded body.
    Query,
}

impl Protocol {
    fn of(headers: &HeaderMap) -> Protocol {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match headers.get("x-amz-target") {
            Some(target) => Protocol::Json(Some(String::from_utf8_lossy(target.as_bytes()).into())),
            None if content_type.starts_with("application/x-www-form-urlencoded") => {
                Protocol::Query
            }
            None => Protocol::Json(None),
        }
    }

    /// A refusal before the request reached its protocol's handler.
    fn refuse(&self, status: StatusCode, message: &str) -> Response {
        match self {
            Protocol::Json(_) => json::error(status, json::CLIENT_EXCEPTION, message, ""),
            Protocol::Query => query::error(status, query::INVALID_REQUEST, message, ""),
        }
    }
}

/// Checks the request's AWS Signature Version 4 (the `Authorization`
/// header, or the `X-Amz-*` query parameters) against the body.
///
/// Returns who the request is authorized as. orc has no access keys until
/// the security issue lands, so today every signature is accepted, and so is
/// an unsigned request (the README says so): the request is the connection's
/// principal (the listener's, `Principal::Insecure` today). This is the one
/// place that check goes.
pub fn verify_signature(
    connection: Option<Principal>,
    _headers: &HeaderMap,
    _body: &[u8],
) -> Result<Principal, String> {
    connection.ok_or_else(|| {
        "the request carries no credential: sign it with an orc access key (aws configure)".into()
    })
}

/// `POST /`: the AWS door.
async fn door(
    State(context): State<ApiContext>,
    connection: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let protocol = Protocol::of(&headers);
    let body = match read_body(&headers, body).await {
        Ok(body) => body,
        Err(message) => {
            crate::metrics::record_aws_request(false);
            return protocol.refuse(StatusCode::PAYLOAD_TOO_LARGE, &message);
        }
    };
    let principal = match verify_signature(connection.map(|e| e.0), &headers, &body) {
        Ok(principal) => principal,
        Err(message) => {
            crate::metrics::record_aws_request(false);
            return protocol.refuse(StatusCode::FORBIDDEN, &message);
        }
    };
    let response = match protocol {
        Protocol::Json(target) => {
            json::serve(&context, &principal, target.as_deref(), &headers, &body).await
        }
        Protocol::Query => query::serve(&context, &principal, &body).await,
    };
    crate::metrics::record_aws_request(response.status().is_success());
    response
}

/// The body, refused past orc's request limit (the same as one gRPC
/// request's) before more than that is read.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, String> {
    let too_large = || {
        format!(
            "the request body is over orc's limit of {} per request: send less at once",
            human_bytes(MAX_REQUEST_BYTES)
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|_| too_large())
}

/// The answer to an HTTP request the port does not serve (any path and
/// method but gRPC's, the door's and `/metrics`). A gRPC request for an
/// unknown method still gets gRPC's own `UNIMPLEMENTED`.
pub async fn not_served(method: Method, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented(format!(
            "{} is not a method of orc's gRPC services",
            uri.path()
        ))
        .into_http::<()>()
        .into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let status = if uri.path() == "/" || uri.path() == "/metrics" {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::NOT_FOUND
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{method} {} is not served here: {SERVED}\n", uri.path()),
    )
        .into_response()
}
