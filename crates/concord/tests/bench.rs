//! `concord bench` as a program sees it: every scenario and the local baselines run to
//! completion on a small bound and print exactly one JSON object with the promised fields.
//! (Throughput is measured by bench/run.sh, never asserted here.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::Command;

use serde_json::Value;

fn bench(store: &std::path::Path, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_concord"))
        .arg("--store")
        .arg(store)
        .arg("--json")
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one JSON object: {stdout}"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    for field in [
        "scenario",
        "store",
        "writers",
        "events",
        "seconds",
        "events_per_sec",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "conflicts",
        "retries",
        "max_rss_mib",
    ] {
        assert!(
            report.get(field).is_some(),
            "{args:?}: no {field} in {report}"
        );
    }
    assert!(report["max_rss_mib"].as_f64().unwrap() > 0.0);
    report
}

#[test]
fn every_scenario_prints_one_json_report_with_the_promised_fields() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let append = bench(
        &store,
        &["append", "--writers", "4", "--events", "40", "--batch", "2"],
    );
    assert_eq!(append["scenario"], "append");
    assert!(append["events"].as_u64().unwrap() >= 40);
    let read = bench(&store, &["read", "--events", "1500", "--writers", "2"]);
    assert_eq!(
        read["events"].as_u64().unwrap(),
        3000,
        "two readers, each the whole stream"
    );
    let catchup = bench(&store, &["catchup", "--events", "700"]);
    assert_eq!(catchup["events"].as_u64().unwrap(), 700);
    let group = bench(
        &store,
        &[
            "group",
            "--writers",
            "3",
            "--events",
            "1200",
            "--batch",
            "50",
        ],
    );
    assert_eq!(group["scenario"], "group");
    assert_eq!(
        group["events"].as_u64().unwrap(),
        1200,
        "every event acked exactly once by the three consumers"
    );
}

/// Runs `concord bench ARGS` on `store`, which must fail; returns what it printed on stderr.
fn refused(store: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_concord"))
        .arg("--store")
        .arg(store)
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn append_read_and_catchup_run_over_kurrentdbs_grpc_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = common::start(dir.path());
    let store = std::path::PathBuf::from(format!("grpc://{addr}"));
    let append = bench(
        &store,
        &["append", "--writers", "4", "--events", "40", "--batch", "2"],
    );
    assert_eq!(append["scenario"], "append");
    assert_eq!(append["store"], format!("grpc://{addr}"));
    assert!(append["events"].as_u64().unwrap() >= 40);
    assert_eq!(append["conflicts"], 0);
    let batched = bench(
        &store,
        &[
            "append",
            "--writers",
            "4",
            "--events",
            "40",
            "--batch",
            "2",
            "--grpc-call",
            "batch-append",
        ],
    );
    assert_eq!(batched["scenario"], "append");
    assert_eq!(
        batched["store"],
        format!("grpc://{addr} (one BatchAppend call)")
    );
    assert!(batched["events"].as_u64().unwrap() >= 40);
    assert_eq!(batched["conflicts"], 0);
    let read = bench(&store, &["read", "--events", "1500", "--writers", "2"]);
    assert_eq!(
        read["events"].as_u64().unwrap(),
        3000,
        "two readers, each the whole stream"
    );
    // The log holds more than 1 500 events by now: the subscriptions read its first 700.
    let catchup = bench(&store, &["catchup", "--events", "700", "--writers", "2"]);
    assert_eq!(catchup["events"].as_u64().unwrap(), 1400);
    // What the gRPC target cannot measure is refused, not silently run elsewhere.
    let stderr = refused(&store, &["hot", "--events", "1"]);
    assert!(
        stderr.contains("append, read and catchup scenarios only"),
        "{stderr}"
    );
    assert_eq!(common::terminate(server), 0);
}

#[test]
fn the_group_scenario_and_its_xgroup_baseline_run_on_redis() {
    let redis = concord_testkit::redis::shared().url();
    let store = std::path::PathBuf::from(redis);
    let group = bench(
        &store,
        &[
            "group",
            "--writers",
            "2",
            "--events",
            "600",
            "--batch",
            "40",
        ],
    );
    assert_eq!(group["events"].as_u64().unwrap(), 600);
    let baseline = bench(
        &store,
        &[
            "baseline",
            "xgroup",
            "--writers",
            "2",
            "--events",
            "600",
            "--batch",
            "40",
        ],
    );
    assert_eq!(baseline["scenario"], "baseline-xgroup");
    assert_eq!(baseline["events"].as_u64().unwrap(), 600);
}

#[test]
fn hot_writers_under_rebase_unless_never_conflict_or_retry() {
    let dir = tempfile::tempdir().unwrap();
    let hot = bench(
        dir.path(),
        &[
            "hot",
            "--writers",
            "8",
            "--events",
            "200",
            "--policy",
            "rebase-unless",
        ],
    );
    assert_eq!(hot["conflicts"], 0);
    assert_eq!(hot["retries"], 0);
    assert_eq!(hot["events"].as_u64().unwrap(), 200);
    let retry = bench(
        dir.path(),
        &[
            "hot",
            "--writers",
            "8",
            "--events",
            "200",
            "--policy",
            "retry",
        ],
    );
    assert_eq!(
        retry["events"].as_u64().unwrap(),
        200,
        "retried appends all commit in the end"
    );
    assert_eq!(retry["conflicts"], retry["retries"]);
}

