//! `bench/ratios.py`, the ratio table of `bench/run.sh`: a ratio is taken within one round,
//! several rounds give the median and the range, and the verdict is the median's.
#![allow(clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/ratios.py")
}

/// Runs the script on a results file made of `lines`.
fn ratios(lines: &[String]) -> Output {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    for line in lines {
        writeln!(file, "{line}").expect("the results file is written");
    }
    Command::new("python3")
        .arg(script())
        .arg(file.path())
        .arg("64")
        .output()
        .expect("python3 runs (scripts/test installs it)")
}

fn result(label: &str, round: Option<u32>, events_per_sec: f64) -> String {
    let report = serde_json::json!({ "events_per_sec": events_per_sec, "retries": 0 });
    let mut line = serde_json::json!({ "label": label, "report": report });
    if let Some(r) = round {
        line["round"] = r.into();
    }
    line.to_string()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "ratios.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn line_of<'a>(table: &'a str, start: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with {start:?} in:\n{table}"))
}

#[test]
fn one_run_prints_both_figures_its_ratio_and_the_verdict() {
    let table = stdout(&ratios(&[
        result("embedded append w=64", None, 63_000.0),
        result("sqlite w=64", None, 5_000.0),
    ]));
    let line = line_of(&table, "embedded append w=64 / sqlite w=64");
    assert!(line.contains("63000 /        5000 =  12.60x"), "{line}");
    assert!(line.ends_with("NOT met (target >= 20x)"), "{line}");
    assert!(table.contains("ratios (same run)"), "{table}");
}

#[test]
fn each_ratio_is_taken_within_its_round_and_judged_by_the_median() {
    // Within rounds: 10x, 25x, 21x (median 21x, met in 2 of 3). The median figure over the
    // median baseline (84 000 / 5 000) would be 16.8x.
    let table = stdout(&ratios(&[
        result("embedded append w=64", Some(1), 50_000.0),
        result("sqlite w=64", Some(1), 5_000.0),
        result("embedded append w=64", Some(2), 250_000.0),
        result("sqlite w=64", Some(2), 10_000.0),
        result("embedded append w=64", Some(3), 84_000.0),
        result("sqlite w=64", Some(3), 4_000.0),
    ]));
    assert!(table.contains("3 rounds"), "{table}");
    let line = line_of(&table, "embedded append w=64 / sqlite w=64");
    assert!(line.contains("median  21.00x"), "{line}");
    assert!(line.contains("range 10.00-25.00x"), "{line}");
    assert!(
        line.contains("met (target >= 20x) (2 of 3 rounds)"),
        "{line}"
    );
    assert!(!line.contains("NOT met"), "{line}");
}

#[test]
fn a_round_missing_one_side_of_a_ratio_is_left_out_of_it() {
    let table = stdout(&ratios(&[
        result("redis append w=64", Some(1), 27_000.0),
        result("lua w=64", Some(1), 30_000.0),
        result("redis append w=64", Some(2), 40_000.0),
    ]));
    let line = line_of(&table, "redis append w=64 / minimal Lua script w=64");
    assert!(line.contains("27000 /       30000 =   0.90x"), "{line}");
    assert!(line.ends_with("met (target >= 0.9x)"), "{line}");
}

#[test]
fn a_line_that_is_not_a_result_is_named_and_fails_the_run() {
    let output = ratios(&[
        result("sqlite w=64", None, 5_000.0),
        "{\"label\": \"cut off".to_owned(),
    ]);
    assert!(
        !output.status.success(),
        "a damaged file must not print a table"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(":2: not a results line"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout: {:?}",
        output.stdout
    );
}

#[test]
fn the_cpu_probe_of_each_round_is_printed_beside_the_ratios() {
    let probe = |round: u32, seconds: f64| {
        serde_json::json!({
            "label": "cpu probe",
            "round": round,
            "report": { "scenario": "probe-cpu", "seconds": seconds, "events_per_sec": 1.0e7 / seconds },
        })
        .to_string()
    };
    let table = stdout(&ratios(&[
        probe(1, 0.9),
        result("embedded read n=100000", Some(1), 1_050_000.0),
        probe(2, 1.5),
        result("embedded read n=100000", Some(2), 600_000.0),
        probe(3, 1.1),
        result("embedded read n=100000", Some(3), 900_000.0),
    ]));
    let line = line_of(&table, "cpu probe, 10 M-step Python loop:");
    assert!(line.contains(" 1.10 s (range 0.90-1.50 s)"), "{line}");
    let read = line_of(&table, "embedded read (events/s) / 1 000 000");
    assert!(read.contains("median   0.90x"), "{read}");
}

fn timed(label: &str, round: u32, p50_ms: f64, server_cpu: Option<f64>) -> String {
    let mut report = serde_json::json!({ "events_per_sec": 1000.0, "p50_ms": p50_ms });
    if let Some(cpu) = server_cpu {
        report["server_cpu_us_per_event"] = cpu.into();
    }
    serde_json::json!({ "label": label, "round": round, "report": report }).to_string()
}

#[test]
fn a_latency_ratio_is_judged_against_a_ceiling_and_the_server_cpu_is_printed() {
    let table = stdout(&ratios(&[
        timed("http append w=1", 1, 0.30, None),
        timed("embedded append w=1", 1, 0.25, None),
        timed("http append w=1", 2, 0.40, None),
        timed("embedded append w=1", 2, 0.20, None),
        timed("http append w=64", 1, 2.0, Some(40.0)),
        timed("http append w=64", 2, 2.0, Some(30.0)),
    ]));
    // Rounds give 1.20x and 2.00x: the median 1.60x is above the 1.5x ceiling.
    let line = line_of(&table, "http append w=1 p50 / embedded append w=1 p50");
    assert!(line.contains("1.60x  range 1.20-2.00x"), "{line}");
    assert!(line.ends_with("NOT met (target <= 1.5x)"), "{line}");
    let cpu = line_of(&table, "http server CPU per event at w=64");
    assert!(cpu.contains("35.0 us (range 30.0-40.0)"), "{cpu}");
}
