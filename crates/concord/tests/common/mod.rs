//! `concord serve` as a child process on an ephemeral port, and plain HTTP/1.1 requests to
//! it over a socket: what the tests of the binary share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    unreachable_pub
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_concord");
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to concord serve");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Bodies may be chunked; the JSON object sits between the first `{` and the last `}`.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a <= b => body[a..=b].to_owned(),
        _ => body,
    };
    (status, json)
}

/// Starts `concord serve` on 127.0.0.1:0 and returns it with the address it announced.
pub fn start(dir: &std::path::Path) -> (Child, String) {
    start_with(dir, &[])
}

/// As [`start`], with more `serve` flags.
pub fn start_with(dir: &std::path::Path, flags: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args([
            "--store",
            dir.to_str().unwrap(),
            "serve",
            "--addr",
            "127.0.0.1:0",
        ])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start concord serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("on http://").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let addr = rx
        .recv_timeout(DEADLINE)
        .expect("concord serve announced its address");
    (child, addr)
}

pub fn terminate(mut child: Child) -> i32 {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or_else(|| {
                panic!(
                    "concord serve was killed by signal {:?}, not stopped by SIGTERM's handler",
                    std::os::unix::process::ExitStatusExt::signal(&status)
                )
            });
        }
        assert!(
            Instant::now() < deadline,
            "concord serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// As [`http`], with the body parsed as JSON (`null` when it is not JSON).
pub fn json(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http(addr, method, path, body);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts the server is healthy and still takes appends and reads.
pub fn assert_healthy(addr: &str) {
    let (status, health) = json(addr, "GET", "/health", "");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    let (status, body) = json(
        addr,
        "POST",
        "/streams/health-check",
        r#"{"events": [{"type": "Checked", "data": {}}]}"#,
    );
    assert_eq!(status, 201, "an append after bad input: {body}");
    let (status, body) = json(
        addr,
        "GET",
        "/streams/health-check?direction=backward&limit=1",
        "",
    );
    assert_eq!(status, 200, "{body}");
}
