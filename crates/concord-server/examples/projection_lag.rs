//! Projection lag under append load, measured from outside over HTTP.
//!
//! Run `concord serve` (it runs the built-in projections), then:
//!
//! ```text
//! cargo run --release -p concord-server --example projection_lag -- http://127.0.0.1:2113 64 20
//! ```
//!
//! Arguments: base URL, writers (default 64), seconds (default 20). Each writer appends one
//! `Deposited` at a time to its own `account-…` stream (conditional on the version it last
//! wrote), so every event is one the `balances` projection applies. Meanwhile:
//! - a sampler reads `GET /projections` every 50 ms and records each projection's `lag`
//!   (positions between the head and its checkpoint);
//! - a probe appends to its own account every 100 ms and immediately reads the row with
//!   `min_position` = that append's position: the time until the answer is the lag a
//!   read-your-writes client sees, in milliseconds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Value {
    let r = http.post(url).body(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(status == 201 || status == 200, "{status}: {v}");
    v
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:2113".into());
    let writers: u64 = args.get(2).map_or(64, |s| s.parse().unwrap());
    let seconds: u64 = args.get(3).map_or(20, |s| s.parse().unwrap());
    let run = std::process::id();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let appended = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::new();
    for w in 0..writers {
        let (http, base, appended) = (http.clone(), base.clone(), Arc::clone(&appended));
        tasks.push(tokio::spawn(async move {
            let url = format!("{base}/streams/account-lag{run}w{w}");
            let opened = json!({"expected_version": 0, "events": [{"type": "AccountOpened", "data": {"owner": "lag", "balance": 0}}]});
            let mut version = post(&http, &url, opened).await["last_version"]
                .as_u64()
                .unwrap();
            while Instant::now() < deadline {
                let body = json!({"expected_version": version, "events": [{"type": "Deposited", "data": {"amount": 1}}]});
                version = post(&http, &url, body).await["last_version"].as_u64().unwrap();
                appended.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let sampler = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            let mut lags: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            while Instant::now() < deadline {
                let r = http
                    .get(format!("{base}/projections"))
                    .send()
                    .await
                    .unwrap();
                let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                for p in v["projections"].as_array().unwrap() {
                    lags.entry(p["name"].as_str().unwrap().to_owned())
                        .or_default()
                        .push(p["lag"].as_f64().unwrap());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            lags
        })
    };

    let probe = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            let stream = format!("account-lag{run}probe");
            let url = format!("{base}/streams/{stream}");
            post(&http, &url, json!({"events": [{"type": "AccountOpened", "data": {"owner": "probe", "balance": 0}}]})).await;
            let mut waits = Vec::new();
            while Instant::now() < deadline {
                let p = post(
                    &http,
                    &url,
                    json!({"events": [{"type": "Deposited", "data": {"amount": 1}}]}),
                )
                .await["last_position"]
                    .as_u64()
                    .unwrap();
                let started = Instant::now();
                let r = http
                    .get(format!(
                        "{base}/projections/balances/{stream}?min_position={p}&wait_ms=60000"
                    ))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                waits.push(started.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            waits
        })
    };

    let began = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = began.elapsed().as_secs_f64();
    let lags = sampler.await.unwrap();
    let mut waits = probe.await.unwrap();
    waits.sort_by(f64::total_cmp);
    let events = appended.load(Ordering::Relaxed);
    println!(
        "load: {writers} writers, {events} events appended over HTTP in {elapsed:.1} s ({:.0} events/s)",
        events as f64 / elapsed
    );
    for (name, mut l) in lags {
        l.sort_by(f64::total_cmp);
        println!(
            "lag {name:<10} (events, {} samples every 50 ms): median {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}",
            l.len(),
            percentile(&l, 0.5),
            percentile(&l, 0.9),
            percentile(&l, 0.99),
            l.last().copied().unwrap_or(0.0)
        );
    }
    println!(
        "read-your-writes wait on balances (ms, {} probes): median {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
        waits.len(),
        percentile(&waits, 0.5),
        percentile(&waits, 0.9),
        percentile(&waits, 0.99),
        waits.last().copied().unwrap_or(0.0)
    );
}
