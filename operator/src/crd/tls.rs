//! A store's `tls` section: where its certificate comes from (a Secret, or a cert-manager
//! issuer the operator requests it from), and how clients authenticate.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// TLS on the client and peer ports (the metrics port stays plain HTTP so probes and
/// Prometheus need no credentials).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.issuerRef)").message("tls needs exactly one of secretName (a Secret you provide) and issuerRef (a cert-manager issuer the operator requests the certificate from)"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret in the store's namespace holding `tls.crt`, `tls.key` and `ca.crt` (the layout
    /// of a `kubernetes.io/tls` Secret written by cert-manager). Every pod serves this one
    /// certificate on its client and peer ports; it must name the client Service,
    /// `<store>.<namespace>.svc`: nodes, the operator and clients given `--tls-server-name`
    /// verify it for that name, since the partition map addresses pods by IP. The operator
    /// checks that it does (and that `ca.crt` signed it) before using it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub secret_name: Option<String>,

    /// A cert-manager Issuer or ClusterIssuer: the operator creates a cert-manager
    /// `Certificate` `<store>-tls` (owned by the store) for `<store>.<namespace>.svc`,
    /// `<store>.<namespace>` and `<store>`, written by cert-manager into the Secret
    /// `<store>-tls`, which is then used exactly as `secretName` (cert-manager adds its
    /// `ca.crt`). Needs cert-manager installed in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,

    /// Secret in the store's namespace whose key `tokens` lists the bearer tokens accepted on
    /// the client port, one per line. Without it (and without `mutualTls`) any client that
    /// trusts the CA may read and write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub client_tokens_secret_name: Option<String>,

    /// Authenticate clients by certificate: a client certificate signed by the Secret's
    /// `ca.crt` is accepted (as is a token from `clientTokensSecretName`, when set).
    #[serde(default)]
    pub mutual_tls: bool,
}

/// The cert-manager issuer that signs a store's certificate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the Issuer (in the store's namespace) or ClusterIssuer.
    #[schemars(length(min = 1))]
    pub name: String,
    /// `Issuer` or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// API group of the issuer (`cert-manager.io`; another group for external issuers).
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1))]
    pub group: String,
}

/// Kind of a cert-manager issuer.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issuer => "Issuer",
            Self::ClusterIssuer => "ClusterIssuer",
        }
    }
}

fn default_issuer_group() -> String {
    CERT_MANAGER_GROUP.to_owned()
}

/// API group of cert-manager's resources.
pub const CERT_MANAGER_GROUP: &str = "cert-manager.io";

impl TlsSpec {
    /// The Secret the pods mount: `secretName`, or the one cert-manager writes for
    /// `issuerRef` (`<store>-tls`).
    pub fn certificate_secret(&self, store: &str) -> String {
        match &self.secret_name {
            Some(name) => name.clone(),
            None => issued_secret_name(store),
        }
    }
}

/// Name of the cert-manager Certificate of a store with `issuerRef`, and of the Secret
/// cert-manager writes for it.
pub fn issued_secret_name(store: &str) -> String {
    format!("{store}-tls")
}

/// Key of the client tokens in their Secret.
pub const CLIENT_TOKENS_KEY: &str = "tokens";
