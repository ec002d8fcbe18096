//! Concord's command layer: decide on a state, append at the version it was read at, and
//! say per command what happens when another writer got there first.
//!
//! - An [`Aggregate`] folds its events into state ([`Aggregate::apply`]) and turns a command
//!   into events or a typed rejection ([`Aggregate::decide`]). Events are one serde enum;
//!   the variant name is the event type ([`codec`]).
//! - A [`Handler`] loads the state from the stream (from the latest snapshot, if
//!   [`Handler::with_snapshots`]), decides, and appends with the exact version it read.
//! - On a conflict the command's [`Policy`] applies: [`Policy::Reject`] returns it;
//!   [`Policy::RebaseUnless`] lets the store append after the concurrent events unless one
//!   has a listed type (no extra round trip); [`Policy::Retry`] re-decides on fresh state
//!   with jittered backoff; [`Policy::Merge`] hands base state, concurrent events and ours to
//!   a [`Resolver`] (operational transform, three-way merge).
//! - The result says exactly what happened: [`Committed`] (versions, positions, and the
//!   [`Resolution`]: as decided, rebased over, re-decided over, merged over) or a
//!   [`CommandError`] (rejected by the domain and why, or the conflict).
//!
//! - A [`Decision`] spans streams: a [`Decider`] reads the events a query selects, decides,
//!   and appends (to one or several streams) with that query as the append's condition,
//!   under [`DecisionPolicy::Reject`] or [`DecisionPolicy::Retry`] (transfers, unique
//!   usernames).
//!
//! It is not: a backend (it is generic over [`concord_core::EventStore`] and names none), a
//! projection or read-model layer, or a process manager across streams.
//!
//! # Example: a deposit command
//! ```
//! use concord_command::{Aggregate, Handler, Options, Policy, Resolution};
//! use serde::{Deserialize, Serialize};
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! #[serde(tag = "type", content = "data")]
//! enum Event { AccountOpened { owner: String, balance: u64 }, Deposited { amount: u64 }, AccountClosed {} }
//! #[derive(Clone, Debug, Default)] struct Account { balance: u64, closed: bool }
//! #[derive(Debug)] struct Deposit { amount: u64 }
//! impl Aggregate for Account {
//!     type Event = Event; type Command = Deposit; type Rejection = &'static str;
//!     fn apply(&mut self, event: &Event) {
//!         match event {
//!             Event::AccountOpened { balance, .. } => self.balance = *balance,
//!             Event::Deposited { amount } => self.balance += amount,
//!             Event::AccountClosed {} => self.closed = true,
//!         }
//!     }
//!     fn decide(&self, deposit: &Deposit) -> Result<Vec<Event>, &'static str> {
//!         if self.closed { return Err("the account is closed") }
//!         Ok(vec![Event::Deposited { amount: deposit.amount }])
//!     }
//!     // Deposits commute: the store rebases them, unless the account was closed meanwhile.
//!     fn policy(_: &Deposit) -> Policy<Self> { Policy::rebase_unless(&["AccountClosed"]).unwrap() }
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::sync::Arc; use concord_core::{doc, AppendRequest, EventStore, ExpectedVersion, MemoryStore};
//! # let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
//! # let account = doc::stream("account-42");
//! # let opened = doc::event("AccountOpened", serde_json::json!({"owner": "ann", "balance": 1000}));
//! # let _ = store.append(AppendRequest::new(account.clone(), ExpectedVersion::NoStream, vec![opened])).await?;
//! let accounts = Handler::<Account>::new(store);
//! let (a, b) = (accounts.load(&account).await?, accounts.load(&account).await?); // both at version 1
//! accounts.execute_on(a, Deposit { amount: 2000 }, &Options::by("A")).await?;
//! let by_b = accounts.execute_on(b, Deposit { amount: 3000 }, &Options::by("B")).await?;
//! assert!(matches!(by_b.resolution, Resolution::Rebased { ref over, .. } if over[0].version.get() == 2));
//! assert_eq!(accounts.load(&account).await?.state.balance, 6000);
//! # Ok(()) }
//! ```

mod aggregate;
pub mod codec;
mod decision;
mod handler;
mod outcome;
pub mod report;

pub use aggregate::{Aggregate, Backoff, MERGE_ROUNDS_MAX, Policy, Resolver, Retry};
pub use codec::{DecodeError, EncodeError};
pub use decision::{Decided, Decider, Decision, DecisionError, DecisionPolicy};
pub use handler::{Handler, Loaded, Options, SNAPSHOT_EVENT_TYPE, snapshot_stream};
pub use outcome::{CommandError, Committed, Resolution};
