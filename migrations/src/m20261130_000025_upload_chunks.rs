//! Upload sessions any replica can continue: `uploads.state` holds the running checks (the
//! serialised sha256 state and the safetensors NaN / infinity scan) as of the committed offset,
//! and `upload_chunks` lists the chunk objects (`uploads/<id>/<start>-<attempt>`) that hold the
//! bytes. A session from before this migration has no state and can only be started again.
//! (`uploads.instance` and `uploads.parts` are no longer written.)

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
                    .add_column(ColumnDef::new(Alias::new("state")).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("upload_chunks"))
                    .col(ColumnDef::new(Alias::new("upload_id")).uuid().not_null())
                    .col(ColumnDef::new(Alias::new("start")).big_integer().not_null())
                    .col(ColumnDef::new(Alias::new("len")).big_integer().not_null())
                    .col(ColumnDef::new(Alias::new("attempt")).uuid().not_null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("upload_id"))
                            .col(Alias::new("start")),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("upload_chunks")).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("uploads"))
                    .drop_column(Alias::new("state"))
                    .to_owned(),
            )
            .await
    }
}
