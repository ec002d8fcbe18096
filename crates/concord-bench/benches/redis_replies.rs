//! Criterion micro-benchmarks of the Redis backend's reply parsing: a page of `XRANGE`
//! entries of one stream (a rehydrate), of the global stream (a catch-up), and the append
//! function's answer to a one-event append. The replies are built as Redis sends them
//! (RESP2 arrays of bulk strings, the fields Concord's function writes), so no server is
//! needed.
//!
//! `cargo bench -p concord-bench --bench redis_replies` measures; `cargo test -p
//! concord-bench --benches` runs each once and checks what it decodes.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use concord_core::{
    AppendRequest, EventType, ExpectedVersion, Json, MultiAppendRequest, NewEvent, StreamName,
    Version,
};
use concord_redis::bench_internals;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use redis::Value;

const DATA: &str = r#"{"amount":125,"currency":"EUR","note":"concord bench"}"#;

fn bulk(s: impl AsRef<[u8]>) -> Value {
    Value::BulkString(s.as_ref().to_vec())
}

fn event_id(n: u64) -> String {
    format!("01a21542-84d4-77b4-b7b8-{n:012x}")
}

/// An `XRANGE` reply of entries `1-0` … `n-0`: each entry's own fields (which say where
/// it stands), then the event's.
fn page(n: u64, place: impl Fn(u64) -> [(&'static str, String); 2]) -> Value {
    Value::Array(
        (1..=n)
            .map(|k| {
                let event = [
                    ("id", event_id(k)),
                    ("type", "Deposited".into()),
                    ("data", DATA.into()),
                    ("metadata", "{}".into()),
                    ("tags", String::new()),
                    ("recorded_at", "1795653010644".into()),
                ];
                let fields = place(k)
                    .into_iter()
                    .chain(event)
                    .flat_map(|(name, value)| [bulk(name), bulk(value)])
                    .collect();
                Value::Array(vec![bulk(format!("{k}-0")), Value::Array(fields)])
            })
            .collect(),
    )
}

/// `XRANGE {concord}:stream:account-42 …`: versions 1..=n at positions 1000 + version
/// (the second field is one the decoder skips, as a later version's would be).
fn stream_page(n: u64) -> Value {
    page(n, |v| {
        [
            ("position", (1000 + v).to_string()),
            ("added_later", String::new()),
        ]
    })
}

/// `XRANGE {concord}:all …`: positions 1..=n over 16 streams.
fn global_page(n: u64) -> Value {
    page(n, |p| {
        [
            ("stream", format!("account-{}", p % 16)),
            ("version", (p / 16 + 1).to_string()),
        ]
    })
}

fn one_event_append() -> MultiAppendRequest {
    let event = NewEvent::new(
        EventType::new("Deposited").unwrap(),
        Json::from_bytes("data", DATA.as_bytes().to_vec()).unwrap(),
    );
    AppendRequest::new(
        StreamName::new("account-42").unwrap(),
        ExpectedVersion::Exact(Version(7)),
        vec![event],
    )
    .into()
}

/// The function's answer to a one-event append written at version 8, position 1008.
fn written_reply() -> Value {
    Value::Array(vec![
        bulk("written"),
        Value::Int(1008),
        Value::Int(1008),
        bulk("1795653010.644481.1"),
        Value::Int(1_795_653_010_644),
        Value::Array(vec![Value::Array(vec![
            Value::Int(8),
            Value::Int(8),
            Value::Int(1008),
            Value::Int(1008),
            Value::Int(0),
            Value::Int(0),
        ])]),
    ])
}

fn entries(c: &mut Criterion) {
    let stream = StreamName::new("account-42").unwrap();
    let mut group = c.benchmark_group("redis_reply");
    for n in [1_u64, 100] {
        let page = stream_page(n);
        let decoded = bench_internals::stream_entries(&stream, &page).unwrap();
        assert_eq!(decoded.len() as u64, n);
        assert_eq!(decoded.last().map(|e| e.version), Some(Version(n)));
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("stream_entries", n), &page, |b, page| {
            b.iter(|| bench_internals::stream_entries(&stream, black_box(page)).unwrap());
        });
        let page = global_page(n);
        let decoded = bench_internals::global_entries(&page).unwrap();
        assert_eq!(decoded.len() as u64, n);
        assert_eq!(
            decoded.first().map(|e| e.stream.as_str()),
            Some("account-1")
        );
        group.bench_with_input(BenchmarkId::new("global_entries", n), &page, |b, page| {
            b.iter(|| bench_internals::global_entries(black_box(page)).unwrap());
        });
    }
    group.finish();
}

fn append_reply(c: &mut Criterion) {
    let request = one_event_append();
    let reply = written_reply();
    bench_internals::append_reply(&request, &reply).unwrap();
    // A reply naming a part the request does not have is refused, not guessed at.
    let mut wrong = written_reply();
    if let Value::Array(items) = &mut wrong
        && let Some(parts) = items.get_mut(5)
    {
        *parts = Value::Array(vec![]);
    }
    assert!(bench_internals::append_reply(&request, &wrong).is_err());
    c.bench_function("redis_reply/append_written", |b| {
        b.iter(|| bench_internals::append_reply(black_box(&request), black_box(&reply)).unwrap());
    });
}

/// `value` as Redis sends it (RESP2).
fn resp(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                resp(item, out);
            }
        }
        Value::BulkString(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        other => panic!("the pages hold no {other:?}"),
    }
}

/// The step before the decoding above: redis-rs reading the reply's RESP bytes into a
/// `Value` (about 22 values per entry), what a `read_all` page costs on the connection.
fn resp_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("redis_reply");
    for n in [100_u64, 1000] {
        let page = global_page(n);
        let mut bytes = Vec::new();
        resp(&page, &mut bytes);
        assert_eq!(redis::parse_redis_value(&bytes).unwrap(), page);
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(
            BenchmarkId::new("resp_global_page", n),
            &bytes,
            |b, bytes| {
                b.iter(|| redis::parse_redis_value(black_box(bytes)).unwrap());
            },
        );
        // What a read_all page costs end to end: redis-rs's parse then the decoding, against
        // the store's own reader (scan, zero-copy parse, decoding) on the same bytes.
        group.bench_with_input(
            BenchmarkId::new("redis_rs_global_page_decoded", n),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let value = redis::parse_redis_value(black_box(bytes)).unwrap();
                    bench_internals::global_entries(&value).unwrap()
                });
            },
        );
        let shared = bytes::Bytes::from(bytes.clone());
        let ours = bench_internals::global_entries_from_resp(&shared).unwrap();
        assert_eq!(ours, bench_internals::global_entries(&page).unwrap());
        group.bench_with_input(
            BenchmarkId::new("concord_global_page_decoded", n),
            &shared,
            |b, bytes| {
                b.iter(|| bench_internals::global_entries_from_resp(black_box(bytes)).unwrap());
            },
        );
    }
    group.finish();
}

criterion_group!(benches, entries, append_reply, resp_parse);
criterion_main!(benches);
