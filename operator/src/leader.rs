//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas are
//! safe: only the holder runs the controller and the coordinators.
//!
//! Expiry is judged the way client-go does it: by how long the Lease has been *observed*
//! unchanged on this replica's monotonic clock, never by comparing another replica's
//! `renewTime` with our wall clock (clocks drift; Instants do not jump).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

/// Why leader election could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading Lease {name}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing Lease {name}")]
    Write {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What to do with the Lease as last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Free or expired: take it.
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Held by someone else whose lease is still running.
    Follow { holder: String },
}

/// Pure decision from the Lease's holder, our identity and how long the Lease has been seen
/// unchanged.
pub fn decide(
    holder: Option<&str>,
    me: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> Decision {
    match holder {
        None | Some("") => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(_) if unchanged_for >= lease_duration => Decision::Acquire,
        Some(h) => Decision::Follow {
            holder: h.to_owned(),
        },
    }
}

/// The last version of the Lease seen, and when this replica first saw it.
#[derive(Default)]
struct Observed {
    resource_version: Option<String>,
    since: Option<Instant>,
}

/// Acquires and renews one Lease under one identity.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_every: Duration,
    observed: Arc<Mutex<Observed>>,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
        lease_duration: Duration,
        renew_every: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity,
            lease_duration,
            renew_every,
            observed: Arc::new(Mutex::new(Observed::default())),
        }
    }

    /// Tries once to acquire or renew; true when this replica holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|source| LeaderError::Read {
                name: self.name.clone(),
                source,
            })?;
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return self.write(self.api.create(&PostParams::default(), &lease).await);
        };
        let unchanged_for = {
            let mut observed = self.observed.lock().await;
            if observed.resource_version != lease.metadata.resource_version {
                observed.resource_version = lease.metadata.resource_version.clone();
                observed.since = Some(Instant::now());
            }
            observed.since.map_or(Duration::ZERO, |s| s.elapsed())
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        // The holder's own duration governs, as client-go does.
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.lease_duration, Duration::from_secs);
        match decide(
            spec.holder_identity.as_deref(),
            &self.identity,
            unchanged_for,
            duration,
        ) {
            Decision::Follow { .. } => Ok(false),
            Decision::Renew => {
                spec.renew_time = Some(now);
                spec.lease_duration_seconds = Some(seconds);
                self.write(
                    self.api
                        .replace(&self.name, &PostParams::default(), &lease)
                        .await,
                )
            }
            Decision::Acquire => {
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                spec.lease_duration_seconds = Some(seconds);
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                // `replace` carries the resourceVersion just read: of two candidates, one wins.
                self.write(
                    self.api
                        .replace(&self.name, &PostParams::default(), &lease)
                        .await,
                )
            }
        }
    }

    fn write(&self, result: Result<Lease, kube::Error>) -> Result<bool, LeaderError> {
        match result {
            Ok(_) => Ok(true),
            // Someone else wrote first (conflict or concurrent create): not ours this round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(source) => Err(LeaderError::Write {
                name: self.name.clone(),
                source,
            }),
        }
    }

    /// Keeps trying to acquire, then renewing, publishing leadership on `leader`. Leadership
    /// is given up when no renewal succeeded for the lease duration (minus one renew period,
    /// so we stop before anyone else may start).
    pub async fn run(self, leader: watch::Sender<bool>) {
        let mut last_renewal: Option<Instant> = None;
        let give_up_after = self.lease_duration.saturating_sub(self.renew_every);
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renewal = Some(Instant::now());
                    leader.send_if_modified(|l| !std::mem::replace(l, true));
                }
                Ok(false) => {
                    last_renewal = None;
                    leader.send_if_modified(|l| std::mem::replace(l, false));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election round failed");
                    if last_renewal.is_some_and(|t| t.elapsed() >= give_up_after) {
                        last_renewal = None;
                        leader.send_if_modified(|l| std::mem::replace(l, false));
                    }
                }
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }

    /// Gives the Lease up (on clean shutdown) so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "releasing the leader Lease failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn free_or_expired_leases_are_acquired_live_ones_followed() {
        assert_eq!(decide(None, "a", Duration::ZERO, LEASE), Decision::Acquire);
        assert_eq!(
            decide(Some(""), "a", Duration::ZERO, LEASE),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some("a"), "a", Duration::from_secs(60), LEASE),
            Decision::Renew
        );
        assert_eq!(
            decide(Some("b"), "a", Duration::from_secs(14), LEASE),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(decide(Some("b"), "a", LEASE, LEASE), Decision::Acquire);
    }
}
