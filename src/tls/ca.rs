//! The cluster's certificate authority: created by the first server at
//! bootstrap, kept in the data dir of every server (`tls/ca.pem`,
//! `tls/ca.key`, mode 0600) and nowhere else, and used to issue the
//! certificates of servers, agents and users.
//!
//! A certificate names its holder with one URI SAN (see `tls::identity_uri`);
//! a server certificate also carries the DNS name `tls::SERVER_NAME` and may
//! act as a TLS server, the others only as clients.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::credential::Credential;
use super::{fingerprint, identity_uri};
use crate::vocab::principal::Principal;
use crate::{Error, Result};

/// How long the CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// How long a node's or a user's certificate is valid unless
/// `ORC_CERT_LIFETIME_SECS` says otherwise (tests of renewal).
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// How long the admin credential a server writes is valid (nobody renews
/// it): a year.
pub const ADMIN_CERT_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// What a node receives when it joins or renews: made by the server's
/// `Orc.Join`/`Orc.RenewCertificate` handlers, read by the joining node.
#[derive(Clone, Default)]
pub struct Issued {
    /// The node's certificate (PEM).
    pub certificate: String,
    /// The CA certificate(s) (PEM).
    pub ca: String,
    /// Servers only: the CA's key (PEM).
    pub ca_key: String,
    /// Agents: the container instance id the certificate names.
    pub container_instance_id: String,
    /// The control plane's id.
    pub cluster_id: String,
    /// Servers only: the seal key (empty while the cluster has none).
    pub seal_key: Vec<u8>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of debug output.
        f.debug_struct("Issued")
            .field("container_instance_id", &self.container_instance_id)
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// The lifetime of the certificates this process issues.
pub fn cert_lifetime() -> Duration {
    std::env::var("ORC_CERT_LIFETIME_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|secs| *secs >= 5)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_CERT_LIFETIME)
}

/// The host of an address (`192.168.1.10:7400`, `[::1]:7400`, `pi-1:7400`)
/// as a subject alternative name; `None` for an unspecified address.
pub fn host_name(address: &str) -> Option<SanType> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => None,
        Ok(ip) => Some(SanType::IpAddress(ip)),
        Err(_) => host.to_string().try_into().ok().map(SanType::DnsName),
    }
}

fn failed(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{what}: {error}"))
}

/// The cluster CA: its certificate and its key, both PEM.
#[derive(Clone)]
pub struct Authority {
    /// The CA certificate.
    pub cert_pem: String,
    /// Its private key: only on servers, in files of mode 0600.
    pub key_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Now and now + `lifetime`, starting a minute back for clocks a little behind.
fn validity(lifetime: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::minutes(1),
        now + time::Duration::seconds(lifetime.as_secs() as i64),
    )
}

impl Authority {
    /// A new CA for control plane `cluster_id`.
    pub fn create(cluster_id: &str) -> Result<Authority> {
        Self::create_named(&format!("orc cluster CA {cluster_id}"))
    }

    /// The CA that replaces another (`orc ca rotate`): its name differs
    /// from every earlier one's, so no certificate's issuer is ambiguous.
    pub fn create_rotated(cluster_id: &str) -> Result<Authority> {
        Self::create_named(&format!(
            "orc cluster CA {cluster_id} rotated {}",
            crate::vocab::time::now_ms()
        ))
    }

