//! The cluster's users and their access keys, replicated like everything
//! else: `Command::Iam` creates and deletes them, and the AWS door looks an
//! access key up here to verify a SigV4 signature.
//!
//! The secret half of an access key enters the state only **sealed**
//! (`seal::SealKey::seal`, done by the API handler before proposing), so the
//! raft log, checkpoints and snapshots hold ciphertext. `apply` copies the
//! sealed bytes and never opens them; an answer never carries them (the
//! handler adds the plaintext secret to `CreateAccessKey`'s answer itself,
//! once). Names and shapes are IAM's (`UserName`, `AccessKeyId`,
//! `CreateDate`), with orc's role in the user's `orc:role` tag.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::command::Outcome;
use super::table::Table;
use crate::vocab::principal::Role;
use crate::Error;

/// The tag key that carries a user's orc role (IAM has no roles of this kind).
pub const ROLE_TAG: &str = "orc:role";
/// The tag key that carries the clusters a user is limited to, comma-separated.
pub const CLUSTERS_TAG: &str = "orc:clusters";
/// At most this many access keys per user, as IAM allows.
pub const MAX_KEYS_PER_USER: usize = 2;

/// A user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Its name (IAM's rule: 1 to 64 of letters, digits and `+=,.@_-`).
    pub user_name: String,
    /// IAM's stable id (`AIDA…`), chosen by the proposer.
    pub user_id: String,
    /// What it may do.
    pub role: Role,
    /// When it was created, in milliseconds since the epoch.
    pub created_ms: u64,
    /// The only clusters its ECS actions may name (empty: every cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
}

/// An access key: the id a request names and its sealed secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessKey {
    /// The key id (`AKIA…`), chosen by the proposer.
    pub access_key_id: String,
    /// Its user.
    pub user_name: String,
    /// The secret access key, sealed with the cluster's seal key and
    /// base64-encoded; never shown.
    pub sealed_secret: String,
    /// When it was created.
    pub created_ms: u64,
    /// Set by `UpdateAccessKey --status Inactive`: the key is refused
    /// (SigV4, registry logins) until made Active again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inactive: bool,
}

/// Everything IAM replicates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IamState {
    /// Users by name.
    pub users: Table<User>,
    /// Access keys by id.
    pub access_keys: Table<AccessKey>,
}

/// Every IAM change orc knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "iam")]
pub enum IamCommand {
    /// IAM CreateUser.
    CreateUser {
        /// The new user.
        user: User,
    },
    /// IAM DeleteUser (refused while the user has access keys, as in IAM).
    DeleteUser {
        /// The user.
        user_name: String,
    },
    /// IAM CreateAccessKey.
    CreateAccessKey {
        /// The new key, its secret already sealed.
        access_key: AccessKey,
    },
    /// IAM DeleteAccessKey.
    DeleteAccessKey {
        /// The key.
        access_key_id: String,
        /// Its user, when the request named one (checked).
        user_name: Option<String>,
    },
    /// IAM UpdateAccessKey: Active or Inactive.
    UpdateAccessKey {
        /// The key.
        access_key_id: String,
        /// Its user, when the request named one (checked).
        user_name: Option<String>,
        /// Active (true) or Inactive.
        active: bool,
    },
}

impl IamCommand {
    /// IAM's action name.
    pub fn action(&self) -> &'static str {
        match self {
            IamCommand::CreateUser { .. } => "CreateUser",
            IamCommand::DeleteUser { .. } => "DeleteUser",
            IamCommand::CreateAccessKey { .. } => "CreateAccessKey",
            IamCommand::DeleteAccessKey { .. } => "DeleteAccessKey",
            IamCommand::UpdateAccessKey { .. } => "UpdateAccessKey",
        }
    }

    /// The user the command touches, as `user/NAME` (a key's id is no
    /// secret, but a watcher needs only the user).
    pub fn subjects(&self) -> Vec<String> {
        let user = match self {
            IamCommand::CreateUser { user } => Some(user.user_name.as_str()),
            IamCommand::DeleteUser { user_name } => Some(user_name.as_str()),
            IamCommand::CreateAccessKey { access_key } => Some(access_key.user_name.as_str()),
            IamCommand::DeleteAccessKey { user_name, .. }
            | IamCommand::UpdateAccessKey { user_name, .. } => user_name.as_deref(),
        };
        user.map(|name| vec![format!("user/{name}")])
            .unwrap_or_default()
    }
}

