//! Prometheus metrics, kept in atomics and rendered as text on `GET /metrics`.
//!
//! Hand-rolled rather than a metrics crate: eight series do not justify a dependency, and
//! atomics keep the append path free of locks.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use concord_core::{AppendOutcome, MultiAppendOutcome, StoreError};
use concord_groups::GroupInfo;
use concord_projection::{ProjectionStatus, State};

/// Upper bounds of the append latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    appends: AtomicU64,
    events_appended: AtomicU64,
    conflicts: AtomicU64,
    rebases: AtomicU64,
    duplicates: AtomicU64,
    reads: AtomicU64,
    subscriptions_active: AtomicU64,
    /// Appends whose latency fell in each bucket alone (not cumulative): one atomic add
    /// per append instead of one per bucket; `render` sums them into Prometheus's `le`.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    scavenges: AtomicU64,
    scavenge_failures: AtomicU64,
    scavenge_events_removed: AtomicU64,
    scavenge_streams: AtomicU64,
    scavenge_bytes_reclaimed: AtomicU64,
    scavenge_micros: AtomicU64,
    /// Unix seconds at the end of the last scavenge that completed (0: none yet).
    scavenge_last_completed: AtomicU64,
}

/// How an append ended, for the counters.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AppendResultKind {
    Appended(u64),
    Rebased(u64),
    Duplicate,
    Conflict,
    Failed,
}

impl AppendResultKind {
    /// How an append of `events` events ended, by its result.
    pub(crate) fn of_append(result: &Result<AppendOutcome, StoreError>, events: u64) -> Self {
        match result {
            Ok(AppendOutcome::Appended(_)) => AppendResultKind::Appended(events),
            Ok(AppendOutcome::Rebased { .. }) => AppendResultKind::Rebased(events),
            Ok(AppendOutcome::Duplicate(_)) => AppendResultKind::Duplicate,
            Err(StoreError::Conflict(_)) => AppendResultKind::Conflict,
            Err(_) => AppendResultKind::Failed,
        }
    }

    /// How a multi-stream or conditional append of `events` events ended, by its result.
    pub(crate) fn of_multi(result: &Result<MultiAppendOutcome, StoreError>, events: u64) -> Self {
        match result {
            Ok(o) if o.duplicate => AppendResultKind::Duplicate,
            Ok(o) if o.parts.iter().any(AppendOutcome::is_rebased) => {
                AppendResultKind::Rebased(events)
            }
            Ok(_) => AppendResultKind::Appended(events),
            Err(StoreError::Conflicts(_) | StoreError::ConditionFailed(_)) => {
                AppendResultKind::Conflict
            }
            Err(_) => AppendResultKind::Failed,
        }
    }
}

