//! A job handed to an executor: started, followed through its progress file, cancelled,
//! cleaned up.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clreg_engine::job::JobEvent;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::watch;

use super::render::{render_command, render_kubernetes, render_slurm};
use super::{ExecutorConfig, ExecutorKind, Invocation, TRAINER};
use crate::jobs::runner::Line;

/// How the job ended, as its executor tells (not whether it produced a result: the progress
/// file tells that).
#[derive(Debug, Clone)]
struct Ended(String);

/// A job handed to an executor, followed through its progress file.
pub struct Run {
    kind: ExecutorKind,
    inv: Invocation,
    cfg: Arc<ExecutorConfig>,
    progress: Option<tokio::io::BufReader<tokio::fs::File>>,
    partial: String,
    /// Lines the worker should see before the job's own (where it was submitted).
    pending: Vec<Line>,
    ended: watch::Receiver<Option<Ended>>,
    /// The scheduler's id of the job (Slurm), once known.
    scheduler_id: watch::Receiver<Option<String>>,
    /// The local process (command, or `sbatch --wait`), in its own process group.
    pgid: Option<u32>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Run {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    tokio::fs::write(path, text).await
}

/// Runs `program args…` to its end; its output, or why it failed.
async fn run_tool(program: &str, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Run {
    /// Writes the order and the trainer into the attempt's directory and starts the job.
    pub async fn start(
        cfg: Arc<ExecutorConfig>,
        inv: Invocation,
        data_dir: &Path,
        order: &crate::jobs::runner::Order,
    ) -> Result<Run, String> {
        let io = |what: &str, e: std::io::Error| format!("cannot write {what}: {e}");
        tokio::fs::create_dir_all(&inv.dir)
            .await
            .map_err(|e| io("the job directory", e))?;
        let text = serde_json::to_string(order).map_err(|e| e.to_string())?;
        write_file(&inv.order(), &text)
            .await
            .map_err(|e| io("order.json", e))?;
        write_file(&inv.trainer(), TRAINER)
            .await
            .map_err(|e| io("the trainer", e))?;
        write_file(&inv.progress(), "")
            .await
            .map_err(|e| io("progress.jsonl", e))?;
        let (ended_tx, ended) = watch::channel(None);
        let (id_tx, scheduler_id) = watch::channel(None);
        let mut run = Run {
            kind: cfg.kind,
            inv: inv.clone(),
            cfg: cfg.clone(),
            progress: None,
            partial: String::new(),
            pending: Vec::new(),
            ended,
            scheduler_id,
            pgid: None,
            tasks: Vec::new(),
        };
        let note = |message: String| Line::Event(JobEvent::Note { message });
        match cfg.kind {
            ExecutorKind::Engine => return Err("the engine executor runs no external job".into()),
            ExecutorKind::Command | ExecutorKind::Slurm => {
                let log = std::fs::File::create(inv.log()).map_err(|e| io("executor.log", e))?;
                let mut command = if cfg.kind == ExecutorKind::Command {
                    let line = render_command(&cfg, &inv);
                    // The job's log does not quote the rendered line: the operator's template
                    // may hold what members should not read.
                    run.pending
                        .push(note(format!("handed to a command as {}", inv.name())));
                    let mut c = tokio::process::Command::new("sh");
                    c.arg("-c").arg(line);
                    c
                } else {
                    let script = inv.dir.join("job.sbatch");
                    write_file(&script, &render_slurm(&cfg, &inv))
                        .await
                        .map_err(|e| io("job.sbatch", e))?;
                    let mut c = tokio::process::Command::new(&cfg.slurm.sbatch);
                    c.arg("--parsable").arg("--wait").arg(&script);
                    c
                };
                command
                    .current_dir(&inv.dir)
                    .env("CLREG_TRAINER", inv.trainer())
                    .env("CLREG_ORDER", inv.order())
                    .env("CLREG_PROGRESS", inv.progress())
                    .stdin(Stdio::null())
                    .stderr(log.try_clone().map_err(|e| io("executor.log", e))?)
                    .process_group(0)
                    .kill_on_drop(true);
                if cfg.kind == ExecutorKind::Command {
                    command.stdout(log);
                } else {
                    command.stdout(Stdio::piped());
                }
                let mut child = command
                    .spawn()
                    .map_err(|e| format!("cannot start the {} executor: {e}", cfg.kind))?;
                run.pgid = child.id();
                if let Some(stdout) = child.stdout.take() {
                    // `sbatch --parsable` prints `id[;cluster]` once the job is queued.
                    run.tasks.push(tokio::spawn(async move {
                        let mut lines = tokio::io::BufReader::new(stdout).lines();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if let Some(id) = l.split(';').next().filter(|s| !s.trim().is_empty()) {
                                let _ = id_tx.send(Some(id.trim().to_string()));
                            }
                        }
                    }));
                }
                let kind = cfg.kind;
                run.tasks.push(tokio::spawn(async move {
                    let status = child.wait().await;
                    let what = match status {
                        Ok(s) => format!("the {kind} process ended ({s})"),
                        Err(e) => format!("waiting for the {kind} process failed: {e}"),
                    };
                    let _ = ended_tx.send(Some(Ended(what)));
                }));
                if cfg.kind == ExecutorKind::Slurm {
                    run.pending.push(note(format!(
                        "submitted to Slurm as {} ({})",
                        inv.name(),
                        inv.dir.join("job.sbatch").display()
                    )));
                }
            }
            ExecutorKind::Kubernetes => {
                let manifest = inv.dir.join("job.manifest.json");
                write_file(&manifest, &render_kubernetes(&cfg, &inv, data_dir))
                    .await
                    .map_err(|e| io("job.manifest.json", e))?;
                let path = manifest.to_string_lossy().into_owned();
                run_tool(&cfg.kubernetes.kubectl, &["apply", "-f", &path]).await?;
                run.pending.push(note(format!(
                    "applied Kubernetes Job {}/{}",
                    cfg.kubernetes.namespace,
                    inv.name()
                )));
                let (cfg, name) = (cfg.clone(), inv.name());
                run.tasks.push(tokio::spawn(async move {
                    let every = Duration::from_secs(cfg.poll_secs.max(1));
                    let k = &cfg.kubernetes;
                    loop {
                        tokio::time::sleep(every).await;
                        let status = run_tool(
                            &k.kubectl,
                            &[
                                "get", "job", &name, "-n", &k.namespace, "-o",
                                "jsonpath={.status.succeeded},{.status.failed}",
                            ],
                        )
                        .await;
                        match status {
                            Ok(s) => {
                                let mut parts = s.trim().split(',');
                                let count = |p: Option<&str>| {
                                    p.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
                                };
                                let (ok, failed) = (count(parts.next()), count(parts.next()));
                                if ok > 0 || failed > 0 {
                                    let how = if ok > 0 { "succeeded" } else { "failed" };
                                    let _ = ended_tx.send(Some(Ended(format!(
                                        "the Kubernetes Job {how}"
                                    ))));
                                    return;
                                }
                            }
                            // Gone (deleted, or expired): it will not write anything more.
                            Err(e) if e.contains("NotFound") || e.contains("not found") => {
                                let _ = ended_tx.send(Some(Ended(format!(
                                    "the Kubernetes Job is gone: {e}"
                                ))));
                                return;
                            }
                            Err(e) => tracing::warn!(job = %name, error = %e, "reading a Kubernetes Job failed; trying again"),
                        }
                    }
                }));
            }
        }
        Ok(run)
    }

    /// The next line of the job; `None` once the job ended without writing `done` or
    /// `failed` ([`Run::ended_why`] says how it ended).
    pub async fn next(&mut self) -> std::io::Result<Option<Line>> {
        if !self.pending.is_empty() {
            return Ok(Some(self.pending.remove(0)));
        }
        loop {
            // Read what was appended, then look at the end: a line written just before the
            // job ended is still read.
            let ended = self.ended.borrow().is_some();
            if let Some(line) = self.read_line().await? {
                return Ok(Some(line));
            }
            if ended {
                return Ok(None);
            }
            let mut ended = self.ended.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = ended.changed() => {}
            }
        }
    }

