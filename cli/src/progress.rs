//! Progress bars on stderr (indicatif): one per file plus a total, drawn only when stderr is a
//! terminal and `--quiet` is off.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        let multi = enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi }
    }

    /// The bar of all bytes of a command.
    pub fn total(&self, len: u64, what: &str) -> ProgressBar {
        self.bar(len, what, "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
    }

    /// One file's bar, removed once it is done.
    pub fn file(&self, len: u64, name: &str) -> ProgressBar {
        self.bar(len, name, "  {msg:40!} [{bar:20}] {bytes}/{total_bytes}")
    }

    fn bar(&self, len: u64, msg: &str, template: &str) -> ProgressBar {
        let Some(multi) = &self.multi else {
            return ProgressBar::hidden();
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = multi.add(ProgressBar::new(len).with_style(style));
        bar.set_message(msg.to_string());
        bar
    }

    /// Prints a line above the bars (or straight to stderr without them).
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}
