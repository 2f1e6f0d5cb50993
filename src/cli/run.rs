//! Running a deploy plan from the command line: the lock, signals, progress
//! on the terminal and in the deployment log, the audit line.

use crate::cli::deploy::Session;
use crate::error::{Error, Result};
use crate::exec::deploy::{Executor, Finished, Sink};
use crate::plan::deploy::DeployPlan;
use crate::record::state::{Deployment, Lock, Outcome, State};
use crate::ui::output::{self, Style};
use serde_json::json;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Progress on the terminal and in the deployment's log file.
pub struct Terminal {
    style: Style,
    log: Option<std::fs::File>,
    /// The running step's live line (elapsed time, last output) on a terminal.
    live: Option<crate::ui::live::Activity>,
}

impl Terminal {
    pub fn new(style: Style, log_path: &std::path::Path) -> Terminal {
        // Owner-only, like everything in the state directory.
        let log = std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new().create(true).append(true),
            0o600,
        )
        .open(log_path);
        let log = match log {
            Ok(f) => Some(f),
            Err(e) => {
                output::diag(&format!(
                    "warning: no deployment log ({}: {e}); output goes to the terminal only",
                    log_path.display()
                ));
                None
            }
        };
        Terminal {
            style,
            log,
            live: None,
        }
    }

    fn write_log(&mut self, l: &str) {
        if let Some(f) = self.log.as_mut() {
            if let Err(e) = writeln!(f, "{}", output::redact::redact(l)) {
                self.log = None;
                output::diag(&format!("warning: the deployment log stopped: {e}"));
            }
        }
    }
}

impl Sink for Terminal {
    fn step(&mut self, i: usize, n: usize, step: &str) {
        let line = format!("{} [{i}/{n}] {step}", self.style.bold("==>"));
        self.write_log(&line);
        output::progress(&self.style, &line);
        self.live = Some(crate::ui::live::Activity::start(
            &self.style,
            &format!("[{i}/{n}] {step}"),
        ));
    }

    fn step_done(&mut self, seconds: f64, ok: bool) {
        self.live = None;
        let line = format!(
            "    {} {:.1}s",
            if ok {
                self.style.green("done")
            } else {
                self.style.red("failed")
            },
            seconds
        );
        self.write_log(&line);
        output::progress(&self.style, &line);
    }

    fn line(&mut self, l: &str) {
        self.write_log(l);
        if let Some(live) = &self.live {
            live.detail(l);
        }
        output::progress(&self.style, &format!("   {} {l}", self.style.dim("│")));
    }

    fn note(&mut self, l: &str) {
        self.write_log(l);
        output::progress(&self.style, &format!("    {l}"));
    }
}

/// SIGINT, SIGTERM, SIGHUP: the first stops after the running step (then
/// recovery runs); a second marks the record interrupted and exits at once.
/// Installed before the lock is taken, so no signal can leave a lock behind
/// unnoticed (the OS lock dies with the process anyway).
pub(crate) struct Signals {
    pub(crate) flag: Arc<AtomicBool>,
    /// The deployment a second signal marks interrupted, once it has an id
    /// (the handlers are in place before the plan is made).
    id: Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Signals {
    pub(crate) fn install_for(state: &State, id: &str) -> Result<Signals> {
        let s = Signals::install(state)?;
        s.set_id(id);
        Ok(s)
    }

    pub(crate) fn set_id(&self, id: &str) {
        *self.id.lock().unwrap_or_else(|e| e.into_inner()) = id.to_string();
    }

    pub(crate) fn install(state: &State) -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| Error::failed(format!("install the signal handler: {e}")))?;
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| Error::failed(format!("install the signal handler: {e}")))?;
        let mut hup = signal(SignalKind::hangup())
            .map_err(|e| Error::failed(format!("install the signal handler: {e}")))?;
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let state = state.clone();
        let id = Arc::new(std::sync::Mutex::new(String::new()));
        let for_task = id.clone();
        let task = tokio::spawn(async move {
            let mut n = 0;
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "interrupt",
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                };
                n += 1;
                if n == 1 {
                    f.store(true, Ordering::SeqCst);
                    output::diag(&format!("{name}: stopping after this step, then recovering; a second signal stops at once"));
                    continue;
                }
                let id = for_task.lock().map(|i| i.clone()).unwrap_or_default();
                let closed = match id.is_empty() {
                    true => "",
                    false => mark_interrupted(&state, &id),
                };
                output::diag(&format!(
                    "{name} again: stopped. The stack may be half-changed; {closed}run `de-build recover`"
                ));
                std::process::exit(130);
            }
        });
        Ok(Signals { flag, id, task })
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Mark the record of `id` interrupted (on a second signal).
fn mark_interrupted(state: &State, id: &str) -> &'static str {
    let path = state.deployments_dir().join(format!("{id}.json"));
    let rec = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Deployment>(&t).ok());
    match rec {
        Some(mut d) => {
            d.result = Outcome::Interrupted;
            d.error = Some("stopped by a second signal".into());
            match state.save(&d) {
                Ok(()) => "the deployment is recorded as interrupted; ",
                Err(_) => "the record could not be updated (status will still find it); ",
            }
        }
        None => "",
    }
}

/// The signal handlers and the lock, both taken before a deploy or rollback
/// reads anything (`Session::take_lock`).
pub struct Held {
    pub(crate) signals: Signals,
    pub(crate) lock: Lock,
}

/// Run `plan` under the lock taken before it was made; returns the final
/// record or the error. A signal that came while it was planned stops it
/// before its first step.
pub async fn execute(s: &Session<'_>, plan: &DeployPlan, held: Held) -> Result<Deployment> {
    let Held { signals, lock } = held;
    signals.set_id(&plan.id);
    let logs = s.state.ensure_dir("logs")?;
    let mut term = Terminal::new(s.style, &logs.join(format!("{}.log", plan.id)));
    let started = Instant::now();
    let Finished { record, error } = Executor {
        world: &s.world,
        records: &s.state,
        sink: &mut term,
        interrupted: signals.flag.clone(),
        db_root_password: s.inputs.env.secret("DB_PASSWORD"),
        sites: None,
        listing: Default::default(),
    }
    .run(plan)
    .await;
    if let Err(e) = s.state.audit(&json!({
        "time": record.finished, "user": record.user, "host": record.host,
        "action": plan.action, "version": plan.version, "previous": record.previous_version,
        "result": record.result, "deployment": plan.id, "seconds": started.elapsed().as_secs_f64(),
        "error": record.error,
    })) {
        output::diag(&format!("warning: audit.log not written: {e}"));
    }
    if let Err(e) = lock.release() {
        output::diag(&format!("warning: {e}; `de-build lock release` removes it"));
    }
    drop(signals);
    match error {
        None => Ok(record),
        Some(e) => Err(e),
    }
}
