//! KurrentDB 25.1's v2 `AppendSession`: the official clients' multi-stream append
//! (kurrentdbclient's `multi_append_to_stream`). Each message of the call is the append to
//! one stream; when the client ends the call, every part is written in one
//! [`EventStore::append_multi`] (all or none, consecutive positions in message order) and
//! answered with each stream's revision and the last position.
//!
//! A record's `properties` become the event's metadata (a JSON object of the same members),
//! its schema name the event type, and its format the content type (JSON stays JSON;
//! Protobuf, Avro and bytes are stored as bytes of their own content type). Failures carry
//! the v2 error details the clients unpack (see `error::session_status`).

use std::collections::HashSet;
use std::sync::Arc;

use concord_core::{
    AppendRequest, ContentType, EventId, EventStore, EventType, ExpectedVersion, Json,
    MultiAppendRequest, NewEvent, Payload, StoreError, StreamName, Version,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::GrpcConfig;
use crate::auth::{Action, Caller};
use crate::error::{GrpcError, SessionError};
use crate::proto::kurrentdb::protocol::v2::streams::{
    AppendRecord, AppendRequest as PartRequest, AppendResponse, AppendSessionResponse,
    SchemaFormat, streams_service_server::StreamsService,
};

/// The v2 Streams service over a store.
#[derive(Debug)]
pub(crate) struct SessionService {
    store: Arc<dyn EventStore>,
    config: Arc<GrpcConfig>,
}

impl SessionService {
    pub(crate) fn new(store: Arc<dyn EventStore>, config: Arc<GrpcConfig>) -> Self {
        SessionService { store, config }
    }
}

#[tonic::async_trait]
impl StreamsService for SessionService {
    async fn append_session(
        &self,
        request: Request<Streaming<PartRequest>>,
    ) -> Result<Response<AppendSessionResponse>, Status> {
        let caller = Caller::from_metadata(request.metadata());
        session(self, &caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}

/// The protocol's expected revision: n ≥ 0, or −1 (no stream), −2 (any), −4 (exists);
/// absent is any.
fn expected(stream: &str, revision: Option<i64>) -> Result<ExpectedVersion, SessionError> {
    Ok(match revision {
        None | Some(-2) => ExpectedVersion::Any,
        Some(-1) => ExpectedVersion::NoStream,
        Some(-4) => ExpectedVersion::Exists,
        Some(n) if n >= 0 => ExpectedVersion::Exact(Version(n.unsigned_abs() + 1)),
        Some(other) => {
            return Err(GrpcError::Invalid(format!(
                "expected_revision {other} for stream {stream:?} is neither a revision (0 or more) nor -1 (no stream), -2 (any) or -4 (exists)"
            ))
            .into());
        }
    })
}

/// The protocol's number for an expectation (what a revision conflict reports).
pub(crate) fn expected_revision(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Exact(v) => revision(v),
        ExpectedVersion::NoStream => -1,
        ExpectedVersion::Any => -2,
        ExpectedVersion::Exists => -4,
    }
}

/// A stream's revision: its version − 1, −1 for no stream.
pub(crate) fn revision(version: Version) -> i64 {
    i64::try_from(version.get()).map_or(i64::MAX, |v| v - 1)
}

fn content_type(format: i32) -> ContentType {
    let name = match SchemaFormat::try_from(format) {
        Ok(SchemaFormat::Json) => return ContentType::json(),
        Ok(SchemaFormat::Protobuf) => "application/x-protobuf",
        Ok(SchemaFormat::Avro) => "application/avro",
        Ok(SchemaFormat::Bytes | SchemaFormat::Unspecified) | Err(_) => "application/octet-stream",
    };
    ContentType::new(name).unwrap_or_else(|_| ContentType::json())
}

/// A protobuf `Value` as JSON.
fn json_value(value: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, Into::into)
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| (k, json_value(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.into_iter().map(json_value).collect())
        }
    }
}

