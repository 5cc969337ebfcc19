//! Snapshots of a series' report, one per round: the report over rounds 1..r, taken when
//! round r's evaluations are complete (so the BWT history over rounds is kept).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("series_snapshots"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("series_id"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("round")).integer().not_null())
                    .col(ColumnDef::new(Alias::new("report")).text().not_null())
                    .col(
                        ColumnDef::new(Alias::new("created_at"))
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("series_snapshots"), Alias::new("series_id"))
                            .to(Alias::new("series"), Alias::new("id")),
                    )
                    .index(
                        Index::create()
                            .name("series_snapshots_unique")
                            .col(Alias::new("series_id"))
                            .col(Alias::new("round"))
                            .unique(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("series_snapshots"))
                    .to_owned(),
            )
            .await
    }
}
