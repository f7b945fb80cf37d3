//! The cluster's trust state: join tokens (their id, role, expiry and the
//! SHA-256 of their secret: never the secret itself, see `tls::token`),
//! and a CA rotation (`orc ca rotate`): the new CA's certificate, its key
//! **sealed** with the cluster's seal key, its phase and the nodes that
//! moved to it. The first CA and its key live only in the servers' data
//! dirs and reach a joining server in its join answer; a rotated CA's key
//! crosses the state only sealed, like every other secret.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::Outcome;
use super::state::State;
use crate::tls::token::TokenRecord;
use crate::Error;

/// What the state knows of trust.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrustState {
    /// Join tokens by id.
    #[serde(default)]
    pub join_tokens: BTreeMap<String, TokenRecord>,
    /// The CA rotation under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// The cluster CA once it has been rotated (before the first rotation
    /// the CA is only in the servers' data dirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaRecord>,
}

/// A CA as the state holds it: the certificate, and the key sealed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaRecord {
    /// The CA certificate (PEM).
    pub cert_pem: String,
    /// Its SHA-256 fingerprint (what join tokens pin).
    pub fingerprint: String,
    /// The CA key, sealed with the cluster's seal key (base64).
    pub sealed_key: String,
}

/// Where a rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotationPhase {
    /// Every server trusts both CAs and signs with the new one; servers
    /// still present their old certificates while the agents renew.
    Agents,
    /// Every agent holds a new certificate: the servers take theirs.
    Servers,
}

impl RotationPhase {
    /// As `orc ca status` shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            RotationPhase::Agents => "agents",
            RotationPhase::Servers => "servers",
        }
    }
}

/// A CA rotation under way (`orc ca rotate`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rotation {
    /// The new CA.
    pub new: CaRecord,
    /// The CA being replaced (certificate only).
    pub old_cert_pem: String,
    /// Its fingerprint.
    pub old_fingerprint: String,
    /// When the rotation started (ms since the epoch).
    pub started_ms: u64,
    /// Where it stands.
    pub phase: RotationPhase,
    /// The nodes holding a certificate of the new CA: `agent:INSTANCE`,
    /// `server:ID`.
    #[serde(default)]
    pub moved: BTreeSet<String>,
}

/// A change of the trust state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TrustCommand {
    /// `orc token create`: the token's record (its secret's hash only).
    CreateJoinToken {
        /// The record.
        record: TokenRecord,
    },
    /// `orc token revoke`.
    RevokeJoinToken {
        /// The token's id.
        id: String,
        /// When.
        now_ms: u64,
    },
    /// `orc ca rotate`: a new CA (its key sealed).
    StartCaRotation {
        /// The rotation, in its first phase.
        rotation: Rotation,
    },
    /// A node holds a certificate of the rotation's new CA.
    CaNodeMoved {
        /// The new CA's fingerprint (a stale report of another rotation is ignored).
        fingerprint: String,
        /// `agent:INSTANCE` or `server:ID`.
        holder: String,
    },
    /// Every agent moved: the servers take their new certificates.
    CaServersPhase {
        /// The new CA's fingerprint.
        fingerprint: String,
    },
    /// Every server moved: the old CA is dropped.
    FinishCaRotation {
        /// The new CA's fingerprint.
        fingerprint: String,
    },
}

/// How many join tokens the state keeps; the oldest revoked or expired
/// ones make room.
pub const MAX_JOIN_TOKENS: usize = 1_000;

impl TrustCommand {
    /// The command's name as watchers see it.
    pub fn action(&self) -> &'static str {
        match self {
            TrustCommand::CreateJoinToken { .. } => "CreateJoinToken",
            TrustCommand::RevokeJoinToken { .. } => "RevokeJoinToken",
            TrustCommand::StartCaRotation { .. } => "StartCaRotation",
            TrustCommand::CaNodeMoved { .. } => "CaNodeMoved",
            TrustCommand::CaServersPhase { .. } => "CaServersPhase",
            TrustCommand::FinishCaRotation { .. } => "FinishCaRotation",
        }
    }

    /// `join-token/ID`, or `ca` for the rotation's steps.
    pub fn subjects(&self) -> Vec<String> {
        let id = match self {
            TrustCommand::CreateJoinToken { record } => &record.id,
            TrustCommand::RevokeJoinToken { id, .. } => id,
            _ => return vec!["ca".to_string()],
        };
        vec![format!("join-token/{id}")]
    }
}

