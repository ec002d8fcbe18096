//! A scavenge killed with SIGKILL, over and over: the workload, the driver and the checks
//! every backend's `tests/scavenge_kill.rs` shares.
//!
//! A scavenge erases in bounded chunks and promises that one cut short "leaves a store that
//! the next one completes". This is the test of that promise against a real `kill -9`. The
//! test binary re-executes itself as the child ([`is_child`]), which opens the store, keeps
//! appending to a stream of its own (printing `try` and `ack` lines) and runs a scavenge. The
//! parent watches the scavenge's progress *in the store* ([`KillTarget::progress`]: events
//! erased so far, entries a compaction has copied) and kills the child at a point drawn
//! from a seeded generator: at the scavenge's start, after some of the remaining hidden
//! events were erased, or once all were (then the backend is finishing: truncating a log,
//! compacting). A cycle whose child finished before the kill does not count; the test runs
//! until [`KILLED_CYCLES`] (times `CONCORD_TEST_SCALE`) kills landed mid-scavenge.
//!
//! The store holds waves of streams, each with a fate: kept, soft-deleted, tombstoned,
//! truncated (`truncate_before`) or capped (`max_count`); a new wave is written when fewer
//! than [`REFILL_BELOW`] hidden events are left to erase, so every cycle has work. After
//! every kill the parent reopens the store ([`check`](Model::check)) and checks:
//! - every event reads never hid (kept events, the child's acknowledged appends) is in the
//!   global log and in its stream, equal to what was read when it was written (position,
//!   version, data, tags, time), and the child's appends are whole or absent;
//! - no stream read, version lookup or listing shows a hidden event or a deleted stream;
//! - hidden events are gone from the global log as a prefix of each stream (what a
//!   scavenge erases), and an erased event never comes back;
//! - every query (by tag, by type) answers exactly the global log's matching events, so
//!   the indexes agree with the log.
//!
//! At the end one scavenge runs to completion in the parent and must erase exactly the
//! hidden events still there; then no hidden event is readable anywhere, and none of the
//! store's storage (files, keys) holds the hidden events' marker. The seed is printed;
//! `CONCORD_TEST_SEED` replays it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use concord_core::{
    AppendRequest, Direction, EventId, EventStore, EventType, ExpectedVersion, Filter, NewEvent,
    Position, Query, RecordedEvent, StoreError, StreamMetadata, StreamName, Tag, Version,
};
use futures::future::BoxFuture;
use rand::{Rng, SeedableRng};

/// Kills that must land while the child's scavenge is under way.
pub const KILLED_CYCLES: usize = 10;
/// A new wave is written when fewer hidden events than this are left to erase.
pub const REFILL_BELOW: u64 = 2_500;
/// Streams of each fate in a wave.
const STREAMS_PER_FATE: usize = 4;
/// Events per stream in a wave, appended `BATCH` at a time, streams interleaved.
const EVENTS_PER_STREAM: u64 = 300;
const BATCH: u64 = 20;
/// Truncated streams hide the versions below this one.
const TRUNCATE_BEFORE: u64 = 151;
/// Capped streams keep this many events.
const CAP: u64 = 5;
/// Waves written before the first cycle.
const FIRST_WAVES: usize = 2;

const CYCLE_ENV: &str = "CONCORD_SCAVKILL_CYCLE";
const KEPT_MARKER_ENV: &str = "CONCORD_SCAVKILL_KEPT";

/// What a stream is subjected to after its wave is written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    Kept,
    SoftDeleted,
    Tombstoned,
    Truncated,
    Capped,
    /// The child's own stream: appended to while the scavenge runs, never hidden.
    Live,
}

const FATES: [Fate; 5] = [
    Fate::Kept,
    Fate::SoftDeleted,
    Fate::Tombstoned,
    Fate::Truncated,
    Fate::Capped,
];

