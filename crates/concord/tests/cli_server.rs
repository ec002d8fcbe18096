//! The command line beside a running `concord serve` (issue 23), and the messages that say
//! what to do: `--store http://…` asks the server (its projections, its read limit, its
//! refusal of a token), a server address without a scheme or a read of a store that does
//! not exist is refused without creating a directory, and a store held by a server says
//! how to reach it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, json, start_with, terminate};
use serde_json::Value;

/// Runs `concord` in `cwd` with `args` and the environment `env`; returns the exit code,
/// stdout and stderr.
fn concord(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command
        .current_dir(cwd)
        .env_remove("CONCORD_STORE")
        .env_remove("CONCORD_TOKEN")
        .args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn seed(addr: &str, n: usize) {
    for i in 0..n {
        let body = if i == 0 {
            r#"{"events": [{"type": "AccountOpened", "data": {"owner": "ann", "balance": 10}}]}"#
                .to_owned()
        } else {
            r#"{"events": [{"type": "Deposited", "data": {"amount": 1}}]}"#.to_owned()
        };
        assert_eq!(json(addr, "POST", "/streams/account-1", &body).0, 201);
    }
}

/// `projection list|status|rebuild` and `query` ask the server: the same statuses and rows
/// as its API, and no read models of their own in the working directory.
#[test]
fn projection_commands_against_a_server_ask_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start_with(&dir.path().join("data"), &[]);
    seed(&addr, 12);
    let cwd = tempfile::tempdir().unwrap();
    let store = format!("http://{addr}");
    let (code, out, err) = concord(
        cwd.path(),
        &[],
        &["--store", &store, "query", "balances", "account-1"],
    );
    assert_eq!(code, 0, "{err}");
    let row: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(row["balance"], 21);
    assert_eq!(row["version"], 12);
    let (code, out, err) = concord(
        cwd.path(),
        &[],
        &["--store", &store, "--json", "projection", "list"],
    );
    assert_eq!(code, 0, "{err}");
    let statuses: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (_, api) = json(&addr, "GET", "/projections", "");
    assert_eq!(statuses.len(), api["projections"].as_array().unwrap().len());
    let balances = statuses.iter().find(|s| s["name"] == "balances").unwrap();
    assert_eq!(balances["status"], "running", "{balances}");
    assert_eq!(balances["lag"], 0, "{balances}");
    let (code, out, err) = concord(
        cwd.path(),
        &[],
        &["--store", &store, "projection", "status", "balances"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("running"), "{out}");
    let (code, out, err) = concord(
        cwd.path(),
        &[],
        &["--store", &store, "projection", "rebuild", "balances"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rebuilt balances on the server: checkpoint 12"),
        "{out}"
    );
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "nothing is created in the working directory"
    );
    assert_eq!(terminate(child), 0);
}

/// With a token that may not read every stream, the commands that need it fail at once
/// with the server's 403 (they used to wait forever); without a token the message says to
/// set CONCORD_TOKEN.
#[test]
fn refused_tokens_fail_with_what_to_do_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\ntoken = \"admin-0123456789abcdef0123456789\"\nread = [\"*\"]\nwrite = [\"*\"]\n\n[[token]]\ntoken = \"accounts-0123456789abcdef012345\"\nread = [\"account-\"]\n",
    )
    .unwrap();
    let (child, addr) = start_with(
        &dir.path().join("data"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    let store = format!("http://{addr}");
    let cwd = tempfile::tempdir().unwrap();
    let (code, _, err) = concord(cwd.path(), &[], &["--store", &store, "streams"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unauthorized") && err.contains("set CONCORD_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("cannot reach"), "{err}");
    let limited = [("CONCORD_TOKEN", "accounts-0123456789abcdef012345")];
    // The read side answers this token (it reads the server's status, and account rows)…
    for args in [
        vec!["--store", store.as_str(), "projection", "list"],
        vec!["--store", store.as_str(), "query", "balances", "account-1"],
    ] {
        let (code, _, err) = concord(cwd.path(), &limited, &args);
        assert!(
            code == 0 || err.contains("row-not-found"),
            "{args:?}: {err}"
        );
    }
    // … but reading every stream is refused, at once.
    for args in [
        vec!["--store", store.as_str(), "all"],
        vec![
            "--store",
            store.as_str(),
            "query-events",
            "--types",
            "Deposited",
        ],
    ] {
        let (code, _, err) = concord(cwd.path(), &limited, &args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("403") || err.contains("forbidden"),
            "{args:?}: {err}"
        );
    }
    let admin = [("CONCORD_TOKEN", "admin-0123456789abcdef0123456789")];
    let (code, _, err) = concord(
        cwd.path(),
        &admin,
        &["--store", &store, "projection", "list"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(terminate(child), 0);
}

/// A server started with `--read-limit-max 5`: `read`, `all` and `streams` page within it.
#[test]
fn reads_page_within_the_servers_read_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start_with(&dir.path().join("data"), &["--read-limit-max", "5"]);
    seed(&addr, 12);
    for i in 2..=8 {
        let body = r#"{"events": [{"type": "Opened", "data": {}}]}"#;
        assert_eq!(
            json(&addr, "POST", &format!("/streams/other-{i}"), body).0,
            201
        );
    }
    let store = format!("http://{addr}");
    let cwd = tempfile::tempdir().unwrap();
    for (args, lines) in [
        (vec!["read", "account-1"], 12),
        (vec!["all"], 19),
        (vec!["streams"], 8),
    ] {
        let mut full = vec!["--store", store.as_str(), "--json"];
        full.extend(args.iter().copied());
        let (code, out, err) = concord(cwd.path(), &[], &full);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(out.lines().count(), lines, "{args:?}: {out}");
    }
    assert_eq!(terminate(child), 0);
}

/// A server address without its scheme would have become a directory of that name; a read
/// of a store that does not exist would have created `./concord-data`.
#[test]
fn mistaken_store_urls_and_reads_of_no_store_create_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    for url in ["127.0.0.1:2113", "localhost:2113", "[::1]:2113"] {
        let (code, _, err) = concord(cwd.path(), &[], &["--store", url, "streams"]);
        assert_eq!(code, 2, "{url}: {err}");
        assert!(err.contains("http://"), "{url}: {err}");
    }
    for args in [
        vec!["read", "account-1"],
        vec!["all"],
        vec!["streams"],
        vec!["query-events", "--types", "Deposited"],
        vec!["projection", "list"],
        vec!["query", "balances", "account-1"],
    ] {
        let (code, _, err) = concord(cwd.path(), &[], &args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("there is no store in ./concord-data"),
            "{args:?}: {err}"
        );
    }
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "nothing is created in the working directory"
    );
}

/// While `concord serve` holds an embedded store, another command on its directory is told
/// to go through the server.
#[test]
fn a_store_held_by_a_server_says_to_use_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = start_with(&data, &[]);
    seed(&addr, 1);
    let (code, _, err) = concord(
        dir.path(),
        &[],
        &["--store", data.to_str().unwrap(), "streams"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("already open") && err.contains("--store http://"),
        "{err}"
    );
    assert_eq!(terminate(child), 0);
}

#[test]
fn version_completions_and_json_where_it_does_something() {
    let cwd = tempfile::tempdir().unwrap();
    let (code, out, _) = concord(cwd.path(), &[], &["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("concord {}", env!("CARGO_PKG_VERSION")));
    let (code, out, err) = concord(cwd.path(), &[], &["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("complete") && out.contains("concord"), "{out}");
    for command in [
        vec!["serve"],
        vec!["demo", "bank"],
        vec!["completions", "zsh"],
    ] {
        let mut args = vec!["--json"];
        args.extend(command.iter().copied());
        let (code, _, err) = concord(cwd.path(), &[], &args);
        assert_eq!(code, 2, "{command:?}: {err}");
        assert!(err.contains("--json does nothing"), "{command:?}: {err}");
    }
    assert!(std::fs::read_dir(cwd.path()).unwrap().next().is_none());
}
