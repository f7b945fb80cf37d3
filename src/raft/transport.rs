//! Carries raft-rs messages between servers over the gRPC `Peer` service.
//! One sender task per peer drains its queue into batches, so a burst of
//! appends costs one RPC. Failures are reported back to raft-rs
//! (`report_unreachable`, `report_snapshot`); raft-rs retries by itself, so
//! a failed batch is dropped, never queued without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;

use super::node::RaftHandle;
use crate::proto::peer_client::PeerClient;
use crate::proto::RaftBatch;

/// How many messages one RPC carries at most.
const MAX_BATCH: usize = 512;

/// Outbound raft traffic of one server.
pub struct Transport {
    node_id: u64,
    advertise: String,
    cluster_id: String,
    runtime: tokio::runtime::Handle,
    addresses: RwLock<HashMap<u64, String>>,
    senders: Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>,
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
                Some(sender) => {
                    let _ = sender.send(message);
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

    fn sender(&self, to: u64) -> Option<mpsc::UnboundedSender<Message>> {
        if let Some(sender) = self
            .senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
        {
            if !sender.is_closed() {
                return Some(sender.clone());
            }
        }
        let address = self.address(to)?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(to, tx.clone());
        let worker = PeerWorker {
            from_id: self.node_id,
            from_address: self.advertise.clone(),
            cluster_id: self.cluster_id.clone(),
            to,
            address,
            node: self.node.get().cloned(),
        };
        self.runtime.spawn(worker.run(rx));
        Some(tx)
    }
}

struct PeerWorker {
    from_id: u64,
    from_address: String,
    cluster_id: String,
    to: u64,
    address: String,
    node: Option<RaftHandle>,
}

impl PeerWorker {
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

    async fn run(self, mut rx: mpsc::UnboundedReceiver<Message>) {
        let endpoint = match tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            self.address
        )) {
            Ok(endpoint) => endpoint
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(10))
                .tcp_nodelay(true),
            Err(error) => {
                tracing::warn!(to = self.to, address = %self.address, %error, "invalid peer address");
                return;
            }
        };
        let mut client = PeerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        // The stream of ordinary messages; opened on first use and again after it breaks.
        let mut stream: Option<mpsc::Sender<RaftBatch>> = None;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            let (snapshots, ordinary): (Vec<Message>, Vec<Message>) = batch
                .into_iter()
                .partition(|m| m.get_msg_type() == MessageType::MsgSnapshot);
            if !ordinary.is_empty() {
                let request = self.batch(&ordinary);
                // Never wait on a slow peer: a full stream drops the batch (raft-rs resends).
                let sent = match &stream {
                    Some(sender) if !sender.is_closed() => match sender.try_send(request) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => true,
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    },
                    _ => false,
                };
                if !sent {
                    // (Re)open the stream; the batch goes as its first message.
                    let (sender, receiver) = mpsc::channel(64);
                    let _ = sender.try_send(self.batch(&ordinary));
                    let mut call_client = client.clone();
                    let node = self.node.clone();
                    let to = self.to;
                    let address = self.address.clone();
                    tokio::spawn(async move {
                        let outcome = call_client
                            .raft_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
                            .await;
                        if let Err(status) = outcome {
                            tracing::debug!(to, address = %address, error = %status.message(), "raft stream to peer broke");
                            if let Some(node) = node {
                                node.report_unreachable(to);
                            }
                        }
                    });
                    stream = Some(sender);
                }
            }
            for snapshot in snapshots {
                let request = self.batch(std::slice::from_ref(&snapshot));
                let delivered = client.raft(request).await;
                if let Some(node) = &self.node {
                    if let Err(status) = &delivered {
                        tracing::debug!(to = self.to, address = %self.address, error = %status.message(), "snapshot not delivered");
                        node.report_unreachable(self.to);
                    }
                    node.report_snapshot(snapshot.to, delivered.is_ok());
                }
            }
        }
    }
}
