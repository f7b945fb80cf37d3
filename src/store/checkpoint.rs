//! The state checkpoint's files: the whole state as JSON in a file of its
//! own under the data dir (`DATA_DIR/state/checkpoint-SEQUENCE.json`),
//! named in sled by a small `Pointer`.
//!
//! A checkpoint is written by a streaming serializer into a temporary file,
//! which is fsynced, renamed to its final name, and its directory fsynced;
//! only then is the pointer written to sled (with the raft metadata when a
//! snapshot is installed), durable at the next flush. A crash at any point
//! leaves the previous pointer naming the previous file, which is deleted
//! only after a flush made the new pointer durable (`Store::flushed`). A
//! half-written or unnamed file is never read: at start-up temporary files
//! are removed and unnamed ones are deleted after the first flush.
//!
//! Reading streams the file into the state, so neither writing nor loading
//! holds the checkpoint's bytes in memory beside the state (one sled value
//! did: sled kept a copy of it in its page cache, and writing and loading
//! each built the whole text in a buffer). Pure file handling: no sled, no
//! Raft.

use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The sled key (in tree `state`) of the pointer to the newest checkpoint.
pub(crate) const POINTER_KEY: &[u8] = b"checkpoint_file";

/// The file name's prefix and suffix around the sequence number.
const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".json";
/// A file being written; never read, removed at start-up.
const TEMPORARY: &str = ".tmp";

/// Buffer size for writing and reading a checkpoint file.
const BUFFER: usize = 256 * 1024;

/// Which file holds the newest checkpoint, as named in sled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The file's sequence number (its name is `checkpoint-SEQUENCE.json`).
    pub sequence: u64,
    /// The raft index the checkpoint reflects.
    pub applied_index: u64,
    /// The file's length in bytes.
    pub bytes: u64,
}

impl Pointer {
    /// The file's name.
    pub fn file_name(&self) -> String {
        file_name(self.sequence)
    }

    /// The pointer as stored in sled.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A pointer read from sled.
    pub fn decode(bytes: &[u8]) -> Result<Pointer> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::Internal(format!(
                "the data dir's pointer to its state checkpoint is corrupt ({e}): restore the data dir from a backup, or remove this server and join it again with an empty data dir"
            ))
        })
    }
}

fn file_name(sequence: u64) -> String {
    format!("{PREFIX}{sequence:020}{SUFFIX}")
}

/// The sequence number of a checkpoint file's name (also of its temporary
/// file's), or `None` for any other name.
fn sequence_of(name: &str) -> Option<u64> {
    let name = name.strip_suffix(TEMPORARY).unwrap_or(name);
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> Error {
    Error::Internal(format!(
        "cannot {what} the state checkpoint {}: {error}; check the disk (space, permissions) and restart this server",
        path.display()
    ))
}

/// Creates the checkpoint directory (owner only), if missing.
fn create_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(error) => Err(io_error("create the directory of", dir, error)),
    }
}

/// fsyncs a directory, so a rename (or a new file) in it survives a power cut.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync the directory of", dir, e))
}

/// Writes checkpoint number `sequence` into `dir` with `write` (a streaming
/// serializer), durably: a temporary file, fsynced, renamed into place,
/// the directory fsynced. Returns the file's length. Nothing names the file
/// yet: the caller writes the pointer.
pub(crate) fn write(
    dir: &Path,
    sequence: u64,
    serialize: impl FnOnce(&mut dyn std::io::Write) -> Result<()>,
) -> Result<u64> {
    create_dir(dir)?;
    let path = dir.join(file_name(sequence));
    let temporary = dir.join(format!("{}{TEMPORARY}", file_name(sequence)));
    let file = std::fs::File::create(&temporary).map_err(|e| io_error("create", &temporary, e))?;
    let mut writer = BufWriter::with_capacity(BUFFER, file);
    let written = serialize(&mut writer).and_then(|()| {
        let file = writer
            .into_inner()
            .map_err(|e| io_error("write", &temporary, e.into_error()))?;
        if crash_planned("write") {
            // Torn: half of what was written reached the disk.
            let _ = file.set_len(file.metadata().map_or(0, |m| m.len()) / 2);
            crash();
        }
        file.sync_all()
            .map_err(|e| io_error("sync", &temporary, e))?;
        file.metadata()
            .map(|m| m.len())
            .map_err(|e| io_error("read the size of", &temporary, e))
    });
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(error) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
    };
    std::fs::rename(&temporary, &path).map_err(|e| io_error("rename", &temporary, e))?;
    sync_dir(dir)?;
    crash_at("rename");
    Ok(bytes)
}

/// A crash for tests (`tests/checkpoint.rs`): when the environment
/// names a file in `ORC_TEST_CHECKPOINT_CRASH_FILE` and that file holds
/// `point`, the process kills itself (SIGKILL, as `kill -9`) there:
/// `write` (its file half-written), `rename` (the file in place, sled not
/// naming it yet), `pointer` (named in sled, not flushed), `flushed` (the
/// pointer durable, the replaced file not yet deleted). Unset in
/// production: one look at the environment, once.
pub(crate) fn crash_at(point: &str) {
    if crash_planned(point) {
        crash();
    }
}

fn crash_planned(point: &str) -> bool {
    static FILE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let Some(file) =
        FILE.get_or_init(|| std::env::var_os("ORC_TEST_CHECKPOINT_CRASH_FILE").map(PathBuf::from))
    else {
        return false;
    };
    std::fs::read_to_string(file).is_ok_and(|planned| planned.trim() == point)
}

