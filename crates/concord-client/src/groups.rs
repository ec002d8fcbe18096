//! Consumer groups from the client's side: the `/groups` endpoints as methods of
//! [`ConcordClient`], and [`Consumer`], a worker loop that polls a group, hands each
//! message to a closure, and acks what it handled (nacks what it failed).
//!
//! Errors are [`GroupError`]s: `group-not-found` and `group-conflict` come back as their
//! own variants, everything else as the [`StoreError`] it stands for (a dropped
//! connection is [`StoreError::Unavailable`]).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use concord_api::{
    AckBody, AckResult, GroupList, GroupStatus, NackBody, NackResult, ParkedEvent, ParkedList,
    PollBody, PollResult, ReplayResult,
};
use concord_core::StoreError;
use concord_groups::{
    ConsumerName, GroupError, GroupInfo, GroupName, GroupSpec, Message, NackAction, Upserted,
};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{BACKEND, ConcordClient, JSON, Reply};

fn encode(body: &impl Serialize) -> Result<Vec<u8>, GroupError> {
    serde_json::to_vec(body)
        .map_err(|e| StoreError::backend(BACKEND, "cannot encode the request", e).into())
}

impl Reply {
    /// The body as `T` when the answer is a success, else the group error it stands for.
    fn group<T: DeserializeOwned>(&self) -> Result<T, GroupError> {
        if self.status.is_success() {
            Ok(self.json()?)
        } else {
            Err(self.error().into())
        }
    }
}

impl ConcordClient {
    async fn group_request(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, GroupError> {
        let url = self.url(segments);
        let mut headers = HeaderMap::with_capacity(1);
        if body.is_some() {
            headers.insert(CONTENT_TYPE, JSON);
        }
        Ok(self
            .exchange(method, &url, headers, Bytes::from(body.unwrap_or_default()))
            .await?)
    }

    /// Creates the group, or changes its settings; with the group's status after.
    ///
    /// # Errors
    /// [`GroupError::Invalid`]; [`GroupError::Fixed`] when the group exists with another
    /// `source` or `from`; [`GroupError::Store`] for the rest.
    pub async fn put_group(
        &self,
        group: &GroupName,
        spec: &GroupSpec,
    ) -> Result<(Upserted, GroupInfo), GroupError> {
        let reply = self
            .group_request(
                Method::PUT,
                &["groups", group.as_str()],
                Some(encode(spec)?),
            )
            .await?;
        let info = reply.group::<GroupInfo>()?;
        let upserted = if reply.status == StatusCode::CREATED {
            Upserted::Created
        } else {
            Upserted::Updated
        };
        Ok((upserted, info))
    }

    /// Every group (that this client's token may read the source of).
    ///
    /// # Errors
    /// [`GroupError::Store`].
    pub async fn groups(&self) -> Result<Vec<GroupInfo>, GroupError> {
        let reply = self.group_request(Method::GET, &["groups"], None).await?;
        Ok(reply.group::<GroupList>()?.groups)
    }

    /// One group's settings, counts and deliveries in flight.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; [`GroupError::Store`].
    pub async fn group(&self, group: &GroupName) -> Result<GroupStatus, GroupError> {
        self.group_request(Method::GET, &["groups", group.as_str()], None)
            .await?
            .group()
    }

    /// Deletes the group and its state.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; [`GroupError::Store`].
    pub async fn delete_group(&self, group: &GroupName) -> Result<(), GroupError> {
        let reply = self
            .group_request(Method::DELETE, &["groups", group.as_str()], None)
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(reply.error().into())
        }
    }

    /// Takes up to `max` messages for `consumer`, waiting up to `wait` for at least one.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; [`GroupError::Invalid`] (`max` outside 1–1000, `wait`
    /// beyond the server's bound); [`GroupError::Store`].
    pub async fn poll(
        &self,
        group: &GroupName,
        consumer: &ConsumerName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, GroupError> {
        let body = PollBody {
            consumer: consumer.clone(),
            max: Some(max),
            wait_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        };
        let reply = self
            .group_request(
                Method::POST,
                &["groups", group.as_str(), "poll"],
                Some(encode(&body)?),
            )
            .await?;
        Ok(reply
            .group::<PollResult>()?
            .messages
            .into_iter()
            .map(|m| Message {
                ack_id: m.ack_id,
                delivery: m.delivery,
                event: m.event,
            })
            .collect())
    }

    /// Acks deliveries; returns how many were live (the rest were ignored).
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; [`GroupError::Store`].
    pub async fn ack(&self, group: &GroupName, ack_ids: &[String]) -> Result<usize, GroupError> {
        let body = AckBody {
            ack_ids: ack_ids.to_vec(),
        };
        let reply = self
            .group_request(
                Method::POST,
                &["groups", group.as_str(), "ack"],
                Some(encode(&body)?),
            )
            .await?;
        Ok(reply.group::<AckResult>()?.acked)
    }

    /// Gives deliveries back with `action`; returns how many were live.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; [`GroupError::Store`].
    pub async fn nack(
        &self,
        group: &GroupName,
        ack_ids: &[String],
        action: NackAction,
    ) -> Result<usize, GroupError> {
        let body = NackBody {
            ack_ids: ack_ids.to_vec(),
            action,
        };
        let reply = self
            .group_request(
                Method::POST,
                &["groups", group.as_str(), "nack"],
                Some(encode(&body)?),
            )
            .await?;
        Ok(reply.group::<NackResult>()?.nacked)
    }

    /// The group's parked events, at most `limit`.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; [`GroupError::Store`].
    pub async fn parked(
        &self,
        group: &GroupName,
        limit: usize,
    ) -> Result<Vec<ParkedEvent>, GroupError> {
        let mut url = self.url(&["groups", group.as_str(), "parked"]);
        url.query_pairs_mut()
            .append_pair("limit", &self.clamp(limit).max(1).to_string());
        let reply = self
            .exchange(Method::GET, &url, HeaderMap::new(), Bytes::new())
            .await?;
        Ok(reply.group::<ParkedList>()?.parked)
    }

    /// Returns every parked event to the group; returns how many.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; [`GroupError::Store`].
    pub async fn replay_parked(&self, group: &GroupName) -> Result<usize, GroupError> {
        let reply = self
            .group_request(
                Method::POST,
                &["groups", group.as_str(), "replay-parked"],
                None,
            )
            .await?;
        Ok(reply.group::<ReplayResult>()?.replayed)
    }
}

/// What a [`Consumer`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ConsumerStats {
    /// Messages handed to the handler.
    pub handled: u64,
    /// Of those, acked (the handler returned `Ok` and the ack was live).
    pub acked: u64,
    /// Of those, nacked (the handler returned `Err`).
    pub nacked: u64,
}

