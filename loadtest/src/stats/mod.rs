//! Measurement: the sharded recorder every task writes to, and the per-second series and
//! percentile summaries built from it.

pub mod recorder;
pub mod series;