#[test]
fn local_baselines_run_in_the_store_directory_and_clean_up() {
    let dir = tempfile::tempdir().unwrap();
    let fsync = bench(
        dir.path(),
        &["baseline", "fsync", "--events", "20", "--writers", "2"],
    );
    assert_eq!(fsync["scenario"], "baseline-fsync");
    let sqlite = bench(
        dir.path(),
        &["baseline", "sqlite", "--events", "20", "--writers", "2"],
    );
    assert_eq!(sqlite["scenario"], "baseline-sqlite");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "baselines left files behind: {left:?}");
}

#[test]
fn the_postgres_baseline_inserts_rows_of_event_bytes_and_drops_its_scratch_schema() {
    let server = concord_testkit::postgres::shared();
    let url = server.url();
    let report = bench(
        std::path::Path::new(&url),
        &[
            "baseline",
            "postgres",
            "--events",
            "40",
            "--writers",
            "2",
            "--event-bytes",
            "1024",
        ],
    );
    assert_eq!(report["scenario"], "baseline-postgres");
    assert_eq!(report["events"].as_u64().unwrap(), 40);
    assert_eq!(
        server.psql(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'concord_bench_%'"
        )
        .trim(),
        "0",
        "the scratch schema is dropped"
    );
}

#[test]
fn the_message_db_baseline_names_what_to_install_when_message_db_is_missing() {
    let url = concord_testkit::postgres::shared().url();
    let stderr = refused(
        std::path::Path::new(&url),
        &["baseline", "messagedb", "--events", "1"],
    );
    assert!(
        stderr.contains("Message DB is not installed") && stderr.contains("bench/postgres.sh"),
        "{stderr}"
    );
}

#[test]
fn event_bytes_sets_the_size_of_every_event_a_scenario_writes() {
    let (small, large) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _ = bench(small.path(), &["append", "--events", "200"]);
    let report = bench(
        large.path(),
        &["append", "--events", "200", "--event-bytes", "4096"],
    );
    assert_eq!(report["events"].as_u64().unwrap(), 200);
    // The sizes of the events' data as stored, read back with `concord all` (the size of
    // the store's files says little: the write-ahead log holds a page per commit).
    let data_sizes = |dir: &std::path::Path| -> Vec<usize> {
        let output = Command::new(env!("CARGO_BIN_EXE_concord"))
            .arg("--store")
            .arg(dir)
            .args(["--json", "all", "--limit", "1000"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| {
                let event: Value = serde_json::from_str(line).unwrap();
                event["data"].to_string().len()
            })
            .collect()
    };
    let large_sizes = data_sizes(large.path());
    assert!(large_sizes.len() >= 200, "{} events", large_sizes.len());
    assert!(
        large_sizes.iter().all(|n| *n >= 4096),
        "every event of --event-bytes 4096 carries 4 KiB of data: {large_sizes:?}"
    );
    let small_sizes = data_sizes(small.path());
    assert!(small_sizes.len() >= 200, "{} events", small_sizes.len());
    assert!(small_sizes.iter().all(|n| *n < 4096), "{small_sizes:?}");
}

#[test]
fn grpc_call_is_refused_where_it_means_nothing_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused(
        dir.path(),
        &["append", "--events", "1", "--grpc-call", "batch-append"],
    );
    assert!(stderr.contains("--grpc-call"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no store was created"
    );
}

#[test]
fn xadd_baseline_refuses_a_store_that_is_not_redis() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused(dir.path(), &["baseline", "xadd", "--events", "1"]);
    assert!(stderr.contains("needs a Redis store"), "{stderr}");
}

const SCAVENGE_ARGS: [&str; 11] = [
    "scavenge",
    "--events",
    "2000",
    "--event-bytes",
    "512",
    "--streams",
    "20",
    "--writers",
    "2",
    "--rate-seconds",
    "0.3",
];

/// The fields every `scavenge` report carries, whatever the backend.
fn assert_scavenge_report(report: &Value, erased_at_least: u64) {
    assert_eq!(report["scenario"], "scavenge");
    assert!(report["bytes_before"].as_u64().unwrap() > 0, "{report}");
    assert!(report["bytes_after"].as_u64().is_some(), "{report}");
    assert!(report["size_ratio"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        report["base_events_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["appends_during_ratio"].as_f64().is_some(),
        "{report}"
    );
    assert!(
        report["events_removed"].as_u64().unwrap() >= erased_at_least,
        "nine streams in ten were deleted: {report}"
    );
}

#[test]
fn the_scavenge_scenario_measures_the_files_and_erases_the_nine_deleted_streams_in_ten() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(&dir.path().join("store"), &SCAVENGE_ARGS);
    assert_scavenge_report(&report, 1800);
    assert_eq!(
        report["events_removed"], 1800,
        "18 of 20 streams of 100 events, and nothing else, on a store of its own"
    );
}

#[test]
fn the_scavenge_scenario_measures_redis_used_memory() {
    let redis = concord_testkit::redis::shared().url();
    let report = bench(std::path::Path::new(&redis), &SCAVENGE_ARGS);
    // The shared server may hold other tests' deleted streams, erased by the same scavenge.
    assert_scavenge_report(&report, 1800);
}
