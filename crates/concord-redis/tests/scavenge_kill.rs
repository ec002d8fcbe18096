//! A scavenge killed with SIGKILL at ten or more points, then reconnected: nothing that
//! reads showed is missing, nothing hidden reads, and the next scavenge completes and leaves
//! no byte of a hidden event in any key. The workload, the kill points and the checks are
//! `concord_testkit::scavenge_kill`'s; this file starts a `redis-server`, and reads the
//! scavenge's progress from the lifecycle hash (the erased prefix of each stream) and from
//! the scratch key a compaction copies a stream into. The kills hit the client, which runs
//! the scavenge as a sequence of function calls, each atomic in Redis: a kill lands between
//! two of them, in the erasing or in the compacting.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;
use std::sync::Arc;

use concord_core::EventStore;
use concord_redis::{KeyLayout, RedisOptions, RedisStore};
use concord_testkit::redis::{RedisServer, unique_prefix};
use concord_testkit::scavenge_kill::{self, KillTarget, Progress};
use futures::future::BoxFuture;

const URL_ENV: &str = "CONCORD_SCAVKILL_URL";
const PREFIX_ENV: &str = "CONCORD_SCAVKILL_PREFIX";

fn main() {
    if scavenge_kill::is_child() {
        let url = std::env::var(URL_ENV).unwrap();
        let prefix = std::env::var(PREFIX_ENV).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = connect(&url, &prefix).await;
            scavenge_kill::child(Arc::new(store)).await;
        });
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    // DUMP compresses long strings by default; the search needs them as they are.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdbcompression")
        .arg("no")
        .query(&mut conn)
        .unwrap();
    let prefix = unique_prefix();
    scavenge_kill::parent(&mut Redis {
        keys: KeyLayout::new(&prefix).unwrap(),
        url,
        prefix,
        conn,
    });
    drop(server);
}

async fn connect(url: &str, prefix: &str) -> RedisStore {
    let options = RedisOptions {
        key_prefix: prefix.to_owned(),
        ..RedisOptions::default()
    };
    RedisStore::connect_with(url, options)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test redis-server failed: {e}"))
}

struct Redis {
    url: String,
    prefix: String,
    keys: KeyLayout,
    conn: redis::Connection,
}

impl KillTarget for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn child(&self) -> Command {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .env(URL_ENV, &self.url)
            .env(PREFIX_ENV, &self.prefix);
        command
    }

    fn open(&self) -> BoxFuture<'_, Arc<dyn EventStore>> {
        Box::pin(
            async move { Arc::new(connect(&self.url, &self.prefix).await) as Arc<dyn EventStore> },
        )
    }

    fn progress(&mut self) -> Progress {
        // Each stream's lifecycle ends with its erased prefix: their sum is every event
        // erased so far.
        let lifecycles: Vec<String> = redis::cmd("HVALS")
            .arg(self.keys.lifecycle())
            .query(&mut self.conn)
            .unwrap();
        let erased = lifecycles
            .iter()
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("a lifecycle without erased_through: {l:?}"))
            })
            .sum();
        let compacted: u64 = redis::cmd("XLEN")
            .arg(self.keys.scratch())
            .query(&mut self.conn)
            .unwrap();
        Progress { erased, compacted }
    }

    fn compacts(&self) -> bool {
        true
    }

    fn storage_holding(&mut self, needle: &str) -> Vec<String> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}}}*", self.prefix))
            .query(&mut self.conn)
            .unwrap();
        let mut found = Vec::new();
        for key in keys {
            let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&key).query(&mut self.conn).unwrap();
            let in_value =
                dump.is_some_and(|d| d.windows(needle.len()).any(|w| w == needle.as_bytes()));
            if in_value || key.contains(needle) {
                found.push(key);
            }
        }
        found
    }
}
