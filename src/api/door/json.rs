//! AWS's `awsJson1_1` protocol, for ECS (`AmazonEC2ContainerServiceV20141113`)
//! and ECR (`AmazonEC2ContainerRegistry_V20150921`): `POST /` with
//! `X-Amz-Target: Prefix.Action` and the action's JSON request, answered
//! with its JSON response, or `{"__type": "…Exception", "message": "…"}` and
//! status 400 (500 for a server fault). orc's own JSON already has these
//! services' shapes (camelCase, timestamps in epoch seconds), so the body
//! passes through unchanged.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use serde_json::json;

use crate::api::ApiContext;
use crate::error::Refusal;
use crate::vocab::action::{Action, EcrAction, EcsAction, SecretsManagerAction};
use crate::vocab::principal::Principal;
use crate::Error;

/// ECS's target prefix.
pub const ECS_TARGET: &str = "AmazonEC2ContainerServiceV20141113";
/// ECR's target prefix.
pub const ECR_TARGET: &str = "AmazonEC2ContainerRegistry_V20150921";
/// Secrets Manager's target prefix.
pub const SECRETS_MANAGER_TARGET: &str = "secretsmanager";
/// The protocol's content type.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The generic client error both services model.
pub const CLIENT_EXCEPTION: &str = "ClientException";
/// The protocol's error for a target no service here implements.
const UNKNOWN_OPERATION: &str = "UnknownOperationException";
/// The protocol's error for a body that is not the JSON it should be.
const SERIALIZATION: &str = "SerializationException";

/// Serves one awsJson1_1 request.
pub(super) async fn serve(
    context: &ApiContext,
    principal: &Principal,
    target: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let request_id = crate::vocab::ids::request_id();
    let action = match parse_target(target) {
        Ok(action) => action,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                UNKNOWN_OPERATION,
                &message,
                &request_id,
            )
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-amz-json-")
        && !content_type.starts_with("application/json")
    {
        let message = format!(
            "the Content-Type is {content_type:?}: {target} takes a JSON body sent as {CONTENT_TYPE}",
            target = target.unwrap_or_default()
        );
        return error(
            StatusCode::BAD_REQUEST,
            SERIALIZATION,
            &message,
            &request_id,
        );
    }
    let body = match check_body(body) {
        Ok(body) => body,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                SERIALIZATION,
                &message,
                &request_id,
            )
        }
    };
    tracing::debug!(%action, %request_id, "aws door: awsJson1_1 request");
    match context
        .dispatch(principal, action, body, request_id.clone())
        .await
    {
        Ok(result) => {
            for warning in &result.warnings {
                tracing::debug!(%action, %request_id, %warning, "aws door: warning not shown to the AWS client");
            }
            let mut response = (
                [(header::CONTENT_TYPE, CONTENT_TYPE)],
                result.body.to_string(),
            )
                .into_response();
            set_request_id(&mut response, &request_id);
            response
        }
        Err(failure) => {
            tracing::debug!(%action, %request_id, error = %failure, "aws door: action failed");
            let (status, code) = exception(action, &failure);
            error(status, code, &failure.to_string(), &request_id)
        }
    }
}

/// The action an `X-Amz-Target` names, or the protocol's words for why not.
fn parse_target(target: Option<&str>) -> Result<Action, String> {
    let Some(target) = target else {
        return Err(format!(
            "the request has no X-Amz-Target header: an awsJson1_1 request names its operation there \
             (`{ECS_TARGET}.ListClusters`); ELBv2 requests are form-encoded (Action=...)"
        ));
    };
    let (prefix, name) = target.split_once('.').unwrap_or((target, ""));
    let parsed = match prefix {
        ECS_TARGET => name.parse::<EcsAction>().map(Action::Ecs).ok(),
        ECR_TARGET => name.parse::<EcrAction>().map(Action::Ecr).ok(),
        SECRETS_MANAGER_TARGET => name
            .parse::<SecretsManagerAction>()
            .map(Action::SecretsManager)
            .ok(),
        _ => {
            return Err(format!(
                "unknown operation {target:?}: orc serves ECS ({ECS_TARGET}.*), ECR ({ECR_TARGET}.*) and Secrets Manager ({SECRETS_MANAGER_TARGET}.*) over awsJson1_1"
            ))
        }
    };
    parsed.ok_or_else(|| {
        let service = match prefix {
            ECS_TARGET => "ECS",
            ECR_TARGET => "ECR",
            _ => "Secrets Manager",
        };
        format!("unknown operation {name:?}: orc's {service} does not implement it (the README lists the supported actions)")
    })
}

