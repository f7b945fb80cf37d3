//! Joining and the cluster's credentials: `Orc.Join` (a node with a join
//! token gets a certificate for its id and role), `Orc.RenewCertificate`
//! (a holder renews its own), and `Orc.Admin` (admins create, list and
//! revoke join tokens). Every refused join is logged with the caller's
//! address and the reason; no secret is ever logged, stored or answered
//! twice (a token's secret is in the answer to its creation only, never
//! in the state or the remembered answer of its request id).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use super::ApiContext;
use crate::error::Refusal;
use crate::store::trust::{describe, TrustCommand};
use crate::store::{Command, Proposal};
use crate::tls::ca::{cert_lifetime, Authority};
use crate::tls::token::{check, JoinToken, NodeRole, TokenRecord};
use crate::tls::ServerTlsSource;
use crate::vocab::principal::{Access, Principal};
use crate::vocab::time::now_ms;
use crate::{Error, Result};

/// A TLS server's certificate authority and listener configuration.
pub struct Security {
    /// The server's data dir (its `tls/` files).
    pub data_dir: PathBuf,
    /// The cluster CA, with its key.
    pub authority: RwLock<Authority>,
    /// What the listener accepts connections with (swapped on renewal).
    pub listener: ServerTlsSource,
}

impl Security {
    /// The CA as it is now.
    pub fn authority(&self) -> Authority {
        self.authority
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Where the seal key (secrets at rest, `seal.rs`) lives in a data dir: a
/// joining server receives it with the CA key.
pub fn seal_key_path(data_dir: &Path) -> PathBuf {
    crate::seal::key_path(data_dir)
}

/// What a node receives when it joins or renews.
#[derive(Clone, Default)]
pub struct Issued {
    /// Its certificate (PEM).
    pub certificate: String,
    /// The CA certificate(s) (PEM).
    pub ca: String,
    /// Servers only: the CA key (PEM).
    pub ca_key: String,
    /// Agents: the instance id the certificate names.
    pub container_instance_id: String,
    /// The control plane's id.
    pub cluster_id: String,
    /// Servers only: the seal key, when the cluster has one.
    pub seal_key: Vec<u8>,
}

impl ApiContext {
    fn security(&self) -> Result<&Arc<Security>> {
        self.security.as_ref().ok_or_else(|| {
            Error::InvalidInput(
                "this server was started --insecure: it has no CA, so it issues no certificates and no join tokens; start it without --insecure"
                    .into(),
            )
        })
    }

    /// `Orc.Join`: checks the token and signs the node's request.
    pub(super) async fn join(
        &self,
        remote: Option<SocketAddr>,
        token: &str,
        role: &str,
        node_id: u64,
        signing_request: &[u8],
    ) -> Result<Issued> {
        let peer = remote.map(|a| a.to_string()).unwrap_or_default();
        let refuse = |error: Error| {
            tracing::warn!(%peer, role, %error, "refused a join");
            error
        };
        let security = self.security()?;
        let role: NodeRole = role.parse().map_err(refuse)?;
        if token.is_empty() {
            return Err(refuse(Error::Refused(
                Refusal::Unauthenticated,
                format!(
                    "joining needs a join token: ask an admin for one (`orc token create --role {}`) and pass it with --token",
                    role.as_str()
                ),
            )));
        }
        let token = JoinToken::parse(token).map_err(refuse)?;
        let authority = security.authority();
        if token.ca_fingerprint != authority.fingerprint() {
            return Err(refuse(Error::Refused(
                Refusal::Unauthenticated,
                format!(
                    "join token {} was made for another cluster (its CA fingerprint is not this cluster's): use a token of this cluster",
                    token.id
                ),
            )));
        }
        // A token created a moment ago on the leader must be seen here.
        self.raft.read_barrier().await?;
        let record = self
            .raft
            .store()
            .read(|state| state.trust.join_tokens.get(&token.id).cloned());
        check(record.as_ref(), &token, role, now_ms()).map_err(refuse)?;
        let holder = match role {
            NodeRole::Agent => Principal::Agent {
                instance: format!("{:032x}", rand::random::<u128>()),
            },
            NodeRole::Server if node_id == 0 => {
                return Err(refuse(Error::InvalidInput(
                    "a joining server must name its node id".into(),
                )))
            }
            NodeRole::Server => Principal::Server { node_id },
        };
        let certificate = authority
            .sign_request(signing_request, &holder, cert_lifetime())
            .map_err(refuse)?;
        tracing::info!(%peer, holder = %holder, token = %token.id, "issued a certificate to a joining node");
        let mut issued = Issued {
            certificate,
            ca: authority.cert_pem.clone(),
            cluster_id: self.control_plane_id(),
            ..Issued::default()
        };
        match holder {
            Principal::Agent { instance } => issued.container_instance_id = instance,
            _ => {
                issued.ca_key = authority.key_pem.clone();
                issued.seal_key =
                    std::fs::read(seal_key_path(&security.data_dir)).unwrap_or_default();
            }
        }
        Ok(issued)
    }

    /// `Orc.RenewCertificate`: a new certificate for the caller's own identity.
    pub(super) fn renew_certificate(
        &self,
        principal: &Principal,
        signing_request: &[u8],
    ) -> Result<Issued> {
        let security = self.security()?;
        match principal {
            Principal::Server { .. } | Principal::Agent { .. } | Principal::User { .. } => {}
            Principal::Anonymous => {
                return Err(Error::Refused(
                    Refusal::Unauthenticated,
                    "renewing a certificate needs the certificate being renewed".into(),
                ))
            }
            _ => {
                return Err(Error::InvalidInput(
                    "this caller has no certificate to renew".into(),
                ))
            }
        }
        let authority = security.authority();
        let certificate = authority.sign_request(signing_request, principal, cert_lifetime())?;
        tracing::info!(holder = %principal, "renewed a certificate");
        Ok(Issued {
            certificate,
            ca: authority.cert_pem.clone(),
            cluster_id: self.control_plane_id(),
            ..Issued::default()
        })
    }

    /// `Orc.Admin`: the cluster's credentials, for admins.
    pub(super) async fn admin(
        &self,
        principal: &Principal,
        action: &str,
        body: &str,
        request_id: String,
    ) -> Result<Value> {
        principal.may(Access::Admin, &format!("orc:{action}"))?;
        let body: Value = if body.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(body)
                .map_err(|e| Error::InvalidInput(format!("{action}: invalid json: {e}")))?
        };
        let request_id = if request_id.is_empty() {
            crate::vocab::ids::request_id()
        } else {
            request_id
        };
        match action {
            "CreateJoinToken" => {
                let role: NodeRole = body["role"].as_str().unwrap_or_default().parse()?;
                let ttl_seconds = body["ttlSeconds"].as_u64().unwrap_or(0);
                let token = JoinToken::generate(&self.security()?.authority().fingerprint());
                let now = now_ms();
                let record = TokenRecord {
                    id: token.id.clone(),
                    role,
                    secret_sha256: token.secret_hash(),
                    created_ms: now,
                    expires_ms: if ttl_seconds == 0 {
                        0
                    } else {
                        now.saturating_add(ttl_seconds.saturating_mul(1000))
                    },
                    revoked_ms: 0,
                };
                let mut answer = self
                    .raft
                    .propose(Proposal {
                        request_id,
                        command: Command::Trust(TrustCommand::CreateJoinToken { record }),
                    })
                    .await?;
                // The secret goes to the caller only: it is in neither the
                // state nor the answer remembered for a retry.
                answer["token"] = json!(token.to_string());
                Ok(answer)
            }
            "ListJoinTokens" => {
                self.raft.read_barrier().await?;
                let now = now_ms();
                let tokens: Vec<Value> = self.raft.store().read(|state| {
                    state
                        .trust
                        .join_tokens
                        .values()
                        .map(|record| describe(record, now))
                        .collect()
                });
                Ok(json!({ "joinTokens": tokens }))
            }
            "RevokeJoinToken" => {
                let id = body["id"].as_str().unwrap_or_default().to_string();
                if id.is_empty() {
                    return Err(Error::InvalidInput(
                        "RevokeJoinToken needs the token's id (`orc token list` shows them)".into(),
                    ));
                }
                // A whole token is accepted too: its id is the third part.
                let id = JoinToken::parse(&id).map(|t| t.id).unwrap_or(id);
                self.raft
                    .propose(Proposal {
                        request_id,
                        command: Command::Trust(TrustCommand::RevokeJoinToken {
                            id,
                            now_ms: now_ms(),
                        }),
                    })
                    .await
            }
            other => Err(Error::InvalidInput(format!(
                "unknown admin action {other:?}: use CreateJoinToken, ListJoinTokens or RevokeJoinToken"
            ))),
        }
    }
}
