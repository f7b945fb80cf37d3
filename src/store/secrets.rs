//! Secrets for tasks, replicated: `Command::Secrets` creates, updates and
//! deletes them, shaped like AWS Secrets Manager (`Name`, `ARN`,
//! `VersionId`, `CreatedDate`).
//!
//! A value enters the state only **sealed** (`seal::SealKey::seal`, done by
//! the API handler before proposing): the raft log, checkpoints and
//! snapshots hold ciphertext, and no answer, describe or watch event
//! carries it. Only `api::secrets::for_task` opens values, for the agent
//! that runs a task referencing them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::command::Outcome;
use super::table::Table;
use crate::Error;

/// A secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Secret {
    /// Its name (Secrets Manager's rule: 1 to 512 of letters, digits and
    /// `/_+=.@-`).
    pub name: String,
    /// Its description, or empty.
    #[serde(default)]
    pub description: String,
    /// The value, sealed with the cluster's seal key and base64-encoded.
    pub sealed_value: String,
    /// The current version's id (chosen by the proposer).
    pub version_id: String,
    /// When it was created, in milliseconds since the epoch.
    pub created_ms: u64,
    /// When its value last changed.
    pub changed_ms: u64,
}

/// Every secret, by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretsState {
    /// Secrets by name.
    pub secrets: Table<Secret>,
}

/// Every Secrets Manager change orc knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "secrets")]
pub enum SecretsCommand {
    /// CreateSecret.
    CreateSecret {
        /// The new secret, its value sealed.
        secret: Secret,
    },
    /// PutSecretValue: a new version of the value.
    PutSecretValue {
        /// The secret's name.
        name: String,
        /// The new value, sealed and base64-encoded.
        sealed_value: String,
        /// The new version's id.
        version_id: String,
        /// When.
        now_ms: u64,
    },
    /// DeleteSecret: gone at once (orc keeps no recovery window).
    DeleteSecret {
        /// The secret's name.
        name: String,
    },
}

impl SecretsCommand {
    /// Secrets Manager's action name.
    pub fn action(&self) -> &'static str {
        match self {
            SecretsCommand::CreateSecret { .. } => "CreateSecret",
            SecretsCommand::PutSecretValue { .. } => "PutSecretValue",
            SecretsCommand::DeleteSecret { .. } => "DeleteSecret",
        }
    }

    /// The secret the command touches, as `secret/NAME`.
    pub fn subjects(&self) -> Vec<String> {
        let name = match self {
            SecretsCommand::CreateSecret { secret } => &secret.name,
            SecretsCommand::PutSecretValue { name, .. } | SecretsCommand::DeleteSecret { name } => {
                name
            }
        };
        vec![format!("secret/{name}")]
    }
}

/// A secret's ARN.
pub fn secret_arn(name: &str) -> String {
    format!("arn:orc:secretsmanager:local:000000000000:secret:{name}")
}

/// A secret as DescribeSecret and ListSecrets show it: never its value.
pub fn secret_view(secret: &Secret) -> Value {
    let mut view = json!({
        "ARN": secret_arn(&secret.name),
        "Name": secret.name,
        "CreatedDate": secret.created_ms as f64 / 1000.0,
        "LastChangedDate": secret.changed_ms as f64 / 1000.0,
        "VersionIdsToStages": { secret.version_id.clone(): ["AWSCURRENT"] },
    });
    if !secret.description.is_empty() {
        view["Description"] = Value::String(secret.description.clone());
    }
    view
}

/// What CreateSecret and PutSecretValue answer.
fn version_view(secret: &Secret) -> Value {
    json!({
        "ARN": secret_arn(&secret.name),
        "Name": secret.name,
        "VersionId": secret.version_id,
        "VersionStages": ["AWSCURRENT"],
    })
}

impl SecretsState {
    /// A secret by name, or Secrets Manager's ResourceNotFoundException in words.
    pub fn secret(&self, name: &str) -> Result<&Secret, Error> {
        self.secrets.get(name).ok_or_else(|| {
            Error::NotFound(format!(
                "Secrets Manager can't find the specified secret {name:?} (ResourceNotFoundException): create it with `orc secretsmanager create-secret --name {name} --secret-string ...`"
            ))
        })
    }
}

/// Applies one Secrets Manager command.
pub fn apply(secrets: &mut SecretsState, command: &SecretsCommand) -> Outcome {
    match command {
        SecretsCommand::CreateSecret { secret } => {
            crate::taskdef::check_secret_name(&secret.name)
                .map_err(|m| Error::InvalidInput(format!("Name: {m}")))?;
            if secrets.secrets.contains(&secret.name) {
                return Err(Error::Conflict(format!(
                    "the secret {} already exists (ResourceExistsException): change its value with `orc secretsmanager put-secret-value`",
                    secret.name
                )));
            }
            secrets.secrets.insert(secret.name.clone(), secret.clone());
            Ok(version_view(secret))
        }
        SecretsCommand::PutSecretValue {
            name,
            sealed_value,
            version_id,
            now_ms,
        } => {
            secrets.secret(name)?;
            let secret = secrets.secrets.get_mut(name).expect("checked just above");
            secret.sealed_value = sealed_value.clone();
            secret.version_id = version_id.clone();
            secret.changed_ms = *now_ms;
            Ok(version_view(secret))
        }
        SecretsCommand::DeleteSecret { name } => {
            let secret = secrets.secret(name)?.clone();
            secrets.secrets.remove(name);
            Ok(json!({
                "ARN": secret_arn(&secret.name),
                "Name": secret.name,
                "DeletionDate": secret.changed_ms as f64 / 1000.0,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str) -> Secret {
        Secret {
            name: name.into(),
            description: String::new(),
            sealed_value: "U0VBTEVE".into(),
            version_id: "v1".into(),
            created_ms: 1_000,
            changed_ms: 1_000,
        }
    }

    #[test]
    fn secrets_are_created_changed_and_deleted_without_showing_values() {
        let mut state = SecretsState::default();
        let created = apply(
            &mut state,
            &SecretsCommand::CreateSecret {
                secret: secret("lab/db"),
            },
        )
        .unwrap();
        assert_eq!(
            created["ARN"],
            "arn:orc:secretsmanager:local:000000000000:secret:lab/db"
        );
        let again = apply(
            &mut state,
            &SecretsCommand::CreateSecret {
                secret: secret("lab/db"),
            },
        )
        .unwrap_err();
        assert!(again.to_string().contains("ResourceExists"), "{again}");
        assert!(apply(
            &mut state,
            &SecretsCommand::CreateSecret {
                secret: secret("no spaces")
            }
        )
        .is_err());
        let put = apply(
            &mut state,
            &SecretsCommand::PutSecretValue {
                name: "lab/db".into(),
                sealed_value: "TkVX".into(),
                version_id: "v2".into(),
                now_ms: 2_000,
            },
        )
        .unwrap();
        assert_eq!(put["VersionId"], "v2");
        let view = secret_view(state.secret("lab/db").unwrap());
        assert!(!view.to_string().contains("TkVX"), "{view}");
        assert_eq!(view["VersionIdsToStages"]["v2"][0], "AWSCURRENT");
        apply(
            &mut state,
            &SecretsCommand::DeleteSecret {
                name: "lab/db".into(),
            },
        )
        .unwrap();
        assert!(state.secret("lab/db").is_err());
        assert!(apply(
            &mut state,
            &SecretsCommand::PutSecretValue {
                name: "lab/db".into(),
                sealed_value: String::new(),
                version_id: "v3".into(),
                now_ms: 3_000
            }
        )
        .is_err());
    }
}
