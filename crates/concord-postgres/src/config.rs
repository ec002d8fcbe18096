//! The store URL: libpq's `postgres://user:pass@host:port/db` (with its multi-host form and
//! `target_session_attrs`) plus Concord's own `schema=NAME`, which libpq does not know and
//! is therefore taken out before the rest is handed to the driver. Every session gets 30 s
//! statement and idle-in-transaction timeouts unless the URL's libpq `options` set them.

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

/// Every statement is bounded; a stuck server is an error, not a hang. The default of
/// `statement_timeout` and `idle_in_transaction_session_timeout`: a store URL whose libpq
/// `options` set either sets it instead (`session_options`).
pub(crate) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `application_name` of the store's sessions when the URL gives none, as
/// `pg_stat_activity` shows them; the LISTEN session's is [`LISTENER_APPLICATION_NAME`].
pub(crate) const APPLICATION_NAME: &str = "concord";

/// The LISTEN session's `application_name` (when the URL gives none): an idle session
/// that every commit wakes, told apart from the pool's so an operator sees which it is.
pub(crate) const LISTENER_APPLICATION_NAME: &str = "concord-listener";

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

/// The `options` every session starts with, around `url_options` (the URL's own): PostgreSQL
/// applies `-c` settings in order and the last one of a name wins, so the 30 s timeouts go
/// first (a user's `statement_timeout` or `idle_in_transaction_session_timeout` in the URL
/// replaces them, whichever way libpq lets it be spelled) and the isolation level goes last.
/// READ COMMITTED whatever the database's, the role's or the URL's default: each statement
/// of the write functions, a lone append's called in autocommit, must take its snapshot
/// after the locks before it are held (under REPEATABLE READ a function's statements would
/// share the snapshot of its call, taken before its locks).
fn session_options(url_options: &str) -> String {
    let timeout_ms = STATEMENT_TIMEOUT.as_millis();
    format!(
        "-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms} \
         {url_options} -c default_transaction_isolation=read\\ committed"
    )
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
    config.options(session_options(config.get_options().unwrap_or_default()));
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
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

    /// What a session's `options` set `name` to: the last `-c name=value` (the only spelling
    /// these options use), as PostgreSQL applies them in order.
    fn effective<'a>(options: &'a str, name: &str) -> Option<&'a str> {
        let prefix = format!("{name}=");
        options
            .split(' ')
            .filter_map(|word| word.strip_prefix(prefix.as_str()))
            .next_back()
    }

    #[test]
    fn timeouts_the_url_gives_in_its_options_win_over_the_defaults() {
        let url = parse(
            "postgres://h/db?schema=orders&options=-c%20statement_timeout%3D2000\
             %20-c%20default_transaction_isolation%3Dserializable",
        )
        .unwrap();
        let options = url.config.get_options().unwrap();
        assert_eq!(effective(options, "statement_timeout"), Some("2000"));
        assert_eq!(
            effective(options, "idle_in_transaction_session_timeout"),
            Some("30000")
        );
        // The isolation level the write path needs stays, whatever the URL asks for.
        assert!(options.ends_with("-c default_transaction_isolation=read\\ committed"));

        let url = parse("postgres://h/db?options=-c%20idle_in_transaction_session_timeout%3D500")
            .unwrap();
        let options = url.config.get_options().unwrap();
        assert_eq!(effective(options, "statement_timeout"), Some("30000"));
        assert_eq!(
            effective(options, "idle_in_transaction_session_timeout"),
            Some("500")
        );
    }

    #[test]
    fn without_options_in_the_url_every_session_gets_the_30_s_timeouts() {
        let url = parse("postgres://h/db").unwrap();
        let options = url.config.get_options().unwrap();
        assert_eq!(effective(options, "statement_timeout"), Some("30000"));
        assert_eq!(
            effective(options, "idle_in_transaction_session_timeout"),
            Some("30000")
        );
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
