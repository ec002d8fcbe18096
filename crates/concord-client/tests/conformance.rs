//! The conformance suite through HTTP: every spec runs against `ConcordClient` talking to
//! a real `concord-server` on an ephemeral port, backed by a fresh store (memory, and
//! the embedded store in a temporary directory).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use concord_client::ConcordClient;
use concord_core::{EventStore, MemoryStore};
use concord_server::ServerConfig;
use concord_testkit::TestStore;

/// Stops the server when the test ends.
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _keep: Box<dyn std::any::Any + Send>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(store: Arc<dyn EventStore>, keep: Box<dyn std::any::Any + Send>) -> TestStore {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(concord_server::serve(
        listener,
        store,
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = ConcordClient::new(&format!("http://{addr}"), None).unwrap();
    TestStore::with_guard(
        Arc::new(client),
        Server {
            stop: Some(stop),
            _keep: keep,
        },
    )
}

async fn memory() -> TestStore {
    serve(Arc::new(MemoryStore::new()), Box::new(())).await
}

mod memory_backed {
    concord_testkit::conformance_suite!(super::memory);
    concord_testkit::lifecycle_suite!(super::memory);
}

async fn embedded() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = concord_embedded::EmbeddedStore::open(dir.path()).unwrap();
    serve(Arc::new(store), Box::new(dir)).await
}

mod embedded_backed {
    concord_testkit::conformance_suite!(super::embedded);
    concord_testkit::lifecycle_suite!(super::embedded);
}
