//! The events matching a DCB query, in SQL over the type and tag indexes: what append
//! conditions check under the head row and what `query` reads. Items are ORed; within an
//! item, any of its types and all of its tags. `Query::matches` is applied to the rows as
//! well, so the SQL may only narrow what core's rule accepts, never widen it.

use concord_core::{Position, Query, RecordedEvent, StoreError};
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::rows::{COLUMNS, bound, decode};

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
            conds.push(format!("tags @> ${}::text[]", params.len()));
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
    let sql = format!(
        "SELECT {COLUMNS} FROM {schema}.concord_events WHERE position > $1 AND position <= $2 \
         AND ({matches}) ORDER BY position LIMIT $3"
    );
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

/// Why [`matching_events`] failed.
#[derive(Debug)]
pub(crate) enum MatchingError {
    Driver(tokio_postgres::Error),
    Decode(StoreError),
}
