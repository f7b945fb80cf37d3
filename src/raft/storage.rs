//! raft-rs's `Storage` contract implemented on sled, plus the writes raft-rs
//! leaves to us: appending entries, saving the hard and conf state,
//! compacting the log, and installing a snapshot.
//!
//! Layout: tree `raft_log` holds the log in runs: the key is the big-endian
//! index of a run's first entry, the value the run's entries, each encoded
//! as a 4-byte big-endian length and the `Entry` protobuf. One append (one
//! Ready) is one run, so a burst of proposals costs one sled insert, and
//! compaction removes runs, not entries. A run ends where the next begins;
//! tree `raft_meta` holds the hard state, the conf state and the metadata of
//! the last compaction point. Snapshot data is not stored separately: it is
//! the state machine itself (`store::Store::snapshot`), taken when raft-rs
//! asks for one. Only the raft node's thread writes here, and durability
//! comes from `flush`, which the node calls once per Ready (group commit).
//!
//! The newest entries are also kept in memory (`Bounds::tail`, at most
//! `TAIL_ENTRIES` entries and `TAIL_BYTES` bytes): raft-rs asks for terms and
//! entries near the end of the log on every message and every commit, and
//! answering those from memory instead of sled's page cache is most of what
//! a write costs the raft thread. sled stays the source of truth: the tail is
//! only ever a copy of the log's last entries.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use sled::Transactional as _;

use crate::store::Store;

const HARD_STATE_KEY: &[u8] = b"hard_state";
const CONF_STATE_KEY: &[u8] = b"conf_state";
const COMPACTED_KEY: &[u8] = b"compacted";
const CONF_INDEX_KEY: &[u8] = b"conf_index";

/// At most this many of the newest entries are kept in memory.
const TAIL_ENTRIES: usize = 4096;
/// ... and at most this many bytes of their data.
const TAIL_BYTES: usize = 4 * 1024 * 1024;

/// Cached bounds of the log, so reads never scan.
#[derive(Clone, Default)]
struct Bounds {
    hard_state: HardState,
    conf_state: ConfState,
    /// The raft index of the entry (or snapshot) `conf_state` comes from.
    conf_index: u64,
    /// Index and term of the last entry folded into the state machine and
    /// removed from the log (0/0 for a log never compacted).
    compacted: SnapshotMetadata,
    /// Index of the last entry in the log (`compacted.index` when empty).
    last_index: u64,
    /// The newest entries, contiguous and ending at `last_index` (or empty).
    tail: VecDeque<Entry>,
    /// Bytes of entry data held in `tail`.
    tail_bytes: usize,
}

/// The bytes an entry counts for in the memory tail's budget.
fn tail_cost(entry: &Entry) -> usize {
    entry.data.len() + entry.context.len()
}

impl Bounds {
    /// The cached entry at `index`, if the tail holds it.
    fn cached(&self, index: u64) -> Option<&Entry> {
        let first = self.tail.front()?.index;
        if index < first {
            return None;
        }
        self.tail.get((index - first) as usize)
    }

    /// Replaces the tail from `entries[0].index` on with `entries`.
    fn cache(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|e| e.index) else {
            return;
        };
        while self.tail.back().is_some_and(|e| e.index >= first) {
            self.pop_back();
        }
        if self.tail.back().is_some_and(|e| e.index + 1 != first) {
            self.tail.clear();
            self.tail_bytes = 0;
        }
        for entry in entries {
            self.tail_bytes += tail_cost(entry);
            self.tail.push_back(entry.clone());
        }
        while self.tail.len() > TAIL_ENTRIES || self.tail_bytes > TAIL_BYTES {
            self.pop_front();
        }
    }

    /// Forgets cached entries up to and including `index`.
    fn uncache_through(&mut self, index: u64) {
        while self.tail.front().is_some_and(|e| e.index <= index) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.tail.pop_front() {
            self.tail_bytes -= tail_cost(&entry);
        }
    }

    fn pop_back(&mut self) {
        if let Some(entry) = self.tail.pop_back() {
            self.tail_bytes -= tail_cost(&entry);
        }
    }
}

/// raft-rs storage on sled.
#[derive(Clone)]
pub struct SledStorage {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    bounds: Arc<RwLock<Bounds>>,
    /// The state machine, which is also the snapshot.
    store: Arc<Store>,
    /// sled's files, synced after every flush (see `DiskSync`).
    disk: Option<Arc<Mutex<DiskSync>>>,
}

