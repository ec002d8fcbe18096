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
    AllPage, Direction, Filter, Position, Query, QueryPage, RecordedAt, RecordedEvent, StreamInfo,
    StreamName, StreamPast, Version,
};
use rusqlite::{Connection, OptionalExtension};

use crate::deferred_index::{DeferredIndex, IndexRead, merge_positions};
use crate::error::{EmbeddedError, sql_bound, to_sql};
use crate::matching::matching_events;
use crate::rows::{EVENT_COLUMNS, StreamNames, decode, decode_named, stream_events, stream_head};
use crate::schema::{LifecycleRow, lifecycle_row};

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

/// Events of `stream` from `from`, forward or backward, up to the published `head` (a
/// stream's positions grow with its versions, so the unpublished ones are its last).
pub(crate) fn read_stream(
    conn: &Connection,
    index: &DeferredIndex,
    head: u64,
    stream: &StreamName,
    from: Version,
    direction: Direction,
    limit: usize,
) -> Result<Vec<RecordedEvent>, EmbeddedError> {
    let index = index.read();
    // One snapshot for the lifecycle and the events: a scavenge moves `erased_through` in
    // the transaction that erases.
    let tx = conn
        .unchecked_transaction()
        .map_err(EmbeddedError::sqlite("cannot read a stream"))?;
    // The lifecycle first: a stream tombstoned before it had an event has no id.
    let row = lifecycle_row(&tx, stream.as_str())?;
    let Some(id) = stream_id(&tx, stream)? else {
        if row.lifecycle.tombstoned {
            return Err(EmbeddedError::StreamDeleted(stream.clone()));
        }
        return Ok(Vec::new());
    };
    if row == LifecycleRow::default() {
        return stream_events(&tx, &index, stream, id, from, direction, limit, head);
    }
    if row.lifecycle.tombstoned {
        return Err(EmbeddedError::StreamDeleted(stream.clone()));
    }
    let last = Version(stream_head(&tx, &index, id, head)?.map_or(0, |(v, _)| v));
    let floor = row.floor(last);
    let mut events = match direction {
        Direction::Forward => stream_events(
            &tx,
            &index,
            stream,
            id,
            from.max(floor),
            direction,
            limit,
            head,
        )?,
        Direction::Backward => {
            let top = from.min(last);
            if top < floor {
                return Ok(Vec::new());
            }
            let shown = usize::try_from(top.get() - floor.get() + 1).unwrap_or(usize::MAX);
            stream_events(
                &tx,
                &index,
                stream,
                id,
                top,
                direction,
                limit.min(shown),
                head,
            )?
        }
    };
    if row.lifecycle.metadata.max_age_seconds.is_some() {
        let now = RecordedAt::now();
        events.retain(|e| row.lifecycle.young_enough(e.recorded_at, now));
    }
    Ok(events)
}

/// The stream's version as of the published `head` (0 when it does not exist): its last
/// event at or before `head`.
pub(crate) fn stream_version(
    conn: &Connection,
    index: &DeferredIndex,
    head: u64,
    stream: &StreamName,
) -> Result<Version, EmbeddedError> {
    let index = index.read();
    let tx = conn
        .unchecked_transaction()
        .map_err(EmbeddedError::sqlite("cannot read a stream's version"))?;
    // The lifecycle first: a stream tombstoned before it had an event has no id.
    let row = lifecycle_row(&tx, stream.as_str())?;
    let Some(id) = stream_id(&tx, stream)? else {
        if row.lifecycle.tombstoned {
            return Err(EmbeddedError::StreamDeleted(stream.clone()));
        }
        return Ok(Version::NONE);
    };
    if row.lifecycle.tombstoned {
        return Err(EmbeddedError::StreamDeleted(stream.clone()));
    }
    let last = Version(stream_head(&tx, &index, id, head)?.map_or(0, |(v, _)| v));
    Ok(row.lifecycle.visible_version(last))
}

