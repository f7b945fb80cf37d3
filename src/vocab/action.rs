//! The actions orc implements, one closed enum per AWS service with AWS's
//! action names (`EcsAction`, `Elbv2Action`, `EcrAction`), gathered in
//! [`Action`]. A request's action string is parsed once at the edge (the gRPC
//! `Orc.Call`, the AWS-shaped HTTP door) and dispatched in one `match`
//! (`api::call`).
//!
//! On `Orc.Call` an ECS action travels by its bare name (`RunTask`); the
//! other services' actions carry their service's prefix (`elbv2:CreateLoadBalancer`,
//! `ecr:CreateRepository`), since some names exist in more than one service.

use std::fmt;
use std::str::FromStr;

use crate::Error;

macro_rules! actions {
    ($(#[$enum_doc:meta])* $enum:ident, $service:literal; $($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(#[$enum_doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $enum {
            $($(#[$doc])* $name,)*
        }

        impl $enum {
            /// Every action, in declaration order.
            pub const ALL: &'static [$enum] = &[$($enum::$name,)*];

            /// The AWS service's short name, as `aws` spells it (`ecs`, `elbv2`, `ecr`).
            pub const SERVICE: &'static str = $service;

            /// AWS's name of the action, e.g. `RunTask`.
            pub fn name(self) -> &'static str {
                #[allow(unreachable_code)]
                match self {
                    $($enum::$name => stringify!($name),)*
                }
            }
        }

        impl fmt::Display for $enum {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $enum {
            type Err = Error;
            /// Parses AWS's action name exactly (case matters, as in AWS).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $enum::ALL
                    .iter()
                    .copied()
                    .find(|action| action.name() == s)
                    .ok_or_else(|| unknown_action($service, s))
            }
        }
    };
}

fn unknown_action(service: &str, name: &str) -> Error {
    Error::InvalidInput(format!(
        "unknown {service} action {name:?}: run `orc --help` for the supported commands"
    ))
}

actions! {
    /// One ECS action, named as ECS names it (`RunTask`, `CreateService`, ...).
    EcsAction, "ecs";
    /// Creates a cluster (or answers the existing one).
    CreateCluster,
    /// Deletes an empty cluster.
    DeleteCluster,
    /// Describes clusters with their counts.
    DescribeClusters,
    /// Lists the active clusters' ARNs.
    ListClusters,
    /// Registers a task definition revision.
    RegisterTaskDefinition,
    /// Describes one task definition revision.
    DescribeTaskDefinition,
    /// Lists task definition ARNs.
    ListTaskDefinitions,
    /// Marks a task definition revision INACTIVE.
    DeregisterTaskDefinition,
    /// Deletes INACTIVE task definition revisions.
    DeleteTaskDefinitions,
    /// Places and starts tasks.
    RunTask,
    /// Stops a task.
    StopTask,
    /// Describes tasks.
    DescribeTasks,
    /// Explains where a task could be placed and why not elsewhere (orc's own).
    ExplainTask,
    /// Lists task ARNs.
    ListTasks,
    /// Lists container instance ARNs.
    ListContainerInstances,
    /// Describes container instances.
    DescribeContainerInstances,
    /// Sets container instances ACTIVE or DRAINING.
    UpdateContainerInstancesState,
    /// Creates a service.
    CreateService,
    /// Updates a service (count, task definition, deployment settings).
    UpdateService,
    /// Deletes a service.
    DeleteService,
    /// Describes services.
    DescribeServices,
    /// Lists service ARNs.
    ListServices,
}

actions! {
    /// One Elastic Load Balancing v2 action (`CreateLoadBalancer`, ...),
    /// served by orc's built-in load balancer.
    Elbv2Action, "elbv2";
    /// Creates a load balancer (or answers the one of that name with the same settings).
    CreateLoadBalancer,
    /// Describes load balancers.
    DescribeLoadBalancers,
    /// Deletes a load balancer and its listeners.
    DeleteLoadBalancer,
    /// Describes a load balancer's attributes.
    DescribeLoadBalancerAttributes,
    /// Changes a load balancer's attributes (`deletion_protection.enabled`, ...).
    ModifyLoadBalancerAttributes,
    /// Creates a target group with its health-check settings.
    CreateTargetGroup,
    /// Describes target groups.
    DescribeTargetGroups,
    /// Changes a target group's health-check settings.
    ModifyTargetGroup,
    /// Deletes a target group no listener, rule or service uses.
    DeleteTargetGroup,
    /// Describes a target group's attributes.
    DescribeTargetGroupAttributes,
    /// Changes a target group's attributes (`deregistration_delay.timeout_seconds`, ...).
    ModifyTargetGroupAttributes,
    /// Creates a listener: a port every proxy serves.
    CreateListener,
    /// Describes listeners.
    DescribeListeners,
    /// Changes a listener's port, protocol or default action.
    ModifyListener,
    /// Deletes a listener and its rules.
    DeleteListener,
    /// Creates a rule (host-header and path-pattern conditions, a priority).
    CreateRule,
    /// Describes a listener's rules, its default rule last.
    DescribeRules,
    /// Changes a rule's conditions or actions.
    ModifyRule,
    /// Changes rules' priorities.
    SetRulePriorities,
    /// Deletes a rule.
    DeleteRule,
    /// Registers targets with a target group.
    RegisterTargets,
    /// Deregisters targets: they drain for the deregistration delay.
    DeregisterTargets,
    /// Describes the health of a target group's targets.
    DescribeTargetHealth,
}

actions! {
    /// One ECR action (`CreateRepository`, ...), served by orc's built-in
    /// image registry.
    EcrAction, "ecr";
    /// Creates a repository.
    CreateRepository,
    /// Describes repositories.
    DescribeRepositories,
    /// Deletes a repository (with its images when forced).
    DeleteRepository,
    /// Lists a repository's image ids (digest and tag).
    ListImages,
    /// Describes images: digest, tags, size, push time, platforms.
    DescribeImages,
    /// Deletes images by digest or tag.
    BatchDeleteImage,
    /// A login password for `docker login --username AWS`.
    GetAuthorizationToken,
    /// Creates a pull-through cache rule (prefix → upstream registry).
    CreatePullThroughCacheRule,
    /// Lists the pull-through cache rules.
    DescribePullThroughCacheRules,
    /// Deletes a pull-through cache rule.
    DeletePullThroughCacheRule,
    /// orc's own (ECR has none): removes blob links no image references and,
    /// on every server, the files no link names (`orc ecr gc`).
    GarbageCollect,
}

actions! {
    /// One IAM action: the cluster's users and their access keys. All of
    /// them, reads included, need an admin ([`crate::vocab::principal::Access::Admin`]).
    IamAction, "iam";
    /// Creates a user with an orc role.
    CreateUser,
    /// Lists the users.
    ListUsers,
    /// Deletes a user without access keys.
    DeleteUser,
    /// Issues an access key id and its secret (shown once).
    CreateAccessKey,
    /// Lists access keys' ids (never their secrets).
    ListAccessKeys,
    /// Deletes an access key.
    DeleteAccessKey,
    /// Makes an access key Active or Inactive.
    UpdateAccessKey,
}

actions! {
    /// One Secrets Manager action: secrets for tasks. No action returns a
    /// secret's value: only the agent running a task that references it
    /// receives it (`AgentApi.GetTaskSecrets`).
    SecretsManagerAction, "secretsmanager";
    /// Creates a secret with its value.
    CreateSecret,
    /// Replaces a secret's value (a new version).
    PutSecretValue,
    /// Describes a secret (never its value).
    DescribeSecret,
    /// Lists the secrets (never their values).
    ListSecrets,
    /// Deletes a secret at once.
    DeleteSecret,
}

/// Any action orc implements, of any service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// An ECS action.
    Ecs(EcsAction),
    /// An ELBv2 action.
    Elbv2(Elbv2Action),
    /// An ECR action.
    Ecr(EcrAction),
    /// An IAM action.
    Iam(IamAction),
    /// A Secrets Manager action.
    SecretsManager(SecretsManagerAction),
}

