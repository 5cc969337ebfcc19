//! Ledger: per-chain hash-linked events; (chain, seq) is unique so concurrent appends cannot fork.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("ledger_events"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("chain"))
                            .string_len(80)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("collab_id")).big_integer().null())
                    .col(ColumnDef::new(Alias::new("seq")).big_integer().not_null())
                    .col(ColumnDef::new(Alias::new("kind")).string_len(64).not_null())
                    .col(
                        ColumnDef::new(Alias::new("actor"))
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("payload")).text().not_null())
                    .col(
                        ColumnDef::new(Alias::new("created_at"))
                            .string_len(40)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("prev_hash"))
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("hash")).string_len(64).not_null())
                    .index(
                        Index::create()
                            .name("ledger_chain_seq")
                            .col(Alias::new("chain"))
                            .col(Alias::new("seq"))
                            .unique(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("ledger_events")).to_owned())
            .await
    }
}