fn crash() {
    tracing::warn!("crashing on purpose in a checkpoint (ORC_TEST_CHECKPOINT_CRASH_FILE)");
    // SAFETY: kill(2) of this process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Writes `bytes` (a snapshot's data, already the checkpoint's JSON) as
/// checkpoint number `sequence`.
pub(crate) fn write_bytes(dir: &Path, sequence: u64, bytes: &[u8]) -> Result<u64> {
    write(dir, sequence, |writer| {
        writer
            .write_all(bytes)
            .map_err(|e| io_error("write", &dir.join(file_name(sequence)), e))
    })
}

/// Reads the checkpoint `pointer` names, streaming it into `T`.
pub(crate) fn read<T: serde::de::DeserializeOwned>(dir: &Path, pointer: &Pointer) -> Result<T> {
    let path = dir.join(pointer.file_name());
    let file = std::fs::File::open(&path).map_err(|e| {
        Error::Internal(format!(
            "cannot open the data dir's state checkpoint {} ({e}): restore the data dir from a backup, or remove this server and join it again with an empty data dir",
            path.display()
        ))
    })?;
    let length = file
        .metadata()
        .map_err(|e| io_error("read the size of", &path, e))?
        .len();
    if length != pointer.bytes {
        return Err(Error::Internal(format!(
            "the data dir's state checkpoint {} holds {length} bytes where {} were written: restore the data dir from a backup, or remove this server and join it again with an empty data dir",
            path.display(),
            pointer.bytes
        )));
    }
    serde_json::from_reader(BufReader::with_capacity(BUFFER, file)).map_err(|e| {
        Error::Internal(format!(
            "the data dir's state checkpoint {} is undecodable ({e}): restore the data dir from a backup, or remove this server and join it again with an empty data dir",
            path.display()
        ))
    })
}

/// What the checkpoint directory holds besides the named file: temporary
/// files (half-written) and checkpoint files nothing names (replaced, or
/// written by a checkpoint whose pointer a crash lost), and the highest
/// sequence number in use.
pub(crate) struct Leftovers {
    pub temporary: Vec<PathBuf>,
    pub unnamed: Vec<PathBuf>,
    pub highest_sequence: u64,
}

/// Lists `dir` (missing: nothing) for `Leftovers`, keeping `named`.
pub(crate) fn leftovers(dir: &Path, named: Option<&Pointer>) -> Result<Leftovers> {
    let mut found = Leftovers {
        temporary: Vec::new(),
        unnamed: Vec::new(),
        highest_sequence: named.map_or(0, |p| p.sequence),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(error) => return Err(io_error("list the directory of", dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list the directory of", dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(sequence) = sequence_of(&name) else {
            continue;
        };
        found.highest_sequence = found.highest_sequence.max(sequence);
        if name.ends_with(TEMPORARY) {
            found.temporary.push(entry.path());
        } else if named.is_none_or(|p| p.sequence != sequence) {
            found.unnamed.push(entry.path());
        }
    }
    Ok(found)
}

/// The newest checkpoint's file in the data dir whose sled db is `db` and
/// whose checkpoint directory is `dir`, if it has one (for tools and the
/// state-size bench; an older data dir keeps its checkpoint inside sled).
pub fn newest_file(db: &sled::Db, dir: &Path) -> Result<Option<PathBuf>> {
    let tree = db.open_tree("state")?;
    Ok(match tree.get(POINTER_KEY)? {
        Some(bytes) => Some(dir.join(Pointer::decode(&bytes)?.file_name())),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back_and_is_named_by_its_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = write(dir.path(), 7, |w| {
            serde_json::to_writer(w, &serde_json::json!({"a": [1, 2, 3]}))
                .map_err(|e| Error::Internal(e.to_string()))
        })
        .unwrap();
        let pointer = Pointer {
            sequence: 7,
            applied_index: 3,
            bytes,
        };
        assert!(dir
            .path()
            .join("checkpoint-00000000000000000007.json")
            .exists());
        let back: serde_json::Value = read(dir.path(), &pointer).unwrap();
        assert_eq!(back, serde_json::json!({"a": [1, 2, 3]}));
        assert_eq!(Pointer::decode(&pointer.encode()).unwrap(), pointer);
        // A file shorter or longer than its pointer says is refused.
        let wrong = Pointer {
            bytes: bytes + 1,
            ..pointer
        };
        let error = read::<serde_json::Value>(dir.path(), &wrong)
            .unwrap_err()
            .to_string();
        assert!(error.contains("bytes where"), "{error}");
    }

    #[test]
    fn a_failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = write(dir.path(), 1, |w| {
            w.write_all(b"{\"half\":").unwrap();
            Err(Error::Internal("the serializer failed".into()))
        })
        .unwrap_err();
        assert!(error.to_string().contains("the serializer failed"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn leftovers_are_temporary_and_unnamed_files_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "checkpoint-00000000000000000003.json",
            "checkpoint-00000000000000000004.json",
            "checkpoint-00000000000000000009.json.tmp",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let named = Pointer {
            sequence: 4,
            applied_index: 1,
            bytes: 1,
        };
        let found = leftovers(dir.path(), Some(&named)).unwrap();
        assert_eq!(found.highest_sequence, 9);
        assert_eq!(
            found.temporary,
            vec![dir.path().join("checkpoint-00000000000000000009.json.tmp")]
        );
        assert_eq!(
            found.unnamed,
            vec![dir.path().join("checkpoint-00000000000000000003.json")]
        );
        let none = leftovers(&dir.path().join("missing"), None).unwrap();
        assert_eq!(none.highest_sequence, 0);
        assert!(none.unnamed.is_empty() && none.temporary.is_empty());
    }
}
