//! The peer comparison: Concord's embedded store (as a library) and UmaDB's gRPC server
//! driven with the same workload in the same run, with a 4 KiB fsync loop beside them.
//!
//! Workload per point: W writers, one event per conditional append, each writer on its own
//! consistency boundary (a Concord stream with an exact expected version; in UmaDB, a tag
//! whose events must not have moved past the writer's last position), W = 1, 2, 4 … 64,
//! a few seconds per point.
//!
//! ```text
//! cargo run --release -p concord-bench --features umadb --bin peer -- \
//!     [--umadb PATH] [--dir DIR] [--seconds S] [--writers 1,2,4,...] [--rounds R] [--out FILE.json]
//! ```
//! With `--rounds R` the whole sweep runs R times, the systems of each point in a rotated
//! order (so none is always measured first, right after another system's writes), and
//! the ratios the targets name are printed as medians and ranges over the rounds, each
//! ratio taken between points of one round.
//! Without `--umadb` (or when the binary does not start) UmaDB is left out. With
//! `--concord PATH` (the `concord` binary), `concord serve --no-projections` over a fresh
//! embedded store is driven through `concord_client::ConcordClient` (HTTP) with the same
//! workload (`--with-projections` keeps the built-in read models running beside it), and
//! the same server over KurrentDB's gRPC protocol through KurrentDB's official Rust client
//! (`kurrentdb`, one client shared by the writers, each on its own stream with an exact
//! expected revision), once with an `Append` call per append (`concord-grpc`) and once
//! with every writer's appends on one shared `BatchAppend` call (`concord-grpc-batch`).
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use concord_core::{
    AppendRequest, EventStore, EventType, ExpectedVersion, Json, NewEvent, StreamName, Version,
};
use concord_embedded::EmbeddedStore;
use umadb_client::AsyncUmaDbClient;
use umadb_dcb::{DcbAppendCondition, DcbEvent, DcbEventStoreAsync, DcbQuery, DcbQueryItem};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const DATA: &[u8] = b"{\"amount\":1,\"note\":\"concord bench\"}";

struct Options {
    umadb: Option<PathBuf>,
    concord: Option<PathBuf>,
    dir: PathBuf,
    seconds: f64,
    writers: Vec<u64>,
    rounds: u32,
    out: Option<PathBuf>,
    /// Whether `concord serve` runs its built-in projections (off by default: UmaDB keeps
    /// no read models, so the comparison is event store against event store).
    projections: bool,
}

fn options() -> Result<Options> {
    let mut o = Options {
        umadb: None,
        concord: None,
        dir: PathBuf::from("target/peer-bench"),
        seconds: 3.0,
        writers: vec![1, 2, 4, 8, 16, 32, 64],
        rounds: 1,
        out: None,
        projections: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--umadb" => o.umadb = Some(PathBuf::from(value()?)),
            "--concord" => o.concord = Some(PathBuf::from(value()?)),
            "--dir" => o.dir = PathBuf::from(value()?),
            "--seconds" => o.seconds = value()?.parse()?,
            "--writers" => {
                o.writers = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()?;
            }
            "--rounds" => {
                o.rounds = value()?.parse()?;
                if o.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--with-projections" => o.projections = true,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(o)
}

/// What a point measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    /// Concord's embedded store, as a library in this process.
    Embedded,
    /// `concord serve` over the embedded store, through `ConcordClient`.
    Http,
    /// The same `concord serve`, through KurrentDB's gRPC protocol and official client,
    /// one `Append` call per append.
    Grpc,
    /// The same, every writer's appends on one shared `BatchAppend` call (the client's
    /// `batch_append`).
    GrpcBatch,
    /// UmaDB's server, through its Rust client.
    Umadb,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Embedded => "concord-embedded",
            System::Http => "concord-http",
            System::Grpc => "concord-grpc",
            System::GrpcBatch => "concord-grpc-batch",
            System::Umadb => "umadb",
        }
    }
}

/// The systems of a point, in the order of round 1.
const SYSTEMS: [System; 5] = [
    System::Embedded,
    System::Http,
    System::Grpc,
    System::GrpcBatch,
    System::Umadb,
];