/// Streams whose names start with `prefix`, by name, after `after`, as of the published
/// `head` (a stream whose first events are not published yet is not listed).
pub(crate) fn list_streams(
    conn: &Connection,
    index: &DeferredIndex,
    head: u64,
    prefix: &str,
    after: Option<&StreamName>,
    limit: usize,
) -> Result<Vec<StreamInfo>, EmbeddedError> {
    let context = "cannot list streams";
    // Taken before the listing's statement starts, whose snapshot every head is read in.
    let index = index.read();
    // Names compare as bytes in SQLite and in Rust, so the names with the prefix are one
    // contiguous run starting at the prefix itself.
    let mut stmt = conn
        .prepare_cached(
            "SELECT stream_id, name FROM streams WHERE name >= ?1 AND name > ?2 ORDER BY name",
        )
        .map_err(EmbeddedError::sqlite(context))?;
    let after = after.map_or("", StreamName::as_str);
    let mut rows = stmt
        .query((prefix, after))
        .map_err(EmbeddedError::sqlite(context))?;
    let mut streams = Vec::new();
    while streams.len() < limit
        && let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))?
    {
        let id: i64 = row.get(0).map_err(EmbeddedError::sqlite(context))?;
        let name = row
            .get_ref(1)
            .map_err(EmbeddedError::sqlite(context))?
            .as_str()
            .map_err(|e| EmbeddedError::Corrupted(format!("stored stream name is invalid: {e}")))?;
        if !name.starts_with(prefix) {
            break;
        }
        let Some((version, position)) = stream_head(conn, &index, id, head)? else {
            continue;
        };
        let lifecycle = lifecycle_row(conn, name)?.lifecycle;
        if lifecycle.tombstoned || lifecycle.visible_version(Version(version)) == Version::NONE {
            continue;
        }
        streams.push(StreamInfo {
            stream: StreamName::stored(name).map_err(|e| {
                EmbeddedError::Corrupted(format!("stored stream name {name:?} is invalid: {e}"))
            })?,
            version: Version(version),
            last_position: Position(position),
        });
    }
    Ok(streams)
}

/// Every stream with versions or a lifecycle row, by name, after `after`, each with its
/// last version at the published `head` and its lifecycle (`EventStore::list_stream_pasts`).
pub(crate) fn list_stream_pasts(
    conn: &Connection,
    index: &DeferredIndex,
    head: u64,
    after: Option<&StreamName>,
    limit: usize,
) -> Result<Vec<StreamPast>, EmbeddedError> {
    let context = "cannot list the streams' pasts";
    let index = index.read();
    let tx = conn
        .unchecked_transaction()
        .map_err(EmbeddedError::sqlite(context))?;
    let names: Vec<String> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT name FROM streams WHERE name > ?1
                 UNION SELECT name FROM stream_lifecycle WHERE name > ?1
                 ORDER BY name LIMIT ?2",
            )
            .map_err(EmbeddedError::sqlite(context))?;
        let rows = stmt
            .query_map(
                (after.map_or("", StreamName::as_str), to_sql(limit as u64)?),
                |r| r.get(0),
            )
            .map_err(EmbeddedError::sqlite(context))?;
        rows.collect::<Result<_, _>>()
            .map_err(EmbeddedError::sqlite(context))?
    };
    let mut pasts = Vec::with_capacity(names.len());
    for name in names {
        let stream = StreamName::stored(name.as_str()).map_err(|e| {
            EmbeddedError::Corrupted(format!("stored stream name {name:?} is invalid: {e}"))
        })?;
        let last = match stream_id(&tx, &stream)? {
            Some(id) => stream_head(&tx, &index, id, head)?.map_or(0, |(v, _)| v),
            None => 0,
        };
        pasts.push(StreamPast {
            last: Version(last),
            lifecycle: lifecycle_row(&tx, &name)?.lifecycle,
            stream,
        });
    }
    Ok(pasts)
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

    /// Up to `n` candidate positions from `from` on (at most `head`), in order: a table's
    /// range and, for types and categories, the entries not flushed into it yet.
    fn positions(
        &self,
        conn: &Connection,
        unflushed: &IndexRead<'_>,
        from: u64,
        head: u64,
        n: usize,
    ) -> Result<Vec<i64>, EmbeddedError> {
        let context = "cannot read the global log";
        // A caller's bound: past 2^63 it is past every stored position.
        let from_sql_value = sql_bound(from);
        match self {
            Driver::All => {
                let last = head.min(from.saturating_add(n as u64).saturating_sub(1));
                (from..=last).map(to_sql).collect()
            }
            Driver::Category(c) => Ok(merge_positions(
                first_positions(conn, CATEGORY_SQL, &[c, &from_sql_value], n)?,
                unflushed.category_positions(c, from..=head, n),
                n,
            )),
            Driver::Tag(t) => first_positions(conn, TAG_SQL, &[t, &from_sql_value], n),
            Driver::Types(types) => {
                let mut stmt = conn
                    .prepare_cached(&types_sql(types.len()))
                    .map_err(EmbeddedError::sqlite(context))?;
                stmt.raw_bind_parameter(1, from_sql_value)
                    .map_err(EmbeddedError::sqlite(context))?;
                for (i, t) in types.iter().enumerate() {
                    stmt.raw_bind_parameter(2 + i, t.as_str())
                        .map_err(EmbeddedError::sqlite(context))?;
                }
                let mut rows = stmt.raw_query();
                let mut positions = Vec::new();
                while positions.len() < n
                    && let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))?
                {
                    positions.push(row.get(0).map_err(EmbeddedError::sqlite(context))?);
                }
                let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
                Ok(merge_positions(
                    positions,
                    unflushed.type_positions(&names, from..=head, n),
                    n,
                ))
            }
        }
    }
}