impl Fate {
    fn hides(self, version: u64) -> bool {
        match self {
            Fate::Kept | Fate::Live => false,
            Fate::SoftDeleted | Fate::Tombstoned => true,
            Fate::Truncated => version < TRUNCATE_BEFORE,
            Fate::Capped => version <= EVENTS_PER_STREAM - CAP,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fate::Kept => "kept",
            Fate::SoftDeleted => "deleted",
            Fate::Tombstoned => "tombstoned",
            Fate::Truncated => "truncated",
            Fate::Capped => "capped",
            Fate::Live => "live",
        }
    }
}

/// How far the scavenge under way has got, as the parent sees it in the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events erased by every scavenge so far (cumulative).
    pub erased: u64,
    /// Entries copied by a compaction under way (0 for a backend without one).
    pub compacted: u64,
}

/// One backend under the test.
pub trait KillTarget {
    /// The backend's name, for messages.
    fn name(&self) -> &'static str;
    /// The test binary re-executed as the child, with the environment it needs to open the
    /// store (the driver adds its own).
    fn child(&self) -> Command;
    /// Opens the store in the parent (dropped before the next child starts).
    fn open(&self) -> BoxFuture<'_, Arc<dyn EventStore>>;
    /// Reads the scavenge's progress from the store's storage, without the store's API.
    fn progress(&mut self) -> Progress;
    /// Whether the backend compacts after erasing (so a kill may land in a compaction).
    fn compacts(&self) -> bool;
    /// The files or keys of the store whose bytes (or name) hold `needle`.
    fn storage_holding(&mut self, needle: &str) -> Vec<String>;
}

/// Whether this process is the child.
pub fn is_child() -> bool {
    std::env::var_os(CYCLE_ENV).is_some()
}

fn live_data(id: EventId, kept_marker: &str) -> serde_json::Value {
    serde_json::json!({ "live": id.to_string(), "m": kept_marker })
}

fn live_tags() -> Vec<Tag> {
    vec![tag("g:0")]
}

fn tag(s: &str) -> Tag {
    Tag::new(s).unwrap()
}

/// The child: appends to its own stream, printing what it tries and what is acknowledged,
/// and runs one scavenge; then goes on appending until it is killed.
pub async fn child(store: Arc<dyn EventStore>) {
    let cycle: usize = std::env::var(CYCLE_ENV).unwrap().parse().unwrap();
    let kept_marker = std::env::var(KEPT_MARKER_ENV).unwrap();
    let stream = StreamName::new(format!("live-c{cycle}")).unwrap();
    let appender = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            loop {
                let events: Vec<NewEvent> = (0..2)
                    .map(|_| {
                        let id = EventId::new();
                        NewEvent::json("Wrote", &live_data(id, &kept_marker))
                            .unwrap()
                            .with_id(id)
                            .with_tags(live_tags())
                    })
                    .collect();
                let ids = join_ids(events.iter().map(|e| e.id));
                println!("try {stream} {ids}");
                let request = AppendRequest::new(stream.clone(), ExpectedVersion::Any, events);
                match store.append(request).await {
                    Ok(outcome) => {
                        let a = outcome.appended();
                        println!(
                            "ack {stream} {} {} {ids}",
                            a.first_version, a.first_position
                        );
                    }
                    Err(e) => println!("failed append: {e}"),
                }
                // Pacing, so the appends interleave with the scavenge without starving it.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    println!("scavenging");
    match store.scavenge().await {
        Ok(report) => println!("done {}", report.events_removed),
        Err(e) => println!("failed scavenge: {e}"),
    }
    let _ = appender.await;
}

fn join_ids(ids: impl Iterator<Item = EventId>) -> String {
    ids.map(|id| id.to_string()).collect::<Vec<_>>().join(",")
}

fn parse_ids(s: &str) -> Vec<EventId> {
    s.split(',').map(|id| id.parse().unwrap()).collect()
}

/// An event the test knows, as it was read when first seen.
#[derive(Debug)]
struct Known {
    event: RecordedEvent,
    hidden: bool,
}

#[derive(Debug)]
struct StreamModel {
    fate: Fate,
    /// Every event of the stream the test knows, by version.
    ids: BTreeMap<Version, EventId>,
}

/// An append the child tried: its ids, and where it was acknowledged, if it was.
#[derive(Debug)]
struct LiveTry {
    stream: StreamName,
    ids: Vec<EventId>,
    acknowledged: Option<(Version, Position)>,
}

/// Everything the test wrote, and what it has seen erased.
#[derive(Debug)]
pub struct Model {
    hidden_marker: String,
    kept_marker: String,
    known: HashMap<EventId, Known>,
    streams: BTreeMap<StreamName, StreamModel>,
    erased: HashSet<EventId>,
    tries: Vec<LiveTry>,
    waves: usize,
}

/// What one check saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Events in the global log.
    pub events: usize,
    /// Hidden events still in the global log (not erased yet).
    pub hidden_left: u64,
    /// Hidden events erased so far.
    pub erased: u64,
}

