//! `clreg local train|eval|generate|mix` re-run themselves once with the process environment
//! engine work wants ([`clreg_engine::process_env`]: glibc malloc thresholds and a single arena,
//! candle's element-wise pool off), which glibc and candle read only at start-up.
//!
//! Settings the user already made are kept; `CLREG_NO_TUNING=1` turns the re-run off.

use std::process::ExitCode;

use crate::args::{Args, Command, LocalCommand};

const MARKER: &str = "CLREG_TUNED";

fn wants_tuning(args: &Args) -> bool {
    matches!(
        &args.command,
        Command::Local(
            LocalCommand::Train(_)
                | LocalCommand::Eval(_)
                | LocalCommand::Generate(_)
                | LocalCommand::Mix(_)
        )
    ) && std::env::var_os(MARKER).is_none()
        && std::env::var_os("CLREG_NO_TUNING").is_none()
}

/// Runs this command again in a child with the settings, when it is an engine command that has
/// not been tuned yet; returns the child's exit code. `None`: run here as usual.
pub fn rerun_tuned(args: &Args) -> Option<ExitCode> {
    if !wants_tuning(args) {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).env(MARKER, "1");
    for (name, value) in clreg_engine::process_env::ENGINE_ENV {
        if std::env::var_os(name).is_none() {
            cmd.env(name, value);
        }
    }
    // Ctrl-C reaches the child too (same process group), which stops cleanly; this process
    // must outlive it, so it listens for the signal instead of dying of it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let status = runtime.block_on(async move {
        let mut child = tokio::process::Command::from(cmd).spawn().ok()?;
        loop {
            tokio::select! {
                status = child.wait() => return status.ok(),
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    })?;
    Some(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::from(130),
    })
}
