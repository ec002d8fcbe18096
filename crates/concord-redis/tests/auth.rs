//! A Redis that asks for a password, used on a database other than 0: every connection
//! the store opens (the multiplexed one, the head watcher's, its own for reads of the
//! global log) authenticates and selects the database, and a wrong password is a clear
//! error, not a panic or a hang.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::Duration;

use concord_core::{AppendRequest, EventStore, ExpectedVersion, Filter, Position, StoreError, doc};
use concord_testkit::redis::{RedisServer, RedisServerOptions};
use redis::AsyncCommands;

fn server() -> RedisServer {
    RedisServer::start_with(RedisServerOptions {
        password: Some("s3cret-pass".into()),
        ..RedisServerOptions::default()
    })
}

/// The message of a refused password, after checking it is not taken for a Redis that is
/// down (which a caller would retry).
fn refused(error: &StoreError) -> String {
    assert!(
        !matches!(error, StoreError::Unavailable { .. }),
        "a refused password is not a Redis that is down: {error:?}"
    );
    error.to_string()
}

#[tokio::test]
async fn a_store_behind_a_password_on_database_3_reads_what_it_wrote_there() {
    let server = server();
    let url = server.url().replace("/0", "/3");
    assert!(url.contains(":s3cret-pass@"));
    let store = common::store_on(&url, Duration::from_secs(5)).await;
    let events = (0..3)
        .map(|n| doc::event("Deposited", serde_json::json!({ "amount": n })))
        .collect();
    let _ = store
        .append(AppendRequest::new(
            doc::stream("account-1"),
            ExpectedVersion::NoStream,
            events,
        ))
        .await
        .unwrap();
    let page = store
        .read_all(Position::FIRST, &Filter::all(), 10)
        .await
        .unwrap();
    assert_eq!(page.events.len(), 3);
    assert_eq!(page.head, Position(3));
    assert_eq!(store.wait_for_head(Position(2)).await.unwrap(), Position(3));

    // The events are in database 3, and only there.
    let client = redis::Client::open(url.replace("/3", "/0")).unwrap();
    let mut db0 = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = db0.keys("*").await.unwrap();
    assert!(keys.is_empty(), "database 0 holds {keys:?}");
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error() {
    let server = server();
    let url = server.url().replace("s3cret-pass", "wrong");
    let options = concord_redis::RedisOptions {
        timeout: Duration::from_secs(2),
        ..concord_redis::RedisOptions::default()
    };
    let error = concord_redis::RedisStore::connect_with(&url, options)
        .await
        .expect_err("connected with a wrong password");
    let text = refused(&error);
    assert!(
        text.to_lowercase().contains("authentication failed"),
        "{text}"
    );
    assert!(!text.contains("wrong@"), "the password leaked: {text}");
}

#[tokio::test]
async fn a_password_changed_under_a_running_store_is_a_clear_error_on_its_next_read() {
    let server = server();
    let url = server.url();
    let store = common::store_on(&url, Duration::from_secs(2)).await;
    // Another client changes the password; the store's next read opens a connection of
    // its own with the old one.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("another-pass")
        .query_async(&mut admin)
        .await
        .unwrap();
    let error = store
        .read_all(Position::FIRST, &Filter::all(), 10)
        .await
        .expect_err("read with a password Redis no longer takes");
    let text = refused(&error);
    assert!(
        text.contains("WRONGPASS") && text.contains("CONNECT"),
        "{text}"
    );
}
