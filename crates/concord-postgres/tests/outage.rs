//! A database that goes away: calls fail with `Unavailable` naming the host instead of
//! hanging, nothing is half-written, and the same store works again once PostgreSQL is back,
//! without being reopened. Each test uses its own server, because it kills it or changes
//! its settings (`ALTER SYSTEM`): a failed test leaves the setting on a server that goes
//! with it, never on one other tests share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use concord_core::{
    AppendRequest, Direction, EventStore, EventType, ExpectedVersion, Filter, Json, NewEvent,
    Position, StoreError, StreamName, Version,
};
use concord_postgres::PostgresStore;
use concord_testkit::postgres::PostgresServer;

/// Generous: only a hang would reach it.
const WAIT: Duration = Duration::from_secs(60);

fn deposit() -> NewEvent {
    NewEvent::new(EventType::new("Deposited").unwrap(), Json::empty_object())
}

/// Whether `error` is `Unavailable` naming `server`'s host and port.
fn unavailable_naming(error: &StoreError, server: &PostgresServer) -> bool {
    matches!(error, StoreError::Unavailable { message, .. }
        if message.contains(&format!("127.0.0.1:{}", server.port())))
}

/// How many events schema `schema` holds, counted by an admin session rather than the store.
fn events_in(server: &PostgresServer, schema: &str) -> u64 {
    server
        .psql(&format!("SELECT count(*) FROM {schema}.concord_events"))
        .trim()
        .parse()
        .expect("a count")
}

/// Turns `default_transaction_read_only` on or off for the whole server and waits until a
/// new session sees it. The store's sessions, which do not set it themselves, take it from
/// the reload before their next statement: the postmaster signals them as it reloads, so
/// once a session started after the reload shows the value, every older one has been told.
async fn make_read_only(server: &PostgresServer, on: bool) {
    server.psql(if on {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    });
    server.psql("SELECT pg_reload_conf()");
    let want = if on { "on" } else { "off" };
    let deadline = Instant::now() + WAIT;
    while server.psql("SHOW default_transaction_read_only").trim() != want {
        assert!(
            Instant::now() < deadline,
            "default_transaction_read_only is not {want} after {WAIT:?}"
        );
        // Polled: the reload is asynchronous and nothing tells us it happened.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_database_is_unavailable_and_the_store_recovers_when_it_is_back() {
    let mut server = PostgresServer::start();
    let store = PostgresStore::connect(&server.url()).await.unwrap();
    let stream = StreamName::new("account-1").unwrap();
    let _ = store
        .append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::NoStream,
            vec![deposit()],
        ))
        .await
        .unwrap();

    server.kill();
    let lost = deposit();
    let error = tokio::time::timeout(
        WAIT,
        store.append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Exact(Version(1)),
            vec![lost.clone()],
        )),
    )
    .await
    .expect("an append to a dead database answers instead of hanging")
    .unwrap_err();
    assert!(
        matches!(&error, StoreError::Unavailable { message, .. }
            if message.contains(&format!("127.0.0.1:{}", server.port()))),
        "{error:?}"
    );
    let error = tokio::time::timeout(WAIT, store.read_all(Position(1), &Filter::all(), 10))
        .await
        .expect("a read of a dead database answers instead of hanging")
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");

    server.restart();
    // The same store, not reopened: re-sending the failed append settles it.
    let outcome = tokio::time::timeout(
        WAIT,
        store.append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Exact(Version(1)),
            vec![lost],
        )),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(outcome.appended().last_version, Version(2));
    assert_eq!(store.head().await.unwrap(), Position(2));
}

/// Whether `error` passes on what the server said: that the transaction is read-only
/// (the driver's own words are only "db error").
fn says_read_only(error: &StoreError) -> bool {
    error.to_string().contains("read-only transaction")
}

/// A store at `url` holding one event in `account-1`, the stream it returns: an append to it
/// alone afterwards takes the lone path (the writer knows the row it left).
async fn store_with_a_known_stream(url: &str) -> (PostgresStore, StreamName) {
    let store = PostgresStore::connect(url).await.unwrap();
    let known = StreamName::new("account-1").unwrap();
    let _ = store
        .append(AppendRequest::new(
            known.clone(),
            ExpectedVersion::NoStream,
            vec![deposit()],
        ))
        .await
        .unwrap();
    (store, known)
}

/// A deposit to `known` after its first event: alone, the lone path.
async fn second_deposit(
    store: &PostgresStore,
    known: &StreamName,
) -> Result<concord_core::AppendOutcome, StoreError> {
    store
        .append(AppendRequest::new(
            known.clone(),
            ExpectedVersion::Exact(Version(1)),
            vec![deposit()],
        ))
        .await
}

/// `n` appends at once to new streams without an expectation: the writer cannot guess their
/// rows, so they take the general path together, in batches.
async fn appends_to_new_streams(
    store: &PostgresStore,
    round: &str,
    n: usize,
) -> Vec<Result<concord_core::AppendOutcome, StoreError>> {
    futures::future::join_all((0..n).map(|i| {
        store.append(AppendRequest::new(
            StreamName::new(format!("batch{round}-{i}")).unwrap(),
            ExpectedVersion::Any,
            vec![deposit(), deposit()],
        ))
    }))
    .await
}

