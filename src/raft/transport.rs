//! Carries raft-rs messages between servers over the gRPC `Peer` service.
//! Per peer, ordinary messages flow through one long-lived client stream
//! (`Peer.RaftStream`) whose body is read straight from the raft thread's
//! queue: whatever queued up since the last poll goes as one batch, and no
//! task sits in between. `send` is called on the raft thread and makes each
//! peer's channel there, so the connection tasks run on the raft thread's
//! own runtime, which the raft loop turns right after queuing messages
//! (`raft::node`): messages reach the socket with no thread hand-off, and
//! before the raft thread's fsync. Snapshots go one by one as unary
//! `Peer.Raft` calls on a task of their own. Failures are reported back to
//! raft-rs (`report_unreachable`, `report_snapshot`); raft-rs retries by
//! itself, so messages queued while a peer is unreachable are dropped, never
//! kept without bound.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;

use super::node::RaftHandle;
use crate::wire::proto::peer_client::PeerClient;
use crate::wire::proto::RaftBatch;

/// How many messages one RPC carries at most.
const MAX_BATCH: usize = 512;
/// Messages queued for a peer beyond this are dropped (the peer stopped
/// reading; raft-rs resends once it answers again).
const MAX_QUEUED: usize = 4096;
/// How long one snapshot may take to deliver.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Outbound raft traffic of one server.
pub struct Transport {
    node_id: u64,
    advertise: String,
    cluster_id: String,
    runtime: tokio::runtime::Handle,
    addresses: RwLock<HashMap<u64, String>>,
    senders: Mutex<HashMap<u64, PeerQueues>>,
    node: OnceLock<RaftHandle>,
}

impl Transport {
    /// A transport that spawns its sender tasks on `runtime`.
    pub fn new(
        node_id: u64,
        advertise: String,
        cluster_id: String,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            node_id,
            advertise,
            cluster_id,
            runtime,
            addresses: RwLock::new(HashMap::new()),
            senders: Mutex::new(HashMap::new()),
            node: OnceLock::new(),
        })
    }

    /// Connects the transport to the node it reports failures to.
    pub fn attach(&self, node: RaftHandle) {
        let _ = self.node.set(node);
    }

    /// The control plane id every batch carries.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Records (or updates) where a peer listens.
    pub fn set_address(&self, id: u64, address: &str) {
        if id == self.node_id || address.is_empty() {
            return;
        }
        let mut addresses = self.addresses.write().unwrap_or_else(|e| e.into_inner());
        if addresses.get(&id).map(String::as_str) != Some(address) {
            addresses.insert(id, address.to_string());
            // A new address needs a new connection.
            self.senders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
    }

    fn address(&self, id: u64) -> Option<String> {
        if let Some(address) = self
            .addresses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Some(address.clone());
        }
        let node = self.node.get()?;
        let address = node
            .store()
            .read(|s| s.member_address(id).map(str::to_string))?;
        self.set_address(id, &address);
        Some(address)
    }

    /// Queues messages for their recipients.
    pub fn send(&self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let sender = self.sender(to);
            match sender {
                Some(queues) => {
                    if message.get_msg_type() == MessageType::MsgSnapshot {
                        let _ = queues.snapshots.send(message);
                    } else if queues.queued.fetch_add(1, Ordering::AcqRel) < MAX_QUEUED {
                        let _ = queues.ordinary.send(message);
                    } else {
                        queues.queued.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                None => {
                    tracing::debug!(
                        node = self.node_id,
                        to,
                        "no address known for a peer; message dropped"
                    );
                    if let Some(node) = self.node.get() {
                        node.report_unreachable(to);
                    }
                }
            }
        }
    }

    fn sender(&self, to: u64) -> Option<PeerQueues> {
        if let Some(queues) = self
            .senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
        {
            if !queues.ordinary.is_closed() && !queues.snapshots.is_closed() {
                return Some(queues.clone());
            }
        }
        let address = self.address(to)?;
        // The channel spawns its connection tasks on the runtime it is made
        // in: `send` runs on the raft thread, so they run there, and the
        // raft loop turns that runtime (`pump_transport`) right after it
        // queues messages.
        let client = peer_client(&address)?;
        let (ordinary, ordinary_rx) = mpsc::unbounded_channel();
        let (snapshots, snapshots_rx) = mpsc::unbounded_channel();
        let queues = PeerQueues {
            ordinary,
            snapshots,
            queued: Arc::new(AtomicUsize::new(0)),
        };
        self.senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(to, queues.clone());
        let peer = Arc::new(PeerLink {
            from_id: self.node_id,
            from_address: self.advertise.clone(),
            cluster_id: self.cluster_id.clone(),
            to,
            client,
            address,
            node: self.node.get().cloned(),
            queued: queues.queued.clone(),
        });
        self.runtime
            .spawn(peer.clone().stream_ordinary(ordinary_rx));
        self.runtime.spawn(peer.send_snapshots(snapshots_rx));
        Some(queues)
    }
}

