//! `concord group create|list|info|parked|replay-parked|delete` and `concord consume GROUP
//! --exec CMD`: consumer groups from the command line.
//!
//! With `--store http://…` the server is asked (`/groups`). Otherwise the groups live in
//! the store named by `--store` itself (their state is events of the store), and the
//! command works on it directly: a Redis store shared with servers sees the same groups.
//!
//! `consume` is a worker in one line of shell: for each message it runs `sh -c CMD` with
//! the event as JSON on stdin (and `CONCORD_GROUP`, `CONCORD_ACK_ID`, `CONCORD_DELIVERY`,
//! `CONCORD_STREAM`, `CONCORD_VERSION`, `CONCORD_POSITION`, `CONCORD_EVENT_TYPE` in its
//! environment), acks the message when the command exits 0 and nacks it otherwise.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use concord_api::{GroupStatus, ParkedEvent};
use concord_client::ConcordClient;
use concord_core::{Category, EventType, StreamName, Tag};
use concord_groups::{
    AllSource, ConsumerName, GroupError, GroupInfo, GroupName, GroupSpec, Groups, Message,
    NackAction, Ordering, Source, StartFrom, Upserted,
};
use tokio::io::AsyncWriteExt as _;

use crate::store_url::StoreUrl;
use crate::{Context, Exit};

/// `concord group`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: GroupAction,
}

/// The `concord group` subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupAction {
    /// Create a group, or change its ack timeout, max deliveries or ordering (its source
    /// and start are fixed once created).
    Create(CreateArgs),
    /// Every group: source, acked, in flight, parked, pending.
    List,
    /// One group's settings, counts and deliveries in flight.
    Info {
        /// The group.
        #[arg(value_parser = parse_group)]
        group: GroupName,
    },
    /// The group's parked events.
    Parked {
        /// The group.
        #[arg(value_parser = parse_group)]
        group: GroupName,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Return every parked event to the group (its deliveries counted afresh).
    ReplayParked {
        /// The group.
        #[arg(value_parser = parse_group)]
        group: GroupName,
    },
    /// Delete a group and its state.
    Delete {
        /// The group.
        #[arg(value_parser = parse_group)]
        group: GroupName,
    },
}

/// `concord group create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The group's name.
    #[arg(value_parser = parse_group)]
    pub group: GroupName,
    /// The events of this one stream (else the global log through the filter below).
    #[arg(long, value_parser = parse_stream, conflicts_with_all = ["category", "types", "tags"])]
    pub stream: Option<StreamName>,
    /// Only events of streams in this category.
    #[arg(long, value_parser = parse_category)]
    pub category: Option<Category>,
    /// Only events of any of these types (comma-separated).
    #[arg(long, value_name = "TYPES", value_delimiter = ',', value_parser = parse_event_type)]
    pub types: Vec<EventType>,
    /// Only events carrying all of these tags (comma-separated).
    #[arg(long, value_name = "TAGS", value_delimiter = ',', value_parser = parse_tag)]
    pub tags: Vec<Tag>,
    /// Where the group starts: `start`, `end`, or a position (a version with --stream).
    #[arg(long, default_value = "start", value_parser = parse_from)]
    pub from: StartFrom,
    /// How long a consumer has to ack a message, in milliseconds (at least 100).
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub ack_timeout_ms: u64,
    /// Deliveries of one event before it is parked (at least 1).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_deliveries: u32,
    /// `none`, or `per-stream`: one event of a stream at a time, in version order.
    #[arg(long, value_enum, default_value_t = OrderingArg::None)]
    pub ordering: OrderingArg,
}

/// `--ordering`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OrderingArg {
    /// Any event to any consumer.
    None,
    /// One event of a stream at a time, in version order.
    PerStream,
}

/// `--on-failure`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FailureArg {
    /// Deliver it again (parked after max deliveries).
    Retry,
    /// Park it now.
    Park,
    /// Give it up.
    Skip,
}

