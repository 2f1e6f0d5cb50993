//! Live build progress from BuildKit's status stream.
//!
//! On a terminal: one line per finished step, plus a transient line showing
//! the running step's latest output. Otherwise: plain lines as steps start and
//! finish. `-v` prints every log line. Whatever the mode, the last lines of
//! each step are kept so a failure shows the step's own output (the `git
//! clone` error, not just "exit code 1"). Every line passes the redactor.

use crate::ui::output::{self, Style};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

const TAIL: usize = 40;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started {
        id: String,
        name: String,
    },
    Finished {
        id: String,
        name: String,
        cached: bool,
        duration: Option<Duration>,
        error: Option<String>,
    },
    Log {
        id: String,
        data: Vec<u8>,
    },
}

#[derive(Default)]
struct StepState {
    name: String,
    tail: VecDeque<String>,
    partial: String,
    done: bool,
}

pub struct Progress {
    style: Style,
    steps: HashMap<String, StepState>,
    order: Vec<String>,
    transient: bool,
    failed: Vec<String>,
    pub cached: usize,
    pub executed: usize,
}

/// BuildKit's own bookkeeping steps are noise unless asked for.
fn internal(name: &str) -> bool {
    name.starts_with("[internal]")
        || name.starts_with("[auth]")
        || name.starts_with("exporting ")
        || name.starts_with("naming to")
}

impl Progress {
    pub fn new(style: Style) -> Progress {
        Progress {
            style,
            steps: HashMap::new(),
            order: Vec::new(),
            transient: false,
            failed: Vec::new(),
            cached: 0,
            executed: 0,
        }
    }

    fn clear_transient(&mut self) {
        if self.transient {
            output::clear_transient();
            self.transient = false;
        }
    }

    fn line(&mut self, text: &str) {
        self.clear_transient();
        output::progress(&self.style, text);
    }

    /// A step name fit for one line: blanks folded (RUN continuations), and
    /// cut on a terminal so a line never wraps (secrets masked before the cut).
    fn shown(&self, name: &str) -> String {
        let folded = name.split_whitespace().collect::<Vec<_>>().join(" ");
        if self.style.interactive {
            output::fit(&folded, 110)
        } else {
            folded
        }
    }

    pub fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Started { id, name } => {
                let name = self.shown(&name);
                let st = self.steps.entry(id.clone()).or_default();
                st.name = name.clone();
                if !self.order.contains(&id) {
                    self.order.push(id);
                    if !self.style.interactive && (!internal(&name) || self.style.verbose) {
                        self.line(&format!("{} {name}", self.style.dim("=>")));
                    }
                }
            }
            Event::Finished {
                id,
                name,
                cached,
                duration,
                error,
            } => {
                let name = self.shown(&name);
                let st = self.steps.entry(id.clone()).or_default();
                if st.done {
                    return;
                }
                st.done = true;
                if !st.partial.is_empty() {
                    let rest = std::mem::take(&mut st.partial);
                    push_tail(&mut st.tail, rest);
                }
                if internal(&name) && error.is_none() && !self.style.verbose {
                    return;
                }
                if error.is_some() {
                    self.failed.push(id.clone());
                }
                let took = duration
                    .map(|d| format!(" {:.1}s", d.as_secs_f64()))
                    .unwrap_or_default();
                let text = if error.is_some() {
                    format!("{} {name}{took}", self.style.red("FAILED"))
                } else if cached {
                    self.cached += 1;
                    format!("{} {name}", self.style.dim("CACHED"))
                } else {
                    self.executed += 1;
                    format!("{} {name}{took}", self.style.green("DONE  "))
                };
                self.line(&text);
            }
            Event::Log { id, data } => {
                let text = String::from_utf8_lossy(&data).to_string();
                let verbose = self.style.verbose;
                let st = self.steps.entry(id).or_default();
                st.partial.push_str(&text);
                let mut complete = Vec::new();
                while let Some(i) = st.partial.find('\n') {
                    let l: String = st.partial.drain(..=i).collect();
                    let l = l.trim_end_matches(['\n', '\r']).to_string();
                    push_tail(&mut st.tail, l.clone());
                    complete.push(l);
                }
                let name = st.name.clone();
                for l in complete {
                    if verbose {
                        self.line(&format!("   {} {l}", self.style.dim("│")));
                    } else if self.style.interactive && !self.style.quiet {
                        let shown = transient_text(&name, &l);
                        self.clear_transient();
                        output::transient(&self.style.dim(&shown));
                        self.transient = true;
                    }
                }
            }
        }
    }

    /// The output tail of the failed step (or, if BuildKit named none, of the
    /// last step that printed anything), for the error report.
    pub fn failure_report(&mut self) -> Vec<String> {
        self.clear_transient();
        let chosen = self
            .failed
            .iter()
            .rev()
            .find(|id| self.steps.get(*id).is_some_and(|s| !s.tail.is_empty()))
            .or_else(|| {
                self.order
                    .iter()
                    .rev()
                    .find(|id| self.steps.get(*id).is_some_and(|s| !s.tail.is_empty()))
            });
        let Some(st) = chosen.and_then(|id| self.steps.get(id)) else {
            return Vec::new();
        };
        let mut out = vec![format!("output of {}:", st.name)];
        out.extend(st.tail.iter().map(|l| format!("  {l}")));
        if !st.partial.is_empty() {
            out.push(format!("  {}", st.partial));
        }
        out
    }

    pub fn finish(&mut self) {
        self.clear_transient();
    }
}

/// The live line for a log line of a running step, cut to 100 characters
/// (after masking: see [`output::fit`]).
fn transient_text(step: &str, line: &str) -> String {
    output::fit(&format!("{step}: {line}"), 100)
}

fn push_tail(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == TAIL {
        tail.pop_front();
    }
    tail.push_back(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_token_cut_in_live_progress_shows_no_fragment() {
        let tok = format!("github_pat_{}", "Zq7".repeat(27) + "X");
        assert_eq!(tok.len(), 93);
        crate::ui::output::redact::register(&tok);
        let style = Style {
            json: false,
            color: false,
            verbose: false,
            quiet: false,
            interactive: true,
        };
        let p = Progress::new(style);
        let apps =
            format!(r#"[{{"url": "https://{tok}@github.com/o/de_macrs.git", "branch": "v1"}}]"#);
        // Every position of the cut: step names of every length.
        for pad in 0..100 {
            let step = format!("[4/6] RUN {}", "x".repeat(pad));
            for shown in [
                transient_text(&step, &apps),
                p.shown(&format!("{step} {tok}")),
            ] {
                for w in tok
                    .as_bytes()
                    .windows(crate::ui::output::redact::MIN_FRAGMENT)
                {
                    let w = std::str::from_utf8(w).unwrap();
                    assert!(!shown.contains(w), "pad {pad}: {shown}");
                }
            }
        }
    }
}
