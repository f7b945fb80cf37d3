//! AWS's `query` protocol, for ELBv2 (`Version=2015-12-01`) and IAM
//! (`Version=2010-05-08`): a
//! form-encoded `POST /` with `Action=…`, members as `Name=value`, nested
//! members as `Outer.Inner`, lists as `Name.member.N` (from 1) and maps as
//! `Name.entry.N.key`/`.value`, as botocore's query serializer writes them.
//! The form becomes the action's JSON request (ELBv2's PascalCase shapes,
//! numbers and booleans typed as ELBv2's model types them), and the JSON
//! answer becomes `<ActionResponse><ActionResult>…</ActionResult>
//! <ResponseMetadata><RequestId>…` XML with lists as `<member>`; an error
//! is `<ErrorResponse><Error><Type>Sender|Receiver</Type><Code>…`.
//!
//! Both conversions are generic: no verb has code of its own here.

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse as _, Response};
use serde_json::{Map, Value};

use crate::api::ApiContext;
use crate::error::{Kind, Refusal};
use crate::vocab::action::{Action, Elbv2Action, IamAction};
use crate::vocab::principal::Principal;
use crate::Error;

/// The API version ELBv2 requests carry.
pub const ELBV2_VERSION: &str = "2015-12-01";
/// ELBv2's XML namespace.
const ELBV2_NAMESPACE: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";
/// The API version IAM requests carry.
pub const IAM_VERSION: &str = "2010-05-08";
/// IAM's XML namespace.
const IAM_NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// The code of a request the protocol cannot take (bad encoding, no action).
pub const INVALID_REQUEST: &str = "MalformedQueryString";
/// The protocol's error for an action the service does not implement.
const INVALID_ACTION: &str = "InvalidAction";
/// ELBv2's error for a request that breaks a rule.
const VALIDATION_ERROR: &str = "ValidationError";

/// Members ELBv2's model types as integers (`Port` is a string only inside
/// a `RedirectConfig`).
const INTEGER_MEMBERS: &[&str] = &[
    "CapacityUnits",
    "DecreaseRequestsRemaining",
    "DurationSeconds",
    "HealthCheckIntervalSeconds",
    "HealthCheckTimeoutSeconds",
    "HealthyThresholdCount",
    "NumberOfCaCertificates",
    "NumberOfRevokedEntries",
    "Order",
    "PageSize",
    "Port",
    "Priority",
    "RevocationId",
    "SessionTimeout",
    "TargetControlPort",
    "TotalRevokedEntries",
    "UnhealthyThresholdCount",
    "Weight",
];

/// Members ELBv2's model types as booleans.
const BOOLEAN_MEMBERS: &[&str] = &[
    "Enabled",
    "HealthCheckEnabled",
    "IgnoreClientCertificateExpiry",
    "IsDefault",
    "ResetCapacityReservation",
    "ResetTransforms",
    "UseExistingClientSecret",
];

/// Members ELBv2's model types as timestamps: epoch seconds in orc's JSON,
/// ISO 8601 in the protocol's XML.
const TIMESTAMP_MEMBERS: &[&str] = &["CreateDate", "CreatedTime", "LastModifiedTime"];

