//! The one place where `crate::Error` becomes a `tonic::Status` and back.

use tonic::{Code, Status};

use crate::Error;

/// Metadata key carrying the leader's address on a `NotLeader` answer.
const LEADER_KEY: &str = "orc-leader";

/// Our error as a gRPC status.
pub fn to_status(error: Error) -> Status {
    let message = error.to_string();
    match error {
        Error::InvalidInput(_) => Status::invalid_argument(message),
        Error::NotFound(_) => Status::not_found(message),
        Error::Conflict(_) => Status::failed_precondition(message),
        Error::NotLeader { leader_address } => {
            let mut status = Status::unavailable(message);
            if let Some(address) = leader_address.and_then(|a| a.parse().ok()) {
                status.metadata_mut().insert(LEADER_KEY, address);
            }
            status
        }
        Error::Unavailable(_) => Status::unavailable(message),
        Error::Internal(_) => Status::internal(message),
        Error::Refused(refusal, _) => match refusal.kind() {
            crate::error::Kind::InvalidInput => Status::invalid_argument(message),
            crate::error::Kind::NotFound => Status::not_found(message),
            crate::error::Kind::Conflict => Status::failed_precondition(message),
            crate::error::Kind::AccessDenied => Status::permission_denied(message),
            crate::error::Kind::Unauthenticated => Status::unauthenticated(message),
        },
    }
}

/// A handler's domain answer as a gRPC response: the value converted to its
/// message, the error to its status.
pub fn respond<T, M: From<T>>(result: crate::Result<T>) -> Result<tonic::Response<M>, Status> {
    result
        .map(|value| tonic::Response::new(value.into()))
        .map_err(to_status)
}

/// A gRPC status as our error.
pub fn from_status(status: Status) -> Error {
    let message = status.message().to_string();
    match status.code() {
        // tonic's words for a message over the server's decoding limit.
        Code::OutOfRange | Code::ResourceExhausted if message.contains("message length too large") => {
            Error::InvalidInput(format!(
                "the request is over the server's limit of {} per request ({message}): send less at once",
                crate::vocab::limits::human_bytes(crate::vocab::limits::MAX_REQUEST_BYTES)
            ))
        }
        Code::InvalidArgument | Code::OutOfRange => Error::InvalidInput(message),
        Code::NotFound => Error::NotFound(message),
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => Error::Conflict(message),
        Code::PermissionDenied => {
            Error::Refused(crate::error::Refusal::AccessDenied, message)
        }
        Code::Unauthenticated => {
            Error::Refused(crate::error::Refusal::Unauthenticated, message)
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            match status
                .metadata()
                .get(LEADER_KEY)
                .and_then(|v| v.to_str().ok())
            {
                Some(address) => Error::NotLeader {
                    leader_address: Some(address.to_string()),
                },
                None if message.is_empty()
                    || message.contains("transport error")
                    || message.contains("tcp connect") =>
                {
                    Error::Unavailable(format!(
                        "cannot reach the server ({message}); is it running?"
                    ))
                }
                None => Error::Unavailable(message),
            }
        }
        // The connection broke mid-request (the server died or restarted):
        // the request may or may not have been applied, and a retry with the
        // same request id is safe.
        Code::Unknown
            if message.contains("transport error")
                || message.contains("connection")
                || message.contains("h2 protocol error")
                || message.contains("broken pipe") =>
        {
            Error::Unavailable(format!(
                "the connection to the server broke ({message}); retry"
            ))
        }
        _ => Error::Internal(message),
    }
}
