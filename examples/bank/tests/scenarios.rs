//! MISSION.md's bank scenario end to end, on every store (memory, embedded, Redis): the
//! mission's table under both policies, many concurrent deposits rebased by the store,
//! concurrent withdrawals that never overdraw, a closed account, and snapshots.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "support/stores.rs"]
mod stores;

use std::sync::Arc;

use concord_command::report::{actor_of, event_table};
use concord_command::{CommandError, Handler, Options, Policy, Resolution, Retry, snapshot_stream};
use concord_core::{EventStore, Version};
use concord_example_bank::{
    Account, BankCommand, BankEvent, BankRejection, account_stream, deposit_policy, mission_race,
    read_log,
};

fn scale() -> usize {
    std::env::var("CONCORD_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

async fn mission_table_under_reject_commits_one_and_reports_the_other_as_a_conflict(
    store: Arc<dyn EventStore>,
) {
    let stream = account_stream("42").unwrap();
    let (a, b) = mission_race(store.clone(), &stream, Policy::Reject)
        .await
        .unwrap();
    let a = a.unwrap();
    assert_eq!(a.resolution, Resolution::AsDecided);
    assert_eq!(a.appended.as_ref().unwrap().first_version, Version(2));
    let err = b.unwrap_err();
    let conflict = err.conflict().expect("B gets the conflict");
    assert_eq!(conflict.expected.to_string(), "1");
    assert_eq!(conflict.actual, Version(2));
    assert_eq!(conflict.concurrent_events.len(), 1);
    let missed = &conflict.concurrent_events[0];
    assert_eq!(
        (
            missed.event_type.as_str(),
            missed.data.to_string(),
            missed.version
        ),
        ("Deposited", r#"{"amount":2000}"#.to_owned(), Version(2))
    );
    assert_eq!(actor_of(missed), "A");

    let log = read_log(store.as_ref(), &stream).await.unwrap();
    let table = event_table(&log);
    let rows: Vec<&str> = table.lines().skip(2).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[0].starts_with("| admin | AccountOpened | {\"owner\":\"ann\",\"balance\":1000} | 1"),
        "{table}"
    );
    assert!(
        rows[1].starts_with("| A     | Deposited     | {\"amount\":2000}"),
        "{table}"
    );
    assert!(
        log.iter()
            .all(|e| e.tags.iter().map(|t| t.as_str()).eq(["account:42"]))
    );
}

async fn mission_table_under_rebase_commits_both_and_b_lists_a_deposit(store: Arc<dyn EventStore>) {
    let stream = account_stream("42").unwrap();
    let (a, b) = mission_race(store.clone(), &stream, deposit_policy())
        .await
        .unwrap();
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.appended.as_ref().unwrap().last_version, Version(2));
    assert_eq!(b.appended.as_ref().unwrap().last_version, Version(3));
    assert_eq!(b.based_on, Version(1));
    let Resolution::Rebased {
        expected_version,
        over,
    } = &b.resolution
    else {
        panic!("B was rebased: {:?}", b.resolution)
    };
    assert_eq!(*expected_version, Version(1));
    assert_eq!(over.len(), 1);
    assert_eq!(
        (
            over[0].version,
            over[0].data.to_string(),
            actor_of(&over[0]).as_str()
        ),
        (Version(2), r#"{"amount":2000}"#.to_owned(), "A")
    );
    let account = Handler::<Account>::new(store).load(&stream).await.unwrap();
    assert_eq!((account.state.balance, account.version), (6000, Version(3)));
}

async fn concurrent_deposits_are_rebased_by_the_store_without_retries(store: Arc<dyn EventStore>) {
    let (tasks, each, amount) = (32, 50 * scale(), 7_u64);
    let accounts = Handler::<Account>::new(store.clone()).with_snapshots(64);
    let stream = account_stream("many").unwrap();
    let _ = accounts
        .execute(
            &stream,
            BankCommand::Open {
                owner: "ann".into(),
                balance: 1000,
            },
            &Options::by("admin"),
        )
        .await
        .unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(tasks));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (accounts, stream, start) = (accounts.clone(), stream.clone(), start.clone());
        handles.push(tokio::spawn(async move {
            start.wait().await;
            let mut rebased = 0;
            for _ in 0..each {
                let c = accounts
                    .execute(
                        &stream,
                        BankCommand::Deposit { amount },
                        &Options::by(format!("t{t}")),
                    )
                    .await
                    .unwrap();
                match c.resolution {
                    Resolution::AsDecided => {}
                    Resolution::Rebased { .. } => rebased += 1,
                    other => panic!("a deposit needs no retry or merge, but got {other:?}"),
                }
            }
            rebased
        }));
    }
    let mut rebased = 0;
    for h in handles {
        rebased += h.await.unwrap();
    }
    let deposits = (tasks * each) as u64;
    let log = read_log(store.as_ref(), &stream).await.unwrap();
    assert_eq!(log.len() as u64, deposits + 1);
    let account = accounts.load(&stream).await.unwrap();
    assert_eq!(account.state.balance, 1000 + deposits * amount);
    assert_eq!(account.state, accounts.replay(&stream).await.unwrap().state);
    println!("{rebased} of {deposits} deposits were rebased by the store");
}

