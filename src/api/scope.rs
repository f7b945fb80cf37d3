//! Users restricted to named clusters (`orc iam create-user NAME --role
//! operator --clusters lab1`): a classroom gives each student group a
//! cluster, and a student's key sees and changes only that one.
//!
//! Pure: which clusters an ECS request names, whether a restricted user may
//! send it, and `ListClusters`' answer cut down to the allowed ones. Only ECS
//! actions are scoped: task definitions, load balancers, repositories and
//! secrets are the whole control plane's, shared by its users.

use serde_json::Value;

use crate::error::Refusal;
use crate::model::{cluster_name_from, DEFAULT_CLUSTER};
use crate::vocab::action::{Action, EcsAction};
use crate::{Error, Result};

/// The clusters an ECS request names (by name or ARN, `default` when it
/// names none), or `None` when the action is not about a cluster.
pub fn clusters_named(action: EcsAction, body: &str) -> Option<Vec<String>> {
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let one = |field: &str| {
        vec![cluster_name_from(
            body[field].as_str().unwrap_or(DEFAULT_CLUSTER),
        )]
    };
    match action {
        EcsAction::RegisterTaskDefinition
        | EcsAction::DescribeTaskDefinition
        | EcsAction::ListTaskDefinitions
        | EcsAction::DeregisterTaskDefinition
        | EcsAction::DeleteTaskDefinitions
        | EcsAction::ListClusters => None,
        EcsAction::CreateCluster => Some(one("clusterName")),
        EcsAction::DescribeClusters => {
            let named: Vec<String> = body["clusters"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(cluster_name_from)
                        .collect()
                })
                .unwrap_or_default();
            Some(if named.is_empty() {
                vec![DEFAULT_CLUSTER.to_string()]
            } else {
                named
            })
        }
        _ => Some(one("cluster")),
    }
}

/// Whether a user restricted to `allowed` clusters may send `action`.
pub fn check(user: &str, allowed: &[String], action: Action, body: &str) -> Result<()> {
    let Action::Ecs(ecs) = action else {
        return Ok(());
    };
    for cluster in clusters_named(ecs, body).unwrap_or_default() {
        if !allowed.contains(&cluster) {
            return Err(Error::Refused(
                Refusal::AccessDenied,
                format!(
                    "user {user} is not authorized to perform ecs:{} on cluster {cluster:?}: its access is limited to {}",
                    ecs.name(),
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// `ListClusters`' answer with only the `allowed` clusters' ARNs.
pub fn filter_cluster_list(allowed: &[String], answer: &mut Value) {
    if let Some(arns) = answer["clusterArns"].as_array_mut() {
        arns.retain(|arn| {
            arn.as_str()
                .is_some_and(|arn| allowed.contains(&cluster_name_from(arn)))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_student_reaches_only_their_own_cluster() {
        let allowed = vec!["lab1".to_string()];
        let run = Action::Ecs(EcsAction::RunTask);
        assert!(check("s1", &allowed, run, r#"{"cluster": "lab1"}"#).is_ok());
        assert!(check(
            "s1",
            &allowed,
            run,
            r#"{"cluster": "arn:orc:ecs:local:000000000000:cluster/lab1"}"#
        )
        .is_ok());
        let refused = check("s1", &allowed, run, r#"{"cluster": "lab2"}"#).unwrap_err();
        assert!(matches!(refused, Error::Refused(Refusal::AccessDenied, _)));
        assert!(refused.to_string().contains("\"lab2\""), "{refused}");
        // No cluster named: the default one, which is not theirs.
        assert!(check("s1", &allowed, run, "{}").is_err());
        let describe = Action::Ecs(EcsAction::DescribeClusters);
        assert!(check(
            "s1",
            &allowed,
            describe,
            r#"{"clusters": ["lab1", "lab2"]}"#
        )
        .is_err());
        let create = Action::Ecs(EcsAction::CreateCluster);
        assert!(check("s1", &allowed, create, r#"{"clusterName": "lab1"}"#).is_ok());
        assert!(check("s1", &allowed, create, r#"{"clusterName": "mine"}"#).is_err());
        // Task definitions are shared.
        let register = Action::Ecs(EcsAction::RegisterTaskDefinition);
        assert!(check("s1", &allowed, register, r#"{"family": "web"}"#).is_ok());
        let mut answer = serde_json::json!({"clusterArns": [
            "arn:orc:ecs:local:000000000000:cluster/default",
            "arn:orc:ecs:local:000000000000:cluster/lab1",
            "arn:orc:ecs:local:000000000000:cluster/lab2",
        ]});
        filter_cluster_list(&allowed, &mut answer);
        assert_eq!(
            answer["clusterArns"],
            serde_json::json!(["arn:orc:ecs:local:000000000000:cluster/lab1"])
        );
    }
}
