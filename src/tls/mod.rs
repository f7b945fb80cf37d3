//! Transport security for every control-plane connection: TLS 1.3 with
//! client certificates issued by the cluster's own CA (`ca`), the files
//! that hold them (`credential`), and the join tokens that let a new node
//! obtain one (`token`).
//!
//! * [`ServerTls`] is what a server's listener accepts with: its own
//!   certificate (sent with the CA after it, so a joining node can pin the
//!   CA by fingerprint), and client certificates verified against the
//!   cluster CA but *optional* (the AWS door and the registry authenticate
//!   requests their own way; a gRPC call without one is
//!   [`Principal::Anonymous`] and refused).
//! * [`ClientTls`] is what every client side dials with: the CLI, agents,
//!   servers to their peers. It verifies that the server's certificate is
//!   signed by the cluster CA and is a *server* certificate (it carries the
//!   DNS name [`SERVER_NAME`]), whatever address was dialled: the CA is the
//!   cluster's own, so any server certificate it signed is a member.
//! * Who a certificate belongs to is written in it as a URI SAN
//!   (`urn:orc:server:ID`, `urn:orc:agent:INSTANCE`, `urn:orc:user:ROLE:NAME`)
//!   and read back by [`principal_of`].
//!
//! This module knows rustls and certificates; it knows nothing of gRPC,
//! the store or Raft.

pub mod ca;
pub mod credential;
pub mod token;

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::vocab::principal::{Principal, Role};
use crate::{Error, Result};

/// The DNS name in every server certificate; clients check it instead of
/// the address they dialled (servers are reached by IP, by host name, through
/// NAT; the cluster CA signs only its own members).
pub const SERVER_NAME: &str = "orc-server";

/// ALPN protocols the listener offers: gRPC, the registry and the AWS door
/// over HTTP/2, `/metrics` and the aws CLI over HTTP/1.1.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The one crypto provider (ring: builds without cmake or Go). rustls
/// deprecates it for lacking post-quantum key exchange; the cost of
/// aws-lc-rs's build on a Pi is not worth it for a cluster's own CA yet.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate error as the error every caller understands.
fn tls_error(what: &str, error: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("{what}: {error}"))
}

/// Every certificate in a PEM text, in order.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error("unreadable certificate", e))?;
    if certs.is_empty() {
        return Err(Error::InvalidInput(
            "no certificate found in the PEM text".into(),
        ));
    }
    Ok(certs)
}

/// The private key in a PEM text.
pub fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| tls_error("unreadable private key", e))
}

/// The trusted CAs (more than one while a rotation is under way).
fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| tls_error("unusable CA certificate", e))?;
    }
    Ok(Arc::new(roots))
}

/// The SHA-256 fingerprint of a certificate, in lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    crate::crypto::hex(&sha2::Sha256::digest(der))
}

/// Whether the CA certificate `ca` signed `leaf` (and `leaf` is valid now).
fn verifies(ca: &CertificateDer<'static>, leaf: &CertificateDer<'_>) -> bool {
    let mut roots = RootCertStore::empty();
    if roots.add(ca.clone()).is_err() {
        return false;
    }
    let Ok(verifier) =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
    else {
        return false;
    };
    verifier
        .verify_client_cert(leaf, &[], UnixTime::now())
        .is_ok()
}

/// Whether the (first) CA in `ca_pem` issued the (first) certificate in
/// `cert_pem`, which is still valid.
pub fn issued_by(ca_pem: &str, cert_pem: &str) -> bool {
    match (certificates(ca_pem), certificates(cert_pem)) {
        (Ok(cas), Ok(certs)) => verifies(&cas[0], &certs[0]),
        _ => false,
    }
}

/// The PEM texts one after the other, each ending with a newline (a
/// bundle of CAs).
pub fn bundle(pems: &[&str]) -> String {
    let mut out = String::new();
    for pem in pems {
        out.push_str(pem.trim_end());
        out.push('\n');
    }
    out
}

