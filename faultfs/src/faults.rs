//! The faults a test switches on and off, the counters it reads back, and the admission rule
//! every mutating file-system operation passes through ([`Shared::admit`]).
//!
//! [`FaultControl`] is the cloneable handle tests hold; the file system holds the same
//! [`Shared`] state. The rule itself ([`decide`]) is a pure function of the fault settings.

use crate::overlay::Overlay;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The fault settings in force. `Faults::default()` is a healthy disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Added to every fsync/fdatasync (a slow disk).
    pub fsync_delay: Duration,
    /// Every mutating operation blocks until thawed (like `fsfreeze`).
    pub frozen: bool,
    /// Writes and truncations that would make the files' total size exceed this many bytes
    /// fail with ENOSPC.
    pub capacity: Option<u64>,
    /// fsync/fdatasync fail with EIO (the unsynced data stays unsynced).
    pub fail_fsync: bool,
    /// write fails with EIO.
    pub fail_writes: bool,
}

/// What the file system has done since it was mounted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful fsync/fdatasync/fsyncdir calls.
    pub fsyncs: u64,
    /// fsyncs failed with an injected EIO.
    pub fsync_errors: u64,
    /// Successful write calls.
    pub writes: u64,
    /// Bytes accepted by successful writes.
    pub bytes_written: u64,
    /// Writes failed with an injected EIO.
    pub write_errors: u64,
    /// Writes and truncations refused with ENOSPC.
    pub enospc_errors: u64,
    /// Operations that waited for a thaw (so far).
    pub blocked_ops: u64,
    /// Operations waiting for a thaw right now.
    pub waiting_ops: u64,
    /// Power losses simulated.
    pub power_losses: u64,
    /// Unsynced bytes discarded by power losses.
    pub bytes_dropped: u64,
}

/// What one [`FaultControl::power_loss`] discarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerLoss {
    /// Files that had unsynced data.
    pub files: u64,
    /// Unsynced bytes dropped.
    pub bytes: u64,
}

/// The kind of operation being admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// write(2) data.
    Write,
    /// fsync/fdatasync of a file or directory.
    Fsync,
    /// Namespace and attribute changes: create, mkdir, unlink, rename, truncate, chmod, ...
    Metadata,
}

/// The admission rule's answer for one operation under the current faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run it now.
    Proceed,
    /// Wait until thawed, then decide again.
    Block,
    /// Sleep this long, then decide again (without the delay).
    Delay(Duration),
    /// Fail it with EIO.
    FailEio,
}

/// The admission rule: a frozen disk blocks every mutation; a slow disk delays fsyncs;
/// a failing disk fails them. `delayed` is true once the operation has served its delay.
pub fn decide(faults: &Faults, op: Op, delayed: bool) -> Decision {
    if faults.frozen {
        return Decision::Block;
    }
    match op {
        Op::Fsync if !delayed && !faults.fsync_delay.is_zero() => {
            Decision::Delay(faults.fsync_delay)
        }
        Op::Fsync if faults.fail_fsync => Decision::FailEio,
        Op::Write if faults.fail_writes => Decision::FailEio,
        _ => Decision::Proceed,
    }
}

/// Why an operation was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An injected I/O error.
    Eio,
    /// A power loss happened while the operation waited: its caller is gone.
    PowerLost,
}

/// The unsynced state of one file: `None` once synced (or never written).
pub(crate) type OverlaySlot = Arc<Mutex<Option<Overlay>>>;

#[derive(Default)]
struct CounterCells {
    fsyncs: AtomicU64,
    fsync_errors: AtomicU64,
    writes: AtomicU64,
    bytes_written: AtomicU64,
    write_errors: AtomicU64,
    enospc_errors: AtomicU64,
    blocked_ops: AtomicU64,
    waiting_ops: AtomicU64,
    power_losses: AtomicU64,
    bytes_dropped: AtomicU64,
}

/// State shared by the file system and every [`FaultControl`].
#[derive(Default)]
pub(crate) struct Shared {
    faults: Mutex<Faults>,
    thawed: Condvar,
    counters: CounterCells,
    /// Incremented by every power loss; an operation admitted before one is refused after.
    epoch: AtomicU64,
    /// Unsynced data per inode (FUSE inode number).
    overlays: Mutex<HashMap<u64, OverlaySlot>>,
    /// Held while a size-growing operation checks and applies its growth under a capacity.
    pub(crate) capacity_lock: Mutex<()>,
}

