//! Validation of a ShardedStore spec (pure): every problem is reported at once, so one status
//! update tells the user everything to fix.
//!
//! The CRD's schema and CEL rules catch most of these at admission; this check is the
//! operator's own guard (a CRD applied without validation, or rules the schema cannot express).

use crate::crd::ShardedStoreSpec;
use std::time::Duration;

/// One thing wrong with a spec, phrased for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    #[error("nodes must be at least 1, got {0}")]
    NoNodes(i32),
    #[error("partitions must be in 1..=4096, got {0}")]
    PartitionsOutOfRange(i32),
    #[error("replicationFactor must be in 1..=5, got {0}")]
    ReplicationFactorOutOfRange(i32),
    #[error("minInSync must be in 1..=replicationFactor ({replication_factor}), got {min_in_sync}")]
    MinInSyncOutOfRange {
        min_in_sync: i32,
        replication_factor: i32,
    },
    #[error("image must not be empty")]
    EmptyImage,
    #[error("image is not set and the operator has no default node image (--default-node-image)")]
    NoImage,
    #[error("failover.replaceAfter {0:?} is not a duration such as 90s, 5m or 1h30m")]
    BadReplaceAfter(String),
    #[error("failover.lagTimeout {0:?} is not a positive duration such as 2s or 1500ms")]
    BadLagTimeout(String),
    #[error("rebalance.maxConcurrentMovesPerNode must be at least 1, got {0}")]
    NoMovesAllowed(i32),
    #[error("rebalance.maxMoveBytesPerNode must be positive, got {0}")]
    NonPositiveMoveBytes(i64),
    #[error("rebalance.bandwidthBytesPerSecond must be positive, got {0}")]
    NonPositiveBandwidth(i64),
    #[error("failover.maxConcurrentReplacements must be at least 1, got {0}")]
    NoReplacementsAllowed(i32),
    #[error("limits.{field} must be positive, got {value}")]
    NonPositiveLimit { field: &'static str, value: i32 },
    #[error("placement.zoneLabel must not be empty")]
    EmptyZoneLabel,
    #[error(
        "tuning.checkpointInterval {0:?} is not a duration from 50ms to 60s, such as 1s or 250ms"
    )]
    BadCheckpointInterval(String),
    #[error("tuning.appendsInFlight must be in 1..={APPENDS_IN_FLIGHT}, got {0}")]
    AppendsInFlightOutOfRange(i32),
    #[error("tuning.logWindowEntries must not be negative, got {0}")]
    NegativeLogWindowEntries(i64),
    #[error("tuning.logWindowBytes must be at least 1048576 (1 MiB), got {0}")]
    LogWindowBytesTooSmall(i64),
}

/// Smallest `tuning.logWindowBytes`.
const MIN_LOG_WINDOW_BYTES: i64 = 1 << 20;
/// Shortest and longest `tuning.checkpointInterval`: the node's own bounds.
const CHECKPOINT_INTERVAL: (Duration, Duration) =
    shardedstore_node::storage::wal::CHECKPOINT_INTERVAL_RANGE;
/// Most `tuning.appendsInFlight`: the node's own bound.
const APPENDS_IN_FLIGHT: i32 = shardedstore_node::replication::session::APPENDS_IN_FLIGHT as i32;

/// Why a spec cannot be acted on in its current state, beyond its own consistency.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapacityProblem {
    #[error(
        "cannot run {nodes} node(s) with replicationFactor {replication_factor}: every partition needs {replication_factor} distinct nodes"
    )]
    FewerNodesThanReplicas { nodes: i32, replication_factor: i32 },
}

