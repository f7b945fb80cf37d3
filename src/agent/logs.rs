//! The agent's side of `orc logs`: the log session it keeps open to its
//! server (`AgentApi.ServeLogs`).
//!
//! Agents dial out and never listen, so the agent opens the stream: its
//! first message names the instance, then the server sends a `LogRequest`
//! per reader and the agent answers each with `LogChunk`s read from the
//! engine through the [`Runtime`] (running containers, and stopped ones kept
//! for the cleanup wait), the last one with `end` set. A `cancel` request
//! stops one answer. When the stream breaks the agent opens it again, with
//! back-off. Containers are found by their `orc.task-arn` label, so the
//! session needs nothing from the reconciler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::agent::reconcile::labels;
use crate::agent::runtime::{LogStream, Runtime};
use crate::vocab::ids::last_segment;
use crate::wire::proto::agent_api_client::AgentApiClient;
use crate::wire::proto::{LogChunk, LogRequest};

/// Most lines sent in one chunk.
const LINES_PER_CHUNK: usize = 256;

/// Keeps the log session open until the agent stops; `client` gives the
/// connection to the server the agent currently talks to.
pub async fn serve<F>(
    runtime: Arc<dyn Runtime>,
    cluster: String,
    instance_id: String,
    client: F,
    max_backoff: Duration,
) where
    F: Fn() -> AgentApiClient<Channel> + Send + Sync + 'static,
{
    let mut pause = Duration::from_millis(100);
    let mut warned = false;
    loop {
        let (chunks, outbound) = mpsc::channel::<LogChunk>(64);
        let hello = LogChunk {
            cluster: cluster.clone(),
            container_instance_id: instance_id.clone(),
            ..Default::default()
        };
        let _ = chunks.send(hello).await;
        let opened = client()
            .serve_logs(tokio_stream::wrappers::ReceiverStream::new(outbound))
            .await;
        match opened {
            Ok(response) => {
                pause = Duration::from_millis(100);
                warned = false;
                tracing::debug!("log session open");
                let mut requests = response.into_inner();
                let mut answering: HashMap<u64, tokio::task::AbortHandle> = HashMap::new();
                while let Ok(Some(request)) = requests.message().await {
                    answering.retain(|_, handle| !handle.is_finished());
                    if request.cancel {
                        if let Some(handle) = answering.remove(&request.request_id) {
                            handle.abort();
                        }
                        continue;
                    }
                    let id = request.request_id;
                    let task = tokio::spawn(answer(
                        runtime.clone(),
                        cluster.clone(),
                        instance_id.clone(),
                        request,
                        chunks.clone(),
                    ));
                    answering.insert(id, task.abort_handle());
                }
                for handle in answering.values() {
                    handle.abort();
                }
                tracing::debug!("log session closed; opening it again");
            }
            Err(status) => {
                if !warned {
                    tracing::debug!(error = %status, "cannot open the log session yet");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(max_backoff);
    }
}

/// Answers one request: every container of the task (or the one named),
/// merged, then `end`.
async fn answer(
    runtime: Arc<dyn Runtime>,
    cluster: String,
    instance_id: String,
    request: LogRequest,
    chunks: mpsc::Sender<LogChunk>,
) {
    let id = request.request_id;
    let end = |error: String| LogChunk {
        request_id: id,
        end: true,
        error,
        ..Default::default()
    };
    let filter = format!("{}={}", labels::TASK_ARN, request.task_arn);
    let mut containers: Vec<(String, String)> = match runtime.list_containers(Some(&filter)).await {
        Ok(list) => list
            .into_iter()
            .filter(|c| c.labels.get(labels::CLUSTER) == Some(&cluster))
            .filter(|c| {
                c.labels
                    .get(labels::INSTANCE_ID)
                    .is_none_or(|i| *i == instance_id)
            })
            .filter_map(|c| {
                let name = c.labels.get(labels::CONTAINER_NAME)?.clone();
                (request.container.is_empty() || request.container == name).then_some((name, c.id))
            })
            .collect(),
        Err(e) => {
            let _ = chunks
                .send(end(format!("the agent cannot list its containers: {e}")))
                .await;
            return;
        }
    };
    containers.sort();
    if containers.is_empty() {
        let _ = chunks
            .send(end(format!(
                "no container of task {} is left on its instance (a stopped task's containers are removed after the agent's --task-cleanup-wait)",
                last_segment(&request.task_arn)
            )))
            .await;
        return;
    }
    let since = (request.since_unix_seconds > 0).then_some(request.since_unix_seconds);
    let streams = containers.into_iter().map(|(name, container_id)| {
        runtime
            .logs(&container_id, request.follow, since, None)
            .map(move |line| (name.clone(), line))
            .boxed()
    });
    let mut merged = futures::stream::select_all(streams).ready_chunks(LINES_PER_CHUNK);
    while let Some(batch) = merged.next().await {
        let mut out: Vec<LogChunk> = Vec::new();
        for (name, line) in batch {
            let line = match line {
                Ok(line) => line,
                // Removed while being read: its output simply ends.
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    let _ = chunks
                        .send(end(format!(
                            "the agent cannot read the output of container {name}: {e}"
                        )))
                        .await;
                    return;
                }
            };
            let stderr = line.stream == LogStream::Stderr;
            match out.last_mut() {
                Some(last) if last.container == name && last.stderr == stderr => {
                    last.lines.push(line.text)
                }
                _ => out.push(LogChunk {
                    request_id: id,
                    container: name,
                    lines: vec![line.text],
                    stderr,
                    ..Default::default()
                }),
            }
        }
        for chunk in out {
            if chunks.send(chunk).await.is_err() {
                return;
            }
        }
    }
    let _ = chunks.send(end(String::new())).await;
}
