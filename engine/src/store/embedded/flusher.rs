//! The background flusher: writes the database file's dirty pages to disk between checkpoints.
//!
//! In immediate durability the writer commits to redb without fsync and makes a durable commit
//! (a checkpoint) about once a second. Without help, that checkpoint's fsync finds a second's
//! worth of dirty pages and the writer, and every append queued behind it, waits for all of them
//! (10 to 60 ms per checkpoint measured on the bench machine, the largest part of the 1:1 tail).
//! This thread calls `fdatasync` on its own handle of the file every [`FLUSH_EVERY`], off the
//! writer's path, so a checkpoint finds little left to write. It changes nothing about durability
//! (that is the log's and the checkpoint's job) and stops when the store is dropped.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::store::StoreError;

/// How often the flusher writes dirty pages back.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Stops the flusher thread when dropped.
pub(super) struct Flusher {
    _stop: mpsc::Sender<()>,
}

impl Flusher {
    /// Start flushing `file` until the returned handle is dropped.
    pub(super) fn start(file: &Path) -> Result<Self, StoreError> {
        let handle = File::open(file)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {} for flushing: {e}", file.display())))?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("roost-store-flush".to_owned())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(FLUSH_EVERY) {
                    if let Err(error) = handle.sync_data() {
                        // The writer's own fsyncs report disk failures; this one only helps.
                        tracing::debug!(%error, "Background flush of the database failed.");
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store flusher: {e}")))?;
        Ok(Self { _stop: stop })
    }
}
