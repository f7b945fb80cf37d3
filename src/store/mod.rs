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
//! `Store::read` and waits with `wait_applied` / `subscribe`; watchers read
//! what changed with `changes_after` (`history`), recorded under the same
//! write lock as the apply that made the change. This module does not know
//! about Raft messages, gRPC or Docker.

pub mod command;
pub mod ecs;
pub mod elbv2;
pub mod history;
pub mod iam;
pub mod registry;
pub mod rows;
pub mod secrets;
pub mod services;
pub mod state;
pub mod table;
pub mod trust;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

pub use command::{Command, Outcome, Proposal};
pub use history::{Change, ChangeStream, Compacted};
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
    /// The newest changes, for watchers; written only while `state` is
    /// write-locked, so its newest change is always the state's revision.
    history: Mutex<history::History>,
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
        Store::open_with_history(db, history::CAPACITY)
    }

    /// Like `open`, keeping at most `capacity` changes for watchers. The
    /// history starts empty: changes up to the checkpoint's revision are
    /// compacted.
    pub fn open_with_history(db: &sled::Db, capacity: usize) -> Result<Store> {
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
        let history = history::History::new(state.meta.revision, capacity, history::BYTE_BUDGET);
        Ok(Store {
            tree,
            state: RwLock::new(state),
            history: Mutex::new(history),
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

    /// The changes after revision `after`, oldest first, with consecutive
    /// revisions; `Compacted` when this server no longer holds one of them.
    /// A change is readable here before `subscribe` announces its revision.
    pub fn changes_after(&self, after: u64) -> Result<Vec<Change>, Compacted> {
        self.history().changes_after(after)
    }

    fn history(&self) -> std::sync::MutexGuard<'_, history::History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut history = self.history();
        for (index, proposal) in entries {
            if let Some(proposal) = proposal {
                let before = state.meta.revision;
                let outcome = state::apply(&mut state, &proposal);
                // A retried request id answers its first outcome and moves nothing.
                if state.meta.revision != before {
                    history.record(Change::of_proposal(
                        state.meta.revision,
                        index,
                        &proposal,
                        &outcome,
                    ));
                }
                outcomes.push((index, outcome));
            }
        }
        drop(history);
        self.publish(&state, last_index);
        outcomes
    }

    /// Records a committed membership change at raft index `index`.
    pub fn apply_membership(&self, index: u64, id: u64, address: Option<String>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let added = address.is_some();
        state::apply_membership(&mut state, id, address);
        self.history()
            .record(Change::of_membership(state.meta.revision, index, id, added));
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
        // What led to the snapshot's state is not known here: compacted.
        self.history().reset(state.meta.revision);
        self.checkpoint_index.store(index, Ordering::Release);
        self.checkpoint_bytes
            .store(checkpoint_bytes as u64, Ordering::Release);
        self.applied_index.store(index, Ordering::Release);
        self.applied_tx.send_replace(index);
        self.revision_tx.send_replace(state.meta.revision);
    }
}

/// A `CreateCluster` proposal with request id `r-NAME`, for unit tests.
#[cfg(test)]
pub(crate) fn create_cluster_proposal(name: &str) -> Proposal {
    Proposal {
        request_id: format!("r-{name}"),
        command: Command::CreateCluster {
            cluster_name: name.to_string().into(),
            tags: Vec::new(),
            now_ms: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::create_cluster_proposal as create;
    use super::*;

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

    fn open_store(dir: &tempfile::TempDir) -> (sled::Db, Store) {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let store = Store::open(&db).unwrap();
        (db, store)
    }

    fn revisions(changes: &[Change]) -> Vec<u64> {
        changes.iter().map(|c| c.revision).collect()
    }

    #[test]
    fn every_revision_is_recorded_once_with_its_change() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = open_store(&dir);
        let mut revision = store.subscribe();
        let outcomes = store.apply_entries(vec![
            (2, Some(create("a"))),
            (3, None),
            (4, Some(create("bad name"))),
            // A retried request id answers the first outcome and moves nothing.
            (5, Some(create("a"))),
        ]);
        assert_eq!(outcomes.len(), 3);
        assert_eq!(outcomes[0].1, outcomes[2].1);
        assert_eq!(store.revision(), 2);
        assert!(revision.has_changed().unwrap());
        assert_eq!(*revision.borrow_and_update(), 2);

        let changes = store.changes_after(0).unwrap();
        assert_eq!(
            changes[0],
            Change {
                revision: 1,
                raft_index: 2,
                action: "CreateCluster".into(),
                request_id: "r-a".into(),
                subjects: vec!["cluster/a".into()],
                error: None,
            }
        );
        // A refused command moves the revision too, and says why.
        assert_eq!(changes[1].revision, 2);
        assert_eq!(changes[1].raft_index, 4);
        assert_eq!(changes[1].subjects, vec!["cluster/bad name".to_string()]);
        assert!(changes[1].error.as_ref().unwrap().contains("clusterName"));
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn membership_changes_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = open_store(&dir);
        store.apply_entries(vec![(2, Some(create("a")))]);
        store.apply_membership(3, 7, Some("127.0.0.1:7".into()));
        store.apply_membership(4, 7, None);
        let changes = store.changes_after(1).unwrap();
        assert_eq!(revisions(&changes), [2, 3]);
        assert_eq!(changes[0].action, "AddServer");
        assert_eq!(changes[0].raft_index, 3);
        assert_eq!(changes[0].subjects, vec!["member/7".to_string()]);
        assert_eq!(changes[1].action, "RemoveServer");
        assert_eq!(store.revision(), 3);
    }

    #[test]
    fn the_store_keeps_only_its_newest_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let store = Store::open_with_history(&db, 3).unwrap();
        for index in 1..=5 {
            store.apply_entries(vec![(index, Some(create(&format!("c{index}"))))]);
        }
        assert_eq!(revisions(&store.changes_after(2).unwrap()), [3, 4, 5]);
        assert_eq!(
            store.changes_after(1),
            Err(Compacted {
                after: 1,
                oldest: 3
            })
        );
    }

    #[test]
    fn a_reopened_store_holds_no_change_up_to_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (db, store) = open_store(&dir);
        store.apply_entries(vec![(2, Some(create("a"))), (3, Some(create("b")))]);
        store.checkpoint().unwrap();
        db.flush().unwrap();
        drop(store);

        let reopened = Store::open(&db).unwrap();
        assert_eq!(reopened.changes_after(2), Ok(vec![]));
        assert_eq!(reopened.changes_after(1).unwrap_err().oldest, 3);
        // The log entries after the checkpoint are replayed and recorded.
        reopened.apply_entries(vec![(4, Some(create("c")))]);
        let changes = reopened.changes_after(2).unwrap();
        assert_eq!(revisions(&changes), [3]);
        assert_eq!(changes[0].raft_index, 4);
    }

    #[test]
    fn an_installed_snapshot_compacts_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, leader) = open_store(&dir);
        leader.apply_entries(vec![(2, Some(create("x"))), (3, Some(create("y")))]);
        let (index, bytes) = leader.snapshot().unwrap();

        let other_dir = tempfile::tempdir().unwrap();
        let (_other_db, follower) = open_store(&other_dir);
        follower.apply_entries(vec![(2, Some(create("x")))]);
        assert_eq!(revisions(&follower.changes_after(0).unwrap()), [1]);
        follower.install(
            index,
            Store::decode_snapshot(index, &bytes).unwrap(),
            bytes.len(),
        );
        assert_eq!(follower.revision(), 2);
        assert_eq!(follower.changes_after(2), Ok(vec![]));
        assert_eq!(follower.changes_after(0).unwrap_err().oldest, 3);
        follower.apply_entries(vec![(4, Some(create("z")))]);
        assert_eq!(revisions(&follower.changes_after(2).unwrap()), [3]);
    }
}
