//! Server configuration: defaults, then a TOML file, then `CLREG_*` environment variables.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Every setting of the server. Secrets are redacted by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address `serve` listens on.
    pub addr: SocketAddr,
    /// Where the embedded defaults keep their files (SQLite database, local store, JWT keys).
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: `sqlite://<data_dir>/clreg.db`.
    pub database_url: Option<String>,
    /// `s3://bucket[/prefix]` or a local directory; default: `<data_dir>/store`.
    pub store: Option<String>,
    pub s3: S3Config,
    /// Largest blob an upload may produce, in bytes.
    pub max_blob_size: u64,
    /// Largest single upload chunk (`PATCH` body), in bytes.
    pub max_chunk_size: u64,
    /// How long an unfinished upload session lives, in seconds.
    pub upload_ttl_secs: u64,
    /// An upload session that receives nothing for this long is aborted, in seconds.
    pub upload_idle_secs: u64,
    /// Open upload sessions one user may hold (each holds a row and its chunks' objects).
    pub max_uploads_per_user: u64,
    /// Open upload sessions in all.
    pub max_uploads: u64,
    /// Token exchanges one client address may make per minute (one API key: 10).
    pub token_requests_per_minute: u32,
    /// Seconds a client may take to send a request's headers (this also closes idle
    /// keep-alive connections); slow-header clients cannot hold connections open.
    pub header_read_timeout_secs: u64,
    /// The most open client connections; more are closed at once.
    pub max_connections: usize,
    /// The most bytes of distinct blobs one collaboration's artifacts and stored datasets may
    /// hold; 0 for no quota.
    pub collab_quota_bytes: u64,
    /// Blobs nothing refers to are collected once unreferenced (and not uploaded) this long.
    pub blob_gc_grace_secs: u64,
    /// How often `serve` collects unreferenced blobs; 0 never (`admin gc` still can).
    pub blob_gc_every_secs: u64,
    /// Lifetime of the JWTs `POST /auth/token` issues, in seconds.
    pub token_ttl_secs: u64,
    /// JWT signing keys (HS256); the first is used to sign, all verify. When empty, a key is
    /// generated into `<data_dir>/jwt-keys.json` on first start.
    pub jwt_keys: Vec<JwtKey>,
    /// The Ed25519 seed (64 hex digits) that signs ledger checkpoints. When absent, one is
    /// generated into `<data_dir>/ledger-signing-key` (mode 0600) on first start.
    pub ledger_signing_key: Option<String>,
    /// The `iss` claim of issued tokens.
    pub issuer: String,
    /// Job workers `serve` runs in-process (`clreg-server worker` runs more elsewhere); 0: none.
    pub workers: usize,
    /// The program a worker runs each job in, as `PROGRAM run-job` (default: this executable).
    /// A job's tensor work runs in a child process so a crash or OOM never takes the API down.
    pub job_runner: Option<PathBuf>,
    /// The device this process's workers run jobs on: `cpu` or `cuda:N`.
    pub worker_device: String,
    /// Seconds a worker's claim on a job lasts without a heartbeat; a lapsed job is claimed
    /// again by another worker.
    pub job_lease_secs: u64,
    /// The most bytes a worker's input cache (`<data_dir>/cache`) keeps beyond the inputs of
    /// running jobs; the least recently used artifacts go first. Blobs hard-linked from a
    /// local store cost nothing here.
    pub job_cache_bytes: u64,
    /// Web UI cookies carry `Secure` (set it when users reach the server over TLS through a
    /// proxy; they carry it anyway on requests the proxy marks `X-Forwarded-Proto: https`).
    pub secure_cookies: bool,
    /// Who runs this process's workers' train jobs: the engine (default), a command, Slurm or
    /// Kubernetes (`[executor]`; see docs/executors.md).
    pub executor: crate::jobs::executor::ExecutorConfig,
}

