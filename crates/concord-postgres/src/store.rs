//! `PostgresStore`: the `EventStore` over a PostgreSQL schema. Appends go to this process's
//! writer task (group commit, see `writer`); reads go straight to a pooled connection and
//! are bounded by the durable head (the greatest mark, ADR 0004): every position at or below
//! it is committed, visible and flushed, so a read never sees a position before every
//! earlier one, nor one a crash could take back. A stream read first reads the stream's
//! state as of that head and shows only what its lifecycle keeps (`lifecycle`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use concord_core::{
    AllPage, AppendOutcome, AppendRequest, Appending, DeleteMode, Direction, EventStore, Filter,
    HeadSignal, Limits, MetadataChange, MultiAppendOutcome, MultiAppendRequest, Position, Query,
    QueryPage, RecordedAt, RecordedEvent, ScavengeReport, StoreError, StreamInfo, StreamLifecycle,
    StreamMetadata, StreamName, StreamPast, Version,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::config::{self, StoreUrl};
use crate::error::{self, PostgresError};
use crate::lifecycle;
use crate::matching::{MatchingError, matching_events};
use crate::rows::{COLUMNS, bound, decode};
use crate::schema;
use crate::writer::{Job, WriteFunction, WriteSql, Writer};

/// How long `wait_for_head` waits for a wake-up before it asks the database itself (the
/// bounded fallback for a lost notification or a listener that is reconnecting).
const HEAD_POLL: Duration = Duration::from_secs(1);
/// Appends queued for the writer at most; further callers wait for room.
const QUEUE_APPENDS_MAX: usize = 4096;

/// Options of a Postgres store beyond its URL.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// The store's limits.
    pub limits: Limits,
    /// Pooled connections for reads (default 16); the writer (two) and the LISTEN
    /// connection have their own besides.
    pub pool_size: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            limits: Limits::default(),
            pool_size: 16,
        }
    }
}

/// An event store in a PostgreSQL schema. Cheap to clone; every clone shares one writer.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    schema: String,
    hosts: String,
    limits: Limits,
    signal: HeadSignal,
    jobs: mpsc::Sender<Job>,
    /// The writer's state, for an append written on its caller's task (`submit`), and the
    /// appends under way, which tell a lone caller's.
    writer: Arc<Writer>,
    listener: Listener,
}

/// The LISTEN connection, started by the first `wait_for_head`: a process that never
/// follows the log (a lone writer, a CLI) keeps no session that every commit of every
/// process wakes.
#[derive(Debug)]
struct Listener {
    started: std::sync::atomic::AtomicBool,
    state: std::sync::Mutex<Listening>,
}

#[derive(Debug)]
enum Listening {
    Idle {
        config: Box<tokio_postgres::Config>,
        channel: String,
        head_sql: String,
    },
    Running(tokio::task::JoinHandle<()>),
    Stopped,
}

impl Listener {
    /// Starts the LISTEN connection unless it runs already.
    fn start(&self, signal: &HeadSignal) {
        use std::sync::atomic::Ordering;
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Listening::Idle {
            config,
            channel,
            head_sql,
        } = &*state
        {
            let task = tokio::spawn(listen(
                (**config).clone(),
                channel.clone(),
                head_sql.clone(),
                signal.clone(),
            ));
            *state = Listening::Running(task);
        }
        self.started.store(true, Ordering::Release);
    }

