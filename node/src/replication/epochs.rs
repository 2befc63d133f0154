//! Leader-epoch history of a replica's log and the divergence point between two logs
//! (the leader-epoch rule of Kafka KIP-101), as pure functions.

/// For every epoch that wrote (or may write) to this log, the first sequence number it used.
///
/// Epochs increase strictly; start sequence numbers never decrease. The entry at `seq`
/// belongs to the last epoch whose start is `<= seq`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochHistory {
    starts: Vec<(u64, u64)>,
}

impl EpochHistory {
    /// Builds a history from `(epoch, start_seq)` pairs, dropping pairs that break the ordering.
    pub fn from_starts(pairs: Vec<(u64, u64)>) -> Self {
        let mut h = Self::default();
        for (epoch, start) in pairs {
            h.record(epoch, start);
        }
        h
    }

    pub fn starts(&self) -> &[(u64, u64)] {
        &self.starts
    }

    /// The newest epoch in the history (0 when empty).
    pub fn last_epoch(&self) -> u64 {
        self.starts.last().map_or(0, |&(e, _)| e)
    }

    /// Notes that `epoch` starts writing at `start_seq`. Older or equal epochs are ignored;
    /// an epoch that never wrote anything is replaced by the next one starting at the same place.
    pub fn record(&mut self, epoch: u64, start_seq: u64) {
        match self.starts.last().copied() {
            Some((last, _)) if epoch <= last => {}
            Some((_, last_start)) if start_seq < last_start => {}
            Some((_, last_start)) if start_seq == last_start => {
                self.starts.pop();
                self.starts.push((epoch, start_seq));
            }
            _ => self.starts.push((epoch, start_seq)),
        }
    }

    /// Epoch of the entry at `seq` (0 when no epoch covers it, i.e. before the first entry).
    pub fn epoch_at(&self, seq: u64) -> u64 {
        self.starts
            .iter()
            .rev()
            .find(|&&(_, start)| start <= seq)
            .map_or(0, |&(e, _)| e)
    }

    /// Forgets epochs that start after `seq` (the log was truncated to end at `seq`).
    pub fn truncate_after(&mut self, seq: u64) {
        self.starts.retain(|&(_, start)| start <= seq);
    }

    /// Keeps only what a replica whose log ends at `seq` needs (used when shipping a snapshot).
    pub fn up_to(&self, seq: u64) -> Self {
        let mut h = self.clone();
        h.truncate_after(seq);
        h
    }

    /// The range `[first, last]` of sequence numbers that `epoch` covers in a log ending at
    /// `log_last`, if the epoch is in the history and covers at least one entry.
    fn span(&self, epoch: u64, log_last: u64) -> Option<(u64, u64)> {
        let i = self.starts.iter().position(|&(e, _)| e == epoch)?;
        let first = self.starts[i].1;
        let last = match self.starts.get(i + 1) {
            Some(&(_, next)) => next.saturating_sub(1).min(log_last),
            None => log_last,
        };
        (first <= last).then_some((first, last))
    }
}

/// The last sequence number up to which a follower's log equals the primary's.
///
/// By the log-matching property, entries with the same `(epoch, seq)` are identical and so are
/// their prefixes; the follower keeps everything up to the returned point and truncates the
/// rest. Walks the follower's epochs from the newest, like a follower repeatedly asking the
/// primary "where did epoch e end?".
pub fn divergence_point(
    primary: &EpochHistory,
    primary_last: u64,
    follower: &EpochHistory,
    follower_last: u64,
) -> u64 {
    for &(epoch, _) in follower.starts.iter().rev() {
        let Some((f_first, f_last)) = follower.span(epoch, follower_last) else {
            continue;
        };
        let Some((p_first, p_last)) = primary.span(epoch, primary_last) else {
            continue;
        };
        if f_first.max(p_first) <= f_last.min(p_last) {
            return f_last.min(p_last);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(u64, u64)]) -> EpochHistory {
        EpochHistory::from_starts(pairs.to_vec())
    }

    #[test]
    fn epoch_at_and_record() {
        let mut x = h(&[(1, 1), (3, 5)]);
        assert_eq!(x.epoch_at(0), 0);
        assert_eq!(x.epoch_at(4), 1);
        assert_eq!(x.epoch_at(9), 3);
        x.record(2, 7); // older epoch: ignored
        x.record(4, 9);
        x.record(5, 9); // epoch 4 never wrote: replaced
        assert_eq!(x.starts(), &[(1, 1), (3, 5), (5, 9)]);
        x.truncate_after(6);
        assert_eq!(x.starts(), &[(1, 1), (3, 5)]);
    }

    #[test]
    fn identical_logs_do_not_diverge() {
        let a = h(&[(1, 1), (2, 10)]);
        assert_eq!(divergence_point(&a, 20, &a, 20), 20);
        assert_eq!(divergence_point(&a, 20, &a, 15), 15);
        assert_eq!(divergence_point(&a, 15, &a, 20), 15);
    }

    #[test]
    fn follower_with_uncommitted_suffix_of_old_epoch_truncates_it() {
        // The old primary (epoch 1) wrote 1..=12 but only 1..=10 reached the new primary,
        // which started epoch 2 at 11.
        let primary = h(&[(1, 1), (2, 11)]);
        let follower = h(&[(1, 1)]);
        assert_eq!(divergence_point(&primary, 15, &follower, 12), 10);
    }

    #[test]
    fn follower_of_an_epoch_the_primary_never_saw_falls_back_to_older_epochs() {
        // Follower wrote epoch 2 entries 8..=9 as a short-lived primary; the current primary
        // went from epoch 1 (ending at 7) straight to epoch 3.
        let primary = h(&[(1, 1), (3, 8)]);
        let follower = h(&[(1, 1), (2, 8)]);
        assert_eq!(divergence_point(&primary, 20, &follower, 9), 7);
    }

    #[test]
    fn empty_logs_diverge_at_zero() {
        let primary = h(&[(1, 1)]);
        assert_eq!(
            divergence_point(&primary, 5, &EpochHistory::default(), 0),
            0
        );
        assert_eq!(divergence_point(&primary, 5, &h(&[(2, 1)]), 3), 0);
    }
}
