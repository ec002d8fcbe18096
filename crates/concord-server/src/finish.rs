//! An append that has started finishes, even when its request is dropped.
//!
//! A client that goes away mid-request makes hyper drop the handler's future. An append
//! must not stop halfway through its caller's side of the exchange then (on Redis or
//! PostgreSQL, between sending and reading an answer), and graceful shutdown waits for it
//! through the request that awaits it. A task per append gave both, at the price of two
//! hand-offs between tasks on every request: measured on one connection, the append's p50
//! through the server went from 0.212–0.256 ms to 0.204–0.216 ms without it (bench/results/
//! HISTORY.md, issue 22). So the append runs in the request's own task, and only a request dropped
//! before the append is done hands what is left of it to a task of its own.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt as _;

use crate::error::ApiError;

/// `work`, polled in the caller's task; if the caller drops it unfinished, it goes on in a
/// task of its own to the end. A panic inside it is the request's internal error, as a
/// failed task's was.
pub(crate) fn finished<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = Result<T, ApiError>> + Send {
    Finishing(Some(Box::pin(AssertUnwindSafe(work).catch_unwind())))
}

type Work<T> = Pin<Box<dyn Future<Output = std::thread::Result<T>> + Send>>;

struct Finishing<T: Send + 'static>(Option<Work<T>>);

impl<T: Send + 'static> Future for Finishing<T> {
    type Output = Result<T, ApiError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(work) = self.0.as_mut() else {
            // Polled again after it answered: a bug of the caller's, never an input's.
            return Poll::Pending;
        };
        let answer = std::task::ready!(work.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(answer.map_err(|_| ApiError::Internal("the append panicked".to_owned())))
    }
}

impl<T: Send + 'static> Drop for Finishing<T> {
    fn drop(&mut self) {
        if let Some(work) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            drop(runtime.spawn(work));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn work_dropped_unfinished_goes_on_to_the_end() {
        let (go, gate) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        let work = finished(async move {
            let _ = gate.await;
            let _ = done_tx.send(());
            7
        });
        let mut work = Box::pin(work);
        assert!(futures::poll!(work.as_mut()).is_pending());
        drop(work);
        go.send(()).unwrap();
        done.await
            .expect("the work finished after its caller dropped it");
    }

    #[tokio::test]
    async fn work_answers_in_the_callers_task_and_a_panic_is_an_internal_error() {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let answer = finished(async move {
            flag.store(true, Ordering::SeqCst);
            5
        })
        .await;
        assert_eq!(answer.unwrap(), 5);
        assert!(ran.load(Ordering::SeqCst));
        let panicked = finished(async move {
            if ran.load(Ordering::SeqCst) {
                panic!("a backend's bug");
            }
        })
        .await;
        assert!(
            matches!(panicked, Err(ApiError::Internal(_))),
            "{panicked:?}"
        );
    }
}
