//! The agent's certificate: joined for once with a token
//! (`orc agent --token`), kept in its data dir (`credential.json`, mode
//! 0600) and reused after every restart, renewed through
//! `Orc.RenewCertificate` before it expires, without a restart.

use std::path::Path;
use std::time::Duration;

use crate::client::Client;
use crate::tls::credential::{agent_path, Credential};
use crate::tls::SharedIdentity;
use crate::{Error, Result};

/// The agent's credential: the one in `data_dir`, or a new one joined with
/// `token` at the first reachable of `servers`. The error says what to do.
pub async fn obtain(
    data_dir: &Path,
    servers: &[String],
    token: Option<&str>,
) -> Result<Credential> {
    let path = agent_path(data_dir);
    if path.exists() {
        if token.is_some() {
            tracing::info!(path = %path.display(), "this agent has its certificate already; the --token is not used");
        }
        return Credential::load(&path);
    }
    let mut last_error = None;
    for server in servers {
        match crate::client::join_cluster(server, token, "agent", 0).await {
            Ok((issued, key)) => {
                let credential = Credential {
                    endpoint: server.clone(),
                    ca: issued.ca,
                    certificate: issued.certificate,
                    key,
                };
                credential.save(&path)?;
                tracing::info!(instance = %issued.container_instance_id, server = %server, "joined the cluster; certificate kept in the data dir");
                return Ok(credential);
            }
            // A refusal is the cluster's answer: no other server will differ.
            Err(error @ Error::Refused(..)) | Err(error @ Error::InvalidInput(_)) => {
                return Err(Error::InvalidInput(format!(
                    "the cluster at {server} refused this agent: {error}"
                )))
            }
            Err(error) => last_error = Some((server.clone(), error)),
        }
    }
    let (server, error) = last_error
        .ok_or_else(|| Error::InvalidInput("no control-plane address was given".into()))?;
    Err(Error::Unavailable(format!(
        "cannot join the cluster: {server}: {error}"
    )))
}

/// The container instance id an agent's certificate names.
pub fn instance_of(credential: &Credential) -> Option<String> {
    match credential.holder() {
        crate::vocab::principal::Principal::Agent { instance } => Some(instance),
        _ => None,
    }
}

/// Renews the agent's certificate (in `data_dir`) once two thirds of its
/// life have passed, or at once when the trust the control plane names
/// (`trust`, from heartbeat answers: a CA rotation) differs from the
/// credential's, asking `server()` (the server the agent uses), and puts
/// the new one in `identity` for the connections made from then on.
pub async fn renew_loop(
    data_dir: std::path::PathBuf,
    identity: SharedIdentity,
    server: impl Fn() -> String,
    mut trust: tokio::sync::watch::Receiver<String>,
) {
    let path = agent_path(&data_dir);
    loop {
        let Ok(current) = Credential::load(&path) else {
            return;
        };
        let life = current
            .not_after_ms()
            .saturating_sub(current.not_before_ms());
        let pause = Duration::from_millis((life / 20).clamp(1_000, 600_000));
        let wanted = trust.borrow_and_update().clone();
        let stale = !wanted.is_empty() && wanted != current.trust_id();
        if stale {
            tracing::info!("the cluster's CA changed: renewing this agent's certificate");
        }
        if stale || current.due_for_renewal(crate::vocab::time::now_ms()) {
            match renew(&current, &identity, &server()).await {
                Ok(renewed) => {
                    tracing::info!(
                        valid_until_ms = renewed.not_after_ms(),
                        "renewed this agent's certificate"
                    );
                    if let Err(error) = renewed.save(&path) {
                        tracing::warn!(%error, "cannot keep the renewed certificate");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot renew this agent's certificate yet; will retry")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            changed = trust.changed() => {
                if changed.is_err() {
                    // The worker stopped; renew by the clock alone.
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

async fn renew(
    current: &Credential,
    identity: &SharedIdentity,
    server: &str,
) -> Result<Credential> {
    let (signing_request, key) = crate::tls::ca::signing_request()?;
    let mut client = Client::with_tls(server, identity.get())?;
    client.retry_for = Duration::from_secs(5);
    let issued = client.renew_certificate(signing_request).await?;
    let renewed = Credential {
        endpoint: current.endpoint.clone(),
        ca: issued.ca,
        certificate: issued.certificate,
        key,
    };
    identity.set(Some(renewed.client_tls()?));
    Ok(renewed)
}
