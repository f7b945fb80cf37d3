//! Task logs through the control plane: `Orc.TaskLogs` for readers and
//! `AgentApi.ServeLogs`, the session every agent keeps open to its server.
//!
//! Agents dial out and never listen, so a server cannot call an agent. Each
//! agent opens one `ServeLogs` stream to the server it talks to and keeps it
//! open; [`LogSessions`] holds those sessions by (cluster, instance id). A
//! reader's `TaskLogs` is answered by finding the task's instance in the
//! replicated state, then:
//! * when this server holds that instance's session, by sending a
//!   [`LogRequest`] down it and passing the agent's [`LogChunk`]s back;
//! * otherwise by asking each peer (at most four) the same question with
//!   `this_server_only` set; a peer without the session answers NOT_FOUND
//!   and the next is asked.
//!
//! When the reader goes away the agent is told to stop (`cancel`); when the
//! agent's session breaks, every request riding on it ends with an error.
//! This module never touches sled or raft-rs: it reads the state through the
//! store and talks to peers through the gRPC client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tonic::Status;

use super::{async_stream, ApiContext, ResponseStream};
use crate::wire::proto::orc_client::OrcClient;
use crate::wire::proto::{LogChunk, LogRequest, TaskLogsRequest};

/// Marks a NOT_FOUND that means "ask another server", not "no such task".
const NOT_HERE: &str = "this server holds no log session of that container instance";

/// Where each request's chunks go, by request id.
type Readers = Arc<Mutex<HashMap<u64, mpsc::Sender<Result<LogChunk, Status>>>>>;

/// One agent's open `ServeLogs` stream.
struct Session {
    /// Tells apart a session from the one that replaced it.
    generation: u64,
    /// Requests down to the agent.
    requests: mpsc::Sender<Result<LogRequest, Status>>,
    /// Where each request's chunks go, by request id.
    readers: Readers,
}

/// The agents' log sessions held by this server.
#[derive(Clone, Default)]
pub struct LogSessions {
    sessions: Arc<Mutex<HashMap<(String, String), Session>>>,
    next_id: Arc<AtomicU64>,
}

impl LogSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether this server holds the instance's session.
    pub fn holds(&self, cluster: &str, instance_id: &str) -> bool {
        self.lock()
            .contains_key(&(cluster.to_string(), instance_id.to_string()))
    }

    /// Runs one agent session until its stream ends: registers it under the
    /// identity in its first chunk, routes the chunks that follow.
    /// `only_instance`: an agent's certificate may open the session of its
    /// own instance only.
    pub fn serve(
        &self,
        mut chunks: tonic::Streaming<LogChunk>,
        only_instance: Option<String>,
    ) -> ResponseStream<LogRequest> {
        let sessions = self.clone();
        let (requests, receiver) = mpsc::channel(64);
        let to_agent = requests.clone();
        tokio::spawn(async move {
            let first = match chunks.message().await {
                Ok(Some(first)) => first,
                _ => return,
            };
            let key = (
                crate::model::cluster_name_from(if first.cluster.is_empty() {
                    crate::model::DEFAULT_CLUSTER
                } else {
                    &first.cluster
                }),
                first.container_instance_id.clone(),
            );
            if key.1.is_empty() {
                let _ = to_agent
                    .send(Err(Status::invalid_argument(
                        "a log session must name its container instance in its first message",
                    )))
                    .await;
                return;
            }
            if let Some(own) = only_instance.filter(|own| *own != key.1) {
                tracing::warn!(agent = %own, instance = %key.1, "refused an agent's log session for another node's instance");
                let _ = to_agent
                    .send(Err(Status::permission_denied(format!(
                        "agent {own} may only serve its own instance's logs, not {}'s",
                        key.1
                    ))))
                    .await;
                return;
            }
            let generation = sessions.next();
            let readers: Readers = Arc::default();
            sessions.lock().insert(
                key.clone(),
                Session {
                    generation,
                    requests: to_agent,
                    readers: readers.clone(),
                },
            );
            tracing::info!(cluster = %key.0, instance = %key.1, "agent log session opened");
            while let Ok(Some(chunk)) = chunks.message().await {
                let reader = readers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&chunk.request_id)
                    .cloned();
                let Some(reader) = reader else { continue };
                let end = chunk.end;
                let id = chunk.request_id;
                let item = if end && !chunk.error.is_empty() {
                    Err(Status::unavailable(chunk.error.clone()))
                } else {
                    Ok(chunk)
                };
                let gone = reader.send(item).await.is_err();
                if end || gone {
                    readers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                }
            }
            // The agent went away: end what rode on its session.
            {
                let mut all = sessions.lock();
                if all.get(&key).is_some_and(|s| s.generation == generation) {
                    all.remove(&key);
                }
            }
            let pending: Vec<_> = readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain()
                .map(|(_, r)| r)
                .collect();
            for reader in pending {
                let _ = reader
                    .send(Err(Status::unavailable(
                        "the agent's connection to the control plane broke; run orc logs again",
                    )))
                    .await;
            }
            tracing::info!(cluster = %key.0, instance = %key.1, "agent log session closed");
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }

    /// Sends `request` to the instance's agent; None when no session of it
    /// is held here.
    fn open(
        &self,
        cluster: &str,
        instance_id: &str,
        mut request: LogRequest,
    ) -> Option<ResponseStream<LogChunk>> {
        let (requests, readers) = {
            let all = self.lock();
            let session = all.get(&(cluster.to_string(), instance_id.to_string()))?;
            (session.requests.clone(), session.readers.clone())
        };
        request.request_id = self.next();
        let id = request.request_id;
        let (sender, mut receiver) = mpsc::channel::<Result<LogChunk, Status>>(64);
        readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, sender);
        Some(async_stream(move |out| async move {
            if requests.send(Ok(request)).await.is_err() {
                let _ = out
                    .send(Err(Status::unavailable(
                        "the agent's connection to the control plane broke; run orc logs again",
                    )))
                    .await;
                return;
            }
            loop {
                tokio::select! {
                    item = receiver.recv() => match item {
                        Some(Ok(chunk)) if chunk.end => return,
                        Some(item) => {
                            if out.send(item).await.is_err() {
                                break;
                            }
                        }
                        None => return,
                    },
                    () = out.closed() => break,
                }
            }
            // The reader went away: tell the agent to stop.
            readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let _ = requests
                .send(Ok(LogRequest {
                    request_id: id,
                    cancel: true,
                    ..Default::default()
                }))
                .await;
        }))
    }
}