    fn create_named(common_name: &str) -> Result<Authority> {
        let key = KeyPair::generate().map_err(|e| failed("cannot generate the CA key", e))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "orc");
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity(CA_LIFETIME);
        let cert = params
            .self_signed(&key)
            .map_err(|e| failed("cannot create the CA certificate", e))?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA certificate's SHA-256 fingerprint (what a join token pins).
    pub fn fingerprint(&self) -> String {
        super::certificates(&self.cert_pem)
            .ok()
            .and_then(|certs| certs.first().map(|c| fingerprint(c)))
            .unwrap_or_default()
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| failed("unreadable CA key", e))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key)
            .map_err(|e| failed("unreadable CA certificate", e))
    }

    /// The parameters of `holder`'s certificate; a server's also names
    /// `hosts` (its advertised address), so tools that check the address
    /// they dialled (`aws`, `docker`, curl) accept it.
    fn params(
        holder: &Principal,
        lifetime: Duration,
        hosts: &[String],
    ) -> Result<CertificateParams> {
        let uri = identity_uri(holder)
            .ok_or_else(|| Error::InvalidInput(format!("{holder} cannot hold a certificate")))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "orc");
        name.push(DnType::CommonName, holder.to_string());
        params.distinguished_name = name;
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into().map_err(|e| failed("identity uri", e))?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if matches!(holder, Principal::Server { .. }) {
            params.subject_alt_names.push(SanType::DnsName(
                super::SERVER_NAME
                    .try_into()
                    .map_err(|e| failed("server name", e))?,
            ));
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
            for host in hosts {
                if let Some(name) = host_name(host) {
                    params.subject_alt_names.push(name);
                }
            }
        }
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity(lifetime);
        let serial: [u8; 16] = rand::random();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial[..]));
        Ok(params)
    }

    /// A certificate and a fresh key for `holder` (the server's own, the
    /// admin credential, `orc up`'s agent): (certificate PEM, key PEM).
    pub fn issue(&self, holder: &Principal, lifetime: Duration) -> Result<(String, String)> {
        self.issue_naming(holder, &[], lifetime)
    }

    /// As [`Authority::issue`], a server's certificate also naming `hosts`.
    pub fn issue_naming(
        &self,
        holder: &Principal,
        hosts: &[String],
        lifetime: Duration,
    ) -> Result<(String, String)> {
        let key = KeyPair::generate().map_err(|e| failed("cannot generate a key", e))?;
        let cert = Self::params(holder, lifetime, hosts)?
            .signed_by(&key, &self.issuer()?)
            .map_err(|e| failed("cannot sign a certificate", e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A server's own credential: a certificate for server `node_id` that
    /// also names its advertised address (so `aws`, `docker` and curl accept
    /// it by that address), a fresh key, and `ca` (PEM) as what it trusts.
    /// Bootstrap, a join and every renewal make it this way.
    pub fn server_credential(
        &self,
        node_id: u64,
        advertise: &str,
        ca: String,
    ) -> Result<Credential> {
        let (certificate, key) = self.issue_naming(
            &Principal::Server { node_id },
            &[advertise.to_string()],
            cert_lifetime(),
        )?;
        Ok(Credential {
            endpoint: advertise.to_string(),
            ca,
            certificate,
            key,
        })
    }

    /// Signs a node's certificate signing request for `holder`, whatever
    /// the request asked for (only its public key is used).
    pub fn sign_request(
        &self,
        csr_der: &[u8],
        holder: &Principal,
        lifetime: Duration,
    ) -> Result<String> {
        let request =
            CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()).map_err(|e| {
                Error::InvalidInput(format!("the certificate signing request is invalid: {e}"))
            })?;
        let cert = Self::params(holder, lifetime, &[])?
            .signed_by(&request.public_key, &self.issuer()?)
            .map_err(|e| failed("cannot sign a certificate", e))?;
        Ok(cert.pem())
    }

    /// Where a server keeps the CA: `DATA_DIR/tls/ca.pem` and `ca.key`.
    fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
        let dir = data_dir.join("tls");
        (dir.join("ca.pem"), dir.join("ca.key"))
    }

    /// Writes the CA into a server's data dir (both files 0600).
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let (cert, key) = Self::paths(data_dir);
        super::credential::write_private(&cert, self.cert_pem.as_bytes())?;
        super::credential::write_private(&key, self.key_pem.as_bytes())
    }

    /// The CA of a server's data dir; `None` when it has none (a server
    /// started before TLS, or with `--insecure`).
    pub fn load(data_dir: &Path) -> Result<Option<Authority>> {
        let (cert, key) = Self::paths(data_dir);
        let (Ok(cert_pem), Ok(key_pem)) = (
            std::fs::read_to_string(&cert),
            std::fs::read_to_string(&key),
        ) else {
            return Ok(None);
        };
        Ok(Some(Authority { cert_pem, key_pem }))
    }
}

/// A fresh key and a certificate signing request for it: (CSR DER, key
/// PEM). The request carries no identity: the CA decides it.
pub fn signing_request() -> Result<(Vec<u8>, String)> {
    let key = KeyPair::generate().map_err(|e| failed("cannot generate a key", e))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| failed("cannot make a signing request", e))?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_server_certificate_names_its_advertised_host() {
        assert_eq!(
            host_name("192.168.1.10:7400"),
            Some(SanType::IpAddress("192.168.1.10".parse().unwrap()))
        );
        assert_eq!(
            host_name("[::1]:7400"),
            Some(SanType::IpAddress("::1".parse().unwrap()))
        );
        assert!(matches!(host_name("pi-1:7400"), Some(SanType::DnsName(_))));
        assert_eq!(host_name("0.0.0.0:7400"), None);
        let ca = Authority::create("c").unwrap();
        let server = Principal::Server { node_id: 1 };
        let (pem, _) = ca
            .issue_naming(&server, &["10.0.0.7:7400".into()], Duration::from_secs(60))
            .unwrap();
        let der = rustls_pemfile_der(&pem);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names = parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .clone();
        assert!(
            names.iter().any(|n| matches!(n, x509_parser::extensions::GeneralName::IPAddress(ip) if *ip == [10, 0, 0, 7])),
            "{names:?}"
        );
    }

    /// The DER of a one-certificate PEM.
    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    use super::*;
    use crate::vocab::principal::Role;

    #[test]
    fn certificates_name_their_holder_and_chain_to_the_ca() {
        let ca = Authority::create("c0ffee").unwrap();
        assert_eq!(ca.fingerprint().len(), 64);
        let admin = Principal::User {
            name: "admin".into(),
            role: Role::Admin,
        };
        let (cert, key) = ca.issue(&admin, Duration::from_secs(3600)).unwrap();
        let der = &crate::tls::certificates(&cert).unwrap()[0];
        assert_eq!(crate::tls::principal_of(der), admin);
        assert!(crate::tls::not_after_ms(der) > crate::vocab::time::now_ms());
        crate::tls::ClientTls::new(&ca.cert_pem, Some((&cert, &key))).unwrap();

        let (csr, key) = signing_request().unwrap();
        let agent = Principal::Agent {
            instance: "abc".into(),
        };
        let cert = ca
            .sign_request(&csr, &agent, Duration::from_secs(60))
            .unwrap();
        let der = &crate::tls::certificates(&cert).unwrap()[0];
        assert_eq!(crate::tls::principal_of(der), agent);
        crate::tls::ServerTls::new(&ca.cert_pem, &cert, &key).unwrap();
        assert!(ca
            .sign_request(b"junk", &agent, Duration::from_secs(60))
            .is_err());
    }
}
