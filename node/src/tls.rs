//! TLS material for the node's servers and for every HTTP client of a store (peer client,
//! forwarder, admin client, KV client, CLI): PEM loading, rustls server and client
//! configurations, and the process-wide rustls crypto provider (ring).
//!
//! One rustls crypto provider per process, ring, installed by [`install_crypto_provider`]:
//! two are linked in (ring for our clients and servers and the Kubernetes client, aws-lc-rs
//! for the S3 client of backups), so rustls cannot choose one by itself and a client built
//! before a choice would panic. Every binary and test harness calls it first, and every
//! `reqwest` client in the workspace is built through [`http_client_builder`], which calls
//! it too (reqwest's rustls backend needs a provider even for a plain-HTTP client).

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificates from {path}")]
    ReadCerts {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCerts { path: PathBuf },
    #[error("reading the private key from {path}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("adding a CA certificate from {path}")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("building the client-certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    #[error("building the TLS configuration")]
    Config(#[source] rustls::Error),
    #[error("--cert and --key go together (mutual TLS needs both)")]
    HalfIdentity,
    #[error("the CA given in memory ({what}) holds no usable PEM certificate")]
    BadCaPem { what: String },
    #[error("{0:?} is not a DNS name or IP address to verify servers for")]
    BadServerName(String),
    #[error("building the server-certificate verifier")]
    ServerVerifier(#[source] rustls::client::VerifierBuilderError),
}

/// Makes ring the process-wide rustls crypto provider (a second call, or an earlier choice,
/// changes nothing).
pub fn install_crypto_provider() {
    // An error only says a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::ReadCerts {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::ReadKey {
        path: path.to_owned(),
        source,
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// What a server port presents and whom it trusts.
#[derive(Clone, Debug, Default)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose client certificates are verified (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// With a client CA: also accept connections without a client certificate (they must then
    /// authenticate otherwise, e.g. with a bearer token).
    pub client_cert_optional: bool,
}

impl ServerTls {
    /// A rustls server configuration offering HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut v =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
                if self.client_cert_optional {
                    v = v.allow_unauthenticated();
                }
                builder.with_client_cert_verifier(v.build().map_err(TlsError::ClientVerifier)?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// TLS settings of an HTTP client: whom to trust and, for mutual TLS, which identity to show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA bundle trusted for servers (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// CA bundle trusted for servers, as PEM text (e.g. read from a Kubernetes Secret);
    /// trusted together with `ca`.
    pub ca_pem: Option<String>,
    /// Client certificate chain and key for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Verify every server's certificate for this DNS name (or IP) instead of the host
    /// dialled. A store on Kubernetes serves one certificate naming the store's Service
    /// while its map addresses nodes by pod IP, which no certificate issued in advance can
    /// name. The chain is still verified against the trusted CA.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// True when any TLS option is set (callers then speak `https`).
    pub fn is_configured(&self) -> bool {
        self.ca.is_some() || self.ca_pem.is_some() || self.cert.is_some()
    }

    /// The servers this configuration trusts: the system's roots when no CA is given, else
    /// the CA file and/or the in-memory CA.
    fn trusted_roots(&self) -> Result<RootCertStore, TlsError> {
        Ok(match (&self.ca, &self.ca_pem) {
            (None, None) => {
                let mut roots = RootCertStore::empty();
                // Unreadable system certificates leave fewer roots; the handshake then says so.
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                roots
            }
            (file, pem) => {
                let mut all = match file {
                    Some(ca) => roots(ca)?,
                    None => RootCertStore::empty(),
                };
                if let Some(pem) = pem {
                    for cert in pem_certs(pem)? {
                        all.add(cert).map_err(|source| TlsError::BadCa {
                            path: PathBuf::from("(in memory)"),
                            source,
                        })?;
                    }
                }
                all
            }
        })
    }

    /// The verifier of servers' certificates: the trusted roots, for the host dialled or for
    /// [`ClientTls::server_name`].
    fn server_verifier(&self) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
        let roots = Arc::new(self.trusted_roots()?);
        Ok(match &self.server_name {
            Some(name) => Arc::new(NamedServerVerifier::new(roots, name)?),
            None => WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(TlsError::ServerVerifier)?,
        })
    }

    /// A rustls client configuration (HTTP/1.1). With a CA file, the file is read again when
    /// it changes (see [`ReloadingVerifier`]), so a rotated CA bundle is trusted by new
    /// connections of long-running processes without a restart.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let builder = match (&self.ca, &self.server_name) {
            (Some(ca), _) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ReloadingVerifier::new(
                    self.clone(),
                    ca.clone(),
                )?)),
            (None, None) => builder.with_root_certificates(self.trusted_roots()?),
            (None, Some(_)) => builder
                .dangerous()
                .with_custom_certificate_verifier(self.server_verifier()?),
        };
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(TlsError::Config)?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::HalfIdentity),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Every certificate of a PEM text; at least one.
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = || TlsError::BadCaPem {
        what: "ca.crt".to_owned(),
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad())?;
    if certs.is_empty() {
        return Err(bad());
    }
    Ok(certs)
}