/// JWT keys, wherever they come from (config, environment, the generated key file): each
/// with a kid and at least 32 bytes of secret, no kid twice.
pub fn check_jwt_keys(keys: &[JwtKey]) -> Result<(), String> {
    let mut kids = std::collections::BTreeSet::new();
    for key in keys {
        if key.kid.trim().is_empty() {
            return Err("a jwt key has an empty kid: give each key an id".into());
        }
        if key.secret.len() < 32 {
            return Err(format!(
                "jwt key `{}` is too short: use at least 32 bytes of secret",
                key.kid
            ));
        }
        if !kids.insert(key.kid.as_str()) {
            return Err(format!(
                "jwt key id `{}` is used twice: a token names its key by id, so ids must differ",
                key.kid
            ));
        }
    }
    Ok(())
}

/// Every environment variable the configuration reads (besides `CLREG_CONFIG`, the file's
/// path, which the command line reads). Deployment files are checked against it.
pub const ENV_VARS: &[&str] = &[
    "CLREG_ADDR",
    "CLREG_DATA_DIR",
    "CLREG_DATABASE_URL",
    "CLREG_STORE",
    "CLREG_WORKERS",
    "CLREG_JOB_RUNNER",
    "CLREG_SECURE_COOKIES",
    "CLREG_WORKER_DEVICE",
    "CLREG_JOB_LEASE_SECS",
    "CLREG_JOB_CACHE_BYTES",
    "CLREG_EXECUTOR",
    "CLREG_EXECUTOR_COMMAND",
    "CLREG_EXECUTOR_PYTHON",
    "CLREG_S3_ENDPOINT",
    "CLREG_S3_REGION",
    "CLREG_S3_ACCESS_KEY_ID",
    "CLREG_S3_SECRET_ACCESS_KEY",
    "CLREG_S3_ALLOW_HTTP",
    "CLREG_S3_MAX_COPY_SIZE",
    "CLREG_MAX_BLOB_SIZE",
    "CLREG_MAX_CHUNK_SIZE",
    "CLREG_UPLOAD_IDLE_SECS",
    "CLREG_MAX_UPLOADS_PER_USER",
    "CLREG_MAX_UPLOADS",
    "CLREG_TOKEN_REQUESTS_PER_MINUTE",
    "CLREG_HEADER_READ_TIMEOUT_SECS",
    "CLREG_MAX_CONNECTIONS",
    "CLREG_COLLAB_QUOTA_BYTES",
    "CLREG_BLOB_GC_GRACE_SECS",
    "CLREG_BLOB_GC_EVERY_SECS",
    "CLREG_TOKEN_TTL_SECS",
    "CLREG_JWT_SECRET",
    "CLREG_LEDGER_SIGNING_KEY",
    "CLREG_JWT_KEYS",
];

/// The longest a token may live: clients renew from their API key.
pub const MAX_TOKEN_TTL_SECS: u64 = 24 * 3600;

#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow plain-HTTP endpoints (MinIO on a private network, tests).
    pub allow_http: bool,
    /// The largest object the store copies server-side in one request (S3's CopyObject: 5 GiB);
    /// a larger finished upload is copied to its blob key by streaming it in parts.
    pub max_copy_size: Option<u64>,
}

impl S3Config {
    /// S3 copies at most 5 GiB in one CopyObject.
    pub const MAX_COPY_SIZE: u64 = 5 << 30;

    pub fn max_copy_size(&self) -> u64 {
        self.max_copy_size.unwrap_or(Self::MAX_COPY_SIZE)
    }
}

#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    pub kid: String,
    pub secret: String,
}

