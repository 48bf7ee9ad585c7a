//! The append log (`roost.wal`): what makes an acknowledged write durable in immediate mode.
//!
//! The writer thread applies a group of writes to redb in a *non-durable* commit, and only
//! acknowledges it once the same group is in this log: one sequential `write` and one
//! `fdatasync` per group, instead of redb's copy-on-write page rewrites and its fsync. Every so
//! often the writer makes a durable redb commit (a *checkpoint*) and then starts writing the log
//! again from offset 0. On open, the frames newer than the database's last applied frame are
//! replayed (see `replay` in the parent module).
//!
//! A frame is `magic (u32) | payload length (u32) | crc32 (u32) | payload`, little-endian, the
//! checksum covering the length and the payload; the payload is the frame's log sequence number
//! (`lsn`, u64, one more for every frame ever written, never reset) followed by the records. The
//! file is reused after a checkpoint rather than truncated (overwriting allocated blocks keeps
//! `fdatasync` from journaling a size change), so frames of an earlier cycle may follow the live
//! ones: they have lower lsns, which is how a reader tells them apart. A torn or corrupt tail
//! fails the magic, the length or the checksum; [`read_frames`] stops there and never misreads it.

use std::fs::File;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::Event;
use crate::model::Member;
use crate::model::MessageBody;
use crate::model::Receipt;
use crate::store::AppendOp;
use crate::store::Effect;
use crate::store::StoreError;

/// Name of the log file inside the store's directory.
pub const LOG_FILE: &str = "roost.wal";

/// "RWAL": the first bytes of every frame.
const MAGIC: u32 = 0x4c41_5752;
/// Magic, payload length, checksum.
const HEADER_LEN: usize = 12;
/// The lsn at the start of every payload.
const LSN_LEN: usize = 8;

/// One logged write: what the writer replays after a crash. Only writes that are cheap to
/// re-apply deterministically are logged (appends and receipts, the hot path); every other
/// mutation is made durable by a checkpoint before it is acknowledged.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum LogRecord {
    Append {
        event: Event,
        effects: Vec<LogEffect>,
    },
    Receipt {
        conversation: ConversationId,
        user: UserId,
        receipt: Receipt,
    },
}

/// [`Effect`] in the log's own (serializable, versioned with the log) form.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum LogEffect {
    PutMember(Member),
    RemoveMember(UserId),
    Rename(String),
    ReviseMessage { target: Seq, body: MessageBody },
    RecallMessage { target: Seq },
}

impl LogRecord {
    /// The record of an append (effects are rare and small; the event is encoded once more).
    pub(super) fn append(op: &AppendOp) -> Self {
        let effects = op.effects.iter().cloned().map(LogEffect::from).collect();
        LogRecord::Append {
            event: op.event.clone(),
            effects,
        }
    }
}

impl From<Effect> for LogEffect {
    fn from(effect: Effect) -> Self {
        match effect {
            Effect::PutMember(member) => LogEffect::PutMember(member),
            Effect::RemoveMember(user) => LogEffect::RemoveMember(user),
            Effect::Rename(name) => LogEffect::Rename(name),
            Effect::ReviseMessage { target, body } => LogEffect::ReviseMessage { target, body },
            Effect::RecallMessage { target } => LogEffect::RecallMessage { target },
        }
    }
}

impl From<LogEffect> for Effect {
    fn from(effect: LogEffect) -> Self {
        match effect {
            LogEffect::PutMember(member) => Effect::PutMember(member),
            LogEffect::RemoveMember(user) => Effect::RemoveMember(user),
            LogEffect::Rename(name) => Effect::Rename(name),
            LogEffect::ReviseMessage { target, body } => Effect::ReviseMessage { target, body },
            LogEffect::RecallMessage { target } => Effect::RecallMessage { target },
        }
    }
}

/// The records of one batch, encoded as they are applied.
#[derive(Debug, Default)]
pub(super) struct LogBuffer {
    bytes: Vec<u8>,
    records: usize,
}

impl LogBuffer {
    pub(super) fn push(&mut self, record: &LogRecord) -> Result<(), StoreError> {
        let bytes = postcard::to_extend(record, std::mem::take(&mut self.bytes))
            .map_err(|e| StoreError::Corrupt(format!("encoding a log record: {e}")))?;
        self.bytes = bytes;
        self.records += 1;
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.records = 0;
    }
}

/// A frame read back from the log.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) lsn: u64,
    records: Vec<u8>,
}

impl Frame {
    /// Decode the frame's records, in the order they were applied.
    pub(super) fn records(&self) -> Result<Vec<LogRecord>, StoreError> {
        let mut rest = self.records.as_slice();
        let mut records = Vec::new();
        while !rest.is_empty() {
            let (record, tail) = postcard::take_from_bytes::<LogRecord>(rest).map_err(|e| {
                StoreError::Corrupt(format!(
                    "log frame {} has a checksum but an undecodable record: {e}",
                    self.lsn
                ))
            })?;
            records.push(record);
            rest = tail;
        }
        Ok(records)
    }
}

/// What reading the log found.
#[derive(Debug)]
pub(super) struct LogContents {
    /// Every well-formed frame from the start, in file order (stale frames included).
    pub(super) frames: Vec<Frame>,
    /// Bytes after the last well-formed frame that are not zero: a torn or corrupt tail.
    pub(super) ignored_bytes: usize,
}

/// Split `bytes` into frames, stopping at the first one that is not well formed.
pub(super) fn read_frames(bytes: &[u8]) -> LogContents {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some((frame, next)) = frame_at(bytes, at) {
        frames.push(frame);
        at = next;
    }
    let ignored_bytes = bytes[at..].iter().filter(|b| **b != 0).count();
    LogContents { frames, ignored_bytes }
}

