//! The command line as clap types, and nothing else.
//!
//! Values are parsed into validated core types here (stream names, event types, expected
//! versions, JSON), so a bad value is a clap usage error (exit code 2) before any store is
//! opened, and the subcommand modules never see unvalidated text.

use clap::{Args, Parser, Subcommand};
use concord_core::{
    Category, ContentType, EventId, EventType, ExpectedVersion, Json, StreamName, Tag,
};

const AFTER_HELP: &str = "\
Store URLs:
  ./concord-data, PATH, embedded:PATH, file:PATH   the embedded durable store in directory PATH
  redis://[user:pass@]host:port/db[?prefix=P]      a Redis (>= 7) server, keys under {P} (default concord)
  rediss://...                                      the same over TLS
  postgres://user:pass@host:port[,host:port]/db[?schema=S&target_session_attrs=read-write]
                                                    PostgreSQL, tables in schema S (default concord);
                                                    every statement gives up after 30 s unless libpq's
                                                    options set it (&options=-c%20statement_timeout%3DMS)
  http://host:port                                  a `concord serve` server (token from CONCORD_TOKEN)
  memory:                                           an empty in-memory store, gone on exit

Exit codes:
  0  success (appended, rebased, or a duplicate of an earlier append)
  1  other errors: backend unavailable, I/O, unreadable data directory, stream not found
  2  invalid input: bad JSON, bad stream name or event type, bad flag value, bad store URL
  3  version conflict: the expected version did not hold; the concurrent events are printed
  4  partial duplicate: some, not all, of the event ids are already in the stream";

/// Append to, read and follow the streams of a Concord event store.
#[derive(Debug, Parser)]
#[command(name = "concord", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalOpts,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// The store: a directory (embedded store), `embedded:PATH`, `file:PATH`,
    /// `redis://host:port/db`, `rediss://...`, `postgres://user:pass@host:port/db?schema=S`,
    /// `http://host:port` or `memory:`.
    #[arg(
        long,
        global = true,
        env = "CONCORD_STORE",
        default_value = "./concord-data",
        value_name = "URL"
    )]
    pub store: String,
    /// Print one JSON object per line instead of a table (for the commands that print
    /// events, streams, outcomes, statuses or rows; refused where it would do nothing).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The subcommands. Adding one is a variant here and a module beside this one.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append events to a stream: one from flags, or several (atomically) as NDJSON on stdin.
    Append(AppendArgs),
    /// Append to several streams atomically, or under a query condition: the POST /append body on stdin.
    AppendMulti(crate::cross::AppendMultiArgs),
    /// Read the events matching a query, and the head to use as a condition's `after`.
    QueryEvents(crate::cross::QueryEventsArgs),
    /// Read a stream's events.
    Read(ReadArgs),
    /// Read the global log, optionally filtered.
    All(AllArgs),
    /// List streams by name.
    Streams(StreamsArgs),
    /// Follow a stream or the global log live, until interrupted.
    Tail(TailArgs),
    /// Run a scenario (bank, auction, editor, transfer) with real concurrency and print the
    /// log. Writes its events to the store (streams `account-…`, `auction-…`, `doc-…`).
    Demo(DemoArgs),
    /// Measure a store (append, hot, read, catchup) or a baseline (fsync, sqlite, xadd).
    /// Writes its events to the store (streams `bench_<run>-…`): use a store made for it.
    Bench(crate::bench::BenchArgs),
    /// Projections (read models): list, status, rebuild.
    Projection(crate::projection::ProjectionArgs),
    /// One read-model row, after catching the projection up: `concord query balances account-42`.
    Query(crate::projection::QueryArgs),
    /// Delete a stream: soft (an append recreates it) or for good (--tombstone).
    Delete(crate::lifecycle::DeleteArgs),
    /// Show or change a stream's retention: --max-count, --max-age, --truncate-before.
    Metadata(crate::lifecycle::MetadataArgs),
    /// Copy a whole store into another (--from URL --to URL), every event kept as it is;
    /// resumable, checked by a digest of both. Takes no --store.
    Copy(crate::copy::CopyArgs),
    /// Erase what deletes and retention hide, from the store's files or keys.
    Scavenge(crate::lifecycle::ScavengeArgs),
    /// Print a shell completion script: `concord completions bash > /etc/bash_completion.d/concord`.
    Completions {
        /// The shell: bash, elvish, fish, powershell or zsh.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Serve the HTTP API (docs/http-api.md) over the store until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Consumer groups: create, list, info, parked, replay-parked, delete.
    Group(crate::group::GroupArgs),
    /// Work for a consumer group: run a command per message (the event as JSON on stdin),
    /// ack on exit 0, nack otherwise.
    Consume(crate::group::ConsumeArgs),
}

