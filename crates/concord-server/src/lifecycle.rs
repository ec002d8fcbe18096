//! Stream lifecycle over HTTP (API.md "Deleting streams", "Retention: stream metadata",
//! "Scavenge"): `DELETE /streams/{stream}`, `GET|PUT /streams/{stream}/metadata` and
//! `POST /admin/scavenge`. Kept apart from `routes` because these change what a stream
//! shows rather than append to it; status codes come from the one mapping in `error`.
//!
//! A delete is not an event in the global log, so the read side cannot learn of it by
//! folding the log: after a successful delete and after every scavenge (on demand and
//! scheduled) the server asks its `ProjectionHost`, when it has one, to forget the rows of
//! streams that are gone ([`forget_deleted_streams`]). A failure there is logged, not
//! returned: the delete or scavenge did happen, and the next reconcile takes it up.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use concord_api::{DeleteStreamParams, MetadataBody};
use concord_core::{ScavengeReport, StreamMetadata, Version};
use concord_projection::ProjectionHost;

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
    if let Some(host) = app.config.projections.clone() {
        // Its own task, as the delete: the caller going away does not cut it short.
        let _ = tokio::spawn(async move { forget_deleted_streams(&host).await }).await;
    }
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
    let JsonBody(body) = body?;
    Ok(Json(
        app.store
            .change_stream_metadata(&stream, body.change())
            .await?,
    ))
}

/// `POST /admin/scavenge` → 200 with what it removed, once done. Needs `write` on `*`.
pub(crate) async fn scavenge(
    State(app): State<AppState>,
    access: Access,
) -> Result<Json<ScavengeReport>, ApiError> {
    access.write_all()?;
    let store = Arc::clone(&app.store);
    let metrics = Arc::clone(&app.metrics);
    let projections = app.config.projections.clone();
    // Runs to its end even if the caller goes away.
    let report = tokio::spawn(async move {
        run_scavenge(store.as_ref(), &metrics, projections.as_deref()).await
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the scavenge task failed: {e}")))??;
    Ok(Json(report))
}

/// Drops the read-model rows of deleted and tombstoned streams, logging what it did; a
/// failure is logged only (see the module docs).
pub(crate) async fn forget_deleted_streams(host: &ProjectionHost) {
    match host.forget_deleted_streams().await {
        Ok(forgotten) if !forgotten.is_empty() => {
            tracing::info!(?forgotten, "projections forgot deleted streams");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "forgetting deleted streams in the projections failed; the next delete or scavenge retries"
        ),
    }
}

/// One scavenge, counted in the metrics and logged, then the projections' reconcile (a
/// scavenge is when retention and deletes take their final effect): the on-demand endpoint
/// and the schedule both run it.
pub(crate) async fn run_scavenge(
    store: &dyn concord_core::EventStore,
    metrics: &crate::metrics::Metrics,
    projections: Option<&ProjectionHost>,
) -> Result<ScavengeReport, concord_core::StoreError> {
    let started = std::time::Instant::now();
    let result = store.scavenge().await;
    let took = started.elapsed();
    metrics.scavenge(result.as_ref().ok(), took);
    match &result {
        Ok(r) => tracing::info!(
            events_removed = r.events_removed,
            streams_scavenged = r.streams_scavenged,
            bytes_reclaimed = r.bytes_reclaimed,
            seconds = took.as_secs_f64(),
            "scavenge completed"
        ),
        Err(e) => tracing::warn!(error = %e, "scavenge failed; the next one takes up the rest"),
    }
    if let Some(host) = projections {
        forget_deleted_streams(host).await;
    }
    result
}

/// Scavenges every `every` until `stopped` turns true; the first one after `every`, not at
/// start (a restart loop must not turn into a scavenge loop). A store without lifecycle
/// support (Unsupported) ends the schedule after saying so once.
pub(crate) async fn scavenge_on_schedule(
    store: Arc<dyn concord_core::EventStore>,
    metrics: Arc<crate::metrics::Metrics>,
    projections: Option<Arc<ProjectionHost>>,
    every: std::time::Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = async { drop(stopped.wait_for(|s| *s).await) } => return,
        }
        if let Err(concord_core::StoreError::Unsupported { .. }) =
            run_scavenge(store.as_ref(), &metrics, projections.as_deref()).await
        {
            tracing::warn!(
                store = store.backend(),
                "this store cannot scavenge: the schedule stops"
            );
            return;
        }
    }
}
