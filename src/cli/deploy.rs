//! `de-build deploy`, `rollback` and `recover`: gather the facts (inputs,
//! records, the engine), compute the plan, run it under the lock with signal
//! handling, report.

use crate::adapters::compose::{self, Compose, Target};
use crate::adapters::engine::Engine;
use crate::cli::args::{DeployArgs, Global, RecoverArgs, RollbackArgs};
use crate::config::{self, Inputs};
use crate::error::{Error, Result, EXIT_OK};
use crate::exec::deploy::{self as executor, Executor, Finished, Sink};
use crate::exec::image::ensure_release_image;
use crate::exec::ports::{Real, World};
use crate::plan::deploy::{self as planner, Action, DeployPlan, DeployRequest, Sites, StackSpec};
use crate::record::state::{self, Backup, Deployment, LockStatus, Outcome, State};
use crate::ui::output::{self, Style};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn required<'a>(inputs: &'a Inputs, key: &str) -> Result<&'a str> {
    inputs.env.get(key).ok_or_else(|| {
        Error::refused(
            format!("{key} is not set"),
            format!("set {key} in .env (see de-example.env)"),
        )
    })
}

fn secs(inputs: &Inputs, key: &str, default: u64) -> u64 {
    inputs
        .env
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The non-secret env compose receives for `version`.
fn compose_env(inputs: &Inputs, project: &str, version: &str) -> BTreeMap<String, String> {
    let mut env = inputs.env.public();
    env.insert("COMPOSE_PROJECT_NAME".into(), project.to_string());
    env.insert("CUSTOM_TAG".into(), version.to_string());
    if let Some(image) = inputs.env.get("DE_IMAGE") {
        // frappe_docker's variable for the image repository.
        env.insert("CUSTOM_IMAGE".into(), image.to_string());
    }
    env
}

/// The stack a deployment record left up.
pub fn stack_of(d: &Deployment) -> StackSpec {
    if let Some(p) = &d.plan {
        return p.new.clone();
    }
    // Records written before plans were recorded.
    StackSpec {
        version: d.version.clone(),
        image_id: d.image_id.clone(),
        target: Target {
            project: d.project.clone(),
            file: d.compose_file.clone(),
            project_dir: d
                .compose_source
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default(),
            empty_env_file: d
                .compose_file
                .parent()
                .and_then(|p| p.parent())
                .map(|s| s.join("compose.env"))
                .unwrap_or_default(),
        },
        env: d.env.clone(),
    }
}

/// Everything a deploy or rollback command works with.
pub struct Session<'a> {
    pub inputs: &'a Inputs,
    pub state: State,
    pub world: Real,
    pub style: Style,
}

impl<'a> Session<'a> {
    pub async fn open(inputs: &'a Inputs, style: &Style) -> Result<Session<'a>> {
        let engine = Engine::connect().await?;
        Ok(Session {
            inputs,
            state: State::new(&inputs.paths.state),
            world: Real {
                engine,
                compose: Compose::detect(),
            },
            style: *style,
        })
    }

    /// Refuse to start over an interrupted deployment: recover it first.
    fn refuse_over_interrupted(&self, all: &[Deployment]) -> Result<()> {
        let lock = self.state.lock_status();
        if let Some(d) = state::interrupted(all, &lock) {
            return Err(Error::refused(
                format!(
                    "deployment {} ({} of {}) was interrupted and is not finished: the stack may be half-changed",
                    d.id, d.action, d.version
                ),
                "run `de-build recover` first (`de-build recover --dry-run` shows what it will do)",
            ));
        }
        if let Some(d) = all.last().filter(|d| d.result == Outcome::Fatal) {
            return Err(Error::refused(
                format!(
                    "the last deployment {} failed and its recovery did not finish",
                    d.id
                ),
                format!(
                    "finish it first: `de-build recover` (or by hand: {})",
                    d.left.as_deref().unwrap_or("see `de-build status`")
                ),
            ));
        }
        Ok(())
    }

    async fn backend_running(&self, project: &str, service: &str) -> Result<bool> {
        Ok(self
            .world
            .containers(project)
            .await?
            .iter()
            .any(|c| c.service == service && c.state == "running"))
    }

    /// The request for a deploy/rollback to `version`, from inputs and records.
    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        action: Action,
        version: &str,
        image_id: &str,
        previous: Option<StackSpec>,
        migrate: bool,
        restore: Vec<Backup>,
        full_down: bool,
    ) -> Result<DeployRequest> {
        let inputs = self.inputs;
        let id = state::new_id();
        let backend_service = required(inputs, "DE_BACKEND_SERVICE")?.to_string();
        let project = required(inputs, "COMPOSE_PROJECT_NAME")?.to_string();
        let compose_source = inputs
            .paths
            .project_dir
            .join(required(inputs, "DE_COMPOSE_FILE")?);
        let compose_source = std::fs::canonicalize(&compose_source)
            .map_err(|e| Error::io("read", &compose_source, e))?;
        let project_dir = compose_source
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let snap = self.state.compose_snapshot_path(&id);
        let new = StackSpec {
            version: version.to_string(),
            image_id: image_id.to_string(),
            target: Target {
                project: project.clone(),
                file: std::path::absolute(&snap).map_err(|e| Error::io("resolve", &snap, e))?,
                project_dir,
                empty_env_file: compose::empty_env_file(&self.state.dir)?,
            },
            env: compose_env(inputs, &project, version),
        };
        let previous_running = match &previous {
            Some(p) => {
                self.backend_running(&p.target.project, &backend_service)
                    .await?
            }
            None => false,
        };
        if let (Some(p), false) = (&previous, previous_running) {
            output::progress(&self.style, &format!("note: {} is recorded as deployed but its {backend_service} is not running: no maintenance mode or backup", p.version));
        }
        Ok(DeployRequest {
            id,
            action,
            version: version.to_string(),
            image_id: image_id.to_string(),
            new,
            compose_source,
            previous,
            previous_running,
            sites: Sites::parse(inputs.env.get("DE_SITES").unwrap_or("all")),
            backend_service,
            health_url: required(inputs, "DE_HEALTH_URL")?.to_string(),
            drain_timeout_secs: secs(inputs, "DE_DRAIN_TIMEOUT", 60),
            health_timeout_secs: secs(inputs, "DE_HEALTH_TIMEOUT", 60),
            migrate,
            restore,
            full_down,
        })
    }
}

