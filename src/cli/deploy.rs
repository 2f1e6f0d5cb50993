//! `de-build deploy` and `rollback`: gather the facts (inputs, records, the
//! engine), compute the plan, run it (`cli::run`), report.

use crate::adapters::compose::{self, Compose, Target};
use crate::adapters::engine::Engine;
use crate::cli::args::{DeployArgs, Global, RollbackArgs};
use crate::cli::run::{execute, Held, Signals};
use crate::config::{self, Inputs};
use crate::error::{Error, Result, EXIT_OK};
use crate::exec::image::ensure_release_image;
use crate::exec::ports::{Real, World};
use crate::plan::deploy::{
    self as planner, Action, DeployPlan, DeployRequest, MigrateMode, Sites, StackSpec,
};
use crate::record::state::{self, Backup, Deployment, LockStatus, Outcome, State};
use crate::ui::output::{self, Style};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub fn required<'a>(inputs: &'a Inputs, key: &str) -> Result<&'a str> {
    inputs.env.get(key).ok_or_else(|| {
        Error::refused(
            format!("{key} is not set"),
            format!("set {key} in .env (see de-example.env)"),
        )
    })
}

pub fn secs(inputs: &Inputs, key: &str, default: u64) -> u64 {
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
    // frappe_docker writes `pull_policy: ${PULL_POLICY:-always}`: compose
    // would pull the release from a registry (a stranger's image of that
    // name, or none) although de-build made sure it is here, by ID.
    if env.get("PULL_POLICY").is_none_or(|v| v.is_empty()) {
        env.insert("PULL_POLICY".into(), "never".into());
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
            files: vec![d.compose_file.clone()],
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
                secrets: inputs
                    .schema
                    .keys
                    .iter()
                    .filter(|k| k.secret)
                    .filter_map(|k| {
                        inputs
                            .env
                            .secret(&k.name)
                            .map(|v| (k.name.clone(), v.clone()))
                    })
                    .collect(),
                health_host: crate::config::rules::health_host(&inputs.env),
            },
            style: *style,
        })
    }

    /// Take the project's lock before anything is read or planned: another
    /// deployment changes records and containers, and a plan made from them
    /// meanwhile would judge a world in flux (exit 5 instead).
    fn take_lock(&self, action: &str, version: &str) -> Result<Held> {
        // Handlers first: a signal from here on is handled (the plan stops
        // before its first step), never a kill that leaves the lock file.
        let signals = Signals::install(&self.state)?;
        let (lock, left) = self.state.lock(action, version)?;
        if let Some(st) = left {
            output::progress(
                &self.style,
                &format!("note: took over a lock {}", st.describe()),
            );
        }
        Ok(Held { signals, lock })
    }

    /// Refuse to start over an interrupted deployment: recover it first.
    /// `locked`: this process holds the lock, so no other one is running
    /// the deployment its record says is running.
    fn refuse_over_interrupted(&self, all: &[Deployment], locked: bool) -> Result<()> {
        let lock = if locked {
            LockStatus::Free
        } else {
            self.state.lock_status()
        };
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

    /// A stack of the project that runs although no deployment is recorded
    /// (started by hand with `compose up`): the stack to protect (maintenance,
    /// backup) and to bring back on failure, never one to take down
    /// unprotected. Brought back with the current compose file and the image
    /// its backend runs now.
    async fn adopt(&self) -> Result<Option<StackSpec>> {
        let project = required(self.inputs, "COMPOSE_PROJECT_NAME")?.to_string();
        let service = required(self.inputs, "DE_BACKEND_SERVICE")?;
        let containers = self.world.containers(&project).await?;
        let Some(backend) = containers
            .iter()
            .find(|c| c.service == service && c.state == "running")
        else {
            if let Some(c) = containers.first() {
                return Err(Error::refused(
                    format!(
                        "containers of compose project {project} exist ({} …) but no deployment is recorded and its {service} does not run",
                        c.name
                    ),
                    format!("de-build will not replace a stack it cannot protect or bring back: start it (`docker compose -p {project} up -d`) so it can be adopted, or remove it"),
                ));
            }
            return Ok(None);
        };
        let (repo, tag) = crate::adapters::engine::split_reference(&backend.image);
        let Some(tag) = tag.filter(|t| !t.is_empty() && !backend.image.starts_with("sha256:"))
        else {
            return Err(Error::refused(
                format!(
                    "compose project {project} runs without a de-build record, and its {service} runs an untagged image ({})",
                    crate::util::short_id(&backend.image_id)
                ),
                format!("tag it so the stack can be brought back if the deploy fails: `docker tag {} <repository>:<tag>`, recreate it with that tag, then deploy", crate::util::short_id(&backend.image_id)),
            ));
        };
        let sources = self.compose_sources()?;
        let mut env = compose_env(self.inputs, &project, tag);
        env.insert("CUSTOM_IMAGE".into(), repo.to_string());
        env.insert("DE_IMAGE".into(), repo.to_string());
        output::progress(
            &self.style,
            &format!(
                "note: adopting the running stack of {project} ({}, not recorded by de-build): it is put in maintenance, backed up, and brought back if the deploy fails",
                backend.image
            ),
        );
        Ok(Some(StackSpec {
            version: tag.to_string(),
            image_id: backend.image_id.clone(),
            target: Target {
                project,
                project_dir: sources
                    .first()
                    .and_then(|p| p.parent())
                    .map(|p| p.to_path_buf())
                    .unwrap_or_default(),
                files: sources,
                empty_env_file: compose::empty_env_file(&self.state.dir)?,
            },
            env,
        }))
    }

    /// The one-shot services of the stack that the deploy waits for: those
    /// the compose files show (others wait for them to complete, or they do
    /// not restart), plus `DE_ONESHOT_SERVICES`.
    fn oneshots(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .inputs
            .compose
            .as_ref()
            .map(|c| c.one_shot_services())
            .unwrap_or_default();
        if let Some(v) = self.inputs.env.get("DE_ONESHOT_SERVICES") {
            for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_string());
                }
            }
        }
        out
    }

    /// `DE_COMPOSE_FILE`'s files, resolved.
    fn compose_sources(&self) -> Result<Vec<std::path::PathBuf>> {
        let mut out = Vec::new();
        for f in config::compose::list(required(self.inputs, "DE_COMPOSE_FILE")?) {
            let p = self.inputs.paths.project_dir.join(f);
            out.push(std::fs::canonicalize(&p).map_err(|e| Error::io("read", &p, e))?);
        }
        Ok(out)
    }

    async fn backend_running(&self, project: &str, service: &str) -> Result<bool> {
        Ok(self
            .world
            .containers(project)
            .await?
            .iter()
            .any(|c| c.service == service && c.state == "running"))
    }

    /// Where deployment `id` snapshots its compose files (absolute: compose
    /// runs with another working directory).
    fn snapshot_dir(&self, id: &str) -> Result<std::path::PathBuf> {
        let d = self.state.compose_snapshot_dir(id);
        std::path::absolute(&d).map_err(|e| Error::io("resolve", &d, e))
    }

    /// The request for a deploy/rollback to `version`, from inputs and records.
    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        action: Action,
        version: &str,
        image_id: &str,
        previous: Option<StackSpec>,
        migrate: (bool, String),
        restore: Vec<Backup>,
        full_down: bool,
    ) -> Result<DeployRequest> {
        let (migrate, migrate_reason) = migrate;
        let inputs = self.inputs;
        let id = state::new_id();
        let backend_service = required(inputs, "DE_BACKEND_SERVICE")?.to_string();
        let project = required(inputs, "COMPOSE_PROJECT_NAME")?.to_string();
        let compose_sources = self.compose_sources()?;
        // Compose's own default: the first file's directory.
        let project_dir = compose_sources
            .first()
            .and_then(|p| p.parent())
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let snap = self.snapshot_dir(&id)?;
        let new = StackSpec {
            version: version.to_string(),
            image_id: image_id.to_string(),
            target: Target {
                project: project.clone(),
                files: config::compose::snapshot_layout(&compose_sources, &snap),
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
        // A switch needs the door up already (a stack started by hand
        // without it gets the door from this deploy's `up`).
        let door = self.door();
        let door_running = match (&previous, &door) {
            (Some(p), Some(d)) if previous_running => {
                self.backend_running(&p.target.project, &d.service).await?
            }
            _ => false,
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
            compose_sources,
            previous,
            previous_running,
            sites: Sites::parse(inputs.env.get("DE_SITES").unwrap_or("all")),
            backend_service,
            health_url: required(inputs, "DE_HEALTH_URL")?.to_string(),
            drain_timeout_secs: secs(inputs, "DE_DRAIN_TIMEOUT", 60),
            drain_on_timeout: crate::record::deploy::OnDrainTimeout::parse(
                inputs.env.get("DE_DRAIN_ON_TIMEOUT").unwrap_or(""),
            )
            .unwrap_or_default(),
            health_timeout_secs: secs(inputs, "DE_HEALTH_TIMEOUT", 60),
            migrate,
            migrate_reason,
            restore,
            full_down,
            oneshots: self.oneshots(),
            door,
            web: self.web_tier().filter(|_| door_running),
        })
    }

    /// `DE_DOOR` and its reload command.
    fn door(&self) -> Option<crate::record::deploy::Door> {
        let service = self.inputs.env.get("DE_DOOR").filter(|d| !d.is_empty())?;
        let reload = self
            .inputs
            .env
            .get("DE_DOOR_RELOAD")
            .filter(|r| !r.trim().is_empty())
            .unwrap_or("nginx -s reload");
        let frontend = self
            .inputs
            .env
            .get("DE_FRONTEND_SERVICE")
            .filter(|f| !f.is_empty())
            .unwrap_or("frontend");
        Some(crate::record::deploy::Door {
            service: service.to_string(),
            reload: reload.split_whitespace().map(str::to_string).collect(),
            frontend: frontend.to_string(),
        })
    }

    /// The web tier a switch starts beside the old one: the backend and
    /// frappe_docker's `websocket` (when the stack has it), then the frontend.
    fn web_tier(&self) -> Option<crate::record::deploy::WebTier> {
        let compose = self.inputs.compose.as_ref()?;
        let has = |n: &str| compose.active().any(|s| s.name == n);
        let backend = self.inputs.env.get("DE_BACKEND_SERVICE")?.to_string();
        let frontend = self
            .inputs
            .env
            .get("DE_FRONTEND_SERVICE")
            .filter(|f| !f.is_empty())
            .unwrap_or("frontend")
            .to_string();
        if !has(&backend) || !has(&frontend) {
            return None;
        }
        let mut upstream = vec![backend];
        if has("websocket") {
            upstream.push("websocket".into());
        }
        Some(crate::record::deploy::WebTier { upstream, frontend })
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
        style.green(if d.action == Action::Rollback {
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
    let started = Instant::now();
    let mode = if args.migrate {
        Some(MigrateMode::Always)
    } else if args.no_migrate {
        Some(MigrateMode::Never)
    } else {
        None
    };
    let d = if crate::cli::swarm::is_swarm(&inputs)? {
        if args.full_down {
            return Err(Error::refused(
                "--full-down is for one host (DE_TARGET=compose)",
                "a swarm deploy rolls the services one task at a time",
            ));
        }
        crate::cli::swarm::deploy(&inputs, style, &version, args.dry_run, mode).await?
    } else {
        deploy_version(&inputs, style, &version, args.dry_run, args.full_down, mode).await?
    };
    if let Some(d) = d {
        report(style, &d, started.elapsed(), None);
    }
    Ok(EXIT_OK)
}

/// Deploy one recorded release (prints the plan and stops on a dry run).
pub async fn deploy_version(
    inputs: &Inputs,
    style: &Style,
    version: &str,
    dry_run: bool,
    full_down: bool,
    mode: Option<MigrateMode>,
) -> Result<Option<Deployment>> {
    if crate::cli::swarm::is_swarm(inputs)? {
        return crate::cli::swarm::deploy(inputs, style, version, dry_run, mode).await;
    }
    let s = Session::open(inputs, style).await?;
    // A dry run changes nothing and takes no lock.
    let lock = match dry_run {
        true => None,
        false => Some(s.take_lock(Action::Deploy.as_str(), version)?),
    };
    let all = s.state.deployments_checked()?;
    s.refuse_over_interrupted(&all, lock.is_some())?;
    let release = ensure_release_image(&s.world.engine, inputs, style, version).await?;
    let previous = match state::current(&all) {
        Some(d) => Some(stack_of(d)),
        None => s.adopt().await?,
    };
    let mode = match mode {
        Some(m) => m,
        None => {
            let v = inputs.env.get("DE_MIGRATE").unwrap_or("auto");
            MigrateMode::parse(v).ok_or_else(|| {
                Error::refused(
                    format!("DE_MIGRATE is `{v}`"),
                    "use auto (migrate when the schema fingerprint changed), always or never",
                )
            })?
        }
    };
    // The fingerprint of what runs: its manifest's, if that manifest's image
    // is the one running (an adopted stack may run anything).
    let store = crate::record::manifest::Store::new(&inputs.paths.releases);
    let running_schema = match &previous {
        None => None,
        Some(p) => {
            let fp = store
                .get(&p.version)
                .ok()
                .flatten()
                .filter(|l| l.manifest.image.id == p.image_id)
                .and_then(|l| l.manifest.schema.map(|s| s.sha256));
            Some((p.version.clone(), fp))
        }
    };
    let migrate = planner::decide_migrate(
        mode,
        running_schema
            .as_ref()
            .map(|(v, fp)| (v.as_str(), fp.as_deref())),
        release.manifest.schema.as_ref().map(|s| s.sha256.as_str()),
    );
    let req = s
        .request(
            Action::Deploy,
            version,
            &release.manifest.image.id,
            previous,
            migrate,
            Vec::new(),
            full_down,
        )
        .await?;
    let plan = planner::plan(req);
    let Some(lock) = lock else {
        print_plan(style, &plan);
        return Ok(None);
    };
    if !style.json {
        output::progress(style, &plan.to_string());
    }
    execute(&s, &plan, lock).await.map(Some)
}

/// `de-build rollback [VERSION]`: default the previous successfully deployed version.
pub async fn run_rollback(global: &Global, args: &RollbackArgs, style: &Style) -> Result<i32> {
    let started = Instant::now();
    let inputs = config::load_checked(&crate::cli::paths(global))?;
    if crate::cli::swarm::is_swarm(&inputs)? {
        return crate::cli::swarm::rollback(&inputs, args, style).await;
    }
    let s = Session::open(&inputs, style).await?;
    let lock = match args.dry_run {
        true => None,
        false => Some(s.take_lock(
            Action::Rollback.as_str(),
            args.version.as_deref().unwrap_or("the previous release"),
        )?),
    };
    let all = s.state.deployments_checked()?;
    s.refuse_over_interrupted(&all, lock.is_some())?;
    let done: Vec<&Deployment> = all.iter().filter(|d| d.result.is_up()).collect();
    let current = state::current(&all);
    let candidates: Vec<String> = state::earlier(&all)
        .iter()
        .map(|d| d.version.clone())
        .collect();
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
        Some(id) => state::backups_of(&all, id)?,
    };
    let previous = current.map(stack_of);
    let mut req = s
        .request(
            Action::Rollback,
            &target,
            &release.manifest.image.id,
            previous,
            (
                false,
                "a rollback never migrates (Frappe has no reverse migrations)".into(),
            ),
            restore.clone(),
            args.full_down,
        )
        .await?;
    // The exact compose files the target ran with, when it ran here before:
    // the snapshot step copies those recorded files.
    if let Some(d) = done.iter().rev().find(|d| d.version == target) {
        let st = stack_of(d);
        if !st.target.files.is_empty() && st.target.files.iter().all(|f| f.exists()) {
            let snap = s.snapshot_dir(&req.id)?;
            req.new.target.files = config::compose::snapshot_layout(&st.target.files, &snap);
            req.compose_sources = st.target.files.clone();
            req.new.target.project_dir = st.target.project_dir.clone();
            req.new.env = st.env.clone();
        }
    }
    let plan = planner::plan(req);
    let Some(lock) = lock else {
        print_plan(style, &plan);
        return Ok(EXIT_OK);
    };
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
    let d = execute(&s, &plan, lock).await?;
    report(style, &d, started.elapsed(), db_note);
    Ok(EXIT_OK)
}
