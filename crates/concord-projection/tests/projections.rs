//! The projection runner's promises, against the embedded store and against Redis (read
//! models in SQLite either way): a failing handler stops at its event and resumes after
//! the fix; a rebuild equals the incremental result; read-your-writes under 32 concurrent
//! clients; a filtered projection's checkpoint passes events of other categories; two
//! processes' runners on one projection database never apply an event twice.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use concord_core::{EventStore, Filter, Position, RecordedEvent};
use concord_projection::models::{Balances, FoldProjection};
use concord_projection::{HandlerError, Projection, ProjectionError, ProjectionHost, State};
use rand::{Rng, SeedableRng};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// `balances`, except that it refuses events whose data says `"poison": true` until fixed.
#[derive(Debug)]
struct Picky {
    fixed: bool,
    inner: FoldProjection<Balances>,
}

impl Projection for Picky {
    fn name(&self) -> &str {
        "balances"
    }
    fn filter(&self) -> Filter {
        self.inner.filter()
    }
    fn create(&self, db: &rusqlite::Connection) -> rusqlite::Result<()> {
        self.inner.create(db)
    }
    fn reset(&self, db: &rusqlite::Connection) -> rusqlite::Result<()> {
        self.inner.reset(db)
    }
    fn apply(&self, db: &rusqlite::Connection, event: &RecordedEvent) -> Result<(), HandlerError> {
        let data = event.data.to_value().unwrap();
        if !self.fixed && data["poison"] == json!(true) {
            return Err(HandlerError::new("poisoned deposit"));
        }
        self.inner.apply(db, event)
    }
    fn row(
        &self,
        db: &rusqlite::Connection,
        key: &str,
    ) -> rusqlite::Result<Option<serde_json::Value>> {
        self.inner.row(db, key)
    }
}

async fn a_failing_handler_stops_at_its_event_and_resumes_after_the_fix(
    store: Arc<dyn EventStore>,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("projections.sqlite");
    append(
        &store,
        "account-1",
        vec![
            opening("account"),
            event("Deposited", json!({"amount": 10})),
        ],
    )
    .await;
    append(&store, "other-1", vec![opening("other")]).await;
    let poison = append(
        &store,
        "account-1",
        vec![event("Deposited", json!({"amount": 5, "poison": true}))],
    )
    .await;
    append(
        &store,
        "account-1",
        vec![event("Deposited", json!({"amount": 7}))],
    )
    .await;
    let head = append(&store, "account-2", vec![opening("account")]).await;

    let broken: Arc<dyn Projection> = Arc::new(Picky {
        fixed: false,
        inner: FoldProjection::new(),
    });
    let host = ProjectionHost::open(store.clone(), &db, vec![broken])
        .await
        .unwrap();
    host.start_all().await;
    let err = host.wait_for("balances", head, WAIT).await.unwrap_err();
    let ProjectionError::Failed { failure, .. } = err else {
        panic!("expected a failure, got {err}")
    };
    assert_eq!(failure.position, poison);
    assert_eq!((failure.stream.as_str(), failure.version), ("account-1", 3));
    assert_eq!(failure.event_type, "Deposited");
    assert!(failure.error.contains("poisoned deposit"), "{failure}");
    let status = host.status("balances").await.unwrap();
    assert_eq!(status.status, State::Failed);
    assert_eq!(
        status.checkpoint,
        Position(poison.get() - 1),
        "the checkpoint stops just before the failing event"
    );
    let row = host
        .get_row("balances", "account-1", None, WAIT)
        .await
        .unwrap();
    assert_eq!(row.row["balance"], 110);
    assert_eq!(row.row["version"], 2);
    assert!(matches!(
        host.get_row("balances", "account-1", Some(head), WAIT)
            .await,
        Err(ProjectionError::Failed { .. })
    ));
    host.shutdown().await;
    drop(host);

    // Restart with the fixed handler: the failure is still visible until it runs again.
    let fixed: Arc<dyn Projection> = Arc::new(Picky {
        fixed: true,
        inner: FoldProjection::new(),
    });
    let host = ProjectionHost::open(store.clone(), &db, vec![fixed])
        .await
        .unwrap();
    let status = host.status("balances").await.unwrap();
    assert_eq!(status.status, State::Failed);
    assert_eq!(status.failure.unwrap().position, poison);
    host.start_all().await;
    host.wait_for("balances", head, WAIT).await.unwrap();
    let row = host
        .get_row("balances", "account-1", None, WAIT)
        .await
        .unwrap();
    assert_eq!(row.row["balance"], 122);
    assert_eq!(row.row["version"], 4);
    let status = host.status("balances").await.unwrap();
    assert_eq!(status.status, State::Running);
    assert_eq!(status.failure, None);
    assert_eq!(status.lag, 0);
    host.shutdown().await;
}

