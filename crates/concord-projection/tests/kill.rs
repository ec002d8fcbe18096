//! Crash test: SIGKILL the process running the projections at random moments, under
//! concurrent appends, and check after every kill that each read model equals a full replay
//! of the log up to its checkpoint (no event applied twice, none skipped).
//!
//! The test binary re-executes itself as the child (`CONCORD_PROJECTION_CHILD` set). The
//! child opens the store and the projection database, starts the built-in projections and
//! four appending tasks (accounts, auctions, documents and events no projection wants),
//! and prints a line each time a checkpoint moves. The parent kills it after a random
//! number of those lines (seeded; the seed is printed and replayed with
//! `CONCORD_PROJECTION_KILL_SEED`), reads the log and the database, and checks. Then the
//! next child resumes from the checkpoints the last one left. Finally the parent itself
//! catches the projections up and checks they equal a replay of the whole log.
//! Runs against the embedded store and against Redis (`concord_testkit::redis`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::*;
use concord_core::{EventStore, Position};
use concord_projection::ProjectionHost;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "CONCORD_PROJECTION_CHILD";
const APPENDERS: u64 = 4;

fn main() {
    match std::env::var(CHILD_ENV) {
        Ok(spec) => child(&spec),
        Err(_) => parent(),
    }
}

/// Where the child's store is: `embedded <dir>` or `redis <url> <prefix>`.
#[derive(Clone, Debug)]
enum Backend {
    Embedded(String),
    Redis(String, String),
}

impl Backend {
    fn spec(&self) -> String {
        match self {
            Backend::Embedded(dir) => format!("embedded {dir}"),
            Backend::Redis(url, prefix) => format!("redis {url} {prefix}"),
        }
    }

    fn parse(words: &[&str]) -> Backend {
        match words {
            ["embedded", dir] => Backend::Embedded((*dir).to_owned()),
            ["redis", url, prefix] => Backend::Redis((*url).to_owned(), (*prefix).to_owned()),
            _ => panic!("bad child spec {words:?}"),
        }
    }

    async fn open(&self) -> Arc<dyn EventStore> {
        match self {
            Backend::Embedded(dir) => embedded(Path::new(dir)),
            Backend::Redis(url, prefix) => redis_at(url, prefix).await,
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `<db> <cycle> <seed> <backend spec...>`
fn child(spec: &str) {
    let words: Vec<&str> = spec.split(' ').collect();
    let (db, cycle, seed) = (words[0], words[1], words[2].parse::<u64>().unwrap());
    let backend = Backend::parse(&words[3..]);
    runtime().block_on(async {
        let store = backend.open().await;
        let host = ProjectionHost::open_builtin(store.clone(), db)
            .await
            .unwrap();
        for task in 0..APPENDERS {
            let store = store.clone();
            let cycle = cycle.to_owned();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ task);
                let mut opened = BTreeSet::new();
                loop {
                    let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
                    let name = format!("{category}-c{cycle}t{task}n{}", rng.random_range(0..3));
                    let events = random_events(&mut rng, &mut opened, &name, category);
                    append(&store, &name, events).await;
                }
            });
        }
        host.start_all().await;
        println!("ready");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for name in host.names() {
            let mut progress = host.progress(name).unwrap();
            let (tx, name) = (tx.clone(), name.to_owned());
            tokio::spawn(async move {
                let mut last = progress.borrow_and_update().checkpoint;
                while progress.changed().await.is_ok() {
                    let checkpoint = progress.borrow_and_update().checkpoint;
                    if checkpoint == last {
                        continue;
                    }
                    last = checkpoint;
                    if tx.send(format!("checkpoint {name} {checkpoint}")).is_err() {
                        return;
                    }
                }
            });
        }
        while let Some(line) = rx.recv().await {
            println!("{line}");
        }
    });
}

/// Runs a child and SIGKILLs it after `kill_after` checkpoint lines.
fn run_child_until(
    db: &Path,
    cycle: usize,
    seed: u64,
    backend: &Backend,
    kill_after: usize,
) -> usize {
    let spec = format!("{} {cycle} {seed} {}", db.display(), backend.spec());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = 0;
    let mut ready = false;
    while !ready || seen < kill_after {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("the child stopped printing: {e}"));
        if line == "ready" {
            ready = true;
        } else if line.starts_with("checkpoint ") {
            seen += 1;
        } else {
            panic!("unexpected line from the child: {line:?}");
        }
    }
    child.kill().unwrap();
    let _ = child.wait().unwrap();
    reader.join().unwrap();
    seen
}

fn kill_cycles(label: &str, backend: &Backend, db: &Path, seed: u64, cycles: usize) {
    let runtime = runtime();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut last: BTreeMap<String, Position> = BTreeMap::new();
    for cycle in 0..cycles {
        let kill_after = rng.random_range(1..150);
        let seen = run_child_until(db, cycle, rng.random(), backend, kill_after);
        let (log_len, checkpoints) = runtime.block_on(async {
            let store = backend.open().await;
            let log = all_events(&store).await;
            (log.len(), assert_db_equals_replay(db, &log))
        });
        for (name, checkpoint) in &checkpoints {
            let before = last.get(name).copied().unwrap_or(Position::ZERO);
            assert!(
                *checkpoint >= before,
                "{label}: {name}'s durable checkpoint went back from {before} to {checkpoint}"
            );
        }
        println!(
            "{label} cycle {cycle}: killed after {seen} checkpoint moves; log has {log_len} events; checkpoints {checkpoints:?}; read models equal a replay"
        );
        last = checkpoints;
    }
    // Resume once more, to the end: the read models then equal a replay of the whole log.
    runtime.block_on(async {
        let store = backend.open().await;
        let host = ProjectionHost::open_builtin(store.clone(), db)
            .await
            .unwrap();
        for name in ["auctions", "balances", "documents"] {
            host.catch_up(name, |_, _| {}).await.unwrap();
        }
        host.shutdown().await;
        drop(host);
        let log = all_events(&store).await;
        let head = log.last().unwrap().position;
        let checkpoints = assert_db_equals_replay(db, &log);
        assert!(
            checkpoints.values().all(|c| *c == head),
            "{label}: {checkpoints:?} != head {head}"
        );
        println!("{label}: resumed to the head {head}; every read model equals a full replay");
    });
}

fn parent() {
    let started = Instant::now();
    let seed = std::env::var("CONCORD_PROJECTION_KILL_SEED")
        .map(|s| s.parse().unwrap())
        .unwrap_or_else(|_| rand::random::<u64>());
    println!("projection kill test, seed {seed} (replay with CONCORD_PROJECTION_KILL_SEED={seed})");
    let cycles = 8 * concord_testkit::scale();

    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let backend = Backend::Embedded(store_dir.to_str().unwrap().to_owned());
    kill_cycles(
        "embedded",
        &backend,
        &dir.path().join("projections.sqlite"),
        seed,
        cycles,
    );

    let server = concord_testkit::redis::shared();
    let backend = Backend::Redis(server.url(), concord_testkit::redis::unique_prefix());
    kill_cycles(
        "redis",
        &backend,
        &dir.path().join("redis-projections.sqlite"),
        seed ^ 1,
        cycles,
    );

    println!(
        "projection kill test: {cycles} cycles per backend passed in {:?}",
        started.elapsed()
    );
    std::io::stdout().flush().unwrap();
}
