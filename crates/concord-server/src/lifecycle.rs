//! Stream lifecycle over HTTP (API.md "Deleting streams", "Retention: stream metadata",
//! "Scavenge"): `DELETE /streams/{stream}`, `GET|PUT /streams/{stream}/metadata` and
//! `POST /admin/scavenge`. Kept apart from `routes` because these change what a stream
//! shows rather than append to it; status codes come from the one mapping in `error`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use concord_api::{DeleteStreamParams, MetadataBody};
use concord_core::{ScavengeReport, StreamMetadata, Version};

use crate::auth::Access;
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParams};
use crate::routes::{AppState, stream_name};

/// `DELETE /streams/{stream}[?expected_version=n][&tombstone=true]` → 204.
pub(crate) async fn delete_stream(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
    Params(params): Params<DeleteStreamParams>,
) -> Result<Response, ApiError> {
    let stream = stream_name(raw)?;
    access.write(stream.as_str())?;
    let expected = params.expected_version.map(Version);
    let store = Arc::clone(&app.store);
    // A task of its own, as for appends: once started, it finishes.
    let result = tokio::spawn(async move {
        if params.tombstone == Some(true) {
            store.tombstone_stream(&stream, expected).await
        } else {
            store.delete_stream(&stream, expected).await
        }
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the delete task failed: {e}")))?;
    result?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /streams/{stream}/metadata` → 200, the stream's retention settings.
pub(crate) async fn stream_metadata(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
) -> Result<Json<StreamMetadata>, ApiError> {
    let stream = stream_name(raw)?;
    access.read(stream.as_str())?;
    Ok(Json(app.store.stream_metadata(&stream).await?))
}

/// `PUT /streams/{stream}/metadata` → 200, the settings now stored: members left out keep
/// theirs, `null` removes one.
pub(crate) async fn set_stream_metadata(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
    body: Result<JsonBody<MetadataBody>, ApiError>,
) -> Result<Json<StreamMetadata>, ApiError> {
    let stream = stream_name(raw)?;
    access.write(stream.as_str())?;
    let JsonBody(change) = body?;
    let current = app.store.stream_metadata(&stream).await?;
    let metadata = change.apply(current);
    Ok(Json(
        app.store.set_stream_metadata(&stream, metadata).await?,
    ))
}

/// `POST /admin/scavenge` → 200 with what it removed, once done. Needs `write` on `*`.
pub(crate) async fn scavenge(
    State(app): State<AppState>,
    access: Access,
) -> Result<Json<ScavengeReport>, ApiError> {
    access.write_all()?;
    let store = Arc::clone(&app.store);
    // Runs to its end even if the caller goes away.
    let report = tokio::spawn(async move { store.scavenge().await })
        .await
        .map_err(|e| ApiError::Internal(format!("the scavenge task failed: {e}")))??;
    Ok(Json(report))
}
