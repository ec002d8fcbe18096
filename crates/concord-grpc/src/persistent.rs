//! The PersistentSubscriptions service over Concord's consumer groups
//! ([`concord_groups::Groups`], shared with the HTTP API): a KurrentDB persistent
//! subscription *is* a consumer group, so acks, retries, parking and replays written over
//! gRPC are seen over HTTP and the other way round.
//!
//! **Names.** KurrentDB names a subscription by (stream, group); Concord by one group name.
//! The group is `<stream>::<group>`, or `$all::<group>` for `$all`. Concord stream names
//! never start with `$`, and a stream whose name contains `::` is refused here, so the
//! first `::` always ends the stream part and no two pairs share a group. A Concord group
//! whose name has that shape and whose source is that stream (or the global log, for
//! `$all`) is the subscription; other groups are not visible over gRPC.
//!
//! **Reading.** `Read` is one consumer: after the options it answers a confirmation, then
//! polls the group for as many events as the reader's buffer has room, and sends each with
//! its retry count (delivery − 1). Acks and nacks name event ids; the session remembers
//! which delivery (ack id) each id it sent stands for. When the reader goes, whatever it
//! still held is given back to the group (nack retry), as KurrentDB does.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use concord_core::{Category, EventType, RecordedEvent, StreamName};
use concord_groups::{
    AllSource, ConsumerName, GroupError, GroupInfo, GroupName, GroupSpec, Groups, NackAction,
    Ordering, POLL_MAX, Source, StartFrom,
};
use futures::Stream;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::GrpcConfig;
use crate::auth::{Action, Caller};
use crate::convert;
use crate::error::GrpcError;
use crate::proto::event_store::client::persistent_subscriptions::{
    CreateReq, CreateResp, DeleteReq, DeleteResp, GetInfoReq, GetInfoResp, ListReq, ListResp,
    ReadReq, ReadResp, ReplayParkedReq, ReplayParkedResp, SubscriptionInfo, UpdateReq, UpdateResp,
    create_req, delete_req, get_info_req, list_req,
    persistent_subscriptions_server::PersistentSubscriptions, read_req, read_resp,
    replay_parked_req, update_req,
};
use crate::proto::event_store::client::{Empty, StreamIdentifier, Uuid as ProtoUuid};

/// What separates the stream from the group in a Concord group name.
pub(crate) const SEPARATOR: &str = "::";

/// The stream part of the group name of a subscription to `$all`.
const ALL: &str = "$all";

/// How long one poll of a reading session waits for events before looking again (it
/// returns at once when events arrive; this only bounds how long a poll holds the group's
/// waiters).
const POLL_WAIT: Duration = Duration::from_secs(30);

/// The reader's buffer when its options say 0.
const DEFAULT_BUFFER: usize = 10;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What a subscription reads: one stream or `$all`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Target {
    Stream(StreamName),
    All,
}

impl Target {
    fn label(&self) -> &str {
        match self {
            Target::Stream(s) => s.as_str(),
            Target::All => ALL,
        }
    }

    fn action(&self) -> Action<'_> {
        match self {
            Target::Stream(s) => Action::Read(s.as_str()),
            Target::All => Action::ReadAll,
        }
    }

    fn from_identifier(id: Option<&StreamIdentifier>) -> Result<Target, GrpcError> {
        subscribed_stream(id).map(Target::Stream)
    }

    /// Whether `source` is what this target reads.
    fn is_source(&self, source: &Source) -> bool {
        match (self, source) {
            (Target::Stream(s), Source::Stream(t)) => s == t,
            (Target::All, Source::All(_)) => true,
            _ => false,
        }
    }
}

/// The stream a persistent subscription names: a valid Concord name without the separator.
fn subscribed_stream(id: Option<&StreamIdentifier>) -> Result<StreamName, GrpcError> {
    let stream = convert::stream_name(id)?;
    if stream.as_str().contains(SEPARATOR) {
        return Err(GrpcError::Invalid(format!(
            "Concord cannot hold a persistent subscription to a stream whose name contains {SEPARATOR:?} ({stream})"
        )));
    }
    Ok(stream)
}

/// The Concord group of the subscription (`target`, `group`).
pub(crate) fn group_name(target: &Target, group: &str) -> Result<GroupName, GrpcError> {
    if group.is_empty() {
        return Err(GrpcError::Invalid("group_name is required".to_owned()));
    }
    GroupName::new(format!("{}{SEPARATOR}{group}", target.label()))
        .map_err(|e| GrpcError::Invalid(e.to_string()))
}

