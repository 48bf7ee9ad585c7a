//! End-to-end tests: the real `roost` binary over real sockets (one test binary, several
//! stories). Each test starts its own node on a free loopback port with its own data directory.

#![allow(clippy::unwrap_used)]

mod common;

mod bad_input;
mod chat;
mod durability;
mod operations;
mod revocation;
mod slow_consumer;
mod tls;