/// Shows the kid only: secrets never reach logs.
impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("clreg-data"),
            database_url: None,
            store: None,
            s3: S3Config::default(),
            max_blob_size: 64 << 30,
            max_chunk_size: 64 << 20,
            upload_ttl_secs: 24 * 3600,
            upload_idle_secs: 3600,
            max_uploads_per_user: 64,
            max_uploads: 4096,
            token_requests_per_minute: 60,
            header_read_timeout_secs: 30,
            max_connections: 1024,
            collab_quota_bytes: 1 << 40,
            blob_gc_grace_secs: 7 * 24 * 3600,
            blob_gc_every_secs: 24 * 3600,
            token_ttl_secs: 3600,
            jwt_keys: Vec::new(),
            ledger_signing_key: None,
            issuer: "clreg".to_string(),
            workers: 1,
            job_runner: None,
            worker_device: "cpu".to_string(),
            job_lease_secs: 30,
            job_cache_bytes: 20 << 30,
            secure_cookies: false,
            executor: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid environment variable {name}: {reason}")]
    Env { name: &'static str, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, overlaid by the TOML file at `path` (if any), overlaid by the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.check()?;
        Ok(config)
    }

    /// Applies `CLREG_*` variables read through `var` (a parameter so tests need no globals).
    pub fn apply_env(
        &mut self,
        var: impl Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &'static str, v: String) -> Result<T, ConfigError>
        where
            T::Err: fmt::Display,
        {
            v.parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                reason: e.to_string(),
            })
        }
        if let Some(v) = var("CLREG_ADDR") {
            self.addr = parse("CLREG_ADDR", v)?;
        }
        if let Some(v) = var("CLREG_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("CLREG_DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = var("CLREG_STORE") {
            self.store = Some(v);
        }
        if let Some(v) = var("CLREG_WORKERS") {
            self.workers = parse("CLREG_WORKERS", v)?;
        }
        if let Some(v) = var("CLREG_JOB_RUNNER") {
            self.job_runner = Some(PathBuf::from(v));
        }
        if let Some(v) = var("CLREG_SECURE_COOKIES") {
            self.secure_cookies = parse("CLREG_SECURE_COOKIES", v)?;
        }
        if let Some(v) = var("CLREG_WORKER_DEVICE") {
            self.worker_device = v;
        }
        if let Some(v) = var("CLREG_JOB_LEASE_SECS") {
            self.job_lease_secs = parse("CLREG_JOB_LEASE_SECS", v)?;
        }
        if let Some(v) = var("CLREG_JOB_CACHE_BYTES") {
            self.job_cache_bytes = parse("CLREG_JOB_CACHE_BYTES", v)?;
        }
        if let Some(v) = var("CLREG_EXECUTOR") {
            self.executor.kind = v.parse().map_err(|reason| ConfigError::Env {
                name: "CLREG_EXECUTOR",
                reason,
            })?;
        }
        if let Some(v) = var("CLREG_EXECUTOR_COMMAND") {
            self.executor.command = v;
        }
        if let Some(v) = var("CLREG_EXECUTOR_PYTHON") {
            self.executor.python = v;
        }
        if let Some(v) = var("CLREG_S3_ENDPOINT") {
            self.s3.endpoint = Some(v);
        }
        if let Some(v) = var("CLREG_S3_REGION") {
            self.s3.region = Some(v);
        }
        if let Some(v) = var("CLREG_S3_ACCESS_KEY_ID") {
            self.s3.access_key_id = Some(v);
        }
        if let Some(v) = var("CLREG_S3_SECRET_ACCESS_KEY") {
            self.s3.secret_access_key = Some(v);
        }
        if let Some(v) = var("CLREG_S3_ALLOW_HTTP") {
            self.s3.allow_http = parse("CLREG_S3_ALLOW_HTTP", v)?;
        }
        if let Some(v) = var("CLREG_S3_MAX_COPY_SIZE") {
            self.s3.max_copy_size = Some(parse("CLREG_S3_MAX_COPY_SIZE", v)?);
        }
        if let Some(v) = var("CLREG_MAX_BLOB_SIZE") {
            self.max_blob_size = parse("CLREG_MAX_BLOB_SIZE", v)?;
        }
        if let Some(v) = var("CLREG_MAX_CHUNK_SIZE") {
            self.max_chunk_size = parse("CLREG_MAX_CHUNK_SIZE", v)?;
        }
        if let Some(v) = var("CLREG_UPLOAD_IDLE_SECS") {
            self.upload_idle_secs = parse("CLREG_UPLOAD_IDLE_SECS", v)?;
        }
        if let Some(v) = var("CLREG_MAX_UPLOADS_PER_USER") {
            self.max_uploads_per_user = parse("CLREG_MAX_UPLOADS_PER_USER", v)?;
        }
        if let Some(v) = var("CLREG_MAX_UPLOADS") {
            self.max_uploads = parse("CLREG_MAX_UPLOADS", v)?;
        }
        if let Some(v) = var("CLREG_TOKEN_REQUESTS_PER_MINUTE") {
            self.token_requests_per_minute = parse("CLREG_TOKEN_REQUESTS_PER_MINUTE", v)?;
        }
        if let Some(v) = var("CLREG_HEADER_READ_TIMEOUT_SECS") {
            self.header_read_timeout_secs = parse("CLREG_HEADER_READ_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = var("CLREG_MAX_CONNECTIONS") {
            self.max_connections = parse("CLREG_MAX_CONNECTIONS", v)?;
        }
        if let Some(v) = var("CLREG_COLLAB_QUOTA_BYTES") {
            self.collab_quota_bytes = parse("CLREG_COLLAB_QUOTA_BYTES", v)?;
        }
        if let Some(v) = var("CLREG_BLOB_GC_GRACE_SECS") {
            self.blob_gc_grace_secs = parse("CLREG_BLOB_GC_GRACE_SECS", v)?;
        }
        if let Some(v) = var("CLREG_BLOB_GC_EVERY_SECS") {
            self.blob_gc_every_secs = parse("CLREG_BLOB_GC_EVERY_SECS", v)?;
        }
        if let Some(v) = var("CLREG_TOKEN_TTL_SECS") {
            self.token_ttl_secs = parse("CLREG_TOKEN_TTL_SECS", v)?;
        }
        if let Some(v) = var("CLREG_JWT_SECRET") {
            self.jwt_keys = vec![JwtKey {
                kid: "env".to_string(),
                secret: v,
            }];
        }
        // Several keys for rotation: a JSON array of {kid, secret}, the first signs.
        if let Some(v) = var("CLREG_LEDGER_SIGNING_KEY") {
            self.ledger_signing_key = Some(v);
        }
        if let Some(v) = var("CLREG_JWT_KEYS") {
            self.jwt_keys = serde_json::from_str(&v).map_err(|e| ConfigError::Env {
                name: "CLREG_JWT_KEYS",
                reason: format!("not a JSON array of {{\"kid\", \"secret\"}}: {e}"),
            })?;
        }
        Ok(())
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        if self.max_chunk_size == 0 || self.max_blob_size == 0 {
            return Err(ConfigError::Invalid(
                "max_blob_size and max_chunk_size must be positive".into(),
            ));
        }
        if !(30..=MAX_TOKEN_TTL_SECS).contains(&self.token_ttl_secs) {
            return Err(ConfigError::Invalid(format!(
                "token_ttl_secs is {}: it must be 30 to {MAX_TOKEN_TTL_SECS} (a day)",
                self.token_ttl_secs
            )));
        }
        if let Err(e) = self.worker_device.parse::<clreg_engine::job::Device>() {
            return Err(ConfigError::Invalid(format!("worker_device: {e}")));
        }
        if self.job_lease_secs < 3 {
            return Err(ConfigError::Invalid(
                "job_lease_secs must be at least 3".into(),
            ));
        }
        self.executor
            .check(&self.data_dir)
            .map_err(ConfigError::Invalid)?;
        check_jwt_keys(&self.jwt_keys).map_err(ConfigError::Invalid)
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("clreg.db").display()
            ),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("store", &self.store)
            .field("s3_endpoint", &self.s3.endpoint)
            .field("s3_region", &self.s3.region)
            .field(
                "s3_credentials",
                &self.s3.access_key_id.as_ref().map(|_| "<redacted>"),
            )
            .field("max_blob_size", &self.max_blob_size)
            .field("max_chunk_size", &self.max_chunk_size)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("workers", &self.workers)
            .field("job_runner", &self.job_runner)
            .field("worker_device", &self.worker_device)
            .field("job_lease_secs", &self.job_lease_secs)
            .field("job_cache_bytes", &self.job_cache_bytes)
            .field("secure_cookies", &self.secure_cookies)
            .field("executor", &self.executor.kind)
            .field(
                "jwt_keys",
                &self.jwt_keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field(
                "ledger_signing_key",
                &self.ledger_signing_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Removes a password from a database URL before it is shown anywhere.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:<redacted>{}", &base[..scheme + 3], &base[at..])
        }
        _ => base.to_string(),
    };
    // Secrets also travel as parameters (`?password=…`, `sslpassword`, `sslkey`, tokens).
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if ["password", "secret", "token", "key"]
                        .iter()
                        .any(|s| k.to_ascii_lowercase().contains(s)) =>
                {
                    format!("{k}=<redacted>")
                }
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn env_vars_lists_every_variable_read() {
        let source = include_str!("config.rs");
        let read: std::collections::BTreeSet<&str> = source
            .split("var(\"")
            .skip(1)
            .filter_map(|rest| rest.split_once('"').map(|(name, _)| name))
            .filter(|name| name.starts_with("CLREG_"))
            .collect();
        let listed: std::collections::BTreeSet<&str> = ENV_VARS.iter().copied().collect();
        assert_eq!(read, listed);
    }

    use super::*;

    #[test]
    fn secrets_in_url_parameters_are_redacted() {
        let url = "postgres://db.internal/clreg?user=clreg&password=hunter2&sslmode=require&sslpassword=s3cret";
        let shown = redact_url(url);
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(
            shown.contains("sslmode=require") && shown.contains("user=clreg"),
            "{shown}"
        );
        assert_eq!(
            redact_url("postgres://u:pw@db/x?password=p"),
            "postgres://u:<redacted>@db/x?password=<redacted>"
        );
    }

    #[test]
    fn env_overrides_file_and_secrets_are_redacted() {
        let mut config: Config =
            toml::from_str("addr = \"0.0.0.0:9000\"\nmax_chunk_size = 1024\n").unwrap_or_default();
        assert_eq!(config.addr.port(), 9000);
        config
            .apply_env(|name| match name {
                "CLREG_DATABASE_URL" => Some("postgres://u:hunter2@db/clreg".into()),
                "CLREG_MAX_CHUNK_SIZE" => Some("2048".into()),
                _ => None,
            })
            .unwrap_or_default();
        assert_eq!(config.max_chunk_size, 2048);
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u:<redacted>@db"), "{shown}");
    }

    #[test]
    fn jwt_keys_rotate_by_environment_and_bad_sets_are_refused() {
        let long = "x".repeat(32);
        let mut config = Config::default();
        config
            .apply_env(|name| {
                (name == "CLREG_JWT_KEYS").then(|| {
                    format!(
                        r#"[{{"kid":"new","secret":"{long}"}},{{"kid":"old","secret":"{long}"}}]"#
                    )
                })
            })
            .unwrap_or_default();
        assert_eq!(
            config
                .jwt_keys
                .iter()
                .map(|k| k.kid.as_str())
                .collect::<Vec<_>>(),
            ["new", "old"]
        );
        assert!(config.check().is_ok());
        for (keys, needle) in [
            (
                vec![("a", long.as_str()), ("a", long.as_str())],
                "used twice",
            ),
            (vec![("a", "short")], "too short"),
            (vec![(" ", long.as_str())], "empty kid"),
        ] {
            let keys: Vec<JwtKey> = keys
                .into_iter()
                .map(|(kid, secret)| JwtKey {
                    kid: kid.into(),
                    secret: secret.into(),
                })
                .collect();
            let err = check_jwt_keys(&keys).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let mut config = Config::default();
        assert!(
            config
                .apply_env(|name| (name == "CLREG_JWT_KEYS").then(|| "nope".to_string()))
                .is_err()
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let mut config = Config::default();
        let err = config.apply_env(|name| (name == "CLREG_ADDR").then(|| "nope".to_string()));
        assert!(matches!(
            err,
            Err(ConfigError::Env {
                name: "CLREG_ADDR",
                ..
            })
        ));
        assert!(toml::from_str::<Config>("unknown_key = 1").is_err());
    }
}
