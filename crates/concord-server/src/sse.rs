//! Subscriptions over Server-Sent Events.
//!
//! Each response streams a core [`Subscription`](concord_core::Subscription): a pull cursor over the store. hyper
//! polls it only as fast as the socket drains, so a subscriber that stops reading holds
//! one page of events at most and never slows writers or other subscribers; when it reads
//! again it catches up from the store. A shutdown ends every subscription.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use concord_api::{Problem, ProblemType, SubscribeAllParams, SubscribeStreamParams};
use concord_core::{Position, RecordedEvent, StoreError, Version};
use futures::StreamExt;

use crate::auth::Access;
use crate::error::ApiError;
use crate::extract::{Params, PathParams};
use crate::routes::{AppState, filter, stream_name};

/// `Last-Event-ID: k` as "resume after k".
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(
                "Last-Event-ID",
                "Last-Event-ID must be the number of the last event received",
            )
        })
}

fn event_data(event: &RecordedEvent) -> Result<String, serde_json::Error> {
    // Event data keeps the writer's whitespace; axum splits any line break in it into
    // further `data:` lines, which a client joins back with `\n` (still the same JSON).
    serde_json::to_string(event)
}

fn respond(
    app: &AppState,
    subscription: impl futures::Stream<Item = Result<RecordedEvent, StoreError>> + Send + 'static,
    id_of: fn(&RecordedEvent) -> u64,
) -> Response {
    let guard = app.metrics.subscription();
    let messages = subscription
        .map(move |item| {
            let _counted = &guard;
            let message = match item.map_err(ApiError::from).and_then(|e| {
                event_data(&e)
                    .map(|data| (id_of(&e), data))
                    .map_err(|err| ApiError::Internal(err.to_string()))
            }) {
                Ok((id, data)) => Event::default().id(id.to_string()).data(data),
                // A stream tombstoned while followed ends its subscription for good: say so
                // (410 stream-deleted) instead of inviting a reconnect that cannot succeed.
                Err(e @ ApiError::Store(StoreError::StreamDeleted(_))) => Event::default()
                    .event("error")
                    .data(serde_json::to_string(&e.into_problem()).unwrap_or_default()),
                Err(e) => {
                    tracing::error!(error = %e, "subscription failed");
                    let problem = Problem::new(
                        ProblemType::Unavailable,
                        503,
                        "the subscription failed; reconnect with Last-Event-ID",
                    );
                    Event::default()
                        .event("error")
                        .data(serde_json::to_string(&problem).unwrap_or_default())
                }
            };
            Ok::<_, Infallible>(message)
        })
        .take_until(app.shutting_down());
    Sse::new(messages)
        .keep_alive(
            KeepAlive::new()
                .interval(app.config.keep_alive)
                .text("keep-alive"),
        )
        .into_response()
}

/// `GET /subscribe/all`: the global log from `from` (or after `Last-Event-ID`), filtered.
pub(crate) async fn subscribe_all(
    State(app): State<AppState>,
    access: Access,
    Params(params): Params<SubscribeAllParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    access.read_all()?;
    let filter = filter(
        params.category.as_deref(),
        params.types.as_deref(),
        params.tags.as_deref(),
    )?;
    let from = match last_event_id(&headers)? {
        Some(k) => k.saturating_add(1),
        None => params.from.unwrap_or(1),
    };
    // The store's own streams (a consumer group's state) are not the users' log.
    let subscription = Arc::clone(&app.store)
        .subscribe_all(Position(from), filter)
        .filter(|item| std::future::ready(!matches!(item, Ok(e) if e.stream.is_system())));
    Ok(respond(&app, subscription, |e| e.position.get()))
}

/// `GET /subscribe/streams/{stream}`: one stream from version `from` (or after
/// `Last-Event-ID`).
pub(crate) async fn subscribe_stream(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
    Params(params): Params<SubscribeStreamParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let stream = stream_name(raw)?;
    access.read(stream.as_str())?;
    let from = match last_event_id(&headers)? {
        Some(k) => k.saturating_add(1),
        None => params.from.unwrap_or(1),
    };
    // A tombstoned stream is refused with 410 before the event stream starts.
    let _ = app.store.stream_version(&stream).await?;
    let subscription = Arc::clone(&app.store).subscribe_stream(stream, Version(from));
    Ok(respond(&app, subscription, |e| e.version.get()))
}
