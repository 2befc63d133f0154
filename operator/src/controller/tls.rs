//! A store's TLS Secrets as the operator needs them: checked before anything is applied (a
//! missing or malformed Secret stops the reconcile with a condition naming it, instead of
//! pods that never start), and the store's CA for the operator's own clients of the nodes.
//! With `issuerRef`, the operator first applies the cert-manager `Certificate` whose Secret
//! it then checks like any other.

use super::apply::FIELD_MANAGER;
use super::build::Owner;
use super::build::{TLS_CA_KEY, TLS_CERT_KEY, TLS_KEY_KEY, tls_server_name};
use crate::backup::access::secret_value;
use crate::crd::{CLIENT_TOKENS_KEY, IssuerRef, TlsSpec, issued_secret_name};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use shardedstore_node::tls::{ClientTls, pem_certs, verify_chain_for};

/// Condition reason of a store whose TLS Secrets are missing or malformed.
pub const TLS_SECRET_INVALID: &str = "TLSSecretInvalid";
/// Condition reason of a store with `issuerRef` in a cluster without cert-manager's CRDs.
pub const CERT_MANAGER_MISSING: &str = "CertManagerMissing";
/// Condition reason of a store whose cert-manager Certificate has not been issued yet.
pub const CERTIFICATE_PENDING: &str = "CertificatePending";

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
    #[error(
        "spec.tls.issuerRef needs cert-manager, but the cluster does not serve its Certificate resource (certificates.cert-manager.io/v1): install cert-manager or use spec.tls.secretName"
    )]
    CertManagerMissing,
    #[error(
        "waiting for cert-manager to issue Certificate {certificate} (issuer {issuer}) into Secret {certificate}"
    )]
    CertificatePending { certificate: String, issuer: String },
    #[error(
        "tls.crt of Secret {secret} (spec.tls) is not valid for {expected}, the name nodes and clients verify: {reason}"
    )]
    WrongCertificate {
        secret: String,
        expected: String,
        reason: String,
    },
}

impl TlsSecretProblem {
    /// The condition reason this problem is reported under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::CertManagerMissing => CERT_MANAGER_MISSING,
            Self::CertificatePending { .. } => CERTIFICATE_PENDING,
            _ => TLS_SECRET_INVALID,
        }
    }
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
    #[error("applying the cert-manager Certificate {name}")]
    ApplyCertificate {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Invalid(#[from] TlsSecretProblem),
}

/// cert-manager's `Certificate` resource (v1).
fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        crate::crd::CERT_MANAGER_GROUP,
        "v1",
        "Certificate",
    ))
}

/// The cert-manager `Certificate` of a store with `issuerRef` (pure): the names nodes and
/// clients use for the store, signed by `issuer`, written into `<store>-tls`, owned by the
/// store so it goes with it.
pub fn certificate(owner: &Owner, issuer: &IssuerRef) -> DynamicObject {
    let (store, namespace) = (owner.name.as_str(), owner.namespace.as_str());
    let name = issued_secret_name(store);
    let mut object = DynamicObject::new(&name, &certificate_resource());
    object.metadata = owner.child_meta(name.clone());
    object.data = serde_json::json!({
        "spec": {
            "secretName": name,
            "commonName": tls_server_name(store, namespace),
            "dnsNames": [
                tls_server_name(store, namespace),
                format!("{store}.{namespace}"),
                store,
            ],
            "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "issuerRef": {
                "name": issuer.name,
                "kind": issuer.kind.as_str(),
                "group": issuer.group,
            },
        }
    });
    object
}

/// Applies the store's Certificate; a cluster without cert-manager's CRDs is a problem for
/// the user, not a transient failure.
async fn apply_certificate(
    client: &Client,
    owner: &Owner,
    issuer: &IssuerRef,
) -> Result<(), TlsSecretError> {
    let resource = certificate_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &owner.namespace, &resource);
    let object = certificate(owner, issuer);
    let name = issued_secret_name(&owner.name);
    match api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
    {
        Ok(_) => Ok(()),
        // No such resource type: the CRD is not installed.
        Err(kube::Error::Api(s)) if s.code == 404 => {
            Err(TlsSecretProblem::CertManagerMissing.into())
        }
        Err(source) => Err(TlsSecretError::ApplyCertificate { name, source }),
    }
}

fn need(secret: &Secret, name: &str, key: &'static str) -> Result<String, TlsSecretProblem> {
    secret_value(secret, key)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| TlsSecretProblem::MissingKey {
            secret: name.to_owned(),
            key,
        })
}