/// A user's ARN.
pub fn user_arn(user_name: &str) -> String {
    format!("arn:orc:iam::000000000000:user/{user_name}")
}

/// Checks a user name against IAM's rule.
pub fn validate_user_name(name: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(Error::InvalidInput(format!(
            "UserName: {name:?} is not a valid user name: use 1 to 64 letters, digits and +=,.@_-"
        )));
    }
    Ok(())
}

/// A user as IAM shows it (`User` in CreateUser's answer, ListUsers' rows).
pub fn user_view(user: &User) -> Value {
    json!({
        "Path": "/",
        "UserName": user.user_name,
        "UserId": user.user_id,
        "Arn": user_arn(&user.user_name),
        "CreateDate": user.created_ms as f64 / 1000.0,
        "Tags": user_tags(user),
    })
}

fn user_tags(user: &User) -> Value {
    let mut tags = vec![json!({"Key": ROLE_TAG, "Value": user.role.as_str()})];
    if !user.clusters.is_empty() {
        tags.push(json!({"Key": CLUSTERS_TAG, "Value": user.clusters.join(",")}));
    }
    Value::Array(tags)
}

/// An access key's metadata as IAM shows it: never its secret.
pub fn access_key_view(key: &AccessKey) -> Value {
    json!({
        "UserName": key.user_name,
        "AccessKeyId": key.access_key_id,
        "Status": if key.inactive { "Inactive" } else { "Active" },
        "CreateDate": key.created_ms as f64 / 1000.0,
    })
}

impl IamState {
    /// A user by name, or IAM's NoSuchEntity in words.
    pub fn user(&self, user_name: &str) -> Result<&User, Error> {
        self.users.get(user_name).ok_or_else(|| {
            Error::NotFound(format!(
                "the user with name {user_name} cannot be found (NoSuchEntity): list them with `orc iam list-users`"
            ))
        })
    }

    /// The keys of one user, oldest first.
    pub fn keys_of<'a>(&'a self, user_name: &'a str) -> impl Iterator<Item = &'a AccessKey> + 'a {
        self.access_keys
            .values()
            .filter(move |key| key.user_name == user_name)
    }
}

/// Applies one IAM command.
pub fn apply(iam: &mut IamState, command: &IamCommand) -> Outcome {
    match command {
        IamCommand::CreateUser { user } => {
            validate_user_name(&user.user_name)?;
            for cluster in &user.clusters {
                crate::model::validate_cluster_name(cluster)
                    .map_err(|e| Error::InvalidInput(format!("Clusters: {e}")))?;
            }
            if iam.users.contains(&user.user_name) {
                return Err(Error::Conflict(format!(
                    "user with name {} already exists (EntityAlreadyExists): pick another name or delete it first",
                    user.user_name
                )));
            }
            iam.users.insert(user.user_name.clone(), user.clone());
            Ok(json!({ "User": user_view(user) }))
        }
        IamCommand::DeleteUser { user_name } => {
            iam.user(user_name)?;
            let keys = iam.keys_of(user_name).count();
            if keys > 0 {
                return Err(Error::Conflict(format!(
                    "cannot delete user {user_name}: it still has {keys} access key(s) (DeleteConflict); delete them first with `orc iam delete-access-key`"
                )));
            }
            iam.users.remove(user_name);
            Ok(json!({}))
        }
        IamCommand::CreateAccessKey { access_key } => {
            iam.user(&access_key.user_name)?;
            if iam.keys_of(&access_key.user_name).count() >= MAX_KEYS_PER_USER {
                return Err(Error::Conflict(format!(
                    "user {} already has {MAX_KEYS_PER_USER} access keys (LimitExceeded): delete one first",
                    access_key.user_name
                )));
            }
            if iam.access_keys.contains(&access_key.access_key_id) {
                return Err(Error::Internal(
                    "the new access key id is already taken: retry".into(),
                ));
            }
            iam.access_keys
                .insert(access_key.access_key_id.clone(), access_key.clone());
            Ok(json!({ "AccessKey": access_key_view(access_key) }))
        }
        IamCommand::DeleteAccessKey {
            access_key_id,
            user_name,
        } => {
            iam.key_of(access_key_id, user_name.as_deref())?;
            iam.access_keys.remove(access_key_id);
            Ok(json!({}))
        }
        IamCommand::UpdateAccessKey {
            access_key_id,
            user_name,
            active,
        } => {
            let mut key = iam.key_of(access_key_id, user_name.as_deref())?.clone();
            key.inactive = !*active;
            iam.access_keys.insert(access_key_id.clone(), key);
            Ok(json!({}))
        }
    }
}

