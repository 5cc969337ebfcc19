//! `uploads.instance`: which server process holds an upload's writer and running hash, so that
//! process, restarted, aborts what it staged before (NULL for sessions older than the column).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("uploads"))
                    .add_column(ColumnDef::new(Alias::new("instance")).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("uploads"))
                    .drop_column(Alias::new("instance"))
                    .to_owned(),
            )
            .await
    }
}