fn frame_at(bytes: &[u8], at: usize) -> Option<(Frame, usize)> {
    let header = bytes.get(at..at.checked_add(HEADER_LEN)?)?;
    let word = |i: usize| {
        header
            .get(i..i + 4)
            .and_then(|w| w.try_into().ok())
            .map(u32::from_le_bytes)
    };
    if word(0)? != MAGIC {
        return None;
    }
    let len_bytes = header.get(4..8)?;
    let len = usize::try_from(word(4)?).ok()?;
    let start = at + HEADER_LEN;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    if len < LSN_LEN || checksum(len_bytes, payload) != word(8)? {
        return None;
    }
    let lsn = u64::from_le_bytes(payload.get(..LSN_LEN)?.try_into().ok()?);
    let records = payload.get(LSN_LEN..)?.to_vec();
    Some((Frame { lsn, records }, start + len))
}

fn checksum(len_bytes: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// The open log file, written by the writer thread only.
#[derive(Debug)]
pub(super) struct AppendLog {
    file: File,
    path: PathBuf,
    /// Where the next frame goes.
    offset: u64,
    frame: Vec<u8>,
    /// Set by a failed write or sync: the file's state is unknown, so nothing more is written.
    broken: Option<String>,
}

impl AppendLog {
    /// Open (creating if missing) the log in `dir` and read what it holds.
    pub(super) fn open(dir: &Path) -> Result<(Self, LogContents), StoreError> {
        let path = dir.join(LOG_FILE);
        let unavailable = |what: &str, e: std::io::Error| {
            StoreError::Unavailable(format!("cannot {what} the append log {}: {e}", path.display()))
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| unavailable("open", e))?;
        // The file may be new: make its directory entry durable before any frame relies on it.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| unavailable("sync the directory of", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| unavailable("read", e))?;
        let contents = read_frames(&bytes);
        let log = Self {
            file,
            path,
            offset: 0,
            frame: Vec::new(),
            broken: None,
        };
        Ok((log, contents))
    }

    /// Bytes written since the last [`restart`](Self::restart).
    pub(super) fn written(&self) -> u64 {
        self.offset
    }

    /// Append one frame and wait until it is on disk (`fdatasync`).
    pub(super) fn write(&mut self, lsn: u64, records: &LogBuffer) -> Result<(), StoreError> {
        self.check()?;
        let len = u32::try_from(LSN_LEN + records.bytes.len())
            .map_err(|_| StoreError::Unavailable("a log frame over 4 GiB".to_owned()))?;
        self.frame.clear();
        self.frame.extend_from_slice(&MAGIC.to_le_bytes());
        self.frame.extend_from_slice(&len.to_le_bytes());
        self.frame.extend_from_slice(&[0; 4]);
        self.frame.extend_from_slice(&lsn.to_le_bytes());
        self.frame.extend_from_slice(&records.bytes);
        let crc = checksum(&len.to_le_bytes(), &self.frame[HEADER_LEN..]);
        self.frame[8..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        let written = self
            .file
            .write_all_at(&self.frame, self.offset)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.offset += self.frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                // After a failed fsync the page cache may hold anything: stop using the file.
                let why = format!("writing {}: {e}", self.path.display());
                self.broken = Some(why.clone());
                Err(StoreError::Unavailable(why))
            }
        }
    }

    /// `Err` if an earlier failure made the log unusable.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        match &self.broken {
            Some(why) => Err(StoreError::Unavailable(format!(
                "the append log failed earlier, reopen the store: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Refuse every later write: the log holds a frame whose writes were refused.
    pub(super) fn break_with(&mut self, why: String) {
        self.broken = Some(why);
    }

    /// Start again from offset 0, once a durable checkpoint holds everything logged so far.
    pub(super) fn restart(&mut self) {
        self.offset = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(lsn: u64, payload: &[u8]) -> Vec<u8> {
        let len = (LSN_LEN + payload.len()) as u32;
        let mut body = lsn.to_le_bytes().to_vec();
        body.extend_from_slice(payload);
        let mut bytes = MAGIC.to_le_bytes().to_vec();
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&checksum(&len.to_le_bytes(), &body).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    #[test]
    fn reads_frames_and_stops_at_a_torn_tail() {
        let mut bytes = frame_bytes(1, b"one");
        bytes.extend(frame_bytes(2, b"two"));
        let third = frame_bytes(3, b"three");
        for cut in 0..third.len() {
            let mut torn = bytes.clone();
            torn.extend_from_slice(&third[..cut]);
            let read = read_frames(&torn);
            let lsns: Vec<u64> = read.frames.iter().map(|f| f.lsn).collect();
            assert_eq!(lsns, vec![1, 2], "a frame cut at {cut} bytes is ignored");
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let good = frame_bytes(7, b"payload");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            let read = read_frames(&bad);
            assert!(read.frames.is_empty(), "a flip in byte {i} is detected");
            assert!(read.ignored_bytes > 0);
        }
        let read = read_frames(&good);
        assert_eq!(read.frames.len(), 1);
        assert_eq!(read.frames[0].records, b"payload");
    }

    #[test]
    fn zeros_after_the_frames_are_an_empty_tail() {
        let mut bytes = frame_bytes(1, b"x");
        bytes.extend_from_slice(&[0; 100]);
        let read = read_frames(&bytes);
        assert_eq!(read.frames.len(), 1);
        assert_eq!(read.ignored_bytes, 0);
    }
}
