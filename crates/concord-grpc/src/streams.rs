//! The Streams service: `Append` (one stream, its events in messages after the options),
//! `Read` (validated into a [`ReadPlan`] and run by `read`), `BatchAppend` (in `batch`).
//! Append answers a wrong expected version inside `AppendResp`, not as a status, with both
//! the current and the pre-20.6 fields filled: the clients read either and some unwrap them.

use std::pin::Pin;
use std::sync::Arc;

use concord_core::{AppendRequest, EventStore, NewEvent, StoreError, StreamName, Version};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::GrpcConfig;
use crate::auth::{Action, Caller};
use crate::convert::{self, Expected};
use crate::error::GrpcError;
use crate::filter::EventFilter;
use crate::metastream::{self, Target};
use crate::proto::event_store::client::Empty;
use crate::proto::event_store::client::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    ReadResp, TombstoneReq, TombstoneResp, append_req, append_resp, delete_req, delete_resp,
    read_req, streams_server::Streams, tombstone_resp,
};
use crate::read::{self, AllFrom, ReadPlan, Source, StreamFrom};

/// How many answers a `BatchAppend` call may have waiting for its client.
const BATCH_ANSWERS: usize = 64;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Streams service over a store.
#[derive(Debug)]
pub(crate) struct StreamsService {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) config: Arc<GrpcConfig>,
}

impl StreamsService {
    pub(crate) fn new(store: Arc<dyn EventStore>, config: Arc<GrpcConfig>) -> Self {
        StreamsService { store, config }
    }
}

/// The result of one append, in the protocol's terms.
pub(crate) enum Appended {
    /// The stream's revision after it (`None`: still no stream) and the last position.
    Done {
        revision: Option<u64>,
        position: Option<u64>,
    },
    /// The expectation did not hold; the stream's actual version.
    WrongExpectedVersion { actual: Version },
}

/// What one append carries: events for a stream, or the settings of a `$$stream` (at
/// most one `$metadata` event).
pub(crate) enum Proposed {
    Events(StreamName, Vec<NewEvent>),
    Metadata(StreamName, Option<concord_core::StreamMetadata>),
}

impl Proposed {
    pub(crate) fn new(target: Target) -> Self {
        match target {
            Target::Stream(s) => Proposed::Events(s, Vec::new()),
            Target::Metadata(s) => Proposed::Metadata(s, None),
        }
    }

    /// Adds one proposed message.
    pub(crate) fn push(
        &mut self,
        id: Option<&crate::proto::event_store::client::Uuid>,
        metadata: &std::collections::HashMap<String, String>,
        custom_metadata: Vec<u8>,
        data: Vec<u8>,
    ) -> Result<(), GrpcError> {
        match self {
            Proposed::Events(_, events) => {
                events.push(convert::new_event(id, metadata, custom_metadata, data)?);
            }
            Proposed::Metadata(_, Some(_)) => {
                return Err(GrpcError::Invalid(format!(
                    "an append to a metadata stream takes one {} event",
                    metastream::EVENT_TYPE
                )));
            }
            Proposed::Metadata(_, settings) => {
                *settings = Some(metastream::settings(metadata, &data)?);
            }
        }
        Ok(())
    }

    /// Appends what it carries if `expected` holds.
    pub(crate) async fn append(
        self,
        store: &dyn EventStore,
        config: &GrpcConfig,
        caller: &Caller,
        expected: Expected,
    ) -> Result<Appended, GrpcError> {
        match self {
            Proposed::Events(stream, events) => {
                append(store, config, caller, stream, expected, events).await
            }
            Proposed::Metadata(stream, settings) => {
                metastream::append(store, config, caller, stream, expected, settings).await
            }
        }
    }
}

