//! Specs for appends across streams and under query conditions (API.md `POST /append`,
//! `POST /query`), and the two scenarios they exist for: transfers between accounts and
//! unique usernames.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use concord_core::{
    AppendOutcome, AppendRequest, Conflict, EventStore, ExpectedVersion, Json, MultiAppendOutcome,
    MultiAppendRequest, NewEvent, Position, Query, QueryItem, RecordedEvent, StoreError,
    StreamName, Version,
};
use serde_json::json;

use super::{WAIT, event, read_everything, read_whole_stream, stream, tag, tagged, ty, write};
use crate::scale;

fn part(s: &StreamName, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest::new(s.clone(), expected, events)
}

async fn multi(
    store: &Arc<dyn EventStore>,
    request: MultiAppendRequest,
) -> Result<MultiAppendOutcome, StoreError> {
    tokio::time::timeout(WAIT, store.append_multi(request))
        .await
        .expect("append_multi did not answer in time")
}

fn expect_conflicts(result: Result<MultiAppendOutcome, StoreError>) -> Vec<Conflict> {
    match result {
        Err(StoreError::Conflicts(c)) => c,
        other => panic!("expected version conflicts, got {other:?}"),
    }
}

fn expect_condition_failed(
    result: Result<MultiAppendOutcome, StoreError>,
) -> concord_core::ConditionFailed {
    match result {
        Err(StoreError::ConditionFailed(c)) => *c,
        other => panic!("expected a failed condition, got {other:?}"),
    }
}

fn username_query(name: &str) -> Query {
    Query::item(
        vec![ty("UserRegistered")],
        vec![tag(&format!("username:{name}"))],
    )
}

fn registration(name: &str) -> NewEvent {
    event("UserRegistered", json!({"username": name}))
        .with_tags(vec![tag(&format!("username:{name}"))])
}

/// A small deterministic generator, so a failing random run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> (Rng, u64) {
        let seed = std::env::var("CONCORD_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        (Rng(seed | 1), seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// All parts are written with consecutive positions in part order, or none is.
pub async fn multi_stream_append_writes_every_part_with_consecutive_positions(
    store: Arc<dyn EventStore>,
) {
    let (a, b, c) = (
        stream("account-1"),
        stream("account-2"),
        stream("account-3"),
    );
    write(
        &store,
        &c,
        ExpectedVersion::Any,
        vec![event("Deposited", json!({"amount": 1}))],
    )
    .await;
    let out = multi(
        &store,
        MultiAppendRequest::new(vec![
            part(
                &a,
                ExpectedVersion::NoStream,
                vec![
                    event("AccountOpened", json!({"owner": "a", "balance": 0})),
                    event("Deposited", json!({"amount": 5})),
                ],
            ),
            part(
                &b,
                ExpectedVersion::Exact(Version(0)),
                vec![event("AccountOpened", json!({"owner": "b", "balance": 0}))],
            ),
            part(
                &c,
                ExpectedVersion::Exact(Version(1)),
                vec![event("Withdrawn", json!({"amount": 1}))],
            ),
        ]),
    )
    .await
    .unwrap();
    assert!(!out.duplicate);
    assert_eq!(
        (out.first_position, out.last_position),
        (Position(2), Position(5))
    );
    let spans: Vec<(u64, u64, u64, u64)> = out
        .parts
        .iter()
        .map(|p| {
            assert!(matches!(p, AppendOutcome::Appended(_)), "{p:?}");
            let a = p.appended();
            (
                a.first_version.get(),
                a.last_version.get(),
                a.first_position.get(),
                a.last_position.get(),
            )
        })
        .collect();
    assert_eq!(spans, vec![(1, 2, 2, 3), (1, 1, 4, 4), (2, 2, 5, 5)]);
    let all = read_everything(&store).await;
    let order: Vec<(&str, u64)> = all
        .iter()
        .map(|e| (e.stream.as_str(), e.version.get()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("account-3", 1),
            ("account-1", 1),
            ("account-1", 2),
            ("account-2", 1),
            ("account-3", 2)
        ]
    );
    assert_eq!(store.head().await.unwrap(), Position(5));
}

/// One stale part fails the whole append: nothing of any part is written.
pub async fn multi_stream_append_writes_nothing_when_one_part_is_stale(store: Arc<dyn EventStore>) {
    let (a, b) = (stream("account-1"), stream("account-2"));
    write(
        &store,
        &b,
        ExpectedVersion::Any,
        vec![event("Deposited", json!({"amount": 1}))],
    )
    .await;
    let r = multi(
        &store,
        MultiAppendRequest::new(vec![
            part(
                &a,
                ExpectedVersion::NoStream,
                vec![event("Deposited", json!({"amount": 2}))],
            ),
            part(
                &b,
                ExpectedVersion::NoStream,
                vec![event("Deposited", json!({"amount": 3}))],
            ),
        ]),
    )
    .await;
    let conflicts = expect_conflicts(r);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].stream, b);
    assert_eq!(store.head().await.unwrap(), Position(1));
    assert_eq!(store.stream_version(&a).await.unwrap(), Version(0));
}

