//! A small gRPC client used by the CLI, by servers forwarding to the leader,
//! by `orc agent`, and by tests and benchmarks. It retries requests that
//! failed for a retryable reason (no leader yet, leader moved) with the same
//! request id until a deadline, so a retried write is applied once.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;
use tonic::transport::Channel;

use crate::model::{ControlPlaneStatus, Membership};
pub use crate::store::ChangeStream;
use crate::tls::ca::Issued;
use crate::wire::convert;
use crate::wire::proto::orc_client::OrcClient;
use crate::wire::proto::{
    ActionRequest, AddServerRequest, ClusterStatusRequest, JoinRequest, LogChunk,
    RemoveServerRequest, RenewRequest, TaskLogsRequest, WatchRequest,
};
use crate::wire::status::from_status;
use crate::{Error, Result};

pub use crate::vocab::ids::request_id;
pub use crate::wire::channel;

/// A run of lines of one container's output (`orc logs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    /// The container definition's name.
    pub container: String,
    /// Lines without their newline, in order.
    pub lines: Vec<String>,
    /// From stderr (stdout otherwise).
    pub stderr: bool,
}

/// A task's output as its agent sends it, until an error ends it.
pub type OutputStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<OutputChunk>> + Send>>;

/// A connection to one orc server.
#[derive(Clone)]
pub struct Client {
    endpoint: String,
    orc: OrcClient<Channel>,
    /// How long retryable failures are retried: the deadline of a call,
    /// attempts included (an attempt that hangs is cut off at it).
    pub retry_for: Duration,
    /// The CLI's mode (see `Client::for_people`): `retry_for` also cuts
    /// off an attempt in flight; an attempt unanswered for a few seconds
    /// probes the address (`wire::probe`) and fails at once when nothing
    /// there speaks HTTP/2 (a paused server, a port that is not orc's); and
    /// a server that cannot be reached at all (refused, reset, not HTTP/2)
    /// is retried for `unreachable_for` only, then named with what a probe
    /// found there.
    pub strict: bool,
    /// How long an unreachable server is retried in strict mode.
    pub unreachable_for: Duration,
    /// Whether this client connects with TLS (it has a credential): a
    /// probe that finds TLS at the address then found an orc server.
    secure: bool,
}

/// How long an attempt may go unanswered before the address is probed.
const PROBE_AFTER: Duration = Duration::from_secs(3);

/// How long each step of a probe may take.
const PROBE_PATIENCE: Duration = Duration::from_secs(2);

/// Whether a failed call failed below gRPC (no connection, a broken one, a
/// peer that does not speak HTTP/2), as opposed to a status an orc server
/// sent: tonic attaches the transport's error as the status's source.
fn failed_below_grpc(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The sentence of a TLS refusal (`tls::TlsRefused`) somewhere in a failed
/// call's chain of causes: it says what to do better than any probe.
fn tls_refusal(status: &tonic::Status) -> Option<String> {
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        if let Some(refused) = error.downcast_ref::<crate::tls::TlsRefused>() {
            return Some(refused.0.clone());
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if let Some(refused) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<crate::tls::TlsRefused>())
            {
                return Some(refused.0.clone());
            }
        }
        cause = error.source();
    }
    None
}

/// Joins the cluster at `address` with a join `token` as `role` (`agent`
/// or `server`, with its `node_id`): pins the token's CA fingerprint in the
/// TLS handshake before sending anything, then sends the token and a
/// signing request for a fresh key. Returns what was issued and the key
/// (PEM). Without a token it still asks, sending nothing secret, so the
/// server refuses (and logs it) and the error says what to do.
pub async fn join_cluster(
    address: &str,
    token: Option<&str>,
    role: &str,
    node_id: u64,
) -> Result<(Issued, String)> {
    let token = token.map(str::trim).filter(|t| !t.is_empty());
    let fingerprint = match token {
        Some(text) => crate::tls::token::JoinToken::parse(text)?.ca_fingerprint,
        None => String::new(),
    };
    let tls = crate::tls::ClientTls::pinned(&fingerprint)?;
    let (signing_request, key) = crate::tls::ca::signing_request()?;
    let mut client = Client::with_tls(address, Some(std::sync::Arc::new(tls)))?;
    client.strict = true;
    client.unreachable_for = Duration::from_secs(15);
    client.retry_for = Duration::from_secs(30);
    let issued = client
        .join(token.unwrap_or_default(), role, node_id, signing_request)
        .await?;
    Ok((issued, key))
}

