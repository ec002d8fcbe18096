//! Access control: bearer tokens with read and write grants on stream-name prefixes.
//!
//! The middleware resolves the token once per request and leaves an [`Access`] in the
//! request's extensions; handlers ask it about the stream they touch. Tokens are compared
//! in constant time, and every configured token is compared on each request, so timing
//! does not reveal which token nearly matched (a token's length may still be observable:
//! use tokens of one length, 32 characters or more).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ServerError};
use crate::routes::AppState;

/// The prefix that grants every stream (and `/all`).
pub const EVERY_STREAM: &str = "*";

/// One token and what it may do.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenGrant {
    /// The secret the client sends as `Authorization: Bearer <token>`.
    pub token: String,
    /// A name for logs (the token itself is never logged).
    #[serde(default)]
    pub name: Option<String>,
    /// Stream-name prefixes this token may read (`*`: every stream).
    #[serde(default)]
    pub read: Vec<String>,
    /// Stream-name prefixes this token may append to (`*`: every stream).
    #[serde(default)]
    pub write: Vec<String>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("name", &self.name)
            .field("read", &self.read)
            .field("write", &self.write)
            .finish_non_exhaustive()
    }
}

fn grants(prefixes: &[String], stream: &str) -> bool {
    prefixes
        .iter()
        .any(|p| p == EVERY_STREAM || stream.starts_with(p.as_str()))
}

impl TokenGrant {
    /// Whether the token may read `stream`.
    pub fn may_read(&self, stream: &str) -> bool {
        grants(&self.read, stream)
    }

    /// Whether the token may append to `stream`.
    pub fn may_write(&self, stream: &str) -> bool {
        grants(&self.write, stream)
    }

    /// Whether the token may read every stream (`/all`, `/subscribe/all`).
    pub fn may_read_all(&self) -> bool {
        self.read.iter().any(|p| p == EVERY_STREAM)
    }

    /// Whether the token may write every stream (`POST /admin/scavenge`).
    pub fn may_write_all(&self) -> bool {
        self.write.iter().any(|p| p == EVERY_STREAM)
    }

    /// Whether every stream whose name starts with `prefix` is readable.
    pub fn may_list(&self, prefix: &str) -> bool {
        self.read
            .iter()
            .any(|p| p == EVERY_STREAM || prefix.starts_with(p.as_str()))
    }
}

/// The configured tokens (the tokens file, parsed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// One entry per `[[token]]` table.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenGrant>,
}

impl Tokens {
    /// Parses a tokens file's text.
    ///
    /// # Errors
    /// [`ServerError::Tokens`] for invalid TOML, an empty token, or a token listed twice.
    pub fn parse(text: &str) -> Result<Tokens, ServerError> {
        let tokens: Tokens = toml::from_str(text)
            .map_err(|e| ServerError::Tokens(format!("invalid tokens file: {e}")))?;
        if tokens.tokens.iter().any(|t| t.token.is_empty()) {
            return Err(ServerError::Tokens(
                "a token in the tokens file is empty".to_owned(),
            ));
        }
        let mut secrets: Vec<&str> = tokens.tokens.iter().map(|t| t.token.as_str()).collect();
        secrets.sort_unstable();
        if secrets.windows(2).any(|w| w.first() == w.get(1)) {
            return Err(ServerError::Tokens(
                "the same token is listed twice in the tokens file".to_owned(),
            ));
        }
        Ok(tokens)
    }

    /// Reads and parses a tokens file.
    ///
    /// # Errors
    /// [`ServerError::Tokens`] naming the file.
    pub fn load(path: &Path) -> Result<Tokens, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ServerError::Tokens(format!("cannot read tokens file {}: {e}", path.display()))
        })?;
        Tokens::parse(&text).map_err(|e| ServerError::Tokens(format!("{}: {e}", path.display())))
    }

    /// The grant of `presented`, compared in constant time against every token.
    pub fn find(&self, presented: &str) -> Option<&TokenGrant> {
        let mut found = None;
        for grant in &self.tokens {
            if bool::from(grant.token.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(grant);
            }
        }
        found
    }
}

/// What the current request may do: everything (no tokens configured) or a token's grants.
#[derive(Clone, Debug)]
pub enum Access {
    /// No tokens are configured.
    Open,
    /// A valid token.
    Token(Arc<TokenGrant>),
}

impl Access {
    fn check(
        &self,
        allowed: impl FnOnce(&TokenGrant) -> bool,
        what: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        match self {
            Access::Open => Ok(()),
            Access::Token(grant) if allowed(grant) => Ok(()),
            Access::Token(_) => Err(ApiError::Forbidden(what())),
        }
    }

    /// Requires read access to `stream`.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`].
    pub fn read(&self, stream: &str) -> Result<(), ApiError> {
        self.check(
            |g| g.may_read(stream),
            || format!("this token may not read stream {stream:?}"),
        )
    }

    /// Requires write access to `stream`.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`].
    pub fn write(&self, stream: &str) -> Result<(), ApiError> {
        self.check(
            |g| g.may_write(stream),
            || format!("this token may not append to stream {stream:?}"),
        )
    }

