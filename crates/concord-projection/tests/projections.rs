//! The projection runner's promises, against the embedded store and against Redis (read
//! models in SQLite either way): an event the handler refuses is skipped with its reason
//! and the projection runs on; a rebuild equals the incremental result; read-your-writes under 32 concurrent
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
    fn skip(&self, db: &rusqlite::Connection, event: &RecordedEvent) -> rusqlite::Result<()> {
        self.inner.skip(db, event)
    }
    fn row(
        &self,
        db: &rusqlite::Connection,
        key: &str,
    ) -> rusqlite::Result<Option<serde_json::Value>> {
        self.inner.row(db, key)
    }
}

async fn a_refused_event_is_skipped_with_its_reason_and_the_projection_runs_on(
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
    // Valid JSON, but not what `balances` understands: refused by the fold itself.
    let malformed = append(
        &store,
        "account-1",
        vec![event("Deposited", json!({"amount": "seven"}))],
    )
    .await;
    append(
        &store,
        "account-1",
        vec![event("Deposited", json!({"amount": 7}))],
    )
    .await;
    let head = append(&store, "account-2", vec![opening("account")]).await;

    let picky: Arc<dyn Projection> = Arc::new(Picky {
        fixed: false,
        inner: FoldProjection::new(),
    });
    let host = ProjectionHost::open(store.clone(), &db, vec![picky])
        .await
        .unwrap();
    host.start_all().await;
    host.wait_for("balances", head, WAIT).await.unwrap();
    let status = host.status("balances").await.unwrap();
    assert_eq!(status.status, State::Running);
    assert_eq!((status.checkpoint, status.lag), (head, 0));
    assert_eq!(status.skipped, 2, "{:?}", status.skipped_events);
    let skipped: Vec<_> = status
        .skipped_events
        .iter()
        .map(|s| {
            (
                s.position,
                s.stream.as_str(),
                s.version,
                s.event_type.as_str(),
            )
        })
        .collect();
    assert_eq!(
        skipped,
        vec![
            (malformed, "account-1", 4, "Deposited"),
            (poison, "account-1", 3, "Deposited")
        ]
    );
    assert!(
        status.skipped_events[1].error.contains("poisoned deposit"),
        "{:?}",
        status.skipped_events
    );
    assert!(
        status.skipped_events[0].error.contains("amount"),
        "{:?}",
        status.skipped_events
    );
    // The row is as if the skipped events changed nothing, and its version moved on.
    let row = host
        .get_row("balances", "account-1", Some(head), WAIT)
        .await
        .unwrap();
    assert_eq!(row.row["balance"], 117);
    assert_eq!(row.row["version"], 5);
    host.shutdown().await;
    drop(host);

    // A restart keeps the record; a rebuild with the fixed handler applies the poisoned
    // deposit and skips only the malformed one.
    let fixed: Arc<dyn Projection> = Arc::new(Picky {
        fixed: true,
        inner: FoldProjection::new(),
    });
    let host = ProjectionHost::open(store.clone(), &db, vec![fixed])
        .await
        .unwrap();
    assert_eq!(host.status("balances").await.unwrap().skipped, 2);
    let report = host.rebuild("balances", |_, _| {}).await.unwrap();
    assert_eq!(report.checkpoint, head);
    let status = host.status("balances").await.unwrap();
    assert_eq!(status.skipped, 1);
    assert_eq!(status.skipped_events[0].position, malformed);
    let row = host
        .get_row("balances", "account-1", None, WAIT)
        .await
        .unwrap();
    assert_eq!(row.row["balance"], 122);
    assert_eq!(row.row["version"], 5);
    host.shutdown().await;
}

