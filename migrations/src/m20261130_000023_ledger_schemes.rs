//! `ledger_events.scheme`: how each event's hash was computed. Existing events keep `v1` (the
//! line format they were written with); new events are written with `jcs` (RFC 8785).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("ledger_events"))
                    .add_column(
                        ColumnDef::new(Alias::new("scheme"))
                            .string_len(8)
                            .not_null()
                            .default("v1"),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("ledger_events"))
                    .drop_column(Alias::new("scheme"))
                    .to_owned(),
            )
            .await
    }
}
