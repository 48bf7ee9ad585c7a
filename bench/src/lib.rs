//! Benchmarks of Roost. The criterion micro-benchmarks live in `benches/`; this library holds the
//! pieces of the store backend benchmark, the `store_bench` binary (`src/bin/store_bench.rs`).

pub mod store_bench;
