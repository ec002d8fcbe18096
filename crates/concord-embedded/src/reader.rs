//! Reads: a small pool of threads, each with its own read-only connection.
//!
//! SQLite in WAL mode lets readers run beside the writer without blocking it, each on a
//! consistent snapshot. Blocking SQLite calls stay off the async runtime: a read is a job
//! sent to a pool thread, and its answer comes back on a oneshot channel, so the store
//! works under any executor.
//!
//! `read_all` with a filter drives the scan from the most selective index it has (a tag,
//! the types, the category) and applies core's [`Filter::matches`] to what the index
//! returns, so the match rule is core's and only the candidates come from SQL.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use concord_core::{
    AllPage, Direction, Filter, Position, Query, QueryPage, RecordedEvent, StreamInfo, StreamName,
    Version,
};
use rusqlite::{Connection, OptionalExtension};

use crate::error::{EmbeddedError, from_sql, to_sql};
use crate::matching::matching_events;
use crate::rows::{EVENT_COLUMNS, decode, decode_named, sql_limit, stream_events};

/// A read to run on a pool thread's connection.
pub(crate) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The most candidate rows one `read_all` call examines before it returns a short page
/// (with `next_from` where it stopped), so a sparse filter cannot make one call scan the
/// whole log.
const SCAN_ROWS_MAX: usize = 20_000;

/// Starts one thread per connection, all taking jobs from one channel.
pub(crate) fn spawn(
    conns: Vec<Connection>,
) -> Result<(Sender<ReadJob>, Vec<JoinHandle<()>>), EmbeddedError> {
    let (tx, rx) = std::sync::mpsc::channel::<ReadJob>();
    let rx = Arc::new(Mutex::new(rx));
    let mut threads = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let rx = Arc::clone(&rx);
        let thread = std::thread::Builder::new()
            .name(format!("concord-reader-{i}"))
            .spawn(move || serve(&conn, &rx))
            .map_err(|_| EmbeddedError::Stopped("reader"))?;
        threads.push(thread);
    }
    Ok((tx, threads))
}

fn serve(conn: &Connection, jobs: &Mutex<Receiver<ReadJob>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(conn),
            Err(_) => return,
        }
    }
}

fn stream_id(conn: &Connection, stream: &StreamName) -> Result<Option<i64>, EmbeddedError> {
    let context = "cannot look up a stream";
    let mut stmt = conn
        .prepare_cached("SELECT stream_id FROM streams WHERE name = ?1")
        .map_err(EmbeddedError::sqlite(context))?;
    stmt.query_row([stream.as_str()], |r| r.get(0))
        .optional()
        .map_err(EmbeddedError::sqlite(context))
}

/// Events of `stream` from `from`, forward or backward.
pub(crate) fn read_stream(
    conn: &Connection,
    stream: &StreamName,
    from: Version,
    direction: Direction,
    limit: usize,
) -> Result<Vec<RecordedEvent>, EmbeddedError> {
    let Some(id) = stream_id(conn, stream)? else {
        return Ok(Vec::new());
    };
    match direction {
        Direction::Forward => stream_events(conn, stream, id, from, limit),
        Direction::Backward => {
            let context = "cannot read a stream backward";
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events e WHERE e.stream_id = ?1 AND e.version <= ?2
                     ORDER BY e.version DESC LIMIT ?3"
                ))
                .map_err(EmbeddedError::sqlite(context))?;
            let top = i64::try_from(from.get()).unwrap_or(i64::MAX);
            let mut rows = stmt
                .query((id, top, sql_limit(limit)))
                .map_err(EmbeddedError::sqlite(context))?;
            let mut events = Vec::new();
            while let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))? {
                events.push(decode(stream.clone(), row, 0)?);
            }
            Ok(events)
        }
    }
}

/// The stream's current version (0 when it does not exist).
pub(crate) fn stream_version(
    conn: &Connection,
    stream: &StreamName,
) -> Result<Version, EmbeddedError> {
    let Some(id) = stream_id(conn, stream)? else {
        return Ok(Version::NONE);
    };
    let context = "cannot read a stream's version";
    let mut stmt = conn
        .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?1")
        .map_err(EmbeddedError::sqlite(context))?;
    let version: i64 = stmt
        .query_row([id], |r| r.get(0))
        .map_err(EmbeddedError::sqlite(context))?;
    Ok(Version(from_sql("version", version)?))
}

