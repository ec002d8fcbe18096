//! The web UI at `/`: browse streams, tail the log live, append, and watch a conflict
//! happen (issue 8); delete a stream, set its retention and scavenge (issue 19).
//!
//! Why it is shaped this way:
//! - **Compiled into the binary.** The assets are plain HTML, CSS and JavaScript under
//!   `ui/`, included with `include_str!`: no build step, no CDN, nothing fetched at run
//!   time, and the UI always matches the server it ships with.
//! - **Public shell, guarded data.** `/` and `/ui/*` need no token (they hold no data; a
//!   browser cannot attach a bearer token to a page load). Everything the UI shows comes
//!   from the API with `Authorization: Bearer`, which the page asks for on a 401.
//! - **Not part of the API.** The asset routes are not in [`crate::ROUTES`] or the OpenAPI
//!   document, which describe the API only; `GET /` is, as the UI's entry point.
//! - **Strict Content-Security-Policy**: scripts, styles and connections from this origin
//!   only, so an asset that tried to reach elsewhere would fail loudly (and the browser
//!   tests would see the violation).

use axum::Router;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::routes::AppState;

/// One file of the UI.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: &str = include_str!("../ui/index.html");

/// The files under `/ui/`, by name.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/app.js"),
    },
    Asset {
        name: "errors.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/errors.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../ui/app.css"),
    },
];

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The UI's routes: `/` and `/ui/{asset}`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{asset}", get(asset))
}

/// Whether `path` is part of the UI shell, served without a token.
pub(crate) fn is_public(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

fn respond(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        // Always revalidate: a new binary must not run with yesterday's script.
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    (headers, body).into_response()
}

async fn index() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => respond(a.content_type, a.body),
        None => ApiError::NotFound(format!("/ui/{name}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `/ui/…` paths the page loads.
    fn referenced_assets() -> Vec<&'static str> {
        INDEX
            .split("\"/ui/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect()
    }

    #[test]
    fn the_page_loads_only_assets_compiled_into_the_binary() {
        let referenced = referenced_assets();
        assert_eq!(referenced.len(), ASSETS.len(), "{referenced:?}");
        for name in referenced {
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "index.html loads /ui/{name}, which is not compiled in"
            );
        }
    }

    #[test]
    fn no_asset_reaches_another_origin() {
        for (name, text) in
            std::iter::once(("index.html", INDEX)).chain(ASSETS.iter().map(|a| (a.name, a.body)))
        {
            for needle in ["http://", "https://", "src=\"//", "href=\"//", "url("] {
                assert!(!text.contains(needle), "{name} contains {needle:?}");
            }
        }
    }

    #[test]
    fn the_shell_is_public_and_nothing_else_is() {
        assert!(is_public("/") && is_public("/ui/app.js"));
        for path in ["/all", "/streams", "/metrics", "/uix", "/openapi.json"] {
            assert!(!is_public(path), "{path}");
        }
    }
}
