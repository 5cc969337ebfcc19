//! `clreg login`, `logout` and `whoami`.

use std::io::{BufRead as _, IsTerminal as _, Read as _};

use anyhow::{Context as _, Result};
use serde_json::json;

use super::Ctx;
use crate::args::LoginArgs;
use crate::client::{exchange, http_client};
use crate::config::{Credentials, normalize_server};
use crate::error::{ExitStatus, LocalError};

pub async fn login(ctx: &Ctx, args: LoginArgs) -> Result<ExitStatus> {
    let stored = Credentials::load(&ctx.config_dir)?;
    let server = match (&ctx.server, &stored) {
        (Some(s), _) => normalize_server(s),
        (None, Some(c)) => normalize_server(&c.server),
        (None, None) => {
            return Err(
                LocalError::usage("which server? pass --server URL (or set CLREG_SERVER)").into(),
            );
        }
    };
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(LocalError::usage(format!(
            "server URL `{server}` must start with http:// or https://"
        ))
        .into());
    }
    let api_key = match args.api_key.filter(|k| !k.trim().is_empty()) {
        Some(k) => k.trim().to_string(),
        None => read_key()?,
    };
    let answer = exchange(&http_client()?, &server, &api_key).await?;
    let creds = Credentials {
        server: server.clone(),
        user: answer.user.clone(),
        api_key,
        token: answer.token,
        expires_at: answer.expires_at,
    };
    creds.save(&ctx.config_dir)?;
    ctx.out.emit(
        &json!({"server": server, "user": creds.user, "expires_at": creds.expires_at}),
        || format!("logged in to {server} as {}", creds.user),
    )?;
    Ok(ExitStatus::Success)
}

/// The key from standard input: one line when it is a terminal (with a prompt), else all of it.
fn read_key() -> Result<String> {
    let stdin = std::io::stdin();
    let mut key = String::new();
    if stdin.is_terminal() {
        eprint!("API key: ");
        stdin
            .lock()
            .read_line(&mut key)
            .context("reading the API key")?;
    } else {
        stdin
            .lock()
            .read_to_string(&mut key)
            .context("reading the API key from stdin")?;
    }
    let key = key.trim().to_string();
    if key.is_empty() {
        return Err(LocalError::usage(
            "no API key: pass --api-key, set CLREG_API_KEY, or pipe it on stdin",
        )
        .into());
    }
    Ok(key)
}

pub async fn logout(ctx: &Ctx) -> Result<ExitStatus> {
    let stored = Credentials::load(&ctx.config_dir).ok().flatten();
    let removed = Credentials::remove(&ctx.config_dir)?;
    let server = stored.map(|c| c.server);
    ctx.out.emit(
        &json!({"logged_out": removed, "server": server}),
        || match (&server, removed) {
            (Some(s), true) => format!("logged out of {s}"),
            _ if removed => "logged out".to_string(),
            _ => "not logged in".to_string(),
        },
    )?;
    Ok(ExitStatus::Success)
}

pub async fn whoami(ctx: &Ctx) -> Result<ExitStatus> {
    let client = ctx.client()?;
    // Listing collaborations proves the token (renewing it if needed) without side effects.
    let collabs: Vec<clreg_types::Collaboration> = client.get("/collaborations").await?;
    let user = client.user().await.unwrap_or_default();
    let server = client.server().to_string();
    ctx.out.emit(
        &json!({"server": server, "user": user, "collaborations": collabs.len()}),
        || format!("{user} on {server}"),
    )?;
    Ok(ExitStatus::Success)
}
