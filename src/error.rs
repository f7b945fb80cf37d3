//! The crate's one error type. Each variant says what the caller should do:
//! fix the input, look elsewhere, retry on the leader, wait and retry, or
//! report a bug. `anyhow` is used only at the edges (`main`, the CLI).
//! The conversion to and from `tonic::Status` lives in `wire::status`; the
//! AWS exception names, in the AWS door (`api::door`).

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
    /// A refusal that AWS's APIs name with an error of their own (ECS's
    /// `ClusterNotFoundException`, ...): it behaves as its [`Refusal::kind`]
    /// everywhere, and the AWS door answers with the precise name.
    #[error("{1}")]
    Refused(Refusal, String),
}

/// What precisely was refused, where AWS's APIs have a name for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The named cluster does not exist (or is INACTIVE).
    ClusterNotFound,
    /// The named service does not exist in the cluster.
    ServiceNotFound,
    /// The service exists but is DRAINING or INACTIVE.
    ServiceNotActive,
    /// A cluster to delete still has active services.
    ClusterContainsServices,
    /// A cluster to delete still has tasks that are not stopped.
    ClusterContainsTasks,
    /// A cluster to delete still has registered container instances.
    ClusterContainsContainerInstances,
    /// The named load balancer does not exist.
    LoadBalancerNotFound,
    /// The named target group does not exist.
    TargetGroupNotFound,
    /// The named listener does not exist.
    ListenerNotFound,
    /// The named listener rule does not exist.
    RuleNotFound,
    /// A load balancer with that name exists with other settings.
    DuplicateLoadBalancerName,
    /// A target group with that name exists with other settings.
    DuplicateTargetGroupName,
    /// A listener already holds that port.
    DuplicateListener,
    /// A rule of the listener already has that priority.
    PriorityInUse,
    /// The resource is used by another (a target group by a listener or a service).
    ResourceInUse,
    /// The named image repository does not exist (ECR's
    /// `RepositoryNotFoundException`).
    RepositoryNotFound,
    /// An image repository of that name exists already.
    RepositoryAlreadyExists,
    /// An image repository to delete still holds images.
    RepositoryNotEmpty,
    /// The caller is known but its role may not do this (ECS's
    /// `AccessDeniedException`).
    AccessDenied,
    /// The caller brought no credential, or one the cluster does not
    /// recognise (unknown, expired, revoked, or from another cluster).
    Unauthenticated,
}

/// The broad kinds of [`Error`], for a [`Refusal`] to behave as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// As [`Error::InvalidInput`].
    InvalidInput,
    /// As [`Error::NotFound`].
    NotFound,
    /// As [`Error::Conflict`].
    Conflict,
    /// The caller's role may not do this (gRPC `PERMISSION_DENIED`).
    AccessDenied,
    /// The caller's credential is missing or not recognised (gRPC
    /// `UNAUTHENTICATED`).
    Unauthenticated,
}

impl Refusal {
    /// The broad kind this refusal is.
    pub fn kind(self) -> Kind {
        match self {
            Refusal::ClusterNotFound
            | Refusal::ServiceNotFound
            | Refusal::LoadBalancerNotFound
            | Refusal::TargetGroupNotFound
            | Refusal::ListenerNotFound
            | Refusal::RuleNotFound
            | Refusal::RepositoryNotFound => Kind::NotFound,
            Refusal::ServiceNotActive
            | Refusal::ClusterContainsServices
            | Refusal::ClusterContainsTasks
            | Refusal::ClusterContainsContainerInstances
            | Refusal::DuplicateLoadBalancerName
            | Refusal::DuplicateTargetGroupName
            | Refusal::DuplicateListener
            | Refusal::PriorityInUse
            | Refusal::ResourceInUse
            | Refusal::RepositoryAlreadyExists
            | Refusal::RepositoryNotEmpty => Kind::Conflict,
            Refusal::AccessDenied => Kind::AccessDenied,
            Refusal::Unauthenticated => Kind::Unauthenticated,
        }
    }
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
    /// The broad kind of this error, when it is a refusal of the request
    /// (`None` for the retryable and internal ones).
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Error::InvalidInput(_) => Some(Kind::InvalidInput),
            Error::NotFound(_) => Some(Kind::NotFound),
            Error::Conflict(_) => Some(Kind::Conflict),
            Error::Refused(refusal, _) => Some(refusal.kind()),
            Error::NotLeader { .. } | Error::Unavailable(_) | Error::Internal(_) => None,
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
