//! `ServerConfig`: what `concord serve` is told, with API.md's defaults.
//!
//! `validate` is the one place that refuses an unsafe configuration: an address other than
//! loopback with no tokens, unless the operator said `insecure_open`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use concord_core::Limits;
use concord_projection::ProjectionHost;

use crate::auth::Tokens;
use crate::error::ServerError;

/// Where the tokens come from.
#[derive(Clone, Debug)]
pub enum TokensSource {
    /// A TOML file (format in `docs/http-api.md`), read by [`ServerConfig::validate`].
    File(PathBuf),
    /// Tokens already parsed (tests, embedding).
    Parsed(Tokens),
}

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The address the binary binds (default `127.0.0.1:2113`). [`crate::serve`] checks
    /// the listener's actual address, whatever this says.
    pub addr: SocketAddr,
    /// Size and count limits; `request_bytes_max` bounds request bodies and
    /// `read_limit_max` bounds `limit` parameters.
    pub limits: Limits,
    /// Access tokens; `None` means the server is open.
    pub tokens: Option<TokensSource>,
    /// Allow an open server on an address other than loopback.
    pub insecure_open: bool,
    /// How often an idle subscription gets a comment line (default 15 s).
    pub keep_alive: Duration,
    /// How long `GET /head?after=p` waits for the head to pass `p` (default 10 s).
    pub head_long_poll: Duration,
    /// The longest `wait_ms` a consumer group's poll may ask for (default 60 s).
    pub group_wait_max: Duration,
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may stay idle between requests, before the server closes it (default
    /// 10 s). A connection that sends nothing, or headers byte by byte, is not kept open.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body once its headers are in
    /// (default 60 s); past it the answer is 408 `request-timeout` and the connection
    /// closes.
    pub body_timeout: Duration,
    /// The read side served under `/projections` (default none: `GET /projections` lists
    /// nothing and every projection is unknown). The caller starts and shuts down the
    /// host; the server only reads it and starts rebuilds.
    pub projections: Option<Arc<ProjectionHost>>,
    /// A second address that answers KurrentDB's gRPC protocol only (default none: gRPC is
    /// served on `addr` beside the HTTP API, told apart by `content-type: application/grpc`).
    pub grpc_addr: Option<SocketAddr>,
    /// How often `serve` scavenges the store (erasing what deletes and retention hide);
    /// `None`: only on demand (`POST /admin/scavenge`, `concord scavenge`). Default: hourly.
    pub scavenge_every: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 2113)),
            limits: Limits::default(),
            tokens: None,
            insecure_open: false,
            keep_alive: Duration::from_secs(15),
            head_long_poll: Duration::from_secs(10),
            group_wait_max: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            projections: None,
            grpc_addr: None,
            scavenge_every: Some(Duration::from_secs(3600)),
        }
    }
}

impl ServerConfig {
    /// Checks the configuration for `self.addr` and loads the tokens.
    ///
    /// # Errors
    /// [`ServerError::OpenOnNonLoopback`] when the address is not loopback, no tokens are
    /// configured and `insecure_open` is false; [`ServerError::Tokens`] when the tokens file
    /// cannot be read or parsed; [`ServerError::Config`] for a limit of zero.
    pub fn validate(&self) -> Result<Option<Tokens>, ServerError> {
        self.validate_for(self.addr)
    }

    /// As [`ServerConfig::validate`], for the address actually bound.
    ///
    /// # Errors
    /// As [`ServerConfig::validate`].
    pub fn validate_for(&self, addr: SocketAddr) -> Result<Option<Tokens>, ServerError> {
        let l = &self.limits;
        if l.event_bytes_max == 0
            || l.request_bytes_max == 0
            || l.events_per_append_max == 0
            || l.read_limit_max == 0
        {
            return Err(ServerError::Config(
                "every limit must be at least 1".to_owned(),
            ));
        }
        if self.keep_alive.is_zero() {
            return Err(ServerError::Config(
                "the keep-alive interval must be longer than zero".to_owned(),
            ));
        }
        if self.header_timeout.is_zero() || self.body_timeout.is_zero() {
            return Err(ServerError::Config(
                "the header and body timeouts must be longer than zero".to_owned(),
            ));
        }
        let tokens = match &self.tokens {
            None => None,
            Some(TokensSource::Parsed(t)) => Some(t.clone()),
            Some(TokensSource::File(path)) => Some(Tokens::load(path)?),
        };
        for addr in std::iter::once(addr).chain(self.grpc_addr) {
            if tokens.is_none() && !addr.ip().is_loopback() && !self.insecure_open {
                return Err(ServerError::OpenOnNonLoopback(addr));
            }
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_open_server_may_only_bind_loopback_unless_told_otherwise() {
        let public: SocketAddr = "0.0.0.0:2113".parse().unwrap();
        let config = ServerConfig {
            addr: public,
            ..ServerConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ServerError::OpenOnNonLoopback(_))
        ));
        let open = ServerConfig {
            insecure_open: true,
            ..config.clone()
        };
        assert!(open.validate().unwrap().is_none());
        let tokens = Tokens::parse("[[token]]\ntoken = \"t\"\nread = [\"*\"]\n").unwrap();
        let guarded = ServerConfig {
            tokens: Some(TokensSource::Parsed(tokens)),
            ..config
        };
        assert!(guarded.validate().unwrap().is_some());
        assert!(ServerConfig::default().validate().unwrap().is_none());
        let v6: SocketAddr = "[::1]:2113".parse().unwrap();
        assert!(
            ServerConfig {
                addr: v6,
                ..ServerConfig::default()
            }
            .validate()
            .is_ok()
        );
    }
}
