//! The server clock, used only to stamp events and check edit windows. Never orders anything.

use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use crate::model::UnixMillis;

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as UnixMillis)
        .unwrap_or(0)
}
