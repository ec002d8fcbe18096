//! Model-based property test: random operation sequences run against a backend and
//! against a fresh [`MemoryStore`] (the reference model), with identical outcomes required.
//!
//! Each case is a sequence of appends (random expectations, stale and ahead ones included,
//! server-side rebase, reused ids, multi-event and bulk appends of >100 events, several
//! streams with Unicode and 256-byte names, some invalid input) and reads (stream pages both
//! ways, `read_all` with filters, listings, versions, subscriptions). Every step's outcome
//! must be the same on both stores: versions, positions, conflict actual version and
//! concurrent events, duplicate flags, partial duplicates, and what reads return. After
//! the sequence, the whole log must be equal and satisfy the invariants of STYLE.md §2.5
//! (versions consecutive from 1 per stream, positions gap-free and increasing).
//!
//! A backend calls [`run_model_check`] from a plain `#[test]` (not inside a runtime), or
//! uses [`model_check!`](crate::model_check). The run prints its seed; set
//! `CONCORD_TEST_SEED` to replay one, and `CONCORD_TEST_SCALE` to run more cases.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use concord_core::{
    AppendOutcome, AppendRequest, Appended, Category, Direction, EventId, EventStore, EventType,
    ExpectedVersion, Filter, Json, MemoryStore, NewEvent, Position, RecordedEvent, StoreError,
    StreamName, Tag, Version,
};
use futures::StreamExt;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::{TestStore, scale};

/// Cases per run before `CONCORD_TEST_SCALE` multiplies them: a few seconds on the
/// embedded store.
pub const DEFAULT_CASES: u32 = 48;

const TYPES: [&str; 4] = ["Deposited", "Withdrawn", "AccountClosed", "BidPlaced"];
const TAGS: [&str; 3] = ["account:1", "vip", "zoë"];
const CATEGORIES: [&str; 5] = ["account", "auction", "ünïcødé", "doc", "a"];
const PREFIXES: [&str; 7] = ["", "account", "account-1", "ü", "doc-é", "a", "b"];

/// The streams a case appends to: plain, Unicode, boundary lengths (1 and 256 bytes), and
/// one differing from another only in case.
fn stream_names() -> Vec<StreamName> {
    let long = format!("doc-{}", "é".repeat(126));
    [
        "account-1",
        "account-2",
        "auction-17",
        "ünïcødé-流",
        long.as_str(),
        "a",
        "Account-1",
    ]
    .iter()
    .map(|n| StreamName::new(*n).unwrap())
    .collect()
}

/// A writer's claim, resolved against the model's state when the step runs.
#[derive(Clone, Debug)]
pub enum Expect {
    /// `any`.
    Any,
    /// `no_stream`.
    NoStream,
    /// `exists`.
    Exists,
    /// Exactly the stream's current version plus this (negative: stale; positive: ahead).
    Relative(i8),
    /// Exactly this version.
    Exact(u64),
}

/// Where an event's id comes from.
#[derive(Clone, Debug)]
pub enum IdSpec {
    /// A new id.
    Fresh,
    /// The id of an earlier event of the case (possibly of this very append).
    Reuse(usize),
}

/// One event of an append.
#[derive(Clone, Debug)]
pub struct EventSpec {
    /// Its id.
    pub id: IdSpec,
    /// Index into the event types.
    pub event_type: usize,
    /// Indexes into the tags.
    pub tags: Vec<usize>,
    /// Data.
    pub amount: u32,
}

/// A `read_all` filter.
#[derive(Clone, Debug)]
pub struct FilterSpec {
    /// Index into the categories.
    pub category: Option<usize>,
    /// Indexes into the event types.
    pub types: Vec<usize>,
    /// Indexes into the tags.
    pub tags: Vec<usize>,
}

