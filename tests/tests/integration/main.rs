//! End-to-end tests: a real server on 127.0.0.1:0, a real database and object store, the real CLI.
#![allow(clippy::unwrap_used)]

mod artifacts;
mod auth;
mod blobs;
mod cli;
mod collaborations;
mod datasets;
mod ledger;
mod routes_table;
mod support;
