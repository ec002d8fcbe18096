//! Subscriptions over Server-Sent Events, with reconnection.
//!
//! The subscription remembers the `id:` of the last event it yielded. When the connection
//! drops it reconnects with `Last-Event-ID`, so the server resumes right after that event:
//! no gap and no duplicate across reconnects. After [`RECONNECTS_MAX`] failed attempts in
//! a row it yields `Unavailable` and ends, as every subscription ends after an error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use concord_api::Problem;
use concord_core::{RecordedEvent, StoreError, Subscription};
use futures::stream::{BoxStream, StreamExt};
use http_body_util::BodyDataStream;
use url::Url;

use crate::error::from_problem;
use crate::{BACKEND, ConcordClient};

/// Failed connection attempts in a row before the subscription gives up.
pub const RECONNECTS_MAX: u32 = 5;
/// The first pause before reconnecting; it doubles with each failed attempt.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);

/// One dispatched SSE message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) event: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

/// An incremental `text/event-stream` parser (the WHATWG rules Concord's server needs:
/// `data`, `id`, `event`, comments; lines end with `\n`, `\r\n` or `\r`).
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buffer: BytesMut,
    current: Message,
    has_data: bool,
}

impl Parser {
    pub(crate) fn push(&mut self, chunk: &[u8], out: &mut VecDeque<Message>) {
        self.buffer.extend_from_slice(chunk);
        loop {
            let Some(end) = self.buffer.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                return;
            };
            // A `\r` at the very end may be the first half of `\r\n`: wait for more.
            let terminator = match self.buffer.get(end) {
                Some(b'\r') => match self.buffer.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    None => return,
                },
                _ => 1,
            };
            let line = self.buffer.split_to(end);
            self.buffer.advance(terminator);
            self.line(&String::from_utf8_lossy(&line), out);
        }
    }

    fn line(&mut self, line: &str, out: &mut VecDeque<Message>) {
        if line.is_empty() {
            let message = std::mem::take(&mut self.current);
            if std::mem::take(&mut self.has_data) {
                out.push_back(message);
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.current.id = Some(value.to_owned()),
            "event" => self.current.event = Some(value.to_owned()),
            _ => {}
        }
    }
}

struct State {
    client: Arc<ConcordClient>,
    url: Url,
    last_id: Option<u64>,
    body: Option<BoxStream<'static, Result<bytes::Bytes, hyper::Error>>>,
    parser: Parser,
    ready: VecDeque<Message>,
    failures: u32,
    done: bool,
}

enum Step {
    Event(RecordedEvent),
    Fail(StoreError),
}

impl State {
    async fn next(&mut self) -> Option<Step> {
        loop {
            if self.done {
                return None;
            }
            if let Some(message) = self.ready.pop_front() {
                if message.event.as_deref() == Some("error") {
                    let err = match serde_json::from_str::<Problem>(&message.data) {
                        Ok(p) => StoreError::from(from_problem(p.status, p)),
                        Err(_) => StoreError::Unavailable {
                            backend: BACKEND,
                            message: "the server ended the subscription with an error".to_owned(),
                            source: None,
                        },
                    };
                    return Some(Step::Fail(err));
                }
                let event: RecordedEvent = match serde_json::from_str(&message.data) {
                    Ok(e) => e,
                    Err(e) => {
                        return Some(Step::Fail(StoreError::backend(
                            BACKEND,
                            "the server sent an unreadable event",
                            e,
                        )));
                    }
                };
                if let Some(id) = message.id.as_deref().and_then(|i| i.parse::<u64>().ok()) {
                    self.last_id = Some(id);
                }
                self.failures = 0;
                return Some(Step::Event(event));
            }
            let Some(body) = self.body.as_mut() else {
                if self.failures > 0 {
                    let pause =
                        BACKOFF_FIRST.saturating_mul(1 << self.failures.min(6).saturating_sub(1));
                    tokio::time::sleep(pause).await;
                }
                match self.client.open_sse(&self.url, self.last_id).await {
                    Ok(response) => {
                        self.body = Some(BodyDataStream::new(response.into_body()).boxed());
                        self.parser = Parser::default();
                    }
                    Err(e @ StoreError::Unavailable { .. }) => {
                        self.failures += 1;
                        if self.failures > RECONNECTS_MAX {
                            return Some(Step::Fail(e));
                        }
                    }
                    Err(e) => return Some(Step::Fail(e)),
                }
                continue;
            };
            match body.next().await {
                Some(Ok(chunk)) => self.parser.push(&chunk, &mut self.ready),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "subscription connection broke; reconnecting");
                    self.body = None;
                    self.failures += 1;
                }
                None => {
                    tracing::debug!("subscription connection closed by the server; reconnecting");
                    self.body = None;
                    self.failures += 1;
                }
            }
        }
    }
}

/// The subscription at `url` (which carries `from` and any filter).
pub(crate) fn subscribe(client: Arc<ConcordClient>, url: Url) -> Subscription {
    let state = State {
        client,
        url,
        last_id: None,
        body: None,
        parser: Parser::default(),
        ready: VecDeque::new(),
        failures: 0,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        match s.next().await? {
            Step::Event(e) => Some((Ok(e), s)),
            Step::Fail(err) => {
                s.done = true;
                Some((Err(err), s))
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_parser_joins_data_lines_and_skips_comments_across_chunks() {
        let mut p = Parser::default();
        let mut out = VecDeque::new();
        p.push(
            b": keep-alive\n\nid: 7\r\ndata: {\"a\":\ndata:  1}\r",
            &mut out,
        );
        assert!(out.is_empty());
        p.push(b"\n\r\nevent: error\ndata: x\n\n", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            Message {
                event: None,
                id: Some("7".into()),
                data: "{\"a\":\n 1}".into()
            }
        );
        assert_eq!(out[1].event.as_deref(), Some("error"));
    }
}