/// Serves one query-protocol request.
pub(super) async fn serve(context: &ApiContext, principal: &Principal, body: &Bytes) -> Response {
    let request_id = crate::vocab::ids::request_id();
    let refuse =
        |code: &str, message: &str| error(StatusCode::BAD_REQUEST, code, message, &request_id);
    let pairs = match decode_form(body) {
        Ok(pairs) => pairs,
        Err(message) => return refuse(INVALID_REQUEST, &message),
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(name) = field("Action") else {
        return refuse(
            INVALID_REQUEST,
            "the form has no Action: a query-protocol request names its operation as Action=... (ELBv2: Version=2015-12-01)",
        );
    };
    let name = name.to_string();
    let version = field("Version").unwrap_or("");
    let parsed = match version {
        ELBV2_VERSION => name
            .parse::<Elbv2Action>()
            .map(|a| (Action::Elbv2(a), ELBV2_NAMESPACE)),
        IAM_VERSION => name
            .parse::<IamAction>()
            .map(|a| (Action::Iam(a), IAM_NAMESPACE)),
        _ => {
            let message = format!(
                "version {version:?} of action {name:?} is not served here: orc serves ELBv2's query API (Version={ELBV2_VERSION}) and IAM's (Version={IAM_VERSION})"
            );
            return refuse(INVALID_ACTION, &message);
        }
    };
    let Ok((action, namespace)) = parsed else {
        let message = format!(
            "unknown operation {name:?}: orc does not implement it (the README lists the supported actions)"
        );
        return refuse(INVALID_ACTION, &message);
    };
    let request = match form_to_json(
        pairs
            .iter()
            .filter(|(k, _)| k != "Action" && k != "Version"),
    ) {
        Ok(request) => request,
        Err(message) => return refuse(VALIDATION_ERROR, &message),
    };
    tracing::debug!(%action, %request_id, "aws door: query request");
    match context
        .dispatch(principal, action, &request.to_string(), request_id.clone())
        .await
    {
        Ok(result) => {
            let mut xml = String::with_capacity(512);
            xml.push_str(&format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{name}Response xmlns=\"{namespace}\"><{name}Result>"
            ));
            write_xml(&result.body, &mut xml);
            xml.push_str(&format!(
                "</{name}Result><ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{name}Response>\n"
            ));
            ([(header::CONTENT_TYPE, "text/xml")], xml).into_response()
        }
        Err(failure) => {
            tracing::debug!(%action, %request_id, error = %failure, "aws door: action failed");
            let (status, code) = query_error(action, &failure);
            error(status, code, &failure.to_string(), &request_id)
        }
    }
}

/// The status and the service's error code for `error`.
fn query_error(action: Action, error: &Error) -> (StatusCode, &'static str) {
    if let Action::Iam(_) = action {
        return iam_error(error);
    }
    elbv2_error(error)
}

/// IAM's error codes (its messages carry the name too).
fn iam_error(error: &Error) -> (StatusCode, &'static str) {
    let text = error.to_string();
    let code = match error {
        Error::Conflict(_) if text.contains("EntityAlreadyExists") => "EntityAlreadyExists",
        Error::Conflict(_) if text.contains("LimitExceeded") => "LimitExceeded",
        Error::Conflict(_) => "DeleteConflict",
        Error::NotFound(_) => "NoSuchEntity",
        Error::InvalidInput(_) => VALIDATION_ERROR,
        _ => return elbv2_error(error),
    };
    let status = match code {
        "NoSuchEntity" => StatusCode::NOT_FOUND,
        VALIDATION_ERROR => StatusCode::BAD_REQUEST,
        _ => StatusCode::CONFLICT,
    };
    (status, code)
}

/// The status and ELB's error code for `error`.
fn elbv2_error(error: &Error) -> (StatusCode, &'static str) {
    if let Error::Refused(refusal, _) = error {
        let code = match refusal {
            Refusal::LoadBalancerNotFound => Some("LoadBalancerNotFound"),
            Refusal::TargetGroupNotFound => Some("TargetGroupNotFound"),
            Refusal::ListenerNotFound => Some("ListenerNotFound"),
            Refusal::RuleNotFound => Some("RuleNotFound"),
            Refusal::DuplicateLoadBalancerName => Some("DuplicateLoadBalancerName"),
            Refusal::DuplicateTargetGroupName => Some("DuplicateTargetGroupName"),
            Refusal::DuplicateListener => Some("DuplicateListener"),
            Refusal::PriorityInUse => Some("PriorityInUse"),
            Refusal::ResourceInUse => Some("ResourceInUse"),
            Refusal::AccessDenied => Some("AccessDenied"),
            Refusal::Unauthenticated => Some("InvalidClientTokenId"),
            Refusal::ClusterNotFound
            | Refusal::ServiceNotFound
            | Refusal::ServiceNotActive
            | Refusal::ClusterContainsServices
            | Refusal::ClusterContainsTasks
            | Refusal::ClusterContainsContainerInstances
            | Refusal::RepositoryNotFound
            | Refusal::RepositoryAlreadyExists
            | Refusal::RepositoryNotEmpty => None,
        };
        if let Some(code) = code {
            return (StatusCode::BAD_REQUEST, code);
        }
    }
    match error.kind() {
        None => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
        Some(Kind::InvalidInput) => (StatusCode::BAD_REQUEST, VALIDATION_ERROR),
        Some(Kind::NotFound) => (StatusCode::BAD_REQUEST, VALIDATION_ERROR),
        Some(Kind::Conflict) => (StatusCode::BAD_REQUEST, "ResourceInUse"),
        Some(Kind::AccessDenied) => (StatusCode::FORBIDDEN, "AccessDenied"),
        Some(Kind::Unauthenticated) => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
    }
}

