//! Transfers and unique usernames as query decisions, on the reference store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use concord_command::{Decider, DecisionError};
use concord_core::{EventStore, MemoryStore};
use concord_example_bank::transfer::{
    RegisterCommand, RegisterRejection, Registration, demo_transfer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_transfer_conserves_the_total_after_every_transfer() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let mut out = Vec::new();
    demo_transfer(Arc::clone(&store), &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("total: 4000 (opening total 4000): conserved"),
        "{text}"
    );
    // A second run uses fresh accounts.
    let mut again = Vec::new();
    demo_transfer(store, &mut again).await.unwrap();
    assert!(
        String::from_utf8(again)
            .unwrap()
            .contains("account-transfer2-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_leave_one_owner_and_tell_the_others_who() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let decider = Decider::<Registration>::new(store);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let decider = decider.clone();
            tokio::spawn(async move {
                decider
                    .execute(&RegisterCommand {
                        user: i.to_string(),
                        username: "alice".into(),
                    })
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut taken = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(d) => winners.push(d),
            Err(DecisionError::Rejected {
                reason: RegisterRejection::Taken { by, .. },
                ..
            }) => taken.push(by),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(taken.len(), 15);
    let owner = &winners[0].outcome.parts[0].appended().stream;
    assert!(taken.iter().all(|by| by == owner));
}
