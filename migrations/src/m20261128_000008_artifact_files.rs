//! The files of each artifact: relative path to blob digest.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("artifact_files"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("artifact_id"))
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("path"))
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("digest"))
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("size")).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("artifact_files"), Alias::new("artifact_id"))
                            .to(Alias::new("artifacts"), Alias::new("id")),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("artifact_files"), Alias::new("digest"))
                            .to(Alias::new("blobs"), Alias::new("digest")),
                    )
                    .index(
                        Index::create()
                            .name("artifact_files_unique")
                            .col(Alias::new("artifact_id"))
                            .col(Alias::new("path"))
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("artifact_files_digest")
                    .table(Alias::new("artifact_files"))
                    .col(Alias::new("digest"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("artifact_files")).to_owned())
            .await
    }
}