/// `concord serve`.
#[derive(Debug, Args)]
#[command(after_help = "\
With no --tokens the server is open and may only bind a loopback address, unless
--insecure-open is given. Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.")]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:2113", value_name = "HOST:PORT")]
    pub addr: std::net::SocketAddr,
    /// A second address answering only KurrentDB's gRPC protocol. Without it gRPC is
    /// served on --addr beside the HTTP API (told apart by content-type, as KurrentDB
    /// serves both on 2113).
    #[arg(long, value_name = "HOST:PORT")]
    pub grpc_addr: Option<std::net::SocketAddr>,
    /// How often to scavenge the store, erasing what deletes and retention hide: a
    /// duration such as 30m, 1h or 1d, or `off` for on demand only (`concord scavenge`,
    /// POST /admin/scavenge) [default: 1h].
    #[arg(long, value_name = "DURATION|off", value_parser = parse_scavenge_every)]
    pub scavenge_every: Option<ScavengeEvery>,
    /// A TOML file of access tokens (format in docs/http-api.md).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<std::path::PathBuf>,
    /// Allow an open server (no tokens) on an address other than loopback.
    #[arg(long)]
    pub insecure_open: bool,
    /// Largest `data` plus `metadata` of one event, in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub event_bytes_max: Option<usize>,
    /// Largest request body, in bytes [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub request_bytes_max: Option<usize>,
    /// Most events in one append [default: 1000].
    #[arg(long, value_name = "N")]
    pub events_per_append_max: Option<usize>,
    /// Most events one read returns [default: 1000].
    #[arg(long, value_name = "N")]
    pub read_limit_max: Option<usize>,
    /// Where the built-in projections served under /projections keep their read models.
    #[command(flatten)]
    pub projections: crate::projection::DbArgs,
    /// How long `GET /head?after=p` waits for the head to pass p, in milliseconds
    /// [default: 10000].
    #[arg(long, value_name = "MS")]
    pub head_long_poll_ms: Option<u64>,
    /// The longest `wait_ms` a consumer group's poll may ask for, in milliseconds
    /// [default: 60000].
    #[arg(long, value_name = "MS")]
    pub group_wait_max_ms: Option<u64>,
    /// How long a client may take to send a request's headers, or stay idle between
    /// requests, before its connection is closed, in milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    pub header_timeout_ms: Option<u64>,
    /// How long a client may take to send a request's body, in milliseconds (408 past it)
    /// [default: 60000].
    #[arg(long, value_name = "MS")]
    pub body_timeout_ms: Option<u64>,
    /// Run no built-in projections (balances, auctions, documents): the server is then only
    /// the event store, and /projections lists none. They cost every append some work
    /// (reading it back, a read-model transaction per batch).
    #[arg(long)]
    pub no_projections: bool,
}

/// `concord demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which scenario.
    #[arg(value_enum)]
    pub scenario: Scenario,
}

/// The scenarios of MISSION.md.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Scenario {
    /// Deposits rebased by the store, withdrawals re-decided on fresh state.
    Bank,
    /// Concurrent bids: the highest wins, the others learn they were outbid.
    Auction,
    /// Concurrent edits merged by operational transform.
    Editor,
    /// Concurrent transfers between accounts (two-stream appends under a query condition):
    /// the total is conserved.
    Transfer,
}

