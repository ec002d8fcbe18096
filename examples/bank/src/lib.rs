//! MISSION.md's bank account on Concord's command layer.
//!
//! Streams `account-<id>`; events `AccountOpened {"owner", "balance"}`, `Deposited
//! {"amount"}`, `Withdrawn {"amount"}`, `AccountClosed {}`, each tagged `account:<id>` and
//! carrying `metadata.actor`. Amounts are integers in minor units.
//!
//! The policies follow the domain: deposits commute, so the store rebases them server-side
//! unless the account was closed meanwhile; withdrawals must re-check the balance, so they
//! are re-decided on fresh state; a closed account refuses everything.
//!
//! The types here are the schema: the demo ([`demo`]), the tests and read models use them.

pub mod transfer;

use std::io::Write;
use std::sync::Arc;

use concord_command::report::{describe, event_table};
use concord_command::{Aggregate, CommandError, Committed, Handler, Options, Policy, Retry};
use concord_core::{EventStore, InvalidInput, RecordedEvent, StoreError, StreamName, Tag, Version};
use serde::{Deserialize, Serialize};

/// The events of an account stream.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum BankEvent {
    /// The account was opened with an opening balance.
    AccountOpened {
        /// Who owns it.
        owner: String,
        /// The opening balance.
        balance: u64,
    },
    /// Money was paid in.
    Deposited {
        /// How much.
        amount: u64,
    },
    /// Money was taken out.
    Withdrawn {
        /// How much.
        amount: u64,
    },
    /// The account was closed; nothing may follow.
    AccountClosed {},
}

/// What callers ask an account to do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum BankCommand {
    /// Open the account.
    Open {
        /// Its owner.
        owner: String,
        /// The opening balance.
        balance: u64,
    },
    /// Pay in `amount`.
    Deposit {
        /// How much.
        amount: u64,
    },
    /// Take out `amount`, if the balance covers it.
    Withdraw {
        /// How much.
        amount: u64,
    },
    /// Close the account.
    Close,
}

/// Why an account refuses a command.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum BankRejection {
    /// Nothing but `Open` works before the account is opened.
    #[error("the account is not open")]
    NotOpened,
    /// An account is opened once.
    #[error("the account is already open")]
    AlreadyOpened,
    /// A closed account refuses everything.
    #[error("the account is closed")]
    Closed,
    /// A withdrawal larger than the balance.
    #[error("insufficient funds: the balance is {balance}, but the withdrawal is {amount}")]
    InsufficientFunds {
        /// The balance the decision saw.
        balance: u64,
        /// The amount asked for.
        amount: u64,
    },
    /// Deposits and withdrawals move a positive amount.
    #[error("the amount must be positive")]
    ZeroAmount,
    /// The balance would not fit in 64 bits.
    #[error("the balance would overflow")]
    Overflow,
}

/// An account's state.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Account {
    /// Its owner, once opened.
    pub owner: Option<String>,
    /// The balance in minor units.
    pub balance: u64,
    /// Whether it was closed.
    pub closed: bool,
}

impl Aggregate for Account {
    type Event = BankEvent;
    type Command = BankCommand;
    type Rejection = BankRejection;

    fn apply(&mut self, event: &BankEvent) {
        match event {
            BankEvent::AccountOpened { owner, balance } => {
                self.owner = Some(owner.clone());
                self.balance = *balance;
            }
            BankEvent::Deposited { amount } => self.balance = self.balance.saturating_add(*amount),
            BankEvent::Withdrawn { amount } => self.balance = self.balance.saturating_sub(*amount),
            BankEvent::AccountClosed {} => self.closed = true,
        }
    }

    fn decide(&self, command: &BankCommand) -> Result<Vec<BankEvent>, BankRejection> {
        if self.closed {
            return Err(BankRejection::Closed);
        }
        match (command, &self.owner) {
            (BankCommand::Open { owner, balance }, None) => Ok(vec![BankEvent::AccountOpened {
                owner: owner.clone(),
                balance: *balance,
            }]),
            (BankCommand::Open { .. }, Some(_)) => Err(BankRejection::AlreadyOpened),
            (_, None) => Err(BankRejection::NotOpened),
            (BankCommand::Deposit { amount: 0 } | BankCommand::Withdraw { amount: 0 }, _) => {
                Err(BankRejection::ZeroAmount)
            }
            (BankCommand::Deposit { amount }, _) => match self.balance.checked_add(*amount) {
                Some(_) => Ok(vec![BankEvent::Deposited { amount: *amount }]),
                None => Err(BankRejection::Overflow),
            },
            (BankCommand::Withdraw { amount }, _) if *amount > self.balance => {
                Err(BankRejection::InsufficientFunds {
                    balance: self.balance,
                    amount: *amount,
                })
            }
            (BankCommand::Withdraw { amount }, _) => {
                Ok(vec![BankEvent::Withdrawn { amount: *amount }])
            }
            (BankCommand::Close, _) => Ok(vec![BankEvent::AccountClosed {}]),
        }
    }

