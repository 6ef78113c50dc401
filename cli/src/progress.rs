//! Progress bars on stderr (indicatif), shown only to a person: not with `--json` or `-q`, and
//! not when stderr is not a terminal (indicatif draws nothing then).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-progress bar that appears once work has taken longer than a second.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    started: std::time::Instant,
}

impl Progress {
    /// A bar labelled `what`, or nothing when output is for scripts.
    pub(crate) fn new(what: &str, quiet: bool, json: bool) -> Progress {
        let bar = (!quiet && !json).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
            let style = ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(what.to_owned());
            bar
        });
        Progress {
            bar,
            started: std::time::Instant::now(),
        }
    }

    /// Records `done` of `total` bytes.
    pub(crate) fn set(&mut self, done: u64, total: u64) {
        let Some(bar) = &self.bar else { return };
        if bar.is_hidden() && self.started.elapsed() >= std::time::Duration::from_secs(1) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        bar.set_length(total.max(done));
        bar.set_position(done);
    }

    /// Names the current phase.
    pub(crate) fn phase(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_owned());
        }
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
