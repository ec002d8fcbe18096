//! Transfers between accounts and unique usernames: MISSION.md's two cross-stream
//! scenarios, as query decisions (`concord_command::Decision`).
//!
//! A transfer reads every event tagged with either account, checks the source's balance,
//! and appends `Withdrawn` to the source and `Deposited` to the target in one atomic
//! two-stream append whose condition is the query it read: a concurrent change to either
//! account fails the condition, and the transfer is re-decided on fresh balances. A
//! registration reads the `UserRegistered` events tagged `username:<s>` and appends only if
//! there are none, under the same condition, so two registrations of one name cannot both
//! succeed.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use concord_command::{Decider, Decision, DecisionError, DecisionPolicy, Retry};
use concord_core::{
    AppendRequest, EventStore, EventType, ExpectedVersion, Json, NewEvent, Position, Query,
    QueryItem, RecordedEvent, StoreError, StreamName, Tag,
};
use serde_json::json;

use crate::{DemoError, account_stream};

fn tag(text: String) -> Result<Tag, StoreError> {
    Tag::new(text).map_err(StoreError::from)
}

fn account_tag(id: &str) -> Result<Tag, StoreError> {
    tag(format!("account:{id}"))
}

fn event_type(name: &str) -> Result<EventType, StoreError> {
    EventType::new(name).map_err(StoreError::from)
}

/// Move `amount` from account `from` to account `to` (ids, as in `account-<id>`).
#[derive(Clone, Debug)]
pub struct TransferCommand {
    /// The transfer's id (written to `metadata.transfer`).
    pub id: String,
    /// The source account's id.
    pub from: String,
    /// The target account's id.
    pub to: String,
    /// The amount, in minor units.
    pub amount: u64,
    /// Who asks (written to `metadata.actor`).
    pub actor: String,
}

/// Why a transfer is refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TransferRejection {
    /// The source holds less than the amount.
    #[error("account {account} holds {balance}, less than {amount}")]
    InsufficientFunds {
        /// The source.
        account: String,
        /// Its balance.
        balance: i64,
        /// The amount asked.
        amount: u64,
    },
    /// An account is not open (never opened, or closed).
    #[error("account {0} is not open")]
    NotOpen(String),
    /// Source and target are the same account, or a name is invalid.
    #[error("invalid transfer: {0}")]
    Invalid(String),
}

/// The two accounts' balances and open flags, folded from their tagged events.
#[derive(Clone, Debug, Default)]
pub struct Transfer {
    accounts: BTreeMap<String, (i64, bool)>,
}

fn amount(e: &RecordedEvent, field: &str) -> i64 {
    e.data
        .to_value()
        .ok()
        .and_then(|v| v.get(field).and_then(serde_json::Value::as_i64))
        .unwrap_or(0)
}

fn account_id(stream: &StreamName) -> &str {
    stream
        .as_str()
        .strip_prefix("account-")
        .unwrap_or(stream.as_str())
}

impl Decision for Transfer {
    type Command = TransferCommand;
    type Rejection = TransferRejection;

    fn query(command: &TransferCommand) -> Query {
        let items = [&command.from, &command.to]
            .into_iter()
            .filter_map(|id| account_tag(id).ok())
            .map(|t| QueryItem {
                types: vec![],
                tags: vec![t],
            })
            .collect();
        Query { items }
    }

    fn apply(&mut self, e: &RecordedEvent) {
        let entry = self
            .accounts
            .entry(account_id(&e.stream).to_owned())
            .or_insert((0, false));
        match e.event_type.as_str() {
            "AccountOpened" => *entry = (amount(e, "balance"), true),
            "Deposited" => entry.0 += amount(e, "amount"),
            "Withdrawn" => entry.0 -= amount(e, "amount"),
            "AccountClosed" => entry.1 = false,
            _ => {}
        }
    }

    fn decide(&self, c: &TransferCommand) -> Result<Vec<AppendRequest>, TransferRejection> {
        if c.from == c.to {
            return Err(TransferRejection::Invalid(
                "source and target are the same".into(),
            ));
        }
        for id in [&c.from, &c.to] {
            if !self.accounts.get(id.as_str()).is_some_and(|a| a.1) {
                return Err(TransferRejection::NotOpen(id.clone()));
            }
        }
        let balance = self.accounts.get(c.from.as_str()).map_or(0, |a| a.0);
        if balance < i64::try_from(c.amount).unwrap_or(i64::MAX) {
            return Err(TransferRejection::InsufficientFunds {
                account: c.from.clone(),
                balance,
                amount: c.amount,
            });
        }
        let invalid = |e: StoreError| TransferRejection::Invalid(e.to_string());
        let meta = Json::from_value(&json!({"transfer": c.id, "actor": c.actor}));
        let half = |id: &str, ty: &str| -> Result<AppendRequest, TransferRejection> {
            let stream = account_stream(id).map_err(|e| invalid(e.into()))?;
            let event = NewEvent::new(
                event_type(ty).map_err(invalid)?,
                Json::from_value(&json!({"amount": c.amount})),
            )
            .with_metadata(meta.clone())
            .with_tags(vec![account_tag(id).map_err(invalid)?]);
            Ok(AppendRequest::new(
                stream,
                ExpectedVersion::Exists,
                vec![event],
            ))
        };
        Ok(vec![half(&c.from, "Withdrawn")?, half(&c.to, "Deposited")?])
    }

