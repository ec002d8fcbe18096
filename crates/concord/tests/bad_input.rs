//! Bad input never breaks `concord serve` (issue 23): each request below was found from
//! outside to break a fresh server on an embedded store (a 500, a poisoned store until
//! restart, a projection stopped for good, a typo silently ignored). Each must now get a
//! clear 4xx naming what is wrong, or simply work, and leave the server healthy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{assert_healthy, json, start, terminate};
use serde_json::Value;

fn assert_invalid(answer: &(u16, Value), field: &str) {
    let (status, body) = answer;
    assert_eq!(*status, 400, "{body}");
    assert_eq!(body["type"], "urn:concord:invalid-request", "{body}");
    assert_eq!(body["field"], field, "{body}");
}

fn tags(n: usize) -> String {
    let list: Vec<String> = (0..n).map(|i| format!("\"t:{i}\"")).collect();
    format!("[{}]", list.join(","))
}

/// A condition item with 65 tags used to make SQLite refuse the condition's lookup inside
/// the writer's transaction, which poisoned the store: that append and every later one
/// answered 500 until a restart, while /health said ok.
#[test]
fn a_condition_or_query_item_with_65_tags_is_refused_and_the_store_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(&dir.path().join("data"));
    let condition = format!(
        r#"{{"parts": [{{"stream": "user-1", "events": [{{"type": "UserRegistered", "data": {{}}}}]}}],
            "condition": {{"fail_if_events_match": {{"items": [{{"tags": {}}}]}}, "after": 0}}}}"#,
        tags(65)
    );
    let answer = json(&addr, "POST", "/append", &condition);
    assert_invalid(&answer, "query");
    assert!(
        answer.1["detail"].as_str().unwrap().contains("65 tags"),
        "{}",
        answer.1
    );
    let query = format!(r#"{{"query": {{"items": [{{"tags": {}}}]}}}}"#, tags(65));
    assert_invalid(&json(&addr, "POST", "/query", &query), "query");
    // At the limit, both work.
    let at_limit = condition.replace(&tags(65), &tags(32));
    assert_eq!(json(&addr, "POST", "/append", &at_limit).0, 201);
    assert_eq!(
        json(
            &addr,
            "POST",
            "/query",
            &query.replace(&tags(65), &tags(32))
        )
        .0,
        200
    );
    assert_healthy(&addr);
    assert_eq!(terminate(child), 0);
}

/// A filter of more than 500 types reached SQLite's limit of terms in one compound
/// statement (500, or `event: error` on a subscription).
#[test]
fn filters_beyond_their_documented_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(&dir.path().join("data"));
    let types = |n: usize| {
        (0..n)
            .map(|i| format!("T{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(
        json(&addr, "GET", &format!("/all?types={}", types(100)), "").0,
        200
    );
    for path in [
        format!("/all?types={}", types(501)),
        format!("/all?types={}", types(101)),
        format!("/subscribe/all?types={}", types(501)),
    ] {
        assert_invalid(&json(&addr, "GET", &path, ""), "types");
    }
    let tag_list = (0..33)
        .map(|i| format!("t:{i}"))
        .collect::<Vec<_>>()
        .join(",");
    assert_invalid(
        &json(&addr, "GET", &format!("/all?tags={tag_list}"), ""),
        "tags",
    );
    assert_healthy(&addr);
    assert_eq!(terminate(child), 0);
}

/// Versions and positions from 2^63 up used to be answered 500 ("stored data is
/// corrupted") once the stream's events were no longer in memory, and a subscription from
/// them looped on `event: error`. They are past the end; past 2^64 - 1 they are not
/// numbers (400).
#[test]
fn versions_and_positions_from_2_pow_63_are_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = start(&data);
    let events: Vec<String> = (0..5)
        .map(|_| r#"{"type": "Deposited", "data": {"amount": 1}}"#.to_owned())
        .collect();
    let body = format!(r#"{{"events": [{}]}}"#, events.join(","));
    assert_eq!(json(&addr, "POST", "/streams/account-1", &body).0, 201);
    // A restart: the stream's events are read from the file, not from memory.
    assert_eq!(terminate(child), 0);
    let (child, addr) = start(&data);
    for n in [
        "9223372036854775808",
        "9223372036854775809",
        "18446744073709551615",
    ] {
        let (status, page) = json(&addr, "GET", &format!("/streams/account-1?from={n}"), "");
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["events"], serde_json::json!([]), "{page}");
        let (status, page) = json(
            &addr,
            "GET",
            &format!("/streams/account-1?from={n}&direction=backward&limit=2"),
            "",
        );
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["events"][0]["version"], 5, "{page}");
        let (status, problem) = json(&addr, "GET", &format!("/streams/account-1/{n}"), "");
        assert_eq!(status, 404, "{problem}");
        assert_eq!(problem["type"], "urn:concord:event-not-found");
        for filter in ["", "&types=Deposited", "&category=account"] {
            let (status, page) = json(&addr, "GET", &format!("/all?from={n}{filter}"), "");
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["events"], serde_json::json!([]), "{page}");
        }
        let (status, page) = json(
            &addr,
            "POST",
            "/query",
            &format!(r#"{{"query": {{"items": [{{"types": ["Deposited"]}}]}}, "after": {n}}}"#),
        );
        assert_eq!(status, 200, "{page}");
    }
    for path in [
        "/streams/account-1?from=18446744073709551616",
        "/streams/account-1/18446744073709551616",
        "/all?from=18446744073709551616",
    ] {
        assert_eq!(json(&addr, "GET", path, "").0, 400, "{path}");
    }
    assert_healthy(&addr);
    assert_eq!(terminate(child), 0);
}