async fn append_random(store: &Arc<dyn EventStore>, seed: u64, appends: usize) -> Position {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut head = Position::ZERO;
    let mut opened = std::collections::BTreeSet::new();
    for _ in 0..appends {
        let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
        let name = format!("{category}-{}", rng.random_range(0..6));
        let events = if opened.insert(name.clone()) {
            vec![opening(category)]
        } else {
            (0..rng.random_range(1..4))
                .map(|_| later(category, &mut rng))
                .collect()
        };
        head = append(store, &name, events).await;
    }
    head
}

async fn a_rebuild_equals_the_incremental_read_models(store: Arc<dyn EventStore>) {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("projections.sqlite");
    let host = ProjectionHost::open_builtin(store.clone(), &db)
        .await
        .unwrap();
    host.start_all().await;
    // Incremental: live while the events arrive.
    let head = append_random(&store, seed, 150 * concord_testkit::scale()).await;
    for name in ["balances", "auctions", "documents"] {
        host.wait_for(name, head, WAIT).await.unwrap();
    }
    let incremental = read_db(&db);
    let log = all_events(&store).await;
    assert_db_equals_replay(&db, &log);
    for name in ["balances", "auctions", "documents"] {
        let mut seen = Vec::new();
        let report = host
            .rebuild(name, |p, target| seen.push((p.checkpoint, target)))
            .await
            .unwrap();
        assert!(report.checkpoint >= head, "{report:?}");
        assert!(
            seen.windows(2).all(|w| w[0].0 <= w[1].0),
            "progress never goes back: {seen:?}"
        );
        assert!(seen.last().unwrap().0 >= head);
    }
    let rebuilt = read_db(&db);
    assert_eq!(rebuilt, incremental, "seed {seed}");
    host.shutdown().await;
}

