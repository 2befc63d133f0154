//! Status conditions (`Ready`, `Available`, `Progressing`, `Degraded`, `Reconciled`): merging a freshly
//! computed condition with the previous one so `lastTransitionTime` moves only on a flip.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// Whether the last reconcile applied everything; when it did not, the reason is the
/// failure's category (e.g. `ApplyFailed`) and the message its cause.
pub const RECONCILED: &str = "Reconciled";

/// A condition as computed, before it gets its timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Observed {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// The new list of conditions: one per `observed`, keeping the previous transition time of
/// any condition whose status did not change.
pub fn merge(
    previous: &[Condition],
    observed: &[Observed],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    observed
        .iter()
        .map(|o| {
            let status = status_str(o.status);
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == o.type_ && p.status == status)
                .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
            Condition {
                type_: o.type_.to_owned(),
                status: status.to_owned(),
                reason: o.reason.to_owned(),
                message: o.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The status (`True`/`False`/`Unknown`) of condition `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn transition_time_changes_only_when_the_status_flips() {
        let first = merge(
            &[],
            &[Observed::new(READY, false, "PodsNotReady", "0/3")],
            Some(1),
            &at(100),
        );
        assert_eq!(first[0].last_transition_time, at(100));
        assert_eq!(first[0].status, "False");

        // Same status, new reason and message: the transition time stays.
        let second = merge(
            &first,
            &[Observed::new(READY, false, "PartitionsUnavailable", "2/3")],
            Some(2),
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].reason, "PartitionsUnavailable");
        assert_eq!(second[0].observed_generation, Some(2));

        // Flip: the transition time moves.
        let third = merge(
            &second,
            &[Observed::new(READY, true, "AllPartitionsAvailable", "")],
            Some(2),
            &at(300),
        );
        assert_eq!(third[0].last_transition_time, at(300));
        assert_eq!(third[0].status, "True");

        // Conditions are tracked by type independently.
        let fourth = merge(
            &third,
            &[
                Observed::new(READY, true, "AllPartitionsAvailable", ""),
                Observed::new(DEGRADED, false, "Healthy", ""),
            ],
            Some(2),
            &at(400),
        );
        assert_eq!(fourth[0].last_transition_time, at(300));
        assert_eq!(fourth[1].last_transition_time, at(400));
        assert_eq!(
            find(&fourth, DEGRADED).map(|c| c.status.as_str()),
            Some("False")
        );
    }
}
