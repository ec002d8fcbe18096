//! `concord-server`: the HTTP API of `docs/http-api.md` over any [`EventStore`].
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
mod finish;
mod groups;
mod lifecycle;
mod metered;
mod metrics;
mod openapi;
mod projections;
mod quickack;
mod routes;
mod sse;
mod ui;

use std::future::Future;
use std::sync::Arc;

use concord_core::EventStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{Access, EVERY_STREAM, TokenGrant, Tokens};
pub use config::{ServerConfig, TokensSource};
pub use error::{ApiError, ServerError};
pub use metrics::Metrics;
pub use openapi::{ROUTES, document as openapi_document, document_for as openapi_document_for};

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
    routes::build(
        store,
        config,
        tokens,
        Arc::new(sender),
        Arc::new(metrics::Metrics::default()),
        None,
    )
}

/// Serves the API on `listener` until `shutdown` resolves.
///
/// Shutdown protocol: when `shutdown` resolves the server stops accepting connections,
/// ends every subscription (their connections close), lets requests in flight finish (an
/// append that has started always completes and is answered), then returns `Ok`. Nothing
/// acknowledged is lost, because acknowledging happens only after the store's append
/// returned.
///
/// Connections are HTTP/1.1 or HTTP/2 (cleartext, prior knowledge), served by hyper. A
/// request with `content-type: application/grpc…` goes to KurrentDB's gRPC protocol
/// (`concord_grpc`, the same store and tokens); any other request to the HTTP API. HTTP/1.1
/// connections have the timeouts of `config`: a client that does not send its request
/// headers within `header_timeout` (also between two requests on a kept-alive connection)
/// is disconnected, and one whose body does not arrive within `body_timeout` is answered
/// 408. A slow or idle client therefore holds a connection for a bounded time
/// (`axum::serve` sets neither timeout). gRPC calls stream for as long as the caller wants
/// (subscriptions), so they have no body timeout. When `config.grpc_addr` is set, that
/// address is bound too and answers gRPC only.
///
/// # Errors
/// [`ServerError::OpenOnNonLoopback`] or [`ServerError::Tokens`] from validating `config`
/// against the listener's address; [`ServerError::Io`] if binding `grpc_addr` or serving
/// fails.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn EventStore>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Io)?;
    let tokens = config.validate_for(addr)?;
    let grpc_listener = match config.grpc_addr {
        Some(grpc_addr) => Some(
            TcpListener::bind(grpc_addr)
                .await
                .map_err(ServerError::Io)?,
        ),
        None => None,
    };
    let header_timeout = config.header_timeout;
    let groups = Arc::new(concord_groups::Groups::new(Arc::clone(&store)));
    let (sender, _) = watch::channel(false);
    let sender = Arc::new(sender);
    let metrics = Arc::new(metrics::Metrics::default());
    let grpc = concord_grpc::routes(
        Arc::new(metered::Metered {
            inner: Arc::clone(&store),
            metrics: Arc::clone(&metrics),
        }),
        concord_grpc::GrpcConfig {
            limits: config.limits,
            gate: Arc::new(auth::TokenGate(tokens.clone())),
            advertised: addr,
            groups: Arc::clone(&groups),
            shutdown: sender.subscribe(),
        },
    );
    let scavenge_every = config.scavenge_every;
    let projections = config.projections.clone();
    let app = routes::build(
        Arc::clone(&store),
        config,
        tokens,
        Arc::clone(&sender),
        Arc::clone(&metrics),
        Some(groups),
    );
    tracing::info!(%addr, store = store.backend(), "serving the Concord HTTP API and KurrentDB's gRPC protocol");
    let mut http =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    http.http2().timer(hyper_util::rt::TokioTimer::new());
    // Every connection holds a receiver; the end waits for them all to be dropped.
    let (closing, connections) = watch::channel(false);
    let (stop, stopped) = watch::channel(false);
    let mut loops = Vec::new();
    if let Some(grpc_listener) = grpc_listener {
        tracing::info!(addr = ?grpc_listener.local_addr().ok(), "serving KurrentDB's gRPC protocol");
        let front = Front {
            app: None,
            grpc: grpc.clone(),
        };
        loops.push(tokio::spawn(accept(
            grpc_listener,
            front,
            http.clone(),
            connections.clone(),
            stopped.clone(),
            header_timeout,
        )));
    }
    if let Some(every) = scavenge_every {
        tracing::info!(every = ?every, "scavenging on a schedule");
        tokio::spawn(lifecycle::scavenge_on_schedule(
            Arc::clone(&store),
            metrics,
            projections,
            every,
            stopped.clone(),
        ));
    }
    let front = Front {
        app: Some(app),
        grpc,
    };
    loops.push(tokio::spawn(accept(
        listener,
        front,
        http,
        connections.clone(),
        stopped,
        header_timeout,
    )));
    shutdown.await;
    tracing::info!("shutting down: no new connections, ending subscriptions, finishing requests");
    stop.send_replace(true);
    for l in loops {
        if let Err(e) = l.await {
            tracing::error!(error = %e, "an accept loop failed");
        }
    }
    sender.send_replace(true);
    closing.send_replace(true);
    drop(connections);
    closing.closed().await;
    tracing::info!("server stopped");
    Ok(())
}

