//! One thin function per subcommand; `run` dispatches and hands `main` an exit status.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use crate::args::{
    Args, AuditCommand, CollabCommand, Command, DatasetCommand, EvalSubcommand, JobsCommand,
    LocalCommand, SeriesCommand,
};
use crate::cache::Cache;
use crate::client::Client;
use crate::config::{self, Credentials};
use crate::error::{ExitStatus, LocalError};
use crate::output::Output;

mod artifacts;
mod audit;
mod auth;
mod collab;
mod dataset;
mod job;
mod jobs;
mod ledger;
mod local;
mod mix;
mod provenance;
mod pull;
mod push;
mod series;
mod train;

/// What every command gets: how to print, and how to reach the server.
pub struct Ctx {
    pub out: Output,
    server: Option<String>,
    config_dir: PathBuf,
}

impl Ctx {
    /// Where logins, pinned ledger keys and saved checkpoints live.
    pub fn config_dir(&self) -> &std::path::Path {
        &self.config_dir
    }

    /// The server from `--server`/`CLREG_SERVER`, else the stored login's.
    pub fn client(&self) -> Result<Arc<Client>> {
        let creds = Credentials::load(&self.config_dir)?;
        let server = match (&self.server, &creds) {
            (Some(s), _) => s.clone(),
            (None, Some(c)) => c.server.clone(),
            (None, None) => {
                return Err(LocalError::not_logged_in(
                    "no server: run `clreg login --server URL --api-key KEY` or pass --server",
                )
                .into());
            }
        };
        Ok(Arc::new(Client::new(
            &server,
            creds,
            self.config_dir.clone(),
        )?))
    }

    pub fn cache(&self) -> Result<Arc<Cache>> {
        Ok(Arc::new(Cache::open(config::cache_dir()?)))
    }
}

pub async fn run(args: Args) -> Result<ExitStatus> {
    let ctx = Ctx {
        out: Output {
            json: args.json,
            quiet: args.quiet,
        },
        server: args.server.filter(|s| !s.trim().is_empty()),
        config_dir: config::config_dir()?,
    };
    match args.command {
        Command::Login(a) => auth::login(&ctx, a).await,
        Command::Logout => auth::logout(&ctx).await,
        Command::Whoami => auth::whoami(&ctx).await,
        Command::Collab(c) => match c {
            CollabCommand::Create {
                name,
                policy,
                description,
            } => collab::create(&ctx, name, policy, description).await,
            CollabCommand::Ls => collab::ls(&ctx).await,
            CollabCommand::Show { name } => collab::show(&ctx, &name).await,
            CollabCommand::AddMember { name, user, role } => {
                collab::add_member(&ctx, &name, user, role).await
            }
            CollabCommand::RemoveMember { name, user, role } => {
                collab::remove_member(&ctx, &name, &user, role).await
            }
            CollabCommand::Tighten { name, yes } => collab::tighten(&ctx, &name, yes).await,
        },
        Command::Local(LocalCommand::Tiny(a)) => local::tiny(&ctx, a),
        Command::Local(LocalCommand::Merge(a)) => local::merge(&ctx, a).await,
        Command::Local(LocalCommand::ImportGguf(a)) => local::import_gguf(&ctx, a).await,
        Command::Local(LocalCommand::Generate(a)) => local::generate(&ctx, a).await,
        Command::Local(LocalCommand::Mix(a)) => mix::mix(&ctx, a).await,
        Command::Local(LocalCommand::Train(a)) => train::train(&ctx, *a).await,
        Command::Local(LocalCommand::Eval(a)) => train::eval(&ctx, a).await,
        Command::Local(LocalCommand::Bwt(a)) => train::bwt(&ctx, a),
        Command::Local(LocalCommand::Synth(a)) => train::synth(&ctx, a),
        Command::Local(LocalCommand::Split(a)) => train::split(&ctx, a),
        Command::Push(a) => push::push(&ctx, a).await,
        Command::Pull(a) => pull::pull(&ctx, a).await,
        Command::Ls(a) => artifacts::ls(&ctx, a).await,
        Command::Show(a) => artifacts::show(&ctx, a).await,
        Command::Lineage(a) => artifacts::lineage(&ctx, a).await,
        Command::Dataset(d) => match d {
            DatasetCommand::Push {
                file,
                collab,
                task,
                metric,
                name,
                license,
                manifest_only,
            } => {
                let a = dataset::PushDataset {
                    file,
                    collab,
                    task,
                    metric,
                    name,
                    license,
                    manifest_only,
                };
                dataset::push(&ctx, a).await
            }
            DatasetCommand::Ls(a) => dataset::ls(&ctx, &a.collab).await,
            DatasetCommand::Pull {
                digest,
                collab,
                output,
            } => dataset::pull(&ctx, &digest, &collab, &output).await,
        },
        Command::Ledger(a) => ledger::ledger(&ctx, &a.collab).await,
        Command::Audit(AuditCommand::Verify(a)) => audit::verify(&ctx, &a.collab).await,
        Command::Audit(AuditCommand::Trust { key }) => audit::trust(&ctx, &key).await,
        Command::Merge(a) => jobs::merge(&ctx, a).await,
        Command::Mix(a) => jobs::mix(&ctx, a).await,
        Command::Train(a) => jobs::train(&ctx, *a).await,
        Command::Eval(a) => match a.import {
            Some(EvalSubcommand::Import(i)) => series::import(&ctx, i).await,
            None => jobs::eval(&ctx, a.job).await,
        },
        Command::Series(s) => match s {
            SeriesCommand::Create(a) => series::create(&ctx, a).await,
            SeriesCommand::Add(a) => series::add(&ctx, a).await,
            SeriesCommand::Report(a) => series::report(&ctx, a).await,
            SeriesCommand::Ls(a) => series::ls(&ctx, &a.collab).await,
        },
        Command::Evaluations(a) => jobs::evaluations(&ctx, a).await,
        Command::Jobs(j) => match j {
            JobsCommand::Ls(a) => jobs::ls(&ctx, &a.collab).await,
            JobsCommand::Show(a) => jobs::show(&ctx, a).await,
            JobsCommand::Logs(a) => jobs::logs(&ctx, a).await,
            JobsCommand::Cancel(a) => jobs::cancel(&ctx, a).await,
            JobsCommand::Wait(a) => jobs::wait(&ctx, a).await,
        },
    }
}