/// One step of a case.
#[derive(Clone, Debug)]
pub enum Op {
    /// An append of a few events.
    Append {
        /// Index into the streams.
        stream: usize,
        /// The claim.
        expected: Expect,
        /// The events (sometimes none: invalid).
        events: Vec<EventSpec>,
        /// Server-side rebase unless one of these types (indexes) is concurrent.
        rebase_unless: Option<Vec<usize>>,
    },
    /// The exact events of an earlier append again, under a new claim.
    Resend {
        /// Which earlier append.
        which: usize,
        /// The claim.
        expected: Expect,
    },
    /// Many events at once, to reach versions and conflicts past 100.
    Bulk {
        /// Index into the streams.
        stream: usize,
        /// How many events.
        count: usize,
    },
    /// A page of one stream.
    ReadStream {
        /// Index into the streams.
        stream: usize,
        /// From version.
        from: u64,
        /// Backward instead of forward.
        backward: bool,
        /// Page size.
        limit: usize,
    },
    /// The global log from a position through a filter, paged to its end.
    ReadAll {
        /// From position.
        from: u64,
        /// The filter.
        filter: FilterSpec,
        /// Page size.
        limit: usize,
    },
    /// A listing of streams.
    ListStreams {
        /// Index into the prefixes.
        prefix: usize,
        /// After this stream (index).
        after: Option<usize>,
        /// Page size.
        limit: usize,
    },
    /// One stream's version and the head.
    StreamVersion {
        /// Index into the streams.
        stream: usize,
    },
    /// The stored part of a subscription, to the global log or one stream.
    Subscribe {
        /// From position (or version, for a stream).
        from: u64,
        /// A stream (index), or the global log.
        stream: Option<usize>,
    },
}

fn expect_strategy() -> impl Strategy<Value = Expect> {
    prop_oneof![
        2 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        1 => Just(Expect::Exists),
        5 => (-3i8..=2).prop_map(Expect::Relative),
        1 => (0u64..=140).prop_map(Expect::Exact),
    ]
}

fn event_strategy() -> impl Strategy<Value = EventSpec> {
    let id = prop_oneof![6 => Just(IdSpec::Fresh), 1 => any::<usize>().prop_map(IdSpec::Reuse)];
    (id, 0..TYPES.len(), vec(0..TAGS.len(), 0..3), any::<u32>()).prop_map(
        |(id, event_type, tags, amount)| EventSpec {
            id,
            event_type,
            tags,
            amount,
        },
    )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let streams = stream_names().len();
    let events = prop_oneof![1 => Just(Vec::new()), 15 => vec(event_strategy(), 1..5)];
    let rebase = proptest::option::weighted(0.4, vec(0..TYPES.len(), 0..3));
    let filter = (
        proptest::option::of(0..CATEGORIES.len()),
        vec(0..TYPES.len(), 0..3),
        vec(0..TAGS.len(), 0..2),
    )
        .prop_map(|(category, types, tags)| FilterSpec {
            category,
            types,
            tags,
        });
    prop_oneof![
        8 => (0..streams, expect_strategy(), events, rebase)
            .prop_map(|(stream, expected, events, rebase_unless)| Op::Append { stream, expected, events, rebase_unless }),
        2 => (any::<usize>(), expect_strategy()).prop_map(|(which, expected)| Op::Resend { which, expected }),
        1 => (0..streams, 1usize..=130).prop_map(|(stream, count)| Op::Bulk { stream, count }),
        2 => (0..streams, 0u64..=150, any::<bool>(), 1usize..=40)
            .prop_map(|(stream, from, backward, limit)| Op::ReadStream { stream, from, backward, limit }),
        2 => (0u64..=400, filter, 1usize..=60).prop_map(|(from, filter, limit)| Op::ReadAll { from, filter, limit }),
        1 => (0..PREFIXES.len(), proptest::option::of(0..streams), 1usize..=4)
            .prop_map(|(prefix, after, limit)| Op::ListStreams { prefix, after, limit }),
        1 => (0..streams).prop_map(|stream| Op::StreamVersion { stream }),
        1 => (0u64..=300, proptest::option::of(0..streams)).prop_map(|(from, stream)| Op::Subscribe { from, stream }),
    ]
}

/// The random operation sequences of the model check.
pub fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    vec(op_strategy(), 1..40)
}

/// An event as both stores must report it (everything but the recording time).
#[derive(Clone, PartialEq, Debug)]
struct Seen {
    stream: String,
    version: u64,
    position: u64,
    id: EventId,
    event_type: String,
    data: serde_json::Value,
    metadata: serde_json::Value,
    tags: Vec<String>,
}

