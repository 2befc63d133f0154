//! Per-partition decisions: failover, in-sync shrink and expand, hand-off, moves and cleanup.
//! Each partition advances by at most one step of a multi-step procedure per round.

use super::gray::{ADMIT_WITHIN_ENTRIES, stuck_members, worth_admitting, worth_asking_early};
use super::handoff::{Handoff, handoff};
use super::moves::{moves_in_flight, remove_extras, start_move};
use super::{Call, Inputs};
use crate::coordinator::liveness::Liveness;
use crate::coordinator::status::CoordinatorEvent;
use crate::placement::{Target, TargetPartition};
use shardedstore_node::admin_api::{LogPosition, PartitionState, ReplicaRole};
use shardedstore_node::map::{NodeId, NodeState, PartitionEntry, PartitionId, PartitionMap};
use std::collections::{BTreeMap, BTreeSet};

/// Read-only context of one round.
pub(super) struct Round<'a> {
    pub(super) inputs: &'a Inputs<'a>,
    /// Version of the stored map (what nodes must hold for admission and hand-off).
    pub(super) version: u64,
    /// Node states after this round's node-table update.
    pub(super) states: BTreeMap<NodeId, NodeState>,
    /// Nodes holding a learner of some partition as the round starts: they are taking in
    /// copies (snapshots, then the log), so their storage is busy and its applies lag.
    pub(super) ingesting: BTreeSet<NodeId>,
}

