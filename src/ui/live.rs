//! Live lines for long steps: on an interactive terminal, a spinner per
//! running step with its elapsed time (indicatif), redrawn ten times a second
//! below the ordinary output; elsewhere (a pipe, a file, `CI`, `NO_COLOR`,
//! `TERM=dumb`) nothing at all, and the ordinary lines stay the only output.
//!
//! Every line printed through [`crate::ui::output`] while a live line is shown
//! goes above it (the display is suspended for the write), so callers need
//! not know whether one is active.
//!
//! Use: `let a = Activity::start(style, "bench migrate");` before the wait,
//! `a.detail(line)` for the latest output, `a.finish()` (or drop) after it.

use crate::ui::output::Style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The display that holds every live line of this process.
fn display() -> &'static Mutex<Option<MultiProgress>> {
    static D: OnceLock<Mutex<Option<MultiProgress>>> = OnceLock::new();
    D.get_or_init(|| Mutex::new(None))
}

/// Run `write` with the live lines (if any) taken off the screen, so that a
/// plain line never lands in the middle of one.
pub fn suspend<R>(write: impl FnOnce() -> R) -> R {
    let d = display().lock().unwrap_or_else(|e| e.into_inner());
    match d.as_ref() {
        Some(m) => m.suspend(write),
        None => write(),
    }
}

/// Whether live lines are drawn for this style.
pub fn enabled(style: &Style) -> bool {
    style.interactive && !style.quiet && !style.json
}

/// One running step shown with its elapsed time; cleared when finished or
/// dropped. Without a live display it does nothing.
pub struct Activity {
    bar: Option<ProgressBar>,
    label: String,
}

impl Activity {
    pub fn start(style: &Style, label: &str) -> Activity {
        if !enabled(style) {
            return Activity {
                bar: None,
                label: label.to_string(),
            };
        }
        let mut d = display().lock().unwrap_or_else(|e| e.into_inner());
        let multi =
            d.get_or_insert_with(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let template = ProgressStyle::with_template("{spinner} {secs:>6} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "secs",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}s", s.elapsed().as_secs_f64());
                },
            );
        let bar = multi.add(ProgressBar::new_spinner().with_style(template));
        bar.set_message(crate::ui::output::render(label));
        bar.enable_steady_tick(Duration::from_millis(100));
        Activity {
            bar: Some(bar),
            label: label.to_string(),
        }
    }

    /// Show the step's latest output line beside its name.
    pub fn detail(&self, line: &str) {
        if let Some(b) = &self.bar {
            let line = line.trim();
            let text = if line.is_empty() {
                self.label.clone()
            } else {
                format!("{} · {line}", self.label)
            };
            b.set_message(crate::ui::output::render(&text));
        }
    }

    /// Whether a live line is drawn (false off a terminal).
    pub fn is_live(&self) -> bool {
        self.bar.is_some()
    }

    pub fn finish(self) {}
}

impl Drop for Activity {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            // The display stays for the next activity: suspend() on a display
            // without lines just runs the write.
            let d = display().lock().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = d.as_ref() {
                m.remove(&b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Style {
        Style {
            json: false,
            color: false,
            verbose: false,
            quiet: false,
            interactive: false,
        }
    }

    #[test]
    fn nothing_is_drawn_off_a_terminal() {
        let a = Activity::start(&plain(), "bench migrate");
        assert!(!a.is_live());
        a.detail("Migrating");
        assert_eq!(suspend(|| 7), 7);
    }

    #[test]
    fn quiet_and_json_draw_nothing() {
        let mut s = plain();
        s.interactive = true;
        s.quiet = true;
        assert!(!enabled(&s));
        s.quiet = false;
        s.json = true;
        assert!(!enabled(&s));
        s.json = false;
        assert!(enabled(&s));
    }
}
