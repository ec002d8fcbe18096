//! The read side over HTTP: `/projections`, one projection's status, one read-model row
//! (with `min_position` for read-your-writes) and rebuild.
//!
//! The handlers only translate: `concord-projection`'s `ProjectionHost` does the work, and
//! its errors become problems in `error.rs`. Without a host in [`ServerConfig`] the list
//! is empty and every projection is unknown, so the routes (and the OpenAPI document) are
//! the same whether or not the server runs a read side.
//!
//! Grants, when tokens are configured: the list and a status need some `read` grant (they
//! show positions only, as `/head` does); a row needs `read` on its key, which is a stream
//! name, so a token limited to `account-` reads `balances/account-42`; a rebuild needs
//! `write` on `*`, because it rewrites a read model every reader shares.
//!
//! [`ServerConfig`]: crate::ServerConfig

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use concord_api::{
    PROJECTION_WAIT_MS_DEFAULT, PROJECTION_WAIT_MS_MAX, ProjectionFailure, ProjectionInfo,
    ProjectionList, ProjectionRow, ProjectionRowParams,
};
use concord_core::Position;
use concord_projection::{ProjectionError, ProjectionHost, ProjectionStatus};

use crate::auth::{Access, EVERY_STREAM};
use crate::error::ApiError;
use crate::extract::{Params, PathParams};
use crate::routes::AppState;

/// The read side's routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/projections", get(list))
        .route("/projections/{name}", get(status))
        .route("/projections/{name}/rebuild", post(rebuild))
        .route("/projections/{name}/{key}", get(row))
}

/// The host, or the error a request about `name` gets when there is none.
fn host<'a>(app: &'a AppState, name: &str) -> Result<&'a Arc<ProjectionHost>, ApiError> {
    app.config.projections.as_ref().ok_or_else(|| {
        ApiError::Projection(ProjectionError::UnknownProjection {
            name: name.to_owned(),
            known: "none (this server runs no projections)".to_owned(),
        })
    })
}

/// The wire shape of a status (`concord-api` mirrors `concord-projection`).
pub(crate) fn info(s: ProjectionStatus) -> ProjectionInfo {
    let status = serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    ProjectionInfo {
        name: s.name,
        status,
        checkpoint: s.checkpoint,
        head: s.head,
        lag: s.lag,
        events_applied: s.events_applied,
        failure: s.failure.map(|f| ProjectionFailure {
            position: f.position,
            stream: f.stream,
            version: f.version,
            event_type: f.event_type,
            error: f.error,
        }),
        skipped: s.skipped,
        skipped_events: s
            .skipped_events
            .into_iter()
            .map(|f| ProjectionFailure {
                position: f.position,
                stream: f.stream,
                version: f.version,
                event_type: f.event_type,
                error: f.error,
            })
            .collect(),
        last_error: s.last_error,
    }
}

async fn list(
    State(app): State<AppState>,
    access: Access,
) -> Result<Json<ProjectionList>, ApiError> {
    access.any_read()?;
    let projections = match &app.config.projections {
        None => Vec::new(),
        Some(host) => host.list().await?.into_iter().map(info).collect(),
    };
    Ok(Json(ProjectionList { projections }))
}

async fn status(
    State(app): State<AppState>,
    access: Access,
    PathParams(name): PathParams<String>,
) -> Result<Json<ProjectionInfo>, ApiError> {
    access.any_read()?;
    let status = host(&app, &name)?.status(&name).await?;
    Ok(Json(info(status)))
}

async fn row(
    State(app): State<AppState>,
    access: Access,
    PathParams((name, key)): PathParams<(String, String)>,
    Params(params): Params<ProjectionRowParams>,
) -> Result<Json<ProjectionRow>, ApiError> {
    access.read(&key)?;
    let wait_ms = params.wait_ms.unwrap_or(PROJECTION_WAIT_MS_DEFAULT);
    if wait_ms > PROJECTION_WAIT_MS_MAX {
        return Err(ApiError::invalid(
            "wait_ms",
            format!("wait_ms is {wait_ms}, but at most {PROJECTION_WAIT_MS_MAX} is allowed"),
        ));
    }
    let host = host(&app, &name)?;
    let min_position = params.min_position.map(Position);
    if let Some(wanted) = min_position {
        // Beyond the head it could only be waited for in vain: no append has returned it.
        let head = app.store.head().await?;
        if wanted > head {
            return Err(ApiError::invalid(
                "min_position",
                format!(
                    "min_position {wanted} is beyond the store's head {head}; pass the last_position an append returned"
                ),
            ));
        }
    }
    let read = host.get_row(&name, &key, min_position, Duration::from_millis(wait_ms));
    // A shutdown ends the wait early, with the answer the bound would have given.
    let found = tokio::select! {
        found = read => found?,
        () = app.shutting_down() => {
            let checkpoint = host.status(&name).await?.checkpoint;
            return Err(ApiError::Projection(ProjectionError::ProjectionBehind {
                projection: name,
                checkpoint,
                wanted: min_position.unwrap_or(Position::ZERO),
            }));
        }
    };
    Ok(Json(ProjectionRow {
        projection: found.projection,
        key: found.key,
        checkpoint: found.checkpoint,
        row: found.row,
    }))
}

async fn rebuild(
    State(app): State<AppState>,
    access: Access,
    PathParams(name): PathParams<String>,
) -> Result<Response, ApiError> {
    if let Access::Token(grant) = &access
        && !grant.write.iter().any(|p| p == EVERY_STREAM)
    {
        return Err(ApiError::Forbidden(
            "rebuilding a projection needs a token that may write every stream (\"*\")".to_owned(),
        ));
    }
    let status = host(&app, &name)?.start_rebuild(&name).await?;
    tracing::info!(projection = %name, "rebuild started");
    Ok((StatusCode::ACCEPTED, Json(info(status))).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use concord_projection::{Failure, SkippedEvent, State as RunState};

    #[test]
    fn the_wire_status_serialises_like_the_projection_status() {
        let status = ProjectionStatus {
            name: "balances".to_owned(),
            status: RunState::Failed,
            checkpoint: Position(6),
            head: Position(9),
            lag: 3,
            events_applied: 6,
            failure: Some(Failure {
                position: Position(7),
                stream: "account-1".to_owned(),
                version: 2,
                event_type: "Deposited".to_owned(),
                error: "no amount".to_owned(),
            }),
            skipped: 1,
            skipped_events: vec![SkippedEvent {
                position: Position(5),
                stream: "account-1".to_owned(),
                version: 1,
                event_type: "AccountOpened".to_owned(),
                error: "no owner".to_owned(),
            }],
            last_error: Some("disk full".to_owned()),
        };
        assert_eq!(
            serde_json::to_value(info(status.clone())).unwrap(),
            serde_json::to_value(status).unwrap()
        );
    }
}
