//! [`GatedStore`]: a store whose next append can be held at a gate, and failed when it is
//! released, so a test can keep one append in flight while it does something else (shut
//! a server down, make more decisions on top of it) and decide how it ends. Everything
//! else goes straight to the store it wraps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use concord_core::{AppendOutcome, AppendRequest, EventStore, StoreError};
use tokio::sync::Notify;

use crate::wrap::{Wrap, Wrapped};

/// Which appends the gate holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Held {
    /// Any append.
    Any,
    /// Appends to store-owned (`$`) streams, such as a consumer group's state.
    StoreOwned,
}

/// How a held append ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Release {
    /// It goes on to the store.
    Pass,
    /// It fails as if the store were unreachable, and nothing is written.
    Fail,
    /// It panics, as a bug in a backend would, and nothing is written.
    Panic,
}

/// A store whose next matching append waits at a gate (see the module docs).
pub type GatedStore = Wrapped<Gate>;

/// The gate of a [`GatedStore`].
#[derive(Debug)]
pub struct Gate {
    inner: Arc<dyn EventStore>,
    armed: Mutex<Option<Held>>,
    release_as: Mutex<Release>,
    store_owned_appends: AtomicUsize,
    entered: Notify,
    release: Notify,
}

impl Gate {
    /// A gate in front of `inner`, open until [`Gate::hold_next`].
    pub fn new(inner: Arc<dyn EventStore>) -> GatedStore {
        Wrapped(Gate {
            inner,
            armed: Mutex::new(None),
            release_as: Mutex::new(Release::Pass),
            store_owned_appends: AtomicUsize::new(0),
            entered: Notify::new(),
            release: Notify::new(),
        })
    }

    /// The next append that `held` names waits at the gate until [`Gate::release`].
    pub fn hold_next(&self, held: Held) {
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some(held);
    }

    /// Waits until the held append has reached the gate.
    pub async fn entered(&self) {
        self.entered.notified().await;
    }

    /// Lets the held append go on, fail or panic.
    pub fn release(&self, how: Release) {
        *self
            .release_as
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = how;
        self.release.notify_one();
    }

    /// Appends to store-owned streams made so far (held or not).
    pub fn store_owned_appends(&self) -> usize {
        self.store_owned_appends.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Wrap for Gate {
    fn inner(&self) -> &dyn EventStore {
        self.inner.as_ref()
    }
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let store_owned = request.stream.is_system();
        if store_owned {
            self.store_owned_appends.fetch_add(1, Ordering::SeqCst);
        }
        let hold = {
            let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
            let hold = matches!(*armed, Some(Held::Any))
                || (store_owned && *armed == Some(Held::StoreOwned));
            if hold {
                *armed = None;
            }
            hold
        };
        if hold {
            self.entered.notify_one();
            self.release.notified().await;
            let how = std::mem::replace(
                &mut *self
                    .release_as
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
                Release::Pass,
            );
            match how {
                Release::Pass => {}
                Release::Fail => {
                    return Err(StoreError::unavailable(
                        "gated",
                        "the test failed this append at the gate",
                        std::io::Error::other("failed at the gate"),
                    ));
                }
                #[allow(clippy::panic)]
                Release::Panic => panic!("the test made this append panic at the gate"),
            }
        }
        self.inner.append(request).await
    }
}
