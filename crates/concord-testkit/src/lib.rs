//! Test support shared by every Concord crate: the conformance suite that every backend
//! must pass, harnesses that start real servers, and proptest strategies.
//!
//! - [`conformance`]: one spec per behaviour of API.md; `conformance_suite!(factory)` in a
//!   backend's `tests/conformance.rs` runs them all, one named test each.
//! - [`properties`]: the model check, random operation sequences compared step by step
//!   with `MemoryStore`; `model_check!(factory)` or [`properties::run_model_check`].
//! - [`redis`], [`postgres`]: real servers started by the test (ephemeral ports, temp dirs).
//! - [`scavenge_kill`]: a scavenge killed with SIGKILL over and over, then checked; each
//!   backend's `tests/scavenge_kill.rs` opens its store and reads its progress.
//! - [`scale`]: the `CONCORD_TEST_SCALE` factor for iteration counts.
//! - [`wrap`]: a store that changes one method of another and forwards the rest; [`gated`]
//!   one whose next append can be held in flight, then passed or failed.
//!
//! It is a dev-dependency only (the architecture test enforces it). Its helpers panic on
//! failure, because that is how a test reports one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::any::Any;
use std::sync::Arc;

use concord_core::EventStore;

pub mod conformance;
pub mod gated;
pub mod postgres;
pub mod properties;
pub mod redis;
pub mod scavenge_kill;
mod server;
pub mod wrap;

/// A store under test, and whatever must live as long as it (a temp dir, a server).
pub struct TestStore {
    /// The store.
    pub store: Arc<dyn EventStore>,
    /// Dropped after the test: temp dirs, server processes, runtimes.
    pub guard: Box<dyn Any + Send>,
}

impl std::fmt::Debug for TestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStore")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl TestStore {
    /// A store that needs nothing kept alive.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        TestStore {
            store,
            guard: Box::new(()),
        }
    }

    /// A store and what must outlive it.
    pub fn with_guard(store: Arc<dyn EventStore>, guard: impl Any + Send) -> Self {
        TestStore {
            store,
            guard: Box::new(guard),
        }
    }
}

/// The factor by which randomised and load tests multiply their iteration counts:
/// `CONCORD_TEST_SCALE` (default 1). Soak runs raise it.
pub fn scale() -> usize {
    std::env::var("CONCORD_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}