/// Checks, without a connection, that the certificate chain `chain_pem` (leaf first) is
/// one a client trusting `ca_pem` accepts for `name` now: signed by that CA, in its
/// validity period, and naming `name` (SAN). The error is rustls's reason.
pub fn verify_chain_for(chain_pem: &str, ca_pem: &str, name: &str) -> Result<(), CertCheckError> {
    let chain = pem_certs(chain_pem).map_err(|_| CertCheckError::NoChain)?;
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(ca_pem).map_err(|_| CertCheckError::NoCa)? {
        roots.add(cert).map_err(CertCheckError::Rejected)?;
    }
    let verifier =
        NamedServerVerifier::new(Arc::new(roots), name).map_err(CertCheckError::Verifier)?;
    let (leaf, intermediates) = chain.split_first().ok_or(CertCheckError::NoChain)?;
    verifier
        .inner
        .verify_server_cert(leaf, intermediates, &verifier.name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(CertCheckError::Rejected)
}

/// Why [`verify_chain_for`] refused a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertCheckError {
    #[error("no PEM certificate in the chain")]
    NoChain,
    #[error("no PEM certificate in the CA")]
    NoCa,
    #[error(transparent)]
    Verifier(TlsError),
    #[error("{}", describe_rejection(.0))]
    Rejected(rustls::Error),
}

/// rustls's reason for refusing a certificate, in words.
fn describe_rejection(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            "its subject alternative names do not include that name".to_owned()
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "it is not signed by the CA in ca.crt".to_owned()
        }
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => {
            "it has expired".to_owned()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet)
        | rustls::Error::InvalidCertificate(C::NotValidYetContext { .. }) => {
            "it is not valid yet".to_owned()
        }
        other => other.to_string(),
    }
}

/// Verifies a server's chain against the trusted roots as usual, but for a fixed name
/// (see [`ClientTls::server_name`]) instead of the host the connection was made to.
#[derive(Debug)]
struct NamedServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl NamedServerVerifier {
    fn new(roots: Arc<RootCertStore>, name: &str) -> Result<Self, TlsError> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| TlsError::BadServerName(name.to_owned()))?;
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(TlsError::ServerVerifier)?;
        Ok(Self { inner, name })
    }
}

impl ServerCertVerifier for NamedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How often TLS files are looked at for changes: a node's certificate, key and client CA,
/// and the CA file of every client built from a [`ClientTls`] with `ca`.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

static RELOADS_APPLIED: AtomicU64 = AtomicU64::new(0);
static RELOADS_REFUSED: AtomicU64 = AtomicU64::new(0);

/// Changed TLS files this process has taken up, and changed files it refused (keeping the
/// previous certificate or trust), so far.
pub fn reload_counts() -> (u64, u64) {
    (
        RELOADS_APPLIED.load(Ordering::Relaxed),
        RELOADS_REFUSED.load(Ordering::Relaxed),
    )
}

