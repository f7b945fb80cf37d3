//! The image registry's content-addressed blob files under the server's
//! data dir (`registry/blobs/sha256/ab/abcd…`), and the upload files they
//! are written through (`registry/uploads/ID`).
//!
//! A blob becomes visible only whole and verified: an upload is appended to
//! its own file while its sha256 is computed on the way; finishing compares
//! the digest, fsyncs the file, renames it into place and fsyncs the
//! directory. A crash at any point leaves at most an upload file, and the
//! upload directory is emptied when the store opens. Bytes stream in
//! bounded buffers, whatever the blob's size. Which repositories link a
//! blob is replicated state (`store::registry`), not this module's concern.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};

use crate::oci::Digest;
use crate::{Error, Result};

/// How long an upload may sit without a request before it is dropped.
pub const UPLOAD_IDLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The blob files of one server.
pub struct BlobStore {
    root: PathBuf,
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Upload>>>>,
}

/// An upload in progress: its file, the hash of what was written, and
/// how much was written.
pub struct Upload {
    /// The upload's id (in its URL).
    pub id: String,
    /// The repository it was started in.
    pub repository: String,
    /// Bytes written so far.
    pub offset: u64,
    /// `None` while a write is in flight on a blocking thread, or after the
    /// upload finished or was cancelled.
    file: Option<(File, Sha256)>,
    path: PathBuf,
    /// When a request last touched it.
    pub touched: Instant,
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> Error {
    Error::Unavailable(format!(
        "the registry cannot {what} {} ({error}): check the data dir's disk",
        path.display()
    ))
}

impl BlobStore {
    /// Opens (creating) the blob store under `data_dir/registry`, removing
    /// uploads a previous process left unfinished.
    pub fn open(data_dir: &Path) -> Result<BlobStore> {
        let root = data_dir.join("registry");
        let uploads = root.join("uploads");
        if uploads.exists() {
            fs::remove_dir_all(&uploads).map_err(|e| io_error("clear", &uploads, e))?;
        }
        for dir in [root.join("blobs").join("sha256"), uploads] {
            fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        }
        Ok(BlobStore {
            root,
            uploads: Mutex::new(HashMap::new()),
        })
    }

    /// Where a blob's file is (whether it exists or not).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join("sha256")
            .join(&hex[..2])
            .join(hex)
    }

    /// Every blob stored here, with how long ago its file was last written.
    pub fn stored(&self) -> Vec<(Digest, std::time::Duration)> {
        let mut stored = Vec::new();
        let root = self.root.join("blobs").join("sha256");
        for prefix in fs::read_dir(&root).into_iter().flatten().flatten() {
            for file in fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
                let name = file.file_name();
                let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy()))
                else {
                    continue;
                };
                let age = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|modified| modified.elapsed().ok())
                    .unwrap_or_default();
                stored.push((digest, age));
            }
        }
        stored
    }

    /// The size of a stored blob, or `None` when it is not stored here.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    /// Reads a small blob whole (a config), refusing one over `limit`.
    pub fn read_small(&self, digest: &Digest, limit: u64) -> Option<Vec<u8>> {
        let path = self.blob_path(digest);
        if fs::metadata(&path).ok()?.len() > limit {
            return None;
        }
        fs::read(path).ok()
    }

    /// Stores bytes held in memory (a small blob) under their digest.
    pub fn put_small(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let upload = self.start("")?;
        let mut upload = upload.try_lock().expect("a new upload is not shared");
        let (mut file, _) = upload.file.take().expect("a new upload has its file");
        file.write_all(bytes)
            .map_err(|e| io_error("write", &upload.path, e))?;
        commit(&upload.path, file, &self.blob_path(&digest))?;
        drop(upload);
        Ok(digest)
    }

    /// Starts an upload for `repository`.
    pub fn start(&self, repository: &str) -> Result<Arc<tokio::sync::Mutex<Upload>>> {
        let id = crate::vocab::ids::request_id();
        let path = self.root.join("uploads").join(&id);
        let file = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        let upload = Arc::new(tokio::sync::Mutex::new(Upload {
            id: id.clone(),
            repository: repository.to_string(),
            offset: 0,
            file: Some((file, Sha256::new())),
            path,
            touched: Instant::now(),
        }));
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        uploads.retain(|_, u| {
            u.try_lock()
                .map(|u| u.touched.elapsed() < UPLOAD_IDLE_LIMIT)
                .unwrap_or(true)
        });
        uploads.insert(id, upload.clone());
        Ok(upload)
    }

    /// An upload in progress by id.
    pub fn upload(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Upload>>> {
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Forgets an upload and removes its file (cancelled, failed or done).
    pub fn discard(&self, upload: &mut Upload) {
        upload.file = None;
        let _ = fs::remove_file(&upload.path);
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        uploads.remove(&upload.id);
    }

    /// Appends `chunk` to the upload on a blocking thread (hashing it on the
    /// way). On an error the upload keeps what was written before.
    pub async fn append(&self, upload: &mut Upload, chunk: bytes::Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let (mut file, mut hasher) = upload.file.take().ok_or_else(|| {
            Error::Conflict("the upload is finished or cancelled: start a new one".into())
        })?;
        let path = upload.path.clone();
        let offset = upload.offset;
        let (file, hasher, written) = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&chunk);
            match result {
                Ok(()) => {
                    hasher.update(&chunk);
                    (file, hasher, Ok(chunk.len() as u64))
                }
                Err(e) => {
                    // Cut back to what was hashed, so offset and hash agree.
                    let _ = file.set_len(offset);
                    let _ = file.seek(SeekFrom::Start(offset));
                    (file, hasher, Err(io_error("write", &path, e)))
                }
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("a blob write thread failed: {e}")))?;
        upload.file = Some((file, hasher));
        upload.touched = Instant::now();
        upload.offset += written?;
        Ok(())
    }

    /// Finishes an upload: the digest of what was written must be `expected`.
    /// The blob is then durable and visible under its digest; the upload is
    /// gone either way.
    pub async fn finish(&self, upload: &mut Upload, expected: &Digest) -> Result<FinishOutcome> {
        let Some((file, hasher)) = upload.file.take() else {
            return Err(Error::Conflict(
                "the upload is finished or cancelled: start a new one".into(),
            ));
        };
        let actual = Digest::from_sha256(hasher.finalize().as_slice());
        if &actual != expected {
            self.discard(upload);
            return Ok(FinishOutcome::Mismatch(actual));
        }
        let path = upload.path.clone();
        let target = self.blob_path(expected);
        let size = upload.offset;
        let committed = tokio::task::spawn_blocking(move || commit(&path, file, &target))
            .await
            .map_err(|e| Error::Internal(format!("a blob commit thread failed: {e}")))?;
        self.discard(upload);
        committed?;
        Ok(FinishOutcome::Stored(size))
    }
}

