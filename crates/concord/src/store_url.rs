//! The store URL: which backend, where. This is the one place that knows every backend.
//!
//! Parsing is separate from opening so that a malformed URL is reported (exit code 2)
//! without touching the disk or the network, and so that the URL can be shown back to the
//! user with any password hidden.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use concord_core::{EventStore, MemoryStore};

/// The forms `--store` accepts, for error messages.
pub const ACCEPTED_FORMS: &str = "a directory path, embedded:PATH, file:PATH, redis://host:port/db[?prefix=P], \
     rediss://host:port/db[?prefix=P], postgres://user:pass@host:port[,host:port]/db[?schema=S&target_session_attrs=read-write], http://host:port (a concord server; token from CONCORD_TOKEN), memory: or, for concord bench only, grpc://host:port";

/// A parsed `--store` value.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StoreUrl {
    /// The embedded durable store in this directory.
    Embedded(PathBuf),
    /// A Redis server: the URL as given (`redis://` or `rediss://`) less the `prefix`
    /// parameter, and that key prefix (default `concord`).
    Redis {
        /// The URL the Redis client connects to.
        url: String,
        /// The key prefix, from `?prefix=`.
        prefix: Option<String>,
    },
    /// A PostgreSQL database: the URL as given (libpq's form, `?schema=` for Concord's
    /// schema, several hosts with `target_session_attrs=read-write` for failover).
    Postgres(String),
    /// A `concord serve` server, through the HTTP client; the bearer token, if any, comes
    /// from the `CONCORD_TOKEN` environment variable (never from the URL, so it does not
    /// end up in shell history or process lists).
    Http(String),
    /// A server speaking KurrentDB's client gRPC protocol (`concord serve`, or KurrentDB
    /// itself), plaintext, by its `host:port`: only a target of `concord bench`, which
    /// drives it through KurrentDB's official client.
    Grpc(String),
    /// An empty in-memory store that lives as long as the process.
    Memory,
}

/// A `--store` value that names no backend.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("invalid store URL {url:?}: {reason}; use {ACCEPTED_FORMS}")]
pub struct StoreUrlError {
    url: String,
    reason: &'static str,
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| StoreUrlError {
            url: url.to_owned(),
            reason,
        };
        if url.is_empty() {
            return Err(invalid("it is empty"));
        }
        if looks_like_host_and_port(url) {
            return Err(invalid(
                "it looks like a server address without a scheme (a directory of that name would be created); for a concord server write http://HOST:PORT, for Redis redis://HOST:PORT",
            ));
        }
        let Some((scheme, rest)) = split_scheme(url) else {
            return Ok(StoreUrl::Embedded(PathBuf::from(url)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "embedded" | "file" => {
                // `file:///abs` and `file://./rel` as well as `file:/abs` and `file:rel`.
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(invalid("it names no directory"));
                }
                Ok(StoreUrl::Embedded(PathBuf::from(path)))
            }
            "memory" => {
                if rest.is_empty() {
                    Ok(StoreUrl::Memory)
                } else {
                    Err(invalid("memory: takes nothing after the colon"))
                }
            }
            "redis" | "rediss" => {
                let authority = rest
                    .strip_prefix("//")
                    .ok_or_else(|| invalid("a redis URL starts with redis://"))?;
                if authority.is_empty() || authority.starts_with('/') || authority.starts_with('?')
                {
                    return Err(invalid("it names no host"));
                }
                let (url, prefix) = split_prefix(url);
                if prefix.as_deref() == Some("") {
                    return Err(invalid("the prefix parameter is empty"));
                }
                Ok(StoreUrl::Redis { url, prefix })
            }
            "postgres" | "postgresql" => {
                let authority = rest
                    .strip_prefix("//")
                    .ok_or_else(|| invalid("a postgres URL starts with postgres://"))?;
                if authority.is_empty() || authority.starts_with('/') || authority.starts_with('?')
                {
                    return Err(invalid("it names no host"));
                }
                Ok(StoreUrl::Postgres(url.to_owned()))
            }
            "http" => {
                let authority = rest
                    .strip_prefix("//")
                    .ok_or_else(|| invalid("a server URL starts with http://"))?;
                if authority.is_empty() || authority.starts_with('/') {
                    return Err(invalid("it names no host"));
                }
                Ok(StoreUrl::Http(url.to_owned()))
            }
            "grpc" => {
                let authority = rest
                    .strip_prefix("//")
                    .ok_or_else(|| invalid("a gRPC server URL starts with grpc://"))?
                    .trim_end_matches('/');
                if authority.is_empty() || authority.contains(['/', '?', '@']) {
                    return Err(invalid(
                        "a gRPC server URL is grpc://HOST:PORT, nothing more",
                    ));
                }
                Ok(StoreUrl::Grpc(authority.to_owned()))
            }
            "https" => Err(invalid(
                "https is not supported by the client yet; put a TLS-terminating proxy in front and use http:// on loopback",
            )),
            _ => Err(invalid("unknown scheme")),
        }
    }
}

