//! `concord append`: one event from flags, or several from NDJSON on stdin, appended
//! atomically under an expected version.
//!
//! The whole request is built and checked before the store is opened, so invalid input
//! exits 2 having written nothing (and created no data directory). A conflict is an answer,
//! not a failure: its concurrent events are printed and the exit code is 3 (a partial
//! duplicate likewise prints the ids already stored, exit code 4).

use std::io::{IsTerminal, Read};

use anyhow::Context as _;
use concord_core::{
    AppendRequest, ContentType, ExpectedVersion, InvalidInput, Json, Limits, NewEvent, Payload,
    StoreError,
};

use crate::Context;
use crate::exit::Exit;
use crate::opt::AppendArgs;

pub(crate) async fn run(ctx: &mut Context, args: AppendArgs) -> anyhow::Result<Exit> {
    let events = match args.event_type {
        Some(event_type) => {
            let bytes = match (args.data, &args.data_file) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(path)) => std::fs::read(path)
                    .with_context(|| format!("cannot read --data-file {}", path.display()))?,
                (None, None) => {
                    return Err(
                        InvalidInput::new("data", "--type needs --data or --data-file").into(),
                    );
                }
            };
            let content_type = args.content_type.unwrap_or_else(ContentType::json);
            let event = NewEvent {
                id: args.id.unwrap_or_default(),
                event_type,
                data: Payload::new(content_type, bytes)?,
                metadata: args.metadata.unwrap_or_else(Json::empty_object),
                tags: args.tags,
            };
            vec![event]
        }
        None => read_stdin_events()?,
    };
    let request = AppendRequest {
        stream: args.stream,
        expected: args.expect,
        events,
        rebase_unless: args
            .rebase_unless
            .map(|types| types.into_iter().flatten().collect()),
    };
    Limits::default().check_append(&request)?;
    let stream = request.stream.clone();
    let expected = request.expected;
    let rebase_requested = request.rebase_unless.is_some();

    let store = ctx.open_store().await?;
    match store.append(request).await {
        Ok(outcome) => {
            ctx.out.outcome(&outcome)?;
            Ok(Exit::Success)
        }
        Err(StoreError::Conflict(conflict)) => {
            eprintln!("error: {conflict}");
            ctx.out.conflict(&conflict)?;
            ctx.out.flush()?;
            if !ctx.out.is_json() {
                let retry = match (expected, rebase_requested) {
                    (_, true) => {
                        "; the rebase was refused because a concurrent event has a type in --rebase-unless"
                    }
                    (ExpectedVersion::Exact(_), false) => {
                        ", or let the store rebase with --rebase-unless TYPES"
                    }
                    _ => "",
                };
                eprintln!(
                    "hint: decide again on the concurrent events above and append with --expect {}{retry}",
                    conflict.actual
                );
            }
            Ok(Exit::Conflict)
        }
        Err(StoreError::PartialDuplicate(partial)) => {
            eprintln!("error: {}", StoreError::PartialDuplicate(partial.clone()));
            ctx.out.partial_duplicate(&partial)?;
            ctx.out.flush()?;
            if !ctx.out.is_json() {
                let ids: Vec<String> = partial
                    .existing_ids
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                eprintln!(
                    "hint: already stored: {}; re-send exactly the original append, or give the new events new ids",
                    ids.join(", ")
                );
            }
            Ok(Exit::PartialDuplicate)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot append to {stream}"))),
    }
}

/// Reads the NDJSON events piped on stdin; blank lines are skipped.
fn read_stdin_events() -> anyhow::Result<Vec<NewEvent>> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(InvalidInput::new(
            "events",
            "no event given: pass --type and --data (or --data-file), or pipe events on stdin as one JSON object per line",
        )
        .into());
    }
    let mut text = String::new();
    stdin
        .read_to_string(&mut text)
        .context("cannot read events from stdin")?;
    parse_ndjson(&text).map_err(Into::into)
}

fn parse_ndjson(text: &str) -> Result<Vec<NewEvent>, InvalidInput> {
    let events = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            // The API's event object: unknown members refused, bytes as `data_base64`.
            let event: NewEvent = serde_json::from_str(line).map_err(|e| {
                InvalidInput::new(
                    "events",
                    format!("line {} of stdin is not an event: {e}", i + 1),
                )
            })?;
            if !event.metadata.is_object() {
                return Err(InvalidInput::new(
                    "metadata",
                    format!("line {}: metadata must be a JSON object", i + 1),
                ));
            }
            Ok(event)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if events.is_empty() {
        return Err(InvalidInput::new(
            "events",
            "stdin held no events: pass --type and --data, or one JSON object per line on stdin",
        ));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_core::EventId;

    #[test]
    fn ndjson_lines_carry_bytes_as_base64() {
        let events = parse_ndjson(
            "{\"type\":\"Uploaded\",\"content_type\":\"image/png\",\"data_base64\":\"iVBO\"}",
        )
        .unwrap();
        assert_eq!(events[0].data.content_type(), "image/png");
        assert_eq!(events[0].data.as_bytes(), &[0x89, 0x50, 0x4e]);
        assert!(parse_ndjson("{\"type\":\"A\",\"data\":1,\"tag\":[\"x\"]}").is_err());
    }

    #[test]
    fn ndjson_lines_become_events_in_order() {
        let id = EventId::new();
        let text = format!(
            "{{\"type\":\"Deposited\",\"data\":{{\"amount\":1}}}}\n\n{{\"type\":\"Withdrawn\",\"data\":{{\"amount\":2}},\"id\":\"{id}\",\"tags\":[\"account:1\"],\"metadata\":{{\"actor\":\"a\"}}}}\n"
        );
        let events = parse_ndjson(&text).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type.as_str(), "Deposited");
        assert_eq!(events[0].metadata.as_str(), "{}");
        assert_eq!(events[1].id, id);
        assert_eq!(events[1].tags[0].as_str(), "account:1");
    }

    #[test]
    fn a_bad_line_is_named_and_refused() {
        let err = parse_ndjson("{\"type\":\"A\",\"data\":1}\n{\"type\":\"B\"}\n").unwrap_err();
        assert!(err.message.starts_with("line 2 of stdin"), "{err}");
        assert!(parse_ndjson("{\"type\":\"A\",\"data\":1,\"expected_version\":3}").is_err());
        assert!(parse_ndjson("{\"type\":\"A\",\"data\":1,\"metadata\":[]}").is_err());
        assert!(parse_ndjson("\n  \n").is_err());
    }
}