/// A worker of a consumer group: polls, hands each message to a handler in turn, acks
/// the messages it handled (one ack per poll) and nacks the ones it failed with `retry`
/// (or the action set with [`Consumer::on_failure`]).
///
/// ```no_run
/// # async fn run() -> Result<(), concord_groups::GroupError> {
/// use concord_client::{ConcordClient, Consumer};
/// use concord_groups::{ConsumerName, GroupName};
/// let client = ConcordClient::new("http://127.0.0.1:2113", None)?;
/// let consumer = Consumer::new(client, GroupName::new("receipts")?, ConsumerName::new("worker-1")?);
/// consumer
///     .run(
///         |message| async move {
///             println!("sending a receipt for {}", message.event.stream);
///             Ok::<(), std::io::Error>(())
///         },
///         std::future::pending::<()>(),
///     )
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Consumer {
    client: ConcordClient,
    group: GroupName,
    name: ConsumerName,
    max: usize,
    wait: Duration,
    on_failure: NackAction,
}

impl Consumer {
    /// A consumer named `name` of `group`, taking up to 100 messages a poll and waiting up
    /// to 30 s for them.
    pub fn new(client: ConcordClient, group: GroupName, name: ConsumerName) -> Self {
        Consumer {
            client,
            group,
            name,
            max: concord_api::POLL_MAX_DEFAULT,
            wait: Duration::from_secs(30),
            on_failure: NackAction::Retry,
        }
    }

    /// At most `max` messages a poll (1–1000).
    #[must_use]
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// How long one poll waits for a message (at most the server's bound, 60 s by
    /// default).
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// What a failed message is nacked with (default `retry`).
    #[must_use]
    pub fn on_failure(mut self, action: NackAction) -> Self {
        self.on_failure = action;
        self
    }

    /// The group.
    pub fn group(&self) -> &GroupName {
        &self.group
    }

    /// One poll: hands each message to `handle` in turn, then acks those it returned `Ok`
    /// for and nacks the others. Returns what it did (nothing when the wait ended empty).
    ///
    /// # Errors
    /// The poll's, ack's or nack's [`GroupError`]. Messages handled but not acked because
    /// of an error go back to the group after its ack timeout.
    pub async fn poll_once<F, Fut, E>(&self, handle: &mut F) -> Result<ConsumerStats, GroupError>
    where
        F: FnMut(Message) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let messages = self
            .client
            .poll(&self.group, &self.name, self.max, self.wait)
            .await?;
        let mut stats = ConsumerStats::default();
        let (mut done, mut failed) = (Vec::new(), Vec::new());
        for message in messages {
            let ack_id = message.ack_id.clone();
            let (stream, version) = (message.event.stream.clone(), message.event.version);
            stats.handled += 1;
            match handle(message).await {
                Ok(()) => done.push(ack_id),
                Err(e) => {
                    tracing::warn!(group = %self.group, %stream, %version, error = %e, "handler failed; the message is nacked");
                    failed.push(ack_id);
                }
            }
        }
        if !done.is_empty() {
            stats.acked = self.client.ack(&self.group, &done).await? as u64;
        }
        if !failed.is_empty() {
            stats.nacked = self
                .client
                .nack(&self.group, &failed, self.on_failure)
                .await? as u64;
        }
        Ok(stats)
    }

    /// Polls and handles until `stop` resolves (between polls; a poll in progress ends
    /// early). A server that cannot be reached is retried after a pause (0.1 s, doubling
    /// up to 5 s); any other error ends the loop.
    ///
    /// # Errors
    /// Any [`GroupError`] but [`StoreError::Unavailable`].
    pub async fn run<F, Fut, E>(
        &self,
        mut handle: F,
        stop: impl Future<Output = ()>,
    ) -> Result<ConsumerStats, GroupError>
    where
        F: FnMut(Message) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut total = ConsumerStats::default();
        let mut pause = Duration::from_millis(100);
        let mut stop = std::pin::pin!(stop);
        loop {
            let once = tokio::select! {
                once = self.poll_once(&mut handle) => once,
                () = &mut stop => return Ok(total),
            };
            match once {
                Ok(stats) => {
                    total.handled += stats.handled;
                    total.acked += stats.acked;
                    total.nacked += stats.nacked;
                    pause = Duration::from_millis(100);
                }
                Err(GroupError::Store(StoreError::Unavailable { message, .. })) => {
                    tracing::warn!(group = %self.group, %message, "server unavailable; polling again in {pause:?}");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = &mut stop => return Ok(total),
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
