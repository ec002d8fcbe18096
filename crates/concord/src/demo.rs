//! `concord demo`: MISSION.md's three scenarios, run with real concurrency against the
//! configured store, printed as MISSION.md's table plus what each policy did.

use anyhow::Context as _;

use crate::opt::{DemoArgs, Scenario};
use crate::{Context, Exit};

/// Runs the chosen scenario's demo.
///
/// # Errors
/// The store's or the scenario's error.
pub(crate) async fn run(ctx: &mut Context, args: DemoArgs) -> anyhow::Result<Exit> {
    let store = ctx.open_store().await?;
    eprintln!(
        "concord demo: writing the scenario's events to the store {} (its own new streams)",
        ctx.store_url
    );
    ctx.out.flush()?;
    let mut stdout = std::io::stdout();
    match args.scenario {
        Scenario::Bank => concord_example_bank::demo(store, &mut stdout)
            .await
            .context("bank demo")?,
        Scenario::Auction => concord_example_auction::demo(store, &mut stdout)
            .await
            .context("auction demo")?,
        Scenario::Editor => concord_example_editor::demo(store, &mut stdout)
            .await
            .context("editor demo")?,
        Scenario::Transfer => concord_example_bank::transfer::demo_transfer(store, &mut stdout)
            .await
            .context("transfer demo")?,
    }
    Ok(Exit::Success)
}
