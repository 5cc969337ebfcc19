//! Evaluations: one score per (collaboration, artifact, task, metric), with the report it
//! came from.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("evaluations"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("collab_id"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("artifact_id"))
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("task")).text().not_null())
                    .col(
                        ColumnDef::new(Alias::new("metric"))
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("score")).double().not_null())
                    .col(ColumnDef::new(Alias::new("n")).big_integer().not_null())
                    .col(ColumnDef::new(Alias::new("job_id")).uuid().null())
                    .col(ColumnDef::new(Alias::new("report")).text().not_null())
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
                            .from(Alias::new("evaluations"), Alias::new("collab_id"))
                            .to(Alias::new("collaborations"), Alias::new("id")),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("evaluations"), Alias::new("artifact_id"))
                            .to(Alias::new("artifacts"), Alias::new("id")),
                    )
                    .index(
                        Index::create()
                            .name("evaluations_unique")
                            .col(Alias::new("collab_id"))
                            .col(Alias::new("artifact_id"))
                            .col(Alias::new("task"))
                            .col(Alias::new("metric"))
                            .unique(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("evaluations")).to_owned())
            .await
    }
}
