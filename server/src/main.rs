//! `clreg-server`: serve the registry, run migrations, administer users.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clreg_server::{AppState, Config, admin, state};
use sea_orm_migration::MigratorTrait;

/// The clreg registry server.
///
/// With no configuration it keeps a SQLite database and a local object store under
/// ./clreg-data and listens on 127.0.0.1:8080. Settings come from defaults, then the TOML file
/// given with --config, then CLREG_* environment variables (CLREG_DATABASE_URL, CLREG_STORE,
/// CLREG_S3_ENDPOINT, CLREG_S3_REGION, CLREG_S3_ACCESS_KEY_ID, CLREG_S3_SECRET_ACCESS_KEY,
/// CLREG_S3_ALLOW_HTTP, CLREG_DATA_DIR, CLREG_ADDR, CLREG_MAX_BLOB_SIZE, CLREG_MAX_CHUNK_SIZE,
/// CLREG_TOKEN_TTL_SECS, CLREG_JWT_SECRET).
#[derive(Debug, Parser)]
#[command(name = "clreg-server", version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, global = true, env = "CLREG_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (migrations are applied first).
    Serve {
        /// Listen address, e.g. 0.0.0.0:8080 (overrides config and CLREG_ADDR).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Run job workers only, against the configured database and store (any number of these
    /// may run beside `serve` replicas; `serve` runs `workers` of its own too).
    Worker {
        /// How many jobs this process runs at once.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Fill this server's data dir with a small real collaboration (`demo`: a tiny base, three
    /// LoRA rounds trained by jobs, a TIES merge, a LoRA-MoE mix, evaluations and a series),
    /// then serve it; prints the web UI's address and login keys. A few minutes on 2 cores;
    /// run again, it serves what is there.
    Demo {
        /// Listen address (overrides config and CLREG_ADDR).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// Fill, print the keys, and exit instead of serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Internal: run one job's engine work. A worker starts this and talks to it over pipes;
    /// with --order and --progress it speaks the same protocol through files, as the trainer of
    /// an external executor does (docs/executors.md).
    #[command(hide = true)]
    RunJob {
        /// The order file (JSON) instead of stdin.
        #[arg(long, requires = "progress")]
        order: Option<std::path::PathBuf>,
        /// The file progress lines are appended to instead of stdout.
        #[arg(long, requires = "order")]
        progress: Option<std::path::PathBuf>,
    },
    /// Manage users and API keys.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a user and print its API key (shown once; only its hash is stored).
    CreateUser {
        name: String,
        /// Make the user a server admin.
        #[arg(long)]
        admin: bool,
    },
    /// Print a new additional API key for a user.
    CreateKey { name: String },
    /// Revoke every API key of a user, and end the tokens issued to them so far.
    RevokeKeys { name: String },
    /// Disable a user: their keys and tokens are refused until `enable-user`.
    DisableUser { name: String },
    /// Enable a disabled user again (their revoked keys stay revoked).
    EnableUser { name: String },
    /// Find blobs nothing refers to (no artifact, no stored dataset, no recent upload) and,
    /// with --apply, delete them. A dry run by default.
    Gc {
        /// Delete them (default: only report).
        #[arg(long)]
        apply: bool,
        /// Only blobs unreferenced and not uploaded for this long (default: the config's
        /// blob_gc_grace_secs, 7 days).
        #[arg(long, value_name = "SECS")]
        grace_secs: Option<u64>,
    },
    /// List users.
    ListUsers,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::RunJob { order, progress } = &args.command {
        // stdout (or the progress file) carries the protocol; diagnostics go to stderr.
        let result = match (order, progress) {
            (Some(order), Some(progress)) => clreg_server::jobs::runner::file_main(order, progress),
            _ => clreg_server::jobs::runner::child_main(),
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: run-job: {e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    match args.command {
        Command::Serve { addr } => {
            if let Some(addr) = addr {
                config.addr = addr;
            }
            tracing::info!(?config, "starting");
            let addr = config.addr;
            let state = AppState::build(config).await?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            tracing::info!(%addr, "listening");
            clreg_server::serve(state, listener, shutdown_signal()).await?;
            tracing::info!("stopped");
        }
        Command::Demo { addr, no_serve } => {
            if let Some(addr) = addr {
                config.addr = addr;
            }
            // At least one worker runs the demo's jobs.
            config.workers = config.workers.max(1);
            let addr = config.addr;
            let work = config.data_dir.join("demo-work");
            let state = AppState::build(config).await?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(clreg_server::serve(state.clone(), listener, async {
                let _ = stopped.await;
            }));
            eprintln!(
                "clreg demo: serving http://{addr}/ui/ while it fills (jobs show live there)"
            );
            let started = std::time::Instant::now();
            let logins =
                clreg_server::demo::fill(&state, &work, &|line| eprintln!("clreg demo: {line}"))
                    .await?;
            if logins.filled {
                eprintln!(
                    "clreg demo: filled in {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
            println!(
                "web UI:        http://{addr}/ui/c/{}",
                clreg_server::demo::COLLAB
            );
            println!("owner key:     {}", logins.owner_key);
            println!("auditor key:   {}", logins.auditor_key);
            if no_serve {
                let _ = stop.send(());
            } else {
                eprintln!("clreg demo: log in with a key above; Ctrl-C stops the server");
                shutdown_signal().await;
                let _ = stop.send(());
            }
            server.await??;
        }
        Command::Worker { count } => {
            tracing::info!(?config, count, "starting workers");
            let state = AppState::build(config).await?;
            let (stop, workers) = clreg_server::start_workers(&state, count, "worker");
            shutdown_signal().await;
            let _ = stop.send(true);
            for w in workers {
                let _ = w.await;
            }
            tracing::info!("stopped");
        }
        Command::RunJob { .. } => unreachable!("handled before the runtime starts"),
        Command::Migrate => {
            std::fs::create_dir_all(&config.data_dir)?;
            let db = state::connect(&config.database_url()).await?;
            clreg_migrations::Migrator::up(&db, None).await?;
            println!("migrations applied");
        }
        Command::Admin(command) => {
            std::fs::create_dir_all(&config.data_dir)?;
            let db = state::connect(&config.database_url()).await?;
            clreg_migrations::Migrator::up(&db, None).await?;
            let fail =
                |e: clreg_server::error::ApiError| anyhow::anyhow!("[{}] {}", e.code, e.message);
            match command {
                AdminCommand::CreateUser {
                    name,
                    admin: is_admin,
                } => {
                    let key = admin::create_user(&db, &name, is_admin)
                        .await
                        .map_err(fail)?;
                    eprintln!("created user `{name}`; its API key (shown once, store it safely):");
                    println!("{key}");
                }
                AdminCommand::CreateKey { name } => {
                    let key = admin::create_key(&db, &name).await.map_err(fail)?;
                    println!("{key}");
                }
                AdminCommand::RevokeKeys { name } => {
                    let n = admin::revoke_keys(&db, &name).await.map_err(fail)?;
                    println!("revoked {n} key(s) of `{name}`");
                }
                AdminCommand::DisableUser { name } => {
                    admin::set_disabled(&db, &name, true).await.map_err(fail)?;
                    println!("disabled `{name}`");
                }
                AdminCommand::EnableUser { name } => {
                    admin::set_disabled(&db, &name, false).await.map_err(fail)?;
                    println!("enabled `{name}`");
                }
                AdminCommand::Gc { apply, grace_secs } => {
                    let grace = grace_secs.unwrap_or(config.blob_gc_grace_secs);
                    let state = clreg_server::AppState::build(config.clone()).await?;
                    let report = clreg_server::gc::collect(
                        &state,
                        chrono::Duration::seconds(i64::try_from(grace).unwrap_or(i64::MAX / 2)),
                        apply,
                    )
                    .await
                    .map_err(fail)?;
                    for (digest, size) in &report.blobs {
                        println!("{digest}\t{size}");
                    }
                    if apply {
                        eprintln!(
                            "deleted {} unreferenced blob(s), {} bytes, and what {} ended upload session(s) left",
                            report.deleted, report.bytes, report.stale_parts
                        );
                    } else {
                        eprintln!(
                            "{} unreferenced blob(s), {} bytes, and what {} ended upload session(s) left \
                             (a dry run: --apply deletes them)",
                            report.blobs.len(),
                            report.bytes,
                            report.stale_parts
                        );
                    }
                }
                AdminCommand::ListUsers => {
                    for u in admin::list_users(&db).await.map_err(fail)? {
                        println!(
                            "{}\t{}\t{}{}",
                            u.name,
                            if u.is_admin { "admin" } else { "user" },
                            u.created_at.to_rfc3339(),
                            if u.disabled_at.is_some() {
                                "\tdisabled"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
