//! `ScyllaStore`: the store on ScyllaDB (or Apache Cassandra 4.1+/5.0), through the `scylla`
//! driver's CQL protocol v4.
//!
//! - `options`: [`ScyllaOptions`], the operator's settings.
//! - `migrations`: the versioned schema and [`migrate`].
//! - `statements`: every statement, prepared once at connect (token-aware routing).
//! - `codec`: rows to model types and back.
//! - `pipeline`: the per-conversation append pipeline that keeps `MessageStore::append`'s
//!   contract (dense seqs, submission order, fail-everything-behind, atomic effects).
//! - `accounts`, `conversations`, `messages`: the trait implementations.
//! - `errors`: driver errors as `StoreError`s that tell an operator what to check.
//!
//! Writes that precede an acknowledgement use `write_consistency` (`LOCAL_QUORUM` by default),
//! reads `read_consistency`; uniqueness (usernames, direct pairs, id blocks) uses lightweight
//! transactions at `LOCAL_SERIAL`. Every request has the client-side timeout
//! `request_timeout_ms`. Writes carry client-side monotonic timestamps, so the writes of this
//! node apply in the order it issued them whichever coordinator receives them. The table layout
//! and the reasons for it are in docs/storage.md.

mod accounts;
mod codec;
mod conversations;
mod errors;
mod messages;
pub mod migrations;
mod options;
mod pipeline;
mod statements;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::scylla::client::execution_profile::ExecutionProfile;
use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::deserialize::row::DeserializeRow;
use ::scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use ::scylla::response::query_result::QueryResult;
use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::batch::Batch;
use ::scylla::statement::batch::BatchType;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::SerialConsistency;
use ::scylla::value::CqlValue;
use ::scylla::value::Row;
use futures_util::TryStreamExt;

pub use self::migrations::migrate;
pub use self::options::CqlConsistency;
pub use self::options::ScyllaOptions;
use self::statements::Statements;
use crate::store::StoreError;

/// Name of the id counter of users in `id_counters`.
const USER_IDS: &str = "user_id";
/// Name of the id counter of conversations in `id_counters`.
const CONVERSATION_IDS: &str = "conversation_id";
/// Lightweight-transaction attempts for one id block before giving up (contention).
const ID_BLOCK_ATTEMPTS: u32 = 20;

/// Open a driver session with these options (contact points, credentials, datacenter,
/// timeouts, consistency), without touching the keyspace. `roost migrate` and `roost
/// checkconfig` use this; [`ScyllaStore::connect`] too.
pub async fn open_session(options: &ScyllaOptions) -> Result<Session, StoreError> {
    let problems = options.problems("scylla.");
    if !problems.is_empty() {
        return Err(StoreError::Unavailable(format!(
            "invalid ScyllaDB settings: {}",
            problems.join("; ")
        )));
    }
    let profile = ExecutionProfile::builder()
        .consistency(options.read_consistency.to_driver())
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(Duration::from_millis(options.request_timeout_ms)))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&options.contact_points)
        .connection_timeout(Duration::from_millis(options.connect_timeout_ms))
        .default_execution_profile_handle(profile.into_handle())
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
    if let Some(datacenter) = &options.local_datacenter {
        builder = builder.prefer_datacenter(datacenter.clone());
    }
    if let Some(username) = &options.username {
        builder = builder.user(username, options.password.clone().unwrap_or_default());
    }
    // The driver retries unreachable contact points internally; bound the whole attempt.
    let deadline = Duration::from_millis(options.connect_timeout_ms.saturating_mul(3));
    match tokio::time::timeout(deadline, builder.build()).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(error)) => Err(errors::connect(&options.contact_points, error)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "cannot connect to the CQL cluster at {} within {} ms (check that the nodes are up and \
             that scylla.contact_points names their CQL port, 9042 by default)",
            options.contact_points.join(", "),
            deadline.as_millis()
        ))),
    }
}

/// The ScyllaDB-backed [`Store`](crate::store::Store). See the module docs.
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    session: Arc<Session>,
    statements: Statements,
    options: ScyllaOptions,
    /// The keyspace's fixed partition size (from `store_settings`).
    events_per_partition: u64,
    user_ids: tokio::sync::Mutex<IdBlock>,
    conversation_ids: tokio::sync::Mutex<IdBlock>,
    lanes: std::sync::Mutex<HashMap<crate::ids::ConversationId, pipeline::Lane>>,
    runtime: tokio::runtime::Handle,
}

/// Ids `[next, end)` reserved by this store.
#[derive(Default)]
struct IdBlock {
    next: u64,
    end: u64,
}

impl ScyllaStore {
    /// Connect to the cluster and open the store; see [`ScyllaStore::open`].
    pub async fn connect(options: ScyllaOptions) -> Result<Self, StoreError> {
        let session = open_session(&options).await?;
        Self::open(Arc::new(session), options).await
    }

