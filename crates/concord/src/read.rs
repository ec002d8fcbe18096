//! `concord read`, `concord all` and `concord streams`: paged reads printed as they arrive.
//!
//! Each command pages through the store with the backend's read limit and prints page by
//! page, so reading a large stream needs memory for one page only, and `| head` stops it
//! early (a closed pipe ends the command successfully).

use anyhow::Context as _;
use concord_core::{Direction, Filter, Position, Version};

use crate::Context;
use crate::exit::Exit;
use crate::opt::{AllArgs, FilterArgs, ReadArgs, StreamsArgs};
use crate::output::Columns;

/// Events or streams asked for per round trip: the API's largest page.
pub(crate) const PAGE: usize = 1000;

impl From<FilterArgs> for Filter {
    fn from(args: FilterArgs) -> Self {
        Filter {
            category: args.category,
            types: args.types,
            tags: args.tags,
        }
    }
}

pub(crate) async fn stream(ctx: &mut Context, args: ReadArgs) -> anyhow::Result<Exit> {
    let store = ctx.open_store_to_read().await?;
    let stream = args.stream;
    let direction = if args.backward {
        Direction::Backward
    } else {
        Direction::Forward
    };
    let start = if args.backward {
        Version::MAX
    } else {
        Version(1)
    };
    let mut from = args.from.map_or(start, Version);
    let mut remaining = args.limit.unwrap_or(usize::MAX);
    let mut printed = 0usize;
    while remaining > 0 {
        let events = store
            .read_stream(&stream, from, direction, remaining.min(PAGE))
            .await
            .with_context(|| format!("cannot read stream {stream}"))?;
        let Some(last) = events.last() else { break };
        let next = match direction {
            Direction::Forward => Some(last.version.next()),
            Direction::Backward => last
                .version
                .get()
                .checked_sub(1)
                .filter(|&v| v > 0)
                .map(Version),
        };
        ctx.out.events(&events, Columns::Stream, printed == 0)?;
        printed += events.len();
        remaining = remaining.saturating_sub(events.len());
        match next {
            Some(next) => from = next,
            None => break,
        }
    }
    if printed == 0 && args.limit != Some(0) {
        let version = store
            .stream_version(&stream)
            .await
            .with_context(|| format!("cannot read stream {stream}"))?;
        if version == Version::NONE {
            anyhow::bail!("stream {stream} not found: it has no events");
        }
    }
    Ok(Exit::Success)
}

pub(crate) async fn all(ctx: &mut Context, args: AllArgs) -> anyhow::Result<Exit> {
    let store = ctx.open_store_to_read().await?;
    let filter = Filter::from(args.filter);
    let mut from = Position(args.from);
    let mut remaining = args.limit.unwrap_or(usize::MAX);
    let mut header = true;
    while remaining > 0 {
        let mut page = store
            .read_all(from, &filter, remaining.min(PAGE))
            .await
            .context("cannot read the global log")?;
        // The store's own streams (consumer groups' state) are not the users' log.
        page.events.retain(|e| !e.stream.is_system());
        page.events.truncate(remaining);
        if !page.events.is_empty() {
            ctx.out.events(&page.events, Columns::All, header)?;
            header = false;
        }
        remaining = remaining.saturating_sub(page.events.len());
        // A page that made no progress would loop forever; the caught-up check ends reads.
        if page.is_caught_up() || page.next_from <= from {
            break;
        }
        from = page.next_from;
    }
    Ok(Exit::Success)
}

pub(crate) async fn streams(ctx: &mut Context, args: StreamsArgs) -> anyhow::Result<Exit> {
    let store = ctx.open_store_to_read().await?;
    let mut after = args.after;
    let mut remaining = args.limit.unwrap_or(usize::MAX);
    let mut header = true;
    while remaining > 0 {
        let mut streams = store
            .list_streams(&args.prefix, after.as_ref(), remaining.min(PAGE))
            .await
            .context("cannot list streams")?;
        streams.truncate(remaining);
        let Some(last) = streams.last() else { break };
        after = Some(last.stream.clone());
        streams.retain(|s| !s.stream.is_system());
        ctx.out.streams(&streams, header)?;
        header = false;
        remaining = remaining.saturating_sub(streams.len());
    }
    Ok(Exit::Success)
}
