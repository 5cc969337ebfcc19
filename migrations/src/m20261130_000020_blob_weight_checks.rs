//! `blobs.weights_check`, `non_finite_tensor`, `non_finite_element`: what the upload's NaN /
//! infinity scan found in a safetensors blob (`finite`, `non_finite`, `unscanned`,
//! `not_safetensors`; NULL for blobs stored before the scan existed).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            ColumnDef::new(Alias::new("weights_check"))
                .string()
                .null()
                .to_owned(),
            ColumnDef::new(Alias::new("non_finite_tensor"))
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(Alias::new("non_finite_element"))
                .big_integer()
                .null()
                .to_owned(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("blobs"))
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["weights_check", "non_finite_tensor", "non_finite_element"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("blobs"))
                        .drop_column(Alias::new(name))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
