//! Secrets Manager's verbs for task secrets (`orc secretsmanager …`, and
//! `aws secretsmanager …` through the AWS door), and [`for_task`], which
//! opens the secrets a task references for the agent that runs it.
//!
//! A value is sealed here, before its command is proposed, and opened only
//! in [`for_task`]. No verb returns a value: orc has no `GetSecretValue`
//! (a value goes to the containers that reference it, nowhere else), and
//! nothing here logs one.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ecs::{parse, propose, read_linearizable, ActionResult};
use crate::raft::node::RaftHandle;
use crate::seal::SealKey;
use crate::store::secrets::{secret_view, Secret, SecretsCommand};
use crate::store::{Command, State};
use crate::taskdef::{secret_name_from, TaskDefinition};
use crate::vocab::action::SecretsManagerAction;
use crate::vocab::ids::last_segment;
use crate::vocab::principal::Principal;
use crate::vocab::time::now_ms;
use crate::{Error, Result};

/// The most a secret's value may hold, as in Secrets Manager.
pub const MAX_SECRET_BYTES: usize = 65_536;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    secret_id: Option<String>,
    #[serde(default)]
    secret_string: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

impl SecretRequest {
    /// The secret's name, from `SecretId` (a name or an ARN) or `Name`.
    fn secret_name(&self, action: &str) -> Result<String> {
        let given = self
            .secret_id
            .as_deref()
            .or(self.name.as_deref())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::InvalidInput(format!("{action}: SecretId is required")))?;
        secret_name_from(given).map_err(|m| Error::InvalidInput(format!("SecretId: {m}")))
    }

    /// The value, sealed, or why it cannot be taken.
    fn sealed_value(&self, action: &str, seal: &SealKey) -> Result<String> {
        let value = self.secret_string.as_deref().ok_or_else(|| {
            Error::InvalidInput(format!(
                "{action}: SecretString is required (orc keeps text secrets only)"
            ))
        })?;
        if value.len() > MAX_SECRET_BYTES {
            return Err(Error::InvalidInput(format!(
                "SecretString: {} bytes is over Secrets Manager's limit of {MAX_SECRET_BYTES}",
                value.len()
            )));
        }
        Ok(base64::engine::general_purpose::STANDARD.encode(seal.seal(value.as_bytes())))
    }
}

fn version_id() -> String {
    let bits: u128 = rand::random();
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Dispatches one Secrets Manager action: the one `match` over
/// [`SecretsManagerAction`].
pub async fn call(
    raft: &RaftHandle,
    seal: &SealKey,
    action: SecretsManagerAction,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    let action_name = action.name();
    let request: SecretRequest = parse(action_name, body)?;
    let command = match action {
        SecretsManagerAction::CreateSecret => {
            let name = request
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| Error::InvalidInput("CreateSecret: Name is required".into()))?;
            let now = now_ms();
            SecretsCommand::CreateSecret {
                secret: Secret {
                    name,
                    description: request.description.clone().unwrap_or_default(),
                    sealed_value: request.sealed_value(action_name, seal)?,
                    version_id: version_id(),
                    created_ms: now,
                    changed_ms: now,
                },
            }
        }
        SecretsManagerAction::PutSecretValue => SecretsCommand::PutSecretValue {
            name: request.secret_name(action_name)?,
            sealed_value: request.sealed_value(action_name, seal)?,
            version_id: version_id(),
            now_ms: now_ms(),
        },
        SecretsManagerAction::DeleteSecret => SecretsCommand::DeleteSecret {
            name: request.secret_name(action_name)?,
        },
        SecretsManagerAction::DescribeSecret => {
            let name = request.secret_name(action_name)?;
            return read_linearizable(raft, |state| {
                Ok(secret_view(state.secrets.secret(&name)?).into())
            })
            .await;
        }
        SecretsManagerAction::ListSecrets => {
            return read_linearizable(raft, |state| {
                let list: Vec<Value> = state.secrets.secrets.values().map(secret_view).collect();
                Ok(json!({ "SecretList": list }).into())
            })
            .await;
        }
    };
    Ok(propose(raft, request_id, Command::Secrets(command))
        .await?
        .into())
}