impl IamState {
    /// An access key by id, checked against `user_name` when given, or
    /// IAM's NoSuchEntity in words.
    fn key_of(&self, access_key_id: &str, user_name: Option<&str>) -> Result<&AccessKey, Error> {
        let Some(key) = self.access_keys.get(access_key_id) else {
            return Err(Error::NotFound(format!(
                "the access key with id {access_key_id} cannot be found (NoSuchEntity): list them with `orc iam list-access-keys`"
            )));
        };
        if let Some(user_name) = user_name {
            if key.user_name != user_name {
                return Err(Error::NotFound(format!(
                    "the access key with id {access_key_id} does not belong to user {user_name} (NoSuchEntity)"
                )));
            }
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role) -> User {
        User {
            user_name: name.into(),
            user_id: format!("AIDA{name}"),
            role,
            created_ms: 1_000,
            clusters: vec![],
        }
    }

    fn key(id: &str, user_name: &str) -> AccessKey {
        AccessKey {
            access_key_id: id.into(),
            user_name: user_name.into(),
            sealed_secret: "c2VhbGVk".into(),
            created_ms: 2_000,
            inactive: false,
        }
    }

    #[test]
    fn users_and_keys_follow_iams_rules() {
        let mut iam = IamState::default();
        let created = apply(
            &mut iam,
            &IamCommand::CreateUser {
                user: user("ada", Role::Operator),
            },
        )
        .unwrap();
        assert_eq!(created["User"]["Tags"][0]["Value"], "operator");
        assert_eq!(created["User"]["Arn"], "arn:orc:iam::000000000000:user/ada");
        assert!(apply(
            &mut iam,
            &IamCommand::CreateUser {
                user: user("ada", Role::Admin)
            }
        )
        .is_err());
        assert!(apply(
            &mut iam,
            &IamCommand::CreateUser {
                user: user("no spaces", Role::Admin)
            }
        )
        .is_err());
        let answer = apply(
            &mut iam,
            &IamCommand::CreateAccessKey {
                access_key: key("AKIA1", "ada"),
            },
        )
        .unwrap();
        assert!(!answer.to_string().contains("c2VhbGVk"), "{answer}");
        apply(
            &mut iam,
            &IamCommand::CreateAccessKey {
                access_key: key("AKIA2", "ada"),
            },
        )
        .unwrap();
        let third = apply(
            &mut iam,
            &IamCommand::CreateAccessKey {
                access_key: key("AKIA3", "ada"),
            },
        )
        .unwrap_err();
        assert!(third.to_string().contains("LimitExceeded"), "{third}");
        assert!(apply(
            &mut iam,
            &IamCommand::CreateAccessKey {
                access_key: key("AKIA4", "nobody")
            }
        )
        .is_err());
        let conflict = apply(
            &mut iam,
            &IamCommand::DeleteUser {
                user_name: "ada".into(),
            },
        )
        .unwrap_err();
        assert!(
            conflict.to_string().contains("DeleteConflict"),
            "{conflict}"
        );
        assert!(apply(
            &mut iam,
            &IamCommand::DeleteAccessKey {
                access_key_id: "AKIA1".into(),
                user_name: Some("bob".into())
            }
        )
        .is_err());
        for id in ["AKIA1", "AKIA2"] {
            apply(
                &mut iam,
                &IamCommand::DeleteAccessKey {
                    access_key_id: id.into(),
                    user_name: None,
                },
            )
            .unwrap();
        }
        apply(
            &mut iam,
            &IamCommand::DeleteUser {
                user_name: "ada".into(),
            },
        )
        .unwrap();
        assert!(iam.users.is_empty() && iam.access_keys.is_empty());
    }
}
