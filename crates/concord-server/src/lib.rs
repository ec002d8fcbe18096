//! `concord-server`: the HTTP API of `shared/API.md` over any [`EventStore`].
//!
//! - [`ServerConfig`]: address, limits, tokens, keep-alive; [`ServerConfig::validate`]
//!   refuses an open server on a non-loopback address.
//! - [`router`]: the axum application, for tests or embedding in a larger app.
//! - [`serve`]: runs the application on a listener until a shutdown future resolves.
//! - [`shutdown_signal`]: that future for SIGTERM and Ctrl-C.
//!
//! It is not: a backend (it receives a store and never names one), nor the CLI (the
//! `concord` binary parses flags and picks the backend). The web UI at `/` lives in `ui`.
//! The read side (`/projections`) is served when [`ServerConfig::projections`] holds a
//! `concord_projection::ProjectionHost`; the caller starts and shuts it down.
//!
//! **Architecture invariant:** the mapping from errors to status codes and problem types
//! lives only in [`ApiError`]'s `IntoResponse`.
//!
//! ```no_run
//! # async fn run() -> Result<(), concord_server::ServerError> {
//! use std::sync::Arc;
//! let store = Arc::new(concord_core::MemoryStore::new());
//! let config = concord_server::ServerConfig::default();
//! let listener = tokio::net::TcpListener::bind(config.addr).await.map_err(concord_server::ServerError::Io)?;
//! concord_server::serve(listener, store, config, concord_server::shutdown_signal()).await
//! # }
//! ```

mod auth;
mod config;
mod cross;
mod error;
mod extract;
mod metrics;
mod openapi;
mod projections;
mod routes;
mod sse;
mod ui;

use std::future::Future;
use std::sync::Arc;

use axum::serve::ListenerExt as _;
use concord_core::EventStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{Access, EVERY_STREAM, TokenGrant, Tokens};
pub use config::{ServerConfig, TokensSource};
pub use error::{ApiError, ServerError};
pub use metrics::Metrics;
pub use openapi::{ROUTES, document as openapi_document};

/// The application for `store` under `config`, without a listener.
///
/// Call [`ServerConfig::validate`] first: a tokens file that cannot be loaded here makes
/// the router refuse every request (401) rather than run open.
pub fn router(store: Arc<dyn EventStore>, config: ServerConfig) -> axum::Router {
    let tokens = match &config.tokens {
        None => None,
        Some(TokensSource::Parsed(t)) => Some(t.clone()),
        Some(TokensSource::File(path)) => Some(Tokens::load(path).unwrap_or_else(|e| {
            tracing::error!(error = %e, "tokens file unusable; refusing every request");
            Tokens::default()
        })),
    };
    let (sender, _) = watch::channel(false);
    routes::build(store, config, tokens, Arc::new(sender))
}

/// Serves the API on `listener` until `shutdown` resolves.
///
/// Shutdown protocol: when `shutdown` resolves the server stops accepting connections,
/// ends every subscription (their connections close), lets requests in flight finish (an
/// append that has started always completes and is answered), then returns `Ok`. Nothing
/// acknowledged is lost, because acknowledging happens only after the store's append
/// returned.
///
/// # Errors
/// [`ServerError::OpenOnNonLoopback`] or [`ServerError::Tokens`] from validating `config`
/// against the listener's address; [`ServerError::Io`] if serving fails.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn EventStore>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Io)?;
    let tokens = config.validate_for(addr)?;
    let (sender, _) = watch::channel(false);
    let sender = Arc::new(sender);
    let app = routes::build(Arc::clone(&store), config, tokens, Arc::clone(&sender));
    tracing::info!(%addr, store = store.backend(), "serving the Concord HTTP API");
    // Subscriptions send each event as a small write of its own: with Nagle's algorithm a
    // second event within a round trip would wait for the ACK of the first, which a client
    // may delay by up to 40 ms. (For request/response appends it measured no difference.)
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                "shutting down: no new connections, ending subscriptions, finishing requests"
            );
            sender.send_replace(true);
        })
        .await
        .map_err(ServerError::Io)?;
    tracing::info!("server stopped");
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