/// A conflict names every failing part, with its actual version and the events it missed.
pub async fn multi_stream_conflict_names_every_stale_part_with_its_missed_events(
    store: Arc<dyn EventStore>,
) {
    let (a, b, c) = (
        stream("account-1"),
        stream("account-2"),
        stream("account-3"),
    );
    for s in [&a, &b, &c] {
        write(
            &store,
            s,
            ExpectedVersion::Any,
            vec![event("Deposited", json!({"amount": 1}))],
        )
        .await;
    }
    write(
        &store,
        &a,
        ExpectedVersion::Any,
        vec![
            event("Deposited", json!({"amount": 2})),
            event("Withdrawn", json!({"amount": 1})),
        ],
    )
    .await;
    write(
        &store,
        &c,
        ExpectedVersion::Any,
        vec![event("AccountClosed", json!({}))],
    )
    .await;
    let r = multi(
        &store,
        MultiAppendRequest::new(vec![
            part(
                &a,
                ExpectedVersion::Exact(Version(1)),
                vec![event("Deposited", json!({"amount": 9}))],
            ),
            part(
                &b,
                ExpectedVersion::Exact(Version(1)),
                vec![event("Deposited", json!({"amount": 9}))],
            ),
            part(
                &c,
                ExpectedVersion::Exact(Version(1)),
                vec![event("Deposited", json!({"amount": 9}))],
            ),
        ]),
    )
    .await;
    let mut conflicts = expect_conflicts(r);
    conflicts.sort_by(|x, y| x.stream.cmp(&y.stream));
    assert_eq!(conflicts.len(), 2, "{conflicts:?}");
    assert_eq!(conflicts[0].stream, a);
    assert_eq!(conflicts[0].expected, ExpectedVersion::Exact(Version(1)));
    assert_eq!(conflicts[0].actual, Version(3));
    let missed: Vec<&str> = conflicts[0]
        .concurrent_events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(missed, vec!["Deposited", "Withdrawn"]);
    assert_eq!(conflicts[1].stream, c);
    assert_eq!(conflicts[1].actual, Version(2));
    assert_eq!(conflicts[1].concurrent_events.len(), 1);
    assert_eq!(
        conflicts[1].concurrent_events[0].event_type.as_str(),
        "AccountClosed"
    );
    assert_eq!(store.head().await.unwrap(), Position(6));
}