    fn stop(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Listening::Running(task) = &*state {
            task.abort();
        }
        *state = Listening::Stopped;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.stop();
        self.signal.close();
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db?schema=NAME`, libpq's multi-host
    /// form and `target_session_attrs` included), creating or migrating the schema.
    ///
    /// # Errors
    /// [`PostgresError`]: a bad URL, no reachable primary, a schema of a newer format.
    pub async fn connect(url: &str) -> Result<Self, PostgresError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// As [`PostgresStore::connect`], with options.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, PostgresError> {
        let StoreUrl {
            config,
            schema,
            hosts,
        } = config::parse(url)?;
        let pool = build_pool(&config, options.pool_size.max(1))?;
        // The writer has a pool of its own (a connection per batch in flight), so that
        // readers filling the read pool never delay an append, and a lost connection is
        // replaced on the next batch.
        let writer_pool = build_pool(&writer_config(&config), crate::writer::BATCHES_IN_FLIGHT)?;
        let connect_error = |e: deadpool_postgres::PoolError| PostgresError::Connect {
            hosts: hosts.clone(),
            source: Box::new(e),
        };
        let mut client = pool.get().await.map_err(connect_error)?;
        let functions = [
            WriteFunction::lone(&schema),
            WriteFunction::one(&schema),
            WriteFunction::batch(&schema),
        ];
        schema::migrate(&mut client, &schema, &functions).await?;
        let channel = schema::channel(&schema);
        // A mark first: batches that committed without one (their process died before it)
        // become durable to readers now that a flush covers them.
        let head = schema::mark(&**client, &schema)
            .await
            .map_err(|e| PostgresError::Migrate {
                schema: schema.clone(),
                source: e,
            })?;
        drop(client);
        let signal = HeadSignal::new(head);
        let head_sql = schema::durable_head_sql(&schema);
        let mut listen_config = config;
        if listen_config.get_application_name() == Some(config::APPLICATION_NAME) {
            listen_config.application_name(config::LISTENER_APPLICATION_NAME);
        }
        let listener = Listener {
            started: std::sync::atomic::AtomicBool::new(false),
            state: std::sync::Mutex::new(Listening::Idle {
                config: Box::new(listen_config),
                channel: channel.clone(),
                head_sql,
            }),
        };
        let (jobs, receiver) = mpsc::channel(QUEUE_APPENDS_MAX);
        let writer = Writer {
            pool: writer_pool,
            schema: schema.clone(),
            hosts: hosts.clone(),
            channel,
            limits: options.limits,
            signal: signal.clone(),
            write_sql: WriteSql::new(&schema, &functions),
            known: std::sync::Mutex::default(),
            flights: std::sync::atomic::AtomicUsize::new(0),
            appending: Appending::default(),
            marks: std::sync::atomic::AtomicU64::new(0),
        };
        let writer = Arc::new(writer);
        tokio::spawn(Arc::clone(&writer).run(receiver));
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                schema,
                hosts,
                limits: options.limits,
                signal,
                jobs,
                writer,
                listener,
            }),
        })
    }

    /// The PostgreSQL schema this store lives in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// This process's head signal (a delete touches it).
    pub(crate) fn signal(&self) -> &HeadSignal {
        &self.inner.signal
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| error::pool(&self.inner.hosts, e))
    }

    /// A read-committed transaction on `client`: what every lifecycle change, scavenge
    /// chunk and import runs in (their locks, not the isolation level, order them).
    pub(crate) async fn read_committed<'c>(
        &self,
        client: &'c mut deadpool_postgres::Object,
    ) -> Result<deadpool_postgres::Transaction<'c>, StoreError> {
        client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(|e| self.db(e))
    }

    pub(crate) fn db(&self, e: tokio_postgres::Error) -> StoreError {
        error::driver(&self.inner.hosts, e)
    }

    async fn submit(&self, request: MultiAppendRequest) -> Result<MultiAppendOutcome, StoreError> {
        let (_appending, alone) = self.inner.writer.appending.enter();
        // A lone caller with nothing queued: written on its task when the writer is idle. A
        // caller cancelled inside leaves its statement whole or not at all, as a queued
        // job's batch is (one statement in autocommit).
        if alone
            && self.inner.jobs.capacity() == self.inner.jobs.max_capacity()
            && let Some(answer) = self.inner.writer.write_alone(&request).await
        {
            return answer;
        }
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Unavailable {
            backend: "postgres",
            message: "the store's writer has stopped".into(),
            source: None,
        };
        self.inner
            .jobs
            .send(Job { request, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// The stream's row (lifecycle and last version), with a cached statement: every
    /// `read_stream` and `stream_version` starts with it.
    async fn stored(
        &self,
        client: &deadpool_postgres::Object,
        stream: &StreamName,
    ) -> Result<Option<lifecycle::Stored>, StoreError> {
        let stmt = client
            .prepare_cached(&lifecycle::durable_stored_sql(&self.inner.schema))
            .await
            .map_err(|e| self.db(e))?;
        let row = client
            .query_opt(&stmt, &[&stream.as_str()])
            .await
            .map_err(|e| self.db(e))?;
        row.map(|r| lifecycle::Stored::decode(&r, 0)).transpose()
    }

    /// The durable head (ADR 0004): what every read is bounded by.
    async fn read_head(&self) -> Result<Position, StoreError> {
        let client = self.client().await?;
        let sql = schema::durable_head_sql(&self.inner.schema);
        let stmt = client.prepare_cached(&sql).await.map_err(|e| self.db(e))?;
        let row = client.query_one(&stmt, &[]).await.map_err(|e| self.db(e))?;
        let head: i64 = row.try_get(0).map_err(|e| self.db(e))?;
        let head = Position(u64::try_from(head).unwrap_or(0));
        self.inner.signal.advance(head);
        Ok(head)
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.inner.limits.check_append(&request)?;
        let outcome = self
            .submit(MultiAppendRequest::from(request))
            .await
            .map_err(|e| match e {
                StoreError::Conflicts(mut list) if list.len() == 1 => match list.pop() {
                    Some(c) => StoreError::conflict(c),
                    None => StoreError::Conflicts(list),
                },
                other => other,
            })?;
        outcome.parts.into_iter().next().ok_or_else(|| {
            StoreError::Corrupted("the postgres writer answered an append without a part".into())
        })
    }

    async fn append_multi(
        &self,
        request: MultiAppendRequest,
    ) -> Result<MultiAppendOutcome, StoreError> {
        self.inner.limits.check_multi_append(&request)?;
        self.submit(request).await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = bound(limit.clamp(1, self.inner.limits.read_limit_max.max(1)) as u64);
        let s = &self.inner.schema;
        let client = self.client().await?;
        // The stream's state first, then its events up to the last version that state
        // knows: a read shows the stream as it was at one moment, never a retention window
        // from one moment applied to events appended after it.
        let Some(stored) = self.stored(&client, stream).await? else {
            return Ok(Vec::new());
        };
        stored.check_not_tombstoned(stream)?;
        let (sql, first, second) = match direction {
            Direction::Forward => (
                lifecycle::forward_sql(s),
                from.max(stored.floor()),
                stored.last,
            ),
            Direction::Backward => (
                lifecycle::backward_sql(s),
                from.min(stored.last),
                stored.floor(),
            ),
        };
        let stmt = client.prepare_cached(&sql).await.map_err(|e| self.db(e))?;
        let rows = client
            .query(
                &stmt,
                &[
                    &stream.as_str(),
                    &bound(first.get()),
                    &bound(second.get()),
                    &stored.oldest_kept(RecordedAt::now()),
                    &limit,
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        lifecycle::decode_all(&rows)
    }

    async fn read_all(
        &self,
        from: Position,
        filter: &Filter,
        limit: usize,
    ) -> Result<AllPage, StoreError> {
        filter.validate()?;
        let limit = limit.clamp(1, self.inner.limits.read_limit_max.max(1));
        let head = self.read_head().await?;
        if from > head {
            return Ok(AllPage {
                events: Vec::new(),
                next_from: from.max(head.next()),
                head,
            });
        }
        let s = &self.inner.schema;
        let client = self.client().await?;
        let rows = if filter.is_all() {
            let sql = format!(
                "SELECT {COLUMNS} FROM {s}.concord_events WHERE position >= $1 AND position <= $2 \
                 ORDER BY position LIMIT $3"
            );
            let stmt = client.prepare_cached(&sql).await.map_err(|e| self.db(e))?;
            client
                .query(
                    &stmt,
                    &[&bound(from.get()), &bound(head.get()), &bound(limit as u64)],
                )
                .await
        } else {
            let sql = crate::matching::filtered_sql(s, !filter.tags.is_empty());
            let stmt = client.prepare_cached(&sql).await.map_err(|e| self.db(e))?;
            let category = filter.category.as_ref().map(|c| c.as_str().to_owned());
            let types: Vec<&str> = filter.types.iter().map(|t| t.as_str()).collect();
            let tags: Vec<&str> = filter.tags.iter().map(|t| t.as_str()).collect();
            client
                .query(
                    &stmt,
                    &[
                        &bound(from.get()),
                        &bound(head.get()),
                        &category,
                        &types,
                        &tags,
                        &bound(limit as u64),
                    ],
                )
                .await
        }
        .map_err(|e| self.db(e))?;
        let events: Vec<RecordedEvent> = rows.iter().map(decode).collect::<Result<_, _>>()?;
        let next_from = match events.last() {
            Some(last) if events.len() == limit => last.position.next(),
            _ => head.next(),
        };
        Ok(AllPage {
            events,
            next_from,
            head,
        })
    }

    async fn query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<QueryPage, StoreError> {
        query.validate()?;
        let limit = self.inner.limits.query_page(limit);
        let head = self.read_head().await?;
        let client = self.client().await?;
        let client: &tokio_postgres::Client = &client;
        // One more than asked, to know whether there is a next page.
        let mut events = matching_events(
            client,
            &self.inner.schema,
            query,
            after,
            head,
            limit.saturating_add(1),
        )
        .await
        .map_err(|e| match e {
            MatchingError::Driver(e) => self.db(e),
            MatchingError::Decode(e) => e,
        })?;
        let next = if events.len() > limit {
            events.truncate(limit);
            events.last().map(|e| e.position)
        } else {
            None
        };
        Ok(QueryPage { events, head, next })
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        let client = self.client().await?;
        match self.stored(&client, stream).await? {
            None => Ok(Version::NONE),
            Some(stored) => {
                stored.check_not_tombstoned(stream)?;
                Ok(stored.visible_version())
            }
        }
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let limit = bound(limit.clamp(1, self.inner.limits.read_limit_max.max(1)) as u64);
        let sql = format!(
            "SELECT stream, version, last_position FROM {}.{} \
             WHERE stream >= $1 AND starts_with(stream, $1) \
             AND ($2::text IS NULL OR stream > $2) \
             AND NOT tombstoned AND version > deleted_through \
             ORDER BY stream LIMIT $3",
            self.inner.schema,
            schema::STREAM_DURABLE
        );
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await.map_err(|e| self.db(e))?;
        let after = after.map(|a| a.as_str().to_owned());
        let rows = client
            .query(&stmt, &[&prefix, &after, &limit])
            .await
            .map_err(|e| self.db(e))?;
        rows.iter()
            .map(|r| {
                let stream: &str = r.try_get(0).map_err(|e| self.db(e))?;
                let version: i64 = r.try_get(1).map_err(|e| self.db(e))?;
                let last: i64 = r.try_get(2).map_err(|e| self.db(e))?;
                Ok(StreamInfo {
                    stream: StreamName::stored(stream)
                        .map_err(|e| StoreError::Corrupted(format!("concord_streams: {e}")))?,
                    version: Version(u64::try_from(version).unwrap_or(0)),
                    last_position: Position(u64::try_from(last).unwrap_or(0)),
                })
            })
            .collect()
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.read_head().await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, DeleteMode::Soft, expected).await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, DeleteMode::Tombstone, expected).await
    }

    async fn tombstone_stream_name(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, DeleteMode::TombstoneName, expected)
            .await
    }

    async fn import(&self, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
        self.import_events(events).await
    }

    async fn list_stream_pasts(
        &self,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamPast>, StoreError> {
        self.stream_pasts(after, limit).await
    }

    async fn import_stream_past(&self, past: &StreamPast) -> Result<(), StoreError> {
        self.import_past(past).await
    }

    async fn import_head(&self, head: Position) -> Result<(), StoreError> {
        self.raise_head(head).await
    }

    async fn stream_lifecycle(&self, stream: &StreamName) -> Result<StreamLifecycle, StoreError> {
        self.lifecycle(stream).await
    }

    async fn stream_metadata(&self, stream: &StreamName) -> Result<StreamMetadata, StoreError> {
        self.metadata(stream).await
    }

    async fn change_stream_metadata(
        &self,
        stream: &StreamName,
        change: MetadataChange,
    ) -> Result<StreamMetadata, StoreError> {
        self.change_metadata(stream, change).await
    }

    async fn scavenge(&self) -> Result<ScavengeReport, StoreError> {
        self.run_scavenge().await
    }

    async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError> {
        let signal = &self.inner.signal;
        self.inner.listener.start(signal);
        if signal.head() > after {
            return Ok(signal.head());
        }
        match tokio::time::timeout(HEAD_POLL, signal.wait_beyond(after)).await {
            Ok(head) => Ok(head),
            Err(_) => self.read_head().await,
        }
    }
}

/// The writer's sessions: every statement they run looks rows up by key, so joins and scans
/// that read a table whole are ruled out. A prepared statement's generic plan is made once,
/// from the statistics of the moment: made while a new store's log was a few rows, a hash
/// join over the whole log, or a scan of a stream's every id, looked cheapest and stayed,
/// making each append slower the longer the log (1.2 ms per lone append at 3 500 events).
fn writer_config(config: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut writer = config.clone();
    let options = config.get_options().unwrap_or_default();
    writer.options(format!(
        "{options} -c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off"
    ));
    writer
}

fn build_pool(config: &tokio_postgres::Config, size: usize) -> Result<Pool, PostgresError> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(config::CONNECT_TIMEOUT))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| PostgresError::Url(e.to_string()))
}

/// Keeps a LISTEN connection open and advances `signal` with the head each notification
/// carries; after every (re)connect it reads the head itself, so notifications missed while
/// disconnected are covered. Runs until aborted.
async fn listen(
    config: tokio_postgres::Config,
    channel: String,
    head_sql: String,
    signal: HeadSignal,
) {
    loop {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let (sender, mut heads) = futures::channel::mpsc::unbounded::<String>();
            let driver = tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(n) = message
                        && sender.unbounded_send(n.payload().to_owned()).is_err()
                    {
                        break;
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {channel}"))
                .await
                .is_ok()
            {
                if let Ok(head) = client
                    .query_one(&head_sql, &[])
                    .await
                    .and_then(|r| r.try_get::<_, i64>(0))
                {
                    signal.advance(Position(u64::try_from(head).unwrap_or(0)));
                }
                while let Some(payload) = heads.next().await {
                    if let Ok(head) = payload.parse::<u64>() {
                        signal.advance(Position(head));
                    }
                }
            }
            driver.abort();
        }
        // Retry after a pause; subscribers meanwhile fall back to polling the head.
        tokio::time::sleep(HEAD_POLL).await;
    }
}