    fn policy(_: &TransferCommand) -> DecisionPolicy {
        DecisionPolicy::Retry(Retry {
            attempts: 200,
            ..Retry::default()
        })
    }
}

/// Register `username` for user `user` (stream `user-<user>`).
#[derive(Clone, Debug)]
pub struct RegisterCommand {
    /// The user's id.
    pub user: String,
    /// The name asked for.
    pub username: String,
}

/// Why a registration is refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RegisterRejection {
    /// Another user has the name.
    #[error("username {username} is taken by {by}")]
    Taken {
        /// The name.
        username: String,
        /// The stream of the user who has it.
        by: StreamName,
    },
    /// The name or the user id is not valid.
    #[error("invalid registration: {0}")]
    Invalid(String),
}

/// Who registered the name, if anyone.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    owner: Option<StreamName>,
}

fn username_tag(name: &str) -> Result<Tag, StoreError> {
    tag(format!("username:{name}"))
}

impl Decision for Registration {
    type Command = RegisterCommand;
    type Rejection = RegisterRejection;

    fn query(c: &RegisterCommand) -> Query {
        Query {
            items: username_tag(&c.username)
                .into_iter()
                .map(|t| QueryItem {
                    types: event_type("UserRegistered").into_iter().collect(),
                    tags: vec![t],
                })
                .collect(),
        }
    }

    fn apply(&mut self, e: &RecordedEvent) {
        self.owner.get_or_insert_with(|| e.stream.clone());
    }

    fn decide(&self, c: &RegisterCommand) -> Result<Vec<AppendRequest>, RegisterRejection> {
        if let Some(by) = &self.owner {
            return Err(RegisterRejection::Taken {
                username: c.username.clone(),
                by: by.clone(),
            });
        }
        let invalid = |e: String| RegisterRejection::Invalid(e);
        let stream = StreamName::new(format!("user-{}", c.user)).map_err(|e| invalid(e.message))?;
        let event = NewEvent::new(
            event_type("UserRegistered").map_err(|e| invalid(e.to_string()))?,
            Json::from_value(&json!({"username": c.username})),
        )
        .with_tags(vec![
            username_tag(&c.username).map_err(|e| invalid(e.to_string()))?,
        ]);
        Ok(vec![AppendRequest::new(
            stream,
            ExpectedVersion::NoStream,
            vec![event],
        )])
    }

    // Re-deciding after a failed condition sees the winner and refuses with its name.
    fn policy(_: &RegisterCommand) -> DecisionPolicy {
        DecisionPolicy::Retry(Retry::default())
    }
}

