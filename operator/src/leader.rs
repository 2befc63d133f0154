//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas are
//! safe: only the holder runs the controller and the coordinators.
//!
//! Expiry is judged the way client-go does it: by how long the Lease has been *observed*
//! unchanged on this replica's monotonic clock, never by comparing another replica's
//! `renewTime` with our wall clock (clocks drift; Instants do not jump).
//!
//! The holder's side of the same rule ([`Tenure`]): another replica can take over no earlier
//! than one lease duration after it first saw our last successful renewal, and it cannot see
//! that renewal before we sent it. So leadership is held until the *send time* of the last
//! confirmed renewal plus the lease duration, minus a safety margin (one renew period), and
//! every attempt is cut off at that deadline: a renewal that hangs counts as failed, and the
//! replica stops coordinating before anyone else may start.

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

/// How long this replica may still act as leader: the holder's side of the Lease rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tenure {
    valid_until: Option<Instant>,
}

impl Tenure {
    /// A renewal (or acquisition) sent at `sent` was confirmed by the API server. Another
    /// replica takes over at `sent + lease_duration` at the earliest; we stop `margin` before.
    pub fn renewed(&mut self, sent: Instant, lease_duration: Duration, margin: Duration) {
        self.valid_until = Some(sent + lease_duration.saturating_sub(margin));
    }

    /// The Lease is someone else's (or leadership was given up).
    pub fn lost(&mut self) {
        self.valid_until = None;
    }

    /// Whether this replica may coordinate at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|d| now < d)
    }

    /// How long an attempt starting at `now` may take: a renew period, and never past the
    /// end of the tenure (a renewal that confirms later than that is of no use).
    pub fn attempt_timeout(&self, now: Instant, renew_every: Duration) -> Duration {
        match self.valid_until {
            Some(d) => renew_every.min(d.saturating_duration_since(now)),
            None => renew_every,
        }
    }

    /// When the tenure ends, if held.
    pub fn deadline(&self) -> Option<Instant> {
        self.valid_until
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
    /// is given up at the end of the [`Tenure`] of the last confirmed renewal, even while a
    /// renewal attempt still hangs, so that we stop before anyone else may start.
    pub async fn run(self, leader: watch::Sender<bool>) {
        let mut tenure = Tenure::default();
        loop {
            let sent = Instant::now();
            let limit = tenure.attempt_timeout(sent, self.renew_every);
            match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => tenure.renewed(sent, self.lease_duration, self.renew_every),
                Ok(Ok(false)) => tenure.lost(),
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election round failed"),
                Err(_) => tracing::warn!(?limit, "leader election round timed out"),
            }
            let holds = tenure.holds(Instant::now());
            if !holds {
                tenure.lost();
            }
            leader.send_if_modified(|l| std::mem::replace(l, holds) != holds);
            // Sleep until the next renewal, waking at the end of the tenure to give up on time.
            let next = tokio::time::Instant::now() + self.renew_every;
            let wake = match tenure.deadline() {
                Some(d) => next.min(tokio::time::Instant::from_std(d)),
                None => next,
            };
            tokio::time::sleep_until(wake).await;
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

    /// Issue item 8 (two operators): leadership ends one lease after the *send* time of the
    /// last confirmed renewal (minus the margin), however long that renewal took to confirm,
    /// and an attempt never runs past that end: a hanging renewal is a failed one.
    #[test]
    fn tenure_ends_a_lease_after_the_last_confirmed_renewal_was_sent() {
        const RENEW: Duration = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut t = Tenure::default();
        assert!(!t.holds(t0));
        assert_eq!(t.attempt_timeout(t0, RENEW), RENEW);
        // The renewal sent at t0 confirmed only 4 s later: still measured from t0.
        t.renewed(t0, LEASE, RENEW);
        let end = t0 + LEASE - RENEW;
        assert!(t.holds(t0 + Duration::from_secs(4)));
        assert!(t.holds(end - Duration::from_millis(1)));
        assert!(!t.holds(end), "another replica may take over at t0 + lease");
        // An attempt started 8 s in may hang for 2 s at most.
        assert_eq!(
            t.attempt_timeout(t0 + Duration::from_secs(8), RENEW),
            Duration::from_secs(2)
        );
        assert_eq!(t.attempt_timeout(end, RENEW), Duration::ZERO);
        t.lost();
        assert!(!t.holds(t0));
    }
}