/// Locks `m`, recovering the data if a panicking thread poisoned it (every critical section
/// here leaves the data consistent at each step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The decision for `op` if it can be taken without waiting: `Some(Ok)` to run now,
    /// `Some(Err)` to fail now, `None` if the caller must wait in [`Shared::admit`].
    pub(crate) fn try_admit(&self, op: Op) -> Option<Result<(), Refusal>> {
        match decide(&lock(&self.faults), op, false) {
            Decision::Proceed => Some(Ok(())),
            Decision::FailEio => Some(Err(self.count_refusal(op))),
            Decision::Block | Decision::Delay(_) => None,
        }
    }

    /// Waits while frozen, serves the fsync delay, then admits or refuses `op`. `epoch` is
    /// the power-loss epoch when the operation arrived.
    pub(crate) fn admit(&self, op: Op, epoch: u64) -> Result<(), Refusal> {
        let mut delayed = false;
        let mut waiting = false;
        let mut faults = lock(&self.faults);
        loop {
            let decision = decide(&faults, op, delayed);
            if decision == Decision::Block {
                if !waiting {
                    waiting = true;
                    self.counters.blocked_ops.fetch_add(1, Ordering::SeqCst);
                    self.counters.waiting_ops.fetch_add(1, Ordering::SeqCst);
                }
                faults = self.thawed.wait(faults).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            if waiting {
                waiting = false;
                self.counters.waiting_ops.fetch_sub(1, Ordering::SeqCst);
            }
            match decision {
                Decision::Proceed | Decision::Block => break,
                Decision::FailEio => {
                    drop(faults);
                    return Err(self.count_refusal(op));
                }
                Decision::Delay(d) => {
                    drop(faults);
                    std::thread::sleep(d);
                    delayed = true;
                    faults = lock(&self.faults);
                }
            }
        }
        drop(faults);
        if self.epoch() != epoch {
            return Err(Refusal::PowerLost);
        }
        Ok(())
    }

    fn count_refusal(&self, op: Op) -> Refusal {
        let cell = match op {
            Op::Fsync => &self.counters.fsync_errors,
            _ => &self.counters.write_errors,
        };
        cell.fetch_add(1, Ordering::SeqCst);
        Refusal::Eio
    }

    pub(crate) fn count_fsync(&self) {
        self.counters.fsyncs.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_write(&self, bytes: u64) {
        self.counters.writes.fetch_add(1, Ordering::SeqCst);
        self.counters
            .bytes_written
            .fetch_add(bytes, Ordering::SeqCst);
    }

    pub(crate) fn count_enospc(&self) {
        self.counters.enospc_errors.fetch_add(1, Ordering::SeqCst);
    }

    /// The overlay slot of `ino`, created empty if missing.
    pub(crate) fn slot(&self, ino: u64) -> OverlaySlot {
        lock(&self.overlays).entry(ino).or_default().clone()
    }

    /// The overlay slot of `ino` if it has one.
    pub(crate) fn existing_slot(&self, ino: u64) -> Option<OverlaySlot> {
        lock(&self.overlays).get(&ino).cloned()
    }

    /// The logical length of `ino` if it has unsynced data.
    pub(crate) fn overlay_len(&self, ino: u64) -> Option<u64> {
        let slot = self.existing_slot(ino)?;
        lock(&slot).as_ref().map(Overlay::len)
    }

    /// Forgets the unsynced data of a file that no longer exists.
    pub(crate) fn discard(&self, ino: u64) {
        if let Some(slot) = lock(&self.overlays).remove(&ino) {
            *lock(&slot) = None;
        }
    }

    fn unsynced_bytes(&self) -> u64 {
        let slots: Vec<OverlaySlot> = lock(&self.overlays).values().cloned().collect();
        slots
            .iter()
            .filter_map(|s| lock(s).as_ref().map(Overlay::dirty_bytes))
            .sum()
    }

    fn set(&self, change: impl FnOnce(&mut Faults)) {
        let mut faults = lock(&self.faults);
        change(&mut faults);
        self.thawed.notify_all();
    }

    fn power_loss(&self) -> PowerLoss {
        let mut map = lock(&self.overlays);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut lost = PowerLoss::default();
        for (_, slot) in map.drain() {
            if let Some(ov) = lock(&slot).take() {
                lost.files += 1;
                lost.bytes += ov.dirty_bytes();
            }
        }
        self.counters.power_losses.fetch_add(1, Ordering::SeqCst);
        self.counters
            .bytes_dropped
            .fetch_add(lost.bytes, Ordering::SeqCst);
        lost
    }

    fn counters(&self) -> Counters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Counters {
            fsyncs: get(&c.fsyncs),
            fsync_errors: get(&c.fsync_errors),
            writes: get(&c.writes),
            bytes_written: get(&c.bytes_written),
            write_errors: get(&c.write_errors),
            enospc_errors: get(&c.enospc_errors),
            blocked_ops: get(&c.blocked_ops),
            waiting_ops: get(&c.waiting_ops),
            power_losses: get(&c.power_losses),
            bytes_dropped: get(&c.bytes_dropped),
        }
    }
}

/// A cloneable handle that switches faults of one mounted [`crate::FaultFs`] on and off.
#[derive(Clone)]
pub struct FaultControl {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for FaultControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultControl")
            .field("faults", &self.faults())
            .finish()
    }
}