/// The form's pairs, percent-decoded, or why the body is not a form.
fn decode_form(body: &Bytes) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(body)
        .map_err(|e| format!("the request body is not UTF-8 ({e}): send a form-encoded query"))?;
    let mut pairs = Vec::new();
    for piece in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        pairs.push((percent_decode(key)?, percent_decode(value)?));
    }
    Ok(pairs)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XY` a byte;
/// the bytes must be UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = [input.next(), input.next()];
                let digits = match hex {
                    [Some(a), Some(b)] => std::str::from_utf8(&[a, b])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok()),
                    _ => None,
                };
                bytes.push(digits.ok_or_else(|| {
                    format!(
                        "{text:?} has a % not followed by two hex digits: percent-encode the form"
                    )
                })?);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{text:?} does not decode to UTF-8 text"))
}

/// One step of a form key's path.
enum Step<'a> {
    Member(&'a str),
    Index(usize),
}

/// The JSON request a form's pairs spell: `A.B=v` is `{"A": {"B": v}}`,
/// `L.member.N=v` the N-th item of list `L`, `M.entry.N.key/value` an entry
/// of map `M`; leaves typed as ELBv2's model types them.
fn form_to_json<'a>(pairs: impl Iterator<Item = &'a (String, String)>) -> Result<Value, String> {
    let mut root = Value::Object(Map::new());
    let mut maps: Vec<String> = Vec::new();
    for (key, value) in pairs {
        let parts: Vec<&str> = key.split('.').collect();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < parts.len() {
            match parts[i] {
                "member" | "entry" => {
                    let n: usize = parts
                        .get(i + 1)
                        .and_then(|n| n.parse().ok())
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            format!(
                                "{key}: a list item is numbered from 1 to 1000 ({}.N)",
                                parts[i]
                            )
                        })?;
                    if parts[i] == "entry" {
                        maps.push(parts[..i].join("."));
                    }
                    steps.push(Step::Index(n - 1));
                    i += 2;
                }
                "" => return Err(format!("{key}: empty member name")),
                name => {
                    steps.push(Step::Member(name));
                    i += 1;
                }
            }
        }
        let leaf_name = parts
            .iter()
            .rev()
            .find(|p| p.parse::<usize>().is_err() && **p != "member" && **p != "entry")
            .copied()
            .unwrap_or("");
        let in_redirect = parts.contains(&"RedirectConfig");
        let leaf = typed(leaf_name, value, in_redirect);
        insert(&mut root, &steps, leaf, key)?;
    }
    // Lists numbered with gaps would leave nulls: refuse them.
    if contains_null(&root) {
        return Err("a list's items must be numbered 1, 2, 3, ... without gaps".into());
    }
    for map in maps {
        fold_map(&mut root, &map.split('.').collect::<Vec<_>>());
    }
    Ok(root)
}

fn typed(name: &str, value: &str, in_redirect: bool) -> Value {
    if INTEGER_MEMBERS.contains(&name) && !(name == "Port" && in_redirect) {
        if let Ok(n) = value.parse::<i64>() {
            return Value::from(n);
        }
    }
    if BOOLEAN_MEMBERS.contains(&name) {
        match value {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::String(value.to_string())
}

fn insert(node: &mut Value, steps: &[Step], leaf: Value, key: &str) -> Result<(), String> {
    let Some((step, rest)) = steps.split_first() else {
        *node = leaf;
        return Ok(());
    };
    let conflict = || format!("{key}: the form gives this member both a value and members");
    let child = match step {
        Step::Member(name) => {
            if node.is_null() {
                *node = Value::Object(Map::new());
            }
            let object = node.as_object_mut().ok_or_else(conflict)?;
            object.entry(name.to_string()).or_insert(Value::Null)
        }
        Step::Index(i) => {
            if node.is_null() {
                *node = Value::Array(Vec::new());
            }
            let list = node.as_array_mut().ok_or_else(conflict)?;
            if list.len() <= *i {
                list.resize(*i + 1, Value::Null);
            }
            &mut list[*i]
        }
    };
    insert(child, rest, leaf, key)
}

fn contains_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.iter().any(contains_null),
        Value::Object(members) => members.values().any(contains_null),
        _ => false,
    }
}

/// Turns the list of `{key, value}` entries at `path` into a JSON object.
fn fold_map(node: &mut Value, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        if let Value::Array(entries) = node {
            let mut object = Map::new();
            for entry in entries.iter() {
                if let (Some(Value::String(k)), Some(v)) = (entry.get("key"), entry.get("value")) {
                    object.insert(k.clone(), v.clone());
                }
            }
            *node = Value::Object(object);
        }
        return;
    };
    match node {
        Value::Object(members) => {
            if let Some(child) = members.get_mut(*first) {
                fold_map(child, rest);
            }
        }
        Value::Array(items) => {
            for item in items {
                fold_map(item, path);
            }
        }
        _ => {}
    }
}

/// Writes a JSON answer's members as the protocol's XML: an object's members
/// as elements, a list's items as `<member>`s, timestamps in ISO 8601.
fn write_xml(value: &Value, out: &mut String) {
    match value {
        Value::Object(members) => {
            for (name, member) in members {
                if member.is_null() {
                    continue;
                }
                out.push('<');
                out.push_str(name);
                out.push('>');
                match member {
                    Value::Number(n) if TIMESTAMP_MEMBERS.contains(&name.as_str()) => {
                        out.push_str(&iso8601(n.as_f64().unwrap_or(0.0)));
                    }
                    _ => write_xml(member, out),
                }
                out.push_str("</");
                out.push_str(name);
                out.push('>');
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str("<member>");
                write_xml(item, out);
                out.push_str("</member>");
            }
        }
        Value::String(text) => escape_into(text, out),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => {}
    }
}

fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// Epoch seconds (as the JSON answers carry them) as ISO 8601 UTC with
/// milliseconds (`2026-12-06T05:00:00.000Z`).
fn iso8601(seconds: f64) -> String {
    crate::vocab::time::iso_time((seconds * 1000.0).round().max(0.0) as u64)
}

/// A query-protocol error answer: `Sender` for a 4xx, `Receiver` for a 5xx.
pub(super) fn error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let fault = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let mut text = String::new();
    escape_into(message, &mut text);
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"{ELBV2_NAMESPACE}\"><Error><Type>{fault}</Type><Code>{code}</Code><Message>{text}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>\n"
    );
    (status, [(header::CONTENT_TYPE, "text/xml")], xml).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(text: &str) -> Result<Value, String> {
        let pairs = decode_form(&Bytes::from(text.to_string()))?;
        form_to_json(pairs.iter())
    }

    #[test]
    fn a_form_becomes_the_json_request() {
        let request = form(
            "Name=web&Subnets.member.1=a&Subnets.member.2=b&Tags.member.1.Key=k&Tags.member.1.Value=v%20w\
             &Port=80&HealthCheckEnabled=true&DefaultActions.member.1.RedirectConfig.Port=443\
             &Matcher.HttpCode=200",
        )
        .unwrap();
        assert_eq!(
            request,
            json!({
                "Name": "web", "Subnets": ["a", "b"], "Tags": [{"Key": "k", "Value": "v w"}],
                "Port": 80, "HealthCheckEnabled": true,
                "DefaultActions": [{"RedirectConfig": {"Port": "443"}}],
                "Matcher": {"HttpCode": "200"},
            })
        );
    }

    #[test]
    fn bad_forms_are_named() {
        assert!(form("Subnets.member.2=a")
            .unwrap_err()
            .contains("without gaps"));
        assert!(form("Subnets.member.0=a")
            .unwrap_err()
            .contains("numbered from 1"));
        assert!(form("Name=%zz").unwrap_err().contains("two hex digits"));
        assert!(form("Name=%ff").unwrap_err().contains("UTF-8"));
        assert!(form("A=1&A.B=2")
            .unwrap_err()
            .contains("both a value and members"));
    }

    #[test]
    fn an_answer_becomes_xml() {
        let mut xml = String::new();
        write_xml(
            &json!({"LoadBalancers": [{"LoadBalancerName": "a<b", "CreatedTime": 1_800_000_000.5}], "NextMarker": null}),
            &mut xml,
        );
        assert_eq!(
            xml,
            "<LoadBalancers><member><CreatedTime>2027-01-15T08:00:00.500Z</CreatedTime><LoadBalancerName>a&lt;b</LoadBalancerName></member></LoadBalancers>"
        );
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400.0), "2000-02-29T00:00:00.000Z");
    }
}
