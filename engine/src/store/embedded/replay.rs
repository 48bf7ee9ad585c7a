//! Recovery of the append log at open: re-apply the frames the database does not hold yet.
//!
//! Every logged batch stores its frame's lsn in redb (`WAL_LSN_KEY`) in the same transaction as
//! its writes, so the database knows exactly which frames it holds, whichever commit redb
//! recovered to (the last durable one, or a later non-durable one). Frames after it are applied
//! in lsn order through the same mutations as at first, from the same state, so they have the same
//! outcome; then one durable commit makes the result the new checkpoint, and the log can be
//! written from its start again. Frames at or below the database's lsn are stale (already applied,
//! or left from an earlier cycle of the reused file) and are skipped; a torn or corrupt tail was
//! already cut off by the checksum. A frame that skips an lsn means the database is older than its
//! log (a restored backup next to a newer log): opening is refused rather than guessing.

use redb::Database;
use redb::Durability;
use redb::ReadableTable;

use super::mutations::Heads;
use super::mutations::WriteTables;
use super::tables;
use super::wal::LogContents;
use crate::store::StoreError;

/// What a replay did, for the open's log line.
#[derive(Debug, Default)]
pub(super) struct Replayed {
    pub(super) frames: usize,
    pub(super) records: usize,
    /// Records refused on replay (never expected; counted, not fatal).
    pub(super) refused: usize,
    /// The lsn the database is at afterwards: the next frame gets the one after it.
    pub(super) lsn: u64,
}

/// Apply the frames of `contents` newer than the database and commit durably.
pub(super) fn replay(db: &Database, contents: &LogContents) -> Result<Replayed, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let applied = txn
        .open_table(tables::COUNTERS)?
        .get(tables::WAL_LSN_KEY)?
        .map_or(0, |v| v.value());
    let mut done = Replayed {
        lsn: applied,
        ..Replayed::default()
    };
    // Every frame ever written has a lower lsn than the next one written: stay above them all.
    let highest = contents.frames.iter().map(|f| f.lsn).max().unwrap_or(0);
    {
        let mut heads = Heads::default();
        let mut tables = WriteTables::open(&txn, &mut heads, None)?;
        for frame in &contents.frames {
            if frame.lsn <= done.lsn {
                continue;
            }
            if frame.lsn != done.lsn + 1 {
                return Err(StoreError::Corrupt(format!(
                    "the append log continues at frame {} but the database is at frame {}: \
                     was the database file replaced?",
                    frame.lsn, done.lsn
                )));
            }
            for record in frame.records()? {
                done.records += 1;
                if !tables.replay(record)? {
                    done.refused += 1;
                }
            }
            done.frames += 1;
            done.lsn = frame.lsn;
        }
        done.lsn = done.lsn.max(highest);
        tables.set_log_position(done.lsn)?;
    }
    txn.commit()?;
    Ok(done)
}