impl Client {
    /// A client for the server at `endpoint` (`host:port`), with this
    /// process's identity (`tls::process_identity`).
    pub fn new(endpoint: &str) -> Result<Client> {
        Self::with_tls(endpoint, crate::tls::process_identity())
    }

    /// A client that connects with `tls` (`None`: plain text).
    pub fn with_tls(
        endpoint: &str,
        tls: Option<std::sync::Arc<crate::tls::ClientTls>>,
    ) -> Result<Client> {
        let secure = tls.is_some();
        Ok(Client {
            endpoint: endpoint.to_string(),
            secure,
            orc: OrcClient::new(crate::wire::channel_with(endpoint, tls)?)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
            retry_for: Duration::from_secs(15),
            strict: false,
            unreachable_for: Duration::from_secs(15),
        })
    }

    /// A client for a person or a script at the command line: every call
    /// ends within `timeout`, and a server that cannot be reached, or is not
    /// an orc server, is named within a few seconds with what to try.
    pub fn for_people(endpoint: &str, timeout: Duration) -> Result<Client> {
        let mut client = Client::new(endpoint)?;
        client.retry_for = timeout;
        client.strict = true;
        client.unreachable_for = Duration::from_secs(2).min(timeout);
        Ok(client)
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut(OrcClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(50);
        let mut unreachable_since: Option<Instant> = None;
        loop {
            let status = match self.bounded(attempt(self.orc.clone()), deadline).await? {
                Ok(value) => return Ok(value),
                Err(status) => status,
            };
            if let Some(sentence) = tls_refusal(&status) {
                return Err(Error::Refused(
                    crate::error::Refusal::Unauthenticated,
                    sentence,
                ));
            }
            let below_grpc = self.strict && failed_below_grpc(&status);
            let error = from_status(status);
            if below_grpc {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if Instant::now() + pause > (since + self.unreachable_for).min(deadline) {
                    return Err(self.explain_unreachable(error).await);
                }
            } else if !error.is_retryable() || Instant::now() + pause > deadline {
                return Err(error);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Runs one attempt; in strict mode until `deadline` only, and an
    /// attempt unanswered for `PROBE_AFTER` probes the address and gives up
    /// at once when nothing there speaks HTTP/2.
    async fn bounded<T>(
        &self,
        attempt: impl std::future::Future<Output = std::result::Result<T, tonic::Status>>,
        deadline: Instant,
    ) -> Result<std::result::Result<T, tonic::Status>> {
        if !self.strict {
            return Ok(attempt.await);
        }
        tokio::pin!(attempt);
        let deadline = tokio::time::Instant::from_std(deadline);
        let probe_at = tokio::time::Instant::now() + PROBE_AFTER;
        if probe_at < deadline {
            tokio::select! {
                answer = &mut attempt => return Ok(answer),
                () = tokio::time::sleep_until(probe_at) => {}
            }
            let verdict = tokio::select! {
                answer = &mut attempt => return Ok(answer),
                verdict = crate::wire::probe::probe(&self.endpoint, PROBE_PATIENCE) => verdict,
            };
            if let Some(sentence) = self.not_an_orc_server(verdict) {
                return Err(Error::Unavailable(sentence));
            }
        }
        tokio::select! {
            answer = &mut attempt => Ok(answer),
            () = tokio::time::sleep_until(deadline) => Err(Error::Unavailable(format!(
                "{} did not answer within {} s: the control plane may be without a quorum or overloaded (see `orc cluster status --local`); raise --timeout to wait longer",
                self.endpoint,
                self.retry_for.as_secs_f64().ceil()
            ))),
        }
    }

    /// The error for a server that could not be reached: what a probe
    /// found at its address, or the transport's own words.
    async fn explain_unreachable(&self, error: Error) -> Error {
        let verdict = crate::wire::probe::probe(&self.endpoint, PROBE_PATIENCE).await;
        match self.not_an_orc_server(verdict) {
            Some(sentence) => Error::Unavailable(sentence),
            None => Error::Unavailable(format!(
                "the connection to {} failed ({error}); what answers there speaks like an orc server, so retry, or check the address",
                self.endpoint
            )),
        }
    }

    /// What a probe's verdict tells a person, or `None` when what answers
    /// is an orc server this client can talk to (HTTP/2, or TLS when this
    /// client has a credential): then it is only slow.
    fn not_an_orc_server(&self, verdict: crate::wire::probe::Verdict) -> Option<String> {
        use crate::wire::probe::Verdict;
        match verdict {
            Verdict::Explained(sentence) => Some(sentence),
            Verdict::Tls if !self.secure => Some(crate::wire::probe::no_credential(&self.endpoint)),
            Verdict::Tls | Verdict::Http2 => None,
        }
    }

    /// Calls an ECS action with a JSON body; returns the JSON response and warnings.
    pub async fn call(&self, action: &str, body: Value) -> Result<(Value, Vec<String>)> {
        self.call_with_id(action, body, &request_id()).await
    }

    /// A list action's whole answer: its pages (ECS's `nextToken`, 100 ARNs
    /// a page unless `maxResults` says otherwise) followed and joined, as
    /// `aws` does unless told otherwise. The joined answer has no `nextToken`.
    pub async fn call_all_pages(&self, action: &str, body: Value) -> Result<(Value, Vec<String>)> {
        let (mut answer, mut warnings) = self.call(action, body.clone()).await?;
        while let Some(token) = answer
            .as_object_mut()
            .and_then(|a| a.remove("nextToken"))
            .filter(Value::is_string)
        {
            let mut next = body.clone();
            next["nextToken"] = token;
            let (page, more_warnings) = self.call(action, next).await?;
            warnings.extend(more_warnings);
            let Value::Object(page) = page else { break };
            for (key, value) in page {
                match (answer.get_mut(&key), value) {
                    (Some(Value::Array(all)), Value::Array(items)) => all.extend(items),
                    (_, value) => answer[key.as_str()] = value,
                }
            }
        }
        Ok((answer, warnings))
    }

    /// Like `call`, with a request id the caller chose: sending the same id
    /// again (to any server) returns the first outcome instead of applying twice.
    pub async fn call_with_id(
        &self,
        action: &str,
        body: Value,
        request_id: &str,
    ) -> Result<(Value, Vec<String>)> {
        let request = ActionRequest {
            action: action.to_string(),
            body_json: body.to_string(),
            request_id: request_id.to_string(),
        };
        let limit = crate::vocab::limits::MAX_REQUEST_BYTES;
        if request.body_json.len() > limit {
            return Err(Error::InvalidInput(format!(
                "the {action} request is {} of JSON, over orc's limit of {} per request: send less at once",
                crate::vocab::limits::human_bytes(request.body_json.len()),
                crate::vocab::limits::human_bytes(limit)
            )));
        }
        let response = self
            .retrying(|mut orc| {
                let request = request.clone();
                async move { orc.call(request).await }
            })
            .await?
            .into_inner();
        let body = serde_json::from_str(&response.body_json)
            .map_err(|e| Error::Internal(format!("the server sent undecodable json: {e}")))?;
        Ok((body, response.warnings))
    }

    /// `orc cluster status`.
    pub async fn cluster_status(&self, linearizable: bool) -> Result<ControlPlaneStatus> {
        Ok(self
            .retrying(|mut orc| async move {
                orc.cluster_status(ClusterStatusRequest { linearizable })
                    .await
            })
            .await?
            .into_inner()
            .into())
    }

    /// Watches the changes after `after_revision` (0: only changes from
    /// now on) on this client's server, in revision order with none missing
    /// and none twice. A broken connection ends the stream with a retryable
    /// error: watch again after the last revision received to resume. A
    /// compacted start or a watcher left behind gets `Error::Conflict`.
    pub async fn watch(&self, after_revision: u64) -> Result<ChangeStream> {
        let events = self
            .retrying(|mut orc| async move { orc.watch(WatchRequest { after_revision }).await })
            .await?
            .into_inner();
        Ok(Box::pin(events.map(|event| {
            event.map(convert::change).map_err(from_status)
        })))
    }

    /// A task's container output (`orc logs`), read by its instance's agent
    /// and passed on by this client's server (or a peer of it).
    /// `since_unix_seconds` 0 means all of it; with `follow` the stream goes
    /// on until the containers stop.
    pub async fn task_logs(
        &self,
        cluster: &str,
        task: &str,
        container: &str,
        follow: bool,
        since_unix_seconds: i64,
    ) -> Result<OutputStream> {
        let request = TaskLogsRequest {
            cluster: cluster.to_string(),
            task: task.to_string(),
            container: container.to_string(),
            follow,
            since_unix_seconds,
            this_server_only: false,
        };
        let chunks = self
            .retrying(|mut orc| {
                let request = request.clone();
                async move { orc.task_logs(request).await }
            })
            .await?
            .into_inner();
        Ok(Box::pin(chunks.map(|chunk| {
            chunk.map_err(from_status).map(|c: LogChunk| OutputChunk {
                container: c.container,
                lines: c.lines,
                stderr: c.stderr,
            })
        })))
    }

    /// Joins the cluster with a join token: sends the token, `role`
    /// (`agent` or `server`), a server's node id and a signing request for
    /// the node's fresh key; this client must be made with
    /// `ClientTls::pinned` (the token's CA fingerprint).
    pub async fn join(
        &self,
        token: &str,
        role: &str,
        node_id: u64,
        signing_request: Vec<u8>,
    ) -> Result<Issued> {
        let request = JoinRequest {
            token: token.to_string(),
            role: role.to_string(),
            node_id,
            signing_request,
        };
        let answer = self
            .retrying(|mut orc| {
                let request = request.clone();
                async move { orc.join(request).await }
            })
            .await?
            .into_inner();
        Ok(answer.into())
    }

    /// Renews this client's own certificate: a new one for a new key.
    pub async fn renew_certificate(&self, signing_request: Vec<u8>) -> Result<Issued> {
        let request = RenewRequest { signing_request };
        let answer = self
            .retrying(|mut orc| {
                let request = request.clone();
                async move { orc.renew_certificate(request).await }
            })
            .await?
            .into_inner();
        Ok(answer.into())
    }

    /// One of the cluster's credential actions (`Orc.Admin`:
    /// CreateJoinToken, ListJoinTokens, RevokeJoinToken).
    pub async fn admin(&self, action: &str, body: Value) -> Result<Value> {
        let request = ActionRequest {
            action: action.to_string(),
            body_json: body.to_string(),
            request_id: request_id(),
        };
        let response = self
            .retrying(|mut orc| {
                let request = request.clone();
                async move { orc.admin(request).await }
            })
            .await?
            .into_inner();
        serde_json::from_str(&response.body_json)
            .map_err(|e| Error::Internal(format!("the server sent undecodable json: {e}")))
    }

    /// Adds a server to the control plane (as a learner that is promoted once caught up).
    pub async fn add_server(
        &self,
        node_id: u64,
        address: &str,
        cluster_id: &str,
    ) -> Result<Membership> {
        let request = AddServerRequest {
            node_id,
            address: address.to_string(),
            cluster_id: cluster_id.to_string(),
        };
        Ok(self
            .retrying(|mut orc| {
                let request = request.clone();
                async move { orc.add_server(request).await }
            })
            .await?
            .into_inner()
            .into())
    }

    /// Removes a server from the control plane. The server being removed
    /// may drop the connection as it leaves; when a retry then finds it gone,
    /// the removal is what happened and counts as done.
    pub async fn remove_server(&self, node_id: u64) -> Result<Membership> {
        let deadline = Instant::now() + self.retry_for;
        let mut interrupted = false;
        loop {
            let mut orc = self.orc.clone();
            match orc.remove_server(RemoveServerRequest { node_id }).await {
                Ok(answer) => return Ok(answer.into_inner().into()),
                Err(status) => match from_status(status) {
                    Error::NotFound(_) if interrupted => {
                        let status = self.cluster_status(false).await?;
                        return Ok(Membership {
                            cluster_id: status.cluster_id,
                            members: status.members,
                        });
                    }
                    error if error.is_retryable() && Instant::now() < deadline => {
                        interrupted = true;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    error => return Err(error),
                },
            }
        }
    }
}