/// What a node's trust should be, in one comparable text:
/// `SIGNING/TRUSTED,…`, the fingerprint of the CA that signs its
/// certificate and those of the CAs it trusts (sorted). A server sends its
/// own in every heartbeat answer; an agent whose credential differs renews.
pub fn trust_id(signing_fingerprint: &str, trusted_pem: &str) -> String {
    let mut trusted: Vec<String> = certificates(trusted_pem)
        .map(|certs| certs.iter().map(|c| fingerprint(c)).collect())
        .unwrap_or_default();
    trusted.sort();
    format!("{signing_fingerprint}/{}", trusted.join(","))
}

/// [`trust_id`] of a certificate and the CAs it trusts: the signing CA is
/// the one of `ca_pem` that verifies `cert_pem` (none: an empty fingerprint).
pub fn trust_id_of(ca_pem: &str, cert_pem: &str) -> String {
    let signing = match (certificates(ca_pem), certificates(cert_pem)) {
        (Ok(cas), Ok(certs)) => cas
            .iter()
            .find(|ca| verifies(ca, &certs[0]))
            .map(|ca| fingerprint(ca))
            .unwrap_or_default(),
        _ => String::new(),
    };
    trust_id(&signing, ca_pem)
}

/// The URI SAN that names a certificate's holder.
pub fn identity_uri(principal: &Principal) -> Option<String> {
    match principal {
        Principal::Server { node_id } => Some(format!("urn:orc:server:{node_id}")),
        Principal::Agent { instance } => Some(format!("urn:orc:agent:{instance}")),
        Principal::User { name, role } => Some(format!("urn:orc:user:{role}:{name}")),
        _ => None,
    }
}

/// Reads an identity URI back (`None`: not one of ours).
pub fn parse_identity_uri(uri: &str) -> Option<Principal> {
    let rest = uri.strip_prefix("urn:orc:")?;
    let (kind, rest) = rest.split_once(':')?;
    match kind {
        "server" => Some(Principal::Server {
            node_id: rest.parse().ok().filter(|id| *id != 0)?,
        }),
        "agent" if !rest.is_empty() => Some(Principal::Agent {
            instance: rest.to_string(),
        }),
        "user" => {
            let (role, name) = rest.split_once(':')?;
            let role: Role = role.parse().ok()?;
            (!name.is_empty()).then(|| Principal::User {
                name: name.to_string(),
                role,
            })
        }
        _ => None,
    }
}

/// Who a (verified) certificate was issued to; a certificate of the cluster
/// CA without one of our identity URIs is nobody.
pub fn principal_of(der: &[u8]) -> Principal {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Principal::Anonymous;
    };
    let Ok(Some(names)) = cert.subject_alternative_name() else {
        return Principal::Anonymous;
    };
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => parse_identity_uri(uri),
            _ => None,
        })
        .unwrap_or(Principal::Anonymous)
}

/// When a certificate stops being valid, in ms since the epoch (0 when it
/// cannot be read).
pub fn not_after_ms(der: &[u8]) -> u64 {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| (cert.validity().not_after.timestamp().max(0) as u64) * 1000)
        .unwrap_or(0)
}

/// When a certificate became valid, in ms since the epoch.
pub fn not_before_ms(der: &[u8]) -> u64 {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| (cert.validity().not_before.timestamp().max(0) as u64) * 1000)
        .unwrap_or(0)
}

/// How a server listens: its certificate and the CAs whose client
/// certificates it accepts.
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// A listener's configuration: TLS 1.3 only, ALPN h2 and http/1.1, the
    /// chain `cert_pem` then the CA(s), client certificates optional.
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<ServerTls> {
        let roots = roots(ca_pem)?;
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_error("cannot verify client certificates", e))?;
        let mut chain = certificates(cert_pem)?;
        chain.extend(certificates(ca_pem)?);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error("tls 1.3", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private_key(key_pem)?)
            .map_err(|e| tls_error("unusable server certificate or key", e))?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// The acceptor for one connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// The listener's current configuration, swapped when the certificate is