/// Valid JSON that no reader of the store can parse back (nesting of 128 levels or more,
/// a number beyond f64 like `1e999`, a lone surrogate `"\ud800"`) used to be accepted, and
/// then stopped the projection of its category for good with a false "not JSON". The store
/// refuses it now (400 naming `data` or `metadata`), and the projections run on.
#[test]
fn json_that_readers_cannot_parse_is_refused_and_projections_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(&dir.path().join("data"));
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for (data, metadata) in [
        (deep.as_str(), "{}"),
        ("1e999", "{}"),
        (r#""\ud800""#, "{}"),
        (r#"{"amount": 1}"#, r#"{"a": -1e400}"#),
        (r#"{"amount": 1}"#, r#"{"\udc00": 1}"#),
    ] {
        let body = format!(
            r#"{{"events": [{{"type": "Deposited", "data": {data}, "metadata": {metadata}}}]}}"#
        );
        let answer = json(&addr, "POST", "/streams/account-1", &body);
        assert_invalid(&answer, "body");
        let detail = answer.1["detail"].as_str().unwrap();
        assert!(detail.contains("readers cannot parse back"), "{detail}");
    }
    // 127 levels still reads back.
    let deepest = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    let body = format!(r#"{{"events": [{{"type": "Noted", "data": {deepest}}}]}}"#);
    assert_eq!(json(&addr, "POST", "/streams/account-1", &body).0, 201);
    let ok = r#"{"events": [{"type": "AccountOpened", "data": {"owner": "ann", "balance": 5}}]}"#;
    let (status, appended) = json(&addr, "POST", "/streams/account-2", ok);
    assert_eq!(status, 201);
    let last = appended["last_position"].as_u64().unwrap();
    let (status, row) = json(
        &addr,
        "GET",
        &format!("/projections/balances/account-2?min_position={last}&wait_ms=10000"),
        "",
    );
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["row"]["balance"], 5);
    let (status, balances) = json(&addr, "GET", "/projections/balances", "");
    assert_eq!(status, 200);
    assert_eq!(balances["status"], "running", "{balances}");
    assert_healthy(&addr);
    assert_eq!(terminate(child), 0);
}

/// A misspelt member inside a query item or a condition used to be ignored: a `"tag"`
/// typo dropped the tags (the item then matched more), a misspelt `after` became 0.
#[test]
fn unknown_members_of_queries_and_conditions_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(&dir.path().join("data"));
    let part = r#"{"stream": "user-1", "events": [{"type": "UserRegistered", "data": {}}]}"#;
    for (path, body, member) in [
        (
            "/query",
            r#"{"query": {"items": [{"types": ["A"], "tag": ["username:alice"]}]}}"#.to_owned(),
            "tag",
        ),
        (
            "/query",
            r#"{"query": {"items": [], "limit": 3}}"#.to_owned(),
            "limit",
        ),
        (
            "/append",
            format!(
                r#"{{"parts": [{part}], "condition": {{"fail_if_events_match": {{"items": []}}, "aftr": 3}}}}"#
            ),
            "aftr",
        ),
        (
            "/append",
            format!(
                r#"{{"parts": [{part}], "condition": {{"fail_if_events_match": {{"items": [{{"types": ["A"], "tgas": []}}]}}}}}}"#
            ),
            "tgas",
        ),
    ] {
        let (status, problem) = json(&addr, "POST", path, &body);
        assert_eq!(status, 400, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(member),
            "{body}: {problem}"
        );
    }
    let (status, list) = json(&addr, "GET", "/streams", "");
    assert_eq!(status, 200);
    assert_eq!(
        list["streams"],
        serde_json::json!([]),
        "nothing was written"
    );
    assert_healthy(&addr);
    assert_eq!(terminate(child), 0);
}

/// Bodies are JSON objects: an array in the shape of the members used to be accepted
/// (`[null, null, [{...}]]` appended with 201).
#[test]
fn arrays_where_objects_are_expected_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(&dir.path().join("data"));
    for (path, body) in [
        ("/streams/x-1", r#"[null,null,[{"type":"T","data":1}]]"#),
        (
            "/append",
            r#"[[{"stream":"x-1","events":[{"type":"T","data":1}]}]]"#,
        ),
        (
            "/append",
            r#"{"parts":[["x-1",null,null,[{"type":"T","data":1}]]]}"#,
        ),
        (
            "/append",
            r#"{"parts":[{"stream":"x-1","events":[{"type":"T","data":1}]}],"condition":[{"items":[]},0]}"#,
        ),
        ("/query", r#"[{"items":[]},0,10]"#),
        ("/query", r#"{"query":[[]]}"#),
        ("/query", r#"{"query":{"items":[[["A"],[]]]}}"#),
    ] {
        let (status, problem) = json(&addr, "POST", path, body);
        assert_eq!(status, 400, "{path} {body}: {problem}");
        assert_eq!(problem["type"], "urn:concord:invalid-request", "{problem}");
    }
    let (status, list) = json(&addr, "GET", "/streams", "");
    assert_eq!(status, 200);
    assert_eq!(
        list["streams"],
        serde_json::json!([]),
        "nothing was written"
    );
    assert_healthy(&addr);
    assert_eq!(terminate(child), 0);
}