/// Streams whose names start with `prefix`, by name, after `after`.
pub(crate) fn list_streams(
    conn: &Connection,
    prefix: &str,
    after: Option<&StreamName>,
    limit: usize,
) -> Result<Vec<StreamInfo>, EmbeddedError> {
    let context = "cannot list streams";
    let tx = conn
        .unchecked_transaction()
        .map_err(EmbeddedError::sqlite(context))?;
    // Names compare as bytes in SQLite and in Rust, so the names with the prefix are one
    // contiguous run starting at the prefix itself.
    let mut stmt = tx
        .prepare_cached(
            "SELECT s.name, e.version, e.position FROM streams s
             JOIN events e ON e.position = (SELECT MAX(position) FROM events WHERE stream_id = s.stream_id)
             WHERE s.name >= ?1 AND s.name > ?2 ORDER BY s.name LIMIT ?3",
        )
        .map_err(EmbeddedError::sqlite(context))?;
    let after = after.map_or("", StreamName::as_str);
    let mut rows = stmt
        .query((prefix, after, sql_limit(limit)))
        .map_err(EmbeddedError::sqlite(context))?;
    let mut streams = Vec::new();
    while let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))? {
        let name: String = row.get(0).map_err(EmbeddedError::sqlite(context))?;
        if !name.starts_with(prefix) {
            break;
        }
        let version: i64 = row.get(1).map_err(EmbeddedError::sqlite(context))?;
        let position: i64 = row.get(2).map_err(EmbeddedError::sqlite(context))?;
        streams.push(StreamInfo {
            stream: StreamName::new(name.as_str()).map_err(|e| {
                EmbeddedError::Corrupted(format!("stored stream name {name:?} is invalid: {e}"))
            })?,
            version: Version(from_sql("version", version)?),
            last_position: Position(from_sql("position", position)?),
        });
    }
    Ok(streams)
}

/// The index a filtered read is driven by.
enum Driver<'f> {
    /// Every position (no filter on an index).
    All,
    Category(&'f str),
    Tag(&'f str),
    Types(&'f [concord_core::EventType]),
}

impl<'f> Driver<'f> {
    /// Picks the index: a tag is usually the most selective, then the types, then the
    /// category.
    fn choose(filter: &'f Filter) -> Self {
        if let Some(tag) = filter.tags.first() {
            Driver::Tag(tag.as_str())
        } else if !filter.types.is_empty() {
            Driver::Types(&filter.types)
        } else if let Some(category) = &filter.category {
            Driver::Category(category.as_str())
        } else {
            Driver::All
        }
    }

    /// Up to `n` candidate positions from `from` on (at most `head`), in order.
    fn positions(
        &self,
        conn: &Connection,
        from: u64,
        head: u64,
        n: usize,
    ) -> Result<Vec<i64>, EmbeddedError> {
        let context = "cannot read the global log";
        let (from_sql_value, n_sql) = (to_sql(from)?, sql_limit(n));
        let collect =
            |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<Vec<i64>, EmbeddedError> {
                let mut stmt = conn
                    .prepare_cached(sql)
                    .map_err(EmbeddedError::sqlite(context))?;
                let rows = stmt
                    .query_map(params, |r| r.get::<_, i64>(0))
                    .map_err(EmbeddedError::sqlite(context))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(EmbeddedError::sqlite(context))
            };
        match self {
            Driver::All => {
                let last = head.min(from.saturating_add(n as u64).saturating_sub(1));
                (from..=last).map(to_sql).collect()
            }
            Driver::Category(c) => collect(
                "SELECT position FROM events WHERE category = ?1 AND position >= ?2 ORDER BY position LIMIT ?3",
                &[c, &from_sql_value, &n_sql],
            ),
            Driver::Tag(t) => collect(
                "SELECT position FROM event_tags WHERE tag = ?1 AND position >= ?2 ORDER BY position LIMIT ?3",
                &[t, &from_sql_value, &n_sql],
            ),
            Driver::Types(types) => {
                // The first n of each type, merged (UNION, not UNION ALL: a type listed twice must
                // not yield its events twice): the first n overall are among them.
                let parts: Vec<String> = (0..types.len())
                    .map(|i| {
                        format!(
                            "SELECT * FROM (SELECT position FROM events WHERE type = ?{} AND position >= ?1
                             ORDER BY position LIMIT ?2)",
                            i + 3
                        )
                    })
                    .collect();
                let sql = format!("{} ORDER BY 1 LIMIT ?2", parts.join(" UNION "));
                let mut stmt = conn
                    .prepare_cached(&sql)
                    .map_err(EmbeddedError::sqlite(context))?;
                stmt.raw_bind_parameter(1, from_sql_value)
                    .map_err(EmbeddedError::sqlite(context))?;
                stmt.raw_bind_parameter(2, n_sql)
                    .map_err(EmbeddedError::sqlite(context))?;
                for (i, t) in types.iter().enumerate() {
                    stmt.raw_bind_parameter(3 + i, t.as_str())
                        .map_err(EmbeddedError::sqlite(context))?;
                }
                let mut rows = stmt.raw_query();
                let mut positions = Vec::new();
                while let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))? {
                    positions.push(row.get(0).map_err(EmbeddedError::sqlite(context))?);
                }
                Ok(positions)
            }
        }
    }
}

