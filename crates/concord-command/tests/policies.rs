//! The four conflict policies against a store with a "noisy neighbour": a wrapper around
//! `MemoryStore` that commits someone else's event to the stream just before each of the
//! next N appends, so every race is deterministic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use concord_command::{
    Aggregate, Backoff, CommandError, Handler, Options, Policy, Resolution, Retry,
};
use concord_core::{
    AppendOutcome, AppendRequest, Direction, EventStore, ExpectedVersion, MemoryStore, StoreError,
    StreamName, Version, doc,
};
use concord_testkit::wrap::{Wrap, Wrapped};
use serde::{Deserialize, Serialize};

#[derive(Debug)]
struct Noisy {
    inner: MemoryStore,
    interruptions: AtomicU32,
}

#[async_trait]
impl Wrap for Noisy {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        if self
            .interruptions
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let theirs = doc::event("Added", serde_json::json!({ "n": 100 }));
            let _ = self
                .inner
                .append(AppendRequest::new(
                    request.stream.clone(),
                    ExpectedVersion::Any,
                    vec![theirs],
                ))
                .await?;
        }
        self.inner.append(request).await
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum Event {
    Added { n: u64 },
}

#[derive(Clone, Debug, Default)]
struct Counter {
    total: u64,
}

#[derive(Debug)]
struct Add(u64);

static RESOLVER_SAW: Mutex<Vec<usize>> = Mutex::new(Vec::new());

impl Aggregate for Counter {
    type Event = Event;
    type Command = Add;
    type Rejection = &'static str;
    fn apply(&mut self, Event::Added { n }: &Event) {
        self.total += n;
    }
    fn decide(&self, Add(n): &Add) -> Result<Vec<Event>, &'static str> {
        if self.total + n > 1000 {
            return Err("the counter stops at 1000");
        }
        Ok(vec![Event::Added { n: *n }])
    }
}

fn setup(interruptions: u32) -> (Handler<Counter>, StreamName) {
    let store = Arc::new(Wrapped(Noisy {
        inner: MemoryStore::new(),
        interruptions: AtomicU32::new(interruptions),
    }));
    (Handler::new(store), doc::stream("counter-1"))
}

fn retry(attempts: u32) -> Policy<Counter> {
    Policy::Retry(Retry {
        attempts,
        backoff: Backoff::NONE,
    })
}

#[tokio::test]
async fn reject_returns_the_conflict_with_the_concurrent_event() {
    let (h, s) = setup(1);
    let err = h.execute(&s, Add(1), &Options::new()).await.unwrap_err();
    let CommandError::Conflict {
        conflict,
        retries: 0,
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (conflict.actual, conflict.concurrent_events.len()),
        (Version(1), 1)
    );
}

#[tokio::test]
async fn retry_re_decides_on_fresh_state_and_counts_its_retries() {
    let (h, s) = setup(3);
    let c = h
        .execute(&s, Add(1), &Options::by("me").policy(retry(5)))
        .await
        .unwrap();
    let Resolution::Retried { retries: 3, over } = &c.resolution else {
        panic!("{:?}", c.resolution)
    };
    assert_eq!(
        over.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(c.appended.unwrap().first_version, Version(4));
    assert_eq!(h.load(&s).await.unwrap().state.total, 301);
}

#[tokio::test]
async fn retry_gives_up_after_its_attempts_with_the_last_conflict() {
    let (h, s) = setup(5);
    let err = h
        .execute(&s, Add(1), &Options::new().policy(retry(2)))
        .await
        .unwrap_err();
    let CommandError::Conflict {
        conflict,
        retries: 2,
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(conflict.actual, Version(3));
}

#[tokio::test]
async fn retry_reports_a_rejection_on_the_fresh_state_with_what_changed_it() {
    let (h, s) = setup(10);
    let err = h
        .execute(&s, Add(950), &Options::new().policy(retry(5)))
        .await
        .unwrap_err();
    let CommandError::Rejected {
        reason,
        version,
        retries: 1,
        over,
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (reason, version, over.len()),
        ("the counter stops at 1000", Version(1), 1)
    );
}

#[tokio::test]
async fn rebase_unless_is_done_by_the_store_without_a_retry() {
    let (h, s) = setup(1);
    let c = h
        .execute(
            &s,
            Add(1),
            &Options::new().policy(Policy::rebase_unless(&["Reset"]).unwrap()),
        )
        .await
        .unwrap();
    let Resolution::Rebased {
        expected_version,
        over,
    } = &c.resolution
    else {
        panic!("{:?}", c.resolution)
    };
    assert_eq!((*expected_version, over.len()), (Version(0), 1));
    let refused = setup(1);
    let err = refused
        .0
        .execute(
            &refused.1,
            Add(1),
            &Options::new().policy(Policy::rebase_unless(&["Added"]).unwrap()),
        )
        .await;
    assert!(err.unwrap_err().conflict().is_some());
}

#[tokio::test]
async fn merge_sees_every_concurrent_event_since_the_base_in_each_round() {
    let (h, s) = setup(2);
    let policy = Policy::merge(|base: &Counter, concurrent: &[Event], ours: &[Event]| {
        RESOLVER_SAW.lock().unwrap().push(concurrent.len());
        assert_eq!(base.total, 0);
        Ok(ours.to_vec())
    });
    let c = h
        .execute(&s, Add(1), &Options::new().policy(policy))
        .await
        .unwrap();
    let Resolution::Merged { rounds: 2, over } = &c.resolution else {
        panic!("{:?}", c.resolution)
    };
    assert_eq!(over.len(), 2);
    assert_eq!(*RESOLVER_SAW.lock().unwrap(), [1, 2]);
    assert_eq!(c.appended.unwrap().first_version, Version(3));
}

#[tokio::test]
async fn events_carry_the_actor_in_their_metadata() {
    let (h, s) = setup(0);
    let c = h.execute(&s, Add(5), &Options::by("ann")).await.unwrap();
    let e = &h
        .store()
        .read_stream(&s, Version(1), Direction::Forward, 10)
        .await
        .unwrap()[0];
    assert_eq!(e.metadata.as_str(), r#"{"actor":"ann"}"#);
    assert_eq!(c.resolution, Resolution::AsDecided);
}