/// Issue 6's targets on this comparison: numerator, denominator, writers, least ratio.
const TARGETS: &[(System, System, u64, f64)] = &[
    (System::Embedded, System::Umadb, 64, 3.0),
    (System::Embedded, System::Umadb, 1, 2.0),
    (System::Http, System::Umadb, 64, 1.5),
    (System::Http, System::Embedded, 64, 0.5),
    // Issue 21's.
    (System::Grpc, System::Http, 64, 1.0),
    (System::Grpc, System::Umadb, 64, 1.5),
    (System::GrpcBatch, System::Http, 64, 1.0),
    (System::GrpcBatch, System::Umadb, 64, 1.5),
];

/// The median and range of some ratios.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => *sorted.get(n / 2)?,
            _ => (*sorted.get(n / 2 - 1)? + *sorted.get(n / 2)?) / 2.0,
        };
        Some(Summary {
            median,
            min: *sorted.first()?,
            max: *sorted.last()?,
        })
    }
}

/// One point of the comparison.
struct Point {
    round: u32,
    system: System,
    writers: u64,
    events_per_sec: f64,
    conflicts: u64,
    load: f64,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(0.0)
}

fn fsync_rate(dir: &Path, run: Duration) -> Result<f64> {
    let path = dir.join("fsync.bin");
    let mut file = std::fs::File::create(&path)?;
    file.set_len(1 << 20)?;
    file.sync_all()?;
    let block = [7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        file.seek(SeekFrom::Start((n % 256) * 4096))?;
        file.write_all(&block)?;
        file.sync_data()?;
        n += 1;
    }
    std::fs::remove_file(&path)?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// W writers on streams `{prefix}-{w}`, new ones (a served store outlives the points).
async fn concord_point(
    store: Arc<dyn EventStore>,
    prefix: String,
    writers: u64,
    run: Duration,
) -> Result<(f64, u64)> {
    let event_type = EventType::new("BenchTicked")?;
    let data = Json::from_bytes("data", DATA)?;
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, count, event_type, data, prefix) = (
                Arc::clone(&store),
                Arc::clone(&count),
                event_type.clone(),
                data.clone(),
                prefix.clone(),
            );
            tokio::spawn(async move {
                let stream = StreamName::new(format!("{prefix}-{w}"))?;
                let mut version = Version::NONE;
                while start.elapsed() < run {
                    let request = AppendRequest::new(
                        stream.clone(),
                        ExpectedVersion::Exact(version),
                        vec![NewEvent::new(event_type.clone(), data.clone())],
                    );
                    version = store.append(request).await?.appended().last_version;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Result::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        0,
    ))
}

/// W writers on the tags `{prefix}-{w}`.
async fn umadb_point(url: &str, prefix: String, writers: u64, run: Duration) -> Result<(f64, u64)> {
    let client = Arc::new(AsyncUmaDbClient::connect(url.to_owned(), None, None, None).await?);
    let count = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (client, count, conflicts, prefix) = (
                Arc::clone(&client),
                Arc::clone(&count),
                Arc::clone(&conflicts),
                prefix.clone(),
            );
            tokio::spawn(async move {
                let tag = format!("{prefix}-{w}");
                let boundary = DcbQuery::new().item(DcbQueryItem::new().tags([tag.as_str()]));
                let mut after = client.head().await?;
                while start.elapsed() < run {
                    let event = DcbEvent::default()
                        .event_type("BenchTicked")
                        .tags([tag.as_str()])
                        .data(DATA)
                        .uuid(uuid::Uuid::new_v4());
                    let condition = DcbAppendCondition {
                        fail_if_events_match: boundary.clone(),
                        after,
                    };
                    match client.append(vec![event], Some(condition), None).await {
                        Ok(position) => {
                            after = Some(position);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(umadb_dcb::DcbError::IntegrityError(_)) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                            after = client.head().await?;
                        }
                        Err(e) => return Err(Box::new(e) as Box<dyn Error + Send + Sync>),
                    }
                }
                Result::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        conflicts.load(Ordering::Relaxed),
    ))
}

/// W writers on streams `{prefix}-{w}` over KurrentDB's gRPC protocol (0-based revisions:
/// the first append expects no stream, the next ones the revision the last one reported),
/// each append its own `Append` call or (`batch`) a request on one shared `BatchAppend` call.
async fn grpc_point(
    addr: &str,
    prefix: String,
    writers: u64,
    run: Duration,
    batch: bool,
) -> Result<(f64, u64)> {
    use kurrentdb::{
        AppendToStreamOptions, BatchAppendOptions, EventData, ReadAllOptions, StreamState,
    };
    let settings: kurrentdb::ClientSettings = format!("esdb://{addr}?tls=false").parse()?;
    let client = kurrentdb::Client::new(settings).map_err(|e| e.to_string())?;
    // The client connects on its first call, which is far slower than the others.
    let _ = client
        .read_all(&ReadAllOptions::default().max_count(1))
        .await?;
    let data: serde_json::Value = serde_json::from_slice(DATA)?;
    let event = EventData::json("BenchTicked", &data)?;
    let batcher = if batch {
        Some(Arc::new(
            client.batch_append(&BatchAppendOptions::default()).await?,
        ))
    } else {
        None
    };
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (client, count, event) = (client.clone(), Arc::clone(&count), event.clone());
            let batcher = batcher.clone();
            let stream = format!("{prefix}-{w}");
            tokio::spawn(async move {
                let mut state = StreamState::NoStream;
                while start.elapsed() < run {
                    let revision = match &batcher {
                        None => {
                            let options = AppendToStreamOptions::default().stream_state(state);
                            client
                                .append_to_stream(stream.as_str(), &options, event.clone())
                                .await?
                                .next_expected_version
                        }
                        Some(batcher) => batcher
                            .append_to_stream(stream.as_str(), state, vec![event.clone()])
                            .await?
                            .current_revision()
                            .ok_or("BatchAppend answered without a revision")?,
                    };
                    state = StreamState::StreamRevision(revision);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Result::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        0,
    ))
}

/// The UmaDB server, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_umadb(binary: &Path, dir: &Path) -> Result<(Server, String)> {
    let port = free_port()?;
    let child = Command::new(binary)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db-path")
        .arg(dir.join("uma.db"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match AsyncUmaDbClient::connect(url.clone(), None, None, None).await {
            Ok(client) if client.head().await.is_ok() => return Ok((server, url)),
            _ if Instant::now() > deadline => return Err("umadb did not start within 20 s".into()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn start_concord(
    binary: &Path,
    dir: &Path,
    projections: bool,
) -> Result<(Server, Arc<dyn EventStore>, String)> {
    let port = free_port()?;
    let mut command = Command::new(binary);
    command
        .arg("--store")
        .arg(dir.join("served"))
        .arg("serve")
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"));
    if !projections {
        command.arg("--no-projections");
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server(child);
    let addr = format!("127.0.0.1:{port}");
    let client = concord_client::ConcordClient::new(&format!("http://{addr}"), None)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.head().await.is_err() {
        if Instant::now() > deadline {
            return Err("concord serve did not start within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((server, Arc::new(client), addr))
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = options()?;
    std::fs::create_dir_all(&o.dir)?;
    let dir = tempfile::tempdir_in(&o.dir)?;
    let run = Duration::from_secs_f64(o.seconds);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "directory {}, {cores} cores, {} s per point",
        dir.path().display(),
        o.seconds
    );
    let fsync = fsync_rate(dir.path(), run)?;
    println!(
        "4 KiB write + fdatasync: {fsync:.0}/s (load {:.2})",
        load_average()
    );

    let umadb = match &o.umadb {
        Some(binary) => match start_umadb(binary, dir.path()).await {
            Ok(server) => Some(server),
            Err(e) => {
                println!("umadb not run: {e}");
                None
            }
        },
        None => None,
    };
    let served = match &o.concord {
        Some(binary) => match start_concord(binary, dir.path(), o.projections).await {
            Ok(served) => Some(served),
            Err(e) => {
                println!("concord serve not run: {e}");
                None
            }
        },
        None => None,
    };
    println!(
        "{:>5} {:<18} {:>7} {:>12} {:>9} {:>6}",
        "round", "system", "writers", "events/s", "conflicts", "load"
    );
    let mut points = Vec::new();
    for round in 1..=o.rounds {
        for &writers in &o.writers {
            let prefix = format!("bench{writers}-r{round}");
            // Round r starts with the (r-1)-th system: each one is measured first in some.
            let mut order = SYSTEMS;
            order.rotate_left((round as usize - 1) % SYSTEMS.len());
            for system in order {
                let measured: Result<Option<(f64, u64)>> = async {
                    Ok(match system {
                        System::Embedded => {
                            let store: Arc<dyn EventStore> = Arc::new(EmbeddedStore::open(
                                dir.path().join(format!("concord-{writers}-r{round}")),
                            )?);
                            Some(concord_point(store, prefix.clone(), writers, run).await?)
                        }
                        System::Http => match &served {
                            Some((_, client, _)) => Some(
                                concord_point(Arc::clone(client), prefix.clone(), writers, run)
                                    .await?,
                            ),
                            None => None,
                        },
                        System::Grpc | System::GrpcBatch => match &served {
                            Some((_, _, addr)) => {
                                let batch = system == System::GrpcBatch;
                                let prefix = format!("{prefix}-{}", system.name());
                                Some(grpc_point(addr, prefix, writers, run, batch).await?)
                            }
                            None => None,
                        },
                        System::Umadb => match &umadb {
                            Some((_, url)) => {
                                Some(umadb_point(url, prefix.clone(), writers, run).await?)
                            }
                            None => None,
                        },
                    })
                }
                .await;
                // Which point failed, not only how: a sweep runs three systems for minutes.
                let measured = measured.map_err(|e| {
                    format!("{} at {writers} writers, round {round}: {e}", system.name())
                })?;
                if let Some((rate, conflicts)) = measured {
                    let point = Point {
                        round,
                        system,
                        writers,
                        events_per_sec: rate,
                        conflicts,
                        load: load_average(),
                    };
                    // Each point as it is measured: a sweep in rounds takes minutes.
                    println!(
                        "{:>5} {:<18} {:>7} {:>12.0} {:>9} {:>6.2}",
                        point.round,
                        point.system.name(),
                        point.writers,
                        point.events_per_sec,
                        point.conflicts,
                        point.load
                    );
                    points.push(point);
                }
            }
        }
    }
    drop(umadb);
    drop(served);

    println!();
    println!(
        "ratios (each within one round; median and range over {} rounds)",
        o.rounds
    );
    for &(num, den, writers, target) in TARGETS {
        let ratios: Vec<f64> = (1..=o.rounds)
            .filter_map(|round| {
                let rate = |system: System| {
                    points
                        .iter()
                        .find(|p| p.round == round && p.system == system && p.writers == writers)
                        .map(|p| p.events_per_sec)
                };
                Some(rate(num)? / rate(den)?)
            })
            .collect();
        if let Some(summary) = Summary::of(&ratios) {
            let met = ratios.iter().filter(|r| **r >= target).count();
            let (num, den) = (num.name(), den.name());
            println!(
                "{num:<16} / {den:<16} at {writers:>2} writers: median {:5.2}x  range {:.2}-{:.2}x  {} (target >= {target}x; {met} of {} rounds)",
                summary.median,
                summary.min,
                summary.max,
                if summary.median >= target {
                    "met"
                } else {
                    "NOT met"
                },
                ratios.len(),
            );
        }
    }
    if let Some(out) = &o.out {
        let json = serde_json::json!({
            "cores": cores,
            "seconds_per_point": o.seconds,
            "fsync_per_sec": fsync,
            "rounds": o.rounds,
            "points": points.iter().map(|p| serde_json::json!({
                "round": p.round, "system": p.system.name(), "writers": p.writers, "events_per_sec": p.events_per_sec,
                "conflicts": p.conflicts, "load_average": p.load,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(out, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