    async fn read_line(&mut self) -> std::io::Result<Option<Line>> {
        if self.progress.is_none() {
            match tokio::fs::File::open(self.inv.progress()).await {
                Ok(f) => self.progress = Some(tokio::io::BufReader::new(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let Some(reader) = self.progress.as_mut() else {
            return Ok(None);
        };
        loop {
            let mut chunk = String::new();
            let n = reader.read_line(&mut chunk).await?;
            if n == 0 {
                // At the end for now: the next read continues from here.
                return Ok(None);
            }
            self.partial.push_str(&chunk);
            if !self.partial.ends_with('\n') {
                continue;
            }
            let text = std::mem::take(&mut self.partial);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(text) {
                Ok(line) => return Ok(Some(line)),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable line in a job's progress file");
                }
            }
        }
    }

    /// How the job ended, with the end of its log, for a job that wrote no result.
    pub async fn ended_why(&self) -> String {
        let how = self
            .ended
            .borrow()
            .clone()
            .map(|e| e.0)
            .unwrap_or_else(|| "the job ended".into());
        let tail = self.log_tail().await;
        if tail.is_empty() {
            format!("{how} without a result")
        } else {
            format!("{how} without a result; the end of its log:\n{tail}")
        }
    }

    async fn log_tail(&self) -> String {
        let text = match self.kind {
            ExecutorKind::Kubernetes => {
                let k = &self.cfg.kubernetes;
                let job = format!("job/{}", self.inv.name());
                run_tool(&k.kubectl, &["logs", &job, "-n", &k.namespace, "--tail=20"])
                    .await
                    .unwrap_or_default()
            }
            _ => {
                let mut text = String::new();
                let mut logs = vec![self.inv.log()];
                if let Ok(mut dir) = tokio::fs::read_dir(&self.inv.dir).await {
                    while let Ok(Some(e)) = dir.next_entry().await {
                        if e.file_name().to_string_lossy().starts_with("slurm-") {
                            logs.push(e.path());
                        }
                    }
                }
                for path in logs {
                    if let Ok(mut f) = tokio::fs::File::open(&path).await {
                        let mut bytes = Vec::new();
                        let _ = f.read_to_end(&mut bytes).await;
                        text.push_str(&String::from_utf8_lossy(&bytes));
                    }
                }
                text
            }
        };
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Asks the scheduler to stop the job (the trainer stops between steps on SIGTERM).
    pub async fn cancel(&mut self) {
        let result = match self.kind {
            ExecutorKind::Engine => Ok(String::new()),
            ExecutorKind::Command => match self.pgid {
                Some(pgid) => run_tool("kill", &["-TERM", "--", &format!("-{pgid}")]).await,
                None => Ok(String::new()),
            },
            ExecutorKind::Slurm => {
                // Submitted but not yet acknowledged: cancel it by name.
                let id = self.scheduler_id.borrow().clone();
                let name = format!("--name={}", self.inv.name());
                match id {
                    Some(id) => run_tool(&self.cfg.slurm.scancel, &[&id]).await,
                    None => run_tool(&self.cfg.slurm.scancel, &[&name]).await,
                }
            }
            ExecutorKind::Kubernetes => self.delete_kubernetes_job(false).await,
        };
        if let Err(e) = result {
            tracing::warn!(job = %self.inv.job, error = %e, "cancelling an external job failed");
        }
    }

    /// Stops the job at once (the lease was lost) and removes what the scheduler keeps of it.
    pub async fn kill(&mut self) {
        self.cancel().await;
        if let Some(pgid) = self.pgid {
            let _ = run_tool("kill", &["-KILL", "--", &format!("-{pgid}")]).await;
        }
    }

    /// Waits for the executor to report the end, then removes the scheduler's copy of the job
    /// (a Kubernetes Job and its pod: its log may quote data that travelled with the job).
    pub async fn wait(&mut self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| e.is_some()).await;
        if self.kind == ExecutorKind::Kubernetes
            && let Err(e) = self.delete_kubernetes_job(true).await
        {
            tracing::warn!(job = %self.inv.job, error = %e, "deleting a finished Kubernetes Job failed; its ttl removes it");
        }
    }

    /// `kubectl delete job`, with its pod; `wait`: until they are gone.
    async fn delete_kubernetes_job(&self, wait: bool) -> Result<String, String> {
        let k = &self.cfg.kubernetes;
        let name = self.inv.name();
        let mut args = vec!["delete", "job", &name, "-n", &k.namespace];
        if !wait {
            args.push("--wait=false");
        }
        args.extend(["--ignore-not-found", "--propagation-policy=Background"]);
        run_tool(&k.kubectl, &args).await
    }
}
