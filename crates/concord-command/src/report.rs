//! Plain-text reports of what happened: an event log as MISSION.md's table (actor, event
//! type, data, version) and one line per command saying what its policy did.
//!
//! The demos print these; they are here, not in each example, so that all three scenarios
//! speak the same words (version, conflict, rebased over, re-decided, merged).

use std::fmt::{self, Write as _};

use concord_core::RecordedEvent;

use crate::outcome::{CommandError, Committed, Resolution};

/// The `metadata.actor` of an event, or `-`.
pub fn actor_of(event: &RecordedEvent) -> String {
    event
        .metadata
        .to_value()
        .ok()
        .and_then(|m| {
            m.get("actor")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// An event as `Type {data} (v2 by A)`, for one-line reports.
pub fn short(event: &RecordedEvent) -> String {
    format!(
        "{} {} (version {} by {})",
        event.event_type,
        event.data,
        event.version,
        actor_of(event)
    )
}

/// Renders `events` as a Markdown table: actor, event type, data, version.
pub fn event_table(events: &[RecordedEvent]) -> String {
    let rows: Vec<[String; 4]> = events
        .iter()
        .map(|e| {
            [
                actor_of(e),
                e.event_type.to_string(),
                e.data.to_string(),
                e.version.to_string(),
            ]
        })
        .collect();
    let header = ["actor", "event type", "data", "version"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String; 4]| {
        out.push('|');
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(out, " {cell:<w$} |");
        }
        out.push('\n');
    };
    line(&header);
    line(&widths.map(|w| "-".repeat(w)));
    for row in &rows {
        line(row);
    }
    out
}

/// What the policy did for one command, in one sentence.
pub fn describe<E, R: fmt::Display>(result: &Result<Committed<E>, CommandError<R>>) -> String {
    match result {
        Ok(c) => describe_committed(c),
        Err(CommandError::Rejected {
            reason,
            version,
            retries,
            over,
        }) => {
            let mut s = format!("rejected by the domain at version {version}: {reason}");
            if *retries > 0 {
                let _ = write!(
                    s,
                    " (after re-deciding {retries} time(s) over {})",
                    list(over)
                );
            }
            s
        }
        Err(CommandError::Conflict { conflict, retries }) => {
            let mut s = format!(
                "conflict: expected version {}, but the stream is at version {}; missed {}",
                conflict.expected,
                conflict.actual,
                list(&conflict.concurrent_events)
            );
            if *retries > 0 {
                let _ = write!(s, " (gave up after {retries} retries)");
            }
            s
        }
        Err(other) => format!("failed: {other}"),
    }
}

fn describe_committed<E>(c: &Committed<E>) -> String {
    let Some(a) = &c.appended else {
        return format!("nothing to write (decided on version {})", c.based_on);
    };
    let at = if a.first_version == a.last_version {
        format!(
            "version {} (position {})",
            a.first_version, a.first_position
        )
    } else {
        format!(
            "versions {}..{} (positions {}..{})",
            a.first_version, a.last_version, a.first_position, a.last_position
        )
    };
    let how = match &c.resolution {
        Resolution::AsDecided => format!("as decided on version {}", c.based_on),
        Resolution::Rebased {
            expected_version,
            over,
        } => {
            format!(
                "rebased by the store from version {expected_version} over {}",
                list(over)
            )
        }
        Resolution::Retried { retries, over } => {
            format!(
                "re-decided {retries} time(s) on fresh state, over {}",
                list(over)
            )
        }
        Resolution::Merged { rounds, over } => {
            format!("merged ({rounds} round(s)) over {}", list(over))
        }
        Resolution::Duplicate => "already there (duplicate), nothing written again".to_owned(),
    };
    format!("committed at {at}, {how}")
}

fn list(events: &[RecordedEvent]) -> String {
    if events.is_empty() {
        return "no events".to_owned();
    }
    let shown: Vec<String> = events.iter().take(5).map(short).collect();
    let mut s = shown.join(", ");
    if events.len() > 5 {
        let _ = write!(s, " and {} more", events.len() - 5);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_core::{Json, doc};

    #[test]
    fn table_has_mission_columns_and_aligned_rows() {
        let mut e = doc::recorded("account-1", 2, 2, "Deposited", &[]);
        e.data = Json::from_value(&serde_json::json!({"amount": 2000})).into();
        e.metadata = Json::from_value(&serde_json::json!({"actor": "A"}));
        let table = event_table(&[e]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| actor | event type | data            | version |"
        );
        assert_eq!(
            lines[2],
            "| A     | Deposited  | {\"amount\":2000} | 2       |"
        );
    }
}

/// Why a scenario demo stopped: the one error type of the three examples' `demo`
/// functions, so the binary handles them alike.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Writing the report failed.
    #[error("could not write the demo's report: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] concord_core::StoreError),
    /// A command failed in a way the demo does not expect (not a rejection or conflict).
    #[error("a demo command failed: {0}")]
    Command(String),
    /// A spawned task failed.
    #[error("a demo task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl<R: fmt::Display + fmt::Debug> From<CommandError<R>> for DemoError {
    fn from(e: CommandError<R>) -> Self {
        DemoError::Command(e.to_string())
    }
}

/// Every event of `stream`, in order, however long it is.
///
/// # Errors
/// Store failures.
pub async fn read_log(
    store: &dyn concord_core::EventStore,
    stream: &concord_core::StreamName,
) -> Result<Vec<RecordedEvent>, concord_core::StoreError> {
    let mut events = Vec::new();
    loop {
        let page = store
            .read_stream(
                stream,
                concord_core::Version(events.len() as u64 + 1),
                concord_core::Direction::Forward,
                1000,
            )
            .await?;
        if page.is_empty() {
            return Ok(events);
        }
        events.extend(page);
    }
}
