//! The read models in PostgreSQL: with a PostgreSQL store, the projections keep their rows
//! and checkpoints in the store's own database and schema, every server on it answers from
//! them, and one server at a time runs each projection while the others follow and take
//! over when it goes. Against this test binary's throwaway PostgreSQL.
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
use concord_core::{EventStore, Position};
use concord_postgres::{PostgresStore, connection_config};
use concord_projection::models::{Balances, FoldProjection};
use concord_projection::{PostgresDb, Projection, ProjectionError, ProjectionHost, State};
use concord_testkit::postgres::{PostgresServer, shared};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const NAMES: [&str; 3] = ["auctions", "balances", "documents"];

/// A store URL on a fresh schema, a store on it, and the schema.
async fn fresh() -> (String, Arc<dyn EventStore>, String) {
    let url = shared().url_with_fresh_schema();
    let store: Arc<dyn EventStore> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let schema = url.rsplit_once("schema=").unwrap().1.to_owned();
    (url, store, schema)
}

/// The read models' database of `url`, its sessions named `application` in
/// `pg_stat_activity`.
fn read_models(url: &str, application: &str) -> PostgresDb {
    let (mut config, schema) = connection_config(url).unwrap();
    config.application_name(application);
    PostgresDb::new(config, &schema).unwrap()
}

/// Asserts that every row of every built-in projection, read through `host`, equals a full
/// replay of the store, and that the tables hold no other row.
async fn assert_rows_equal_replay(
    host: &ProjectionHost,
    store: &Arc<dyn EventStore>,
    server: &PostgresServer,
    schema: &str,
) {
    let log = all_events(store).await;
    let head = log.last().map_or(Position::ZERO, |e| e.position);
    for (name, rows) in replay_all(&log) {
        for (key, expected) in &rows {
            let got = host.get_row(&name, key, Some(head), WAIT).await.unwrap();
            assert_eq!(&got.row, expected, "{name} {key}");
        }
        let count = server.psql(&format!("SELECT count(*) FROM {schema}.projection_{name}"));
        assert_eq!(count.trim(), rows.len().to_string(), "{name}'s table");
    }
}

/// Waits until `name`'s state on `host` satisfies `ok`.
async fn wait_state(host: &ProjectionHost, name: &str, ok: impl Fn(State) -> bool) -> State {
    let mut rx = host.progress(name).unwrap();
    let reached = tokio::time::timeout(WAIT, rx.wait_for(|p| ok(p.state)))
        .await
        .map(|p| p.map(|p| p.state));
    match reached {
        Ok(state) => state.unwrap(),
        Err(_) => panic!("{name} never reached the state: {:?}", *rx.borrow()),
    }
}

/// Two hosts of the built-in projections on `url`'s database, as two servers: A (sessions
/// named `<application>-a`) runs every projection, B (`<application>-b`) follows.
async fn leader_and_follower(
    url: &str,
    store_a: &Arc<dyn EventStore>,
    store_b: &Arc<dyn EventStore>,
    application: &str,
) -> (ProjectionHost, ProjectionHost) {
    let open = |store: &Arc<dyn EventStore>, suffix: &str| {
        ProjectionHost::open_builtin(
            Arc::clone(store),
            read_models(url, &format!("{application}-{suffix}")),
        )
    };
    let a = open(store_a, "a").await.unwrap();
    let b = open(store_b, "b").await.unwrap();
    a.start_all().await;
    for name in NAMES {
        // Running, not merely started: A's runners hold the lead before B starts.
        wait_state(&a, name, |s| s == State::Running).await;
    }
    b.start_all().await;
    for name in NAMES {
        wait_state(&b, name, |s| s == State::Standby).await;
    }
    (a, b)
}

/// Asserts that `name` runs on exactly one of `a` and `b`, and the other follows it.
async fn assert_one_runs_the_other_follows(a: &ProjectionHost, b: &ProjectionHost, name: &str) {
    let states = (
        a.status(name).await.unwrap().status,
        b.status(name).await.unwrap().status,
    );
    assert!(
        (runs(states.0) && states.1 == State::Standby)
            || (states.0 == State::Standby && runs(states.1)),
        "{name}: one runs, the other follows: {states:?}"
    );
}