/// renewed or the CA rotated (connections already open keep theirs).
#[derive(Clone)]
pub struct ServerTlsSource(Arc<RwLock<Arc<ServerTls>>>);

impl ServerTlsSource {
    /// Starts with `tls`.
    pub fn new(tls: ServerTls) -> ServerTlsSource {
        ServerTlsSource(Arc::new(RwLock::new(Arc::new(tls))))
    }

    /// What the next connection is accepted with.
    pub fn current(&self) -> Arc<ServerTls> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces it for the connections accepted from now on.
    pub fn replace(&self, tls: ServerTls) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tls);
    }
}

/// Who the client is and whom it trusts.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    /// The certificate's holder, when it has one.
    pub identity: Option<Principal>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("identity", &self.identity)
            .finish()
    }
}

impl ClientTls {
    /// Trusts servers of the CA(s) in `ca_pem`, and presents `cert_pem` with
    /// `key_pem` when given.
    pub fn new(ca_pem: &str, certificate: Option<(&str, &str)>) -> Result<ClientTls> {
        let verifier = ClusterServerVerifier::new(roots(ca_pem)?)?;
        Self::with_verifier(Arc::new(verifier), certificate)
    }

    /// For a joining node that knows only the CA's fingerprint (from the
    /// token): the server must send a CA with that fingerprint and a server
    /// certificate it signed, before anything is sent. An empty fingerprint
    /// (a node started without a token) trusts any server: it is used only
    /// to send an empty token and learn the server's refusal, nothing secret.
    pub fn pinned(ca_fingerprint: &str) -> Result<ClientTls> {
        Self::with_verifier(
            Arc::new(PinnedCaVerifier {
                fingerprint: ca_fingerprint.to_ascii_lowercase(),
                schemes: provider().signature_verification_algorithms,
            }),
            None,
        )
    }

    fn with_verifier(
        verifier: Arc<dyn ServerCertVerifier>,
        certificate: Option<(&str, &str)>,
    ) -> Result<ClientTls> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error("tls 1.3", e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let (mut config, identity) = match certificate {
            Some((cert_pem, key_pem)) => {
                let chain = certificates(cert_pem)?;
                let identity = principal_of(&chain[0]);
                let config = builder
                    .with_client_auth_cert(chain, private_key(key_pem)?)
                    .map_err(|e| tls_error("unusable client certificate or key", e))?;
                (config, Some(identity))
            }
            None => (builder.with_no_client_auth(), None),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            identity,
        })
    }

    /// The rustls configuration, offering `alpn` (e.g. `http/1.1` for a
    /// plain HTTP client such as a test's `GET /metrics`).
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The connector for one connection.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The server name every connection verifies (see [`SERVER_NAME`]).
    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
    }
}

/// Verifies a server's certificate against the cluster CA(s), for the name
/// every server certificate carries rather than the address dialled.
#[derive(Debug)]
struct ClusterServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ClusterServerVerifier {
    fn new(roots: Arc<RootCertStore>) -> Result<ClusterServerVerifier> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| tls_error("cannot verify server certificates", e))?;
        Ok(ClusterServerVerifier { inner })
    }
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &ClientTls::server_name(),
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts a server whose chain holds a CA with the pinned fingerprint and
/// a server certificate that CA signed.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    schemes: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if self.fingerprint.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(ca) = intermediates
            .iter()
            .find(|cert| fingerprint(cert) == self.fingerprint)
        else {
            return Err(rustls::Error::General(format!(
                "the server's CA is not the one the join token names (fingerprint {}…): this token belongs to another cluster, or something else answers at this address",
                &self.fingerprint[..self.fingerprint.len().min(16)]
            )));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("unusable CA certificate: {e}")))?;
        let verifier = ClusterServerVerifier::new(Arc::new(roots))
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.schemes)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.schemes)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.supported_schemes()
    }
}

