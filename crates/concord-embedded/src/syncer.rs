//! The syncer thread: acknowledgements wait for the fsync, the writer does not.
//!
//! SQLite's `synchronous = FULL` syncs the write-ahead log inside `COMMIT`, so the writer
//! thread sat idle for the whole fsync and the next batch could not even be decided. Under
//! [`Durability::Full`](crate::Durability::Full) the writer instead commits with
//! `synchronous = NORMAL` (the batch's frames reach the log, unsynced) and hands the
//! batch's answers to this thread, then goes straight on with the next batch. This thread
//! syncs the log (`fdatasync` of the `-wal` file: one call covers every batch written
//! before it), and only then publishes the new head and sends the answers. So an append is
//! still acknowledged only once it is on the device, and the fsync of batch N overlaps the
//! work of batch N+1.
//!
//! What keeps this correct:
//! - Answers go out in batch order, each after a sync that covers its batch and every batch
//!   before it, so no answer (a conflict listing events, a duplicate naming positions)
//!   describes something that is not yet durable.
//! - Readers see committed but unsynced rows in SQLite, so every read is bounded by the
//!   published head (`HeadSignal`), which only this thread advances, after the sync.
//! - `NORMAL` still syncs the log header when SQLite restarts the log and syncs both files
//!   around a checkpoint, so a crash can lose only unacknowledged batches, never corrupt
//!   the file.
//! - A failed sync poisons the store (as a failed commit does): nothing pending or later
//!   is acknowledged, because after a failed fsync nobody knows what the disk holds.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use concord_core::{HeadSignal, Position};

use crate::writer::{Answer, Job, Jobs, Poison, Request};

/// Syncs the log, or fails as a failed `fdatasync` would when a test armed `fail` (the
/// one sync step of the syncer and of the writer's own syncs).
pub(crate) fn sync_log(wal: &File, fail: &mut bool) -> std::io::Result<()> {
    if std::mem::take(fail) {
        return Err(std::io::Error::other("injected sync failure"));
    }
    wal.sync_data()
}

/// Poisons the store (once) after a failed sync of the log; returns the reason every
/// append is refused with.
pub(crate) fn poison_after_failed_sync(poison: &Poison, e: &std::io::Error) -> String {
    tracing::error!(error = %e, "embedded store poisoned; appends are refused until the store is reopened");
    poison
        .get_or_init(|| format!("a sync of the write-ahead log failed ({e})"))
        .clone()
}

/// A committed batch waiting for its sync: the head after it and its answers, in order.
pub(crate) struct Committed {
    pub(crate) head: u64,
    pub(crate) answers: Vec<(Request, Answer)>,
}

/// A message to the syncer thread.
pub(crate) enum SyncJob {
    /// Sync, then acknowledge.
    Batch(Committed),
    /// The next sync fails as a failed `fdatasync` would (tests of poisoning).
    FailNextSync,
    /// Stop until the sender of this channel is dropped (tests hold a batch committed but
    /// unacknowledged with it).
    Pause(std::sync::mpsc::Receiver<()>),
}

/// The syncer thread's state.
pub(crate) struct Syncer {
    /// The write-ahead log, opened by us beside SQLite: syncing any descriptor of the file
    /// flushes all of it.
    pub(crate) wal: File,
    /// The head the last successful sync covered (the writer syncs too, when it is alone).
    pub(crate) synced: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(crate) signal: HeadSignal,
    pub(crate) poison: Poison,
    pub(crate) fail_next_sync: bool,
    /// The writer's channel, to wake it when a sync ends: it holds the next batch open
    /// until then.
    pub(crate) writer: Jobs,
}

impl Drop for Syncer {
    /// However the thread ends, a batch the writer holds open for this syncer must not wait
    /// for a wake-up that cannot come: "synced through everything" makes the writer commit
    /// at once, and its hand-off to a syncer that is gone refuses the batch (a lone caller's
    /// batch it syncs and answers itself).
    fn drop(&mut self) {
        self.synced.store(u64::MAX, Ordering::Release);
        let _ = self.writer.send(Job::Synced);
    }
}

impl Syncer {
    /// Runs until the writer is gone, then answers what it still holds.
    pub(crate) fn run(mut self, jobs: &Receiver<SyncJob>) {
        while let Ok(first) = jobs.recv() {
            let mut pending = Vec::new();
            self.take(first, &mut pending);
            while let Ok(job) = jobs.try_recv() {
                self.take(job, &mut pending);
            }
            self.acknowledge(pending);
        }
    }

    fn take(&mut self, job: SyncJob, pending: &mut Vec<Committed>) {
        match job {
            SyncJob::Batch(batch) => pending.push(batch),
            SyncJob::FailNextSync => self.fail_next_sync = true,
            SyncJob::Pause(until) => {
                // Returns when the test drops its guard.
                let _ = until.recv();
            }
        }
    }

    /// Syncs once for every pending batch, then answers them in order (or refuses them all
    /// if the store is or becomes poisoned).
    fn acknowledge(&mut self, pending: Vec<Committed>) {
        let Some(head) = pending.iter().map(|b| b.head).max() else {
            return;
        };
        if self.poison.get().is_none() && head > self.synced.load(Ordering::Acquire) {
            match sync_log(&self.wal, &mut self.fail_next_sync) {
                Ok(()) => {
                    self.synced.fetch_max(head, Ordering::AcqRel);
                }
                Err(e) => {
                    poison_after_failed_sync(&self.poison, &e);
                }
            }
        }
        // Before the answers: the writer commits the batch it held open while this sync
        // ran, and the next sync can start on it sooner. (Gone only when the writer is.)
        let _ = self.writer.send(Job::Synced);
        if let Some(reason) = self.poison.get() {
            for batch in pending {
                for (request, _) in batch.answers {
                    request.refuse(concord_core::StoreError::Poisoned(reason.clone()));
                }
            }
            return;
        }
        // Head first, then answers: a caller that got its acknowledgement and reads sees
        // its own events.
        self.signal
            .advance(Position(self.synced.load(Ordering::Acquire)));
        for batch in pending {
            for (request, answer) in batch.answers {
                request.answer(answer);
            }
        }
    }
}
