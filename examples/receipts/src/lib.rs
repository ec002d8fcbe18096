//! The worker pool of the README: every `Deposited` event of an `account-*` stream must
//! produce one e-mailed receipt, whichever worker handles it and whatever crashes.
//!
//! Three workers share the consumer group `receipts` (source: the global log, category
//! `account`, type `Deposited`). "Sending" a receipt writes `<outbox>/<event id>.txt`
//! (written under a temporary name, then renamed): the group delivers at least once, so a
//! worker that dies after sending but before its ack makes the event go out again, and
//! naming the receipt by the event id is what makes that second send harmless, the way
//! an e-mail provider's idempotency key would.

use std::path::{Path, PathBuf};

use concord_core::{Category, EventType, RecordedEvent};
use concord_groups::{AllSource, GroupSpec, Ordering, Source};

/// The group's name.
pub const GROUP: &str = "receipts";

/// The group every worker joins: `Deposited` events of `account-*` streams, handed to one
/// worker at a time, back to the group `ack_timeout_ms` after a worker stops answering.
///
/// # Errors
/// Never for the fixed names used here; the signature keeps name checks in one place.
pub fn group_spec(ack_timeout_ms: u64) -> Result<GroupSpec, concord_core::InvalidInput> {
    let mut spec = GroupSpec::new(Source::All(AllSource {
        category: Some(Category::new("account")?),
        types: vec![EventType::new("Deposited")?],
        tags: Vec::new(),
    }));
    spec.ack_timeout_ms = ack_timeout_ms;
    spec.ordering = Ordering::None;
    Ok(spec)
}

/// The receipt of a deposit, as the e-mail's text.
pub fn receipt_text(event: &RecordedEvent) -> String {
    let amount = event
        .data
        .to_value()
        .ok()
        .and_then(|data| data.get("amount").cloned())
        .map_or_else(|| "an unknown amount".to_owned(), |a| a.to_string());
    format!(
        "Receipt: {amount} deposited to {} (event {}, version {}).\n",
        event.stream, event.id, event.version
    )
}

/// Where the receipt of `event` goes.
pub fn receipt_path(outbox: &Path, event: &RecordedEvent) -> PathBuf {
    outbox.join(format!("{}.txt", event.id))
}

/// "Sends" the receipt: writes it under a temporary name and renames it into place, so a
/// crash never leaves half a receipt and a second send replaces the first.
///
/// # Errors
/// The file system's.
pub fn send_receipt(outbox: &Path, worker: &str, event: &RecordedEvent) -> std::io::Result<()> {
    let path = receipt_path(outbox, event);
    let partial = outbox.join(format!(".{}.{worker}.partial", event.id));
    std::fs::write(&partial, receipt_text(event))?;
    std::fs::rename(&partial, &path)
}