impl Round<'_> {
    pub(super) fn alive(&self, n: &str) -> bool {
        self.inputs.obs.is_alive(n)
    }

    /// Dead for sure: confirmed or fenced, or no longer in the map's node list. A node gone
    /// from the membership (pod object deleted) counts only once fenced: a force-deleted pod's
    /// container may still run (the runner reports such nodes silent).
    pub(super) fn dead(&self, n: &str) -> bool {
        self.inputs.obs.liveness(n) == Liveness::Dead || !self.states.contains_key(n)
    }

    pub(super) fn current(&self, n: &str) -> bool {
        self.inputs.obs.has_map(n, self.version)
    }

    pub(super) fn cordoned(&self, n: &str) -> bool {
        self.inputs.membership.cordoned.contains(n)
    }

    pub(super) fn active_or_draining(&self, n: &str) -> bool {
        matches!(
            self.states.get(n),
            Some(NodeState::Active | NodeState::Draining)
        )
    }

    pub(super) fn active(&self, n: &str) -> bool {
        self.states.get(n) == Some(&NodeState::Active)
    }

    /// May `n` be handed a primary role? Alive, Active, not cordoned, holding the current
    /// map and a lease ([`Observations::leased`]).
    ///
    /// [`Observations::leased`]: super::Observations::leased
    pub(super) fn may_lead(&self, n: &str) -> bool {
        self.alive(n)
            && self.active(n)
            && !self.cordoned(n)
            && self.current(n)
            && self.inputs.obs.leased.contains(n)
    }

    /// The role `n` reports for partition `p` at `epoch`, from its latest heartbeat answer
    /// (only when that answer was given with the current map installed: a node that just
    /// installed it by a push still reports the roles of the map before).
    pub(super) fn reported_role(&self, n: &str, p: PartitionId, epoch: u64) -> Option<ReplicaRole> {
        if !self.inputs.obs.reported_under(n, self.version) {
            return None;
        }
        self.inputs
            .obs
            .reports
            .get(n)?
            .partitions
            .iter()
            .find(|s| s.partition == p && s.epoch == epoch)
            .map(|s| s.role)
    }

    /// `n` is named primary of `p` at `epoch`, holds that map, and answers that it does not
    /// lead: it restarted since it may have led this epoch (it never leads it again: its
    /// unsynced tail may be gone while followers hold it), or its copy is unproven.
    pub(super) fn refuses_to_lead(&self, n: &str, p: PartitionId, epoch: u64) -> bool {
        matches!(
            self.reported_role(n, p, epoch),
            Some(ReplicaRole::Follower | ReplicaRole::Learner)
        )
    }

    /// `n` answered with a new disk identity (empty or foreign data directory) and a stored
    /// map has not yet dropped it from every `inSync` ([`super::Observations::new_disks`]).
    pub(super) fn new_disk(&self, n: &str) -> bool {
        self.inputs.obs.new_disks.contains(n)
    }

    /// Issue item 6: `n`'s copy of `p` may hold less than was committed although a map lists
    /// it in sync — its disk identity changed, or it reports the copy unproven (created empty
    /// while listed in sync; an in-sync member reporting itself a learner is such a copy). It
    /// is no valid in-sync member: never a failover candidate nor a hand-off target, and
    /// removed from `inSync` (even below `minInSync`) until admitted again.
    pub(super) fn unproven(&self, n: &str, p: PartitionId, epoch: u64) -> bool {
        self.unproven_reason(n, p, epoch).is_some()
    }

    /// Why [`Round::unproven`] holds (for the event that drops the member from `inSync`), or
    /// `None` when it does not.
    pub(super) fn unproven_reason(
        &self,
        n: &str,
        p: PartitionId,
        epoch: u64,
    ) -> Option<&'static str> {
        if self.new_disk(n) {
            return Some("a new disk since it was last in sync");
        }
        if !self.alive(n) || !self.current(n) {
            return None;
        }
        // The unproven mark is the copy's own (it stays until a map drops the node from
        // `inSync`); the learner role is the map's, so it counts only from a report made
        // under the current map — a member admitted a moment ago still reported itself a
        // learner in the answer before, and was dropped again at once for it.
        let s = self.copy_reported(n, p, epoch)?;
        if s.unproven {
            Some("its copy is unproven (created empty while listed in sync)")
        } else if self.inputs.obs.reported_under(n, self.version) && s.role == ReplicaRole::Learner
        {
            Some("it reported itself a learner under the current map")
        } else {
            None
        }
    }

    /// The node's latest report of partition `p` at `epoch`.
    fn copy_reported(
        &self,
        n: &str,
        p: PartitionId,
        epoch: u64,
    ) -> Option<&shardedstore_node::admin_api::PartitionState> {
        self.inputs.obs.reports.get(n).and_then(|r| {
            r.partitions
                .iter()
                .find(|s| s.partition == p && s.epoch == epoch)
        })
    }

    pub(super) fn confirmed(&self, n: &str) -> bool {
        self.inputs
            .membership
            .node(n)
            .is_none_or(|m| m.confirmed_dead)
    }
}

/// Plans every partition; returns true when the map must be rewritten even if unchanged
/// (an aborted hand-off is released by a newer map version).
pub(super) fn plan_partitions(
    inputs: &Inputs<'_>,
    target: &Target,
    next: &mut PartitionMap,
    events: &mut Vec<CoordinatorEvent>,
    calls: &mut Vec<Call>,
) -> bool {
    let round = Round {
        inputs,
        version: inputs.map.map_or(0, |m| m.version),
        states: next
            .nodes
            .iter()
            .map(|(id, n)| (id.clone(), n.state))
            .collect(),
        ingesting: next
            .partitions
            .iter()
            .flat_map(|e| e.learners.iter().cloned())
            .collect(),
    };
    let mut force = false;
    // Partitions that may start a move this round: led by a live primary, with no failover
    // or hand-off under way.
    let mut movable = Vec::new();
    for (p, e) in next.partitions.iter_mut().enumerate() {
        let p = p as PartitionId;
        let Some(tp) = target.partition(p) else {
            continue;
        };
        drop_unproven(&round, p, e, events);
        if failover(&round, p, e, tp, events, calls) {
            continue;
        }
        let Some(primary) = e.primary.clone().filter(|n| round.alive(n)) else {
            continue;
        };
        shrink(&round, p, e, &primary, events);
        expand(&round, p, e, &primary, events, calls);
        remove_extras(&round, p, e, tp, &primary, events);
        match handoff(&round, p, e, tp, &primary, events, calls) {
            Handoff::Done | Handoff::Pending => continue,
            Handoff::Aborted => force = true,
            Handoff::None => {}
        }
        movable.push(p);
    }
    // The move budget as it stands after this round's admissions and removals: a move that
    // finishes here frees its nodes' room for the next one in the same map version. Counted
    // before them, the next moves waited for one more map write and push (13-24 ms each time
    // in a scale-out's catch-up, where a copy of a small partition takes 60-100 ms).
    let mut busy = moves_in_flight(next, target, &inputs.obs.reports);
    for p in movable {
        if let (Some(tp), Some(e)) = (target.partition(p), next.partitions.get_mut(p as usize)) {
            start_move(&round, p, e, tp, &mut busy, events);
        }
    }
    drop_stale(&round, calls);
    force
}

