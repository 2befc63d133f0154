//! TLS material for a store on the cluster: a CA and one server certificate naming the
//! store's client Service (what every node serves), as PEM, generated with rcgen; and the
//! Secrets `spec.tls` names.

use super::{Cluster, E2eError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA and the store's server certificate (PEM).
pub struct StoreCerts {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// A fresh CA and a server certificate for `names` signed by it.
pub fn store_certs(names: &[String]) -> Result<StoreCerts, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ShardedStore e2e CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(names.to_vec())?;
    p.distinguished_name
        .push(DnType::CommonName, "shardedstore-node");
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer)?;
    Ok(StoreCerts {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Creates (or replaces) the `kubernetes.io/tls` Secret `name` with `ca.crt`, as
/// cert-manager writes it.
pub fn apply_tls_secret(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    certs: &StoreCerts,
) -> Result<(), E2eError> {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n  ca.crt: |\n{}\n",
        indent(&certs.cert),
        indent(&certs.key),
        indent(&certs.ca),
    );
    cluster.kubectl_with_input(&["apply", "-n", ns, "-f", "-"], Some(&yaml))?;
    Ok(())
}

/// Creates (or replaces) the client tokens Secret `name` (key `tokens`, one per line).
pub fn apply_tokens_secret(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    tokens: &[&str],
) -> Result<(), E2eError> {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  tokens: |\n{}\n",
        indent(&tokens.join("\n")),
    );
    cluster.kubectl_with_input(&["apply", "-n", ns, "-f", "-"], Some(&yaml))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_is_signed_by_the_ca() -> Result<(), Box<dyn std::error::Error>> {
        let c = store_certs(&["kv.ns.svc".to_owned()])?;
        assert!(c.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(c.ca, c.cert);
        assert!(c.key.contains("PRIVATE KEY"));
        Ok(())
    }
}
