//! Consumer groups over HTTP: `/groups`, one group, poll (long-poll), ack, nack, parked
//! and replay (shared/API.md, "Consumer groups").
//!
//! The handlers only translate: `concord-groups`' `Groups` does the work over the
//! server's store, and its errors become problems in `error.rs`. A poll that finds nothing
//! waits inside `Groups::poll`, which wakes on the store's head moving or the group's
//! earliest delivery deadline, so an idle poll costs no requests to the store.
//!
//! Grants, when tokens are configured: `read` on the source stream (`*` for a source
//! `all`) to create, see, poll, ack and nack a group, as API.md says; listing needs some
//! `read` grant and shows only groups the token may read.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use concord_api::{
    AckBody, AckResult, GROUP_WAIT_MS_MAX, GroupBody, GroupList, GroupMessage, GroupView, NackBody,
    NackResult, ParkedList, PollBody, PollResult, ReplayResult,
};
use concord_groups::{GroupError, GroupSettings, PutOutcome, Source};

use crate::auth::Access;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams};
use crate::routes::AppState;

/// The consumer-group routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/groups", get(list))
        .route("/groups/{group}", get(info).put(put).delete(delete))
        .route("/groups/{group}/poll", post(poll))
        .route("/groups/{group}/ack", post(ack))
        .route("/groups/{group}/nack", post(nack))
        .route("/groups/{group}/parked", get(parked))
        .route("/groups/{group}/replay-parked", post(replay))
}

/// Requires `read` on what the group reads.
fn may_read_source(access: &Access, source: &Source) -> Result<(), ApiError> {
    match source {
        Source::Stream(s) => access.read(s.as_str()),
        Source::All(_) => access.read_all(),
    }
}

/// The group's settings, after checking the caller may read its source.
async fn authorised(app: &AppState, access: &Access, group: &str) -> Result<GroupView, ApiError> {
    let info = app.groups.get(group).await?;
    may_read_source(access, &info.settings.source)?;
    Ok(info.into())
}

async fn list(State(app): State<AppState>, access: Access) -> Result<Json<GroupList>, ApiError> {
    access.any_read()?;
    let mut groups = Vec::new();
    for name in app.groups.list().await? {
        match app.groups.get(&name).await {
            Ok(info) if may_read_source(&access, &info.settings.source).is_ok() => {
                groups.push(info.into());
            }
            Ok(_) | Err(GroupError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(GroupList { groups }))
}

async fn info(
    State(app): State<AppState>,
    access: Access,
    PathParams(group): PathParams<String>,
) -> Result<Json<GroupView>, ApiError> {
    Ok(Json(authorised(&app, &access, &group).await?))
}

async fn put(
    State(app): State<AppState>,
    access: Access,
    PathParams(group): PathParams<String>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Response, ApiError> {
    may_read_source(&access, &body.source)?;
    let settings = GroupSettings::from(body);
    let outcome = app.groups.put(&group, settings).await?;
    let view: GroupView = app.groups.get(&group).await?.into();
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Updated => StatusCode::OK,
    };
    Ok((status, Json(view)).into_response())
}

async fn delete(
    State(app): State<AppState>,
    access: Access,
    PathParams(group): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    authorised(&app, &access, &group).await?;
    app.groups.delete(&group).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn poll(
    State(app): State<AppState>,
    access: Access,
    PathParams(group): PathParams<String>,
    JsonBody(body): JsonBody<PollBody>,
) -> Result<Json<PollResult>, ApiError> {
    if body.wait_ms > GROUP_WAIT_MS_MAX {
        return Err(ApiError::invalid(
            "wait_ms",
            format!(
                "wait_ms is {}, but at most {GROUP_WAIT_MS_MAX} is allowed",
                body.wait_ms
            ),
        ));
    }
    concord_groups::check_consumer(&body.consumer)?;
    concord_groups::check_max(body.max)?;
    authorised(&app, &access, &group).await?;
    let wait = Duration::from_millis(body.wait_ms);
    let polled = app.groups.poll(&group, &body.consumer, body.max, wait);
    // A shutdown ends the wait early with what is there now.
    let got = tokio::select! {
        got = polled => got?,
        () = app.shutting_down() => Vec::new(),
    };
    let messages = got
        .into_iter()
        .map(|d| GroupMessage {
            ack_id: d.ack_id,
            delivery: d.delivery,
            event: d.event,
        })
        .collect();
    Ok(Json(PollResult { messages }))
}

async fn ack(
    State(app): State<AppState>,
    access: Access,
    PathParams(group): PathParams<String>,
    JsonBody(body): JsonBody<AckBody>,
) -> Result<Json<AckResult>, ApiError> {
    authorised(&app, &access, &group).await?;
    let acked = app.groups.ack(&group, &body.ack_ids).await?;
    Ok(Json(AckResult { acked }))
}

async fn nack(
    State(app): State<AppState>,
    access: Access,
    PathParams(group): PathParams<String>,
    JsonBody(body): JsonBody<NackBody>,
) -> Result<Json<NackResult>, ApiError> {
    authorised(&app, &access, &group).await?;
    let nacked = app.groups.nack(&group, &body.ack_ids, body.action).await?;
    Ok(Json(NackResult { nacked }))
}

async fn parked(
    State(app): State<AppState>,
    access: Access,
    PathParams(group): PathParams<String>,
) -> Result<Json<ParkedList>, ApiError> {
    authorised(&app, &access, &group).await?;
    let events = app.groups.parked(&group).await?;
    Ok(Json(ParkedList { events }))
}

async fn replay(
    State(app): State<AppState>,
    access: Access,
    PathParams(group): PathParams<String>,
) -> Result<Json<ReplayResult>, ApiError> {
    authorised(&app, &access, &group).await?;
    let replayed = app.groups.replay_parked(&group).await?;
    Ok(Json(ReplayResult { replayed }))
}

/// A metric: name, help, type, and its value for one group.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&concord_groups::GroupInfo) -> u64,
);

/// The per-group series for `/metrics`.
pub(crate) async fn render_metrics(app: &AppState) -> String {
    use std::fmt::Write as _;
    let mut infos = Vec::new();
    match app.groups.list().await {
        Ok(names) => {
            for name in names {
                if let Ok(info) = app.groups.get(&name).await {
                    infos.push(info);
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "metrics: consumer groups unavailable"),
    }
    let mut out = String::new();
    let series: [Series; 4] = [
        (
            "concord_group_pending",
            "Source events not yet acked, in flight or parked.",
            "gauge",
            |i| i.pending,
        ),
        (
            "concord_group_in_flight",
            "Events delivered and not yet answered.",
            "gauge",
            |i| i.in_flight,
        ),
        ("concord_group_parked", "Events parked.", "gauge", |i| {
            i.parked
        }),
        (
            "concord_group_acked_total",
            "Events acked.",
            "counter",
            |i| i.acked,
        ),
    ];
    for (name, help, kind, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for info in &infos {
            let _ = writeln!(
                out,
                "{name}{{group=\"{}\"}} {}",
                info.group.replace(['"', '\\', '\n'], "_"),
                value(info)
            );
        }
    }
    out
}
