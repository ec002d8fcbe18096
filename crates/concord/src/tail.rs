//! `concord tail`: a subscription printed event by event until Ctrl-C (or SIGTERM).
//!
//! It uses the core's catch-up-then-live subscription, so what it prints has no gap and no
//! duplicate however the stored and live parts meet. Each event is flushed as it arrives,
//! so a pipe reader sees it at once. Being interrupted is the normal way to stop: exit 0.

use anyhow::Context as _;
use concord_core::{Filter, InvalidInput, Position, Version};
use futures::StreamExt;

use crate::Context;
use crate::exit::Exit;
use crate::opt::{Start, TailArgs};
use crate::output::Columns;

pub(crate) async fn run(ctx: &mut Context, args: TailArgs) -> anyhow::Result<Exit> {
    let filter = Filter::from(args.filter);
    if args.stream.is_some() && !filter.is_all() {
        return Err(InvalidInput::new(
            "filter",
            "--category, --types and --tags apply to `tail --all` only",
        )
        .into());
    }
    let store = ctx.open_store_to_read().await?;
    let (mut subscription, columns) = match args.stream {
        Some(stream) => {
            let from = match args.from {
                Start::At(v) => Version(v),
                Start::End => store
                    .stream_version(&stream)
                    .await
                    .context("cannot read the stream's version")?
                    .next(),
            };
            (
                store.clone().subscribe_stream(stream, from),
                Columns::Stream,
            )
        }
        None => {
            let from = match args.from {
                Start::At(p) => Position(p),
                Start::End => store
                    .head()
                    .await
                    .context("cannot read the store's head")?
                    .next(),
            };
            (store.clone().subscribe_all(from, filter), Columns::All)
        }
    };
    // Listen before printing anything, so a Ctrl-C right after the first event is ours.
    let mut interrupt = Interrupt::listen().context("cannot listen for Ctrl-C")?;
    ctx.out.tail_header(columns)?;
    ctx.out.flush()?;
    loop {
        tokio::select! {
            biased;
            () = interrupt.recv() => return Ok(Exit::Success),
            next = subscription.next() => match next {
                // The store's own streams (consumer groups' state) are not the users' log.
                Some(Ok(event)) if event.stream.is_system() => {}
                Some(Ok(event)) => ctx.out.tail_event(&event, columns)?,
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("the subscription failed")),
                None => return Ok(Exit::Success),
            },
        }
    }
}

/// Ctrl-C (SIGINT), or SIGTERM where there is one, registered when created: a signal that
/// arrives before anyone awaits it is still seen, instead of killing the process.
#[derive(Debug)]
struct Interrupt {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    #[cfg(unix)]
    fn listen() -> std::io::Result<Interrupt> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Interrupt {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn listen() -> std::io::Result<Interrupt> {
        Ok(Interrupt {})
    }

    /// Resolves on the next signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        {
            // Without a handler there is nothing better to do than wait forever; Ctrl-C
            // then ends the process the default way.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
