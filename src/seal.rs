//! The cluster's seal key: one 32-byte symmetric key shared by every server,
//! with which secrets are sealed before they enter cluster state (the
//! secret half of access keys, Secrets Manager values), so the raft log, the
//! sled checkpoint and the snapshots sent to other servers hold only
//! ciphertext.
//!
//! The key lives in `DATA_DIR/keys/seal.key` (the file mode 0600, the
//! directory 0700). The first server creates it at bootstrap
//! ([`SealKey::create`]); a server restarting loads it ([`SealKey::load`]);
//! a joining server receives its bytes from the cluster
//! ([`SealKey::from_bytes`], [`SealKey::store`]).
//!
//! A sealed value is `version (1) ‖ nonce (24) ‖ ciphertext and tag`,
//! XChaCha20-Poly1305 with a random nonce, so sealing the same plaintext
//! twice gives different bytes and any change to them fails to open.
//! Sealing happens where randomness is allowed (an API handler, before the
//! command is proposed); `store::state::apply` only copies sealed bytes.
//!
//! It owns only the key and the cipher: no logging (it must never print a
//! key or a plaintext) and nothing of the store or the API.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::{Error, Result};

/// The directory under the data dir that holds key files.
pub const KEYS_DIR: &str = "keys";
/// The seal key's file name in [`KEYS_DIR`].
pub const SEAL_KEY_FILE: &str = "seal.key";
/// The key's length in bytes.
pub const KEY_LEN: usize = 32;
/// The format version byte that starts every sealed value.
const VERSION: u8 = 1;
/// XChaCha20's nonce length.
const NONCE_LEN: usize = 24;
/// Poly1305's tag length.
const TAG_LEN: usize = 16;

/// The cluster's seal key. Its `Debug` prints no key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey {
    /// The raw key.
    bytes: [u8; KEY_LEN],
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(…)")
    }
}

/// Where the seal key lives in a data dir.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEYS_DIR).join(SEAL_KEY_FILE)
}

impl SealKey {
    /// A new random key.
    pub fn generate() -> SealKey {
        SealKey {
            bytes: rand::random(),
        }
    }