/// `concord consume`.
#[derive(Debug, Args)]
#[command(after_help = "\
CMD runs with `sh -c` once per message, with the event as one line of JSON on stdin and
CONCORD_GROUP, CONCORD_ACK_ID, CONCORD_DELIVERY, CONCORD_STREAM, CONCORD_VERSION,
CONCORD_POSITION and CONCORD_EVENT_TYPE set. Exit status 0 acks the message; anything else
nacks it (--on-failure). Runs until Ctrl-C or SIGTERM, or with --exit-when-idle until a
poll finds nothing. Example:
  concord --store http://127.0.0.1:2113 consume receipts --exec 'jq .data >> receipts.log'")]
pub struct ConsumeArgs {
    /// The group.
    #[arg(value_parser = parse_group)]
    pub group: GroupName,
    /// The command to run per message (with `sh -c`).
    #[arg(long, value_name = "CMD")]
    pub exec: String,
    /// This worker's name in the group (default `concord-consume-<pid>`).
    #[arg(long, value_parser = parse_consumer)]
    pub consumer: Option<ConsumerName>,
    /// Messages taken per poll (each is acked as soon as its command succeeds).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub max: usize,
    /// How long one poll waits for a message, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub wait_ms: u64,
    /// What a failed command's message is nacked with.
    #[arg(long, value_enum, default_value_t = FailureArg::Retry)]
    pub on_failure: FailureArg,
    /// Stop when a poll finds no message (for scripts and tests).
    #[arg(long)]
    pub exit_when_idle: bool,
}

fn parse_group(s: &str) -> Result<GroupName, String> {
    GroupName::new(s).map_err(|e| e.to_string())
}

fn parse_consumer(s: &str) -> Result<ConsumerName, String> {
    ConsumerName::new(s).map_err(|e| e.to_string())
}

fn parse_stream(s: &str) -> Result<StreamName, String> {
    StreamName::new(s).map_err(|e| e.to_string())
}

fn parse_category(s: &str) -> Result<Category, String> {
    Category::new(s).map_err(|e| e.to_string())
}

fn parse_event_type(s: &str) -> Result<EventType, String> {
    EventType::new(s).map_err(|e| e.to_string())
}

fn parse_tag(s: &str) -> Result<Tag, String> {
    Tag::new(s).map_err(|e| e.to_string())
}

fn parse_from(s: &str) -> Result<StartFrom, String> {
    match s {
        "start" => Ok(StartFrom::Start),
        "end" => Ok(StartFrom::End),
        n => n
            .parse::<u64>()
            .map(StartFrom::At)
            .map_err(|_| format!("{n:?} is neither `start`, `end` nor a position or version")),
    }
}

/// Where the groups are: in the store itself, or behind a server.
pub(crate) enum Target {
    Local(Groups),
    Remote(Box<ConcordClient>),
}

impl Target {
    pub(crate) async fn open(ctx: &Context) -> anyhow::Result<Target> {
        Ok(match &ctx.store_url {
            StoreUrl::Http(url) => Target::Remote(Box::new(ctx.store_url.connect_http(url).await?)),
            _ => Target::Local(Groups::new(ctx.open_store_to_read().await?)),
        })
    }

    pub(crate) async fn put(
        &self,
        group: &GroupName,
        spec: GroupSpec,
    ) -> Result<(Upserted, GroupInfo), GroupError> {
        match self {
            Target::Local(groups) => {
                let upserted = groups.create_or_update(group, spec).await?;
                Ok((upserted, groups.info(group).await?))
            }
            Target::Remote(client) => client.put_group(group, &spec).await,
        }
    }

    async fn list(&self) -> Result<Vec<GroupInfo>, GroupError> {
        match self {
            Target::Local(groups) => groups.list().await,
            Target::Remote(client) => client.groups().await,
        }
    }

