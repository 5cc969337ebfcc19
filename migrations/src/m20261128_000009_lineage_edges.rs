//! Lineage: parent → child edges with relation, method, parameters and dataset digests.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("lineage_edges"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("parent_id"))
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("child_id"))
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("relation"))
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("method"))
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("params")).text().not_null())
                    .col(ColumnDef::new(Alias::new("datasets")).text().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("lineage_edges"), Alias::new("parent_id"))
                            .to(Alias::new("artifacts"), Alias::new("id")),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("lineage_edges"), Alias::new("child_id"))
                            .to(Alias::new("artifacts"), Alias::new("id")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("lineage_parent")
                    .table(Alias::new("lineage_edges"))
                    .col(Alias::new("parent_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("lineage_child")
                    .table(Alias::new("lineage_edges"))
                    .col(Alias::new("child_id"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("lineage_edges")).to_owned())
            .await
    }
}