/// One record as a core event, or why it cannot be one.
fn event(
    stream: &str,
    record: AppendRecord,
    event_bytes_max: usize,
) -> Result<NewEvent, SessionError> {
    let id = match &record.record_id {
        None => EventId::new(),
        Some(text) => EventId(
            uuid::Uuid::parse_str(text)
                .map_err(|e| GrpcError::Invalid(format!("malformed record_id {text:?}: {e}")))?,
        ),
    };
    let schema = record.schema.unwrap_or_default();
    let event_type = EventType::new(&schema.name).map_err(|e| {
        GrpcError::Invalid(format!(
            "record {id} of stream {stream:?}: schema name: {e}"
        ))
    })?;
    let metadata: serde_json::Map<String, serde_json::Value> = record
        .properties
        .into_iter()
        .map(|(k, v)| (k, json_value(v)))
        .collect();
    let metadata = Json::from_value(&serde_json::Value::Object(metadata));
    let size = record.data.len() + metadata.as_bytes().len();
    if size > event_bytes_max {
        return Err(SessionError::RecordTooLarge {
            stream: stream.to_owned(),
            record_id: id.to_string(),
            size,
            max: event_bytes_max,
        });
    }
    let data = Payload::new(content_type(schema.format), record.data)
        .map_err(|e| GrpcError::Invalid(format!("record {id} of stream {stream:?}: {e}")))?;
    Ok(NewEvent::new(event_type, data)
        .with_id(id)
        .with_metadata(metadata))
}