impl BlobStore {
    /// Stores a blob that arrives whole as `pieces` (a copy from another
    /// server, a pull-through fetch): written to an upload of its own for
    /// `repository` and verified against `digest` as [`BlobStore::finish`]
    /// does. The first error among the pieces ends the transfer and
    /// discards the upload.
    pub async fn store_stream(
        &self,
        repository: &str,
        digest: &Digest,
        mut pieces: impl Stream<Item = Result<Bytes>> + Unpin,
    ) -> Result<FinishOutcome> {
        let upload = self.start(repository)?;
        let mut upload = upload.lock().await;
        let copied = async {
            while let Some(piece) = pieces.next().await {
                self.append(&mut upload, piece?).await?;
            }
            Ok::<(), Error>(())
        }
        .await;
        if let Err(error) = copied {
            self.discard(&mut upload);
            return Err(error);
        }
        self.finish(&mut upload, digest).await
    }
}

/// fsync, rename into place, fsync the directory.
fn commit(temp: &Path, file: File, target: &Path) -> Result<()> {
    {
        if target.exists() {
            let _ = fs::remove_file(temp);
            return Ok(());
        }
        file.sync_all().map_err(|e| io_error("sync", temp, e))?;
        drop(file);
        let dir = target.parent().expect("a blob path has a directory");
        fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        fs::rename(temp, target).map_err(|e| io_error("store", target, e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("sync", dir, e))?;
        Ok(())
    }
}

impl BlobStore {
    /// Removes a blob's file (garbage collection).
    pub fn remove(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }
}

/// How finishing an upload went.
#[derive(Debug, PartialEq, Eq)]
pub enum FinishOutcome {
    /// Stored, with its size.
    Stored(u64),
    /// The bytes had this other digest; nothing was stored.
    Mismatch(Digest),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_is_visible_only_when_whole_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let good = Digest::of(b"hello world");
        let upload = store.start("a").unwrap();
        let mut upload = upload.lock().await;
        store
            .append(&mut upload, bytes::Bytes::from_static(b"hello "))
            .await
            .unwrap();
        assert_eq!(store.size(&good), None);
        store
            .append(&mut upload, bytes::Bytes::from_static(b"world"))
            .await
            .unwrap();
        assert_eq!(upload.offset, 11);
        assert_eq!(
            store.finish(&mut upload, &good).await.unwrap(),
            FinishOutcome::Stored(11)
        );
        assert_eq!(store.size(&good), Some(11));

        let upload = store.start("a").unwrap();
        let mut upload = upload.lock().await;
        store
            .append(&mut upload, bytes::Bytes::from_static(b"hello"))
            .await
            .unwrap();
        let wanted = Digest::of(b"hello there");
        assert!(matches!(
            store.finish(&mut upload, &wanted).await.unwrap(),
            FinishOutcome::Mismatch(_)
        ));
        assert_eq!(store.size(&wanted), None);
        assert_eq!(
            fs::read_dir(dir.path().join("registry/uploads"))
                .unwrap()
                .count(),
            0
        );
    }
}