/// Every problem of `spec`, in field order; empty when the spec is valid.
pub fn validate(spec: &ShardedStoreSpec) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    if spec.nodes < 1 {
        problems.push(SpecProblem::NoNodes(spec.nodes));
    }
    if !(1..=4096).contains(&spec.partitions) {
        problems.push(SpecProblem::PartitionsOutOfRange(spec.partitions));
    }
    if !(1..=5).contains(&spec.replication_factor) {
        problems.push(SpecProblem::ReplicationFactorOutOfRange(
            spec.replication_factor,
        ));
    }
    if let Some(min) = spec.min_in_sync
        && !(1..=spec.replication_factor).contains(&min)
    {
        problems.push(SpecProblem::MinInSyncOutOfRange {
            min_in_sync: min,
            replication_factor: spec.replication_factor,
        });
    }
    match spec.image.as_deref() {
        None => problems.push(SpecProblem::NoImage),
        Some(image) if image.trim().is_empty() => problems.push(SpecProblem::EmptyImage),
        Some(_) => {}
    }
    if spec.placement.zone_label.trim().is_empty() {
        problems.push(SpecProblem::EmptyZoneLabel);
    }
    if spec.rebalance.max_concurrent_moves_per_node < 1 {
        problems.push(SpecProblem::NoMovesAllowed(
            spec.rebalance.max_concurrent_moves_per_node,
        ));
    }
    if spec.rebalance.max_move_bytes_per_node < 1 {
        problems.push(SpecProblem::NonPositiveMoveBytes(
            spec.rebalance.max_move_bytes_per_node,
        ));
    }
    if let Some(bw) = spec.rebalance.bandwidth_bytes_per_second
        && bw < 1
    {
        problems.push(SpecProblem::NonPositiveBandwidth(bw));
    }
    if parse_duration(&spec.failover.replace_after).is_none() {
        problems.push(SpecProblem::BadReplaceAfter(
            spec.failover.replace_after.clone(),
        ));
    }
    if lag_timeout(spec).is_none() {
        problems.push(SpecProblem::BadLagTimeout(
            spec.failover.lag_timeout.clone(),
        ));
    }
    if spec.failover.max_concurrent_replacements < 1 {
        problems.push(SpecProblem::NoReplacementsAllowed(
            spec.failover.max_concurrent_replacements,
        ));
    }
    for (field, value) in [
        ("maxKeyBytes", spec.limits.max_key_bytes),
        ("maxValueBytes", spec.limits.max_value_bytes),
    ] {
        if value < 1 {
            problems.push(SpecProblem::NonPositiveLimit { field, value });
        }
    }
    let tuning = &spec.tuning;
    if let Some(text) = &tuning.checkpoint_interval
        && checkpoint_interval(spec).is_none()
    {
        problems.push(SpecProblem::BadCheckpointInterval(text.clone()));
    }
    if let Some(n) = tuning.appends_in_flight
        && !(1..=APPENDS_IN_FLIGHT).contains(&n)
    {
        problems.push(SpecProblem::AppendsInFlightOutOfRange(n));
    }
    if let Some(n) = tuning.log_window_entries
        && n < 0
    {
        problems.push(SpecProblem::NegativeLogWindowEntries(n));
    }
    if let Some(n) = tuning.log_window_bytes
        && n < MIN_LOG_WINDOW_BYTES
    {
        problems.push(SpecProblem::LogWindowBytesTooSmall(n));
    }
    problems
}

/// The spec's checkpoint interval, when set and within the node's bounds.
pub fn checkpoint_interval(spec: &ShardedStoreSpec) -> Option<Duration> {
    let d = parse_duration(spec.tuning.checkpoint_interval.as_deref()?)?;
    (CHECKPOINT_INTERVAL.0..=CHECKPOINT_INTERVAL.1)
        .contains(&d)
        .then_some(d)
}

/// Whether the requested node count can hold every partition's replicas. A scale-in below
/// the replication factor is refused rather than started.
pub fn check_capacity(spec: &ShardedStoreSpec) -> Option<CapacityProblem> {
    (spec.nodes >= 1 && spec.nodes < spec.replication_factor).then_some(
        CapacityProblem::FewerNodesThanReplicas {
            nodes: spec.nodes,
            replication_factor: spec.replication_factor,
        },
    )
}

/// Parses durations like `500ms`, `90s`, `5m`, `1h30m` (units ms, s, m, h; at least one part).
/// The spec's follower lag bound, when it is a positive duration.
pub fn lag_timeout(spec: &ShardedStoreSpec) -> Option<Duration> {
    parse_duration(&spec.failover.lag_timeout).filter(|d| !d.is_zero())
}

pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return None;
        };
        total = total.checked_add(unit.checked_mul(u32::try_from(value).ok()?)?)?;
        rest = &rest[len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ShardedStoreSpec {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_default_spec_is_valid() {
        assert_eq!(validate(&spec("nodes: 3\nimage: node:1\n")), vec![]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let s = spec(
            "nodes: 0\nimage: ' '\npartitions: 5000\nreplicationFactor: 2\nminInSync: 3\n\
             failover: {replaceAfter: soon, maxConcurrentReplacements: 0, lagTimeout: 0s}\n\
             rebalance: {maxConcurrentMovesPerNode: 0, maxMoveBytesPerNode: -1, bandwidthBytesPerSecond: 0}\n\
             limits: {maxKeyBytes: 0, maxValueBytes: 10}\nplacement: {zoneLabel: ''}\n",
        );
        assert_eq!(
            validate(&s),
            vec![
                SpecProblem::NoNodes(0),
                SpecProblem::PartitionsOutOfRange(5000),
                SpecProblem::MinInSyncOutOfRange {
                    min_in_sync: 3,
                    replication_factor: 2
                },
                SpecProblem::EmptyImage,
                SpecProblem::EmptyZoneLabel,
                SpecProblem::NoMovesAllowed(0),
                SpecProblem::NonPositiveMoveBytes(-1),
                SpecProblem::NonPositiveBandwidth(0),
                SpecProblem::BadReplaceAfter("soon".into()),
                SpecProblem::BadLagTimeout("0s".into()),
                SpecProblem::NoReplacementsAllowed(0),
                SpecProblem::NonPositiveLimit {
                    field: "maxKeyBytes",
                    value: 0
                },
            ]
        );
    }

    #[test]
    fn tuning_out_of_the_nodes_bounds_is_refused() {
        let ok = spec(
            "nodes: 3\nimage: x\ntuning: {checkpointInterval: 50ms, appendsInFlight: 4, \
             logWindowEntries: 0, logWindowBytes: 1048576}\n",
        );
        assert_eq!(validate(&ok), vec![]);
        assert_eq!(checkpoint_interval(&ok), Some(Duration::from_millis(50)));
        let bad = spec(
            "nodes: 3\nimage: x\ntuning: {checkpointInterval: 61s, appendsInFlight: 5, \
             logWindowEntries: -1, logWindowBytes: 4096}\n",
        );
        assert_eq!(
            validate(&bad),
            vec![
                SpecProblem::BadCheckpointInterval("61s".into()),
                SpecProblem::AppendsInFlightOutOfRange(5),
                SpecProblem::NegativeLogWindowEntries(-1),
                SpecProblem::LogWindowBytesTooSmall(4096),
            ]
        );
        for text in ["10ms", "soon", "", "1m1s"] {
            let s = spec(&format!(
                "nodes: 3\nimage: x\ntuning: {{checkpointInterval: '{text}'}}\n"
            ));
            assert_eq!(
                validate(&s),
                vec![SpecProblem::BadCheckpointInterval(text.into())],
                "{text}"
            );
        }
        assert_eq!(
            SpecProblem::AppendsInFlightOutOfRange(0).to_string(),
            "tuning.appendsInFlight must be in 1..=4, got 0"
        );
    }

    #[test]
    fn a_missing_image_takes_the_operator_default() {
        let s = spec("nodes: 3\n");
        assert_eq!(validate(&s), vec![SpecProblem::NoImage]);
        let defaulted = s.with_default_image(Some("registry/node:2"));
        assert_eq!(defaulted.image.as_deref(), Some("registry/node:2"));
        assert_eq!(validate(&defaulted), vec![]);
        // An explicit image wins over the default.
        let own = spec("nodes: 3\nimage: mine:1\n").with_default_image(Some("registry/node:2"));
        assert_eq!(own.image.as_deref(), Some("mine:1"));
    }

    #[test]
    fn scale_in_below_the_replication_factor_is_a_capacity_problem() {
        assert_eq!(check_capacity(&spec("nodes: 3\nimage: x\n")), None);
        assert_eq!(
            check_capacity(&spec("nodes: 2\nimage: x\n")),
            Some(CapacityProblem::FewerNodesThanReplicas {
                nodes: 2,
                replication_factor: 3
            })
        );
    }

    #[test]
    fn durations_parse_in_go_style() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        for bad in ["", "5", "m", "5x", "-1s", "1.5s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
