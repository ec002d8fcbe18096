//! `Streams.BatchAppend`: one long-lived call carrying many appends, each named by a
//! correlation id and possibly split over several messages (options in the first,
//! `is_final` on the last). Each append is answered when its last part arrives, with the
//! correlation id echoed; a failed append is a `google.rpc.Status` in its answer, and the
//! call goes on.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use concord_core::EventStore;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::GrpcConfig;
use crate::auth::Caller;
use crate::convert::{self, Expected};
use crate::error::{self, GrpcError};
use crate::metastream::Target;
use crate::proto::event_store::client::streams::{
    BatchAppendReq, BatchAppendResp, batch_append_req, batch_append_resp,
};
use crate::proto::event_store::client::{AllStreamPosition, Uuid as ProtoUuid};
use crate::streams::{Appended, Proposed};

/// Appends in progress on one call at most: more is a client that never finishes them.
const PENDING_MAX: usize = 1024;

struct Pending {
    /// What to append and its expectation, or why the append fails (it is answered when
    /// its last part arrives).
    target: Result<(Proposed, Expected), GrpcError>,
    options: Option<batch_append_req::Options>,
    bytes: usize,
}

fn expected(options: &batch_append_req::Options) -> Result<Expected, GrpcError> {
    use batch_append_req::options::ExpectedStreamPosition as E;
    match options.expected_stream_position {
        Some(E::StreamPosition(r)) => Ok(Expected::Revision(r)),
        Some(E::NoStream(())) => Ok(Expected::NoStream),
        Some(E::Any(())) => Ok(Expected::Any),
        Some(E::StreamExists(())) => Ok(Expected::StreamExists),
        None => Err(GrpcError::Invalid(
            "the batch's options need an expected stream position".to_owned(),
        )),
    }
}

fn key(id: Option<&ProtoUuid>) -> Result<uuid::Uuid, GrpcError> {
    convert::event_id(id)
        .map(|id| id.0)
        .map_err(|_| GrpcError::Invalid("a batch needs a valid correlation_id".to_owned()))
}

