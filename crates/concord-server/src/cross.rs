//! `POST /append` and `POST /query`: appends across streams or under a query condition,
//! and the query read a condition is based on (API.md).
//!
//! Kept apart from `routes` because both endpoints speak in queries over the whole store
//! rather than in one stream: a query read needs `read` on every stream (`*`), and a
//! multi-stream append needs `write` on each part's stream.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use concord_api::{MultiAppendBody, MultiAppendResult, QueryBody, QueryResult, READ_LIMIT_DEFAULT};
use concord_core::{MultiAppendRequest, StoreError};

use crate::auth::Access;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::finish::finished;
use crate::metrics::AppendResultKind;
use crate::routes::AppState;

/// `POST /append`.
pub(crate) async fn append_multi(
    State(app): State<AppState>,
    access: Access,
    body: Result<JsonBody<MultiAppendBody>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = body?;
    let request = MultiAppendRequest::from(body);
    for part in &request.parts {
        access.write(part.stream.as_str())?;
    }
    // The server's own limits apply whatever the backend's are.
    app.config.limits.check_multi_append(&request)?;
    let events: u64 = request.parts.iter().map(|p| p.events.len() as u64).sum();
    let started = Instant::now();
    // As for single appends: once started, it finishes (`finish`).
    let store = Arc::clone(&app.store);
    let result = finished(async move { store.append_multi(request).await }).await?;
    let kind = AppendResultKind::of_multi(&result, events);
    app.metrics.append(kind, started.elapsed());
    let outcome = result?;
    let status = if outcome.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(MultiAppendResult::from(outcome))).into_response())
}

/// `POST /query`.
pub(crate) async fn query(
    State(app): State<AppState>,
    access: Access,
    body: Result<JsonBody<QueryBody>, ApiError>,
) -> Result<Json<QueryResult>, ApiError> {
    access.read_all()?;
    let JsonBody(body) = body?;
    body.query.validate().map_err(StoreError::from)?;
    let max = app.config.limits.read_limit_max;
    let limit = match body.limit {
        None => READ_LIMIT_DEFAULT.min(max),
        Some(0) => return Err(ApiError::invalid("limit", "limit must be at least 1")),
        Some(n) if n > max => return Err(ApiError::LimitAboveMax { asked: n, max }),
        Some(n) => n,
    };
    app.metrics.read();
    let mut page = app.store.query(&body.query, body.after, limit).await?;
    page.events.retain(|e| !e.stream.is_system());
    Ok(Json(QueryResult::from(page)))
}