/// The subscription a Concord group stands for, if its name has the shape and its source
/// is the named stream or the global log.
pub(crate) fn subscription_of(name: &GroupName, source: &Source) -> Option<(Target, String)> {
    let (stream, group) = name.as_str().split_once(SEPARATOR)?;
    let target = if stream == ALL {
        Target::All
    } else {
        Target::Stream(StreamName::new(stream).ok()?)
    };
    (!group.is_empty() && target.is_source(source)).then(|| (target, group.to_owned()))
}

fn not_found(target: &Target, group: &str) -> GrpcError {
    GrpcError::SubscriptionNotFound {
        stream: target.label().to_owned(),
        group: group.to_owned(),
    }
}

/// The group's spec, when the group is the subscription (`target`, `group`).
async fn spec_of(
    groups: &Groups,
    name: &GroupName,
    target: &Target,
    group: &str,
) -> Result<GroupSpec, GrpcError> {
    match groups.spec(name).await {
        Ok(spec) if target.is_source(&spec.source) => Ok(spec),
        Ok(_) | Err(GroupError::NotFound(_)) => Err(not_found(target, group)),
        Err(e) => Err(e.into()),
    }
}

/// The settings a group takes from KurrentDB's: message timeout, retries, strategy.
struct Tuning {
    ack_timeout_ms: u64,
    max_deliveries: u32,
    ordering: Ordering,
}

impl Tuning {
    fn new(
        timeout_ms: Option<i64>,
        max_retry_count: i32,
        strategy: &str,
    ) -> Result<Self, GrpcError> {
        let ack_timeout_ms = match timeout_ms {
            None => 30_000,
            Some(ms) => u64::try_from(ms).map_err(|_| {
                GrpcError::Invalid(format!("the message timeout {ms} ms is negative"))
            })?,
        };
        // KurrentDB retries an event max_retry_count times after its first delivery.
        let retries = u32::try_from(max_retry_count).map_err(|_| {
            GrpcError::Invalid(format!("max_retry_count {max_retry_count} is negative"))
        })?;
        let ordering = match strategy {
            "" | "RoundRobin" | "DispatchToSingle" => Ordering::None,
            "Pinned" | "PinnedByCorrelation" => Ordering::PerStream,
            other => {
                return Err(GrpcError::Invalid(format!(
                    "unknown consumer strategy {other:?}: Concord knows RoundRobin, DispatchToSingle, Pinned and PinnedByCorrelation"
                )));
            }
        };
        Ok(Tuning {
            ack_timeout_ms,
            max_deliveries: retries.saturating_add(1),
            ordering,
        })
    }

    fn apply(self, spec: &mut GroupSpec) {
        spec.ack_timeout_ms = self.ack_timeout_ms;
        spec.max_deliveries = self.max_deliveries;
        spec.ordering = self.ordering;
    }
}

/// The named strategy enum's text (0 DispatchToSingle, 1 RoundRobin, 2 Pinned).
fn named_strategy(value: i32) -> &'static str {
    match value {
        0 => "DispatchToSingle",
        2 => "Pinned",
        _ => "RoundRobin",
    }
}

fn create_tuning(settings: Option<&create_req::Settings>) -> Result<Tuning, GrpcError> {
    use create_req::settings::MessageTimeout;
    let Some(s) = settings else {
        return Tuning::new(None, 10, "");
    };
    let timeout = match s.message_timeout {
        Some(MessageTimeout::MessageTimeoutMs(ms)) => Some(i64::from(ms)),
        Some(MessageTimeout::MessageTimeoutTicks(ticks)) => Some(ticks / 10_000),
        None => None,
    };
    #[allow(deprecated)]
    let strategy = if s.consumer_strategy.is_empty() {
        named_strategy(s.named_consumer_strategy)
    } else {
        s.consumer_strategy.as_str()
    };
    Tuning::new(timeout, s.max_retry_count, strategy)
}

fn update_tuning(settings: Option<&update_req::Settings>) -> Result<Tuning, GrpcError> {
    use update_req::settings::MessageTimeout;
    let Some(s) = settings else {
        return Tuning::new(None, 10, "");
    };
    let timeout = match s.message_timeout {
        Some(MessageTimeout::MessageTimeoutMs(ms)) => Some(i64::from(ms)),
        Some(MessageTimeout::MessageTimeoutTicks(ticks)) => Some(ticks / 10_000),
        None => None,
    };
    Tuning::new(
        timeout,
        s.max_retry_count,
        named_strategy(s.named_consumer_strategy),
    )
}

/// A stream revision to start at, as a version (revision + 1).
fn from_revision(revision: u64) -> Result<StartFrom, GrpcError> {
    revision
        .checked_add(1)
        .map(StartFrom::At)
        .ok_or_else(|| GrpcError::Invalid(format!("revision {revision} is out of range")))
}

