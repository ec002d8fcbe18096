//! The indexed lookup of the events that match a DCB query after a position.
//!
//! Two callers need the same answer: the writer, checking an append condition inside its
//! open transaction (so a request sees the staged writes of the requests before it in the
//! batch), and the readers, answering a query read from their snapshot. Both go through
//! [`matching_events`], so a condition can never disagree with the query read it was based
//! on.
//!
//! Each query item is one index range in position order, never a scan of the log: an item
//! with tags starts from `event_tags` (first tag, `position > after`) and checks its other
//! tags and its types by key lookups; an item with types only reads `type_index`, the
//! first n of each type, and the type's entries not flushed into it yet (see
//! `deferred_index`). The first n positions overall are among the first n of every item,
//! so the union, sorted and cut, is exact. Core's [`Query::matches`] then decides
//! every event that was read, so the match rule stays core's.

use concord_core::{Query, QueryItem, RecordedEvent};
use rusqlite::Connection;

use crate::deferred_index::IndexRead;
use crate::error::{EmbeddedError, sql_bound};
use crate::rows::{EVENT_COLUMNS, decode_named};

const CONTEXT: &str = "cannot look up the events matching a query";

/// Up to `n` events matching `query` with positions greater than `after` and at most
/// `through`, in position order, read through `conn` (the writer's inside its transaction,
/// seeing everything it staged: `through` = `u64::MAX`; or a reader's inside its snapshot,
/// up to its head) and `unflushed` (taken before the snapshot's first statement).
pub(crate) fn matching_events(
    conn: &Connection,
    unflushed: &IndexRead<'_>,
    query: &Query,
    after: u64,
    through: u64,
    n: usize,
) -> Result<Vec<RecordedEvent>, EmbeddedError> {
    let mut positions = matching_positions(conn, unflushed, query, after, through, n)?;
    // The tables hold only committed entries, but a reader's snapshot may hold events past
    // its head (committed, not yet synced): they do not exist for it.
    positions.retain(|&p| u64::try_from(p).is_ok_and(|p| p <= through));
    if positions.is_empty() {
        // The usual answer of a condition: nothing more to read.
        return Ok(Vec::new());
    }
    let mut fetch = conn
        .prepare_cached(&format!(
            "SELECT s.name, {EVENT_COLUMNS} FROM events e JOIN streams s ON s.stream_id = e.stream_id WHERE e.position = ?1"
        ))
        .map_err(EmbeddedError::sqlite(CONTEXT))?;
    let mut events = Vec::with_capacity(positions.len());
    for p in positions {
        let event = fetch
            .query_row([p], |row| Ok(decode_named(row)))
            .map_err(EmbeddedError::sqlite(CONTEXT))??;
        if query.matches(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// Up to `n` positions greater than `after` of events matching `query`, ascending; the
/// unflushed entries only up to `through`.
pub(crate) fn matching_positions(
    conn: &Connection,
    unflushed: &IndexRead<'_>,
    query: &Query,
    after: u64,
    through: u64,
    n: usize,
) -> Result<Vec<i64>, EmbeddedError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let first_unflushed = after.saturating_add(1);
    let after = sql_bound(after);
    if query.items.is_empty() {
        return collect(
            conn,
            "SELECT position FROM events WHERE position > ?1 ORDER BY position",
            &[&after],
            n,
        );
    }
    let mut positions = Vec::new();
    // The items with types only match any of their types: their union is one range per
    // distinct type, however many items name it.
    let mut types: Vec<&str> = query
        .items
        .iter()
        .filter(|item| item.tags.is_empty())
        .flat_map(|item| item.types.iter().map(|t| t.as_str()))
        .collect();
    types.sort_unstable();
    types.dedup();
    for &t in &types {
        positions.extend(collect(conn, TYPE_SQL, &[&t, &after], n)?);
    }
    // Sorted, deduplicated and cut with the tagged items' below.
    positions.extend(
        unflushed
            .type_positions(&types, first_unflushed..=through, n)
            .into_iter()
            .filter_map(|p| i64::try_from(p).ok()),
    );
    for item in query.items.iter().filter(|item| !item.tags.is_empty()) {
        positions.extend(tagged_item_positions(conn, item, after, n)?);
    }
    positions.sort_unstable();
    positions.dedup();
    positions.truncate(n);
    Ok(positions)
}

/// The first positions of one type after `?2`: a range of the type index's table.
pub(crate) const TYPE_SQL: &str =
    "SELECT position FROM type_index WHERE type = ?1 AND position > ?2 ORDER BY position";

/// The SQL of an item with `tags` tags (at least one) and `types` types: driven by the
/// first tag's range in `event_tags`, in position order (`CROSS JOIN` keeps SQLite from
/// reordering the loops, so no temporary sort is ever needed); every further tag is a
/// primary-key lookup and the types a check of the event's row.
///
/// No statement here has `LIMIT ?`: SQLite plans with a bound limit's value, so such a
/// statement is re-prepared every time the statement cache clears its bindings (measured:
/// most of a condition's cost). Rows come lazily in index order, so the caller just stops
/// reading after n.
pub(crate) fn tagged_item_sql(tags: usize, types: usize) -> String {
    let mut sql = String::from("SELECT t0.position FROM event_tags t0");
    for i in 1..tags {
        sql.push_str(&format!(
            " CROSS JOIN event_tags t{i} ON t{i}.tag = ?{} AND t{i}.position = t0.position",
            i + 2
        ));
    }
    if types > 0 {
        let first = tags + 2;
        let list: Vec<String> = (first..first + types).map(|k| format!("?{k}")).collect();
        sql.push_str(&format!(
            " CROSS JOIN events e ON e.position = t0.position AND e.type IN ({})",
            list.join(", ")
        ));
    }
    sql.push_str(" WHERE t0.tag = ?1 AND t0.position > ?2 ORDER BY t0.position");
    sql
}

fn tagged_item_positions(
    conn: &Connection,
    item: &QueryItem,
    after: i64,
    n: usize,
) -> Result<Vec<i64>, EmbeddedError> {
    let mut stmt = conn
        .prepare_cached(&tagged_item_sql(item.tags.len(), item.types.len()))
        .map_err(EmbeddedError::sqlite(CONTEXT))?;
    let mut tags = item.tags.iter();
    if let Some(first) = tags.next() {
        bind(&mut stmt, 1, &first.as_str())?;
    }
    bind(&mut stmt, 2, &after)?;
    for (i, tag) in (3..).zip(tags) {
        bind(&mut stmt, i, &tag.as_str())?;
    }
    for (i, t) in (item.tags.len() + 2..).zip(&item.types) {
        bind(&mut stmt, i, &t.as_str())?;
    }
    let mut rows = stmt.raw_query();
    let mut positions = Vec::new();
    while positions.len() < n
        && let Some(row) = rows.next().map_err(EmbeddedError::sqlite(CONTEXT))?
    {
        positions.push(row.get(0).map_err(EmbeddedError::sqlite(CONTEXT))?);
    }
    Ok(positions)
}

fn bind(
    stmt: &mut rusqlite::CachedStatement<'_>,
    i: usize,
    value: &dyn rusqlite::ToSql,
) -> Result<(), EmbeddedError> {
    stmt.raw_bind_parameter(i, value)
        .map_err(EmbeddedError::sqlite(CONTEXT))
}

fn collect(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    n: usize,
) -> Result<Vec<i64>, EmbeddedError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(EmbeddedError::sqlite(CONTEXT))?;
    let rows = stmt
        .query_map(params, |r| r.get::<_, i64>(0))
        .map_err(EmbeddedError::sqlite(CONTEXT))?;
    rows.take(n)
        .collect::<Result<Vec<_>, _>>()
        .map_err(EmbeddedError::sqlite(CONTEXT))
}
