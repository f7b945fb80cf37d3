//! The replicated state machine's storage: the in-memory `State`, its durable
//! checkpoint in the sled tree `state`, and the notifications readers wait on.
//!
//! Durability works like etcd's WAL plus backend: every committed command is
//! already durable in the raft log (`raft::storage`) before it is applied,
//! so applying only changes memory. The whole state is written as a
//! checkpoint (`checkpoint`: a file of its own, streamed, named in sled by
//! a small pointer; see `checkpoint.rs`) before the raft log is compacted,
//! and a server that restarts loads the newest checkpoint and re-applies
//! the log entries after it (raft-rs hands them over again, from the
//! checkpoint's index on). A checkpoint is also exactly what a snapshot for
//! a lagging follower carries. Data dirs written before checkpoint files
//! hold the checkpoint as one sled value; they still load, and their next
//! checkpoint moves it to a file.
//!
//! Only the raft node (`raft::node`) calls the mutating methods, from its one
//! thread, with entries Raft has committed. Everyone else reads through
//! `Store::read` and waits with `wait_applied` / `subscribe`; watchers read
//! what changed with `changes_after` (`history`), recorded under the same
//! write lock as the apply that made the change. This module does not know
//! about Raft messages, gRPC or Docker.

pub mod checkpoint;
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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

pub use checkpoint::Pointer;
pub use command::{Command, Outcome, Proposal};
pub use history::{Change, ChangeStream, Compacted};
pub use state::State;

use crate::{Error, Result};