/// sled's `flush` writes its log with `sync_file_range`, which neither
/// empties the disk's write cache nor commits the file's size, and writes
/// large pages to files under `blobs/` without syncing them. After each
/// flush orc therefore `fdatasync`s the log file and every blob file it has
/// not synced yet (and the blob directory when it gained files), so what is
/// acknowledged survives a power cut, as etcd's WAL does.
///
/// Listing `blobs/` costs three system calls, on every flush, and it almost
/// never holds anything new (a blob is a page bigger than a quarter of a
/// sled segment: a rare big log run; the state checkpoint is a file of its
/// own). So on Linux an inotify watch on the directory says whether
/// anything was created there since the last listing, and the listing is
/// skipped when nothing was. Without the
/// watch (another OS, or inotify refused) every flush lists the directory.
struct DiskSync {
    log_file: std::fs::File,
    blob_dir: std::path::PathBuf,
    synced_blobs: std::collections::HashSet<std::ffi::OsString>,
    /// `None` without a watch (another OS, inotify refused, or the watch
    /// broke): then every flush lists the directory.
    blob_watch: Option<BlobWatch>,
    listed_once: bool,
}

impl DiskSync {
    fn new(log_file: std::fs::File, blob_dir: std::path::PathBuf) -> DiskSync {
        DiskSync {
            blob_watch: BlobWatch::new(&blob_dir),
            log_file,
            blob_dir,
            synced_blobs: std::collections::HashSet::new(),
            listed_once: false,
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.log_file.sync_data()?;
        // Events are drained before listing: a file created after the drain
        // leaves an event for the next flush, one created before it is listed.
        let changed = match &mut self.blob_watch {
            Some(watch) => match watch.drain() {
                Some(changed) => changed,
                None => {
                    self.blob_watch = None;
                    true
                }
            },
            None => true,
        };
        if !changed && self.listed_once {
            return Ok(());
        }
        self.sync_new_blobs()?;
        self.listed_once = true;
        Ok(())
    }

    fn sync_new_blobs(&mut self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        let mut present = std::collections::HashSet::new();
        let mut new_files = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match std::fs::File::open(entry.path()) {
                    Ok(file) => file.sync_data()?,
                    // sled removed it meanwhile.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error),
                }
                new_files = true;
            }
            present.insert(name);
        }
        if new_files {
            std::fs::File::open(&self.blob_dir)?.sync_all()?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

/// An inotify watch for files created in (or moved into) sled's blob dir.
#[cfg(target_os = "linux")]
struct BlobWatch {
    inotify: inotify::Inotify,
    buffer: Vec<u8>,
}

#[cfg(target_os = "linux")]
impl BlobWatch {
    fn new(dir: &std::path::Path) -> Option<BlobWatch> {
        use inotify::WatchMask;
        let inotify = inotify::Inotify::init()
            .inspect_err(
                |error| tracing::debug!(%error, "no inotify; every flush lists the blob dir"),
            )
            .ok()?;
        inotify
            .watches()
            .add(dir, WatchMask::CREATE | WatchMask::MOVED_TO)
            .inspect_err(|error| tracing::debug!(%error, dir = %dir.display(), "cannot watch the blob dir; every flush lists it"))
            .ok()?;
        Some(BlobWatch {
            inotify,
            buffer: vec![0; 4096],
        })
    }

    /// Whether anything was created since the last call; `None` when the
    /// watch can no longer be trusted (the directory went away, the event
    /// queue overflowed, or reading failed).
    fn drain(&mut self) -> Option<bool> {
        use inotify::EventMask;
        let mut changed = false;
        loop {
            match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => {
                    for event in events {
                        if event.mask.intersects(
                            EventMask::Q_OVERFLOW
                                | EventMask::IGNORED
                                | EventMask::DELETE_SELF
                                | EventMask::MOVE_SELF
                                | EventMask::UNMOUNT,
                        ) {
                            return None;
                        }
                        changed = true;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    return Some(changed)
                }
                Err(_) => return None,
            }
        }
    }
}

/// Without inotify every flush lists the blob dir.
#[cfg(not(target_os = "linux"))]
struct BlobWatch;

#[cfg(not(target_os = "linux"))]
impl BlobWatch {
    fn new(_dir: &std::path::Path) -> Option<BlobWatch> {
        None
    }

    fn drain(&mut self) -> Option<bool> {
        None
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Encodes a run of consecutive entries as one sled value.
fn encode_run(entries: &[Entry]) -> crate::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(entries.iter().map(|e| 4 + e.data.len() + 32).sum());
    for entry in entries {
        let encoded = entry.write_to_bytes().map_err(|e| corrupt("entry", e))?;
        bytes.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&encoded);
    }
    Ok(bytes)
}

/// Decodes a run written by `encode_run`.
fn decode_run(mut bytes: &[u8]) -> crate::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err(corrupt("log", "a run ends inside a length"));
        }
        let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let Some(encoded) = bytes.get(4..4 + length) else {
            return Err(corrupt("log", "a run ends inside an entry"));
        };
        entries.push(Entry::parse_from_bytes(encoded).map_err(|e| corrupt("entry", e))?);
        bytes = &bytes[4 + length..];
    }
    Ok(entries)
}

/// Entries collected for raft-rs up to its size limit (at least one).
struct SizeLimited {
    entries: Vec<Entry>,
    size: u64,
    max_size: Option<u64>,
}