fn unique(what: &str) -> String {
    format!("{what}{}", EventId::new().to_string().replace('-', ""))
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    /// An empty model with fresh markers.
    pub fn new() -> Self {
        Model {
            hidden_marker: unique("gone"),
            kept_marker: unique("keep"),
            known: HashMap::new(),
            streams: BTreeMap::new(),
            erased: HashSet::new(),
            tries: Vec::new(),
            waves: 0,
        }
    }

    /// Hidden events not seen erased yet.
    pub fn hidden_left(&self) -> u64 {
        self.known
            .iter()
            .filter(|(id, k)| k.hidden && !self.erased.contains(*id))
            .count() as u64
    }

    /// Writes a wave: streams of every fate, their batches interleaved in the global log
    /// (so erased entries sit among kept ones), then deletes, tombstones and retention.
    pub async fn add_wave(&mut self, store: &dyn EventStore) {
        let wave = self.waves;
        self.waves += 1;
        let head = store.head().await.unwrap();
        let mut streams = Vec::new();
        for fate in FATES {
            for k in 0..STREAMS_PER_FATE {
                let name = StreamName::new(format!("{}-w{wave}.{k}", fate.name())).unwrap();
                streams.push((name, fate, k));
            }
        }
        let hidden_tag = tag(&format!("h:{}", self.hidden_marker));
        for round in 0..EVENTS_PER_STREAM / BATCH {
            let appends = streams.iter().map(|(name, fate, k)| {
                let events: Vec<NewEvent> = (1..=BATCH)
                    .map(|i| {
                        let version = round * BATCH + i;
                        let hidden = fate.hides(version);
                        let marker = if hidden {
                            &self.hidden_marker
                        } else {
                            &self.kept_marker
                        };
                        let mut tags = vec![tag(&format!("g:{}", (k + version as usize) % 3))];
                        if hidden {
                            tags.push(hidden_tag.clone());
                        }
                        let event_type = if version.is_multiple_of(2) {
                            "Wrote"
                        } else {
                            "Noted"
                        };
                        NewEvent::json(
                            event_type,
                            &serde_json::json!({
                                "m": marker,
                                "s": name.as_str(),
                                "v": version,
                                "pad": "scavenge-kill-padding-".repeat(3),
                            }),
                        )
                        .unwrap()
                        .with_tags(tags)
                    })
                    .collect();
                let expected = if round == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(Version(round * BATCH))
                };
                store.append(AppendRequest::new(name.clone(), expected, events))
            });
            for outcome in futures::future::join_all(appends).await {
                let _ = outcome.unwrap().appended();
            }
        }
        // Capture every event as written, before anything hides it.
        let mut from = head.next();
        loop {
            let page = store.read_all(from, &Filter::all(), 1000).await.unwrap();
            let caught_up = page.is_caught_up();
            for e in page.events {
                let fate = streams
                    .iter()
                    .find(|(n, _, _)| *n == e.stream)
                    .map(|(_, f, _)| *f)
                    .unwrap_or_else(|| panic!("an event of an unknown stream {}", e.stream));
                let model = self
                    .streams
                    .entry(e.stream.clone())
                    .or_insert_with(|| StreamModel {
                        fate,
                        ids: BTreeMap::new(),
                    });
                model.ids.insert(e.version, e.id);
                let hidden = fate.hides(e.version.get());
                self.known.insert(e.id, Known { event: e, hidden });
            }
            from = page.next_from;
            if caught_up {
                break;
            }
        }
        for (name, fate, _) in &streams {
            let written = self.streams.get(name).map_or(0, |s| s.ids.len());
            assert_eq!(
                written as u64, EVENTS_PER_STREAM,
                "wave {wave}: {name} was not written whole"
            );
            match fate {
                Fate::Kept | Fate::Live => {}
                Fate::SoftDeleted => store.delete_stream(name, None).await.unwrap(),
                Fate::Tombstoned => store.tombstone_stream(name, None).await.unwrap(),
                Fate::Truncated | Fate::Capped => {
                    let metadata = if *fate == Fate::Truncated {
                        StreamMetadata {
                            truncate_before: Some(Version(TRUNCATE_BEFORE)),
                            ..StreamMetadata::NONE
                        }
                    } else {
                        StreamMetadata {
                            max_count: Some(CAP),
                            ..StreamMetadata::NONE
                        }
                    };
                    let _ = store.set_stream_metadata(name, metadata).await.unwrap();
                }
            }
        }
    }

    /// Takes the child's `try` and `ack` lines.
    fn take_child_lines(&mut self, lines: &[String]) {
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["try", stream, ids] => self.tries.push(LiveTry {
                    stream: StreamName::new(*stream).unwrap(),
                    ids: parse_ids(ids),
                    acknowledged: None,
                }),
                ["ack", stream, version, position, ids] => {
                    let ids = parse_ids(ids);
                    let t = self
                        .tries
                        .iter_mut()
                        .rev()
                        .find(|t| t.ids == ids)
                        .unwrap_or_else(|| panic!("{stream}: an ack without its try: {line}"));
                    t.acknowledged = Some((
                        Version(version.parse().unwrap()),
                        Position(position.parse().unwrap()),
                    ));
                }
                ["scavenging"] | ["ready"] | ["done", _] => {}
                _ => panic!("the child said something unexpected: {line:?}"),
            }
        }
    }

    /// Reopened after a kill (or after a completed scavenge, `complete`): checks every
    /// promise listed in the module docs against `store`.
    pub async fn check(&mut self, store: &dyn EventStore, complete: bool) -> Seen {
        let log = read_log(store).await;
        let mut in_log: HashSet<EventId> = HashSet::with_capacity(log.len());
        let tried: HashMap<EventId, usize> = self
            .tries
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.ids.iter().map(move |id| (*id, i)))
            .collect();
        for e in &log {
            assert!(in_log.insert(e.id), "event {} is in the log twice", e.id);
            if let Some(known) = self.known.get(&e.id) {
                assert_eq!(&known.event, e, "event {} changed", e.id);
                if known.hidden {
                    assert!(
                        !self.erased.contains(&e.id),
                        "hidden event {} of {} was erased, and is back",
                        e.id,
                        e.stream
                    );
                    assert!(
                        !complete,
                        "hidden event {} of {} is still in the log after a completed scavenge",
                        e.id, e.stream
                    );
                }
                continue;
            }
            let t = tried
                .get(&e.id)
                .unwrap_or_else(|| panic!("event {} of {} was never written", e.id, e.stream));
            let t = &self.tries[*t];
            assert_eq!(e.stream, t.stream);
            assert_eq!(
                e.data.to_value().unwrap(),
                live_data(e.id, &self.kept_marker),
                "the child's event {} has other data",
                e.id
            );
            assert_eq!(e.tags, live_tags());
            let model = self
                .streams
                .entry(e.stream.clone())
                .or_insert_with(|| StreamModel {
                    fate: Fate::Live,
                    ids: BTreeMap::new(),
                });
            model.ids.insert(e.version, e.id);
            self.known.insert(
                e.id,
                Known {
                    event: e.clone(),
                    hidden: false,
                },
            );
        }
        for t in &self.tries {
            let present = t.ids.iter().filter(|id| in_log.contains(id)).count();
            assert!(
                present == 0 || present == t.ids.len(),
                "an append to {} is partly there: {present} of {}",
                t.stream,
                t.ids.len()
            );
            if let Some((version, position)) = t.acknowledged {
                assert_eq!(
                    present,
                    t.ids.len(),
                    "an acknowledged append to {} is lost",
                    t.stream
                );
                let first = &self.known[&t.ids[0]].event;
                assert_eq!(
                    (first.version, first.position),
                    (version, position),
                    "an acknowledged append to {} moved",
                    t.stream
                );
            }
        }
        for (id, known) in &self.known {
            if !known.hidden {
                assert!(
                    in_log.contains(id),
                    "event {} of {} (version {}, position {}) is missing from the global log",
                    id,
                    known.event.stream,
                    known.event.version,
                    known.event.position
                );
            }
        }
        // A scavenge erases a prefix of each stream's hidden versions.
        let mut hidden_left = 0;
        for (name, model) in &self.streams {
            let mut erased_prefix = true;
            for id in model.ids.values() {
                if !self.known[id].hidden {
                    continue;
                }
                if in_log.contains(id) {
                    erased_prefix = false;
                    hidden_left += 1;
                } else {
                    assert!(
                        erased_prefix,
                        "{name}: hidden version {} is erased but an earlier one is not",
                        self.known[id].event.version
                    );
                    self.erased.insert(*id);
                }
            }
        }
        self.check_streams(store).await;
        check_queries(store, &log, &self.hidden_marker).await;
        Seen {
            events: log.len(),
            hidden_left,
            erased: self.erased.len() as u64,
        }
    }

    async fn check_streams(&self, store: &dyn EventStore) {
        let mut listed = BTreeSet::new();
        let mut after: Option<StreamName> = None;
        loop {
            let page = store.list_streams("", after.as_ref(), 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.stream.clone());
            listed.extend(page.into_iter().map(|s| (s.stream, s.version)));
        }
        for (name, model) in &self.streams {
            let kept: Vec<&RecordedEvent> = model
                .ids
                .values()
                .map(|id| &self.known[id])
                .filter(|k| !k.hidden)
                .map(|k| &k.event)
                .collect();
            let last = model.ids.keys().next_back().copied().unwrap_or_default();
            match model.fate {
                Fate::Tombstoned => {
                    assert!(
                        matches!(
                            store
                                .read_stream(name, Version(1), Direction::Forward, 10)
                                .await,
                            Err(StoreError::StreamDeleted(_))
                        ),
                        "{name} is tombstoned but reads"
                    );
                    assert!(
                        matches!(
                            store.stream_version(name).await,
                            Err(StoreError::StreamDeleted(_))
                        ),
                        "{name} is tombstoned but has a version"
                    );
                    assert!(!listed.iter().any(|(s, _)| s == name), "{name} is listed");
                    continue;
                }
                Fate::SoftDeleted => {
                    assert_eq!(
                        store.stream_version(name).await.unwrap(),
                        Version::NONE,
                        "{name} is deleted"
                    );
                    assert!(!listed.iter().any(|(s, _)| s == name), "{name} is listed");
                }
                Fate::Kept | Fate::Truncated | Fate::Capped | Fate::Live => {
                    assert_eq!(store.stream_version(name).await.unwrap(), last, "{name}");
                    assert!(
                        listed.contains(&(name.clone(), last)),
                        "{name} is not listed"
                    );
                }
            }
            let mut read = Vec::new();
            let mut from = Version(1);
            loop {
                let page = store
                    .read_stream(name, from, Direction::Forward, 1000)
                    .await
                    .unwrap();
                let Some(e) = page.last() else { break };
                from = e.version.next();
                read.extend(page);
            }
            let read: Vec<&RecordedEvent> = read.iter().collect();
            assert!(read == kept, "{name} reads other events than it keeps");
            let backward = store
                .read_stream(name, Version(1_000_000), Direction::Backward, 3)
                .await
                .unwrap();
            let expected: Vec<&RecordedEvent> = read.iter().rev().take(3).copied().collect();
            assert!(
                backward.iter().collect::<Vec<_>>() == expected,
                "{name} reads other events backward"
            );
        }
    }
}