fn count_reload(applied: bool) {
    let c = if applied {
        &RELOADS_APPLIED
    } else {
        &RELOADS_REFUSED
    };
    c.fetch_add(1, Ordering::Relaxed);
}

/// A hash of the files' contents (an unreadable file hashes as its error). Contents, not
/// modification times: Kubernetes updates a Secret volume by swapping a symlink, and a copy
/// may keep the old time.
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match std::fs::read(f) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

/// The server configuration a TLS port uses for its next handshake. Connections keep the
/// configuration they were accepted with; [`ServerTlsReloader`] replaces it.
#[derive(Clone, Debug)]
pub struct LiveServerConfig(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl LiveServerConfig {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}

/// Keeps a node's TLS ports on the current certificate, key and client CA files: when their
/// contents change, every port's configuration is built again from them and used for new
/// connections. Files that do not load (a bad PEM, a key that does not match the
/// certificate, a half-written pair) are refused as a whole: the ports keep the previous
/// configuration, the refusal is logged and counted, and the files are tried again when
/// they change again.
#[derive(Debug)]
pub struct ServerTlsReloader {
    ports: Vec<(ServerTls, LiveServerConfig)>,
    files: Vec<PathBuf>,
    seen: u64,
}

impl ServerTlsReloader {
    /// Loads every port's configuration (a failure is a start-up error).
    pub fn load(ports: Vec<ServerTls>) -> Result<Self, TlsError> {
        let mut files: Vec<PathBuf> = Vec::new();
        for p in &ports {
            for f in [Some(&p.cert), Some(&p.key), p.client_ca.as_ref()]
                .into_iter()
                .flatten()
            {
                if !files.contains(f) {
                    files.push(f.clone());
                }
            }
        }
        // Seen before loading: a change in between is loaded again at the next check.
        let seen = fingerprint(&files);
        let ports = ports
            .into_iter()
            .map(|p| {
                let config = p.server_config()?;
                Ok((p, LiveServerConfig::new(config)))
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        Ok(Self { ports, files, seen })
    }

    /// The live configuration of the `i`-th port given to [`ServerTlsReloader::load`].
    pub fn live(&self, i: usize) -> Option<LiveServerConfig> {
        self.ports.get(i).map(|(_, live)| live.clone())
    }

    /// Looks at the files once: `Ok(true)` when changed files were taken up, `Ok(false)` when
    /// nothing changed, an error when changed files were refused (the previous configuration
    /// stays).
    pub fn check(&mut self) -> Result<bool, TlsError> {
        let now = fingerprint(&self.files);
        if now == self.seen {
            return Ok(false);
        }
        self.seen = now;
        let built = self
            .ports
            .iter()
            .map(|(p, _)| p.server_config())
            .collect::<Result<Vec<_>, _>>();
        match built {
            Ok(configs) => {
                for ((_, live), config) in self.ports.iter().zip(configs) {
                    live.replace(config);
                }
                count_reload(true);
                Ok(true)
            }
            Err(e) => {
                count_reload(false);
                Err(e)
            }
        }
    }

    /// Checks every `interval` until `stop` is cancelled, logging what happened.
    pub async fn run(mut self, interval: Duration, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
            match self.check() {
                Ok(true) => tracing::info!(
                    files = ?self.files,
                    "TLS files changed: new connections use the new certificate"
                ),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    error = %error_chain(&e),
                    files = ?self.files,
                    "TLS files changed but do not load: keeping the previous certificate"
                ),
            }
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

/// Verifies servers against a [`ClientTls`] whose CA file is read again when it changes
/// (looked at on a handshake, at most every [`RELOAD_INTERVAL`]): new connections of a
/// long-running process (a node calling other nodes, the operator) trust a rotated CA
/// bundle without a restart. A changed file that does not load keeps the previous trust;
/// the refusal is logged and counted.
#[derive(Debug)]
struct ReloadingVerifier {
    tls: ClientTls,
    files: Vec<PathBuf>,
    state: Mutex<VerifierState>,
}

#[derive(Debug)]
struct VerifierState {
    checked: Instant,
    seen: u64,
    inner: Arc<dyn ServerCertVerifier>,
}

impl ReloadingVerifier {
    fn new(tls: ClientTls, ca: PathBuf) -> Result<Self, TlsError> {
        let files = vec![ca];
        let seen = fingerprint(&files);
        let inner = tls.server_verifier()?;
        Ok(Self {
            tls,
            files,
            state: Mutex::new(VerifierState {
                checked: Instant::now(),
                seen,
                inner,
            }),
        })
    }

    /// The verifier for the current CA file; with `now`, the file is looked at whatever the
    /// time since the last look.
    fn current(&self, now: bool) -> Arc<dyn ServerCertVerifier> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now || s.checked.elapsed() >= RELOAD_INTERVAL {
            s.checked = Instant::now();
            let files = fingerprint(&self.files);
            if files != s.seen {
                s.seen = files;
                match self.tls.server_verifier() {
                    Ok(v) => {
                        s.inner = v;
                        count_reload(true);
                        tracing::info!(ca = ?self.files, "CA file changed: new connections trust it");
                    }
                    Err(e) => {
                        count_reload(false);
                        tracing::error!(
                            error = %error_chain(&e),
                            ca = ?self.files,
                            "CA file changed but does not load: keeping the previous trust"
                        );
                    }
                }
            }
        }
        s.inner.clone()
    }
}

impl ServerCertVerifier for ReloadingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verifier = self.current(false);
        let first =
            verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        if first.is_ok() {
            return first;
        }
        // A server may already present a certificate from a CA that was added to the file
        // less than RELOAD_INTERVAL ago: look at the file now before refusing.
        let again = self.current(true);
        if Arc::ptr_eq(&again, &verifier) {
            return first;
        }
        again.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current(false)
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current(false)
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.current(false).supported_verify_schemes()
    }
}

/// A reqwest client builder that speaks TLS as `tls` says (also for `https://` URLs when
/// `tls` is empty: the system roots are trusted then).
pub fn http_client_builder(tls: &ClientTls) -> Result<reqwest::ClientBuilder, TlsError> {
    install_crypto_provider();
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls.client_config()?))
}