/// Re-sending a multi-stream append is a duplicate with the original versions and
/// positions, whatever the expectations say, and writes nothing.
pub async fn multi_stream_append_repeated_is_a_duplicate_with_the_original_positions(
    store: Arc<dyn EventStore>,
) {
    let (a, b) = (stream("account-1"), stream("account-2"));
    let request = MultiAppendRequest::new(vec![
        part(
            &a,
            ExpectedVersion::NoStream,
            vec![event("Withdrawn", json!({"amount": 5}))],
        ),
        part(
            &b,
            ExpectedVersion::NoStream,
            vec![event("Deposited", json!({"amount": 5}))],
        ),
    ])
    .condition(
        Query::item(vec![ty("Withdrawn"), ty("Deposited")], vec![]),
        Position(0),
    );
    let first = multi(&store, request.clone()).await.unwrap();
    let again = multi(&store, request.clone()).await.unwrap();
    assert!(again.duplicate);
    assert!(again.parts.iter().all(AppendOutcome::is_duplicate));
    let where_ = |o: &MultiAppendOutcome| {
        o.parts
            .iter()
            .map(|p| p.appended().clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(where_(&again), where_(&first));
    assert_eq!(
        (again.first_position, again.last_position),
        (Position(1), Position(2))
    );
    assert_eq!(store.head().await.unwrap(), Position(2));
    // Some parts stored and others new: the ids were reused; nothing is written.
    let mut mixed = request;
    mixed.parts.push(part(
        &stream("account-3"),
        ExpectedVersion::Any,
        vec![event("Deposited", json!({"amount": 1}))],
    ));
    mixed.condition = None;
    assert!(matches!(
        multi(&store, mixed).await,
        Err(StoreError::PartialDuplicate(_))
    ));
    assert_eq!(store.head().await.unwrap(), Position(2));
}

/// A part may carry `rebase_unless` and is rebased as a single append would be.
pub async fn multi_stream_part_is_rebased_as_a_single_append_would_be(store: Arc<dyn EventStore>) {
    let (a, b) = (stream("account-1"), stream("account-2"));
    write(
        &store,
        &a,
        ExpectedVersion::Any,
        vec![event("Deposited", json!({"amount": 100}))],
    )
    .await;
    write(
        &store,
        &b,
        ExpectedVersion::Any,
        vec![
            event("Deposited", json!({"amount": 1})),
            event("Deposited", json!({"amount": 2})),
        ],
    )
    .await;
    let out = multi(
        &store,
        MultiAppendRequest::new(vec![
            part(
                &a,
                ExpectedVersion::Exact(Version(1)),
                vec![event("Withdrawn", json!({"amount": 5}))],
            ),
            part(
                &b,
                ExpectedVersion::Exact(Version(1)),
                vec![event("Deposited", json!({"amount": 5}))],
            )
            .rebase_unless(vec![ty("AccountClosed")]),
        ]),
    )
    .await
    .unwrap();
    assert!(matches!(out.parts[0], AppendOutcome::Appended(_)));
    match &out.parts[1] {
        AppendOutcome::Rebased {
            appended,
            expected_version,
            concurrent_events,
        } => {
            assert_eq!(appended.first_version, Version(3));
            assert_eq!(*expected_version, Version(1));
            assert_eq!(concurrent_events.len(), 1);
            assert_eq!(concurrent_events[0].version, Version(2));
        }
        other => panic!("expected the second part rebased, got {other:?}"),
    }
    write(
        &store,
        &b,
        ExpectedVersion::Any,
        vec![event("AccountClosed", json!({}))],
    )
    .await;
    let refused = multi(
        &store,
        MultiAppendRequest::new(vec![
            part(
                &a,
                ExpectedVersion::Exact(Version(2)),
                vec![event("Withdrawn", json!({"amount": 5}))],
            ),
            part(
                &b,
                ExpectedVersion::Exact(Version(3)),
                vec![event("Deposited", json!({"amount": 5}))],
            )
            .rebase_unless(vec![ty("AccountClosed")]),
        ]),
    )
    .await;
    let conflicts = expect_conflicts(refused);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].stream, b);
    assert_eq!(store.stream_version(&a).await.unwrap(), Version(2));
}