/// Fails over a partition whose primary is dead (or that has none), or whose primary answers
/// that it will not lead the current epoch (it restarted since, see [`Round::refuses_to_lead`]),
/// or whose primary lost its copy ([`Round::unproven`]): asks the live in-sync members — a
/// restarted primary included, one that lost its copy not — for their durable positions, then
/// elects the one with the highest (epoch, seq) at epoch + 1, possibly the same node.
/// Returns true when the partition is handled for this round.
fn failover(
    round: &Round<'_>,
    p: PartitionId,
    e: &mut PartitionEntry,
    tp: &TargetPartition,
    events: &mut Vec<CoordinatorEvent>,
    calls: &mut Vec<Call>,
) -> bool {
    // A primary on a new disk (or reporting its copy unproven) lost what it held: it is
    // failed over and is no candidate.
    let lost = e
        .primary
        .as_deref()
        .is_some_and(|n| !round.dead(n) && round.unproven(n, p, e.epoch));
    let restarted = !lost
        && e.primary
            .as_deref()
            .is_some_and(|n| !round.dead(n) && round.refuses_to_lead(n, p, e.epoch));
    let needs = match &e.primary {
        Some(primary) => round.dead(primary) || restarted || lost,
        None => !e.in_sync.is_empty(),
    };
    if !needs {
        return false;
    }
    let old = e.primary.clone();
    // A restarted primary stays a candidate (its durable log may be the longest); a dead one not.
    let eligible = |n: &NodeId| restarted || Some(n) != old.as_ref();
    let candidates: Vec<NodeId> = e
        .in_sync
        .iter()
        .filter(|n| {
            eligible(n) && round.alive(n) && round.current(n) && !round.unproven(n, p, e.epoch)
        })
        .cloned()
        .collect();
    if candidates.is_empty() {
        if lost {
            // Nobody else may lead now. The node that lost its copy must not keep the role:
            // the partition goes without a primary (and without the lost copies in `inSync`)
            // until an in-sync member that holds the data answers again.
            let epoch = e.epoch;
            let gone: Vec<NodeId> = e
                .in_sync
                .iter()
                .filter(|n| round.unproven(n, p, epoch))
                .cloned()
                .collect();
            e.primary = None;
            e.in_sync.retain(|n| !gone.contains(n));
            for node in gone {
                let reason = round
                    .unproven_reason(&node, p, epoch)
                    .unwrap_or_default()
                    .into();
                events.push(CoordinatorEvent::InSyncShrunk {
                    partition: p,
                    node,
                    reason,
                });
            }
            events.push(CoordinatorEvent::PartitionUnavailable { partition: p });
            return true;
        }
        // Reported once, when the primary's node is first seen dead.
        let was_up = |n: &str| {
            round
                .inputs
                .map
                .and_then(|m| m.nodes.get(n))
                .is_some_and(|i| matches!(i.state, NodeState::Active | NodeState::Draining))
        };
        if old
            .as_deref()
            .is_some_and(|o| was_up(o) && !round.active_or_draining(o))
        {
            events.push(CoordinatorEvent::PartitionUnavailable { partition: p });
        }
        return true;
    }
    let positions = round.inputs.obs.positions.get(&(p, e.epoch));
    let known: Vec<(&NodeId, LogPosition)> = candidates
        .iter()
        .filter_map(|n| positions.and_then(|ps| ps.get(n)).map(|pos| (n, *pos)))
        .collect();
    if known.len() < candidates.len() {
        calls.push(Call::Positions {
            partition: p,
            epoch: e.epoch,
            nodes: candidates,
        });
        return true;
    }
    // Highest log wins; among equals prefer the placement's primary, then a non-cordoned one.
    let Some((winner, _)) = known.iter().max_by_key(|(n, pos)| {
        (
            *pos,
            tp.primary.as_ref() == Some(*n),
            !round.cordoned(n),
            std::cmp::Reverse((*n).clone()),
        )
    }) else {
        return true;
    };
    let winner = (*winner).clone();
    let epoch = e.epoch;
    e.epoch += 1;
    e.primary = Some(winner.clone());
    e.in_sync
        .retain(|n| round.alive(n) && eligible(n) && !round.unproven(n, p, epoch));
    events.push(CoordinatorEvent::Failover {
        partition: p,
        from: old.clone(),
        to: winner,
        epoch: e.epoch,
        confirmed: old.as_deref().is_some_and(|o| round.confirmed(o)),
    });
    true
}

