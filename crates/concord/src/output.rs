//! What the CLI prints: aligned tables for people, one JSON object per line for programs.
//!
//! JSON output uses the HTTP API's shapes (the event object is `RecordedEvent`'s serde
//! form; an append outcome is the 201 body; a conflict is the 409 problem's members), so a
//! script written against one works against the other. Tables are the same whether or not
//! stdout is a terminal, except that on a terminal long data is cut to fit the width.

use std::io::{self, BufWriter, IsTerminal, Stdout, Write};

use concord_core::{
    AppendOutcome, Appended, Conflict, PartialDuplicate, Payload, RecordedEvent, StreamInfo,
};
use serde_json::json;

/// Where output goes and in which form.
#[derive(Debug)]
pub struct Output {
    out: BufWriter<Stdout>,
    json: bool,
    /// The terminal's width when stdout is one; `None` means "do not truncate".
    width: Option<usize>,
}

/// Which columns an event table has.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Columns {
    /// One stream: the stream name would repeat on every row.
    Stream,
    /// The global log: events of many streams, so the stream is a column.
    All,
}

/// The time column's width (`2026-11-24T12:00:00.123Z`).
const TIME_WIDTH: usize = 24;
/// Data is never cut shorter than this, however narrow the terminal.
const DATA_WIDTH_MIN: usize = 16;
/// Off a terminal, the data column is padded to at most this many characters.
const DATA_PAD_MAX: usize = 60;
/// Column widths `tail` uses, since it cannot see the rows before printing them.
const TAIL_WIDTHS: [usize; 4] = [24, 7, 20, 8];

impl Output {
    /// Output to stdout, as JSON lines when `json`.
    pub fn new(json: bool) -> Self {
        let stdout = io::stdout();
        let width = stdout.is_terminal().then(terminal_width);
        Output {
            out: BufWriter::new(stdout),
            json,
            width,
        }
    }

    /// Whether JSON lines are being printed.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Writes out what is buffered; `tail` calls it after every event.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn json_line(&mut self, value: &impl serde::Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    /// A page of events: JSON lines, or a table whose columns fit these rows.
    pub fn events(
        &mut self,
        events: &[RecordedEvent],
        columns: Columns,
        header: bool,
    ) -> io::Result<()> {
        if self.json {
            return events.iter().try_for_each(|e| self.json_line(e));
        }
        let rows: Vec<Vec<String>> = events.iter().map(|e| event_row(e, columns)).collect();
        let mut widths = header_row(columns)
            .iter()
            .map(|h| h.chars().count())
            .collect::<Vec<_>>();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        self.fit_data_column(&mut widths, columns);
        if header {
            self.table_row(&header_row(columns), &widths)?;
        }
        rows.iter().try_for_each(|row| self.table_row(row, &widths))
    }

    /// A small table whose first row is its header, every column as wide as its widest cell.
    pub fn table(&mut self, rows: &[Vec<String>]) -> io::Result<()> {
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                rows.iter()
                    .filter_map(|row| row.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        rows.iter().try_for_each(|row| self.table_row(row, &widths))
    }

    /// The header of a table that `tail` fills one event at a time.
    pub fn tail_header(&mut self, columns: Columns) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        let widths = self.tail_widths(columns);
        self.table_row(&header_row(columns), &widths)
    }

    /// One event as `tail` prints it, flushed at once.
    pub fn tail_event(&mut self, event: &RecordedEvent, columns: Columns) -> io::Result<()> {
        if self.json {
            self.json_line(event)?;
        } else {
            let widths = self.tail_widths(columns);
            self.table_row(&event_row(event, columns), &widths)?;
        }
        self.flush()
    }

    fn tail_widths(&self, columns: Columns) -> Vec<usize> {
        let [stream, version, event_type, position] = TAIL_WIDTHS;
        let mut widths = match columns {
            Columns::Stream => vec![version, event_type, 0, position, TIME_WIDTH],
            Columns::All => vec![stream, version, event_type, 0, position, TIME_WIDTH],
        };
        // Unknown rows: give data what the terminal leaves, or a fixed width off a terminal.
        if let Some(w) = data_index(columns).and_then(|i| widths.get_mut(i)) {
            *w = 40;
        }
        self.fit_data_column(&mut widths, columns);
        widths
    }

