//! Database access: the sea-orm entities (one per table) and the write-transaction helper.

pub mod entities;
pub mod write;

pub use write::{lock_collab, write};