impl SizeLimited {
    /// Counts `entry` and says whether it still fits.
    fn fits(&mut self, entry: &Entry) -> bool {
        self.size += u64::from(entry.compute_size());
        self.entries.is_empty() || self.max_size.is_none_or(|max| self.size <= max)
    }
}

fn storage_error(error: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(error.to_string().into()))
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> crate::Error {
    crate::Error::Internal(format!("the data dir's raft {what} is corrupt: {error}"))
}

impl SledStorage {
    /// Opens (or creates) the raft trees in `db`.
    pub fn open(db: &sled::Db, store: Arc<Store>) -> crate::Result<SledStorage> {
        let log = db.open_tree("raft_log")?;
        let meta = db.open_tree("raft_meta")?;
        let mut bounds = Bounds::default();
        if let Some(bytes) = meta.get(HARD_STATE_KEY)? {
            bounds.hard_state =
                HardState::parse_from_bytes(&bytes).map_err(|e| corrupt("hard state", e))?;
        }
        if let Some(bytes) = meta.get(CONF_STATE_KEY)? {
            bounds.conf_state =
                ConfState::parse_from_bytes(&bytes).map_err(|e| corrupt("conf state", e))?;
        }
        if let Some(bytes) = meta.get(CONF_INDEX_KEY)? {
            let array: [u8; 8] = bytes
                .as_ref()
                .try_into()
                .map_err(|e| corrupt("conf index", e))?;
            bounds.conf_index = u64::from_be_bytes(array);
        }
        if let Some(bytes) = meta.get(COMPACTED_KEY)? {
            bounds.compacted = SnapshotMetadata::parse_from_bytes(&bytes)
                .map_err(|e| corrupt("compaction point", e))?;
        }
        bounds.last_index = match log.last()? {
            Some((_, run)) => decode_run(&run)?
                .last()
                .map(|e| e.index)
                .unwrap_or(bounds.compacted.index),
            None => bounds.compacted.index,
        };
        Ok(SledStorage {
            db: db.clone(),
            log,
            meta,
            bounds: Arc::new(RwLock::new(bounds)),
            store,
            disk: None,
        })
    }