/// Appends `events` to `stream` if `expected` holds. An empty append checks the
/// expectation and answers the current revision, as KurrentDB does.
async fn append(
    store: &dyn EventStore,
    config: &GrpcConfig,
    caller: &Caller,
    stream: StreamName,
    expected: Expected,
    events: Vec<NewEvent>,
) -> Result<Appended, GrpcError> {
    caller.check(config.gate.as_ref(), Action::Write(stream.as_str()))?;
    let expected_version = expected.to_core()?;
    if events.is_empty() {
        let actual = store.stream_version(&stream).await?;
        if !expected_version.holds_for(actual) {
            return Ok(Appended::WrongExpectedVersion { actual });
        }
        return Ok(Appended::Done {
            revision: convert::revision(actual),
            position: None,
        });
    }
    let request = AppendRequest::new(stream.clone(), expected_version, events);
    config.limits.check_append(&request)?;
    match store.append(request).await {
        Ok(outcome) => {
            let a = outcome.appended();
            Ok(Appended::Done {
                revision: convert::revision(a.last_version),
                position: Some(a.last_position.get()),
            })
        }
        Err(StoreError::Conflict(c)) => Ok(Appended::WrongExpectedVersion { actual: c.actual }),
        Err(StoreError::PartialDuplicate(_)) => Ok(Appended::WrongExpectedVersion {
            actual: store.stream_version(&stream).await?,
        }),
        Err(e) => Err(e.into()),
    }
}

fn append_expected(options: &append_req::Options) -> Result<Expected, GrpcError> {
    use append_req::options::ExpectedStreamRevision as E;
    match options.expected_stream_revision {
        Some(E::Revision(r)) => Ok(Expected::Revision(r)),
        Some(E::NoStream(_)) => Ok(Expected::NoStream),
        Some(E::Any(_)) => Ok(Expected::Any),
        Some(E::StreamExists(_)) => Ok(Expected::StreamExists),
        None => Err(GrpcError::Invalid(
            "the append's options need an expected stream revision".to_owned(),
        )),
    }
}

fn wrong_expected_version(
    expected: Expected,
    actual: Version,
) -> append_resp::WrongExpectedVersion {
    use append_resp::wrong_expected_version::{
        CurrentRevisionOption, CurrentRevisionOption2060, ExpectedRevisionOption,
        ExpectedRevisionOption2060,
    };
    let (current, current_legacy) = match convert::revision(actual) {
        Some(r) => (
            CurrentRevisionOption::CurrentRevision(r),
            CurrentRevisionOption2060::CurrentRevision2060(r),
        ),
        None => (
            CurrentRevisionOption::CurrentNoStream(Empty {}),
            CurrentRevisionOption2060::NoStream2060(Empty {}),
        ),
    };
    let (expected_now, expected_legacy) = match expected {
        Expected::Revision(r) => (
            ExpectedRevisionOption::ExpectedRevision(r),
            Some(ExpectedRevisionOption2060::ExpectedRevision2060(r)),
        ),
        Expected::Any => (
            ExpectedRevisionOption::ExpectedAny(Empty {}),
            Some(ExpectedRevisionOption2060::Any2060(Empty {})),
        ),
        Expected::StreamExists => (
            ExpectedRevisionOption::ExpectedStreamExists(Empty {}),
            Some(ExpectedRevisionOption2060::StreamExists2060(Empty {})),
        ),
        Expected::NoStream => (ExpectedRevisionOption::ExpectedNoStream(Empty {}), None),
    };
    append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(current_legacy),
        expected_revision_option_20_6_0: expected_legacy,
        current_revision_option: Some(current),
        expected_revision_option: Some(expected_now),
    }
}