impl FaultControl {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(Shared::default()),
        }
    }

    /// Adds `delay` to every fsync/fdatasync (zero: no delay).
    pub fn set_fsync_delay(&self, delay: Duration) {
        self.shared.set(|f| f.fsync_delay = delay);
    }

    /// Blocks every mutating operation (write, fsync, truncate, create, rename, ...) until
    /// [`FaultControl::thaw`]; reads go on. A process blocked here cannot die until thawed.
    pub fn freeze(&self) {
        self.shared.set(|f| f.frozen = true);
    }

    /// Lets blocked operations run.
    pub fn thaw(&self) {
        self.shared.set(|f| f.frozen = false);
    }

    /// Fails growth past `capacity` bytes of total file size with ENOSPC (`None`: unlimited).
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.shared.set(|f| f.capacity = capacity);
    }

    /// Makes fsync/fdatasync fail with EIO.
    pub fn fail_fsync(&self, on: bool) {
        self.shared.set(|f| f.fail_fsync = on);
    }

    /// Makes write fail with EIO.
    pub fn fail_writes(&self, on: bool) {
        self.shared.set(|f| f.fail_writes = on);
    }

    /// Clears every fault (and thaws).
    pub fn heal(&self) {
        self.shared.set(|f| *f = Faults::default());
    }

    /// Drops every write not yet fsynced, as a power cut would. Kill the processes using the
    /// file system first: an operation still in flight is refused with EIO.
    pub fn power_loss(&self) -> PowerLoss {
        self.shared.power_loss()
    }

    /// The fault settings in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// What the file system has done so far.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    /// Bytes written but not yet fsynced (what a power loss now would drop).
    pub fn unsynced_bytes(&self) -> u64 {
        self.shared.unsynced_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_healthy_disk_admits_everything() {
        let f = Faults::default();
        for op in [Op::Write, Op::Fsync, Op::Metadata] {
            assert_eq!(decide(&f, op, false), Decision::Proceed);
        }
    }

    #[test]
    fn frozen_blocks_every_mutation_before_any_other_fault() {
        let f = Faults {
            frozen: true,
            fail_fsync: true,
            fail_writes: true,
            fsync_delay: Duration::from_millis(5),
            ..Faults::default()
        };
        for op in [Op::Write, Op::Fsync, Op::Metadata] {
            assert_eq!(decide(&f, op, false), Decision::Block);
        }
    }

    #[test]
    fn a_slow_failing_disk_delays_then_fails_fsync_only() {
        let f = Faults {
            fail_fsync: true,
            fsync_delay: Duration::from_millis(5),
            ..Faults::default()
        };
        assert_eq!(
            decide(&f, Op::Fsync, false),
            Decision::Delay(Duration::from_millis(5))
        );
        assert_eq!(decide(&f, Op::Fsync, true), Decision::FailEio);
        assert_eq!(decide(&f, Op::Write, false), Decision::Proceed);
        let w = Faults {
            fail_writes: true,
            ..Faults::default()
        };
        assert_eq!(decide(&w, Op::Write, false), Decision::FailEio);
        assert_eq!(decide(&w, Op::Fsync, false), Decision::Proceed);
        assert_eq!(decide(&w, Op::Metadata, false), Decision::Proceed);
    }

    #[test]
    fn admit_waits_for_thaw_and_counts_the_wait() {
        let control = FaultControl::new();
        control.freeze();
        let shared = control.shared.clone();
        let epoch = shared.epoch();
        let t = std::thread::spawn(move || shared.admit(Op::Fsync, epoch));
        let deadline = Instant::now() + Duration::from_secs(10);
        while control.counters().waiting_ops == 0 {
            assert!(Instant::now() < deadline, "the fsync never blocked");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!t.is_finished());
        control.thaw();
        assert_eq!(t.join().ok(), Some(Ok(())));
        let c = control.counters();
        assert_eq!((c.blocked_ops, c.waiting_ops), (1, 0));
    }

    #[test]
    fn an_operation_waiting_across_a_power_loss_is_refused() {
        let control = FaultControl::new();
        control.freeze();
        let shared = control.shared.clone();
        let epoch = shared.epoch();
        let t = std::thread::spawn(move || shared.admit(Op::Write, epoch));
        let deadline = Instant::now() + Duration::from_secs(10);
        while control.counters().waiting_ops == 0 {
            assert!(Instant::now() < deadline, "the write never blocked");
            std::thread::sleep(Duration::from_millis(5));
        }
        control.power_loss();
        control.heal();
        assert_eq!(t.join().ok(), Some(Err(Refusal::PowerLost)));
    }

    #[test]
    fn power_loss_drops_every_overlay_and_reports_it() {
        let control = FaultControl::new();
        let s = &control.shared;
        let a = s.slot(10);
        *lock(&a) = Some(Overlay::new(0));
        if let Some(ov) = lock(&a).as_mut() {
            ov.write(0, b"abc");
        }
        s.slot(11); // written, then synced: nothing to drop
        assert_eq!(control.unsynced_bytes(), 3);
        let lost = control.power_loss();
        assert_eq!(lost, PowerLoss { files: 1, bytes: 3 });
        assert_eq!(s.overlay_len(10), None);
        assert_eq!(lock(&a).as_ref(), None);
        assert_eq!(control.counters().bytes_dropped, 3);
    }
}