/// A condition whose query matches nothing after `after` never fails: not on matching
/// events at or before `after`, not on events that match only part of an item.
pub async fn condition_that_is_not_violated_lets_the_append_through(store: Arc<dyn EventStore>) {
    let u1 = stream("user-1");
    write(
        &store,
        &u1,
        ExpectedVersion::Any,
        vec![registration("alice")],
    )
    .await;
    let head = store.head().await.unwrap();
    // After the read: events that match a type or a tag of the item, but not both.
    write(
        &store,
        &stream("user-2"),
        ExpectedVersion::Any,
        vec![registration("bob")],
    )
    .await;
    write(
        &store,
        &stream("user-3"),
        ExpectedVersion::Any,
        vec![tagged("UserRenamed", &["username:alice"])],
    )
    .await;
    write(
        &store,
        &stream("other-1"),
        ExpectedVersion::Any,
        vec![tagged("UserRegistered", &["username:carol"])],
    )
    .await;
    let query = Query {
        items: vec![
            QueryItem {
                types: vec![ty("UserRegistered")],
                tags: vec![tag("username:alice")],
            },
            QueryItem {
                types: vec![],
                tags: vec![tag("username:alice"), tag("vip")],
            },
        ],
    };
    let out = multi(
        &store,
        MultiAppendRequest::from(part(
            &stream("user-4"),
            ExpectedVersion::NoStream,
            vec![event("UserNoted", json!({}))],
        ))
        .condition(query, head),
    )
    .await
    .unwrap();
    assert_eq!(out.first_position, Position(5));
    // The empty query matches everything, so it passes exactly when nothing came after.
    let head = store.head().await.unwrap();
    let out = multi(
        &store,
        MultiAppendRequest::from(part(
            &u1,
            ExpectedVersion::Any,
            vec![event("UserNoted", json!({}))],
        ))
        .condition(Query::everything(), head),
    )
    .await
    .unwrap();
    assert_eq!(out.last_position, Position(6));
}

/// A condition fails when events match after `after`; the failure lists the first 100 of
/// them in position order, and nothing is written.
pub async fn condition_fails_with_the_first_100_matching_events(store: Arc<dyn EventStore>) {
    let s = stream("user-1");
    write(
        &store,
        &s,
        ExpectedVersion::Any,
        vec![tagged("Seen", &["k:1"])],
    )
    .await;
    let after = store.head().await.unwrap();
    let mut batch = Vec::new();
    for i in 0..130 {
        batch.push(if i % 2 == 0 {
            tagged("Seen", &["k:1"])
        } else {
            tagged("Seen", &["k:2"])
        });
    }
    write(&store, &s, ExpectedVersion::Any, batch).await;
    write(
        &store,
        &stream("user-2"),
        ExpectedVersion::Any,
        (0..100).map(|_| tagged("Seen", &["k:1"])).collect(),
    )
    .await;
    let head = store.head().await.unwrap();
    let failed = expect_condition_failed(
        multi(
            &store,
            MultiAppendRequest::from(part(
                &stream("user-3"),
                ExpectedVersion::Any,
                vec![event("X", json!({}))],
            ))
            .condition(Query::item(vec![], vec![tag("k:1")]), after),
        )
        .await,
    );
    assert_eq!(failed.after, after);
    assert_eq!(failed.matching_events.len(), 100);
    // 65 matches in the mixed batch (every other event), then the next 35 of user-2's.
    let expected: Vec<u64> = (0..65)
        .map(|i| after.get() + 1 + 2 * i)
        .chain((0..35).map(|i| after.get() + 131 + i))
        .collect();
    let got: Vec<u64> = failed
        .matching_events
        .iter()
        .map(|e| e.position.get())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(
        store.stream_version(&stream("user-3")).await.unwrap(),
        Version(0)
    );
    // A type-only item is checked too.
    let failed = expect_condition_failed(
        multi(
            &store,
            MultiAppendRequest::from(part(
                &stream("user-3"),
                ExpectedVersion::Any,
                vec![event("X", json!({}))],
            ))
            .condition(
                Query::item(vec![ty("Nope"), ty("Seen")], vec![]),
                Position(head.get() - 1),
            ),
        )
        .await,
    );
    assert_eq!(failed.matching_events.len(), 1);
    assert_eq!(failed.matching_events[0].position, head);
}