/// A server that refuses writes (a standby, or here `default_transaction_read_only`) is
/// `Unavailable` for an append on either write path, not a `Backend` failure: the append
/// can succeed once a writable primary is back, with the same store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_is_unavailable_writes_nothing_and_the_same_store_appends_once_it_is_writable()
 {
    let server = PostgresServer::start();
    let schema = "read_only";
    let (store, known) =
        store_with_a_known_stream(&format!("{}?schema={schema}", server.url())).await;
    let batch = |round: &'static str| appends_to_new_streams(&store, round, 6);

    make_read_only(&server, true).await;
    let events_before = events_in(&server, schema);
    let head_before = store.head().await.unwrap();
    // Alone, on a stream the writer knows: the lone path, one statement in autocommit.
    let error = tokio::time::timeout(WAIT, second_deposit(&store, &known))
        .await
        .expect("an append to a read-only database answers")
        .unwrap_err();
    assert!(unavailable_naming(&error, &server), "{error:?}");
    assert!(says_read_only(&error), "{error}");
    let answers = tokio::time::timeout(WAIT, batch("a"))
        .await
        .expect("appends to a read-only database answer");
    for answer in answers {
        let error = answer.unwrap_err();
        assert!(unavailable_naming(&error, &server), "{error:?}");
        assert!(says_read_only(&error), "{error}");
    }
    assert_eq!(events_in(&server, schema), events_before);
    assert_eq!(store.head().await.unwrap(), head_before);
    // Reads go on while writes are refused.
    assert_eq!(store.stream_version(&known).await.unwrap(), Version(1));

    make_read_only(&server, false).await;
    let outcome = tokio::time::timeout(WAIT, second_deposit(&store, &known))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.appended().last_version, Version(2));
    // Again alone, now that the writer knows the row it left: the lone path once more.
    let outcome = store
        .append(AppendRequest::new(
            known.clone(),
            ExpectedVersion::Exact(Version(2)),
            vec![deposit()],
        ))
        .await
        .unwrap();
    assert_eq!(outcome.appended().last_version, Version(3));
    for answer in tokio::time::timeout(WAIT, batch("b")).await.unwrap() {
        assert_eq!(answer.unwrap().appended().last_version, Version(2));
    }
    assert_eq!(events_in(&server, schema), events_before + 2 + 12);
    assert_eq!(
        store.head().await.unwrap(),
        Position(head_before.get() + 2 + 12)
    );
}

/// The `statement_timeout` the next test's store URL sets in its libpq `options`.
const SHORT_TIMEOUT_MS: u64 = 1_500;

/// A call held up by a lock answers within this when the URL's timeout holds, and only
/// after the 30 s default when it does not.
const WELL_BEFORE_THE_DEFAULT: Duration = Duration::from_secs(15);

/// Whether `error` is the `Unavailable` of a cancelled statement at `server`.
fn timed_out(error: &StoreError, server: &PostgresServer) -> bool {
    unavailable_naming(error, server)
        && matches!(error, StoreError::Unavailable { message, .. }
            if message.contains("statement_timeout"))
}

/// A `statement_timeout` given in the store URL's libpq `options` replaces the 30 s default:
/// with the store's table locked by another session, appends (alone and batched) and reads
/// give up after it, as `Unavailable` naming the host and the timeout, write nothing, and
/// the same store carries on once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_held_up_past_the_urls_statement_timeout_is_unavailable_writes_nothing_and_the_store_carries_on()
 {
    let server = PostgresServer::start();
    let schema = "timeout";
    let (store, known) = store_with_a_known_stream(&format!(
        "{}?schema={schema}&options=-c%20statement_timeout%3D{SHORT_TIMEOUT_MS}",
        server.url()
    ))
    .await;
    let batch = |round: &'static str| appends_to_new_streams(&store, round, 4);
    let events_before = events_in(&server, schema);
    let head_before = store.head().await.unwrap();

    // A session of its own, holding the lock in an open transaction until it is told to
    // roll back.
    let (admin, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {schema}.concord_events IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();

    let error = tokio::time::timeout(WELL_BEFORE_THE_DEFAULT, second_deposit(&store, &known))
        .await
        .expect("an append alone gives up at the URL's statement_timeout")
        .unwrap_err();
    assert!(timed_out(&error, &server), "{error:?}");
    let answers = tokio::time::timeout(WELL_BEFORE_THE_DEFAULT, batch("a"))
        .await
        .expect("batched appends give up at the URL's statement_timeout");
    for answer in answers {
        let error = answer.unwrap_err();
        assert!(timed_out(&error, &server), "{error:?}");
    }
    let error = tokio::time::timeout(
        WELL_BEFORE_THE_DEFAULT,
        store.read_all(Position(1), &Filter::all(), 10),
    )
    .await
    .expect("read_all gives up at the URL's statement_timeout")
    .unwrap_err();
    assert!(timed_out(&error, &server), "{error:?}");
    let error = tokio::time::timeout(
        WELL_BEFORE_THE_DEFAULT,
        store.read_stream(&known, Version(1), Direction::Forward, 10),
    )
    .await
    .expect("read_stream gives up at the URL's statement_timeout")
    .unwrap_err();
    assert!(timed_out(&error, &server), "{error:?}");

    admin.batch_execute("ROLLBACK").await.unwrap();
    drop(admin);
    connection.await.unwrap().unwrap();
    assert_eq!(events_in(&server, schema), events_before);
    assert_eq!(store.head().await.unwrap(), head_before);

    let outcome = second_deposit(&store, &known).await.unwrap();
    assert_eq!(outcome.appended().last_version, Version(2));
    for answer in batch("b").await {
        assert_eq!(answer.unwrap().appended().last_version, Version(2));
    }
    let page = store
        .read_all(Position(1), &Filter::all(), 100)
        .await
        .unwrap();
    assert_eq!(page.events.len(), 2 + 8);
    let stream = store
        .read_stream(&known, Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(stream.len(), 2);
}