    /// Open the store on an existing session: apply migrations when
    /// `apply_migrations_on_start`, check the schema version and the keyspace's fixed settings,
    /// and prepare every statement. Must be called inside a tokio runtime: the append pipelines
    /// run as tasks on it.
    pub async fn open(session: Arc<Session>, options: ScyllaOptions) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::Unavailable("the ScyllaDB store must be opened inside a tokio runtime".into()))?;
        if options.apply_migrations_on_start {
            let applied = migrate(&session, &options).await?;
            if !applied.is_empty() {
                tracing::info!(keyspace = %options.keyspace, ?applied, "Applied schema migrations.");
            }
        }
        let versions = migrations::applied_versions(&session, &options).await?;
        let current = versions.last().copied().unwrap_or(0);
        if current < migrations::LATEST {
            return Err(StoreError::Unavailable(format!(
                "keyspace `{}` is at schema version {current}, this build needs {}: run `roost migrate` \
                 (or set scylla.apply_migrations_on_start = true)",
                options.keyspace,
                migrations::LATEST
            )));
        }
        if current > migrations::LATEST {
            tracing::warn!(keyspace = %options.keyspace, current, needed = migrations::LATEST,
                "The keyspace was migrated by a newer build; this build uses only the tables it knows.");
        }
        let statements = Statements::prepare(&session, &options).await?;
        let events_per_partition = fixed_partition_size(&session, &statements, &options).await?;
        tracing::info!(
            contact_points = ?options.contact_points,
            keyspace = %options.keyspace,
            write_consistency = ?options.write_consistency,
            read_consistency = ?options.read_consistency,
            "Opened the ScyllaDB store."
        );
        Ok(Self {
            inner: Arc::new(Inner {
                session,
                statements,
                events_per_partition,
                options,
                user_ids: tokio::sync::Mutex::new(IdBlock::default()),
                conversation_ids: tokio::sync::Mutex::new(IdBlock::default()),
                lanes: std::sync::Mutex::new(HashMap::new()),
                runtime,
            }),
        })
    }

    /// The driver session (shared; for tools and tests).
    pub fn session(&self) -> &Arc<Session> {
        &self.inner.session
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &ScyllaOptions {
        &self.inner.options
    }
}

/// The keyspace's `events_per_partition`, which must match the configured one.
async fn fixed_partition_size(
    session: &Session,
    statements: &Statements,
    options: &ScyllaOptions,
) -> Result<u64, StoreError> {
    const OP: &str = "reading store_settings";
    let result = session
        .execute_unpaged(&statements.select_setting, ("events_per_partition",))
        .await
        .map_err(|e| errors::execution(OP, e))?;
    let stored = first_row::<(Option<i64>,)>(OP, result)?.and_then(|(v,)| v);
    match stored {
        None => Err(StoreError::Unavailable(format!(
            "keyspace `{}` has no events_per_partition setting: run `roost migrate`",
            options.keyspace
        ))),
        Some(stored) if stored as u64 != options.events_per_partition => Err(StoreError::Unavailable(format!(
            "scylla.events_per_partition is {} but keyspace `{}` was created with {stored}; it cannot \
             change after the first migration: set it back to {stored}",
            options.events_per_partition, options.keyspace
        ))),
        Some(stored) => codec::unsigned(OP, stored),
    }
}

