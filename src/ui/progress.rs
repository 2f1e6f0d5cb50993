//! Live build progress from BuildKit's status stream.
//!
//! On a terminal: one line per finished step, plus a live line per running
//! step with its elapsed time and latest output ([`crate::ui::live`]).
//! Otherwise (a pipe, `CI`, `NO_COLOR`): plain lines as steps start and
//! finish. `-v` prints every log line. Whatever the mode, the last lines of
//! each step are kept so a failure shows the step's own output (the `git
//! clone` error, not just "exit code 1"). Every line passes the redactor.

use crate::ui::live::Activity;
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
    /// The live line while the step runs (terminal only).
    live: Option<Activity>,
}

pub struct Progress {
    style: Style,
    steps: HashMap<String, StepState>,
    order: Vec<String>,
    failed: Vec<String>,
    /// Containerfile steps that came from the cache.
    pub cached: usize,
    /// Containerfile steps that ran.
    pub executed: usize,
}

/// A step of the Containerfile: BuildKit names them `[n/m] INSTRUCTION` (or
/// `[stage n/m] ...` in a multi-stage build). Only these are counted in the
/// summary; the context transfer (`copy /context /`) and BuildKit's own
/// bookkeeping are not steps the user wrote.
fn containerfile_step(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('[') else {
        return false;
    };
    let Some((inside, _)) = rest.split_once(']') else {
        return false;
    };
    let counter = inside.rsplit(' ').next().unwrap_or(inside);
    counter.split_once('/').is_some_and(|(n, m)| {
        !n.is_empty()
            && !m.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && m.bytes().all(|b| b.is_ascii_digit())
    })
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
            failed: Vec::new(),
            cached: 0,
            executed: 0,
        }
    }

    fn line(&mut self, text: &str) {
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
                let shown = !internal(&name) || self.style.verbose;
                let style = self.style;
                let st = self.steps.entry(id.clone()).or_default();
                st.name = name.clone();
                if st.live.is_none() && !st.done && shown && style.interactive {
                    st.live = Some(Activity::start(&style, &name));
                }
                if !self.order.contains(&id) {
                    self.order.push(id);
                    if !style.interactive && shown {
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
                st.live = None;
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
                    if containerfile_step(&name) {
                        self.cached += 1;
                    }
                    format!("{} {name}", self.style.dim("CACHED"))
                } else {
                    if containerfile_step(&name) {
                        self.executed += 1;
                    }
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
                if !verbose {
                    if let (Some(live), Some(last)) = (st.live.as_ref(), complete.last()) {
                        live.detail(last);
                    }
                    return;
                }
                for l in complete {
                    self.line(&format!("   {} {l}", self.style.dim("│")));
                }
            }
        }
    }

    /// The output tail of the failed step (or, if BuildKit named none, of the
    /// last step that printed anything), for the error report.
    pub fn failure_report(&mut self) -> Vec<String> {
        self.finish();
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

    /// Clear every live line (the build ended).
    pub fn finish(&mut self) {
        for st in self.steps.values_mut() {
            st.live = None;
        }
    }
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

    fn plain() -> Style {
        Style {
            json: false,
            color: false,
            verbose: false,
            quiet: true,
            interactive: false,
        }
    }

    fn step(p: &mut Progress, id: &str, name: &str, cached: bool) {
        p.on_event(Event::Started {
            id: id.into(),
            name: name.into(),
        });
        p.on_event(Event::Finished {
            id: id.into(),
            name: name.into(),
            cached,
            duration: Some(Duration::from_millis(100)),
            error: None,
        });
    }

    #[test]
    fn only_containerfile_steps_are_counted() {
        let mut p = Progress::new(plain());
        step(
            &mut p,
            "a",
            "[internal] load build definition from Containerfile",
            false,
        );
        step(&mut p, "b", "copy /context /", false);
        step(&mut p, "c", "[1/6] COPY rootfs/busybox /bin/busybox", true);
        for (i, id) in ["d", "e", "f", "g", "h"].iter().enumerate() {
            step(&mut p, id, &format!("[{}/6] RUN step {i}", i + 2), false);
        }
        step(&mut p, "i", "exporting to image", false);
        // BuildKit repeats a finished vertex in later status messages.
        step(&mut p, "d", "[2/6] RUN step 0", false);
        assert_eq!((p.executed, p.cached), (5, 1));
    }

    #[test]
    fn step_names() {
        assert!(containerfile_step("[1/6] COPY a b"));
        assert!(containerfile_step("[builder 12/30] RUN make"));
        assert!(!containerfile_step("[internal] load metadata"));
        assert!(!containerfile_step("copy /context /"));
        assert!(!containerfile_step("[auth] sharing credentials"));
        assert!(!containerfile_step("[/6] RUN"));
    }

    #[test]
    fn a_failed_step_shows_its_own_output() {
        let mut p = Progress::new(plain());
        p.on_event(Event::Started {
            id: "x".into(),
            name: "[5/6] RUN git clone".into(),
        });
        p.on_event(Event::Log {
            id: "x".into(),
            data: b"fatal: repository not found\npartial".to_vec(),
        });
        p.on_event(Event::Finished {
            id: "x".into(),
            name: "[5/6] RUN git clone".into(),
            cached: false,
            duration: None,
            error: Some("exit code: 128".into()),
        });
        let r = p.failure_report();
        assert_eq!(r[0], "output of [5/6] RUN git clone:");
        assert!(r.contains(&"  fatal: repository not found".to_string()));
        assert!(r.contains(&"  partial".to_string()));
        assert_eq!((p.executed, p.cached), (0, 0));
    }
}