    fn bounds(&self) -> std::sync::RwLockReadGuard<'_, Bounds> {
        self.bounds.read().unwrap_or_else(|e| e.into_inner())
    }

    fn bounds_mut(&self) -> std::sync::RwLockWriteGuard<'_, Bounds> {
        self.bounds.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this storage has never held any raft state.
    pub fn is_empty(&self) -> bool {
        let bounds = self.bounds();
        bounds.hard_state == HardState::default()
            && bounds.conf_state == ConfState::default()
            && bounds.last_index == 0
    }

    /// The current conf state.
    pub fn conf_state(&self) -> ConfState {
        self.bounds().conf_state.clone()
    }

    /// The index of the last compaction (the newest snapshot point).
    pub fn compacted_index(&self) -> u64 {
        self.bounds().compacted.index
    }

    /// Index of the first entry still in the log.
    pub fn first_log_index(&self) -> u64 {
        self.bounds().compacted.index + 1
    }

    /// Appends entries, replacing any conflicting suffix (not yet durable).
    pub fn append(&self, entries: &[Entry]) -> crate::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut bounds = self.bounds_mut();
        if first.index <= bounds.compacted.index {
            return Err(crate::Error::Internal(format!(
                "append at index {} overlaps the compacted log ending at {}",
                first.index, bounds.compacted.index
            )));
        }
        let run = encode_run(entries)?;
        if first.index > bounds.last_index {
            // The common case, one new run: a single insert, which sled makes
            // atomic on its own. A `Batch` would cost more than the insert:
            // sled seals and writes its log buffer before and after a
            // batch's manifest, two extra writes (and thread hand-offs)
            // before the flush writes the run itself.
            self.log.insert(key(first.index), run)?;
        } else {
            self.replace_suffix(first.index, run)?;
        }
        bounds.last_index = entries.last().map(|e| e.index).unwrap_or(bounds.last_index);
        bounds.cache(entries);
        Ok(())
    }

    /// Replaces the log from `first` on with `run`, in one sled batch so a
    /// crash leaves the old suffix or the new one.
    fn replace_suffix(&self, first: u64, run: Vec<u8>) -> crate::Result<()> {
        let mut batch = sled::Batch::default();
        // A conflicting suffix goes: runs that start inside it entirely, and
        // the run that straddles its start keeps its older part.
        for row in self.log.range(key(first).to_vec()..) {
            let (k, _) = row?;
            batch.remove(k);
        }
        if let Some((k, old_run)) = self.run_holding(first - 1)? {
            let kept: Vec<Entry> = decode_run(&old_run)?
                .into_iter()
                .filter(|e| e.index < first)
                .collect();
            batch.insert(k, encode_run(&kept)?);
        }
        batch.insert(&key(first), run);
        self.log.apply_batch(batch)?;
        Ok(())
    }

    /// Saves the hard state (not yet durable).
    pub fn set_hard_state(&self, hard_state: &HardState) -> crate::Result<()> {
        let bytes = hard_state
            .write_to_bytes()
            .map_err(|e| corrupt("hard state", e))?;
        self.meta.insert(HARD_STATE_KEY, bytes)?;
        self.bounds_mut().hard_state = hard_state.clone();
        Ok(())
    }

    /// Whether `hard_state` has another term or vote than the saved one.
    pub fn term_or_vote_differs(&self, hard_state: &HardState) -> bool {
        let bounds = self.bounds();
        bounds.hard_state.term != hard_state.term || bounds.hard_state.vote != hard_state.vote
    }

    /// Moves the commit index forward in memory only: a commit index can be
    /// learned again from the leader (and a restarted server starts from at
    /// least its checkpoint), so it is written to disk only with the next
    /// term or vote change instead of costing a write per Ready.
    pub fn note_commit(&self, commit: u64) {
        let mut bounds = self.bounds_mut();
        if commit > bounds.hard_state.commit {
            bounds.hard_state.commit = commit;
        }
    }

    /// Moves the saved commit index forward (written to disk).
    pub fn set_commit(&self, commit: u64) -> crate::Result<()> {
        let mut hard_state = self.bounds().hard_state.clone();
        if commit > hard_state.commit {
            hard_state.commit = commit;
            self.set_hard_state(&hard_state)?;
        }
        Ok(())
    }

    /// Saves the conf state after the conf change at raft index `index`
    /// was applied.
    pub fn set_conf_state(&self, conf_state: &ConfState, index: u64) -> crate::Result<()> {
        let bytes = conf_state
            .write_to_bytes()
            .map_err(|e| corrupt("conf state", e))?;
        let mut batch = sled::Batch::default();
        batch.insert(CONF_STATE_KEY, bytes);
        batch.insert(CONF_INDEX_KEY, &index.to_be_bytes());
        self.meta.apply_batch(batch)?;
        let mut bounds = self.bounds_mut();
        bounds.conf_state = conf_state.clone();
        bounds.conf_index = index;
        Ok(())
    }

    /// The raft index of the newest conf change already reflected in the
    /// saved conf state. A restarted server re-applies the log after its
    /// state checkpoint, and must not hand raft-rs a conf change twice.
    pub fn conf_index(&self) -> u64 {
        self.bounds().conf_index
    }

    /// Drops log entries up to and including `index`, which the state machine
    /// has applied and made durable. The next snapshot replaces them.
    pub fn compact(&self, index: u64) -> crate::Result<()> {
        let term = raft::Storage::term(self, index)
            .map_err(|e| crate::Error::Internal(format!("compact: {e}")))?;
        let mut bounds = self.bounds_mut();
        if index <= bounds.compacted.index {
            return Ok(());
        }
        let mut compacted = SnapshotMetadata::default();
        compacted.set_index(index);
        compacted.set_term(term);
        compacted.set_conf_state(bounds.conf_state.clone());
        let bytes = compacted
            .write_to_bytes()
            .map_err(|e| corrupt("compaction point", e))?;
        // The compaction point is written before entries go, so a crash in
        // between leaves extra entries, never a hole.
        self.meta.insert(COMPACTED_KEY, bytes)?;
        // Whole runs up to `index` go; the run holding `index` and later
        // entries stays (its older entries are below the compaction point and
        // never read again).
        let mut batch = sled::Batch::default();
        let mut starts: Vec<sled::IVec> = Vec::new();
        for row in self.log.range(..=key(index).to_vec()) {
            starts.push(row?.0);
        }
        let next_starts_after =
            self.log.get(key(index + 1))?.is_some() || index >= bounds.last_index;
        if !next_starts_after {
            starts.pop();
        }
        for start in starts {
            batch.remove(start);
        }
        self.log.apply_batch(batch)?;
        bounds.compacted = compacted;
        bounds.uncache_through(index);
        Ok(())
    }

    /// Installs a snapshot: the log is replaced by the snapshot point and,
    /// when the snapshot carries state (every snapshot but the bootstrap
    /// point), that state becomes the state machine's checkpoint and its
    /// in-memory state. The checkpoint's file is written (and synced)
    /// first; then the log, the raft metadata and the pointer naming that
    /// file change in one sled transaction, so a crash leaves either the old
    /// server or the new one, never a checkpoint ahead of its log (durable
    /// at the next flush).
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> crate::Result<()> {
        let metadata = snapshot.get_metadata();
        let fresh = if snapshot.data.is_empty() {
            None
        } else {
            Some(Store::decode_snapshot(metadata.index, &snapshot.data)?)
        };
        let log_keys = self.log.iter().keys().collect::<Result<Vec<_>, _>>()?;
        let mut bounds = self.bounds_mut();
        let mut hard_state = bounds.hard_state.clone();
        hard_state.commit = hard_state.commit.max(metadata.index);
        hard_state.term = hard_state.term.max(metadata.term);
        let rows: [(&[u8], Vec<u8>); 4] = [
            (
                HARD_STATE_KEY,
                hard_state
                    .write_to_bytes()
                    .map_err(|e| corrupt("hard state", e))?,
            ),
            (
                CONF_STATE_KEY,
                metadata
                    .get_conf_state()
                    .write_to_bytes()
                    .map_err(|e| corrupt("conf state", e))?,
            ),
            (
                COMPACTED_KEY,
                metadata
                    .write_to_bytes()
                    .map_err(|e| corrupt("compaction point", e))?,
            ),
            (CONF_INDEX_KEY, metadata.index.to_be_bytes().to_vec()),
        ];
        let pointer = match &fresh {
            Some(_) => Some(
                self.store
                    .write_snapshot_file(metadata.index, &snapshot.data)?,
            ),
            None => None,
        };
        let pointer_bytes = pointer.as_ref().map(|p| p.encode());
        let installed = (&self.log, &self.meta, self.store.tree())
            .transaction(|(log, meta, state)| {
                for key in &log_keys {
                    log.remove(key)?;
                }
                for (key, value) in &rows {
                    meta.insert(*key, value.as_slice())?;
                }
                if let Some(bytes) = &pointer_bytes {
                    state.insert(crate::store::checkpoint::POINTER_KEY, bytes.as_slice())?;
                    state.remove(crate::store::CHECKPOINT_KEY)?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| crate::Error::Internal(format!("cannot install a snapshot: {e:?}")));
        if let Err(error) = installed {
            if let Some(pointer) = &pointer {
                self.store.abandon(pointer);
            }
            return Err(error);
        }
        bounds.hard_state = hard_state;
        bounds.conf_state = metadata.get_conf_state().clone();
        bounds.conf_index = metadata.index;
        bounds.compacted = metadata.clone();
        bounds.last_index = metadata.index;
        bounds.tail.clear();
        bounds.tail_bytes = 0;
        drop(bounds);
        if let (Some(state), Some(pointer)) = (fresh, pointer) {
            self.store.install(metadata.index, state, pointer);
        }
        Ok(())
    }

    /// Initializes a new control plane with `node_id` as its only voter. The
    /// membership is written as a snapshot point at index 1 (not as a log
    /// entry), so every server that joins later starts from a snapshot that
    /// carries the full membership, never from a log that lacks it.
    pub fn bootstrap(&self, node_id: u64) -> crate::Result<()> {
        if !self.is_empty() {
            return Err(crate::Error::Conflict(
                "the raft storage already holds state".into(),
            ));
        }
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = 1;
        metadata.term = 1;
        metadata.set_conf_state(ConfState::from((vec![node_id], vec![])));
        self.apply_snapshot(&snapshot)
    }

    /// Disaster recovery (`orc server recover`): makes `node_id` the only
    /// voter, and turns every membership change in the log after `applied`
    /// (the state machine's checkpoint) into an empty entry, so replaying
    /// or committing the log cannot bring a lost member back. Entries keep
    /// their index and term; nothing else in the log changes. Returns the
    /// members dropped (voters, then learners) and the original entries
    /// that were neutralized. Not yet durable: flush afterwards.
    pub fn force_single_voter(
        &self,
        node_id: u64,
        applied: u64,
    ) -> crate::Result<(Vec<u64>, Vec<u64>, Vec<Entry>)> {
        let before = self.conf_state();
        let dropped_voters: Vec<u64> = before
            .voters
            .iter()
            .copied()
            .filter(|id| *id != node_id)
            .collect();
        let dropped_learners: Vec<u64> = before
            .learners
            .iter()
            .copied()
            .filter(|id| *id != node_id)
            .collect();
        let mut neutralized = Vec::new();
        for row in self.log.iter() {
            let (k, run) = row?;
            let mut entries = decode_run(&run)?;
            let mut changed = false;
            for entry in entries.iter_mut() {
                if entry.index > applied && entry.get_entry_type() != EntryType::EntryNormal {
                    neutralized.push(entry.clone());
                    entry.set_entry_type(EntryType::EntryNormal);
                    entry.data = Default::default();
                    entry.context = Default::default();
                    changed = true;
                }
            }
            if changed {
                self.log.insert(k, encode_run(&entries)?)?;
            }
        }
        let conf_index = self.conf_index();
        self.set_conf_state(&ConfState::from((vec![node_id], vec![])), conf_index)?;
        // A vote for a lost member no longer matters; the term stays.
        let mut hard_state = self.bounds().hard_state.clone();
        hard_state.vote = 0;
        self.set_hard_state(&hard_state)?;
        Ok((dropped_voters, dropped_learners, neutralized))
    }

    /// The last index in the log and the commit index saved on disk.
    pub fn last_and_commit(&self) -> (u64, u64) {
        let bounds = self.bounds();
        (bounds.last_index, bounds.hard_state.commit)
    }

    /// The run holding `index`: the last one that starts at or before it.
    fn run_holding(&self, index: u64) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
        self.log
            .range(..=key(index).to_vec())
            .next_back()
            .transpose()
    }

    /// Also syncs sled's files in `sled_dir` (the directory sled was opened
    /// at) after every flush; see `DiskSync`.
    pub fn sync_files_in(&mut self, sled_dir: &std::path::Path) -> crate::Result<()> {
        let log_file = std::fs::OpenOptions::new()
            .read(true)
            .open(sled_dir.join("db"))
            .map_err(|e| {
                crate::Error::Internal(format!(
                    "cannot open sled's log file in {}: {e}",
                    sled_dir.display()
                ))
            })?;
        self.disk = Some(Arc::new(Mutex::new(DiskSync::new(
            log_file,
            sled_dir.join("blobs"),
        ))));
        Ok(())
    }

    /// Makes every write so far durable (one flush and fdatasync for a whole
    /// Ready). Then deletes the state checkpoint files that pointers
    /// written before it replaced.
    pub fn flush(&self) -> crate::Result<usize> {
        let replaced = self.store.take_replaced();
        let written = self.db.flush()?;
        injected_fsync_delay();
        if let Some(disk) = &self.disk {
            disk.lock()
                .unwrap_or_else(|e| e.into_inner())
                .sync()
                .map_err(|e| crate::Error::Internal(format!("cannot sync the data dir: {e}")))?;
        }
        if !replaced.is_empty() {
            crate::store::checkpoint::crash_at("flushed");
            self.store.delete_replaced(replaced);
        }
        Ok(written)
    }
}

