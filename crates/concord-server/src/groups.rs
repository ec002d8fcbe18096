//! Consumer groups over HTTP: `/groups`, one group's status, create/update, delete, poll,
//! ack, nack, the parked events and their replay (shared/API.md, "Consumer groups").
//!
//! The handlers only translate: `concord-groups`' `Groups` does the work, and its errors
//! become problems in `error.rs`. A poll's wait ends early when the server shuts down, with
//! an empty answer.
//!
//! Grants, when tokens are configured: `read` on the group's source (`*` for an `all`
//! source) to create, update, read, poll, ack, nack, replay or delete it; the list shows the
//! groups whose source the token may read.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use concord_api::{
    AckBody, AckResult, GroupList, GroupStatus, MessageBody, NackBody, NackResult,
    PARKED_LIMIT_DEFAULT, POLL_MAX_DEFAULT, POLL_WAIT_MS_DEFAULT, ParkedEvent, ParkedList,
    ParkedParams, PollBody, PollResult, ReplayResult,
};
use concord_groups::{GroupName, GroupSpec, Source, Upserted};

use crate::auth::Access;
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParams};
use crate::routes::AppState;

/// The most in-flight deliveries `GET /groups/{group}` lists.
const IN_FLIGHT_LISTED_MAX: usize = 1000;

/// The consumer-group routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/groups", get(list))
        .route("/groups/{group}", get(status).put(upsert).delete(delete))
        .route("/groups/{group}/poll", post(poll))
        .route("/groups/{group}/ack", post(ack))
        .route("/groups/{group}/nack", post(nack))
        .route("/groups/{group}/parked", get(parked))
        .route("/groups/{group}/replay-parked", post(replay_parked))
}

fn group_name(raw: &str) -> Result<GroupName, ApiError> {
    GroupName::new(raw).map_err(|e| ApiError::invalid("group", e.message))
}

/// Whether `access` may read `source`.
fn check_source(access: &Access, source: &Source) -> Result<(), ApiError> {
    match source {
        Source::Stream(stream) => access.read(stream.as_str()),
        Source::All(_) => access.read_all(),
    }
}

/// The group named in the path, once the caller may use it.
async fn allowed(app: &AppState, access: &Access, raw: &str) -> Result<GroupName, ApiError> {
    let group = group_name(raw)?;
    if !matches!(access, Access::Open) {
        let spec = app.groups.spec(&group).await?;
        check_source(access, &spec.source)?;
    }
    Ok(group)
}

async fn list(State(app): State<AppState>, access: Access) -> Result<Json<GroupList>, ApiError> {
    access.any_read()?;
    let groups = app
        .groups
        .list()
        .await?
        .into_iter()
        .filter(|g| check_source(&access, &g.source).is_ok())
        .collect();
    Ok(Json(GroupList { groups }))
}

async fn status(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
) -> Result<Json<GroupStatus>, ApiError> {
    let group = allowed(&app, &access, &raw).await?;
    let info = app.groups.info(&group).await?;
    let mut in_flight_messages = app.groups.in_flight(&group).await?;
    in_flight_messages.truncate(IN_FLIGHT_LISTED_MAX);
    Ok(Json(GroupStatus {
        info,
        in_flight_messages,
    }))
}

async fn upsert(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
    body: Result<JsonBody<GroupSpec>, ApiError>,
) -> Result<Response, ApiError> {
    let group = group_name(&raw)?;
    let JsonBody(spec) = body?;
    check_source(&access, &spec.source)?;
    let upserted = app.groups.create_or_update(&group, spec).await?;
    let info = app.groups.info(&group).await?;
    let status = match upserted {
        Upserted::Created => StatusCode::CREATED,
        Upserted::Updated | Upserted::Unchanged => StatusCode::OK,
    };
    if upserted == Upserted::Created {
        tracing::info!(group = %group, "consumer group created");
    }
    Ok((status, Json(info)).into_response())
}

async fn delete(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let group = allowed(&app, &access, &raw).await?;
    app.groups.delete(&group).await?;
    tracing::info!(group = %group, "consumer group deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn poll(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
    body: Result<JsonBody<PollBody>, ApiError>,
) -> Result<Json<PollResult>, ApiError> {
    let group = allowed(&app, &access, &raw).await?;
    let JsonBody(body) = body?;
    let max = body.max.unwrap_or(POLL_MAX_DEFAULT);
    let wait_ms = body.wait_ms.unwrap_or(POLL_WAIT_MS_DEFAULT);
    let wait_max = app.config.group_wait_max.as_millis();
    if u128::from(wait_ms) > wait_max {
        return Err(ApiError::invalid(
            "wait_ms",
            format!("wait_ms is {wait_ms}, but at most {wait_max} is allowed"),
        ));
    }
    let polled = app
        .groups
        .poll(&group, &body.consumer, max, Duration::from_millis(wait_ms));
    let messages = tokio::select! {
        messages = polled => messages?,
        () = app.shutting_down() => Vec::new(),
    };
    Ok(Json(PollResult {
        messages: messages
            .into_iter()
            .map(|m| MessageBody {
                ack_id: m.ack_id,
                delivery: m.delivery,
                event: m.event,
            })
            .collect(),
    }))
}

async fn ack(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
    body: Result<JsonBody<AckBody>, ApiError>,
) -> Result<Json<AckResult>, ApiError> {
    let group = allowed(&app, &access, &raw).await?;
    let JsonBody(body) = body?;
    let acked = app.groups.ack(&group, &body.ack_ids).await?;
    Ok(Json(AckResult { acked }))
}

async fn nack(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
    body: Result<JsonBody<NackBody>, ApiError>,
) -> Result<Json<NackResult>, ApiError> {
    let group = allowed(&app, &access, &raw).await?;
    let JsonBody(body) = body?;
    let nacked = app.groups.nack(&group, &body.ack_ids, body.action).await?;
    Ok(Json(NackResult { nacked }))
}

async fn parked(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
    Params(params): Params<ParkedParams>,
) -> Result<Json<ParkedList>, ApiError> {
    let group = allowed(&app, &access, &raw).await?;
    let max = app.config.limits.read_limit_max;
    let limit = match params.limit {
        None => PARKED_LIMIT_DEFAULT.min(max),
        Some(0) => return Err(ApiError::invalid("limit", "limit must be at least 1")),
        Some(n) if n > max => return Err(ApiError::LimitAboveMax { asked: n, max }),
        Some(n) => n,
    };
    let parked = app
        .groups
        .parked(&group, limit)
        .await?
        .into_iter()
        .map(|p| ParkedEvent {
            stream: p.stream,
            version: p.version,
            deliveries: p.deliveries,
            event: p.event,
        })
        .collect();
    Ok(Json(ParkedList { parked }))
}

async fn replay_parked(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
) -> Result<Json<ReplayResult>, ApiError> {
    let group = allowed(&app, &access, &raw).await?;
    let replayed = app.groups.replay_parked(&group).await?;
    Ok(Json(ReplayResult { replayed }))
}
