//! MISSION.md's auction end to end on every store (memory, embedded, Redis): concurrent
//! bids re-decided on fresh state (the highest wins, the others learn they were outbid),
//! and nothing after the close.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../../bank/tests/support/stores.rs"]
mod stores;

use std::sync::Arc;

use concord_command::codec::decode;
use concord_command::{CommandError, Handler, Options, Resolution};
use concord_core::EventStore;
use concord_example_auction::{
    Auction, AuctionCommand, AuctionEvent, AuctionRejection, auction_stream, concurrent_bids,
    read_log,
};

/// A seed from the clock, printed so a failure can be replayed with `CONCORD_SEED`.
fn seed() -> u64 {
    let seed = std::env::var("CONCORD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (rerun with CONCORD_SEED={seed})");
    seed
}

async fn open(store: &Arc<dyn EventStore>, id: &str) -> concord_core::StreamName {
    let stream = auction_stream(id).unwrap();
    let open = AuctionCommand::Open {
        item: "painting".into(),
        reserve: 10,
    };
    let _ = Handler::<Auction>::new(store.clone())
        .execute(&stream, open, &Options::by("auctioneer"))
        .await
        .unwrap();
    stream
}

async fn of_two_concurrent_bids_the_higher_wins_and_the_lower_is_outbid(
    store: Arc<dyn EventStore>,
) {
    let stream = open(&store, "two").await;
    let auctions = Handler::<Auction>::new(store.clone());
    let (a, b) = (
        auctions.load(&stream).await.unwrap(),
        auctions.load(&stream).await.unwrap(),
    );
    let high = auctions
        .execute_on(
            a,
            AuctionCommand::Bid {
                bidder: "ann".into(),
                amount: 300,
            },
            &Options::by("ann"),
        )
        .await
        .unwrap();
    assert_eq!(high.resolution, Resolution::AsDecided);
    let low = auctions
        .execute_on(
            b,
            AuctionCommand::Bid {
                bidder: "bob".into(),
                amount: 200,
            },
            &Options::by("bob"),
        )
        .await;
    let Err(CommandError::Rejected {
        reason,
        retries: 1,
        over,
        ..
    }) = low
    else {
        panic!("bob is outbid: {low:?}")
    };
    assert_eq!(
        reason,
        AuctionRejection::Outbid {
            highest: 300,
            bidder: "ann".into()
        }
    );
    assert_eq!(over[0].data.to_string(), r#"{"bidder":"ann","amount":300}"#);
}

async fn concurrent_bids_the_highest_wins_and_every_losing_bid_is_outbid(
    store: Arc<dyn EventStore>,
) {
    let mut x = seed() | 1;
    let mut amounts: Vec<u64> = Vec::new();
    while amounts.len() < 16 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let amount = 10 + x % 1000;
        if !amounts.contains(&amount) {
            amounts.push(amount);
        }
    }
    let stream = open(&store, "crowd").await;
    let results = concurrent_bids(store.clone(), &stream, &amounts)
        .await
        .unwrap();
    let max = *amounts.iter().max().unwrap();
    let mut committed = Vec::new();
    for (bidder, amount, result) in &results {
        match result {
            Ok(c) => committed.push((c.appended.as_ref().unwrap().first_version, *amount)),
            Err(CommandError::Rejected {
                reason: AuctionRejection::Outbid { highest, .. },
                ..
            }) => {
                assert!(
                    highest >= amount,
                    "{bidder} was outbid by a bid of {highest} >= {amount}"
                );
            }
            Err(other) => panic!("{bidder}'s bid either wins for a while or is outbid: {other}"),
        }
    }
    committed.sort();
    assert!(
        committed.windows(2).all(|w| w[0].1 < w[1].1),
        "committed bids rise: {committed:?}"
    );
    assert_eq!(committed.last().unwrap().1, max);
    let log = read_log(store.as_ref(), &stream).await.unwrap();
    assert_eq!(log.len(), committed.len() + 1);
    let end = Handler::<Auction>::new(store)
        .load(&stream)
        .await
        .unwrap()
        .state;
    assert_eq!(end.highest.unwrap().1, max);
}

async fn nothing_is_placed_after_the_close(store: Arc<dyn EventStore>) {
    let stream = open(&store, "closing").await;
    let auctions = Handler::<Auction>::new(store.clone());
    let mut tasks = Vec::new();
    for i in 0..12_u64 {
        let (auctions, stream) = (auctions.clone(), stream.clone());
        let loaded = auctions.load(&stream).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let command = if i == 5 {
                AuctionCommand::Close
            } else {
                AuctionCommand::Bid {
                    bidder: format!("b{i}"),
                    amount: 100 + i * 10,
                }
            };
            auctions
                .execute_on(loaded, command, &Options::by(format!("b{i}")))
                .await
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => {}
            Err(CommandError::Rejected {
                reason: AuctionRejection::Closed | AuctionRejection::Outbid { .. },
                ..
            }) => {}
            Err(other) => panic!("a bid commits before the close or is refused: {other}"),
        }
    }
    let after = auctions
        .execute(
            &stream,
            AuctionCommand::Bid {
                bidder: "z".into(),
                amount: 10_000,
            },
            &Options::by("z"),
        )
        .await;
    assert!(matches!(
        after,
        Err(CommandError::Rejected {
            reason: AuctionRejection::Closed,
            ..
        })
    ));
    let log = read_log(store.as_ref(), &stream).await.unwrap();
    let events: Vec<AuctionEvent> = log.iter().map(|e| decode(e).unwrap()).collect();
    let close = events
        .iter()
        .position(|e| *e == AuctionEvent::AuctionClosed {})
        .expect("the close committed");
    assert_eq!(
        close,
        events.len() - 1,
        "nothing after the close: {events:?}"
    );
}

async fn the_demo_prints_the_table_and_what_each_bid_did(store: Arc<dyn EventStore>) {
    let mut out = Vec::new();
    concord_example_auction::demo(store, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(
            "| auctioneer | AuctionOpened | {\"item\":\"painting\",\"reserve\":100} | 1 "
        ),
        "{text}"
    );
    assert!(
        text.contains("- winner: b5 with 510") || text.contains("- winner: late with 1000"),
        "{text}"
    );
    assert!(text.contains("- b2: bid 90 (decided on version 1): rejected by the domain at version 1: the bid is below the reserve of 100"), "{text}");
    assert!(
        text.contains("- after: bid 2000 (after the close): rejected by the domain"),
        "{text}"
    );
    assert!(text.contains("outbid"), "{text}");
    println!("{text}");
}

on_every_store!(
    of_two_concurrent_bids_the_higher_wins_and_the_lower_is_outbid,
    concurrent_bids_the_highest_wins_and_every_losing_bid_is_outbid,
    nothing_is_placed_after_the_close,
    the_demo_prints_the_table_and_what_each_bid_did,
);
