//! The replicated state machine's storage: the in-memory `State`, its durable
//! checkpoint in the sled tree `state`, and the notifications readers wait on.
//!
//! Durability works like etcd's WAL plus backend: every committed command is
//! already durable in the raft log (`raft::storage`) before it is applied,
//! so applying only changes memory. The whole state is written to sled as a
//! checkpoint (`checkpoint`) before the raft log is compacted, and a server
//! that restarts loads the newest checkpoint and re-applies the log entries
//! after it (raft-rs hands them over again, from the checkpoint's index on).
//! A checkpoint is also exactly what a snapshot for a lagging follower
//! carries.
//!
//! Only the raft node (`raft::node`) calls the mutating methods, from its one
//! thread, with entries Raft has committed. Everyone else reads through
//! `Store::read` and waits with `wait_applied` / `subscribe`. This module
//! does not know about Raft messages, gRPC or Docker.

pub mod command;
pub mod ecs;
pub mod services;
pub mod state;
pub mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use tokio::sync::watch;

pub use command::{Command, Outcome, Proposal};
pub use state::State;

use crate::{Error, Result};

/// The newest checkpoint: `SnapshotData` as JSON.
pub(crate) const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// A row of the per-row layout of orc's first development version.
const LEGACY_META_KEY: &[u8] = b"meta/state";

/// What a snapshot and a checkpoint carry: the whole state as of
/// `applied_index`.
#[derive(serde::Deserialize)]
struct SnapshotData {
    applied_index: u64,
    state: State,
}

/// `SnapshotData` borrowed, to serialize without copying the state.
#[derive(serde::Serialize)]
struct SnapshotRef<'a> {
    applied_index: u64,
    state: &'a State,
}

/// The state machine and its durable copy.
pub struct Store {
    /// The sled tree holding the checkpoint.
    tree: sled::Tree,
    /// The state every reader sees.
    state: RwLock<State>,
    /// The raft index of the last applied entry.
    applied_index: AtomicU64,
    /// The raft index the newest checkpoint reflects.
    checkpoint_index: AtomicU64,
    /// The size of the newest checkpoint in bytes.
    checkpoint_bytes: AtomicU64,
    /// Publishes the applied index (for read barriers).
    applied_tx: watch::Sender<u64>,
    /// Publishes the revision (for watchers).
    revision_tx: watch::Sender<u64>,
}