fn seen(e: &RecordedEvent) -> Seen {
    Seen {
        stream: e.stream.as_str().to_owned(),
        version: e.version.get(),
        position: e.position.get(),
        id: e.id,
        event_type: e.event_type.as_str().to_owned(),
        data: e.data.to_value().unwrap_or(serde_json::Value::Null),
        metadata: e.metadata.to_value().unwrap_or(serde_json::Value::Null),
        tags: e.tags.iter().map(|t| t.as_str().to_owned()).collect(),
    }
}

/// What one step observed; the two stores must observe the same.
#[derive(Clone, PartialEq, Debug)]
enum Observed {
    Appended(Appended),
    Rebased {
        appended: Appended,
        expected_version: Version,
        concurrent: Vec<Seen>,
    },
    Duplicate(Appended),
    Conflict {
        actual: Version,
        expected: ExpectedVersion,
        concurrent: Vec<Seen>,
        truncated: bool,
    },
    PartialDuplicate(Vec<EventId>),
    Invalid,
    TooLarge,
    Failed(String),
    Events(Vec<Seen>),
    All {
        events: Vec<Seen>,
        head: Position,
    },
    Streams(Vec<(String, Version, Position)>),
    Versions {
        version: Version,
        head: Position,
    },
}

fn observe_append(result: Result<AppendOutcome, StoreError>) -> Observed {
    match result {
        Ok(AppendOutcome::Appended(a)) => Observed::Appended(a),
        Ok(AppendOutcome::Duplicate(a)) => Observed::Duplicate(a),
        Ok(AppendOutcome::Rebased {
            appended,
            expected_version,
            concurrent_events,
        }) => Observed::Rebased {
            appended,
            expected_version,
            concurrent: concurrent_events.iter().map(seen).collect(),
        },
        Err(StoreError::Conflict(c)) => Observed::Conflict {
            actual: c.actual,
            expected: c.expected,
            concurrent: c.concurrent_events.iter().map(seen).collect(),
            truncated: c.truncated,
        },
        Err(StoreError::PartialDuplicate(p)) => {
            let mut ids = p.existing_ids.clone();
            ids.sort_unstable();
            Observed::PartialDuplicate(ids)
        }
        Err(StoreError::Invalid(_)) => Observed::Invalid,
        Err(StoreError::TooLarge(_)) => Observed::TooLarge,
        Err(e) => Observed::Failed(e.to_string()),
    }
}

/// Builds requests with ids that are the same for both stores.
#[derive(Default)]
struct Builder {
    ids: Vec<EventId>,
    requests: Vec<AppendRequest>,
}

impl Builder {
    fn fresh_id(&mut self) -> EventId {
        // Deterministic, distinct, and recognisable in a failure report.
        let n = self.ids.len() as u128 + 1;
        let id: EventId = format!("{:032x}", 0xc0c0_0000_0000_0000_0000_0000_0000_0000u128 + n)
            .parse()
            .unwrap();
        self.ids.push(id);
        id
    }

    fn event(&mut self, spec: &EventSpec) -> NewEvent {
        let id = match spec.id {
            IdSpec::Reuse(k) if !self.ids.is_empty() => self.ids[k % self.ids.len()],
            _ => self.fresh_id(),
        };
        let tags = spec
            .tags
            .iter()
            .map(|&t| Tag::new(TAGS[t]).unwrap())
            .collect();
        NewEvent::new(
            EventType::new(TYPES[spec.event_type]).unwrap(),
            Json::from_value(&serde_json::json!({"amount": spec.amount})),
        )
        .with_id(id)
        .with_tags(tags)
    }
}

fn resolve(expect: &Expect, current: Version) -> ExpectedVersion {
    match *expect {
        Expect::Any => ExpectedVersion::Any,
        Expect::NoStream => ExpectedVersion::NoStream,
        Expect::Exists => ExpectedVersion::Exists,
        Expect::Relative(d) => {
            let v = i128::from(current.get()) + i128::from(d);
            ExpectedVersion::Exact(Version(u64::try_from(v.max(0)).unwrap_or(0)))
        }
        Expect::Exact(v) => ExpectedVersion::Exact(Version(v)),
    }
}