/// Events a store holds that no reader can parse (written before the store refused them,
/// or by another Redis client): each is skipped, never a stop.
async fn unreadable_event_data_is_skipped_not_a_stop(store: Arc<dyn EventStore>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("projections.sqlite");
    append(&store, "account-1", vec![opening("account")]).await;
    let mut unreadable = Vec::new();
    for data in ["1e999", r#"{"amount": "\ud800"}"#] {
        let e = concord_core::NewEvent::new(
            concord_core::EventType::new("Deposited").unwrap(),
            concord_core::Json::from_trusted(data),
        );
        unreadable.push(append(&store, "account-1", vec![e]).await);
    }
    let head = append(
        &store,
        "account-1",
        vec![event("Deposited", json!({"amount": 7}))],
    )
    .await;
    let host = ProjectionHost::open_builtin(store.clone(), &db)
        .await
        .unwrap();
    host.start_all().await;
    let row = host
        .get_row("balances", "account-1", Some(head), WAIT)
        .await
        .unwrap();
    assert_eq!(row.row["version"], 4);
    // The row is read from the database, which the runner commits before it says so: the
    // status is read once the runner's own progress has reached the head.
    host.wait_for("balances", head, WAIT).await.unwrap();
    let status = host.status("balances").await.unwrap();
    assert_eq!(status.status, State::Running);
    assert_eq!(status.skipped, 2);
    for s in &status.skipped_events {
        assert!(unreadable.contains(&s.position), "{s}");
        assert!(s.error.contains("cannot be read as JSON"), "{s}");
        assert!(!s.error.contains("not JSON"), "{s}");
    }
    host.shutdown().await;
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

/// Appends to both accounts, lets `balances` fold them, deletes `account-1` (soft or
/// tombstone) and reconciles: its row goes, `account-2`'s stays as it was.
async fn a_deleted_accounts_row_is_forgotten_on_reconcile_and_an_untouched_one_stays(
    store: Arc<dyn EventStore>,
    tombstone: bool,
) {
    let (_dir, host) = started_host(&store).await;
    append(&store, "account-1", vec![opening("account")]).await;
    let head = append(&store, "account-2", vec![opening("account")]).await;
    host.wait_for("balances", head, WAIT).await.unwrap();
    let kept = host
        .get_row("balances", "account-2", None, WAIT)
        .await
        .unwrap();
    if tombstone {
        store
            .tombstone_stream(&stream("account-1"), None)
            .await
            .unwrap();
    } else {
        store
            .delete_stream(&stream("account-1"), None)
            .await
            .unwrap();
    }

    let forgotten = host.forget_deleted_streams().await.unwrap();

    assert_eq!(forgotten["balances"], vec!["account-1".to_owned()]);
    assert_eq!(forgotten.len(), 1, "{forgotten:?}");
    let gone = host.get_row("balances", "account-1", None, WAIT).await;
    assert!(
        matches!(gone, Err(ProjectionError::RowNotFound { .. })),
        "{gone:?}"
    );
    let still = host
        .get_row("balances", "account-2", None, WAIT)
        .await
        .unwrap();
    assert_eq!(still.row, kept.row);
    assert!(
        host.forget_deleted_streams().await.unwrap().is_empty(),
        "a second reconcile finds nothing more"
    );
    host.shutdown().await;
}

/// A soft-deleted account written again is a new account: its row is built from the
/// events after the delete only, its version going on from the old one. A rebuild (the old
/// events may still be in the log until a scavenge) agrees.
async fn a_soft_deleted_then_recreated_account_gets_a_row_from_its_new_events_only(
    store: Arc<dyn EventStore>,
) {
    let (_dir, host) = started_host(&store).await;
    let head = append(
        &store,
        "account-1",
        vec![
            opening("account"),
            event("Deposited", json!({"amount": 1000})),
        ],
    )
    .await;
    host.wait_for("balances", head, WAIT).await.unwrap();
    store
        .delete_stream(&stream("account-1"), None)
        .await
        .unwrap();
    host.forget_deleted_streams().await.unwrap();

    let recreated = reopen_account_1_for_bob(&store).await;

    let row = balance_row(&host, recreated).await;
    assert_eq!(row["balance"], 7, "{row}");
    assert_eq!(row["owner"], "bob");
    assert_eq!(row["version"], 4, "versions go on after the delete: {row}");
    assert_eq!(host.status("balances").await.unwrap().skipped, 0);
    host.forget_deleted_streams().await.unwrap();
    let report = host.rebuild("balances", |_, _| {}).await.unwrap();
    assert!(report.checkpoint >= recreated);
    let rebuilt = balance_row(&host, recreated).await;
    assert_eq!(rebuilt, row, "a rebuild gives the same row");
    host.shutdown().await;
}

/// A stream deleted and written again before any reconcile ran (a delete made by another
/// server) has a row that folded the new account onto the old one; the reconcile folds it
/// again from the events after the delete only, and later events and a rebuild agree.
async fn an_account_deleted_and_recreated_before_any_reconcile_gets_its_row_folded_again(
    store: Arc<dyn EventStore>,
) {
    let (_dir, host) = started_host(&store).await;
    append(
        &store,
        "account-1",
        vec![
            opening("account"),
            event("Deposited", json!({"amount": 1000})),
        ],
    )
    .await;
    store
        .delete_stream(&stream("account-1"), None)
        .await
        .unwrap();
    let recreated = reopen_account_1_for_bob(&store).await;
    let mixed = balance_row(&host, recreated).await;
    assert_eq!(mixed["version"], 4, "{mixed}");

    let forgotten = host.forget_deleted_streams().await.unwrap();

    assert_eq!(forgotten["balances"], vec!["account-1".to_owned()]);
    let row = balance_row(&host, recreated).await;
    assert_eq!(row["balance"], 7, "built from the new events only: {row}");
    assert_eq!(row["owner"], "bob");
    assert_eq!(row["version"], 4);
    assert!(
        host.forget_deleted_streams().await.unwrap().is_empty(),
        "a second reconcile finds nothing more"
    );
    let later = append(
        &store,
        "account-1",
        vec![event("Deposited", json!({"amount": 10}))],
    )
    .await;
    let row = balance_row(&host, later).await;
    assert_eq!(row["balance"], 17, "{row}");
    assert_eq!(row["version"], 5);
    host.rebuild("balances", |_, _| {}).await.unwrap();
    let rebuilt = balance_row(&host, later).await;
    assert_eq!(rebuilt, row, "a rebuild gives the same row");
    host.shutdown().await;
}

/// A projection that lagged behind a delete (its row older than the last deleted version)
/// ignores the deleted life's events it has not folded yet: the recreated account starts
/// from its own events.
async fn a_lagging_projection_ignores_the_rest_of_a_deleted_life(store: Arc<dyn EventStore>) {
    let (_dir, host) = started_host(&store).await;
    let head = append(&store, "account-1", vec![opening("account")]).await;
    host.wait_for("balances", head, WAIT).await.unwrap();
    host.stop("balances").await.unwrap();
    append(
        &store,
        "account-1",
        vec![event("Deposited", json!({"amount": 1000}))],
    )
    .await;
    store
        .delete_stream(&stream("account-1"), None)
        .await
        .unwrap();
    let recreated = reopen_account_1_for_bob(&store).await;

    let forgotten = host.forget_deleted_streams().await.unwrap();
    host.start("balances").await.unwrap();

    assert_eq!(forgotten["balances"], vec!["account-1".to_owned()]);
    let row = balance_row(&host, recreated).await;
    assert_eq!(
        row["balance"], 7,
        "the deleted deposit is not folded: {row}"
    );
    assert_eq!(row["version"], 4);
    assert_eq!(host.status("balances").await.unwrap().skipped, 0);
    host.shutdown().await;
}

/// A host of the built-in projections over `store`, started, in a directory of its own.
async fn started_host(store: &Arc<dyn EventStore>) -> (tempfile::TempDir, ProjectionHost) {
    let dir = tempfile::tempdir().unwrap();
    let host = ProjectionHost::open_builtin(store.clone(), dir.path().join("p.sqlite"))
        .await
        .unwrap();
    host.start_all().await;
    (dir, host)
}

/// Writes `account-1` again, as bob's account with 5 + 2; returns where it ends.
async fn reopen_account_1_for_bob(store: &Arc<dyn EventStore>) -> Position {
    append(
        store,
        "account-1",
        vec![
            event("AccountOpened", json!({"owner": "bob", "balance": 5})),
            event("Deposited", json!({"amount": 2})),
        ],
    )
    .await
}

/// `account-1`'s `balances` row once the projection has reached `at`.
async fn balance_row(host: &ProjectionHost, at: Position) -> serde_json::Value {
    host.get_row("balances", "account-1", Some(at), WAIT)
        .await
        .unwrap()
        .row
}

/// One `#[tokio::test]` per `name => spec(extra args)`, in module `$module`, each on a
/// store from `$factory`.
macro_rules! specs_on {
    ($module:ident, $factory:expr; $($name:ident => $spec:ident($($arg:expr),*)),* $(,)?) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _guard) = $factory.await;
                    super::$spec(store $(, $arg)*).await;
                }
            )*
        }
    };
}