/// Checks the certificate Secret `name` (pure): its keys are there and parse, and `tls.crt`
/// is signed by its `ca.crt`, valid now and names `expected` (`<store>.<namespace>.svc`,
/// which every node and client verifies). Returns its CA (PEM).
pub fn check_certificate_secret(
    name: &str,
    secret: &Secret,
    expected: &str,
) -> Result<String, TlsSecretProblem> {
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
    verify_chain_for(&cert, &ca, expected).map_err(|e| TlsSecretProblem::WrongCertificate {
        secret: name.to_owned(),
        expected: expected.to_owned(),
        reason: e.to_string(),
    })?;
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

/// With `issuerRef`, applies the store's cert-manager Certificate (owned by `owner`);
/// then checks the store's TLS Secrets as [`store_client_tls`] does.
pub async fn ensure_store_tls(
    client: &Client,
    owner: &Owner,
    tls: Option<&TlsSpec>,
) -> Result<Option<ClientTls>, TlsSecretError> {
    if let Some(issuer) = tls.and_then(|t| t.issuer_ref.as_ref()) {
        apply_certificate(client, owner, issuer).await?;
    }
    store_client_tls(client, &owner.namespace, &owner.name, tls).await
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
    let server_name = tls_server_name(store, namespace);
    let secret_name = tls.certificate_secret(store);
    let secret = match (read(&api, &secret_name).await, &tls.issuer_ref) {
        (Err(TlsSecretError::Invalid(TlsSecretProblem::Missing(_))), Some(issuer)) => {
            return Err(TlsSecretProblem::CertificatePending {
                certificate: secret_name,
                issuer: format!("{} {}", issuer.kind.as_str(), issuer.name),
            }
            .into());
        }
        (result, _) => result?,
    };
    let ca = check_certificate_secret(&secret_name, &secret, &server_name)?;
    if let Some(name) = &tls.client_tokens_secret_name {
        check_tokens_secret(name, &read(&api, name).await?)?;
    }
    Ok(Some(ClientTls {
        ca_pem: Some(ca),
        server_name: Some(server_name),
        ..ClientTls::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
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
        material_for("kv.ns.svc")
    }

    fn material_for(name: &str) -> Result<(String, String), rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])?.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A CA and a leaf for `names` signed by it: (ca, leaf, leaf key).
    fn signed_for(names: &[&str]) -> Result<(String, String, String), rcgen::Error> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let leaf = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )?
        .signed_by(&key, &issuer)?;
        Ok((ca.pem(), leaf.pem(), key.serialize_pem()))
    }

    /// Issue 10 item 3: a certificate that does not name `<store>.<namespace>.svc` (or is
    /// not signed by the Secret's CA) is refused with the expected name in the message.
    #[test]
    fn a_certificate_for_another_name_or_ca_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let (ca, leaf, key) = signed_for(&["kv", "kv.ns.svc"])?;
        let s = secret(&[("tls.crt", &leaf), ("tls.key", &key), ("ca.crt", &ca)]);
        assert_eq!(check_certificate_secret("kv-tls", &s, "kv.ns.svc")?, ca);
        let message = check_certificate_secret("kv-tls", &s, "kv.other.svc")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            message,
            "tls.crt of Secret kv-tls (spec.tls) is not valid for kv.other.svc, the name nodes \
             and clients verify: its subject alternative names do not include that name"
        );
        let (other_ca, _, _) = signed_for(&["kv.ns.svc"])?;
        let s = secret(&[("tls.crt", &leaf), ("tls.key", &key), ("ca.crt", &other_ca)]);
        let message = check_certificate_secret("kv-tls", &s, "kv.ns.svc")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.ends_with("it is not signed by the CA in ca.crt"),
            "{message}"
        );
        let (cert, key) = material_for("elsewhere.example")?;
        let s = secret(&[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &cert)]);
        assert!(matches!(
            check_certificate_secret("kv-tls", &s, "kv.ns.svc"),
            Err(TlsSecretProblem::WrongCertificate { .. })
        ));
        Ok(())
    }

    #[test]
    fn a_complete_secret_yields_its_ca() -> Result<(), Box<dyn std::error::Error>> {
        let (cert, key) = material()?;
        let s = secret(&[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &cert)]);
        assert_eq!(check_certificate_secret("kv-tls", &s, "kv.ns.svc")?, cert);
        Ok(())
    }

    #[test]
    fn missing_and_malformed_keys_are_named() -> Result<(), Box<dyn std::error::Error>> {
        let (cert, key) = material()?;
        let s = secret(&[("tls.crt", &cert), ("tls.key", &key)]);
        assert_eq!(
            check_certificate_secret("kv-tls", &s, "kv.ns.svc")
                .err()
                .map(|e| e.to_string()),
            Some("Secret kv-tls (spec.tls) has no key ca.crt".to_owned())
        );
        let s = secret(&[("tls.crt", &cert), ("tls.key", "junk"), ("ca.crt", &cert)]);
        assert_eq!(
            check_certificate_secret("kv-tls", &s, "kv.ns.svc"),
            Err(TlsSecretProblem::Malformed {
                secret: "kv-tls".to_owned(),
                key: "tls.key",
                what: "a PEM private key"
            })
        );
        let s = secret(&[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", "junk")]);
        assert!(check_certificate_secret("kv-tls", &s, "kv.ns.svc").is_err());
        Ok(())
    }

    /// Issue 10 (cert-manager): the Certificate names the Service, is owned by the store and
    /// writes the Secret the pods mount.
    #[test]
    fn the_certificate_names_the_service_and_the_mounted_secret() {
        let owner = Owner {
            name: "kv".to_owned(),
            namespace: "ns".to_owned(),
            owner_ref: OwnerReference {
                name: "kv".to_owned(),
                uid: "u-1".to_owned(),
                ..OwnerReference::default()
            },
        };
        let issuer = IssuerRef {
            name: "ca".to_owned(),
            kind: crate::crd::IssuerKind::ClusterIssuer,
            group: "cert-manager.io".to_owned(),
        };
        let cert = certificate(&owner, &issuer);
        assert_eq!(cert.metadata.name.as_deref(), Some("kv-tls"));
        assert_eq!(cert.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            cert.metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].uid.as_str()),
            Some("u-1")
        );
        let spec = &cert.data["spec"];
        assert_eq!(spec["secretName"], "kv-tls");
        assert_eq!(
            spec["dnsNames"],
            serde_json::json!(["kv.ns.svc", "kv.ns", "kv"])
        );
        assert_eq!(
            spec["issuerRef"],
            serde_json::json!({"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        let tls = TlsSpec {
            secret_name: None,
            issuer_ref: Some(issuer),
            client_tokens_secret_name: None,
            mutual_tls: false,
        };
        assert_eq!(tls.certificate_secret("kv"), "kv-tls");
        assert_eq!(
            TlsSecretProblem::CertManagerMissing.reason(),
            CERT_MANAGER_MISSING
        );
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