/// URL scheme of a store's ports.
pub fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// The rustls error behind a failed request, if the failure was a TLS handshake. Looks
/// through the whole cause chain, into `io::Error`s and boxed errors (HTTP client layers box
/// their causes, and a box's `source()` skips the error it holds).
pub fn handshake_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
        && let Some(r) = handshake_error(inner)
    {
        return Some(r);
    }
    e.source().and_then(handshake_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_an_identity_is_refused() {
        let t = ClientTls {
            cert: Some("c.pem".into()),
            ..ClientTls::default()
        };
        assert!(matches!(t.client_config(), Err(TlsError::HalfIdentity)));
    }

    #[test]
    fn a_ca_text_without_certificates_and_a_bad_server_name_are_refused() {
        let t = ClientTls {
            ca_pem: Some("not a certificate".to_owned()),
            ..ClientTls::default()
        };
        assert!(matches!(t.client_config(), Err(TlsError::BadCaPem { .. })));
        let t = ClientTls {
            server_name: Some("not a name!".to_owned()),
            ..ClientTls::default()
        };
        assert!(matches!(t.client_config(), Err(TlsError::BadServerName(_))));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let e = load_certs(Path::new("/nonexistent/ca.pem"));
        let text = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("/nonexistent/ca.pem"), "{text}");
    }

    #[test]
    fn handshake_errors_are_found_behind_nested_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let twice = std::io::Error::other(io);
        assert!(handshake_error(&twice).is_some());
        let other = std::io::Error::other("refused");
        assert!(handshake_error(&other).is_none());
    }

    #[test]
    fn a_default_client_trusts_the_system_roots() {
        install_crypto_provider();
        assert!(!ClientTls::default().is_configured());
        assert!(http_client_builder(&ClientTls::default()).is_ok());
    }
}
