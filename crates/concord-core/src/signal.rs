//! `HeadSignal`: "the head moved" as a level, not an edge.
//!
//! Subscriptions wait for the head to pass a position they already read up to. Because the
//! wait is on a value (`head > p`) rather than on a wake-up message, a commit between the
//! last read and the wait cannot be missed. Runtime-free (std `Mutex` and `Waker`s), so
//! core stays without I/O and every in-process backend can use it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::version::Position;

#[derive(Debug, Default)]
struct State {
    head: Position,
    closed: bool,
    /// How many times [`HeadSignal::touch`] was called.
    touches: u64,
    wakers: Vec<Waker>,
}

/// The store's head position, and a way to wait until it passes a point.
#[derive(Clone, Debug, Default)]
pub struct HeadSignal {
    state: Arc<Mutex<State>>,
}

impl HeadSignal {
    /// A signal whose head is `head`.
    pub fn new(head: Position) -> Self {
        let signal = HeadSignal::default();
        signal.advance(head);
        signal
    }

    /// Publishes a new head (called after a commit is durable) and wakes the waiters.
    /// A head lower than the current one is ignored.
    pub fn advance(&self, head: Position) {
        let wakers = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if head <= s.head {
                return;
            }
            s.head = head;
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Ends every wait (the store is closing); waiters get the current head back.
    pub fn close(&self) {
        let wakers = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.closed = true;
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Wakes every waiter without moving the head: a stream was deleted or tombstoned,
    /// which a stream subscription waiting for new events must see (its next read fails
    /// with `StreamDeleted`). A wait that began before the touch resolves with the current
    /// head, which need not be beyond its point: waiters read again and wait again.
    pub fn touch(&self) {
        let wakers = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.touches = s.touches.wrapping_add(1);
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The current head.
    pub fn head(&self) -> Position {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .head
    }

    /// Resolves with the head once it is beyond `after`, or the signal is closed, or it is
    /// touched after this call.
    pub fn wait_beyond(&self, after: Position) -> WaitBeyond {
        let touches = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .touches;
        WaitBeyond {
            state: Arc::clone(&self.state),
            after,
            touches,
        }
    }
}

/// The future of [`HeadSignal::wait_beyond`].
#[derive(Debug)]
pub struct WaitBeyond {
    state: Arc<Mutex<State>>,
    after: Position,
    /// The touches when the wait began.
    touches: u64,
}

impl Future for WaitBeyond {
    type Output = Position;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Position> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.head > self.after || s.closed || s.touches != self.touches {
            return Poll::Ready(s.head);
        }
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn a_wait_resolves_once_the_head_passes_its_point() {
        let signal = HeadSignal::new(Position(3));
        assert_eq!(
            signal.wait_beyond(Position(2)).now_or_never(),
            Some(Position(3))
        );
        let mut wait = signal.wait_beyond(Position(3));
        assert_eq!((&mut wait).now_or_never(), None);
        signal.advance(Position(2));
        assert_eq!((&mut wait).now_or_never(), None);
        signal.advance(Position(4));
        assert_eq!(wait.now_or_never(), Some(Position(4)));
    }

    #[test]
    fn a_touch_releases_the_waits_begun_before_it_only() {
        let signal = HeadSignal::new(Position(1));
        let mut before = signal.wait_beyond(Position(1));
        assert_eq!((&mut before).now_or_never(), None);
        signal.touch();
        assert_eq!(before.now_or_never(), Some(Position(1)));
        let mut after = signal.wait_beyond(Position(1));
        assert_eq!((&mut after).now_or_never(), None);
    }

    #[test]
    fn closing_releases_every_waiter() {
        let signal = HeadSignal::new(Position(1));
        let mut wait = signal.wait_beyond(Position(1));
        assert_eq!((&mut wait).now_or_never(), None);
        signal.close();
        assert_eq!(wait.now_or_never(), Some(Position(1)));
    }
}
