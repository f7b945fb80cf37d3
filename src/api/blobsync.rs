//! Copies the registry's blob bytes between servers, so an image pushed to
//! one server can be pulled from any, and survives the loss of one.
//!
//! Which blobs exist is replicated state (`store::registry`); their bytes
//! are files on each server (`blobstore`). Three paths keep them together:
//!
//! * **At push.** Before a manifest is accepted, every blob it references is
//!   held by a majority of the servers (`hold_on_majority`): each other
//!   server is asked to hold it (`Peer.HoldBlob`) and copies it from the
//!   servers that have it (`Peer.FetchBlob`, streamed into the blob store's
//!   verified upload path). So a tag never names bytes that live on one disk.
//! * **In the background.** Every server follows the state and copies the
//!   blobs it lacks (`run`): those pushed while it was down, or whose push
//!   did not wait for it.
//! * **On a pull.** A blob linked in the state but not on this server's disk
//!   is copied before it is served (`ensure`).
//!
//! The background pass also deletes the files no repository links any more
//! (after `orc ecr gc` removed their links), once they are a minute old.
//!
//! A copy is verified against its digest before it becomes visible, like an
//! upload. Only servers call `Peer`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;

use crate::blobstore::{BlobStore, FinishOutcome};
use crate::oci::Digest;
use crate::raft::node::RaftHandle;
use crate::{Error, Result};

/// How long a copy may wait for the next piece before the peer is given up.
const PIECE_PATIENCE: Duration = Duration::from_secs(30);
/// How long a manifest push waits for a majority to hold its blobs.
pub const PUSH_PATIENCE: Duration = Duration::from_secs(120);
/// How often the background copy looks again when nothing changed (a peer
/// that was unreachable may be back).
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// A blob file no link names is deleted once it is this old: a finished
/// upload's file exists a moment before its link commits.
pub const UNLINKED_FILE_AGE: Duration = Duration::from_secs(60);

/// The blob copier of one server.
pub struct BlobSync {
    raft: RaftHandle,
    blobs: Arc<BlobStore>,
    /// One lock per blob being copied, so two pulls of a missing blob copy
    /// it once.
    copying: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl BlobSync {
    /// A copier for this server's blob store.
    pub fn new(raft: RaftHandle, blobs: Arc<BlobStore>) -> BlobSync {
        BlobSync {
            raft,
            blobs,
            copying: Mutex::default(),
        }
    }

    /// The other servers' addresses, from the replicated membership.
    fn peers(&self) -> Vec<String> {
        let me = self.raft.status().id;
        self.raft.store().read(|state| {
            state
                .members
                .iter()
                .filter(|(_, member)| member.id != me)
                .map(|(_, member)| member.address.clone())
                .collect()
        })
    }

    /// How many servers the control plane has.
    fn servers(&self) -> usize {
        self.raft.store().read(|state| state.members.len()).max(1)
    }

    /// Makes sure this server holds `digest`, copying it from another server
    /// when it does not. Returns its size.
    pub async fn ensure(&self, digest: &Digest) -> Result<u64> {
        if let Some(size) = self.blobs.size(digest) {
            return Ok(size);
        }
        let lock = {
            let mut copying = self.copying.lock().unwrap_or_else(|p| p.into_inner());
            copying.entry(digest.clone()).or_default().clone()
        };
        let _copying = lock.lock().await;
        let result = match self.blobs.size(digest) {
            Some(size) => Ok(size),
            None => self.copy(digest).await,
        };
        self.copying
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
        result
    }

    /// Copies `digest` from the first server that has it.
    async fn copy(&self, digest: &Digest) -> Result<u64> {
        let peers = self.peers();
        let mut failures = Vec::new();
        for address in &peers {
            match self.copy_from(address, digest).await {
                Ok(size) => {
                    tracing::info!(%digest, from = %address, size, "copied a registry blob from another server");
                    crate::metrics::record_blob_copied(size);
                    return Ok(size);
                }
                Err(error) => failures.push(format!("{address}: {error}")),
            }
        }
        Err(Error::Unavailable(if peers.is_empty() {
            format!("blob {digest} is not on this server, and there is no other server to copy it from: push it again")
        } else {
            format!(
                "blob {digest} is not on this server and could not be copied from another ({}): retry once the servers are up, or push it again",
                failures.join("; ")
            )
        }))
    }

    async fn copy_from(&self, address: &str, digest: &Digest) -> Result<u64> {
        let pieces = crate::wire::blobs::fetch(address, digest, PIECE_PATIENCE).await?;
        // A piece that takes longer than PIECE_PATIENCE ends the copy.
        let pieces = futures::stream::unfold(Some(pieces), |pieces| async move {
            let mut pieces = pieces?;
            match tokio::time::timeout(PIECE_PATIENCE, pieces.next()).await {
                Ok(piece) => piece.map(|piece| (piece, Some(pieces))),
                Err(_) => Some((
                    Err(Error::Unavailable("the copy stalled for 30 s".into())),
                    None,
                )),
            }
        });
        match self
            .blobs
            .store_stream("", digest, std::pin::pin!(pieces))
            .await?
        {
            FinishOutcome::Stored(size) => Ok(size),
            FinishOutcome::Mismatch(actual) => Err(Error::Internal(format!(
                "the copy's bytes have digest {actual}: the other server's file is damaged"
            ))),
        }
    }

    /// Waits until a majority of the servers (this one included) hold every
    /// blob of `digests`, asking each other server to hold them. Other
    /// servers still copying when the majority is reached go on alone.
    pub async fn hold_on_majority(&self, digests: Vec<(Digest, u64)>) -> Result<()> {
        let servers = self.servers();
        let needed = servers / 2; // other servers; with this one, a majority
        if needed == 0 || digests.is_empty() {
            return Ok(());
        }
        let peers = self.peers();
        let (done_tx, mut done_rx) =
            tokio::sync::mpsc::channel::<(String, Result<()>)>(peers.len().max(1));
        for address in peers.clone() {
            let digests = digests.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let result = crate::wire::blobs::hold(&address, &digests, PUSH_PATIENCE).await;
                let _ = done.send((address, result)).await;
            });
        }
        drop(done_tx);
        let mut held = 0;
        let mut failures = Vec::new();
        let deadline = tokio::time::Instant::now() + PUSH_PATIENCE;
        while held < needed {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some((_, Ok(())))) => held += 1,
                Ok(Some((address, Err(error)))) => failures.push(format!("{address}: {error}")),
                Ok(None) => break,
                Err(_) => {
                    failures.push(format!("no answer within {} s", PUSH_PATIENCE.as_secs()));
                    break;
                }
            }
        }
        if held >= needed {
            return Ok(());
        }
        Err(Error::Unavailable(format!(
            "the image's layers reached {} of the {needed} other servers a majority needs ({}): retry the push once a majority of servers is up",
            held,
            failures.join("; ")
        )))
    }
}