async fn append_call(
    service: &StreamsService,
    request: Request<Streaming<AppendReq>>,
) -> Result<AppendResp, GrpcError> {
    let caller = Caller::from_metadata(request.metadata());
    let mut messages = request.into_inner();
    let first = messages
        .next()
        .await
        .ok_or_else(|| GrpcError::Invalid("an append needs its options first".to_owned()))?
        .map_err(|s| GrpcError::Invalid(s.message().to_owned()))?;
    let Some(append_req::Content::Options(options)) = first.content else {
        return Err(GrpcError::Invalid(
            "an append's first message must be its options".to_owned(),
        ));
    };
    let mut proposed = Proposed::new(Target::of(options.stream_identifier.as_ref())?);
    let expected = append_expected(&options)?;
    let limits = &service.config.limits;
    let mut bytes = 0usize;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|s| GrpcError::Invalid(s.message().to_owned()))?;
        let Some(append_req::Content::ProposedMessage(m)) = message.content else {
            return Err(GrpcError::Invalid(
                "an append's options may come only once, first".to_owned(),
            ));
        };
        bytes = bytes.saturating_add(m.data.len() + m.custom_metadata.len());
        if bytes > limits.request_bytes_max {
            return Err(GrpcError::TooLarge {
                max: limits.request_bytes_max as u64,
            });
        }
        proposed.push(m.id.as_ref(), &m.metadata, m.custom_metadata, m.data)?;
    }
    let answer = proposed
        .append(service.store.as_ref(), &service.config, &caller, expected)
        .await?;
    Ok(AppendResp {
        result: Some(match answer {
            Appended::Done { revision, position } => {
                append_resp::Result::Success(append_resp::Success {
                    current_revision_option: Some(match revision {
                        Some(r) => append_resp::success::CurrentRevisionOption::CurrentRevision(r),
                        None => append_resp::success::CurrentRevisionOption::NoStream(Empty {}),
                    }),
                    position_option: Some(match position {
                        Some(p) => {
                            append_resp::success::PositionOption::Position(append_resp::Position {
                                commit_position: p,
                                prepare_position: p,
                            })
                        }
                        None => append_resp::success::PositionOption::NoPosition(Empty {}),
                    }),
                })
            }
            Appended::WrongExpectedVersion { actual } => {
                append_resp::Result::WrongExpectedVersion(wrong_expected_version(expected, actual))
            }
        }),
    })
}

/// A soft delete or a tombstone (`tombstone`) of the stream the options name. Concord
/// writes no `$metadata` event for it, so the answer carries no position.
async fn remove(
    service: &StreamsService,
    caller: &Caller,
    options: Option<&delete_req::Options>,
    tombstone: bool,
) -> Result<(), GrpcError> {
    use delete_req::options::ExpectedStreamRevision as E;
    let options =
        options.ok_or_else(|| GrpcError::Invalid("a delete needs its options".to_owned()))?;
    let stream = convert::stream_name(options.stream_identifier.as_ref())?;
    caller.check(service.config.gate.as_ref(), Action::Write(stream.as_str()))?;
    // The store compares an expectation with the visible version; any and stream_exists
    // need no number (a soft delete of a stream without events is not found either way; a
    // tombstone of one goes ahead unless it expected the stream to exist).
    let expected = match options.expected_stream_revision {
        Some(E::Revision(r)) => Some(Version(r.checked_add(1).ok_or_else(|| {
            GrpcError::Invalid(format!("revision {r} is beyond the largest version"))
        })?)),
        Some(E::NoStream(_)) => Some(Version::NONE),
        Some(E::Any(_) | E::StreamExists(_)) | None => None,
    };
    let store = service.store.as_ref();
    let exists_expected = matches!(options.expected_stream_revision, Some(E::StreamExists(_)));
    if tombstone && !exists_expected {
        // KurrentDB's tombstone: a stream that never had an event is tombstoned too (its
        // name refused from now on), where the HTTP API answers 404.
        store.tombstone_stream_name(&stream, expected).await?;
    } else if tombstone {
        store.tombstone_stream(&stream, expected).await?;
    } else {
        store.delete_stream(&stream, expected).await?;
    }
    Ok(())
}