impl raft::Storage for SledStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let bounds = self.bounds();
        Ok(RaftState::new(
            bounds.hard_state.clone(),
            bounds.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let bounds = self.bounds();
        if low <= bounds.compacted.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > bounds.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut taken = SizeLimited {
            entries: Vec::with_capacity((high - low) as usize),
            size: 0,
            max_size: max_size.into(),
        };
        if bounds.cached(low).is_some() {
            for index in low..high {
                match bounds.cached(index) {
                    Some(entry) if taken.fits(entry) => taken.entries.push(entry.clone()),
                    _ => break,
                }
            }
            return Ok(taken.entries);
        }
        let first_run = self
            .run_holding(low)
            .map_err(storage_error)?
            .map(|(k, _)| k.to_vec())
            .unwrap_or_else(|| key(low).to_vec());
        'runs: for row in self.log.range(first_run..key(high).to_vec()) {
            let (_, run) = row.map_err(storage_error)?;
            for entry in decode_run(&run).map_err(storage_error)? {
                if entry.index < low {
                    continue;
                }
                if entry.index >= high || !taken.fits(&entry) {
                    break 'runs;
                }
                taken.entries.push(entry);
            }
        }
        let entries = taken.entries;
        if entries.is_empty() && low < high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let bounds = self.bounds();
        if index == bounds.compacted.index {
            return Ok(bounds.compacted.term);
        }
        if index < bounds.compacted.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > bounds.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(entry) = bounds.cached(index) {
            return Ok(entry.term);
        }
        let (_, run) = self
            .run_holding(index)
            .map_err(storage_error)?
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        decode_run(&run)
            .map_err(storage_error)?
            .into_iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.bounds().compacted.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.bounds().last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let (applied_index, data) = self.store.snapshot().map_err(storage_error)?;
        if applied_index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let term = self.term(applied_index)?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let metadata = snapshot.mut_metadata();
        metadata.index = applied_index;
        metadata.term = term;
        metadata.set_conf_state(self.bounds().conf_state.clone());
        Ok(snapshot)
    }
}

