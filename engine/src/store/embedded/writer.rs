//! The writer thread: every mutation of the embedded store, applied by group commit.
//!
//! Callers enqueue a [`Command`] on an unbounded channel and await a oneshot reply. The thread
//! blocks for the first command, drains up to `max_batch` without blocking, applies the whole batch
//! in one write transaction, commits once and only then answers every job. One thread and one FIFO
//! channel mean jobs are applied in submission order, which the append contract requires; a batch
//! sees the writes of its earlier jobs, so pipelined appends of one conversation chain correctly.
//!
//! A job refused for a logical reason changes nothing and fails alone. A storage failure (opening,
//! writing or committing the transaction) fails every job of the batch; nothing of it is kept.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use redb::Database;
use redb::Durability;
use tokio::sync::oneshot;

use super::mutations::Step;
use super::mutations::WriteTables;
use super::DurabilityMode;
use crate::metrics;
use crate::store::StoreError;

/// What the writer thread receives.
pub(super) enum Command {
    /// A mutation; `durable` forces the commit that carries it to be durable (used by `flush`).
    Write { job: Box<dyn WriteJob>, durable: bool },
    /// Finish the queued jobs, make everything durable, then stop.
    Shutdown,
}

/// A mutation waiting in a batch.
pub(super) trait WriteJob: Send {
    /// Run the mutation in the batch transaction; `Err` aborts the batch.
    fn apply(&mut self, tables: &mut WriteTables<'_>) -> Result<(), StoreError>;
    /// Send the reply once the batch is committed (`Ok`) or has failed.
    fn answer(self: Box<Self>, batch: Result<(), &StoreError>);
}

/// Create a job from a mutation and the receiver of its reply.
pub(super) fn job<T, E, F>(mutation: F) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<T, E>>)
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: for<'t> FnOnce(&mut WriteTables<'t>) -> Step<T, E> + Send + 'static,
{
    let (reply_tx, reply_rx) = oneshot::channel();
    let job = Pending {
        mutation: Some(mutation),
        outcome: None,
        reply_tx,
    };
    (Box::new(job), reply_rx)
}

struct Pending<T, E, F> {
    mutation: Option<F>,
    outcome: Option<Result<T, E>>,
    reply_tx: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> WriteJob for Pending<T, E, F>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: for<'t> FnOnce(&mut WriteTables<'t>) -> Step<T, E> + Send + 'static,
{
    fn apply(&mut self, tables: &mut WriteTables<'_>) -> Result<(), StoreError> {
        if let Some(mutation) = self.mutation.take() {
            self.outcome = Some(mutation(tables)?);
        }
        Ok(())
    }

    fn answer(self: Box<Self>, batch: Result<(), &StoreError>) {
        let reply = match (batch, self.outcome) {
            (Ok(()), Some(outcome)) => outcome,
            (Err(error), _) => Err(E::from(same_error(error))),
            (Ok(()), None) => Err(E::from(StoreError::Unavailable("the write was not applied".to_owned()))),
        };
        // The caller may have stopped waiting; the write stands either way.
        let _ = self.reply_tx.send(reply);
    }
}

/// A copy of a batch's error for each of its jobs (`StoreError` is not `Clone`).
fn same_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Corrupt(why) => StoreError::Corrupt(why.clone()),
        StoreError::AlreadyExists { what } => StoreError::AlreadyExists { what },
        StoreError::NotFound { what } => StoreError::NotFound { what },
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
    }
}

pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) commands_rx: mpsc::Receiver<Command>,
    pub(super) durability: DurabilityMode,
    pub(super) max_batch: usize,
    pub(super) relaxed_flush_interval: Duration,
    pub(super) commits: Arc<AtomicU64>,
}

/// The writer's view of what is on disk.
struct DiskState {
    /// Non-durable commits were made since the last durable one (relaxed mode only).
    unflushed: bool,
    last_durable: Instant,
}

impl Writer {
    /// Run until [`Command::Shutdown`] or until every sender is gone.
    pub(super) fn run(self) {
        let mut disk = DiskState {
            unflushed: false,
            last_durable: Instant::now(),
        };
        loop {
            let Some(first) = self.next_command(&mut disk) else {
                break;
            };
            let mut jobs = Vec::new();
            let mut durable = self.durability == DurabilityMode::Immediate;
            let mut stop = false;
            let mut command = Some(first);
            while let Some(next) = command.take() {
                match next {
                    Command::Write { job, durable: forced } => {
                        jobs.push(job);
                        durable |= forced;
                    }
                    Command::Shutdown => {
                        stop = true;
                        durable = true;
                    }
                }
                if !stop && jobs.len() < self.max_batch {
                    command = self.commands_rx.try_recv().ok();
                }
            }
            durable |= disk.last_durable.elapsed() >= self.relaxed_flush_interval;
            if !jobs.is_empty() || (durable && disk.unflushed) {
                self.commit(&mut jobs, durable, &mut disk);
            }
            if stop {
                break;
            }
        }
        if disk.unflushed {
            self.commit(&mut Vec::new(), true, &mut disk);
        }
        tracing::debug!("The store writer stopped.");
    }

    /// The next command, making a timed durable commit while idle with unflushed commits.
    fn next_command(&self, disk: &mut DiskState) -> Option<Command> {
        loop {
            if !disk.unflushed {
                return self.commands_rx.recv().ok();
            }
            let wait = self.relaxed_flush_interval.saturating_sub(disk.last_durable.elapsed());
            match self.commands_rx.recv_timeout(wait) {
                Ok(command) => return Some(command),
                Err(mpsc::RecvTimeoutError::Timeout) => self.commit(&mut Vec::new(), true, disk),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Apply and commit one batch, then answer each of its jobs.
    fn commit(&self, jobs: &mut Vec<Box<dyn WriteJob>>, durable: bool, disk: &mut DiskState) {
        let started = Instant::now();
        let result = self.apply_and_commit(jobs, durable);
        match &result {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                metrics::store_commit(jobs.len(), started.elapsed());
                if durable {
                    disk.unflushed = false;
                    disk.last_durable = Instant::now();
                } else {
                    disk.unflushed = true;
                }
            }
            Err(error) => {
                metrics::store_error("commit");
                tracing::error!(%error, writes = jobs.len(), "A store commit failed; its writes are refused.");
                if durable {
                    // Do not spin on a failing disk: retry the durable commit one interval later.
                    disk.last_durable = Instant::now();
                }
            }
        }
        for job in jobs.drain(..) {
            job.answer(result.as_ref().map(|_| ()));
        }
    }

    fn apply_and_commit(&self, jobs: &mut [Box<dyn WriteJob>], durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        {
            let mut tables = WriteTables::open(&txn)?;
            for job in jobs.iter_mut() {
                // On error the transaction is dropped, which aborts it: nothing of the batch stays.
                job.apply(&mut tables)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}