/// The body as UTF-8 text holding one JSON object (an empty body is `{}`),
/// or why not.
fn check_body(body: &Bytes) -> Result<&str, String> {
    let text = std::str::from_utf8(body)
        .map_err(|e| format!("the request body is not UTF-8 ({e}): send JSON text"))?;
    if text.trim().is_empty() {
        return Ok("{}");
    }
    if !text.trim_start().starts_with('{') {
        return Err("the request body is not a JSON object: send {...}".into());
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    Ok(text)
}

/// The status and the exception the service would raise for `error`.
fn exception(action: Action, error: &Error) -> (StatusCode, &'static str) {
    let code = match action {
        Action::Ecs(_) => ecs_exception(error),
        // ECR models the same generic names for what orc's registry reports.
        // ECR's own name for a missing image or tag (repository refusals
        // have theirs below).
        Action::Ecr(_) if matches!(error, Error::NotFound(_)) => "ImageNotFoundException",
        Action::Ecr(_) | Action::Elbv2(_) | Action::Iam(_) => match error {
            Error::InvalidInput(_) => "InvalidParameterException",
            _ => ecs_exception(error),
        },
        Action::SecretsManager(_) => match error {
            Error::InvalidInput(_) => "InvalidParameterException",
            Error::NotFound(_) => "ResourceNotFoundException",
            Error::Conflict(_) => "ResourceExistsException",
            _ => ecs_exception(error),
        },
    };
    let status = match error.kind() {
        Some(_) => StatusCode::BAD_REQUEST,
        None => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, code)
}

/// The ECS exception an `aws ecs` user expects for `error`.
pub fn ecs_exception(error: &Error) -> &'static str {
    match error {
        Error::InvalidInput(_) => "InvalidParameterException",
        // ECS answers an unknown task definition, task or container
        // instance with a ClientException.
        Error::NotFound(_) => CLIENT_EXCEPTION,
        Error::Conflict(_) => "ResourceInUseException",
        Error::NotLeader { .. } | Error::Unavailable(_) | Error::Internal(_) => "ServerException",
        Error::Refused(refusal, _) => match refusal {
            Refusal::ClusterNotFound => "ClusterNotFoundException",
            Refusal::ServiceNotFound => "ServiceNotFoundException",
            Refusal::ServiceNotActive => "ServiceNotActiveException",
            Refusal::ClusterContainsServices => "ClusterContainsServicesException",
            Refusal::ClusterContainsTasks => "ClusterContainsTasksException",
            Refusal::ClusterContainsContainerInstances => {
                "ClusterContainsContainerInstancesException"
            }
            // A load balancer refusal met by an ECS action (a service's
            // target group): ECS calls it an invalid parameter.
            Refusal::LoadBalancerNotFound
            | Refusal::TargetGroupNotFound
            | Refusal::ListenerNotFound
            | Refusal::RuleNotFound
            | Refusal::DuplicateLoadBalancerName
            | Refusal::DuplicateTargetGroupName
            | Refusal::DuplicateListener
            | Refusal::PriorityInUse
            | Refusal::ResourceInUse => "InvalidParameterException",
            Refusal::AccessDenied => "AccessDeniedException",
            Refusal::Unauthenticated => "UnrecognizedClientException",
            Refusal::RepositoryNotFound => "RepositoryNotFoundException",
            Refusal::RepositoryAlreadyExists => "RepositoryAlreadyExistsException",
            Refusal::RepositoryNotEmpty => "RepositoryNotEmptyException",
        },
    }
}

/// An awsJson1_1 error answer.
pub(super) fn error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        json!({"__type": code, "message": message}).to_string(),
    )
        .into_response();
    if let Ok(code) = HeaderValue::from_str(code) {
        response.headers_mut().insert("x-amzn-errortype", code);
    }
    set_request_id(&mut response, request_id);
    response
}

fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(id) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-requestid", id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_names_a_service_and_an_action() {
        assert_eq!(
            parse_target(Some("AmazonEC2ContainerServiceV20141113.RunTask")).unwrap(),
            Action::Ecs(EcsAction::RunTask)
        );
        let unknown =
            parse_target(Some("AmazonEC2ContainerServiceV20141113.CreateTaskSet")).unwrap_err();
        assert!(unknown.contains("\"CreateTaskSet\""), "{unknown}");
        let prefix = parse_target(Some("DynamoDB_20120810.PutItem")).unwrap_err();
        assert!(prefix.contains("DynamoDB_20120810.PutItem"), "{prefix}");
        assert!(parse_target(None).unwrap_err().contains("X-Amz-Target"));
    }

    #[test]
    fn hostile_bodies_are_named() {
        assert_eq!(check_body(&Bytes::from_static(b"")).unwrap(), "{}");
        assert!(check_body(&Bytes::from_static(b"\xff\xfe{}"))
            .unwrap_err()
            .contains("UTF-8"));
        assert!(check_body(&Bytes::from_static(b"[1]"))
            .unwrap_err()
            .contains("JSON object"));
        assert!(check_body(&Bytes::from_static(b"{\"a\":"))
            .unwrap_err()
            .contains("not valid JSON"));
    }

    #[test]
    fn refusals_map_to_ecs_exceptions() {
        let missing = Error::Refused(Refusal::ClusterNotFound, "cluster not found".into());
        assert_eq!(
            exception(Action::Ecs(EcsAction::ListTasks), &missing),
            (StatusCode::BAD_REQUEST, "ClusterNotFoundException")
        );
        let fault = Error::Unavailable("no leader".into());
        assert_eq!(
            exception(Action::Ecs(EcsAction::ListTasks), &fault),
            (StatusCode::INTERNAL_SERVER_ERROR, "ServerException")
        );
    }
}