/// `concord append`.
#[derive(Debug, Args)]
#[command(after_help = "\
Without --type, reads the events from stdin, one JSON object per line:
  {\"type\": \"Deposited\", \"data\": {\"amount\": 5}, \"metadata\": {}, \"id\": \"<uuid>\", \"tags\": [\"account:42\"]}
(metadata, id and tags optional; bytes as {\"type\": …, \"content_type\": \"image/png\", \"data_base64\": \"…\"})
and appends them all atomically, with consecutive versions.
An event of bytes from a file: --type Uploaded --data-file photo.png --content-type image/png.")]
#[command(group = clap::ArgGroup::new("payload").args(["data", "data_file"]))]
pub struct AppendArgs {
    /// The stream, e.g. `account-42`.
    #[arg(value_parser = parse_stream)]
    pub stream: StreamName,
    /// The event's type, e.g. `Deposited`. Without it, events are read from stdin.
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_event_type, requires = "payload")]
    pub event_type: Option<EventType>,
    /// The event's data: any JSON value (or, with --content-type, the text's bytes).
    #[arg(long, value_name = "JSON", requires = "event_type")]
    pub data: Option<String>,
    /// The event's data read from a file, byte for byte (JSON unless --content-type says
    /// otherwise).
    #[arg(long, value_name = "PATH", requires = "event_type")]
    pub data_file: Option<std::path::PathBuf>,
    /// The content type of the data, e.g. `application/octet-stream` [default:
    /// application/json, whose data must be JSON].
    #[arg(long, value_name = "TYPE/SUBTYPE", value_parser = parse_content_type, requires = "payload")]
    pub content_type: Option<ContentType>,
    /// The event's metadata: a JSON object.
    #[arg(long, value_name = "JSON", value_parser = parse_metadata, requires = "event_type")]
    pub metadata: Option<Json>,
    /// The event's tags, comma-separated.
    #[arg(long, value_name = "TAGS", value_delimiter = ',', value_parser = parse_tag, requires = "event_type")]
    pub tags: Vec<Tag>,
    /// The event's id (a UUID; re-sending the same id is recognised as a duplicate).
    #[arg(long, value_name = "UUID", value_parser = parse_event_id, requires = "event_type")]
    pub id: Option<EventId>,
    /// The version the append is based on: a number (0 = no stream), `no-stream`, `exists`
    /// or `any`.
    #[arg(long, value_name = "N|any|no-stream|exists", default_value = "any", value_parser = parse_expected)]
    pub expect: ExpectedVersion,
    /// With a stale numeric --expect, append after the concurrent events anyway unless one
    /// of them has one of these types (comma-separated; `""` for none).
    #[arg(long, value_name = "TYPES", value_delimiter = ',', num_args = 0..=1, value_parser = parse_type_or_empty)]
    pub rebase_unless: Option<Vec<Option<EventType>>>,
}

/// `concord read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The stream.
    #[arg(value_parser = parse_stream)]
    pub stream: StreamName,
    /// The first version to read (default: 1, or the last version with --backward).
    #[arg(long, value_name = "VERSION")]
    pub from: Option<u64>,
    /// At most this many events (default: all).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Read from newest to oldest.
    #[arg(long)]
    pub backward: bool,
}

/// Filters of the global log, shared by `all` and `tail --all`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only events of streams in this category (the part of the name before the first `-`).
    #[arg(long, value_parser = parse_category)]
    pub category: Option<Category>,
    /// Only events of any of these types (comma-separated).
    #[arg(long, value_name = "TYPES", value_delimiter = ',', value_parser = parse_event_type)]
    pub types: Vec<EventType>,
    /// Only events carrying all of these tags (comma-separated).
    #[arg(long, value_name = "TAGS", value_delimiter = ',', value_parser = parse_tag)]
    pub tags: Vec<Tag>,
}

/// `concord all`.
#[derive(Debug, Args)]
pub struct AllArgs {
    /// The first position to read (default 1).
    #[arg(long, value_name = "POSITION", default_value_t = 1)]
    pub from: u64,
    /// At most this many events (default: all).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Which events.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `concord streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Only streams whose names start with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Only streams after this one in name order (for paging).
    #[arg(long, value_name = "STREAM", value_parser = parse_stream)]
    pub after: Option<StreamName>,
    /// At most this many streams (default: all).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `concord tail`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["stream", "all"])))]
pub struct TailArgs {
    /// The stream to follow.
    #[arg(value_parser = parse_stream)]
    pub stream: Option<StreamName>,
    /// Follow the global log instead of one stream.
    #[arg(long)]
    pub all: bool,
    /// Start at this version (a stream) or position (--all), inclusive; `end` for only
    /// events appended from now on (default 1: everything stored, then live).
    #[arg(long, value_name = "N|end", default_value = "1", value_parser = parse_start)]
    pub from: Start,
    /// Which events (with --all).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Where `tail` starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Start {
    /// At this version or position, inclusive.
    At(u64),
    /// After the current last event: live events only.
    End,
}

fn parse_stream(s: &str) -> Result<StreamName, String> {
    StreamName::new(s).map_err(|e| e.to_string())
}

fn parse_event_type(s: &str) -> Result<EventType, String> {
    EventType::new(s).map_err(|e| e.to_string())
}

fn parse_type_or_empty(s: &str) -> Result<Option<EventType>, String> {
    if s.is_empty() {
        Ok(None)
    } else {
        parse_event_type(s).map(Some)
    }
}

fn parse_category(s: &str) -> Result<Category, String> {
    Category::new(s).map_err(|e| e.to_string())
}

fn parse_tag(s: &str) -> Result<Tag, String> {
    Tag::new(s).map_err(|e| e.to_string())
}

fn parse_event_id(s: &str) -> Result<EventId, String> {
    s.parse()
        .map_err(|e: concord_core::InvalidInput| e.to_string())
}

fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    s.parse()
        .map_err(|e: concord_core::InvalidInput| e.to_string())
}