fn filter_of(spec: &FilterSpec) -> Filter {
    let mut f = Filter::all()
        .types(
            spec.types
                .iter()
                .map(|&t| EventType::new(TYPES[t]).unwrap())
                .collect(),
        )
        .tags(
            spec.tags
                .iter()
                .map(|&t| Tag::new(TAGS[t]).unwrap())
                .collect(),
        );
    if let Some(c) = spec.category {
        f = f.category(Category::new(CATEGORIES[c]).unwrap());
    }
    f
}

async fn read_all_to_end(
    store: &Arc<dyn EventStore>,
    from: Position,
    filter: &Filter,
    limit: usize,
) -> Result<Observed, String> {
    let mut events = Vec::new();
    let mut from = from;
    for _ in 0..10_000 {
        let page = store
            .read_all(from, filter, limit)
            .await
            .map_err(|e| e.to_string())?;
        if page.events.len() > limit {
            return Err(format!(
                "read_all returned {} events for limit {limit}",
                page.events.len()
            ));
        }
        if page.next_from < from {
            return Err(format!(
                "read_all's next_from went back from {from} to {}",
                page.next_from
            ));
        }
        events.extend(page.events.iter().map(seen));
        if page.is_caught_up() {
            return Ok(Observed::All {
                events,
                head: page.head,
            });
        }
        if page.next_from == from && page.events.is_empty() {
            return Err(format!(
                "read_all from {from} made no progress: no events, next_from {from}, head {}, not caught up",
                page.head
            ));
        }
        from = page.next_from;
    }
    Err("read_all never caught up".to_owned())
}

async fn subscribe_take(
    store: &Arc<dyn EventStore>,
    from: u64,
    stream: Option<&StreamName>,
    n: usize,
) -> Result<Observed, String> {
    let mut sub = match stream {
        Some(s) => Arc::clone(store).subscribe_stream(s.clone(), Version(from)),
        None => Arc::clone(store).subscribe_all(Position(from), Filter::all()),
    };
    let mut events = Vec::new();
    let taken = tokio::time::timeout(Duration::from_secs(10), async {
        while events.len() < n {
            match sub.next().await {
                Some(Ok(e)) => events.push(seen(&e)),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err(format!("subscription ended after {} events", events.len())),
            }
        }
        Ok(())
    })
    .await;
    match taken {
        Ok(Ok(())) => Ok(Observed::Events(events)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "subscription delivered {} of {n} stored events within 10 s",
            events.len()
        )),
    }
}

/// Runs one step on `store`.
async fn observe(store: &Arc<dyn EventStore>, step: &Step) -> Result<Observed, String> {
    Ok(match step {
        Step::Append(request) => observe_append(store.append(request.clone()).await),
        Step::ReadStream {
            stream,
            from,
            direction,
            limit,
        } => {
            let events = store
                .read_stream(stream, *from, *direction, *limit)
                .await
                .map_err(|e| e.to_string())?;
            Observed::Events(events.iter().map(seen).collect())
        }
        Step::ReadAll {
            from,
            filter,
            limit,
        } => read_all_to_end(store, *from, filter, *limit).await?,
        Step::ListStreams {
            prefix,
            after,
            limit,
        } => {
            let listed = store
                .list_streams(prefix, after.as_ref(), *limit)
                .await
                .map_err(|e| e.to_string())?;
            Observed::Streams(
                listed
                    .into_iter()
                    .map(|i| (i.stream.as_str().to_owned(), i.version, i.last_position))
                    .collect(),
            )
        }
        Step::StreamVersion(s) => Observed::Versions {
            version: store.stream_version(s).await.map_err(|e| e.to_string())?,
            head: store.head().await.map_err(|e| e.to_string())?,
        },
        Step::Subscribe { from, stream, n } => {
            subscribe_take(store, *from, stream.as_ref(), *n).await?
        }
    })
}

/// An [`Op`] made concrete: the same request for both stores.
#[derive(Debug)]
enum Step {
    Append(AppendRequest),
    ReadStream {
        stream: StreamName,
        from: Version,
        direction: Direction,
        limit: usize,
    },
    ReadAll {
        from: Position,
        filter: Filter,
        limit: usize,
    },
    ListStreams {
        prefix: String,
        after: Option<StreamName>,
        limit: usize,
    },
    StreamVersion(StreamName),
    Subscribe {
        from: u64,
        stream: Option<StreamName>,
        n: usize,
    },
}

