//! Database access: the sea-orm entities (one per table).

pub mod entities;
