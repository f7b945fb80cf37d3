//! Joining and the cluster's credentials: `Orc.Join` (a node with a join
//! token gets a certificate for its id and role), `Orc.RenewCertificate`
//! (a holder renews its own), and `Orc.Admin` (admins create, list and
//! revoke join tokens). Every refused join is logged with the caller's
//! address and the reason; no secret is ever logged, stored or answered
//! twice (a token's secret is in the answer to its creation only, never
//! in the state or the remembered answer of its request id).
//!
//! A CA rotation (`orc ca rotate`, `Orc.Admin` `RotateCA`/`DescribeCA`)
//! moves the cluster to a new CA without a restart, as Swarm's
//! `docker swarm ca --rotate` does. The new CA (its key sealed) enters the
//! replicated state; [`follow_trust`] on every server then, phase by phase
//! (`store::trust::RotationPhase`): trusts both CAs and signs with the new
//! one, while servers still present their old certificates; agents learn
//! from the `trust` of their heartbeat answers that their credential is
//! stale and renew (each renewal is recorded as a move); once every
//! connected agent moved ([`next_step`]), each server issues itself a new
//! certificate; once every server moved, the old CA is dropped, and from
//! then on a certificate it issued is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

use super::ApiContext;
use crate::error::Refusal;
use crate::store::state::State;
use crate::store::trust::{describe, CaRecord, Rotation, RotationPhase, TrustCommand};
use crate::store::{Command, Proposal};
use crate::tls::ca::{cert_lifetime, Authority, Issued};
use crate::tls::credential::{admin_path, server_path, Credential};
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
    /// The CA certificates trusted now (PEM): the CA's, and while a
    /// rotation is under way the new one's first, then the old one's.
    pub trusted: RwLock<String>,
    /// While a rotation's agents move: the (old) CA that still signs this
    /// server's own certificate, which every agent must accept.
    pub own_issuer: RwLock<Option<Authority>>,
}

impl Security {
    /// A server's security: `authority` signs, the server presents `own`.
    pub fn new(data_dir: PathBuf, authority: Authority, own: &Credential) -> Result<Security> {
        Ok(Security {
            data_dir,
            authority: RwLock::new(authority),
            listener: ServerTlsSource::new(own.server_tls()?),
            trusted: RwLock::new(own.ca.clone()),
            own_issuer: RwLock::new(None),
        })
    }