async fn make_step(
    op: &Op,
    builder: &mut Builder,
    model: &Arc<dyn EventStore>,
    streams: &[StreamName],
) -> Option<Step> {
    let name = |i: usize| streams[i % streams.len()].clone();
    let version = |s: StreamName| {
        let model = Arc::clone(model);
        async move { model.stream_version(&s).await.unwrap() }
    };
    Some(match op {
        Op::Append {
            stream,
            expected,
            events,
            rebase_unless,
        } => {
            let s = name(*stream);
            let expected = resolve(expected, version(s.clone()).await);
            let events = events.iter().map(|e| builder.event(e)).collect();
            let mut request = AppendRequest::new(s, expected, events);
            if let Some(types) = rebase_unless {
                request = request.rebase_unless(
                    types
                        .iter()
                        .map(|&t| EventType::new(TYPES[t]).unwrap())
                        .collect(),
                );
            }
            builder.requests.push(request.clone());
            Step::Append(request)
        }
        Op::Resend { which, expected } => {
            if builder.requests.is_empty() {
                return None;
            }
            let mut request = builder.requests[which % builder.requests.len()].clone();
            request.expected = resolve(expected, version(request.stream.clone()).await);
            Step::Append(request)
        }
        Op::Bulk { stream, count } => {
            let events = (0..*count)
                .map(|i| {
                    builder.event(&EventSpec {
                        id: IdSpec::Fresh,
                        event_type: i % 2,
                        tags: vec![],
                        amount: i as u32,
                    })
                })
                .collect();
            Step::Append(AppendRequest::new(
                name(*stream),
                ExpectedVersion::Any,
                events,
            ))
        }
        Op::ReadStream {
            stream,
            from,
            backward,
            limit,
        } => Step::ReadStream {
            stream: name(*stream),
            from: if *backward && *from == 150 {
                Version::MAX
            } else {
                Version(*from)
            },
            direction: if *backward {
                Direction::Backward
            } else {
                Direction::Forward
            },
            limit: *limit,
        },
        Op::ReadAll {
            from,
            filter,
            limit,
        } => Step::ReadAll {
            from: Position(*from),
            filter: filter_of(filter),
            limit: *limit,
        },
        Op::ListStreams {
            prefix,
            after,
            limit,
        } => Step::ListStreams {
            prefix: PREFIXES[prefix % PREFIXES.len()].to_owned(),
            after: after.map(name),
            limit: *limit,
        },
        Op::StreamVersion { stream } => Step::StreamVersion(name(*stream)),
        Op::Subscribe { from, stream } => {
            // Only the stored part: as many events as the model holds from `from`, so the
            // take ends without waiting for live events.
            let stream = stream.map(name);
            let available = match &stream {
                Some(s) => version(s.clone())
                    .await
                    .get()
                    .saturating_sub((*from).max(1) - 1),
                None => model
                    .head()
                    .await
                    .unwrap()
                    .get()
                    .saturating_sub((*from).max(1) - 1),
            };
            let n = usize::try_from(available).unwrap_or(usize::MAX).min(30);
            if n == 0 {
                return None;
            }
            Step::Subscribe {
                from: *from,
                stream,
                n,
            }
        }
    })
}

/// Checks STYLE.md §2.5's log invariants on `store` and returns the whole log.
async fn check_log(store: &Arc<dyn EventStore>, which: &str) -> Result<Vec<Seen>, String> {
    let Observed::All { events, head } =
        read_all_to_end(store, Position(1), &Filter::all(), 1000).await?
    else {
        return Err("read_all observed something else".to_owned());
    };
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    if positions != (1..=head.get()).collect::<Vec<_>>() {
        return Err(format!(
            "{which}: positions are not 1..={head} without gaps: {positions:?}"
        ));
    }
    let mut next: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &events {
        let v = next.entry(e.stream.as_str()).or_insert(1);
        if e.version != *v {
            return Err(format!(
                "{which}: stream {} has version {} where {} was due",
                e.stream, e.version, v
            ));
        }
        *v += 1;
    }
    Ok(events)
}

