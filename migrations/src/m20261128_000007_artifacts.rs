//! Artifacts: immutable manifests; the id is the sha256 of the canonical manifest.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("artifacts"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("collab_id"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("name")).string_len(64).not_null())
                    .col(
                        ColumnDef::new(Alias::new("version"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("kind")).string_len(16).not_null())
                    .col(ColumnDef::new(Alias::new("base_id")).string_len(64).null())
                    .col(ColumnDef::new(Alias::new("description")).text().not_null())
                    .col(ColumnDef::new(Alias::new("metadata")).text().not_null())
                    .col(
                        ColumnDef::new(Alias::new("created_by"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("created_at"))
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("artifacts"), Alias::new("collab_id"))
                            .to(Alias::new("collaborations"), Alias::new("id")),
                    )
                    .index(
                        Index::create()
                            .name("artifacts_version_unique")
                            .col(Alias::new("collab_id"))
                            .col(Alias::new("name"))
                            .col(Alias::new("version"))
                            .unique(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("artifacts")).to_owned())
            .await
    }
}