    /// The CA that signs certificates now.
    pub fn authority(&self) -> Authority {
        self.authority
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The CA certificates trusted now (PEM).
    pub fn trusted(&self) -> String {
        self.trusted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The CA that signs this server's own certificate.
    pub fn own_issuer(&self) -> Authority {
        self.own_issuer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| self.authority())
    }

    /// What an agent's credential should match (`tls::trust_id`): sent in
    /// every heartbeat answer.
    pub fn trust_id(&self) -> String {
        crate::tls::trust_id(&self.authority().fingerprint(), &self.trusted())
    }

    /// Issues this server a new certificate naming `advertise`, from
    /// [`Security::own_issuer`], and puts it to use (see [`Security::install`]).
    pub fn renew_own(&self, node_id: u64, advertise: &str) -> Result<Credential> {
        let own = self
            .own_issuer()
            .server_credential(node_id, advertise, self.trusted())?;
        self.install(&own)?;
        Ok(own)
    }

    /// Keeps `own` as this server's credential and swaps it into the
    /// listener and the process identity, for the connections made from
    /// now on (those already open keep theirs).
    pub fn install(&self, own: &Credential) -> Result<()> {
        let listener = own.server_tls()?;
        let client = own.client_tls()?;
        own.save(&server_path(&self.data_dir))?;
        self.listener.replace(listener);
        crate::tls::set_process_identity(Some(client));
        Ok(())
    }
}

/// Where the seal key (secrets at rest, `seal.rs`) lives in a data dir: a
/// joining server receives it with the CA key.
pub fn seal_key_path(data_dir: &Path) -> PathBuf {
    crate::seal::key_path(data_dir)
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
        self.refuse_while_rotating("joining").map_err(refuse)?;
        let authority = security.authority();
        if token.ca_fingerprint != authority.fingerprint() {
            return Err(refuse(Error::Refused(
                Refusal::Unauthenticated,
                format!(
                    "join token {} was made for another cluster, or before this cluster's CA was rotated (its CA fingerprint is not this cluster's): use a token made since (`orc token create`)",
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
            ca: security.trusted(),
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

    /// `Orc.RenewCertificate`: a new certificate for the caller's own
    /// identity, from the CA that signs now; during a rotation an agent's
    /// renewal is recorded as its move to the new CA before it is answered.
    pub(super) async fn renew_certificate(
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
        // Nobody renews a user's credential by the clock: it gets a year,
        // as the admin credential bootstrap writes.
        let lifetime = match principal {
            Principal::User { .. } => crate::tls::ca::ADMIN_CERT_LIFETIME,
            _ => cert_lifetime(),
        };
        let certificate = authority.sign_request(signing_request, principal, lifetime)?;
        if let Principal::Agent { instance } = principal {
            let rotating = self.raft.store().read(|state| {
                state
                    .trust
                    .rotation
                    .as_ref()
                    .map(|r| r.new.fingerprint.clone())
            });
            if rotating.as_deref() == Some(authority.fingerprint().as_str()) {
                self.propose_trust(TrustCommand::CaNodeMoved {
                    fingerprint: authority.fingerprint(),
                    holder: format!("agent:{instance}"),
                })
                .await?;
            }
        }
        tracing::info!(holder = %principal, "renewed a certificate");
        Ok(Issued {
            certificate,
            ca: security.trusted(),
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
                self.raft.read_barrier().await?;
                self.refuse_while_rotating("creating join tokens")?;
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
            "RotateCA" => {
                let security = self.security()?;
                self.raft.read_barrier().await?;
                let under_way = self
                    .raft
                    .store()
                    .read(|state| state.trust.rotation.is_some());
                let started = if under_way {
                    false
                } else {
                    let new = Authority::create_rotated(&self.control_plane_id())?;
                    let old = security.authority();
                    let rotation = Rotation {
                        new: CaRecord {
                            cert_pem: new.cert_pem.clone(),
                            fingerprint: new.fingerprint(),
                            sealed_key: base64::Engine::encode(
                                &base64::engine::general_purpose::STANDARD,
                                self.seal.seal(new.key_pem.as_bytes()),
                            ),
                        },
                        old_fingerprint: old.fingerprint(),
                        old_cert_pem: old.cert_pem,
                        started_ms: now_ms(),
                        phase: RotationPhase::Agents,
                        moved: Default::default(),
                    };
                    self.propose_trust(TrustCommand::StartCaRotation { rotation })
                        .await?;
                    tracing::info!(ca = %new.fingerprint(), "started a CA rotation");
                    true
                };
                // The caller's own credential moves at once, in this
                // answer: with no agent to wait for, the servers may present
                // new certificates before its next call.
                let renewed = match (principal, body["signingRequest"].as_str()) {
                    (Principal::User { .. }, Some(request)) => {
                        Some(self.sign_with_rotated_ca(principal, request)?)
                    }
                    _ => None,
                };
                let mut answer = self.describe_ca().await?;
                answer["started"] = json!(started);
                if let Some(renewed) = renewed {
                    answer["credential"] = renewed;
                }
                Ok(answer)
            }
            "DescribeCA" => self.describe_ca().await,
            "IssueCertificate" => {
                let security = self.security()?;
                let name = body["name"].as_str().unwrap_or_default();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
                {
                    return Err(Error::InvalidInput(format!(
                        "IssueCertificate needs a name of letters, digits and -_.@ (got {name:?}): e.g. --name prometheus"
                    )));
                }
                let role: crate::vocab::principal::Role =
                    body["role"].as_str().unwrap_or("readonly").parse()?;
                let request = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    body["signingRequest"].as_str().unwrap_or_default(),
                )
                .map_err(|_| {
                    Error::InvalidInput("IssueCertificate's signingRequest must be base64 DER".into())
                })?;
                self.raft.read_barrier().await?;
                self.refuse_while_rotating("issuing certificates")?;
                let holder = Principal::User {
                    name: name.to_string(),
                    role,
                };
                let certificate = security.authority().sign_request(
                    &request,
                    &holder,
                    crate::tls::ca::ADMIN_CERT_LIFETIME,
                )?;
                tracing::info!(holder = %holder, by = %principal, "issued a user certificate");
                Ok(json!({"certificate": certificate, "ca": security.trusted()}))
            }
            other => Err(Error::InvalidInput(format!(
                "unknown admin action {other:?}: use CreateJoinToken, ListJoinTokens, RevokeJoinToken, RotateCA, DescribeCA or IssueCertificate"
            ))),
        }
    }

    /// A user's certificate for `request` (base64 DER) from the rotation's
    /// new CA (or the rotated CA, once done), with the CAs to trust.
    fn sign_with_rotated_ca(&self, holder: &Principal, request: &str) -> Result<Value> {
        let request =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, request)
                .map_err(|_| Error::InvalidInput("signingRequest must be base64 DER".into()))?;
        let found =
            self.raft
                .store()
                .read(|state| match (&state.trust.rotation, &state.trust.ca) {
                    (Some(rotation), _) => Some((
                        rotation.new.clone(),
                        crate::tls::bundle(&[&rotation.new.cert_pem, &rotation.old_cert_pem]),
                    )),
                    (None, Some(ca)) => Some((ca.clone(), crate::tls::bundle(&[&ca.cert_pem]))),
                    (None, None) => None,
                });
        let (record, trusted) =
            found.ok_or_else(|| Error::Internal("no rotated CA in the state yet: retry".into()))?;
        let certificate = open_ca(&self.seal, &record)?.sign_request(
            &request,
            holder,
            crate::tls::ca::ADMIN_CERT_LIFETIME,
        )?;
        Ok(json!({"certificate": certificate, "ca": trusted}))
    }

    /// Refuses `what` while a CA rotation is under way: a joining node
    /// pins one CA, and the servers present certificates of either.
    fn refuse_while_rotating(&self, what: &str) -> Result<()> {
        let rotating = self
            .raft
            .store()
            .read(|state| state.trust.rotation.is_some());
        if rotating {
            return Err(Error::Conflict(format!(
                "the cluster's CA is being rotated: {what} waits until it is done (`orc ca status` shows the progress)"
            )));
        }
        Ok(())
    }

    /// Proposes a trust command under a fresh request id.
    async fn propose_trust(&self, command: TrustCommand) -> Result<Value> {
        self.raft
            .propose(Proposal {
                request_id: crate::vocab::ids::request_id(),
                command: Command::Trust(command),
            })
            .await
    }

    /// The CA and the rotation's progress (`orc ca status`); proposes the
    /// rotation's next step when it is due.
    async fn describe_ca(&self) -> Result<Value> {
        let security = self.security()?;
        self.raft.read_barrier().await?;
        if let Some(step) = self.raft.store().read(next_step) {
            self.propose_trust(step).await?;
        }
        let (progress, fingerprint) = self.raft.store().read(|state| {
            let fingerprint = match (&state.trust.rotation, &state.trust.ca) {
                (Some(rotation), _) => rotation.old_fingerprint.clone(),
                (None, Some(ca)) => ca.fingerprint.clone(),
                (None, None) => String::new(),
            };
            (progress(state), fingerprint)
        });
        let fingerprint = if fingerprint.is_empty() {
            security.authority().fingerprint()
        } else {
            fingerprint
        };
        Ok(json!({
            "fingerprint": fingerprint,
            "rotation": progress.map(|p| p.to_json()),
        }))
    }
}

/// How far a rotation has come.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The new CA's fingerprint.
    pub fingerprint: String,
    /// Its phase.
    pub phase: RotationPhase,
    /// Agents that moved, of those connected.
    pub agents: (usize, usize),
    /// Servers that moved, of the members.
    pub servers: (usize, usize),
    /// The nodes of the current phase that have not moved yet.
    pub waiting_for: Vec<String>,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
}

impl Progress {
    fn to_json(&self) -> Value {
        json!({
            "newFingerprint": self.fingerprint,
            "phase": self.phase.as_str(),
            "startedAt": self.started_ms as f64 / 1000.0,
            "agents": {"moved": self.agents.0, "total": self.agents.1},
            "servers": {"moved": self.servers.0, "total": self.servers.1},
            "waitingFor": self.waiting_for,
        })
    }
}

/// Pure: the progress of the rotation under way. The agents counted are
/// those of every connected, registered container instance (an agent that
/// is away when the old CA is dropped must join again with a new token);
/// the servers are the members.
pub fn progress(state: &State) -> Option<Progress> {
    let rotation = state.trust.rotation.as_ref()?;
    let agents: Vec<String> = state
        .container_instances
        .values()
        .filter(|i| i.agent_connected && i.status != "INACTIVE")
        .map(|i| format!("agent:{}", i.id()))
        .collect();
    let servers: Vec<String> = state
        .members
        .values()
        .map(|m| format!("server:{}", m.id))
        .collect();
    let moved = |nodes: &[String]| nodes.iter().filter(|n| rotation.moved.contains(*n)).count();
    let current = match rotation.phase {
        RotationPhase::Agents => &agents,
        RotationPhase::Servers => &servers,
    };
    Some(Progress {
        fingerprint: rotation.new.fingerprint.clone(),
        phase: rotation.phase,
        agents: (moved(&agents), agents.len()),
        servers: (moved(&servers), servers.len()),
        waiting_for: current
            .iter()
            .filter(|n| !rotation.moved.contains(*n))
            .cloned()
            .collect(),
        started_ms: rotation.started_ms,
    })
}

/// Pure: the rotation's next step, once every node of its phase moved.
pub fn next_step(state: &State) -> Option<TrustCommand> {
    let progress = progress(state)?;
    if !progress.waiting_for.is_empty() {
        return None;
    }
    let fingerprint = progress.fingerprint;
    Some(match progress.phase {
        RotationPhase::Agents => TrustCommand::CaServersPhase { fingerprint },
        RotationPhase::Servers => TrustCommand::FinishCaRotation { fingerprint },
    })
}

/// Opens a CA the state holds (its key sealed).
fn open_ca(seal: &crate::seal::SealKey, record: &CaRecord) -> Result<Authority> {
    let sealed = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &record.sealed_key,
    )
    .map_err(|_| Error::Internal("the rotated CA's sealed key is not base64".into()))?;
    Ok(Authority {
        cert_pem: record.cert_pem.clone(),
        key_pem: seal.open_string(&sealed)?,
    })
}

/// Follows the CA the replicated state names, on every server, until
/// `stop`: see the module's documentation. Quiet while nothing changes.
pub async fn follow_trust(
    context: ApiContext,
    node_id: u64,
    advertise: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut revisions = context.raft.store().subscribe();
    let mut done = None;
    loop {
        let seen = context.raft.store().read(|state| {
            let trust = &state.trust;
            (
                trust.rotation.as_ref().map(|r| {
                    (
                        r.new.fingerprint.clone(),
                        r.phase,
                        r.moved.contains(&format!("server:{node_id}")),
                    )
                }),
                trust.ca.as_ref().map(|ca| ca.fingerprint.clone()),
                next_step(state).is_some(),
            )
        });
        let rotating = seen.0.is_some();
        if done.as_ref() != Some(&seen) {
            match context.follow_trust_once(node_id, &advertise).await {
                Ok(()) => done = Some(seen),
                Err(error) => {
                    tracing::warn!(node = node_id, %error, "cannot follow the cluster's CA yet; will retry")
                }
            }
        }
        let pause = Duration::from_secs(if rotating { 2 } else { 3600 });
        tokio::select! {
            _ = revisions.changed() => {}
            _ = tokio::time::sleep(pause) => done = None,
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

impl ApiContext {
    /// One pass of [`follow_trust`].
    async fn follow_trust_once(&self, node_id: u64, advertise: &str) -> Result<()> {
        let Some(security) = self.security.as_ref() else {
            return Ok(());
        };
        let (rotation, ca) = self
            .raft
            .store()
            .read(|state| (state.trust.rotation.clone(), state.trust.ca.clone()));
        let data_dir = &security.data_dir;
        let (signing, trusted, present_new) = match (&rotation, &ca) {
            (Some(rotation), _) => (
                open_ca(&self.seal, &rotation.new)?,
                crate::tls::bundle(&[&rotation.new.cert_pem, &rotation.old_cert_pem]),
                rotation.phase == RotationPhase::Servers,
            ),
            (None, Some(ca)) => (
                open_ca(&self.seal, ca)?,
                crate::tls::bundle(&[&ca.cert_pem]),
                true,
            ),
            (None, None) => return Ok(()),
        };
        if signing.fingerprint() != security.authority().fingerprint() {
            *security
                .authority
                .write()
                .unwrap_or_else(|p| p.into_inner()) = signing.clone();
            tracing::info!(node = node_id, ca = %signing.fingerprint(), "signing certificates with the new CA");
        }
        // While agents move, this server's own certificate stays the old
        // CA's (the data dir's), which every agent accepts.
        *security
            .own_issuer
            .write()
            .unwrap_or_else(|p| p.into_inner()) = if present_new {
            None
        } else {
            Authority::load(data_dir)?
        };
        *security.trusted.write().unwrap_or_else(|p| p.into_inner()) = trusted.clone();
        let mut own = Credential::load(&server_path(data_dir))?;
        if present_new && !crate::tls::issued_by(&signing.cert_pem, &own.certificate) {
            security.renew_own(node_id, advertise)?;
            tracing::info!(node = node_id, ca = %signing.fingerprint(), "this server took a certificate of the new CA");
        } else if own.ca != trusted {
            own.ca = trusted.clone();
            security.install(&own)?;
            tracing::info!(
                node = node_id,
                "this server trusts the cluster's CAs as rotated"
            );
        }
        // The admin credential bootstrap wrote, for whoever reads it here.
        let admin = admin_path(data_dir);
        if let Ok(mut credential) = Credential::load(&admin) {
            let mut changed = false;
            if !crate::tls::issued_by(&signing.cert_pem, &credential.certificate) {
                (credential.certificate, credential.key) =
                    signing.issue(&credential.holder(), crate::tls::ca::ADMIN_CERT_LIFETIME)?;
                changed = true;
            }
            if credential.ca != trusted {
                credential.ca = trusted.clone();
                changed = true;
            }
            if changed {
                credential.save(&admin)?;
            }
        }
        match &rotation {
            None => {
                if Authority::load(data_dir)?.map(|a| a.fingerprint())
                    != Some(signing.fingerprint())
                {
                    signing.save(data_dir)?;
                    tracing::info!(node = node_id, ca = %signing.fingerprint(), "the CA rotation is done: the old CA is no longer trusted");
                }
            }
            Some(rotation) => {
                let me = format!("server:{node_id}");
                if present_new && !rotation.moved.contains(&me) {
                    self.propose_trust(TrustCommand::CaNodeMoved {
                        fingerprint: rotation.new.fingerprint.clone(),
                        holder: me,
                    })
                    .await?;
                }
            }
        }
        if self.raft.status().role == crate::raft::node::Role::Leader {
            if let Some(step) = self.raft.store().read(next_step) {
                self.propose_trust(step).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::state::MemberRecord;

    fn step(state: &mut State, command: TrustCommand) {
        crate::store::trust::apply(state, &command).unwrap();
    }

    #[test]
    fn a_rotation_moves_agents_then_servers_then_drops_the_old_ca() {
        let mut state = State::default();
        for id in [1u64, 2] {
            state.members.insert(
                id.to_string(),
                MemberRecord {
                    id,
                    address: format!("10.0.0.{id}:7400"),
                },
            );
        }
        assert_eq!(progress(&state), None);
        assert_eq!(next_step(&state), None);
        let new = CaRecord {
            cert_pem: "new".into(),
            fingerprint: "f-new".into(),
            sealed_key: "sealed".into(),
        };
        let rotation = Rotation {
            new: new.clone(),
            old_cert_pem: "old".into(),
            old_fingerprint: "f-old".into(),
            started_ms: 1_000,
            phase: RotationPhase::Agents,
            moved: Default::default(),
        };
        step(
            &mut state,
            TrustCommand::StartCaRotation {
                rotation: rotation.clone(),
            },
        );
        // A second rotation waits for the first.
        assert!(crate::store::trust::apply(
            &mut state,
            &TrustCommand::StartCaRotation { rotation }
        )
        .is_err());
        // No connected agent: the servers' turn at once.
        let fingerprint = "f-new".to_string();
        assert_eq!(
            next_step(&state),
            Some(TrustCommand::CaServersPhase {
                fingerprint: fingerprint.clone()
            })
        );
        step(
            &mut state,
            TrustCommand::CaServersPhase {
                fingerprint: fingerprint.clone(),
            },
        );
        step(
            &mut state,
            TrustCommand::CaNodeMoved {
                fingerprint: fingerprint.clone(),
                holder: "server:1".into(),
            },
        );
        // A report about another rotation changes nothing.
        step(
            &mut state,
            TrustCommand::CaNodeMoved {
                fingerprint: "f-other".into(),
                holder: "server:2".into(),
            },
        );
        let now = progress(&state).unwrap();
        assert_eq!(now.servers, (1, 2));
        assert_eq!(now.waiting_for, vec!["server:2".to_string()]);
        assert_eq!(next_step(&state), None);
        step(
            &mut state,
            TrustCommand::CaNodeMoved {
                fingerprint: fingerprint.clone(),
                holder: "server:2".into(),
            },
        );
        assert_eq!(
            next_step(&state),
            Some(TrustCommand::FinishCaRotation {
                fingerprint: fingerprint.clone()
            })
        );
        step(&mut state, TrustCommand::FinishCaRotation { fingerprint });
        assert_eq!(state.trust.rotation, None);
        assert_eq!(state.trust.ca, Some(new));
        assert_eq!(next_step(&state), None);
    }
}