/// Whether `url` is `host:port` (`127.0.0.1:2113`, `localhost:2113`, `[::1]:2113`): a
/// server meant without its scheme, never a directory anyone would name so.
fn looks_like_host_and_port(url: &str) -> bool {
    let Some((host, port)) = url.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
}

/// `scheme:rest` when `url` starts with a URL scheme (a letter, then letters, digits, `+`,
/// `-` or `.`). A single letter is not taken for a scheme, so `C:\data` stays a path.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && scheme.len() > 1
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some((scheme, rest))
}

/// Takes the `prefix=` parameter out of a Redis URL's query; the Redis client gets the rest.
fn split_prefix(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut prefix = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("prefix=") {
            Some(p) => {
                prefix = Some(p.to_owned());
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, prefix)
}

impl fmt::Display for StoreUrl {
    /// The URL as the user gave it, with a Redis password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Embedded(path) => write!(f, "{}", path.display()),
            StoreUrl::Redis { url, prefix: None } => f.write_str(&redact(url)),
            StoreUrl::Redis {
                url,
                prefix: Some(p),
            } => write!(f, "{} (key prefix {p})", redact(url)),
            StoreUrl::Http(url) | StoreUrl::Postgres(url) => f.write_str(&redact(url)),
            StoreUrl::Memory => f.write_str("memory:"),
            StoreUrl::Grpc(authority) => write!(f, "grpc://{authority}"),
        }
    }
}

/// Hides the password of `scheme://user:password@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

impl StoreUrl {
    /// For a command that only reads: an embedded store must already exist (opening one
    /// creates its directory, which a read must not do).
    ///
    /// # Errors
    /// The directory holds no store.
    pub fn ensure_exists(&self) -> anyhow::Result<()> {
        if let StoreUrl::Embedded(dir) = self
            && !dir.join(concord_embedded::DATA_FILE).exists()
        {
            anyhow::bail!(
                "there is no store in {} (nothing was ever appended there); append to it first, or point --store (or CONCORD_STORE) at a store: a directory that holds one, http://HOST:PORT or redis://HOST:PORT",
                dir.display()
            );
        }
        Ok(())
    }

