//! A store's `tls` section: which Secret holds its certificate, and how clients authenticate.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// TLS on the client and peer ports (the metrics port stays plain HTTP so probes and
/// Prometheus need no credentials).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret in the store's namespace holding `tls.crt`, `tls.key` and `ca.crt` (the layout
    /// of a `kubernetes.io/tls` Secret written by cert-manager). Every pod serves this one
    /// certificate on its client and peer ports; it must name the client Service,
    /// `<store>.<namespace>.svc`: nodes, the operator and clients given `--tls-server-name`
    /// verify it for that name, since the partition map addresses pods by IP.
    #[schemars(length(min = 1))]
    pub secret_name: String,

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

/// Key of the client tokens in their Secret.
pub const CLIENT_TOKENS_KEY: &str = "tokens";
