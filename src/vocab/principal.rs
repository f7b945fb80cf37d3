//! Who is calling, and the one pure rule of what each caller may do.
//!
//! Every request is authorized as a [`Principal`] before it is served: the
//! API listener learns it from the client certificate (servers, agents, and
//! users' credential files), the AWS door from the SigV4 access key, and a
//! server started insecure (`orc up --insecure`, loopback only) treats
//! every caller as [`Principal::Insecure`]. [`Principal::may`] is the rule;
//! it reads no state, so it is tested here on its own.
//!
//! The roles, as the README's security section promises:
//! * a **server** certificate may do everything;
//! * an **agent** certificate may call no action: it uses `AgentApi` for its
//!   own instance only (checked there, by instance) and may pull images;
//! * a user is an **admin** (everything, including users, keys, join tokens
//!   and the CA), an **operator** (every ECS, ELB and ECR action, but not
//!   the cluster's credentials) or **readonly** (describe, list, get).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::action::Action;
use crate::error::Refusal;
use crate::Error;

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including the cluster's credentials.
    Admin,
    /// Every ECS, ELB and ECR action; not users, keys, tokens or the CA.
    Operator,
    /// Only actions that read.
    #[serde(rename = "readonly")]
    ReadOnly,
}

impl Role {
    /// The role's name as `--role` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::ReadOnly => "readonly",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "readonly" | "read-only" => Ok(Role::ReadOnly),
            other => Err(Error::InvalidInput(format!(
                "unknown role {other:?}: use admin, operator or readonly"
            ))),
        }
    }
}

/// What an action needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// It only reads (describe, list, get, explain).
    Read,
    /// It changes the cluster's resources.
    Write,
    /// It changes who may do what: users, access keys, join tokens, the CA.
    Admin,
}

impl Access {
    /// The access an action needs, from AWS's naming: `Describe…`, `List…`,
    /// `Get…`, `BatchGet…`, `BatchCheck…` and `Explain…` read; the rest write.
    /// Every IAM action (users, access keys) needs [`Access::Admin`], listing
    /// included; other actions on the cluster's credentials (join tokens,
    /// the CA) are classed by their caller the same way.
    pub fn of(action: Action) -> Access {
        const READS: [&str; 6] = [
            "Describe",
            "List",
            "Get",
            "BatchGet",
            "BatchCheck",
            "Explain",
        ];
        if let Action::Iam(_) = action {
            // Who may do what is an admin's business, reading it included.
            return Access::Admin;
        }
        let name = action.name();
        if READS.iter().any(|prefix| name.starts_with(prefix)) {
            Access::Read
        } else {
            Access::Write
        }
    }
}

/// Who a request comes from, once its credential has been checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Principal {
    /// A server of this cluster (its certificate): may do everything.
    Server {
        /// The server's raft node id.
        node_id: u64,
    },
    /// An agent (its certificate): no actions; `AgentApi` for its own
    /// instance, and image pulls.
    Agent {
        /// The name the agent's certificate was issued to (its instance).
        instance: String,
    },
    /// A user, by certificate or access key.
    User {
        /// The user's name.
        name: String,
        /// What the user may do.
        role: Role,
    },
    /// Any caller of a server started insecure (loopback only): treated as
    /// an admin, since nothing identifies it.
    Insecure,
    /// A TLS caller without a client certificate: refused everything but
    /// joining (with a token), the registry and the AWS door, which
    /// authenticate requests their own way.
    Anonymous,
}

impl Principal {
    /// Whether this caller may do what needs `access`; the refusal names
    /// the caller, the action and what to do.
    pub fn may(&self, access: Access, what: &str) -> Result<(), Error> {
        let allowed = match self {
            Principal::Anonymous => {
                return Err(Error::Refused(
                    Refusal::Unauthenticated,
                    format!("{what} needs a credential and this connection presented none: point the CLI at your credential file (ORC_CREDENTIALS; `orc config` shows which one is used)"),
                ))
            }
            Principal::Server { .. } | Principal::Insecure => true,
            Principal::Agent { .. } => false,
            Principal::User { role, .. } => match role {
                Role::Admin => true,
                Role::Operator => access != Access::Admin,
                Role::ReadOnly => access == Access::Read,
            },
        };
        if allowed {
            return Ok(());
        }
        let hint = match self {
            Principal::Agent { .. } => {
                "an agent's certificate may only serve its own instance; use an admin or operator credential"
            }
            Principal::User { role: Role::ReadOnly, .. } => {
                "the readonly role may only describe, list and get; ask an admin for an operator key"
            }
            _ => "only an admin may change users, keys, join tokens and the CA; ask an admin",
        };
        Err(Error::Refused(
            Refusal::AccessDenied,
            format!("{self} is not authorized to perform {what}: {hint}"),
        ))
    }

