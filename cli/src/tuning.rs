//! Process-wide settings that make engine work (training above all) fast, which glibc and candle
//! read only from the environment at start-up. Rust 2024 makes `set_var` unsafe and the workspace
//! forbids `unsafe`, so `clreg local train|eval|generate|mix` re-runs itself once with them set.
//!
//! - `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…:glibc.malloc.trim_threshold=…`: glibc would hand
//!   every large buffer back to the kernel when it is freed, and the kernel zeroes fresh pages on
//!   the next step: ~20 % of a LoRA step on SmolLM2-135M went to page faults.
//! - `CANDLE_NUM_THREADS=1`: candle's element-wise thread pool spin-waits and competes with the
//!   matrix multiplies' threads (`RAYON_NUM_THREADS`); a LoRA step took 2.2 s instead of 2.7 s.
//!
//! Settings the user already made are kept; `CLREG_NO_TUNING=1` turns the re-run off.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::args::{Args, Command, LocalCommand};

const MARKER: &str = "CLREG_TUNED";
const GLIBC: &str = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296";

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
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        cmd.env("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        cmd.env("GLIBC_TUNABLES", OsString::from(GLIBC));
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