async fn read_log(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut log: Vec<RecordedEvent> = Vec::new();
    let mut from = Position(1);
    loop {
        let page = store.read_all(from, &Filter::all(), 1000).await.unwrap();
        let caught_up = page.is_caught_up();
        for e in page.events {
            if let Some(last) = log.last() {
                assert!(
                    e.position > last.position,
                    "the global log goes back: {} after {}",
                    e.position,
                    last.position
                );
            }
            log.push(e);
        }
        from = page.next_from;
        if caught_up {
            break;
        }
    }
    log
}

/// Every query answers exactly the log's matching events: the indexes agree with it.
async fn check_queries(store: &dyn EventStore, log: &[RecordedEvent], hidden_marker: &str) {
    let queries = [
        Query::item(vec![], vec![tag("g:0")]),
        Query::item(vec![], vec![tag(&format!("h:{hidden_marker}"))]),
        Query::item(vec![EventType::new("Noted").unwrap()], vec![]),
    ];
    let head = log.last().map_or(Position(0), |e| e.position);
    for query in &queries {
        let mut found = Vec::new();
        let mut after = Position(0);
        loop {
            let page = store.query(query, after, 1000).await.unwrap();
            found.extend(
                page.events
                    .into_iter()
                    .filter(|e| e.position <= head)
                    .map(|e| (e.position, e.id)),
            );
            match page.next {
                Some(next) => after = next,
                None => break,
            }
        }
        let expected: Vec<(Position, EventId)> = log
            .iter()
            .filter(|e| query.matches(e))
            .map(|e| (e.position, e.id))
            .collect();
        assert!(
            found == expected,
            "the query {query:?} answers {} events, the log has {} matching",
            found.len(),
            expected.len()
        );
    }
}