    /// A key from its 32 bytes (a joining server receives them).
    pub fn from_bytes(bytes: &[u8]) -> Result<SealKey> {
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            Error::InvalidInput(format!(
                "a seal key is {KEY_LEN} bytes, not {}: copy the whole keys/{SEAL_KEY_FILE} of a server",
                bytes.len()
            ))
        })?;
        Ok(SealKey { bytes })
    }

    /// The key's 32 bytes (to hand to a joining server, over TLS only).
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.bytes
    }

    /// Creates a new key and writes it to `DATA_DIR/keys/seal.key`;
    /// refuses to replace an existing one.
    pub fn create(data_dir: &Path) -> Result<SealKey> {
        let key = SealKey::generate();
        key.store(data_dir)?;
        Ok(key)
    }

    /// Writes this key to `DATA_DIR/keys/seal.key` (directory 0700, file
    /// 0600, fsynced); refuses to replace an existing key file.
    pub fn store(&self, data_dir: &Path) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
        let dir = data_dir.join(KEYS_DIR);
        let io = |what: &str, path: &Path, e: std::io::Error| {
            Error::Internal(format!("cannot {what} {}: {e}", path.display()))
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io("create", &dir, e))?;
        // The directory may have existed with a looser mode.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("restrict", &dir, e))?;
        let path = dir.join(SEAL_KEY_FILE);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Conflict(format!(
                        "{} already exists: a data dir keeps the seal key it was created with",
                        path.display()
                    ))
                } else {
                    io("create", &path, e)
                }
            })?;
        file.write_all(&self.bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| io("write", &path, e))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync", &dir, e))?;
        Ok(())
    }

    /// Loads the key from `DATA_DIR/keys/seal.key`; `Ok(None)` when the
    /// file does not exist. Refuses a key file others may read.
    pub fn load(data_dir: &Path) -> Result<Option<SealKey>> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = key_path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Internal(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let mode = std::fs::metadata(&path)
            .map_err(|e| Error::Internal(format!("cannot stat {}: {e}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::InvalidInput(format!(
                "{} may be read by other users (mode {:o}): run `chmod 600 {}` and start again",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
        SealKey::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidInput(format!("{} is corrupt: {e}", path.display())))
    }

    /// Loads the key, creating it when the data dir has none (a data dir
    /// made before sealing existed, or the first start after bootstrap).
    pub fn load_or_create(data_dir: &Path) -> Result<SealKey> {
        match SealKey::load(data_dir)? {
            Some(key) => Ok(key),
            None => SealKey::create(data_dir),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.bytes).into())
    }

    /// Seals `plaintext`: a version byte, a random nonce, the ciphertext
    /// and its tag.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        // Encryption into a Vec fails only past the cipher's length limit
        // (256 GiB), far beyond anything orc seals.
        let ciphertext = self
            .cipher()
            .encrypt(nonce, plaintext)
            .expect("XChaCha20-Poly1305 encrypts any plaintext under 256 GiB");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens what [`SealKey::seal`] sealed; refuses bytes that were changed,
    /// sealed with another key, or are not a sealed value.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        let refuse = |why: &str| {
            Error::Internal(format!(
                "cannot open a sealed value: {why}; every server must hold the same keys/{SEAL_KEY_FILE}"
            ))
        };
        match sealed.first() {
            None => return Err(refuse("it is empty")),
            Some(&VERSION) => {}
            Some(other) => return Err(refuse(&format!("unknown format version {other}"))),
        }
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(refuse("it is too short"));
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| refuse("it was changed or sealed with another key"))
    }

    /// [`SealKey::open`] for text.
    pub fn open_string(&self, sealed: &[u8]) -> Result<String> {
        String::from_utf8(self.open(sealed)?)
            .map_err(|_| Error::Internal("a sealed text is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_unchanged_and_with_their_key() {
        let key = SealKey::generate();
        let sealed = key.seal(b"wJalrXUtnFEMI/K7MDENG");
        assert_eq!(sealed[0], VERSION);
        assert!(!sealed
            .windows(b"wJalrXUtnFEMI".len())
            .any(|w| w == b"wJalrXUtnFEMI"));
        assert_eq!(key.open(&sealed).unwrap(), b"wJalrXUtnFEMI/K7MDENG");
        // A fresh nonce each time.
        assert_ne!(key.seal(b"same"), key.seal(b"same"));
        // Any flipped bit fails.
        for index in 0..sealed.len() {
            let mut changed = sealed.clone();
            changed[index] ^= 1;
            assert!(key.open(&changed).is_err(), "byte {index}");
        }
        assert!(SealKey::generate().open(&sealed).is_err());
        assert!(key.open(&[]).is_err());
        assert!(key.open(&[VERSION; 10]).is_err());
        assert_eq!(key.open(&key.seal(b"")).unwrap(), b"");
    }

    #[test]
    fn keys_round_trip_through_bytes_and_never_print() {
        let key = SealKey::generate();
        let copy = SealKey::from_bytes(&key.to_bytes()).unwrap();
        assert_eq!(key, copy);
        assert_eq!(copy.open(&key.seal(b"x")).unwrap(), b"x");
        assert!(SealKey::from_bytes(&[0; 31]).is_err());
        assert_eq!(format!("{key:?}"), "SealKey(…)");
    }

    #[test]
    fn the_key_file_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SealKey::load(dir.path()).unwrap(), None);
        let key = SealKey::create(dir.path()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key_path(dir.path())), 0o600);
        assert_eq!(mode(&dir.path().join(KEYS_DIR)), 0o700);
        assert_eq!(SealKey::load(dir.path()).unwrap(), Some(key.clone()));
        assert_eq!(SealKey::load_or_create(dir.path()).unwrap(), key);
        assert!(matches!(
            SealKey::create(dir.path()),
            Err(Error::Conflict(_))
        ));
        std::fs::set_permissions(key_path(dir.path()), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let error = SealKey::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }
}
