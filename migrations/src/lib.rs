//! clreg's database schema as append-only migrations, one change per file (SQLite and PostgreSQL).
// async_trait expands `&SchemaManager` in trait signatures; naming its lifetime breaks the trait match.
#![allow(elided_lifetimes_in_paths)]

pub use sea_orm_migration::prelude::*;

mod m20261128_000001_users;
mod m20261128_000002_api_keys;
mod m20261128_000003_collaborations;
mod m20261128_000004_members;
mod m20261128_000005_blobs;
mod m20261128_000006_uploads;
mod m20261128_000007_artifacts;
mod m20261128_000008_artifact_files;
mod m20261128_000009_lineage_edges;
mod m20261128_000010_datasets;
mod m20261128_000011_ledger_events;
mod m20261130_000012_blob_grants;
mod m20261130_000013_jobs;
mod m20261130_000014_evaluations;
mod m20261130_000015_series;
mod m20261130_000016_series_rounds;
mod m20261130_000017_series_snapshots;
mod m20261130_000018_user_token_limits;
mod m20261130_000019_blob_grant_times;
mod m20261130_000020_blob_weight_checks;
mod m20261130_000021_purges;
mod m20261130_000022_upload_instances;
mod m20261130_000023_ledger_schemes;
mod m20261130_000024_web_sessions;
mod m20261130_000025_upload_chunks;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_users::Migration),
            Box::new(m20261128_000002_api_keys::Migration),
            Box::new(m20261128_000003_collaborations::Migration),
            Box::new(m20261128_000004_members::Migration),
            Box::new(m20261128_000005_blobs::Migration),
            Box::new(m20261128_000006_uploads::Migration),
            Box::new(m20261128_000007_artifacts::Migration),
            Box::new(m20261128_000008_artifact_files::Migration),
            Box::new(m20261128_000009_lineage_edges::Migration),
            Box::new(m20261128_000010_datasets::Migration),
            Box::new(m20261128_000011_ledger_events::Migration),
            Box::new(m20261130_000012_blob_grants::Migration),
            Box::new(m20261130_000013_jobs::Migration),
            Box::new(m20261130_000014_evaluations::Migration),
            Box::new(m20261130_000015_series::Migration),
            Box::new(m20261130_000016_series_rounds::Migration),
            Box::new(m20261130_000017_series_snapshots::Migration),
            Box::new(m20261130_000018_user_token_limits::Migration),
            Box::new(m20261130_000019_blob_grant_times::Migration),
            Box::new(m20261130_000020_blob_weight_checks::Migration),
            Box::new(m20261130_000021_purges::Migration),
            Box::new(m20261130_000022_upload_instances::Migration),
            Box::new(m20261130_000023_ledger_schemes::Migration),
            Box::new(m20261130_000024_web_sessions::Migration),
            Box::new(m20261130_000025_upload_chunks::Migration),
        ]
    }
}
