//! A scavenge killed with SIGKILL at ten or more points, then reopened: nothing that reads
//! showed is missing, nothing hidden reads, and the next scavenge completes and leaves no
//! byte of a hidden event in the store's files. The workload, the kill points and the
//! checks are `concord_testkit::scavenge_kill`'s; this file opens the embedded store and
//! reads the scavenge's progress from its `scavenge_state` row (erased events, moved in
//! the transaction of each chunk it erases).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use concord_core::EventStore;
use concord_embedded::{DATA_FILE, EmbeddedStore};
use concord_testkit::scavenge_kill::{self, KillTarget, Progress};
use futures::future::BoxFuture;

const DIR_ENV: &str = "CONCORD_SCAVKILL_DIR";

fn main() {
    if scavenge_kill::is_child() {
        let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = EmbeddedStore::open(&dir).unwrap();
            scavenge_kill::child(Arc::new(store)).await;
        });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    scavenge_kill::parent(&mut Embedded {
        dir: dir.path().to_path_buf(),
    });
}

struct Embedded {
    dir: PathBuf,
}

impl KillTarget for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn child(&self) -> Command {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.env(DIR_ENV, &self.dir);
        command
    }

    fn open(&self) -> BoxFuture<'_, Arc<dyn EventStore>> {
        Box::pin(async move {
            let store = EmbeddedStore::open(&self.dir)
                .unwrap_or_else(|e| panic!("reopening after a kill failed: {e}"));
            Arc::new(store) as Arc<dyn EventStore>
        })
    }

    fn progress(&mut self) -> Progress {
        // A plain read-write connection beside the child's store, opened and closed at
        // every poll, as an operator's `sqlite3` would be: closing it must not checkpoint
        // and delete the log under the store (see `schema::sync_files`).
        let conn = rusqlite::Connection::open(self.dir.join(DATA_FILE)).unwrap();
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 10000;")
            .unwrap();
        let erased: i64 = conn
            .query_row(
                "SELECT erased_events FROM scavenge_state WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        Progress {
            erased: erased as u64,
            compacted: 0,
        }
    }

    fn compacts(&self) -> bool {
        false
    }

    fn storage_holding(&mut self, needle: &str) -> Vec<String> {
        files_holding(&self.dir, needle)
    }
}

/// The files in `dir` holding `needle`, each with where: the byte offsets, the SQLite
/// pages they fall in, and the page count the database's header gives, so that a failure
/// says whether the bytes are in a live page, a free one or past the database's end.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let at: Vec<usize> = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle.as_bytes())
            .map(|(i, _)| i)
            .take(5)
            .collect();
        if at.is_empty() {
            continue;
        }
        let header = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .map(|b| b.iter().fold(0_u64, |n, x| n << 8 | u64::from(*x)))
        };
        let page_size = match header(16..18) {
            Some(1) => 65_536,
            Some(n) => n.max(1),
            None => 4096,
        };
        let first = at.first().copied().unwrap_or(0);
        let around = bytes
            .get(first.saturating_sub(96)..(first + needle.len() + 96).min(bytes.len()))
            .unwrap_or_default();
        found.push(format!(
            "{} (at bytes {at:?}, pages {:?}; {} bytes, header page count {:?}; around the first: {:?})",
            path.display(),
            at.iter()
                .map(|i| *i as u64 / page_size + 1)
                .collect::<Vec<_>>(),
            bytes.len(),
            header(28..32),
            String::from_utf8_lossy(around)
        ));
    }
    found
}
