//! `concord projection list|status NAME|rebuild NAME` and `concord query NAME KEY`: the
//! read side (`concord-projection`) from the command line, on the `--store` store.
//!
//! With `--store http://…` the server is asked (`/projections`): it runs the projections,
//! and its answer is the one that counts (its status, its read models, a refusal of the
//! token). Otherwise the read models live in one database: `<dir>/projections.sqlite` beside
//! an embedded store in `<dir>`, the store's own schema for a PostgreSQL store,
//! `./concord-projections/projections.sqlite` for other stores, or `--projections-db PATH`
//! (a SQLite file, or a `postgres://` URL). Nothing runs in the background between commands: `query`
//! catches the projection up to the store's head, then answers; `rebuild` replays from
//! position 1 with a progress bar on a terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use concord_api::ProjectionInfo;
use concord_client::ConcordClient;
use concord_core::Position;
use concord_projection::{PostgresDb, Progress, ProjectionDb, ProjectionHost, ProjectionStatus};

use crate::store_url::StoreUrl;
use crate::{Context, Exit};

/// Where the projection database is.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// The projection database: a SQLite file, or a `postgres://` URL (with `?schema=S`).
    /// Default: `projections.sqlite` in the embedded store's directory, the store's own
    /// database and schema for a PostgreSQL store (shared by every server on it), or
    /// `./concord-projections/projections.sqlite` for other stores.
    #[arg(long, value_name = "PATH", env = "CONCORD_PROJECTIONS_DB")]
    pub projections_db: Option<PathBuf>,
}

/// `concord projection`.
#[derive(Debug, Args)]
pub struct ProjectionArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ProjectionAction,
    /// Where the read models are.
    #[command(flatten)]
    pub db: DbArgs,
}

/// The `concord projection` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectionAction {
    /// Every projection: status, checkpoint, head, lag.
    List,
    /// One projection's status, with its failure if it stopped on one.
    Status {
        /// `balances`, `auctions` or `documents`.
        name: String,
    },
    /// Empty the read model and replay every event from position 1.
    Rebuild {
        /// `balances`, `auctions` or `documents`.
        name: String,
    },
}

/// `concord query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The projection: `balances`, `auctions` or `documents`.
    pub name: String,
    /// The row's key: a stream name, e.g. `account-42`.
    pub key: String,
    /// Answer only once the projection has processed this position (read-your-writes).
    #[arg(long, value_name = "POSITION")]
    pub min_position: Option<u64>,
    /// How long to wait for --min-position, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub wait_ms: u64,
    /// Where the read models are.
    #[command(flatten)]
    pub db: DbArgs,
}

/// The projection database for `ctx`'s store (also what `concord serve` runs on).
pub(crate) fn projection_db(ctx: &Context, db: DbArgs) -> anyhow::Result<ProjectionDb> {
    let postgres = |url: &str| -> anyhow::Result<ProjectionDb> {
        let (config, schema) = concord_postgres::connection_config(url)
            .context("cannot use that PostgreSQL URL for the read models")?;
        Ok(PostgresDb::new(config, &schema)?.into())
    };
    if let Some(path) = db.projections_db {
        return match path.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                postgres(url)
            }
            _ => Ok(ProjectionDb::Sqlite(path)),
        };
    }
    Ok(match &ctx.store_url {
        StoreUrl::Embedded(dir) => ProjectionDb::Sqlite(dir.join("projections.sqlite")),
        // An in-memory store starts empty each run, so its read models must too.
        StoreUrl::Memory => ProjectionDb::Sqlite(
            std::env::temp_dir().join(format!("concord-projections-{}.sqlite", std::process::id())),
        ),
        // Beside the events, shared by every server on the database.
        StoreUrl::Postgres(url) => return postgres(url),
        StoreUrl::Redis { .. } | StoreUrl::Http(_) | StoreUrl::Grpc(_) => {
            ProjectionDb::Sqlite(PathBuf::from("concord-projections").join("projections.sqlite"))
        }
    })
}