/// The two queues of one peer.
#[derive(Clone)]
struct PeerQueues {
    ordinary: mpsc::UnboundedSender<Message>,
    snapshots: mpsc::UnboundedSender<Message>,
    /// How many messages wait in `ordinary`.
    queued: Arc<AtomicUsize>,
}

fn peer_client(address: &str) -> Option<PeerClient<tonic::transport::Channel>> {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{address}")) {
        Ok(endpoint) => endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true),
        Err(error) => {
            tracing::warn!(address = %address, %error, "invalid peer address");
            return None;
        }
    };
    // TLS with this server's certificate (the process identity), or plain
    // text for a cluster started --insecure.
    let channel = match crate::tls::process_identity() {
        Some(tls) => {
            endpoint.connect_with_connector_lazy(crate::wire::channel::TlsConnect::process(tls))
        }
        None => endpoint.connect_lazy(),
    };
    Some(
        PeerClient::new(channel)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024),
    )
}

/// Where one peer is and how to reach it.
struct PeerLink {
    from_id: u64,
    from_address: String,
    cluster_id: String,
    to: u64,
    address: String,
    client: PeerClient<tonic::transport::Channel>,
    node: Option<RaftHandle>,
    /// Shared with `PeerQueues::queued`.
    queued: Arc<AtomicUsize>,
}

impl PeerLink {
    fn batch(&self, messages: &[Message]) -> RaftBatch {
        RaftBatch {
            cluster_id: self.cluster_id.clone(),
            from_id: self.from_id,
            from_address: self.from_address.clone(),
            messages: messages
                .iter()
                .filter_map(|m| m.write_to_bytes().ok())
                .collect(),
        }
    }

    fn report_unreachable(&self) {
        if let Some(node) = &self.node {
            node.report_unreachable(self.to);
        }
    }

    /// Keeps one `RaftStream` call open to the peer, fed from `queue`; when
    /// it breaks, drops what queued meanwhile and opens a new one with the
    /// next message.
    async fn stream_ordinary(self: Arc<Self>, queue: mpsc::UnboundedReceiver<Message>) {
        let queue = Arc::new(Mutex::new(queue));
        loop {
            let first = {
                let queue = queue.clone();
                std::future::poll_fn(move |cx| {
                    queue
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .poll_recv(cx)
                })
                .await
            };
            let Some(first) = first else {
                return;
            };
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let body = BatchStream {
                link: self.clone(),
                queue: queue.clone(),
                first: Some(first),
            };
            let outcome = self.client.clone().raft_stream(body).await;
            let error = match outcome {
                Ok(_) => "the peer closed the stream".to_string(),
                Err(status) => status.message().to_string(),
            };
            tracing::debug!(to = self.to, address = %self.address, %error, "raft stream to peer ended");
            self.report_unreachable();
            // raft-rs resends whatever matters once the peer answers again.
            let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            while queue.try_recv().is_ok() {
                self.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Sends snapshots one at a time and tells raft-rs how each went.
    async fn send_snapshots(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Message>) {
        while let Some(snapshot) = queue.recv().await {
            let request = self.batch(std::slice::from_ref(&snapshot));
            let delivered =
                match tokio::time::timeout(SNAPSHOT_TIMEOUT, self.client.clone().raft(request))
                    .await
                {
                    Ok(delivered) => delivered,
                    Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                        "the snapshot took longer than {SNAPSHOT_TIMEOUT:?}"
                    ))),
                };
            if let Err(status) = &delivered {
                tracing::debug!(to = self.to, address = %self.address, error = %status.message(), "snapshot not delivered");
                self.report_unreachable();
            }
            if let Some(node) = &self.node {
                node.report_snapshot(snapshot.to, delivered.is_ok());
            }
        }
    }
}

/// The body of a `RaftStream` call: each item is everything the raft thread
/// queued for the peer since the previous one (at most `MAX_BATCH`).
struct BatchStream {
    link: Arc<PeerLink>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Message>>>,
    first: Option<Message>,
}

impl futures::Stream for BatchStream {
    type Item = RaftBatch;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RaftBatch>> {
        let this = &mut *self;
        let mut queue = this.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Vec::new();
        // `first` was already taken off the queue (and its count).
        let mut from_queue = 0;
        if let Some(first) = this.first.take() {
            batch.push(first);
        } else {
            match queue.poll_recv(cx) {
                Poll::Ready(Some(message)) => {
                    batch.push(message);
                    from_queue += 1;
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(message) => {
                    batch.push(message);
                    from_queue += 1;
                }
                Err(_) => break,
            }
        }
        this.link.queued.fetch_sub(from_queue, Ordering::AcqRel);
        Poll::Ready(Some(this.link.batch(&batch)))
    }
}