impl Store {
    /// Opens the state tree in `db` and loads the newest checkpoint.
    pub fn open(db: &sled::Db) -> Result<Store> {
        let tree = db.open_tree("state")?;
        let checkpoint = tree.get(CHECKPOINT_KEY)?;
        let checkpoint_bytes = checkpoint.as_ref().map_or(0, |b| b.len() as u64);
        let (state, applied_index) = match checkpoint {
            Some(bytes) => {
                let data: SnapshotData = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Internal(format!(
                        "the data dir's state checkpoint is undecodable ({e}): restore the data dir from a backup, or remove this server and join it again with an empty data dir"
                    ))
                })?;
                let mut state = data.state;
                state.rebuild_indexes();
                (state, data.applied_index)
            }
            None if tree.get(LEGACY_META_KEY)?.is_some() => {
                return Err(Error::Internal(
                    "the data dir was written by a development version of orc that stored state row by row: start this server from an empty data dir".into(),
                ))
            }
            None => (State::default(), 0),
        };
        let (applied_tx, _) = watch::channel(applied_index);
        let (revision_tx, _) = watch::channel(state.meta.revision);
        Ok(Store {
            tree,
            state: RwLock::new(state),
            applied_index: AtomicU64::new(applied_index),
            checkpoint_index: AtomicU64::new(applied_index),
            checkpoint_bytes: AtomicU64::new(checkpoint_bytes),
            applied_tx,
            revision_tx,
        })
    }

    /// Runs `f` against the current state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&state)
    }

    /// The raft index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        *self.revision_tx.borrow()
    }

    /// A receiver that changes whenever the revision moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }

    /// Waits until the entry at `index` has been applied here.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        let mut applied = self.applied_tx.subscribe();
        let waited = tokio::time::timeout(timeout, applied.wait_for(|applied| *applied >= index))
            .await
            .map(|result| result.is_ok());
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Unavailable("the server is shutting down".into())),
            Err(_) => Err(Error::Unavailable(format!(
                "timed out waiting for this server to apply index {index}: it is behind the leader, retry shortly"
            ))),
        }
    }

    /// Applies committed entries in order (in memory: the raft log already
    /// holds them durably). Each item is the raft index, and the proposal
    /// (`None` for entries without one, such as a new leader's empty entry);
    /// membership changes go through `apply_membership`. Returns one outcome
    /// per proposal.
    pub fn apply_entries(&self, entries: Vec<(u64, Option<Proposal>)>) -> Vec<(u64, Outcome)> {
        let Some(last_index) = entries.last().map(|(index, _)| *index) else {
            return Vec::new();
        };
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for (index, proposal) in entries {
            if let Some(proposal) = proposal {
                outcomes.push((index, state::apply(&mut state, &proposal)));
            }
        }
        self.publish(&state, last_index);
        outcomes
    }

    /// Records a committed membership change at raft index `index`.
    pub fn apply_membership(&self, index: u64, id: u64, address: Option<String>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state::apply_membership(&mut state, id, address);
        self.publish(&state, index);
    }

    /// Moves the applied index past entries that change nothing.
    pub fn advance_applied(&self, index: u64) {
        if index > self.applied_index() {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            self.publish(&state, index);
        }
    }

    /// Tells readers and watchers that `index` is applied.
    fn publish(&self, state: &State, applied_index: u64) {
        self.applied_index.store(applied_index, Ordering::Release);
        self.applied_tx.send_replace(applied_index);
        let revision = state.meta.revision;
        self.revision_tx.send_if_modified(|current| {
            let changed = *current != revision;
            *current = revision;
            changed
        });
    }

    /// Writes the whole state as the new checkpoint (durable at the next
    /// flush of the db) and returns the index it reflects. The raft log may
    /// be compacted up to that index once the checkpoint is flushed.
    pub fn checkpoint(&self) -> Result<u64> {
        let (index, bytes) = self.snapshot()?;
        self.checkpoint_bytes
            .store(bytes.len() as u64, Ordering::Release);
        self.tree.insert(CHECKPOINT_KEY, bytes)?;
        self.checkpoint_index.store(index, Ordering::Release);
        Ok(index)
    }

    /// The size of the newest checkpoint in bytes.
    pub fn checkpoint_bytes(&self) -> u64 {
        self.checkpoint_bytes.load(Ordering::Acquire)
    }

    /// The raft index the newest checkpoint reflects.
    pub fn checkpoint_index(&self) -> u64 {
        self.checkpoint_index.load(Ordering::Acquire)
    }

    /// The whole state as snapshot bytes, with the index it reflects.
    pub fn snapshot(&self) -> Result<(u64, Vec<u8>)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let applied_index = self.applied_index();
        let data = SnapshotRef {
            applied_index,
            state: &state,
        };
        Ok((applied_index, serde_json::to_vec(&data)?))
    }

    /// The sled tree holding the checkpoint (for `raft::storage`, which
    /// writes a snapshot's checkpoint in the same transaction as its raft
    /// metadata).
    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Decodes a snapshot's data into the state it carries, checking that it
    /// is the state of raft index `index`.
    pub fn decode_snapshot(index: u64, bytes: &[u8]) -> Result<State> {
        let data: SnapshotData = serde_json::from_slice(bytes)
            .map_err(|e| Error::Internal(format!("undecodable snapshot at index {index}: {e}")))?;
        if data.applied_index != index {
            return Err(Error::Internal(format!(
                "the snapshot for index {index} holds the state of index {}",
                data.applied_index
            )));
        }
        let mut state = data.state;
        state.rebuild_indexes();
        Ok(state)
    }

    /// Replaces the whole state in memory with a snapshot's (on a follower
    /// that fell behind the leader's compacted log), once its bytes
    /// (`checkpoint_bytes` long) were written as the checkpoint.
    pub fn install(&self, index: u64, fresh: State, checkpoint_bytes: usize) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        *state = fresh;
        self.checkpoint_index.store(index, Ordering::Release);
        self.checkpoint_bytes
            .store(checkpoint_bytes as u64, Ordering::Release);
        self.applied_index.store(index, Ordering::Release);
        self.applied_tx.send_replace(index);
        self.revision_tx.send_replace(state.meta.revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str) -> Proposal {
        Proposal {
            request_id: format!("r-{name}"),
            command: Command::CreateCluster {
                cluster_name: name.to_string(),
                tags: Vec::new(),
                now_ms: 1,
            },
        }
    }

    fn names(store: &Store) -> Vec<String> {
        store.read(|s| s.clusters.iter().map(|(k, _)| k.clone()).collect())
    }

    #[test]
    fn a_reopened_store_starts_from_its_newest_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let store = Store::open(&db).unwrap();
        assert_eq!(store.applied_index(), 0);
        store.apply_entries(vec![(2, Some(create("a"))), (3, None)]);
        assert_eq!(store.checkpoint().unwrap(), 3);
        let at_checkpoint = store.read(|s| s.clone());
        // Applied after the checkpoint: only in memory (the raft log holds
        // it), so a restart replays it from the log.
        store.apply_entries(vec![(4, Some(create("b")))]);
        assert_eq!(names(&store), vec!["a", "b"]);
        assert_eq!(store.applied_index(), 4);
        assert_eq!(store.checkpoint_index(), 3);
        db.flush().unwrap();
        drop(store);

        let reopened = Store::open(&db).unwrap();
        assert_eq!(reopened.applied_index(), 3);
        assert_eq!(reopened.checkpoint_index(), 3);
        assert!(reopened.read(|s| *s == at_checkpoint));
        // Replaying the same entries gives the same state as before.
        reopened.apply_entries(vec![(4, Some(create("b")))]);
        assert_eq!(names(&reopened), vec!["a", "b"]);
    }

    #[test]
    fn a_snapshot_installs_into_another_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let leader = Store::open(&db).unwrap();
        leader.apply_entries(vec![(5, Some(create("x")))]);
        let (index, bytes) = leader.snapshot().unwrap();
        assert_eq!(index, 5);

        assert!(
            Store::decode_snapshot(4, &bytes).is_err(),
            "index mismatch is refused"
        );
        assert!(Store::decode_snapshot(5, b"{not json").is_err());
        let other_dir = tempfile::tempdir().unwrap();
        let other_db = sled::Config::new().path(other_dir.path()).open().unwrap();
        let follower = Store::open(&other_db).unwrap();
        follower.install(5, Store::decode_snapshot(5, &bytes).unwrap(), bytes.len());
        assert_eq!(names(&follower), vec!["x"]);
        assert_eq!(follower.applied_index(), 5);
        assert_eq!(follower.checkpoint_bytes(), bytes.len() as u64);
    }
}