async fn session(
    service: &SessionService,
    caller: &Caller,
    mut messages: Streaming<PartRequest>,
) -> Result<AppendSessionResponse, SessionError> {
    let limits = &service.config.limits;
    let mut parts = Vec::new();
    let mut seen = HashSet::new();
    let mut bytes = 0usize;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|s| GrpcError::Invalid(s.message().to_owned()))?;
        if !seen.insert(message.stream.clone()) {
            return Err(SessionError::StreamTwice(message.stream));
        }
        let stream = StreamName::new(&message.stream).map_err(|e| {
            GrpcError::Invalid(format!(
                "stream {:?}: {e} (a multi-stream append takes no $ stream)",
                message.stream
            ))
        })?;
        caller.check(service.config.gate.as_ref(), Action::Write(stream.as_str()))?;
        let expected = expected(&message.stream, message.expected_revision)?;
        let mut events = Vec::with_capacity(message.records.len());
        for record in message.records {
            let e = event(&message.stream, record, limits.event_bytes_max)?;
            bytes = bytes.saturating_add(e.payload_bytes());
            if bytes > limits.request_bytes_max {
                return Err(SessionError::TransactionTooLarge {
                    size: bytes,
                    max: limits.request_bytes_max,
                });
            }
            events.push(e);
        }
        parts.push(AppendRequest::new(stream, expected, events));
    }
    if parts.is_empty() {
        return Err(SessionError::NoRequests);
    }
    let request = MultiAppendRequest::new(parts);
    limits
        .check_multi_append(&request)
        .map_err(GrpcError::from)?;
    let streams: Vec<StreamName> = request.parts.iter().map(|p| p.stream.clone()).collect();
    let outcome = match service.store.append_multi(request).await {
        Ok(outcome) => outcome,
        Err(StoreError::Conflict(c)) => return Err(SessionError::conflict(&c)),
        Err(StoreError::Conflicts(cs)) => {
            return Err(cs.first().map_or_else(
                || SessionError::Other(GrpcError::Invalid("version conflict".to_owned())),
                SessionError::conflict,
            ));
        }
        // Some ids of the session are stored, but not as this session: a conflict, as for
        // KurrentDB, whose idempotency check answers the stream's actual revision.
        Err(StoreError::PartialDuplicate(d)) => {
            let actual = service
                .store
                .stream_version(&d.stream)
                .await
                .map_err(GrpcError::from)?;
            return Err(SessionError::Revision {
                stream: d.stream.to_string(),
                expected: -2,
                actual: revision(actual),
            });
        }
        Err(StoreError::StreamDeleted(stream)) => {
            return Err(SessionError::Tombstoned(stream.to_string()));
        }
        Err(e) => return Err(GrpcError::from(e).into()),
    };
    let output = streams
        .into_iter()
        .zip(&outcome.parts)
        .map(|(stream, part)| {
            let a = part.appended();
            AppendResponse {
                stream: stream.to_string(),
                stream_revision: revision(a.last_version),
                position: Some(i64::try_from(a.last_position.get()).unwrap_or(i64::MAX)),
            }
        })
        .collect();
    Ok(AppendSessionResponse {
        output,
        position: i64::try_from(outcome.last_position.get()).unwrap_or(i64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_constants_are_the_core_expectations() {
        assert_eq!(expected("s", None).ok(), Some(ExpectedVersion::Any));
        assert_eq!(expected("s", Some(-2)).ok(), Some(ExpectedVersion::Any));
        assert_eq!(
            expected("s", Some(-1)).ok(),
            Some(ExpectedVersion::NoStream)
        );
        assert_eq!(expected("s", Some(-4)).ok(), Some(ExpectedVersion::Exists));
        assert_eq!(
            expected("s", Some(0)).ok(),
            Some(ExpectedVersion::Exact(Version(1)))
        );
        assert!(expected("s", Some(-3)).is_err());
        for e in [
            ExpectedVersion::Any,
            ExpectedVersion::NoStream,
            ExpectedVersion::Exists,
            ExpectedVersion::Exact(Version(7)),
        ] {
            let n = expected_revision(e);
            assert_eq!(expected("s", Some(n)).ok(), Some(e), "{n}");
        }
    }

    #[test]
    fn properties_become_a_json_object_of_the_same_members() {
        use prost_types::value::Kind;
        let record = AppendRecord {
            record_id: None,
            properties: [
                (
                    "who".to_owned(),
                    prost_types::Value {
                        kind: Some(Kind::StringValue("ann".to_owned())),
                    },
                ),
                (
                    "n".to_owned(),
                    prost_types::Value {
                        kind: Some(Kind::NumberValue(2.0)),
                    },
                ),
            ]
            .into_iter()
            .collect(),
            schema: Some(crate::proto::kurrentdb::protocol::v2::streams::SchemaInfo {
                format: SchemaFormat::Bytes as i32,
                name: "Noted".to_owned(),
                id: None,
            }),
            data: vec![0, 159, 1],
            stream: String::new(),
        };
        let e = event("s", record, 1024)
            .map_err(|_| "refused")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.event_type.as_str(), "Noted");
        assert_eq!(e.data.content_type(), "application/octet-stream");
        let metadata: serde_json::Value =
            serde_json::from_str(e.metadata.as_str()).unwrap_or_default();
        assert_eq!(metadata, serde_json::json!({"who": "ann", "n": 2.0}));
    }

    #[test]
    fn a_record_over_the_event_limit_names_its_stream_id_and_sizes() {
        let record = AppendRecord {
            record_id: Some("5f0a1c2e-8d4b-4c6a-9e1f-2b3c4d5e6f70".to_owned()),
            schema: Some(crate::proto::kurrentdb::protocol::v2::streams::SchemaInfo {
                format: SchemaFormat::Bytes as i32,
                name: "Big".to_owned(),
                id: None,
            }),
            data: vec![1; 11],
            ..AppendRecord::default()
        };
        match event("big-1", record, 10) {
            Err(SessionError::RecordTooLarge {
                stream,
                record_id,
                size,
                max,
            }) => {
                assert_eq!(stream, "big-1");
                assert_eq!(record_id, "5f0a1c2e-8d4b-4c6a-9e1f-2b3c4d5e6f70");
                // The data and the metadata, as the store's limit counts them (`{}`: 2 bytes).
                assert_eq!((size, max), (11 + 2, 10));
            }
            other => panic!("expected RecordTooLarge, got {:?}", other.map(|_| ())),
        }
    }
}