async fn concurrent_withdrawals_under_retry_never_overdraw(store: Arc<dyn EventStore>) {
    let accounts = Handler::<Account>::new(store.clone());
    let stream = account_stream("7").unwrap();
    let _ = accounts
        .execute(
            &stream,
            BankCommand::Open {
                owner: "ann".into(),
                balance: 1000,
            },
            &Options::by("admin"),
        )
        .await
        .unwrap();
    let policy = Policy::Retry(Retry {
        attempts: 100,
        ..Retry::default()
    });
    let start = Arc::new(tokio::sync::Barrier::new(20));
    let mut handles = Vec::new();
    for t in 0..20 {
        let (accounts, stream, start, policy) = (
            accounts.clone(),
            stream.clone(),
            start.clone(),
            policy.clone(),
        );
        handles.push(tokio::spawn(async move {
            let loaded = accounts.load(&stream).await.unwrap();
            start.wait().await;
            let options = Options::by(format!("w{t}")).policy(policy);
            accounts
                .execute_on(loaded, BankCommand::Withdraw { amount: 150 }, &options)
                .await
        }));
    }
    let (mut committed, mut refused) = (0, 0);
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => committed += 1,
            Err(CommandError::Rejected {
                reason:
                    BankRejection::InsufficientFunds {
                        balance,
                        amount: 150,
                    },
                ..
            }) => {
                assert!(balance < 150);
                refused += 1;
            }
            Err(other) => {
                panic!("a withdrawal either commits or finds insufficient funds: {other}")
            }
        }
    }
    assert_eq!((committed, refused), (6, 14));
    let mut balance: i64 = 0;
    for event in read_log(store.as_ref(), &stream).await.unwrap() {
        match concord_command::codec::decode::<BankEvent>(&event).unwrap() {
            BankEvent::AccountOpened { balance: b, .. } => balance = b as i64,
            BankEvent::Withdrawn { amount } => balance -= amount as i64,
            other => panic!("unexpected {other:?}"),
        }
        assert!(balance >= 0, "overdrawn at version {}", event.version);
    }
    assert_eq!(balance, 100);
}

async fn a_closed_account_refuses_a_rebase_and_every_later_command(store: Arc<dyn EventStore>) {
    let accounts = Handler::<Account>::new(store.clone());
    let stream = account_stream("closing").unwrap();
    let _ = accounts
        .execute(
            &stream,
            BankCommand::Open {
                owner: "ann".into(),
                balance: 10,
            },
            &Options::by("admin"),
        )
        .await
        .unwrap();
    let stale = accounts.load(&stream).await.unwrap();
    let _ = accounts
        .execute(&stream, BankCommand::Close, &Options::by("admin"))
        .await
        .unwrap();
    let err = accounts
        .execute_on(stale, BankCommand::Deposit { amount: 5 }, &Options::by("B"))
        .await
        .unwrap_err();
    let conflict = err
        .conflict()
        .expect("the store refuses to rebase over AccountClosed");
    assert_eq!(
        conflict.concurrent_events[0].event_type.as_str(),
        "AccountClosed"
    );
    for command in [
        BankCommand::Deposit { amount: 1 },
        BankCommand::Withdraw { amount: 1 },
        BankCommand::Close,
    ] {
        let err = accounts
            .execute(&stream, command, &Options::by("B"))
            .await
            .unwrap_err();
        assert!(
            matches!(err.rejection(), Some(BankRejection::Closed)),
            "{err}"
        );
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), Version(2));
}