/// Issue item 6: removes from `inSync` every member other than the primary whose copy is
/// unproven or on a new disk ([`Round::unproven`]), whether or not the primary is alive. Such
/// a member holds nothing proven: it must not count toward `minInSync` nor the commit rule,
/// even if this leaves fewer than `minInSync` members (writes then wait until it is admitted
/// again, which is the safe outcome). A primary in that state is failed over ([`failover`]).
fn drop_unproven(
    round: &Round<'_>,
    p: PartitionId,
    e: &mut PartitionEntry,
    events: &mut Vec<CoordinatorEvent>,
) {
    let gone: Vec<NodeId> = e
        .in_sync
        .iter()
        .filter(|n| e.primary.as_ref() != Some(*n) && round.unproven(n, p, e.epoch))
        .cloned()
        .collect();
    for node in gone {
        e.in_sync.retain(|m| *m != node);
        let reason = round
            .unproven_reason(&node, p, e.epoch)
            .unwrap_or_default()
            .into();
        events.push(CoordinatorEvent::InSyncShrunk {
            partition: p,
            node,
            reason,
        });
    }
}

/// The primary's report of `p` at the entry's epoch, from its latest heartbeat answer.
fn primary_report<'a>(
    round: &'a Round<'_>,
    p: PartitionId,
    e: &PartitionEntry,
    primary: &str,
) -> Option<&'a PartitionState> {
    round
        .inputs
        .obs
        .reports
        .get(primary)
        .and_then(|r| r.partitions.iter().find(|s| s.partition == p))
        .filter(|s| s.epoch == e.epoch && s.role == ReplicaRole::Primary)
}

