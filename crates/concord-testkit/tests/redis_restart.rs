//! The Redis harness restarts a killed server the way docs/design/redis-layout.md tells
//! operators to: with its AOF repaired first, so the half of a transaction that a kill cut
//! short is never applied, also not at a later restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use concord_testkit::redis::{Persistence, RedisServer, RedisServerOptions};

/// A reply, as far as these commands need one: a status, an integer, a bulk string or nil,
/// or an array of those.
#[derive(Debug, PartialEq)]
enum Reply {
    Line(String),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

fn read_reply(reader: &mut impl BufRead) -> Reply {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a reply line");
    let line = line.trim_end().to_string();
    let (kind, rest) = line.split_at(1);
    match kind {
        "$" => {
            let len: i64 = rest.parse().expect("bulk length");
            if len < 0 {
                return Reply::Bulk(None);
            }
            let mut body = String::new();
            reader.read_line(&mut body).expect("read a bulk string");
            Reply::Bulk(Some(body.trim_end().to_string()))
        }
        "*" => {
            let n: usize = rest.parse().expect("array length");
            Reply::Array((0..n).map(|_| read_reply(reader)).collect())
        }
        "-" => panic!("Redis answered an error: {rest}"),
        _ => Reply::Line(line),
    }
}

fn command(server: &RedisServer, commands: &[&[&str]]) -> Vec<Reply> {
    let stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect to Redis");
    let mut writer = stream.try_clone().expect("clone the socket");
    let mut reader = BufReader::new(stream);
    commands
        .iter()
        .map(|args| {
            let mut frame = format!("*{}\r\n", args.len());
            for arg in *args {
                frame.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
            writer.write_all(frame.as_bytes()).expect("send a command");
            read_reply(&mut reader)
        })
        .collect()
}

fn incremental_aof(server: &RedisServer) -> PathBuf {
    std::fs::read_dir(server.dir().join("appendonlydir"))
        .expect("the AOF directory")
        .map(|entry| entry.expect("a directory entry").path())
        .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .expect("an incremental AOF file")
}

#[test]
fn a_transaction_cut_short_in_the_aof_is_never_applied_after_restarts() {
    let mut server = RedisServer::start_with(RedisServerOptions {
        persistence: Persistence::AppendFsyncAlways,
        ..RedisServerOptions::default()
    });
    command(&server, &[&["SET", "before", "1"]]);
    server.kill();

    // What a kill in the middle of writing a function's effects leaves: a MULTI block
    // whose second command was cut short.
    let mut aof = std::fs::OpenOptions::new()
        .append(true)
        .open(incremental_aof(&server))
        .expect("open the AOF");
    aof.write_all(
        b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1",
    )
    .expect("append a cut-short transaction");
    drop(aof);

    server.restart();
    let replies = command(
        &server,
        &[
            &["GET", "a"],
            &["MULTI"],
            &["SET", "c", "1"],
            &["SET", "d", "1"],
            &["EXEC"],
        ],
    );
    assert_eq!(replies.first(), Some(&Reply::Bulk(None)));

    // Redis's own truncation would leave the MULTI open, and this load would run `SET a 1`
    // with the transaction after it.
    server.restart();
    let replies = command(
        &server,
        &[
            &["GET", "before"],
            &["GET", "a"],
            &["GET", "b"],
            &["GET", "c"],
            &["GET", "d"],
        ],
    );
    assert_eq!(
        replies,
        vec![
            Reply::Bulk(Some("1".into())),
            Reply::Bulk(None),
            Reply::Bulk(None),
            Reply::Bulk(Some("1".into())),
            Reply::Bulk(Some("1".into())),
        ]
    );
}