/// Runs one case: every op on both stores, outcomes compared step by step.
async fn run_case(backend: Arc<dyn EventStore>, ops: &[Op]) -> Result<(), String> {
    let model: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let streams = stream_names();
    let mut builder = Builder::default();
    for (i, op) in ops.iter().enumerate() {
        let Some(step) = make_step(op, &mut builder, &model, &streams).await else {
            continue;
        };
        let expected = observe(&model, &step)
            .await
            .map_err(|e| format!("step {i}: the model failed: {e}"))?;
        let actual = observe(&backend, &step)
            .await
            .map_err(|e| format!("step {i} ({step:?}): the backend failed: {e}"))?;
        if actual != expected {
            return Err(format!(
                "step {i}: {step:?}\n  backend: {actual:?}\n  model:   {expected:?}"
            ));
        }
    }
    let expected = check_log(&model, "model").await?;
    let actual = check_log(&backend, "backend").await?;
    if actual != expected {
        return Err(format!(
            "the logs differ after the case\n  backend: {actual:?}\n  model:   {expected:?}"
        ));
    }
    for s in &streams {
        let (a, m) = (
            backend.stream_version(s).await,
            model.stream_version(s).await,
        );
        let (a, m) = (a.map_err(|e| e.to_string())?, m.map_err(|e| e.to_string())?);
        if a != m {
            return Err(format!("stream {s}: backend at version {a}, model at {m}"));
        }
    }
    Ok(())
}

fn seed_from_env() -> u64 {
    std::env::var("CONCORD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
        })
}

/// Runs `cases` (× `CONCORD_TEST_SCALE`) random operation sequences against stores from
/// `factory` and against fresh [`MemoryStore`]s, and fails with the seed and the minimal
/// failing sequence when any outcome differs.
///
/// Call it from a plain `#[test]`: it starts its own Tokio runtime.
///
/// # Panics
/// When the backend disagrees with the model (that is the test failing), or when called
/// inside a Tokio runtime.
pub fn run_model_check<F, Fut>(factory: F, cases: u32)
where
    F: Fn() -> Fut,
    Fut: Future<Output = TestStore>,
{
    run_model_check_with_seed(factory, cases, seed_from_env());
}

/// As [`run_model_check`], with a given seed (the one a failure printed).
///
/// # Panics
/// As [`run_model_check`].
pub fn run_model_check_with_seed<F, Fut>(factory: F, cases: u32, seed: u64)
where
    F: Fn() -> Fut,
    Fut: Future<Output = TestStore>,
{
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "run_model_check starts its own runtime: call it from a plain #[test], not #[tokio::test]"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = cases.saturating_mul(u32::try_from(scale()).unwrap_or(u32::MAX));
    eprintln!("model check: {cases} cases, seed {seed} (replay with CONCORD_TEST_SEED={seed})");
    let mut seed_bytes = [0u8; 32];
    for chunk in seed_bytes.chunks_mut(8) {
        chunk.copy_from_slice(&seed.to_le_bytes());
    }
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let result = runner.run(&ops_strategy(), |ops| {
        let test_store = runtime.block_on(factory());
        let outcome = runtime.block_on(run_case(Arc::clone(&test_store.store), &ops));
        {
            let _entered = runtime.enter();
            drop(test_store);
        }
        outcome.map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!(
            "the backend disagrees with the reference model (seed {seed}; replay with CONCORD_TEST_SEED={seed}):\n{e}"
        );
    }
}

/// Expands to a `#[test]` that runs [`run_model_check`] with `$factory` (an
/// `async fn() -> TestStore` returning a fresh empty store) and [`DEFAULT_CASES`] cases,
/// or `$cases`.
#[macro_export]
macro_rules! model_check {
    ($factory:path) => {
        $crate::model_check!($factory, $crate::properties::DEFAULT_CASES);
    };
    ($factory:path, $cases:expr) => {
        #[test]
        fn behaves_like_the_reference_model() {
            $crate::properties::run_model_check($factory, $cases);
        }
    };
}
