//! Kubernetes Events on a ShardedStore: scale steps and invalid specs from the controller,
//! failovers and moves from the coordinator.
//!
//! Per-partition happenings (moves, hand-offs, failovers) come in bursts: a scale-out starts
//! hundreds of moves, a dead pod fails over every partition it led. They are gathered in a
//! [`Digest`] and published as one Event per reason and flush interval, naming the count and
//! the first few partitions.

use crate::coordinator::CoordinatorEvent;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Name the operator reports Events under.
pub const REPORTER: &str = "shardedstore-operator";

/// Publishes Events; failures are logged, never fatal (an Event is best effort).
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

/// One Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// PascalCase reason, e.g. `Failover`.
    pub reason: &'static str,
    /// PascalCase action, e.g. `Scale`.
    pub action: &'static str,
    pub message: String,
}

impl Events {
    pub fn new(client: kube::Client, instance: String) -> Self {
        let reporter = Reporter {
            controller: REPORTER.to_owned(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    pub async fn publish(&self, regarding: &ObjectReference, note: Note) {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.to_owned(),
            note: Some(truncate(note.message, 1000)),
            action: note.action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(error = %e, reason = note.reason, "publishing an Event failed");
        }
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The Event for a coordinator event, if it deserves one (map writes and heartbeat failures
/// are too frequent and are counted in metrics instead).
pub fn note_of(event: &CoordinatorEvent) -> Option<Note> {
    let note = |warning, reason, action, message: String| Note {
        warning,
        reason,
        action,
        message,
    };
    Some(match event {
        CoordinatorEvent::Failover {
            partition,
            from,
            to,
            epoch,
            confirmed,
        } => note(
            false,
            "Failover",
            "Failover",
            format!(
                "partition {partition}: primary {} -> {to} at epoch {epoch} ({})",
                from.as_deref().unwrap_or("none"),
                if *confirmed {
                    "pod confirmed dead"
                } else {
                    "lease expired"
                }
            ),
        ),
        CoordinatorEvent::PrimaryHandedOff {
            partition,
            from,
            to,
            epoch,
        } => note(
            false,
            "PrimaryHandedOff",
            "HandOff",
            format!("partition {partition}: primary {from} -> {to} at epoch {epoch}"),
        ),
        CoordinatorEvent::HandoffAborted {
            partition,
            from,
            to,
        } => note(
            true,
            "HandoffAborted",
            "HandOff",
            format!(
                "partition {partition}: hand-off {from} -> {to} timed out; {from} stays primary"
            ),
        ),
        CoordinatorEvent::PartitionUnavailable { partition } => note(
            true,
            "PartitionUnavailable",
            "Failover",
            format!("partition {partition} has no live in-sync replica to take over"),
        ),
        CoordinatorEvent::MoveStarted {
            partition,
            from,
            to,
        } => note(
            false,
            "MoveStarted",
            "Move",
            format!(
                "partition {partition}: replica {} -> {to}",
                from.as_deref().unwrap_or("(new)")
            ),
        ),
        CoordinatorEvent::MoveFinished {
            partition,
            from,
            to,
        } => note(
            false,
            "MoveFinished",
            "Move",
            format!(
                "partition {partition}: replica {} -> {to}",
                from.as_deref().unwrap_or("(new)")
            ),
        ),
        CoordinatorEvent::MoveFailed {
            partition,
            to,
            reason,
        } => note(
            true,
            "MoveFailed",
            "Move",
            format!("partition {partition} to {to}: {reason}"),
        ),
        CoordinatorEvent::NodeDown { node, confirmed } => note(
            true,
            "NodeDown",
            "Failover",
            format!(
                "{node} is down ({})",
                if *confirmed {
                    "confirmed"
                } else {
                    "not answering"
                }
            ),
        ),
        CoordinatorEvent::NodeUp { node } => {
            note(false, "NodeUp", "Failover", format!("{node} is back"))
        }
        CoordinatorEvent::NodeReplaced { node } => note(
            true,
            "NodeReplaced",
            "Failover",
            format!(
                "{node} stayed down past failover.replaceAfter: its replicas are re-created elsewhere"
            ),
        ),
        CoordinatorEvent::NodeDraining { node, draining } => note(
            false,
            if *draining {
                "DrainStarted"
            } else {
                "DrainCancelled"
            },
            "Scale",
            format!(
                "{node} {}",
                if *draining {
                    "is draining"
                } else {
                    "stopped draining"
                }
            ),
        ),
        // Map writes, in-sync changes, heartbeat failures and dropped replicas are too
        // frequent for Events; metrics count them.
        _ => return None,
    })
}

/// Reasons whose notes are about one partition and are summarised rather than published
/// one by one.
const PER_PARTITION: [&str; 7] = [
    "Failover",
    "PrimaryHandedOff",
    "HandoffAborted",
    "PartitionUnavailable",
    "MoveStarted",
    "MoveFinished",
    "MoveFailed",
];
/// Partitions named in a summary before the rest are only counted.
const SAMPLES: usize = 5;

/// Notes about single partitions gathered between two flushes, by reason.
#[derive(Debug, Default)]
pub struct Digest {
    pending: Vec<(Note, usize)>,
}

impl Digest {
    /// Takes `note` into the digest if it is a per-partition one; otherwise hands it back to
    /// be published at once.
    pub fn add(&mut self, note: Note) -> Option<Note> {
        if !PER_PARTITION.contains(&note.reason) {
            return Some(note);
        }
        match self
            .pending
            .iter_mut()
            .find(|(n, _)| n.reason == note.reason)
        {
            Some((summary, count)) => {
                *count += 1;
                if *count <= SAMPLES {
                    summary.message.push_str("; ");
                    summary.message.push_str(&note.message);
                }
            }
            None => self.pending.push((note, 1)),
        }
        None
    }

    /// One Event per reason for everything gathered since the last flush.
    pub fn flush(&mut self) -> Vec<Note> {
        self.pending
            .drain(..)
            .map(|(mut note, count)| {
                let more = count.saturating_sub(SAMPLES);
                note.message = if more > 0 {
                    format!("{count} partitions: {} (and {more} more)", note.message)
                } else {
                    format!("{count} partition(s): {}", note.message)
                };
                note
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_moves_becomes_one_event_per_reason() {
        let mut digest = Digest::default();
        for p in 0..256 {
            let note = note_of(&CoordinatorEvent::MoveStarted {
                partition: p,
                from: Some("kv-0".into()),
                to: "kv-3".into(),
            })
            .unwrap_or_else(|| panic!("no note"));
            assert_eq!(digest.add(note), None);
        }
        let finished = note_of(&CoordinatorEvent::MoveFinished {
            partition: 9,
            from: None,
            to: "kv-3".into(),
        })
        .unwrap_or_else(|| panic!("no note"));
        assert_eq!(digest.add(finished), None);
        // Not per partition: published at once.
        let down = note_of(&CoordinatorEvent::NodeDown {
            node: "kv-1".into(),
            confirmed: true,
        })
        .unwrap_or_else(|| panic!("no note"));
        assert_eq!(digest.add(down.clone()), Some(down));

        let notes = digest.flush();
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].reason, "MoveStarted");
        assert!(
            notes[0].message.starts_with("256 partitions: partition 0:")
                && notes[0].message.contains("partition 4:")
                && !notes[0].message.contains("partition 5:")
                && notes[0].message.ends_with("(and 251 more)"),
            "{}",
            notes[0].message
        );
        assert_eq!(
            notes[1].message,
            "1 partition(s): partition 9: replica (new) -> kv-3"
        );
        assert!(digest.flush().is_empty());
    }

    #[test]
    fn failovers_and_moves_become_events_heartbeats_do_not() {
        let failover = note_of(&CoordinatorEvent::Failover {
            partition: 7,
            from: Some("kv-0".into()),
            to: "kv-2".into(),
            epoch: 4,
            confirmed: true,
        })
        .unwrap_or_else(|| panic!("no note"));
        assert_eq!(failover.reason, "Failover");
        assert!(!failover.warning);
        assert!(
            failover.message.contains("kv-0 -> kv-2"),
            "{}",
            failover.message
        );
        let failed = note_of(&CoordinatorEvent::MoveFailed {
            partition: 1,
            to: "kv-3".into(),
            reason: "timeout".into(),
        })
        .unwrap_or_else(|| panic!("no note"));
        assert!(failed.warning);
        assert_eq!(
            note_of(&CoordinatorEvent::HeartbeatFailed {
                node: "kv-1".into()
            }),
            None
        );
        assert_eq!(truncate("é".repeat(10), 5).len(), 4);
    }
}