/// A query read returns the matching events after a position, in order, in pages, and the
/// head to use as a condition's `after`.
pub async fn query_read_returns_matching_events_and_the_head(store: Arc<dyn EventStore>) {
    let s = stream("user-1");
    let mut events = Vec::new();
    for i in 0..250 {
        events.push(if i % 5 == 0 {
            registration(&format!("u{i}"))
        } else {
            tagged("Seen", &["k:1"])
        });
    }
    write(&store, &s, ExpectedVersion::Any, events).await;
    let q = Query::item(vec![ty("UserRegistered")], vec![]);
    let mut after = Position(0);
    let mut got = Vec::new();
    loop {
        let page = store.query(&q, after, 20).await.unwrap();
        assert_eq!(page.head, Position(250));
        assert!(page.events.len() <= 20);
        got.extend(page.events.iter().map(|e| e.position.get()));
        match page.next {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(got, (0..50).map(|i| 1 + 5 * i).collect::<Vec<u64>>());
    let tail = store
        .query(&username_query("u245"), Position(0), 100)
        .await
        .unwrap();
    assert_eq!(tail.events.len(), 1);
    assert_eq!(tail.events[0].position, Position(246));
    assert_eq!(tail.next, None);
    let none = store.query(&q, Position(250), 100).await.unwrap();
    assert!(none.events.is_empty());
    assert_eq!((none.head, none.next), (Position(250), None));
    let all = store
        .query(&Query::everything(), Position(240), 100)
        .await
        .unwrap();
    assert_eq!(all.events.len(), 10);
}

/// Bad queries and bad multi-stream appends are refused, and nothing is written.
pub async fn bad_queries_and_parts_are_rejected_and_write_nothing(store: Arc<dyn EventStore>) {
    write(
        &store,
        &stream("user-1"),
        ExpectedVersion::Any,
        vec![registration("alice")],
    )
    .await;
    // Empty tags and tags with commas cannot even be constructed.
    assert!(concord_core::Tag::new("").is_err());
    assert!(concord_core::Tag::new("a,b").is_err());
    let neither = Query {
        items: vec![QueryItem::default()],
    };
    let too_many = Query {
        items: vec![
            QueryItem {
                types: vec![ty("A")],
                tags: vec![]
            };
            concord_core::QUERY_ITEMS_MAX + 1
        ],
    };
    for bad in [&neither, &too_many] {
        let r = multi(
            &store,
            MultiAppendRequest::from(part(
                &stream("user-2"),
                ExpectedVersion::Any,
                vec![registration("bob")],
            ))
            .condition(bad.clone(), Position(0)),
        )
        .await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
        let r = store.query(bad, Position(0), 10).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    }
    let no_parts = multi(&store, MultiAppendRequest::new(vec![])).await;
    assert!(
        matches!(no_parts, Err(StoreError::Invalid(_))),
        "{no_parts:?}"
    );
    let s = stream("user-2");
    let twice = multi(
        &store,
        MultiAppendRequest::new(vec![
            part(&s, ExpectedVersion::Any, vec![registration("bob")]),
            part(&s, ExpectedVersion::Any, vec![registration("carol")]),
        ]),
    )
    .await;
    assert!(matches!(twice, Err(StoreError::Invalid(_))), "{twice:?}");
    let empty_part = multi(
        &store,
        MultiAppendRequest::new(vec![
            part(&s, ExpectedVersion::Any, vec![registration("bob")]),
            part(&stream("user-3"), ExpectedVersion::Any, vec![]),
        ]),
    )
    .await;
    assert!(
        matches!(empty_part, Err(StoreError::Invalid(_))),
        "{empty_part:?}"
    );
    assert_eq!(store.head().await.unwrap(), Position(1));
}

/// 32 concurrent registrations of one username: exactly one succeeds, and every other
/// fails its condition naming the winner's event.
pub async fn concurrent_registrations_of_one_username_let_exactly_one_win(
    store: Arc<dyn EventStore>,
) {
    const TASKS: usize = 32;
    write(
        &store,
        &stream("user-0"),
        ExpectedVersion::Any,
        vec![registration("bob")],
    )
    .await;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 1..=TASKS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let q = username_query("alice");
            let read = store.query(&q, Position(0), 100).await.unwrap();
            assert!(read.events.is_empty());
            // Every task has read before any registers: they all race on the same head.
            barrier.wait().await;
            let request = MultiAppendRequest::from(AppendRequest::new(
                stream(&format!("user-{i}")),
                ExpectedVersion::NoStream,
                vec![registration("alice")],
            ))
            .condition(q, read.head);
            (i, store.append_multi(request).await)
        }));
    }
    let results = tokio::time::timeout(WAIT, futures::future::join_all(tasks))
        .await
        .expect("registrations did not finish in time");
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for r in results {
        let (i, r) = r.unwrap();
        match r {
            Ok(out) => winners.push((i, out)),
            Err(StoreError::ConditionFailed(c)) => losers.push(c),
            Err(e) => panic!("registration {i} failed with {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one registration must win");
    assert_eq!(losers.len(), TASKS - 1);
    let (w, out) = &winners[0];
    let winner = read_whole_stream(&store, &stream(&format!("user-{w}"))).await;
    assert_eq!(winner.len(), 1);
    assert_eq!(winner[0].position, out.first_position);
    for c in &losers {
        assert_eq!(c.matching_events.len(), 1, "{c:?}");
        assert_eq!(c.matching_events[0].id, winner[0].id);
    }
    let registered = store
        .query(&username_query("alice"), Position(0), 100)
        .await
        .unwrap();
    assert_eq!(registered.events.len(), 1);
    assert_eq!(store.head().await.unwrap(), Position(2));
}

#[derive(Clone, Copy, Debug)]
struct Account {
    version: Version,
    balance: i64,
}

async fn load_account(store: &Arc<dyn EventStore>, s: &StreamName) -> Account {
    let events = read_whole_stream(store, s).await;
    let mut balance = 0i64;
    for e in &events {
        balance += amount_change(e);
    }
    Account {
        version: Version(events.len() as u64),
        balance,
    }
}

fn amount_change(e: &RecordedEvent) -> i64 {
    let data = e.data.to_value().unwrap();
    match e.event_type.as_str() {
        "AccountOpened" => data["balance"].as_i64().unwrap(),
        "Deposited" => data["amount"].as_i64().unwrap(),
        "Withdrawn" => -data["amount"].as_i64().unwrap(),
        _ => 0,
    }
}

/// 16 tasks × 100 random transfers among 8 accounts, each a two-part append retried on
/// conflict: at every position that ends an append the total balance is the opening
/// total, and no account ever goes negative.
pub async fn concurrent_transfers_conserve_the_total_at_every_position(store: Arc<dyn EventStore>) {
    const TASKS: usize = 16;
    const ACCOUNTS: u64 = 8;
    const OPENING: i64 = 1000;
    let per_task = 100 * scale();
    let (mut rng, seed) = Rng::seeded();
    eprintln!("transfers seed {seed} (CONCORD_TEST_SEED replays it)");
    for i in 0..ACCOUNTS {
        write(
            &store,
            &stream(&format!("account-{i}")),
            ExpectedVersion::NoStream,
            vec![
                event(
                    "AccountOpened",
                    json!({"owner": format!("owner-{i}"), "balance": OPENING}),
                )
                .with_tags(vec![tag(&format!("account:{i}"))]),
            ],
        )
        .await;
    }
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        let mut plan = Vec::with_capacity(per_task);
        for _ in 0..per_task {
            let from = rng.below(ACCOUNTS);
            let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
            plan.push((from, to, 1 + rng.below(400) as i64));
        }
        tasks.push(tokio::spawn(async move {
            let (mut done, mut declined, mut retries) = (0usize, 0usize, 0usize);
            for (n, (from, to, amount)) in plan.into_iter().enumerate() {
                let (fs, ts) = (
                    stream(&format!("account-{from}")),
                    stream(&format!("account-{to}")),
                );
                let transfer = format!("t{t}-{n}");
                let meta = Json::from_value(&json!({"transfer": transfer}));
                loop {
                    let (f, d) = (
                        load_account(&store, &fs).await,
                        load_account(&store, &ts).await,
                    );
                    if f.balance < amount {
                        declined += 1;
                        break;
                    }
                    let request = MultiAppendRequest::new(vec![
                        part(
                            &fs,
                            ExpectedVersion::Exact(f.version),
                            vec![
                                event("Withdrawn", json!({"amount": amount}))
                                    .with_metadata(meta.clone())
                                    .with_tags(vec![tag(&format!("account:{from}"))]),
                            ],
                        ),
                        part(
                            &ts,
                            ExpectedVersion::Exact(d.version),
                            vec![
                                event("Deposited", json!({"amount": amount}))
                                    .with_metadata(meta.clone())
                                    .with_tags(vec![tag(&format!("account:{to}"))]),
                            ],
                        ),
                    ]);
                    match store.append_multi(request).await {
                        Ok(out) => {
                            assert_eq!(out.last_position.get(), out.first_position.get() + 1);
                            done += 1;
                            break;
                        }
                        Err(StoreError::Conflicts(c)) => {
                            assert!(!c.is_empty());
                            retries += 1;
                            tokio::task::yield_now().await;
                        }
                        Err(e) => panic!("transfer {transfer} failed: {e}"),
                    }
                }
            }
            (done, declined, retries)
        }));
    }
    let joined = tokio::time::timeout(WAIT * 8 * scale() as u32, futures::future::join_all(tasks))
        .await
        .expect("the transfers did not finish in time");
    let (mut done, mut declined, mut retries) = (0, 0, 0);
    for r in joined {
        let (d, n, x) = r.unwrap();
        done += d;
        declined += n;
        retries += x;
    }
    assert_eq!(done + declined, TASKS * per_task);
    let log = read_everything(&store).await;
    assert_eq!(log.len() as u64, ACCOUNTS + 2 * done as u64);
    let total = OPENING * ACCOUNTS as i64;
    let mut balances: BTreeMap<StreamName, i64> = BTreeMap::new();
    let mut opened = 0;
    let mut pending: Option<(&RecordedEvent, i64)> = None;
    for e in &log {
        let change = amount_change(e);
        let b = balances.entry(e.stream.clone()).or_default();
        *b += change;
        assert!(
            *b >= 0,
            "{} is negative at position {}",
            e.stream,
            e.position
        );
        match (e.event_type.as_str(), pending.take()) {
            ("AccountOpened", None) => opened += 1,
            ("Withdrawn", None) => pending = Some((e, -change)),
            ("Deposited", Some((w, amount))) => {
                assert_eq!(
                    change, amount,
                    "transfer at {} moves different amounts",
                    w.position
                );
                assert_eq!(e.position, w.position.next());
                assert_eq!(
                    e.metadata, w.metadata,
                    "the two halves of a transfer are not adjacent"
                );
                assert_ne!(e.stream, w.stream);
            }
            (t, p) => panic!("unexpected {t} at position {} (pending {p:?})", e.position),
        }
        if pending.is_none() && opened == ACCOUNTS {
            assert_eq!(
                balances.values().sum::<i64>(),
                total,
                "total changed at position {}",
                e.position
            );
        }
    }
    assert!(pending.is_none());
    eprintln!(
        "{done} transfers, {declined} declined for lack of funds, {retries} conflicts retried"
    );
}
