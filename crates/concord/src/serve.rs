//! `concord serve`: the HTTP API (docs/http-api.md) over the store `--store` names.
//!
//! The binary only wires things: it opens the backend, binds the address, turns the flags
//! into a `ServerConfig` and hands both to `concord_server::serve` with Ctrl-C/SIGTERM as
//! the shutdown signal. Everything HTTP lives in `concord-server`. It also runs the built-in
//! projections (`concord-projection`) in the background on the same store, with their read
//! models where `concord query` finds them (`<dir>/projections.sqlite` beside an embedded
//! store; the store's own schema for a PostgreSQL store, where every server on the database
//! shares them and one at a time runs each), and stops them after the server has stopped.

use std::sync::Arc;

use anyhow::Context as _;
use concord_core::Limits;
use concord_projection::ProjectionHost;
use concord_server::{ServerConfig, TokensSource};

use crate::opt::ServeArgs;
use crate::{Context, Exit};

fn millis(flag: Option<u64>, default: std::time::Duration) -> std::time::Duration {
    flag.map_or(default, std::time::Duration::from_millis)
}

/// Serves until Ctrl-C or SIGTERM, then shuts down gracefully and exits 0.
///
/// # Errors
/// An unusable store, address or tokens file, named in the message.
pub(crate) async fn run(ctx: &mut Context, args: ServeArgs) -> anyhow::Result<Exit> {
    init_tracing();
    let defaults = Limits::default();
    let server_defaults = ServerConfig::default();
    let config = ServerConfig {
        addr: args.addr,
        limits: Limits {
            event_bytes_max: args.event_bytes_max.unwrap_or(defaults.event_bytes_max),
            request_bytes_max: args.request_bytes_max.unwrap_or(defaults.request_bytes_max),
            events_per_append_max: args
                .events_per_append_max
                .unwrap_or(defaults.events_per_append_max),
            read_limit_max: args.read_limit_max.unwrap_or(defaults.read_limit_max),
            ..defaults
        },
        tokens: args.tokens.map(TokensSource::File),
        insecure_open: args.insecure_open,
        head_long_poll: millis(args.head_long_poll_ms, server_defaults.head_long_poll),
        group_wait_max: millis(args.group_wait_max_ms, server_defaults.group_wait_max),
        header_timeout: millis(args.header_timeout_ms, server_defaults.header_timeout),
        body_timeout: millis(args.body_timeout_ms, server_defaults.body_timeout),
        grpc_addr: args.grpc_addr,
        scavenge_every: match args.scavenge_every {
            None => server_defaults.scavenge_every,
            Some(crate::opt::ScavengeEvery::Every(d)) => Some(d),
            Some(crate::opt::ScavengeEvery::Off) => None,
        },
        ..server_defaults
    };
    // Refuse an unsafe configuration before opening the store or binding the port.
    config.validate().context("refusing to start")?;
    let store = ctx.open_store().await?;
    // The built-in projections run in the background for as long as the server does.
    let host = if args.no_projections {
        None
    } else {
        let db = crate::projection::projection_db(ctx, args.projections)?;
        let host = ProjectionHost::open_builtin(Arc::clone(&store), db.clone())
            .await
            .with_context(|| format!("cannot open the projection database {db}"))?;
        let host = Arc::new(host);
        host.start_all().await;
        Some(host)
    };
    let config = ServerConfig {
        projections: host.clone(),
        ..config
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    // Listening for SIGTERM before saying where we listen: one sent as soon as the server
    // answers stops it cleanly.
    let shutdown = concord_server::shutdown_signal();
    eprintln!(
        "concord: serving {} on http://{} (Ctrl-C to stop)",
        ctx.store_url,
        listener.local_addr().unwrap_or(args.addr)
    );
    let served = concord_server::serve(listener, store, config, shutdown)
        .await
        .context("the server failed");
    // Each projection stops after its batch in progress; its checkpoint is committed with it.
    if let Some(host) = host {
        host.shutdown().await;
    }
    served?;
    eprintln!("concord: stopped");
    Ok(Exit::Success)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (tests calling `run` twice) is harmless; ignore it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
