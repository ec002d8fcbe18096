//! How a group's decisions are written: an operation decides on the state with the batch in
//! flight folded in, its decision goes out with the others made meanwhile in the next
//! append, and a batch that is not written takes the decisions made on top of it along.
//!
//! The store is a `MemoryStore` behind a gate that can hold an append to a group's state
//! stream, so a spec can keep one batch in flight while it makes more decisions. An
//! operation's future is polled by hand, once, to stage its decision (it then waits for
//! the batch's outcome): no timing is involved.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use concord_core::{Direction, EventStore, MemoryStore, StoreError, Version};
use concord_groups::{GroupError, GroupName, GroupSpec, Groups, ManualClock, Message};
use concord_testkit::gated::{Gate, GatedStore, Held, Release};
use specs::{all_of, group, poll, seed_one};

mod specs;

const WAIT: Duration = Duration::from_secs(30);

fn gated() -> Arc<GatedStore> {
    Arc::new(Gate::new(Arc::new(MemoryStore::new())))
}

type Ack<'a> = Pin<Box<dyn Future<Output = Result<usize, GroupError>> + Send + 'a>>;

/// A group over ten `order-1` events, all ten handed to one consumer.
async fn ten_in_flight(store: &Arc<GatedStore>) -> (Arc<Groups>, GroupName, Vec<Message>) {
    let store = Arc::clone(store) as Arc<dyn EventStore>;
    seed_one(&store, "order-1", 10).await;
    let groups = Arc::new(Groups::with_clock(
        store,
        Arc::new(ManualClock::at(1_000_000)),
    ));
    let group = group("orders");
    groups
        .create_or_update(&group, GroupSpec::new(all_of("order")))
        .await
        .unwrap();
    let messages = poll(&groups, &group, "c", 10).await;
    assert_eq!(messages.len(), 10);
    (groups, group, messages)
}

/// Holds the next state append at the gate, starts an ack of `messages[0]` (its batch
/// is then in flight), and stages acks of the other nine on top of it, one each.
async fn first_ack_in_flight_and_nine_staged<'a>(
    store: &Arc<GatedStore>,
    groups: &'a Arc<Groups>,
    group: &'a GroupName,
    messages: &'a [Message],
) -> (
    tokio::task::JoinHandle<Result<usize, GroupError>>,
    Vec<Ack<'a>>,
) {
    store.hold_next(Held::StoreOwned);
    let entered = store.entered();
    let first = {
        let (groups, group, id) = (
            Arc::clone(groups),
            group.clone(),
            messages[0].ack_id.clone(),
        );
        tokio::spawn(async move { groups.ack(&group, &[id]).await })
    };
    tokio::time::timeout(WAIT, entered)
        .await
        .expect("the first ack's batch reaches the store");
    let mut staged: Vec<Ack<'a>> = messages[1..]
        .iter()
        .map(|m| Box::pin(groups.ack(group, std::slice::from_ref(&m.ack_id))) as Ack<'a>)
        .collect();
    for ack in &mut staged {
        assert!(
            futures::poll!(ack.as_mut()).is_pending(),
            "an ack answers only once its decision is written"
        );
    }
    (first, staged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_made_while_a_batch_is_written_go_out_together_in_the_next_append() {
    let store = gated();
    let (groups, group, messages) = ten_in_flight(&store).await;
    let before = store.store_owned_appends();

    let (first, staged) =
        first_ack_in_flight_and_nine_staged(&store, &groups, &group, &messages).await;
    store.release(Release::Pass);
    assert_eq!(
        tokio::time::timeout(WAIT, first)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        1
    );
    for ack in staged {
        assert_eq!(tokio::time::timeout(WAIT, ack).await.unwrap().unwrap(), 1);
    }

    assert_eq!(
        store.store_owned_appends() - before,
        2,
        "the batch in flight, then the nine acks decided meanwhile in one append"
    );
    let info = groups.info(&group).await.unwrap();
    assert_eq!((info.acked, info.in_flight, info.pending), (10, 0, 0));
    let state = store
        .read_stream(group.state_stream(), Version(1), Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(
        state
            .iter()
            .filter(|e| e.event_type.as_str() == "Acked")
            .count(),
        10,
        "each decision is still its own state event"
    );
    let restarted = Groups::new(Arc::clone(&store) as Arc<dyn EventStore>);
    assert_eq!(restarted.info(&group).await.unwrap().acked, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_takes_the_decisions_made_on_top_of_it_along_and_they_are_decided_again() {
    let store = gated();
    let (groups, group, messages) = ten_in_flight(&store).await;

    let (first, staged) =
        first_ack_in_flight_and_nine_staged(&store, &groups, &group, &messages).await;
    store.release(Release::Fail);
    let failed = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    assert!(
        matches!(
            failed,
            Err(GroupError::Store(StoreError::Unavailable { .. }))
        ),
        "the ack whose batch failed gets the store's error: {failed:?}"
    );
    for ack in staged {
        assert_eq!(
            tokio::time::timeout(WAIT, ack).await.unwrap().unwrap(),
            1,
            "an ack staged on the failed batch is decided again on the state read afresh"
        );
    }
    let info = groups.info(&group).await.unwrap();
    assert_eq!(
        (info.acked, info.in_flight),
        (9, 1),
        "the failed ack's delivery is still in flight"
    );
    assert_eq!(
        groups
            .ack(&group, std::slice::from_ref(&messages[0].ack_id))
            .await
            .unwrap(),
        1,
        "and can be acked again"
    );
    assert_eq!(groups.info(&group).await.unwrap().acked, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_panics_leaves_the_group_writable_and_its_decisions_are_decided_again() {
    let store = gated();
    let (groups, group, messages) = ten_in_flight(&store).await;

    let (first, staged) =
        first_ack_in_flight_and_nine_staged(&store, &groups, &group, &messages).await;
    store.release(Release::Panic);
    // The ack whose batch was in flight is decided again (nothing was written) and goes
    // out with a writer started afresh; so do the nine staged on top of it.
    assert_eq!(
        tokio::time::timeout(WAIT, first)
            .await
            .expect("the ack in the panicked batch is answered")
            .unwrap()
            .unwrap(),
        1
    );
    for ack in staged {
        assert_eq!(
            tokio::time::timeout(WAIT, ack)
                .await
                .expect("an ack staged on the panicked batch is answered")
                .unwrap(),
            1
        );
    }
    let info = groups.info(&group).await.unwrap();
    assert_eq!((info.acked, info.in_flight), (10, 0));

    // Later decisions are written as before.
    seed_one(&(Arc::clone(&store) as Arc<dyn EventStore>), "order-2", 1).await;
    let more = poll(&groups, &group, "c", 10).await;
    assert_eq!(more.len(), 1);
    assert_eq!(
        tokio::time::timeout(
            WAIT,
            groups.ack(&group, std::slice::from_ref(&more[0].ack_id))
        )
        .await
        .expect("an ack after the panic is answered")
        .unwrap(),
        1
    );
    assert_eq!(groups.info(&group).await.unwrap().acked, 11);
}
