//! ECS's domain vocabulary: clusters, container instances, task definitions,
//! tasks and services, as plain serde types whose JSON is shaped like the
//! `aws ecs` responses. No I/O and no protobuf here: the store keeps these
//! types, the API shapes responses from them, the CLI prints them.

use serde::{Deserialize, Serialize};

/// The partition, region and account that every orc ARN carries. orc runs on
/// the user's own hardware, so the partition is `orc` and the account zeros.
pub const ARN_PREFIX: &str = "arn:orc:ecs:local:000000000000";

/// The name of the cluster that always exists.
pub const DEFAULT_CLUSTER: &str = "default";

/// Builds the ARN of a resource, e.g. `arn(“cluster”, “default”)`.
pub fn arn(kind: &str, rest: &str) -> String {
    format!("{ARN_PREFIX}:{kind}/{rest}")
}

/// Accepts a cluster given by name or ARN and returns its name.
pub fn cluster_name_from(name_or_arn: &str) -> String {
    let trimmed = name_or_arn.trim();
    match trimmed.strip_prefix("arn:") {
        Some(_) => trimmed
            .rsplit_once("cluster/")
            .map(|(_, name)| name.to_string())
            .unwrap_or_else(|| trimmed.to_string()),
        None => trimmed.to_string(),
    }
}

/// Checks a cluster name against ECS's rule: up to 255 letters (upper and
/// lowercase), numbers, underscores and hyphens.
pub fn validate_cluster_name(name: &str) -> crate::Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(crate::Error::InvalidInput(format!(
            "clusterName: must be 1 to 255 characters, got {}",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(crate::Error::InvalidInput(format!(
            "clusterName: {name:?} contains {bad:?}; use only letters, numbers, hyphens and underscores"
        )));
    }
    Ok(())
}

/// A logical cluster as stored. Counts are derived at read time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// ECS's `clusterName`.
    pub cluster_name: String,
    /// ECS's `clusterArn`.
    pub cluster_arn: String,
    /// `ACTIVE`, or `INACTIVE` once deleted (kept so describe still answers).
    pub status: String,
    /// Tags given at creation, in ECS's `[{key, value}]` shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Milliseconds since the epoch when the cluster was created (from the command).
    pub created_at_ms: u64,
}

/// ECS's tag shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The tag's key.
    pub key: String,
    /// The tag's value.
    #[serde(default)]
    pub value: String,
}

/// The counts ECS reports beside a cluster, derived from the other tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCounts {
    /// Container instances registered (any status but INACTIVE).
    pub registered_container_instances_count: u64,
    /// Tasks whose last status is RUNNING.
    pub running_tasks_count: u64,
    /// Tasks not yet RUNNING and not stopped.
    pub pending_tasks_count: u64,
    /// Services whose status is ACTIVE.
    pub active_services_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_and_arns() {
        assert_eq!(cluster_name_from("web"), "web");
        assert_eq!(cluster_name_from(&arn("cluster", "web")), "web");
        assert!(validate_cluster_name("lab_1-a").is_ok());
        let error = validate_cluster_name("bad name").unwrap_err().to_string();
        assert!(error.contains("' '"), "{error}");
        assert!(validate_cluster_name("").is_err());
        assert!(validate_cluster_name(&"x".repeat(256)).is_err());
    }
}
