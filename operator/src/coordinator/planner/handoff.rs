//! Hand-offs: a live primary gives its role to an in-sync replica when it leaves (move,
//! drain, cordon) or for primary balance; an aborted hand-off is released by a newer map.

use super::Call;
use super::partitions::Round;
use crate::coordinator::status::CoordinatorEvent;
use crate::placement::TargetPartition;
use shardedstore_node::map::{NodeId, PartitionEntry, PartitionId};

pub(super) enum Handoff {
    /// No hand-off wanted.
    None,
    /// Asked (or asking) the primary; nothing else happens to the partition this round.
    Pending,
    Done,
    /// The primary could not hand off in time: rewrite the map to release it.
    Aborted,
}

/// Hands the primary role to another in-sync replica when the primary leaves (move, drain,
/// cordon) or, when the partition is otherwise settled, for primary balance.
pub(super) fn handoff(
    round: &Round<'_>,
    p: PartitionId,
    e: &mut PartitionEntry,
    tp: &TargetPartition,
    primary: &str,
    events: &mut Vec<CoordinatorEvent>,
    calls: &mut Vec<Call>,
) -> Handoff {
    let leaving = !tp.replicas.iter().any(|n| n == primary)
        || round.cordoned(primary)
        || !round.active(primary);
    let settled = e.learners.is_empty() && e.in_sync.len() == e.replicas.len();
    let eligible = |n: &NodeId| {
        n != primary && e.in_sync.contains(n) && round.may_lead(n) && !round.unproven(n, p, e.epoch)
    };
    // A node taking in copies of other partitions is a poor new primary: its applies wait
    // behind those copies, and writes wait for its applies until it is ready. A leaving
    // primary prefers another in-sync member; a hand-off for balance waits until it is done.
    let idle = |n: &&NodeId| !round.ingesting.contains(*n);
    let to = if leaving {
        let candidates = || {
            tp.primary
                .iter()
                .chain(tp.replicas.iter())
                .chain(e.in_sync.iter())
                .filter(|n| eligible(n))
        };
        candidates()
            .find(idle)
            .or_else(|| candidates().next())
            .cloned()
    } else if settled && !round.inputs.settings.paused {
        tp.primary.clone().filter(|n| eligible(n) && idle(&n))
    } else {
        None
    };
    let Some(to) = to else {
        return Handoff::None;
    };
    let obs = round.inputs.obs;
    let retry_at = obs
        .handoff_failed_at
        .get(&p)
        .map(|t| *t + super::HANDOFF_RETRY_AFTER);
    let answered = obs.handoffs.get(&p).is_some_and(|o| o.epoch == e.epoch);
    if !answered && retry_at.is_some_and(|t| obs.now < t) {
        // The last attempt failed and was aborted: the primary serves again for a while.
        return Handoff::None;
    }
    if !round.current(primary) {
        return Handoff::Pending;
    }
    match round.inputs.obs.handoffs.get(&p) {
        Some(o) if o.epoch == e.epoch && o.to == to && o.ready => {
            e.epoch += 1;
            e.primary = Some(to.clone());
            events.push(CoordinatorEvent::PrimaryHandedOff {
                partition: p,
                from: primary.to_owned(),
                to,
                epoch: e.epoch,
            });
            Handoff::Done
        }
        Some(o) if o.epoch == e.epoch && !o.ready => {
            events.push(CoordinatorEvent::HandoffAborted {
                partition: p,
                from: primary.to_owned(),
                to: o.to.clone(),
            });
            Handoff::Aborted
        }
        _ => {
            calls.push(Call::Handoff {
                partition: p,
                epoch: e.epoch,
                from: primary.to_owned(),
                to,
            });
            Handoff::Pending
        }
    }
}