    /// On a terminal, narrows the data column so the row fits the width. Elsewhere cells
    /// are kept whole, but the column is padded to at most [`DATA_PAD_MAX`], so one long
    /// event overflows its own row instead of pushing every row's later columns far right.
    fn fit_data_column(&self, widths: &mut [usize], columns: Columns) {
        let Some(index) = data_index(columns) else {
            return;
        };
        let Some(width) = self.width else {
            if let Some(w) = widths.get_mut(index) {
                *w = (*w).min(DATA_PAD_MAX);
            }
            return;
        };
        let others: usize = widths
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, w)| w + 2)
            .sum();
        if let Some(w) = widths.get_mut(index) {
            *w = (*w).min(width.saturating_sub(others).max(DATA_WIDTH_MIN));
        }
    }

    /// One row, cells padded to `widths` (the last cell unpadded); on a terminal, cells are
    /// also cut to their width, elsewhere they are kept whole.
    fn table_row(&mut self, cells: &[impl AsRef<str>], widths: &[usize]) -> io::Result<()> {
        let mut line = String::new();
        let count = cells.len();
        for (i, (cell, &width)) in cells.iter().zip(widths).enumerate() {
            let cell = match self.width {
                Some(_) => truncate(cell.as_ref(), width.max(1)),
                None => cell.as_ref().to_owned(),
            };
            line.push_str(&cell);
            if i + 1 < count {
                let pad = width.saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(self.out, "{}", line.trim_end())
    }

    /// The outcome of an append, and for a rebase the events it was rebased over.
    pub fn outcome(&mut self, outcome: &AppendOutcome) -> io::Result<()> {
        if self.json {
            return self.json_line(&outcome_json(outcome));
        }
        let a = outcome.appended();
        match outcome {
            AppendOutcome::Appended(_) => {
                writeln!(self.out, "appended to {}: {}", a.stream, placement(a))
            }
            AppendOutcome::Duplicate(_) => writeln!(
                self.out,
                "duplicate: {} already holds these events ({}); nothing was written",
                a.stream,
                placement(a)
            ),
            AppendOutcome::Rebased {
                expected_version,
                concurrent_events,
                ..
            } => {
                writeln!(
                    self.out,
                    "appended to {}: {}, rebased over {} concurrent event{} after expected version {}:",
                    a.stream,
                    placement(a),
                    concurrent_events.len(),
                    plural(concurrent_events.len()),
                    expected_version
                )?;
                self.events(concurrent_events, Columns::Stream, true)
            }
        }
    }

    /// A version conflict: the API's 409 members as JSON, or the concurrent events as a
    /// table (the one-line summary goes to stderr with the other errors).
    pub fn conflict(&mut self, conflict: &Conflict) -> io::Result<()> {
        if self.json {
            return self.json_line(&json!({
                "type": "urn:concord:version-conflict",
                "title": "version conflict",
                "stream": conflict.stream,
                "expected_version": conflict.expected,
                "actual_version": conflict.actual,
                "concurrent_events": conflict.concurrent_events,
                "truncated": conflict.truncated,
            }));
        }
        self.events(&conflict.concurrent_events, Columns::Stream, true)?;
        if conflict.truncated {
            writeln!(
                self.out,
                "(more concurrent events exist; read the stream to see them all)"
            )?;
        }
        Ok(())
    }

    /// A partial duplicate: the API's 409 members as JSON (the summary and the ids go to
    /// stderr for people).
    pub fn partial_duplicate(&mut self, partial: &PartialDuplicate) -> io::Result<()> {
        if !self.json {
            return Ok(());
        }
        self.json_line(&json!({
            "type": "urn:concord:partial-duplicate",
            "title": "partial duplicate",
            "stream": partial.stream,
            "existing_ids": partial.existing_ids,
        }))
    }

    /// A page of the stream listing.
    pub fn streams(&mut self, streams: &[StreamInfo], header: bool) -> io::Result<()> {
        if self.json {
            return streams.iter().try_for_each(|s| self.json_line(s));
        }
        let headers = ["STREAM", "VERSION", "LAST POSITION"];
        let rows: Vec<[String; 3]> = streams
            .iter()
            .map(|s| {
                [
                    s.stream.to_string(),
                    s.version.to_string(),
                    s.last_position.to_string(),
                ]
            })
            .collect();
        let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        if header {
            self.table_row(&headers, &widths)?;
        }
        rows.iter().try_for_each(|row| self.table_row(row, &widths))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `version 2, position 17` or `versions 2-4, positions 17-19`.
fn placement(a: &Appended) -> String {
    if a.first_version == a.last_version {
        format!("version {}, position {}", a.first_version, a.first_position)
    } else {
        format!(
            "versions {}-{}, positions {}-{}",
            a.first_version, a.last_version, a.first_position, a.last_position
        )
    }
}

/// API.md's append body: 201's members, plus `duplicate` (the 200 answer's flag).
pub fn outcome_json(outcome: &AppendOutcome) -> serde_json::Value {
    let a = outcome.appended();
    let rebased = match outcome {
        AppendOutcome::Rebased {
            expected_version,
            concurrent_events,
            ..
        } => {
            json!({"expected_version": expected_version, "concurrent_events": concurrent_events})
        }
        AppendOutcome::Appended(_) | AppendOutcome::Duplicate(_) => serde_json::Value::Null,
    };
    json!({
        "stream": a.stream,
        "first_version": a.first_version,
        "last_version": a.last_version,
        "first_position": a.first_position,
        "last_position": a.last_position,
        "rebased": rebased,
        "duplicate": outcome.is_duplicate(),
    })
}

fn header_row(columns: Columns) -> Vec<&'static str> {
    match columns {
        Columns::Stream => vec!["VERSION", "TYPE", "DATA", "POSITION", "TIME"],
        Columns::All => vec!["STREAM", "VERSION", "TYPE", "DATA", "POSITION", "TIME"],
    }
}

fn data_index(columns: Columns) -> Option<usize> {
    header_row(columns).iter().position(|h| *h == "DATA")
}

fn event_row(e: &RecordedEvent, columns: Columns) -> Vec<String> {
    let mut row = vec![
        e.version.to_string(),
        e.event_type.to_string(),
        data_cell(&e.data),
        e.position.to_string(),
        e.recorded_at.to_string(),
    ];
    if columns == Columns::All {
        row.insert(0, e.stream.to_string());
    }
    row
}

/// Bytes a table cell shows in hex before it ends in `…`.
const DATA_CELL_BYTES_MAX: usize = 64;

/// An event's data in a table cell: JSON compacted; bytes as their content type, size and
/// (the first 64 of them) in hex, e.g. `image/png, 3 bytes: 89504e`. `--json` prints the
/// API's event object instead, with the bytes in `data_base64`.
pub fn data_cell(data: &Payload) -> String {
    if let Some(json) = data.as_json() {
        return compact_json(json.as_str());
    }
    let bytes = data.as_bytes();
    let mut cell = format!("{}, {} bytes", data.content_type(), bytes.len());
    if !bytes.is_empty() {
        cell.push_str(": ");
        for b in bytes.iter().take(DATA_CELL_BYTES_MAX) {
            cell.push_str(&format!("{b:02x}"));
        }
        if bytes.len() > DATA_CELL_BYTES_MAX {
            cell.push('…');
        }
    }
    cell
}

/// The JSON text without whitespace outside strings, so an event's data stays on one row
/// and keeps the writer's key order (re-serialising through `Value` would sort the keys).
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !c.is_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// `text` cut to `width` characters, ending in `…` when cut. Control characters (which
/// only strings inside the JSON can hold, escaped) never reach here unescaped.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The terminal's width: `COLUMNS` when set (so it can be overridden), else what the
/// terminal reports, else a common default.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .or_else(|| terminal_size::terminal_size().map(|(w, _)| usize::from(w.0)))
        .filter(|&w| w >= 40)
        .unwrap_or(120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_their_content_type_size_and_hex() {
        let p = concord_core::doc::bytes_event("T", "image/png", &[0x89, 0x50, 0x4e]).data;
        assert_eq!(data_cell(&p), "image/png, 3 bytes: 89504e");
        let empty = concord_core::doc::bytes_event("T", "a/b", &[]).data;
        assert_eq!(data_cell(&empty), "a/b, 0 bytes");
        let long = concord_core::doc::bytes_event("T", "a/b", &[0xab; 65]).data;
        assert!(data_cell(&long).ends_with("ab…"), "{}", data_cell(&long));
        let json = concord_core::doc::event("T", serde_json::json!({"a": 1})).data;
        assert_eq!(data_cell(&json), r#"{"a":1}"#);
    }

    #[test]
    fn compact_json_drops_whitespace_outside_strings_only() {
        assert_eq!(
            compact_json("{ \"a b\" : [1, 2],\n \"c\": \"x \\\" y\" }"),
            "{\"a b\":[1,2],\"c\":\"x \\\" y\"}"
        );
        assert_eq!(
            compact_json("{\"owner\":\"ann\",\"balance\":1000}"),
            "{\"owner\":\"ann\",\"balance\":1000}"
        );
    }

    #[test]
    fn long_cells_are_cut_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 10), "abcdef");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("ééééé", 3), "éé…");
    }
}
