//! The store URL: libpq's `postgres://user:pass@host:port/db` (with its multi-host form and
//! `target_session_attrs`) plus Concord's own `schema=NAME`, which libpq does not know and
//! is therefore taken out before the rest is handed to the driver.

use std::time::Duration;

use crate::error::PostgresError;

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "concord";

/// A parsed store URL.
#[derive(Clone, Debug)]
pub(crate) struct StoreUrl {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) schema: String,
    /// `host:port,...` for messages (never the password).
    pub(crate) hosts: String,
}

/// Every statement is bounded; a stuck server is an error, not a hang.
pub(crate) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `name` is a schema name Concord accepts: lower-case ASCII letters, digits and
/// `_`, not starting with a digit, at most 63 bytes (so it never needs quoting).
pub(crate) fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// The driver's settings for a store URL (Concord's `schema=` taken out, its timeouts
/// added) and the schema it names: for tools that talk to the same database beside the
/// store, such as `concord bench`'s PostgreSQL baselines.
///
/// # Errors
/// [`PostgresError::Url`] for a URL the store would refuse.
pub fn connection_config(url: &str) -> Result<(tokio_postgres::Config, String), PostgresError> {
    parse(url).map(|u| (u.config, u.schema))
}

pub(crate) fn parse(url: &str) -> Result<StoreUrl, PostgresError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut schema = DEFAULT_SCHEMA.to_owned();
    let mut rest: Vec<&str> = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("schema", value)) => schema = value.to_owned(),
            _ if !pair.is_empty() => rest.push(pair),
            _ => {}
        }
    }
    if !valid_schema(&schema) {
        return Err(PostgresError::Url(format!(
            "schema {schema:?} must be 1-63 lower-case ASCII letters, digits or `_`, not \
             starting with a digit"
        )));
    }
    let libpq = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: tokio_postgres::Config = libpq
        .parse()
        .map_err(|e| PostgresError::Url(format!("{e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let timeout_ms = STATEMENT_TIMEOUT.as_millis();
    let options = config.get_options().unwrap_or_default().to_owned();
    // READ COMMITTED whatever the database's or the role's default: each statement of the
    // write functions, a lone append's called in autocommit, must take its snapshot after
    // the locks before it are held (under REPEATABLE READ a function's statements would
    // share the snapshot of its call, taken before its locks).
    config.options(format!(
        "{options} -c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms} \
         -c default_transaction_isolation=read\\ committed"
    ).trim());
    if config.get_application_name().is_none() {
        config.application_name("concord");
    }
    let hosts = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect::<Vec<_>>()
        .join(",");
    Ok(StoreUrl {
        config,
        schema,
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_taken_out_and_libpq_options_stay() {
        let url = parse(
            "postgres://u:secret@a:5433,b:5434/db?schema=orders&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(url.schema, "orders");
        assert_eq!(url.hosts, "a:5433,b:5434");
        assert_eq!(
            url.config.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        assert_eq!(url.config.get_dbname(), Some("db"));
    }

    #[test]
    fn a_schema_that_would_need_quoting_is_refused() {
        assert_eq!(parse("postgres://h/db").unwrap().schema, "concord");
        for bad in ["Orders", "a-b", "1a", "a;drop", ""] {
            assert!(
                parse(&format!("postgres://h/db?schema={bad}")).is_err(),
                "{bad}"
            );
        }
    }
}
