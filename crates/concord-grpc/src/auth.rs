//! Who may call: the clients send `authorization: Basic base64(user:password)` in call
//! metadata; Concord's tokens are that password (the user name is free text, by convention
//! the token's name). `Bearer <token>` is accepted too. A server without tokens is open and
//! ignores credentials. The rule lives in the [`Gate`] the server passes in, so this crate
//! does not know how tokens are stored.

use std::fmt;

use base64::Engine;
use tonic::metadata::MetadataMap;

use crate::error::GrpcError;

/// What a call wants to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action<'a> {
    /// Read or subscribe to one stream.
    Read(&'a str),
    /// Append to one stream.
    Write(&'a str),
    /// Read or subscribe to `$all`.
    ReadAll,
}

/// Why a call was refused.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// No credentials, or a password that is no token: UNAUTHENTICATED.
    Unauthenticated,
    /// A token that may not do this: PERMISSION_DENIED with the reason.
    Denied(String),
}

/// Decides whether the caller presenting `token` may do `action`.
pub trait Gate: Send + Sync + fmt::Debug + 'static {
    /// `Ok` when allowed.
    ///
    /// # Errors
    /// The [`Refusal`].
    fn check(&self, token: Option<&str>, action: Action<'_>) -> Result<(), Refusal>;
}

/// An open server: everything is allowed, credentials are ignored.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenGate;

impl Gate for OpenGate {
    fn check(&self, _token: Option<&str>, _action: Action<'_>) -> Result<(), Refusal> {
        Ok(())
    }
}

/// The token in an `authorization` value: the password of `Basic`, or a `Bearer` token.
/// `None` for anything else (which a gate with tokens refuses as unauthenticated).
pub fn token_from_authorization(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// The caller's credentials, taken from call metadata once per call.
#[derive(Clone, Debug, Default)]
pub(crate) struct Caller {
    token: Option<String>,
}

impl Caller {
    pub(crate) fn from_metadata(metadata: &MetadataMap) -> Self {
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(token_from_authorization);
        Caller { token }
    }

    pub(crate) fn check(&self, gate: &dyn Gate, action: Action<'_>) -> Result<(), GrpcError> {
        gate.check(self.token.as_deref(), action)
            .map_err(GrpcError::Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_carry_the_token_as_password() {
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:s3cret:x")
        );
        assert_eq!(
            token_from_authorization(&value).as_deref(),
            Some("s3cret:x")
        );
    }

    #[test]
    fn bearer_tokens_are_accepted_and_other_schemes_are_not() {
        assert_eq!(
            token_from_authorization("Bearer abc").as_deref(),
            Some("abc")
        );
        assert_eq!(token_from_authorization("Digest abc"), None);
        assert_eq!(token_from_authorization("Basic !!!"), None);
    }
}