async fn loading_from_a_snapshot_equals_a_full_replay(store: Arc<dyn EventStore>) {
    let accounts = Handler::<Account>::new(store.clone()).with_snapshots(5);
    let stream = account_stream("snap").unwrap();
    let _ = accounts
        .execute(
            &stream,
            BankCommand::Open {
                owner: "ann".into(),
                balance: 100,
            },
            &Options::by("admin"),
        )
        .await
        .unwrap();
    let mut snapshots = Vec::new();
    for i in 1..=22_u64 {
        let command = if i % 3 == 0 {
            BankCommand::Withdraw { amount: i }
        } else {
            BankCommand::Deposit { amount: i * 10 }
        };
        let c = accounts
            .execute(&stream, command, &Options::by("ann"))
            .await
            .unwrap();
        snapshots.extend(c.snapshot);
    }
    // A rebased deposit crossing a boundary snapshots too (the store listed what it went past).
    let stale = accounts.load(&stream).await.unwrap();
    let _ = accounts
        .execute(
            &stream,
            BankCommand::Deposit { amount: 1 },
            &Options::by("ann"),
        )
        .await
        .unwrap();
    let c = accounts
        .execute_on(
            stale,
            BankCommand::Deposit { amount: 2 },
            &Options::by("ann"),
        )
        .await
        .unwrap();
    assert!(c.resolution.over().len() == 1);
    snapshots.extend(c.snapshot);
    assert_eq!(snapshots, [5, 10, 15, 20, 25].map(Version));
    let loaded = accounts.load(&stream).await.unwrap();
    let replayed = accounts.replay(&stream).await.unwrap();
    assert_eq!(loaded.snapshot, Some(Version(25)));
    assert_eq!(
        (loaded.state, loaded.version),
        (replayed.state, replayed.version)
    );
    let snapshot_log = read_log(store.as_ref(), &snapshot_stream(&stream).unwrap())
        .await
        .unwrap();
    assert_eq!(snapshot_log.len(), 5);
    assert_eq!(snapshot_log[0].event_type.as_str(), "Snapshot");
}

async fn the_demo_prints_mission_table_and_what_each_policy_did(store: Arc<dyn EventStore>) {
    let mut out = Vec::new();
    concord_example_bank::demo(store, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("## account-reject-1 under Reject"), "{text}");
    assert!(
        text.contains("| admin | AccountOpened | {\"owner\":\"ann\",\"balance\":1000} | 1       |"),
        "{text}"
    );
    assert!(
        text.contains("| A     | Deposited     | {\"amount\":2000}                | 2       |"),
        "{text}"
    );
    assert!(
        text.contains("| B     | Deposited     | {\"amount\":3000}                | 3       |"),
        "{text}"
    );
    assert!(text.contains("- B: deposit 3000 (decided on version 1): conflict: expected version 1, but the stream is at version 2; missed Deposited {\"amount\":2000} (version 2 by A)"), "{text}");
    assert!(
        text.contains("- B: deposit 3000 (decided on version 1): committed at version 3 (position"),
        "{text}"
    );
    assert!(
        text.contains(
            "rebased by the store from version 1 over Deposited {\"amount\":2000} (version 2 by A)"
        ),
        "{text}"
    );
    assert!(text.contains("- balance: 6000"), "{text}");
    assert!(text.contains("40 deposits committed"), "{text}");
    assert!(text.contains("- balance: 500 (never below zero)"), "{text}");
    assert!(text.contains("re-decided"), "{text}");
    println!("{text}");
}

on_every_store!(
    mission_table_under_reject_commits_one_and_reports_the_other_as_a_conflict,
    mission_table_under_rebase_commits_both_and_b_lists_a_deposit,
    concurrent_deposits_are_rebased_by_the_store_without_retries,
    concurrent_withdrawals_under_retry_never_overdraw,
    a_closed_account_refuses_a_rebase_and_every_later_command,
    loading_from_a_snapshot_equals_a_full_replay,
    the_demo_prints_mission_table_and_what_each_policy_did,
);
