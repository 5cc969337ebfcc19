//! End-to-end tests of the API: a real server on 127.0.0.1:0, a real database and object store.
//! The tests that drive the `clreg` binary are the CLI's own (`cli/tests/e2e.rs`), so cargo
//! builds that binary from the current source before they run.
#![allow(clippy::unwrap_used)]

mod artifacts;
mod auth;
mod blobs;
mod browser;
mod collaborations;
mod concurrency;
mod corpus;
mod datasets;
mod deploy;
mod hardening;
mod hf;
mod ledger;
mod possession;
mod routes_table;
mod series;
mod ui;
/// The harness lives in the crate's library so the CLI's tests share it.
mod support {
    pub use clreg_tests::*;
}
