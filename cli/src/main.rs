//! `clreg`: parse the command line, run the command, report errors with stable exit codes.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

mod args;
mod cache;
mod client;
mod commands;
mod config;
mod digests;
mod download;
mod error;
mod hashing;
mod output;
mod progress;
mod refs;
mod tuning;
mod upload;
mod walk;

use crate::error::{ExitStatus, classify};

fn main() -> ExitCode {
    // clap prints usage errors and exits 2; help and version exit 0.
    let args = args::Args::parse();
    if let Some(code) = tuning::rerun_tuned(&args) {
        return code;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(
                &anyhow::Error::new(e).context("starting the async runtime"),
                None,
            );
            return ExitStatus::Failure.into();
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(status) => status.into(),
        Err(err) => {
            let c = classify(&err);
            if c.broken_pipe {
                return ExitStatus::Success.into();
            }
            report(&err, c.code.as_deref());
            c.status.into()
        }
    }
}

/// `error[code]: message`, then every cause on its own line.
fn report(err: &anyhow::Error, code: Option<&str>) {
    let head = if output::stderr_color() {
        "\x1b[1;31merror\x1b[0m"
    } else {
        "error"
    };
    let mut text = match code {
        Some(code) => format!("{head}[{code}]: {err}\n"),
        None => format!("{head}: {err}\n"),
    };
    for cause in err.chain().skip(1) {
        text.push_str(&format!("  caused by: {cause}\n"));
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
