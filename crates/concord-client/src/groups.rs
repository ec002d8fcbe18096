//! Consumer groups over HTTP (`/groups/...`), and [`Consumer`]: the loop a worker runs
//! (poll, hand each event to a closure, ack what it handled, nack what it refused).

use bytes::Bytes;
use concord_api::{
    AckBody, AckResult, GroupBody, GroupList, GroupMessage, GroupView, NackAction, NackBody,
    NackResult, ParkedList, PollBody, PollResult, ReplayResult,
};
use concord_core::StoreError;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ConcordClient, JSON};

impl ConcordClient {
    /// Sends `body` as JSON and reads a JSON answer; any other answer is an error.
    async fn call_with<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<T, StoreError> {
        let body = serde_json::to_vec(body).map_err(|e| {
            StoreError::backend(crate::BACKEND, "cannot encode the request body", e)
        })?;
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(CONTENT_TYPE, JSON);
        let reply = self
            .exchange(method, &self.url(segments), headers, Bytes::from(body))
            .await?;
        if reply.status.is_success() {
            reply.json()
        } else {
            Err(reply.error().into())
        }
    }

    /// `PUT /groups/{group}`: creates the group or changes its delivery settings.
    ///
    /// # Errors
    /// The server's refusal (400 bad settings, 409 a changed source) or a transport failure.
    pub async fn put_group(&self, group: &str, body: &GroupBody) -> Result<GroupView, StoreError> {
        self.call_with(Method::PUT, &["groups", group], body).await
    }

    /// `GET /groups`: every group.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn groups(&self) -> Result<GroupList, StoreError> {
        self.call(Method::GET, self.url(&["groups"])).await
    }

    /// `GET /groups/{group}`: its settings and counts.
    ///
    /// # Errors
    /// An unknown group (404); the server's refusal or a transport failure.
    pub async fn group(&self, group: &str) -> Result<GroupView, StoreError> {
        self.call(Method::GET, self.url(&["groups", group])).await
    }

    /// `DELETE /groups/{group}`.
    ///
    /// # Errors
    /// As [`ConcordClient::group`].
    pub async fn delete_group(&self, group: &str) -> Result<(), StoreError> {
        let reply = self
            .exchange(
                Method::DELETE,
                &self.url(&["groups", group]),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(reply.error().into())
        }
    }

    /// `POST /groups/{group}/poll`: up to `max` messages for `consumer`, waiting up to
    /// `wait_ms` for the first.
    ///
    /// # Errors
    /// As [`ConcordClient::group`]; a bad consumer name or `max` (400).
    pub async fn poll_group(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait_ms: u64,
    ) -> Result<Vec<GroupMessage>, StoreError> {
        let body = PollBody {
            consumer: consumer.to_owned(),
            max,
            wait_ms,
        };
        let result: PollResult = self
            .call_with(Method::POST, &["groups", group, "poll"], &body)
            .await?;
        Ok(result.messages)
    }

    /// `POST /groups/{group}/ack`: how many of `ack_ids` were current deliveries.
    ///
    /// # Errors
    /// As [`ConcordClient::group`].
    pub async fn ack(&self, group: &str, ack_ids: Vec<String>) -> Result<usize, StoreError> {
        let result: AckResult = self
            .call_with(
                Method::POST,
                &["groups", group, "ack"],
                &AckBody { ack_ids },
            )
            .await?;
        Ok(result.acked)
    }

    /// `POST /groups/{group}/nack`: how many of `ack_ids` were current deliveries.
    ///
    /// # Errors
    /// As [`ConcordClient::group`].
    pub async fn nack(
        &self,
        group: &str,
        ack_ids: Vec<String>,
        action: NackAction,
    ) -> Result<usize, StoreError> {
        let body = NackBody { ack_ids, action };
        let result: NackResult = self
            .call_with(Method::POST, &["groups", group, "nack"], &body)
            .await?;
        Ok(result.nacked)
    }

    /// `GET /groups/{group}/parked`.
    ///
    /// # Errors
    /// As [`ConcordClient::group`].
    pub async fn parked(&self, group: &str) -> Result<ParkedList, StoreError> {
        self.call(Method::GET, self.url(&["groups", group, "parked"]))
            .await
    }

    /// `POST /groups/{group}/replay-parked`: how many parked events went back.
    ///
    /// # Errors
    /// As [`ConcordClient::group`].
    pub async fn replay_parked(&self, group: &str) -> Result<usize, StoreError> {
        let result: ReplayResult = self
            .call_with(
                Method::POST,
                &["groups", group, "replay-parked"],
                &serde_json::json!({}),
            )
            .await?;
        Ok(result.replayed)
    }
}

/// A worker of a consumer group: polls, hands each message to a handler, acks the ones it
/// handled in one batch and nacks (retry) the ones it refused.
#[derive(Debug, Clone)]
pub struct Consumer {
    client: ConcordClient,
    group: String,
    name: String,
    /// Messages per poll.
    pub max: usize,
    /// How long one poll waits for a first message.
    pub wait_ms: u64,
}

impl Consumer {
    /// A consumer named `name` of `group`, polling 100 at a time and waiting 5 s per poll.
    pub fn new(client: ConcordClient, group: &str, name: &str) -> Self {
        Consumer {
            client,
            group: group.to_owned(),
            name: name.to_owned(),
            max: 100,
            wait_ms: 5_000,
        }
    }

    /// One poll: every message goes to `handler` in order; those it handled (`Ok`) are
    /// acked together, those it refused are nacked for a retry. Returns how many were
    /// acked.
    ///
    /// # Errors
    /// The server's refusal or a transport failure; the messages not answered then come
    /// back after the group's ack timeout.
    pub async fn run_once<F, Fut, E>(&self, mut handler: F) -> Result<usize, StoreError>
    where
        F: FnMut(GroupMessage) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        let messages = self
            .client
            .poll_group(&self.group, &self.name, self.max, self.wait_ms)
            .await?;
        let mut handled = Vec::new();
        let mut refused = Vec::new();
        for message in messages {
            let id = message.ack_id.clone();
            match handler(message).await {
                Ok(()) => handled.push(id),
                Err(_) => refused.push(id),
            }
        }
        if !refused.is_empty() {
            self.client
                .nack(&self.group, refused, NackAction::Retry)
                .await?;
        }
        if handled.is_empty() {
            return Ok(0);
        }
        self.client.ack(&self.group, handled).await
    }

    /// Polls and handles until `stop` resolves (checked between polls). Returns how many
    /// messages were acked.
    ///
    /// # Errors
    /// As [`Consumer::run_once`].
    pub async fn run<F, Fut, E>(
        &self,
        mut handler: F,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<usize, StoreError>
    where
        F: FnMut(GroupMessage) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        let mut acked = 0;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return Ok(acked),
                n = self.run_once(&mut handler) => acked += n?,
            }
        }
    }
}
