//! `AppState`: the database, the object store, the signing keys and the config, built in one place.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

use crate::auth::Keys;
use crate::config::{Config, redact_url};

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub store: Arc<dyn ObjectStore>,
    pub keys: Arc<Keys>,
    pub config: Arc<Config>,
    /// Bounds CPU-heavy validation running on blocking threads.
    pub cpu: Arc<tokio::sync::Semaphore>,
    /// Wakes this process's idle workers when a job is queued (others poll).
    pub job_queued: Arc<tokio::sync::Notify>,
    /// Signs ledger checkpoints.
    pub signer: Arc<crate::transparency::Signer>,
    /// Token exchanges per client address, and per API key.
    pub token_limits: Arc<(crate::ratelimit::Limiter, crate::ratelimit::Limiter)>,
    /// The web UI's open live job streams (bounded in all and per user).
    pub ui_streams: Arc<crate::routes::ui::events::Streams>,
}

impl AppState {
    /// The local directory of the store, when the store is one (not S3).
    pub fn local_store_dir(&self) -> Option<std::path::PathBuf> {
        match self.config.store.as_deref() {
            None => Some(self.config.data_dir.join("store")),
            Some(s) if s.starts_with("s3://") => None,
            Some(s) => Some(std::path::PathBuf::from(s.trim_start_matches("file://"))),
        }
    }

    /// Connects to the database, runs migrations, opens the store and loads the JWT keys.
    pub async fn build(config: Config) -> anyhow::Result<AppState> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display())
        })?;
        let db = connect(&config.database_url()).await?;
        clreg_migrations::Migrator::up(&db, None).await?;
        let store = open_store(&config)?;
        let keys = Keys::load_or_generate(&config)?;
        let signer = crate::transparency::Signer::load_or_generate(&config)?;
        let per_address = config.token_requests_per_minute;
        Ok(AppState {
            db,
            store,
            keys: Arc::new(keys),
            config: Arc::new(config),
            cpu: Arc::new(tokio::sync::Semaphore::new(2)),
            job_queued: Arc::new(tokio::sync::Notify::new()),
            signer: Arc::new(signer),
            token_limits: Arc::new((
                crate::ratelimit::Limiter::new(per_address, Duration::from_secs(60)),
                crate::ratelimit::Limiter::new(10, Duration::from_secs(60)),
            )),
            ui_streams: Arc::default(),
        })
    }
}

pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .sqlx_logging(false)
        .acquire_timeout(Duration::from_secs(30));
    if url.starts_with("sqlite:") {
        // One writer at a time is SQLite's nature; WAL lets readers go on meanwhile.
        options.max_connections(8).map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    } else {
        options.max_connections(16);
    }
    Database::connect(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to database {}: {e}", redact_url(url)))
}

/// Local directory (default `<data_dir>/store`) or `s3://bucket[/prefix]`.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let spec = config.store.clone();
    match spec.as_deref() {
        Some(url) if url.starts_with("s3://") => {
            let rest = &url["s3://".len()..];
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                anyhow::bail!("store `{url}` names no bucket: use s3://BUCKET[/PREFIX]");
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            let s3 = &config.s3;
            if let Some(endpoint) = &s3.endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            if let Some(region) = &s3.region {
                builder = builder.with_region(region);
            }
            if let Some(id) = &s3.access_key_id {
                builder = builder.with_access_key_id(id);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            builder = builder.with_allow_http(s3.allow_http);
            let store = builder.build()?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Ok(Arc::new(store))
            } else {
                Ok(Arc::new(PrefixStore::new(store, prefix)))
            }
        }
        other => {
            let dir = match other {
                Some(path) => std::path::PathBuf::from(path.trim_start_matches("file://")),
                None => config.data_dir.join("store"),
            };
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create store dir {}: {e}", dir.display()))?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(&dir)?))
        }
    }
}
