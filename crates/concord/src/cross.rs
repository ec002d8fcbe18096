//! `concord append-multi` and `concord query-events`: appends across streams or under a
//! query condition (the `POST /append` body on stdin), and the query read a condition is
//! based on (`POST /query`).
//!
//! Input is checked before the store is opened, as for `concord append`; a conflict or a
//! failed condition is an answer (printed, exit code 3), not a failure.

use std::io::{IsTerminal, Read};

use anyhow::Context as _;
use clap::Args;
use concord_api::{MultiAppendBody, MultiAppendResult, QueryResult};
use concord_core::{
    EventType, InvalidInput, Limits, MultiAppendRequest, Position, Query, QueryItem, StoreError,
    Tag,
};

use crate::Context;
use crate::exit::Exit;
use crate::output::Columns;

/// `concord append-multi`.
#[derive(Debug, Args)]
#[command(after_help = "\
Reads the body of POST /append (docs/http-api.md) on stdin, e.g. a transfer:
  {\"parts\": [{\"stream\": \"account-1\", \"expected_version\": 3, \"events\": [{\"type\": \"Withdrawn\", \"data\": {\"amount\": 5}}]},
             {\"stream\": \"account-2\", \"expected_version\": 7, \"events\": [{\"type\": \"Deposited\", \"data\": {\"amount\": 5}}]}]}
or a registration that fails if the name was taken after position 41:
  {\"parts\": [{\"stream\": \"user-7\", \"expected_version\": \"no_stream\", \"events\": [{\"type\": \"UserRegistered\", \"data\": {\"username\": \"alice\"}, \"tags\": [\"username:alice\"]}]}],
   \"condition\": {\"fail_if_events_match\": {\"items\": [{\"types\": [\"UserRegistered\"], \"tags\": [\"username:alice\"]}]}, \"after\": 41}}
All parts are written atomically with consecutive positions, or none is. Exit code 3 on a
version conflict (every stale part is listed) or a failed condition (the matching events are).")]
pub struct AppendMultiArgs {}

/// `concord query-events`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints the matching events and the head: use the head as the `after` of a condition
(concord append-multi) so the append fails if a matching event arrives meanwhile.
--types and --tags make a one-item query (any of the types, all of the tags); --query takes
the API's query object, e.g. '{\"items\": [{\"tags\": [\"account:1\"]}, {\"tags\": [\"account:2\"]}]}'.")]
pub struct QueryEventsArgs {
    /// Any of these event types (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "query")]
    pub types: Vec<EventType>,
    /// All of these tags (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "query")]
    pub tags: Vec<Tag>,
    /// The whole query as JSON (`{"items": [...]}`; `{"items": []}` matches every event).
    #[arg(long, value_name = "JSON")]
    pub query: Option<String>,
    /// Only events after this position.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

pub(crate) async fn append_multi(
    ctx: &mut Context,
    _args: AppendMultiArgs,
) -> anyhow::Result<Exit> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(InvalidInput::new(
            "body",
            "pipe the POST /append body on stdin (see concord append-multi --help)",
        )
        .into());
    }
    let mut text = String::new();
    stdin
        .read_to_string(&mut text)
        .context("cannot read the append from stdin")?;
    let body: MultiAppendBody = serde_json::from_str(&text)
        .map_err(|e| InvalidInput::new("body", format!("stdin is not a POST /append body: {e}")))?;
    let request = MultiAppendRequest::from(body);
    Limits::default().check_multi_append(&request)?;
    let store = ctx.open_store().await?;
    match store.append_multi(request).await {
        Ok(outcome) => {
            if ctx.out.is_json() {
                println!(
                    "{}",
                    serde_json::to_string(&MultiAppendResult::from(outcome))?
                );
            } else {
                for part in &outcome.parts {
                    ctx.out.outcome(part)?;
                }
                if outcome.duplicate {
                    println!("duplicate: every part was appended before; nothing was written");
                } else {
                    println!(
                        "positions {}..{} written atomically",
                        outcome.first_position, outcome.last_position
                    );
                }
            }
            Ok(Exit::Success)
        }
        Err(StoreError::Conflicts(conflicts)) => {
            for c in &conflicts {
                eprintln!("error: {c}");
                ctx.out.conflict(c)?;
            }
            ctx.out.flush()?;
            Ok(Exit::Conflict)
        }
        Err(StoreError::ConditionFailed(failed)) => {
            eprintln!("error: {}", StoreError::ConditionFailed(failed.clone()));
            ctx.out
                .events(&failed.matching_events, Columns::All, true)?;
            ctx.out.flush()?;
            if !ctx.out.is_json() {
                eprintln!(
                    "hint: decide again on the events above (concord query-events), then append with the new head as `after`"
                );
            }
            Ok(Exit::Conflict)
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot append")),
    }
}

pub(crate) async fn query_events(ctx: &mut Context, args: QueryEventsArgs) -> anyhow::Result<Exit> {
    let query = match &args.query {
        Some(json) => serde_json::from_str::<Query>(json)
            .map_err(|e| InvalidInput::new("query", format!("--query is not a query: {e}")))?,
        None if args.types.is_empty() && args.tags.is_empty() => Query::everything(),
        None => Query {
            items: vec![QueryItem {
                types: args.types.clone(),
                tags: args.tags.clone(),
            }],
        },
    };
    query.validate()?;
    if args.limit == 0 {
        return Err(InvalidInput::new("limit", "--limit must be at least 1").into());
    }
    let store = ctx.open_store_to_read().await?;
    let page = store
        .query(&query, Position(args.after), args.limit)
        .await
        .context("cannot read the query")?;
    if ctx.out.is_json() {
        println!("{}", serde_json::to_string(&QueryResult::from(page))?);
    } else {
        ctx.out.events(&page.events, Columns::All, true)?;
        ctx.out.flush()?;
        match page.next {
            Some(next) => println!("head: {} (more: --after {next})", page.head),
            None => println!("head: {}", page.head),
        }
    }
    Ok(Exit::Success)
}