impl ApiContext {
    /// `Orc.TaskLogs`: from the agent's session here, or through a peer.
    pub async fn task_logs(
        &self,
        request: TaskLogsRequest,
    ) -> crate::Result<ResponseStream<LogChunk>> {
        let cluster = crate::model::cluster_name_from(if request.cluster.is_empty() {
            crate::model::DEFAULT_CLUSTER
        } else {
            &request.cluster
        });
        let (task_arn, instance_id, peers) = self.raft.store().read(|state| {
            let task = state.task(&cluster, &request.task)?;
            let instance_id = task.container_instance_id().map(str::to_string).ok_or_else(|| {
                crate::Error::Conflict(format!(
                    "task {} has no container instance yet (it is {}), so it has no output: wait for it to be placed",
                    task.id(),
                    task.last_status.as_str()
                ))
            })?;
            if !request.container.is_empty()
                && !task.containers.iter().any(|c| c.name == request.container)
            {
                return Err(crate::Error::NotFound(format!(
                    "task {} has no container named {:?}: leave out --container for all of them",
                    task.id(),
                    request.container
                )));
            }
            let me = self.raft.status().id;
            let peers: Vec<String> = state
                .members
                .values()
                .filter(|m| m.id != me)
                .map(|m| m.address.clone())
                .collect();
            Ok((task.task_arn.clone(), instance_id, peers))
        })?;
        let agent_request = LogRequest {
            request_id: 0,
            task_arn,
            container: request.container.clone(),
            follow: request.follow,
            since_unix_seconds: request.since_unix_seconds,
            cancel: false,
        };
        if let Some(stream) = self.logs.open(&cluster, &instance_id, agent_request) {
            return Ok(stream);
        }
        if request.this_server_only {
            return Err(crate::Error::NotFound(NOT_HERE.into()));
        }
        for address in peers {
            let Ok(channel) = crate::wire::channel(&address) else {
                continue;
            };
            let mut peer = OrcClient::new(channel);
            let mut forwarded = request.clone();
            forwarded.this_server_only = true;
            match peer.task_logs(forwarded).await {
                Ok(answer) => {
                    let mut stream = answer.into_inner();
                    return Ok(async_stream(move |out| async move {
                        loop {
                            tokio::select! {
                                item = stream.next() => match item {
                                    Some(item) => {
                                        if out.send(item).await.is_err() {
                                            return;
                                        }
                                    }
                                    None => return,
                                },
                                // Dropping the peer's stream cancels it there.
                                () = out.closed() => return,
                            }
                        }
                    }));
                }
                Err(status)
                    if status.code() == tonic::Code::NotFound
                        && status.message().contains(NOT_HERE) => {}
                Err(status) => {
                    tracing::debug!(peer = %address, error = %status, "a peer could not serve task logs");
                }
            }
        }
        Err(crate::Error::Unavailable(format!(
            "the agent of container instance {instance_id} is connected to no server of the control plane (is it running?); its task's logs cannot be read now"
        )))
    }
}
