//! Telling a lone caller from a moment of quiet between two batches of many callers.
//!
//! A backend's writer batches the appends of many callers into one commit; a caller that
//! appends alone (a CLI, a script, a single-threaded service) pays for the hand-off to the
//! writer and back without sharing anything, so the embedded and PostgreSQL stores write
//! its append on its own task instead. With many callers, the first append to arrive after
//! a batch is answered is often alone for a moment; writing it on its own then made the
//! next batch wait for it (HTTP and gRPC at 64 writers lost 5–10 % on the embedded store).
//! A lone caller is alone every time: [`Appending`] counts how many appends in a row found
//! themselves alone, and calls a caller alone only after [`ALONE_IN_A_ROW`] of them.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many appends in a row must find themselves alone before one is written on its
/// caller's task.
pub const ALONE_IN_A_ROW: usize = 8;

/// What a store knows of the appends under way.
#[derive(Debug, Default)]
pub struct Appending {
    /// Appends entered and not yet answered.
    under_way: AtomicUsize,
    /// How many appends in a row found no other under way when they entered.
    alone_in_a_row: AtomicUsize,
}

impl Appending {
    /// Counts an append in for as long as the guard lives (a cancelled future drops it
    /// too); says whether it is a lone caller's: no other append under way, and none for
    /// the last [`ALONE_IN_A_ROW`]. A race between two callers only costs a hand-off.
    pub fn enter(&self) -> (AppendingGuard<'_>, bool) {
        let others = self.under_way.fetch_add(1, Ordering::AcqRel);
        let alone = if others == 0 {
            self.alone_in_a_row.fetch_add(1, Ordering::AcqRel) + 1 >= ALONE_IN_A_ROW
        } else {
            self.alone_in_a_row.store(0, Ordering::Release);
            false
        };
        (AppendingGuard(&self.under_way), alone)
    }

    /// How many appends have entered and not yet been answered (an answered caller counts
    /// until its task runs again).
    pub fn under_way(&self) -> usize {
        self.under_way.load(Ordering::Acquire)
    }

    /// Whether the one append under way is still a lone caller's: no other has entered
    /// since (for a caller that gave other tasks a turn first).
    pub fn still_alone(&self) -> bool {
        self.under_way.load(Ordering::Acquire) == 1
            && self.alone_in_a_row.load(Ordering::Acquire) >= ALONE_IN_A_ROW
    }
}

/// Counts an append under way until dropped.
#[derive(Debug)]
pub struct AppendingGuard<'a>(&'a AtomicUsize);

impl Drop for AppendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_is_alone_only_after_a_streak_of_appends_that_found_no_other() {
        let appending = Appending::default();
        for _ in 1..ALONE_IN_A_ROW {
            let (_guard, alone) = appending.enter();
            assert!(!alone);
        }
        let (guard, alone) = appending.enter();
        assert!(alone);
        assert!(appending.still_alone());
        let (_other, other_alone) = appending.enter();
        assert!(!other_alone, "two under way: neither is alone");
        assert!(!appending.still_alone());
        drop(guard);
        let (_next, next_alone) = appending.enter();
        assert!(
            !next_alone,
            "the streak starts again after a moment with others"
        );
    }
}