    async fn status(&self, group: &GroupName) -> Result<GroupStatus, GroupError> {
        match self {
            Target::Local(groups) => Ok(GroupStatus {
                info: groups.info(group).await?,
                in_flight_messages: groups.in_flight(group).await?,
            }),
            Target::Remote(client) => client.group(group).await,
        }
    }

    async fn parked(
        &self,
        group: &GroupName,
        limit: usize,
    ) -> Result<Vec<ParkedEvent>, GroupError> {
        match self {
            Target::Local(groups) => Ok(groups
                .parked(group, limit)
                .await?
                .into_iter()
                .map(|p| ParkedEvent {
                    stream: p.stream,
                    version: p.version,
                    deliveries: p.deliveries,
                    event: p.event,
                })
                .collect()),
            Target::Remote(client) => client.parked(group, limit).await,
        }
    }

    async fn replay_parked(&self, group: &GroupName) -> Result<usize, GroupError> {
        match self {
            Target::Local(groups) => groups.replay_parked(group).await,
            Target::Remote(client) => client.replay_parked(group).await,
        }
    }

    pub(crate) async fn delete(&self, group: &GroupName) -> Result<(), GroupError> {
        match self {
            Target::Local(groups) => groups.delete(group).await,
            Target::Remote(client) => client.delete_group(group).await,
        }
    }