async fn read_your_writes_holds_for_32_concurrent_clients(store: Arc<dyn EventStore>) {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(
        ProjectionHost::open_builtin(store.clone(), dir.path().join("projections.sqlite"))
            .await
            .unwrap(),
    );
    host.start_all().await;
    let rounds = 5 * concord_testkit::scale();
    let clients: Vec<_> = (0..32u64)
        .map(|client| {
            let (store, host) = (store.clone(), host.clone());
            tokio::spawn(async move {
                let name = format!("account-rw{client}");
                let mut balance = 100;
                let mut version = 1;
                let p = append(&store, &name, vec![opening("account")]).await;
                let row = host
                    .get_row("balances", &name, Some(p), WAIT)
                    .await
                    .unwrap();
                assert!(row.checkpoint >= p);
                assert_eq!(
                    row.row["version"], version,
                    "client {client} does not see its own opening"
                );
                for round in 0..rounds as u64 {
                    let amount = client * 1000 + round + 1;
                    let p = append(
                        &store,
                        &name,
                        vec![event("Deposited", json!({ "amount": amount }))],
                    )
                    .await;
                    balance += amount;
                    version += 1;
                    let row = host
                        .get_row("balances", &name, Some(p), WAIT)
                        .await
                        .unwrap();
                    assert!(
                        row.checkpoint >= p,
                        "answered at {} before its write at {p}",
                        row.checkpoint
                    );
                    assert_eq!(
                        row.row["version"], version,
                        "client {client} round {round}: stale read"
                    );
                    assert_eq!(
                        row.row["balance"], balance,
                        "client {client} round {round}: stale read"
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    host.shutdown().await;
}

async fn a_filtered_projection_reaches_the_head_past_other_categories(store: Arc<dyn EventStore>) {
    let dir = tempfile::tempdir().unwrap();
    let host = ProjectionHost::open_builtin(store.clone(), dir.path().join("p.sqlite"))
        .await
        .unwrap();
    append(&store, "account-1", vec![opening("account")]).await;
    let head = append(
        &store,
        "other-1",
        (0..10).map(|_| opening("other")).collect(),
    )
    .await;
    let status = host.status("balances").await.unwrap();
    assert_eq!(
        (status.status, status.checkpoint, status.lag),
        (State::Stopped, Position::ZERO, head.get())
    );
    host.start_all().await;
    // The documents projection wants none of these events, and still reaches the head.
    assert_eq!(host.wait_for("documents", head, WAIT).await.unwrap(), head);
    assert_eq!(host.wait_for("balances", head, WAIT).await.unwrap(), head);
    let status = host.status("balances").await.unwrap();
    assert_eq!((status.status, status.lag), (State::Running, 0));
    let listed = host.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["auctions", "balances", "documents"]
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["status"], "running");
    assert_eq!(json["head"], head.get());

    // Waiting for a position nobody wrote ends at the bound with a clear answer.
    let wanted = Position(head.get() + 100);
    let err = host
        .wait_for("balances", wanted, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProjectionError::ProjectionBehind { checkpoint, wanted: w, .. } if checkpoint == head && w == wanted),
        "{err}"
    );
    assert!(matches!(
        host.get_row(
            "balances",
            "account-1",
            Some(wanted),
            Duration::from_millis(50)
        )
        .await,
        Err(ProjectionError::ProjectionBehind { .. })
    ));
    assert!(matches!(
        host.get_row("balances", "account-404", None, WAIT).await,
        Err(ProjectionError::RowNotFound { .. })
    ));
    assert!(matches!(
        host.status("nope").await,
        Err(ProjectionError::UnknownProjection { .. })
    ));
    host.shutdown().await;
}

async fn two_hosts_on_one_database_never_apply_an_event_twice(store: Arc<dyn EventStore>) {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("projections.sqlite");
    let a = ProjectionHost::open_builtin(store.clone(), &db)
        .await
        .unwrap();
    let b = ProjectionHost::open_builtin(store.clone(), &db)
        .await
        .unwrap();
    a.start_all().await;
    b.start_all().await;
    let head = append_random(&store, seed, 100 * concord_testkit::scale()).await;
    for name in ["balances", "auctions", "documents"] {
        a.wait_for(name, head, WAIT).await.unwrap();
        b.wait_for(name, head, WAIT).await.unwrap();
    }
    a.shutdown().await;
    b.shutdown().await;
    let log = all_events(&store).await;
    let checkpoints = assert_db_equals_replay(&db, &log);
    assert!(
        checkpoints.values().all(|c| *c == head),
        "seed {seed}: {checkpoints:?}"
    );
}

macro_rules! against {
    ($module:ident, $factory:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_failing_handler_stops_at_its_event_and_resumes_after_the_fix() {
                let (store, _guard) = $factory.await;
                super::a_failing_handler_stops_at_its_event_and_resumes_after_the_fix(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_rebuild_equals_the_incremental_read_models() {
                let (store, _guard) = $factory.await;
                super::a_rebuild_equals_the_incremental_read_models(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn read_your_writes_holds_for_32_concurrent_clients() {
                let (store, _guard) = $factory.await;
                super::read_your_writes_holds_for_32_concurrent_clients(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_filtered_projection_reaches_the_head_past_other_categories() {
                let (store, _guard) = $factory.await;
                super::a_filtered_projection_reaches_the_head_past_other_categories(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_hosts_on_one_database_never_apply_an_event_twice() {
                let (store, _guard) = $factory.await;
                super::two_hosts_on_one_database_never_apply_an_event_twice(store).await;
            }
        }
    };
}

async fn embedded_store() -> (Arc<dyn EventStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (embedded(dir.path()), dir)
}

async fn redis_store() -> (Arc<dyn EventStore>, ()) {
    (redis().await, ())
}

against!(embedded, embedded_store());
against!(redis, redis_store());