    /// Requires write access to every stream.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`].
    pub fn write_all(&self) -> Result<(), ApiError> {
        self.check(TokenGrant::may_write_all, || {
            "a scavenge needs a token that may write every stream (\"*\")".to_owned()
        })
    }

    /// Requires read access to every stream.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`].
    pub fn read_all(&self) -> Result<(), ApiError> {
        self.check(TokenGrant::may_read_all, || {
            "reading the global log needs a token that may read every stream (\"*\")".to_owned()
        })
    }

    /// Requires read access to every stream starting with `prefix`.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`].
    pub fn list(&self, prefix: &str) -> Result<(), ApiError> {
        self.check(
            |g| g.may_list(prefix),
            || format!("this token may not list streams with prefix {prefix:?}; pass a prefix it may read"),
        )
    }

    /// Requires some read grant.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`].
    pub fn any_read(&self) -> Result<(), ApiError> {
        self.check(
            |g| !g.read.is_empty(),
            || "this token may not read anything".to_owned(),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The middleware runs for every route that reaches a handler; its absence is a
        // wiring mistake, and the safe answer is to refuse.
        parts.extensions.get::<Access>().cloned().ok_or_else(|| {
            ApiError::Unauthorized("no credentials were checked for this request".to_owned())
        })
    }
}

/// Resolves the bearer token (except for `/health` and the UI shell) and stores the
/// [`Access`].
pub(crate) async fn middleware(app: AppState, mut request: Request, next: Next) -> Response {
    // The UI shell holds no data, and a browser cannot send a token with a page load.
    if request.uri().path() == "/health" || crate::ui::is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let access = match &app.tokens {
        None => Access::Open,
        Some(tokens) => {
            let presented = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim);
            let Some(presented) = presented else {
                return axum::response::IntoResponse::into_response(ApiError::Unauthorized(
                    "this server needs `Authorization: Bearer <token>`".to_owned(),
                ));
            };
            match tokens.find(presented) {
                Some(grant) => {
                    tracing::debug!(
                        token = grant.name.as_deref().unwrap_or("unnamed"),
                        "authenticated"
                    );
                    Access::Token(Arc::new(grant.clone()))
                }
                None => {
                    return axum::response::IntoResponse::into_response(ApiError::Unauthorized(
                        "the bearer token is not known to this server".to_owned(),
                    ));
                }
            }
        }
    };
    request.extensions_mut().insert(access);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str = r#"
[[token]]
token = "reader-secret"
name = "reporting"
read = ["*"]

[[token]]
token = "bank-secret"
read = ["account-"]
write = ["account-"]
"#;

    #[test]
    fn grants_are_prefixes_and_star_means_everything() {
        let tokens = Tokens::parse(FILE).unwrap();
        let reader = tokens.find("reader-secret").unwrap();
        assert!(
            reader.may_read("auction-1") && reader.may_read_all() && !reader.may_write("account-1")
        );
        let bank = tokens.find("bank-secret").unwrap();
        assert!(bank.may_read("account-1") && bank.may_write("account-1"));
        assert!(!bank.may_read("auction-1") && !bank.may_read_all());
        assert!(bank.may_list("account-4") && !bank.may_list("acc"));
        assert!(tokens.find("bank-secre").is_none() && tokens.find("").is_none());
    }

    #[test]
    fn a_tokens_file_refuses_unknown_keys_and_repeated_tokens() {
        assert!(Tokens::parse("[[token]]\ntoken = \"a\"\nreed = [\"*\"]\n").is_err());
        assert!(Tokens::parse("[[token]]\ntoken = \"a\"\n[[token]]\ntoken = \"a\"\n").is_err());
        assert!(Tokens::parse("[[token]]\ntoken = \"\"\n").is_err());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let tokens = Tokens::parse(FILE).unwrap();
        assert!(!format!("{tokens:?}").contains("secret"));
    }
}

/// The tokens as the gRPC protocol's gate: the password of Basic credentials (or a Bearer
/// token) is looked up as a token, with the same grants as over HTTP; no tokens: open.
#[derive(Debug)]
pub(crate) struct TokenGate(pub(crate) Option<Tokens>);

impl concord_grpc::Gate for TokenGate {
    fn check(
        &self,
        token: Option<&str>,
        action: concord_grpc::Action<'_>,
    ) -> Result<(), concord_grpc::Refusal> {
        use concord_grpc::{Action, Refusal};
        let Some(tokens) = &self.0 else {
            return Ok(());
        };
        let grant = token
            .and_then(|t| tokens.find(t))
            .ok_or(Refusal::Unauthenticated)?;
        let (allowed, what) = match action {
            Action::Read(stream) => (
                grant.may_read(stream),
                format!("this token may not read stream {stream:?}"),
            ),
            Action::Write(stream) => (
                grant.may_write(stream),
                format!("this token may not append to stream {stream:?}"),
            ),
            Action::ReadAll => (
                grant.may_read_all(),
                "reading $all needs a token that may read every stream (\"*\")".to_owned(),
            ),
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Denied(what))
        }
    }
}