    pub(crate) async fn poll(
        &self,
        group: &GroupName,
        consumer: &ConsumerName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, GroupError> {
        match self {
            Target::Local(groups) => groups.poll(group, consumer, max, wait).await,
            Target::Remote(client) => client.poll(group, consumer, max, wait).await,
        }
    }

    pub(crate) async fn ack(
        &self,
        group: &GroupName,
        ack_ids: &[String],
    ) -> Result<usize, GroupError> {
        match self {
            Target::Local(groups) => groups.ack(group, ack_ids).await,
            Target::Remote(client) => client.ack(group, ack_ids).await,
        }
    }

    async fn settle(
        &self,
        group: &GroupName,
        ack_id: String,
        outcome: Option<NackAction>,
    ) -> Result<usize, GroupError> {
        let ids = [ack_id];
        match (self, outcome) {
            (Target::Local(groups), None) => groups.ack(group, &ids).await,
            (Target::Local(groups), Some(action)) => groups.nack(group, &ids, action).await,
            (Target::Remote(client), None) => client.ack(group, &ids).await,
            (Target::Remote(client), Some(action)) => client.nack(group, &ids, action).await,
        }
    }
}

fn source_text(source: &Source) -> String {
    match source {
        Source::Stream(s) => format!("stream {s}"),
        Source::All(all) => {
            let mut parts = Vec::new();
            if let Some(c) = &all.category {
                parts.push(format!("category={c}"));
            }
            if !all.types.is_empty() {
                let types: Vec<&str> = all.types.iter().map(EventType::as_str).collect();
                parts.push(format!("types={}", types.join(",")));
            }
            if !all.tags.is_empty() {
                let tags: Vec<&str> = all.tags.iter().map(Tag::as_str).collect();
                parts.push(format!("tags={}", tags.join(",")));
            }
            if parts.is_empty() {
                "all".to_owned()
            } else {
                format!("all {}", parts.join(" "))
            }
        }
    }
}

fn print_infos(infos: &[GroupInfo], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for info in infos {
            writeln!(out, "{}", serde_json::to_string(info)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:>8} {:>9} {:>7} {:>8}  {:<10} SOURCE",
        "GROUP", "ACKED", "IN FLIGHT", "PARKED", "PENDING", "ORDERING"
    )?;
    for g in infos {
        writeln!(
            out,
            "{:<24} {:>8} {:>9} {:>7} {:>8}  {:<10} {}",
            g.group.as_str(),
            g.acked,
            g.in_flight,
            g.parked,
            g.pending,
            g.ordering.to_string(),
            source_text(&g.source)
        )?;
    }
    Ok(())
}

/// Runs `concord group ...`.
///
/// # Errors
/// The group's or the store's error.
pub(crate) async fn run(ctx: &mut Context, args: GroupArgs) -> anyhow::Result<Exit> {
    let json = ctx.out.is_json();
    // A command with invalid arguments is refused before the store is opened.
    if let GroupAction::Create(create) = &args.action {
        spec_of(create).validate()?;
    }
    let target = Target::open(ctx).await?;
    ctx.out.flush()?;
    match args.action {
        GroupAction::Create(create) => {
            let spec = spec_of(&create);
            let (upserted, info) = target
                .put(&create.group, spec)
                .await
                .with_context(|| format!("cannot create group {}", create.group))?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                let what = match upserted {
                    Upserted::Created => "created",
                    Upserted::Updated => "updated",
                    Upserted::Unchanged => "unchanged",
                };
                println!(
                    "group {} {what}: {}, {} pending",
                    info.group,
                    source_text(&info.source),
                    info.pending
                );
            }
        }
        GroupAction::List => {
            let infos = target.list().await.context("cannot list groups")?;
            print_infos(&infos, json)?;
        }
        GroupAction::Info { group } => {
            let status = target
                .status(&group)
                .await
                .with_context(|| format!("cannot read group {group}"))?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                let i = &status.info;
                println!("group            {}", i.group);
                println!("source           {}", source_text(&i.source));
                println!("from             {}", i.from);
                println!("ack timeout      {} ms", i.ack_timeout_ms);
                println!("max deliveries   {}", i.max_deliveries);
                println!("ordering         {}", i.ordering);
                println!("acked            {}", i.acked);
                println!("skipped          {}", i.skipped);
                println!("in flight        {}", i.in_flight);
                println!("parked           {}", i.parked);
                println!("pending          {}", i.pending);
                for m in &status.in_flight_messages {
                    println!(
                        "  in flight: {}@{} delivery {} to {}",
                        m.stream, m.version, m.delivery, m.consumer
                    );
                }
            }
        }
        GroupAction::Parked { group, limit } => {
            let parked = target
                .parked(&group, limit)
                .await
                .with_context(|| format!("cannot read group {group}'s parked events"))?;
            for p in parked {
                if json {
                    println!("{}", serde_json::to_string(&p)?);
                } else {
                    let ty = p
                        .event
                        .as_ref()
                        .map_or("(no longer in the store)", |e| e.event_type.as_str());
                    println!(
                        "{}@{} {ty} after {} deliveries",
                        p.stream, p.version, p.deliveries
                    );
                }
            }
        }
        GroupAction::ReplayParked { group } => {
            let replayed = target
                .replay_parked(&group)
                .await
                .with_context(|| format!("cannot replay group {group}'s parked events"))?;
            if json {
                println!("{}", serde_json::json!({"replayed": replayed}));
            } else {
                println!("{replayed} parked event(s) of group {group} returned to the group");
            }
        }
        GroupAction::Delete { group } => {
            target
                .delete(&group)
                .await
                .with_context(|| format!("cannot delete group {group}"))?;
            if json {
                println!("{}", serde_json::json!({"deleted": group.as_str()}));
            } else {
                println!("group {group} deleted");
            }
        }
    }
    Ok(Exit::Success)
}

fn spec_of(args: &CreateArgs) -> GroupSpec {
    let source = match &args.stream {
        Some(stream) => Source::Stream(stream.clone()),
        None => Source::All(AllSource {
            category: args.category.clone(),
            types: args.types.clone(),
            tags: args.tags.clone(),
        }),
    };
    GroupSpec {
        source,
        from: args.from,
        ack_timeout_ms: args.ack_timeout_ms,
        max_deliveries: args.max_deliveries,
        ordering: match args.ordering {
            OrderingArg::None => Ordering::None,
            OrderingArg::PerStream => Ordering::PerStream,
        },
    }
}