/// Where a request goes: gRPC by content type, anything else to the HTTP API (none on
/// the gRPC-only address: 415).
#[derive(Clone)]
struct Front {
    app: Option<axum::Router>,
    grpc: tonic::service::Routes,
}

fn is_grpc<B>(request: &hyper::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl Front {
    async fn call(
        self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<axum::body::Body>, std::convert::Infallible> {
        if is_grpc(&request) {
            let mut grpc = self.grpc;
            return match tower_service::Service::call(&mut grpc, request).await {
                Ok(response) => Ok(response.map(axum::body::Body::new)),
                Err(never) => match never {},
            };
        }
        match self.app {
            Some(mut app) => {
                tower_service::Service::call(&mut app, request.map(axum::body::Body::new)).await
            }
            None => {
                let mut response = hyper::Response::new(axum::body::Body::from(
                    "this address answers gRPC only (content-type: application/grpc)",
                ));
                *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
                Ok(response)
            }
        }
    }
}

/// Accepts connections on `listener` until `stopped` turns true.
async fn accept(
    listener: TcpListener,
    front: Front,
    http: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    connections: watch::Receiver<bool>,
    mut stopped: watch::Receiver<bool>,
    header_timeout: std::time::Duration,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = async { drop(stopped.wait_for(|s| *s).await) } => break,
        };
        // Subscriptions send each event as a small write of its own: with Nagle's algorithm
        // a second event within a round trip would wait for the ACK of the first, which a
        // client may delay by up to 40 ms. (For request/response appends it measured no
        // difference.)
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let front = front.clone();
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                front.clone().call(request)
            });
        let http = http.clone();
        let mut closing = connections.clone();
        tokio::spawn(async move {
            // Telling HTTP/1.1 from HTTP/2 waits for the client's first bytes, before
            // hyper's HTTP/1 header timeout starts: a client that connects and sends nothing
            // is closed after the header timeout here instead of held forever.
            let mut first = [0u8; 3];
            let http2 = match tokio::time::timeout(header_timeout, tcp.peek(&mut first)).await {
                // HTTP/2 with prior knowledge (gRPC) opens with `PRI * HTTP/2.0`.
                Ok(Ok(n)) if n > 0 => first.get(..n).is_some_and(|b| b.starts_with(b"PRI")),
                _ => {
                    tracing::debug!(%remote, "closed a connection that sent nothing");
                    drop(closing);
                    return;
                }
            };
            let io = quickack::QuickAck::new(tcp, http2);
            let connection = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = closing.changed() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            // Only now may the server's shutdown complete.
            drop(closing);
        });
    }
}

/// An accept error: a connection that failed before it was accepted is the client's
/// problem; anything else (too many open files) is waited out briefly rather than spun on.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM. The handlers are installed when this
/// is called, not when the future is first polled: call it before the server says where it
/// listens, so that a SIGTERM sent as soon as it answers (a service manager, a test) stops
/// it cleanly instead of killing it. A handler that cannot be installed is logged, and that
/// signal then keeps its default action.
#[must_use = "the future resolves when a signal arrives"]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for {name}");
                None
            }
        };
        let mut interrupt = listen(SignalKind::interrupt(), "Ctrl-C");
        let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                () = received(interrupt.as_mut()) => {}
                () = received(terminate.as_mut()) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves when `signal` arrives; never when it could not be listened for.
#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => drop(s.recv().await),
        None => std::future::pending::<()>().await,
    }
}
