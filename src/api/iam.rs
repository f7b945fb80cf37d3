//! IAM's verbs for the cluster's users and access keys (`orc iam …`, and
//! `aws iam …` through the AWS door), with IAM's PascalCase shapes; and
//! [`secret_of`], the look-up the AWS door's SigV4 check makes.
//!
//! A new access key's secret is made here, sealed with the cluster's seal
//! key, and only the sealed bytes are proposed: the plaintext leaves the
//! server once, in `CreateAccessKey`'s answer, and is never logged. A user's
//! role travels as orc's `Role` member or as the tag `orc:role` (what
//! `aws iam create-user --tags Key=orc:role,Value=operator` sends).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ecs::{parse, propose, read_linearizable, ActionResult};
use crate::raft::node::RaftHandle;
use crate::seal::SealKey;
use crate::store::iam::{
    access_key_view, user_view, AccessKey, IamCommand, User, CLUSTERS_TAG, ROLE_TAG,
};
use crate::store::Command;
use crate::vocab::action::IamAction;
use crate::vocab::principal::{Principal, Role};
use crate::vocab::time::now_ms;
use crate::{Error, Result};

/// IAM's id alphabet (base32: upper-case letters and 2 to 7).
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// The alphabet of a secret access key (as AWS's: base64's).
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_text(alphabet: &[u8], length: usize) -> String {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    (0..length)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// A new access key id: `AKIA` and 16 base32 characters, like AWS's.
pub fn new_access_key_id() -> String {
    format!("AKIA{}", random_text(ID_ALPHABET, 16))
}

/// A new secret access key: 40 characters, like AWS's (240 random bits).
pub fn new_secret_access_key() -> String {
    random_text(SECRET_ALPHABET, 40)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UserRequest {
    #[serde(default)]
    user_name: Option<String>,
    /// orc's own member; or the `orc:role` tag.
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    access_key_id: Option<String>,
    /// UpdateAccessKey's Active or Inactive.
    #[serde(default)]
    status: Option<String>,
    /// orc's own member; or the `orc:clusters` tag (comma-separated).
    #[serde(default)]
    clusters: Vec<String>,
}

impl UserRequest {
    fn user_name(&self, action: &str) -> Result<String> {
        self.user_name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::InvalidInput(format!("{action}: UserName is required")))
    }
}

/// Dispatches one IAM action: the one `match` over [`IamAction`].
pub async fn call(
    raft: &RaftHandle,
    seal: &SealKey,
    action: IamAction,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    let name = action.name();
    let request: UserRequest = parse(name, body)?;
    match action {
        IamAction::CreateUser => {
            let user_name = request.user_name(name)?;
            let role = request
                .role
                .clone()
                .or_else(|| {
                    request
                        .tags
                        .iter()
                        .find(|tag| tag.key == ROLE_TAG)
                        .map(|tag| tag.value.clone())
                })
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "CreateUser: a user needs a role: pass --role admin|operator|readonly (aws: --tags Key={ROLE_TAG},Value=ROLE)"
                    ))
                })?
                .parse::<Role>()?;
            let mut clusters = request.clusters.clone();
            if let Some(tag) = request.tags.iter().find(|tag| tag.key == CLUSTERS_TAG) {
                clusters.extend(tag.value.split(',').map(|c| c.trim().to_string()));
            }
            clusters.retain(|c| !c.is_empty());
            clusters.sort();
            clusters.dedup();
            let user = User {
                user_name,
                user_id: format!("AIDA{}", random_text(ID_ALPHABET, 17)),
                role,
                created_ms: now_ms(),
                clusters,
            };
            let answer = propose(
                raft,
                request_id,
                Command::Iam(IamCommand::CreateUser { user }),
            )
            .await?;
            Ok(answer.into())
        }
        IamAction::DeleteUser => {
            let user_name = request.user_name(name)?;
            propose(
                raft,
                request_id,
                Command::Iam(IamCommand::DeleteUser { user_name }),
            )
            .await?;
            Ok(json!({}).into())
        }
        IamAction::ListUsers => {
            read_linearizable(raft, |state| {
                let users: Vec<Value> = state.iam.users.values().map(user_view).collect();
                Ok(json!({ "Users": users, "IsTruncated": false }).into())
            })
            .await
        }
        IamAction::CreateAccessKey => {
            let user_name = request.user_name(name)?;
            let access_key_id = new_access_key_id();
            let secret = new_secret_access_key();
            let sealed_secret =
                base64::engine::general_purpose::STANDARD.encode(seal.seal(secret.as_bytes()));
            let access_key = AccessKey {
                access_key_id: access_key_id.clone(),
                user_name,
                sealed_secret,
                created_ms: now_ms(),
                inactive: false,
            };
            let mut answer = propose(
                raft,
                request_id,
                Command::Iam(IamCommand::CreateAccessKey { access_key }),
            )
            .await?;
            // A retried request answers the first attempt's key, whose
            // secret this attempt never saw: say so rather than print a
            // secret that does not belong to the key.
            if answer["AccessKey"]["AccessKeyId"] != access_key_id.as_str() {
                return Err(Error::Conflict(format!(
                    "CreateAccessKey: an earlier attempt of this request created access key {} and its secret was lost with that answer: delete it with `orc iam delete-access-key --access-key-id {}` and create another",
                    answer["AccessKey"]["AccessKeyId"].as_str().unwrap_or("?"),
                    answer["AccessKey"]["AccessKeyId"].as_str().unwrap_or("?"),
                )));
            }
            answer["AccessKey"]["SecretAccessKey"] = Value::String(secret);
            Ok(answer.into())
        }
        IamAction::ListAccessKeys => {
            read_linearizable(raft, |state| {
                let keys: Vec<Value> = match &request.user_name {
                    Some(user_name) => {
                        state.iam.user(user_name)?;
                        state.iam.keys_of(user_name).map(access_key_view).collect()
                    }
                    None => state
                        .iam
                        .access_keys
                        .values()
                        .map(access_key_view)
                        .collect(),
                };
                Ok(json!({ "AccessKeyMetadata": keys, "IsTruncated": false }).into())
            })
            .await
        }
        IamAction::UpdateAccessKey => {
            let access_key_id = request
                .access_key_id
                .clone()
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    Error::InvalidInput("UpdateAccessKey: AccessKeyId is required".into())
                })?;
            let active = match request.status.as_deref() {
                Some("Active") => true,
                Some("Inactive") => false,
                other => {
                    return Err(Error::InvalidInput(format!(
                        "UpdateAccessKey: Status must be Active or Inactive (got {})",
                        other
                            .map(|s| format!("{s:?}"))
                            .unwrap_or_else(|| "nothing".into())
                    )))
                }
            };
            propose(
                raft,
                request_id,
                Command::Iam(IamCommand::UpdateAccessKey {
                    access_key_id,
                    user_name: request.user_name.clone(),
                    active,
                }),
            )
            .await?;
            Ok(json!({}).into())
        }
        IamAction::DeleteAccessKey => {
            let access_key_id = request
                .access_key_id
                .clone()
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    Error::InvalidInput("DeleteAccessKey: AccessKeyId is required".into())
                })?;
            propose(
                raft,
                request_id,
                Command::Iam(IamCommand::DeleteAccessKey {
                    access_key_id,
                    user_name: request.user_name.clone(),
                }),
            )
            .await?;
            Ok(json!({}).into())
        }
    }
}

