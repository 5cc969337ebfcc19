//! Jobs: engine work (merge, mix, train, eval) queued in the registry and claimed by workers
//! under a lease they renew.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn text(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .text()
        .not_null()
        .to_owned()
}

fn nullable_text(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name)).text().null().to_owned()
}

fn time(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("jobs"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("collab_id"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("submitted_by"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("kind")).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Alias::new("state"))
                            .string_len(16)
                            .not_null(),
                    )
                    .col(nullable_text("name"))
                    // The request as submitted, and the artifact ids its references resolved to.
                    .col(text("request"))
                    .col(text("inputs"))
                    .col(nullable_text("requires"))
                    .col(ColumnDef::new(Alias::new("progress")).double().not_null())
                    .col(text("message"))
                    .col(text("log"))
                    .col(ColumnDef::new(Alias::new("attempts")).integer().not_null())
                    .col(nullable_text("lease_owner"))
                    .col(time("lease_expires_at"))
                    .col(
                        ColumnDef::new(Alias::new("cancel_requested"))
                            .boolean()
                            .not_null(),
                    )
                    .col(nullable_text("result"))
                    .col(nullable_text("error_code"))
                    .col(nullable_text("error_message"))
                    .col(
                        ColumnDef::new(Alias::new("created_at"))
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(time("started_at"))
                    .col(time("finished_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("jobs"), Alias::new("collab_id"))
                            .to(Alias::new("collaborations"), Alias::new("id")),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("jobs"), Alias::new("submitted_by"))
                            .to(Alias::new("users"), Alias::new("id")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("jobs_queue")
                    .table(Alias::new("jobs"))
                    .col(Alias::new("state"))
                    .col(Alias::new("created_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("jobs")).to_owned())
            .await
    }
}
