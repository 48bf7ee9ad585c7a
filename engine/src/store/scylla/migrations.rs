//! Versioned schema migrations of the ScyllaDB store.
//!
//! [`MIGRATIONS`] is an ordered list; each entry is a list of CQL statements that must be
//! idempotent (`IF NOT EXISTS`, or written to tolerate being run twice), because two nodes may
//! migrate at once and a migration interrupted half-way is run again from its start. A migration
//! is recorded in `schema_version` only after all its statements succeeded. [`migrate`] creates the
//! keyspace (with the configured replication) and `schema_version` first, then applies what is
//! missing, in order, and records the store's fixed settings (`events_per_partition`) in
//! `store_settings`.
//!
//! Portability (ScyllaDB and Cassandra 4.1+/5.0): no materialized views, no secondary indexes, no
//! `USING TIMEOUT`, no vendor-only table options; TimeWindowCompactionStrategy is common to both.
//! Statements name the keyspace explicitly (`{ks}` is replaced), so no `USE` is needed.
//!
//! Adding a migration: append an entry with the next version; never edit an applied one. The
//! store refuses to start on a keyspace older than [`LATEST`] and tells the operator to migrate.

use ::scylla::client::session::Session;
use ::scylla::statement::Statement;

use super::errors;
use super::options::ScyllaOptions;
use crate::store::StoreError;

/// One schema version: CQL statements applied in order, `{ks}` standing for the keyspace.
#[derive(Debug)]
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub statements: &'static [&'static str],
}

/// The schema, oldest first. See docs/storage.md for what each table serves.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "initial schema: accounts, sessions, conversations, members, receipts, events",
    statements: &[
        // Fixed settings of the keyspace (events_per_partition).
        "CREATE TABLE IF NOT EXISTS {ks}.store_settings (name text PRIMARY KEY, value bigint)",
        // Id allocation: one row per counter, advanced by lightweight transactions, in blocks.
        "CREATE TABLE IF NOT EXISTS {ks}.id_counters (name text PRIMARY KEY, next_id bigint)",
        "CREATE TABLE IF NOT EXISTS {ks}.users (user_id bigint PRIMARY KEY, username text, \
         display_name text, password_hash text, role text, disabled boolean, created_at bigint, \
         last_seen bigint)",
        // Unique usernames (lowercase), claimed with INSERT ... IF NOT EXISTS.
        "CREATE TABLE IF NOT EXISTS {ks}.usernames (username text PRIMARY KEY, user_id bigint)",
        // Users in id order for listing: bucket = user_id / 4096.
        "CREATE TABLE IF NOT EXISTS {ks}.user_directory (bucket bigint, user_id bigint, \
         PRIMARY KEY (bucket, user_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.sessions (token_hash blob PRIMARY KEY, user_id bigint, \
         device text, created_at bigint, expires_at bigint)",
        "CREATE TABLE IF NOT EXISTS {ks}.sessions_by_user (user_id bigint, token_hash blob, \
         PRIMARY KEY (user_id, token_hash))",
        "CREATE TABLE IF NOT EXISTS {ks}.conversations (conversation_id bigint PRIMARY KEY, \
         kind text, name text, created_by bigint, created_at bigint)",
        // Unique direct conversation per pair (lower id, higher id), claimed with IF NOT EXISTS.
        "CREATE TABLE IF NOT EXISTS {ks}.direct_pairs (user_low bigint, user_high bigint, \
         conversation_id bigint, PRIMARY KEY ((user_low, user_high)))",
        "CREATE TABLE IF NOT EXISTS {ks}.members_by_conversation (conversation_id bigint, \
         user_id bigint, role text, PRIMARY KEY (conversation_id, user_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.conversations_by_user (user_id bigint, \
         conversation_id bigint, PRIMARY KEY (user_id, conversation_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.receipts (conversation_id bigint, user_id bigint, \
         delivered_seq bigint, read_seq bigint, PRIMARY KEY (conversation_id, user_id))",
        // The last stored seq, written in the same logged batch as the events it covers.
        "CREATE TABLE IF NOT EXISTS {ks}.conversation_heads (conversation_id bigint PRIMARY KEY, \
         last_seq bigint)",
        // The log: partitions of `events_per_partition` consecutive seqs.
        "CREATE TABLE IF NOT EXISTS {ks}.events (conversation_id bigint, bucket bigint, seq bigint, \
         sender bigint, at bigint, kind text, client_msg_id text, body blob, target bigint, \
         edited_by bigint, recalled_by bigint, detail blob, \
         PRIMARY KEY ((conversation_id, bucket), seq)) \
         WITH CLUSTERING ORDER BY (seq ASC) \
         AND compaction = {'class': 'TimeWindowCompactionStrategy', \
         'compaction_window_unit': 'DAYS', 'compaction_window_size': 7}",
        // Idempotency index: (conversation, sender, client message id) -> seq.
        "CREATE TABLE IF NOT EXISTS {ks}.client_msgs (conversation_id bigint, sender bigint, \
         client_msg_id text, seq bigint, PRIMARY KEY ((conversation_id, sender, client_msg_id)))",
    ],
}];

/// The schema version this build needs.
pub const LATEST: i32 = 1;

const SCOPE: &str = "roost";

fn cql(template: &str, keyspace: &str) -> String {
    template.replace("{ks}", keyspace)
}

