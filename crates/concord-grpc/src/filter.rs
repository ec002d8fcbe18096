//! The server-side filters of `$all` reads and subscriptions: a stream-name or event-type
//! expression, a regex (the clients send .NET-flavoured ones with look-ahead, such as the
//! default `^(?!(\$.+$|…))`, so `fancy-regex`) or a list of prefixes.

use concord_core::RecordedEvent;
use fancy_regex::Regex;

use crate::error::GrpcError;
use crate::proto::event_store::client::streams::read_req::options::{
    FilterOptions, filter_options,
};

/// What a filter looks at.
#[derive(Clone, Copy, Debug)]
enum Field {
    Stream,
    EventType,
}

#[derive(Debug)]
enum Rule {
    Regex(Regex),
    Prefixes(Vec<String>),
}

/// A compiled filter, with how often a subscription sends a checkpoint.
#[derive(Debug)]
pub(crate) struct EventFilter {
    field: Field,
    rule: Rule,
    /// Send a checkpoint after this many events considered (window × multiplier).
    pub(crate) checkpoint_every: u64,
}

/// The longest regex accepted, in bytes: compiling is the caller's cost otherwise.
const REGEX_BYTES_MAX: usize = 4096;

impl EventFilter {
    pub(crate) fn new(options: &FilterOptions) -> Result<Self, GrpcError> {
        let (field, expression) = match &options.filter {
            Some(filter_options::Filter::StreamIdentifier(e)) => (Field::Stream, e),
            Some(filter_options::Filter::EventType(e)) => (Field::EventType, e),
            None => {
                return Err(GrpcError::Invalid(
                    "a filter needs a stream_identifier or event_type expression".to_owned(),
                ));
            }
        };
        let rule = if !expression.regex.is_empty() {
            if expression.regex.len() > REGEX_BYTES_MAX {
                return Err(GrpcError::Invalid(format!(
                    "the filter's regex is longer than {REGEX_BYTES_MAX} bytes"
                )));
            }
            let regex = Regex::new(&expression.regex).map_err(|e| {
                GrpcError::Invalid(format!("the filter's regex does not compile: {e}"))
            })?;
            Rule::Regex(regex)
        } else if !expression.prefix.is_empty() {
            Rule::Prefixes(expression.prefix.clone())
        } else {
            return Err(GrpcError::Invalid(
                "a filter expression needs a regex or prefixes".to_owned(),
            ));
        };
        let window = match options.window {
            Some(filter_options::Window::Max(max)) => u64::from(max.max(1)),
            _ => 1,
        };
        let multiplier = u64::from(options.checkpoint_interval_multiplier.max(1));
        Ok(EventFilter {
            field,
            rule,
            checkpoint_every: window.saturating_mul(multiplier),
        })
    }

    /// Whether `event` passes. A regex that cannot decide (backtracking limit) excludes.
    pub(crate) fn matches(&self, event: &RecordedEvent) -> bool {
        let text = match self.field {
            Field::Stream => event.stream.as_str(),
            Field::EventType => event.event_type.as_str(),
        };
        match &self.rule {
            Rule::Regex(regex) => regex.is_match(text).unwrap_or(false),
            Rule::Prefixes(prefixes) => prefixes.iter().any(|p| text.starts_with(p.as_str())),
        }
    }
}