macro_rules! forgetting {
    ($module:ident, $factory:expr) => {
        specs_on!($module, $factory;
            a_soft_deleted_accounts_row_is_forgotten_on_reconcile_and_an_untouched_one_stays =>
                a_deleted_accounts_row_is_forgotten_on_reconcile_and_an_untouched_one_stays(false),
            a_tombstoned_accounts_row_is_forgotten_on_reconcile_and_an_untouched_one_stays =>
                a_deleted_accounts_row_is_forgotten_on_reconcile_and_an_untouched_one_stays(true),
            a_soft_deleted_then_recreated_account_gets_a_row_from_its_new_events_only =>
                a_soft_deleted_then_recreated_account_gets_a_row_from_its_new_events_only(),
            an_account_deleted_and_recreated_before_any_reconcile_gets_its_row_folded_again =>
                an_account_deleted_and_recreated_before_any_reconcile_gets_its_row_folded_again(),
            a_lagging_projection_ignores_the_rest_of_a_deleted_life =>
                a_lagging_projection_ignores_the_rest_of_a_deleted_life(),
        );
    };
}

async fn memory_store() -> (Arc<dyn EventStore>, ()) {
    (Arc::new(concord_core::MemoryStore::new()), ())
}

forgetting!(forget_memory, memory_store());
forgetting!(forget_embedded, embedded_store());
forgetting!(forget_redis, redis_store());

macro_rules! against {
    ($module:ident, $factory:expr) => {
        specs_on!($module, $factory;
            a_refused_event_is_skipped_with_its_reason_and_the_projection_runs_on =>
                a_refused_event_is_skipped_with_its_reason_and_the_projection_runs_on(),
            unreadable_event_data_is_skipped_not_a_stop => unreadable_event_data_is_skipped_not_a_stop(),
            a_rebuild_equals_the_incremental_read_models => a_rebuild_equals_the_incremental_read_models(),
            read_your_writes_holds_for_32_concurrent_clients =>
                read_your_writes_holds_for_32_concurrent_clients(),
            a_filtered_projection_reaches_the_head_past_other_categories =>
                a_filtered_projection_reaches_the_head_past_other_categories(),
            two_hosts_on_one_database_never_apply_an_event_twice =>
                two_hosts_on_one_database_never_apply_an_event_twice(),
        );
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
