//! Retry policy of the KV client as pure functions: which failures are retried, how long to
//! wait (exponential backoff with jitter, honoring `Retry-After`), and when to give up.

use super::error::AttemptError;
use std::time::Duration;

/// How the client retries one operation.
///
/// Idempotency. Reads are always safe to repeat. A failure before the request was sent
/// (connection refused), a 421 or a 503 answered before the append (`below_min_in_sync`,
/// `lease_expired`, …) means the node did not apply the operation, so every operation is
/// retried after them. A timeout, a connection broken mid-request or a 503 answered after
/// the append (`deposed`, `commit_timeout`, `lease_expired_after_append`, see
/// [`super::error::unavailable_after_append`]) is *ambiguous* for a write: it may have been
/// applied. An unconditional put or delete is
/// retried anyway when [`RetryPolicy::retry_ambiguous_writes`] is set (the default): applying
/// it twice leaves the same value, at a higher version. A conditional write retried after
/// its first attempt was applied finds the version moved on and surfaces
/// [`super::KvError::PreconditionFailed`] although its own write took effect; callers that
/// must tell the two apart read the key back; likewise a retried delete may report the key
/// as already absent. If retries run out after an ambiguous failure,
/// the write ends in [`super::KvError::Indeterminate`], never in `Unavailable`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time budget of one operation, all attempts and waits included.
    pub deadline: Duration,
    /// First backoff step; it doubles per failed attempt.
    pub base_delay: Duration,
    /// Upper bound of one backoff step (a longer `Retry-After` still wins).
    pub max_delay: Duration,
    /// Retry writes after a timeout or broken connection (see above).
    pub retry_ambiguous_writes: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(10),
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(1),
            retry_ambiguous_writes: true,
        }
    }
}

impl RetryPolicy {
    /// No retries at all: every operation makes exactly one attempt.
    pub fn none() -> Self {
        Self {
            deadline: Duration::ZERO,
            ..Self::default()
        }
    }
}

/// Whether an operation only reads or may change state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
}

/// What the retry loop does after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Retry {
        delay: Duration,
        /// Fetch a fresh partition map before the next attempt.
        refresh_map: bool,
        /// Send the next attempt to a seed endpoint instead of the routed node (whose
        /// address from the map may be unreachable from here).
        via_seed: bool,
    },
    GiveUp,
}

/// Backoff before retry number `attempt` (1 = after the first failure): "equal jitter" —
/// half of the exponential step is fixed, half is random — so waits grow even under bad luck
/// and concurrent clients spread out. `jitter` is a sample in `[0, 1)`.
pub fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(31);
    let step = policy
        .base_delay
        .saturating_mul(1u32 << exp)
        .min(policy.max_delay);
    let half = step / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Decide what to do after `attempt` failed attempts, the last one being `err`, with
/// `elapsed` spent on the operation so far.
pub fn decide(
    policy: &RetryPolicy,
    op: OpKind,
    err: &AttemptError,
    attempt: u32,
    elapsed: Duration,
    jitter: f64,
) -> Decision {
    if err.is_ambiguous() && op == OpKind::Write && !policy.retry_ambiguous_writes {
        return Decision::GiveUp;
    }
    let step = backoff(policy, attempt, jitter);
    let delay = match err {
        AttemptError::Unavailable {
            retry_after: Some(after),
            ..
        } => step.max(*after),
        _ => step,
    };
    if elapsed.saturating_add(delay) >= policy.deadline {
        return Decision::GiveUp;
    }
    Decision::Retry {
        delay,
        refresh_map: true,
        via_seed: matches!(err, AttemptError::Connect { .. }),
    }
}

