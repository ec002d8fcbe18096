//! Criterion micro-benchmarks of the per-event work on every append and read, whatever the
//! backend: validating the JSON an event arrives as, encoding and decoding the event in its
//! wire form (the HTTP and SSE bodies), the size checks, and the append decision
//! (`plan_append`: idempotency, expected version, rebase rule).
//!
//! `cargo bench -p concord-bench` measures; `cargo test -p concord-bench --benches` runs
//! each once as a smoke test (cheap, as CI needs).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use concord_core::{
    AppendRequest, EventType, ExpectedVersion, Json, Limits, NewEvent, Position, RecordedAt,
    RecordedEvent, StreamName, Version, plan_append,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn payload(bytes: usize) -> Vec<u8> {
    let filler = "x".repeat(bytes.saturating_sub(40));
    format!("{{\"amount\":125,\"currency\":\"EUR\",\"note\":\"{filler}\"}}").into_bytes()
}

fn event(data: &[u8]) -> NewEvent {
    NewEvent::new(
        EventType::new("Deposited").unwrap(),
        Json::from_bytes("data", data.to_vec()).unwrap(),
    )
}

fn recorded(data: &[u8]) -> RecordedEvent {
    RecordedEvent::new(
        StreamName::new("account-42").unwrap(),
        Version(7),
        Position(1234),
        event(data),
        RecordedAt(1_764_000_000_000),
    )
}

fn json(c: &mut Criterion) {
    let mut group = c.benchmark_group("json");
    for size in [64usize, 1024, 16 * 1024] {
        let text = bytes::Bytes::from(payload(size));
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("validate", size), &text, |b, text| {
            b.iter(|| Json::from_bytes("data", black_box(text.clone())).unwrap());
        });
    }
    group.finish();
}

fn wire(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_wire");
    for size in [64usize, 1024] {
        let recorded_event = recorded(&payload(size));
        let encoded = serde_json::to_vec(&recorded_event).unwrap();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("encode", size),
            &recorded_event,
            |b, event| {
                b.iter(|| serde_json::to_vec(black_box(event)).unwrap());
            },
        );
        group.bench_with_input(BenchmarkId::new("decode", size), &encoded, |b, encoded| {
            b.iter(|| serde_json::from_slice::<RecordedEvent>(black_box(encoded)).unwrap());
        });
        let new = serde_json::to_vec(&event(&payload(size))).unwrap();
        group.bench_with_input(
            BenchmarkId::new("decode_new_event", size),
            &new,
            |b, new| {
                b.iter(|| serde_json::from_slice::<NewEvent>(black_box(new)).unwrap());
            },
        );
    }
    group.finish();
}

fn append_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_decision");
    let limits = Limits::default();
    let stream = StreamName::new("account-42").unwrap();
    for n in [1usize, 10, 100] {
        let events: Vec<NewEvent> = (0..n).map(|_| event(&payload(64))).collect();
        let request =
            AppendRequest::new(stream.clone(), ExpectedVersion::Exact(Version(41)), events);
        let found = vec![None; n];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("check_limits", n),
            &request,
            |b, request| {
                b.iter(|| limits.check_append(black_box(request)).unwrap());
            },
        );
        group.bench_with_input(
            BenchmarkId::new("plan_append", n),
            &request,
            |b, request| {
                b.iter(|| {
                    plan_append(black_box(request), Version(41), &found, |_| {
                        Vec::<EventType>::new()
                    })
                });
            },
        );
    }
    let stale = AppendRequest::new(
        stream,
        ExpectedVersion::Exact(Version(40)),
        vec![event(b"{}")],
    )
    .rebase_unless(vec![EventType::new("AccountClosed").unwrap()]);
    let concurrent = vec![EventType::new("Deposited").unwrap(); 3];
    group.throughput(Throughput::Elements(1));
    group.bench_function("plan_append_rebase", |b| {
        b.iter(|| {
            plan_append(black_box(&stale), Version(43), &[None], |_| {
                concurrent.iter()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, json, wire, append_decision);
criterion_main!(benches);