async fn open(ctx: &Context, db: DbArgs) -> anyhow::Result<ProjectionHost> {
    let store = ctx.open_store_to_read().await?;
    let db = projection_db(ctx, db)?;
    ProjectionHost::open_builtin(store, db.clone())
        .await
        .with_context(|| format!("cannot open the projection database {db}"))
}

/// Runs `concord projection ...`.
///
/// # Errors
/// The store's, the database's, or an unknown projection.
pub(crate) async fn run(ctx: &mut Context, args: ProjectionArgs) -> anyhow::Result<Exit> {
    if let StoreUrl::Http(url) = &ctx.store_url {
        let client = ctx.store_url.connect_http(url).await?;
        return on_server(ctx, &client, args.action).await;
    }
    let host = open(ctx, args.db).await?;
    ctx.out.flush()?;
    let mut stdout = std::io::stdout().lock();
    let json = ctx.out.is_json();
    let exit = match args.action {
        ProjectionAction::List => {
            let all = host.list().await?;
            if json {
                for s in &all {
                    writeln!(stdout, "{}", serde_json::to_string(s)?)?;
                }
            } else {
                status_table(&mut stdout, &all.iter().map(Line::of).collect::<Vec<_>>())?;
            }
            Exit::Success
        }
        ProjectionAction::Status { name } => {
            let status = host.status(&name).await?;
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&status)?)?;
            } else {
                status_table(&mut stdout, &[Line::of(&status)])?;
                if let Some(failure) = &status.failure {
                    writeln!(stdout, "\nfailed: {failure}")?;
                }
                for skipped in &status.skipped_events {
                    writeln!(stdout, "{skipped}")?;
                }
                if let Some(error) = &status.last_error {
                    writeln!(stdout, "\nretrying after: {error}")?;
                }
            }
            if status.failure.is_some() {
                Exit::Failure
            } else {
                Exit::Success
            }
        }
        ProjectionAction::Rebuild { name } => {
            let bar = Bar::new(&format!("rebuilding {name}"));
            let report = host.rebuild(&name, |p, target| bar.show(p, target)).await;
            bar.finish();
            let report = report?;
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            } else {
                writeln!(
                    stdout,
                    "rebuilt {}: {} events applied in {} ms ({:.0} events/s), checkpoint {}",
                    report.name,
                    report.events_applied,
                    report.elapsed_ms,
                    report.events_per_second,
                    report.checkpoint
                )?;
            }
            Exit::Success
        }
    };
    host.shutdown().await;
    Ok(exit)
}

/// Runs `concord query NAME KEY`: catches the projection up, then prints the row.
///
/// # Errors
/// The store's, the database's, an unknown projection or key, a projection behind
/// `--min-position` after `--wait-ms`, or a failed projection.
pub(crate) async fn query(ctx: &mut Context, args: QueryArgs) -> anyhow::Result<Exit> {
    if let StoreUrl::Http(url) = &ctx.store_url {
        let client = ctx.store_url.connect_http(url).await?;
        // As locally: the answer reflects every event appended before the command, unless
        // --min-position says otherwise.
        let min_position = match args.min_position {
            Some(p) => Position(p),
            None => concord_core::EventStore::head(&client).await?,
        };
        let row = client
            .projection_row(&args.name, &args.key, Some(min_position), args.wait_ms)
            .await?;
        ctx.out.flush()?;
        let mut stdout = std::io::stdout().lock();
        if ctx.out.is_json() {
            writeln!(stdout, "{}", serde_json::to_string(&row)?)?;
        } else {
            writeln!(stdout, "{}", serde_json::to_string_pretty(&row.row)?)?;
        }
        return Ok(Exit::Success);
    }
    let host = open(ctx, args.db).await?;
    ctx.out.flush()?;
    let bar = Bar::new(&format!("catching up {}", args.name));
    let caught_up = host
        .catch_up(&args.name, |p, target| bar.show(p, target))
        .await;
    bar.finish();
    caught_up?;
    let row = host
        .get_row(
            &args.name,
            &args.key,
            args.min_position.map(Position),
            Duration::from_millis(args.wait_ms),
        )
        .await;
    host.shutdown().await;
    let row = row?;
    let mut stdout = std::io::stdout().lock();
    if ctx.out.is_json() {
        writeln!(stdout, "{}", serde_json::to_string(&row)?)?;
    } else {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&row.row)?)?;
    }
    Ok(Exit::Success)
}

