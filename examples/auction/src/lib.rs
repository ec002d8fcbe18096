//! MISSION.md's auction on Concord's command layer.
//!
//! Streams `auction-<id>`; events `AuctionOpened {"item", "reserve"}`, `BidPlaced
//! {"bidder", "amount"}`, `AuctionClosed {}`, with `metadata.actor`.
//!
//! A bid must beat the highest bid, so a bid that raced another is re-decided on the fresh
//! state (`Retry`): the higher wins, the lower learns it was outbid. Closing is re-decided
//! the same way, so no bid is ever placed after the close.

use std::io::Write;
use std::sync::Arc;

use concord_command::report::{describe, event_table};
use concord_command::{
    Aggregate, Backoff, CommandError, Committed, Handler, Options, Policy, Retry,
};
use concord_core::{EventStore, InvalidInput, StoreError, StreamName, Version};
use serde::{Deserialize, Serialize};

/// The events of an auction stream.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AuctionEvent {
    /// The auction opened.
    AuctionOpened {
        /// What is sold.
        item: String,
        /// The lowest acceptable bid.
        reserve: u64,
    },
    /// A bid became the highest.
    BidPlaced {
        /// Who bid.
        bidder: String,
        /// How much.
        amount: u64,
    },
    /// The auction closed; the highest bid wins.
    AuctionClosed {},
}

/// What callers ask an auction to do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AuctionCommand {
    /// Open it.
    Open {
        /// What is sold.
        item: String,
        /// The lowest acceptable bid.
        reserve: u64,
    },
    /// Bid `amount`.
    Bid {
        /// Who bids.
        bidder: String,
        /// How much.
        amount: u64,
    },
    /// Close it.
    Close,
}

/// Why an auction refuses a command.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AuctionRejection {
    /// Nothing but `Open` works before the auction is opened.
    #[error("the auction is not open")]
    NotOpened,
    /// An auction is opened once.
    #[error("the auction is already open")]
    AlreadyOpened,
    /// A closed auction refuses everything.
    #[error("the auction is closed")]
    Closed,
    /// The bid does not beat the highest bid.
    #[error("outbid: the highest bid is {highest} by {bidder}")]
    Outbid {
        /// The highest bid.
        highest: u64,
        /// Who made it.
        bidder: String,
    },
    /// The bid is under the reserve.
    #[error("the bid is below the reserve of {reserve}")]
    BelowReserve {
        /// The reserve.
        reserve: u64,
    },
}

/// An auction's state.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Auction {
    /// The item, once opened.
    pub item: Option<String>,
    /// The reserve.
    pub reserve: u64,
    /// The highest bid and its bidder.
    pub highest: Option<(String, u64)>,
    /// Whether it closed.
    pub closed: bool,
}

impl Aggregate for Auction {
    type Event = AuctionEvent;
    type Command = AuctionCommand;
    type Rejection = AuctionRejection;

    fn apply(&mut self, event: &AuctionEvent) {
        match event {
            AuctionEvent::AuctionOpened { item, reserve } => {
                self.item = Some(item.clone());
                self.reserve = *reserve;
            }
            AuctionEvent::BidPlaced { bidder, amount } => {
                self.highest = Some((bidder.clone(), *amount))
            }
            AuctionEvent::AuctionClosed {} => self.closed = true,
        }
    }

    fn decide(&self, command: &AuctionCommand) -> Result<Vec<AuctionEvent>, AuctionRejection> {
        if self.closed {
            return Err(AuctionRejection::Closed);
        }
        match (command, &self.item) {
            (AuctionCommand::Open { item, reserve }, None) => {
                Ok(vec![AuctionEvent::AuctionOpened {
                    item: item.clone(),
                    reserve: *reserve,
                }])
            }
            (AuctionCommand::Open { .. }, Some(_)) => Err(AuctionRejection::AlreadyOpened),
            (_, None) => Err(AuctionRejection::NotOpened),
            (AuctionCommand::Bid { bidder, amount }, _) => {
                if *amount < self.reserve {
                    return Err(AuctionRejection::BelowReserve {
                        reserve: self.reserve,
                    });
                }
                match &self.highest {
                    Some((leader, highest)) if highest >= amount => Err(AuctionRejection::Outbid {
                        highest: *highest,
                        bidder: leader.clone(),
                    }),
                    _ => Ok(vec![AuctionEvent::BidPlaced {
                        bidder: bidder.clone(),
                        amount: *amount,
                    }]),
                }
            }
            (AuctionCommand::Close, _) => Ok(vec![AuctionEvent::AuctionClosed {}]),
        }
    }

    fn policy(command: &AuctionCommand) -> Policy<Self> {
        match command {
            AuctionCommand::Open { .. } => Policy::Reject,
            AuctionCommand::Bid { .. } | AuctionCommand::Close => bid_policy(),
        }
    }
}