    fn policy(command: &BankCommand) -> Policy<Self> {
        match command {
            BankCommand::Open { .. } => Policy::Reject,
            BankCommand::Deposit { .. } => deposit_policy(),
            BankCommand::Withdraw { .. } | BankCommand::Close => Policy::Retry(Retry {
                attempts: 50,
                ..Retry::default()
            }),
        }
    }

    fn tags(stream: &StreamName, _event: &BankEvent) -> Vec<Tag> {
        let id = stream
            .as_str()
            .strip_prefix("account-")
            .unwrap_or(stream.as_str());
        Tag::new(format!("account:{id}")).into_iter().collect()
    }
}

/// Deposits: `RebaseUnless([AccountClosed])`. (Should the type name ever fail to validate,
/// re-deciding is the safe fallback: it re-checks the account on fresh state.)
pub fn deposit_policy() -> Policy<Account> {
    Policy::rebase_unless(&["AccountClosed"]).unwrap_or_else(|_| Policy::retry())
}

/// The stream of account `id`: `account-<id>`.
///
/// # Errors
/// [`InvalidInput`] when the name is not a valid stream name.
pub fn account_stream(id: &str) -> Result<StreamName, InvalidInput> {
    StreamName::new(format!("account-{id}"))
}

/// The result of one bank command.
pub type BankResult = Result<Committed<BankEvent>, CommandError<BankRejection>>;

pub use concord_command::report::{DemoError, read_log};

/// The first account `account-<prefix>-<n>` that does not exist yet, so the demo starts
/// from MISSION.md's empty account whatever the store already holds.
async fn fresh_account(store: &dyn EventStore, prefix: &str) -> Result<StreamName, DemoError> {
    for n in 1_u32.. {
        let stream = account_stream(&format!("{prefix}-{n}")).map_err(StoreError::from)?;
        if store.stream_version(&stream).await? == Version::NONE {
            return Ok(stream);
        }
    }
    Err(DemoError::Command("no free account name".into()))
}

/// MISSION.md's race on `stream` under `policy`: admin opens the account with 1000, A and B
/// both read version 1 (concurrently, in two tasks), decide their deposits of 2000 and 3000,
/// and A's append reaches the store first. Returns the outcomes of A and B.
///
/// # Errors
/// Store failures, or an outcome other than a commit, rejection or conflict.
pub async fn mission_race(
    store: Arc<dyn EventStore>,
    stream: &StreamName,
    policy: Policy<Account>,
) -> Result<(BankResult, BankResult), DemoError> {
    let accounts = Handler::<Account>::new(store);
    let open = BankCommand::Open {
        owner: "ann".into(),
        balance: 1000,
    };
    let _ = accounts
        .execute(stream, open, &Options::by("admin"))
        .await?;
    let both_read = Arc::new(tokio::sync::Barrier::new(2));
    let (a_done, a_finished) = tokio::sync::oneshot::channel::<()>();
    let task =
        |actor: &'static str, amount: u64, after: Option<tokio::sync::oneshot::Receiver<()>>| {
            let (accounts, stream, policy, both_read) = (
                accounts.clone(),
                stream.clone(),
                policy.clone(),
                both_read.clone(),
            );
            async move {
                let loaded = accounts.load(&stream).await?;
                both_read.wait().await;
                if let Some(after) = after {
                    let _ = after.await;
                }
                let options = Options::by(actor).policy(policy);
                Ok::<_, CommandError<BankRejection>>(
                    accounts
                        .execute_on(loaded, BankCommand::Deposit { amount }, &options)
                        .await,
                )
            }
        };
    let a = tokio::spawn(task("A", 2000, None));
    let b = tokio::spawn(task("B", 3000, Some(a_finished)));
    let a = a.await??;
    let _ = a_done.send(());
    let b = b.await??;
    Ok((a, b))
}

fn line(
    out: &mut dyn Write,
    who: &str,
    request: &str,
    based_on: Version,
    result: &BankResult,
) -> std::io::Result<()> {
    writeln!(
        out,
        "- {who}: {request} (decided on version {based_on}): {}",
        describe(result)
    )
}

