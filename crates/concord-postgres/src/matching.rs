//! The events matching a DCB query or a filter, in SQL over the type and tag indexes: what
//! append conditions check under the head lock, what `query` reads, and `read_all`'s
//! filtered read. Items are ORed; within an
//! item, any of its types and all of its tags. `Query::matches` is applied to the rows as
//! well, so the SQL may only narrow what core's rule accepts, never widen it.

use concord_core::{Position, Query, RecordedEvent, StoreError};
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::rows::{COLUMNS, bound, decode};
use crate::schema::TAGGED;

/// Up to `limit` events matching `query` with `after < position <= head`, in order.
pub(crate) async fn matching_events<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
    query: &Query,
    after: Position,
    head: Position,
    limit: usize,
) -> Result<Vec<RecordedEvent>, MatchingError> {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(bound(after.get())),
        Box::new(bound(head.get())),
        Box::new(bound(limit as u64)),
    ];
    let sql = matching_sql(schema, query, &mut params);
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client
        .query(&sql, &refs)
        .await
        .map_err(MatchingError::Driver)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let event = decode(row).map_err(MatchingError::Decode)?;
        if query.matches(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// The read of [`matching_events`]: `after`, `head` and `limit` at `$1` … `$3`, each item's
/// types and tags pushed onto `params` after them.
fn matching_sql(
    schema: &str,
    query: &Query,
    params: &mut Vec<Box<dyn ToSql + Sync + Send>>,
) -> String {
    let mut items = Vec::new();
    for item in &query.items {
        let mut conds = Vec::new();
        if !item.types.is_empty() {
            params.push(Box::new(
                item.types
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect::<Vec<_>>(),
            ));
            conds.push(format!("event_type = ANY(${}::text[])", params.len()));
        }
        if !item.tags.is_empty() {
            params.push(Box::new(
                item.tags
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect::<Vec<_>>(),
            ));
            conds.push(format!("tags @> ${}::text[] AND {TAGGED}", params.len()));
        }
        if conds.is_empty() {
            conds.push("TRUE".to_owned());
        }
        items.push(format!("({})", conds.join(" AND ")));
    }
    let matches = if items.is_empty() {
        "TRUE".to_owned()
    } else {
        items.join(" OR ")
    };
    format!(
        "SELECT {COLUMNS} FROM {schema}.concord_events WHERE position > $1 AND position <= $2 \
         AND ({matches}) ORDER BY position LIMIT $3"
    )
}

/// The read of `read_all` with a filter: `from`, `head`, the category (NULL: any), the types
/// (empty: any), the tags and the limit at `$1` … `$6`. With tags (`tagged`), the tag
/// index's predicate is named, so the index serves it.
pub(crate) fn filtered_sql(schema: &str, tagged: bool) -> String {
    let tags = if tagged {
        format!(" AND tags @> $5::text[] AND {TAGGED}")
    } else {
        // Every event: `$5` is empty (`@>` of an empty array holds for any array).
        " AND tags @> $5::text[]".to_owned()
    };
    format!(
        "SELECT {COLUMNS} FROM {schema}.concord_events WHERE position >= $1 AND position <= $2 \
         AND ($3::text IS NULL OR category = $3) \
         AND (cardinality($4::text[]) = 0 OR event_type = ANY($4)){tags} \
         ORDER BY position LIMIT $6"
    )
}

/// Why [`matching_events`] failed.
#[derive(Debug)]
pub(crate) enum MatchingError {
    Driver(tokio_postgres::Error),
    Decode(StoreError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use concord_core::{
        AppendOutcome, AppendRequest, EventStore, EventType, ExpectedVersion, Json, NewEvent,
        StreamName, Tag,
    };
    use concord_testkit::postgres::{shared, unique_schema};

    use super::*;
    use crate::PostgresStore;

    /// The plan of `sql` run with `args` (SQL literals, one per parameter), as `psql`
    /// prints it.
    fn plan(sql: &str, args: &str) -> String {
        shared().psql(&format!(
            "PREPARE read AS {sql}; EXPLAIN (COSTS OFF) EXECUTE read({args})"
        ))
    }

    /// The tag index holds only events with tags (`schema::TAGGED`): a read by tags that
    /// did not name its predicate could not use it, and would walk the log by position.
    #[tokio::test]
    async fn reads_by_tags_are_served_by_the_partial_tag_index() {
        let schema = unique_schema();
        let store = PostgresStore::connect(&format!("{}?schema={schema}", shared().url()))
            .await
            .unwrap();
        let event = |tags: Vec<Tag>| {
            NewEvent::new(EventType::new("SeatBooked").unwrap(), Json::empty_object())
                .with_tags(tags)
        };
        let tag = Tag::new("seat:1").unwrap();
        let batches: [(&str, Vec<NewEvent>); 3] = [
            ("log-1", (0..1_000).map(|_| event(Vec::new())).collect()),
            ("log-1", (0..1_000).map(|_| event(Vec::new())).collect()),
            ("seat-1", (0..2).map(|_| event(vec![tag.clone()])).collect()),
        ];
        for (stream, events) in batches {
            let outcome = store
                .append(AppendRequest::new(
                    StreamName::new(stream).unwrap(),
                    ExpectedVersion::Any,
                    events,
                ))
                .await
                .unwrap();
            assert!(matches!(outcome, AppendOutcome::Appended(_)), "{outcome:?}");
        }
        shared().psql(&format!("ANALYZE {schema}.concord_events"));

        let query = Query::item(Vec::new(), vec![tag]);
        // `$1` … `$3` are taken, as `matching_events` takes them; the tags come at `$4`.
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> =
            vec![Box::new(0_i64), Box::new(0_i64), Box::new(0_i64)];
        let matching = plan(
            &matching_sql(&schema, &query, &mut params),
            "0, 2002, 100, ARRAY['seat:1']",
        );
        assert!(matching.contains("concord_events_tags"), "{matching}");
        let filtered = plan(
            &filtered_sql(&schema, true),
            "1, 2002, NULL, '{}', ARRAY['seat:1'], 100",
        );
        assert!(filtered.contains("concord_events_tags"), "{filtered}");
    }
}
