//! The writer thread: every mutation of the embedded store, applied by group commit.
//!
//! Callers enqueue a [`Command`] on an unbounded channel and await a oneshot reply. The thread
//! blocks for the first command, drains up to `max_batch` without blocking, applies the whole batch
//! in one write transaction, commits once and only then answers every job. One thread and one FIFO
//! channel mean jobs are applied in submission order, which the append contract requires; a batch
//! sees the writes of its earlier jobs, so pipelined appends of one conversation chain correctly.
//!
//! In immediate durability a batch of appends and receipts is made durable by the append log
//! (`wal`), not by redb: its records are written to the log with one `fdatasync`, then the redb
//! transaction is committed without fsync, then the jobs are answered, so a read that starts after
//! an acknowledgement sees the write. A batch with any other mutation (accounts, sessions,
//! conversations: rare) commits durably instead. A durable commit (*checkpoint*) is also made once
//! the log holds [`CHECKPOINT_BYTES`], `checkpoint_interval` (1 s by default) after the last one,
//! on `flush` and on shutdown; after it the log is written from its start again. In relaxed durability nothing
//! is logged: commits are not durable, and a durable one is made every `relaxed_flush_interval`.
//!
//! A job refused for a logical reason changes nothing and fails alone. A storage failure (opening,
//! writing or committing the transaction, writing the log) fails every job of the batch; nothing
//! of it is kept. A failed log write or a failed commit after the log write leaves the log in an
//! unknown state, so every later write is refused until the store is reopened (and replays it).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use redb::Database;
use redb::Durability;
use tokio::sync::oneshot;

use super::mutations::Heads;
use super::mutations::Step;
use super::mutations::WriteTables;
use super::wal::AppendLog;
use super::wal::LogBuffer;
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

/// In immediate durability: log bytes that trigger a checkpoint (bounds the replay at open).
pub(super) const CHECKPOINT_BYTES: u64 = 64 << 20;

pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) commands_rx: mpsc::Receiver<Command>,
    pub(super) durability: DurabilityMode,
    pub(super) max_batch: usize,
    pub(super) relaxed_flush_interval: Duration,
    /// In immediate durability: the longest time between checkpoints while the log holds writes.
    pub(super) checkpoint_interval: Duration,
    pub(super) commits: Arc<AtomicU64>,
    /// The append log, in immediate durability only.
    pub(super) log: Option<AppendLog>,
    /// The lsn of the last frame written to the log (or applied at open).
    pub(super) lsn: u64,
    pub(super) heads: Heads,
    pub(super) records: LogBuffer,
}

/// The writer's view of what is on disk.
struct DiskState {
    /// Non-durable commits were made since the last durable one.
    unflushed: bool,
    last_durable: Instant,
}

impl Writer {
    /// Run until [`Command::Shutdown`] or until every sender is gone.
    pub(super) fn run(mut self) {
        let mut disk = DiskState {
            unflushed: false,
            last_durable: Instant::now(),
        };
        loop {
            let Some(first) = self.next_command(&mut disk) else {
                break;
            };
            let mut jobs = Vec::new();
            let mut durable = self.durability == DurabilityMode::Immediate && self.log.is_none();
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
            durable |= self.checkpoint_due(&disk);
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

    /// The longest time between durable commits while there are non-durable ones.
    fn flush_interval(&self) -> Duration {
        if self.log.is_some() {
            self.checkpoint_interval
        } else {
            self.relaxed_flush_interval
        }
    }

    /// Whether the next commit must be durable because of time or log size.
    fn checkpoint_due(&self, disk: &DiskState) -> bool {
        match &self.log {
            // Logged writes are already durable: only a non-durable commit needs a checkpoint.
            Some(log) => {
                disk.unflushed
                    && (disk.last_durable.elapsed() >= self.checkpoint_interval || log.written() >= CHECKPOINT_BYTES)
            }
            None => disk.last_durable.elapsed() >= self.relaxed_flush_interval,
        }
    }

    /// The next command, making a timed durable commit while idle with unflushed commits.
    fn next_command(&mut self, disk: &mut DiskState) -> Option<Command> {
        loop {
            if !disk.unflushed {
                return self.commands_rx.recv().ok();
            }
            let wait = self.flush_interval().saturating_sub(disk.last_durable.elapsed());
            match self.commands_rx.recv_timeout(wait) {
                Ok(command) => return Some(command),
                Err(mpsc::RecvTimeoutError::Timeout) => self.commit(&mut Vec::new(), true, disk),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Apply and commit one batch, then answer each of its jobs.
    fn commit(&mut self, jobs: &mut Vec<Box<dyn WriteJob>>, durable: bool, disk: &mut DiskState) {
        let started = Instant::now();
        let result = self.apply_and_commit(jobs, durable);
        match &result {
            Ok(made_durable) => {
                self.heads.commit();
                self.commits.fetch_add(1, Ordering::Relaxed);
                metrics::store_commit(jobs.len(), started.elapsed());
                if *made_durable {
                    disk.unflushed = false;
                    disk.last_durable = Instant::now();
                    if let Some(log) = &mut self.log {
                        log.restart();
                    }
                } else {
                    disk.unflushed = true;
                }
            }
            Err(error) => {
                self.heads.rollback();
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

    /// Apply the batch in one transaction and commit it: durably if `durable` or if a job wrote
    /// something the log does not hold, else after logging its records. Returns whether the
    /// commit was durable.
    fn apply_and_commit(&mut self, jobs: &mut [Box<dyn WriteJob>], durable: bool) -> Result<bool, StoreError> {
        if let Some(log) = &self.log {
            log.check()?;
        }
        let mut txn = self.db.begin_write()?;
        self.records.clear();
        let logging = self.log.is_some();
        let log_lsn = self.lsn + 1;
        let durable = {
            let records = logging.then_some(&mut self.records);
            let mut tables = WriteTables::open(&txn, &mut self.heads, records)?;
            for job in jobs.iter_mut() {
                // On error the transaction is dropped, which aborts it: nothing of the batch stays.
                tables.start_job();
                job.apply(&mut tables)?;
                tables.finish_job();
            }
            let durable = durable || (logging && tables.needs_durable());
            if !durable && tables.has_log_records() {
                tables.set_log_position(log_lsn)?;
            }
            durable
        };
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let logged = match &mut self.log {
            Some(log) if !durable && !self.records.is_empty() => {
                log.write(log_lsn, &self.records)?;
                self.lsn = log_lsn;
                Some(log)
            }
            _ => None,
        };
        if let Err(error) = txn.commit() {
            if let Some(log) = logged {
                // The frame is on disk but its writes are refused: a replay would apply them.
                log.break_with(format!("a commit after its log frame failed: {error}"));
            }
            return Err(error.into());
        }
        Ok(durable)
    }
}