/// Concord's filter for `$all` from KurrentDB's: a single stream prefix `<category>-` is
/// that category; an event-type regex `^A$` or `^(A|B)$` is those types; the clients'
/// "exclude system events" (`^[^\$].*`) is no filter (the source never holds `$` streams).
/// Anything else cannot be answered by a group, and is refused.
fn all_source(
    filter: Option<&create_req::all_options::FilterOption>,
) -> Result<AllSource, GrpcError> {
    use create_req::all_options::FilterOption;
    use create_req::all_options::filter_options::Filter;
    let unsupported = |what: &str| {
        GrpcError::Invalid(format!(
            "Concord's consumer groups filter $all by one category (stream prefix \"<category>-\") or by exact event types (regex ^(A|B)$); {what} is not supported"
        ))
    };
    let options = match filter {
        None | Some(FilterOption::NoFilter(_)) => return Ok(AllSource::default()),
        Some(FilterOption::Filter(options)) => options,
    };
    match &options.filter {
        Some(Filter::StreamIdentifier(e)) => {
            if !e.regex.is_empty() {
                return Err(unsupported("a stream name regex"));
            }
            let [prefix] = e.prefix.as_slice() else {
                return Err(unsupported("more than one stream prefix"));
            };
            let category = prefix
                .strip_suffix('-')
                .and_then(|c| Category::new(c).ok())
                .ok_or_else(|| unsupported(&format!("the stream prefix {prefix:?}")))?;
            Ok(AllSource {
                category: Some(category),
                ..AllSource::default()
            })
        }
        Some(Filter::EventType(e)) => {
            if !e.prefix.is_empty() {
                return Err(unsupported("an event type prefix"));
            }
            if e.regex == r"^[^\$].*" {
                return Ok(AllSource::default());
            }
            let types = exact_types(&e.regex)
                .ok_or_else(|| unsupported(&format!("the event type regex {:?}", e.regex)))?;
            Ok(AllSource {
                types,
                ..AllSource::default()
            })
        }
        None => Err(GrpcError::Invalid(
            "a filter needs a stream_identifier or event_type expression".to_owned(),
        )),
    }
}

/// The types of a regex `^A$` or `^(A|B)$` whose names are plain (letters, digits, `_`,
/// `-`).
fn exact_types(regex: &str) -> Option<Vec<EventType>> {
    let inner = regex.strip_prefix('^')?.strip_suffix('$')?;
    let inner = inner
        .strip_prefix('(')
        .and_then(|i| i.strip_suffix(')'))
        .unwrap_or(inner);
    inner
        .split('|')
        .map(|name| {
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if plain {
                EventType::new(name).ok()
            } else {
                None
            }
        })
        .collect()
}

/// `start_from` as KurrentDB reports it: a revision, or `C:<commit>/P:<prepare>` for `$all`
/// (`0` / `-1` and `C:0/P:0` / `C:-1/P:-1` for the start and the end).
fn start_from_text(target: &Target, from: StartFrom) -> String {
    match (target, from) {
        (Target::Stream(_), StartFrom::Start) => "0".to_owned(),
        (Target::Stream(_), StartFrom::End) => "-1".to_owned(),
        (Target::Stream(_), StartFrom::At(version)) => version.saturating_sub(1).to_string(),
        (Target::All, StartFrom::Start) => "C:0/P:0".to_owned(),
        (Target::All, StartFrom::End) => "C:-1/P:-1".to_owned(),
        (Target::All, StartFrom::At(p)) => format!("C:{p}/P:{p}"),
    }
}

fn as_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A group's info in KurrentDB's shape. The settings Concord has no counterpart for are
/// reported at KurrentDB's defaults.
fn subscription_info(
    target: &Target,
    group: &str,
    info: &GroupInfo,
    connections: Vec<crate::proto::event_store::client::persistent_subscriptions::subscription_info::ConnectionInfo>,
) -> SubscriptionInfo {
    let strategy = match info.ordering {
        Ordering::None => "RoundRobin",
        Ordering::PerStream => "Pinned",
    };
    SubscriptionInfo {
        event_source: target.label().to_owned(),
        group_name: group.to_owned(),
        status: "Live".to_owned(),
        connections,
        average_per_second: 0,
        total_items: as_i64(info.acked.saturating_add(info.skipped)),
        count_since_last_measurement: 0,
        last_checkpointed_event_position: String::new(),
        last_known_event_position: String::new(),
        resolve_link_tos: false,
        start_from: start_from_text(target, info.from),
        message_timeout_milliseconds: as_i32(info.ack_timeout_ms),
        extra_statistics: false,
        max_retry_count: as_i32(u64::from(info.max_deliveries.saturating_sub(1))),
        live_buffer_size: 500,
        buffer_size: 500,
        read_batch_size: 20,
        check_point_after_milliseconds: 2_000,
        min_check_point_count: 10,
        max_check_point_count: 1_000,
        read_buffer_count: as_i32(info.pending),
        live_buffer_count: 0,
        retry_buffer_count: 0,
        total_in_flight_messages: as_i32(info.in_flight),
        outstanding_messages_count: as_i32(info.in_flight),
        named_consumer_strategy: strategy.to_owned(),
        max_subscriber_count: 0,
        parked_message_count: as_i64(info.parked),
    }
}