/// Progress on the terminal and in the deployment's log file.
pub struct Terminal {
    style: Style,
    log: Option<std::fs::File>,
    step_started: Option<String>,
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
            step_started: None,
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
        self.step_started = Some(step.to_string());
    }

    fn step_done(&mut self, seconds: f64, ok: bool) {
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
struct Signals {
    flag: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Signals {
    fn install(state: &State, id: &str) -> Result<Signals> {
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
        let id = id.to_string();
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
                let closed = mark_interrupted(&state, &id);
                output::diag(&format!(
                    "{name} again: stopped. The stack may be half-changed; {closed}run `de-build recover`"
                ));
                std::process::exit(130);
            }
        });
        Ok(Signals { flag, task })
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

/// Run `plan` under the lock; returns the final record or the error.
pub async fn execute(s: &Session<'_>, plan: &DeployPlan) -> Result<Deployment> {
    let signals = Signals::install(&s.state, &plan.id)?;
    let (lock, left) = s.state.lock(plan.action.as_str(), &plan.version)?;
    if let Some(st) = left {
        output::progress(
            &s.style,
            &format!("note: took over a lock {}", st.describe()),
        );
    }
    let logs = s.state.ensure_dir("logs")?;
    let mut term = Terminal::new(s.style, &logs.join(format!("{}.log", plan.id)));
    let started = Instant::now();
    let Finished { record, error } = Executor {
        world: &s.world,
        records: &s.state,
        sink: &mut term,
        interrupted: signals.flag.clone(),
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

pub fn print_plan(style: &Style, plan: &DeployPlan) {
    if style.json {
        output::json(&json!({
            "command": plan.action, "ok": true, "dry_run": true, "version": plan.version,
            "previous": plan.previous.as_ref().map(|p| p.version.clone()),
            "plan": plan,
        }));
    } else {
        output::result(&plan.to_string());
        output::result("dry run: nothing was changed");
    }
}

pub fn report(style: &Style, d: &Deployment, elapsed: Duration, db_note: Option<String>) {
    if style.json {
        output::json(&json!({
            "command": d.action, "ok": true, "version": d.version, "previous": d.previous_version,
            "deployment": d.id, "result": d.result, "backups": d.backups, "steps": d.steps,
            "seconds": elapsed.as_secs_f64(), "database": db_note,
        }));
        return;
    }
    let steps: Vec<String> = d
        .steps
        .iter()
        .map(|s| format!("{} {:.1}s", s.step, s.seconds))
        .collect();
    output::result(&format!(
        "{} {}{} in {:.1}s (deployment {})",
        style.green(if d.action == "rollback" {
            "rolled back to"
        } else {
            "deployed"
        }),
        d.version,
        d.previous_version
            .as_deref()
            .map(|p| format!(" (was {p})"))
            .unwrap_or_default(),
        elapsed.as_secs_f64(),
        d.id
    ));
    output::result(&format!("  steps: {}", steps.join(" · ")));
    if let Some(n) = db_note {
        output::result(&format!("  {n}"));
    }
}

/// `de-build deploy [VERSION]`.
pub async fn run_deploy(global: &Global, args: &DeployArgs, style: &Style) -> Result<i32> {
    let inputs = config::load_checked(&crate::cli::paths(global))?;
    let version = match &args.version {
        Some(v) => v.clone(),
        None => required(&inputs, "DE_SITE_VERSION")?.to_string(),
    };
    deploy_version(&inputs, style, &version, args.dry_run, args.full_down).await?;
    Ok(EXIT_OK)
}

/// Deploy one recorded release (prints the plan and stops on a dry run).
pub async fn deploy_version(
    inputs: &Inputs,
    style: &Style,
    version: &str,
    dry_run: bool,
    full_down: bool,
) -> Result<Option<Deployment>> {
    let started = Instant::now();
    let s = Session::open(inputs, style).await?;
    let all = s.state.deployments_checked()?;
    s.refuse_over_interrupted(&all)?;
    let release = ensure_release_image(&s.world.engine, inputs, style, version).await?;
    let previous = state::current(&all).map(stack_of);
    let req = s
        .request(
            Action::Deploy,
            version,
            &release.manifest.image.id,
            previous,
            true,
            Vec::new(),
            full_down,
        )
        .await?;
    let plan = planner::plan(req);
    if dry_run {
        print_plan(style, &plan);
        return Ok(None);
    }
    if !style.json {
        output::progress(style, &plan.to_string());
    }
    let d = execute(&s, &plan).await?;
    report(style, &d, started.elapsed(), None);
    Ok(Some(d))
}

/// `de-build rollback [VERSION]`: default the previous successfully deployed version.
pub async fn run_rollback(global: &Global, args: &RollbackArgs, style: &Style) -> Result<i32> {
    let started = Instant::now();
    let inputs = config::load_checked(&crate::cli::paths(global))?;
    let s = Session::open(&inputs, style).await?;
    let all = s.state.deployments_checked()?;
    s.refuse_over_interrupted(&all)?;
    let done: Vec<&Deployment> = all.iter().filter(|d| d.result.is_up()).collect();
    let current = state::current(&all);
    let candidates: Vec<String> = {
        let mut v: Vec<String> = done
            .iter()
            .rev()
            .map(|d| d.version.clone())
            .filter(|v| Some(v) != current.map(|c| &c.version))
            .collect();
        v.dedup();
        v
    };
    let target = match &args.version {
        Some(v) => v.clone(),
        None => candidates.first().cloned().ok_or_else(|| {
            Error::refused("there is no earlier deployment to roll back to", "`de-build status` lists the deployments; name a recorded version: `de-build rollback 1.2.0`")
        })?,
    };
    let release = ensure_release_image(&s.world.engine, &inputs, style, &target)
        .await
        .map_err(|e| match e {
            Error::Refused { message, hint } => Error::Refused {
                message,
                hint: Some(format!(
                    "{} (deployed before: {})",
                    hint.unwrap_or_default(),
                    if candidates.is_empty() {
                        "none".into()
                    } else {
                        candidates.join(", ")
                    }
                )),
            },
            other => other,
        })?;
    let restore = match &args.restore_backup {
        None => Vec::new(),
        Some(dep_id) => {
            let d = all.iter().find(|d| &d.id == dep_id).ok_or_else(|| {
                Error::refused(
                    format!("no deployment {dep_id}"),
                    "`de-build status` lists deployments and their backups",
                )
            })?;
            if d.backups.is_empty() {
                return Err(Error::refused(
                    format!("deployment {dep_id} took no backups"),
                    "pick a deployment that replaced a running release",
                ));
            }
            d.backups.clone()
        }
    };
    let previous = current.map(stack_of);
    let mut req = s
        .request(
            Action::Rollback,
            &target,
            &release.manifest.image.id,
            previous,
            false,
            restore.clone(),
            args.full_down,
        )
        .await?;
    // The exact compose file the target ran with, when it ran here before:
    // the snapshot step copies that recorded file.
    if let Some(d) = done.iter().rev().find(|d| d.version == target) {
        let st = stack_of(d);
        if st.target.file.exists() {
            req.compose_source = st.target.file.clone();
            req.new.target.project_dir = st.target.project_dir.clone();
            req.new.env = st.env.clone();
        }
    }
    let plan = planner::plan(req);
    if args.dry_run {
        print_plan(style, &plan);
        return Ok(EXIT_OK);
    }
    if !style.json {
        output::progress(style, &plan.to_string());
    }
    // Which deployment took the backup before the release we leave was migrated.
    let db_note = if restore.is_empty() {
        current.map(|c| {
            let backup = all
                .iter()
                .rev()
                .find(|d| d.version == c.version && !d.backups.is_empty());
            match backup {
                Some(b) => format!(
                    "the database stays as {} migrated it (a rollback does not migrate back); to restore the backup taken before {} was deployed: `de-build rollback {target} --restore-backup {}`",
                    c.version, c.version, b.id
                ),
                None => format!(
                    "the database stays as {} migrated it (a rollback does not migrate back)",
                    c.version
                ),
            }
        })
    } else {
        Some("the database was restored from the chosen backup".into())
    };
    let d = execute(&s, &plan).await?;
    report(style, &d, started.elapsed(), db_note);
    Ok(EXIT_OK)
}

/// `de-build recover`.
pub async fn run_recover(global: &Global, args: &RecoverArgs, style: &Style) -> Result<i32> {
    let inputs = config::load(&crate::cli::paths(global));
    let st = State::new(&inputs.paths.state);
    let (all, bad) = st.deployments();
    for b in &bad {
        output::diag(&format!(
            "warning: deployment record {} cannot be read ({}); it is not considered",
            b.path.display(),
            b.error
        ));
    }
    let lock = st.lock_status();
    if let LockStatus::Held { .. } = lock {
        return Err(Error::Locked {
            message: format!("the deploy lock is {}", lock.describe()),
            hint: "a deployment is running: it recovers by itself; wait for it".into(),
        });
    }
    let target = state::interrupted(&all, &lock)
        .or_else(|| all.last().filter(|d| d.result == Outcome::Fatal))
        .cloned();
    let Some(mut record) = target else {
        if let LockStatus::Stale { .. } = lock {
            st.break_lock()?;
            output::result("no interrupted deployment; removed the lock a dead process left");
        } else if style.json {
            output::json(&json!({"command": "recover", "ok": true, "recovered": null}));
        } else {
            output::result("nothing to recover: no deployment was interrupted");
        }
        return Ok(EXIT_OK);
    };
    let Some((plan, recovery)) = executor::recovery_of(&record) else {
        return Err(Error::refused(
            format!("deployment {} was recorded by an older de-build without its plan", record.id),
            format!("recover by hand: bring the release you want up with `de-build deploy <version>` after moving {} aside", st.deployments_dir().join(format!("{}.json", record.id)).display()),
        ));
    };
    let all_done = plan
        .steps
        .iter()
        .all(|s| record.progress.done.iter().any(|d| d == s.step.name()));
    if args.dry_run {
        let what = if all_done {
            format!("every step of {} finished: check the health gate and close the record as succeeded", record.id)
        } else {
            planner::describe(&recovery)
        };
        if style.json {
            output::json(&json!({"command": "recover", "ok": true, "dry_run": true, "deployment": record.id, "complete": all_done, "recovery": recovery}));
        } else {
            output::result(&format!(
                "deployment {} ({} {} -> {}, {}): {what}",
                record.id,
                record.action,
                record.previous_version.as_deref().unwrap_or("nothing"),
                record.version,
                record.result.as_str()
            ));
            output::result("dry run: nothing was changed");
        }
        return Ok(EXIT_OK);
    }
    let s = Session::open(&inputs, style).await?;
    let (lock, _) = s.state.lock("recover", &record.version)?;
    let logs = s.state.ensure_dir("logs")?;
    let mut term = Terminal::new(s.style, &logs.join(format!("{}.log", record.id)));
    let mut ex = Executor {
        world: &s.world,
        records: &s.state,
        sink: &mut term,
        interrupted: Arc::new(AtomicBool::new(false)),
    };
    let result = if all_done {
        // Only the final record write was missing: check, then close it.
        let url = required(&inputs, "DE_HEALTH_URL")?.to_string();
        match s
            .world
            .wait_healthy(
                &url,
                Duration::from_secs(secs(&inputs, "DE_HEALTH_TIMEOUT", 60)),
                crate::record::deploy::Gate::Open,
            )
            .await
        {
            Ok(_) => {
                record.result = Outcome::Succeeded;
                record.finished = Some(state::now());
                s.state.save(&record).map(|_| None)
            }
            Err(e) => {
                let r = planner::recovery(&plan, &record.progress);
                Ok(Some(ex.recover(&plan, &mut record, r, e).await))
            }
        }
    } else {
        let cause = Error::failed(format!(
            "deployment {} was interrupted ({})",
            record.id,
            record.result.as_str()
        ));
        Ok(Some(ex.recover(&plan, &mut record, recovery, cause).await))
    };
    if let Err(e) = lock.release() {
        output::diag(&format!("warning: {e}"));
    }
    match result? {
        None => {
            if style.json {
                output::json(&json!({"command": "recover", "ok": true, "deployment": record.id, "result": record.result}));
            } else {
                output::result(&format!(
                    "deployment {} completed: {} is deployed and healthy",
                    record.id, record.version
                ));
            }
            Ok(EXIT_OK)
        }
        Some(e) => Err(e),
    }
}
