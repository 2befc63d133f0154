//! The process-wide rustls crypto provider. Two are linked in — ring (the Kubernetes client)
//! and aws-lc-rs (the S3 client of backups) — so rustls cannot choose one by itself and a
//! Kubernetes client built before a choice would panic. Every binary and test harness that
//! builds a Kubernetes client calls [`install_default_provider`] first.

/// Makes ring the process default (a second call, or an earlier choice, changes nothing).
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