/// Bids and the close: re-decided on fresh state, with enough attempts for a crowd.
pub fn bid_policy() -> Policy<Auction> {
    Policy::Retry(Retry {
        attempts: 100,
        backoff: Backoff::default(),
    })
}

/// The stream of auction `id`: `auction-<id>`.
///
/// # Errors
/// [`InvalidInput`] when the name is not a valid stream name.
pub fn auction_stream(id: &str) -> Result<StreamName, InvalidInput> {
    StreamName::new(format!("auction-{id}"))
}

/// The result of one auction command.
pub type AuctionResult = Result<Committed<AuctionEvent>, CommandError<AuctionRejection>>;

pub use concord_command::report::{DemoError, read_log};

/// Bids `amounts` (bidder `b<i>` bids `amounts[i]`) concurrently on `stream`, every bidder
/// deciding on the same version first, and returns each bid with its outcome.
///
/// # Errors
/// Store failures while loading, or a failed task.
pub async fn concurrent_bids(
    store: Arc<dyn EventStore>,
    stream: &StreamName,
    amounts: &[u64],
) -> Result<Vec<(String, u64, AuctionResult)>, DemoError> {
    let auctions = Handler::<Auction>::new(store);
    let start = Arc::new(tokio::sync::Barrier::new(amounts.len()));
    let mut tasks = Vec::new();
    for (i, amount) in amounts.iter().copied().enumerate() {
        let (auctions, stream, start) = (auctions.clone(), stream.clone(), Arc::clone(&start));
        tasks.push(tokio::spawn(async move {
            let bidder = format!("b{i}");
            let loaded = auctions.load(&stream).await?;
            start.wait().await;
            let bid = AuctionCommand::Bid {
                bidder: bidder.clone(),
                amount,
            };
            let result = auctions
                .execute_on(loaded, bid, &Options::by(bidder.clone()))
                .await;
            Ok::<_, CommandError<AuctionRejection>>((bidder, amount, result))
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await??);
    }
    Ok(results)
}

/// The first auction `auction-demo-<n>` that does not exist yet.
async fn fresh_auction(store: &dyn EventStore) -> Result<StreamName, DemoError> {
    for n in 1_u32.. {
        let stream = auction_stream(&format!("demo-{n}")).map_err(StoreError::from)?;
        if store.stream_version(&stream).await? == Version::NONE {
            return Ok(stream);
        }
    }
    Err(DemoError::Command("no free auction name".into()))
}

/// `concord demo auction`: opens an auction (reserve 100), lets six bidders bid
/// concurrently on the same version under `Retry`, then closes it while two late bidders
/// race the close. Prints the event log as MISSION.md's table, then what the policy did
/// for each request.
///
/// # Errors
/// Store and I/O failures.
pub async fn demo(store: Arc<dyn EventStore>, out: &mut dyn Write) -> Result<(), DemoError> {
    let auctions = Handler::<Auction>::new(Arc::clone(&store));
    let stream = fresh_auction(store.as_ref()).await?;
    let open = AuctionCommand::Open {
        item: "painting".into(),
        reserve: 100,
    };
    let _ = auctions
        .execute(&stream, open, &Options::by("auctioneer"))
        .await?;
    let bids = concurrent_bids(Arc::clone(&store), &stream, &[150, 420, 90, 300, 420, 510]).await?;
    let stale = auctions.load(&stream).await?;
    let late = {
        let (auctions, stale) = (auctions.clone(), stale.clone());
        tokio::spawn(async move {
            let bid = AuctionCommand::Bid {
                bidder: "late".into(),
                amount: 1000,
            };
            auctions.execute_on(stale, bid, &Options::by("late")).await
        })
    };
    let close = auctions
        .execute_on(stale, AuctionCommand::Close, &Options::by("auctioneer"))
        .await;
    let late = late.await?;
    let after = auctions
        .execute(
            &stream,
            AuctionCommand::Bid {
                bidder: "after".into(),
                amount: 2000,
            },
            &Options::by("after"),
        )
        .await;

    writeln!(
        out,
        "## {stream}: six concurrent bids under Retry, then the close\n"
    )?;
    write!(
        out,
        "{}",
        event_table(&read_log(store.as_ref(), &stream).await?)
    )?;
    writeln!(out)?;
    for (bidder, amount, result) in &bids {
        writeln!(
            out,
            "- {bidder}: bid {amount} (decided on version 1): {}",
            describe(result)
        )?;
    }
    writeln!(
        out,
        "- late: bid 1000 (racing the close): {}",
        describe(&late)
    )?;
    writeln!(out, "- auctioneer: close: {}", describe(&close))?;
    writeln!(
        out,
        "- after: bid 2000 (after the close): {}",
        describe(&after)
    )?;
    let end = auctions.load(&stream).await?.state;
    if let Some((bidder, amount)) = end.highest {
        writeln!(out, "- winner: {bidder} with {amount}")?;
    }
    Ok(())
}