/// One line of the status table, from a local status or a server's.
struct Line([String; 6]);

impl Line {
    fn of(s: &ProjectionStatus) -> Line {
        let status = serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Line([
            s.name.clone(),
            status,
            s.checkpoint.to_string(),
            s.head.to_string(),
            s.lag.to_string(),
            s.skipped.to_string(),
        ])
    }

    fn of_server(s: &ProjectionInfo) -> Line {
        Line([
            s.name.clone(),
            s.status.clone(),
            s.checkpoint.to_string(),
            s.head.to_string(),
            s.lag.to_string(),
            s.skipped.to_string(),
        ])
    }
}

fn status_table(out: &mut impl Write, lines: &[Line]) -> std::io::Result<()> {
    let header = ["NAME", "STATUS", "CHECKPOINT", "HEAD", "LAG", "SKIPPED"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for Line(row) in lines {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(lines.iter().map(|l| &l.0)) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

/// `concord projection …` against a server: its statuses, its rebuild.
async fn on_server(
    ctx: &mut Context,
    client: &ConcordClient,
    action: ProjectionAction,
) -> anyhow::Result<Exit> {
    ctx.out.flush()?;
    let json = ctx.out.is_json();
    let mut stdout = std::io::stdout().lock();
    let print =
        |stdout: &mut std::io::StdoutLock<'_>, all: &[ProjectionInfo]| -> anyhow::Result<()> {
            if json {
                for s in all {
                    writeln!(stdout, "{}", serde_json::to_string(s)?)?;
                }
            } else {
                status_table(stdout, &all.iter().map(Line::of_server).collect::<Vec<_>>())?;
            }
            Ok(())
        };
    match action {
        ProjectionAction::List => {
            let all = client.projections().await?.projections;
            print(&mut stdout, &all)?;
            Ok(Exit::Success)
        }
        ProjectionAction::Status { name } => {
            let status = client.projection(&name).await?;
            print(&mut stdout, std::slice::from_ref(&status))?;
            if !json {
                if let Some(f) = &status.failure {
                    writeln!(
                        stdout,
                        "\nfailed at position {} ({} {} version {}): {}",
                        f.position, f.event_type, f.stream, f.version, f.error
                    )?;
                }
                for s in &status.skipped_events {
                    writeln!(
                        stdout,
                        "skipped position {} ({} {} version {}): {}",
                        s.position, s.event_type, s.stream, s.version, s.error
                    )?;
                }
            }
            Ok(if status.failure.is_some() {
                Exit::Failure
            } else {
                Exit::Success
            })
        }
        ProjectionAction::Rebuild { name } => {
            let started = std::time::Instant::now();
            let first = client.rebuild_projection(&name).await?;
            let target = first.head;
            let bar = Bar::new(&format!("rebuilding {name} on the server"));
            // The server rebuilds in the background; its status says how far it got.
            let status = loop {
                let status = client.projection(&name).await?;
                bar.show_position(status.checkpoint, target);
                if status.checkpoint >= target || status.status == "failed" {
                    break status;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            bar.finish();
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&status)?)?;
            } else {
                writeln!(
                    stdout,
                    "rebuilt {name} on the server: checkpoint {} in {} ms, {} event(s) skipped",
                    status.checkpoint,
                    started.elapsed().as_millis(),
                    status.skipped
                )?;
            }
            Ok(Exit::Success)
        }
    }
}

/// A progress bar on stderr, only when stderr is a terminal.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(label: &str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {wide_bar} {pos}/{len} positions {per_sec}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(label.to_owned());
        Bar(Some(bar))
    }

    fn show(&self, progress: &Progress, target: Position) {
        self.show_position(progress.checkpoint, target);
    }

    fn show_position(&self, checkpoint: Position, target: Position) {
        if let Some(bar) = &self.0 {
            bar.set_length(target.get());
            bar.set_position(checkpoint.get().min(target.get()));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
