//! Blob grants: proof that a user possesses a blob's bytes (they uploaded them). A manifest or a
//! dataset registration may name a blob only if its author holds a grant or may already read the
//! blob; knowing a digest is not enough. Existing artifacts and datasets grant their authors.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("blob_grants"))
                    .col(
                        ColumnDef::new(Alias::new("user_id"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("digest"))
                            .string_len(64)
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(Alias::new("user_id"))
                            .col(Alias::new("digest")),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Alias::new("blob_grants"), Alias::new("user_id"))
                            .to(Alias::new("users"), Alias::new("id")),
                    )
                    .to_owned(),
            )
            .await?;
        // Who uploaded an existing blob was not recorded: its committers and registrants had it.
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO blob_grants (user_id, digest) \
                 SELECT a.created_by, f.digest FROM artifact_files f \
                   JOIN artifacts a ON a.id = f.artifact_id \
                 UNION \
                 SELECT d.registered_by, d.digest FROM datasets d \
                   JOIN blobs b ON b.digest = d.digest",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("blob_grants")).to_owned())
            .await
    }
}
