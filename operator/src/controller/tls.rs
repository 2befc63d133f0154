//! A store's TLS Secrets as the operator needs them: checked before anything is applied (a
//! missing or malformed Secret stops the reconcile with a condition naming it, instead of
//! pods that never start), and the store's CA for the operator's own clients of the nodes.

use super::build::{TLS_CA_KEY, TLS_CERT_KEY, TLS_KEY_KEY, tls_server_name};
use crate::backup::access::secret_value;
use crate::crd::{CLIENT_TOKENS_KEY, TlsSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use shardedstore_node::tls::{ClientTls, pem_certs};

/// Condition reason of a store whose TLS Secrets are missing or malformed.
pub const TLS_SECRET_INVALID: &str = "TLSSecretInvalid";

/// What is wrong with a TLS Secret, phrased for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsSecretProblem {
    #[error("Secret {0} (spec.tls) does not exist")]
    Missing(String),
    #[error("Secret {secret} (spec.tls) has no key {key}")]
    MissingKey { secret: String, key: &'static str },
    #[error("{key} of Secret {secret} (spec.tls) is not {what}")]
    Malformed {
        secret: String,
        key: &'static str,
        what: &'static str,
    },
    #[error("key tokens of Secret {0} (spec.tls.clientTokensSecretName) lists no token")]
    NoTokens(String),
}

/// Why the TLS Secrets could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSecretError {
    #[error("reading Secret {name}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Invalid(#[from] TlsSecretProblem),
}

fn need(secret: &Secret, name: &str, key: &'static str) -> Result<String, TlsSecretProblem> {
    secret_value(secret, key)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| TlsSecretProblem::MissingKey {
            secret: name.to_owned(),
            key,
        })
}

/// Checks the certificate Secret `name` (pure); returns its CA (PEM).
pub fn check_certificate_secret(name: &str, secret: &Secret) -> Result<String, TlsSecretProblem> {
    let malformed = |key, what| TlsSecretProblem::Malformed {
        secret: name.to_owned(),
        key,
        what,
    };
    let cert = need(secret, name, TLS_CERT_KEY)?;
    let key = need(secret, name, TLS_KEY_KEY)?;
    let ca = need(secret, name, TLS_CA_KEY)?;
    pem_certs(&cert).map_err(|_| malformed(TLS_CERT_KEY, "a PEM certificate"))?;
    PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|_| malformed(TLS_KEY_KEY, "a PEM private key"))?;
    pem_certs(&ca).map_err(|_| malformed(TLS_CA_KEY, "a PEM certificate"))?;
    Ok(ca)
}

/// Checks the client tokens Secret `name` (pure): at least one token, as the node requires.
pub fn check_tokens_secret(name: &str, secret: &Secret) -> Result<(), TlsSecretProblem> {
    let tokens = need(secret, name, CLIENT_TOKENS_KEY)?;
    let any = tokens
        .lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with('#'));
    if any {
        Ok(())
    } else {
        Err(TlsSecretProblem::NoTokens(name.to_owned()))
    }
}

async fn read(api: &Api<Secret>, name: &str) -> Result<Secret, TlsSecretError> {
    api.get_opt(name)
        .await
        .map_err(|source| TlsSecretError::Read {
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsSecretProblem::Missing(name.to_owned()).into())
}

/// Checks the store's TLS Secrets; returns how the operator's clients trust the nodes
/// (`None` without TLS).
pub async fn store_client_tls(
    client: &Client,
    namespace: &str,
    store: &str,
    tls: Option<&TlsSpec>,
) -> Result<Option<ClientTls>, TlsSecretError> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let ca = check_certificate_secret(&tls.secret_name, &read(&api, &tls.secret_name).await?)?;
    if let Some(name) = &tls.client_tokens_secret_name {
        check_tokens_secret(name, &read(&api, name).await?)?;
    }
    Ok(Some(ClientTls {
        ca_pem: Some(ca),
        server_name: Some(tls_server_name(store, namespace)),
        ..ClientTls::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    fn material() -> Result<(String, String), rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec!["kv.ns.svc".to_owned()])?.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    #[test]
    fn a_complete_secret_yields_its_ca() -> Result<(), Box<dyn std::error::Error>> {
        let (cert, key) = material()?;
        let s = secret(&[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &cert)]);
        assert_eq!(check_certificate_secret("kv-tls", &s)?, cert);
        Ok(())
    }

    #[test]
    fn missing_and_malformed_keys_are_named() -> Result<(), Box<dyn std::error::Error>> {
        let (cert, key) = material()?;
        let s = secret(&[("tls.crt", &cert), ("tls.key", &key)]);
        assert_eq!(
            check_certificate_secret("kv-tls", &s)
                .err()
                .map(|e| e.to_string()),
            Some("Secret kv-tls (spec.tls) has no key ca.crt".to_owned())
        );
        let s = secret(&[("tls.crt", &cert), ("tls.key", "junk"), ("ca.crt", &cert)]);
        assert_eq!(
            check_certificate_secret("kv-tls", &s),
            Err(TlsSecretProblem::Malformed {
                secret: "kv-tls".to_owned(),
                key: "tls.key",
                what: "a PEM private key"
            })
        );
        let s = secret(&[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", "junk")]);
        assert!(check_certificate_secret("kv-tls", &s).is_err());
        Ok(())
    }

    #[test]
    fn a_tokens_secret_needs_one_token() {
        assert_eq!(
            check_tokens_secret("t", &secret(&[("tokens", "a\n")])),
            Ok(())
        );
        assert_eq!(
            check_tokens_secret("t", &secret(&[("tokens", "# none\n\n")])),
            Err(TlsSecretProblem::NoTokens("t".to_owned()))
        );
        assert!(check_tokens_secret("t", &secret(&[("other", "a")])).is_err());
    }
}
