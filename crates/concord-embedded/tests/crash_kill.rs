//! Crash test: SIGKILL a writing process at random moments, reopen, check every promise.
//!
//! The test binary re-executes itself as the child (`CONCORD_CRASH_CHILD_DIR` set). The
//! child opens the store and appends forever from many tasks: several streams, exact
//! expected versions (refreshed from the conflict on a race), one to three events per
//! append. Before each append it prints `try <stream> <ids>`; when the append is
//! acknowledged it prints `ack <stream> <first version> <last version> <first position>
//! <last position> <ids>`. The parent kills it after a random number of acknowledgements
//! (seeded; the seed is printed and can be replayed with `CONCORD_CRASH_SEED`), reopens the
//! store (recovery checks run) and checks, cumulatively over all cycles:
//! - every acknowledged append is there, at its versions and positions, with its ids;
//! - every attempted append is there whole or not at all (no batch partly visible);
//! - positions run 1..=head and each stream's versions 1..=version, no gap or duplicate.
//!
//! A SIGKILL does not lose what the OS has been given, so this checks the process-crash
//! promise (and the commit protocol's atomicity), not power loss.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use concord_core::{
    AppendOutcome, AppendRequest, EventId, EventStore, ExpectedVersion, Filter, NewEvent, Position,
    StoreError, StreamName, Version,
};
use concord_embedded::EmbeddedStore;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "CONCORD_CRASH_CHILD_DIR";
const STREAMS: usize = 4;
const TASKS: usize = 16;

fn main() {
    match std::env::var(CHILD_ENV) {
        Ok(dir) => child(Path::new(&dir)),
        Err(_) => parent(),
    }
}

