//! The cluster's trust state: join tokens (their id, role, expiry and the
//! SHA-256 of their secret: never the secret itself, see `tls::token`).
//! The CA and its key are not here: they live in the servers' data dirs
//! and reach a joining server in its join answer, never through the state,
//! a snapshot or the watch stream.

use std::collections::BTreeMap;

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
        }
    }

    /// `join-token/ID`.
    pub fn subjects(&self) -> Vec<String> {
        let id = match self {
            TrustCommand::CreateJoinToken { record } => &record.id,
            TrustCommand::RevokeJoinToken { id, .. } => id,
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
    }
}
