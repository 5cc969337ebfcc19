//! Each job's tensor work runs in a child process (`clreg-server run-job`), so an engine crash
//! or an out-of-memory kill ends that job, never the API. The protocol, over pipes:
//!
//! - the worker writes one JSON line, [`Order`]: the spec and the digests it already knows;
//! - the child writes one JSON line per [`Line`]: events while it works, then `done` or `failed`;
//! - a later `cancel` line on the child's stdin (or its stdin closing: the worker died) sets the
//!   engine's cancel flag, which the engine checks between steps.
//!
//! The child gets the process settings that make engine work fast and that only the
//! environment can set ([`clreg_engine::process_env`]): candle's element-wise pool off, and
//! glibc malloc thresholds and a single arena that keep large buffers out of mmap.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clreg_engine::job::{self, Device, JobError, JobEvent, JobOutput, JobSpec, RunContext};
use clreg_engine::merge::record::{DigestSource, Digests};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// What the worker hands the child.
#[derive(Debug, Serialize, Deserialize)]
pub struct Order {
    pub spec: JobSpec,
    pub device: Device,
    /// Local path → hex sha256, from the registry: staged inputs are never hashed again.
    pub digests: HashMap<PathBuf, String>,
}

/// One line the child writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Event(JobEvent),
    Done(Box<JobOutput>),
    Failed(JobError),
}

/// Digests known ahead, else hashed.
struct Known(HashMap<PathBuf, String>);

impl DigestSource for Known {
    fn sha256(&self, path: &Path) -> Result<String, clreg_engine::FormatError> {
        match self.0.get(path) {
            Some(hex) => Ok(hex.clone()),
            None => clreg_engine::merge::record::sha256_file(path),
        }
    }
}

/// The child's side: reads the order from stdin, runs it, writes lines to stdout.
pub fn child_main() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin.lock().read_line(&mut first)?;
    let order: Order = serde_json::from_str(&first)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            // Any further line, or the end of input, cancels.
            let mut rest = String::new();
            let _ = std::io::stdin().lock().read_line(&mut rest);
            cancel.store(true, Ordering::Relaxed);
        });
    }
    serve(order, &cancel, std::io::stdout())
}

/// The same protocol through files, as an external executor runs a job
/// ([`super::executor`]): the order from `order`, lines appended to `progress`. The process
/// is stopped by a signal (there is no input to cancel through).
pub fn file_main(order: &Path, progress: &Path) -> std::io::Result<()> {
    let text = std::fs::read(order)?;
    let order: Order = serde_json::from_slice(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(progress)?;
    serve(order, &AtomicBool::new(false), out)
}

fn serve(order: Order, cancel: &AtomicBool, out: impl Write + Send) -> std::io::Result<()> {
    let out = std::sync::Mutex::new(out);
    let write = |line: &Line| {
        if let Ok(text) = serde_json::to_string(line) {
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    };
    let events = |e: JobEvent| write(&Line::Event(e));
    let ctx = RunContext {
        cancel,
        events: &events,
        digests: Digests(Arc::new(Known(order.digests))),
        device: order.device,
    };
    match job::run(&order.spec, &ctx) {
        Ok(output) => write(&Line::Done(Box::new(output))),
        Err(e) => write(&Line::Failed(e)),
    }
    Ok(())
}

/// A running child, from the worker's side.
pub struct Child {
    process: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    /// Starts `program run-job` and sends it the order.
    pub async fn start(program: &Path, order: &Order) -> std::io::Result<Child> {
        let mut command = tokio::process::Command::new(program);
        command
            .arg("run-job")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in clreg_engine::process_env::ENGINE_ENV {
            if std::env::var_os(name).is_none() {
                command.env(name, value);
            }
        }
        let mut process = command.spawn()?;
        let mut stdin = process.stdin.take();
        let stdout = process
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("child without stdout"))?;
        let text = serde_json::to_string(order).map_err(std::io::Error::other)? + "\n";
        if let Some(stdin) = stdin.as_mut() {
            stdin.write_all(text.as_bytes()).await?;
            stdin.flush().await?;
        }
        Ok(Child {
            process,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    /// The next line; `None` once the child closed its output.
    pub async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let Some(text) = self.lines.next_line().await? else {
                return Ok(None);
            };
            match serde_json::from_str(&text) {
                Ok(line) => return Ok(Some(line)),
                Err(e) => tracing::warn!(error = %e, line = %text, "unreadable line from a job"),
            }
        }
    }

    /// Asks the child to stop between steps.
    pub async fn cancel(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"cancel\n").await;
            let _ = stdin.flush().await;
        }
    }

    /// Waits for the exit; a child killed by a signal or crashing says so.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.process.wait().await
    }

    pub async fn kill(&mut self) {
        let _ = self.process.kill().await;
    }
}