fn parse_content_type(s: &str) -> Result<ContentType, String> {
    ContentType::new(s).map_err(|e| e.to_string())
}

fn parse_metadata(s: &str) -> Result<Json, String> {
    let json = Json::from_bytes("metadata", s.to_owned()).map_err(|e| e.to_string())?;
    if json.is_object() {
        Ok(json)
    } else {
        Err(format!("metadata must be a JSON object, but {s:?} is not"))
    }
}

fn parse_start(s: &str) -> Result<Start, String> {
    if s == "end" {
        return Ok(Start::End);
    }
    s.parse()
        .map(Start::At)
        .map_err(|_| format!("{s:?} is neither a number nor `end`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn scavenge_every_takes_a_duration_or_off_and_refuses_the_rest() {
        assert_eq!(
            parse_scavenge_every("1h"),
            Ok(ScavengeEvery::Every(std::time::Duration::from_secs(3600)))
        );
        assert_eq!(
            parse_scavenge_every("30m"),
            Ok(ScavengeEvery::Every(std::time::Duration::from_secs(1800)))
        );
        for off in ["off", "0", "never"] {
            assert_eq!(parse_scavenge_every(off), Ok(ScavengeEvery::Off));
        }
        for bad in ["", "soon", "-1h", "10ms"] {
            let err = parse_scavenge_every(bad).unwrap_err();
            assert!(
                err.contains("1h") || err.contains("at least 1s"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rebase_unless_takes_a_list_or_nothing() {
        let cli = Cli::try_parse_from([
            "concord",
            "append",
            "account-1",
            "--type",
            "Deposited",
            "--data",
            "{}",
            "--rebase-unless",
            "AccountClosed,Frozen",
        ])
        .unwrap();
        let Command::Append(a) = cli.command else {
            panic!("append expected")
        };
        assert_eq!(a.rebase_unless.unwrap().len(), 2);
        let cli = Cli::try_parse_from([
            "concord",
            "append",
            "account-1",
            "--type",
            "Deposited",
            "--data",
            "{}",
            "--rebase-unless",
        ])
        .unwrap();
        let Command::Append(a) = cli.command else {
            panic!("append expected")
        };
        assert_eq!(a.rebase_unless, Some(vec![]));
    }

    #[test]
    fn invalid_values_are_usage_errors() {
        for args in [
            &["concord", "append", "$x", "--type", "T", "--data", "{}"][..],
            // Whether --data is JSON depends on --content-type: `append` checks it (exit 2
            // too, see tests/cli.rs); the content type itself is checked here.
            &[
                "concord",
                "append",
                "a-1",
                "--type",
                "T",
                "--data",
                "x",
                "--content-type",
                "png",
            ],
            &[
                "concord",
                "append",
                "a-1",
                "--type",
                "T",
                "--data",
                "{}",
                "--data-file",
                "f",
            ],
            &[
                "concord",
                "append",
                "a-1",
                "--type",
                "T",
                "--data",
                "{}",
                "--metadata",
                "[1]",
            ],
            &[
                "concord", "append", "a-1", "--type", "T", "--data", "{}", "--expect", "latest",
            ],
            &["concord", "append", "a-1", "--data", "{}"],
            &["concord", "tail"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}

/// `--scavenge-every`: a period, or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScavengeEvery {
    /// Scavenge this often.
    Every(std::time::Duration),
    /// Only on demand.
    Off,
}

fn parse_scavenge_every(text: &str) -> Result<ScavengeEvery, String> {
    if matches!(text, "off" | "0" | "never") {
        return Ok(ScavengeEvery::Off);
    }
    let every = humantime::parse_duration(text)
        .map_err(|e| format!("{e}: give a duration such as 30m, 1h or 1d, or off"))?;
    if every < std::time::Duration::from_secs(1) {
        return Err("the period must be at least 1s (or off)".to_owned());
    }
    Ok(ScavengeEvery::Every(every))
}