/// Deletes the blob files of this server that no link names, once they
/// are older than [`UNLINKED_FILE_AGE`].
fn remove_unlinked(sync: &BlobSync, linked: &[Digest]) {
    let linked: std::collections::HashSet<&Digest> = linked.iter().collect();
    for (digest, age) in sync.blobs.stored() {
        if linked.contains(&digest) || age < UNLINKED_FILE_AGE {
            continue;
        }
        match sync.blobs.remove(&digest) {
            Ok(()) => tracing::info!(%digest, "removed a registry blob no repository links"),
            Err(error) => {
                tracing::warn!(%digest, %error, "cannot remove an unlinked registry blob")
            }
        }
    }
}

/// The background copy: after every change of the registry's tables, and
/// every 30 s, copies the linked blobs this server lacks.
pub async fn run(sync: Arc<BlobSync>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut revisions = sync.raft.store().subscribe();
    let mut seen = (usize::MAX, usize::MAX);
    let mut warned: std::collections::HashSet<Digest> = Default::default();
    loop {
        let swept = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            changed = revisions.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            () = tokio::time::sleep(SWEEP_EVERY) => true,
        };
        // Let a burst of writes (a push's links) settle into one pass.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (shape, linked) = sync.raft.store().read(|state| {
            let registry = &state.registry;
            let shape = (registry.blobs.len(), registry.manifests.len());
            let linked: Option<Vec<Digest>> = (swept || shape != seen).then(|| {
                registry
                    .blobs
                    .iter()
                    .filter_map(|(key, _)| key.rsplit_once('@'))
                    .filter_map(|(_, digest)| Digest::parse(digest).ok())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect()
            });
            (shape, linked)
        });
        seen = shape;
        let Some(linked) = linked else {
            continue;
        };
        // Only a server that follows a leader trusts its state to say what
        // is unlinked (a server cut off may not have applied recent links).
        if sync.raft.status().leader_id != 0 {
            remove_unlinked(&sync, &linked);
        }
        for digest in linked {
            if sync.blobs.size(&digest).is_some() {
                continue;
            }
            if let Err(error) = sync.ensure(&digest).await {
                if warned.insert(digest.clone()) {
                    tracing::warn!(%digest, %error, "a registry blob is missing on this server; will retry every 30 s");
                } else {
                    tracing::debug!(%digest, %error, "a registry blob is still missing on this server");
                }
            }
        }
    }
}
