//! Pure decisions of the backup controller: what a ShardedStoreBackup needs now, where a
//! scheduled backup goes, and which conditions its status carries.

use super::schedule::Schedule;
use crate::crd::backup::{BackupPhase, ShardedStoreBackupSpec, ShardedStoreBackupStatus};
use chrono::{DateTime, Utc};

/// Default number of scheduled backups kept.
pub const DEFAULT_KEEP: usize = 7;

/// What to do with a ShardedStoreBackup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take a backup into `url` now.
    Start { url: String },
    /// A backup of this resource is running in this process.
    Running,
    /// A schedule: wait until the next time (recorded in the status).
    WaitUntil(DateTime<Utc>),
    /// A one-off backup that completed or failed: nothing more to do.
    Finished,
    /// The spec cannot be acted on (reported as the `Failed` condition).
    Invalid(String),
}

/// Location of the backup a schedule takes at `at`.
pub fn scheduled_url(base: &str, name: &str, at: DateTime<Utc>) -> String {
    format!(
        "{}/{name}-{}",
        base.trim_end_matches('/'),
        at.format("%Y%m%dT%H%M%SZ")
    )
}

fn parse_time(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Decides for one resource. `running`: a backup task of it is alive in this process (after
/// an operator restart none is, and an interrupted backup is taken again from the start).
pub fn decide(
    name: &str,
    spec: &ShardedStoreBackupSpec,
    status: Option<&ShardedStoreBackupStatus>,
    running: bool,
    now: DateTime<Utc>,
) -> Decision {
    if !spec.destination.url.starts_with("s3://") && !spec.destination.url.starts_with("file://") {
        return Decision::Invalid(format!(
            "destination.url {:?} must start with s3:// (or file://)",
            spec.destination.url
        ));
    }
    if running {
        return Decision::Running;
    }
    let Some(text) = &spec.schedule else {
        return match status.map(|s| s.phase) {
            Some(BackupPhase::Completed | BackupPhase::Failed) => Decision::Finished,
            _ => Decision::Start {
                url: spec.destination.url.clone(),
            },
        };
    };
    let schedule = match Schedule::parse(text) {
        Ok(s) => s,
        Err(e) => return Decision::Invalid(format!("schedule {text:?}: {e}")),
    };
    let next = status
        .and_then(|s| parse_time(&s.next_schedule_time))
        .or_else(|| schedule.next_after(now));
    match next {
        Some(t) if t <= now => Decision::Start {
            url: scheduled_url(&spec.destination.url, name, t),
        },
        Some(t) => Decision::WaitUntil(t),
        None => Decision::Invalid(format!("schedule {text:?} never fires")),
    }
}

/// The next time of a schedule after `after` (RFC 3339), for the status.
pub fn next_time(spec: &ShardedStoreBackupSpec, after: DateTime<Utc>) -> Option<String> {
    let s = Schedule::parse(spec.schedule.as_deref()?).ok()?;
    s.next_after(after).map(|t| t.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::backup::BackupDestination;
    use chrono::TimeZone;

    fn spec(schedule: Option<&str>) -> ShardedStoreBackupSpec {
        ShardedStoreBackupSpec {
            store: "kv".into(),
            destination: BackupDestination {
                url: "s3://bkt/kv/".into(),
                s3: None,
            },
            schedule: schedule.map(str::to_owned),
            keep: None,
            parallelism: None,
        }
    }

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, 0)
            .single()
            .unwrap_or_else(|| panic!("bad time"))
    }

    #[test]
    fn a_one_off_backup_starts_once() {
        let s = spec(None);
        assert_eq!(
            decide("b", &s, None, false, t(0, 0)),
            Decision::Start {
                url: "s3://bkt/kv/".into()
            }
        );
        assert_eq!(decide("b", &s, None, true, t(0, 0)), Decision::Running);
        let done = ShardedStoreBackupStatus {
            phase: BackupPhase::Completed,
            ..Default::default()
        };
        assert_eq!(
            decide("b", &s, Some(&done), false, t(0, 0)),
            Decision::Finished
        );
        // Interrupted by an operator restart: taken again.
        let running = ShardedStoreBackupStatus {
            phase: BackupPhase::Running,
            ..Default::default()
        };
        assert!(matches!(
            decide("b", &s, Some(&running), false, t(0, 0)),
            Decision::Start { .. }
        ));
    }

    #[test]
    fn a_schedule_waits_then_starts_into_a_timestamped_location() {
        let s = spec(Some("30 * * * *"));
        assert_eq!(
            decide("b", &s, None, false, t(1, 0)),
            Decision::WaitUntil(t(1, 30))
        );
        let waiting = ShardedStoreBackupStatus {
            next_schedule_time: Some(t(1, 30).to_rfc3339()),
            ..Default::default()
        };
        assert_eq!(
            decide("b", &s, Some(&waiting), false, t(1, 29)),
            Decision::WaitUntil(t(1, 30))
        );
        assert_eq!(
            decide("b", &s, Some(&waiting), false, t(1, 31)),
            Decision::Start {
                url: "s3://bkt/kv/b-20260301T013000Z".into()
            }
        );
        assert_eq!(next_time(&s, t(1, 30)), Some(t(2, 30).to_rfc3339()));
    }

    #[test]
    fn invalid_specs_are_reported() {
        assert!(matches!(
            decide("b", &spec(Some("bad")), None, false, t(0, 0)),
            Decision::Invalid(_)
        ));
        let mut s = spec(None);
        s.destination.url = "gs://x".into();
        assert!(matches!(
            decide("b", &s, None, false, t(0, 0)),
            Decision::Invalid(_)
        ));
    }
}
