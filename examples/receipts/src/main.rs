//! `receipts`: the worker pool of the README.
//!
//! `receipts pool` creates the consumer group and runs three `receipts worker` processes
//! against a `concord serve`; `--crash-worker 2` makes the second one die in the middle of
//! an event (its receipt sent, its ack never made), and the other two pick up what it held
//! once the group's ack timeout passes. Each worker exits when the group has nothing left.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use concord_client::{ConcordClient, Consumer};
use concord_example_receipts::{GROUP, group_spec, send_receipt};
use concord_groups::{ConsumerName, GroupName};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
#[command(
    about = "A pool of workers e-mailing receipts for Deposited events through a consumer group"
)]
struct Cli {
    /// The Concord server.
    #[arg(long, default_value = "http://127.0.0.1:2113", global = true)]
    server: String,
    /// A token with read and write on `account-*` (when the server has tokens).
    #[arg(long, env = "CONCORD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Where the "e-mails" go: one file per receipt, named by the event id.
    #[arg(long, default_value = "outbox", global = true)]
    outbox: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the group and runs the workers until the group has nothing left.
    Pool {
        /// How many workers.
        #[arg(long, default_value_t = 3)]
        workers: u32,
        /// This worker (1-based) crashes while handling an event.
        #[arg(long)]
        crash_worker: Option<u32>,
        /// The crashing worker dies on its n-th event, after sending the receipt and
        /// before acking it.
        #[arg(long, default_value_t = 1)]
        crash_after: u64,
        /// The group's ack timeout: how long a crashed worker's events wait to go out again.
        #[arg(long, default_value_t = 2000)]
        ack_timeout_ms: u64,
    },
    /// One worker: polls the group, sends a receipt per event, acks.
    Worker {
        /// The worker's name in the group.
        #[arg(long)]
        name: String,
        /// Die (exit code 101) on the n-th event, after sending its receipt, before the ack.
        #[arg(long)]
        crash_after: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.outbox)
        .with_context(|| format!("cannot create the outbox {}", cli.outbox.display()))?;
    let client = ConcordClient::new(&cli.server, cli.token.clone())
        .with_context(|| format!("{} is not a server URL", cli.server))?;
    let group = GroupName::new(GROUP)?;
    match cli.command {
        Command::Worker { name, crash_after } => {
            worker(client, group, &name, cli.outbox, crash_after).await
        }
        Command::Pool {
            workers,
            crash_worker,
            crash_after,
            ack_timeout_ms,
        } => {
            let spec = group_spec(ack_timeout_ms)?;
            client
                .put_group(&group, &spec)
                .await
                .context("cannot create the consumer group")?;
            pool(&cli.server, &cli.outbox, workers, crash_worker, crash_after).await?;
            let status = client.group(&group).await?;
            let sent = std::fs::read_dir(&cli.outbox)?
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
                .count();
            println!(
                "group {GROUP}: {} acked, {} parked, {} pending; {sent} receipts in {}",
                status.info.acked,
                status.info.parked,
                status.info.pending,
                cli.outbox.display()
            );
            Ok(())
        }
    }
}

/// Runs the workers as child processes, the crashing one first (so it surely gets events
/// before the others drain the group), and waits for all of them.
async fn pool(
    server: &str,
    outbox: &std::path::Path,
    workers: u32,
    crash_worker: Option<u32>,
    crash_after: u64,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program to start its workers")?;
    let mut order: Vec<u32> = (1..=workers).collect();
    if let Some(c) = crash_worker {
        order.retain(|w| *w != c);
        order.insert(0, c);
    }
    let mut children = Vec::new();
    for n in order {
        let name = format!("worker-{n}");
        let mut command = tokio::process::Command::new(&exe);
        command
            .args(["--server", server, "--outbox"])
            .arg(outbox)
            .args(["worker", "--name", &name])
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if crash_worker == Some(n) {
            command.args(["--crash-after", &crash_after.to_string()]);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().context("the worker's output")?;
        let mut lines = BufReader::new(stdout).lines();
        // The worker says when it starts polling; waiting for it orders the first polls.
        if let Some(first) = lines.next_line().await? {
            println!("{first}");
        }
        let echo = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{line}");
            }
        });
        children.push((name, n, child, echo));
    }
    let mut failed = Vec::new();
    for (name, n, mut child, echo) in children {
        let status = child.wait().await?;
        let _ = echo.await;
        match (status.success(), crash_worker == Some(n)) {
            (true, _) => println!("{name} finished"),
            (false, true) => println!("{name} crashed ({status}), as asked"),
            (false, false) => failed.push(format!("{name}: {status}")),
        }
    }
    if !failed.is_empty() {
        bail!("workers failed: {}", failed.join(", "));
    }
    Ok(())
}

async fn worker(
    client: ConcordClient,
    group: GroupName,
    name: &str,
    outbox: PathBuf,
    crash_after: Option<u64>,
) -> anyhow::Result<()> {
    let consumer = Consumer::new(client.clone(), group.clone(), ConsumerName::new(name)?)
        .max(2)
        .wait(Duration::from_millis(500));
    println!("{name}: polling group {GROUP}");
    let mut handled = 0_u64;
    loop {
        let stats = consumer
            .poll_once(&mut |message: concord_groups::Message| {
                handled += 1;
                let event = message.event;
                let sent = send_receipt(&outbox, name, &event);
                if sent.is_ok() {
                    println!(
                        "{name}: sent the receipt for {}@{} (delivery {})",
                        event.stream, event.version, message.delivery
                    );
                }
                if crash_after == Some(handled) {
                    println!(
                        "{name}: crashing before the ack of {}@{}",
                        event.stream, event.version
                    );
                    std::process::exit(101);
                }
                std::future::ready(sent)
            })
            .await?;
        if stats.handled == 0 {
            let status = client.group(&group).await?;
            if status.info.pending == 0 && status.info.in_flight == 0 {
                return Ok(());
            }
        }
    }
}
