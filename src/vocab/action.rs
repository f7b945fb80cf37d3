//! The ECS actions orc implements, as one closed enum with ECS's action
//! names. A request's action string is parsed once at the edge (the gRPC
//! `Orc.Call` today, an AWS-shaped HTTP door later) and dispatched in one
//! `match` (`api::ecs::call`).

use std::fmt;
use std::str::FromStr;

use crate::Error;

macro_rules! ecs_actions {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// One ECS action, named as ECS names it (`RunTask`, `CreateService`, ...).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EcsAction {
            $($(#[$doc])* $name,)*
        }

        impl EcsAction {
            /// Every action, in declaration order.
            pub const ALL: &'static [EcsAction] = &[$(EcsAction::$name,)*];

            /// ECS's name of the action, e.g. `RunTask`.
            pub fn name(self) -> &'static str {
                match self {
                    $(EcsAction::$name => stringify!($name),)*
                }
            }
        }
    };
}

ecs_actions! {
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

impl fmt::Display for EcsAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EcsAction {
    type Err = Error;
    /// Parses ECS's action name exactly (case matters, as in ECS).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EcsAction::ALL
            .iter()
            .copied()
            .find(|action| action.name() == s)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown action {s:?}: run `orc --help` for the supported commands"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_action() {
        for action in EcsAction::ALL {
            assert_eq!(action.name().parse::<EcsAction>().unwrap(), *action);
        }
        assert_eq!(EcsAction::ALL.len(), 22);
    }

    #[test]
    fn an_unknown_action_is_refused_with_its_name() {
        let error = "runTask".parse::<EcsAction>().unwrap_err();
        assert_eq!(
            error.to_string(),
            Error::InvalidInput(
                "unknown action \"runTask\": run `orc --help` for the supported commands".into()
            )
            .to_string()
        );
    }
}
