//! TLS for local mode (`--tls-dir DIR`): uses `DIR/ca.pem`, `DIR/node.pem` and
//! `DIR/node-key.pem` when they exist, or else generates a demo CA and certificates there —
//! a node certificate for `localhost` and `127.0.0.1` shared by every local node, and a
//! client certificate (`client.pem`, `client-key.pem`) for trying mutual TLS.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Why the TLS files could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum LocalTlsError {
    #[error("creating {0}")]
    CreateDir(PathBuf, #[source] std::io::Error),
    #[error("writing {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("generating the {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{dir} holds only some of ca.pem, node.pem, node-key.pem: give all three or none")]
    Partial { dir: PathBuf },
}

/// The files the nodes and clients of a local store use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// Present when this run generated the material.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            node_cert: dir.join("node.pem"),
            node_key: dir.join("node-key.pem"),
            client_cert: None,
            client_key: None,
        }
    }
}

/// Uses the certificates in `dir`, or generates them there when it holds none.
pub fn prepare(dir: &Path) -> Result<TlsFiles, LocalTlsError> {
    let mut files = TlsFiles::in_dir(dir);
    let present = [&files.ca, &files.node_cert, &files.node_key]
        .iter()
        .filter(|p| p.exists())
        .count();
    match present {
        3 => {
            let (cert, key) = (dir.join("client.pem"), dir.join("client-key.pem"));
            if cert.exists() && key.exists() {
                files.client_cert = Some(cert);
                files.client_key = Some(key);
            }
            Ok(files)
        }
        0 => generate(dir),
        _ => Err(LocalTlsError::Partial {
            dir: dir.to_owned(),
        }),
    }
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> LocalTlsError {
    move |source| LocalTlsError::Generate { what, source }
}

/// Generates a CA, a node certificate and a client certificate into `dir`.
pub fn generate(dir: &Path) -> Result<TlsFiles, LocalTlsError> {
    std::fs::create_dir_all(dir).map_err(|e| LocalTlsError::CreateDir(dir.to_owned(), e))?;
    let ca_key = KeyPair::generate().map_err(gen_err("CA key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("CA"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ShardedStore local CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(gen_err("CA"))?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose, what| {
        let key = KeyPair::generate().map_err(gen_err(what))?;
        let mut p = CertificateParams::new(names).map_err(gen_err(what))?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &issuer).map_err(gen_err(what))?;
        Ok::<_, LocalTlsError>((cert.pem(), key.serialize_pem()))
    };
    let (node_pem, node_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        "shardedstore-node",
        ExtendedKeyUsagePurpose::ServerAuth,
        "node certificate",
    )?;
    let (client_pem, client_key) = leaf(
        Vec::new(),
        "shardedstore-client",
        ExtendedKeyUsagePurpose::ClientAuth,
        "client certificate",
    )?;
    let mut files = TlsFiles::in_dir(dir);
    files.client_cert = Some(dir.join("client.pem"));
    files.client_key = Some(dir.join("client-key.pem"));
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|e| LocalTlsError::Write(path.to_owned(), e))
    };
    write(&files.ca, &ca_cert.pem())?;
    write(&files.node_cert, &node_pem)?;
    write(&files.node_key, &node_key)?;
    write(&dir.join("client.pem"), &client_pem)?;
    write(&dir.join("client-key.pem"), &client_key)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_is_reused_and_partial_sets_are_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = prepare(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let ca = std::fs::read(&first.ca).unwrap_or_default();
        assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));
        let again = prepare(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, first);
        assert_eq!(std::fs::read(&again.ca).unwrap_or_default(), ca);
        std::fs::remove_file(&first.node_key).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            prepare(dir.path()),
            Err(LocalTlsError::Partial { .. })
        ));
    }

    #[test]
    fn the_node_certificate_loads_as_a_rustls_server_identity() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let files = generate(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let server = shardedstore_node::tls::ServerTls {
            cert: files.node_cert.clone(),
            key: files.node_key.clone(),
            client_ca: Some(files.ca.clone()),
            client_cert_optional: true,
        };
        assert!(server.server_config().is_ok());
        let client = shardedstore_node::tls::ClientTls {
            ca: Some(files.ca),
            cert: files.client_cert,
            key: files.client_key,
            ..shardedstore_node::tls::ClientTls::default()
        };
        assert!(client.client_config().is_ok());
    }
}