/// A token's record as `orc token list` shows it (no hash).
pub fn describe(record: &TokenRecord, now_ms: u64) -> serde_json::Value {
    let status = if record.revoked_ms != 0 {
        "REVOKED"
    } else if record.expires_ms != 0 && now_ms >= record.expires_ms {
        "EXPIRED"
    } else {
        "ACTIVE"
    };
    serde_json::json!({
        "id": record.id,
        "role": record.role.as_str(),
        "status": status,
        "createdAt": record.created_ms as f64 / 1000.0,
        "expiresAt": (record.expires_ms != 0).then(|| record.expires_ms as f64 / 1000.0),
    })
}

/// Applies a trust command.
pub fn apply(state: &mut State, command: &TrustCommand) -> Outcome {
    let trust = &mut state.trust;
    match command {
        TrustCommand::CreateJoinToken { record } => {
            if trust.join_tokens.contains_key(&record.id) {
                return Err(Error::Conflict(format!(
                    "join token {} exists already: create another",
                    record.id
                )));
            }
            if trust.join_tokens.len() >= MAX_JOIN_TOKENS {
                // Make room with the oldest token that no longer works.
                let now = record.created_ms;
                let dead = trust
                    .join_tokens
                    .values()
                    .filter(|t| t.revoked_ms != 0 || (t.expires_ms != 0 && t.expires_ms <= now))
                    .min_by_key(|t| t.created_ms)
                    .map(|t| t.id.clone());
                match dead {
                    Some(id) => {
                        trust.join_tokens.remove(&id);
                    }
                    None => {
                        return Err(Error::InvalidInput(format!(
                            "the cluster holds {MAX_JOIN_TOKENS} live join tokens: revoke some (`orc token list`, `orc token revoke ID`)"
                        )))
                    }
                }
            }
            trust.join_tokens.insert(record.id.clone(), record.clone());
            Ok(describe(record, record.created_ms))
        }
        TrustCommand::RevokeJoinToken { id, now_ms } => {
            let Some(record) = trust.join_tokens.get_mut(id) else {
                return Err(Error::NotFound(format!(
                    "join token {id} does not exist: `orc token list` shows them"
                )));
            };
            if record.revoked_ms == 0 {
                record.revoked_ms = (*now_ms).max(1);
            }
            Ok(describe(record, *now_ms))
        }
        TrustCommand::StartCaRotation { rotation } => {
            if let Some(under_way) = &trust.rotation {
                return Err(Error::Conflict(format!(
                    "a CA rotation to sha256 {} is under way already: `orc ca status` shows its progress",
                    under_way.new.fingerprint
                )));
            }
            trust.rotation = Some(rotation.clone());
            Ok(serde_json::json!({"newFingerprint": rotation.new.fingerprint}))
        }
        TrustCommand::CaNodeMoved {
            fingerprint,
            holder,
        } => {
            if let Some(rotation) = trust
                .rotation
                .as_mut()
                .filter(|r| r.new.fingerprint == *fingerprint)
            {
                rotation.moved.insert(holder.clone());
            }
            Ok(serde_json::json!({}))
        }
        TrustCommand::CaServersPhase { fingerprint } => {
            if let Some(rotation) = trust
                .rotation
                .as_mut()
                .filter(|r| r.new.fingerprint == *fingerprint)
            {
                rotation.phase = RotationPhase::Servers;
            }
            Ok(serde_json::json!({}))
        }
        TrustCommand::FinishCaRotation { fingerprint } => {
            if trust
                .rotation
                .as_ref()
                .is_some_and(|r| r.new.fingerprint == *fingerprint)
            {
                trust.ca = trust.rotation.take().map(|r| r.new);
            }
            Ok(serde_json::json!({}))
        }
    }
}