/// Up to `limit` events at positions `from` onwards that pass `filter`, from one snapshot.
pub(crate) fn read_all(
    conn: &Connection,
    from: Position,
    filter: &Filter,
    limit: usize,
) -> Result<AllPage, EmbeddedError> {
    let context = "cannot read the global log";
    let tx = conn
        .unchecked_transaction()
        .map_err(EmbeddedError::sqlite(context))?;
    let head: i64 = tx
        .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
            r.get(0)
        })
        .map_err(EmbeddedError::sqlite(context))?;
    let head = from_sql("position", head)?;
    let mut cursor = from.get().max(1);
    let mut events = Vec::new();
    if limit == 0 {
        return Ok(AllPage {
            events,
            next_from: Position(cursor),
            head: Position(head),
        });
    }
    let driver = Driver::choose(filter);
    let mut fetch = tx
        .prepare_cached(&format!(
            "SELECT s.name, {EVENT_COLUMNS} FROM events e JOIN streams s ON s.stream_id = e.stream_id WHERE e.position = ?1"
        ))
        .map_err(EmbeddedError::sqlite(context))?;
    let mut scanned = 0;
    loop {
        let wanted = (limit - events.len()).max(if filter.is_all() { 0 } else { 256 });
        let positions = driver.positions(&tx, cursor, head, wanted)?;
        for &p in &positions {
            let event = fetch
                .query_row([p], |row| Ok(decode_named(row)))
                .map_err(EmbeddedError::sqlite(context))??;
            cursor = event.position.get() + 1;
            if filter.matches(&event) {
                events.push(event);
                if events.len() == limit {
                    return Ok(AllPage {
                        events,
                        next_from: Position(cursor),
                        head: Position(head),
                    });
                }
            }
        }
        scanned += positions.len();
        if positions.len() < wanted {
            let next_from = Position(head + 1).max(from);
            return Ok(AllPage {
                events,
                next_from,
                head: Position(head),
            });
        }
        if scanned >= SCAN_ROWS_MAX {
            return Ok(AllPage {
                events,
                next_from: Position(cursor),
                head: Position(head),
            });
        }
    }
}

/// Up to `limit` events matching `query` after `after`, with the head, from one snapshot:
/// the same indexed lookup the writer uses for conditions.
pub(crate) fn query(
    conn: &Connection,
    query: &Query,
    after: Position,
    limit: usize,
) -> Result<QueryPage, EmbeddedError> {
    let context = "cannot read the events matching a query";
    let tx = conn
        .unchecked_transaction()
        .map_err(EmbeddedError::sqlite(context))?;
    let head: i64 = tx
        .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
            r.get(0)
        })
        .map_err(EmbeddedError::sqlite(context))?;
    let head = Position(from_sql("position", head)?);
    // One more than asked, to know whether there is a next page.
    let mut events = matching_events(&tx, query, after.get(), limit.saturating_add(1))?;
    let next = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| e.position)
    } else {
        None
    };
    Ok(QueryPage { events, head, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // Unbound parameters are NULL: the plan does not depend on their values.
        let mut rows = stmt.raw_query();
        let mut steps = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            steps.push(row.get::<_, String>(3).unwrap());
        }
        steps.join("; ")
    }

    #[test]
    fn filtered_reads_and_condition_checks_are_index_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plan.db");
        let mut conn = crate::schema::connect(&file, crate::Durability::Full, true).unwrap();
        crate::schema::prepare(&mut conn, &file).unwrap();
        let cases = [
            (
                "SELECT position FROM events WHERE category = 'a' AND position >= 5 ORDER BY position LIMIT 9",
                "events_by_category",
            ),
            (
                "SELECT position FROM events WHERE type = 'A' AND position >= 5 ORDER BY position LIMIT 9",
                "events_by_type",
            ),
            (
                "SELECT position FROM event_tags WHERE tag = 't' AND position >= 5 ORDER BY position LIMIT 9",
                "PRIMARY KEY",
            ),
            (
                "SELECT version FROM events WHERE stream_id = 1 AND event_id = x'00'",
                "events_by_stream_event_id",
            ),
            (
                "SELECT type FROM events WHERE stream_id = 1 AND version > 3 ORDER BY version",
                "events_by_stream_version",
            ),
        ];
        for (sql, index) in cases {
            let plan = plan(&conn, sql);
            assert!(
                plan.contains(index) && !plan.contains("TEMP B-TREE"),
                "{sql}\n  plan: {plan}"
            );
        }
        // A condition's tagged item: a range of the first tag, in position order, with key
        // lookups for the rest; never a scan of the log.
        for (tags, types) in [(1, 0), (1, 1), (2, 3), (3, 0)] {
            let sql = crate::matching::tagged_item_sql(tags, types);
            let plan = plan(&conn, &sql);
            assert!(
                plan.starts_with("SEARCH t0 USING PRIMARY KEY")
                    && !plan.contains("SCAN")
                    && !plan.contains("TEMP B-TREE"),
                "{sql}\n  plan: {plan}"
            );
        }
    }
}