/// An identity that may change (a renewed certificate): a shared slot
/// every new connection reads. `None` inside: plain text (a cluster
/// started with `--insecure`).
#[derive(Clone, Default)]
pub struct SharedIdentity(Arc<RwLock<Option<Arc<ClientTls>>>>);

impl std::fmt::Debug for SharedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharedIdentity({:?})",
            self.get().and_then(|t| t.identity.clone())
        )
    }
}

impl SharedIdentity {
    /// A slot holding `tls`.
    pub fn new(tls: Option<ClientTls>) -> SharedIdentity {
        SharedIdentity(Arc::new(RwLock::new(tls.map(Arc::new))))
    }

    /// The process's own identity (see [`set_process_identity`]).
    pub fn process() -> SharedIdentity {
        PROCESS_IDENTITY
            .get_or_init(SharedIdentity::default)
            .clone()
    }

    /// What a new connection presents now.
    pub fn get(&self) -> Option<Arc<ClientTls>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces it for the connections made from now on.
    pub fn set(&self, tls: Option<ClientTls>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = tls.map(Arc::new);
    }
}

/// The process's own identity for the connections it makes: set once its
/// role has its certificate (a server's, the CLI's credential, an agent's),
/// and replaced when the certificate is renewed.
static PROCESS_IDENTITY: std::sync::OnceLock<SharedIdentity> = std::sync::OnceLock::new();

/// Sets the identity this process's clients connect with (`None`: plain text).
pub fn set_process_identity(tls: Option<ClientTls>) {
    SharedIdentity::process().set(tls);
}

/// The identity this process's clients connect with (`None`: plain text).
pub fn process_identity() -> Option<Arc<ClientTls>> {
    SharedIdentity::process().get()
}

/// A connection that failed for a reason of TLS, in a sentence that says
/// what to do; found in an error's source chain by the client.
#[derive(Debug)]
pub struct TlsRefused(pub String);

impl std::fmt::Display for TlsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsRefused {}

/// Explains a failed client handshake with `address`.
pub fn explain_client_handshake(address: &str, error: &std::io::Error) -> Option<TlsRefused> {
    let inner = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    use rustls::{AlertDescription as Alert, CertificateError as Cert};
    let sentence = match inner {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => format!(
            "the server at {address} presented a certificate this credential's CA did not sign: it belongs to another cluster, or the credential is stale (see `orc config`)"
        ),
        rustls::Error::InvalidCertificate(Cert::Expired) => format!(
            "the server at {address} presented an expired certificate: restart it so it renews, or check both clocks"
        ),
        rustls::Error::InvalidCertificate(Cert::NotValidForName) => format!(
            "{address} presented a certificate that is not an orc server's: is this an orc server of your cluster?"
        ),
        rustls::Error::AlertReceived(
            Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::DecryptError
            | Alert::CertificateRequired,
        ) => format!(
            "the server at {address} refused this node's certificate ({inner}): it was issued by another cluster's CA, or it expired; get a new one with a join token (`orc token create`)"
        ),
        rustls::Error::General(why) => format!("cannot connect to {address}: {why}"),
        other => format!("the TLS handshake with {address} failed: {other}"),
    };
    Some(TlsRefused(sentence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        for principal in [
            Principal::Server { node_id: 42 },
            Principal::Agent {
                instance: "5f0c1e".into(),
            },
            Principal::User {
                name: "admin".into(),
                role: Role::Admin,
            },
            Principal::User {
                name: "ann".into(),
                role: Role::ReadOnly,
            },
        ] {
            let uri = identity_uri(&principal).unwrap();
            assert_eq!(parse_identity_uri(&uri), Some(principal), "{uri}");
        }
        for junk in [
            "urn:orc:server:0",
            "urn:orc:server:x",
            "urn:orc:agent:",
            "urn:orc:user:root:ann",
            "urn:orc:user:admin:",
            "https://example.com",
        ] {
            assert_eq!(parse_identity_uri(junk), None, "{junk}");
        }
    }
}
