//! Specs for input at and beyond the edges: numbers past what a backend stores (versions
//! and positions from 2^63 to 2^64 - 1), and the documented sizes of filters and queries
//! (types per filter, tags per filter or query item, items per query). Each backend must
//! answer everything within the limits, refuse what is beyond them as invalid input, and
//! stay usable afterwards: a refused or out-of-range request never breaks the store.

use std::sync::Arc;

use concord_core::{
    AppendRequest, Direction, EventStore, ExpectedVersion, Filter, MultiAppendRequest, Position,
    QUERY_ITEMS_MAX, Query, QueryItem, StoreError, TAGS_PER_FILTER_MAX, TYPES_PER_FILTER_MAX,
    Version,
};

use super::{WAIT, stream, tag, tagged, ty, write};

/// 2^63: the first number that does not fit a signed 64-bit integer (SQLite's).
const BEYOND_I64: u64 = 1 << 63;

/// The versions and positions a client may send that no store can have reached.
const HUGE: [u64; 3] = [BEYOND_I64, BEYOND_I64 + 1, u64::MAX];

fn is_invalid(r: &Result<impl std::fmt::Debug, StoreError>) -> bool {
    matches!(r, Err(StoreError::Invalid(_)))
}

/// Checks that the store still appends and reads after whatever came before.
async fn assert_still_works(store: &Arc<dyn EventStore>) {
    let s = stream("check-after");
    let before = store.stream_version(&s).await.unwrap();
    let a = write(
        store,
        &s,
        ExpectedVersion::Exact(before),
        vec![tagged("Checked", &["check:1"])],
    )
    .await;
    assert_eq!(a.first_version, before.next());
    let read = store
        .read_stream(&s, a.first_version, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
}

/// Versions and positions from 2^63 up are simply past the end: reads from them are empty
/// (backward reads start at the stream's end), a query after them matches nothing, and a
/// condition after them holds. None is an error, and the store works on.
pub async fn versions_and_positions_past_2_pow_63_read_as_past_the_end(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    write(
        &store,
        &s,
        ExpectedVersion::Any,
        (0..12)
            .map(|_| tagged("Deposited", &["account:1"]))
            .collect(),
    )
    .await;
    let filters = [
        Filter::all(),
        Filter::all().category(concord_core::Category::new("account").unwrap()),
        Filter::all().types(vec![ty("Deposited")]),
        Filter::all().types(vec![ty("Deposited"), ty("Withdrawn")]),
        Filter::all().tags(vec![tag("account:1")]),
    ];
    for n in HUGE {
        let forward = store
            .read_stream(&s, Version(n), Direction::Forward, 10)
            .await
            .unwrap();
        assert!(forward.is_empty(), "forward from version {n}: {forward:?}");
        let backward = store
            .read_stream(&s, Version(n), Direction::Backward, 3)
            .await
            .unwrap();
        assert_eq!(
            backward.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
            vec![12, 11, 10],
            "backward from version {n}"
        );
        for f in &filters {
            let page = store.read_all(Position(n), f, 10).await.unwrap();
            assert!(page.events.is_empty(), "read_all from {n} through {f:?}");
            assert!(page.is_caught_up(), "read_all from {n} through {f:?}");
            assert!(page.head >= Position(12), "{page:?}");
        }
        for q in [
            Query::everything(),
            Query::item(vec![ty("Deposited")], vec![]),
            Query::item(vec![ty("Deposited")], vec![tag("account:1")]),
        ] {
            let page = store.query(&q, Position(n), 10).await.unwrap();
            assert!(page.events.is_empty(), "query after {n}: {q:?}");
            let conditional = MultiAppendRequest::from(AppendRequest::new(
                stream("account-2"),
                ExpectedVersion::Any,
                vec![tagged("Deposited", &["account:2"])],
            ))
            .condition(q.clone(), Position(n));
            let written = tokio::time::timeout(WAIT, store.append_multi(conditional))
                .await
                .expect("append_multi answered");
            assert!(written.is_ok(), "condition after {n}: {written:?}");
        }
        // An expectation that far ahead is a conflict with nothing concurrent.
        let c = store
            .append(AppendRequest::new(
                s.clone(),
                ExpectedVersion::Exact(Version(n)),
                vec![tagged("Deposited", &[])],
            ))
            .await;
        match c {
            Err(StoreError::Conflict(c)) => {
                assert_eq!(c.actual, Version(12));
                assert!(c.concurrent_events.is_empty());
            }
            other => panic!("expected a conflict for expected version {n}, got {other:?}"),
        }
    }
    assert_still_works(&store).await;
}

fn types(n: usize) -> Vec<concord_core::EventType> {
    (0..n).map(|i| ty(&format!("Type{i}"))).collect()
}

fn tags(n: usize) -> Vec<concord_core::Tag> {
    (0..n).map(|i| tag(&format!("t:{i}"))).collect()
}

/// A filter may name up to 100 types and 32 tags, a query up to 100 items of up to 100
/// types and 32 tags each, and `rebase_unless` up to 100 types; every backend answers all
/// of these (and finds the events they match). One more is invalid input, refused before
/// anything is read or written, and the store works on.
pub async fn filters_and_queries_up_to_their_limits_work_and_beyond_are_refused(
    store: Arc<dyn EventStore>,
) {
    let s = stream("limits-1");
    let all_tags: Vec<String> = tags(TAGS_PER_FILTER_MAX)
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    let all_tags: Vec<&str> = all_tags.iter().map(String::as_str).collect();
    let last_type = format!("Type{}", TYPES_PER_FILTER_MAX - 1);
    write(
        &store,
        &s,
        ExpectedVersion::Any,
        vec![tagged(&last_type, &all_tags), tagged("Other", &["t:0"])],
    )
    .await;

    // Filters.
    let widest = Filter::all()
        .types(types(TYPES_PER_FILTER_MAX))
        .tags(tags(TAGS_PER_FILTER_MAX));
    let page = store.read_all(Position(1), &widest, 10).await.unwrap();
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.position.get())
            .collect::<Vec<_>>(),
        vec![1]
    );
    let page = store
        .read_all(
            Position(1),
            &Filter::all().types(types(TYPES_PER_FILTER_MAX)),
            10,
        )
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    for bad in [
        Filter::all().types(types(TYPES_PER_FILTER_MAX + 1)),
        Filter::all().types(types(501)),
        Filter::all().tags(tags(TAGS_PER_FILTER_MAX + 1)),
        Filter::all().tags(tags(65)),
    ] {
        let r = store.read_all(Position(1), &bad, 10).await;
        assert!(is_invalid(&r), "{r:?}");
        let mut sub = Arc::clone(&store).subscribe_all(Position(1), bad);
        let first = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut sub))
            .await
            .expect("a subscription through a filter beyond the limits ends at once");
        assert!(
            matches!(first, Some(Err(StoreError::Invalid(_)))),
            "{first:?}"
        );
    }

    // Queries and conditions.
    let widest_item = QueryItem {
        types: types(TYPES_PER_FILTER_MAX),
        tags: tags(TAGS_PER_FILTER_MAX),
    };
    let many_items = Query {
        items: (0..QUERY_ITEMS_MAX)
            .map(|i| {
                if i % 2 == 0 {
                    QueryItem {
                        types: types(TYPES_PER_FILTER_MAX),
                        tags: vec![],
                    }
                } else {
                    widest_item.clone()
                }
            })
            .collect(),
    };
    for q in [
        Query {
            items: vec![widest_item.clone()],
        },
        many_items,
    ] {
        let page = store.query(&q, Position(0), 10).await.unwrap();
        assert_eq!(
            page.events
                .iter()
                .map(|e| e.position.get())
                .collect::<Vec<_>>(),
            vec![1]
        );
        let request = MultiAppendRequest::from(AppendRequest::new(
            stream("limits-2"),
            ExpectedVersion::Any,
            vec![tagged("Other", &[])],
        ));
        let failed = tokio::time::timeout(
            WAIT,
            store.append_multi(request.clone().condition(q.clone(), Position(0))),
        )
        .await
        .expect("append_multi answered");
        assert!(
            matches!(&failed, Err(StoreError::ConditionFailed(c)) if c.matching_events.len() == 1),
            "{failed:?}"
        );
        let held =
            tokio::time::timeout(WAIT, store.append_multi(request.condition(q, Position(2))))
                .await
                .expect("append_multi answered");
        assert!(held.is_ok(), "{held:?}");
    }
    let beyond = [
        Query::item(types(TYPES_PER_FILTER_MAX + 1), vec![]),
        Query::item(vec![], tags(TAGS_PER_FILTER_MAX + 1)),
        Query::item(vec![ty("A")], tags(65)),
        Query {
            items: vec![
                QueryItem {
                    types: vec![ty("A")],
                    tags: vec![],
                };
                QUERY_ITEMS_MAX + 1
            ],
        },
    ];
    let head = store.head().await.unwrap();
    for q in beyond {
        let r = store.query(&q, Position(0), 10).await;
        assert!(is_invalid(&r), "{r:?}");
        let r = tokio::time::timeout(
            WAIT,
            store.append_multi(
                MultiAppendRequest::from(AppendRequest::new(
                    stream("limits-3"),
                    ExpectedVersion::Any,
                    vec![tagged("Other", &[])],
                ))
                .condition(q, Position(0)),
            ),
        )
        .await
        .expect("append_multi answered");
        assert!(is_invalid(&r), "{r:?}");
    }

    // rebase_unless.
    let at = store.stream_version(&s).await.unwrap();
    let rebased = store
        .append(
            AppendRequest::new(
                s.clone(),
                ExpectedVersion::Exact(Version(at.get() - 1)),
                vec![tagged("Other", &[])],
            )
            .rebase_unless(types(TYPES_PER_FILTER_MAX)),
        )
        .await;
    assert!(
        matches!(rebased, Ok(concord_core::AppendOutcome::Rebased { .. })),
        "{rebased:?}"
    );
    let head = Position(head.get() + 1);
    let r = store
        .append(
            AppendRequest::new(s.clone(), ExpectedVersion::Any, vec![tagged("Other", &[])])
                .rebase_unless(types(TYPES_PER_FILTER_MAX + 1)),
        )
        .await;
    assert!(is_invalid(&r), "{r:?}");
    assert_eq!(store.head().await.unwrap(), head, "a refused request wrote");
    assert_still_works(&store).await;
}
