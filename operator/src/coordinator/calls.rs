//! Node calls whose answers feed later planning rounds (positions, admission, hand-off,
//! dropping stale copies), run in the background so that heartbeats are never held up.

use super::planner::{Call, HandoffOutcome};
use super::transport::NodeTransport;
use shardedstore_node::admin_api::{AdmitRequest, HandoffRequest, LogPosition};
use shardedstore_node::map::{NodeId, PartitionId, PartitionMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Answer of a background call.
pub(crate) enum Outcome {
    Position(PartitionId, u64, NodeId, LogPosition),
    Admitted(PartitionId, u64, NodeId),
    Handoff(PartitionId, HandoffOutcome),
    Dropped(PartitionId, NodeId),
    /// The map a node persisted (map recovery).
    Map(NodeId, Box<PartitionMap>),
    Nothing,
}

/// Runs `call` in a background task; its outcome (always at least one message, the last
/// one marks the call finished) goes to `tx` tagged with the call.
pub(crate) fn spawn(
    call: Call,
    map: Option<&PartitionMap>,
    transport: Arc<dyn NodeTransport>,
    tx: mpsc::UnboundedSender<(Call, Outcome)>,
    handoff_timeout: Duration,
) {
    let addr = |n: &str| {
        map.and_then(|m| m.nodes.get(n))
            .map(|i| i.peer_addr.clone())
    };
    let handoff_ms = handoff_timeout.as_millis() as u64;
    let key = call.clone();
    match call {
        Call::Positions {
            partition,
            epoch,
            nodes,
        } => {
            let targets: Vec<(NodeId, String)> = nodes
                .into_iter()
                .filter_map(|n| addr(&n).map(|a| (n, a)))
                .collect();
            tokio::spawn(async move {
                // Every candidate at once, and their answers handed over together: the first
                // wakes the coordinator, which then finds them all. Asked one after the other,
                // each candidate's answer woke a planning pass of its own, and a failover of a
                // node's twenty partitions used up the passes allowed between two ticks on
                // half-known positions, so most partitions waited for the next tick (500 ms).
                let answers = futures::future::join_all(targets.iter().map(|(_, addr)| {
                    let transport = &transport;
                    async move { transport.position(addr, partition).await }
                }))
                .await;
                for ((node, _), answer) in targets.into_iter().zip(answers) {
                    if let Ok(pos) = answer {
                        let _ =
                            tx.send((key.clone(), Outcome::Position(partition, epoch, node, pos)));
                    }
                }
                let _ = tx.send((key, Outcome::Nothing));
            });
        }
        Call::Admit {
            partition,
            epoch,
            primary,
            node,
            wait_for_copy_within,
        } => {
            let primary_addr = addr(&primary);
            tokio::spawn(async move {
                // The same timeout as a hand-off: the primary waits for the learner at most
                // this long (and stops waiting when not ready by then), the HTTP call allows
                // 5 s more, so a live primary always answers first.
                let req = AdmitRequest {
                    epoch,
                    learner: node.clone(),
                    timeout_ms: handoff_ms,
                    wait_for_copy_within,
                };
                tracing::debug!(partition, epoch, learner = %node, primary = %primary, "admit call");
                let outcome = match primary_addr {
                    Some(a) => match transport.admit(&a, partition, &req).await {
                        Ok(r) if r.ready => Outcome::Admitted(partition, epoch, node),
                        Ok(r) => {
                            tracing::debug!(
                                partition,
                                learner = %node,
                                acked = r.learner_acked_seq,
                                commit = r.commit_seq,
                                "admit call ended not ready"
                            );
                            Outcome::Nothing
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, partition, "admit");
                            Outcome::Nothing
                        }
                    },
                    None => Outcome::Nothing,
                };
                let _ = tx.send((key, outcome));
            });
        }
        Call::Handoff {
            partition,
            epoch,
            from,
            to,
        } => {
            let from_addr = addr(&from);
            tokio::spawn(async move {
                let req = HandoffRequest {
                    epoch,
                    to: to.clone(),
                    timeout_ms: handoff_ms,
                };
                let outcome = match from_addr {
                    Some(a) => match transport.handoff(&a, partition, &req).await {
                        Ok(r) => Outcome::Handoff(
                            partition,
                            HandoffOutcome {
                                epoch,
                                to,
                                ready: r.ready,
                            },
                        ),
                        // No answer in time: the primary may be stuck in hand-off (it serves
                        // nothing until a newer map), so this counts as not ready and is
                        // aborted by a new map; never re-asked at once.
                        Err(e) => {
                            tracing::warn!(error = %e, partition, "hand-off failed");
                            Outcome::Handoff(
                                partition,
                                HandoffOutcome {
                                    epoch,
                                    to,
                                    ready: false,
                                },
                            )
                        }
                    },
                    None => Outcome::Nothing,
                };
                let _ = tx.send((key, outcome));
            });
        }
        Call::Drop { node, partition } => {
            let node_addr = addr(&node);
            tokio::spawn(async move {
                let outcome = match node_addr {
                    Some(a) => match transport.drop_partition(&a, partition).await {
                        Ok(()) => Outcome::Dropped(partition, node),
                        Err(_) => Outcome::Nothing,
                    },
                    None => Outcome::Nothing,
                };
                let _ = tx.send((key, outcome));
            });
        }
        Call::FetchMap { node, client_addr } => {
            tokio::spawn(async move {
                let outcome = match transport.fetch_map(&client_addr).await {
                    Ok(map) => Outcome::Map(node, Box::new(map)),
                    Err(e) => {
                        tracing::warn!(node = %node, error = %e, "fetching the node's map");
                        Outcome::Nothing
                    }
                };
                let _ = tx.send((key, outcome));
            });
        }
    }
}
