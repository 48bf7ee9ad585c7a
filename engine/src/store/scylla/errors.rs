//! Driver errors turned into [`StoreError`]s whose message tells an operator what to check.
//!
//! Everything the cluster or the network can cause is `Unavailable` (the caller may retry);
//! rows that do not decode are `Corrupt`. The operation name and a hint for the likely cause are
//! part of the message, because these messages end up in logs read at 3 a.m.

use ::scylla::errors::DbError;
use ::scylla::errors::ExecutionError;
use ::scylla::errors::NewSessionError;
use ::scylla::errors::PagerExecutionError;
use ::scylla::errors::PrepareError;
use ::scylla::errors::RequestAttemptError;

use crate::metrics;
use crate::store::StoreError;

/// What to check for a database-side error, if there is something specific.
fn db_hint(error: &DbError) -> &'static str {
    match error {
        DbError::Unavailable { .. } => {
            "not enough replicas are alive for the configured consistency level: check that the nodes \
             of the datacenter are up (nodetool status) and that the keyspace's replication factor \
             suits the cluster"
        }
        DbError::ReadTimeout { .. } | DbError::WriteTimeout { .. } => {
            "replicas did not answer in time: check the cluster's load and disks; a timed-out write \
             may still be applied, the client's retry is de-duplicated by its client message id"
        }
        DbError::Overloaded | DbError::RateLimitReached { .. } => {
            "the cluster is overloaded: retry later or add capacity"
        }
        DbError::IsBootstrapping => "the node is still starting: retry in a moment",
        DbError::Invalid | DbError::SyntaxError => {
            "the server refused the request; if it names a missing keyspace, table or column, run \
             `roost migrate` (or enable scylla.apply_migrations_on_start) and check scylla.keyspace"
        }
        DbError::AuthenticationError => "check scylla.username and scylla.password",
        DbError::Unauthorized => "the configured user lacks permissions on the keyspace: grant them",
        DbError::ConfigError => "the server rejected a setting: check the keyspace options in scylla.*",
        _ => "check the CQL nodes' logs",
    }
}

fn attempt_hint(error: &RequestAttemptError) -> &'static str {
    match error {
        RequestAttemptError::DbError(db, _) => db_hint(db),
        RequestAttemptError::BrokenConnectionError(_) | RequestAttemptError::UnableToAllocStreamId => {
            "the connection to a CQL node broke: check that the nodes in scylla.contact_points are up and reachable"
        }
        _ => "check the CQL nodes' logs and the driver's log lines",
    }
}

fn execution_hint(error: &ExecutionError) -> &'static str {
    match error {
        ExecutionError::LastAttemptError(attempt) => attempt_hint(attempt),
        ExecutionError::RequestTimeout(_) => {
            "no answer within scylla.request_timeout_ms: check that the CQL nodes are up, reachable and \
             not overloaded"
        }
        ExecutionError::ConnectionPoolError(_) | ExecutionError::EmptyPlan => {
            "no connection to any CQL node: check that the nodes in scylla.contact_points are up and \
             reachable, and that scylla.local_datacenter names an existing datacenter"
        }
        ExecutionError::PrepareError(prepare) => prepare_hint(prepare),
        _ => "check the CQL nodes' logs",
    }
}

fn prepare_hint(error: &PrepareError) -> &'static str {
    match error {
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_hint(first_attempt),
        _ => "check that the CQL nodes are up and reachable",
    }
}

/// A failed request of `operation`.
pub(super) fn execution(operation: &'static str, error: ExecutionError) -> StoreError {
    metrics::store_error(operation);
    StoreError::Unavailable(format!("{operation}: {error} ({})", execution_hint(&error)))
}

/// A failed paged read of `operation`.
pub(super) fn pager(operation: &'static str, error: PagerExecutionError) -> StoreError {
    metrics::store_error(operation);
    let hint = match &error {
        PagerExecutionError::PrepareError(prepare) => prepare_hint(prepare),
        _ => "check that the CQL nodes are up, reachable and not overloaded",
    };
    StoreError::Unavailable(format!("{operation}: {error} ({hint})"))
}

/// A failure while fetching the next page of a paged read.
pub(super) fn next_row(operation: &'static str, error: ::scylla::errors::NextRowError) -> StoreError {
    metrics::store_error(operation);
    StoreError::Unavailable(format!(
        "{operation}: {error} (check that the CQL nodes are up, reachable and not overloaded)"
    ))
}

/// Statements could not be prepared at connect.
pub(super) fn prepare(statement: &str, error: PrepareError) -> StoreError {
    let hint = match &error {
        PrepareError::AllAttemptsFailed {
            first_attempt: RequestAttemptError::DbError(DbError::Invalid, _),
        } => "the keyspace or a table is missing: run `roost migrate` (or enable scylla.apply_migrations_on_start)",
        other => prepare_hint(other),
    };
    StoreError::Unavailable(format!("preparing `{statement}`: {error} ({hint})"))
}

/// The session could not be opened.
pub(super) fn connect(contact_points: &[String], error: NewSessionError) -> StoreError {
    StoreError::Unavailable(format!(
        "cannot connect to the CQL cluster at {}: {error} (check that the nodes are up, that \
         scylla.contact_points names their CQL port (9042 by default), and the credentials)",
        contact_points.join(", ")
    ))
}

/// A row that does not have the shape this build expects.
pub(super) fn corrupt(operation: &'static str, error: impl std::fmt::Display) -> StoreError {
    metrics::store_error(operation);
    StoreError::Corrupt(format!(
        "{operation}: a row does not have the expected shape: {error} (was the schema changed by hand, \
         or written by a newer build?)"
    ))
}