async fn run(session: &Session, operation: &'static str, text: String) -> Result<(), StoreError> {
    session
        .query_unpaged(Statement::new(text), ())
        .await
        .map(|_| ())
        .map_err(|e| errors::execution(operation, e))
}

/// The `CREATE KEYSPACE` statement for these options.
pub fn create_keyspace_cql(options: &ScyllaOptions) -> String {
    let factors: Vec<String> = options
        .replication
        .iter()
        .map(|(datacenter, factor)| format!("'{datacenter}': {factor}"))
        .collect();
    let mut text = format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {{'class': 'NetworkTopologyStrategy', {}}}",
        options.keyspace,
        factors.join(", ")
    );
    if let Some(enabled) = options.tablets {
        text.push_str(&format!(" AND tablets = {{'enabled': {enabled}}}"));
    }
    text
}

/// Versions recorded in `schema_version`, ascending. Empty if the keyspace or table is missing.
pub async fn applied_versions(session: &Session, options: &ScyllaOptions) -> Result<Vec<i32>, StoreError> {
    let text = format!(
        "SELECT version FROM {}.schema_version WHERE scope = '{SCOPE}'",
        options.keyspace
    );
    let mut statement = Statement::new(text);
    statement.set_consistency(options.read_consistency.to_driver());
    let result = match session.query_unpaged(statement, ()).await {
        Ok(result) => result,
        // A keyspace or table that does not exist yet: nothing is applied.
        Err(::scylla::errors::ExecutionError::LastAttemptError(::scylla::errors::RequestAttemptError::DbError(
            ::scylla::errors::DbError::Invalid,
            _,
        ))) => return Ok(Vec::new()),
        Err(e) => return Err(errors::execution("reading schema_version", e)),
    };
    let rows = result
        .into_rows_result()
        .map_err(|e| errors::corrupt("reading schema_version", e))?;
    let mut versions = rows
        .rows::<(i32,)>()
        .map_err(|e| errors::corrupt("reading schema_version", e))?
        .map(|row| row.map(|(v,)| v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| errors::corrupt("reading schema_version", e))?;
    versions.sort_unstable();
    Ok(versions)
}

/// Create the keyspace if missing, apply every migration not yet recorded, and record the
/// store's fixed settings. Returns the versions applied by this call (empty when up to date).
pub async fn migrate(session: &Session, options: &ScyllaOptions) -> Result<Vec<i32>, StoreError> {
    let ks = options.keyspace.as_str();
    run(session, "creating the keyspace", create_keyspace_cql(options)).await?;
    run(
        session,
        "creating schema_version",
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_version (scope text, version int, description text, \
             applied_at timestamp, PRIMARY KEY (scope, version))"
        ),
    )
    .await?;
    let done = applied_versions(session, options).await?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        tracing::info!(
            keyspace = ks,
            version = migration.version,
            description = migration.description,
            "Applying a schema migration."
        );
        for statement in migration.statements {
            run(session, "applying a schema migration", cql(statement, ks)).await?;
        }
        let mut record = Statement::new(format!(
            "INSERT INTO {ks}.schema_version (scope, version, description, applied_at) \
             VALUES ('{SCOPE}', ?, ?, toTimestamp(now()))"
        ));
        record.set_consistency(options.write_consistency.to_driver());
        session
            .query_unpaged(record, (migration.version, migration.description))
            .await
            .map_err(|e| errors::execution("recording a schema migration", e))?;
        applied.push(migration.version);
    }
    let mut setting = Statement::new(format!(
        "INSERT INTO {ks}.store_settings (name, value) VALUES ('events_per_partition', ?) IF NOT EXISTS"
    ));
    setting.set_consistency(options.write_consistency.to_driver());
    let events_per_partition = super::codec::big(options.events_per_partition)?;
    session
        .query_unpaged(setting, (events_per_partition,))
        .await
        .map_err(|e| errors::execution("recording events_per_partition", e))?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ascending_and_latest_is_last() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(versions, sorted, "versions are unique and ascending");
        assert_eq!(versions.last(), Some(&LATEST));
    }

    #[test]
    fn statements_keep_to_the_portable_subset() {
        for migration in MIGRATIONS {
            for statement in migration.statements {
                let upper = statement.to_uppercase();
                assert!(upper.contains("IF NOT EXISTS"), "not idempotent: {statement}");
                for banned in [
                    "MATERIALIZED VIEW",
                    "CREATE INDEX",
                    "USING TIMEOUT",
                    "TABLETS",
                    "SELECT *",
                ] {
                    assert!(!upper.contains(banned), "{banned} is not portable: {statement}");
                }
                assert!(statement.contains("{ks}."), "names the keyspace: {statement}");
            }
        }
    }

    #[test]
    fn keyspace_statement_lists_every_datacenter() {
        let mut options = ScyllaOptions::default();
        options.replication.insert("dc2".into(), 3);
        let text = create_keyspace_cql(&options);
        assert_eq!(
            text,
            "CREATE KEYSPACE IF NOT EXISTS roost WITH replication = {'class': 'NetworkTopologyStrategy', \
             'datacenter1': 1, 'dc2': 3}"
        );
        options.tablets = Some(false);
        assert!(create_keyspace_cql(&options).ends_with(" AND tablets = {'enabled': false}"));
    }
}
