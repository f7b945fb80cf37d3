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
//! Requests signed with AWS Signature Version 4 with one of the cluster's
//! access keys (`orc iam create-access-key`) are served as that key's user
//! ([`verify_signature`], [`sigv4`]); what an unsigned request or an unknown
//! key gets depends on the connection (see [`verify_signature`]).
//!
//! Any other HTTP request that is neither gRPC nor for the registry
//! (`/v2/`) nor `/metrics` gets
//! [`not_served`]: an HTTP error whose body says what the port serves.

pub mod json;
pub mod query;
pub mod sigv4;

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

    /// A refused signature, with the protocol's code for it (awsJson1_1:
    /// `MissingAuthenticationTokenException`, `IncompleteSignatureException`,
    /// `UnrecognizedClientException`, `InvalidSignatureException`; query:
    /// `MissingAuthenticationToken`, `IncompleteSignature`,
    /// `InvalidClientTokenId`, `SignatureDoesNotMatch`).
    fn refuse_signature(&self, failure: &sigv4::Failure) -> Response {
        use sigv4::Failure;
        let (status, json_code, query_code) = match failure {
            Failure::Missing(_) => (
                StatusCode::FORBIDDEN,
                "MissingAuthenticationTokenException",
                "MissingAuthenticationToken",
            ),
            Failure::Malformed(_) => (
                StatusCode::BAD_REQUEST,
                "IncompleteSignatureException",
                "IncompleteSignature",
            ),
            Failure::UnknownKey(_) => (
                StatusCode::FORBIDDEN,
                "UnrecognizedClientException",
                "InvalidClientTokenId",
            ),
            Failure::Mismatch(_) | Failure::Expired(_) => (
                StatusCode::FORBIDDEN,
                "InvalidSignatureException",
                "SignatureDoesNotMatch",
            ),
        };
        let request_id = crate::vocab::ids::request_id();
        match self {
            Protocol::Json(_) => json::error(status, json_code, failure.message(), &request_id),
            Protocol::Query => query::error(status, query_code, failure.message(), &request_id),
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
/// header) against the body, and returns who the request is authorized as.
///
/// * A request signed with one of the cluster's access keys is that key's
///   user, once the signature, the body's hash and the date check out
///   ([`sigv4::verify`]); any failure is refused, whatever the connection.
/// * An unsigned request is the connection's principal (a client
///   certificate's, or `Principal::Insecure` on a server started insecure);
///   with no connection principal it is refused as unauthenticated.
/// * On a server started insecure, a request signed with a key the cluster
///   does not know (the `aws` CLI needs some key to sign with) is served as
///   `Principal::Insecure`, as before orc had access keys; anywhere else it
///   is refused.
pub fn verify_signature(
    context: &ApiContext,
    connection: Option<Principal>,
    request: &sigv4::Request<'_>,
) -> Result<Principal, sigv4::Failure> {
    let now = (crate::vocab::time::now_ms() / 1000) as i64;
    authenticate(connection, request, now, |access_key_id| {
        super::iam::secret_of(&context.raft, &context.seal, access_key_id).map_err(|error| {
            match error {
                // An inactive key: refused as an unknown one, as AWS does.
                crate::Error::Refused(crate::error::Refusal::Unauthenticated, message) => {
                    sigv4::Failure::UnknownKey(message)
                }
                error => {
                    tracing::error!(%error, "cannot read an access key's secret");
                    sigv4::Failure::Mismatch(format!(
                        "this server cannot check the signature: {error}"
                    ))
                }
            }
        })
    })
}

/// [`verify_signature`]'s decision, pure: `secret_of` looks an access key
/// up (its secret and user), `now` is the server's clock in seconds.
fn authenticate(
    connection: Option<Principal>,
    request: &sigv4::Request<'_>,
    now: i64,
    secret_of: impl FnOnce(&str) -> Result<Option<(String, Principal)>, sigv4::Failure>,
) -> Result<Principal, sigv4::Failure> {
    let insecure = connection == Some(Principal::Insecure);
    let header = request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str());
    let Some(header) = header else {
        let missing = || {
            sigv4::Failure::Missing(
                "the request carries no credential: sign it with an orc access key (aws configure; `orc iam create-access-key` issues one)".into(),
            )
        };
        return match connection {
            // A connection that identifies nobody (TLS without a client
            // certificate) is no credential either.
            Some(principal)
                if matches!(
                    principal.may(crate::vocab::principal::Access::Read, "a read"),
                    Err(crate::Error::Refused(
                        crate::error::Refusal::Unauthenticated,
                        _
                    ))
                ) =>
            {
                Err(missing())
            }
            Some(principal) => Ok(principal),
            None => Err(missing()),
        };
    };
    let authorization = match sigv4::parse_authorization(header) {
        Ok(authorization) => authorization,
        Err(_) if insecure => return Ok(Principal::Insecure),
        Err(failure) => return Err(failure),
    };
    let Some((secret, principal)) = secret_of(&authorization.access_key_id)? else {
        if insecure {
            return Ok(Principal::Insecure);
        }
        return Err(sigv4::Failure::UnknownKey(format!(
            "The security token included in the request is invalid: access key {} is not one of this cluster's (`orc iam list-access-keys` lists them)",
            authorization.access_key_id
        )));
    };
    sigv4::verify(request, &authorization, &secret, now)?;
    Ok(principal)
}

/// `POST /`: the AWS door.
async fn door(
    State(context): State<ApiContext>,
    connection: Option<Extension<Principal>>,
    method: Method,
    uri: axum::http::Uri,
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
    let mut signed_headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    if !headers.contains_key(header::HOST) {
        // HTTP/2 carries the host as :authority.
        if let Some(authority) = uri.authority() {
            signed_headers.push(("host".into(), authority.to_string()));
        }
    }
    let request = sigv4::Request {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: signed_headers,
        body: &body,
    };
    let principal = match verify_signature(&context, connection.map(|e| e.0), &request) {
        Ok(principal) => principal,
        Err(failure) => {
            crate::metrics::record_aws_request(false);
            tracing::info!(reason = failure.message(), "aws door: signature refused");
            return protocol.refuse_signature(&failure);
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

#[cfg(test)]
mod tests {
    use super::sigv4::{Failure, Request};
    use super::*;
    use crate::vocab::principal::Role;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// AWS's get-vanilla example, signed with [`SECRET`] at [`NOW`].
    const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    const NOW: i64 = 1_440_938_160;

    fn request(authorization: Option<&str>) -> Request<'static> {
        let mut headers = vec![
            ("Host".to_string(), "example.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        if let Some(value) = authorization {
            headers.push(("Authorization".to_string(), value.to_string()));
        }
        Request {
            method: "GET",
            path: "/",
            query: "",
            headers,
            body: b"",
        }
    }

    fn ada() -> Principal {
        Principal::User {
            name: "ada".into(),
            role: Role::Operator,
        }
    }

    fn known(id: &str) -> Result<Option<(String, Principal)>, Failure> {
        Ok((id == "AKIDEXAMPLE").then(|| (SECRET.to_string(), ada())))
    }

    fn unknown(_: &str) -> Result<Option<(String, Principal)>, Failure> {
        Ok(None)
    }

    #[test]
    fn who_a_request_is_depends_on_its_signature_then_its_connection() {
        let signed = request(Some(AUTHORIZATION));
        let unsigned = request(None);
        let agent = Principal::Agent {
            instance: "pi-1".into(),
        };
        // A known key's valid signature is its user, whatever the connection.
        for connection in [None, Some(Principal::Insecure), Some(agent.clone())] {
            assert_eq!(authenticate(connection, &signed, NOW, known), Ok(ada()));
        }
        // A known key with a bad signature or a skewed clock is refused even
        // on an insecure server.
        assert!(matches!(
            authenticate(Some(Principal::Insecure), &signed, NOW + 600, known),
            Err(Failure::Expired(_))
        ));
        let forged = AUTHORIZATION.replace("5fa00fa3", "5fa00fa4");
        assert!(matches!(
            authenticate(
                Some(Principal::Insecure),
                &request(Some(&forged)),
                NOW,
                known
            ),
            Err(Failure::Mismatch(_))
        ));
        // An unknown key: served as before on an insecure server, refused
        // elsewhere.
        assert_eq!(
            authenticate(Some(Principal::Insecure), &signed, NOW, unknown),
            Ok(Principal::Insecure)
        );
        assert!(matches!(
            authenticate(None, &signed, NOW, unknown),
            Err(Failure::UnknownKey(_))
        ));
        assert!(matches!(
            authenticate(Some(agent.clone()), &signed, NOW, unknown),
            Err(Failure::UnknownKey(_))
        ));
        // Unsigned: the connection's principal, or refused without one.
        assert_eq!(
            authenticate(Some(agent.clone()), &unsigned, NOW, known),
            Ok(agent)
        );
        assert_eq!(
            authenticate(Some(Principal::Insecure), &unsigned, NOW, known),
            Ok(Principal::Insecure)
        );
        assert!(matches!(
            authenticate(None, &unsigned, NOW, known),
            Err(Failure::Missing(_))
        ));
        // An unreadable header: refused unless insecure.
        let garbage = request(Some("AWS4-HMAC-SHA256 nonsense"));
        assert!(matches!(
            authenticate(None, &garbage, NOW, known),
            Err(Failure::Malformed(_))
        ));
        assert_eq!(
            authenticate(Some(Principal::Insecure), &garbage, NOW, known),
            Ok(Principal::Insecure)
        );
    }
}