fn child(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir).unwrap());
        println!("ready");
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let stream = StreamName::new(format!("crash-{}", task % STREAMS)).unwrap();
                    let mut version = store.stream_version(&stream).await.unwrap();
                    for round in 0usize.. {
                        let events: Vec<NewEvent> = (0..=(task + round) % 3)
                            .map(|i| {
                                NewEvent::json(
                                    "Written",
                                    &serde_json::json!({ "task": task, "i": i }),
                                )
                                .unwrap()
                            })
                            .collect();
                        let ids = join_ids(events.iter().map(|e| e.id));
                        println!("try {stream} {ids}");
                        let request = AppendRequest::new(
                            stream.clone(),
                            ExpectedVersion::Exact(version),
                            events,
                        );
                        match store.append(request).await {
                            Ok(outcome) => {
                                let a = outcome.appended();
                                println!(
                                    "ack {stream} {} {} {} {} {ids}",
                                    a.first_version,
                                    a.last_version,
                                    a.first_position,
                                    a.last_position
                                );
                                version = a.last_version;
                            }
                            Err(StoreError::Conflict(c)) => version = c.actual,
                            Err(e) => panic!("append failed: {e}"),
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn join_ids(ids: impl Iterator<Item = EventId>) -> String {
    ids.map(|id| id.to_string()).collect::<Vec<_>>().join(",")
}

/// An acknowledged append as the child printed it.
struct Ack {
    stream: String,
    first_version: u64,
    first_position: u64,
    ids: Vec<EventId>,
}

fn parse_ids(s: &str) -> Vec<EventId> {
    s.split(',').map(|id| id.parse().unwrap()).collect()
}

fn parent() {
    let scale: usize = std::env::var("CONCORD_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let seed: u64 = std::env::var("CONCORD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash_kill: seed {seed} (replay with CONCORD_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (mut acks, mut tries) = (Vec::<Ack>::new(), Vec::<(String, Vec<EventId>)>::new());
    let cycles = 20 * scale;
    for cycle in 0..cycles {
        let kill_after: usize = rng.random_range(0..=200);
        let (new_acks, new_tries) = run_child_until(dir.path(), kill_after);
        println!(
            "cycle {cycle}: killed after {} acknowledgements ({} attempts)",
            new_acks.len(),
            new_tries.len()
        );
        acks.extend(new_acks);
        tries.extend(new_tries);
        let head = runtime.block_on(check(dir.path(), &acks, &tries));
        println!("cycle {cycle}: reopened, head {head}, all checks pass");
    }
    assert!(
        acks.len() >= cycles,
        "the children acknowledged too little to test anything"
    );
    println!(
        "crash_kill: {cycles} cycles, {} acknowledged appends checked in {:?}",
        acks.len(),
        started.elapsed()
    );
    std::io::stdout().flush().unwrap();
}

/// Runs a child on `dir`, kills it with SIGKILL after `kill_after` acknowledgements, and
/// returns every complete line it printed.
fn run_child_until(dir: &Path, kill_after: usize) -> (Vec<Ack>, Vec<(String, Vec<EventId>)>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
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
    let (mut acks, mut tries) = (Vec::new(), Vec::new());
    let mut seen_acks = 0;
    let mut ready = false;
    let deadline = Duration::from_secs(30);
    // Returns whether the line says the child is ready.
    let take = |line: &str, acks: &mut Vec<Ack>, tries: &mut Vec<(String, Vec<EventId>)>| -> bool {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["ready"] => return true,
            ["try", stream, ids] => tries.push(((*stream).to_owned(), parse_ids(ids))),
            ["ack", stream, fv, _lv, fp, _lp, ids] => acks.push(Ack {
                stream: (*stream).to_owned(),
                first_version: fv.parse().unwrap(),
                first_position: fp.parse().unwrap(),
                ids: parse_ids(ids),
            }),
            _ => panic!("unexpected line from the child: {line:?}"),
        }
        false
    };
    while !ready || seen_acks < kill_after {
        let line = rx
            .recv_timeout(deadline)
            .unwrap_or_else(|e| panic!("the child stopped printing: {e}"));
        ready |= take(&line, &mut acks, &mut tries);
        seen_acks = acks.len();
    }
    child.kill().unwrap();
    let _ = child.wait().unwrap();
    reader.join().unwrap();
    for line in rx.try_iter() {
        let _ = take(&line, &mut acks, &mut tries);
    }
    (acks, tries)
}

/// Reopens the store and checks the whole log against what the children said.
async fn check(dir: &Path, acks: &[Ack], tries: &[(String, Vec<EventId>)]) -> u64 {
    let store =
        EmbeddedStore::open(dir).unwrap_or_else(|e| panic!("reopening after a kill failed: {e}"));
    let head = store.head().await.unwrap();
    let mut by_id: HashMap<EventId, (String, u64, u64)> = HashMap::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut from = Position(1);
    let mut expected_position = 1;
    loop {
        let page = store.read_all(from, &Filter::all(), 1000).await.unwrap();
        for e in &page.events {
            assert_eq!(
                e.position.get(),
                expected_position,
                "positions have a gap or a duplicate"
            );
            expected_position += 1;
            let version = versions.entry(e.stream.to_string()).or_default();
            assert_eq!(
                e.version.get(),
                *version + 1,
                "versions of {} have a gap or a duplicate",
                e.stream
            );
            *version += 1;
            let previous = by_id.insert(
                e.id,
                (e.stream.to_string(), e.version.get(), e.position.get()),
            );
            assert!(previous.is_none(), "event id {} stored twice", e.id);
        }
        from = page.next_from;
        if page.is_caught_up() {
            break;
        }
    }
    assert_eq!(
        expected_position - 1,
        head.get(),
        "the head is not the last position read"
    );
    for (stream, version) in &versions {
        let name = StreamName::new(stream.as_str()).unwrap();
        assert_eq!(
            store.stream_version(&name).await.unwrap(),
            Version(*version)
        );
    }
    for ack in acks {
        for (i, id) in (0u64..).zip(&ack.ids) {
            let found = by_id
                .get(id)
                .unwrap_or_else(|| panic!("acknowledged event {id} of {} is lost", ack.stream));
            assert_eq!(
                found,
                &(
                    ack.stream.clone(),
                    ack.first_version + i,
                    ack.first_position + i
                ),
                "event {id} moved"
            );
        }
    }
    // The latest acknowledged appends, sent again with their ids, are duplicates at their
    // positions: the idempotency entries survive the kill (in their table, or rebuilt from
    // the log when the kill came before the flush).
    for ack in acks.iter().rev().take(3) {
        let events: Vec<NewEvent> = ack
            .ids
            .iter()
            .map(|&id| {
                NewEvent::json("Written", &serde_json::json!({}))
                    .unwrap()
                    .with_id(id)
            })
            .collect();
        let request = AppendRequest::new(
            StreamName::new(ack.stream.as_str()).unwrap(),
            ExpectedVersion::Any,
            events,
        );
        let outcome = store.append(request).await.unwrap();
        assert!(
            matches!(&outcome, AppendOutcome::Duplicate(a) if a.first_position.get() == ack.first_position),
            "acknowledged append to {} sent again: {outcome:?}",
            ack.stream
        );
    }
    for (stream, ids) in tries {
        let found: Vec<_> = ids.iter().filter_map(|id| by_id.get(id)).collect();
        assert!(
            found.is_empty() || found.len() == ids.len(),
            "append to {stream} is partly visible: {found:?}"
        );
        for (i, (s, v, p)) in (0u64..).zip(&found) {
            let (_, v0, p0) = found[0];
            assert_eq!(
                (s, *v, *p),
                (stream, v0 + i, p0 + i),
                "append to {stream} is not contiguous"
            );
        }
    }
    head.get()
}
