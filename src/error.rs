//! The crate's one error type. Each variant says what the caller should do:
//! fix the input, look elsewhere, retry on the leader, wait and retry, or
//! report a bug. `anyhow` is used only at the edges (`main`, the CLI).
//! The conversion to and from `tonic::Status` lives in `api::status`.

use serde::{Deserialize, Serialize};

/// Every failure the control plane, the agent and the API report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a rule; fix it and send it again.
    /// The text names the offending field.
    #[error("{0}")]
    InvalidInput(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (already exists, still in use).
    #[error("{0}")]
    Conflict(String),
    /// This server is not the leader; retry on the named address when known.
    #[error("this server is not the leader{}", leader_hint(.leader_address))]
    NotLeader { leader_address: Option<String> },
    /// The control plane cannot serve the request now (no quorum, shutting
    /// down, timed out); retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a broken invariant; the text says what.
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_hint(address: &Option<String>) -> String {
    match address {
        Some(address) => format!(": retry on the leader at {address}"),
        None => ": no leader is known yet, retry in a moment".to_string(),
    }
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The ECS exception name an `aws ecs` user expects for this error.
    pub fn ecs_code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "InvalidParameterException",
            Error::NotFound(_) => "ResourceNotFoundException",
            Error::Conflict(_) => "ResourceInUseException",
            Error::NotLeader { .. } | Error::Unavailable(_) => "ServerException",
            Error::Internal(_) => "ServerException",
        }
    }

    /// Whether retrying the same request (with the same request id) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NotLeader { .. } | Error::Unavailable(_))
    }
}

impl From<sled::Error> for Error {
    fn from(error: sled::Error) -> Self {
        Error::Internal(format!("storage: {error}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::InvalidInput(format!("invalid json: {error}"))
    }
}