/// One reader of a subscription, as GetInfo lists it.
#[derive(Debug)]
struct Connection {
    from: String,
    consumer: ConsumerName,
    buffer: usize,
    /// Event id → the ack id of the delivery this reader was sent.
    outstanding: Mutex<HashMap<uuid::Uuid, String>>,
    delivered: std::sync::atomic::AtomicU64,
}

impl Connection {
    fn outstanding(&self) -> std::sync::MutexGuard<'_, HashMap<uuid::Uuid, String>> {
        self.outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, ids: &[ProtoUuid]) -> Vec<String> {
        let mut outstanding = self.outstanding();
        ids.iter()
            .filter_map(|id| convert::event_id(Some(id)).ok())
            .filter_map(|id| outstanding.remove(&id.0))
            .collect()
    }
}

/// `PersistentSubscriptions`.
#[derive(Debug)]
pub(crate) struct Persistent {
    config: Arc<GrpcConfig>,
    groups: Arc<Groups>,
    /// The readers of each group in this process.
    readers: Arc<Mutex<HashMap<GroupName, Vec<Arc<Connection>>>>>,
}

impl Persistent {
    pub(crate) fn new(config: Arc<GrpcConfig>, groups: Arc<Groups>) -> Self {
        Persistent {
            config,
            groups,
            readers: Arc::default(),
        }
    }

    fn connections(
        &self,
        name: &GroupName,
    ) -> Vec<crate::proto::event_store::client::persistent_subscriptions::subscription_info::ConnectionInfo>
    {
        use crate::proto::event_store::client::persistent_subscriptions::subscription_info::ConnectionInfo;
        let readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        readers
            .get(name)
            .into_iter()
            .flatten()
            .map(|c| {
                let in_flight = c.outstanding().len();
                ConnectionInfo {
                    from: c.from.clone(),
                    username: String::new(),
                    average_items_per_second: 0,
                    total_items: as_i64(c.delivered.load(std::sync::atomic::Ordering::Relaxed)),
                    count_since_last_measurement: 0,
                    observed_measurements: Vec::new(),
                    available_slots: i32::try_from(c.buffer.saturating_sub(in_flight))
                        .unwrap_or(i32::MAX),
                    in_flight_messages: i32::try_from(in_flight).unwrap_or(i32::MAX),
                    connection_name: c.consumer.as_str().to_owned(),
                }
            })
            .collect()
    }

    fn check(&self, caller: &Caller, target: &Target) -> Result<(), GrpcError> {
        caller.check(self.config.gate.as_ref(), target.action())
    }
}

fn required<T>(options: Option<T>) -> Result<T, GrpcError> {
    options.ok_or_else(|| GrpcError::Invalid("the request needs options".to_owned()))
}

#[tonic::async_trait]
impl PersistentSubscriptions for Persistent {
    async fn create(&self, request: Request<CreateReq>) -> Result<Response<CreateResp>, Status> {
        use create_req::all_options::AllOption;
        use create_req::options::StreamOption;
        use create_req::stream_options::RevisionOption;
        let caller = Caller::from_metadata(request.metadata());
        let options = required(request.into_inner().options)?;
        let (target, source, from) = match &options.stream_option {
            Some(StreamOption::Stream(s)) => {
                let stream = subscribed_stream(s.stream_identifier.as_ref())?;
                let from = match s.revision_option {
                    Some(RevisionOption::Revision(r)) => from_revision(r)?,
                    Some(RevisionOption::End(_)) => StartFrom::End,
                    Some(RevisionOption::Start(_)) | None => StartFrom::Start,
                };
                (Target::Stream(stream.clone()), Source::Stream(stream), from)
            }
            Some(StreamOption::All(a)) => {
                let from = match &a.all_option {
                    Some(AllOption::Position(p)) => StartFrom::At(p.commit_position),
                    Some(AllOption::End(_)) => StartFrom::End,
                    Some(AllOption::Start(_)) | None => StartFrom::Start,
                };
                let source = Source::All(all_source(a.filter_option.as_ref())?);
                (Target::All, source, from)
            }
            #[allow(deprecated)]
            None => {
                // Clients before 21.10 name the stream in the deprecated field only.
                let stream = subscribed_stream(options.stream_identifier.as_ref())?;
                (
                    Target::Stream(stream.clone()),
                    Source::Stream(stream),
                    StartFrom::Start,
                )
            }
        };
        self.check(&caller, &target)?;
        let name = group_name(&target, &options.group_name)?;
        let mut spec = GroupSpec::new(source);
        spec.from = from;
        create_tuning(options.settings.as_ref())?.apply(&mut spec);
        match self.groups.spec(&name).await {
            Ok(_) => {
                return Err(GrpcError::SubscriptionExists {
                    stream: target.label().to_owned(),
                    group: options.group_name,
                }
                .into());
            }
            Err(GroupError::NotFound(_)) => {}
            Err(e) => return Err(GrpcError::from(e).into()),
        }
        self.groups
            .create_or_update(&name, spec)
            .await
            .map_err(GrpcError::from)?;
        tracing::info!(group = %name, "persistent subscription created over gRPC");
        Ok(Response::new(CreateResp {}))
    }