/// Serves one BatchAppend call until the client ends it or goes away.
///
/// Appends to different streams run concurrently, so that one call shared by many tasks
/// (the official clients keep one per client) still gets the store's group commit; appends
/// to one stream run one after another in the order their last parts arrived, so that a
/// client that sends several without waiting sees them written in that order.
pub(crate) async fn run(
    store: Arc<dyn EventStore>,
    config: Arc<GrpcConfig>,
    caller: Caller,
    mut requests: impl Stream<Item = Result<BatchAppendReq, Status>> + Unpin,
    tx: mpsc::Sender<Result<BatchAppendResp, Status>>,
) {
    let mut parts: HashMap<uuid::Uuid, Pending> = HashMap::new();
    let mut lanes = Lanes::default();
    let mut under_way = FuturesUnordered::new();
    // Appends complete but not yet answered (under way or waiting in a lane).
    let mut unanswered = 0usize;
    let mut reading = true;
    loop {
        tokio::select! {
            message = requests.next(), if reading => {
                let Some(message) = message else {
                    reading = false;
                    continue;
                };
                let message = match message {
                    Ok(m) => m,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let correlation = match key(message.correlation_id.as_ref()) {
                    Ok(k) => k,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                if !parts.contains_key(&correlation) && parts.len() + unanswered >= PENDING_MAX {
                    let _ = tx
                        .send(Err(Status::resource_exhausted(
                            "too many unfinished appends on one BatchAppend call",
                        )))
                        .await;
                    return;
                }
                let correlation_id = message.correlation_id.clone();
                let is_final = message.is_final;
                gather(&mut parts, correlation, message, &config);
                if !is_final {
                    continue;
                }
                let Some(pending) = parts.remove(&correlation) else {
                    continue;
                };
                unanswered += 1;
                if let Some(start) = lanes.arrive(Complete::new(correlation_id, pending)) {
                    under_way.push(finish(&*store, &config, &caller, start));
                }
            }
            Some((stream, response)) = under_way.next(), if !under_way.is_empty() => {
                unanswered -= 1;
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
                if let Some(start) = stream.and_then(|s| lanes.next(&s)) {
                    under_way.push(finish(&*store, &config, &caller, start));
                }
            }
            else => return,
        }
    }
}

/// One lane per stream with an append under way: the appends that wait behind it.
#[derive(Default)]
struct Lanes {
    waiting: HashMap<Vec<u8>, VecDeque<Complete>>,
}

impl Lanes {
    /// The append to start now, or `None` when it waits behind another of its stream.
    fn arrive(&mut self, complete: Complete) -> Option<Complete> {
        let Some(stream) = &complete.lane else {
            return Some(complete);
        };
        match self.waiting.get_mut(stream) {
            Some(lane) => {
                lane.push_back(complete);
                None
            }
            None => {
                self.waiting.insert(stream.clone(), VecDeque::new());
                Some(complete)
            }
        }
    }

    /// The append of `stream` to start now that its last one is answered; the lane
    /// closes when none waits.
    fn next(&mut self, stream: &[u8]) -> Option<Complete> {
        let next = self.waiting.get_mut(stream).and_then(VecDeque::pop_front);
        if next.is_none() {
            self.waiting.remove(stream);
        }
        next
    }
}

/// An append whose last part has arrived.
struct Complete {
    correlation_id: Option<ProtoUuid>,
    pending: Pending,
    /// The stream it writes, as the client named it (the key that keeps one stream's
    /// appends in order); `$$S`, the metadata of `S`, goes in line with `S`'s appends.
    lane: Option<Vec<u8>>,
}

impl Complete {
    fn new(correlation_id: Option<ProtoUuid>, pending: Pending) -> Self {
        let lane = pending
            .options
            .as_ref()
            .and_then(|o| o.stream_identifier.as_ref())
            .map(|s| {
                let name: &[u8] = s.stream_name.as_ref();
                name.strip_prefix(b"$$").unwrap_or(name).to_vec()
            });
        Complete {
            correlation_id,
            pending,
            lane,
        }
    }
}

/// Adds one message's events to the append it continues (or starts).
fn gather(
    parts: &mut HashMap<uuid::Uuid, Pending>,
    correlation: uuid::Uuid,
    message: BatchAppendReq,
    config: &GrpcConfig,
) {
    let entry = parts.entry(correlation).or_insert_with(|| {
        let target = message
            .options
            .as_ref()
            .ok_or_else(|| {
                GrpcError::Invalid("the first part of a batch needs its options".to_owned())
            })
            .and_then(|o| {
                Ok((
                    Proposed::new(Target::of(o.stream_identifier.as_ref())?),
                    expected(o)?,
                ))
            });
        Pending {
            target,
            options: message.options.clone(),
            bytes: 0,
        }
    });
    if let Ok((proposed, _)) = &mut entry.target {
        for m in message.proposed_messages {
            entry.bytes = entry
                .bytes
                .saturating_add(m.data.len() + m.custom_metadata.len());
            let pushed = if entry.bytes > config.limits.request_bytes_max {
                Err(GrpcError::TooLarge {
                    max: config.limits.request_bytes_max as u64,
                })
            } else {
                proposed.push(m.id.as_ref(), &m.metadata, m.custom_metadata, m.data)
            };
            if let Err(e) = pushed {
                // Drops the events gathered so far: the append fails as a whole.
                entry.target = Err(e);
                break;
            }
        }
    }
}

/// Writes one complete append and makes its answer, with the stream whose lane it held.
async fn finish(
    store: &dyn EventStore,
    config: &GrpcConfig,
    caller: &Caller,
    complete: Complete,
) -> (Option<Vec<u8>>, BatchAppendResp) {
    let answer = answer(store, config, caller, complete.pending).await;
    let response = BatchAppendResp {
        correlation_id: complete.correlation_id,
        ..answer
    };
    (complete.lane, response)
}

async fn answer(
    store: &dyn EventStore,
    config: &GrpcConfig,
    caller: &Caller,
    done: Pending,
) -> BatchAppendResp {
    use batch_append_req::options::ExpectedStreamPosition as Req;
    use batch_append_resp::ExpectedStreamPosition as Resp;
    let echoed = done
        .options
        .as_ref()
        .and_then(|o| o.expected_stream_position)
        .map(|e| match e {
            Req::StreamPosition(r) => Resp::StreamPosition(r),
            Req::NoStream(()) => Resp::NoStream(()),
            Req::Any(()) => Resp::Any(()),
            Req::StreamExists(()) => Resp::StreamExists(()),
        });
    let stream_identifier = done
        .options
        .as_ref()
        .and_then(|o| o.stream_identifier.clone());
    let result = match done.target {
        Err(e) => batch_append_resp::Result::Error(error::batch_error(&e)),
        Ok((proposed, expect)) => match proposed.append(store, config, caller, expect).await {
            Ok(Appended::Done { revision, position }) => {
                use batch_append_resp::success::{CurrentRevisionOption, PositionOption};
                batch_append_resp::Result::Success(batch_append_resp::Success {
                    current_revision_option: Some(match revision {
                        Some(r) => CurrentRevisionOption::CurrentRevision(r),
                        None => CurrentRevisionOption::NoStream(()),
                    }),
                    position_option: Some(match position {
                        Some(p) => PositionOption::Position(AllStreamPosition {
                            commit_position: p,
                            prepare_position: p,
                        }),
                        None => PositionOption::NoPosition(()),
                    }),
                })
            }
            Ok(Appended::WrongExpectedVersion { actual }) => {
                batch_append_resp::Result::Error(error::batch_wrong_expected_version(
                    &convert::shared_wrong_expected_version(expect, actual),
                ))
            }
            Err(e) => batch_append_resp::Result::Error(error::batch_error(&e)),
        },
    };
    BatchAppendResp {
        correlation_id: None,
        result: Some(result),
        stream_identifier,
        expected_stream_position: echoed,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::proto::event_store::client::{StreamIdentifier, uuid};
    use batch_append_req::options::ExpectedStreamPosition;
    use concord_core::{Direction, MemoryStore, StreamName, Version};

    fn id() -> Option<ProtoUuid> {
        Some(ProtoUuid {
            value: Some(uuid::Value::String(::uuid::Uuid::new_v4().to_string())),
        })
    }

    fn message(amount: u64) -> batch_append_req::ProposedMessage {
        batch_append_req::ProposedMessage {
            id: id(),
            metadata: [
                ("type".to_owned(), "Deposited".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]
            .into(),
            custom_metadata: Vec::new(),
            data: format!("{{\"amount\":{amount}}}").into_bytes(),
        }
    }

    /// One part of an append: `options` (with an `any` expectation) when `stream` is given.
    fn part(
        correlation: &Option<ProtoUuid>,
        stream: Option<&str>,
        amounts: &[u64],
        is_final: bool,
    ) -> Result<BatchAppendReq, Status> {
        Ok(BatchAppendReq {
            correlation_id: correlation.clone(),
            options: stream.map(|s| batch_append_req::Options {
                stream_identifier: Some(StreamIdentifier {
                    stream_name: s.as_bytes().to_vec(),
                }),
                expected_stream_position: Some(ExpectedStreamPosition::Any(())),
                deadline_option: None,
            }),
            proposed_messages: amounts.iter().map(|a| message(*a)).collect(),
            is_final,
        })
    }

    /// Serves `requests` on one call over `store` and returns its answers in order.
    async fn serve(
        store: Arc<dyn EventStore>,
        requests: Vec<Result<BatchAppendReq, Status>>,
    ) -> Vec<BatchAppendResp> {
        let (sender, _) = tokio::sync::watch::channel(false);
        let config = Arc::new(GrpcConfig {
            limits: concord_core::Limits::default(),
            gate: Arc::new(crate::OpenGate),
            advertised: "127.0.0.1:2113".parse().unwrap(),
            groups: Arc::new(concord_groups::Groups::new(Arc::clone(&store))),
            shutdown: sender.subscribe(),
        });
        let caller = Caller::from_metadata(&tonic::metadata::MetadataMap::new());
        let (tx, mut rx) = mpsc::channel(64);
        run(store, config, caller, tokio_stream::iter(requests), tx).await;
        let mut answers = Vec::new();
        while let Some(answer) = rx.recv().await {
            answers.push(answer.unwrap());
        }
        answers
    }

    async fn amounts(store: &dyn EventStore, stream: &str) -> Vec<u64> {
        let stream = StreamName::new(stream).unwrap();
        let events = store
            .read_stream(&stream, Version::NONE.next(), Direction::Forward, 1000)
            .await
            .unwrap();
        events
            .iter()
            .map(|e| {
                let json = e.data.as_json().unwrap();
                let value: serde_json::Value = serde_json::from_slice(json.as_bytes()).unwrap();
                value["amount"].as_u64().unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn an_append_split_over_messages_is_written_whole_when_its_last_part_arrives() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let (a, b) = (id(), id());
        // Two appends whose parts interleave on one call.
        let answers = serve(
            Arc::clone(&store),
            vec![
                part(&a, Some("account-1"), &[1, 2], false),
                part(&b, Some("account-2"), &[10], false),
                part(&a, None, &[3], true),
                part(&b, None, &[11], true),
            ],
        )
        .await;
        assert_eq!(answers.len(), 2);
        for answer in &answers {
            assert!(
                matches!(answer.result, Some(batch_append_resp::Result::Success(_))),
                "{answer:?}"
            );
        }
        let answered: Vec<_> = answers.iter().map(|r| r.correlation_id.clone()).collect();
        assert!(answered.contains(&a) && answered.contains(&b));
        assert_eq!(amounts(store.as_ref(), "account-1").await, [1, 2, 3]);
        assert_eq!(amounts(store.as_ref(), "account-2").await, [10, 11]);
    }

    #[tokio::test]
    async fn appends_to_one_stream_are_written_in_the_order_their_last_parts_arrived() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let requests = (0..10)
            .map(|n| part(&id(), Some("ledger"), &[n], true))
            .collect();
        let answers = serve(Arc::clone(&store), requests).await;
        assert_eq!(answers.len(), 10);
        assert_eq!(
            amounts(store.as_ref(), "ledger").await,
            (0..10).collect::<Vec<u64>>()
        );
    }
}