impl Metrics {
    pub(crate) fn append(&self, kind: AppendResultKind, took: Duration) {
        self.appends.fetch_add(1, Ordering::Relaxed);
        match kind {
            AppendResultKind::Appended(n) => {
                self.events_appended.fetch_add(n, Ordering::Relaxed);
            }
            AppendResultKind::Rebased(n) => {
                self.events_appended.fetch_add(n, Ordering::Relaxed);
                self.rebases.fetch_add(1, Ordering::Relaxed);
            }
            AppendResultKind::Duplicate => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            AppendResultKind::Conflict => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            AppendResultKind::Failed => {}
        }
        let secs = took.as_secs_f64();
        if let Some((_, bucket)) = LATENCY_BUCKETS
            .iter()
            .zip(&self.latency_buckets)
            .find(|(bound, _)| secs <= **bound)
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a scavenge: what it removed when it completed, a failure otherwise.
    pub(crate) fn scavenge(&self, report: Option<&concord_core::ScavengeReport>, took: Duration) {
        self.scavenges.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.scavenge_micros.fetch_add(micros, Ordering::Relaxed);
        let Some(report) = report else {
            self.scavenge_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.scavenge_events_removed
            .fetch_add(report.events_removed, Ordering::Relaxed);
        self.scavenge_streams
            .fetch_add(report.streams_scavenged, Ordering::Relaxed);
        self.scavenge_bytes_reclaimed
            .fetch_add(report.bytes_reclaimed, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.scavenge_last_completed.store(now, Ordering::Relaxed);
    }

    /// Counts a subscription as active until the returned guard is dropped.
    pub(crate) fn subscription(self: &std::sync::Arc<Self>) -> SubscriptionGuard {
        self.subscriptions_active.fetch_add(1, Ordering::Relaxed);
        SubscriptionGuard(std::sync::Arc::clone(self))
    }

    /// The metrics in Prometheus text format 0.0.4.
    pub fn render(&self, backend: &str) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{store=\"{backend}\"}} {value}"
            );
        };
        counter(
            "concord_appends_total",
            "Append requests answered (any outcome).",
            load(&self.appends),
        );
        counter(
            "concord_events_appended_total",
            "Events written by appends.",
            load(&self.events_appended),
        );
        counter(
            "concord_conflicts_total",
            "Appends refused with a version conflict.",
            load(&self.conflicts),
        );
        counter(
            "concord_rebases_total",
            "Appends rebased server-side.",
            load(&self.rebases),
        );
        counter(
            "concord_duplicates_total",
            "Appends recognised as duplicates (nothing written).",
            load(&self.duplicates),
        );
        counter(
            "concord_reads_total",
            "Read requests answered (streams, event, all, list).",
            load(&self.reads),
        );
        counter(
            "concord_scavenge_runs_total",
            "Scavenges run (on demand and on the schedule), completed or failed.",
            load(&self.scavenges),
        );
        counter(
            "concord_scavenge_failures_total",
            "Scavenges that failed (the next one takes up the rest).",
            load(&self.scavenge_failures),
        );
        counter(
            "concord_scavenge_events_removed_total",
            "Events whose bytes scavenges erased.",
            load(&self.scavenge_events_removed),
        );
        counter(
            "concord_scavenge_streams_total",
            "Streams scavenges erased events from (counted once per scavenge).",
            load(&self.scavenge_streams),
        );
        counter(
            "concord_scavenge_bytes_reclaimed_total",
            "Bytes of storage scavenges gave back, where the backend can tell.",
            load(&self.scavenge_bytes_reclaimed),
        );
        let _ = writeln!(
            out,
            "# HELP concord_scavenge_seconds_total Time spent scavenging.\n# TYPE concord_scavenge_seconds_total counter\nconcord_scavenge_seconds_total{{store=\"{backend}\"}} {}",
            load(&self.scavenge_micros) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP concord_scavenge_last_completed_seconds Unix time the last scavenge completed (0: none since the server started).\n# TYPE concord_scavenge_last_completed_seconds gauge\nconcord_scavenge_last_completed_seconds{{store=\"{backend}\"}} {}",
            load(&self.scavenge_last_completed)
        );
        let _ = writeln!(
            out,
            "# HELP concord_subscriptions_active Open SSE subscriptions.\n# TYPE concord_subscriptions_active gauge\nconcord_subscriptions_active{{store=\"{backend}\"}} {}",
            load(&self.subscriptions_active)
        );
        let name = "concord_append_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer an append.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += load(bucket);
            let _ = writeln!(
                out,
                "{name}_bucket{{store=\"{backend}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(
            out,
            "{name}_bucket{{store=\"{backend}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{name}_sum{{store=\"{backend}\"}} {}",
            load(&self.latency_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{store=\"{backend}\"}} {count}");
        out
    }
}

/// The read side's series: per projection its checkpoint, lag, state and events applied.
/// Gauges, because a rebuild moves the checkpoint back.
pub(crate) fn render_projections(statuses: &[ProjectionStatus]) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: &dyn Fn(&ProjectionStatus) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in statuses {
            let _ = writeln!(out, "{name}{{projection=\"{}\"}} {}", s.name, value(s));
        }
    };
    gauge(
        "concord_projection_checkpoint",
        "The last position the projection durably processed.",
        &|s| s.checkpoint.get(),
    );
    gauge(
        "concord_projection_head",
        "The store's head when the projection's status was taken.",
        &|s| s.head.get(),
    );
    gauge(
        "concord_projection_lag",
        "Positions between the store's head and the projection's checkpoint.",
        &|s| s.lag,
    );
    gauge(
        "concord_projection_failed",
        "1 when the projection stopped on an event its handler refused.",
        &|s| u64::from(s.status == State::Failed),
    );
    gauge(
        "concord_projection_skipped",
        "Events the projection's handler refused and it skipped since its last rebuild (see its status).",
        &|s| s.skipped,
    );
    gauge(
        "concord_projection_running",
        "1 when the projection is running here (catching up or live).",
        &|s| u64::from(matches!(s.status, State::CatchingUp | State::Running)),
    );
    gauge(
        "concord_projection_standby",
        "1 when another server on the same PostgreSQL projection database runs the projection and this one follows its checkpoint.",
        &|s| u64::from(s.status == State::Standby),
    );
    let name = "concord_projection_events_applied_total";
    let _ = writeln!(
        out,
        "# HELP {name} Events the projection applied since this server started it.\n# TYPE {name} counter"
    );
    for s in statuses {
        let _ = writeln!(
            out,
            "{name}{{projection=\"{}\"}} {}",
            s.name, s.events_applied
        );
    }
    out
}

/// Keeps a subscription counted as active.
#[derive(Debug)]
pub(crate) struct SubscriptionGuard(std::sync::Arc<Metrics>);

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.subscriptions_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-group gauges and counters, one series per consumer group.
pub(crate) fn render_groups(groups: &[GroupInfo]) -> String {
    let mut out = String::new();
    let mut series = |name: &str, kind: &str, help: &str, value: &dyn Fn(&GroupInfo) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for g in groups {
            let _ = writeln!(
                out,
                "{name}{{group=\"{}\"}} {}",
                label_value(g.group.as_str()),
                value(g)
            );
        }
    };
    series(
        "concord_group_pending",
        "gauge",
        "Source events of the group not yet acked, skipped, in flight or parked.",
        &|g| g.pending,
    );
    series(
        "concord_group_in_flight",
        "gauge",
        "Events of the group delivered and within their ack timeout.",
        &|g| g.in_flight,
    );
    series(
        "concord_group_parked",
        "gauge",
        "Events of the group parked after max_deliveries or a nack with park.",
        &|g| g.parked,
    );
    series(
        "concord_group_acked_total",
        "counter",
        "Events of the group acked, ever (rate() of it is acked/s).",
        &|g| g.acked,
    );
    series(
        "concord_group_skipped_total",
        "counter",
        "Events of the group skipped by a nack, ever.",
        &|g| g.skipped,
    );
    out
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_every_bucket_at_or_above_it() {
        let m = Metrics::default();
        m.append(AppendResultKind::Appended(3), Duration::from_millis(3));
        m.append(AppendResultKind::Conflict, Duration::from_secs(10));
        let text = m.render("memory");
        assert!(
            text.contains(
                "concord_append_duration_seconds_bucket{store=\"memory\",le=\"0.0025\"} 0"
            )
        );
        assert!(
            text.contains(
                "concord_append_duration_seconds_bucket{store=\"memory\",le=\"0.005\"} 1"
            )
        );
        assert!(
            text.contains("concord_append_duration_seconds_bucket{store=\"memory\",le=\"+Inf\"} 2")
        );
        assert!(text.contains("concord_events_appended_total{store=\"memory\"} 3"));
        assert!(text.contains("concord_conflicts_total{store=\"memory\"} 1"));
    }
}