/// `concord demo bank`: MISSION.md's table on fresh accounts of `store`, first under
/// `Reject`, then under `RebaseUnless([AccountClosed])`; then real races — 8 tasks × 5
/// deposits under the rebase policy, and 6 concurrent withdrawals under `Retry` that must
/// never overdraw. Prints each event log as MISSION.md's table, then what each policy did
/// for each request.
///
/// # Errors
/// Store and I/O failures.
pub async fn demo(store: Arc<dyn EventStore>, out: &mut dyn Write) -> Result<(), DemoError> {
    for (title, policy, prefix) in [
        ("Reject", Policy::Reject, "reject"),
        ("RebaseUnless([AccountClosed])", deposit_policy(), "rebase"),
    ] {
        let stream = fresh_account(store.as_ref(), prefix).await?;
        let (a, b) = mission_race(Arc::clone(&store), &stream, policy).await?;
        writeln!(out, "## {stream} under {title}\n")?;
        write!(
            out,
            "{}",
            event_table(&read_log(store.as_ref(), &stream).await?)
        )?;
        writeln!(out)?;
        line(out, "A", "deposit 2000", Version(1), &a)?;
        line(out, "B", "deposit 3000", Version(1), &b)?;
        let balance = Handler::<Account>::new(Arc::clone(&store))
            .load(&stream)
            .await?
            .state
            .balance;
        writeln!(out, "- balance: {balance}\n")?;
    }
    race(store, out).await
}

/// The real-concurrency part of the demo.
async fn race(store: Arc<dyn EventStore>, out: &mut dyn Write) -> Result<(), DemoError> {
    let accounts = Handler::<Account>::new(Arc::clone(&store));
    let stream = fresh_account(store.as_ref(), "race").await?;
    let open = BankCommand::Open {
        owner: "ann".into(),
        balance: 1000,
    };
    let _ = accounts
        .execute(&stream, open, &Options::by("admin"))
        .await?;
    // Every task reads the account once and keeps deciding on that (stale) state: the
    // store rebases each deposit over whatever the other tasks committed meanwhile.
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (accounts, stream, start) = (accounts.clone(), stream.clone(), Arc::clone(&start));
        tasks.push(tokio::spawn(async move {
            let loaded = accounts.load(&stream).await?;
            start.wait().await;
            let mut rebased = 0_usize;
            for _ in 0..5 {
                let deposit = BankCommand::Deposit { amount: 100 };
                let c = accounts
                    .execute_on(loaded.clone(), deposit, &Options::by(format!("d{t}")))
                    .await?;
                rebased += usize::from(!c.resolution.over().is_empty());
            }
            Ok::<_, CommandError<BankRejection>>(rebased)
        }));
    }
    let mut rebased = 0;
    for t in tasks {
        rebased += t.await??;
    }
    let after_deposits = accounts.load(&stream).await?;
    writeln!(
        out,
        "## {stream}: 8 tasks × 5 deposits of 100 under RebaseUnless([AccountClosed])\n"
    )?;
    writeln!(
        out,
        "- 40 deposits committed, {rebased} of them rebased by the store, none re-decided; balance {} at version {}\n",
        after_deposits.state.balance, after_deposits.version
    )?;
    // All six read the same version, then race; each re-decides on the fresh balance.
    let start = Arc::new(tokio::sync::Barrier::new(6));
    let mut tasks = Vec::new();
    for t in 0..6 {
        let (accounts, stream, start) = (accounts.clone(), stream.clone(), Arc::clone(&start));
        tasks.push(tokio::spawn(async move {
            let loaded = accounts.load(&stream).await?;
            let based_on = loaded.version;
            start.wait().await;
            let withdraw = BankCommand::Withdraw { amount: 1500 };
            let r = accounts
                .execute_on(loaded, withdraw, &Options::by(format!("w{t}")))
                .await;
            Ok::<_, CommandError<BankRejection>>((format!("w{t}"), based_on, r))
        }));
    }
    writeln!(
        out,
        "## {stream}: 6 concurrent withdrawals of 1500 under Retry\n"
    )?;
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await??);
    }
    let log = read_log(store.as_ref(), &stream).await?;
    let tail: Vec<RecordedEvent> = log.into_iter().skip(41).collect();
    write!(out, "{}", event_table(&tail))?;
    writeln!(out)?;
    for (who, based_on, r) in &results {
        line(out, who, "withdraw 1500", *based_on, r)?;
    }
    let end = accounts.load(&stream).await?;
    writeln!(out, "- balance: {} (never below zero)", end.state.balance)?;
    Ok(())
}
