//! Progress bars on stderr (indicatif): one per file plus a total, drawn only when stderr is a
//! terminal and `--quiet` is off.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

const TOTAL_TEMPLATE: &str =
    "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}";
const FILE_TEMPLATE: &str = "  {msg:40!} [{bar:20}] {bytes}/{total_bytes}";
const FRACTION_TEMPLATE: &str = "[{bar:30}] {percent:>3}% {elapsed_precise} {wide_msg}";

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
        self.bar(len, what, TOTAL_TEMPLATE)
    }

    /// A bar of a fraction done (positions out of 1000), its message the latest step.
    pub fn fraction(&self) -> ProgressBar {
        self.bar(1000, "", FRACTION_TEMPLATE)
    }

    /// One file's bar, removed once it is done.
    pub fn file(&self, len: u64, name: &str) -> ProgressBar {
        self.bar(len, name, FILE_TEMPLATE)
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
}

/// Moves one file's bar and the total bar together.
pub struct Tracker {
    file: ProgressBar,
    total: ProgressBar,
}

impl Tracker {
    pub fn new(progress: &Progress, total: &ProgressBar, len: u64, name: &str) -> Self {
        Tracker {
            file: progress.file(len, name),
            total: total.clone(),
        }
    }

    pub fn inc(&self, n: u64) {
        self.file.inc(n);
        self.total.inc(n);
    }

    /// Sets this file's position (a resumed or restarted transfer), moving the total by the
    /// difference.
    pub fn set(&self, pos: u64) {
        let old = self.file.position();
        self.file.set_position(pos);
        if pos >= old {
            self.total.inc(pos - old);
        } else {
            self.total
                .set_position(self.total.position().saturating_sub(old - pos));
        }
    }

    pub fn finish(&self) {
        self.file.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for t in [TOTAL_TEMPLATE, FILE_TEMPLATE] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
        let p = Progress::new(false);
        let total = p.total(10, "push");
        let t = Tracker::new(&p, &total, 10, "f");
        t.inc(4);
        t.set(2);
        assert_eq!(total.position(), 2);
        t.set(7);
        assert_eq!(total.position(), 7);
    }
}