/// Removes dead followers from `inSync`, and followers stuck without acknowledging progress
/// for longer than the lag timeout (issue item 4, gray failures: [`super::gray`]) down to
/// `minInSync`. Never the primary.
fn shrink(
    round: &Round<'_>,
    p: PartitionId,
    e: &mut PartitionEntry,
    primary: &str,
    events: &mut Vec<CoordinatorEvent>,
) {
    let bound = round.inputs.settings.lag_timeout.as_millis() as u64;
    let dead: Vec<NodeId> = e
        .in_sync
        .iter()
        .filter(|n| n.as_str() != primary && round.dead(n))
        .cloned()
        .collect();
    let mut removed: Vec<(NodeId, String)> = dead
        .iter()
        .map(|n| (n.clone(), "dead".to_owned()))
        .collect();
    if let Some(report) = primary_report(round, p, e, primary) {
        let alive: Vec<NodeId> = e
            .in_sync
            .iter()
            .filter(|n| !dead.contains(n))
            .cloned()
            .collect();
        let min = round.inputs.settings.min_in_sync as usize;
        let reason = format!("acknowledged no progress for over the lag timeout ({bound} ms)");
        removed.extend(
            stuck_members(report, &alive, primary, bound, min)
                .into_iter()
                .map(|n| (n, reason.clone())),
        );
    }
    for (n, reason) in removed {
        e.in_sync.retain(|m| *m != n);
        events.push(CoordinatorEvent::InSyncShrunk {
            partition: p,
            node: n,
            reason,
        });
    }
}

/// Admits learners and lagging replicas through the primary; lists them in `inSync` once the
/// primary answered ready at this epoch.
fn expand(
    round: &Round<'_>,
    p: PartitionId,
    e: &mut PartitionEntry,
    primary: &str,
    events: &mut Vec<CoordinatorEvent>,
    calls: &mut Vec<Call>,
) {
    if !round.current(primary) {
        return;
    }
    // A member the primary reports stuck is not admitted (issue item 4): the primary would
    // wait for it until the call ends.
    let bound = round.inputs.settings.lag_timeout.as_millis() as u64;
    let report = primary_report(round, p, e, primary);
    let writes_stalled = e.in_sync.len() < round.inputs.settings.min_in_sync as usize;
    // A learner missing from the primary's report is not admitted: the report was made
    // before the primary took in the map that added it, and its copy is still on the way.
    // Whether to ask now, and whether to ask the primary to wait for the copy first.
    let worth = |n: &NodeId, learner: bool| -> Option<Option<u64>> {
        let Some(r) = report else {
            return Some(None);
        };
        match r.followers.iter().find(|f| f.node == *n) {
            Some(f) if worth_admitting(f, r.commit_seq, bound, writes_stalled) => Some(None),
            Some(f) if worth_asking_early(f, r.commit_seq, bound) => {
                Some(Some(ADMIT_WITHIN_ENTRIES))
            }
            Some(_) => None,
            None => (!learner).then_some(None),
        }
    };
    let waiting: Vec<NodeId> = e
        .members()
        .filter(|n| {
            !e.in_sync.contains(n) && round.alive(n) && round.current(n) && !round.new_disk(n)
        })
        .cloned()
        .collect();
    for n in waiting {
        let learner = e.learners.contains(&n);
        if round.inputs.obs.admitted.contains(&(p, e.epoch, n.clone())) {
            if learner {
                e.learners.retain(|l| *l != n);
                e.replicas.push(n.clone());
            }
            e.in_sync.push(n.clone());
            events.push(CoordinatorEvent::InSyncExpanded {
                partition: p,
                node: n,
            });
        } else if let Some(wait_for_copy_within) = worth(&n, learner) {
            calls.push(Call::Admit {
                partition: p,
                epoch: e.epoch,
                primary: primary.to_owned(),
                node: n,
                wait_for_copy_within,
            });
        }
    }
}

/// Drops copies that nodes report as stale under the current map.
fn drop_stale(round: &Round<'_>, calls: &mut Vec<Call>) {
    let Some(map) = round.inputs.map else {
        return;
    };
    for (node, report) in &round.inputs.obs.reports {
        if !round.alive(node) || report.map_version < map.version {
            continue;
        }
        for s in report
            .partitions
            .iter()
            .filter(|s| s.role == ReplicaRole::Stale)
        {
            let member = map.entry(s.partition).is_some_and(|e| e.is_member(node));
            if !member {
                calls.push(Call::Drop {
                    node: node.clone(),
                    partition: s.partition,
                });
            }
        }
    }
}
