//! Failover through `concord serve`: a PostgreSQL primary with a synchronous standby
//! (`synchronous_commit = on`), one server on the multi-host URL with
//! `target_session_attrs=read-write`, 16 HTTP writers. The primary is SIGKILLed and the
//! standby promoted: while there is no primary every append is answered, with a clean 503
//! (no hang, nothing half-written); then the same server, never restarted, carries on
//! against the new primary, every acknowledged event is there at its position, and the
//! projections (whose read models live in the same database) catch up there too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{DEADLINE, json, start_with, terminate};
use concord_testkit::postgres::PostgresServer;

const WRITERS: usize = 16;
const ACKS_BEFORE: usize = 50;
const ACKS_AFTER: usize = 50;

/// The id of writer `w`'s `n`-th event: re-sent unchanged after a 503, so that an append
/// whose outcome was unknown is answered as a duplicate rather than written twice.
fn event_id(w: usize, n: usize) -> String {
    format!("00000000-0000-4000-8000-{w:04}{n:08}")
}

/// Waits until `count` is at least `n`, for at most `bound`.
fn wait_for_count(count: &AtomicUsize, n: usize, bound: Duration, what: &str) {
    let deadline = Instant::now() + bound;
    while count.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} of {n}",
            count.load(Ordering::SeqCst)
        );
        // The writers are threads of this process doing blocking HTTP; a short poll of a
        // counter is the simplest wait on them.
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn after_the_standby_is_promoted_the_server_carries_on_and_nothing_acknowledged_is_lost() {
    let (mut primary, standby, url) = PostgresServer::start_with_synchronous_standby();
    let (server, addr) = start_with(std::path::Path::new(&url), &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let promoted_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let first_ack_after: Arc<Mutex<Option<Instant>>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addr, stop, acks) = (addr.clone(), Arc::clone(&stop), Arc::clone(&acks));
            let (promoted_at, first_ack_after) =
                (Arc::clone(&promoted_at), Arc::clone(&first_ack_after));
            std::thread::spawn(move || {
                let mut acknowledged: Vec<(String, u64)> = Vec::new();
                let mut unavailable = 0usize;
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = event_id(w, n);
                    let body = format!(
                        r#"{{"expected_version":"any","events":[{{"id":"{id}","type":"Deposited","data":{{"amount":1}}}}]}}"#
                    );
                    loop {
                        let sent = Instant::now();
                        let (status, reply) =
                            json(&addr, "POST", &format!("/streams/account-{w}"), &body);
                        assert!(sent.elapsed() < DEADLINE, "an append hung");
                        match status {
                            200 | 201 => {
                                acknowledged.push((id, reply["first_position"].as_u64().unwrap()));
                                if promoted_at.lock().unwrap().is_some() {
                                    first_ack_after.lock().unwrap().get_or_insert_with(Instant::now);
                                }
                                acks.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            503 => {
                                assert_eq!(reply["type"], "urn:concord:unavailable", "{reply}");
                                unavailable += 1;
                                std::thread::sleep(Duration::from_millis(50)); // Retry-After, shortened.
                            }
                            other => panic!("writer {w}: {other} {reply}"),
                        }
                    }
                    n += 1;
                }
                (acknowledged, unavailable)
            })
        })
        .collect();

    wait_for_count(&acks, ACKS_BEFORE, DEADLINE, "appends before the failover");
    let killed = Instant::now();
    primary.kill();
    standby.promote();
    *promoted_at.lock().unwrap() = Some(Instant::now());
    let before = acks.load(Ordering::SeqCst);
    wait_for_count(
        &acks,
        before + ACKS_AFTER,
        Duration::from_secs(120),
        "appends after the promotion",
    );
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    let mut unavailable = 0;
    for w in writers {
        let (a, u) = w.join().unwrap();
        acknowledged.extend(a);
        unavailable += u;
    }
    let promoted = promoted_at.lock().unwrap().unwrap();
    let resumed = first_ack_after.lock().unwrap().unwrap();
    println!(
        "{} appends acknowledged, {unavailable} answered 503 during the failover; the first append after the promotion was acknowledged {} ms after it ({} ms after the primary was killed)",
        acknowledged.len(),
        resumed.saturating_duration_since(promoted).as_millis(),
        resumed.saturating_duration_since(killed).as_millis()
    );
    assert!(
        unavailable > 0,
        "no append met the failover: it tested nothing"
    );

    // Every acknowledged event is on the new primary at its position, positions gap-free.
    let (status, head) = json(&addr, "GET", "/head", "");
    assert_eq!(status, 200, "{head}");
    let head = head["head"].as_u64().unwrap();
    let mut at: HashMap<String, u64> = HashMap::new();
    let mut positions = Vec::new();
    while (positions.len() as u64) < head {
        let from = positions.len() + 1;
        let (status, page) = json(&addr, "GET", &format!("/all?from={from}&limit=1000"), "");
        assert_eq!(status, 200, "{page}");
        for e in page["events"].as_array().unwrap() {
            let position = e["position"].as_u64().unwrap();
            positions.push(position);
            at.insert(e["id"].as_str().unwrap().to_owned(), position);
        }
    }
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
    for (id, position) in &acknowledged {
        assert_eq!(
            at.get(id),
            Some(position),
            "acknowledged event {id} was lost"
        );
    }
    assert_eq!(at.len(), acknowledged.len(), "an event was written twice");

    // The projections, whose read models moved with the database, catch up on it.
    let (status, row) = json(
        &addr,
        "GET",
        &format!("/projections/balances/account-0?min_position={head}&wait_ms=30000"),
        "",
    );
    // Deposits without an opening: a row or none, but read at a checkpoint past the head.
    assert!(matches!(status, 200 | 404), "{status} {row}");
    assert!(row["checkpoint"].as_u64().unwrap() >= head, "{row}");
    assert_eq!(terminate(server), 0);
}