// The index lookups of a filtered read. None has `LIMIT ?` (a statement with a bound limit
// is re-prepared at every reuse from the statement cache): each yields its rows lazily in
// index order, and the reader stops after the n it wants.
const CATEGORY_SQL: &str =
    "SELECT position FROM category_index WHERE category = ?1 AND position >= ?2 ORDER BY position";
const TAG_SQL: &str =
    "SELECT position FROM event_tags WHERE tag = ?1 AND position >= ?2 ORDER BY position";

/// The positions of `types` types from `?1` on, merged in position order: one range of
/// `type_index` per type, merged as they are read (UNION, not UNION ALL: a type listed
/// twice must not yield its events twice), so stopping after n reads about n rows.
fn types_sql(types: usize) -> String {
    let parts: Vec<String> = (0..types)
        .map(|i| {
            format!(
                "SELECT position FROM type_index WHERE type = ?{} AND position >= ?1",
                i + 2
            )
        })
        .collect();
    format!("{} ORDER BY 1", parts.join(" UNION "))
}

/// The first `n` rows of a one-column position query.
fn first_positions(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    n: usize,
) -> Result<Vec<i64>, EmbeddedError> {
    let context = "cannot read the global log";
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(EmbeddedError::sqlite(context))?;
    let mut rows = stmt.query(params).map_err(EmbeddedError::sqlite(context))?;
    let mut positions = Vec::new();
    while positions.len() < n
        && let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))?
    {
        positions.push(row.get(0).map_err(EmbeddedError::sqlite(context))?);
    }
    Ok(positions)
}

/// Up to `limit` events at positions `from` onwards (up to the published `head`) that pass
/// `filter`, from one snapshot.
pub(crate) fn read_all(
    conn: &Connection,
    index: &DeferredIndex,
    head: u64,
    from: Position,
    filter: &Filter,
    limit: usize,
) -> Result<AllPage, EmbeddedError> {
    let context = "cannot read the global log";
    let mut cursor = from.get().max(1);
    let mut events = Vec::new();
    if limit == 0 {
        return Ok(AllPage {
            events,
            next_from: Position(cursor),
            head: Position(head),
        });
    }
    if filter.is_all() {
        // The log alone: no index entry is needed, so the writer's flushes are not held up.
        let tx = conn
            .unchecked_transaction()
            .map_err(EmbeddedError::sqlite(context))?;
        return read_range(&tx, head, cursor, limit);
    }
    // Before the snapshot's first statement (see `DeferredIndex::read`).
    let unflushed = index.read();
    let tx = conn
        .unchecked_transaction()
        .map_err(EmbeddedError::sqlite(context))?;
    let head_sql = to_sql(head)?;
    let driver = Driver::choose(filter);
    let mut fetch = tx
        .prepare_cached(&format!(
            "SELECT s.name, {EVENT_COLUMNS} FROM events e JOIN streams s ON s.stream_id = e.stream_id WHERE e.position = ?1"
        ))
        .map_err(EmbeddedError::sqlite(context))?;
    let mut scanned = 0;
    loop {
        let wanted = (limit - events.len()).max(if filter.is_all() { 0 } else { 256 });
        let mut positions = driver.positions(&tx, &unflushed, cursor, head, wanted)?;
        // The indexes may already hold a batch that is not published: it ends the page.
        positions.retain(|&p| p <= head_sql);
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

/// The unfiltered page of [`read_all`]: one range scan of the log's own B-tree (positions
/// are its keys), with stream names looked up once per stream instead of one point lookup
/// and one join per event. Catch-up reads are this.
fn read_range(
    conn: &Connection,
    head: u64,
    from: u64,
    limit: usize,
) -> Result<AllPage, EmbeddedError> {
    let context = "cannot read the global log";
    let last = head.min(from.saturating_add(limit as u64).saturating_sub(1));
    let mut events = Vec::new();
    if from <= last {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT e.stream_id, {EVENT_COLUMNS} FROM events e WHERE e.position BETWEEN ?1 AND ?2 ORDER BY e.position"
            ))
            .map_err(EmbeddedError::sqlite(context))?;
        let mut rows = stmt
            .query((to_sql(from)?, to_sql(last)?))
            .map_err(EmbeddedError::sqlite(context))?;
        let mut names = StreamNames::default();
        while let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))? {
            let id: i64 = row.get(0).map_err(EmbeddedError::sqlite(context))?;
            events.push(decode(names.get(conn, id)?, row, 1)?);
        }
    }
    // Every position up to `last` was read; a scavenge may have left gaps in the range, so
    // the page can be short without being at the head.
    let next_from = match events.last() {
        Some(e) if events.len() == limit => e.position.next(),
        _ if from <= last => Position(last + 1),
        _ => Position(head + 1).max(Position(from)),
    };
    Ok(AllPage {
        events,
        next_from,
        head: Position(head),
    })
}