/// The checkpoint of data dirs written before checkpoint files:
/// `SnapshotData` as JSON in one sled value. Still loaded; removed by the
/// next checkpoint, in the same sled batch that names its file.
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
    /// The sled tree holding the pointer to the checkpoint.
    tree: sled::Tree,
    /// Where checkpoint files are written (`DATA_DIR/state`).
    dir: PathBuf,
    /// The pointer to the newest checkpoint file (`None`: none yet, or the
    /// checkpoint of an older data dir, inside sled).
    pointer: Mutex<Option<Pointer>>,
    /// The sequence number of the next checkpoint file.
    next_sequence: AtomicU64,
    /// Checkpoint files nothing will name once the db is flushed: replaced
    /// by a newer pointer, or left by a crash. Deleted after a flush
    /// (`take_replaced`, `delete_replaced`), never before.
    replaced: Mutex<Vec<PathBuf>>,
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
    /// Opens the state tree in `db` and loads the newest checkpoint (its
    /// file in `dir`, or, in an older data dir, its sled value).
    pub fn open(db: &sled::Db, dir: &Path) -> Result<Store> {
        Store::open_with_history(db, dir, history::CAPACITY)
    }

    /// Like `open`, keeping at most `capacity` changes for watchers. The
    /// history starts empty: changes up to the checkpoint's revision are
    /// compacted.
    pub fn open_with_history(db: &sled::Db, dir: &Path, capacity: usize) -> Result<Store> {
        let tree = db.open_tree("state")?;
        let pointer = match tree.get(checkpoint::POINTER_KEY)? {
            Some(bytes) => Some(Pointer::decode(&bytes)?),
            None => None,
        };
        let leftovers = checkpoint::leftovers(dir, pointer.as_ref())?;
        // Half-written: nothing ever named them.
        for path in &leftovers.temporary {
            let _ = std::fs::remove_file(path);
        }
        let (state, applied_index, checkpoint_bytes) = match &pointer {
            Some(pointer) => {
                let data: SnapshotData = checkpoint::read(dir, pointer)?;
                if data.applied_index != pointer.applied_index {
                    return Err(Error::Internal(format!(
                        "the data dir's state checkpoint {} holds the state of raft index {} where {} was written: restore the data dir from a backup, or remove this server and join it again with an empty data dir",
                        dir.join(pointer.file_name()).display(),
                        data.applied_index,
                        pointer.applied_index
                    )));
                }
                (data.state, data.applied_index, pointer.bytes)
            }
            None => match tree.get(CHECKPOINT_KEY)? {
                Some(bytes) => {
                    let data: SnapshotData = serde_json::from_slice(&bytes).map_err(|e| {
                        Error::Internal(format!(
                            "the data dir's state checkpoint is undecodable ({e}): restore the data dir from a backup, or remove this server and join it again with an empty data dir"
                        ))
                    })?;
                    (data.state, data.applied_index, bytes.len() as u64)
                }
                None if tree.get(LEGACY_META_KEY)?.is_some() => {
                    return Err(Error::Internal(
                        "the data dir was written by a development version of orc that stored state row by row: start this server from an empty data dir".into(),
                    ))
                }
                None => (State::default(), 0, 0),
            },
        };
        let mut state = state;
        state.rebuild_indexes();
        let (applied_tx, _) = watch::channel(applied_index);
        let (revision_tx, _) = watch::channel(state.meta.revision);
        let history = history::History::new(state.meta.revision, capacity, history::BYTE_BUDGET);
        Ok(Store {
            tree,
            dir: dir.to_path_buf(),
            pointer: Mutex::new(pointer),
            next_sequence: AtomicU64::new(leftovers.highest_sequence + 1),
            // Unnamed files go after the first flush: the pointer this
            // server read may itself still wait for its sync (a crash of
            // the process, not of the machine, keeps unsynced writes).
            replaced: Mutex::new(leftovers.unnamed),
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

    /// Writes the whole state as the new checkpoint and returns the index
    /// it reflects: streamed into a file of its own (fsynced and renamed
    /// into place), then named in sled, durable at the next flush of the
    /// db. The raft log may be compacted up to that index once the db is
    /// flushed; the file it replaces is deleted after that flush.
    pub fn checkpoint(&self) -> Result<u64> {
        let sequence = self.next_sequence.fetch_add(1, Ordering::AcqRel);
        let mut applied_index = 0;
        let bytes = checkpoint::write(&self.dir, sequence, |writer| {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            applied_index = self.applied_index();
            let data = SnapshotRef {
                applied_index,
                state: &state,
            };
            serde_json::to_writer(writer, &data)
                .map_err(|e| Error::Internal(format!("cannot write the state checkpoint: {e}")))
        })?;
        let pointer = Pointer {
            sequence,
            applied_index,
            bytes,
        };
        let mut batch = sled::Batch::default();
        batch.insert(checkpoint::POINTER_KEY, pointer.encode());
        batch.remove(CHECKPOINT_KEY);
        if let Err(error) = self.tree.apply_batch(batch) {
            self.replaced().push(self.dir.join(pointer.file_name()));
            return Err(error.into());
        }
        checkpoint::crash_at("pointer");
        self.named(pointer);
        Ok(applied_index)
    }

    /// Writes a snapshot's data (the state of raft index `index`, as JSON)
    /// as a new checkpoint file and returns its pointer, which the caller
    /// writes to sled (`tree`, key `checkpoint::POINTER_KEY`) with the raft
    /// metadata, before `install`. A file no pointer came to name is
    /// deleted after the next flush (`abandon`).
    pub fn write_snapshot_file(&self, index: u64, bytes: &[u8]) -> Result<Pointer> {
        let sequence = self.next_sequence.fetch_add(1, Ordering::AcqRel);
        let bytes = checkpoint::write_bytes(&self.dir, sequence, bytes)?;
        Ok(Pointer {
            sequence,
            applied_index: index,
            bytes,
        })
    }

    /// Gives up a checkpoint file `write_snapshot_file` wrote but no
    /// pointer names.
    pub fn abandon(&self, pointer: &Pointer) {
        self.replaced().push(self.dir.join(pointer.file_name()));
    }

    /// Records `pointer`, just written to sled, as the newest checkpoint;
    /// the file it replaces goes after the next flush.
    fn named(&self, pointer: Pointer) {
        self.checkpoint_bytes
            .store(pointer.bytes, Ordering::Release);
        self.checkpoint_index
            .store(pointer.applied_index, Ordering::Release);
        let old = self
            .pointer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(pointer);
        if let Some(old) = old {
            self.replaced().push(self.dir.join(old.file_name()));
        }
    }

    fn replaced(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.replaced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The checkpoint files to delete once the flush about to start is
    /// done: every pointer written so far replaced them. Pass them to
    /// `delete_replaced` after the flush (and its sync) succeeded.
    pub fn take_replaced(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *self.replaced())
    }

    /// Deletes checkpoint files `take_replaced` returned before a flush
    /// that succeeded (so the pointers that replaced them are durable).
    pub fn delete_replaced(&self, files: Vec<PathBuf>) {
        let current = self
            .pointer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| self.dir.join(p.file_name()));
        for file in files {
            if Some(&file) == current.as_ref() {
                continue;
            }
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                // Left for the next start-up to find again.
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "cannot delete a replaced state checkpoint")
                }
            }
        }
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

    /// The sled tree holding the checkpoint's pointer (for
    /// `raft::storage`, which names a snapshot's checkpoint file in the same
    /// transaction as its raft metadata).
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
    /// that fell behind the leader's compacted log), once its checkpoint
    /// file was written (`write_snapshot_file`) and `pointer` to it written
    /// to sled.
    pub fn install(&self, index: u64, fresh: State, pointer: Pointer) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        *state = fresh;
        // What led to the snapshot's state is not known here: compacted.
        self.history().reset(state.meta.revision);
        self.named(pointer);
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
        let store = Store::open(&db, &dir.path().join("state")).unwrap();
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

        let reopened = Store::open(&db, &dir.path().join("state")).unwrap();
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
        let leader = Store::open(&db, &dir.path().join("state")).unwrap();
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
        let follower = Store::open(&other_db, &other_dir.path().join("state")).unwrap();
        let pointer = follower.write_snapshot_file(5, &bytes).unwrap();
        follower.install(5, Store::decode_snapshot(5, &bytes).unwrap(), pointer);
        assert_eq!(names(&follower), vec!["x"]);
        assert_eq!(follower.applied_index(), 5);
        assert_eq!(follower.checkpoint_bytes(), bytes.len() as u64);
    }

    fn open_store(dir: &tempfile::TempDir) -> (sled::Db, Store) {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let store = Store::open(&db, &dir.path().join("state")).unwrap();
        (db, store)
    }

    /// The checkpoint directory's file names, sorted.
    fn checkpoint_files(dir: &tempfile::TempDir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("state"))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// What `raft::storage`'s flush does around sled's.
    fn flush(db: &sled::Db, store: &Store) {
        let replaced = store.take_replaced();
        db.flush().unwrap();
        store.delete_replaced(replaced);
    }

    #[test]
    fn a_checkpoint_is_a_file_and_the_one_it_replaces_goes_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (db, store) = open_store(&dir);
        store.apply_entries(vec![(2, Some(create("a")))]);
        store.checkpoint().unwrap();
        flush(&db, &store);
        let first = checkpoint_files(&dir);
        assert_eq!(first, ["checkpoint-00000000000000000001.json"]);
        store.apply_entries(vec![(3, Some(create("b")))]);
        assert_eq!(store.checkpoint().unwrap(), 3);
        // Until a flush makes the new pointer durable, a crash restarts from
        // the old file: it stays.
        assert_eq!(checkpoint_files(&dir).len(), 2);
        flush(&db, &store);
        let second = checkpoint_files(&dir);
        assert_eq!(second, ["checkpoint-00000000000000000002.json"]);
        let length = std::fs::metadata(dir.path().join("state").join(&second[0]))
            .unwrap()
            .len();
        assert_eq!(store.checkpoint_bytes(), length);
        // sled holds only the pointer.
        let tree = db.open_tree("state").unwrap();
        assert!(tree.get(CHECKPOINT_KEY).unwrap().is_none());
        assert!(tree.get(checkpoint::POINTER_KEY).unwrap().unwrap().len() < 100);
    }

    #[test]
    fn a_checkpoint_cut_short_by_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let (db, store) = open_store(&dir);
        store.apply_entries(vec![(2, Some(create("a")))]);
        store.checkpoint().unwrap();
        flush(&db, &store);
        // Acknowledged after the checkpoint: only in the raft log.
        store.apply_entries(vec![(3, Some(create("b")))]);
        // A crash while the next checkpoint's file was written leaves it
        // half-written under its temporary name; one after its rename but
        // before sled named it leaves a whole file that nothing names.
        std::fs::write(
            state_dir.join("checkpoint-00000000000000000002.json.tmp"),
            br#"{"applied_index":3,"sta"#,
        )
        .unwrap();
        std::fs::write(
            state_dir.join("checkpoint-00000000000000000003.json"),
            br#"{"applied_index":3,"state":{}}"#,
        )
        .unwrap();
        drop(store);

        let reopened = Store::open(&db, &state_dir).unwrap();
        // The previous checkpoint; the log replays the rest.
        assert_eq!(reopened.applied_index(), 2);
        assert_eq!(names(&reopened), ["a"]);
        // The half-written file goes at once, the unnamed one after the
        // first flush (the pointer read may not be synced yet).
        assert_eq!(
            checkpoint_files(&dir),
            [
                "checkpoint-00000000000000000001.json",
                "checkpoint-00000000000000000003.json"
            ]
        );
        flush(&db, &reopened);
        assert_eq!(
            checkpoint_files(&dir),
            ["checkpoint-00000000000000000001.json"]
        );
        reopened.apply_entries(vec![(3, Some(create("b")))]);
        // The next checkpoint never reuses a leftover's number.
        reopened.checkpoint().unwrap();
        flush(&db, &reopened);
        assert_eq!(
            checkpoint_files(&dir),
            ["checkpoint-00000000000000000004.json"]
        );
        drop(reopened);
        let again = Store::open(&db, &state_dir).unwrap();
        assert_eq!(again.applied_index(), 3);
        assert_eq!(names(&again), ["a", "b"]);
    }

    #[test]
    fn a_data_dir_with_its_checkpoint_inside_sled_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        // As orc wrote checkpoints before they were files: one sled value.
        let mut state = State::default();
        state::apply(&mut state, &create("a")).unwrap();
        let bytes = serde_json::to_vec(&SnapshotRef {
            applied_index: 7,
            state: &state,
        })
        .unwrap();
        let tree = db.open_tree("state").unwrap();
        tree.insert(CHECKPOINT_KEY, bytes.clone()).unwrap();

        let store = Store::open(&db, &dir.path().join("state")).unwrap();
        assert_eq!(store.applied_index(), 7);
        assert_eq!(store.checkpoint_bytes(), bytes.len() as u64);
        assert_eq!(names(&store), ["a"]);
        // Its next checkpoint is a file, and the sled value goes with the
        // same batch that names it.
        store.checkpoint().unwrap();
        assert!(tree.get(CHECKPOINT_KEY).unwrap().is_none());
        flush(&db, &store);
        assert_eq!(checkpoint_files(&dir).len(), 1);
        drop(store);
        let reopened = Store::open(&db, &dir.path().join("state")).unwrap();
        assert_eq!(reopened.applied_index(), 7);
        assert!(reopened.read(|s| *s == state));
    }

    #[test]
    fn a_damaged_or_missing_checkpoint_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (db, store) = open_store(&dir);
        store.apply_entries(vec![(2, Some(create("a")))]);
        store.checkpoint().unwrap();
        flush(&db, &store);
        drop(store);
        let file = dir
            .path()
            .join("state")
            .join("checkpoint-00000000000000000001.json");
        let whole = std::fs::read(&file).unwrap();
        let refusal = |db: &sled::Db| {
            Store::open(db, &dir.path().join("state"))
                .err()
                .expect("a damaged checkpoint is refused")
                .to_string()
        };
        std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
        let error = refusal(&db);
        assert!(
            error.contains("bytes where") && error.contains("restore the data dir from a backup"),
            "{error}"
        );
        let mut garbled = whole.clone();
        garbled[0] = b'[';
        std::fs::write(&file, &garbled).unwrap();
        let error = refusal(&db);
        assert!(error.contains("is undecodable"), "{error}");
        std::fs::remove_file(&file).unwrap();
        let error = refusal(&db);
        assert!(error.contains("cannot open"), "{error}");
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
        let store = Store::open_with_history(&db, &dir.path().join("state"), 3).unwrap();
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

        let reopened = Store::open(&db, &dir.path().join("state")).unwrap();
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
        let pointer = follower.write_snapshot_file(index, &bytes).unwrap();
        follower.install(
            index,
            Store::decode_snapshot(index, &bytes).unwrap(),
            pointer,
        );
        assert_eq!(follower.revision(), 2);
        assert_eq!(follower.changes_after(2), Ok(vec![]));
        assert_eq!(follower.changes_after(0).unwrap_err().oldest, 3);
        follower.apply_entries(vec![(4, Some(create("z")))]);
        assert_eq!(revisions(&follower.changes_after(2).unwrap()), [3]);
    }
}
