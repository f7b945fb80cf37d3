//! Join tokens, in Docker Swarm's style: `ORC1-<CA fingerprint>-<id>-<secret>`.
//!
//! The fingerprint lets a joining node verify the cluster before it sends
//! anything (it pins the CA the server presents); the secret lets the
//! cluster verify the node. The replicated state keeps only the token's id,
//! role, expiry and the SHA-256 of its secret ([`TokenRecord`]), so neither
//! the state, a snapshot nor the watch stream can give a token away.
//! [`check`] is the pure rule a server applies before it issues a
//! certificate.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a token lets its holder become.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A container instance (`orc agent --token`).
    Agent,
    /// A control-plane member (`orc server --join --token`).
    Server,
}

impl NodeRole {
    /// The role's name as `--role` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Agent => "agent",
            NodeRole::Server => "server",
        }
    }
}

impl std::str::FromStr for NodeRole {
    type Err = Error;
    fn from_str(s: &str) -> Result<NodeRole> {
        match s {
            "agent" => Ok(NodeRole::Agent),
            "server" => Ok(NodeRole::Server),
            other => Err(Error::InvalidInput(format!(
                "unknown join role {other:?}: use agent or server"
            ))),
        }
    }
}

/// A token as the node holding it has it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The SHA-256 fingerprint of the cluster CA certificate (hex).
    pub ca_fingerprint: String,
    /// The token's id (what `orc token list` and `revoke` show).
    pub id: String,
    /// The secret (hex), never stored by the cluster.
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinToken({})", self.id)
    }
}

const PREFIX: &str = "ORC1";

impl JoinToken {
    /// A new token for the CA with `ca_fingerprint`.
    pub fn generate(ca_fingerprint: &str) -> JoinToken {
        JoinToken {
            ca_fingerprint: ca_fingerprint.to_string(),
            id: crate::crypto::hex(&rand::random::<[u8; 6]>()),
            secret: crate::crypto::hex(&rand::random::<[u8; 16]>()),
        }
    }

    /// The SHA-256 of the secret, as the state keeps it.
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }

    /// Reads a token; the error says what a token looks like.
    pub fn parse(text: &str) -> Result<JoinToken> {
        let invalid = || {
            Error::InvalidInput(
                "this is not an orc join token (ORC1-…): copy the whole token `orc token create` printed".into(),
            )
        };
        let mut parts = text.trim().split('-');
        let (Some(PREFIX), Some(fingerprint), Some(id), Some(secret), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid());
        };
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(fingerprint, 64) || !hex(id, 12) || !hex(secret, 32) {
            return Err(invalid());
        }
        Ok(JoinToken {
            ca_fingerprint: fingerprint.to_ascii_lowercase(),
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}-{}-{}-{}",
            self.ca_fingerprint, self.id, self.secret
        )
    }
}

/// The SHA-256 of a token secret (hex).
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest as _;
    crate::crypto::hex(&sha2::Sha256::digest(secret.as_bytes()))
}

/// A token as the replicated state keeps it: no secret, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// The token's id.
    pub id: String,
    /// What it lets its holder become.
    pub role: NodeRole,
    /// SHA-256 of the secret (hex).
    pub secret_sha256: String,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// When it stops working (ms since the epoch; 0: never).
    pub expires_ms: u64,
    /// When it was revoked (0: it was not).
    #[serde(default)]
    pub revoked_ms: u64,
}

/// Why a join was refused, for the node (the error) and the server's log.
pub fn check(
    record: Option<&TokenRecord>,
    token: &JoinToken,
    role: NodeRole,
    now_ms: u64,
) -> Result<()> {
    let unauthenticated =
        |why: String| Err(Error::Refused(crate::error::Refusal::Unauthenticated, why));
    let Some(record) = record else {
        return unauthenticated(format!(
            "join token {} is not known to this cluster: ask an admin for a token (`orc token create --role {}`)",
            token.id,
            role.as_str()
        ));
    };
    // Compared in constant time: the hashes are public, the secret is not.
    if !crate::crypto::same_secret(&record.secret_sha256, &token.secret_hash()) {
        return unauthenticated(format!(
            "join token {} has the wrong secret: copy the whole token `orc token create` printed",
            token.id
        ));
    }
    if record.revoked_ms != 0 {
        return unauthenticated(format!(
            "join token {} was revoked: ask an admin for a new one (`orc token create --role {}`)",
            token.id,
            role.as_str()
        ));
    }
    if record.expires_ms != 0 && now_ms >= record.expires_ms {
        return unauthenticated(format!(
            "join token {} expired: ask an admin for a new one (`orc token create --role {} --ttl 1h`)",
            token.id,
            role.as_str()
        ));
    }
    if record.role != role {
        return unauthenticated(format!(
            "join token {} is for joining as {}, not as {}: use a token created with --role {}",
            token.id,
            record.role.as_str(),
            role.as_str(),
            role.as_str()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(token: &JoinToken, role: NodeRole) -> TokenRecord {
        TokenRecord {
            id: token.id.clone(),
            role,
            secret_sha256: token.secret_hash(),
            created_ms: 1_000,
            expires_ms: 10_000,
            revoked_ms: 0,
        }
    }

    #[test]
    fn tokens_print_and_parse_back() {
        let token = JoinToken::generate(&"ab".repeat(32));
        let text = token.to_string();
        assert!(text.starts_with("ORC1-abab"), "{text}");
        assert_eq!(JoinToken::parse(&text).unwrap(), token);
        assert!(!format!("{token:?}").contains(&token.secret));
        for bad in [
            "",
            "ORC1-x-y-z",
            &text.replace("ORC1", "SWMTKN"),
            &format!("{text}-1"),
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_refusal_says_why() {
        let token = JoinToken::generate(&"ab".repeat(32));
        let good = record(&token, NodeRole::Agent);
        assert!(check(Some(&good), &token, NodeRole::Agent, 5_000).is_ok());
        let why = |record: Option<&TokenRecord>, token: &JoinToken, role, now| {
            check(record, token, role, now).unwrap_err().to_string()
        };
        assert!(why(None, &token, NodeRole::Agent, 5_000).contains("not known"));
        let mut wrong = token.clone();
        wrong.secret = "00".repeat(16);
        assert!(why(Some(&good), &wrong, NodeRole::Agent, 5_000).contains("wrong secret"));
        assert!(why(Some(&good), &token, NodeRole::Agent, 10_000).contains("expired"));
        let revoked = TokenRecord {
            revoked_ms: 2_000,
            ..good.clone()
        };
        assert!(why(Some(&revoked), &token, NodeRole::Agent, 5_000).contains("revoked"));
        assert!(why(Some(&good), &token, NodeRole::Server, 5_000).contains("not as server"));
        let forever = TokenRecord {
            expires_ms: 0,
            ..good
        };
        assert!(check(Some(&forever), &token, NodeRole::Agent, u64::MAX).is_ok());
    }
}