    async fn update(&self, request: Request<UpdateReq>) -> Result<Response<UpdateResp>, Status> {
        use update_req::options::StreamOption;
        let caller = Caller::from_metadata(request.metadata());
        let options = required(request.into_inner().options)?;
        #[allow(deprecated)]
        let target = match &options.stream_option {
            Some(StreamOption::Stream(s)) => Target::from_identifier(s.stream_identifier.as_ref())?,
            Some(StreamOption::All(_)) => Target::All,
            None => Target::from_identifier(options.stream_identifier.as_ref())?,
        };
        self.check(&caller, &target)?;
        let name = group_name(&target, &options.group_name)?;
        let mut spec = spec_of(&self.groups, &name, &target, &options.group_name).await?;
        // The start is fixed when a group is created; the clients send one with every
        // update (by default the end), so it is not taken from here.
        update_tuning(options.settings.as_ref())?.apply(&mut spec);
        self.groups
            .create_or_update(&name, spec)
            .await
            .map_err(GrpcError::from)?;
        Ok(Response::new(UpdateResp {}))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        use delete_req::options::StreamOption;
        let caller = Caller::from_metadata(request.metadata());
        let options = required(request.into_inner().options)?;
        let target = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => Target::from_identifier(Some(id))?,
            Some(StreamOption::All(_)) => Target::All,
            None => return Err(GrpcError::Invalid("a stream or all is required".to_owned()).into()),
        };
        self.check(&caller, &target)?;
        let name = group_name(&target, &options.group_name)?;
        spec_of(&self.groups, &name, &target, &options.group_name).await?;
        match self.groups.delete(&name).await {
            Ok(()) => {}
            Err(GroupError::NotFound(_)) => {
                return Err(not_found(&target, &options.group_name).into());
            }
            Err(e) => return Err(GrpcError::from(e).into()),
        }
        tracing::info!(group = %name, "persistent subscription deleted over gRPC");
        Ok(Response::new(DeleteResp {}))
    }

    type ReadStream = BoxStream<ReadResp>;

    async fn read(
        &self,
        request: Request<Streaming<ReadReq>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use read_req::options::StreamOption;
        let caller = Caller::from_metadata(request.metadata());
        let from = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let Some(ReadReq {
            content: Some(read_req::Content::Options(options)),
        }) = first
        else {
            return Err(GrpcError::Invalid(
                "a persistent subscription's first message must be its options".to_owned(),
            )
            .into());
        };
        let target = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => Target::from_identifier(Some(id))?,
            Some(StreamOption::All(_)) => Target::All,
            None => return Err(GrpcError::Invalid("a stream or all is required".to_owned()).into()),
        };
        self.check(&caller, &target)?;
        let name = group_name(&target, &options.group_name)?;
        spec_of(&self.groups, &name, &target, &options.group_name).await?;
        let as_string = matches!(
            options
                .uuid_option
                .as_ref()
                .and_then(|u| u.content.as_ref()),
            Some(read_req::options::uuid_option::Content::String(_))
        );
        let buffer = usize::try_from(options.buffer_size)
            .ok()
            .filter(|b| *b > 0)
            .unwrap_or(DEFAULT_BUFFER)
            .min(POLL_MAX);
        let id = uuid::Uuid::new_v4();
        let consumer = ConsumerName::new(format!("grpc {from} {}", id.simple()))
            .map_err(|e| GrpcError::Invalid(e.to_string()))?;
        let connection = Arc::new(Connection {
            from,
            consumer,
            buffer,
            outstanding: Mutex::new(HashMap::new()),
            delivered: std::sync::atomic::AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(buffer.saturating_add(1));
        let confirmation = ReadResp {
            content: Some(read_resp::Content::SubscriptionConfirmation(
                read_resp::SubscriptionConfirmation {
                    subscription_id: name.as_str().to_owned(),
                },
            )),
        };
        // Room for it was made above.
        let _ = tx.try_send(Ok(confirmation));
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.clone())
            .or_default()
            .push(Arc::clone(&connection));
        let session = Session {
            shutting_down: Box::pin(self.config.shutting_down()),
            groups: Arc::clone(&self.groups),
            readers: Arc::clone(&self.readers),
            group: name,
            connection,
            as_string,
        };
        tokio::spawn(session.run(inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_info(
        &self,
        request: Request<GetInfoReq>,
    ) -> Result<Response<GetInfoResp>, Status> {
        use get_info_req::options::StreamOption;
        let caller = Caller::from_metadata(request.metadata());
        let options = required(request.into_inner().options)?;
        let target = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => Target::from_identifier(Some(id))?,
            Some(StreamOption::All(_)) => Target::All,
            None => return Err(GrpcError::Invalid("a stream or all is required".to_owned()).into()),
        };
        self.check(&caller, &target)?;
        let name = group_name(&target, &options.group_name)?;
        let info = match self.groups.info(&name).await {
            Ok(info) if target.is_source(&info.source) => info,
            Ok(_) | Err(GroupError::NotFound(_)) => {
                return Err(not_found(&target, &options.group_name).into());
            }
            Err(e) => return Err(GrpcError::from(e).into()),
        };
        let connections = self.connections(&name);
        Ok(Response::new(GetInfoResp {
            subscription_info: Some(subscription_info(
                &target,
                &options.group_name,
                &info,
                connections,
            )),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<ReplayParkedReq>,
    ) -> Result<Response<ReplayParkedResp>, Status> {
        use replay_parked_req::options::StreamOption;
        let caller = Caller::from_metadata(request.metadata());
        let options = required(request.into_inner().options)?;
        let target = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => Target::from_identifier(Some(id))?,
            Some(StreamOption::All(_)) => Target::All,
            None => return Err(GrpcError::Invalid("a stream or all is required".to_owned()).into()),
        };
        self.check(&caller, &target)?;
        let name = group_name(&target, &options.group_name)?;
        spec_of(&self.groups, &name, &target, &options.group_name).await?;
        // `stop_at` is not honoured: a group replays all its parked events at once.
        self.groups
            .replay_parked(&name)
            .await
            .map_err(GrpcError::from)?;
        Ok(Response::new(ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<ListReq>) -> Result<Response<ListResp>, Status> {
        use list_req::options::ListOption;
        use list_req::stream_option::StreamOption;
        let caller = Caller::from_metadata(request.metadata());
        let options = request.into_inner().options;
        let only = match options.and_then(|o| o.list_option) {
            Some(ListOption::ListForStream(s)) => match s.stream_option {
                Some(StreamOption::Stream(id)) => Some(Target::from_identifier(Some(&id))?),
                Some(StreamOption::All(_)) => Some(Target::All),
                None => None,
            },
            Some(ListOption::ListAllSubscriptions(_)) | None => None,
        };
        if let Some(target) = &only {
            self.check(&caller, target)?;
        }
        let groups = self.groups.list().await.map_err(GrpcError::from)?;
        let mut subscriptions = Vec::new();
        for info in groups {
            let Some((target, group)) = subscription_of(&info.group, &info.source) else {
                continue;
            };
            if only.as_ref().is_some_and(|o| *o != target) || self.check(&caller, &target).is_err()
            {
                continue;
            }
            let connections = self.connections(&info.group);
            subscriptions.push(subscription_info(&target, &group, &info, connections));
        }
        Ok(Response::new(ListResp { subscriptions }))
    }

    async fn restart_subsystem(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        // Nothing to restart: a group's state is read from the store on every call.
        Ok(Response::new(Empty {}))
    }
}

/// One `Read` call: a consumer of the group.
struct Session {
    groups: Arc<Groups>,
    readers: Arc<Mutex<HashMap<GroupName, Vec<Arc<Connection>>>>>,
    group: GroupName,
    connection: Arc<Connection>,
    as_string: bool,
    /// Resolves when the server shuts down.
    shutting_down: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// What the inbound half and the poller of a session share.
#[derive(Debug)]
struct Shared {
    groups: Arc<Groups>,
    group: GroupName,
    connection: Arc<Connection>,
    as_string: bool,
    /// Woken when an ack or nack makes room in the reader's buffer.
    room: Notify,
}

type Sender = mpsc::Sender<Result<ReadResp, Status>>;

impl Session {
    async fn run(self, mut inbound: Streaming<ReadReq>, tx: Sender) {
        let Session {
            groups,
            readers,
            group,
            connection,
            as_string,
            mut shutting_down,
        } = self;
        let shared = Arc::new(Shared {
            groups,
            group,
            connection,
            as_string,
            room: Notify::new(),
        });
        let poller = tokio::spawn(Arc::clone(&shared).deliver(tx.clone()));
        let ended = loop {
            let message = tokio::select! {
                m = inbound.message() => m,
                () = tx.closed() => break None,
                () = shutting_down.as_mut() => break Some(GrpcError::ShuttingDown),
            };
            match message {
                Ok(Some(request)) => match shared.answer(request).await {
                    Ok(true) => {}
                    Ok(false) => {
                        break Some(GrpcError::Dropped(
                            "the subscriber stopped the subscription".to_owned(),
                        ));
                    }
                    Err(e) => break Some(e),
                },
                Ok(None) | Err(_) => break None,
            }
        };
        poller.abort();
        if let Some(e) = ended {
            let _ = tx.send(Err(e.into())).await;
        }
        shared.give_back().await;
        let mut readers = readers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = readers.get_mut(&shared.group) {
            list.retain(|c| !Arc::ptr_eq(c, &shared.connection));
            if list.is_empty() {
                readers.remove(&shared.group);
            }
        }
    }
}

impl Shared {
    /// Whatever the reader still held goes back to the group now, not at its timeout.
    async fn give_back(&self) {
        let held: Vec<String> = self
            .connection
            .outstanding()
            .drain()
            .map(|(_, a)| a)
            .collect();
        for chunk in held.chunks(concord_groups::ACK_IDS_MAX) {
            if let Err(e) = self
                .groups
                .nack(&self.group, chunk, NackAction::Retry)
                .await
            {
                tracing::warn!(group = %self.group, error = %e, "could not give a reader's events back");
            }
        }
    }

    /// Handles an ack or nack: `false` when the reader asked to stop.
    async fn answer(&self, request: ReadReq) -> Result<bool, GrpcError> {
        use read_req::nack::Action as Nak;
        let result = match request.content {
            Some(read_req::Content::Ack(ack)) => {
                let ids = self.connection.take(&ack.ids);
                self.settle(&ids, None).await.map(|()| true)
            }
            Some(read_req::Content::Nack(nack)) => {
                let ids = self.connection.take(&nack.ids);
                let (action, go_on) = match Nak::try_from(nack.action).unwrap_or(Nak::Unknown) {
                    Nak::Park => (NackAction::Park, true),
                    Nak::Skip => (NackAction::Skip, true),
                    Nak::Retry | Nak::Unknown => (NackAction::Retry, true),
                    Nak::Stop => (NackAction::Retry, false),
                };
                self.settle(&ids, Some(action)).await.map(|()| go_on)
            }
            Some(read_req::Content::Options(_)) | None => Ok(true),
        };
        self.room.notify_one();
        result
    }

    /// Acks (`None`) or nacks `ack_ids`, as many calls as the group's limit per call
    /// needs: a client may ack any number of ids in one message.
    async fn settle(&self, ack_ids: &[String], nack: Option<NackAction>) -> Result<(), GrpcError> {
        for chunk in ack_ids.chunks(concord_groups::ACK_IDS_MAX) {
            let result = match nack {
                None => self.groups.ack(&self.group, chunk).await,
                Some(action) => self.groups.nack(&self.group, chunk, action).await,
            };
            self.acked(result)?;
        }
        Ok(())
    }

    fn acked(&self, result: Result<usize, GroupError>) -> Result<(), GrpcError> {
        match result {
            Ok(_) => Ok(()),
            Err(GroupError::NotFound(_)) => Err(GrpcError::Dropped(format!(
                "the persistent subscription {} was deleted",
                self.group
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Polls the group whenever the reader has room, and sends what it gets.
    async fn deliver(self: Arc<Self>, tx: Sender) {
        loop {
            let room = self
                .connection
                .buffer
                .saturating_sub(self.connection.outstanding().len());
            if room == 0 {
                self.room.notified().await;
                continue;
            }
            let polled = self
                .groups
                .poll(&self.group, &self.connection.consumer, room, POLL_WAIT)
                .await;
            let messages = match polled {
                Ok(messages) => messages,
                Err(GroupError::NotFound(_)) => {
                    let e = GrpcError::Dropped(format!(
                        "the persistent subscription {} was deleted",
                        self.group
                    ));
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(GrpcError::from(e).into())).await;
                    return;
                }
            };
            for message in messages {
                self.connection
                    .outstanding()
                    .insert(*message.event.id.as_uuid(), message.ack_id.clone());
                self.connection
                    .delivered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let event = read_event(&message.event, message.delivery, self.as_string);
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A delivery as the protocol's `ReadEvent`, with its retry count.
fn read_event(event: &RecordedEvent, delivery: u32, as_string: bool) -> ReadResp {
    use read_resp::read_event::{Count, Position, RecordedEvent as Recorded};
    let read = convert::read_event(event, as_string);
    let recorded = read.event.map(|e| Recorded {
        id: e.id,
        stream_identifier: e.stream_identifier,
        stream_revision: e.stream_revision,
        prepare_position: e.prepare_position,
        commit_position: e.commit_position,
        metadata: e.metadata,
        custom_metadata: e.custom_metadata,
        data: e.data,
    });
    ReadResp {
        content: Some(read_resp::Content::Event(read_resp::ReadEvent {
            event: recorded,
            link: None,
            position: Some(Position::CommitPosition(event.position.get())),
            count: Some(Count::RetryCount(
                i32::try_from(delivery.saturating_sub(1)).unwrap_or(i32::MAX),
            )),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> Target {
        Target::Stream(StreamName::new(name).expect("valid"))
    }

    #[test]
    fn a_subscription_maps_to_one_group_name_and_back() {
        let name = group_name(&stream("order-1"), "workers").expect("valid");
        assert_eq!(name.as_str(), "order-1::workers");
        let source = Source::Stream(StreamName::new("order-1").expect("valid"));
        assert_eq!(
            subscription_of(&name, &source),
            Some((stream("order-1"), "workers".to_owned()))
        );
        let all = group_name(&Target::All, "a::b").expect("valid");
        assert_eq!(all.as_str(), "$all::a::b");
        assert_eq!(
            subscription_of(&all, &Source::All(AllSource::default())),
            Some((Target::All, "a::b".to_owned()))
        );
    }

    #[test]
    fn a_stream_whose_name_holds_the_separator_is_refused_so_names_cannot_collide() {
        let id = convert::stream_identifier(&StreamName::new("a::b").expect("valid"));
        assert!(matches!(
            Target::from_identifier(Some(&id)),
            Err(GrpcError::Invalid(_))
        ));
    }

    #[test]
    fn a_group_whose_source_is_another_stream_is_no_subscription() {
        let name = GroupName::new("order-1::workers").expect("valid");
        let other = Source::Stream(StreamName::new("order-2").expect("valid"));
        assert_eq!(subscription_of(&name, &other), None);
        assert_eq!(
            subscription_of(&GroupName::new("plain").expect("valid"), &other),
            None
        );
    }

    #[test]
    fn retries_and_strategies_map_onto_deliveries_and_ordering() {
        let t = Tuning::new(Some(2_000), 10, "RoundRobin").expect("valid");
        assert_eq!(
            (t.ack_timeout_ms, t.max_deliveries, t.ordering),
            (2_000, 11, Ordering::None)
        );
        let p = Tuning::new(None, 0, "PinnedByCorrelation").expect("valid");
        assert_eq!((p.max_deliveries, p.ordering), (1, Ordering::PerStream));
        assert!(Tuning::new(None, -1, "RoundRobin").is_err());
        assert!(Tuning::new(None, 1, "Random").is_err());
    }

    #[test]
    fn filters_that_a_group_can_answer_are_mapped_and_others_refused() {
        use create_req::all_options::FilterOption;
        use create_req::all_options::filter_options::{Expression, Filter};
        let filter = |f: Filter| {
            FilterOption::Filter(create_req::all_options::FilterOptions {
                filter: Some(f),
                window: None,
                checkpoint_interval_multiplier: 1,
            })
        };
        let by_prefix = filter(Filter::StreamIdentifier(Expression {
            regex: String::new(),
            prefix: vec!["order-".to_owned()],
        }));
        let source = all_source(Some(&by_prefix)).expect("a category");
        assert_eq!(
            source.category.as_ref().map(Category::as_str),
            Some("order")
        );
        let by_types = filter(Filter::EventType(Expression {
            regex: "^(Placed|Paid)$".to_owned(),
            prefix: Vec::new(),
        }));
        let source = all_source(Some(&by_types)).expect("types");
        assert_eq!(source.types.len(), 2);
        let system = filter(Filter::EventType(Expression {
            regex: r"^[^\$].*".to_owned(),
            prefix: Vec::new(),
        }));
        assert_eq!(
            all_source(Some(&system)).expect("no filter"),
            AllSource::default()
        );
        let regex = filter(Filter::StreamIdentifier(Expression {
            regex: "^ord.*".to_owned(),
            prefix: Vec::new(),
        }));
        assert!(matches!(
            all_source(Some(&regex)),
            Err(GrpcError::Invalid(_))
        ));
    }
}