/// What the SigV4 check needs of an access key: its secret (opened) and
/// the principal it authenticates as. `None` when no such key exists; an
/// inactive key is refused (`Refusal::Unauthenticated`, which the door
/// answers as it answers an unknown key, as AWS does).
pub fn secret_of(
    raft: &RaftHandle,
    seal: &SealKey,
    access_key_id: &str,
) -> Result<Option<(String, Principal)>> {
    let found = raft.store().read(|state| {
        state.iam.access_keys.get(access_key_id).and_then(|key| {
            let user = state.iam.users.get(&key.user_name)?;
            Some((
                key.sealed_secret.clone(),
                user.user_name.clone(),
                user.role,
                key.inactive,
            ))
        })
    });
    let Some((sealed, name, role, inactive)) = found else {
        return Ok(None);
    };
    if inactive {
        return Err(Error::Refused(
            crate::error::Refusal::Unauthenticated,
            format!(
                "The security token included in the request is invalid: access key {access_key_id} is inactive (`orc iam update-access-key --access-key-id {access_key_id} --status Active` makes it work again)"
            ),
        ));
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| Error::Internal("an access key's sealed secret is not base64".into()))?;
    let secret = seal.open_string(&sealed)?;
    Ok(Some((secret, Principal::User { name, role })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_look_like_aws_keys() {
        let id = new_access_key_id();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("AKIA"));
        assert!(id.bytes().all(|b| ID_ALPHABET.contains(&b)));
        let secret = new_secret_access_key();
        assert_eq!(secret.len(), 40);
        assert_ne!(secret, new_secret_access_key());
    }
}
