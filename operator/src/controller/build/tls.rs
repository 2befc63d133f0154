//! What a store's `tls` section adds to its pods: the certificate Secret and the client
//! tokens Secret as read-only files, and the node flags (as environment variables) that
//! point at them.

use super::names::client_service_name;
use crate::crd::{CLIENT_TOKENS_KEY, TlsSpec};
use k8s_openapi::api::core::v1::{EnvVar, KeyToPath, SecretVolumeSource, Volume, VolumeMount};

/// Keys of a `kubernetes.io/tls` Secret (with the CA, as cert-manager writes it).
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
pub const TLS_CA_KEY: &str = "ca.crt";
const TLS_VOLUME: &str = "tls";
const TLS_DIR: &str = "/var/run/shardedstore/tls";
const TOKENS_VOLUME: &str = "client-tokens";
const TOKENS_DIR: &str = "/var/run/shardedstore/client-tokens";

/// The name every node's certificate is verified for: the client Service's DNS name (the
/// map addresses pods by IP, which a certificate issued in advance cannot name).
pub fn tls_server_name(store: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc", client_service_name(store))
}

fn secret_volume(volume: &str, secret: &str, keys: &[&str]) -> Volume {
    Volume {
        name: volume.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(
                keys.iter()
                    .map(|k| KeyToPath {
                        key: (*k).to_owned(),
                        path: (*k).to_owned(),
                        mode: None,
                    })
                    .collect(),
            ),
            // Readable by the node through its fsGroup, by no one else.
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

fn mount(volume: &str, dir: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: dir.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }
}

/// Volumes, mounts and environment of the node container for `tls` (nothing without it).
pub fn tls_pod_parts(
    tls: Option<&TlsSpec>,
    store: &str,
    namespace: &str,
) -> (Vec<Volume>, Vec<VolumeMount>, Vec<EnvVar>) {
    let Some(tls) = tls else {
        return (Vec::new(), Vec::new(), Vec::new());
    };
    let file = |key: &str| format!("{TLS_DIR}/{key}");
    let mut volumes = vec![secret_volume(
        TLS_VOLUME,
        &tls.certificate_secret(store),
        &[TLS_CERT_KEY, TLS_KEY_KEY, TLS_CA_KEY],
    )];
    let mut mounts = vec![mount(TLS_VOLUME, TLS_DIR)];
    let mut vars = vec![
        env("SHARDEDSTORE_TLS_CERT", file(TLS_CERT_KEY)),
        env("SHARDEDSTORE_TLS_KEY", file(TLS_KEY_KEY)),
        env("SHARDEDSTORE_TLS_CA", file(TLS_CA_KEY)),
        env(
            "SHARDEDSTORE_TLS_SERVER_NAME",
            tls_server_name(store, namespace),
        ),
    ];
    if tls.mutual_tls {
        vars.push(env("SHARDEDSTORE_TLS_CLIENT_CA", file(TLS_CA_KEY)));
    }
    if let Some(secret) = &tls.client_tokens_secret_name {
        volumes.push(secret_volume(TOKENS_VOLUME, secret, &[CLIENT_TOKENS_KEY]));
        mounts.push(mount(TOKENS_VOLUME, TOKENS_DIR));
        vars.push(env(
            "SHARDEDSTORE_CLIENT_TOKEN_FILE",
            format!("{TOKENS_DIR}/{CLIENT_TOKENS_KEY}"),
        ));
    }
    (volumes, mounts, vars)
}