/// Parse a `Retry-After` header in its delta-seconds form (the form the nodes send).
/// HTTP dates are not used by the nodes and yield `None` (plain backoff then applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(retry_after: Option<Duration>) -> AttemptError {
        AttemptError::Unavailable {
            addr: "n".into(),
            code: "partition_unavailable".into(),
            message: "m".into(),
            retry_after,
        }
    }

    fn misdirected() -> AttemptError {
        AttemptError::Misdirected {
            addr: "n".into(),
            code: "not_primary".into(),
            message: "m".into(),
            map_version: Some(3),
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_caps() {
        let p = RetryPolicy::default();
        for attempt in 1..=12u32 {
            let step = (p.base_delay * 2u32.pow(attempt - 1)).min(p.max_delay);
            let lo = backoff(&p, attempt, 0.0);
            let hi = backoff(&p, attempt, 0.999_999);
            assert_eq!(lo, step / 2, "attempt {attempt}");
            assert!(
                hi <= step && hi > step * 99 / 100,
                "attempt {attempt}: {hi:?}"
            );
        }
        assert_eq!(backoff(&p, 1, 0.0), Duration::from_millis(5));
        assert_eq!(backoff(&p, 3, 0.0), Duration::from_millis(20));
        assert_eq!(backoff(&p, 40, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(&p, u32::MAX, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_honored_even_above_the_backoff_cap() {
        let p = RetryPolicy::default();
        let d = decide(
            &p,
            OpKind::Write,
            &unavailable(Some(Duration::from_secs(2))),
            1,
            Duration::ZERO,
            0.5,
        );
        assert!(matches!(d, Decision::Retry { delay, .. } if delay == Duration::from_secs(2)));
        let d = decide(
            &p,
            OpKind::Write,
            &unavailable(None),
            1,
            Duration::ZERO,
            0.0,
        );
        assert!(matches!(d, Decision::Retry { delay, .. } if delay == Duration::from_millis(5)));
    }

    #[test]
    fn gives_up_when_the_wait_would_pass_the_deadline() {
        let p = RetryPolicy::default();
        let after = Some(Duration::from_secs(3));
        let d = decide(
            &p,
            OpKind::Read,
            &unavailable(after),
            1,
            Duration::from_secs(7),
            0.0,
        );
        assert_eq!(d, Decision::GiveUp);
        let d = decide(
            &p,
            OpKind::Read,
            &unavailable(after),
            1,
            Duration::from_secs(6),
            0.0,
        );
        assert!(matches!(d, Decision::Retry { .. }));
        assert_eq!(
            decide(
                &RetryPolicy::none(),
                OpKind::Read,
                &misdirected(),
                1,
                Duration::ZERO,
                0.0
            ),
            Decision::GiveUp
        );
    }

    fn unavailable_code(code: &str) -> AttemptError {
        AttemptError::Unavailable {
            addr: "n".into(),
            code: code.into(),
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn only_503s_answered_after_the_append_are_ambiguous() {
        for code in [
            "deposed",
            "commit_timeout",
            "lease_expired_after_append",
            "shutting_down",
            "forward_failed",
        ] {
            assert!(unavailable_code(code).is_ambiguous(), "{code}");
        }
        for code in [
            "below_min_in_sync",
            "handing_off",
            "primary_not_ready",
            "no_primary",
            "no_map",
            "lease_expired",
            "pending_write_timeout",
            "not_primary",
        ] {
            assert!(!unavailable_code(code).is_ambiguous(), "{code}");
        }
        // Without ambiguous retries, a write stops at once after a post-append 503 ...
        let strict = RetryPolicy {
            retry_ambiguous_writes: false,
            ..RetryPolicy::default()
        };
        let after = unavailable_code("deposed");
        let d = decide(&strict, OpKind::Write, &after, 1, Duration::ZERO, 0.0);
        assert_eq!(d, Decision::GiveUp);
        // ... but still retries a pre-append one, and reads retry either.
        let before = unavailable_code("below_min_in_sync");
        let d = decide(&strict, OpKind::Write, &before, 1, Duration::ZERO, 0.0);
        assert!(matches!(d, Decision::Retry { .. }));
        let d = decide(&strict, OpKind::Read, &after, 1, Duration::ZERO, 0.0);
        assert!(matches!(d, Decision::Retry { .. }));
    }

    #[test]
    fn misdirected_refreshes_the_map_and_stays_direct() {
        let d = decide(
            &RetryPolicy::default(),
            OpKind::Write,
            &misdirected(),
            1,
            Duration::ZERO,
            0.0,
        );
        assert!(matches!(
            d,
            Decision::Retry {
                refresh_map: true,
                via_seed: false,
                ..
            }
        ));
    }

    #[test]
    fn retry_after_parses_delta_seconds_only() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
