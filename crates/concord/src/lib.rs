//! The `concord` command line: append to, read and follow the streams of any Concord
//! backend chosen by a URL.
//!
//! [`run`] dispatches a parsed [`Cli`] to one module per subcommand group and returns the
//! documented [`Exit`] code; [`main_with`] adds the one-line error report. The binary is
//! `Cli::parse()` plus [`main_with`]. [`store_url`] is the only module that knows every
//! backend. This crate is the only one in the workspace allowed to use `anyhow`: it adds
//! context naming the file, URL or stream involved, and maps errors to exit codes in
//! [`exit`].
//!
//! It is not a library for other crates: embed `concord-core` and a backend instead.

mod append;
pub mod bench;
pub mod copy;
pub mod cross;
mod demo;
pub mod exit;
pub mod group;
pub mod lifecycle;
pub mod opt;
pub mod output;
pub mod projection;
mod read;
mod serve;
pub mod store_url;
mod tail;

use std::sync::Arc;

use concord_core::EventStore;

pub use exit::Exit;
pub use opt::{Cli, Command};
use output::Output;
use store_url::StoreUrl;

/// What every subcommand gets: where the store is (opened on demand, so that invalid input
/// is refused before a data directory is created or a server contacted) and the output.
#[derive(Debug)]
pub struct Context {
    /// The parsed `--store`.
    pub store_url: StoreUrl,
    /// Where results are printed.
    pub out: Output,
}

impl Context {
    /// Opens the store `--store` names (an embedded store's directory is created when
    /// missing: for commands that write).
    ///
    /// # Errors
    /// The backend's error, naming the path or URL.
    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn EventStore>> {
        self.store_url.open().await
    }

    /// Opens the store for a command that only reads: an embedded store that does not
    /// exist is an error, not a new empty directory.
    ///
    /// # Errors
    /// As [`Context::open_store`]; no store in the directory named.
    pub async fn open_store_to_read(&self) -> anyhow::Result<Arc<dyn EventStore>> {
        self.store_url.ensure_exists()?;
        self.store_url.open().await
    }
}

/// Runs one command line to completion.
///
/// # Errors
/// Anything that stopped the command; [`exit::report`] turns it into a message and an exit
/// code. Conflicts are not errors here: they are printed and give [`Exit::Conflict`].
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    if cli.global.json {
        let ignored = match &cli.command {
            Command::Serve(_) => Some("serve"),
            Command::Demo(_) => Some("demo"),
            Command::Completions { .. } => Some("completions"),
            Command::Copy(_) => Some("copy"),
            _ => None,
        };
        if let Some(command) = ignored {
            return Err(concord_core::InvalidInput::new(
                "json",
                format!("--json does nothing for `concord {command}`; leave it out"),
            )
            .into());
        }
    }
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "concord", &mut std::io::stdout());
        return Ok(Exit::Success);
    }
    if let Command::Copy(args) = cli.command {
        return copy::run(args).await;
    }
    let store_url: StoreUrl = cli.global.store.parse()?;
    let mut ctx = Context {
        store_url,
        out: Output::new(cli.global.json),
    };
    let exit = match cli.command {
        Command::Append(args) => append::run(&mut ctx, args).await,
        Command::AppendMulti(args) => cross::append_multi(&mut ctx, args).await,
        Command::QueryEvents(args) => cross::query_events(&mut ctx, args).await,
        Command::Read(args) => read::stream(&mut ctx, args).await,
        Command::All(args) => read::all(&mut ctx, args).await,
        Command::Streams(args) => read::streams(&mut ctx, args).await,
        Command::Tail(args) => tail::run(&mut ctx, args).await,
        Command::Demo(args) => demo::run(&mut ctx, args).await,
        Command::Serve(args) => serve::run(&mut ctx, args).await,
        Command::Bench(args) => bench::run(&mut ctx, args).await,
        Command::Projection(args) => projection::run(&mut ctx, args).await,
        Command::Query(args) => projection::query(&mut ctx, args).await,
        Command::Delete(args) => lifecycle::delete(&mut ctx, args).await,
        Command::Metadata(args) => lifecycle::metadata(&mut ctx, args).await,
        Command::Scavenge(args) => lifecycle::scavenge(&mut ctx, args).await,
        Command::Group(args) => group::run(&mut ctx, args).await,
        Command::Consume(args) => group::consume(&mut ctx, args).await,
        Command::Completions { .. } | Command::Copy(_) => Ok(Exit::Success),
    };
    // What was printed before a failure is still shown, ahead of the error line.
    let flushed = ctx.out.flush();
    let exit = exit?;
    flushed?;
    Ok(exit)
}

/// [`run`], with any error reported on stderr as one line and mapped to its exit code.
pub async fn main_with(cli: Cli) -> Exit {
    match run(cli).await {
        Ok(exit) => exit,
        Err(error) => exit::report(&error),
    }
}