/// Runs `concord consume`.
///
/// # Errors
/// The group's or the store's error (an unreachable server is waited for), or a command
/// that cannot be started.
pub(crate) async fn consume(ctx: &mut Context, args: ConsumeArgs) -> anyhow::Result<Exit> {
    if !(1..=concord_groups::POLL_MAX).contains(&args.max) {
        return Err(concord_core::InvalidInput::new(
            "max",
            format!(
                "--max is {}, but it must be from 1 to {}",
                args.max,
                concord_groups::POLL_MAX
            ),
        )
        .into());
    }
    let target = Target::open(ctx).await?;
    ctx.out.flush()?;
    let consumer = match args.consumer {
        Some(c) => c,
        None => ConsumerName::new(format!("concord-consume-{}", std::process::id()))?,
    };
    let failure = match args.on_failure {
        FailureArg::Retry => NackAction::Retry,
        FailureArg::Park => NackAction::Park,
        FailureArg::Skip => NackAction::Skip,
    };
    let wait = Duration::from_millis(args.wait_ms);
    let (mut acked, mut nacked) = (0u64, 0u64);
    let mut pause = Duration::from_millis(100);
    let mut stop = std::pin::pin!(concord_server::shutdown_signal());
    loop {
        let polled = tokio::select! {
            polled = target.poll(&args.group, &consumer, args.max, wait) => polled,
            () = &mut stop => break,
        };
        let messages = match polled {
            Ok(messages) => {
                pause = Duration::from_millis(100);
                messages
            }
            Err(GroupError::Store(concord_core::StoreError::Unavailable { message, .. })) => {
                eprintln!(
                    "concord consume: the store is unavailable ({message}); polling again in {pause:?}"
                );
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut stop => break,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot poll group {}", args.group))
                );
            }
        };
        if messages.is_empty() {
            if args.exit_when_idle {
                break;
            }
            continue;
        }
        for message in messages {
            let ok = run_command(&args.exec, &args.group, &message).await?;
            let outcome = if ok { None } else { Some(failure) };
            let counted = target
                .settle(&args.group, message.ack_id.clone(), outcome)
                .await
                .with_context(|| format!("cannot settle a message of group {}", args.group))?;
            let what = match (ok, counted) {
                (true, 1) => {
                    acked += 1;
                    "acked"
                }
                (false, 1) => {
                    nacked += 1;
                    "nacked"
                }
                // Past its ack timeout: the group hands it out again.
                _ => "expired (it will be delivered again)",
            };
            eprintln!(
                "concord consume: {}@{} delivery {}: {what}",
                message.event.stream, message.event.version, message.delivery
            );
        }
    }
    eprintln!("concord consume: {acked} acked, {nacked} nacked");
    Ok(Exit::Success)
}

/// Runs `sh -c CMD` for one message; whether it exited 0.
async fn run_command(cmd: &str, group: &GroupName, message: &Message) -> anyhow::Result<bool> {
    let event = &message.event;
    let mut json = serde_json::to_vec(event)?;
    json.push(b'\n');
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("CONCORD_GROUP", group.as_str())
        .env("CONCORD_ACK_ID", &message.ack_id)
        .env("CONCORD_DELIVERY", message.delivery.to_string())
        .env("CONCORD_STREAM", event.stream.as_str())
        .env("CONCORD_VERSION", event.version.to_string())
        .env("CONCORD_POSITION", event.position.to_string())
        .env("CONCORD_EVENT_TYPE", event.event_type.as_str())
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run `sh -c {cmd:?}`"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input closes the pipe: not an error.
        let _ = stdin.write_all(&json).await;
        drop(stdin);
    }
    let status = child
        .wait()
        .await
        .with_context(|| format!("cannot wait for `sh -c {cmd:?}`"))?;
    Ok(status.success())
}
