//! Round series: an ordered chain of artifacts (rounds 1..T) of one base with a task list,
//! whose evaluations make the score matrix of a continual-learning run.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("series"))
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
                    .col(ColumnDef::new(Alias::new("name")).string_len(64).not_null())
                    .col(
                        ColumnDef::new(Alias::new("base_id"))
                            .string_len(64)
                            .not_null(),
                    )
                    // JSON: the columns (`task` or `task:metric`), and the round each was
                    // trained in (null: column j in round j + 1).
                    .col(ColumnDef::new(Alias::new("tasks")).text().not_null())
                    .col(ColumnDef::new(Alias::new("round_of_task")).text().null())
                    .col(ColumnDef::new(Alias::new("description")).text().not_null())
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
                            .from(Alias::new("series"), Alias::new("collab_id"))
                            .to(Alias::new("collaborations"), Alias::new("id")),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("series"), Alias::new("base_id"))
                            .to(Alias::new("artifacts"), Alias::new("id")),
                    )
                    .index(
                        Index::create()
                            .name("series_name_unique")
                            .col(Alias::new("collab_id"))
                            .col(Alias::new("name"))
                            .unique(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("series")).to_owned())
            .await
    }
}