impl Action {
    /// The service's short name (`ecs`, `elbv2`, `ecr`).
    pub fn service(self) -> &'static str {
        match self {
            Action::Ecs(_) => EcsAction::SERVICE,
            Action::Elbv2(_) => Elbv2Action::SERVICE,
            Action::Ecr(_) => EcrAction::SERVICE,
            Action::Iam(_) => IamAction::SERVICE,
            Action::SecretsManager(_) => SecretsManagerAction::SERVICE,
        }
    }

    /// The action's own name, without its service (`RunTask`).
    pub fn name(self) -> &'static str {
        match self {
            Action::Ecs(a) => a.name(),
            Action::Elbv2(a) => a.name(),
            Action::Ecr(a) => a.name(),
            Action::Iam(a) => a.name(),
            Action::SecretsManager(a) => a.name(),
        }
    }
}

impl fmt::Display for Action {
    /// The form `Orc.Call` carries: bare for ECS, `service:Name` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Ecs(a) => write!(f, "{a}"),
            other => write!(f, "{}:{}", other.service(), other.name()),
        }
    }
}

impl FromStr for Action {
    type Err = Error;
    /// Parses `RunTask` (ECS), `ecs:RunTask`, `elbv2:CreateLoadBalancer` or
    /// `ecr:CreateRepository`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None => s.parse().map(Action::Ecs),
            Some((EcsAction::SERVICE, name)) => name.parse().map(Action::Ecs),
            Some((Elbv2Action::SERVICE, name)) => name.parse().map(Action::Elbv2),
            Some((EcrAction::SERVICE, name)) => name.parse().map(Action::Ecr),
            Some((IamAction::SERVICE, name)) => name.parse().map(Action::Iam),
            Some((SecretsManagerAction::SERVICE, name)) => {
                name.parse().map(Action::SecretsManager)
            }
            Some((service, _)) => Err(Error::InvalidInput(format!(
                "unknown service {service:?} in action {s:?}: orc serves ecs, elbv2, ecr, iam and secretsmanager"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_action() {
        for action in EcsAction::ALL {
            assert_eq!(action.name().parse::<EcsAction>().unwrap(), *action);
            assert_eq!(
                action.to_string().parse::<Action>().unwrap(),
                Action::Ecs(*action)
            );
        }
        assert_eq!(EcsAction::ALL.len(), 22);
        for action in Elbv2Action::ALL {
            assert_eq!(
                Action::Elbv2(*action)
                    .to_string()
                    .parse::<Action>()
                    .unwrap(),
                Action::Elbv2(*action)
            );
        }
    }

    #[test]
    fn a_prefixed_action_names_its_service() {
        assert_eq!(
            "ecs:RunTask".parse::<Action>().unwrap(),
            Action::Ecs(EcsAction::RunTask)
        );
        let error = "sqs:SendMessage".parse::<Action>().unwrap_err();
        assert!(
            error.to_string().contains("unknown service \"sqs\""),
            "{error}"
        );
        let error = "elbv2:Nope".parse::<Action>().unwrap_err();
        assert!(
            error.to_string().contains("unknown elbv2 action \"Nope\""),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_action_is_refused_with_its_name() {
        let error = "runTask".parse::<EcsAction>().unwrap_err();
        assert_eq!(
            error.to_string(),
            Error::InvalidInput(
                "unknown ecs action \"runTask\": run `orc --help` for the supported commands"
                    .into()
            )
            .to_string()
        );
    }
}