    /// Whether this caller may run `action`.
    pub fn may_call(&self, action: Action) -> Result<(), Error> {
        // An agent serving the load balancers (`orc agent --proxy`) reads
        // them; nothing of ECS (no task's environment) nor any write.
        if matches!(self, Principal::Agent { .. })
            && matches!(action, Action::Elbv2(_))
            && Access::of(action) == Access::Read
        {
            return Ok(());
        }
        self.may(
            Access::of(action),
            &format!("{}:{}", action.service(), action.name()),
        )
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Server { node_id } => write!(f, "server {node_id}"),
            Principal::Agent { instance } => write!(f, "agent {instance}"),
            Principal::User { name, role } => write!(f, "user {name} ({role})"),
            Principal::Insecure => f.write_str("an unauthenticated caller"),
            Principal::Anonymous => f.write_str("a caller without a certificate"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::action::{EcrAction, EcsAction, Elbv2Action};

    fn user(role: Role) -> Principal {
        Principal::User {
            name: "student".into(),
            role,
        }
    }

    #[test]
    fn reads_and_writes_are_told_apart_by_aws_naming() {
        assert_eq!(
            Access::of(Action::Ecs(EcsAction::DescribeTasks)),
            Access::Read
        );
        assert_eq!(
            Access::of(Action::Ecs(EcsAction::ListServices)),
            Access::Read
        );
        assert_eq!(
            Access::of(Action::Ecs(EcsAction::ExplainTask)),
            Access::Read
        );
        assert_eq!(
            Access::of(Action::Ecr(EcrAction::GetAuthorizationToken)),
            Access::Read
        );
        assert_eq!(Access::of(Action::Ecs(EcsAction::RunTask)), Access::Write);
        assert_eq!(
            Access::of(Action::Elbv2(Elbv2Action::DeleteRule)),
            Access::Write
        );
        assert_eq!(
            Access::of(Action::Ecs(EcsAction::DeleteTaskDefinitions)),
            Access::Write
        );
        assert_eq!(
            Access::of(Action::Iam(crate::vocab::action::IamAction::ListUsers)),
            Access::Admin
        );
    }

    #[test]
    fn each_role_does_what_it_says() {
        let run = Action::Ecs(EcsAction::RunTask);
        let describe = Action::Ecs(EcsAction::DescribeTasks);
        assert!(user(Role::Admin)
            .may(Access::Admin, "iam:CreateUser")
            .is_ok());
        assert!(user(Role::Operator).may_call(run).is_ok());
        assert!(user(Role::Operator)
            .may(Access::Admin, "iam:CreateUser")
            .is_err());
        assert!(user(Role::ReadOnly).may_call(describe).is_ok());
        let refused = user(Role::ReadOnly).may_call(run).unwrap_err();
        assert!(matches!(refused, Error::Refused(Refusal::AccessDenied, _)));
        assert!(refused.to_string().contains("ecs:RunTask"), "{refused}");
        assert!(refused.to_string().contains("readonly"), "{refused}");
        let agent = Principal::Agent {
            instance: "pi-1".into(),
        };
        assert!(agent.may_call(describe).is_err());
        assert!(Principal::Server { node_id: 1 }
            .may(Access::Admin, "ca rotate")
            .is_ok());
        assert!(Principal::Insecure.may_call(run).is_ok());
    }

    #[test]
    fn roles_parse_as_the_flag_spells_them() {
        assert_eq!("readonly".parse::<Role>().unwrap(), Role::ReadOnly);
        assert_eq!("Admin".parse::<Role>().unwrap(), Role::Admin);
        let error = "root".parse::<Role>().unwrap_err().to_string();
        assert!(error.contains("admin, operator or readonly"), "{error}");
    }
}