    /// The client of the server `url` names, once the server has answered: with the
    /// token from `CONCORD_TOKEN`, and an error that says what to do when it refuses.
    ///
    /// # Errors
    /// An unusable URL or token; the server unreachable (named), or refusing the token.
    pub async fn connect_http(&self, url: &str) -> anyhow::Result<concord_client::ConcordClient> {
        let token = std::env::var("CONCORD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let client = concord_client::ConcordClient::new(url, token)
            .with_context(|| format!("cannot use the server at {self}"))?;
        // Fail now, with the address, rather than at the first command.
        if let Err(e) = client.head().await {
            return Err(match concord_client::refused_status(&e) {
                Some(401) => anyhow::Error::new(e).context(format!(
                    "unauthorized: the server at {self} needs a token; set CONCORD_TOKEN to one of its tokens"
                )),
                Some(403) => anyhow::Error::new(e).context(format!(
                    "forbidden: the token in CONCORD_TOKEN may not read from the server at {self}"
                )),
                _ => anyhow::Error::new(e)
                    .context(format!("cannot reach the concord server at {self}")),
            });
        }
        Ok(client)
    }

    /// Opens the store this URL names.
    ///
    /// # Errors
    /// The backend's error, with the path or URL named.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn EventStore>> {
        match self {
            StoreUrl::Memory => Ok(Arc::new(MemoryStore::new())),
            StoreUrl::Grpc(_) => anyhow::bail!(
                "{self} is a target of `concord bench append|read|catchup` only; other commands take the same server as http://HOST:PORT"
            ),
            StoreUrl::Embedded(path) => {
                let dir = path.clone();
                // Opening recovers the log, which is blocking file I/O.
                let store =
                    tokio::task::spawn_blocking(move || concord_embedded::EmbeddedStore::open(dir))
                        .await
                        .context("opening the embedded store was interrupted")?
                        .with_context(|| {
                            format!("cannot open the embedded store in {}", path.display())
                        })?;
                Ok(Arc::new(store))
            }
            StoreUrl::Http(url) => Ok(Arc::new(self.connect_http(url).await?)),
            StoreUrl::Postgres(url) => {
                let store = concord_postgres::PostgresStore::connect(url)
                    .await
                    .with_context(|| format!("cannot open the postgres store at {self}"))?;
                Ok(Arc::new(store))
            }
            StoreUrl::Redis { url, prefix } => {
                let mut options = concord_redis::RedisOptions::default();
                if let Some(prefix) = prefix {
                    options.key_prefix.clone_from(prefix);
                }
                let store = concord_redis::RedisStore::connect_with(url, options)
                    .await
                    .with_context(|| format!("cannot connect to redis at {self}"))?;
                Ok(Arc::new(store))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StoreUrl, StoreUrlError> {
        s.parse()
    }

    #[test]
    fn every_accepted_form_names_its_backend() {
        assert_eq!(
            parse("./concord-data").unwrap(),
            StoreUrl::Embedded("./concord-data".into())
        );
        assert_eq!(
            parse("/var/lib/concord").unwrap(),
            StoreUrl::Embedded("/var/lib/concord".into())
        );
        assert_eq!(
            parse("embedded:/tmp/x").unwrap(),
            StoreUrl::Embedded("/tmp/x".into())
        );
        assert_eq!(
            parse("file:data").unwrap(),
            StoreUrl::Embedded("data".into())
        );
        assert_eq!(
            parse("file:///tmp/x").unwrap(),
            StoreUrl::Embedded("/tmp/x".into())
        );
        assert_eq!(
            parse("C:\\data").unwrap(),
            StoreUrl::Embedded("C:\\data".into())
        );
        assert_eq!(parse("memory:").unwrap(), StoreUrl::Memory);
        assert_eq!(
            parse("http://127.0.0.1:2113").unwrap(),
            StoreUrl::Http("http://127.0.0.1:2113".into())
        );
        assert_eq!(
            parse("grpc://127.0.0.1:2113").unwrap(),
            StoreUrl::Grpc("127.0.0.1:2113".into())
        );
        assert!(parse("grpc://").is_err());
        assert!(parse("grpc://h:1/x").is_err());
        assert!(parse("https://h:1").is_err());
        assert!(parse("http:x").is_err());
        let redis = |url: &str, prefix: Option<&str>| StoreUrl::Redis {
            url: url.into(),
            prefix: prefix.map(Into::into),
        };
        assert_eq!(
            parse("redis://127.0.0.1:6379").unwrap(),
            redis("redis://127.0.0.1:6379", None)
        );
        assert_eq!(
            parse("rediss://h:1/2").unwrap(),
            redis("rediss://h:1/2", None)
        );
        assert_eq!(
            parse("redis://h:1/0?prefix=app").unwrap(),
            redis("redis://h:1/0", Some("app"))
        );
        assert_eq!(
            parse(
                "postgres://u:p@h1:5432,h2:5433/db?schema=orders&target_session_attrs=read-write"
            )
            .unwrap(),
            StoreUrl::Postgres(
                "postgres://u:p@h1:5432,h2:5433/db?schema=orders&target_session_attrs=read-write"
                    .into()
            )
        );
        assert_eq!(
            parse("redis://h:1/0?protocol=resp3&prefix=app").unwrap(),
            redis("redis://h:1/0?protocol=resp3", Some("app"))
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_accepted_forms() {
        for bad in [
            "",
            "ftp://x",
            "postgres:/localhost/db",
            "postgres://",
            "redis:",
            "redis://",
            "redis://?prefix=a",
            "redis://h?prefix=",
            "memory:x",
            "file:",
            "file://",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(ACCEPTED_FORMS), "{bad}: {err}");
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        let url = parse("redis://ann:s3cret@localhost:6379/0").unwrap();
        assert_eq!(url.to_string(), "redis://ann:***@localhost:6379/0");
        let url = parse("postgres://ann:s3cret@db1:5432,db2:5432/app?schema=orders").unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://ann:***@db1:5432,db2:5432/app?schema=orders"
        );
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