/// `concord demo transfer`: opens 4 fresh accounts with 1000 each, runs 8 tasks × 10
/// random transfers between them concurrently (two-stream appends under a query
/// condition, re-decided on conflict), then prints the resulting log of the accounts and
/// the total after every transfer: the same as the opening total, every time.
///
/// # Errors
/// Store and I/O failures.
pub async fn demo_transfer(
    store: Arc<dyn EventStore>,
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    const ACCOUNTS: usize = 4;
    const TASKS: usize = 8;
    const PER_TASK: usize = 10;
    let run = fresh_run(store.as_ref()).await?;
    let ids: Vec<String> = (1..=ACCOUNTS).map(|i| format!("{run}-{i}")).collect();
    for id in &ids {
        let stream = account_stream(id).map_err(StoreError::from)?;
        let opened = NewEvent::new(
            event_type("AccountOpened")?,
            Json::from_value(&json!({"owner": format!("owner-{id}"), "balance": 1000})),
        )
        .with_tags(vec![account_tag(id)?]);
        let _ = store
            .append(AppendRequest::new(
                stream,
                ExpectedVersion::NoStream,
                vec![opened],
            ))
            .await?;
    }
    let decider = Decider::<Transfer>::new(Arc::clone(&store));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let decider = decider.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut lines = Vec::new();
            for n in 0..PER_TASK {
                let k = t * PER_TASK + n;
                let from_index = k % ACCOUNTS;
                let to_index = (from_index + 1 + (k / ACCOUNTS) % (ACCOUNTS - 1)) % ACCOUNTS;
                let from = ids.get(from_index).cloned().unwrap_or_default();
                let to = ids.get(to_index).cloned().unwrap_or_default();
                let command = TransferCommand {
                    id: format!("tr-{t}-{n}"),
                    from,
                    to,
                    amount: ((k * 37) % 400 + 50) as u64,
                    actor: format!("task-{t}"),
                };
                let result = decider.execute(&command).await;
                lines.push((command, result));
            }
            lines
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await?);
    }
    let mut log = Vec::new();
    let query = Transfer::query(&TransferCommand {
        id: String::new(),
        from: ids.first().cloned().unwrap_or_default(),
        to: ids.get(1).cloned().unwrap_or_default(),
        actor: String::new(),
        amount: 0,
    });
    let mut all_items = query.items;
    for id in ids.iter().skip(2) {
        all_items.push(QueryItem {
            types: vec![],
            tags: vec![account_tag(id)?],
        });
    }
    let everything = Query { items: all_items };
    let mut after = Position::ZERO;
    loop {
        let page = store.query(&everything, after, 1000).await?;
        log.extend(page.events);
        match page.next {
            Some(n) => after = n,
            None => break,
        }
    }
    writeln!(
        out,
        "## {TASKS} tasks x {PER_TASK} concurrent transfers among {ACCOUNTS} accounts\n"
    )?;
    writeln!(
        out,
        "| position | stream | type | amount | transfer | total |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    let mut balances: BTreeMap<String, i64> = BTreeMap::new();
    let mut open_total = 0;
    let mut conserved = true;
    for (i, e) in log.iter().enumerate() {
        let change = match e.event_type.as_str() {
            "AccountOpened" => amount(e, "balance"),
            "Deposited" => amount(e, "amount"),
            "Withdrawn" => -amount(e, "amount"),
            _ => 0,
        };
        *balances.entry(e.stream.to_string()).or_default() += change;
        if e.event_type.as_str() == "AccountOpened" {
            open_total += change;
        }
        let total: i64 = balances.values().sum();
        // A transfer's two events are adjacent; the total is checked after each pair.
        let ends_append = e.event_type.as_str() != "Withdrawn"
            || log
                .get(i + 1)
                .is_none_or(|n| n.event_type.as_str() != "Deposited");
        let shown = if ends_append {
            if i + 1 >= ACCOUNTS && total != open_total {
                conserved = false;
            }
            total.to_string()
        } else {
            "(mid-transfer)".to_owned()
        };
        let transfer = e
            .metadata
            .to_value()
            .ok()
            .and_then(|m| {
                m.get("transfer")
                    .and_then(|t| t.as_str().map(str::to_owned))
            })
            .unwrap_or_default();
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            e.position,
            e.stream,
            e.event_type,
            change.abs(),
            transfer,
            shown
        )?;
    }
    let (mut done, mut refused, mut retried) = (0, 0, 0u32);
    for (c, r) in &results {
        match r {
            Ok(d) => {
                done += 1;
                retried += d.retries;
            }
            Err(DecisionError::Rejected { reason, .. }) => {
                refused += 1;
                writeln!(
                    out,
                    "- {} ({} -> {}, {}): refused: {reason}",
                    c.id, c.from, c.to, c.amount
                )?;
            }
            Err(e) => return Err(DemoError::Command(e.to_string())),
        }
    }
    writeln!(out)?;
    for (stream, balance) in &balances {
        writeln!(out, "- {stream}: {balance}")?;
    }
    let total: i64 = balances.values().sum();
    writeln!(
        out,
        "- {done} transfers committed ({retried} re-decisions after concurrent changes), {refused} refused"
    )?;
    writeln!(
        out,
        "- total: {total} (opening total {open_total}): {}",
        if conserved && total == open_total {
            "conserved after every transfer"
        } else {
            "NOT CONSERVED"
        }
    )?;
    if !(conserved && total == open_total) {
        return Err(DemoError::Command("the total balance changed".into()));
    }
    Ok(())
}

async fn fresh_run(store: &dyn EventStore) -> Result<String, DemoError> {
    for n in 1_u32.. {
        let run = format!("transfer{n}");
        let stream = account_stream(&format!("{run}-1")).map_err(StoreError::from)?;
        if store.stream_version(&stream).await? == concord_core::Version::NONE {
            return Ok(run);
        }
    }
    Err(DemoError::Command("no free account name".into()))
}

/// What [`Decider::execute`] answers for a registration.
pub type RegisterResult = Result<concord_command::Decided, DecisionError<RegisterRejection>>;
