//! Extractors whose rejections are `ApiError`s, so malformed input is answered with
//! `urn:concord:invalid-request` (or `too-large`) and never with axum's plain text.
//!
//! Bodies are parsed as JSON whatever their `Content-Type` says: `curl -d` sends
//! `application/x-www-form-urlencoded`, and refusing it would only get in the way. A body
//! must arrive within the server's body timeout (408 otherwise).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::routes::AppState;

/// A JSON body.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let timeout = state.config.body_timeout;
        let read = tokio::time::timeout(timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| ApiError::BodyTimeout(timeout.as_millis()))?;
        let bytes = read.map_err(|r: BytesRejection| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge {
                    size: declared,
                    max: state.config.limits.request_bytes_max as u64,
                }
            } else {
                ApiError::invalid(
                    "body",
                    format!("the request body could not be read: {}", r.body_text()),
                )
            }
        })?;
        // Checked as UTF-8 once, so that serde_json does not check each string again.
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            ApiError::invalid(
                "body",
                format!("the request body is not valid: it is not UTF-8 ({e})"),
            )
        })?;
        serde_json::from_str(text)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid("body", format!("the request body is not valid: {e}")))
    }
}

/// Query-string parameters.
#[derive(Debug)]
pub(crate) struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(t)| Params(t))
            .map_err(|r| ApiError::invalid("query", r.body_text()))
    }
}

/// Path parameters (percent-decoded).
#[derive(Debug)]
pub(crate) struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| PathParams(t))
            .map_err(|r| ApiError::invalid("path", r.body_text()))
    }
}
