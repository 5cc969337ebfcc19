//! sea-orm entities, one per table, written in sea-orm-codegen's layout.

pub mod api_key;
pub mod artifact;
pub mod artifact_file;
pub mod blob;
pub mod blob_grant;
pub mod collaboration;
pub mod dataset;
pub mod evaluation;
pub mod job;
pub mod ledger_event;
pub mod lineage_edge;
pub mod member;
pub mod purge;
pub mod series;
pub mod series_round;
pub mod series_snapshot;
pub mod upload;
pub mod upload_chunk;
pub mod user;
pub mod web_session;
