//! `blob_grants.granted_at`: when a user last uploaded a blob. A recent grant keeps an
//! otherwise unreferenced blob from garbage collection (its uploader is about to commit it).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("blob_grants"))
                    .add_column(
                        ColumnDef::new(Alias::new("granted_at"))
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("blob_grants"))
                    .drop_column(Alias::new("granted_at"))
                    .to_owned(),
            )
            .await
    }
}
