//! Credential files: one JSON file (mode 0600) holding the cluster CA(s),
//! a certificate and its key, and the endpoint it was made for. The admin
//! credential `orc up` and `orc server --bootstrap` write, each server's
//! and agent's own certificate, and what `orc config` shows all have this
//! one shape:
//!
//! ```json
//! {"endpoint": "127.0.0.1:7400", "ca": "-----BEGIN CERTIFICATE-----…",
//!  "certificate": "-----BEGIN CERTIFICATE-----…", "key": "-----BEGIN PRIVATE KEY-----…"}
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ClientTls;
use crate::vocab::principal::Principal;
use crate::{Error, Result};

/// A certificate with its key and the CAs it trusts.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credential {
    /// The server it was made for (`host:port`; the CLI's default endpoint).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// The cluster CA certificate(s), PEM.
    pub ca: String,
    /// The holder's certificate, PEM.
    pub certificate: String,
    /// The holder's private key, PEM.
    pub key: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("endpoint", &self.endpoint)
            .field("holder", &self.holder())
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Who the certificate was issued to.
    pub fn holder(&self) -> Principal {
        super::certificates(&self.certificate)
            .ok()
            .and_then(|certs| certs.first().map(|c| super::principal_of(c)))
            .unwrap_or(Principal::Anonymous)
    }

    /// When the certificate expires (ms since the epoch; 0 if unreadable).
    pub fn not_after_ms(&self) -> u64 {
        super::certificates(&self.certificate)
            .ok()
            .and_then(|certs| certs.first().map(|c| super::not_after_ms(c)))
            .unwrap_or(0)
    }

    /// When it was issued (ms since the epoch).
    pub fn not_before_ms(&self) -> u64 {
        super::certificates(&self.certificate)
            .ok()
            .and_then(|certs| certs.first().map(|c| super::not_before_ms(c)))
            .unwrap_or(0)
    }

    /// The CA's fingerprint (the first CA when there are several).
    pub fn ca_fingerprint(&self) -> String {
        super::certificates(&self.ca)
            .ok()
            .and_then(|certs| certs.first().map(|c| super::fingerprint(c)))
            .unwrap_or_default()
    }

    /// Which CA signed the certificate and which it trusts (`tls::trust_id`).
    pub fn trust_id(&self) -> String {
        super::trust_id_of(&self.ca, &self.certificate)
    }

    /// Whether the certificate is past two thirds of its life at `now_ms`
    /// (time to renew it).
    pub fn due_for_renewal(&self, now_ms: u64) -> bool {
        let (from, until) = (self.not_before_ms(), self.not_after_ms());
        until == 0 || now_ms >= from + (until.saturating_sub(from)) * 2 / 3
    }

    /// The client side of this credential.
    pub fn client_tls(&self) -> Result<ClientTls> {
        ClientTls::new(&self.ca, Some((&self.certificate, &self.key)))
    }

    /// The listener side of this credential (a server's own).
    pub fn server_tls(&self) -> Result<super::ServerTls> {
        super::ServerTls::new(&self.ca, &self.certificate, &self.key)
    }

    /// Reads a credential file; the error names the file and what to do.
    pub fn load(path: &Path) -> Result<Credential> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read the credential file {}: {e}",
                path.display()
            ))
        })?;
        let credential: Credential = serde_json::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!(
                "{} is not an orc credential file ({e}): write a new one with `orc up`, or ask your admin",
                path.display()
            ))
        })?;
        credential.client_tls().map_err(|e| {
            Error::InvalidInput(format!(
                "the credential file {} is unusable: {e}",
                path.display()
            ))
        })?;
        Ok(credential)
    }

    /// Writes the credential to `path` (mode 0600).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Internal(format!("cannot encode a credential: {e}")))?;
        write_private(path, text.as_bytes())
    }
}

/// Writes a file only its owner can read (0600), through a temporary file
/// renamed into place, creating its directory (0700) if needed.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let failed =
        |e: std::io::Error| Error::Internal(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

/// Where a server keeps its own certificate: `DATA_DIR/tls/server.json`.
pub fn server_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("server.json")
}

/// Where bootstrap writes the admin credential: `DATA_DIR/tls/admin.json`.
pub fn admin_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("admin.json")
}

/// Where an agent keeps its certificate: `DATA_DIR/credential.json`.
pub fn agent_path(data_dir: &Path) -> PathBuf {
    data_dir.join("credential.json")
}

/// Where `orc up` with its default data dir writes the admin credential.
pub fn default_up_admin_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share"))
        })?;
    Some(admin_path(&base.join("orc").join("up").join("server")))
}

/// The user's own credential file: `~/.config/orc/credentials.json`.
pub fn user_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("orc").join("credentials.json"))
}

/// Where the CLI found its credential, and why there.
#[derive(Clone, Debug)]
pub enum Found {
    /// `ORC_CREDENTIALS` (or `--credentials`) names it.
    Named(PathBuf),
    /// The user's own file.
    UserConfig(PathBuf),
    /// The one `orc up` wrote in its default data dir.
    OrcUp(PathBuf),
    /// None: connect in plain text (a cluster started with `--insecure`).
    Nothing,
}

impl Found {
    /// The file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Found::Named(path) | Found::UserConfig(path) | Found::OrcUp(path) => Some(path),
            Found::Nothing => None,
        }
    }

    /// Why this file, in words.
    pub fn why(&self) -> &'static str {
        match self {
            Found::Named(_) => "named by ORC_CREDENTIALS or --credentials",
            Found::UserConfig(_) => "your own credential file",
            Found::OrcUp(_) => "written by `orc up`",
            Found::Nothing => "none found: connecting in plain text",
        }
    }
}

/// The CLI's credential: the file `named` (flag or `ORC_CREDENTIALS`; the
/// word `none` means plain text), else `~/.config/orc/credentials.json`,
/// else the admin credential of `orc up`'s default data dir.
pub fn discover(named: Option<&Path>) -> Found {
    if let Some(path) = named {
        if path.as_os_str() == "none" {
            return Found::Nothing;
        }
        return Found::Named(path.to_path_buf());
    }
    if let Some(path) = user_config_path().filter(|p| p.exists()) {
        return Found::UserConfig(path);
    }
    if let Some(path) = default_up_admin_path().filter(|p| p.exists()) {
        return Found::OrcUp(path);
    }
    Found::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::Authority;
    use crate::vocab::principal::Role;
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    #[test]
    fn a_credential_file_is_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create("c1").unwrap();
        let admin = Principal::User {
            name: "admin".into(),
            role: Role::Admin,
        };
        let (certificate, key) = ca.issue(&admin, Duration::from_secs(3600)).unwrap();
        let credential = Credential {
            endpoint: "127.0.0.1:7400".into(),
            ca: ca.cert_pem.clone(),
            certificate,
            key,
        };
        let path = admin_path(dir.path());
        credential.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Credential::load(&path).unwrap();
        assert_eq!(back.holder(), admin);
        assert_eq!(back.ca_fingerprint(), ca.fingerprint());
        assert!(!back.due_for_renewal(crate::vocab::time::now_ms()));
        assert!(
            !format!("{back:?}").contains("PRIVATE"),
            "no key in debug output"
        );
        std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
        let error = Credential::load(&dir.path().join("bad.json"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not an orc credential file"), "{error}");
    }
}
