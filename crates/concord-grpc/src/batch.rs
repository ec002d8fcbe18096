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
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

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
    mut requests: Streaming<BatchAppendReq>,
    tx: mpsc::Sender<Result<BatchAppendResp, Status>>,
) {
    let mut parts: HashMap<uuid::Uuid, Pending> = HashMap::new();
    // Per stream with an append under way, the complete appends that wait for it.
    let mut behind: HashMap<Vec<u8>, VecDeque<Complete>> = HashMap::new();
    let mut under_way = FuturesUnordered::new();
    // Appends complete but not yet answered (under way or behind one).
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
                let complete = Complete { correlation_id, pending };
                match complete.stream() {
                    Some(stream) => match behind.get_mut(&stream) {
                        Some(queue) => queue.push_back(complete),
                        None => {
                            behind.insert(stream.clone(), VecDeque::new());
                            under_way.push(finish(&*store, &config, &caller, Some(stream), complete));
                        }
                    },
                    None => under_way.push(finish(&*store, &config, &caller, None, complete)),
                }
            }
            Some((stream, response)) = under_way.next(), if !under_way.is_empty() => {
                unanswered -= 1;
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
                if let Some(stream) = stream {
                    match behind.get_mut(&stream).and_then(VecDeque::pop_front) {
                        Some(next) => under_way.push(finish(&*store, &config, &caller, Some(stream), next)),
                        None => {
                            behind.remove(&stream);
                        }
                    }
                }
            }
            else => return,
        }
    }
}

/// An append whose last part has arrived.
struct Complete {
    correlation_id: Option<ProtoUuid>,
    pending: Pending,
}

impl Complete {
    /// The stream it writes, as the client named it (the key that keeps one stream's
    /// appends in order); `$$S`, the metadata of `S`, goes in line with `S`'s appends.
    fn stream(&self) -> Option<Vec<u8>> {
        self.pending
            .options
            .as_ref()
            .and_then(|o| o.stream_identifier.as_ref())
            .map(|s| {
                let name: &[u8] = s.stream_name.as_ref();
                name.strip_prefix(b"$$").unwrap_or(name).to_vec()
            })
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

/// Writes one complete append and makes its answer, with the stream it held.
async fn finish(
    store: &dyn EventStore,
    config: &GrpcConfig,
    caller: &Caller,
    stream: Option<Vec<u8>>,
    complete: Complete,
) -> (Option<Vec<u8>>, BatchAppendResp) {
    let answer = answer(store, config, caller, complete.pending).await;
    let response = BatchAppendResp {
        correlation_id: complete.correlation_id,
        ..answer
    };
    (stream, response)
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