/// Up to `limit` events matching `query` after `after`, with the head, from one snapshot:
/// the same indexed lookup the writer uses for conditions.
pub(crate) fn query(
    conn: &Connection,
    index: &DeferredIndex,
    head: u64,
    query: &Query,
    after: Position,
    limit: usize,
) -> Result<QueryPage, EmbeddedError> {
    let context = "cannot read the events matching a query";
    // Before the snapshot's first statement (see `DeferredIndex::read`).
    let unflushed = index.read();
    let tx = conn
        .unchecked_transaction()
        .map_err(EmbeddedError::sqlite(context))?;
    // One more than asked, to know whether there is a next page.
    // Matches in a batch that is not published yet do not exist for readers.
    let mut events = matching_events(
        &tx,
        &unflushed,
        query,
        after.get(),
        head,
        limit.saturating_add(1),
    )?;
    let head = Position(head);
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

    /// A statement re-prepared at every use costs more than the lookup itself (a bound
    /// `LIMIT ?` does that), so every paged read and every condition lookup is run twice,
    /// stopping early, and must still be the statement first prepared.
    #[test]
    fn paged_reads_and_condition_lookups_reuse_their_prepared_statements() {
        use crate::matching::{matching_events, tagged_item_sql};
        use concord_core::{EventType, Tag};

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reuse.db");
        let mut conn = crate::schema::connect(&file, true).unwrap();
        crate::schema::prepare(&mut conn, &file).unwrap();
        conn.execute_batch(
            "INSERT INTO streams (stream_id, name, category) VALUES (1, 'a-1', 'a')",
        )
        .unwrap();
        for p in 1..=10_i64 {
            let ty = if p % 2 == 0 { "A" } else { "B" };
            conn.execute(
                "INSERT INTO events VALUES (?1, 1, ?1, ?2, ?3, 'a', x'7b7d', x'7b7d', 't', 0, NULL)",
                (p, uuid::Uuid::new_v4().as_bytes().to_vec(), ty),
            )
            .unwrap();
            conn.execute("INSERT INTO event_tags VALUES ('t', ?1)", [p])
                .unwrap();
            conn.execute("INSERT INTO stream_index VALUES (1, ?1, ?1)", [p])
                .unwrap();
            conn.execute("INSERT INTO type_index VALUES (?2, ?1)", (p, ty))
                .unwrap();
            conn.execute("INSERT INTO category_index VALUES ('a', ?1)", [p])
                .unwrap();
        }
        let ty = |s: &str| EventType::new(s).unwrap();
        let tag = |s: &str| Tag::new(s).unwrap();
        let stream = StreamName::new("a-1").unwrap();
        let filters = [
            Filter::all().category(concord_core::Category::new("a").unwrap()),
            Filter::all().tags(vec![tag("t")]),
            Filter::all().types(vec![ty("A")]),
            Filter::all().types(vec![ty("A"), ty("B")]),
        ];
        let queries = [
            Query::everything(),
            Query::item(vec![ty("A"), ty("B")], vec![]),
            Query::item(vec![ty("A")], vec![tag("t"), tag("u")]),
        ];
        let head: i64 = conn
            .query_row("SELECT MAX(position) FROM events", [], |r| r.get(0))
            .unwrap();
        let head = u64::try_from(head).unwrap();
        let index = DeferredIndex::default();
        for round in 1..=3_u64 {
            for direction in [Direction::Forward, Direction::Backward] {
                let events =
                    read_stream(&conn, &index, head, &stream, Version(5), direction, 2).unwrap();
                assert_eq!(events.len(), 2, "{direction:?}");
            }
            // The writer's read of the concurrent events of a conflict or a rebase.
            let concurrent = stream_events(
                &conn,
                &index.read(),
                &stream,
                1,
                Version(round),
                Direction::Forward,
                3,
                u64::MAX,
            )
            .unwrap();
            assert_eq!(concurrent.len(), 3);
            for filter in &filters {
                // Drivers are asked for at least 256 candidates, more than there are: the
                // positions are read to the end here and cut short below.
                let page = read_all(&conn, &index, head, Position(round), filter, 1).unwrap();
                assert_eq!(page.events.len(), 1, "{filter:?}");
                let n = Driver::choose(filter)
                    .positions(&conn, &index.read(), round, 10, 2)
                    .unwrap();
                assert_eq!(n.len(), 2, "{filter:?}");
            }
            for q in &queries {
                assert!(
                    matching_events(&conn, &index.read(), q, 10 + round, u64::MAX, 100)
                        .unwrap()
                        .is_empty()
                );
                assert!(
                    matching_events(&conn, &index.read(), q, round, u64::MAX, 1)
                        .unwrap()
                        .len()
                        <= 1
                );
            }
        }
        let sqls = [
            crate::rows::stream_forward_sql(),
            crate::rows::stream_backward_sql(),
            CATEGORY_SQL.to_owned(),
            TAG_SQL.to_owned(),
            types_sql(1),
            types_sql(2),
            "SELECT position FROM events WHERE position > ?1 ORDER BY position".to_owned(),
            crate::matching::TYPE_SQL.to_owned(),
            tagged_item_sql(2, 1),
        ];
        for sql in sqls {
            let stmt = conn.prepare_cached(&sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
        // The counter does see what this test guards against: a bound limit, reused.
        let limited = format!("{TAG_SQL} LIMIT ?3");
        for _ in 0..2 {
            let mut stmt = conn.prepare_cached(&limited).unwrap();
            let n = stmt
                .query_map(("t", 1, 2), |r| r.get::<_, i64>(0))
                .unwrap()
                .count();
            assert_eq!(n, 2);
        }
        let stmt = conn.prepare_cached(&limited).unwrap();
        assert!(stmt.get_status(rusqlite::StatementStatus::RePrepare) > 0);
    }

    #[test]
    fn filtered_reads_and_condition_checks_are_index_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plan.db");
        let mut conn = crate::schema::connect(&file, true).unwrap();
        crate::schema::prepare(&mut conn, &file).unwrap();
        let forward = crate::rows::stream_forward_sql();
        let backward = crate::rows::stream_backward_sql();
        let cases = [
            (
                CATEGORY_SQL,
                "SEARCH category_index USING PRIMARY KEY (category=? AND position>?)",
            ),
            (
                crate::matching::TYPE_SQL,
                "SEARCH type_index USING PRIMARY KEY (type=? AND position>?)",
            ),
            (TAG_SQL, "PRIMARY KEY"),
            (
                forward.as_str(),
                "SEARCH i USING PRIMARY KEY (stream_id=? AND version>? AND version<?); SEARCH e USING INTEGER PRIMARY KEY",
            ),
            (
                backward.as_str(),
                "SEARCH i USING PRIMARY KEY (stream_id=? AND version<?); SEARCH e USING INTEGER PRIMARY KEY",
            ),
            (
                "SELECT version FROM event_ids WHERE event_id = x'00' AND stream_id = 1",
                "SEARCH event_ids USING PRIMARY KEY (event_id=? AND stream_id=?)",
            ),
            (
                "SELECT version, position FROM stream_index WHERE stream_id = ?1 AND version < ?2 ORDER BY version DESC",
                "USING PRIMARY KEY (stream_id=? AND version<?)",
            ),
        ];
        for (sql, index) in cases {
            let plan = plan(&conn, sql);
            assert!(
                plan.contains(index) && !plan.contains("TEMP B-TREE"),
                "{sql}\n  plan: {plan}"
            );
        }
        // Several types: one range of the type index each, merged as they are read (so
        // stopping after n rows is cheap), never a scan or a sort of all their events.
        for types in [1, 2, 3] {
            let sql = types_sql(types);
            let plan = plan(&conn, &sql);
            assert!(
                plan.matches("SEARCH type_index USING PRIMARY KEY (type=? AND position>?)")
                    .count()
                    == types
                    && (types == 1 || plan.contains("MERGE (UNION)"))
                    && !plan.contains("SCAN")
                    && !plan.contains("TEMP B-TREE"),
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
