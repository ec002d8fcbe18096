//! `rediss://` against a real TLS `redis-server`: with the CA given, the store works; with
//! only the system's roots, connecting fails with a clear error, not a panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use concord_core::{
    AppendRequest, Direction, EventStore, ExpectedVersion, Filter, Position, StoreError, Version,
    doc,
};
use concord_redis::{RedisOptions, RedisStore};
use concord_testkit::redis::{RedisServer, RedisServerOptions, unique_prefix};

fn options() -> RedisOptions {
    RedisOptions {
        key_prefix: unique_prefix(),
        timeout: Duration::from_secs(3),
        ..RedisOptions::default()
    }
}

#[tokio::test]
async fn appends_and_reads_work_over_tls() {
    let server = RedisServer::start_with(RedisServerOptions {
        tls: true,
        ..RedisServerOptions::default()
    });
    assert!(server.url().starts_with("rediss://"));
    let ca = server.tls_ca_pem().unwrap();
    let store = RedisStore::connect_with_root_certificate(&server.url(), options(), &ca)
        .await
        .unwrap();
    let s = doc::stream("account-1");
    let opened = doc::event(
        "AccountOpened",
        serde_json::json!({"owner": "ann", "balance": 1000}),
    );
    let outcome = store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![opened],
        ))
        .await
        .unwrap();
    assert_eq!(outcome.appended().first_version, Version(1));
    let events = store
        .read_stream(&s, Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    // Over TLS the global log is read through redis-rs, not the store's own connections.
    let page = store
        .read_all(Position::FIRST, &Filter::all(), 10)
        .await
        .unwrap();
    assert_eq!(page.events, events);
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_clear_error() {
    let server = RedisServer::start_with(RedisServerOptions {
        tls: true,
        ..RedisServerOptions::default()
    });
    let err = RedisStore::connect_with(&server.url(), options())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unavailable { .. } | StoreError::Backend { .. }
        ),
        "{err:?}"
    );
    let message = format!("{err}: {:?}", std::error::Error::source(&err));
    println!("untrusted certificate: {message}");
    assert!(message.contains("certificate"), "{message}");
    // A plain-text URL is refused by the TLS-only constructor.
    let plain = server.url().replacen("rediss://", "redis://", 1);
    let err = RedisStore::connect_with_root_certificate(&plain, options(), b"")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}