/// The first row of a result, if any.
fn first_row<R>(operation: &'static str, result: QueryResult) -> Result<Option<R>, StoreError>
where
    R: for<'f> DeserializeRow<'f, 'f>,
{
    let rows = result.into_rows_result().map_err(|e| errors::corrupt(operation, e))?;
    rows.maybe_first_row::<R>().map_err(|e| errors::corrupt(operation, e))
}

/// Whether a lightweight transaction applied. Only column 0 (`[applied]`) is read: ScyllaDB
/// returns the existing row's columns after it even when applied, Cassandra only when not.
fn lwt_applied(operation: &'static str, result: QueryResult) -> Result<bool, StoreError> {
    let row = first_row::<Row>(operation, result)?;
    Ok(matches!(
        row.as_ref().and_then(|r| r.columns.first()),
        Some(Some(CqlValue::Boolean(true)))
    ))
}

/// A logged batch under construction, with an estimate of its size.
pub(super) struct WriteBatch {
    batch: Batch,
    values: Vec<Box<dyn SerializeRow + Send + Sync>>,
}

impl WriteBatch {
    fn logged(options: &ScyllaOptions) -> Self {
        let mut batch = Batch::new(BatchType::Logged);
        batch.set_consistency(options.write_consistency.to_driver());
        Self {
            batch,
            values: Vec::new(),
        }
    }

    fn push(&mut self, statement: &PreparedStatement, values: impl SerializeRow + Send + Sync + 'static) {
        self.batch.append_statement(statement.clone());
        self.values.push(Box::new(values));
    }

    fn len(&self) -> usize {
        self.values.len()
    }
}

impl Inner {
    async fn execute(
        &self,
        operation: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(|e| errors::execution(operation, e))
    }

    /// A single-row read.
    async fn one<R>(
        &self,
        operation: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        first_row(operation, self.execute(operation, statement, values).await?)
    }

    /// Every row of a read, fetched page by page (the driver's paging) so large partitions
    /// never arrive as one response.
    async fn all<R>(
        &self,
        operation: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let pager = self
            .session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|e| errors::pager(operation, e))?;
        let mut stream = pager.rows_stream::<R>().map_err(|e| errors::corrupt(operation, e))?;
        let mut rows = Vec::new();
        while let Some(row) = stream.try_next().await.map_err(|e| errors::next_row(operation, e))? {
            rows.push(row);
        }
        Ok(rows)
    }

    async fn lwt(
        &self,
        operation: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<bool, StoreError> {
        lwt_applied(operation, self.execute(operation, statement, values).await?)
    }

    async fn write(&self, operation: &'static str, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.len() == 0 {
            return Ok(());
        }
        self.session
            .batch(&batch.batch, &batch.values)
            .await
            .map(|_| ())
            .map_err(|e| errors::execution(operation, e))
    }

    /// The next user or conversation id, from this store's block (refilled by a lightweight
    /// transaction on the shared counter when used up).
    async fn next_id(&self, counter: &'static str) -> Result<u64, StoreError> {
        let mut block = match counter {
            USER_IDS => self.user_ids.lock().await,
            _ => self.conversation_ids.lock().await,
        };
        if block.next >= block.end {
            *block = self.reserve_block(counter).await?;
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }

    async fn reserve_block(&self, counter: &'static str) -> Result<IdBlock, StoreError> {
        const OP: &str = "reserving ids";
        let size = self.options.id_block_size;
        let s = &self.statements;
        for attempt in 0..ID_BLOCK_ATTEMPTS {
            let current = self.one::<(Option<i64>,)>(OP, &s.select_counter, (counter,)).await?;
            let reserved = match current.and_then(|(next,)| next) {
                None => {
                    let end = 1 + size;
                    let applied = self.lwt(OP, &s.create_counter, (counter, codec::big(end)?)).await?;
                    applied.then_some(IdBlock { next: 1, end })
                }
                Some(next) => {
                    let next = codec::unsigned(OP, next)?;
                    let end = next + size;
                    let applied = self
                        .lwt(OP, &s.advance_counter, (codec::big(end)?, counter, codec::big(next)?))
                        .await?;
                    applied.then_some(IdBlock { next, end })
                }
            };
            if let Some(block) = reserved {
                return Ok(block);
            }
            // Another node took the block: back off a little (jittered) and read again.
            let jitter = rand::random::<u64>() % 10;
            tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5 + jitter)).await;
        }
        Err(StoreError::Unavailable(format!(
            "reserving ids from `{counter}`: {ID_BLOCK_ATTEMPTS} attempts lost to other nodes (heavy \
             contention on id_counters; a larger scylla.id_block_size makes this rarer)"
        )))
    }

    /// The highest id handed out by `counter` so far (0 if none), read without a transaction.
    async fn highest_id(&self, counter: &'static str) -> Result<u64, StoreError> {
        const OP: &str = "reading id_counters";
        let next = self
            .one::<(Option<i64>,)>(OP, &self.statements.peek_counter, (counter,))
            .await?;
        match next.and_then(|(n,)| n) {
            Some(next) => Ok(codec::unsigned(OP, next)?.saturating_sub(1)),
            None => Ok(0),
        }
    }

    /// The TTL of event rows: 0 (none) or the retention, capped by [`cap_ttl`].
    fn ttl(&self) -> i32 {
        match self.options.message_ttl_secs {
            0 => 0,
            secs => cap_ttl(i64::from(secs)),
        }
    }
}

/// Latest expiration time Cassandra accepts by default: 2038-01-19T03:14:07Z. Cassandra 4.x and
/// 5.0 (in its default `storage_compatibility_mode: CASSANDRA_4`) refuse a write whose TTL ends
/// later (CASSANDRA-14092); ScyllaDB allows more. Portable TTLs stay a day short of it.
const LATEST_EXPIRATION_SECS: i64 = i32::MAX as i64;

/// A TTL in seconds CQL accepts everywhere: at least 1, at most 20 years, and ending a day
/// before 2038-01-19.
pub(super) fn cap_ttl(secs: i64) -> i32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let until_limit = LATEST_EXPIRATION_SECS - now - 24 * 3600;
    secs.min(i64::from(options::MAX_TTL_SECS)).min(until_limit).max(1) as i32
}
