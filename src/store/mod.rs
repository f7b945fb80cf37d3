//! The replicated state machine's storage: the in-memory `State`, its durable
//! copy in the sled tree `state`, and the notifications readers wait on.
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

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

pub use command::{Command, Outcome, Proposal};
pub use state::State;
use table::Table;

use crate::{Error, Result};

const APPLIED_KEY: &[u8] = b"meta/applied_index";
const META_KEY: &[u8] = b"meta/state";

/// What a snapshot carries: the whole state as of `applied_index`.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotData {
    applied_index: u64,
    state: State,
}

/// The state machine and its durable copy.
pub struct Store {
    /// The sled tree holding one row per table entry, plus meta rows.
    tree: sled::Tree,
    /// The state every reader sees.
    state: RwLock<State>,
    /// The raft index of the last applied entry.
    applied_index: AtomicU64,
    /// Publishes the applied index (for read barriers).
    applied_tx: watch::Sender<u64>,
    /// Publishes the revision (for watchers).
    revision_tx: watch::Sender<u64>,
}

impl Store {
    /// Opens the state tree in `db` and loads it into memory.
    pub fn open(db: &sled::Db) -> Result<Store> {
        let tree = db.open_tree("state")?;
        let mut state = State::default();
        if let Some(bytes) = tree.get(META_KEY)? {
            state.meta = decode(&bytes, "meta/state")?;
        }
        load_table(&tree, "members/", &mut state.members)?;
        load_table(&tree, "clusters/", &mut state.clusters)?;
        load_table(&tree, "requests/", &mut state.requests)?;
        load_table(&tree, "task_definitions/", &mut state.task_definitions)?;
        load_table(
            &tree,
            "container_instances/",
            &mut state.container_instances,
        )?;
        load_table(&tree, "tasks/", &mut state.tasks)?;
        load_table(&tree, "services/", &mut state.services)?;
        state.rebuild_indexes();
        let applied_index = match tree.get(APPLIED_KEY)? {
            Some(bytes) => u64_from(&bytes)?,
            None => 0,
        };
        let (applied_tx, _) = watch::channel(applied_index);
        let (revision_tx, _) = watch::channel(state.meta.revision);
        Ok(Store {
            tree,
            state: RwLock::new(state),
            applied_index: AtomicU64::new(applied_index),
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

    /// Applies committed entries in order and persists the changed rows and
    /// the new applied index in one atomic sled batch. Each item is the raft
    /// index, and the proposal (`None` for entries without one, such as a new
    /// leader's empty entry); membership changes go through `apply_membership`.
    /// Returns one outcome per proposal.
    pub fn apply_entries(
        &self,
        entries: Vec<(u64, Option<Proposal>)>,
    ) -> Result<Vec<(u64, Outcome)>> {
        let Some(last_index) = entries.last().map(|(index, _)| *index) else {
            return Ok(Vec::new());
        };
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for (index, proposal) in entries {
            if let Some(proposal) = proposal {
                outcomes.push((index, state::apply(&mut state, &proposal)));
            }
        }
        self.persist(&mut state, last_index)?;
        Ok(outcomes)
    }

    /// Records a committed membership change at raft index `index`.
    pub fn apply_membership(&self, index: u64, id: u64, address: Option<String>) -> Result<()> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state::apply_membership(&mut state, id, address);
        self.persist(&mut state, index)
    }

    /// Moves the applied index past entries that change nothing.
    pub fn advance_applied(&self, index: u64) -> Result<()> {
        if index > self.applied_index() {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            self.persist(&mut state, index)?;
        }
        Ok(())
    }

    fn persist(&self, state: &mut State, applied_index: u64) -> Result<()> {
        let mut batch = sled::Batch::default();
        dirty_rows(&mut batch, "members/", &mut state.members)?;
        dirty_rows(&mut batch, "clusters/", &mut state.clusters)?;
        dirty_rows(&mut batch, "requests/", &mut state.requests)?;
        dirty_rows(&mut batch, "task_definitions/", &mut state.task_definitions)?;
        dirty_rows(
            &mut batch,
            "container_instances/",
            &mut state.container_instances,
        )?;
        dirty_rows(&mut batch, "tasks/", &mut state.tasks)?;
        dirty_rows(&mut batch, "services/", &mut state.services)?;
        batch.insert(META_KEY, serde_json::to_vec(&state.meta)?);
        batch.insert(APPLIED_KEY, &applied_index.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.applied_index.store(applied_index, Ordering::Release);
        self.applied_tx.send_replace(applied_index);
        let revision = state.meta.revision;
        self.revision_tx.send_if_modified(|current| {
            let changed = *current != revision;
            *current = revision;
            changed
        });
        Ok(())
    }

    /// The whole state as snapshot bytes, with the index it reflects.
    pub fn snapshot(&self) -> Result<(u64, Vec<u8>)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let applied_index = self.applied_index();
        let data = SnapshotData {
            applied_index,
            state: state.clone(),
        };
        Ok((applied_index, serde_json::to_vec(&data)?))
    }

    /// Replaces the whole state with a snapshot's (on a follower that fell
    /// behind the leader's compacted log).
    pub fn restore(&self, index: u64, bytes: &[u8]) -> Result<()> {
        let data: SnapshotData = serde_json::from_slice(bytes)
            .map_err(|e| Error::Internal(format!("undecodable snapshot at index {index}: {e}")))?;
        let mut fresh = data.state;
        fresh.rebuild_indexes();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut batch = sled::Batch::default();
        for row in self.tree.iter() {
            let (key, _) = row?;
            batch.remove(key);
        }
        full_rows(&mut batch, "members/", &fresh.members)?;
        full_rows(&mut batch, "clusters/", &fresh.clusters)?;
        full_rows(&mut batch, "requests/", &fresh.requests)?;
        full_rows(&mut batch, "task_definitions/", &fresh.task_definitions)?;
        full_rows(
            &mut batch,
            "container_instances/",
            &fresh.container_instances,
        )?;
        full_rows(&mut batch, "tasks/", &fresh.tasks)?;
        full_rows(&mut batch, "services/", &fresh.services)?;
        fresh.members.clear_dirty();
        fresh.clusters.clear_dirty();
        fresh.requests.clear_dirty();
        fresh.task_definitions.clear_dirty();
        fresh.container_instances.clear_dirty();
        fresh.tasks.clear_dirty();
        fresh.services.clear_dirty();
        *state = fresh;
        // Rows are written above; persist adds meta and the applied index.
        batch.insert(META_KEY, serde_json::to_vec(&state.meta)?);
        batch.insert(APPLIED_KEY, &index.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.applied_index.store(index, Ordering::Release);
        self.applied_tx.send_replace(index);
        self.revision_tx.send_replace(state.meta.revision);
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("the data dir holds an undecodable row {what}: {e}")))
}

fn u64_from(bytes: &[u8]) -> Result<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Internal("the data dir holds a malformed applied index".into()))?;
    Ok(u64::from_be_bytes(array))
}

fn load_table<V: DeserializeOwned>(
    tree: &sled::Tree,
    prefix: &str,
    table: &mut Table<V>,
) -> Result<()> {
    for row in tree.scan_prefix(prefix.as_bytes()) {
        let (key, value) = row?;
        let key = String::from_utf8_lossy(&key[prefix.len()..]).to_string();
        let value = decode(&value, &format!("{prefix}{key}"))?;
        table.load(key, value);
    }
    Ok(())
}

fn dirty_rows<V: Serialize>(
    batch: &mut sled::Batch,
    prefix: &str,
    table: &mut Table<V>,
) -> Result<()> {
    for (key, value) in table.take_dirty() {
        let full_key = format!("{prefix}{key}");
        match value {
            Some(value) => batch.insert(full_key.as_bytes(), serde_json::to_vec(value)?),
            None => batch.remove(full_key.as_bytes()),
        }
    }
    Ok(())
}

fn full_rows<V: Serialize>(batch: &mut sled::Batch, prefix: &str, table: &Table<V>) -> Result<()> {
    for (key, value) in table.iter() {
        batch.insert(
            format!("{prefix}{key}").as_bytes(),
            serde_json::to_vec(value)?,
        );
    }
    Ok(())
}