fn runs(state: State) -> bool {
    matches!(state, State::Running | State::CatchingUp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_and_checkpoints_live_in_the_stores_database_and_equal_a_full_replay() {
    let (url, store, schema) = fresh().await;
    let host = ProjectionHost::open_builtin(store.clone(), read_models(&url, "concord-test"))
        .await
        .unwrap();
    host.start_all().await;
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let head = append_random(&store, seed, 120 * concord_testkit::scale()).await;
    for name in NAMES {
        host.wait_for(name, head, WAIT).await.unwrap();
        let stored = shared().psql(&format!(
            "SELECT position FROM {schema}.projection_checkpoints WHERE name = '{name}'"
        ));
        assert_eq!(stored.trim(), head.get().to_string(), "{name}'s checkpoint");
    }
    assert_rows_equal_replay(&host, &store, shared(), &schema).await;

    // A rebuild replays into the same rows.
    for name in NAMES {
        let report = host.rebuild(name, |_, _| {}).await.unwrap();
        assert!(report.checkpoint >= head, "{report:?}");
    }
    assert_rows_equal_replay(&host, &store, shared(), &schema).await;
    host.shutdown().await;

    // A deleted account's row goes on reconcile, here as with SQLite.
    let log = all_events(&store).await;
    let victim = replay_all(&log)["balances"]
        .keys()
        .next()
        .expect("the random appends opened an account")
        .clone();
    store.delete_stream(&stream(&victim), None).await.unwrap();
    append(&store, "account-9", vec![opening("account")]).await;
    let host = ProjectionHost::open_builtin(store.clone(), read_models(&url, "concord-test"))
        .await
        .unwrap();
    host.start_all().await;
    let head = store.head().await.unwrap();
    host.wait_for("balances", head, WAIT).await.unwrap();
    let gone = host.get_row("balances", &victim, None, WAIT).await;
    assert!(
        matches!(gone, Err(ProjectionError::RowNotFound { .. })),
        "{gone:?}"
    );
    let row = host
        .get_row("balances", "account-9", None, WAIT)
        .await
        .unwrap();
    assert_eq!(row.row["balance"], 100);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_fold_refuses_is_skipped_and_the_skip_is_kept_in_postgres() {
    let (url, store, _) = fresh().await;
    append(&store, "account-1", vec![opening("account")]).await;
    let refused = append(
        &store,
        "account-1",
        vec![event("Deposited", json!({"amount": "seven"}))],
    )
    .await;
    let head = append(
        &store,
        "account-1",
        vec![event("Deposited", json!({"amount": 7}))],
    )
    .await;
    let host = ProjectionHost::open_builtin(store.clone(), read_models(&url, "concord-test"))
        .await
        .unwrap();
    host.start_all().await;
    let row = host
        .get_row("balances", "account-1", Some(head), WAIT)
        .await
        .unwrap();
    assert_eq!(
        (row.row["balance"].clone(), row.row["version"].clone()),
        (json!(107), json!(3))
    );
    host.shutdown().await;

    let again = ProjectionHost::open_builtin(store.clone(), read_models(&url, "concord-test"))
        .await
        .unwrap();
    let status = again.status("balances").await.unwrap();
    assert_eq!((status.checkpoint, status.skipped), (head, 1));
    assert_eq!(status.skipped_events[0].position, refused);
    assert!(
        status.skipped_events[0].error.contains("amount"),
        "{:?}",
        status.skipped_events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_without_a_postgres_read_model_is_refused_by_a_postgres_host() {
    #[derive(Debug)]
    struct SqliteOnly(FoldProjection<Balances>);
    impl Projection for SqliteOnly {
        fn name(&self) -> &str {
            "sqlite-only"
        }
        fn filter(&self) -> concord_core::Filter {
            self.0.filter()
        }
        fn create(&self, db: &rusqlite::Connection) -> rusqlite::Result<()> {
            self.0.create(db)
        }
        fn reset(&self, db: &rusqlite::Connection) -> rusqlite::Result<()> {
            self.0.reset(db)
        }
        fn apply(
            &self,
            db: &rusqlite::Connection,
            event: &concord_core::RecordedEvent,
        ) -> Result<(), concord_projection::HandlerError> {
            self.0.apply(db, event)
        }
        fn row(
            &self,
            db: &rusqlite::Connection,
            key: &str,
        ) -> rusqlite::Result<Option<serde_json::Value>> {
            Projection::row(&self.0, db, key)
        }
    }
    let (url, store, _) = fresh().await;
    let opened = ProjectionHost::open(
        store,
        read_models(&url, "concord-test"),
        vec![Arc::new(SqliteOnly(FoldProjection::new()))],
    )
    .await;
    let err = opened.unwrap_err();
    assert!(
        matches!(err, ProjectionError::Unsupported { ref projection, .. } if projection == "sqlite-only"),
        "{err:?}"
    );
    assert!(err.to_string().contains("SQLite"), "{err}");
}

/// Two servers (each its own store connection and host) on one database: one runs each
/// projection, the other follows its checkpoint and answers read-your-writes from the same
/// rows, and takes over when the first goes away; every event is applied once in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_at_a_time_runs_each_projection_and_the_other_takes_over_when_it_goes() {
    let (url, store_a, schema) = fresh().await;
    let store_b: Arc<dyn EventStore> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let (a, b) = leader_and_follower(&url, &store_a, &store_b, "concord-test").await;

    // Written through A, read through B: B's wait is woken by A's commits.
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let head = append_random(&store_a, seed, 60 * concord_testkit::scale()).await;
    for name in NAMES {
        let at = b.wait_for(name, head, WAIT).await.unwrap();
        assert!(at >= head);
        let (sa, sb) = (a.status(name).await.unwrap(), b.status(name).await.unwrap());
        assert!(
            runs(sa.status) && sb.status == State::Standby,
            "{sa:?} {sb:?}"
        );
    }
    assert_rows_equal_replay(&b, &store_b, shared(), &schema).await;

    // A goes away (its sessions with it): B runs every projection from A's checkpoint.
    a.shutdown().await;
    drop(a);
    for name in NAMES {
        wait_state(&b, name, runs).await;
    }
    let head = append_random(&store_b, seed ^ 1, 60 * concord_testkit::scale()).await;
    for name in NAMES {
        b.wait_for(name, head, WAIT).await.unwrap();
    }
    assert_rows_equal_replay(&b, &store_b, shared(), &schema).await;
    b.shutdown().await;
}

/// The leader's sessions are cut (a network fault, `pg_terminate_backend`) while events
/// arrive: the lead passes to whichever server takes it first, and the rows still equal a
/// full replay, so no batch was applied twice or lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_session_applies_nothing_twice() {
    let (url, store, schema) = fresh().await;
    let (a, b) = leader_and_follower(&url, &store, &store, "concord-cut").await;
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let writer = {
        let store = store.clone();
        tokio::spawn(
            async move { append_random(&store, seed, 150 * concord_testkit::scale()).await },
        )
    };
    let mut cut = 0;
    for _ in 0..3 {
        let n = shared().psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'concord-cut-a'",
        );
        cut += n.trim().parse::<u32>().unwrap();
        tokio::task::yield_now().await;
    }
    assert!(
        cut >= 3,
        "A's three runners' sessions were cut ({cut} sessions)"
    );
    let head = writer.await.unwrap();
    for name in NAMES {
        a.wait_for(name, head, WAIT).await.unwrap();
        b.wait_for(name, head, WAIT).await.unwrap();
        assert_one_runs_the_other_follows(&a, &b, name).await;
    }
    assert_rows_equal_replay(&a, &store, shared(), &schema).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// PostgreSQL itself is SIGKILLed and started again under a leader and a follower: both
/// recover without being restarted (new sessions, the lead taken again), and the rows still
/// equal a full replay, events written after the restart included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_models_recover_when_postgres_is_killed_and_restarted() {
    let mut server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let url = format!("{}?schema=projections_kill", server.url());
    let store: Arc<dyn EventStore> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let (a, b) = leader_and_follower(&url, &store, &store, "concord-kill").await;
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let head = append_random(&store, seed, 40 * concord_testkit::scale()).await;
    for name in NAMES {
        b.wait_for(name, head, WAIT).await.unwrap();
    }

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    // The store's own pool reconnects on the next call; appends before that are refused.
    let mut head = Position::ZERO;
    for attempt in 0.. {
        match store.head().await {
            Ok(_) => {
                head = append_random_to(&store, seed ^ 7, 40 * concord_testkit::scale(), "after")
                    .await;
                break;
            }
            Err(e) => assert!(attempt < 100, "the store never came back: {e}"),
        }
    }
    for name in NAMES {
        a.wait_for(name, head, WAIT).await.unwrap();
        b.wait_for(name, head, WAIT).await.unwrap();
        assert_one_runs_the_other_follows(&a, &b, name).await;
    }
    assert_rows_equal_replay(&b, &store, &server, "projections_kill").await;
    a.shutdown().await;
    b.shutdown().await;
}