/// Refuses a task definition that references a secret the store does not
/// hold, naming the field.
pub fn check_references(state: &State, definition: &TaskDefinition) -> Result<()> {
    for (i, container) in definition.container_definitions.iter().enumerate() {
        for (j, reference) in container.secrets.iter().enumerate() {
            let path = format!("containerDefinitions[{i}].secrets[{j}].valueFrom");
            let name = secret_name_from(&reference.value_from)
                .map_err(|m| Error::InvalidInput(format!("{path}: {m}")))?;
            if !state.secrets.secrets.contains(&name) {
                return Err(Error::InvalidInput(format!(
                    "{path}: no secret named {name:?}: create it first with `orc secretsmanager create-secret --name {name} --secret-string ...`"
                )));
            }
        }
    }
    Ok(())
}

/// One secret a task's container receives as an environment variable.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskSecret {
    /// The container's name in the task definition.
    pub container: String,
    /// The variable's name.
    pub name: String,
    /// The opened value.
    pub value: String,
}

impl std::fmt::Debug for TaskSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskSecret({}.{}=…)", self.container, self.name)
    }
}

/// Whether `principal` may receive the secrets of a task placed on
/// `instance_id`: a server, an insecure server's caller, or the agent of
/// that very instance.
pub fn may_receive(principal: &Principal, instance_id: &str) -> Result<()> {
    match principal {
        Principal::Server { .. } | Principal::Insecure => Ok(()),
        Principal::Agent { instance } if instance == instance_id => Ok(()),
        other => Err(Error::Refused(
            crate::error::Refusal::AccessDenied,
            format!("{other} may not read the secrets of a task on container instance {instance_id}: only that instance's agent receives them"),
        )),
    }
}

/// The secrets of the task `task_arn` in `cluster`, opened, for the agent
/// of `instance_id`: refused unless the task is placed on that instance.
pub fn for_task(
    state: &State,
    seal: &SealKey,
    cluster: &str,
    instance_id: &str,
    task_arn: &str,
) -> Result<Vec<TaskSecret>> {
    let task = state.task(cluster, task_arn)?;
    let placed_on = task.container_instance_arn.as_deref().map(last_segment);
    if placed_on != Some(instance_id) {
        return Err(Error::Refused(
            crate::error::Refusal::AccessDenied,
            format!("task {task_arn} is not placed on container instance {instance_id}: only the agent running a task receives its secrets"),
        ));
    }
    let definition = state.task_definition_of(task)?;
    let mut secrets = Vec::new();
    for container in &definition.container_definitions {
        for reference in &container.secrets {
            let name = secret_name_from(&reference.value_from).map_err(Error::InvalidInput)?;
            let secret = state.secrets.secret(&name)?;
            let sealed = base64::engine::general_purpose::STANDARD
                .decode(&secret.sealed_value)
                .map_err(|_| Error::Internal(format!("secret {name:?} is not stored as base64")))?;
            secrets.push(TaskSecret {
                container: container.name.clone(),
                name: reference.name.clone(),
                value: seal.open_string(&sealed)?,
            });
        }
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tasks_own_agent_receives_its_secrets() {
        assert!(may_receive(&Principal::Insecure, "i-1").is_ok());
        assert!(may_receive(&Principal::Server { node_id: 1 }, "i-1").is_ok());
        let own = Principal::Agent {
            instance: "i-1".into(),
        };
        assert!(may_receive(&own, "i-1").is_ok());
        let other = Principal::Agent {
            instance: "i-2".into(),
        };
        assert!(may_receive(&other, "i-1").is_err());
        let admin = Principal::User {
            name: "ada".into(),
            role: crate::vocab::principal::Role::Admin,
        };
        assert!(may_receive(&admin, "i-1").is_err());
        let secret = TaskSecret {
            container: "app".into(),
            name: "DB".into(),
            value: "hunter2".into(),
        };
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