fn read_plan(request: &ReadReq) -> Result<ReadPlan, GrpcError> {
    use read_req::options::{self, CountOption, FilterOption, StreamOption};
    let o = request
        .options
        .as_ref()
        .ok_or_else(|| GrpcError::Invalid("a read needs options".to_owned()))?;
    let backwards = o.read_direction == options::ReadDirection::Backwards as i32;
    if o.read_direction != options::ReadDirection::Forwards as i32 && !backwards {
        return Err(GrpcError::Invalid(format!(
            "unknown read direction {}",
            o.read_direction
        )));
    }
    let count = match &o.count_option {
        Some(CountOption::Count(n)) => Some(*n),
        Some(CountOption::Subscription(_)) => None,
        None => {
            return Err(GrpcError::Invalid(
                "a read needs a count or a subscription".to_owned(),
            ));
        }
    };
    if count.is_none() && backwards {
        return Err(GrpcError::Invalid(
            "a subscription reads forwards".to_owned(),
        ));
    }
    let filter = match &o.filter_option {
        Some(FilterOption::Filter(f)) => Some(EventFilter::new(f)?),
        Some(FilterOption::NoFilter(_)) | None => None,
    };
    let source = match &o.stream_option {
        Some(StreamOption::Stream(s)) => {
            if filter.is_some() {
                return Err(GrpcError::Invalid(
                    "InvalidCombination: filters apply to $all only".to_owned(),
                ));
            }
            use options::stream_options::RevisionOption as R;
            let from = match s.revision_option {
                Some(R::Revision(n)) => StreamFrom::Revision(n),
                Some(R::Start(_)) => StreamFrom::Start,
                Some(R::End(_)) => StreamFrom::End,
                None => {
                    return Err(GrpcError::Invalid(
                        "a stream read needs a revision, start or end".to_owned(),
                    ));
                }
            };
            match Target::of(s.stream_identifier.as_ref())? {
                Target::Stream(stream) => Source::Stream(stream, from),
                Target::Metadata(_) if count.is_none() => {
                    return Err(GrpcError::Invalid(
                        "a subscription to a metadata stream is not supported".to_owned(),
                    ));
                }
                Target::Metadata(stream) => Source::Metadata(stream, from),
            }
        }
        Some(StreamOption::All(a)) => {
            use options::all_options::AllOption as A;
            let from = match &a.all_option {
                Some(A::Position(p)) => AllFrom::Position(p.commit_position),
                Some(A::Start(_)) => AllFrom::Start,
                Some(A::End(_)) => AllFrom::End,
                None => {
                    return Err(GrpcError::Invalid(
                        "an $all read needs a position, start or end".to_owned(),
                    ));
                }
            };
            Source::All(from)
        }
        None => {
            return Err(GrpcError::Invalid(
                "a read needs a stream or $all".to_owned(),
            ));
        }
    };
    let uuid_as_string = !matches!(
        o.uuid_option.as_ref().and_then(|u| u.content.as_ref()),
        Some(options::uuid_option::Content::Structured(_))
    );
    Ok(ReadPlan {
        source,
        backwards,
        count,
        filter,
        uuid_as_string,
    })
}

#[tonic::async_trait]
impl Streams for StreamsService {
    type ReadStream = BoxStream<ReadResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Self::ReadStream>, Status> {
        let caller = Caller::from_metadata(request.metadata());
        let plan = read_plan(request.get_ref())?;
        let action = match &plan.source {
            Source::Stream(s, _) | Source::Metadata(s, _) => Action::Read(s.as_str()),
            Source::All(_) => Action::ReadAll,
        };
        caller.check(self.config.gate.as_ref(), action)?;
        let (tx, rx) = mpsc::channel(read::BATCHES_AHEAD);
        let shutting_down = self.config.shutting_down();
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            let stopped = tx.clone();
            tokio::select! {
                () = read::run(store, plan, tx) => {}
                () = shutting_down => {
                    let _ = stopped.send(vec![Err(GrpcError::ShuttingDown.into())]).await;
                }
            }
        });
        let answers = futures::StreamExt::flat_map(ReceiverStream::new(rx), futures::stream::iter);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        Ok(Response::new(append_call(self, request).await?))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let caller = Caller::from_metadata(request.metadata());
        remove(self, &caller, request.get_ref().options.as_ref(), false).await?;
        Ok(Response::new(DeleteResp {
            position_option: Some(delete_resp::PositionOption::NoPosition(Empty {})),
        }))
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        let caller = Caller::from_metadata(request.metadata());
        remove(self, &caller, request.get_ref().options.as_ref(), true).await?;
        Ok(Response::new(TombstoneResp {
            position_option: Some(tombstone_resp::PositionOption::NoPosition(Empty {})),
        }))
    }

    type BatchAppendStream = BoxStream<BatchAppendResp>;

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        let caller = Caller::from_metadata(request.metadata());
        let (tx, rx) = mpsc::channel(BATCH_ANSWERS);
        tokio::spawn(crate::batch::run(
            Arc::clone(&self.store),
            Arc::clone(&self.config),
            caller,
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
