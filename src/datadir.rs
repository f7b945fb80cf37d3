//! A server's data dir: the marker file `orc-server.json` (which control
//! plane and which member this dir belongs to), the sled database under
//! `db/` and the state checkpoint's files under `state/`. Opening refuses
//! foreign and corrupt dirs with a clear error and never modifies them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The marker file's name.
pub const MARKER: &str = "orc-server.json";
/// The data dir format this build writes.
pub const FORMAT: u32 = 1;

/// What the marker file records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// The data dir format version.
    pub format: u32,
    /// This member's raft id.
    pub node_id: u64,
    /// The control plane this member belongs to.
    pub control_plane_id: String,
}

/// What a data dir holds.
#[derive(Debug)]
pub enum DataDir {
    /// Missing or empty: a new member can be created here.
    Fresh(PathBuf),
    /// Holds a member.
    Existing(PathBuf, Marker),
}

impl DataDir {
    /// Inspects `path` without changing it.
    pub fn inspect(path: &Path) -> Result<DataDir> {
        let display = path.display();
        if !path.exists() {
            return Ok(DataDir::Fresh(path.to_path_buf()));
        }
        if !path.is_dir() {
            return Err(Error::InvalidInput(format!(
                "data dir {display} is a file, not a directory"
            )));
        }
        let marker_path = path.join(MARKER);
        if !marker_path.exists() {
            let entries = std::fs::read_dir(path)
                .map_err(|e| Error::InvalidInput(format!("cannot read data dir {display}: {e}")))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect::<Vec<_>>();
            if entries.is_empty() {
                return Ok(DataDir::Fresh(path.to_path_buf()));
            }
            return Err(Error::InvalidInput(format!(
                "{display} is not an orc data dir (it holds {} but no {MARKER}): pick an empty or new directory for --data-dir",
                entries.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let bytes = std::fs::read(&marker_path).map_err(|e| {
            Error::InvalidInput(format!("cannot read {}: {e}", marker_path.display()))
        })?;
        let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidInput(format!(
                "{} is corrupt ({e}): the data dir cannot be used; restore it from a backup or start this server with an empty data dir and --join",
                marker_path.display()
            ))
        })?;
        if marker.format != FORMAT {
            return Err(Error::InvalidInput(format!(
                "data dir {display} has format {} but this orc reads format {FORMAT}: use the orc version that wrote it",
                marker.format
            )));
        }
        if marker.node_id == 0 || marker.control_plane_id.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{} is corrupt (no node id or control plane id): start this server with an empty data dir and --join",
                marker_path.display()
            )));
        }
        if !path.join("db").is_dir() {
            return Err(Error::InvalidInput(format!(
                "data dir {display} has a marker but no db/ directory: it is damaged; start this server with an empty data dir and --join"
            )));
        }
        Ok(DataDir::Existing(path.to_path_buf(), marker))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        match self {
            DataDir::Fresh(path) | DataDir::Existing(path, _) => path,
        }
    }
}

/// Writes the marker atomically (temp file, fsync, rename).
pub fn write_marker(path: &Path, marker: &Marker) -> Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(path).map_err(|e| {
        Error::InvalidInput(format!("cannot create data dir {}: {e}", path.display()))
    })?;
    let temporary = path.join(format!("{MARKER}.tmp"));
    let mut file = std::fs::File::create(&temporary)
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", temporary.display())))?;
    file.write_all(&serde_json::to_vec_pretty(marker).map_err(|e| Error::Internal(e.to_string()))?)
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", temporary.display())))?;
    std::fs::rename(&temporary, path.join(MARKER))
        .map_err(|e| Error::Internal(format!("cannot write the data dir marker: {e}")))?;
    Ok(())
}

/// Makes the data dir readable by its owner only (0700): the state, the
/// raft log, the blobs and the keys are nobody else's business.
pub fn restrict(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot restrict data dir {} to its owner: {e}; run orc as the data dir's owner",
            path.display()
        ))
    })
}

/// Where a server's state checkpoint files live (`store::checkpoint`).
pub fn checkpoint_dir(path: &Path) -> PathBuf {
    path.join("state")
}

/// Opens the sled database with settings sized for a 1 GiB Pi: a small
/// cache and no background flusher (orc flushes before acknowledging).
pub fn open_db(path: &Path, cache_mib: u64) -> Result<sled::Db> {
    std::fs::create_dir_all(path).map_err(|e| {
        Error::InvalidInput(format!("cannot create data dir {}: {e}", path.display()))
    })?;
    restrict(path)?;
    sled::Config::new()
        .path(path.join("db"))
        .cache_capacity(cache_mib * 1024 * 1024)
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|e| {
            Error::InvalidInput(format!(
                "cannot open the database in {}: {e}; if another orc uses this data dir, stop it first",
                path.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opened_data_dir_is_its_owners_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _db = open_db(&path, 1).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn fresh_foreign_and_corrupt_dirs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            DataDir::inspect(&dir.path().join("new")).unwrap(),
            DataDir::Fresh(_)
        ));
        assert!(matches!(
            DataDir::inspect(dir.path()).unwrap(),
            DataDir::Fresh(_)
        ));
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let error = DataDir::inspect(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("is not an orc data dir") && error.contains("notes.txt"),
            "{error}"
        );

        let corrupt = tempfile::tempdir().unwrap();
        std::fs::write(corrupt.path().join(MARKER), "{not json").unwrap();
        let error = DataDir::inspect(corrupt.path()).unwrap_err().to_string();
        assert!(error.contains("is corrupt"), "{error}");
        assert_eq!(
            std::fs::read_to_string(corrupt.path().join(MARKER)).unwrap(),
            "{not json"
        );
    }

    #[test]
    fn marker_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let marker = Marker {
            format: FORMAT,
            node_id: 42,
            control_plane_id: "cp".into(),
        };
        write_marker(dir.path(), &marker).unwrap();
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        match DataDir::inspect(dir.path()).unwrap() {
            DataDir::Existing(_, read) => assert_eq!(read, marker),
            other => panic!("expected an existing dir, got {other:?}"),
        }
    }
}