/// Where the parent kills the child.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// As soon as the child says it starts the scavenge.
    Start,
    /// Once the store shows at least this many events erased (cumulative).
    Erased(u64),
    /// Once every hidden event is erased and a compaction has copied at least `copied`
    /// entries (a compaction cut short leaves its copy until the next one starts).
    Compacted { erased: u64, copied: u64 },
}

/// The parent: writes the first waves, then kills children mid-scavenge until
/// [`KILLED_CYCLES`] kills landed, checking after each; then completes a scavenge and
/// checks that nothing hidden is left anywhere.
pub fn parent(target: &mut dyn KillTarget) {
    let seed: u64 = std::env::var("CONCORD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let name = target.name();
    println!("scavenge_kill ({name}): seed {seed} (replay with CONCORD_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut model = Model::new();
    runtime.block_on(async {
        let store = target.open().await;
        for _ in 0..FIRST_WAVES {
            model.add_wave(&*store).await;
        }
    });
    let wanted = KILLED_CYCLES * crate::scale();
    let mut killed = 0;
    let mut cycle = 0;
    while killed < wanted {
        assert!(
            cycle < 3 * wanted,
            "only {killed} of {cycle} kills landed mid-scavenge"
        );
        if model.hidden_left() < REFILL_BELOW {
            runtime.block_on(async {
                let store = target.open().await;
                model.add_wave(&*store).await;
            });
        }
        let before = target.progress();
        let left = model.hidden_left();
        let point = match rng.random_range(0..10) {
            0 => KillPoint::Start,
            1..=6 => KillPoint::Erased(before.erased + rng.random_range(1..=left)),
            _ if target.compacts() => {
                // The global log is compacted first, and holds about the kept events.
                let kept = model.known.values().filter(|k| !k.hidden).count() as u64;
                KillPoint::Compacted {
                    erased: before.erased + left,
                    copied: rng.random_range(1..=kept),
                }
            }
            _ => KillPoint::Erased(before.erased + left),
        };
        let cycle_started = Instant::now();
        let (lines, progress, finished) = run_child_until(target, cycle, &model, point);
        let killed_after = cycle_started.elapsed();
        model.take_child_lines(&lines);
        let seen = runtime.block_on(async {
            let store = target.open().await;
            model.check(&*store, false).await
        });
        if !finished {
            killed += 1;
        }
        println!(
            "cycle {cycle}: kill at {point:?} {} ({} erased, {} compacted when killed, after {killed_after:?}); reopened: {} events, {} hidden left, {} erased so far; all checks pass ({:?})",
            if finished {
                "came after the scavenge finished"
            } else {
                "landed mid-scavenge"
            },
            progress.erased - before.erased,
            progress.compacted,
            seen.events,
            seen.hidden_left,
            seen.erased,
            cycle_started.elapsed()
        );
        cycle += 1;
    }
    // The next scavenge completes what the killed ones left.
    let left = model.hidden_left();
    let seen = runtime.block_on(async {
        let store = target.open().await;
        let report = store
            .scavenge()
            .await
            .unwrap_or_else(|e| panic!("the scavenge after {killed} killed ones failed: {e}"));
        assert_eq!(
            report.events_removed, left,
            "the completing scavenge erased other than the hidden events left"
        );
        model.check(&*store, true).await
    });
    assert_eq!(seen.hidden_left, 0);
    assert_eq!(
        target.storage_holding(&model.hidden_marker),
        Vec::<String>::new(),
        "hidden events' bytes are left in the store after a completed scavenge"
    );
    assert!(
        !target.storage_holding(&model.kept_marker).is_empty(),
        "the search finds what is there"
    );
    println!(
        "scavenge_kill ({name}): {killed} kills mid-scavenge in {cycle} cycles, {} events, {} erased, checked in {:?}",
        seen.events,
        seen.erased,
        started.elapsed()
    );
    std::io::stdout().flush().unwrap();
}

/// Runs a child and kills it with SIGKILL at `point`. Returns its complete lines, the
/// progress seen when it was killed, and whether its scavenge had finished by then.
fn run_child_until(
    target: &mut dyn KillTarget,
    cycle: usize,
    model: &Model,
    point: KillPoint,
) -> (Vec<String>, Progress, bool) {
    let mut command = target.child();
    command
        .env(CYCLE_ENV, cycle.to_string())
        .env(KEPT_MARKER_ENV, &model.kept_marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = BufReader::new(stdout);
        let mut line = String::new();
        // A line cut by the kill has no newline: it was never fully printed, so it is dropped.
        while out.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
            if tx.send(line.trim_end().to_owned()).is_err() {
                break;
            }
            line.clear();
        }
    });
    let mut lines = Vec::new();
    let mut scavenging = false;
    let mut finished = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut progress;
    loop {
        for line in rx.try_iter() {
            assert!(
                !line.starts_with("failed"),
                "the child failed: {line} (after {lines:?})"
            );
            scavenging |= line == "scavenging";
            finished |= line.starts_with("done ");
            lines.push(line);
        }
        progress = target.progress();
        let reached = scavenging
            && match point {
                KillPoint::Start => true,
                KillPoint::Erased(n) => progress.erased >= n,
                KillPoint::Compacted { erased, copied } => {
                    progress.erased >= erased && progress.compacted >= copied
                }
            };
        if reached || finished {
            break;
        }
        if Instant::now() > deadline {
            kill(&mut child);
            panic!("cycle {cycle}: the child did not reach {point:?} in 60 s: {progress:?}");
        }
        // Polling the store; the child's progress is what ends the wait.
        std::thread::sleep(Duration::from_millis(1));
    }
    kill(&mut child);
    reader.join().unwrap();
    for line in rx.try_iter() {
        finished |= line.starts_with("done ");
        lines.push(line);
    }
    (lines, progress, finished)
}

fn kill(child: &mut Child) {
    // `Child::kill` sends SIGKILL on Unix.
    child.kill().unwrap();
    let _ = child.wait().unwrap();
}