/// A slow disk for tests (`tests/slow_disk.rs`): when the environment names
/// a file in `ORC_TEST_FSYNC_DELAY_FILE` and that file holds `MS` or
/// `MS ONE_IN`, a flush first sleeps for MS milliseconds (every flush, or
/// one in ONE_IN at random), the way a cheap SD card stalls some fsyncs.
/// Unset in production: one look at the environment, once.
fn injected_fsync_delay() {
    static FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let Some(file) = FILE.get_or_init(|| {
        std::env::var_os("ORC_TEST_FSYNC_DELAY_FILE").map(std::path::PathBuf::from)
    }) else {
        return;
    };
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut numbers = text
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap_or(0));
    let delay_ms = numbers.next().unwrap_or(0);
    let one_in = numbers.next().unwrap_or(1).max(1);
    if delay_ms > 0 && rand::random::<u64>().is_multiple_of(one_in) {
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        let mut entry = Entry::default();
        entry.set_index(index);
        entry.set_term(term);
        entry.set_data(format!("e{index}").into_bytes().into());
        entry
    }

    fn open(dir: &std::path::Path) -> (sled::Db, SledStorage) {
        // sled's background threads may hold the previous handle's file lock
        // for a moment after it was dropped: wait for it, with a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => break db,
                Err(error) if std::time::Instant::now() < deadline => {
                    let _ = error;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(error) => panic!("cannot reopen the sled db: {error}"),
            }
        };
        let store = Arc::new(Store::open(&db, &dir.join("state")).unwrap());
        let storage = SledStorage::open(&db, store).unwrap();
        (db, storage)
    }

    #[test]
    fn a_flush_syncs_the_log_file_and_every_new_blob_file() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut storage) = open(dir.path());
        storage.sync_files_in(dir.path()).unwrap();
        storage.append(&[entry(1, 1)]).unwrap();
        storage.flush().unwrap();
        // A page far bigger than a sled segment allows goes to a blob file.
        db.insert(b"big", vec![7u8; 2 * 1024 * 1024]).unwrap();
        storage.flush().unwrap();
        let synced = storage
            .disk
            .as_ref()
            .unwrap()
            .lock()
            .unwrap()
            .synced_blobs
            .len();
        let on_disk = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert!(on_disk > 0, "sled should have written a blob file");
        assert_eq!(synced, on_disk);
    }

    #[test]
    fn a_blob_created_after_quiet_flushes_is_still_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut storage) = open(dir.path());
        storage.sync_files_in(dir.path()).unwrap();
        for index in 1..=3 {
            storage.append(&[entry(index, 1)]).unwrap();
            storage.flush().unwrap();
        }
        // A file that appears between two flushes (here made by hand) must
        // be found by the next one, though nothing else changed.
        std::fs::write(dir.path().join("blobs").join("424242"), b"blob").unwrap();
        storage.append(&[entry(4, 1)]).unwrap();
        storage.flush().unwrap();
        let disk = storage.disk.as_ref().unwrap().lock().unwrap();
        assert!(
            disk.synced_blobs.contains(std::ffi::OsStr::new("424242")),
            "the new blob file was not synced: {:?}",
            disk.synced_blobs
        );
    }

    #[test]
    fn empty_storage_follows_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, storage) = open(dir.path());
        assert!(storage.is_empty());
        assert_eq!(storage.first_index().unwrap(), 1);
        assert_eq!(storage.last_index().unwrap(), 0);
        assert_eq!(storage.term(0).unwrap(), 0);
        assert!(matches!(
            storage.term(1),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
        assert!(!storage.initial_state().unwrap().initialized());
    }

    #[test]
    fn append_truncates_conflicts_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, storage) = open(dir.path());
        storage
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        storage.append(&[entry(2, 2)]).unwrap();
        assert_eq!(storage.last_index().unwrap(), 2);
        assert_eq!(storage.term(2).unwrap(), 2);
        let all = storage
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            all.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 2)]
        );
        assert!(matches!(
            storage.entries(1, 4, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
        // A size limit still returns at least one entry.
        let limited = storage
            .entries(1, 3, Some(1), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(limited.len(), 1);
    }

    #[test]
    fn runs_are_truncated_compacted_and_read_back_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_db, storage) = open(dir.path());
            for run in [1..=3, 4..=6, 7..=9] {
                storage
                    .append(&run.map(|i| entry(i, 1)).collect::<Vec<_>>())
                    .unwrap();
            }
            // A conflict inside the middle run keeps its first entry and
            // drops the last run.
            storage.append(&[entry(5, 2), entry(6, 2)]).unwrap();
            assert_eq!(storage.last_index().unwrap(), 6);
            assert_eq!(storage.log.len(), 3);
            storage.append(&[entry(7, 3), entry(8, 3)]).unwrap();
            // Compacting to a run boundary removes whole runs only.
            storage.compact(4).unwrap();
            assert_eq!(storage.log.len(), 2);
            storage.compact(6).unwrap();
            assert_eq!(storage.log.len(), 1);
            storage.flush().unwrap();
        }
        let (_db, storage) = open(dir.path());
        assert_eq!(storage.first_index().unwrap(), 7);
        assert_eq!(storage.last_index().unwrap(), 8);
        assert_eq!(storage.term(6).unwrap(), 2);
        assert_eq!(storage.term(8).unwrap(), 3);
        assert_eq!(
            storage
                .entries(7, 9, None, GetEntriesContext::empty(false))
                .unwrap()
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            vec![(7, 3), (8, 3)]
        );
        // An undecodable run is reported, not a panic.
        storage.log.insert(key(9), &[0, 0, 0, 9, 1][..]).unwrap();
        assert!(decode_run(&storage.log.get(key(9)).unwrap().unwrap()).is_err());
    }

    #[test]
    fn the_memory_tail_agrees_with_sled() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, storage) = open(dir.path());
        let total = TAIL_ENTRIES as u64 + 100;
        storage
            .append(&(1..=total).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        // A conflicting suffix replaces cached entries.
        storage
            .append(
                &(total - 10..=total - 5)
                    .map(|i| entry(i, 2))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        assert_eq!(storage.last_index().unwrap(), total - 5);
        assert_eq!(storage.term(total - 10).unwrap(), 2);
        assert_eq!(storage.term(total - 11).unwrap(), 1);
        // Entries older than the tail come from sled, newer ones from memory;
        // a range across both, and the same range after reopening (nothing
        // cached), read the same.
        let read = |storage: &SledStorage| {
            storage
                .entries(1, total - 4, None, GetEntriesContext::empty(false))
                .unwrap()
                .iter()
                .map(|e| (e.index, e.term, e.data.to_vec()))
                .collect::<Vec<_>>()
        };
        let before = read(&storage);
        assert_eq!(before.len() as u64, total - 5);
        assert_eq!(before[0], (1, 1, b"e1".to_vec()));
        assert_eq!(before.last().unwrap().1, 2);
        let tail_only = storage
            .entries(total - 20, total - 4, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            tail_only.iter().map(|e| e.index).collect::<Vec<_>>(),
            (total - 20..total - 4).collect::<Vec<_>>()
        );
        storage.compact(total - 8).unwrap();
        assert!(matches!(
            storage.term(total - 9),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(storage.term(total - 7).unwrap(), 2);
        storage.flush().unwrap();
        drop(storage);
        drop(_db);
        let (_db, reopened) = open(dir.path());
        assert_eq!(reopened.term(total - 6).unwrap(), 2);
        assert_eq!(
            reopened
                .entries(total - 7, total - 4, None, GetEntriesContext::empty(false))
                .unwrap()
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            vec![(total - 7, 2), (total - 6, 2), (total - 5, 2)]
        );
    }

    #[test]
    fn compaction_answers_compacted_and_keeps_the_boundary_term() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, storage) = open(dir.path());
        storage
            .append(&(1..=10).map(|i| entry(i, 1 + i / 5)).collect::<Vec<_>>())
            .unwrap();
        storage.compact(6).unwrap();
        assert_eq!(storage.first_index().unwrap(), 7);
        assert_eq!(storage.last_index().unwrap(), 10);
        assert_eq!(storage.term(6).unwrap(), 2);
        assert!(matches!(
            storage.term(5),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            storage.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(
            storage
                .entries(7, 11, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_db, storage) = open(dir.path());
            storage
                .append(&[entry(1, 1), entry(2, 1), entry(3, 2)])
                .unwrap();
            let mut hard_state = HardState::default();
            hard_state.set_term(2);
            hard_state.set_vote(7);
            hard_state.set_commit(3);
            storage.set_hard_state(&hard_state).unwrap();
            storage
                .set_conf_state(&ConfState::from((vec![7, 8], vec![9])), 2)
                .unwrap();
            storage.compact(1).unwrap();
            storage.flush().unwrap();
        }
        let (_db, storage) = open(dir.path());
        let state = storage.initial_state().unwrap();
        assert_eq!(
            (
                state.hard_state.term,
                state.hard_state.vote,
                state.hard_state.commit
            ),
            (2, 7, 3)
        );
        assert_eq!(state.conf_state.voters, vec![7, 8]);
        assert_eq!(state.conf_state.learners, vec![9]);
        assert_eq!(storage.conf_index(), 2);
        assert_eq!(storage.first_index().unwrap(), 2);
        assert_eq!(storage.last_index().unwrap(), 3);
        assert_eq!(storage.term(3).unwrap(), 2);
    }

    #[test]
    fn snapshot_reflects_the_state_machine_and_installs() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, storage) = open(dir.path());
        storage
            .append(&[entry(1, 1), entry(2, 1), entry(3, 3)])
            .unwrap();
        storage
            .set_conf_state(&ConfState::from((vec![1], vec![])), 1)
            .unwrap();
        storage.store.advance_applied(3);
        let snapshot = storage.snapshot(2, 5).unwrap();
        assert_eq!(snapshot.get_metadata().index, 3);
        assert_eq!(snapshot.get_metadata().term, 3);
        assert_eq!(snapshot.get_metadata().get_conf_state().voters, vec![1]);
        assert!(matches!(
            storage.snapshot(4, 5),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));

        let other_dir = tempfile::tempdir().unwrap();
        let (_other_db, other) = open(other_dir.path());
        other.append(&[entry(1, 1)]).unwrap();
        other.apply_snapshot(&snapshot).unwrap();
        assert_eq!(other.first_index().unwrap(), 4);
        assert_eq!(other.last_index().unwrap(), 3);
        assert_eq!(other.term(3).unwrap(), 3);
        assert_eq!(other.initial_state().unwrap().hard_state.commit, 3);
        assert_eq!(other.conf_state().voters, vec![1]);
        assert_eq!(other.conf_index(), 3);
        // The state machine came with it, and its checkpoint is durable
        // together with the raft metadata.
        assert_eq!(other.store.applied_index(), 3);
        assert_eq!(other.store.checkpoint_index(), 3);
        other.flush().unwrap();
        drop(other);
        drop(_other_db);
        let (_db, reopened) = open(other_dir.path());
        assert_eq!(reopened.store.applied_index(), 3);
        assert_eq!(reopened.first_index().unwrap(), 4);
        // A snapshot whose data is not the state of its index is refused
        // and changes nothing.
        let mut bad = snapshot.clone();
        bad.mut_metadata().index = 9;
        assert!(reopened.apply_snapshot(&bad).is_err());
        assert_eq!(reopened.first_index().unwrap(), 4);
    }
}
